"""``litwatch db upgrade`` and ``litwatch db current``: the schema."""

from __future__ import annotations

import click

from crawler.cli.context import App, pass_app


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

    \b
    Example:
      litwatch db current
    """
    from crawler.db.engine import describe_url
    from crawler.db.migrate import current_revision, head_revision, known_revision

    engine = app.engine(schema=False)
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        state = "up to date"
    elif current is not None and not known_revision(current):
        state = "migrated by a newer litwatch: upgrade litwatch itself"
    else:
        state = "behind: run `litwatch db upgrade`"
    click.echo(
        f"{describe_url(engine)}: revision {current or '(none)'}, code needs {head} ({state})"
    )


COMMANDS = [db]
