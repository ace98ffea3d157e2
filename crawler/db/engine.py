"""Engine set-up and schema checks.

SQLite is the embedded default and is written to concurrently by the daemon, crawl
subprocesses and the CLI, so every SQLite connection runs in WAL mode with a busy timeout, and
every transaction starts with ``BEGIN IMMEDIATE``: a deferred transaction that reads and then
writes fails at once with "database is locked" when another writer got in between, instead of
waiting its turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_S = 30


class DatabaseError(Exception):
    """The database cannot be used as it is; the message says why and what to do."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with the project's connection settings."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"invalid database URL {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database.startswith("~"):
            # sqlite3 does not expand "~": "sqlite:///~/litwatch.db" would open "./~/...".
            database = str(Path(database).expanduser())
            parsed = parsed.set(database=database)
        return _sqlite_engine(parsed.render_as_string(hide_password=False), database, **kwargs)
    # psycopg 3 is the driver we ship; "postgres://" is the spelling Heroku and others print.
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        return create_engine(parsed, pool_pre_ping=True, **kwargs)
    except Exception as exc:  # missing driver etc.
        raise DatabaseError(f"cannot use database URL {url!r}: {exc}") from None


def _sqlite_engine(url: str, database: str | None, **kwargs: Any) -> Engine:
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "isolation_level": None}, **kwargs
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session inside one transaction: committed on success, rolled back on any error."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def describe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def table_names(engine: Engine) -> list[str]:
    try:
        return inspect(engine).get_table_names()
    except OperationalError as exc:
        raise DatabaseError(f"cannot open database {describe_url(engine)}: {exc.orig}") from None


def insert_ignore(
    session: Session, model: type[Any], rows: list[dict[str, Any]], *, returning: str | None = None
) -> int:
    """INSERT ... ON CONFLICT DO NOTHING for the dialect in use (the one place it is spelt).

    With ``returning`` (a column name) the rows actually inserted are counted, on both
    dialects; without, nothing is counted (0) and the statement runs as a plain executemany,
    cheaper per row.
    """
    if not rows:
        return 0
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = model.__table__
    stmt = ins(table).on_conflict_do_nothing()
    if returning is None:
        session.connection().execute(stmt, rows)
        return 0
    return len(session.connection().execute(stmt.returning(table.c[returning]), rows).all())
