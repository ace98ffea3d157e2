"""``litwatch digest ...``: preview and send the weekly digests."""

from __future__ import annotations

import sys
from datetime import date, datetime
from pathlib import Path

import click

from crawler.cli.context import EXIT_FAILURE, EXIT_USAGE, App, fail, pass_app


def _period_end(value: datetime | None) -> date | None:
    return value.date() if value else None


@click.group()
def digest() -> None:
    """Preview and send the weekly digests.

    \b
    Example:
      litwatch digest preview --out preview.html && litwatch digest send
    """


@digest.command("preview")
@click.option(
    "--subscriber",
    "email",
    metavar="EMAIL",
    help="Whose digest (default: all topics, no one's history).",
)
@click.option(
    "--period-end", type=click.DateTime(["%Y-%m-%d"]), help="Digest as of the start of DATE."
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the HTML part here.",
)
@click.option("--text", "as_text", is_flag=True, help="Print the plain-text part instead of HTML.")
@pass_app
def digest_preview(
    app: App, email: str | None, period_end: datetime | None, out: Path | None, as_text: bool
) -> None:
    """Render a digest without sending or recording anything.

    \b
    Examples:
      litwatch digest preview --text
      litwatch digest preview --subscriber ada@example.org --period-end 2026-11-30 --out ada.html
    """
    from digests.preview import PreviewError, preview

    try:
        shown = preview(
            app.settings,
            app.engine(),
            email=email,
            period_end=_period_end(period_end),
            as_text=as_text,
        )
    except PreviewError as exc:
        fail(str(exc), EXIT_USAGE)
    if out is not None:
        out.write_text(shown.body, encoding="utf-8")
        click.echo(f"wrote {out} ({shown.papers} papers; subject: {shown.subject})", err=True)
        return
    click.echo(shown.body, nl=shown.is_html)
    if not as_text:
        click.echo(f"{shown.papers} papers; subject: {shown.subject}", err=True)


@digest.command("send")
@click.option(
    "--period-end",
    type=click.DateTime(["%Y-%m-%d"]),
    help="Send the digest as of the start of DATE.",
)
@click.option(
    "--dry-run", is_flag=True, help="Say who would get a digest; send and record nothing."
)
@click.option("--subscriber", "email", metavar="EMAIL", help="Only this subscriber.")
@pass_app
def digest_send(app: App, period_end: datetime | None, dry_run: bool, email: str | None) -> None:
    """Send each active subscriber's digest once (idempotent per subscriber and period).

    Safe to rerun at any time, including after a crash: what was sent is never sent again,
    what was not is sent now. Exit status 1 when any message was refused or deferred.

    \b
    Examples:
      litwatch digest send
      litwatch digest send --period-end 2026-11-30 --dry-run
    """
    from crawler.db.engine import transaction
    from digests import subscribers as subs
    from digests.send import send_digests

    engine = app.engine()
    only = None
    if email:
        with transaction(engine) as session:
            try:
                sub = subs.find(session, email)
            except subs.SubscriberError as exc:
                fail(str(exc), EXIT_USAGE)
        if sub is None or sub.status != "active":
            fail(f"{email} is not an active subscriber", EXIT_USAGE)
        only = sub.email_key
    report = send_digests(
        app.settings, engine, period_end=_period_end(period_end), dry_run=dry_run, only=only
    )
    verb = "would send" if dry_run else "sent"
    click.echo(
        f"digest: {report.sent if not dry_run else report.pending} {verb}, "
        f"{report.pending if not dry_run else 0} pending, {report.failed} failed, "
        f"{report.empty} with nothing new, {report.already} already sent"
    )
    for line in report.errors[:20]:
        click.echo(f"  {line}", err=True)
    if report.fatal:
        fail(report.fatal)
    if not report.ok:
        sys.exit(EXIT_FAILURE)


COMMANDS = [digest]
