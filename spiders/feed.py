"""Journal feeds: any RSS 0.9x/1.0/2.0 or Atom feed, one request per poll.

Quirks live in spiders/feed_parse.py (where each publisher hides its DOI). The request is
conditional (If-None-Match / If-Modified-Since): a 304 is a successful poll with nothing new.
A feed that parsed only with problems (feedparser's "bozo": cut short, undefined entities)
keeps the entries it yielded, but its validators are not saved: the next poll fetches it in
full instead of being told "not modified" about a copy that was never read completely.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import scrapy
from scrapy.http import Response

from crawler.items import Paper
from spiders.base import LitwatchSpider
from spiders.feed_parse import FeedError, parse_feed


class FeedSpider(LitwatchSpider):
    name = kind = "feed"
    size_limit_setting = "LITWATCH_FEED_MAXSIZE"

    async def start(self) -> AsyncIterator[scrapy.Request]:
        assert self.source.url
        yield scrapy.Request(
            self.source.url,
            headers=self.conditional_headers(),
            callback=self.parse_feed,
            errback=self.on_error,
            meta={"handle_httpstatus_list": [304]},
            dont_filter=True,
        )

    def parse_feed(self, response: Response) -> Iterator[Paper]:
        if response.status == 304:
            self.report.not_modified += 1
            return
        headers = {
            k.decode("latin-1").lower(): v[0].decode("latin-1")
            for k, v in response.headers.items()
            if v
        }
        try:
            result = parse_feed(response.body, response.url, self.source.id, headers=headers)
        except FeedError as exc:
            self.fail(f"{response.url}: {exc}")
            return
        self.report.warnings.extend(result.warnings)
        if not result.warnings:
            self.remember_validators(response)
        yield from result.papers
