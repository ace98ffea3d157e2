"""``litwatch watch`` end to end: the real CLI against a fake E-utilities and Crossref on
127.0.0.1, on SQLite and PostgreSQL.

Two papers were sent to a subscriber, a third never was. The watch re-reads the two by PMID
(POSTed in batches) and lists the notices Crossref indexed since the last check; it stores the
retraction PubMed reports and the correction Crossref reports, ignores a notice about a paper
litwatch does not hold, and a second run adds nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from crawler.db.engine import transaction
from crawler.db.models import PaperEventRow, PaperRow
from crawler.db.store import upsert
from crawler.items import Paper
from tests.support.config import write_toml
from tests.support.db import migrated_engine
from tests.support.httpserver import LocalHTTPServer, Request, Response, max_in_window
from tests.support.lifecycle import FakeApis, sent_to

pytestmark = pytest.mark.slow


def _seed(engine: Engine) -> None:
    upsert(
        engine,
        [
            Paper(source_id="s", origin="pubmed", pmid="34196305", doi="10.1172/JCI144201",
                  title="Passive transfer of fibromyalgia symptoms from patients to mice."),
            Paper(source_id="s", origin="pubmed", pmid="30000002", title="A second paper."),
            Paper(source_id="s", origin="pubmed", pmid="30000003", title="Never sent."),
        ],
    )  # fmt: skip
    with transaction(engine) as session:
        ids = {p.pmid: p.id for p in session.scalars(select(PaperRow))}
    sent_to(engine, "ada@example.org", [ids["34196305"], ids["30000002"]])


def _watch(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crawler.cli", "--config", str(config), "watch"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_watch_finds_each_event_once(db_url: str, tmp_path: Path) -> None:
    engine = migrated_engine(db_url)
    try:
        _seed(engine)
        with LocalHTTPServer() as server:
            apis = FakeApis(server)
            config = write_toml(
                tmp_path / "litwatch.toml",
                {
                    "database": {"url": db_url},
                    "pubmed": {"base_url": server.url("/eutils/")},
                    "crossref": {"base_url": server.url("/crossref/"), "delay": 0.0},
                    "lifecycle": {"batch_size": 1},
                },
            )
            first = _watch(config)
            assert first.returncode == 0, first.stderr
            assert "2 papers watched" in first.stdout and "2 new events" in first.stdout
            # One POST per batch of one: N/batch requests, never the paper not sent.
            assert sorted(apis.fetched) == [["30000002"], ["34196305"]]
            efetch_times = [r.time for r in server.log if r.path.endswith("efetch.fcgi")]
            assert max_in_window(efetch_times) <= 3  # NCBI without a key
            assert apis.cursors == ["*", "cursor-2"]
            second = _watch(config)
            assert second.returncode == 0, second.stderr
            assert "0 new events" in second.stdout
            shown = subprocess.run(
                [sys.executable, "-m", "crawler.cli", "--config", str(config), "status"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert "Lifecycle watch: done" in shown.stdout and "2 new events" not in shown.stdout
        with transaction(engine) as session:
            rows = sorted(
                (r.type, r.source, r.notice_pmid, r.notice_doi)
                for r in session.scalars(select(PaperEventRow))
            )
        assert rows == [
            ("corrected", "crossref", None, "10.5555/correction.1"),
            ("retracted", "pubmed", "40000001", None),
        ]
    finally:
        engine.dispose()


def test_a_watch_killed_midway_resumes_without_repeating(db_url: str, tmp_path: Path) -> None:
    import signal
    import time

    from crawler.db import WATCH_KEY

    engine = migrated_engine(db_url)
    try:
        _seed(engine)
        with LocalHTTPServer() as server:
            apis = FakeApis(server)
            slow = {"on": True}
            plain_efetch = apis.efetch

            def efetch(request: Request) -> Response:
                answer = plain_efetch(request)
                if slow["on"] and apis.fetched[-1] == ["34196305"]:
                    time.sleep(30)  # the kill lands while this batch is in flight
                return answer

            server.add_handler("/eutils/efetch.fcgi", efetch)
            config = write_toml(
                tmp_path / "litwatch.toml",
                {
                    "database": {"url": db_url},
                    "pubmed": {"base_url": server.url("/eutils/")},
                    "crossref": {"base_url": server.url("/crossref/"), "delay": 0.0},
                    "lifecycle": {"batch_size": 1},
                },
            )
            proc = subprocess.Popen(
                [sys.executable, "-m", "crawler.cli", "--config", str(config), "watch"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with transaction(engine) as session:
                    from crawler.db.meta import read_in

                    record = json.loads(read_in(session, WATCH_KEY) or "{}")
                if record.get("pubmed_after") == "30000002":
                    break
                time.sleep(0.1)
            assert record.get("pubmed_after") == "30000002", record
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            slow["on"] = False
            done_before = list(apis.fetched)
            rerun = _watch(config)
            assert rerun.returncode == 0, rerun.stderr
            assert "resumed" in rerun.stdout
            assert apis.fetched[len(done_before) :] == [["34196305"]]
        with transaction(engine) as session:
            types = sorted(r.type for r in session.scalars(select(PaperEventRow)))
        assert types == ["corrected", "retracted"]
    finally:
        engine.dispose()
