"""``litwatch subscribers ...``: add, list, remove and import subscribers."""

from __future__ import annotations

import json
from typing import IO

import click

from crawler.cli.context import EXIT_USAGE, App, fail, pass_app

#: Digest formats (``digests.subscribers.FORMATS``; a test holds the two equal). Spelt here so
#: that ``--help`` needs no database code.
FORMATS = ("html", "text")


@click.group()
def subscribers() -> None:
    """Manage who receives the weekly digest.

    \b
    Example:
      litwatch subscribers add ada@example.org --topics fibromyalgia
    """


@subscribers.command("add")
@click.argument("email")
@click.option("--name", help="Name used in the greeting.")
@click.option(
    "--topics", default="", metavar="T1,T2", help="Comma-separated topics (default: all)."
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="html", show_default=True)
@click.option(
    "--timezone", "tz", default="UTC", show_default=True, help="IANA time zone, e.g. Europe/Oslo."
)
@click.option(
    "--exist-ok", is_flag=True, help="Succeed without changes when the address is subscribed."
)
@pass_app
def subscribers_add(
    app: App, email: str, name: str | None, topics: str, fmt: str, tz: str, exist_ok: bool
) -> None:
    """Add a subscriber (active at once: the operator vouches for the address).

    \b
    Example:
      litwatch subscribers add ada@example.org --name Ada --topics fibromyalgia,autoimmunity \\
          --format html --timezone Europe/Oslo
    """
    from crawler.db.engine import transaction
    from digests import subscribers as subs

    engine = app.engine()
    try:
        with transaction(engine) as session:
            existing = subs.find(session, email) if exist_ok else None
            if existing is not None:
                click.echo(
                    f"{existing.email} is already a subscriber ({existing.status}); unchanged"
                )
                return
            sub = subs.add(
                session,
                email,
                known_topics=list(app.settings.topics),
                name=name,
                topics=[t for t in topics.split(",") if t.strip()],
                fmt=fmt,
                timezone=tz,
            )
            click.echo(f"added {sub.email} ({', '.join(sub.topics)}; {sub.format}; {sub.timezone})")
    except subs.SubscriberError as exc:
        fail(str(exc), EXIT_USAGE)


@subscribers.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include pending and unsubscribed ones.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_app
def subscribers_list(app: App, show_all: bool, as_json: bool) -> None:
    """List subscribers (active ones unless --all).

    \b
    Example:
      litwatch subscribers list --all
    """
    from crawler.db.engine import transaction
    from digests import subscribers as subs

    engine = app.read_engine()
    with transaction(engine) as session:
        rows = subs.listing(session, active_only=not show_all)
    if as_json:
        for s in rows:
            click.echo(
                json.dumps(
                    {
                        "email": s.email,
                        "name": s.name,
                        "topics": s.topics,
                        "format": s.format,
                        "timezone": s.timezone,
                        "status": s.status,
                        "reason": s.suspended_reason if s.status == "suspended" else None,
                        "created_at": s.created_at.isoformat(),
                    },
                    ensure_ascii=False,
                )
            )
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} subscribers", title_justify="left")
    for col in ("email", "name", "topics", "format", "timezone", "status", "since"):
        table.add_column(col)
    for s in rows:
        table.add_row(
            s.email,
            s.name or "",
            ", ".join(s.topics),
            s.format,
            s.timezone,
            f"{s.status} ({s.suspended_reason})" if s.status == "suspended" else s.status,
            s.created_at.strftime("%Y-%m-%d"),
        )
    app.out.print(table)


@subscribers.command("remove")
@click.argument("email")
@click.option("--purge", is_flag=True, help="Delete the subscriber and their delivery history.")
@pass_app
def subscribers_remove(app: App, email: str, purge: bool) -> None:
    """Unsubscribe an address (kept as unsubscribed; --purge deletes it and its history).

    \b
    Example:
      litwatch subscribers remove ada@example.org
    """
    from crawler.db.engine import transaction
    from digests import subscribers as subs

    engine = app.engine()
    try:
        with transaction(engine) as session:
            outcome = subs.remove(session, email, purge=purge)
    except subs.SubscriberError as exc:
        fail(str(exc), EXIT_USAGE)
    if outcome is None:
        fail(f"{email} is not a subscriber")
    click.echo(outcome)


@subscribers.command("reactivate")
@click.argument("email")
@pass_app
def subscribers_reactivate(app: App, email: str) -> None:
    """Send the digest again to an address suspended after bounces (the reason is cleared).

    \b
    Example:
      litwatch subscribers reactivate ada@example.org
    """
    from crawler.db.engine import transaction
    from digests import subscribers as subs

    engine = app.engine()
    try:
        with transaction(engine) as session:
            outcome = subs.reactivate(session, email)
    except subs.SubscriberError as exc:
        fail(str(exc), EXIT_USAGE)
    if outcome is None:
        fail(f"{email} is not a subscriber")
    click.echo(outcome)


@subscribers.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8-sig"))
@pass_app
def subscribers_import(app: App, file: IO[str]) -> None:
    """Add or update subscribers from a CSV file (idempotent; bad rows are reported).

    The header row names the columns: email (required), name, topics (separated by ";"),
    format (html or text), timezone. Unsubscribed addresses are never re-activated.

    \b
    Example:
      litwatch subscribers import clinic.csv
    """
    from crawler.db.engine import transaction
    from digests import subscribers as subs

    engine = app.engine()
    try:
        with transaction(engine) as session:
            report = subs.import_csv(session, file, known_topics=list(app.settings.topics))
    except subs.SubscriberError as exc:
        fail(f"{file.name}: {exc}", EXIT_USAGE)
    click.echo(
        f"{file.name}: {len(report.added)} added, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged, {len(report.skipped)} skipped, "
        f"{len(report.rejected)} rejected"
    )
    for line, reason in report.skipped:
        click.echo(f"  line {line}: skipped: {reason}", err=True)
    for line, reason in report.rejected:
        click.echo(f"  line {line}: rejected: {reason}", err=True)
    if report.rejected:
        raise SystemExit(1)


COMMANDS = [subscribers]
