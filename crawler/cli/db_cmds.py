"""``litwatch db ...``, ``litwatch config show`` and ``litwatch status``."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from crawler.cli.app import App, pass_app
from crawler.db.engine import describe_url, transaction
from crawler.db.migrate import current_revision, head_revision, known_revision, upgrade
from crawler.status import collect_status


@click.group()
def db() -> None:
    """Database schema: create or migrate it.

    \b
    Example:
      litwatch db upgrade
    """


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@pass_app
def db_upgrade(app: App, revision: str) -> None:
    """Create the schema or migrate it to the latest revision.

    \b
    Example:
      LITWATCH_DATABASE_URL=postgresql+psycopg://litwatch@db/litwatch litwatch db upgrade
    """
    engine = app.engine(schema=False)
    before, after = upgrade(engine, revision)
    if before == after:
        click.echo(f"{describe_url(engine)}: already at revision {after}")
    else:
        click.echo(f"{describe_url(engine)}: upgraded {before or '(empty)'} -> {after}")


@db.command("current")
@pass_app
def db_current(app: App) -> None:
    """Show the database's schema revision and the one this litwatch needs.

    \b
    Example:
      litwatch db current
    """
    engine = app.engine(schema=False)
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        state = "up to date"
    elif current is not None and not known_revision(current):
        state = "migrated by a newer litwatch: upgrade litwatch itself"
    else:
        state = "behind: run `litwatch db upgrade`"
    click.echo(
        f"{describe_url(engine)}: revision {current or '(none)'}, code needs {head} ({state})"
    )


@click.group()
def config() -> None:
    """Inspect the effective configuration.

    \b
    Example:
      litwatch --config site.toml config show
    """


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML-like text.")
@pass_app
def config_show(app: App, as_json: bool) -> None:
    """Print the effective configuration (defaults + file + environment), secrets masked.

    \b
    Example:
      litwatch config show --json
    """
    data = app.settings.redacted()
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    click.echo(_toml(data))


def _toml(data: dict[str, Any]) -> str:
    lines: list[str] = []

    def value(v: Any) -> str:
        return json.dumps(v, ensure_ascii=False)

    def section(prefix: str, table: dict[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and not _is_tables(v)}
        if scalars and prefix:
            lines.append(f"\n[{prefix}]")
        for key, v in scalars.items():
            if v is not None:
                lines.append(f"{_key(key)} = {value(v)}")
        for key, v in table.items():
            name = f"{prefix}.{_key(key)}" if prefix else _key(key)
            if isinstance(v, dict):
                section(name, v)
            elif _is_tables(v):
                for item in v:
                    lines.append(f"\n[[{name}]]")
                    lines.extend(
                        f"{_key(k)} = {value(x)}" for k, x in item.items() if x is not None
                    )

    section("", data)
    text = "\n".join(lines).strip() + "\n"
    tomllib.loads(text)  # what we print must itself be valid TOML
    return text


def _is_tables(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def status(app: App, as_json: bool) -> None:
    """Show sources and their health, what the database holds, and the daemon.

    \b
    Example:
      litwatch status --json | jq .sources
    """
    engine = app.engine()
    with transaction(engine) as session:
        data = collect_status(app.settings, engine, session)
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


COMMANDS = [db, config, status]
