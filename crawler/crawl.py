"""Run one crawl: the chosen sources in one Scrapy process, then record what happened.

Every crawl (from the CLI or spawned by the daemon) goes through :func:`run_crawl`:

1. each source is locked (one crawl per source across processes); a busy source is reported
   and left alone;
2. its poll state is read and a ``crawl_runs`` row opened;
3. Scrapy runs all spiders; items are stored in batches by the pipelines as they come;
4. only then is the new poll state saved (ETag, Last-Modified, PubMed cursor, followed
   stories) and the run closed. A crash before step 4 leaves the old state, so the next
   run fetches the same things again and the store merges them: nothing lost, nothing doubled.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy import Engine, select, update

from crawler.db.engine import transaction
from crawler.db.models import CrawlRun, FollowedLink, SourceState, utcnow
from crawler.locks import NamedLock
from crawler.settings import Settings, SourceSettings
from spiders.base import LitwatchSpider, PollState, Sink

log = logging.getLogger("litwatch.crawl")

NCBI_LOCK = "host:eutils.ncbi"


def spider_class(kind: str) -> type[LitwatchSpider]:
    from spiders.feed import FeedSpider
    from spiders.pubmed import PubmedSpider
    from spiders.sciencedaily import ScienceDailySpider

    return {"pubmed": PubmedSpider, "feed": FeedSpider, "sciencedaily": ScienceDailySpider}[kind]


@dataclass
class SourceResult:
    """The outcome of one source in one crawl (one row of the final table)."""

    source_id: str
    kind: str
    status: str = "ok"  # ok | failed | busy
    requests: int = 0
    not_modified: int = 0
    items: int = 0
    new: int = 0
    merged: int = 0
    skipped: int = 0
    errors: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "busy")


def scrapy_settings(config: Settings) -> dict[str, Any]:
    crawl = config.crawl
    return {
        "BOT_NAME": "litwatch",
        "USER_AGENT": crawl.full_user_agent,
        "ROBOTSTXT_OBEY": crawl.obey_robots,
        "AUTOTHROTTLE_ENABLED": crawl.autothrottle,
        "AUTOTHROTTLE_START_DELAY": max(crawl.download_delay, 1.0),
        "AUTOTHROTTLE_TARGET_CONCURRENCY": 1.0,
        "DOWNLOAD_DELAY": crawl.download_delay,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 2,
        "DOWNLOAD_TIMEOUT": crawl.timeout.total_seconds(),
        "DOWNLOAD_MAXSIZE": 64 * 1024 * 1024,
        "RETRY_TIMES": crawl.retries,
        "LITWATCH_BACKOFF_BASE": crawl.backoff_base,
        "DOWNLOADER_MIDDLEWARES": {
            "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
            "crawler.middleware.BackoffRetryMiddleware": 550,
        },
        "ITEM_PIPELINES": {
            "crawler.pipelines.ClassifyPipeline": 100,
            "crawler.pipelines.StorePipeline": 800,
        },
        "COOKIES_ENABLED": False,
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "WARNING",
        "LOG_ENABLED": True,
        "LOG_INSTALL_ROOT_HANDLER": False,  # our key=value handler (crawler.logs) stays in charge
    }


def load_state(engine: Engine, source: SourceSettings) -> PollState:
    with transaction(engine) as session:
        row = session.get(SourceState, source.id)
        followed: frozenset[str] = frozenset()
        if source.kind == "sciencedaily":
            followed = frozenset(
                session.scalars(select(FollowedLink.url).where(FollowedLink.source_id == source.id))
            )
        if row is None or row.kind != source.kind:
            return PollState(followed=followed)
        return PollState(row.etag, row.last_modified, row.cursor, followed)


def _open_run(engine: Engine, source: SourceSettings, trigger: str) -> int:
    now = utcnow()
    with transaction(engine) as session:
        # A run left "running" by a process that died is closed as interrupted.
        session.execute(
            update(CrawlRun)
            .where(CrawlRun.source_id == source.id, CrawlRun.status == "running")
            .values(
                status="failed",
                error="interrupted (process ended before finishing)",
                finished_at=now,
            )
        )
        state = session.get(SourceState, source.id)
        if state is None:
            state = SourceState(
                id=source.id,
                kind=source.kind,
                consecutive_failures=0,
                runs=0,
                items_seen=0,
                items_new=0,
                items_skipped=0,
            )
            session.add(state)
        state.kind = source.kind
        state.last_attempt = now
        run = CrawlRun(
            source_id=source.id,
            started_at=now,
            status="running",
            trigger=trigger,
            requests=0,
            not_modified=0,
            items=0,
            new=0,
            merged=0,
            skipped=0,
            errors=0,
            pid=os.getpid(),
        )
        session.add(run)
        session.flush()
        return run.id


def _close_run(engine: Engine, run_id: int, spider: LitwatchSpider, result: SourceResult) -> None:
    now = utcnow()
    report = spider.report
    with transaction(engine) as session:
        state = session.get(SourceState, spider.source.id)
        assert state is not None
        state.runs += 1
        state.items_seen += result.items
        state.items_new += result.new
        state.items_skipped += result.skipped
        if result.status == "ok":
            state.last_success = now
            state.consecutive_failures = 0
            state.last_error = None
            if report.etag or report.last_modified:
                state.etag, state.last_modified = report.etag, report.last_modified
            if report.cursor is not None:
                state.cursor = report.cursor
        else:
            state.consecutive_failures += 1
            state.last_error = result.error
        for url, dois in report.followed:
            if session.get(FollowedLink, url) is None:
                session.add(
                    FollowedLink(url=url, source_id=spider.source.id, fetched_at=now, dois=dois)
                )
        run = session.get(CrawlRun, run_id)
        assert run is not None
        for name in (
            "requests",
            "not_modified",
            "items",
            "new",
            "merged",
            "skipped",
            "errors",
            "error",
        ):
            setattr(run, name, getattr(result, name))
        run.status = result.status
        run.finished_at = now


def _result(
    spider: LitwatchSpider, stats: dict[str, Any], reason: str | None, seconds: float
) -> SourceResult:
    report = spider.report
    failures = list(report.failures)
    if reason not in (None, "finished"):
        failures.append(f"crawl stopped early ({reason})")
    errors = len(failures)
    return SourceResult(
        source_id=spider.source.id,
        kind=spider.source.kind,
        status="failed" if failures else "ok",
        requests=int(stats.get("downloader/request_count", 0)),
        not_modified=report.not_modified,
        items=report.items,
        new=report.new,
        merged=report.merged,
        skipped=report.skipped,
        errors=errors,
        error="; ".join(failures)[:2000] if failures else None,
        warnings=report.warnings,
        seconds=seconds,
    )


ProgressHook = Callable[[list[LitwatchSpider]], None]


def run_crawl(
    config: Settings,
    engine: Engine | None,
    sources: list[SourceSettings],
    *,
    out: IO[str] | None = None,
    trigger: str = "cli",
    progress: ProgressHook | None = None,
) -> list[SourceResult]:
    """Crawl ``sources`` once. ``engine`` None (with ``out``) is a dry run: no database at all."""
    from scrapy.crawler import CrawlerProcess

    dry = engine is None
    results: list[SourceResult] = []
    locks: list[NamedLock] = []
    runnable: list[tuple[SourceSettings, PollState, int | None]] = []
    try:
        for source in sources:
            if not dry:
                assert engine is not None
                lock = NamedLock(engine, f"crawl:{source.id}")
                if not lock.acquire():
                    log.info("event=crawl.busy source=%s", source.id)
                    results.append(
                        SourceResult(
                            source.id,
                            source.kind,
                            status="busy",
                            error="already being crawled by another process",
                        )
                    )
                    continue
                locks.append(lock)
                runnable.append(
                    (source, load_state(engine, source), _open_run(engine, source, trigger))
                )
            else:
                runnable.append((source, PollState(), None))
        if any(s.kind == "pubmed" for s, _, _ in runnable) and engine is not None:
            # NCBI's rate limit is per client, not per source: one E-utilities crawl at a time.
            ncbi = NamedLock(engine, NCBI_LOCK)
            ncbi.acquire(blocking=True, timeout=config.daemon.crawl_timeout.total_seconds())
            locks.append(ncbi)
        results.extend(_run_process(CrawlerProcess, config, engine, runnable, out, progress))
    finally:
        for lock in locks:
            lock.release()
    order = {s.id: i for i, s in enumerate(sources)}
    return sorted(results, key=lambda r: order.get(r.source_id, 0))


def _run_process(
    process_cls: Any,
    config: Settings,
    engine: Engine | None,
    runnable: list[tuple[SourceSettings, PollState, int | None]],
    out: IO[str] | None,
    progress: ProgressHook | None,
) -> list[SourceResult]:
    if not runnable:
        return []
    process = process_cls(scrapy_settings(config))
    sink = Sink(engine, out)
    crawlers = []
    reasons: dict[str, str] = {}
    started: dict[str, float] = {}
    finished: dict[str, float] = {}
    pubmed_chain: list[tuple[Any, SourceSettings, PollState]] = []
    for source, state, _run in runnable:
        crawler = process.create_crawler(spider_class(source.kind))
        crawlers.append(crawler)
        if source.kind == "pubmed":
            pubmed_chain.append((crawler, source, state))
        else:
            _start(process, crawler, source, config, state, sink, reasons, started, finished)
    _chain(process, pubmed_chain, config, sink, reasons, started, finished)
    if progress is not None:
        from twisted.internet import task

        loop = task.LoopingCall(
            lambda: progress([c.spider for c in crawlers if c.spider is not None])
        )
        loop.start(0.25)
    process.start()
    results = []
    for (source, _state, run_id), crawler in zip(runnable, crawlers, strict=True):
        spider = crawler.spider
        if spider is None:
            results.append(
                SourceResult(
                    source.id, source.kind, status="failed", errors=1, error="spider did not start"
                )
            )
            continue
        seconds = finished.get(source.id, time.monotonic()) - started.get(
            source.id, time.monotonic()
        )
        result = _result(spider, crawler.stats.get_stats(), reasons.get(source.id), seconds)
        if engine is not None and run_id is not None:
            _close_run(engine, run_id, spider, result)
        results.append(result)
    return results


def _start(
    process: Any,
    crawler: Any,
    source: SourceSettings,
    config: Settings,
    state: PollState,
    sink: Sink,
    reasons: dict[str, str],
    started: dict[str, float],
    finished: dict[str, float],
) -> Any:
    from scrapy import signals

    def on_closed(spider: Any, reason: str) -> None:
        reasons[source.id] = reason
        finished[source.id] = time.monotonic()

    crawler.signals.connect(on_closed, signal=signals.spider_closed)
    started[source.id] = time.monotonic()
    return process.crawl(crawler, source=source, config=config, state=state, sink=sink)


def _chain(
    process: Any,
    chain: list[tuple[Any, SourceSettings, PollState]],
    config: Settings,
    sink: Sink,
    reasons: dict[str, str],
    started: dict[str, float],
    finished: dict[str, float],
) -> None:
    """Run PubMed crawlers one after another (one E-utilities client at a time)."""
    if not chain:
        return
    (crawler, source, state), rest = chain[0], chain[1:]
    deferred = _start(process, crawler, source, config, state, sink, reasons, started, finished)
    deferred.addBoth(lambda _: _chain(process, rest, config, sink, reasons, started, finished))
