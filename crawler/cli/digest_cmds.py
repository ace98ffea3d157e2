"""``litwatch digest ...``: preview and send the weekly digests."""

from __future__ import annotations

import sys
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from sqlalchemy.orm import Session

from crawler.cli.app import EXIT_FAILURE, EXIT_USAGE, App, fail, pass_app
from crawler.db.engine import transaction
from crawler.db.models import Subscriber, utcnow

# The digests package (Jinja2, e-mail validation, SMTP) is imported by the commands that use
# it, not with this module: every litwatch command, a crawl too, loads this one.
if TYPE_CHECKING:
    from digests.compose import Personal
    from digests.tokens import Signer


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
    from digests import select as sel
    from digests.render import render
    from digests.send import make_composer
    from digests.tokens import signer_for

    settings = app.settings
    engine = app.engine()
    composer = make_composer(settings)
    now = utcnow()
    # Signing needs the installation key, which the first use may create in its own
    # transaction: get it before opening ours (SQLite allows one writer at a time).
    signer = signer_for(engine) if email else None
    with transaction(engine) as session:
        sub, personal = _preview_target(app, session, email, signer)
        tz = sub.timezone
        cutoff = sel.cutoff_for(tz, period_end=_period_end(period_end), now=now)
        ids = sel.select_paper_ids(session, sub, cutoff, settings.digest.first_lookback)
        entries = sel.entries_for(session, ids)
        topics, fmt = list(sub.topics), sub.format
    period = sel.period_of(cutoff, tz)
    rendered = render(
        composer.digest(entries, topics, period, "html" if not as_text else fmt, personal)
    )
    body = rendered.text if as_text or rendered.html is None else rendered.html
    if out is not None:
        out.write_text(body, encoding="utf-8")
    else:
        click.echo(body, nl=body is rendered.html)
    if out is not None:
        click.echo(f"wrote {out} ({len(ids)} papers; subject: {rendered.subject})", err=True)
    elif not as_text:
        click.echo(f"{len(ids)} papers; subject: {rendered.subject}", err=True)


def _preview_target(
    app: App, session: Session, email: str | None, signer: Signer | None
) -> tuple[Subscriber, Personal]:
    """The subscriber to preview for (an unsaved stand-in for everyone) and their links."""
    from digests import subscribers as subs
    from digests.compose import Personal
    from digests.send import Links

    settings = app.settings
    if email and signer is not None:
        try:
            sub = subs.find(session, email)
        except subs.SubscriberError as exc:
            fail(str(exc), EXIT_USAGE)
        if sub is None:
            fail(f"{email} is not a subscriber", EXIT_USAGE)
        return sub, Links(settings, signer).personal(sub)
    # Not added to the session: id 0 has no history, so nothing counts as sent before.
    stand_in = Subscriber(
        id=0,
        topics=list(settings.topics),
        timezone=settings.digest.timezone,
        format="html",
        status="active",
    )
    base = settings.web.base_url
    personal = Personal(
        None, "preview@example.invalid", f"{base}/u/preview", f"{base}/preferences/preview"
    )
    return stand_in, personal


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
