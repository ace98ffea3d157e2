"""Run one crawl: the chosen sources in one Scrapy process, then record what happened.

Every crawl (from the CLI or spawned by the daemon) goes through :func:`run_crawl`:

1. each source is locked (:mod:`crawler.ingest.claims`); a busy source is reported and left
   alone;
2. its poll state is read and a ``crawl_runs`` row opened (:mod:`crawler.db.polls`);
3. Scrapy runs all spiders, found by kind through Scrapy's spider loader; items are stored in
   batches by the pipelines as they come;
4. only then is the new poll state saved (ETag, Last-Modified, PubMed cursor, followed
   stories) and the run closed. A crash before step 4 leaves the old state, so the next
   run fetches the same things again and the store merges them: nothing lost, nothing doubled.

Each source's bookkeeping fails alone: a source whose close cannot be written (a value the
database refuses, a full disk) is reported failed and its run closed as failed by a smaller
write; the other sources are closed as usual. What even that cannot close is closed by the
source's next run (``interrupted``).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import IO, Any

from sqlalchemy import Engine

from crawler.db import polls
from crawler.ingest.claims import Claims, LinkClaims
from crawler.ingest.scrapy_settings import SPIDER_MODULES, scrapy_settings
from crawler.poll import PollState, SourceResult
from crawler.settings import Settings, SourceSettings
from spiders.base import LitwatchSpider, Sink

log = logging.getLogger("litwatch.crawl")


@cache
def spider_class(kind: str) -> type[LitwatchSpider]:
    """The spider class of a source kind, found by Scrapy's spider loader (KeyError: none)."""
    from scrapy.settings import Settings as ScrapySettings
    from scrapy.spiderloader import SpiderLoader

    loader = SpiderLoader.from_settings(ScrapySettings({"SPIDER_MODULES": SPIDER_MODULES}))
    cls = loader.load(kind)
    if not issubclass(cls, LitwatchSpider):
        raise KeyError(kind)
    return cls


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
    if engine is None:
        claimed: set[str] = set()
        dry: list[Runnable] = [(s, PollState(followed=claimed), None) for s in sources]
        return _Crawl(config, None, out).run(dry, progress)
    results: list[SourceResult] = []
    claims = Claims(engine)
    crawl = _Crawl(config, engine, out)
    runnable: list[Runnable] = []
    # Until Scrapy installs its own handlers, SIGTERM ends the crawl through ``finally`` (so
    # the runs opened below are closed as interrupted) instead of killing it outright.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        chosen = claims.sources(sources, results)
        wait = config.daemon.crawl_timeout.total_seconds()
        chosen = claims.exclusive_hosts(chosen, spider_class, wait, results)
        shares_links = any(spider_class(s.kind).follows_links for s in chosen)
        followed = polls.load_followed(engine) if shares_links else set()
        for source in chosen:
            state = polls.load_state(source.id, source.kind, engine, followed)
            run_id = polls.open_run(engine, source.id, source.kind, trigger)
            runnable.append((source, state, run_id))
            if spider_class(source.kind).follows_links:
                crawl.link_claims[source.id] = LinkClaims(engine, claims.engine, source.id)
        claims.watch(crawl.lock_lost)
        results.extend(crawl.run(runnable, progress))
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        done = {r.source_id for r in results}
        left = [run for source, _s, run in runnable if source.id not in done and run is not None]
        _guarded("close interrupted runs", polls.close_interrupted, engine, left)
        claims.release()
    order = {s.id: i for i, s in enumerate(sources)}
    return sorted(results, key=lambda r: order.get(r.source_id, 0))


