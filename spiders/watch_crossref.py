"""The lifecycle watch's Crossref side: notices indexed since the last check, in bulk.

One cursor-paged query lists every retraction, correction, expression of concern, withdrawal
and new version that Crossref indexed since a date (``from-index-date`` with ``update-type``
filters, 1,000 a page); the store keeps the events whose target it holds. The number of
requests follows the number of notices published, not of papers watched. Requests go one after
another, at least ``[crossref] delay`` apart and slower when Crossref's ``X-Rate-Limit-Limit``
and ``-Interval`` headers ask for it; ``mailto`` puts them in Crossref's polite pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import scrapy
from scrapy.http import Response

from crawler.events import EventBatch
from spiders.base import LitwatchSpider
from spiders.crossref_parse import (
    CrossrefError,
    crossref_rate_limit,
    crossref_updates_url,
    parse_work_list,
)


class WatchCrossrefSpider(LitwatchSpider):
    name = "watch-crossref"
    custom_settings = {  # noqa: RUF012 - Scrapy reads this class attribute
        "CONCURRENT_REQUESTS_PER_DOMAIN": 1,
        "AUTOTHROTTLE_ENABLED": False,
        "ROBOTSTXT_OBEY": False,  # an API, asked as its documentation says
    }

    def __init__(self, *args: Any, since: date, cursor: str = "*", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        crossref = self.config.crossref
        self.since = since
        self.first_cursor = cursor
        self.base = crossref.base_url
        self.mailto = crossref.mailto
        self.delay = crossref.delay
        self.checked = 0

    def _page(self, cursor: str) -> scrapy.Request:
        url = crossref_updates_url(
            self.since, self.mailto, base=self.base, cursor=cursor, rows=1000
        )
        return scrapy.Request(
            url,
            callback=self.parse_page,
            errback=self.on_error,
            cb_kwargs={"cursor": cursor},
            dont_filter=True,
        )

    async def start(self) -> AsyncIterator[scrapy.Request]:
        yield self._page(self.first_cursor)

    async def parse_page(
        self, response: Response, cursor: str
    ) -> AsyncIterator[EventBatch | scrapy.Request]:
        try:
            page = parse_work_list(response.body)
        except CrossrefError as exc:
            self.fail(f"Crossref notices since {self.since} (cursor {cursor}): {exc}")
            return
        events = [event for work in page.works for event in work.events]
        self.checked += len(page.works)
        more = bool(page.works) and page.next_cursor not in (None, cursor)
        yield EventBatch("crossref", events, checked=len(page.works), progress=page.next_cursor)
        if not more or page.next_cursor is None:
            return
        wait = max(self.delay, crossref_rate_limit(response.headers, default=self.delay))
        await asyncio.sleep(wait)
        yield self._page(page.next_cursor)
