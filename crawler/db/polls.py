"""The one owner of poll bookkeeping: ``sources`` (poll state), ``crawl_runs`` and
``followed_links``.

A run is opened before its spider starts and closed once its items are stored; the poll state
is saved only then. A crash in between leaves the old state (the next run fetches the same
things again and the store merges them) and a "running" row, which the next open, the daemon,
or the crawl's own clean-up closes with one of the reasons below.

A story link is claimed before it is fetched: a ``followed_links`` row whose ``dois`` is
:data:`CLAIMED`, written with INSERT ... ON CONFLICT DO NOTHING, so that of two crawl
processes whose feeds list one story only one fetches it. Closing the run turns its claims
into records (the story's DOI count) or gives back those whose story was not stored; a claim
left by a process that died is given back when its source's next run opens, and taken over
meanwhile by a crawl that finds the source's crawl lock free (crawler/ingest/claims.py).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, Engine, delete, select, update
from sqlalchemy.orm import Session

from crawler.db.engine import insert_ignore, transaction
from crawler.db.models import CrawlRun, FollowedLink, SourceState, utcnow
from crawler.poll import PollReport, PollState, SourceResult

#: Why a run was closed by someone other than its crawl.
DIED = "interrupted (process ended before finishing)"
STOPPED_EARLY = "interrupted before it finished"

#: ``followed_links.dois`` of a story claimed by a running crawl, not yet recorded.
CLAIMED = -1

_RUN_FIELDS = ("requests", "not_modified", "items", "new", "merged", "skipped", "errors", "error")


def load_followed(engine: Engine) -> set[str]:
    """Every story already followed, by any source.

    Not only one source's: ScienceDaily lists one story in several topic feeds, and a story
    is followed once, whichever feed showed it.
    """
    with transaction(engine) as session:
        done = select(FollowedLink.url).where(FollowedLink.dois != CLAIMED)
        return set(session.scalars(done))


def claim_link(engine: Engine, url: str, source_id: str) -> tuple[bool, str | None]:
    """Claim a story for ``source_id`` before fetching it: (claimed, holder).

    ``holder`` is the source whose crawl claimed it first, or None when the story is
    recorded as followed already (or was just claimed here).
    """
    row = {"url": url, "source_id": source_id, "fetched_at": utcnow(), "dois": CLAIMED}
    with transaction(engine) as session:
        if insert_ignore(session, FollowedLink, [row], returning="url"):
            return True, None
        found = session.execute(
            select(FollowedLink.source_id, FollowedLink.dois).where(FollowedLink.url == url)
        ).one_or_none()
    if found is None:  # given back between the two statements: try once more next poll
        return False, None
    return False, found.source_id if found.dois == CLAIMED else None


def take_over_link(engine: Engine, url: str, holder: str, source_id: str) -> bool:
    """Take a claim over from ``holder`` (a crawl that died); False when someone was faster."""
    with transaction(engine) as session:
        res = session.execute(
            update(FollowedLink)
            .where(
                FollowedLink.url == url,
                FollowedLink.source_id == holder,
                FollowedLink.dois == CLAIMED,
            )
            .values(source_id=source_id, fetched_at=utcnow())
        )
        return isinstance(res, CursorResult) and res.rowcount == 1


def _release_claims(session: Session, source_id: str) -> None:
    session.execute(
        delete(FollowedLink).where(
            FollowedLink.source_id == source_id, FollowedLink.dois == CLAIMED
        )
    )


def load_state(source_id: str, kind: str, engine: Engine, followed: set[str]) -> PollState:
    """What the database remembers about a source (empty when its kind changed).

    ``followed`` is one set shared by the crawl's spiders: a story one of them follows is
    skipped by the others in the same crawl too.
    """
    with transaction(engine) as session:
        row = session.get(SourceState, source_id)
        if row is None or row.kind != kind:
            return PollState(followed=followed)
        return PollState(row.etag, row.last_modified, row.cursor, followed)


def last_successes(engine: Engine) -> dict[str, datetime | None]:
    """Each polled source's last successful poll (the daemon plans its first crawls by it)."""
    with transaction(engine) as session:
        return {s.id: s.last_success for s in session.scalars(select(SourceState))}


