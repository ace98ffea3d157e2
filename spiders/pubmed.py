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

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import lxml.etree
import scrapy
from scrapy.http import Response

from crawler.items import Paper
from crawler.xmlsafe import UnsafeXMLError
from spiders.base import LitwatchSpider
from spiders.pubmed_xml import EFetchError, efetch_url, esearch_url, iter_efetch, parse_esearch

#: ESearch cannot page past this many records of one query.
ESEARCH_CAP = 10_000


class PubmedSpider(LitwatchSpider):
    kind = "pubmed"
    custom_settings = {  # noqa: RUF012 - Scrapy reads this class attribute
        # One request at a time and no random shortening of the delay: the 3/s limit is hard.
        "CONCURRENT_REQUESTS_PER_DOMAIN": 1,
        "RANDOMIZE_DOWNLOAD_DELAY": False,
        "AUTOTHROTTLE_ENABLED": False,
    }

    def __init__(self, *args: Any, now: datetime | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        key = self.config.ncbi_api_key
        # Slightly above 1/3 s and 1/10 s so that timer jitter never makes 4 (or 11) in a second.
        self.download_delay = 0.105 if key else 0.34
        self.api_key = key
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
                    f"ESearch {start}: {result.count} records in one day exceed NCBI's cap of {ESEARCH_CAP}"
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
            yield self._request(url, self.parse_fetch, retstart=retstart)

    def parse_fetch(self, response: Response, retstart: int) -> Iterator[Paper]:
        try:
            yield from iter_efetch(response.body, self.source.id)
        except (EFetchError, UnsafeXMLError, lxml.etree.XMLSyntaxError) as exc:
            self.fail(f"EFetch from record {retstart}: {exc}")
