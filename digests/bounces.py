"""Bounce and complaint processing: read returned mail, record each decision, apply the policy.

Returned mail is read where the operator has it (a Maildir, an mbox file, an IMAP mailbox:
:mod:`digests.mailboxes`) and never changed there: a message that is not a bounce is left alone.
Each message is classified (:mod:`digests.bounce_parse`: RFC 3464 DSNs, RFC 5965 complaints,
RFC 3834 auto-replies, common non-standard bounces) and, in one transaction per message, its
decisions are recorded in ``bounces`` (keyed by the message, so a mailbox processed twice, or
a run killed and rerun, counts nothing twice) and the policy applied:

* a complaint unsubscribes the address at once;
* ``hard_limit`` hard bounces (5.x.x) suspend it; ``soft_limit`` soft ones (4.x.x) within
  ``soft_window`` suspend it;
* auto-replies and other mail are recorded as ignored and never counted.

The subscriber is found by the VERP token of the envelope the message came back to (exact:
:mod:`digests.verp`), else by the failed recipient's address.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from crawler.db.engine import insert_ignore, transaction
from crawler.db.models import BounceRow, Subscriber, utcnow
from crawler.settings_model import BounceSettings
from digests.bounce_parse import classify_all
from digests.bounce_report import BounceReport
from digests.verp import read_verp_token

log = logging.getLogger("litwatch.bounces")


@dataclass
class BounceSummary:
    """What one run of bounce processing did (counts by kind and by action)."""

    messages: int = 0
    already: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    suspended: list[str] = field(default_factory=list)
    unsubscribed: list[str] = field(default_factory=list)

    def line(self) -> str:
        kinds = ", ".join(f"{n} {k.replace('_', '-')}" for k, n in sorted(self.kinds.items()))
        return (
            f"{self.messages} messages ({self.already} already processed): {kinds or 'nothing new'}"
            f"; {len(self.suspended)} suspended, {len(self.unsubscribed)} unsubscribed"
        )


def message_key(raw: bytes) -> str:
    """The returned message's identity: its Message-ID, else a hash of its bytes."""
    try:
        mid = BytesHeaderParser().parsebytes(raw).get("Message-ID")
    except Exception:  # a header the parser cannot read: the bytes still identify it
        mid = None
    text = " ".join(str(mid).split()) if mid else ""
    if text and len(text) <= 250:
        return f"mid:{text}"
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def process(
    engine: Engine,
    policy: BounceSettings,
    secret: bytes,
    messages: Iterable[bytes],
    source: str,
) -> BounceSummary:
    """Process ``messages`` (raw RFC 5322 bytes); see the module docstring."""
    summary = BounceSummary()
    for raw in messages:
        summary.messages += 1
        key = message_key(raw)
        reports = classify_all(raw, verp_prefix=policy.verp_prefix)
        with transaction(engine) as session:
            if session.scalar(select(BounceRow.id).where(BounceRow.message_key == key)):
                summary.already += 1
                continue
            for report in reports:
                _apply(session, policy, secret, key, report, source, summary)
    return summary


def process_reports(
    engine: Engine,
    policy: BounceSettings,
    secret: bytes,
    reports: Iterable[BounceReport],
    source: str,
) -> BounceSummary:
    """Process reports a provider posted (webhooks): each carries its own ``message_id``."""
    summary = BounceSummary()
    for report in reports:
        summary.messages += 1
        key = f"{source}:{report.message_id or hashlib.sha256(repr(report).encode()).hexdigest()}"
        with transaction(engine) as session:
            _apply(session, policy, secret, key[:300], report, source, summary)
    return summary


def _apply(
    session: Session,
    policy: BounceSettings,
    secret: bytes,
    key: str,
    report: BounceReport,
    source: str,
    summary: BounceSummary,
) -> None:
    now = utcnow()
    sub = _subscriber(session, secret, report)
    counted = report.kind in ("hard", "soft", "complaint") and sub is not None
    row = {
        "message_key": key,
        "recipient": (report.recipient or "")[:320],
        "subscriber_id": sub.id if sub is not None else None,
        "kind": report.kind,
        "status": (report.status or None) and report.status[:16],
        "diagnostic": report.diagnostic or None,
        "action": "counted" if counted else "ignored",
        "source": source[:32],
        "received_at": now,
    }
    if not insert_ignore(session, BounceRow, [row], returning="id"):
        summary.already += 1  # this recipient of this message was processed before
        return
    summary.kinds[report.kind] = summary.kinds.get(report.kind, 0) + 1
    if sub is None or not counted:
        return
    action = _decide(session, policy, sub, report, now)
    if action is not None:
        session.execute(
            update(BounceRow)
            .where(BounceRow.message_key == key, BounceRow.recipient == row["recipient"])
            .values(action=action)
        )
        (summary.suspended if action == "suspended" else summary.unsubscribed).append(sub.email)
        log.info("event=bounce.%s subscriber=%s kind=%s status=%s", action, sub.id, report.kind,
                 report.status)  # fmt: skip


def _decide(
    session: Session, policy: BounceSettings, sub: Subscriber, report: BounceReport, now: datetime
) -> str | None:
    """Apply the policy to ``sub`` after ``report``; the action taken, if any."""
    if sub.status not in ("active", "pending"):
        return None  # already suspended or unsubscribed: nothing more to do
    if report.kind == "complaint":
        sub.status, sub.unsubscribed_at = "unsubscribed", now
        return "unsubscribed"
    if report.kind == "hard":
        hard = _count(session, sub.id, "hard", None)
        if hard >= policy.hard_limit:
            return _suspend(sub, now, f"hard bounce {report.status or ''}".strip())
        return None
    soft = _count(session, sub.id, "soft", now - policy.soft_window)
    if soft >= policy.soft_limit:
        return _suspend(sub, now, f"{soft} soft bounces within {policy.soft_window.days} days")
    return None


def _suspend(sub: Subscriber, now: datetime, reason: str) -> str:
    sub.status, sub.suspended_at, sub.suspended_reason = "suspended", now, reason
    return "suspended"


def _count(session: Session, subscriber_id: int, kind: str, since: datetime | None) -> int:
    stmt = select(func.count()).where(
        BounceRow.subscriber_id == subscriber_id, BounceRow.kind == kind
    )
    if since is not None:
        stmt = stmt.where(BounceRow.received_at >= since)
    return int(session.scalar(stmt) or 0)


def _subscriber(session: Session, secret: bytes, report: BounceReport) -> Subscriber | None:
    if report.verp_token:
        sid = read_verp_token(secret, report.verp_token)
        if sid is not None:
            return session.get(Subscriber, sid)
    if report.recipient:
        return session.scalar(
            select(Subscriber).where(Subscriber.email_key == report.recipient.casefold())
        )
    return None
