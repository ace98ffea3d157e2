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

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from sqlalchemy import Engine, create_engine, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from crawler.db.engine import transaction
from crawler.db.models import CrawlRun, FollowedLink, SourceState, utcnow
from crawler.locks import NamedLock
from crawler.settings import Settings, SourceSettings
from spiders.base import LitwatchSpider, PollReport, PollState, Sink

log = logging.getLogger("litwatch.crawl")

NCBI_LOCK = "host:eutils.ncbi"


def spider_class(kind: str) -> type[LitwatchSpider]:
    """The spider of a source kind (only its module is imported: feedparser is not free)."""
    if kind == "pubmed":
        from spiders.pubmed import PubmedSpider

        return PubmedSpider
    if kind == "feed":
        from spiders.feed import FeedSpider

        return FeedSpider
    if kind == "sciencedaily":
        from spiders.sciencedaily import ScienceDailySpider

        return ScienceDailySpider
    raise KeyError(kind)


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


#: Scrapy components a crawl never needs, with the reason, left out of Scrapy's defaults.
UNUSED_DOWNLOADER_MIDDLEWARES = {
    # Cookies are off (COOKIES_ENABLED); its module imports tldextract and requests (40 ms).
    "scrapy.downloadermiddlewares.cookies.CookiesMiddleware",
}
UNUSED_EXTENSIONS = {
    # Off (TELNETCONSOLE_ENABLED).
    "scrapy.extensions.telnet.TelnetConsole",
    # Scrapy >= 2.19: an HTTP server inside the crawl that runs Python code sent to it (its
    # token in a file under the user's home directory). No crawl needs that door open, and its
    # module imports aiohttp (0.1 s per crawl).
    "scrapy.extensions.remote_control.RemoteControl",
}


def _without(components: Mapping[str, int], unused: set[str]) -> dict[str, int]:
    return {name: order for name, order in components.items() if name not in unused}


def scrapy_settings(config: Settings) -> dict[str, Any]:
    """The Scrapy settings of a crawl, from litwatch's validated configuration."""
    from scrapy.settings import default_settings

    from spiders.pubmed import ncbi_delay

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
        "LITWATCH_NCBI_DELAY": ncbi_delay(config.ncbi_api_key),
        "DOWNLOADER_MIDDLEWARES": {
            "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
            "crawler.middleware.BackoffRetryMiddleware": 550,
        },
        # Components litwatch never uses, left out of Scrapy's defaults rather than disabled:
        # Scrapy imports every listed component, a disabled one too, and these import a lot.
        "DOWNLOADER_MIDDLEWARES_BASE": _without(
            default_settings.DOWNLOADER_MIDDLEWARES_BASE, UNUSED_DOWNLOADER_MIDDLEWARES
        ),
        "EXTENSIONS_BASE": _without(default_settings.EXTENSIONS_BASE, UNUSED_EXTENSIONS),
        "REMOTE_CONTROL_ENABLED": False,
        "ITEM_PIPELINES": {
            "crawler.pipelines.ClassifyPipeline": 100,
            "crawler.pipelines.StorePipeline": 800,
        },
        "COOKIES_ENABLED": False,
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "WARNING",
        "LOG_FORMATTER": "crawler.pipelines.QuietItemLogFormatter",
        "LOG_ENABLED": True,
        "LOG_INSTALL_ROOT_HANDLER": False,  # our key=value handler (crawler.logs) stays in charge
        "LOG_VERSIONS": [],  # an INFO record nobody sees (Scrapy logs at WARNING), not free
        # A hint for spider authors (a generator callback returning a value, which Scrapy
        # drops; none of ours does): Scrapy reads and parses the callback's source again for
        # every response, its cache being keyed by the bound method, new with each request.
        "WARN_ON_GENERATOR_RETURN_VALUE": False,
    }


def load_followed(engine: Engine) -> set[str]:
    """Every story already followed, by any source.

    Not only one source's: ScienceDaily lists one story in several topic feeds, and a story
    is followed once, whichever feed showed it.
    """
    with transaction(engine) as session:
        return set(session.scalars(select(FollowedLink.url)))


