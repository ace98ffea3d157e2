"""The retry middleware: Retry-After honoured, exponential backoff, giving up cleanly.

The middleware is driven directly with Scrapy request/response objects and real (short)
``asyncio.sleep`` waits, timed with the monotonic clock; the end-to-end behaviour against a
real server is in tests/test_crawl_e2e.py.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from scrapy import Request, Spider
from scrapy.exceptions import CannotResolveHostError, DownloadTimeoutError
from scrapy.http import Response
from scrapy.utils.test import get_crawler
from twisted.internet.error import DNSLookupError

from crawler.ingest.middleware import BackoffRetryMiddleware, retry_after_seconds, retry_exceptions

URL = "https://journal.example.org/feed.xml"


def middleware(**settings: Any) -> BackoffRetryMiddleware:
    crawler = get_crawler(Spider, {"RETRY_TIMES": 2, "LITWATCH_BACKOFF_BASE": 0.05, **settings})
    crawler.spider = Spider.from_crawler(crawler, name="retry-test")
    return BackoffRetryMiddleware.from_crawler(crawler)


def answer(status: int, request: Request, headers: dict[str, str] | None = None) -> Response:
    return Response(URL, status=status, headers=headers or {}, request=request)


def timed(coro: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = asyncio.run(coro)
    return result, time.monotonic() - started


# --- Retry-After parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"120", 120.0), ("7", 7.0), (b" 3 ", 3.0), (None, None), (b"", None), (b"soon", None)],
)
def test_retry_after_delta_seconds(value: bytes | str | None, expected: float | None) -> None:
    assert retry_after_seconds(value) == expected


def test_retry_after_http_date_is_measured_from_now() -> None:
    now = datetime(2024, 3, 4, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds(later, now=now) == pytest.approx(90.0)
    earlier = format_datetime(now - timedelta(minutes=5), usegmt=True)
    assert retry_after_seconds(earlier, now=now) == 0.0  # already past: retry at once


def test_retry_exceptions_are_loaded_from_scrapy_setting() -> None:
    loaded = retry_exceptions(["scrapy.exceptions.DownloadTimeoutError", OSError])
    assert loaded == (DownloadTimeoutError, OSError)


# --- process_response -------------------------------------------------------------------------


def test_retry_after_is_honoured_instead_of_the_backoff() -> None:
    mw = middleware(LITWATCH_BACKOFF_BASE=5.0)
    request = Request(URL)
    result, took = timed(mw.process_response(request, answer(429, request, {"Retry-After": "0"})))
    assert isinstance(result, Request) and result.meta["retry_times"] == 1
    assert took < 1.0  # the server said 0 s; the 5 s backoff was not used


def test_backoff_doubles_with_each_attempt() -> None:
    mw = middleware(LITWATCH_BACKOFF_BASE=0.1)
    first = Request(URL)
    retry, first_wait = timed(mw.process_response(first, answer(503, first)))
    assert isinstance(retry, Request)
    again, second_wait = timed(mw.process_response(retry, answer(503, retry)))
    assert isinstance(again, Request) and again.meta["retry_times"] == 2
    assert 0.1 <= first_wait < 0.19
    assert 0.2 <= second_wait < 0.35


def test_backoff_is_capped() -> None:
    mw = middleware(LITWATCH_BACKOFF_BASE=10.0, LITWATCH_BACKOFF_MAX=0.05)
    request = Request(URL)
    result, took = timed(mw.process_response(request, answer(502, request)))
    assert isinstance(result, Request) and took < 1.0


def test_retry_after_beyond_the_cap_gives_up_instead_of_retrying_early() -> None:
    mw = middleware(LITWATCH_BACKOFF_MAX=120.0)
    request = Request(URL)
    response = answer(429, request, {"Retry-After": "3600"})
    result, took = timed(mw.process_response(request, response))
    assert result is response and took < 1.0


def test_exhausted_retries_return_the_error_response() -> None:
    mw = middleware()
    request = Request(URL, meta={"retry_times": 2})  # RETRY_TIMES = 2 already used
    response = answer(503, request)
    assert asyncio.run(mw.process_response(request, response)) is response


@pytest.mark.parametrize("status", [200, 304, 404, 403])
def test_other_statuses_pass_through(status: int) -> None:
    request = Request(URL)
    response = answer(status, request)
    assert asyncio.run(middleware().process_response(request, response)) is response


def test_dont_retry_is_respected() -> None:
    request = Request(URL, meta={"dont_retry": True})
    response = answer(503, request)
    assert asyncio.run(middleware().process_response(request, response)) is response


# --- process_exception ------------------------------------------------------------------------


def test_timeouts_are_retried_after_a_backoff() -> None:
    mw = middleware(LITWATCH_BACKOFF_BASE=0.05)
    request = Request(URL)
    result, took = timed(mw.process_exception(request, DownloadTimeoutError("took too long")))
    assert isinstance(result, Request) and result.meta["retry_times"] == 1
    assert took >= 0.05


def test_errors_that_are_not_network_failures_are_not_retried() -> None:
    request = Request(URL)
    assert asyncio.run(middleware().process_exception(request, ValueError("bug"))) is None


def test_max_retry_times_in_meta_overrides_the_setting() -> None:
    request = Request(URL, meta={"max_retry_times": 0})
    result = asyncio.run(middleware().process_exception(request, DownloadTimeoutError("x")))
    assert result is None


@pytest.mark.parametrize(
    "error",
    [CannotResolveHostError("no such host"), DNSLookupError("journal.invalid")],
    ids=["scrapy", "twisted"],
)
def test_a_name_that_does_not_resolve_is_not_retried(error: Exception) -> None:
    # Offline, every retry of a DNS failure fails the same way (issue 12 B8).
    request = Request("https://journal.invalid/feed.xml")
    assert asyncio.run(middleware().process_exception(request, error)) is None
