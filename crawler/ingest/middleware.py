"""Downloader middleware: retries with exponential backoff that honour ``Retry-After``
(and none for a host name that does not resolve).

Scrapy's own RetryMiddleware retries at once and ignores ``Retry-After`` (RFC 9110 10.2.3),
which is exactly what a rate-limited API asks us not to do. This one waits before each retry:
the server's ``Retry-After`` when it sent one, else ``base * 2**attempt`` (capped at
``LITWATCH_BACKOFF_MAX``). A ``Retry-After`` longer than that cap is not shortened: the
request is given up instead, so the server is never asked again sooner than it said.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Self

from scrapy import Request
from scrapy import exceptions as scrapy_exceptions
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.http import Response
from scrapy.utils.misc import load_object
from scrapy.utils.response import response_status_message
from twisted.internet.error import DNSLookupError

log = logging.getLogger("litwatch.retry")

#: A host name that did not resolve (Scrapy's own error and Twisted's, by version).
DNS_ERRORS: tuple[type[Exception], ...] = tuple(
    cls
    for cls in (getattr(scrapy_exceptions, "CannotResolveHostError", None), DNSLookupError)
    if cls is not None
)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 522, 524, 408})


def retry_exceptions(names: list[str | type[Exception]]) -> tuple[type[Exception], ...]:
    """The network failures worth retrying, from Scrapy's own ``RETRY_EXCEPTIONS`` setting.

    Taken from the setting rather than listed here because they change with Scrapy: 2.13
    raised Twisted's ``TimeoutError``, later versions raise ``scrapy.exceptions.
    DownloadTimeoutError``; a hard-coded list silently stopped retrying timeouts.
    """
    return tuple(load_object(name) if isinstance(name, str) else name for name in names)


def retry_after_seconds(value: bytes | str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class BackoffRetryMiddleware:
    """Retry 429/5xx answers and network failures, waiting between attempts."""

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        self.crawler = crawler
        self.max_retries = settings.getint("RETRY_TIMES", 3)
        self.base = settings.getfloat("LITWATCH_BACKOFF_BASE", 1.0)
        self.cap = settings.getfloat("LITWATCH_BACKOFF_MAX", 120.0)
        self.exceptions = retry_exceptions(settings.getlist("RETRY_EXCEPTIONS"))

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def _delay(self, request: Request, hinted: float | None) -> float:
        attempt = request.meta.get("retry_times", 0)
        delay = hinted if hinted is not None else self.base * (2**attempt)
        return min(delay, self.cap)

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        """Retry a 429/5xx answer after the wait it asks for (or a doubling backoff)."""
        if request.meta.get("dont_retry") or response.status not in RETRY_STATUSES:
            return response
        hinted = retry_after_seconds(response.headers.get(b"Retry-After"))
        if hinted is not None and hinted > self.cap:
            # Retrying sooner than the server asked would be rude, and waiting that long would
            # stall the whole crawl: give up now, the source fails and the next poll tries again.
            log.warning("event=retry.give_up url=%s retry_after=%.0f", request.url, hinted)
            return response
        retry = self._retry_request(request, response_status_message(response.status))
        if retry is None:
            return response
        await asyncio.sleep(self._delay(request, hinted))
        return retry

    async def process_exception(self, request: Request, exception: Exception) -> Request | None:
        """Retry a network failure (timeout, refused or dropped connection) after a backoff."""
        if request.meta.get("dont_retry") or not isinstance(exception, self.exceptions):
            return None
        if isinstance(exception, DNS_ERRORS):
            # A name that does not resolve now will not in a second either (offline, or a
            # typo): the source fails at once, and its next poll asks again (issue 12 B8).
            return None
        retry = self._retry_request(request, exception)
        if retry is not None:
            await asyncio.sleep(self._delay(request, None))
        return retry

    def _retry_request(self, request: Request, reason: str | Exception) -> Request | None:
        assert self.crawler.spider is not None
        return get_retry_request(
            request,
            spider=self.crawler.spider,
            reason=reason,
            max_retry_times=request.meta.get("max_retry_times", self.max_retries),
        )