def open_run(engine: Engine, source_id: str, kind: str, trigger: str) -> int:
    """Open a ``crawl_runs`` row (closing one a dead process left "running"); its id."""
    now = utcnow()
    with transaction(engine) as session:
        _close(session, [CrawlRun.source_id == source_id], DIED, now)
        _release_claims(session, source_id)  # its lock is ours: any claim of it is stale
        state = session.get(SourceState, source_id)
        if state is None:
            state = SourceState(
                id=source_id,
                kind=kind,
                consecutive_failures=0,
                runs=0,
                items_seen=0,
                items_new=0,
                items_skipped=0,
            )
            session.add(state)
        state.kind = kind
        state.last_attempt = now
        run = CrawlRun(
            source_id=source_id,
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


def close_run(engine: Engine, run_id: int, report: PollReport | None, result: SourceResult) -> None:
    """Save what the poll learned (only after its items were stored) and close its run row.

    ``report`` is None when the spider never started: the run is closed as failed.
    """
    now = utcnow()
    with transaction(engine) as session:
        state = session.get(SourceState, result.source_id)
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
            record_followed(session, result.source_id, report.followed, now)
        _release_claims(session, result.source_id)  # claimed, but not stored: next poll
        run = session.get(CrawlRun, run_id)
        assert run is not None
        for name in _RUN_FIELDS:
            setattr(run, name, getattr(result, name))
        run.status = result.status
        run.finished_at = now


def record_followed(
    session: Session, source_id: str, followed: list[tuple[str, int]], now: datetime
) -> None:
    """Remember followed stories; one another crawl recorded meanwhile is left as it is.

    INSERT ... ON CONFLICT DO NOTHING rather than read-then-insert: two crawls of feeds that
    list the same story (the daemon runs sources in parallel) would otherwise collide on the
    primary key and lose the whole run record.
    """
    stories = dict(followed)
    rows = [
        {"url": url, "source_id": source_id, "fetched_at": now, "dois": dois}
        for url, dois in stories.items()
    ]
    insert_ignore(session, FollowedLink, rows)
    for url, dois in stories.items():  # this crawl's own claims become records
        session.execute(
            update(FollowedLink)
            .where(
                FollowedLink.url == url,
                FollowedLink.source_id == source_id,
                FollowedLink.dois == CLAIMED,
            )
            .values(dois=dois, fetched_at=now)
        )


def _save_poll_state(state: SourceState, report: PollReport) -> None:
    if report.validators_seen:
        # Replace both, even with None: validators the server stopped sending are stale.
        state.etag = _fitting(report.etag, SourceState.__table__.c.etag.type)
        state.last_modified = _fitting(
            report.last_modified, SourceState.__table__.c.last_modified.type
        )
    if report.cursor is not None:
        state.cursor = report.cursor


def _fitting(value: str | None, column_type: Any) -> str | None:
    """A validator that fits its column, or None (dropped: the next poll is unconditional).

    PostgreSQL rejects an over-long value (SQLite stores it), and a cut validator would
    never match again anyway: a 600-character ETag must not fail the source's bookkeeping.
    """
    limit = getattr(column_type, "length", None)
    return None if value is not None and limit and len(value) > limit else value


def fail_run(engine: Engine, run_id: int, why: str) -> None:
    """Close one run as failed, touching nothing else (when its full close failed)."""
    with transaction(engine) as session:
        _close(session, [CrawlRun.id == run_id], why[:2000], utcnow())


def close_interrupted(engine: Engine, run_ids: list[int]) -> None:
    """Close runs that never got their results (the crawl was stopped before Scrapy ran)."""
    if run_ids:
        with transaction(engine) as session:
            _close(session, [CrawlRun.id.in_(run_ids)], STOPPED_EARLY, utcnow())


def close_runs_of(engine: Engine, source_id: str, pid: int, why: str) -> int:
    """Close the "running" rows of one crawl process ended by a signal; how many there were.

    A SIGTERM that lands after ``litwatch crawl`` opened its run but before Scrapy installed
    its handlers ends the process at once; the daemon, which saw it end, closes its row.
    """
    with transaction(engine) as session:
        where = [CrawlRun.source_id == source_id, CrawlRun.pid == pid]
        return _close(session, where, why, utcnow())


def _close(session: Session, where: list[ColumnElement[bool]], why: str, now: datetime) -> int:
    res = session.execute(
        update(CrawlRun)
        .where(CrawlRun.status == "running", *where)
        .values(status="failed", error=why, finished_at=now)
    )
    return res.rowcount if isinstance(res, CursorResult) else 0
