"""PubMed through NCBI E-utilities: ESearch by entry date, then EFetch pages via the history server.

NCBI usage policy: at most 3 requests/s without an API key, 10 with one; identify with
``tool`` and ``email``. New records are found by Entrez date (``datetype=edat``: when a record
entered PubMed), from the last successful poll minus an overlap, never by publication date
(papers are often indexed weeks after they appear). ESearch reports at most 10,000 records
per query, so a larger window is split in halves by date until each part fits; a single day
with more than that is reported as an error rather than silently truncated.

The E-utilities are an API governed by that policy, not pages for robots.txt to rule on
(NCBI's robots.txt is written for its web pages), so these requests skip the robots check.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import lxml.etree
import scrapy
from scrapy.http import Response
from scrapy.settings import BaseSettings

from crawler.items import Paper, PaperBatch
from crawler.settings import Settings
from crawler.xmlsafe import UnsafeXMLError
from spiders.base import LitwatchSpider
from spiders.eutils import efetch_url, esearch_url, parse_esearch
from spiders.pubmed_events import events_from_article
from spiders.pubmed_xml import EFetchError, iter_efetch

#: ESearch cannot page past this many records of one query.
ESEARCH_CAP = 10_000
#: Papers per item from an EFetch page (see PubmedSpider.parse_fetch).
ITEM_PAPERS = 100


#: Seconds between two E-utilities requests. NCBI allows 3 requests/s without an API key and
#: 10 with one; slightly more than 1/3 s and 1/10 s, so that timer jitter between our clock
#: and NCBI's never makes 4 (or 11) in one second.
DELAY_WITHOUT_KEY = 0.36
DELAY_WITH_KEY = 0.11


def ncbi_delay(api_key: str | None) -> float:
    """The pause between two E-utilities requests under NCBI's usage policy."""
    return DELAY_WITH_KEY if api_key else DELAY_WITHOUT_KEY


