"""``litwatch config show``: the effective configuration."""

from __future__ import annotations

import json
from typing import Any

import click

from crawler.cli.context import App, pass_app


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

    import tomllib

    section("", data)
    text = "\n".join(lines).strip() + "\n"
    tomllib.loads(text)  # what we print must itself be valid TOML
    return text


def _is_tables(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


COMMANDS = [config]
