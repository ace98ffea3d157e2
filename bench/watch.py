"""Lifecycle watch: `litwatch watch` over N delivered papers against local fake PubMed and Crossref.

Each size builds a SQLite database of N papers, all sent to one subscriber, serves EFetch
(POSTed PMIDs, one small record each, every 50th retracted) and one page of Crossref notices
from threads of this process, and runs ``litwatch watch`` as a child process (measured with
:func:`bench.common.run_measured`). Figures: requests made to each API, CPU seconds, peak RSS,
CPU per paper checked, against the targets of issue 13: at most N/200 + 10 requests to NCBI,
peak RSS under 300 MB at 100,000, CPU per paper at most twice the PubMed ingest's CPU per
record (read from ``bench/results/ingest_pubmed_sqlite.json``, the same machine).

Example::

    python -m bench.watch --papers 10000 100000
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from bench.cli_latency import build_database
from bench.common import (
    RESULTS_DIR,
    check,
    clean_env,
    litwatch,
    machine,
    run_measured,
    verdict,
    write_config,
    write_results,
)
from tests.support.httpserver import LocalHTTPServer, Request, Response

RECORD = (
    '<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">{pmid}</PMID>'
    "<Article><Journal><Title>J Bench</Title><JournalIssue><PubDate><Year>2024</Year></PubDate>"
    "</JournalIssue></Journal><ArticleTitle>Record {pmid}</ArticleTitle>{types}</Article>{links}"
    '</MedlineCitation><PubmedData><ArticleIdList><ArticleId IdType="pubmed">{pmid}</ArticleId>'
    "</ArticleIdList></PubmedData></PubmedArticle>"
)
RETRACTION = (
    '<PublicationTypeList><PublicationType UI="D016441">Retracted Publication</PublicationType>'
    "</PublicationTypeList>"
)
LINK = (
    '<CommentsCorrectionsList><CommentsCorrections RefType="RetractionIn">'
    '<RefSource>J Bench. 2026</RefSource><PMID Version="1">9{pmid}</PMID>'
    "</CommentsCorrections></CommentsCorrectionsList>"
)


def serve(server: LocalHTTPServer) -> None:
    """EFetch for any POSTed PMIDs, and one page of Crossref notices then an empty one."""

    def efetch(request: Request) -> Response:
        ids = parse_qs(request.body.decode())["id"][0].split(",")
        records = []
        for pmid in ids:
            retracted = int(pmid) % 50 == 0
            records.append(
                RECORD.format(
                    pmid=pmid,
                    types=RETRACTION if retracted else "",
                    links=LINK if retracted else "",
                ).replace("{pmid}", pmid)
            )
        body = "<PubmedArticleSet>" + "".join(records) + "</PubmedArticleSet>"
        return Response(body=body.encode(), content_type="text/xml")

    def works(request: Request) -> Response:
        first = request.arg("cursor") == "*"
        items = [
            {"DOI": f"10.5555/notice.{i}", "type": "journal-article", "title": ["Correction"],
             "update-to": [{"DOI": f"10.5555/lwcli.{i}", "type": "correction",
                            "updated": {"date-parts": [[2026, 11, 1]]}}]}
            for i in range(1, 101)
        ] if first else []  # fmt: skip
        page = {
            "status": "ok",
            "message-type": "work-list",
            "message": {"items": items, "next-cursor": "next", "total-results": len(items)},
        }
        return Response(body=json.dumps(page).encode(), content_type="application/json")

    server.add_handler("/eutils/efetch.fcgi", efetch)
    server.add_handler("/crossref/works", works)


def deliver_all(path: Path) -> None:
    """One subscriber who was sent every paper (the watch list is everything delivered)."""
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ")
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(
                "INSERT INTO subscribers (id, email, email_key, topics, format, timezone, token,"
                " status, created_at, updates) VALUES (1, 'a@example.org', 'a@example.org', '[]',"
                " 'html', 'UTC', 'tok', 'active', ?, 1)",
                (now,),
            )
            conn.execute(
                "INSERT INTO deliveries (id, subscriber_id, period, cutoff, state, attempts,"
                " message_id, paper_count, created_at, sent_at) VALUES (1, 1, '2026-11-30', ?,"
                " 'sent', 1, '<m@bench>', 0, ?, ?)",
                (now, now, now),
            )
            conn.execute(
                "INSERT INTO delivery_papers (delivery_id, paper_id) SELECT 1, id FROM papers"
            )
    finally:
        conn.close()


def ingest_cpu_per_record() -> float | None:
    """The PubMed ingest's CPU seconds per record from its stored result (same machine)."""
    path = RESULTS_DIR / "ingest_pubmed_sqlite.json"
    if not path.is_file():
        return None
    first = json.loads(path.read_text())["sizes"][0]
    return float(first["crawl"]["cpu_s"]["median"]) / int(first["articles"])


def measure(papers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lw-bench-watch-") as tmp, LocalHTTPServer() as server:
        path = Path(tmp) / "watch.db"
        url = build_database(path, papers)
        deliver_all(path)
        serve(server)
        config = write_config(
            Path(tmp) / "litwatch.toml",
            {
                "database": {"url": url},
                "pubmed": {"base_url": server.url("/eutils/")},
                "crossref": {"base_url": server.url("/crossref/"), "delay": 0.0},
            },
        )
        result = check(run_measured(litwatch(config, "watch"), env=clean_env()), "watch")
        ncbi = server.count("/eutils/efetch.fcgi")
        crossref = server.count("/crossref/works")
        events = sqlite3.connect(path).execute("SELECT count(*) FROM paper_events").fetchone()[0]
    return {
        "papers": papers,
        "ncbi_requests": ncbi,
        "crossref_requests": crossref,
        "events": events,
        **result.figures(),
        "cpu_ms_per_paper": round(1000 * result.cpu / papers, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=1, help="runs per size (the median is kept)")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    per_record = ingest_cpu_per_record()
    sizes, targets = [], {}
    print(f"{'papers':>8} {'ncbi':>6} {'crossref':>8} {'events':>7} {'cpu s':>7} {'ms/paper':>9}"
          f" {'rss MB':>7}")  # fmt: skip
    for n in args.papers:
        runs = sorted((measure(n) for _ in range(max(args.runs, 1))), key=lambda f: f["cpu_s"])
        fig = runs[len(runs) // 2] | {"runs_cpu_s": [r["cpu_s"] for r in runs]}
        sizes.append(fig)
        counts = f"{fig['ncbi_requests']:>6} {fig['crossref_requests']:>8} {fig['events']:>7}"
        costs = f"{fig['cpu_s']:>7.2f} {fig['cpu_ms_per_paper']:>9.3f} {fig['max_rss_mb']:>7.0f}"
        print(f"{n:>8} {counts} {costs}")
        targets[f"ncbi_requests<=N/200+10@{n}"] = verdict(
            fig["ncbi_requests"], n / 200 + 10, at_most=True
        )
        if n >= 100_000:
            targets[f"rss<300MB@{n}"] = verdict(fig["max_rss_mb"], 300, at_most=True)
        if per_record:
            targets[f"cpu_per_paper<=2x_ingest@{n}"] = verdict(
                fig["cpu_s"] / n, 2 * per_record, at_most=True
            )
    if per_record:
        print(f"ingest CPU per record (stored result): {1000 * per_record:.3f} ms")
    for key, value in targets.items():
        print(f"{key}: {value}")
    payload = {"machine": machine(), "sizes": sizes, "targets": targets,
               "ingest_cpu_ms_per_record": per_record and round(1000 * per_record, 3)}  # fmt: skip
    print(f"wrote {write_results('watch', payload, args.results_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
