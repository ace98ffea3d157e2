"""The item pipelines, in process, as Scrapy builds them (crawler/ingest/pipelines.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from scrapy.exceptions import DropItem
from scrapy.settings import Settings as ScrapySettings
from sqlalchemy import Engine, select

from crawler.db.models import PaperRow
from crawler.ingest.pipelines import ClassifyPipeline, StorePipeline
from crawler.items import Paper, PaperBatch
from crawler.poll import PollState
from crawler.settings import SourceSettings, load_settings
from spiders.base import Sink
from spiders.feed import FeedSpider


def _pipelines(engine: Engine | None, store_batch: int) -> tuple[Any, Any, FeedSpider]:
    """Both pipelines as Scrapy would build them, for a feed source without topics."""
    source = SourceSettings(id="jprn", kind="feed", url="https://pain.example.org/rss.xml")
    config = load_settings(None, environ={})
    spider = FeedSpider(source=source, config=config, state=PollState(), sink=Sink(engine))
    settings = ScrapySettings({"LITWATCH_STORE_BATCH": store_batch})
    crawler: Any = SimpleNamespace(spider=spider, settings=settings)
    classify, store = ClassifyPipeline.from_crawler(crawler), StorePipeline.from_crawler(crawler)
    classify.open_spider()
    store.open_spider()
    return classify, store, spider


def _paper(serial: int, title: str) -> Paper:
    return Paper(source_id="jprn", origin="feed", doi=f"10.5555/pipe.{serial}", title=title)


def test_a_batch_item_keeps_its_topical_papers_and_is_stored_in_store_batches(
    engine: Engine,
) -> None:
    classify, store, spider = _pipelines(engine, store_batch=2)
    titles = [
        "Fibromyalgia and sleep quality in adults",
        "Plate tectonics of the western Pacific",
        "Autoantibodies against satellite glia cells in pain",
        "Fibromyalgia symptoms after a viral infection",
    ]
    batch = PaperBatch([_paper(i, title) for i, title in enumerate(titles)])
    assert classify.process_item(batch) is batch
    assert [p.doi for p in batch.papers] == ["10.5555/pipe.0", "10.5555/pipe.2", "10.5555/pipe.3"]
    topics = [["fibromyalgia"], ["autoimmunity"], ["fibromyalgia"]]
    assert [p.topics for p in batch.papers] == topics
    assert (spider.report.items, spider.report.skipped) == (4, 1)
    store.process_item(batch)
    assert (spider.report.stored, len(store.buffer)) == (2, 1)  # one store batch, one waiting
    store.close_spider()
    assert (spider.report.stored, spider.report.new) == (3, 3)
    with engine.connect() as conn:
        dois = conn.scalars(select(PaperRow.doi).order_by(PaperRow.doi)).all()
    assert dois == ["10.5555/pipe.0", "10.5555/pipe.2", "10.5555/pipe.3"]


def test_a_single_off_topic_paper_is_dropped_and_a_dry_run_writes_each_paper(
    tmp_path: Path,
) -> None:
    classify, store, spider = _pipelines(None, store_batch=500)
    with pytest.raises(DropItem):
        classify.process_item(_paper(1, "Plate tectonics of the western Pacific"))
    out = io.StringIO()
    store.out = out
    kept = _paper(2, "Fibromyalgia and sleep quality in adults")
    store.process_item(classify.process_item(PaperBatch([kept, _paper(3, "Volcanoes")])))
    store.process_item(classify.process_item(_paper(4, "Fibromyalgia in adolescents")))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["doi"] for line in lines] == ["10.5555/pipe.2", "10.5555/pipe.4"]
    assert (spider.report.items, spider.report.skipped) == (4, 2)
