"""Re-poll: a second crawl of unchanged feeds costs a conditional GET each and parses nothing.

``--feeds`` distinct RSS 2.0 journal feeds (25 items each, titles and abstracts taken from
NLM's 177-article sample, a DOI per item) are served on 127.0.0.1 with ETag and
Last-Modified. ``litwatch crawl`` polls them all into an empty database, then again: the
second crawl must send If-None-Match / If-Modified-Since, get 304s, transfer at most 5% of
the first crawl's body bytes and parse no feed. A bare baseline (one conditional GET per feed
with urllib, nothing else) shows what the second crawl's time is made of.

The feeds stand in for as many publishers' hosts, so the per-host politeness settings are
off (``download_delay = 0``, ``autothrottle = false``): on one host, 127.0.0.1, they would
space the 50 requests a second apart, and AutoThrottle never shortens that delay on 304
answers (it adapts on 200s only). Everything else is at its default.

Example::

    python -m bench.repoll --feeds 50 --runs 3
"""

from __future__ import annotations

import argparse
import tempfile
import urllib.error
import urllib.request
from email.utils import formatdate
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from sqlalchemy import select

from bench.common import (
    Measured,
    check,
    clean_env,
    litwatch,
    machine,
    measure_self,
    run_measured,
    scratch_database,
    summarise_runs,
    summary,
    verdict,
    write_config,
    write_results,
)
from crawler.db.engine import make_engine
from crawler.db.models import CrawlRun
from spiders.pubmed_xml import iter_efetch
from tests.support.corpus import CORPUS
from tests.support.httpserver import LocalHTTPServer

SAMPLE = CORPUS / "pubmed" / "pubmedsample18n0001_177articles.xml.gz"
ITEMS_PER_FEED = 25
#: Target of issue 7: the second crawl moves at most this share of the first's body bytes.
BYTES_SHARE_LIMIT = 0.05
RSS = "application/rss+xml; charset=utf-8"


def sample_texts() -> list[tuple[str, str]]:
    """(title, abstract) of every sample article that has both."""
    import gzip

    if not SAMPLE.is_file():
        raise SystemExit(f"corpus file {SAMPLE} not found (set LITWATCH_CORPUS)")
    with gzip.open(SAMPLE, "rb") as fh:
        papers = list(iter_efetch(fh, "sample"))
    return [(p.title, p.abstract) for p in papers if p.title and p.abstract]


def feed_body(number: int, texts: list[tuple[str, str]]) -> bytes:
    """Feed ``number``: an RSS 2.0 journal feed in the Wiley/Atypon style (DOI in dc, prism)."""
    items = []
    for i in range(ITEMS_PER_FEED):
        title, abstract = texts[(number * ITEMS_PER_FEED + i) % len(texts)]
        doi = f"10.5555/lwfeed.{number}.{i}"
        items.append(
            f"<item><title>{escape(title)}</title><link>https://doi.org/{doi}</link>"
            f"<description>{escape(abstract)}</description>"
            f'<guid isPermaLink="false">{doi}</guid><dc:identifier>doi:{doi}</dc:identifier>'
            f"<prism:doi>{doi}</prism:doi>"
            f"<pubDate>Mon, 0{1 + i % 9} Dec 2025 08:00:00 GMT</pubDate></item>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:prism="http://prismstandard.org/namespaces/basic/2.0/"><channel>'
        f"<title>Journal of Benchmark Studies {number}</title>"
        f"<link>https://journal{number}.example.org/</link>"
        "<description>Most recent articles</description>" + "".join(items) + "</channel></rss>\n"
    ).encode()


def serve_feeds(server: LocalHTTPServer, count: int) -> list[str]:
    """Add ``count`` feeds with validators to ``server``; return their URLs."""
    texts = sample_texts()
    modified = formatdate(1_764_000_000, usegmt=True)
    urls = []
    for number in range(count):
        path = f"/feeds/journal-{number}.xml"
        server.add(
            path, feed_body(number, texts), content_type=RSS, etag=f'"v1-{number}"',
            last_modified=modified,
        )  # fmt: skip
        urls.append(server.url(path))
    return urls


def bare_conditional_gets(urls: list[str]) -> int:
    """The baseline: one conditional GET per feed (validators known), nothing else; 304s."""
    not_modified = 0
    for number, url in enumerate(urls):
        request = urllib.request.Request(url, headers={"If-None-Match": f'"v1-{number}"'})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                answer.read()
        except urllib.error.HTTPError as exc:
            not_modified += exc.code == 304
    return not_modified


def _runs_after(db_url: str, first_id: int) -> list[tuple[str, int, int]]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(CrawlRun.status, CrawlRun.items, CrawlRun.not_modified)
                .where(CrawlRun.id > first_id)
                .order_by(CrawlRun.id)
            ).all()
            return [tuple(r) for r in rows]
    finally:
        engine.dispose()


