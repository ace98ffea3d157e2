"""What every command shares: the lazily built :class:`App`, :func:`fail` and exit codes.

Nothing heavy is imported here: settings, the database and Rich's console are built on first
use, so ``litwatch --help`` and ``litwatch COMMAND --help`` start in a blink.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, NoReturn

import click

if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy import Engine
    from sqlalchemy.exc import SQLAlchemyError

    from crawler.db.reader import Reader
    from crawler.settings import Settings

EXIT_FAILURE = 1
EXIT_USAGE = 2


class App:
    """Lazily built shared state: settings (validated once), the engine, consoles."""

    def __init__(self, config_path: str | None, log_level: str | None) -> None:
        self.config_path = config_path
        self.log_level = log_level

    @cached_property
    def out(self) -> Console:
        # Wide tables when piped or logged: a log line should not be folded at 80 columns.
        from rich.console import Console

        return Console(width=None if sys.stdout.isatty() else 160)

    @cached_property
    def err(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, width=None if sys.stderr.isatty() else 160)

    @cached_property
    def settings(self) -> Settings:
        from crawler.logs import setup_logging
        from crawler.settings import ConfigError, load_settings

        try:
            settings = load_settings(self.config_path)
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
        setup_logging(self.log_level or settings.daemon.log_level)
        return settings

    def engine(self, *, schema: bool = True) -> Engine:
        """The database engine; with ``schema`` the schema is checked, and a new, empty
        database is set up (for commands that write; readers use :meth:`read_engine`)."""
        from sqlalchemy.exc import OperationalError

        from crawler.db.engine import DatabaseError, make_engine
        from crawler.db.migrate import ensure_schema

        if "_engine" not in self.__dict__:
            try:
                self.__dict__["_engine"] = make_engine(self.settings.database.url)
            except DatabaseError as exc:
                fail(str(exc), EXIT_USAGE)
            ctx = click.get_current_context(silent=True)
            if ctx is not None:  # close pooled connections when the command ends
                ctx.call_on_close(self.__dict__["_engine"].dispose)
        engine: Engine = self.__dict__["_engine"]
        if schema and not self.__dict__.get("_schema_ok"):
            try:
                created = ensure_schema(engine)
            except DatabaseError as exc:
                fail(str(exc))
            except OperationalError as exc:
                fail(database_message(engine, exc))
            self.__dict__["_schema_ok"] = True
            if created:  # a command that writes set up a new database: say so (a log
                # line, so that the daemon's stderr stays one key=value line per event)
                import logging

                from crawler.db.engine import describe_url

                logging.getLogger("litwatch.db").info(
                    "event=db.schema_created database=%s revision=%s",
                    describe_url(engine),
                    created,
                )
        return engine

    def read_engine(self) -> Engine:
        """The engine for a command that only reads: the database must exist at this
        litwatch's schema. It is checked through :meth:`reader` first, so nothing (not even
        an empty SQLite file) is ever created or migrated; otherwise the command ends with
        what to run (exit 2 for a database without the schema)."""
        with self.reader():
            pass
        return self.engine(schema=False)

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        """A read-only connection without SQLAlchemy (see :mod:`crawler.db.reader`); the
        database is never created or migrated: a command says what to run instead."""
        from crawler.db.reader import ReaderError, open_reader
        from crawler.settings_model import mask_url

        url = self.settings.database.url
        try:
            with open_reader(url, mask_url(url)) as reader:
                yield reader
        except ReaderError as exc:
            fail(str(exc), EXIT_USAGE if exc.usage else EXIT_FAILURE)


def database_message(engine: Engine, exc: SQLAlchemyError) -> str:
    """One line for a database failure (locked, unreachable, ...), without the SQL."""
    from crawler.db.engine import describe_url

    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return f"database {describe_url(engine)}: {text}"


def domain_error(ctx: click.Context, exc: Exception) -> str | None:
    """The one line for a database error that escaped a command (None: not one of ours)."""
    if "sqlalchemy" not in sys.modules:
        return None  # nothing touched a database
    from sqlalchemy.exc import OperationalError

    from crawler.db.engine import DatabaseError

    if isinstance(exc, DatabaseError):
        return str(exc)
    if isinstance(exc, OperationalError):
        app = ctx.find_object(App)
        engine = app.__dict__.get("_engine") if app else None
        return database_message(engine, exc) if engine is not None else str(exc)
    return None


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print ``litwatch: message`` on stderr and exit with ``code``."""
    click.echo(f"litwatch: {message}", err=True)
    sys.exit(code)


pass_app = click.make_pass_decorator(App)
