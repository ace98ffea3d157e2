"""What ``litwatch status`` reports: sources' health, database contents, subscribers, daemon.

Read through :mod:`crawler.db.reader` (no SQLAlchemy): the command an operator runs most
should start fast. :func:`daemon_info` also serves callers holding a session.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from crawler.db import DAEMON_KEY, WATCH_KEY
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
        "deliveries": {k: deliveries.get(k, 0) for k in DELIVERY_STATES}
        | {k: v for k, v in deliveries.items() if k not in DELIVERY_STATES},
        "recent_deliveries": recent_deliveries(reader),
        "daemon": daemon_state(json.loads(record) if record else {}, daemon_running),
        "watch": _watch(reader),
        "deliverability": deliverability(settings, reader, datetime.now(UTC)),
    }


#: The window ``status`` reports bounce and complaint rates over.
DELIVERABILITY_DAYS = 30


def deliverability(settings: Settings, reader: Reader, now: datetime) -> dict[str, Any]:
    """Digests sent, bounces and complaints received, in the last 30 days, and their rates.

    Bounces are hard and soft ones (complaints apart), from the mailbox and from webhooks;
    rates are percentages of the digests sent (None when none was sent). One query for the
    digests sent, one (answered from the index on ``received_at``) for the returned mail.
    """
    since = now - timedelta(days=DELIVERABILITY_DAYS)
    at = _stored(reader, since)
    sent = reader.scalar(
        "SELECT count(*) FROM deliveries WHERE state = 'sent' AND sent_at >= :since",
        {"since": at},
    )
    kinds = dict(reader.rows(
        "SELECT kind, count(*) FROM bounces WHERE received_at >= :since "
        "AND kind IN ('hard', 'soft', 'complaint') GROUP BY kind",
        {"since": at},
    ))  # fmt: skip
    sent = sent or 0
    hard, soft, complaints = kinds.get("hard", 0), kinds.get("soft", 0), kinds.get("complaint", 0)
    cfg = settings.status
    data: dict[str, Any] = {
        "days": DELIVERABILITY_DAYS,
        "since": since,
        "sent": sent,
        "bounces": hard + soft,
        "hard_bounces": hard,
        "soft_bounces": soft,
        "complaints": complaints,
        "bounce_percent": 100 * (hard + soft) / sent if sent else None,
        "complaint_percent": 100 * complaints / sent if sent else None,
        "max_bounce_percent": cfg.max_bounce_percent,
        "max_complaint_percent": cfg.max_complaint_percent,
    }
    return data | {"warnings": deliverability_warnings(data)}


def deliverability_warnings(data: dict[str, Any]) -> list[str]:
    """One line per rate above its threshold ([status] max_bounce_percent, ...)."""
    found = []
    for what, key in (("bounce", "bounces"), ("complaint", "complaints")):
        percent, limit = data[f"{what}_percent"], data[f"max_{what}_percent"]
        if percent is not None and percent > limit:
            found.append(
                f"deliverability: {what} rate {percent:.2f}% over the last {data['days']} days "
                f"is above {limit:g}% ({data[key]} of {data['sent']} digests sent)"
            )
    return found


def _stored(reader: Reader, moment: datetime) -> Any:
    """``moment`` as the database stores UTC timestamps (SQLite: SQLAlchemy's text form)."""
    naive = moment.astimezone(UTC).replace(tzinfo=None)
    return naive.strftime("%Y-%m-%d %H:%M:%S.%f") if reader.dialect == "sqlite" else naive


#: Delivery states always shown (digests.delivery has the others: sending, resend, ...).
DELIVERY_STATES = ("sent", "pending", "failed", "unknown")
#: A deferred digest counts as failing once it was tried this many times.
DEFERRED_ATTEMPTS = 3


def recent_deliveries(reader: Reader) -> dict[str, Any]:
    """Deliveries of the latest week of periods by state, and digests deferred again and again.

    "Latest week": periods differ by a day between subscribers' time zones, so every period
    within 6 days of the newest counts as the latest digest run.
    """
    by_period = reader.rows("SELECT period, state, count(*) FROM deliveries GROUP BY period, state")
    periods = [(_date(p), state, n) for p, state, n in by_period]
    latest = max((p for p, _, _ in periods), default=None)
    states: dict[str, int] = {}
    for period, state, n in periods:
        if latest is not None and period > latest - timedelta(days=7):
            states[state] = states.get(state, 0) + n
    deferred, error = reader.rows(
        "SELECT count(*), max(last_error) FROM deliveries "
        "WHERE state IN ('pending', 'resend') AND attempts >= :n",
        {"n": DEFERRED_ATTEMPTS},
    )[0]
    return {"latest_period": latest, "states": states, "deferred": deferred or 0, "error": error}


def _date(value: Any) -> date:
    return date.fromisoformat(value) if isinstance(value, str) else value


def problems(data: dict[str, Any], failed_polls: int) -> list[str]:
    """One line per reason for ``litwatch status --check`` to fail (none: all is well).

    A source that failed its last ``failed_polls`` polls, a daemon that ran here and is not
    running now, digests of the latest run that were refused, have an unknown outcome, or
    keep being deferred, and bounce or complaint rates above [status]'s thresholds.
    """
    found = [
        f"source {s['id']}: failed its last {s['consecutive_failures']} polls"
        + (f" ({_first_line(s['last_error'])})" if s["last_error"] else "")
        for s in data["sources"]
        if s["configured"] and s["enabled"] and s["consecutive_failures"] >= failed_polls
    ]
    daemon = data["daemon"]
    if daemon["state"] == "stopped":
        found.append(f"daemon: not running (stopped {_iso(daemon.get('stopped_at'))})")
    elif daemon["state"] == "died":
        found.append(
            "daemon: not running (ended without a clean stop; "
            f"last heartbeat {_iso(daemon.get('heartbeat'))})"
        )
    found.extend(_delivery_problems(data["recent_deliveries"]))
    found.extend(data["deliverability"]["warnings"])
    return found


def _delivery_problems(recent: dict[str, Any]) -> list[str]:
    period, states = recent["latest_period"], recent["states"]
    found = []
    if states.get("failed"):
        found.append(
            f"deliveries: {states['failed']} of the digest of {period} failed "
            "(`litwatch digest send --retry-failed` tries them again)"
        )
    if states.get("unknown"):
        found.append(
            f"deliveries: {states['unknown']} of the digest of {period} have an unknown "
            "outcome (handed to the server, not recorded)"
        )
    if recent["deferred"]:
        found.append(
            f"deliveries: {recent['deferred']} deferred {DEFERRED_ATTEMPTS} or more times"
            + (f" ({_first_line(recent['error'])})" if recent["error"] else "")
        )
    return found


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else text


def _iso(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if moment else "at an unknown time"


def counts(reader: Reader) -> dict[str, Any]:
    """What the database holds: one query per figure, so that each is answered from an
    index (one combined query reads every row of ``papers``: ten times slower)."""
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


def _watch(reader: Reader) -> dict[str, Any]:
    """The lifecycle watch's last run (``state`` "never" when it never ran)."""
    value = reader.scalar("SELECT value FROM meta WHERE key = :k", {"k": WATCH_KEY})
    record: dict[str, Any] = json.loads(value) if value else {}
    return {
        "state": record.get("state", "never"),
        "started_at": record.get("started_at"),
        "finished_at": record.get("finished_at"),
        "checked": record.get("checked", 0),
        "events_new": record.get("events_new", 0),
        "failures": record.get("failures", []),
    }