class _Crawl:
    """One Scrapy process running the spiders of one crawl, and what each one reported."""

    def __init__(self, config: Settings, engine: Engine | None, out: IO[str] | None) -> None:
        self.config = config
        self.engine = engine
        self.sink = Sink(engine, out)
        self.reasons: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.process: Any = None
        #: Story-link claimers of the sources that follow links, by source id.
        self.link_claims: dict[str, LinkClaims] = {}
        self.crawlers: dict[str, Any] = {}
        #: Sources whose lock was lost: stopped, or never started.
        self.lost: set[str] = set()

    def lock_lost(self, source_id: str) -> None:
        """Stop a source whose lock is gone (called from the lock watch's thread)."""
        log.error("event=crawl.lock_lost source=%s action=stopping", source_id)
        if "twisted.internet.reactor" not in sys.modules:
            self.lost.add(source_id)  # Scrapy not set up yet: importing would install a reactor
            return
        from twisted.internet import reactor

        reactor.callFromThread(self._stop_source, source_id)

    def _stop_source(self, source_id: str) -> None:
        self.lost.add(source_id)
        crawler = self.crawlers.get(source_id)
        if crawler is not None and crawler.engine is not None and crawler.spider is not None:
            crawler.spider.stopped = "source lock lost"
            crawler.engine.close_spider(crawler.spider, "source lock lost")

    def run(self, runnable: list[Runnable], progress: ProgressHook | None) -> list[SourceResult]:
        if not runnable:
            return []
        from scrapy.crawler import CrawlerProcess

        # Scrapy installs the reactor when the first crawler it *created* starts; a crawler
        # started before that one finds no reactor. Crawlers of an exclusive host start one
        # after another (chained below), so the others are created, and started, first.
        runnable = sorted(runnable, key=lambda r: bool(spider_class(r[0].kind).exclusive_host))
        noted = _note_sigterm()
        classes = {spider_class(source.kind) for source, _state, _run in runnable}
        self.process = CrawlerProcess(scrapy_settings(self.config, classes))
        crawlers = []
        chains: dict[str, list[tuple[Any, SourceSettings, PollState]]] = {}
        for source, state, _run in runnable:
            cls = spider_class(source.kind)
            crawler = self.process.create_crawler(cls)
            crawlers.append(crawler)
            self.crawlers[source.id] = crawler
            if cls.exclusive_host:
                chains.setdefault(cls.exclusive_host, []).append((crawler, source, state))
            else:
                self._start(crawler, source, state)
        for chain in chains.values():
            self._chain(chain)
        if progress is not None:
            from twisted.internet import task

            loop = task.LoopingCall(
                lambda: progress([c.spider for c in crawlers if c.spider is not None])
            )
            loop.start(0.25)
        _replay_sigterm(noted)
        with _crawl_gc():
            self.process.start()
        return [
            self._finish(source, run_id, crawler)
            for (source, _state, run_id), crawler in zip(runnable, crawlers, strict=True)
        ]

    def _finish(self, source: SourceSettings, run_id: int | None, crawler: Any) -> SourceResult:
        spider = crawler.spider
        if spider is None:
            why = "source lock lost" if source.id in self.lost else "spider did not start"
            result = SourceResult(source.id, source.kind, status="failed", errors=1, error=why)
        else:
            now = time.monotonic()
            seconds = self.finished.get(source.id, now) - self.started.get(source.id, now)
            stats = crawler.stats.get_stats()
            result = _result(spider, stats, self.reasons.get(source.id), seconds)
        if self.engine is not None and run_id is not None:
            result = self._close(run_id, spider.report if spider else None, result)
        return result

    def _close(self, run_id: int, report: Any, result: SourceResult) -> SourceResult:
        """Close one source's run; a failure costs that source only (see the module doc)."""
        assert self.engine is not None
        try:
            polls.close_run(self.engine, run_id, report, result)
            return result
        except Exception as exc:
            why = f"recording the poll failed: {type(exc).__name__}: {_first_line(exc)}"
        log.error("event=crawl.bookkeeping_failed source=%s error=%r", result.source_id, why)
        _guarded("close the run as failed", polls.fail_run, self.engine, run_id, why)
        error = "; ".join(filter(None, [result.error, why]))
        return dataclasses.replace(result, status="failed", errors=result.errors + 1, error=error)

    def _start(
        self, crawler: Any, source: SourceSettings, state: PollState, **spider_kwargs: Any
    ) -> Any:
        from scrapy import signals
        from twisted.internet import defer

        if source.id in self.lost:  # its lock went before its turn came (exclusive host)
            return defer.succeed(None)

        def on_closed(spider: Any, reason: str) -> None:
            self.reasons[source.id] = reason
            self.finished[source.id] = time.monotonic()

        # weak=False: the dispatcher holds receivers weakly, and this closure has no other owner.
        crawler.signals.connect(on_closed, signal=signals.spider_closed, weak=False)
        self.started[source.id] = time.monotonic()
        return self.process.crawl(
            crawler,
            source=source,
            config=self.config,
            state=state,
            sink=self.sink,
            link_claims=self.link_claims.get(source.id),
            **spider_kwargs,
        )

    def _chain(
        self, chain: list[tuple[Any, SourceSettings, PollState]], after_another: bool = False
    ) -> None:
        """Run the crawlers of one exclusive host one after another.

        Scrapy paces the requests of each crawler, not those of two: every crawler but the
        first is told it comes ``after_another`` (a PubMed spider then waits NCBI's delay
        before its first request).
        """
        if not chain:
            return
        (crawler, source, state), rest = chain[0], chain[1:]
        deferred = self._start(crawler, source, state, after_another=after_another)
        deferred.addBoth(lambda _: self._chain(rest, True))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def _guarded(what: str, action: Callable[..., Any], *args: Any) -> None:
    """Run one bookkeeping step whose failure must not stop the ones after it."""
    try:
        action(*args)
    except Exception as exc:
        log.error("event=crawl.bookkeeping_failed step=%r error=%r", what, _first_line(exc))


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


#: Allocations (net, of container objects) between two young-generation collections during a
#: crawl; CPython's default is 700.
CRAWL_GC_THRESHOLD = 50_000


@contextmanager
def _crawl_gc() -> Iterator[None]:
    """Cheaper garbage collection while Scrapy runs.

    A crawl allocates millions of short-lived objects (an EFetch page of 500 articles makes
    several per element and field), and CPython's collector, run every 700 allocations and
    then again over everything older, is a noticeable share of an ingest's CPU (figures in
    docs/benchmarks.md), mostly re-examining the hundreds of thousands of objects start-up
    left behind (modules, classes, settings). Those are frozen (never examined again) for the
    crawl, and young objects are collected every :data:`CRAWL_GC_THRESHOLD` allocations
    instead: an ingest's garbage is nearly all freed by reference counting anyway. Both are
    undone afterwards.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(CRAWL_GC_THRESHOLD, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
