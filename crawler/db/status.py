"""What ``litwatch status`` reports: sources' health, database contents, subscribers, daemon.

Read through :mod:`crawler.db.reader` (no SQLAlchemy): the command an operator runs most
should start fast. :func:`daemon_info` also serves callers holding a session.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from crawler.db import DAEMON_KEY
from crawler.db.reader import Reader, when
from crawler.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

_SOURCE_COLUMNS = (
    "id, kind, last_attempt, last_success, consecutive_failures, last_error, runs, "
    "items_seen, items_new, items_skipped"
)


def collect_status(settings: Settings, reader: Reader, daemon_running: bool) -> dict[str, Any]:
    """Everything ``litwatch status`` shows, as plain values (datetimes aware, in UTC)."""
    sql = f"SELECT {_SOURCE_COLUMNS} FROM sources"  # noqa: S608 - fixed column names
    states = {row[0]: row for row in reader.rows(sql)}
    last_runs = _last_runs(reader)
    sources = []
    for src in settings.sources:
        st = states.pop(src.id, None)
        sources.append(_source(src.id, src.kind, src.enabled, st, last_runs.get(src.id)))
    for orphan in states.values():  # polled once, since removed from the configuration
        sources.append(_source(orphan[0], orphan[1], False, orphan, None) | {"configured": False})
    subs = _count_by(reader, "subscribers", "status")
    deliveries = _count_by(reader, "deliveries", "state")
    record = reader.scalar("SELECT value FROM meta WHERE key = :k", {"k": DAEMON_KEY})
    return {
        "sources": sources,
        "database": counts(reader) | {"url": reader.where},
        "subscribers": {k: subs.get(k, 0) for k in ("active", "pending", "unsubscribed")},
        "deliveries": {k: deliveries.get(k, 0) for k in ("pending", "sent", "failed")},
        "daemon": daemon_state(json.loads(record) if record else {}, daemon_running),
    }


def counts(reader: Reader) -> dict[str, Any]:
    """What the database holds."""
    by_topic = dict(reader.rows("SELECT topic, count(*) FROM paper_topics GROUP BY topic"))
    return {
        "papers": reader.scalar("SELECT count(*) FROM papers") or 0,
        "with_doi": reader.scalar("SELECT count(*) FROM papers WHERE doi_key IS NOT NULL") or 0,
        "sightings": reader.scalar("SELECT count(*) FROM sightings") or 0,
        "by_topic": by_topic,
        "newest": when(reader.scalar("SELECT max(first_seen) FROM papers")),
    }


def _last_runs(reader: Reader) -> dict[str, dict[str, Any]]:
    rows = reader.rows(
        "SELECT source_id, status, started_at, new, items, error FROM crawl_runs "
        "WHERE id IN (SELECT max(id) FROM crawl_runs GROUP BY source_id)"
    )
    return {
        sid: {"status": status, "started_at": when(started), "new": new, "items": items,
              "error": error}
        for sid, status, started, new, items, error in rows
    }  # fmt: skip


def _source(
    sid: str, kind: str, enabled: bool, st: tuple[Any, ...] | None, run: dict[str, Any] | None
) -> dict[str, Any]:
    values = (None, None, None, None, 0, None, 0, 0, 0, 0) if st is None else st
    _id, _kind, attempt, success, failures, error, runs, seen, new, skipped = values
    return {
        "id": sid,
        "kind": kind,
        "enabled": enabled,
        "configured": True,
        "last_attempt": when(attempt),
        "last_success": when(success),
        "consecutive_failures": failures,
        "last_error": error,
        "runs": runs,
        "items_seen": seen,
        "items_new": new,
        "items_skipped": skipped,
        "last_run": run,
    }


def _count_by(reader: Reader, table: str, column: str) -> dict[str, int]:
    return dict(reader.rows(f"SELECT {column}, count(*) FROM {table} GROUP BY {column}"))  # noqa: S608


def daemon_info(session: Session, running: bool) -> dict[str, Any]:
    """:func:`daemon_state` from the record as a session reads it."""
    from crawler.db.models import Meta

    row = session.get(Meta, DAEMON_KEY)
    return daemon_state(json.loads(row.value) if row else {}, running)


def daemon_state(info: dict[str, Any], running: bool) -> dict[str, Any]:
    """The daemon as it last recorded itself (crawler.daemon.scheduler), and whether it runs.

    ``running`` comes from probing the daemon lock, not from the record: a daemon killed with
    SIGKILL leaves a record saying "running" but frees its lock. ``state`` tells the cases
    apart: running, stopped (cleanly), died (no clean stop) or never (no daemon ever ran).
    """
    state = _state(running, bool(info), bool(info.get("running")))
    info["running"] = running
    info["state"] = state
    info.setdefault("jobs", [])
    for key in ("started_at", "heartbeat", "stopped_at"):
        if isinstance(info.get(key), str):
            info[key] = datetime.fromisoformat(info[key])
    for job in info["jobs"]:
        if not running:
            job["next_run"] = None  # a dead daemon's plans are void
        for key in ("next_run", "last_run"):
            if isinstance(job.get(key), str):
                job[key] = datetime.fromisoformat(job[key])
    return info


def _state(running: bool, has_record: bool, recorded_running: bool) -> str:
    if running:
        return "running"
    if not has_record:
        return "never"
    return "died" if recorded_running else "stopped"
