"""Read-only reports straight over the database driver, for the CLI's quick commands.

``litwatch status`` and ``litwatch papers list`` are what an operator types most, and most
of their time went into importing SQLAlchemy (half a second of CPU here, four times a bare
``import click, rich``). They read a few counts and rows, so they talk to the driver directly:
``sqlite3`` opens the file read-only (a missing database is never created), ``psycopg`` a
PostgreSQL URL. SQL is written once with ``:name`` parameters, the style both sqlite3 and
SQLAlchemy's ``text()`` use; for psycopg they become ``%(name)s``. Writes, migrations and
everything else stay with SQLAlchemy (:mod:`crawler.db.engine`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from crawler.db import HEAD

_PARAM = re.compile(r"(?<!:):([A-Za-z_]\w*)")


class ReaderError(Exception):
    """The database cannot be read as it is; the message says why and what to do.

    ``usage`` is True when the operator must act first (no schema yet, an older one).
    """

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


class Reader:
    """One read-only connection; rows come back as tuples."""

    def __init__(self, conn: Any, dialect: str, where: str, path: str | None = None) -> None:
        self.conn = conn
        self.dialect = dialect
        self.where = where
        #: The SQLite database file (its lock files live beside it).
        self.path = path

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if self.dialect == "postgresql":
            sql = _PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))
        try:
            return list(self.conn.execute(sql, params or {}).fetchall())
        except Exception as exc:  # the driver's own errors: locked, connection lost...
            if not _driver_error(exc):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ReaderError(f"database {self.where}: {first}") from None

    def scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        rows = self.rows(sql, params)
        return rows[0][0] if rows else None


def lock_held(reader: Reader, name: str) -> bool:
    """Whether some process holds the named lock (:mod:`crawler.locks`) right now."""
    from crawler.locks import PG_LOCK_CLASS, file_lock_free, lock_path, pg_key

    if reader.dialect == "sqlite":
        return not file_lock_free(lock_path(reader.path, name))
    params = {"c": PG_LOCK_CLASS, "k": pg_key(name)}
    if not reader.scalar("SELECT pg_try_advisory_lock(:c, :k)", params):
        return True
    reader.scalar("SELECT pg_advisory_unlock(:c, :k)", params)
    return False


def when(value: Any) -> datetime | None:
    """A stored UTC timestamp as an aware datetime (SQLite keeps text, PostgreSQL naive)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _driver_error(exc: Exception) -> bool:
    module = type(exc).__module__
    return module.startswith(("sqlite3", "psycopg"))


def in_list(name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``(:name0, :name1, ...)`` and its parameters, for ``IN``."""
    params = {f"{name}{i}": v for i, v in enumerate(values)}
    return "(" + ", ".join(f":{k}" for k in params) + ")", params


@contextmanager
def open_reader(url: str, shown: str) -> Iterator[Reader]:
    """A reader on the database at ``url`` (``shown``: the URL without its password).

    Raises :class:`ReaderError` when the database does not exist, cannot be opened, or its
    schema is not the one this litwatch needs (it is never created or migrated here).
    """
    scheme = urlsplit(url).scheme.split("+")[0]
    path = None
    if scheme == "sqlite":
        path = _sqlite_path(url, shown)
        conn, dialect = _sqlite(path, shown), "sqlite"
    elif scheme in ("postgresql", "postgres"):
        conn, dialect = _postgres(url, shown), "postgresql"
    else:
        raise ReaderError(f"cannot read database URL {shown!r}")
    try:
        reader = Reader(conn, dialect, shown, path)
        _check_schema(reader)
        yield reader
    finally:
        conn.close()


def _sqlite_path(url: str, shown: str) -> str:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if not path or path == ":memory:":
        raise ReaderError(f"database {shown} is empty: run `litwatch db upgrade`", usage=True)
    return str(Path(unquote(path.split("?", 1)[0])).expanduser())


def _sqlite(path: str, shown: str) -> Any:
    import sqlite3

    file = Path(path)
    if not file.is_file():
        raise ReaderError(f"database {shown} does not exist: run `litwatch db upgrade`", usage=True)
    try:
        conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        conn.execute("SELECT 1")
    except sqlite3.Error as exc:
        raise ReaderError(f"cannot open database {shown}: {exc}") from None
    return conn


def _postgres(url: str, shown: str) -> Any:
    import psycopg

    parts = urlsplit(url)
    dsn = parts._replace(scheme="postgresql").geturl()
    try:
        conn = psycopg.connect(dsn, connect_timeout=10, autocommit=True)
        conn.read_only = True
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReaderError(f"database {shown}: {first}") from None
    return conn


def _check_schema(reader: Reader) -> None:
    current = (
        reader.scalar("SELECT version_num FROM alembic_version")
        if _has(reader, "alembic_version")
        else None
    )
    if current == HEAD:
        return
    if current is None and not _has(reader, "papers"):
        raise ReaderError(
            f"database {reader.where} has no litwatch schema: run `litwatch db upgrade`",
            usage=True,
        )
    if current is None or current in known_revisions():
        raise ReaderError(
            f"database {reader.where} is at schema revision {current or 'none'}, "
            f"this litwatch needs {HEAD}: run `litwatch db upgrade`"
        )
    raise ReaderError(
        f"database {reader.where} is at schema revision {current}, which this litwatch "
        f"({HEAD}) does not know: it was migrated by a newer version; install that version"
    )


def _has(reader: Reader, table: str) -> bool:
    if reader.dialect == "sqlite":
        sql = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = :t"
    else:
        sql = (
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = :t"
        )
    return bool(reader.scalar(sql, {"t": table}))


def known_revisions() -> set[str]:
    """Revisions of this litwatch's migrations, from their file names (``0001_....py``; a
    test holds every file's revision equal to its name's prefix)."""
    folder = Path(__file__).resolve().parent / "migrations" / "versions"
    return {p.name.split("_", 1)[0] for p in folder.glob("*.py")}
