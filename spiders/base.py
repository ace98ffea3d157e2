"""What every litwatch spider shares: its source, poll state, failures and counters.

Spiders turn response bytes into :class:`~crawler.items.Paper` items and report how the poll
went; they never touch the database. The crawl runner hands them the stored poll state
(:class:`PollState`) and saves what they report only after their items were stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import scrapy
from scrapy.http import Response
from scrapy.spidermiddlewares.httperror import HttpError
from sqlalchemy import Engine
from twisted.internet import error as net_error
from twisted.python.failure import Failure

from crawler.settings import Settings, SourceSettings


@dataclass
class PollState:
    """What the database remembers about a source between polls."""

    etag: str | None = None
    last_modified: str | None = None
    #: PubMed: end of the last fully crawled entry-date window.
    cursor: datetime | None = None
    #: ScienceDaily: story URLs already followed (each is fetched once, ever).
    followed: frozenset[str] = frozenset()


@dataclass
class PollReport:
    """What one poll learned, saved by the runner once the items are stored."""

    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    not_modified: int = 0
    #: Items the spider produced, items dropped as off-topic, items stored, new papers,
    #: and items that matched a paper already known.
    items: int = 0
    skipped: int = 0
    stored: int = 0
    new: int = 0
    merged: int = 0
    etag: str | None = None
    last_modified: str | None = None
    cursor: datetime | None = None
    followed: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class Sink:
    """Where the pipelines put items: the database, or JSON lines in a dry run.

    Carried by the spider for the pipelines' sake (Scrapy settings are deep-copied, so they
    cannot hold an engine); spiders themselves never use it.
    """

    engine: Engine | None = None
    out: IO[str] | None = None


class LitwatchSpider(scrapy.Spider):
    """Base class: one spider instance polls one configured source."""

    kind = ""

    def __init__(
        self,
        source: SourceSettings,
        config: Settings,
        state: PollState,
        sink: Sink | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=source.id, **kwargs)
        self.sink = sink or Sink()
        self.source = source
        self.config = config
        self.state = state
        self.report = PollReport()

    def fail(self, message: str) -> None:
        """Record a failure of this source (the crawl goes on with the other sources)."""
        self.report.failures.append(message)
        self.logger.error("source=%s error=%r", self.source.id, message)

    def conditional_headers(self) -> dict[str, str]:
        """If-None-Match / If-Modified-Since from the last successful poll."""
        headers = {}
        if self.state.etag:
            headers["If-None-Match"] = self.state.etag
        if self.state.last_modified:
            headers["If-Modified-Since"] = self.state.last_modified
        return headers

    def remember_validators(self, response: Response) -> None:
        etag = response.headers.get(b"ETag")
        modified = response.headers.get(b"Last-Modified")
        self.report.etag = etag.decode("latin-1") if etag else None
        self.report.last_modified = modified.decode("latin-1") if modified else None

    def on_error(self, failure: Failure) -> None:
        """Errback: turn a download failure into one clear line."""
        self.fail(describe_failure(failure))


def describe_failure(failure: Failure) -> str:
    request = getattr(failure, "request", None)
    url = request.url if request is not None else "?"
    if failure.check(HttpError):
        response = failure.value.response  # type: ignore[union-attr]
        return f"HTTP {response.status} from {response.url}"
    if failure.check(net_error.TimeoutError, net_error.TCPTimedOutError):
        return f"timed out fetching {url}"
    if failure.check(net_error.DNSLookupError):
        return f"cannot resolve host of {url}"
    if failure.check(net_error.ConnectionRefusedError):
        return f"connection refused by {url}"
    if failure.check(scrapy.exceptions.IgnoreRequest):
        return (
            f"request to {url} refused ({failure.getErrorMessage() or 'forbidden by robots.txt'})"
        )
    return f"{failure.type.__name__ if failure.type else 'error'} fetching {url}: {failure.getErrorMessage()}"
