"""The database side of the subscriber pages: each function is one short transaction.

Subscribers are found by their random secret (``Subscriber.token``), which only signed links
carry; ids never appear in a URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from crawler.db.engine import transaction
from crawler.db.models import Subscriber, utcnow
from digests import subscribers

Activation = Literal["activated", "already", "stale", "missing"]


@dataclass(frozen=True)
class SignupChoice:
    """What a visitor asked for on the sign-up form (already validated)."""

    address: str
    key: str
    topics: list[str]
    fmt: str


def find_by_secret(engine: Engine, secret: str) -> Subscriber | None:
    """The subscriber holding ``secret``, detached (read-only use), or None."""
    with transaction(engine) as session:
        return session.scalar(select(Subscriber).where(Subscriber.token == secret))


def record_signup(
    engine: Engine, choice: SignupChoice, known_topics: Sequence[str], timezone: str
) -> Subscriber:
    """Create a pending subscriber for a new address, refresh a pending one; else leave it.

    An active or unsubscribed record is not touched here: an unsubscribed address comes back
    only through a fresh confirmation, and an active one keeps its preferences.
    """
    for attempt in (1, 2):
        try:
            with transaction(engine) as session:
                sub = subscribers.find(session, choice.address)
                if sub is None:
                    return subscribers.add(
                        session,
                        choice.address,
                        known_topics=known_topics,
                        topics=choice.topics,
                        fmt=choice.fmt,
                        timezone=timezone,
                        status="pending",
                    )
                if sub.status == "pending":
                    sub.topics, sub.format = list(choice.topics), choice.fmt
                return sub
        except (IntegrityError, subscribers.SubscriberError):
            # The same address signed up in a concurrent request: read theirs instead.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def activate(
    engine: Engine,
    secret: str,
    topics: Sequence[str],
    fmt: str,
    issued: float,
    known_topics: Sequence[str],
) -> tuple[Activation, Subscriber | None]:
    """Confirm a subscription from a confirmation link issued at ``issued`` (epoch seconds).

    A link issued before the address unsubscribed is stale: withdrawn consent needs a fresh
    confirmation. Confirming twice changes nothing the second time.
    """
    with transaction(engine) as session:
        sub = session.scalar(select(Subscriber).where(Subscriber.token == secret))
        if sub is None:
            return "missing", None
        if sub.status == "active":
            return "already", sub
        left = sub.unsubscribed_at
        if sub.status == "unsubscribed" and (left is None or left.timestamp() >= issued):
            return "stale", sub
        known = list(known_topics)
        # A topic dropped from the configuration since the link was sent is skipped.
        wanted = [t for t in topics if t in known] or known
        sub.topics = subscribers.check_topics(wanted, known)
        sub.format = subscribers.check_format(fmt if fmt in subscribers.FORMATS else "html")
        sub.status, sub.confirmed_at, sub.unsubscribed_at = "active", utcnow(), None
        return "activated", sub


def unsubscribe(engine: Engine, secret: str, now: datetime | None = None) -> Subscriber | None:
    """Unsubscribe (idempotent: the first time is recorded, repeats change nothing)."""
    with transaction(engine) as session:
        sub = session.scalar(select(Subscriber).where(Subscriber.token == secret))
        if sub is not None and sub.status != "unsubscribed":
            sub.status, sub.unsubscribed_at = "unsubscribed", now or utcnow()
        return sub


def update_preferences(
    engine: Engine,
    secret: str,
    topics: Sequence[str],
    fmt: str,
    timezone: str,
    updates: bool = True,
) -> Subscriber | None:
    """Save already validated preferences; None when the subscriber is gone.

    An unsubscribed subscriber is returned unchanged (saving preferences never re-subscribes).
    """
    with transaction(engine) as session:
        sub = session.scalar(select(Subscriber).where(Subscriber.token == secret))
        if sub is not None and sub.status != "unsubscribed":
            sub.topics, sub.format, sub.timezone = list(topics), fmt, timezone
            sub.updates = updates
        return sub
