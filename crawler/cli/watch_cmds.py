"""``litwatch watch``: re-check the papers already sent for retractions, corrections, updates."""

from __future__ import annotations

import click

from crawler.cli.context import EXIT_FAILURE, App, fail, pass_app


@click.command()
@click.option(
    "--all",
    "all_papers",
    flag_value=True,
    default=None,
    help="Watch every paper in the database, not only those sent ([lifecycle] all_papers).",
)
@pass_app
def watch(app: App, all_papers: bool | None) -> None:
    """Re-check papers sent in the last [lifecycle] watch_months for what happened since.

    Asks PubMed for the watched records by PMID and Crossref for the notices indexed since the
    last check; stores each retraction, expression of concern, correction or update once. An
    interrupted watch resumes where it stopped. Exit status: 0 when everything was checked,
    1 when part of it failed (the lines say what), 2 for usage errors.

    \b
    Examples:
      litwatch watch
      litwatch watch --all
    """
    from crawler.ingest.watch import WatchBusy, run_watch

    engine = app.engine()
    try:
        report = run_watch(app.settings, engine, all_papers=all_papers)
    except WatchBusy as exc:
        fail(str(exc), EXIT_FAILURE)
    resumed = " (resumed an interrupted watch)" if report.resumed else ""
    click.echo(
        f"watch: {report.watched} papers watched, {report.checked} records and notices checked, "
        f"{report.events_new} new events, {report.requests} requests{resumed}"
    )
    for line in report.failures[:20]:
        click.echo(f"  {line}", err=True)
    if not report.ok:
        raise SystemExit(EXIT_FAILURE)


COMMANDS = [watch]
