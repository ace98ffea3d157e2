"""``litwatch crawl``: poll sources once, with a live display and a final table."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from typing import IO, TYPE_CHECKING

import click

from crawler.cli.context import EXIT_FAILURE, EXIT_USAGE, App, fail, pass_app

# Scrapy, Twisted and Rich's live display are imported when a crawl runs, not with the CLI.
if TYPE_CHECKING:
    from rich.table import Table

    from crawler.poll import SourceResult
    from crawler.settings import SourceSettings
    from spiders.base import LitwatchSpider


def _choose(app: App, ids: tuple[str, ...]) -> list[SourceSettings]:
    from crawler.settings import ConfigError

    if not ids:
        chosen = [s for s in app.settings.sources if s.enabled]
        if not chosen:
            fail("no enabled sources in the configuration", EXIT_USAGE)
        return chosen
    try:
        return [app.settings.source(i) for i in dict.fromkeys(ids)]
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def _live_table(spiders: list[LitwatchSpider]) -> Table:
    from rich.table import Table

    table = Table(title="Crawling", title_justify="left")
    for col in ("source", "requests", "items", "new", "merged", "skipped", "errors"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for sp in spiders:
        stats = sp.crawler.stats.get_stats() if sp.crawler.stats else {}
        r = sp.report
        table.add_row(
            sp.source.id,
            str(stats.get("downloader/request_count", 0)),
            str(r.items),
            str(r.new),
            str(r.merged),
            str(r.skipped),
            str(len(r.failures)),
        )
    return table


def result_table(results: list[SourceResult]) -> Table:
    from rich.table import Table

    table = Table(title="Crawl summary", title_justify="left")
    cols = (
        "source",
        "status",
        "requests",
        "304",
        "items",
        "new",
        "merged",
        "skipped",
        "errors",
        "time",
    )
    for col in cols:
        table.add_column(col, justify="left" if col in ("source", "status") else "right")
    for r in results:
        table.add_row(
            r.source_id,
            r.status,
            str(r.requests),
            str(r.not_modified),
            str(r.items),
            str(r.new),
            str(r.merged),
            str(r.skipped),
            str(r.errors),
            f"{r.seconds:.1f}s",
            style="red" if r.status == "failed" else None,
        )
    return table


@click.command()
@click.argument("source_ids", nargs=-1, metavar="[SOURCE_ID]...")
@click.option(
    "--dry-run", is_flag=True, help="Write items as JSON lines to stdout; touch no database."
)
@click.option(
    "-O",
    "--output",
    "output",
    type=click.File("w", encoding="utf-8"),
    metavar="FILE.jsonl",
    help="Write items as JSON lines to FILE; touch no database.",
)
@click.option("--trigger", type=click.Choice(["cli", "daemon"]), default="cli", hidden=True)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live display (default: when stderr is a terminal).",
)
@pass_app
def crawl(
    app: App,
    source_ids: tuple[str, ...],
    dry_run: bool,
    output: IO[str] | None,
    trigger: str,
    progress: bool | None,
) -> None:
    """Poll all enabled sources (or the ones named) once and store new papers.

    Exit status: 0 when every source succeeded, 1 when any failed (the table says which),
    2 for usage or configuration errors.

    \b
    Examples:
      litwatch crawl
      litwatch crawl pubmed-fibromyalgia sciencedaily-immune
      litwatch crawl journal-pain -O items.jsonl
    """
    from rich.live import Live

    from crawler.ingest.runner import run_crawl

    sources = _choose(app, source_ids)
    out = output or (sys.stdout if dry_run else None)
    engine = None if out is not None else app.engine()
    show = sys.stderr.isatty() if progress is None else progress
    with ExitStack() as stack:
        hook = None
        if show:
            # Transient: the live view is replaced by the final table, not left above it
            # with whatever counts its last refresh happened to show.
            live = stack.enter_context(
                Live(_live_table([]), console=app.err, refresh_per_second=4, transient=True)
            )
            hook = lambda spiders: live.update(_live_table(spiders))  # noqa: E731
        results = run_crawl(app.settings, engine, sources, out=out, trigger=trigger, progress=hook)
    console = app.err if out is sys.stdout else app.out
    console.print(result_table(results))
    # soft_wrap: one line per message, never a URL broken over two lines (issue 12 B8).
    for r in results:
        if r.error:
            style = "red" if r.status == "failed" else None
            console.print(f"{r.source_id}: {r.error}", style=style, markup=False, soft_wrap=True)
        for w in r.warnings[:5]:
            console.print(f"{r.source_id}: warning: {w}", markup=False, soft_wrap=True)
    shared = common_failure(results)
    if shared:
        console.print(shared, style="red", markup=False, soft_wrap=True)
    if any(r.status == "failed" for r in results):
        sys.exit(EXIT_FAILURE)


def common_failure(results: list[SourceResult]) -> str | None:
    """One sentence when every source failed for the same reason a machine can have as a
    whole (no DNS at all: offline), instead of leaving the operator to spot it in N lines."""
    from spiders.base import CANNOT_RESOLVE

    if len(results) < 2 or any(r.status != "failed" for r in results):
        return None
    if all(CANNOT_RESOLVE in (r.error or "") for r in results):
        return (
            f"every source failed: no host name could be resolved ({len(results)} sources). "
            "Is this machine offline, or its DNS down?"
        )
    return None


COMMANDS = [crawl]
