"""What ``litwatch status`` reports: sources' health, database contents, subscribers, daemon."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from crawler.db.engine import describe_url
from crawler.db.meta import DAEMON_KEY
from crawler.db.models import CrawlRun, Delivery, Meta, SourceState, Subscriber
from crawler.db.queries import counts
from crawler.locks import daemon_running
from crawler.settings import Settings


def collect_status(settings: Settings, engine: Engine, session: Session) -> dict[str, Any]:
    states = {s.id: s for s in session.scalars(select(SourceState))}
    sources = []
    for src in settings.sources:
        st = states.pop(src.id, None)
        last_run = session.scalar(
            select(CrawlRun)
            .where(CrawlRun.source_id == src.id)
            .order_by(CrawlRun.id.desc())
            .limit(1)
        )
        sources.append(_source(src.id, src.kind, src.enabled, st, last_run))
    for orphan in states.values():  # polled once, since removed from the configuration
        sources.append(_source(orphan.id, orphan.kind, False, orphan, None) | {"configured": False})
    subs = _count_by(session, Subscriber.status)
    deliveries = _count_by(session, Delivery.state)
    db = counts(session) | {"url": describe_url(engine)}
    return {
        "sources": sources,
        "database": db,
        "subscribers": {k: subs.get(k, 0) for k in ("active", "pending", "unsubscribed")},
        "deliveries": {k: deliveries.get(k, 0) for k in ("pending", "sent", "failed")},
        "daemon": daemon_info(session, daemon_running(engine)),
    }


def _source(
    sid: str, kind: str, enabled: bool, st: SourceState | None, run: CrawlRun | None
) -> dict[str, Any]:
    return {
        "id": sid,
        "kind": kind,
        "enabled": enabled,
        "configured": True,
        "last_attempt": st.last_attempt if st else None,
        "last_success": st.last_success if st else None,
        "consecutive_failures": st.consecutive_failures if st else 0,
        "last_error": st.last_error if st else None,
        "runs": st.runs if st else 0,
        "items_seen": st.items_seen if st else 0,
        "items_new": st.items_new if st else 0,
        "items_skipped": st.items_skipped if st else 0,
        "last_run": None
        if run is None
        else {
            "status": run.status,
            "started_at": run.started_at,
            "new": run.new,
            "items": run.items,
            "error": run.error,
        },
    }


def _count_by(session: Session, column: Any) -> dict[str, int]:
    return {key: n for key, n in session.execute(select(column, func.count()).group_by(column))}


def daemon_info(session: Session, running: bool) -> dict[str, Any]:
    """The daemon as it last recorded itself (crawler.daemon.scheduler), and whether it runs now.

    ``running`` comes from probing the daemon lock, not from the record: a daemon killed with
    SIGKILL leaves a record saying "running" but frees its lock. ``state`` tells the cases
    apart: running, stopped (cleanly), died (no clean stop) or never (no daemon ever ran).
    """
    row = session.get(Meta, DAEMON_KEY)
    info: dict[str, Any] = json.loads(row.value) if row else {}
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
