"""bioRxiv and medRxiv: the ``api.biorxiv.org`` details endpoint for a date interval.

One server per source (``server``), filtered by ``categories`` (none: every category, kept when
on topic); pages of 100 by cursor, one after another, at most one request a second. Versions
of one preprint share its DOI and are one paper (the parser keeps the newest). Parsing and
the API's quirks are in :mod:`spiders.biorxiv_parse`.
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
from spiders.biorxiv_parse import DEFAULT_BASE_URL, BiorxivError, details_url, parse_details
from spiders.pacing import API_DELAY_SETTING, api_delay, steady_delay
from spiders.windows import date_window


class BiorxivSpider(LitwatchSpider):
    name = kind = "biorxiv"
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

    def _page(self, since: date, until: date, cursor: int) -> scrapy.Request:
        server = self.source.server or "biorxiv"
        return scrapy.Request(
            details_url(server, since, until, cursor, base_url=self.base_url),
            callback=self.parse_page,
            errback=self.on_error,
            cb_kwargs={"since": since, "until": until, "cursor": cursor},
            dont_filter=True,
        )

    async def start(self) -> AsyncIterator[scrapy.Request]:
        pubmed = self.config.pubmed
        since, until = date_window(self.now, self.state.cursor, pubmed.baseline, pubmed.overlap)
        self.report.cursor = self.now  # saved only if every page is read
        yield self._page(since, until, 0)

    def parse_page(
        self, response: Response, since: date, until: date, cursor: int
    ) -> Iterator[Paper | scrapy.Request]:
        try:
            page = parse_details(response.body, self.source.id, categories=self.source.categories)
        except BiorxivError as exc:
            self.fail(f"{self.source.server} {since}..{until} (cursor {cursor}): {exc}")
            return
        for record in page.records:
            yield record.paper
        following = page.next_cursor
        if following is not None and following > cursor:
            yield self._page(since, until, following)
