"""``litwatch digest ...``: preview and send the weekly digests."""

from __future__ import annotations

import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

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
    "--dry-run",
    is_flag=True,
    help="List who would get a digest now (address, papers); send and record nothing.",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Try the period's failed (refused) deliveries once more; plan nothing new.",
)
@click.option("--subscriber", "email", metavar="EMAIL", help="Only this subscriber.")
@pass_app
def digest_send(
    app: App, period_end: datetime | None, dry_run: bool, retry_failed: bool, email: str | None
) -> None:
    """Send each active subscriber's digest once (idempotent per subscriber and period).

    Safe to rerun at any time, including after a crash: what was sent is never sent again,
    what was not is sent now. A digest the server refused stays failed (and is reported as
    failed by every run of its period) until --retry-failed tries it once more. Exit status
    1 when any message was refused, deferred, or has an unknown outcome.

    \b
    Examples:
      litwatch digest send
      litwatch digest send --period-end 2026-11-30 --dry-run
      litwatch digest send --retry-failed
    """
    from digests.send import retry_failed as retry
    from digests.send import send_digests

    if dry_run and retry_failed:
        fail("--dry-run and --retry-failed cannot be combined", EXIT_USAGE)
    engine = app.engine()
    only = _only(engine, email)
    if retry_failed:
        report = retry(app.settings, engine, period_end=_period_end(period_end), only=only)
    else:
        report = send_digests(
            app.settings, engine, period_end=_period_end(period_end), dry_run=dry_run, only=only
        )
    _summary(report, dry_run)
    if report.fatal:
        fail(report.fatal)
    if not report.ok:
        sys.exit(EXIT_FAILURE)


def _only(engine: Any, email: str | None) -> str | None:
    """The case-folded address of ``--subscriber`` (exit 2 unless it is active)."""
    if not email:
        return None
    from crawler.db.engine import transaction
    from digests import subscribers as subs

    with transaction(engine) as session:
        try:
            sub = subs.find(session, email)
        except subs.SubscriberError as exc:
            fail(str(exc), EXIT_USAGE)
    if sub is None or sub.status != "active":
        fail(f"{email} is not an active subscriber", EXIT_USAGE)
    return str(sub.email_key)


def _summary(report: Any, dry_run: bool) -> None:
    """One summary line; a dry run lists each recipient; errors go to stderr."""
    count = len(report.would_send) if dry_run else report.sent
    verb = "would send" if dry_run else "sent"
    line = (
        f"digest: {count} {verb}, {report.pending} pending, {report.failed} failed, "
        f"{report.empty} with nothing new, {report.already} already sent"
    )
    if report.unknown:
        line += f", {report.unknown} with unknown outcome (not resent)"
    click.echo(line)
    for address, papers in report.would_send:
        click.echo(f"  {address}: {papers} paper{'' if papers == 1 else 's'}")
    for error in report.errors[:20]:
        click.echo(f"  {error}", err=True)


COMMANDS = [digest]
