"""``litwatch watch``: re-check the papers already sent for what happened to them since.

Two spiders in one Scrapy process: :class:`spiders.watch_pubmed.WatchPubmedSpider` re-reads the
watched records by PMID, :class:`spiders.watch_crossref.WatchCrossrefSpider` lists the notices
Crossref indexed since the last check. :class:`EventStorePipeline` stores each answer's events
(:mod:`crawler.db.events`) and, in the same transaction, how far the watch got: a watch killed
at any point resumes there, and an event learned twice is stored once. The run's record (last
run, papers checked, events found, failures) is the ``meta`` row ``lifecycle.watch``, which
``litwatch status`` shows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Self

from scrapy.crawler import Crawler
from sqlalchemy import Engine

from crawler.db import WATCH_KEY, meta
from crawler.db import events as event_store
from crawler.db import versions as version_store
from crawler.db.engine import transaction
from crawler.db.models import utcnow
from crawler.events import EventBatch
from crawler.ingest.scrapy_settings import scrapy_settings
from crawler.locks import WATCH_LOCK, NamedLock, host_lock
from crawler.poll import PollState
from crawler.settings import Settings, SourceSettings
from spiders.base import LitwatchSpider, Sink

log = logging.getLogger("litwatch.watch")

#: Average days in a month, for ``watch_months``.
_MONTH = timedelta(days=30.44)
#: How far back the bioRxiv/medRxiv ``pubs`` listing is read at most (a first run would
#: otherwise page through two years of every server); older preprints are asked of Crossref.
PUBS_WINDOW = timedelta(days=60)


class WatchBusy(Exception):
    """Another watch runs against this database."""


@dataclass
class WatchRecord:
    """The ``lifecycle.watch`` row: the last run, and where an unfinished one resumes."""

    state: str = "never"  # never | running | done | failed
    started_at: str | None = None
    finished_at: str | None = None
    checked: int = 0
    events_new: int = 0
    failures: list[str] = field(default_factory=list)
    #: Resume points of an unfinished run: the last PMID whose batch is stored, and the
    #: Crossref query (its start date and the cursor of the next page).
    pubmed_after: str | None = None
    crossref_since: str | None = None
    crossref_cursor: str | None = None
    #: Start of the last run that finished without failures: the next Crossref query
    #: starts there.
    last_success: str | None = None

    @classmethod
    def load(cls, engine: Engine) -> WatchRecord:
        value = meta.read(engine, WATCH_KEY)
        known = cls.__dataclass_fields__
        data = json.loads(value) if value else {}
        return cls(**{k: v for k, v in data.items() if k in known})

    def dump(self) -> str:
        return json.dumps(asdict(self))


class EventStorePipeline:
    """Stores each :class:`~crawler.events.EventBatch` and the watch's progress, together."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def process_item(self, item: Any) -> Any:
        spider = self.crawler.spider
        engine = spider.sink.engine if isinstance(spider, LitwatchSpider) else None
        if not isinstance(item, EventBatch) or engine is None:
            return item
        with transaction(engine) as session:
            added = event_store.learn(session, item.events, utcnow())
            if item.links:  # preprints now published (crawler.db.versions)
                learned = version_store.record(session, item.links, utcnow(), only_held=True)
                added += learned.events
            record = WatchRecord(**json.loads(meta.read_in(session, WATCH_KEY) or "{}"))
            record.checked += item.checked
            record.events_new += added
            if item.stage == "pubmed":
                record.pubmed_after = item.progress
            elif item.stage == "crossref":
                record.crossref_cursor = item.progress
            meta.put(session, WATCH_KEY, record.dump())
        return item


@dataclass
class WatchReport:
    """What one ``litwatch watch`` did."""

    watched: int = 0
    checked: int = 0
    events_new: int = 0
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    resumed: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures


def run_watch(config: Settings, engine: Engine, *, all_papers: bool | None = None) -> WatchReport:
    """Run the watch once (resuming an interrupted one); raises :class:`WatchBusy`."""
    lock = NamedLock(engine, WATCH_LOCK)
    if not lock.acquire():
        raise WatchBusy("another litwatch watch is running against this database")
    ncbi = NamedLock(engine, host_lock("eutils.ncbi"))
    try:
        if not ncbi.acquire(blocking=True, timeout=config.daemon.crawl_timeout.total_seconds()):
            raise WatchBusy("E-utilities busy with another crawl")
        return _run(
            config, engine, config.lifecycle.all_papers if all_papers is None else all_papers
        )
    finally:
        ncbi.release()
        lock.release()


