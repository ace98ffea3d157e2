"""``litwatch status``: sources' health, the database, subscribers, deliveries, the daemon."""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime
from typing import Any

import click

from crawler.cli.context import EXIT_FAILURE, App, pass_app


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--check",
    is_flag=True,
    help="For cron and monitoring: one line per problem and exit 1, or one OK line.",
)
@click.option(
    "--failed-polls",
    type=click.IntRange(min=1),
    metavar="N",
    help="With --check: a source failing its last N polls is a problem "
    "(default: [status] failed_polls, 3).",
)
@pass_app
def status(app: App, as_json: bool, check: bool, failed_polls: int | None) -> None:
    """Show sources and their health, what the database holds, and the daemon.

    Also shows the bounce and complaint rates of the last 30 days, with a warning when one
    is above [status] max_bounce_percent (2) or max_complaint_percent (0.1).

    With --check, exit 1 when a source failed its last N polls, the daemon ran here but is
    not running now, digests of the latest run failed, have an unknown outcome or keep
    being deferred, or a rate is above its threshold (one line each); otherwise print one
    OK line and exit 0.

    \b
    Examples:
      litwatch status --json | jq .sources
      litwatch status --check --failed-polls 5 || mail -s litwatch ops@example.org
    """
    from crawler.db.reader import lock_held
    from crawler.db.status import collect_status
    from crawler.locks import DAEMON_LOCK

    with app.reader() as reader:
        data = collect_status(app.settings, reader, lock_held(reader, DAEMON_LOCK))
    if check:
        _check(data, failed_polls or app.settings.status.failed_polls)
    elif as_json:
        click.echo(json.dumps(data, indent=2, default=_json_default))
    else:
        _print_status(app, data)


def _check(data: dict[str, Any], failed_polls: int) -> None:
    from crawler.db.status import problems

    found = problems(data, failed_polls)
    for line in found:
        click.echo(line)
    if found:
        sys.exit(EXIT_FAILURE)
    enabled = sum(s["enabled"] and s["configured"] for s in data["sources"])
    daemon = "daemon running" if data["daemon"]["running"] else "no daemon expected"
    click.echo(
        f"OK: {enabled} sources polling, {daemon}, no failing deliveries, "
        "bounce and complaint rates within limits"
    )


def _json_default(v: Any) -> str:
    if isinstance(v, date):  # datetimes too
        return v.isoformat()
    raise TypeError(type(v).__name__)


def deliveries_text(counts: dict[str, int]) -> str:
    """``10 sent, 1 pending, 0 failed, 0 with unknown outcome`` (other states when present)."""
    labels = {"unknown": "with unknown outcome"}
    return ", ".join(f"{n} {labels.get(state, state)}" for state, n in counts.items())


def _when(v: datetime | None) -> str:
    return v.strftime("%Y-%m-%d %H:%M") if v else "-"


def _print_status(app: App, data: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="Sources", title_justify="left")
    for col in ("source", "kind", "enabled", "last success", "fails", "runs", "new", "last error"):
        table.add_column(col)
    for s in data["sources"]:
        table.add_row(
            s["id"],
            s["kind"],
            "yes" if s["enabled"] else "no",
            _when(s["last_success"]),
            str(s["consecutive_failures"]),
            str(s["runs"]),
            str(s["items_new"]),
            (s["last_error"] or "")[:60],
            style="red" if s["consecutive_failures"] else None,
        )
    app.out.print(table)
    db = data["database"]
    topics = ", ".join(f"{k} {v}" for k, v in sorted(db["by_topic"].items())) or "none"
    app.out.print(
        f"Database {db['url']}: {db['papers']} papers ({db['with_doi']} with DOI), "
        f"{db['sightings']} sightings; by topic: {topics}; newest {_when(db['newest'])}"
    )
    subs = data["subscribers"]
    app.out.print(
        f"Subscribers: {subs['active']} active, {subs['pending']} pending, "
        f"{subs['unsubscribed']} unsubscribed. Deliveries: {deliveries_text(data['deliveries'])}"
    )
    watch = data["watch"]
    if watch["state"] == "never":
        app.out.print("Lifecycle watch: never run (litwatch watch)", markup=False)
    else:
        app.out.print(
            f"Lifecycle watch: {watch['state']}, last run {(watch['finished_at'] or '-')[:16]}: "
            f"{watch['checked']} checked, {watch['events_new']} new events, "
            f"{len(watch['failures'])} failures",
            markup=False,
        )
    _print_deliverability(app, data["deliverability"])
    _print_daemon(app, data["daemon"])


def deliverability_text(d: dict[str, Any]) -> str:
    """``Deliverability (last 30 days): 400 sent, 3 bounces (0.8%), 0 complaints (0.00%)``."""

    def rate(percent: float | None, digits: int) -> str:
        return "-" if percent is None else f"{percent:.{digits}f}%"

    return (
        f"Deliverability (last {d['days']} days): {d['sent']} sent, "
        f"{d['bounces']} bounces ({rate(d['bounce_percent'], 1)}), "
        f"{d['complaints']} complaints ({rate(d['complaint_percent'], 2)})"
    )


def _print_deliverability(app: App, d: dict[str, Any]) -> None:
    app.out.print(deliverability_text(d), markup=False)
    for line in d["warnings"]:
        app.out.print(f"Warning: {line}", style="bold red", markup=False)


def _utc(v: datetime | None) -> str:
    return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if v else "-"


def _print_daemon(app: App, daemon: dict[str, Any]) -> None:
    where = f"pid {daemon.get('pid')} on {daemon.get('host')}"
    state = daemon["state"]
    if state == "running":
        line = f"running since {_utc(daemon.get('started_at'))} ({where})"
    elif state == "stopped":
        line = f"not running (stopped {_utc(daemon.get('stopped_at'))}; was {where})"
    elif state == "died":
        line = (
            f"not running ({where} ended without a clean stop; "
            f"last heartbeat {_utc(daemon.get('heartbeat'))})"
        )
    else:
        line = "not running (never started on this database)"
    app.out.print(f"Daemon: {line}", markup=False)
    if not daemon["jobs"]:
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Daemon jobs", title_justify="left")
    for col in ("job", "next run", "last run", "last result"):
        table.add_column(col)
    for job in daemon["jobs"]:
        table.add_row(
            job["id"],
            _utc(job.get("next_run")),
            _utc(job.get("last_run")),
            escape(job.get("last_result") or "-"),  # results quote errors: "[" is text
        )
    app.out.print(table)


COMMANDS = [status]
