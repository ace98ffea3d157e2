"""``litwatch bounces process``: read returned mail, suspend dead addresses, honour complaints."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from crawler.cli.context import EXIT_FAILURE, EXIT_USAGE, App, fail, pass_app

if TYPE_CHECKING:
    from crawler.settings_model import BounceSettings

Reader = Callable[[], Iterator[bytes]]


@click.group()
def bounces() -> None:
    """Bounces and complaints ([email.bounces]).

    \b
    Example:
      litwatch bounces process --maildir /var/mail/litwatch-bounces
    """


@bounces.command("process")
@click.option("--maildir", type=click.Path(file_okay=False, path_type=Path), help="A Maildir.")
@click.option("--mbox", type=click.Path(dir_okay=False, path_type=Path), help="An mbox file.")
@pass_app
def bounces_process(app: App, maildir: Path | None, mbox: Path | None) -> None:
    """Process bounce and complaint mail once (the configured mailboxes, or the one given).

    Hard bounces suspend an address, soft ones after [email.bounces] soft_limit within
    soft_window, a complaint unsubscribes. Every decision is recorded; a message processed
    before is never counted again; nothing is deleted from the mailbox.

    \b
    Examples:
      litwatch bounces process
      litwatch bounces process --mbox bounces.mbox
    """
    from digests import mailboxes
    from digests.bounces import process
    from digests.tokens import secret_key

    policy = app.settings.email.bounces
    sources = _sources(policy, maildir, mbox)
    if not sources:
        fail("no mailbox: set [email.bounces] maildir, mbox or imap_host, or give --maildir "
             "or --mbox", EXIT_USAGE)  # fmt: skip
    engine = app.engine()
    secret = secret_key(engine).encode()
    failed = False
    for name, reader in sources:
        try:
            summary = process(engine, policy, secret, reader(), name)
        except mailboxes.MailboxError as exc:
            click.echo(f"litwatch: {exc}", err=True)
            failed = True
            continue
        click.echo(f"{name}: {summary.line()}")
    if failed:
        raise SystemExit(EXIT_FAILURE)


def _sources(
    policy: BounceSettings, maildir: Path | None, mbox: Path | None
) -> list[tuple[str, Reader]]:
    """The mailboxes to read: those given on the command line, else the configured ones."""
    from digests import mailboxes

    given: list[tuple[str, Reader]] = []
    if maildir:
        given.append(("maildir", lambda: mailboxes.iter_maildir(maildir)))
    if mbox:
        given.append(("mbox", lambda: mailboxes.iter_mbox(mbox)))
    if given:
        return given
    if policy.maildir:
        given.append(("maildir", lambda: mailboxes.iter_maildir(policy.maildir)))
    if policy.mbox:
        given.append(("mbox", lambda: mailboxes.iter_mbox(policy.mbox)))
    if policy.imap_host:
        given.append(("imap", lambda: mailboxes.iter_imap(
            policy.imap_host, policy.imap_port, policy.imap_user, policy.imap_folder,
            ca_file=policy.imap_ca_file,
        )))  # fmt: skip
    return given


COMMANDS = [bounces]