def _run(config: Settings, engine: Engine, all_papers: bool) -> WatchReport:
    from scrapy.crawler import CrawlerProcess

    from spiders.watch_crossref import WatchCrossrefSpider
    from spiders.watch_pubmed import WatchPubmedSpider
    from spiders.watch_versions import WatchVersionsSpider

    record, report = _start_record(config, engine)
    since = None if all_papers else utcnow() - config.lifecycle.watch_months * _MONTH
    with transaction(engine) as session:
        pmids, _ = event_store.watchlist(session, since)
        preprints = version_store.unlinked_preprints(session, since)
    report.watched = len(pmids)
    if record.pubmed_after:
        pmids = [p for p in pmids if int(p) > int(record.pubmed_after)]
    settings = scrapy_settings(
        config, [WatchPubmedSpider, WatchCrossrefSpider, WatchVersionsSpider]
    )
    settings["ITEM_PIPELINES"] = {f"{__name__}.EventStorePipeline": 800}
    process = CrawlerProcess(settings)
    sink = Sink(engine, None)
    crawlers = []
    for cls, stage, extra in (
        (WatchPubmedSpider, "pubmed", {"pmids": pmids, "batch_size": config.lifecycle.batch_size}),
        (
            WatchCrossrefSpider,
            "crossref",
            {"since": date.fromisoformat(record.crossref_since or ""),
             "cursor": record.crossref_cursor or "*"},
        ),
        (
            WatchVersionsSpider,
            "versions",
            {"preprints": preprints, "until": utcnow().date(),
             "servers": _preprint_servers(config) if preprints else [],
             "since": max(date.fromisoformat(record.crossref_since or ""),
                          (utcnow() - PUBS_WINDOW).date())},
        ),
    ):  # fmt: skip
        crawler = process.create_crawler(cls)
        crawlers.append((stage, crawler))
        process.crawl(
            crawler, source=_source(config, stage), config=config, state=PollState(), sink=sink,
            **extra,
        )  # fmt: skip
    process.start()
    for _stage, crawler in crawlers:
        spider = crawler.spider
        if not isinstance(spider, LitwatchSpider):
            report.failures.append(f"{crawler.spidercls.name} did not start")
            continue
        report.failures += spider.report.failures
        report.requests += int(crawler.stats.get_value("downloader/request_count", 0))
    _finish_record(engine, report)
    return report


def _start_record(config: Settings, engine: Engine) -> tuple[WatchRecord, WatchReport]:
    """Open a run, or resume the unfinished one (its progress kept)."""
    record = WatchRecord.load(engine)
    report = WatchReport()
    now = utcnow()
    if record.state in ("running", "failed") and record.started_at:
        report.resumed = True
        log.info("event=watch.resume pubmed_after=%s", record.pubmed_after)
    else:
        first = now - config.lifecycle.watch_months * _MONTH
        since = datetime.fromisoformat(record.last_success) if record.last_success else first
        record = WatchRecord(
            state="running",
            started_at=now.isoformat(),
            crossref_since=since.astimezone(UTC).date().isoformat(),
            last_success=record.last_success,
        )
    meta.write(engine, WATCH_KEY, record.dump())
    return record, report


def _finish_record(engine: Engine, report: WatchReport) -> None:
    record = WatchRecord.load(engine)
    report.checked, report.events_new = record.checked, record.events_new
    record.finished_at = utcnow().isoformat()
    record.failures = report.failures[:20]
    if report.failures:
        record.state = "failed"  # the next run resumes from the progress kept
    else:
        record.state = "done"
        record.last_success = record.started_at
        record.pubmed_after = record.crossref_cursor = None
    meta.write(engine, WATCH_KEY, record.dump())


def _source(config: Settings, stage: str) -> SourceSettings:
    """The watch's stand-in source for each spider (ids shown in logs and failures)."""
    if stage == "pubmed":
        return SourceSettings(id="lifecycle-pubmed", kind="pubmed", query="lifecycle watch")
    name = "lifecycle-versions" if stage == "versions" else "lifecycle-crossref"
    return SourceSettings(id=name, kind="feed", url=config.crossref.base_url)


def _preprint_servers(config: Settings) -> list[tuple[str, str]]:
    """(server, API base URL) of every enabled ``biorxiv`` source: whose ``pubs`` to read
    (only while some held preprint has no known journal version)."""
    from spiders.biorxiv_parse import DEFAULT_BASE_URL

    return list(dict.fromkeys(
        (src.server, src.base_url or DEFAULT_BASE_URL)
        for src in config.sources if src.kind == "biorxiv" and src.enabled and src.server
    ))  # fmt: skip
