"""The ``rate_limits`` table's one owner: fixed-window counters shared by every process.

A hit is one statement, an upsert that either starts a new window (count 1) or adds one to
the current window, and returns the row as it now stands. The database serialises the
writers (a row lock on PostgreSQL, the write lock on SQLite), so two web processes, or two
app instances in one process, never lose a hit and always see one count; a restart keeps it.

Keys are stored hashed (``scope:sha256``): the table never holds an e-mail address or an IP
in clear, and any key fits the column.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Engine, Table, case, delete, literal
from sqlalchemy.dialects import postgresql, sqlite

from crawler.db.engine import transaction
from crawler.db.models import RateLimit, UTCDateTime, utcnow

_TABLE = cast(Table, RateLimit.__table__)


@dataclass(frozen=True)
class Window:
    """The state of one key's window after a hit."""

    count: int
    started: datetime


def stored_key(scope: str, key: str) -> str:
    """The row key for ``key`` in ``scope`` (hashed; see the module docstring)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{scope[:60]}:{digest}"


def hit(engine: Engine, scope: str, key: str, window: float, now: datetime | None = None) -> Window:
    """Count one hit on ``key``; the window restarts when the stored one is ``window`` s old."""
    now = now or utcnow()
    table = _TABLE
    expired = table.c.window_start <= now - timedelta(seconds=window)
    start = literal(now, UTCDateTime())
    with transaction(engine) as session:
        dialect = session.get_bind().dialect.name
        ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = (
            ins(table)
            .values(key=stored_key(scope, key), window_start=now, count=1)
            # Both SET expressions read the row as it was (SQL evaluates every right-hand
            # side before assigning), on SQLite and on PostgreSQL alike.
            .on_conflict_do_update(
                index_elements=[table.c.key],
                set_={
                    "count": case((expired, 1), else_=table.c.count + 1),
                    "window_start": case((expired, start), else_=table.c.window_start),
                },
            )
            .returning(table.c.count, table.c.window_start)
        )
        count, started = session.execute(stmt).one()
    return Window(int(count), started)


def prune(engine: Engine, scope: str, window: float, now: datetime | None = None) -> int:
    """Delete ``scope``'s windows older than ``window`` seconds (they count for nothing)."""
    cutoff = (now or utcnow()) - timedelta(seconds=window)
    table = _TABLE
    with transaction(engine) as session:
        result = session.execute(
            delete(table).where(
                table.c.key.startswith(f"{scope[:60]}:", autoescape=True),
                table.c.window_start <= cutoff,
            )
        )
    return int(getattr(result, "rowcount", 0) or 0)
