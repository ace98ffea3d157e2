"""``litwatch run``: the daemon."""

from __future__ import annotations

import sys

import click

from crawler.cli.app import EXIT_FAILURE, App, fail, pass_app
from crawler.daemon import Daemon, DaemonBusy


@click.command()
@click.option(
    "--standby",
    is_flag=True,
    help="If another daemon holds the database, wait and take over when it stops.",
)
@click.option(
    "--web", "with_web", is_flag=True, help="Also serve the subscriber web pages ([web] host/port)."
)
@pass_app
def run(app: App, standby: bool, with_web: bool) -> None:
    """Run the daemon: crawl each source on its interval and send the digest on its schedule.

    One daemon per database; stop it with SIGTERM or Ctrl-C (it exits 0 after finishing the
    message or crawl in progress).

    \\b
    Examples:
      litwatch run
      litwatch --config /etc/litwatch/litwatch.toml run --standby
    """
    engine = app.engine()
    daemon = Daemon(app.settings, engine, app.config_path)
    if with_web:
        from crawler.web_thread import start_web_thread

        daemon.extra_threads.append(start_web_thread(app.settings, engine, daemon.stop))
    try:
        code = daemon.run(standby=standby)
    except DaemonBusy as exc:
        fail(f"{exc}; use --standby to wait for it", EXIT_FAILURE)
    sys.exit(code)


COMMANDS = [run]
