"""``litwatch status``: sources' health, the database, subscribers, deliveries, the daemon."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from crawler.cli.context import App, pass_app


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def status(app: App, as_json: bool) -> None:
    """Show sources and their health, what the database holds, and the daemon.

    \b
    Example:
      litwatch status --json | jq .sources
    """
    from crawler.db.reader import lock_held
    from crawler.db.status import collect_status
    from crawler.locks import DAEMON_LOCK

    with app.reader() as reader:
        data = collect_status(app.settings, reader, lock_held(reader, DAEMON_LOCK))
    if as_json:
        click.echo(json.dumps(data, indent=2, default=_json_default))
        return
    _print_status(app, data)


def _json_default(v: Any) -> str:
    if isinstance(v, datetime):
        return v.isoformat()
    raise TypeError(type(v).__name__)


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
        f"{subs['unsubscribed']} unsubscribed. Deliveries: {data['deliveries']}"
    )
    _print_daemon(app, data["daemon"])


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
