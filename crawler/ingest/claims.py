"""What a crawl must hold: one lock per source, one per exclusive host, a claim per story.

A source is crawled by one process at a time. A host whose rate limit is per client rather
than per source (NCBI's E-utilities: a spider kind names it in ``exclusive_host``) is used by
one crawl at a time; a crawl that cannot get it within the crawl timeout reports those sources
busy instead of running them in parallel with another crawl. A story link is fetched by one
crawl process (:class:`LinkClaims`), whichever of the feeds listing it runs first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from crawler.db import polls
from crawler.locks import LockWatch, NamedLock, crawl_lock, host_lock
from crawler.poll import SourceResult
from crawler.settings import SourceSettings
from spiders.base import LitwatchSpider

log = logging.getLogger("litwatch.crawl")

SpiderClass = Callable[[str], type[LitwatchSpider]]


def busy(source: SourceSettings, why: str) -> SourceResult:
    """The result of a source another crawl holds."""
    log.info("event=crawl.busy source=%s why=%r", source.id, why)
    return SourceResult(source.id, source.kind, status="busy", error=why)


class Claims:
    """The locks one crawl holds, released together."""

    def __init__(self, engine: Engine) -> None:
        self.engine = _lock_engine(engine)
        self._owns_engine = self.engine is not engine
        self.locks: list[NamedLock] = []
        self._watch: LockWatch | None = None

    def sources(
        self, sources: list[SourceSettings], results: list[SourceResult]
    ) -> list[SourceSettings]:
        """Lock each source; a busy one gets a "busy" result instead."""
        chosen = []
        for source in sources:
            lock = NamedLock(self.engine, crawl_lock(source.id))
            if lock.acquire():
                self.locks.append(lock)
                chosen.append(source)
            else:
                results.append(busy(source, "already being crawled by another process"))
        return chosen

    def exclusive_hosts(
        self,
        chosen: list[SourceSettings],
        spider_class: SpiderClass,
        wait: float,
        results: list[SourceResult],
    ) -> list[SourceSettings]:
        """Wait up to ``wait`` seconds for each exclusive host the chosen sources use."""
        hosts = {spider_class(s.kind).exclusive_host for s in chosen} - {None}
        for host in sorted(h for h in hosts if h):
            lock = NamedLock(self.engine, host_lock(host))
            if lock.acquire(blocking=True, timeout=wait):
                self.locks.append(lock)
                continue
            users = [s for s in chosen if spider_class(s.kind).exclusive_host == host]
            for source in users:
                why = f"host {host} busy with another crawl for {wait:.0f}s"
                results.append(busy(source, why))
                self._release(crawl_lock(source.id))
            chosen = [s for s in chosen if s not in users]
        return chosen

    def _release(self, name: str) -> None:
        for lock in [lk for lk in self.locks if lk.name == name]:
            lock.release()
            self.locks.remove(lock)

    def watch(self, on_lost: Callable[[str], None]) -> None:
        """Call ``on_lost(source_id)`` when a source's lock is found lost (a PostgreSQL
        session dies with its connection): another crawl of that source may start now, so
        this one must stop it (issue 12, A10)."""
        prefix = crawl_lock("")
        sources = [lk for lk in self.locks if lk.name.startswith(prefix)]
        self._watch = LockWatch(sources, lambda name: on_lost(name.removeprefix(prefix))).start()

    def release(self) -> None:
        """Give every lock back (and the lock engine, when one was made)."""
        if self._watch is not None:
            self._watch.stop()
        for lock in self.locks:
            lock.release()
        self.locks.clear()
        if self._owns_engine:
            self.engine.dispose()


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


class LinkClaims:
    """Claims on story links for one source, shared across crawl processes.

    A claim is a ``followed_links`` row written before the story is fetched
    (:func:`crawler.db.polls.claim_link`); the one crawl whose insert lands fetches it. A
    claim whose source's crawl lock is free belongs to a crawl that died: it is taken over,
    so a killed process never blocks a story for good (and the source's next run gives back
    whatever it left). Probing that lock takes it for an instant: a crawl of that source
    starting in that instant reports itself busy, as it would beside any other crawl.
    """

    def __init__(self, engine: Engine, lock_engine: Engine, source_id: str) -> None:
        self.engine = engine
        self.lock_engine = lock_engine
        self.source_id = source_id

    def claim(self, url: str) -> bool:
        """Whether this source may fetch the story at ``url`` (now claimed for it)."""
        claimed, holder = polls.claim_link(self.engine, url, self.source_id)
        if claimed or holder is None or holder == self.source_id:
            return claimed
        probe = NamedLock(self.lock_engine, crawl_lock(holder))
        if not probe.acquire():
            return False  # the holder's crawl is alive and will record it
        try:
            taken = polls.take_over_link(self.engine, url, holder, self.source_id)
        finally:
            probe.release()
        if taken:
            log.info("event=crawl.claim_taken_over url=%s from=%s", url, holder)
        return taken
