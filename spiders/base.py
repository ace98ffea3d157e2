"""What every litwatch spider shares: its source, poll state, failures and counters.

Spiders turn response bytes into :class:`~crawler.items.Paper` items and report how the poll
went; they never touch the database. The crawl runner hands them the stored poll state
(:class:`PollState`) and saves what they report only after their items were stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any, ClassVar, Protocol, Self

import scrapy
from scrapy import exceptions as scrapy_exceptions
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.spidermiddlewares.httperror import HttpError
from sqlalchemy import Engine
from twisted.internet import error as net_error
from twisted.python.failure import Failure

from crawler.poll import PollReport, PollState
from crawler.settings import Settings, SourceSettings


class ForbiddenAddress(IgnoreRequest):
    """A request refused before it was sent: it leaves the source's configured site for a
    loopback, private or otherwise non-public address (crawler/ingest/addresses.py)."""


@dataclass
class Sink:
    """Where the pipelines put items: the database, or JSON lines in a dry run.

    Carried by the spider for the pipelines' sake (Scrapy settings are deep-copied, so they
    cannot hold an engine); spiders themselves never use it.
    """

    engine: Engine | None = None
    out: IO[str] | None = None


class LinkClaimer(Protocol):
    """Claims a link before it is fetched, so that one crawl process fetches it (the runner
    passes one backed by the database; crawler/ingest/claims.py)."""

    def claim(self, url: str) -> bool: ...


class LitwatchSpider(scrapy.Spider):
    """Base class: one spider instance polls one configured source.

    A subclass sets ``name`` to its source kind (Scrapy's spider loader finds it by that name)
    and declares what the crawl runner must know about it, so the runner names no kind.
    """

    kind = ""
    #: A host whose rate limit is per client, not per source (NCBI's E-utilities): crawls of
    #: sources of this kind take its lock and run one after another. None: no such host.
    exclusive_host: ClassVar[str | None] = None
    #: Whether the spider follows links (news stories) that are fetched once across sources.
    follows_links: ClassVar[bool] = False
    #: The Scrapy setting holding this kind's largest answer (its crawler's DOWNLOAD_MAXSIZE,
    #: robots.txt included); None keeps the process-wide limit.
    size_limit_setting: ClassVar[str | None] = None

    @classmethod
    def update_settings(cls, settings: Any) -> None:
        """Scrapy hook, per crawler: apply this kind's answer size limit."""
        super().update_settings(settings)
        if cls.size_limit_setting and settings.get(cls.size_limit_setting):
            limit = settings.getint(cls.size_limit_setting)
            settings.set("DOWNLOAD_MAXSIZE", limit, priority="spider")

    @classmethod
    def process_settings(cls, config: Settings) -> dict[str, Any]:
        """Scrapy settings of the whole crawl process that this kind needs (read in
        ``update_settings``, which sees no litwatch configuration)."""
        return {}

    def __init__(
        self,
        source: SourceSettings,
        config: Settings,
        state: PollState,
        sink: Sink | None = None,
        *,
        after_another: bool = False,
        link_claims: LinkClaimer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=source.id, **kwargs)
        #: Another crawl of this spider's exclusive host has just ended in this process: its
        #: last request may have left a moment ago, and Scrapy paces one crawler only.
        self.after_another = after_another
        #: None (a dry run): links are claimed in ``state.followed`` only, within the process.
        self.link_claims = link_claims
        self.sink = sink or Sink()
        self.source = source
        self.config = config
        self.state = state
        self.report = PollReport()
        #: Why the runner stopped this source before its end (its lock was lost): from then
        #: on nothing of it is stored.
        self.stopped: str | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        """Build the spider and make unexpected errors count as failures of its source.

        Scrapy logs an exception raised in a callback or a pipeline and carries on, so
        without these hooks a parser bug would pass for a successful poll with nothing new.
        """
        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider.on_spider_error, signal=signals.spider_error)
        crawler.signals.connect(spider.on_item_error, signal=signals.item_error)
        return spider

    def on_spider_error(self, failure: Failure, response: Response, spider: Any) -> None:
        """Signal handler: an exception escaped one of our callbacks."""
        self.fail(f"unexpected error reading {response.url}: {_exception_line(failure)}")

    def on_item_error(
        self, item: Any, response: Response | None, spider: Any, failure: Failure
    ) -> None:
        """Signal handler: a pipeline raised while processing an item."""
        where = f" from {response.url}" if response is not None else ""
        self.fail(f"unexpected error storing an item{where}: {_exception_line(failure)}")

    def fail(self, message: str) -> None:
        """Record a failure of this source (the crawl goes on with the other sources)."""
        self.report.failures.append(message)
        self.logger.error("source=%s error=%r", self.source.id, message)

    def configured_urls(self) -> list[str]:
        """The URLs the operator configured for this source: requests may stay on their
        origins whatever their address; anything else must be public (SSRF guard)."""
        return [self.source.url] if self.source.url else []

    def conditional_headers(self) -> dict[str, str]:
        """If-None-Match / If-Modified-Since from the last successful poll."""
        headers = {}
        if self.state.etag:
            headers["If-None-Match"] = self.state.etag
        if self.state.last_modified:
            headers["If-Modified-Since"] = self.state.last_modified
        return headers

    def remember_validators(self, response: Response) -> None:
        """Keep the answer's ETag / Last-Modified (or their absence) for the next poll.

        Call only once the whole answer was read successfully: a saved validator turns the
        next poll into a 304, so saving it for a broken answer would hide its items for good.
        """
        etag = response.headers.get(b"ETag")
        modified = response.headers.get(b"Last-Modified")
        self.report.validators_seen = True
        self.report.etag = etag.decode("latin-1") if etag else None
        self.report.last_modified = modified.decode("latin-1") if modified else None

    def on_error(self, failure: Failure) -> None:
        """Errback: turn a download failure into one clear line."""
        self.fail(describe_failure(failure, self.size_limit(failure)))

    def size_limit(self, failure: Failure) -> int | None:
        """The answer size limit of the request that failed (its meta, else its crawler's)."""
        request = getattr(failure, "request", None)
        if request is not None and "download_maxsize" in request.meta:
            return int(request.meta["download_maxsize"])
        settings = getattr(getattr(self, "crawler", None), "settings", None)
        return settings.getint("DOWNLOAD_MAXSIZE") if settings is not None else None


