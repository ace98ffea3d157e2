"""The ``meta`` table's one owner: installation facts and the daemon's record.

Keys: ``secret_key`` (the link-signing key when none is in the environment), ``daemon`` (the
daemon's self-description, JSON), ``digest.last_fire`` (the last digest period done) and
``installation_id`` (random, made once: digests' Message-IDs are unique per installation).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crawler.db import DAEMON_KEY, DIGEST_DONE_KEY, INSTALLATION_KEY, SECRET_KEY, WATCH_KEY
from crawler.db.engine import transaction
from crawler.db.models import Meta

__all__ = ["DAEMON_KEY", "DIGEST_DONE_KEY", "INSTALLATION_KEY", "SECRET_KEY", "WATCH_KEY"]


def read(engine: Engine, key: str) -> str | None:
    """The value stored under ``key``, or None."""
    with transaction(engine) as session:
        row = session.get(Meta, key)
        return row.value if row is not None else None


def write(engine: Engine, key: str, value: str) -> None:
    """Store ``value`` under ``key`` (insert or replace)."""
    with transaction(engine) as session:
        row = session.get(Meta, key)
        if row is None:
            session.add(Meta(key=key, value=value))
        else:
            row.value = value


def generated_secret(engine: Engine) -> str:
    """The stored signing key, generated on first use; the first of two racing writers wins."""
    return _generated(engine, SECRET_KEY, lambda: secrets.token_urlsafe(48))


def installation_id(engine: Engine) -> str:
    """This installation's id (16 lower-case hex digits), made on first use and never changed.

    Part of every digest's Message-ID, so two installations (a test copy, a second site)
    never mint the same one for the same subscriber id and period.
    """
    return _generated(engine, INSTALLATION_KEY, lambda: secrets.token_hex(8))


def _generated(engine: Engine, key: str, make: Callable[[], str]) -> str:
    """The value under ``key``, made by ``make`` on first use; the first of two racing
    writers wins."""
    stored = read(engine, key)
    if stored is not None:
        return stored
    try:
        with transaction(engine) as session:
            session.add(Meta(key=key, value=make()))
    except IntegrityError:
        pass  # another process made it first: use theirs
    stored = read(engine, key)
    assert stored is not None
    return stored


def write_daemon_record(engine: Engine, info: dict[str, Any]) -> None:
    """Store the daemon's record (what ``litwatch status`` shows about it)."""
    write(engine, DAEMON_KEY, json.dumps(info))


def read_daemon_record(engine: Engine) -> dict[str, Any]:
    """The daemon record as last stored ({} when no daemon ever ran)."""
    value = read(engine, DAEMON_KEY)
    return json.loads(value) if value else {}


def digest_done(engine: Engine) -> datetime | None:
    """The scheduled time of the last digest period the daemon finished."""
    value = read(engine, DIGEST_DONE_KEY)
    return datetime.fromisoformat(value) if value else None


def mark_digest_done(engine: Engine, cutoff: datetime) -> None:
    """Record ``cutoff`` as done; the mark never moves back."""
    with transaction(engine) as session:
        row = session.get(Meta, DIGEST_DONE_KEY)
        value = cutoff.astimezone(UTC).isoformat()
        if row is None:
            session.add(Meta(key=DIGEST_DONE_KEY, value=value))
        elif datetime.fromisoformat(row.value) < cutoff:
            row.value = value


def put(session: Session, key: str, value: str) -> None:
    """Store ``value`` under ``key`` inside the caller's transaction (with the writes it
    belongs to: a watch's progress and the events it learned commit together)."""
    row = session.get(Meta, key)
    if row is None:
        session.add(Meta(key=key, value=value))
    else:
        row.value = value


def read_in(session: Session, key: str) -> str | None:
    """The value under ``key`` as the caller's transaction sees it."""
    row = session.get(Meta, key)
    return row.value if row is not None else None