def load_state(engine: Engine, source: SourceSettings, followed: set[str]) -> PollState:
    """What the database remembers about ``source`` (empty when its kind changed).

    ``followed`` is one set shared by the crawl's ScienceDaily spiders: a story one of them
    follows is skipped by the others in the same crawl too.
    """
    with transaction(engine) as session:
        row = session.get(SourceState, source.id)
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


def _close_run(
    engine: Engine,
    run_id: int,
    source: SourceSettings,
    report: PollReport | None,
    result: SourceResult,
) -> None:
    """Save what the poll learned (only after its items were stored) and close its run row.

    ``report`` is None when the spider never started: the run is closed as failed.
    """
    now = utcnow()
    with transaction(engine) as session:
        state = session.get(SourceState, source.id)
        assert state is not None
        state.runs += 1
        state.items_seen += result.items
        state.items_new += result.new
        state.items_skipped += result.skipped
        if result.status == "ok" and report is not None:
            state.last_success = now
            state.consecutive_failures = 0
            state.last_error = None
            _save_poll_state(state, report)
        else:
            state.consecutive_failures += 1
            state.last_error = result.error
        if report is not None and not report.store_failed:
            # Stories are followed once, ever, even when another part of the poll failed:
            # their items are stored by now.
            _record_followed(session, source.id, report.followed, now)
        run = session.get(CrawlRun, run_id)
        assert run is not None
        for name in _RUN_FIELDS:
            setattr(run, name, getattr(result, name))
        run.status = result.status
        run.finished_at = now


def _record_followed(
    session: Session, source_id: str, followed: list[tuple[str, int]], now: datetime
) -> None:
    """Remember followed stories; one another crawl recorded meanwhile is left as it is.

    INSERT ... ON CONFLICT DO NOTHING rather than read-then-insert: two crawls of feeds that
    list the same story (the daemon runs sources in parallel) would otherwise collide on the
    primary key and lose the whole run record.
    """
    rows = [
        {"url": url, "source_id": source_id, "fetched_at": now, "dois": dois}
        for url, dois in dict(followed).items()
    ]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(FollowedLink).values(rows).on_conflict_do_nothing())


_RUN_FIELDS = ("requests", "not_modified", "items", "new", "merged", "skipped", "errors", "error")


def _save_poll_state(state: SourceState, report: PollReport) -> None:
    if report.validators_seen:
        # Replace both, even with None: validators the server stopped sending are stale.
        state.etag, state.last_modified = report.etag, report.last_modified
    if report.cursor is not None:
        state.cursor = report.cursor


