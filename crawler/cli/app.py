"""The root command group: its options, and the command modules it gathers."""

from __future__ import annotations

from typing import Any

import click

from crawler import __version__
from crawler.cli import (
    bounces_cmds,
    config_cmds,
    crawl_cmds,
    daemon_cmds,
    db_cmds,
    digest_cmds,
    email_cmds,
    papers_cmds,
    status_cmds,
    subscriber_cmds,
    watch_cmds,
    web_cmds,
)
from crawler.cli.context import App, domain_error, fail

#: In the order ``litwatch --help`` lists them.
MODULES = (
    db_cmds,
    config_cmds,
    status_cmds,
    crawl_cmds,
    watch_cmds,
    papers_cmds,
    subscriber_cmds,
    digest_cmds,
    bounces_cmds,
    email_cmds,
    daemon_cmds,
    web_cmds,
)


class Group(click.Group):
    """Commands listed in the order they were added; domain errors become one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = domain_error(ctx, exc)
            if message is None:
                raise
            fail(message)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    envvar="LITWATCH_CONFIG",
    help="TOML configuration file (default: built-in defaults; env LITWATCH_CONFIG).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level for this command (default: [daemon] log_level).",
)
@click.version_option(__version__, prog_name="litwatch")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str | None) -> None:
    """Monitor the literature on fibromyalgia and autoimmunity; e-mail weekly digests.

    \b
    Example:
      litwatch crawl && litwatch digest send
    """
    ctx.obj = App(config_path, log_level)


for _module in MODULES:
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli(prog_name="litwatch")
