"""``litwatch run``: the daemon."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from crawler.cli.context import EXIT_FAILURE, EXIT_USAGE, App, fail, pass_app

if TYPE_CHECKING:
    from crawler.daemon.scheduler import Daemon


@click.command()
@click.option(
    "--standby",
    is_flag=True,
    help="If another daemon holds the database, wait and take over when it stops.",
)
@click.option(
    "--web", "with_web", is_flag=True, help="Also serve the subscriber web pages ([web] host/port)."
)
# Test hook, hidden from --help: the configured [digest] cron stays a validated 5-field
# crontab; end-to-end tests replace it with a seconds-resolution schedule here.
@click.option("--test-digest-cron", metavar="S M H DOM MON DOW", hidden=True)
@pass_app
def run(app: App, standby: bool, with_web: bool, test_digest_cron: str | None) -> None:
    """Run the daemon: crawl each source on its interval and send the digest on its schedule.

    One daemon per database; stop it with SIGTERM or Ctrl-C (it exits 0 after finishing the
    message or crawl in progress). Logs go to stderr, one key=value line per event. A daemon
    that loses its database lock and cannot take it back exits 75: let systemd or the
    container engine restart it.

    \b
    Examples:
      litwatch run
      litwatch --log-level debug --config /etc/litwatch/litwatch.toml run --standby
    """
    # Imported here, not with the module: every litwatch command loads this one.
    from crawler.daemon.scheduler import Daemon, DaemonBusy
    from crawler.schedule import seconds_trigger

    digest = None
    if test_digest_cron is not None:
        try:
            digest = seconds_trigger(test_digest_cron, app.settings.digest.timezone)
        except ValueError as exc:
            fail(f"--test-digest-cron: {exc}", EXIT_USAGE)
    engine = app.engine()
    daemon = Daemon(app.settings, engine, app.config_path, log_level=app.log_level, digest=digest)
    if with_web:
        daemon.services.append(_web_service(app, daemon))
    try:
        code = daemon.run(standby=standby)
    except DaemonBusy as exc:
        fail(f"{exc}; use --standby to wait for it", EXIT_FAILURE)
    except OSError as exc:  # e.g. --web and its port is taken (the daemon has stopped by now)
        fail(str(exc), EXIT_FAILURE)
    if daemon.exit_reason:  # stopped on its own: one line, and a status asking for a restart
        fail(f"daemon stopped: {daemon.exit_reason}", code)
    sys.exit(code)


def _web_service(app: App, daemon: Daemon) -> Callable[[], threading.Thread]:
    """The web pages' starter, checked now (a missing piece is a usage error before the
    daemon starts) and run by the daemon once it holds the database."""
    try:
        from crawler.daemon.web import start_web_thread
    except ImportError:
        fail("--web: the subscriber web pages are not part of this installation", EXIT_USAGE)
    return lambda: start_web_thread(app.settings, daemon.engine, daemon.stop)


COMMANDS = [run]