def _feed_bytes(server: LocalHTTPServer) -> tuple[int, int, int]:
    """(feed body bytes, feed requests, feed 304s) in the server log since it was cleared."""
    feeds = [e for e in server.log if e.path.startswith("/feeds/")]
    return sum(e.body_bytes for e in feeds), len(feeds), sum(e.status == 304 for e in feeds)


def one_run(feeds: int, database: str, label: str) -> dict[str, Any]:
    """First crawl, second crawl, bare conditional GETs: figures and server/database counts."""
    with (
        tempfile.TemporaryDirectory(prefix="lw-bench-") as tmp,
        LocalHTTPServer() as server,
        scratch_database(database, Path(tmp), label) as db_url,
    ):
        urls = serve_feeds(server, feeds)
        sources = [
            {"id": f"journal-{n}", "kind": "feed", "url": url, "topics": ["fibromyalgia"]}
            for n, url in enumerate(urls)
        ]
        config = write_config(
            Path(tmp) / "litwatch.toml",
            {
                "database": {"url": db_url},
                "crawl": {
                    "contact": "bench@example.org",
                    "download_delay": 0,
                    "autothrottle": False,
                },
            },
            sources,
        )
        command = litwatch(config, "crawl", "--no-progress")
        first = check(run_measured(command, env=clean_env()), "first crawl")
        first_bytes, first_requests, _ = _feed_bytes(server)
        first_runs = _runs_after(db_url, 0)
        server.clear_log()
        second = check(run_measured(command, env=clean_env()), "second crawl")
        second_bytes, second_requests, second_304 = _feed_bytes(server)
        second_runs = _runs_after(db_url, len(first_runs))
        server.clear_log()
        bare_304, bare = measure_self(lambda: bare_conditional_gets(urls))
    return {
        "first": first,
        "second": second,
        "bare_conditional_gets": bare,
        "bare_304": bare_304,
        "first_body_bytes": first_bytes,
        "second_body_bytes": second_bytes,
        "first_requests": first_requests,
        "second_requests": second_requests,
        "second_304": second_304,
        "first_items": sum(r[1] for r in first_runs),
        "second_items": sum(r[1] for r in second_runs),
        "second_not_modified": sum(r[2] for r in second_runs),
        "statuses": sorted({r[0] for r in first_runs + second_runs}),
    }


def report(feeds: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and the targets over several runs."""
    shares = [r["second_body_bytes"] / r["first_body_bytes"] for r in runs]
    parsed_none = all(r["second_items"] == 0 and r["second_not_modified"] == feeds for r in runs)
    return {
        "feeds": feeds,
        "first_crawl": summarise_runs([r["first"] for r in runs]),
        "second_crawl": summarise_runs([r["second"] for r in runs]),
        "bare_conditional_gets": summarise_runs([r["bare_conditional_gets"] for r in runs]),
        "first_body_bytes": summary([r["first_body_bytes"] for r in runs]),
        "second_body_bytes": summary([r["second_body_bytes"] for r in runs]),
        "bytes_share": summary(shares),
        "runs": [
            {k: (v.figures() if isinstance(v, Measured) else v) for k, v in r.items()} for r in runs
        ],
        "targets": {
            "second_bytes<=5%_of_first": verdict(max(shares), BYTES_SHARE_LIMIT, at_most=True),
            "second_parses_none": "met" if parsed_none else "MISSED",
            "all_sources_ok": "met" if all(r["statuses"] == ["ok"] for r in runs) else "MISSED",
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the figures and write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3, help="runs (medians are quoted)")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--results-dir", type=Path, default=None, help="default bench/results")
    args = parser.parse_args(argv)
    runs = [one_run(args.feeds, args.database, f"f{args.feeds}_r{i}") for i in range(args.runs)]
    result = report(args.feeds, runs)
    first, second = result["first_crawl"], result["second_crawl"]
    print(
        f"{args.feeds} feeds: first crawl wall {first['wall_s']['median']:.2f}s cpu "
        f"{first['cpu_s']['median']:.2f}s, {result['first_body_bytes']['median']:.0f} body bytes"
        f" | second crawl wall {second['wall_s']['median']:.2f}s cpu "
        f"{second['cpu_s']['median']:.2f}s, {result['second_body_bytes']['median']:.0f} body "
        f"bytes ({result['bytes_share']['median']:.1%}) | bare conditional GETs wall "
        f"{result['bare_conditional_gets']['wall_s']['median']:.3f}s | {result['targets']}"
    )
    path = write_results(
        f"repoll_{args.database}",
        {"database": args.database, "machine": machine(), **result},
        args.results_dir,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
