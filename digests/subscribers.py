"""Subscribers: validated addresses, topics, format, time zone and a secret per subscriber."""

from __future__ import annotations

import csv
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from crawler.db.models import Subscriber, utcnow

FORMATS = ("html", "text")


class SubscriberError(ValueError):
    """Invalid subscriber data, phrased for the operator."""


def normalise_email(raw: str) -> tuple[str, str]:
    """(address as it will be written, case-folded key); SubscriberError when invalid.

    No deliverability look-ups (no DNS): validation is syntax only.
    """
    text = (raw or "").strip()
    if any(ch in text for ch in "\r\n"):
        raise SubscriberError("invalid e-mail address: contains a line break")
    try:
        info = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise SubscriberError(f"invalid e-mail address {text!r}: {exc}") from None
    return info.normalized, info.normalized.casefold()


def check_topics(topics: Sequence[str], known: Iterable[str]) -> list[str]:
    known_list = list(known)
    cleaned = [t.strip() for t in topics if t.strip()]
    unknown = [t for t in cleaned if t not in known_list]
    if unknown:
        raise SubscriberError(
            f"unknown topic(s) {', '.join(unknown)} (known: {', '.join(known_list)})"
        )
    if not cleaned:
        raise SubscriberError("choose at least one topic")
    return list(dict.fromkeys(cleaned))


def check_timezone(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise SubscriberError(
            f"unknown time zone {tz!r} (use an IANA name like Europe/Oslo)"
        ) from None
    return tz


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise SubscriberError(f"format must be html or text, not {fmt!r}")
    return fmt


def find(session: Session, email: str) -> Subscriber | None:
    _, key = normalise_email(email)
    return session.scalar(select(Subscriber).where(Subscriber.email_key == key))


def listing(session: Session, *, active_only: bool) -> list[Subscriber]:
    """Subscribers in the order they were added (only active ones with ``active_only``)."""
    stmt = select(Subscriber).order_by(Subscriber.id)
    if active_only:
        stmt = stmt.where(Subscriber.status == "active")
    return list(session.scalars(stmt))


def remove(session: Session, email: str, *, purge: bool) -> str | None:
    """Unsubscribe ``email`` (or delete it and its history with ``purge``); what was done, or
    None when it is not a subscriber."""
    sub = find(session, email)
    if sub is None:
        return None
    if purge:
        session.delete(sub)
        return f"deleted {sub.email} and their delivery history"
    if sub.status == "unsubscribed":
        return f"{sub.email} was already unsubscribed"
    sub.status = "unsubscribed"
    sub.unsubscribed_at = utcnow()
    return f"unsubscribed {sub.email}"


def reactivate(session: Session, email: str) -> str | None:
    """Make a suspended address active again; what was done, or None when unknown."""
    sub = find(session, email)
    if sub is None:
        return None
    if sub.status != "suspended":
        return f"{sub.email} is {sub.status}, not suspended: unchanged"
    sub.status, sub.suspended_reason, sub.suspended_at = "active", None, None
    return f"reactivated {sub.email}"


def add(
    session: Session,
    email: str,
    *,
    known_topics: Iterable[str],
    name: str | None = None,
    topics: Sequence[str] = (),
    fmt: str = "html",
    timezone: str = "UTC",
    status: str = "active",
) -> Subscriber:
    """A new subscriber; SubscriberError for invalid data or an address already subscribed."""
    address, key = normalise_email(email)
    known = list(known_topics)
    chosen = check_topics(topics or known, known)
    if session.scalar(select(Subscriber.id).where(Subscriber.email_key == key)) is not None:
        raise SubscriberError(f"{address} is already a subscriber")
    now = utcnow()
    sub = Subscriber(
        email=address,
        email_key=key,
        name=clean_name(name),
        topics=chosen,
        format=check_format(fmt),
        timezone=check_timezone(timezone),
        token=secrets.token_urlsafe(24),
        status=status,
        created_at=now,
        confirmed_at=now if status == "active" else None,
    )
    session.add(sub)
    session.flush()
    return sub


def clean_name(name: str | None) -> str | None:
    """A display name safe for a header: one line, no control characters, bounded."""
    if not name:
        return None
    flat = "".join(ch if ch.isprintable() else " " for ch in name)
    flat = " ".join(flat.split())[:200]
    return flat or None


@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    #: Rows for addresses that unsubscribed: left alone (an import never re-subscribes).
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)


def import_csv(session: Session, fh: IO[str], *, known_topics: Sequence[str]) -> ImportReport:
    """Add or update subscribers from CSV with a header row.

    Columns: ``email`` (required), ``name``, ``topics`` (separated by ``;`` or ``,`` inside
    the cell, or spaces), ``format``, ``timezone``. Idempotent: importing the same file again
    changes nothing. Rows are validated one by one; a bad row is reported (with its line
    number) and skipped. An address that unsubscribed is left as it is, never re-activated.
    """
    report = ImportReport()
    reader = csv.DictReader(fh)
    if reader.fieldnames is None or "email" not in [f.strip().lower() for f in reader.fieldnames]:
        raise SubscriberError("the CSV needs a header row with an 'email' column")
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        data = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k}
        try:
            _import_row(session, data, known_topics, seen, report, line)
        except SubscriberError as exc:
            report.rejected.append((line, str(exc)))
    return report


def _import_row(
    session: Session,
    data: dict[str, str],
    known_topics: Sequence[str],
    seen: set[str],
    report: ImportReport,
    line: int,
) -> None:
    address, key = normalise_email(data.get("email", ""))
    if key in seen:
        raise SubscriberError(f"{address} appears twice in the file")
    seen.add(key)
    raw_topics = data.get("topics", "").replace(";", ",").replace(" ", ",").split(",")
    topics = (
        check_topics(raw_topics, known_topics)
        if any(t.strip() for t in raw_topics)
        else list(known_topics)
    )
    fmt = check_format(data.get("format") or "html")
    tz = check_timezone(data.get("timezone") or "UTC")
    name = clean_name(data.get("name"))
    existing = session.scalar(select(Subscriber).where(Subscriber.email_key == key))
    if existing is not None and existing.status == "unsubscribed":
        # Consent withdrawn stays withdrawn: a stale mailing list must not undo it.
        report.skipped.append((line, f"{existing.email} unsubscribed; not re-subscribed"))
        return
    if existing is None:
        add(
            session,
            address,
            known_topics=known_topics,
            name=name,
            topics=topics,
            fmt=fmt,
            timezone=tz,
        )
        report.added.append(address)
        return
    wanted = {"name": name or existing.name, "topics": topics, "format": fmt, "timezone": tz}
    if all(getattr(existing, k) == v for k, v in wanted.items()):
        report.unchanged.append(address)
        return
    for k, v in wanted.items():
        setattr(existing, k, v)
    report.updated.append(address)
