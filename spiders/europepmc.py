"""Europe PMC: the REST search for one query, by first-index date, paged by cursorMark.

Covers MEDLINE, PubMed Central and preprints from 30+ servers (``SRC:PPR``). Parsing, and the
quirks of the answers, are in :mod:`spiders.europepmc_parse`. The window is the one every
date-polled source uses (:mod:`spiders.windows`, ``[pubmed] baseline`` and ``overlap``); pages
come one after another, at most one request a second (``DOWNLOAD_DELAY``), until the cursor
repeats or a page is empty.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime
from typing import Any

import scrapy
from scrapy.http import Response
from scrapy.settings import BaseSettings

from crawler.items import Paper
from crawler.settings import Settings
from spiders.base import LitwatchSpider
from spiders.europepmc_parse import (
    DEFAULT_BASE_URL,
    FIRST_CURSOR,
    EuropePMCError,
    parse_search,
    search_url,
)
from spiders.pacing import API_DELAY_SETTING, api_delay, steady_delay
from spiders.windows import date_window

PAGE_SIZE = 1000


class EuropePMCSpider(LitwatchSpider):
    name = kind = "europepmc"
    custom_settings = {  # noqa: RUF012 - Scrapy reads this class attribute
        "CONCURRENT_REQUESTS_PER_DOMAIN": 1,
        "AUTOTHROTTLE_ENABLED": False,
        "ROBOTSTXT_OBEY": False,  # an API, used as its documentation says
    }

    @classmethod
    def process_settings(cls, config: Settings) -> dict[str, Any]:
        return {API_DELAY_SETTING: config.crawl.api_delay}

    @classmethod
    def update_settings(cls, settings: BaseSettings) -> None:
        """At most one request a second to the API by default (``[crawl] api_delay``)."""
        super().update_settings(settings)
        steady_delay(settings, api_delay(settings))

    def __init__(self, *args: Any, now: datetime | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.now = now or datetime.now(UTC)
        self.base_url = self.source.base_url or DEFAULT_BASE_URL

    def configured_urls(self) -> list[str]:
        """The API's configured base URL: every request of this spider goes there."""
        return [self.base_url]

    def _page(self, since: date, until: date, cursor: str) -> scrapy.Request:
        url = search_url(self.base_url, self.source.query or "", since, until, cursor, PAGE_SIZE)
        return scrapy.Request(
            url,
            callback=self.parse_page,
            errback=self.on_error,
            cb_kwargs={"since": since, "until": until, "cursor": cursor},
            dont_filter=True,
        )

    async def start(self) -> AsyncIterator[scrapy.Request]:
        pubmed = self.config.pubmed
        since, until = date_window(self.now, self.state.cursor, pubmed.baseline, pubmed.overlap)
        self.report.cursor = self.now  # saved only if every page is read
        yield self._page(since, until, FIRST_CURSOR)

    def parse_page(
        self, response: Response, since: date, until: date, cursor: str
    ) -> Iterator[Paper | scrapy.Request]:
        try:
            page = parse_search(response.body, self.source.id, sent_cursor=cursor)
        except EuropePMCError as exc:
            self.fail(f"Europe PMC {since}..{until} (cursor {cursor}): {exc}")
            return
        for record in page.papers:
            yield record.paper
        if page.papers and page.next_cursor:
            yield self._page(since, until, page.next_cursor)
