"""Smoke tests of the benchmarks (bench/): each runs once at a small N and writes sane JSON.

Never a timed assertion: timings on a shared machine say nothing at this size. What is
checked is that each benchmark still measures what it claims to (every article stored once,
a rerun adding nothing, unchanged feeds answered 304 and left unparsed, every digest
delivered on both sides) and writes the figures docs/benchmarks.md quotes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO_ROOT
from tests.support.corpus import corpus_path

pytestmark = pytest.mark.slow
SAMPLE = "pubmed/pubmedsample18n0001_177articles.xml.gz"


def run_bench(module: str, results: Path, *args: str) -> dict[str, Any]:
    """Run ``python -m bench.<module> ARGS --runs 1`` and return the JSON it wrote."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITWATCH_")}
    env["LITWATCH_CORPUS"] = str(corpus_path(SAMPLE).parents[1])
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args, "--runs", "1", "--results-dir", results],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = results.glob("*.json")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def positive(figures: dict[str, Any]) -> bool:
    """Wall, CPU and peak RSS medians of one measured command are all above zero."""
    return all(figures[k]["median"] > 0 for k in ("wall_s", "cpu_s", "max_rss_mb"))


def test_copies_of_the_sample_are_distinct_papers() -> None:
    from bench.ingest_pubmed import build_records
    from spiders.pubmed_xml import iter_efetch

    records = build_records(400, corpus_path(SAMPLE))
    page = b"<PubmedArticleSet>" + b"".join(r.xml for r in records) + b"</PubmedArticleSet>"
    # Read back as litwatch reads them: every copy is a paper of its own on every key.
    papers = list(iter_efetch(page, "bench"))
    assert [p.pmid for p in papers] == [r.pmid for r in records]
    assert len({p.pmid for p in papers}) == len({p.doi for p in papers}) == 400
    assert all(p.doi for p in papers)
    pmcids = [p.pmcid for p in papers if p.pmcid]
    assert len(set(pmcids)) == len(pmcids) > 0
    # The text is the sample's: 177 distinct titles, copied over and over.
    assert len({p.title for p in papers}) <= 177 < 400
    # Three calendar days at least: a rerun's window (last poll minus 2 days) covers them all.
    assert len({r.edat for r in records}) == 3


def test_ingest_benchmark(tmp_path: Path) -> None:
    data = run_bench("ingest_pubmed", tmp_path, "--articles", "300")
    (size,) = data["sizes"]
    assert size["articles"] == 300
    assert size["efetch_requests"] == 1  # 300 records fit one EFetch page of 500
    assert size["papers"] == [300]
    assert size["rerun_new"] == [0] and size["rerun_items"] == [300]
    assert positive(size["crawl"]) and positive(size["rerun"])
    assert size["bare_lxml"]["cpu_s"]["median"] > 0
    ratio = size["bare_lxml"]["cpu_s"]["median"] / size["crawl"]["cpu_s"]["median"]
    assert size["ratio"]["median"] == pytest.approx(ratio, abs=0.002)
    assert set(size["targets"]) == {
        "ratio>=0.35",
        "peak_rss<300MB",
        "rerun_adds_nothing",
        "rerun_faster",
    }
    assert size["targets"]["rerun_adds_nothing"] == "met"
    assert data["machine"]["lxml"] and data["machine"]["sqlite"]
    assert data["linearity"] is None  # one N: nothing to compare


def test_repoll_benchmark(tmp_path: Path) -> None:
    data = run_bench("repoll", tmp_path, "--feeds", "5")
    (run,) = data["runs"]
    assert run["first_requests"] == run["second_requests"] == 5
    assert run["first_items"] == 5 * 25
    assert run["first_body_bytes"] > 5 * 25 * 100
    assert (run["second_body_bytes"], run["second_304"], run["second_items"]) == (0, 5, 0)
    assert run["second_not_modified"] == 5 and run["bare_304"] == 5
    assert set(data["targets"].values()) == {"met"}
    assert positive(data["first_crawl"]) and positive(data["second_crawl"])


def test_digest_fanout_benchmark(tmp_path: Path) -> None:
    data = run_bench("digest_fanout", tmp_path, "--subscribers", "20")
    (size,) = data["sizes"]
    assert size["subscribers"] == 20
    # Both sides sent the project's messages: the same size give or take the headers.
    sizes = size["bytes_per_message"]
    assert sizes["bare_smtplib"] == pytest.approx(sizes["digest_send"], rel=0.05)
    assert sizes["digest_send"] > 10_000  # 20 or 40 papers with abstracts, text and HTML
    assert positive(size["digest_send"])
    assert size["ratio"]["median"] > 0
    assert data["memory_growth"] is None


def test_digest_fanout_benchmark_with_dkim(tmp_path: Path) -> None:
    data = run_bench("digest_fanout", tmp_path, "--subscribers", "20", "--dkim")
    (size,) = data["sizes"]
    assert data["dkim"] is True and size["ratio"]["median"] > 0
    # Both sides signed: a DKIM-Signature of about 500 bytes on each message.
    sizes = size["bytes_per_message"]
    assert sizes["bare_smtplib"] == pytest.approx(sizes["digest_send"], rel=0.05)


def test_watch_benchmark(tmp_path: Path) -> None:
    data = run_bench("watch", tmp_path, "--papers", "450")
    (size,) = data["sizes"]
    # 450 PMIDs in EFetch batches of 200: three requests; one Crossref page and the empty next.
    assert (size["ncbi_requests"], size["crossref_requests"]) == (3, 2)
    # Every 50th record is retracted (9), and 100 notices correct papers 1..100.
    assert size["events"] == 9 + 100
    assert data["targets"]["ncbi_requests<=N/200+10@450"] == "met"
    assert size["cpu_s"] > 0 and size["max_rss_mb"] > 0
