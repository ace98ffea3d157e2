"""Memory under endless answers (issue 12 A5): feeds and stories have limits that fit them.

A hostile news feed lists 16 stories whose pages never end; before, every answer could
grow to Scrapy's 64 MB and the crawl took about a gigabyte. The crawl runs as the real
``litwatch crawl`` subprocess and its peak resident memory is read from the kernel
(``wait4``'s rusage of that one child).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO_ROOT
from tests.support.httpserver import EndlessHTTPServer, endless_response
from tests.test_crawl_e2e import RSS, _command, _env, summary_rows, write_config

STORIES = 16
PEAK_LIMIT_MB = 300


@pytest.fixture
def endless_server() -> Iterator[EndlessHTTPServer]:
    with EndlessHTTPServer() as server:
        yield server


def news_feed(links: list[str]) -> bytes:
    items = "".join(
        f"<item><title>Fibromyalgia story {i}</title><link>{link}</link>"
        f"<description>fibromyalgia</description></item>"
        for i, link in enumerate(links)
    )
    head = '<?xml version="1.0"?><rss version="2.0"><channel><title>N</title>'
    return f"{head}{items}</channel></rss>".encode()


# Runs the command given and writes its peak RSS (KB) to the file named first. The crawl is
# started from this small interpreter, not from pytest: Linux charges the memory of the process
# that forks to the child's peak until exec, and a long test session is hundreds of MB.
_LAUNCHER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as fh:
    fh.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def crawl_peak_rss(config: Path, tmp_path: Path) -> tuple[int, str, int]:
    """Run ``litwatch crawl``; (exit status, stdout, peak RSS in MB of that process)."""
    out, err, peak = tmp_path / "stdout.txt", tmp_path / "stderr.txt", tmp_path / "peak.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        code = subprocess.call(
            [sys.executable, "-c", _LAUNCHER, str(peak), *_command(config, ())],
            cwd=REPO_ROOT,
            env=_env(None),
            stdout=stdout,
            stderr=stderr,
        )
    return code, out.read_text() + err.read_text(), int(peak.read_text()) // 1024  # KB on Linux


@pytest.mark.slow
def test_sixteen_endless_story_pages_keep_the_crawl_under_300_mb(
    sqlite_url: str, endless_server: EndlessHTTPServer, tmp_path: Path
) -> None:
    links = [endless_server.url(f"/releases/endless-{i}.htm") for i in range(STORIES)]
    for i in range(STORIES):
        endless_server.add_handler(f"/releases/endless-{i}.htm", lambda _r: endless_response())
    endless_server.add("/rss/news.xml", news_feed(links), content_type=RSS)
    source = {"id": "sd", "kind": "sciencedaily", "url": endless_server.url("/rss/news.xml")}
    config = write_config(
        tmp_path / "litwatch.toml", sqlite_url, [{**source, "topics": ["fibromyalgia"]}]
    )

    code, output, peak_mb = crawl_peak_rss(config, tmp_path)

    assert peak_mb < PEAK_LIMIT_MB, f"peak RSS {peak_mb} MB\n{output}"
    assert "Traceback" not in output, output
    assert all(endless_server.count(f"/releases/endless-{i}.htm") == 1 for i in range(STORIES))
    # Each story is cut at the story limit: a warning, recorded, not retried every poll.
    assert code == 0, output
    assert summary_rows(output)["sd"]["status"] == "ok"
    assert output.count("larger than the size limit") >= 1


@pytest.mark.slow
def test_an_endless_feed_fails_its_source_at_the_feed_limit(
    sqlite_url: str, endless_server: EndlessHTTPServer, tmp_path: Path
) -> None:
    endless_server.add_handler("/feed.xml", lambda _r: endless_response(RSS))
    source = {"id": "j", "kind": "feed", "url": endless_server.url("/feed.xml")}
    config = write_config(
        tmp_path / "litwatch.toml",
        sqlite_url,
        [{**source, "topics": ["fibromyalgia"]}],
        crawl={"max_feed_mb": 1},
    )

    code, output, peak_mb = crawl_peak_rss(config, tmp_path)

    assert code == 1, output
    assert summary_rows(output)["j"]["status"] == "failed"
    assert "larger than the size limit (1 MB)" in output
    assert peak_mb < PEAK_LIMIT_MB
