"""An offline first run (issue 12 B8): one line per source, no retries, and one diagnosis.

The real ``litwatch crawl`` runs in a network namespace of its own (``unshare -rn``: only a
loopback interface, so no packet can leave the machine and every DNS query fails, as on a
machine without network). Host names are under ``.invalid`` (RFC 6761) besides. Skipped
where user namespaces are not allowed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crawler.cli.crawl_cmds import common_failure
from crawler.poll import SourceResult
from tests.support import REPO_ROOT
from tests.test_crawl_e2e import _env, summary_rows, write_config

LONG_URL = (
    "https://journal-a.invalid/action/showFeed?type=etoc&feed=rss&jc=jpain"
    "&journal_volume_and_issue_that_goes_on=long-enough-to-be-wrapped-by-any-terminal"
)
SOURCES = [
    {"id": "journal-a", "kind": "feed", "url": LONG_URL, "topics": ["fibromyalgia"]},
    {"id": "journal-b", "kind": "feed", "url": "https://journal-b.invalid/feed.xml"},
    {"id": "news", "kind": "sciencedaily", "url": "https://news.invalid/rss/immune.xml"},
]


def _isolated_network() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = ["unshare", "-rn", "true"]
    return subprocess.run(probe, check=False, capture_output=True).returncode == 0


@pytest.mark.slow
def test_offline_crawl_says_one_line_per_source_and_once_that_dns_is_missing(
    tmp_path: Path,
) -> None:
    if not _isolated_network():
        pytest.skip("cannot make a network namespace here (unshare -rn)")
    config = write_config(
        tmp_path / "litwatch.toml",
        f"sqlite:///{tmp_path / 'litwatch.db'}",
        SOURCES,
        crawl={"retries": 3},
    )
    crawl = [sys.executable, "-m", "crawler.cli", "--config", str(config), "crawl"]

    proc = subprocess.run(
        ["unshare", "-rn", *crawl],
        cwd=REPO_ROOT,
        env=_env({"COLUMNS": "60"}),  # a narrow terminal: nothing may be wrapped
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    errors = [line for line in proc.stderr.splitlines() if "level=error" in line]
    assert len(errors) == len(SOURCES), output  # one log line per source, nothing more
    assert "retry" not in output.lower() and "robots.txt" not in output
    rows = summary_rows(proc.stdout)
    assert {sid: (r["status"], r["requests"]) for sid, r in rows.items()} == {
        s["id"]: ("failed", "0")
        for s in SOURCES  # no request went out, not even robots.txt
    }
    assert f"journal-a: cannot resolve host of {LONG_URL}\n" in proc.stdout  # not wrapped
    assert proc.stdout.count("no host name could be resolved") == 1
    assert proc.stdout.rstrip().endswith("Is this machine offline, or its DNS down?")


def test_the_offline_diagnosis_needs_every_source_to_fail_to_resolve() -> None:
    def failed(sid: str, error: str) -> SourceResult:
        return SourceResult(sid, "feed", status="failed", errors=1, error=error)

    dns = [failed(s, f"cannot resolve host of https://{s}.invalid/") for s in "ab"]
    assert common_failure(dns) is not None
    assert common_failure([*dns, failed("c", "HTTP 500 from https://c.invalid/")]) is None
    assert common_failure([*dns, SourceResult("d", "feed")]) is None
    assert common_failure(dns[:1]) is None  # one source: its own line says it all
