"""Events learned while crawling PubMed: the retracted paper's own record, and the notice
that points at it (off every topic: its event is stored, the notice itself is not).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from crawler.db.engine import make_engine, transaction
from crawler.db.models import PaperEventRow, PaperRow
from tests.support.config import write_toml
from tests.support.eutils import FakeEutils, Record, RecordList
from tests.support.httpserver import LocalHTTPServer

pytestmark = pytest.mark.slow

PAPER = (
    '<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">34196305'
    "</PMID><Article><Journal><Title>J Clin Invest</Title><JournalIssue><PubDate><Year>2021"
    "</Year></PubDate></JournalIssue></Journal><ArticleTitle>Passive transfer of fibromyalgia "
    "symptoms from patients to mice.</ArticleTitle><PublicationTypeList>"
    '<PublicationType UI="D016441">Retracted Publication</PublicationType></PublicationTypeList>'
    '</Article><CommentsCorrectionsList><CommentsCorrections RefType="ErratumIn"><RefSource>'
    "J Clin Invest. 2021;131(20):e155201</RefSource></CommentsCorrections>"
    "</CommentsCorrectionsList>"
    '</MedlineCitation><PubmedData><ArticleIdList><ArticleId IdType="pubmed">34196305</ArticleId>'
    '<ArticleId IdType="doi">10.1172/JCI144201</ArticleId></ArticleIdList></PubmedData>'
    "</PubmedArticle>"
)
NOTICE = (
    '<PubmedArticle><MedlineCitation Status="Publisher" Owner="NLM"><PMID Version="1">40000001'
    "</PMID><Article><Journal><Title>J Clin Invest</Title><JournalIssue><PubDate><Year>2026"
    "</Year></PubDate></JournalIssue></Journal><ArticleTitle>Retraction notice.</ArticleTitle>"
    '<PublicationTypeList><PublicationType UI="">RETRACTION OF PUBLICATION</PublicationType>'
    "</PublicationTypeList></Article><CommentsCorrectionsList><CommentsCorrections "
    'RefType="RetractionOf"><RefSource>J Clin Invest. 2021;131(13):e144201</RefSource>'
    '<PMID Version="1">34196305</PMID></CommentsCorrections></CommentsCorrectionsList>'
    '</MedlineCitation><PubmedData><ArticleIdList><ArticleId IdType="pubmed">40000001'
    "</ArticleId></ArticleIdList></PubmedData></PubmedArticle>"
)


def test_a_crawl_stores_events_and_not_the_off_topic_notice(
    sqlite_url: str, tmp_path: Path
) -> None:
    today = datetime.now(UTC).date()
    records = [
        Record("34196305", today, PAPER.encode()),
        Record("40000001", today, NOTICE.encode()),
    ]
    with LocalHTTPServer() as server:
        base = FakeEutils(RecordList(records)).install(server)
        config = write_toml(
            tmp_path / "litwatch.toml",
            {"database": {"url": sqlite_url},
             "crawl": {"download_delay": 0, "autothrottle": False}},
            [{"id": "pubmed-all", "kind": "pubmed", "query": "x", "base_url": base}],
        )  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "crawler.cli", "--config", str(config), "crawl",
             "--no-progress"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    engine = make_engine(sqlite_url)
    try:
        with transaction(engine) as session:
            pmids = set(session.scalars(select(PaperRow.pmid)))
            events = sorted(
                (e.type, e.notice_pmid, e.notice_title)
                for e in session.scalars(select(PaperEventRow))
            )
    finally:
        engine.dispose()
    assert pmids == {"34196305"}  # the notice matches no topic: not a paper of the digest
    assert events == [
        ("corrected", None, "J Clin Invest. 2021;131(20):e155201"),
        ("retracted", "40000001", "Retraction notice."),
    ]
    cli = [sys.executable, "-m", "crawler.cli", "--config", str(config)]

    def run(*args: str) -> str:
        done = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    shown = json.loads(run("papers", "show", "--json", "PMID 34196305"))
    assert shown["status"] == "retracted"
    assert [e["type"] for e in shown["events"]] == ["corrected", "retracted"]
    assert "Retracted" in run("papers", "show", "10.1172/JCI144201")
    listed = run("papers", "list", "--status", "retracted")
    assert "1 papers" in listed and "10.1172/JCI144201" in listed and "Retracted" in listed
    assert "0 papers" in run("papers", "list", "--status", "current")
    (exported,) = [json.loads(line) for line in run("papers", "export").splitlines()]
    assert exported["status"] == "retracted" and len(exported["events"]) == 2


def test_the_cli_knows_every_status() -> None:
    from crawler.cli.papers_cmds import STATUSES
    from crawler.events import GRAVITY

    assert STATUSES == GRAVITY
