"""A paper's life end to end, with the real CLI on SQLite and PostgreSQL.

Week 1 the JCI passive-transfer paper is sent to two subscribers. Then the watch learns (from
a fake PubMed and Crossref on 127.0.0.1) that it was retracted and corrected. Week 2 both
subscribers get "Updates on papers you were sent" naming it, once; a third subscriber, who
joined after week 1 and never got the paper, does not. Week 3 nothing is repeated.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crawler.db.store import upsert
from crawler.items import Paper
from tests.support.config import write_toml
from tests.support.db import migrated_engine
from tests.support.httpserver import LocalHTTPServer
from tests.support.lifecycle import FakeApis, inbox, run_cli

pytestmark = pytest.mark.slow

HEADING = "Updates on papers you were sent"


@pytest.mark.parametrize("crossref_only", [False, True], ids=["pubmed", "crossref-only"])
def test_a_retraction_reaches_everyone_who_was_sent_the_paper_once(
    db_url: str, tmp_path: Path, crossref_only: bool
) -> None:
    engine = migrated_engine(db_url)
    try:
        upsert(engine, [Paper(
            source_id="pubmed-fibromyalgia", origin="pubmed", pmid="34196305",
            doi="10.1172/JCI144201", topics=["fibromyalgia"],
            title="Passive transfer of fibromyalgia symptoms from patients to mice.",
        )])  # fmt: skip
    finally:
        engine.dispose()
    today = datetime.now(UTC).date()
    weeks = [today + timedelta(days=1 + 7 * n) for n in range(3)]
    with LocalHTTPServer() as server:
        FakeApis(server, crossref_only=crossref_only)
        config = write_toml(
            tmp_path / "litwatch.toml",
            {
                "database": {"url": db_url},
                "email": {"outbox_dir": str(tmp_path / "outbox")},
                "pubmed": {"base_url": server.url("/eutils/")},
                "crossref": {"base_url": server.url("/crossref/"), "delay": 0.0},
            },
        )
        for who in ("ada@example.org", "bob@example.org"):
            run_cli(config, "subscribers", "add", who, "--topics", "fibromyalgia")
        run_cli(config, "digest", "send", "--period-end", weeks[0].isoformat())
        run_cli(config, "subscribers", "add", "cy@example.org", "--topics", "fibromyalgia")
        learned = "1 new events" if crossref_only else "2 new events"
        assert learned in run_cli(config, "watch")
        for week in weeks[1:]:
            run_cli(config, "digest", "send", "--period-end", week.isoformat())
    mails = inbox(tmp_path / "outbox")
    for who in ("ada@example.org", "bob@example.org"):
        week1, week2 = mails[who]  # week 3 had nothing to tell: no digest
        assert "Passive transfer" in week1 and HEADING not in week1
        assert HEADING in week2
        told = week2.split(HEADING, 1)[1]
        assert "Retracted" in told and "Passive transfer" in told
        if crossref_only:  # the notice's DOI is the link
            assert "https://doi.org/10.5555/retraction.jci" in told and "Corrected" not in told
        else:
            assert "Corrected" in told and "https://pubmed.ncbi.nlm.nih.gov/40000001/" in told
    assert "cy@example.org" not in mails  # never sent the paper, nothing new: no digest
