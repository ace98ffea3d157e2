"""The root command group and the context every command shares."""

from __future__ import annotations

import sys
from functools import cached_property
from typing import Any, NoReturn

import click
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from crawler import __version__
from crawler.db.engine import DatabaseError, describe_url, make_engine
from crawler.db.migrate import ensure_schema
from crawler.logs import setup_logging
from crawler.settings import ConfigError, Settings, load_settings

EXIT_FAILURE = 1
EXIT_USAGE = 2


class App:
    """Lazily built shared state: settings (validated once), the engine, consoles."""

    def __init__(self, config_path: str | None, log_level: str | None) -> None:
        self.config_path = config_path
        self.log_level = log_level
        # Wide tables when piped or logged: a log line should not be folded at 80 columns.
        self.out = Console(width=None if sys.stdout.isatty() else 160)
        self.err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

    @cached_property
    def settings(self) -> Settings:
        try:
            settings = load_settings(self.config_path)
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
        setup_logging(self.log_level or settings.daemon.log_level)
        return settings

    def engine(self, *, schema: bool = True) -> Engine:
        """The database engine; with ``schema`` the schema is checked (a new database is set up)."""
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
                ensure_schema(engine)
            except DatabaseError as exc:
                fail(str(exc))
            except OperationalError as exc:
                fail(database_message(engine, exc))
            self.__dict__["_schema_ok"] = True
        return engine


def database_message(engine: Engine, exc: SQLAlchemyError) -> str:
    """One line for a database failure (locked, unreachable, ...), without the SQL."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return f"database {describe_url(engine)}: {text}"


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print ``litwatch: message`` on stderr and exit with ``code``."""
    click.echo(f"litwatch: {message}", err=True)
    sys.exit(code)


pass_app = click.make_pass_decorator(App)


class Group(click.Group):
    """Commands listed in the order they were added; domain errors become one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DatabaseError as exc:
            fail(str(exc))
        except OperationalError as exc:
            app = ctx.find_object(App)
            engine = app.__dict__.get("_engine") if app else None
            fail(database_message(engine, exc) if engine is not None else str(exc))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    envvar="LITWATCH_CONFIG",
    help="TOML configuration file (default: built-in defaults; env LITWATCH_CONFIG).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level for this command (default: [daemon] log_level).",
)
@click.version_option(__version__, prog_name="litwatch")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str | None) -> None:
    """Monitor the literature on fibromyalgia and autoimmunity; e-mail weekly digests.

    \b
    Example:
      litwatch crawl && litwatch digest send
    """
    ctx.obj = App(config_path, log_level)


def _register() -> None:
    from crawler.cli import (
        crawl_cmds,
        daemon_cmds,
        db_cmds,
        digest_cmds,
        papers_cmds,
        subscriber_cmds,
        web_cmds,
    )

    modules = (
        db_cmds,
        crawl_cmds,
        papers_cmds,
        subscriber_cmds,
        digest_cmds,
        daemon_cmds,
        web_cmds,
    )
    for module in modules:
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="litwatch")
