"""The lifecycle watch's PubMed side: re-read watched records by PMID and report their events.

Records are fetched by POSTing their PMIDs to EFetch, :attr:`batch_size` at a time (never a
URL that grows with the batch), one request after another at NCBI's rate (the pacing and the
E-utilities host lock come from :class:`~spiders.pubmed.PubmedSpider`). Each answer is read by
the same parser as a crawl's (:func:`spiders.pubmed_events.events_by_pmid`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import lxml.etree
import scrapy
from scrapy.http import Response

from crawler.events import EventBatch
from crawler.xmlsafe import UnsafeXMLError
from spiders.pubmed import PubmedSpider
from spiders.pubmed_events import events_by_pmid
from spiders.pubmed_xml import EFetchError


class WatchPubmedSpider(PubmedSpider):
    name = "watch-pubmed"

    def __init__(self, *args: Any, pmids: list[str], batch_size: int = 200, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.pmids = pmids
        self.watch_batch = batch_size
        self.checked = 0

    def _batch(self, start: int) -> scrapy.FormRequest | None:
        ids = self.pmids[start : start + self.watch_batch]
        if not ids:
            return None
        form = {"db": "pubmed", "id": ",".join(ids), "retmode": "xml"}
        form |= {k: str(v) for k, v in self._common().items() if v}
        return scrapy.FormRequest(
            self.base_url.rstrip("/") + "/efetch.fcgi",
            formdata=form,
            callback=self.parse_records,
            errback=self.on_error,
            cb_kwargs={"start": start, "ids": ids},
            meta={"dont_obey_robotstxt": True},
            dont_filter=True,
        )

    async def start(self) -> AsyncIterator[scrapy.Request]:
        first = self._batch(0)
        if first is not None:
            yield first

    def parse_records(
        self, response: Response, start: int, ids: list[str]
    ) -> Iterator[EventBatch | scrapy.Request]:
        try:
            found = events_by_pmid(response.body)
        except (EFetchError, UnsafeXMLError, lxml.etree.XMLSyntaxError) as exc:
            self.fail(f"EFetch of {len(ids)} watched records from {ids[0]}: {exc}")
            return  # later batches are not asked: the rerun resumes here
        events = [event for record in found.values() for event in record]
        self.checked += len(ids)
        yield EventBatch("pubmed", events, checked=len(ids), progress=ids[-1])
        following = self._batch(start + len(ids))
        if following is not None:
            yield following