def _known(*classes: type[Exception] | None) -> tuple[type[Exception], ...]:
    return tuple(c for c in classes if c is not None)


# Scrapy 2.13 passed Twisted's exceptions through; later versions raise their own.
_TIMEOUTS = _known(
    getattr(scrapy_exceptions, "DownloadTimeoutError", None),
    net_error.TimeoutError,
    net_error.TCPTimedOutError,
)
_DNS_ERRORS = _known(
    getattr(scrapy_exceptions, "CannotResolveHostError", None), net_error.DNSLookupError
)
#: Scrapy cancels a download that grows past its size limit (DOWNLOAD_MAXSIZE, or the
#: request's ``download_maxsize``); nothing else cancels one in our settings.
TOO_LARGE = _known(getattr(scrapy_exceptions, "DownloadCancelledError", None))
_REFUSED = _known(
    getattr(scrapy_exceptions, "DownloadConnectionRefusedError", None),
    net_error.ConnectionRefusedError,
)


#: How a failure to resolve a host name begins (the crawl command recognises it).
CANNOT_RESOLVE = "cannot resolve host of"


def _exception_line(failure: Failure) -> str:
    name = failure.type.__name__ if failure.type else "error"
    return f"{name}: {failure.getErrorMessage()}"


def describe_failure(failure: Failure, size_limit: int | None = None) -> str:
    """One line saying why a request failed, naming its URL (for the table and the database)."""
    request = getattr(failure, "request", None)
    url = request.url if request is not None else "?"
    if failure.check(HttpError):
        response = failure.value.response  # type: ignore[union-attr]
        retry_after = response.headers.get(b"Retry-After")
        # A 429/503 given up on: the server's own wait says when polling may resume.
        hint = f" (Retry-After: {retry_after.decode('latin-1')})" if retry_after else ""
        return f"HTTP {response.status} from {response.url}{hint}"
    if failure.check(*_TIMEOUTS):
        return f"timed out fetching {url}"
    if failure.check(*_DNS_ERRORS):
        return f"{CANNOT_RESOLVE} {url}"
    if TOO_LARGE and failure.check(*TOO_LARGE):
        limit = f" ({size_limit / 1024 / 1024:g} MB)" if size_limit else ""
        return f"answer from {url} is larger than the size limit{limit}; not read"
    if failure.check(*_REFUSED):
        return f"connection refused by {url}"
    if failure.check(IgnoreRequest):
        # RobotsTxtMiddleware is what ignores requests in our settings.
        reason = failure.getErrorMessage() or "forbidden by robots.txt"
        return f"{url}: {reason[0].lower()}{reason[1:]}"
    return f"{_exception_line(failure)} fetching {url}"
