"""``litwatch email dkim-record``: what to publish in DNS for the configured DKIM key."""

from __future__ import annotations

import click

from crawler.cli.context import EXIT_USAGE, App, fail, pass_app


@click.group()
def email() -> None:
    """Mail set-up: DKIM ([email.dkim]).

    \b
    Example:
      litwatch email dkim-record
    """


@email.command("dkim-record")
@pass_app
def email_dkim_record(app: App) -> None:
    """Print the DNS TXT record for [email.dkim] (selector, domain and the key's public half).

    \b
    Example:
      litwatch email dkim-record >> zone.txt
    """
    from digests.dkim_sign import DkimError, dns_record, load_private_key

    dkim = app.settings.email.dkim
    if not (dkim.domain and dkim.selector and dkim.key_file):
        fail("[email.dkim] needs domain, selector and key_file", EXIT_USAGE)
    try:
        click.echo(dns_record(dkim.selector, dkim.domain, load_private_key(dkim.key_file)))
    except DkimError as exc:
        fail(str(exc), EXIT_USAGE)


COMMANDS = [email]
