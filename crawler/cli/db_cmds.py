"""``litwatch db upgrade`` and ``litwatch db current``: the schema."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from crawler.cli.context import EXIT_FAILURE, EXIT_USAGE, App, pass_app


@click.group()
def db() -> None:
    """Database schema: create or migrate it.

    \b
    Example:
      litwatch db upgrade
    """


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@pass_app
def db_upgrade(app: App, revision: str) -> None:
    """Create the schema or migrate it to the latest revision.

    \b
    Example:
      LITWATCH_DATABASE_URL=postgresql+psycopg://litwatch@db/litwatch litwatch db upgrade
    """
    from crawler.db.engine import describe_url
    from crawler.db.migrate import upgrade

    engine = app.engine(schema=False)
    before, after = upgrade(engine, revision)
    if before == after:
        click.echo(f"{describe_url(engine)}: already at revision {after}")
    else:
        click.echo(f"{describe_url(engine)}: upgraded {before or '(empty)'} -> {after}")


@db.command("current")
@pass_app
def db_current(app: App) -> None:
    """Show the database's schema revision and the one this litwatch needs.

    Exits 0 when they match, 2 when the database is missing, empty or behind (run
    ``litwatch db upgrade``), 1 when a newer litwatch migrated it. Nothing is created.

    \b
    Example:
      litwatch db current || litwatch db upgrade
    """
    from crawler.db.engine import describe_url
    from crawler.db.migrate import current_revision, head_revision, known_revision
    from crawler.settings_model import mask_url

    head = head_revision()
    url = app.settings.database.url
    if _sqlite_file_missing(url):  # opening it would create it
        click.echo(
            f"{mask_url(url)}: no database yet, code needs {head} (run `litwatch db upgrade`)"
        )
        sys.exit(EXIT_USAGE)
    engine = app.engine(schema=False)
    current = current_revision(engine)
    code = 0
    if current == head:
        state = "up to date"
    elif current is not None and not known_revision(current):
        state, code = "migrated by a newer litwatch: upgrade litwatch itself", EXIT_FAILURE
    else:
        state, code = "behind: run `litwatch db upgrade`", EXIT_USAGE
    click.echo(
        f"{describe_url(engine)}: revision {current or '(none)'}, code needs {head} ({state})"
    )
    sys.exit(code)


def _sqlite_file_missing(url: str) -> bool:
    """Whether ``url`` names a SQLite database file that does not exist."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return False  # the engine says what is wrong with it
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return False
    return not database.startswith("file:") and not Path(database).expanduser().exists()


COMMANDS = [db]
