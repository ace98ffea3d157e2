"""``litwatch papers ...``: list, show and export stored papers."""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, date, datetime, time

import click

from crawler.cli.context import EXIT_USAGE, App, fail, pass_app

#: Export formats (``crawler.export.FORMATS``; a test holds the two equal). Spelt here so that
#: the CLI starts without the export package.
FORMATS = ("jsonl", "csv", "ris", "bibtex")


def _since(value: date | None) -> datetime | None:
    return datetime.combine(value, time(0), tzinfo=UTC) if value else None


def _filters(func: click.decorators.FC) -> click.decorators.FC:
    for opt in reversed(
        [
            click.option(
                "--since",
                type=click.DateTime(["%Y-%m-%d"]),
                help="First seen on or after DATE (UTC).",
            ),
            click.option("--topic", help="Only papers tagged with this topic."),
            click.option(
                "--source", "source_id", metavar="ID", help="Only papers seen at this source."
            ),
        ]
    ):
        func = opt(func)
    return func


def _check_topic(app: App, topic: str | None) -> None:
    if topic and topic not in app.settings.topics:
        fail(f"unknown topic {topic!r} (known: {', '.join(app.settings.topics)})", EXIT_USAGE)


@click.group()
def papers() -> None:
    """Browse and export the papers litwatch has found.

    \b
    Example:
      litwatch papers list --topic fibromyalgia --since 2026-01-01
    """


#: Paper statuses, gravest first (crawler.events.GRAVITY; a test holds the two equal).
STATUSES = ("retracted", "withdrawn", "concern", "corrected", "updated", "current")


@papers.command("list")
@_filters
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    help="Only papers whose gravest event is this (current: none).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Newest N papers."
)
@pass_app
def papers_list(
    app: App,
    since: datetime | None,
    topic: str | None,
    source_id: str | None,
    status: str | None,
    limit: int,
) -> None:
    """List stored papers, newest first, with what happened to them (Retracted, Corrected...).

    \b
    Examples:
      litwatch papers list --since 2026-11-01 --source pubmed-fibromyalgia
      litwatch papers list --status retracted
    """
    from rich.table import Table

    from crawler.db.listing import newest

    _check_topic(app, topic)
    with app.reader() as reader:
        rows = newest(
            reader, since=_since(since), topic=topic, source=source_id, status=status, limit=limit
        )
    from crawler.events import label_of

    table = Table(title=f"{len(rows)} papers", title_justify="left")
    for col in ("first seen", "id", "doi / pmid", "title", "topics", "status"):
        table.add_column(col, overflow="fold")
    for p in rows:
        table.add_row(
            p.first_seen.strftime("%Y-%m-%d"),
            f"#{p.id}",
            p.doi or (f"PMID {p.pmid}" if p.pmid else "-"),
            (p.title or "(untitled)")[:120],
            ", ".join(p.topics),
            label_of(p.status),
            style="red" if p.status == "retracted" else None,
        )
    app.out.print(table)


@papers.command("show")
@click.argument("ident", metavar="DOI_OR_PMID")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@pass_app
def papers_show(app: App, ident: str, as_json: bool) -> None:
    """Show one paper with every place it was seen (DOI in any spelling, PMID, PMCID or #id).

    \b
    Example:
      litwatch papers show https://doi.org/10.1172/JCI144201
    """
    from crawler.db.engine import transaction
    from crawler.db.events import events_of
    from crawler.db.queries import find_paper, record, sightings_of, topics_of
    from crawler.db.versions import links_of
    from crawler.events import label_of

    engine = app.read_engine()
    with transaction(engine) as session:
        paper = find_paper(session, ident)
        if paper is None:
            fail(f"no paper matches {ident!r}")
        rec = record(
            paper,
            topics_of(session, [paper.id])[paper.id],
            sightings_of(session, [paper.id])[paper.id],
            events_of(session, [paper.id])[paper.id],
            links_of(session, [paper.id]).get(paper.id, []),
        )
    if as_json:
        click.echo(json.dumps(rec, ensure_ascii=False, indent=2))
        return
    out = app.out
    out.print(f"[bold]{_esc(rec['title'] or '(untitled)')}[/bold]")
    if rec["status"] != "current":
        out.print(f"[bold red]{label_of(rec['status'])}[/bold red]")
    for label, key in (
        ("DOI", "doi"),
        ("PMID", "pmid"),
        ("PMCID", "pmcid"),
        ("Journal", "journal"),
        ("Published", "published"),
        ("First seen", "first_seen"),
    ):
        if rec[key]:
            out.print(f"{label}: {rec[key]}", markup=False)
    for label, key in (
        ("Authors", "authors"),
        ("Topics", "topics"),
        ("Types", "publication_types"),
    ):
        if rec[key]:
            out.print(f"{label}: {', '.join(rec[key])}", markup=False)
    if rec["abstract"]:
        out.print("\n" + rec["abstract"], markup=False)
    for event in rec["events"]:
        notice = (
            event["notice_doi"]
            or (f"PMID {event['notice_pmid']}" if event["notice_pmid"] else None)
            or event["notice_title"]
            or "no notice named"
        )
        out.print(
            f"{label_of(event['type'])} ({event['date'] or event['detected_at'][:10]}, "
            f"from {event['source']}): {notice}",
            markup=False,
        )  # fmt: skip
    if rec["versions"]:  # one work across its versions (issue 14)
        work = rec["versions"]
        for pre in work["preprints"]:
            out.print(f"Preprint: {pre['doi']} ({pre['server'] or 'preprint'}, posted "
                      f"{pre['posted'] or 'date unknown'})", markup=False)  # fmt: skip
        journal = work["published_doi"] or f"PMID {work['published_pmid']}"
        out.print(f"Journal version: {journal} ({work['published_journal'] or 'journal unknown'})",
                  markup=False)  # fmt: skip
    out.print(f"\nSeen {len(rec['sightings'])} time(s):")
    for s in rec["sightings"]:
        out.print(
            f"  {s['seen_at'][:16]}  {s['source']}  {s['kind']}  {s['url'] or ''}", markup=False
        )


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@papers.command("export")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True)
@click.option(
    "--excel", is_flag=True, help="CSV for Excel: UTF-8 with a byte order mark (--format csv)."
)
@_filters
@pass_app
def papers_export(
    app: App,
    fmt: str,
    excel: bool,
    since: datetime | None,
    topic: str | None,
    source_id: str | None,
) -> None:
    """Export papers to stdout as JSON lines, CSV, RIS or BibTeX (RIS/BibTeX import into Zotero).

    \b
    Examples:
      litwatch papers export --format ris --topic autoimmunity > autoimmunity.ris
      litwatch papers export --since 2026-11-01 | jq .doi
      litwatch papers export --format csv --excel > papers.csv
    """
    if excel and fmt != "csv":
        fail("--excel applies to --format csv only", EXIT_USAGE)
    from crawler.db.engine import transaction
    from crawler.db.queries import iter_records, papers_query
    from crawler.export import write_records

    _check_topic(app, topic)
    engine = app.read_engine()
    stream = sys.stdout
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(newline="", encoding="utf-8")  # CSV and RIS write their own CRLF
    with transaction(engine) as session:
        records = iter_records(
            session, papers_query(since=_since(since), topic=topic, source=source_id)
        )
        count = write_records(records, fmt, stream, excel=excel)  # type: ignore[arg-type]
    stream.flush()
    click.echo(f"exported {count} papers as {fmt}", err=True)


COMMANDS = [papers]
