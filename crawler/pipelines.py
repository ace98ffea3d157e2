"""Item pipelines: thin shells over plain functions (topics.classify, store.upsert).

``ClassifyPipeline`` tags each item with topics and drops off-topic items from sources that
have no ``topics`` of their own. ``StorePipeline`` stores items in batches through
:func:`crawler.store.upsert`, or writes them as JSON lines in a dry run.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date
from typing import IO, Any, Self

from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem
from scrapy.http import Response
from scrapy.logformatter import LogFormatter, LogFormatterResult
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from twisted.python.failure import Failure

from crawler.items import Paper
from crawler.store import upsert
from crawler.topics import TopicMatcher
from spiders.base import LitwatchSpider

STORE_BATCH = 500


def assign_topics(item: Paper, matcher: TopicMatcher, source_topics: list[str] | None) -> bool:
    """Set ``item.topics``; return False when the item is off-topic and should be skipped.

    A source with ``topics`` vouches for them (a PubMed query written for a topic, a journal
    wholly within one): its items carry them even when the terms are only in MeSH or nowhere,
    plus any other topic their text matches. Other sources keep only matching items.
    """
    text = "\n".join(filter(None, [item.abstract, item.context]))
    # The source's own topics apply anyway: only the others need searching for.
    matched = matcher.classify(item.title, text, item.mesh, item.keywords, skip=source_topics or ())
    if source_topics:
        item.topics = list(dict.fromkeys([*source_topics, *matched]))
        return True
    item.topics = matched
    return bool(matched)


class QuietItemLogFormatter(LogFormatter):
    """Scrapy's log formatter without its two DEBUG lines per item ("Scraped from", "Dropped").

    crawler.logs never shows Scrapy below WARNING, but Scrapy still builds a log record for
    every item before the handler discards it: about 4% of the CPU of a 20,000-record ingest
    (docs/benchmarks.md). Returning None tells Scrapy not to log at all.
    """

    def scraped(  # type: ignore[override]
        self, item: Any, response: Response | Failure | None, spider: Any
    ) -> LogFormatterResult | None:
        return None

    def dropped(  # type: ignore[override]
        self, item: Any, exception: BaseException, response: Response | Failure | None, spider: Any
    ) -> LogFormatterResult | None:
        return None


class _SpiderPipeline:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    @property
    def spider(self) -> LitwatchSpider:
        spider = self.crawler.spider
        assert isinstance(spider, LitwatchSpider)
        return spider


class ClassifyPipeline(_SpiderPipeline):
    def open_spider(self) -> None:
        self.matcher = TopicMatcher(self.spider.config.topics)

    def process_item(self, item: Paper) -> Paper:
        spider = self.spider
        spider.report.items += 1
        if not assign_topics(item, self.matcher, spider.source.topics):
            spider.report.skipped += 1
            raise DropItem("off-topic", log_level="DEBUG")
        return item


def item_json(item: Paper) -> str:
    """One item as a JSON line (dry runs and ``-O``)."""
    data = dataclasses.asdict(item)
    data.pop("context", None)
    return json.dumps(data, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> str:
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(type(value).__name__)


class StorePipeline(_SpiderPipeline):
    """Store items in batches (one transaction each), or write them out in a dry run."""

    def open_spider(self) -> None:
        self.engine: Engine | None = self.spider.sink.engine
        self.out: IO[str] | None = self.spider.sink.out
        self.batch_size = self.crawler.settings.getint("LITWATCH_STORE_BATCH", STORE_BATCH)
        self.buffer: list[Paper] = []

    def process_item(self, item: Paper) -> Paper:
        if self.out is not None:
            self.out.write(item_json(item) + "\n")
            return item
        self.buffer.append(item)
        if len(self.buffer) >= self.batch_size:
            self.flush()
        return item

    def flush(self) -> None:
        batch, self.buffer = self.buffer, []
        if not batch or self.engine is None:
            return
        report = self.spider.report
        try:
            result = upsert(self.engine, batch)
        except SQLAlchemyError as exc:
            report.store_failed = True
            detail = getattr(exc, "orig", None) or exc
            self.spider.fail(
                f"database error storing {len(batch)} items: {type(exc).__name__}: {detail}"
            )
            return
        report.new += len(result.new_paper_ids)
        report.merged += result.merged + result.collapsed
        report.stored += len(batch)

    def close_spider(self) -> None:
        self.flush()
        if self.out is not None:
            self.out.flush()