def _result(
    spider: LitwatchSpider, stats: dict[str, Any], reason: str | None, seconds: float
) -> SourceResult:
    """One row of the final table from what the spider reported and Scrapy counted."""
    report = spider.report
    failures = list(report.failures)
    requests = int(stats.get("downloader/request_count", 0))
    if reason != "finished":
        # None: Scrapy never reported the spider closed (a forced stop on a second signal).
        failures.append(f"crawl stopped early ({reason or 'forced shutdown'})")
    elif requests == 0 and not failures:
        # Every poll makes at least one request; Scrapy only logs an exception raised before
        # the first one (in ``start``), which must not pass for "nothing new".
        failures.append("no request was made (an error before the first request; see the log)")
    errors = len(failures)
    return SourceResult(
        source_id=spider.source.id,
        kind=spider.source.kind,
        status="failed" if failures else "ok",
        requests=requests,
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
#: A source to crawl, its stored poll state and its ``crawl_runs`` id (None in a dry run).
Runnable = tuple[SourceSettings, PollState, int | None]


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

    if engine is None:
        claimed: set[str] = set()
        dry: list[Runnable] = [(s, PollState(followed=claimed), None) for s in sources]
        return _run_process(CrawlerProcess, config, None, dry, out, progress)
    results: list[SourceResult] = []
    lock_engine = _lock_engine(engine)
    locks: list[NamedLock] = []
    runnable: list[Runnable] = []
    # Until Scrapy installs its own handlers, SIGTERM ends the crawl through ``finally`` (so
    # the runs opened below are closed as interrupted) instead of killing it outright.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        chosen = _lock_sources(lock_engine, sources, locks, results)
        chosen = _lock_ncbi(lock_engine, config, chosen, locks, results)
        followed = load_followed(engine) if any(s.kind == "sciencedaily" for s in chosen) else set()
        for source in chosen:
            state = load_state(engine, source, followed)
            runnable.append((source, state, _open_run(engine, source, trigger)))
        results.extend(_run_process(CrawlerProcess, config, engine, runnable, out, progress))
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        done = {r.source_id for r in results}
        _close_interrupted(engine, [run for source, _s, run in runnable if source.id not in done])
        for lock in locks:
            lock.release()
        if lock_engine is not engine:
            lock_engine.dispose()
    order = {s.id: i for i, s in enumerate(sources)}
    return sorted(results, key=lambda r: order.get(r.source_id, 0))


def _interrupt(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _note_sigterm() -> list[int]:
    """From here on a SIGTERM is only noted (see :func:`_replay_sigterm`).

    Scrapy sets crawlers up inside Deferreds and installs its own shutdown handlers only
    "after startup" of the reactor: an exception raised by a signal handler in between would
    surface as an error inside a Deferred instead of stopping the crawl.
    """
    noted: list[int] = []
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, _frame: noted.append(signum))
    return noted


def _replay_sigterm(noted: list[int]) -> None:
    """Re-send a noted SIGTERM once Scrapy's graceful handler is in place."""
    from twisted.internet import reactor as installed  # installed by now: crawlers exist

    reactor: Any = installed

    def replay() -> None:
        if noted:
            os.kill(os.getpid(), signal.SIGTERM)

    # callLater(0) runs after every "after startup" trigger, Scrapy's included.
    reactor.addSystemEventTrigger("after", "startup", lambda: reactor.callLater(0, replay))


def _close_interrupted(engine: Engine, run_ids: list[int | None]) -> None:
    """Close runs that never got their results (the crawl was stopped before Scrapy ran)."""
    ids = [run_id for run_id in run_ids if run_id is not None]
    if not ids:
        return
    with transaction(engine) as session:
        session.execute(
            update(CrawlRun)
            .where(CrawlRun.id.in_(ids), CrawlRun.status == "running")
            .values(status="failed", error="interrupted before it finished", finished_at=utcnow())
        )


def _lock_engine(engine: Engine) -> Engine:
    """The engine that holds the locks.

    A PostgreSQL advisory lock lives on its own connection for the whole crawl. Taken from
    the main pool, one per source, the default 15 sources (plus the E-utilities lock) would
    use up the pool's 15 connections and the crawl would hang waiting for one to store items.
    Lock connections therefore come from a separate engine without a pool limit.
    """
    if engine.dialect.name != "postgresql":
        return engine  # SQLite locks are files: no connection held
    return create_engine(engine.url, poolclass=NullPool)


def _busy(source: SourceSettings, why: str) -> SourceResult:
    log.info("event=crawl.busy source=%s why=%r", source.id, why)
    return SourceResult(source.id, source.kind, status="busy", error=why)


def _lock_sources(
    engine: Engine,
    sources: list[SourceSettings],
    locks: list[NamedLock],
    results: list[SourceResult],
) -> list[SourceSettings]:
    """Lock each source (one crawl per source); a busy one gets a "busy" result instead."""
    chosen = []
    for source in sources:
        lock = NamedLock(engine, f"crawl:{source.id}")
        if lock.acquire():
            locks.append(lock)
            chosen.append(source)
        else:
            results.append(_busy(source, "already being crawled by another process"))
    return chosen


def _lock_ncbi(
    engine: Engine,
    config: Settings,
    chosen: list[SourceSettings],
    locks: list[NamedLock],
    results: list[SourceResult],
) -> list[SourceSettings]:
    """Wait for the E-utilities lock when PubMed sources are to run.

    NCBI's rate limit is per client, not per source: one E-utilities crawl at a time. When
    another crawl holds it past the crawl timeout, the PubMed sources are reported busy (and
    their source locks given back) rather than crawled in parallel.
    """
    if not any(s.kind == "pubmed" for s in chosen):
        return chosen
    ncbi = NamedLock(engine, NCBI_LOCK)
    wait = config.daemon.crawl_timeout.total_seconds()
    if ncbi.acquire(blocking=True, timeout=wait):
        locks.append(ncbi)
        return chosen
    for source in chosen:
        if source.kind == "pubmed":
            results.append(_busy(source, f"E-utilities busy with another crawl for {wait:.0f}s"))
            for lock in [lk for lk in locks if lk.name == f"crawl:{source.id}"]:
                lock.release()
                locks.remove(lock)
    return [s for s in chosen if s.kind != "pubmed"]


def _run_process(
    process_cls: Any,
    config: Settings,
    engine: Engine | None,
    runnable: list[Runnable],
    out: IO[str] | None,
    progress: ProgressHook | None,
) -> list[SourceResult]:
    if not runnable:
        return []
    # Scrapy installs the reactor when the first crawler it *created* starts; a crawler
    # started before that one finds no reactor. PubMed crawlers start one after another
    # (chained below), so the others are created, and started, first.
    runnable = sorted(runnable, key=lambda r: r[0].kind == "pubmed")
    noted = _note_sigterm()
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
    _replay_sigterm(noted)
    with _crawl_gc():
        process.start()
    results = []
    for (source, _state, run_id), crawler in zip(runnable, crawlers, strict=True):
        spider = crawler.spider
        if spider is None:
            result = SourceResult(
                source.id, source.kind, status="failed", errors=1, error="spider did not start"
            )
        else:
            now = time.monotonic()
            seconds = finished.get(source.id, now) - started.get(source.id, now)
            result = _result(spider, crawler.stats.get_stats(), reasons.get(source.id), seconds)
        if engine is not None and run_id is not None:
            _close_run(engine, run_id, source, spider.report if spider else None, result)
        results.append(result)
    return results


#: Allocations (net, of container objects) between two young-generation collections during a
#: crawl; CPython's default is 700.
CRAWL_GC_THRESHOLD = 50_000


@contextmanager
def _crawl_gc() -> Iterator[None]:
    """Cheaper garbage collection while Scrapy runs.

    A crawl allocates millions of short-lived objects (an EFetch page of 500 articles makes
    several per element and field), and CPython's collector, run every 700 allocations and
    then again over everything older, cost about 1 s of a 20,000-record ingest's 11 s of CPU,
    mostly re-examining the hundreds of thousands of objects start-up left behind (modules,
    classes, settings). Those are frozen (never examined again) for the crawl, and young
    objects are collected every :data:`CRAWL_GC_THRESHOLD` allocations instead: an ingest's
    garbage is nearly all freed by reference counting anyway. Both are undone afterwards.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(CRAWL_GC_THRESHOLD, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


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
    **spider_kwargs: Any,
) -> Any:
    from scrapy import signals

    def on_closed(spider: Any, reason: str) -> None:
        reasons[source.id] = reason
        finished[source.id] = time.monotonic()

    # weak=False: the dispatcher holds receivers weakly, and this closure has no other owner.
    crawler.signals.connect(on_closed, signal=signals.spider_closed, weak=False)
    started[source.id] = time.monotonic()
    return process.crawl(
        crawler, source=source, config=config, state=state, sink=sink, **spider_kwargs
    )


def _chain(
    process: Any,
    chain: list[tuple[Any, SourceSettings, PollState]],
    config: Settings,
    sink: Sink,
    reasons: dict[str, str],
    started: dict[str, float],
    finished: dict[str, float],
    after_another: bool = False,
) -> None:
    """Run PubMed crawlers one after another (one E-utilities client at a time).

    Scrapy paces the requests of each crawler, not those of two: every crawler but the first
    waits NCBI's delay before its first request (``after_another``).
    """
    if not chain:
        return
    (crawler, source, state), rest = chain[0], chain[1:]
    deferred = _start(
        process,
        crawler,
        source,
        config,
        state,
        sink,
        reasons,
        started,
        finished,
        after_another=after_another,
    )
    deferred.addBoth(
        lambda _: _chain(process, rest, config, sink, reasons, started, finished, True)
    )
