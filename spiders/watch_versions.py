"""The lifecycle watch's preprint side: which held preprints now have a journal version.

Two ways, one after the other, each request at least its host's delay after the last:

* Crossref, one ``/works/{doi}`` per held preprint with no known journal version: its
  ``relation.is-preprint-of`` names the journal version (a preprint Crossref does not know, a
  404, is simply not linked yet).
* bioRxiv and medRxiv, the ``pubs`` endpoint over the watch's window for each server a
  ``biorxiv`` source polls: every preprint of the server published in a journal in that window
  (the store keeps the links whose preprint or journal version it holds).

Each answer is one :class:`~crawler.events.EventBatch` of links (and of any notices a work
lists), stored by the watch's pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import scrapy
from scrapy.http import Response

from crawler.events import CROSSREF, EventBatch, VersionLink
from spiders.base import LitwatchSpider
from spiders.biorxiv_parse import BiorxivError, parse_pubs, pubs_url
from spiders.crossref_parse import CrossrefError, crossref_work_url, parse_work


class WatchVersionsSpider(LitwatchSpider):
    name = "watch-versions"
    custom_settings = {  # noqa: RUF012 - Scrapy reads this class attribute
        "CONCURRENT_REQUESTS_PER_DOMAIN": 1,
        "AUTOTHROTTLE_ENABLED": False,
        "ROBOTSTXT_OBEY": False,  # APIs, asked as their documentation says
    }

    def __init__(
        self,
        *args: Any,
        preprints: list[str],
        since: date,
        until: date,
        servers: list[tuple[str, str]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        crossref = self.config.crossref
        self.preprints = list(preprints)
        self.since, self.until = since, max(since, until)
        #: (server, api base URL) for each bioRxiv/medRxiv server a source polls.
        self.servers = list(dict.fromkeys(servers))
        self.crossref_base = crossref.base_url
        self.mailto = crossref.mailto
        self.delay = crossref.delay
        self.api_delay = self.config.crawl.api_delay  # api.biorxiv.org, as its source kind

    def configured_urls(self) -> list[str]:
        return [self.crossref_base, *(base for _server, base in self.servers)]

    async def start(self) -> AsyncIterator[scrapy.Request]:
        first = self._after_work(-1)
        if first is not None:
            yield first

    def _after_work(self, position: int) -> scrapy.Request | None:
        """What follows the Crossref request at ``position``: the next one, else the pubs."""
        if position + 1 < len(self.preprints):
            return self._work(position + 1)
        return self._pubs(0, 0) if self.servers else None

    def _work(self, position: int) -> scrapy.Request:
        url = crossref_work_url(self.preprints[position], self.mailto, base=self.crossref_base)
        return scrapy.Request(
            url, callback=self.parse_work, errback=self.on_error, dont_filter=True,
            cb_kwargs={"position": position}, meta={"handle_httpstatus_list": [404]},
        )  # fmt: skip

    def _pubs(self, index: int, cursor: int) -> scrapy.Request:
        server, base = self.servers[index]
        url = pubs_url(server, self.since, self.until, cursor, base_url=base)
        return scrapy.Request(
            url, callback=self.parse_pubs, errback=self.on_error, dont_filter=True,
            cb_kwargs={"index": index, "cursor": cursor},
        )  # fmt: skip

    async def parse_work(
        self, response: Response, position: int
    ) -> AsyncIterator[EventBatch | scrapy.Request]:
        doi = self.preprints[position]
        if response.status != 404:
            try:
                work = parse_work(response.body)
            except CrossrefError as exc:
                self.fail(f"Crossref work {doi}: {exc}")
            else:
                links = [
                    VersionLink(preprint_doi=link.preprint_doi, published_doi=link.published_doi,
                                source=CROSSREF)
                    for link in work.preprint_links
                ]  # fmt: skip
                yield EventBatch("versions", list(work.events), checked=1, links=links)
        following = self._after_work(position)
        if following is not None:
            await asyncio.sleep(self.delay)
            yield following

    async def parse_pubs(
        self, response: Response, index: int, cursor: int
    ) -> AsyncIterator[EventBatch | scrapy.Request]:
        server = self.servers[index][0]
        following: scrapy.Request | None
        try:
            page = parse_pubs(response.body)
        except BiorxivError as exc:
            self.fail(f"{server} pubs {self.since}..{self.until} (cursor {cursor}): {exc}")
            following = self._pubs(index + 1, 0) if index + 1 < len(self.servers) else None
        else:
            links = [link.version_link() for link in page.links]
            yield EventBatch("versions", [], checked=len(links), links=links)
            nxt = page.next_cursor
            if nxt is not None and nxt > cursor:
                following = self._pubs(index, nxt)
            elif index + 1 < len(self.servers):
                following = self._pubs(index + 1, 0)
            else:
                following = None
        if following is not None:
            await asyncio.sleep(self.api_delay)
            yield following
