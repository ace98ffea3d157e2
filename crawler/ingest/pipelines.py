"""Item pipelines: thin shells over plain functions (topics.classify, store.upsert).

``ClassifyPipeline`` tags each item with topics and drops off-topic items from sources that
have no ``topics`` of their own. ``StorePipeline`` stores items in batches through
:func:`crawler.db.store.upsert`, or writes them as JSON lines in a dry run. An item is a
:class:`~crawler.items.Paper` or a :class:`~crawler.items.PaperBatch`, which both treat as
its papers one by one (an off-topic paper leaves the batch instead of dropping it).
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

from crawler.db.news import store_news
from crawler.db.store import upsert
from crawler.items import NewsStory, Paper, PaperBatch
from crawler.topics import TopicMatcher
from spiders.base import LitwatchSpider

STORE_BATCH = 500
#: What a spider may yield.
Item = Paper | PaperBatch | NewsStory


def assign_topics(
    item: Paper | NewsStory, matcher: TopicMatcher, source_topics: list[str] | None
) -> bool:
    """Set ``item.topics``; return False when the item is off-topic and should be skipped.

    A source with ``topics`` vouches for them (a PubMed query written for a topic, a journal
    wholly within one): its items carry them even when the terms are only in MeSH or nowhere,
    plus any other topic their text matches. Other sources keep only matching items.
    """
    # The source's own topics apply anyway: only the others need searching for.
    skip = source_topics or ()
    if isinstance(item, NewsStory):  # press coverage: its headline and summary
        matched = matcher.classify(item.headline, item.summary, skip=skip)
    else:
        text = "\n".join(filter(None, [item.abstract, item.context]))
        matched = matcher.classify(item.title, text, item.mesh, item.keywords, skip=skip)
    if source_topics:
        item.topics = list(dict.fromkeys([*source_topics, *matched]))
        return True
    item.topics = matched
    return bool(matched)


class QuietItemLogFormatter(LogFormatter):
    """Scrapy's log formatter without its two DEBUG lines per item ("Scraped from", "Dropped").

    crawler.logs never shows Scrapy below WARNING, but Scrapy still builds a log record for
    every item before the handler discards it (a measurable share of an ingest's CPU, see
    docs/benchmarks.md). Returning None tells Scrapy not to log at all.
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

    def process_item(self, item: Item) -> Item:
        if isinstance(item, PaperBatch):
            item.papers = [paper for paper in item.papers if self.keep(paper)]
            return item
        if not self.keep(item):
            raise DropItem("off-topic", log_level="DEBUG")
        return item

    def keep(self, paper: Paper | NewsStory) -> bool:
        """Count and tag one paper; False when it is off-topic (counted as skipped)."""
        report = self.spider.report
        report.items += 1
        if not assign_topics(paper, self.matcher, self.spider.source.topics):
            report.skipped += 1
            # A notice off every topic ("Retraction: ...") still tells what happened to a
            # paper litwatch may hold: its events go on to the store, the record does not.
            if isinstance(paper, Paper) and paper.events:
                paper.events_only = True
                return True
            return False
        return True


def item_json(item: Paper | NewsStory) -> str:
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

    def process_item(self, item: Item) -> Item:
        if self.spider.stopped:  # another crawl may own the source now: store nothing more
            self.buffer.clear()
            raise DropItem(self.spider.stopped, log_level="DEBUG")
        if isinstance(item, NewsStory):  # press coverage naming no paper: news_items
            self.store_story(item)
            return item
        papers = item.papers if isinstance(item, PaperBatch) else [item]
        if self.out is not None:
            self.out.writelines(item_json(paper) + "\n" for paper in papers)
            return item
        self.buffer.extend(papers)
        while len(self.buffer) >= self.batch_size:
            self.flush(self.batch_size)
        return item

    def flush(self, size: int | None = None) -> None:
        """Store the first ``size`` buffered papers (all of them by default)."""
        size = len(self.buffer) if size is None else size
        batch, self.buffer = self.buffer[:size], self.buffer[size:]
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

    def store_story(self, story: NewsStory) -> None:
        """Store one news story at once (stories are few: one per followed page)."""
        if self.out is not None:
            self.out.write(item_json(story) + "\n")
            return
        if self.engine is None:
            return
        try:
            store_news(self.engine, [story])
        except SQLAlchemyError as exc:
            self.spider.report.store_failed = True
            detail = getattr(exc, "orig", None) or exc
            self.spider.fail(f"database error storing news story {story.url}: {detail}")
            return
        self.spider.report.stored += 1

    def close_spider(self) -> None:
        if self.spider.stopped:
            self.buffer.clear()  # unsaved poll state: the next poll fetches these again
        self.flush()
        if self.out is not None:
            self.out.flush()