class PubmedSpider(LitwatchSpider):
    name = kind = "pubmed"
    exclusive_host = "eutils.ncbi"
    custom_settings = {  # noqa: RUF012 - Scrapy reads this class attribute
        # One request at a time and no AutoThrottle guessing: the rate limit is hard.
        "CONCURRENT_REQUESTS_PER_DOMAIN": 1,
        "AUTOTHROTTLE_ENABLED": False,
        # Spider middlewares that have nothing to do for an API client: depth statistics and
        # a URL length limit that would silently drop an ESearch for a long query.
        "SPIDER_MIDDLEWARES": {
            "scrapy.spidermiddlewares.depth.DepthMiddleware": None,
            "scrapy.spidermiddlewares.urllength.UrlLengthMiddleware": None,
        },
        # No Referer: it would echo the previous URL (api_key included) back to NCBI. The
        # policy rather than removing the middleware, which Scrapy's redirect middleware
        # warns about on every crawl.
        "REFERRER_POLICY": "no-referrer",
    }

    @classmethod
    def process_settings(cls, config: Settings) -> dict[str, Any]:
        return {"LITWATCH_NCBI_DELAY": ncbi_delay(config.ncbi_api_key)}

    @classmethod
    def update_settings(cls, settings: BaseSettings) -> None:
        """Pace requests by NCBI's rate (the runner puts it in ``LITWATCH_NCBI_DELAY``)."""
        super().update_settings(settings)
        delay = settings.getfloat("LITWATCH_NCBI_DELAY", DELAY_WITHOUT_KEY)
        settings.set("DOWNLOAD_DELAY", delay, priority="spider")
        # No random shortening of the delay (Scrapy varies it by +-50% by default). Scrapy
        # 2.19 renamed the switch; older versions only know RANDOMIZE_DOWNLOAD_DELAY.
        if "DOWNLOAD_DELAY_JITTER" in settings:
            settings.set("DOWNLOAD_DELAY_JITTER", 0, priority="spider")
        else:
            settings.set("RANDOMIZE_DOWNLOAD_DELAY", False, priority="spider")

    def __init__(
        self,
        *args: Any,
        now: datetime | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.api_key = self.config.ncbi_api_key
        self.base_url = self.source.base_url or self.config.pubmed.base_url
        self.now = now or datetime.now(UTC)
        self.batch_size = self.config.pubmed.batch_size

    def window(self) -> tuple[date, date]:
        """The Entrez-date window of this poll (both ends inclusive, NCBI dates are days)."""
        end = self.now.date()
        if self.state.cursor is None:
            start = (self.now - self.config.pubmed.baseline).date()
        else:
            start = (self.state.cursor - self.config.pubmed.overlap).date()
        return min(start, end), end

    def configured_urls(self) -> list[str]:
        """E-utilities' configured base URL: every request of this spider goes there."""
        return [self.base_url]

    def _common(self) -> dict[str, Any]:
        return {
            "tool": self.config.pubmed.tool,
            "email": self.config.pubmed.email,
            "api_key": self.api_key,
        }

    def _request(self, url: str, callback: Any, **cb_kwargs: Any) -> scrapy.Request:
        return scrapy.Request(
            url,
            callback=callback,
            errback=self.on_error,
            cb_kwargs=cb_kwargs,
            meta={"dont_obey_robotstxt": True},
            dont_filter=True,
        )

    def search(self, start: date, end: date) -> scrapy.Request:
        url = esearch_url(
            self.base_url,
            term=self.source.query or "",
            mindate=start,
            maxdate=end,
            retmax=0,
            **self._common(),
        )
        return self._request(url, self.parse_search, start=start, end=end)

    async def start(self) -> AsyncIterator[scrapy.Request]:
        start, end = self.window()
        self.report.cursor = self.now  # saved only if every part of the window succeeds
        if self.after_another:  # the NCBI delay counts from the other crawl's last request
            await asyncio.sleep(ncbi_delay(self.api_key))
        yield self.search(start, end)

    def parse_search(self, response: Response, start: date, end: date) -> Iterator[scrapy.Request]:
        result = parse_esearch(response.body)
        self.report.warnings.extend(result.warnings)
        if result.errors:
            self.fail(f"ESearch {start}..{end}: {'; '.join(result.errors)}")
            return
        if result.count >= ESEARCH_CAP:
            if start >= end:
                self.fail(
                    f"ESearch {start}: {result.count} records in one day exceed NCBI's cap"
                    f" of {ESEARCH_CAP}; narrow the query"
                )
                return
            middle = start + (end - start) // 2
            yield self.search(start, middle)
            yield self.search(middle + timedelta(days=1), end)
            return
        if result.count and not (result.webenv and result.query_key):
            self.fail(f"ESearch {start}..{end}: no WebEnv/QueryKey in the answer")
            return
        for retstart in range(0, result.count, self.batch_size):
            url = efetch_url(
                self.base_url,
                webenv=result.webenv or "",
                query_key=result.query_key or "",
                retstart=retstart,
                retmax=self.batch_size,
                **self._common(),
            )
            expected = min(self.batch_size, result.count - retstart)
            yield self._request(url, self.parse_fetch, retstart=retstart, expected=expected)

    async def parse_fetch(
        self, response: Response, retstart: int, expected: int | None = None
    ) -> AsyncIterator[PaperBatch]:
        """Yield the papers of one EFetch page in batches; a short page is reported.

        Batches, not one item per paper: Scrapy's machinery for each item (scheduling, the
        pipeline chain, signals) is a measurable share of an ingest's CPU. Nor one item
        per page: that would hold the reactor for a whole page (up to 10,000 records) of
        parsing, then of storing, and a request falling due meanwhile would leave late, and
        the next one on time: closer together than NCBI's rate limit allows. So the reactor
        gets its turn after each :data:`ITEM_PAPERS` papers. Papers read before a broken
        part of the page are still yielded.
        """
        batch: list[Paper] = []
        read = 0
        try:
            for paper in iter_efetch(response.body, self.source.id, events_from_article):
                batch.append(paper)
                read += 1
                if len(batch) == ITEM_PAPERS:
                    yield PaperBatch(batch)
                    batch = []
                    await _reactor_turn()
        except (EFetchError, UnsafeXMLError, lxml.etree.XMLSyntaxError) as exc:
            self.fail(f"EFetch from record {retstart}: {exc}")
            if batch:
                yield PaperBatch(batch)
            return
        if batch:
            yield PaperBatch(batch)
        if expected is not None and read < expected:
            # NCBI can serve fewer records than asked (records withdrawn between search and
            # fetch, a backend hiccup). Not a failure (a withdrawn record would fail the source
            # for ever), but never silent: the summary and the log say so.
            self.report.warnings.append(
                f"EFetch from record {retstart}: {read} of {expected} records returned"
            )


async def _reactor_turn() -> None:
    """Let the event loop (Scrapy's asyncio reactor) serve timers, reads and writes.

    Twice: the first turn may resume this coroutine before the loop has served the file
    descriptors it found ready, the second cannot.
    """
    await asyncio.sleep(0)
    await asyncio.sleep(0)
