"""One work across its versions, end to end with the real CLI on SQLite and PostgreSQL.

Week 1 a medRxiv preprint (v1 and v2 on the same details page) is crawled from a fake
api.biorxiv.org and sent to two subscribers. Then its journal version arrives through a fake
PubMed, and the lifecycle watch learns that one is the other: from Crossref's
``relation.is-preprint-of`` on the preprint, or from medRxiv's ``pubs`` listing. Week 2 the two
are told once, under "Updates on papers you were sent", that the preprint is now published in
Pain, and are not sent the article as new; a subscriber who joined in week 2 gets the article
as one new paper with its preprint history. Week 3 repeats nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from crawler.db.engine import make_engine, transaction
from crawler.db.models import PaperEventRow, PaperVersionRow
from tests.support.config import write_toml
from tests.support.eutils import FakeEutils, Record, RecordList
from tests.support.httpserver import LocalHTTPServer
from tests.support.lifecycle import inbox, run_cli

pytestmark = pytest.mark.slow

HEADING = "Updates on papers you were sent"
PREPRINT = "10.1101/2026.10.01.26300001"
ARTICLE = "10.1016/j.pain.2026.11.001"
TITLE = "IgG from fibromyalgia patients transfers pain to mice"
JSON = "application/json"


def _preprint(version: int, posted: str) -> dict[str, str]:
    return {
        "title": TITLE, "authors": "Goebel, A.; Krock, E.; Svensson, C. I.",
        "author_corresponding": "Andreas Goebel", "author_corresponding_institution": "Liverpool",
        "doi": PREPRINT, "date": posted, "version": str(version), "type": "new results",
        "license": "cc_by", "category": "rheumatology", "jatsxml": "NA",
        "abstract": "Serum IgG from patients with fibromyalgia induced pain-like behaviour.",
        "funder": "NA", "published": "NA", "server": "medRxiv",
    }  # fmt: skip


def _envelope(collection: list[dict[str, str]]) -> bytes:
    n = len(collection)
    messages = [{"status": "ok", "cursor": 0, "count": n, "total": str(n)}]
    return json.dumps({"messages": messages, "collection": collection}).encode()


ARTICLE_XML = (
    '<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">40000010'
    "</PMID><Article><Journal><Title>Pain</Title><JournalIssue><PubDate><Year>2026</Year>"
    f"</PubDate></JournalIssue></Journal><ArticleTitle>{TITLE}.</ArticleTitle>"
    '<PublicationTypeList><PublicationType UI="D016428">Journal Article</PublicationType>'
    "</PublicationTypeList></Article></MedlineCitation><PubmedData><ArticleIdList>"
    f'<ArticleId IdType="pubmed">40000010</ArticleId><ArticleId IdType="doi">{ARTICLE}'
    "</ArticleId></ArticleIdList></PubmedData></PubmedArticle>"
)


class FakePreprintApis:
    """api.biorxiv.org (details, pubs) and Crossref (notices, one work) on 127.0.0.1."""

    def __init__(self, server: LocalHTTPServer, learn_from: str) -> None:
        today = datetime.now(UTC).date()
        details = f"/biorxiv/details/medrxiv/{today - timedelta(days=30)}/{today}/0/json"
        posted = [str(today - timedelta(days=3)), str(today - timedelta(days=1))]
        server.add(details, _envelope([_preprint(1, posted[0]), _preprint(2, posted[1])]),
                   content_type=JSON)  # fmt: skip
        self.pubs = f"/biorxiv/pubs/medrxiv/{today - timedelta(days=60)}/{today}/0/json"
        link = {"preprint_doi": PREPRINT, "published_doi": ARTICLE, "published_journal": "Pain",
                "preprint_platform": "medRxiv", "preprint_date": posted[0],
                "published_date": str(today), "preprint_title": TITLE}  # fmt: skip
        pubs = _envelope([link] if learn_from == "pubs" else [])
        server.add(self.pubs, pubs, content_type=JSON)
        # The next watch reads from its last success on: the same link, learned again.
        server.add(f"/biorxiv/pubs/medrxiv/{today}/{today}/0/json", pubs, content_type=JSON)
        empty = {"status": "ok", "message-type": "work-list",
                 "message": {"total-results": 0, "next-cursor": "c", "items": []}}  # fmt: skip
        server.add("/crossref/works", json.dumps(empty).encode(), content_type=JSON)
        work = {"status": "ok", "message-type": "work", "message": {
            "DOI": PREPRINT, "type": "posted-content", "title": [TITLE],
            "relation": {"is-preprint-of": [{"id-type": "doi", "id": ARTICLE.upper(),
                                             "asserted-by": "subject"}]},
        }}  # fmt: skip
        if learn_from == "crossref":
            server.add(f"/crossref/works/{PREPRINT}", json.dumps(work).encode(), content_type=JSON)
        else:
            server.add(f"/crossref/works/{PREPRINT}", b"Resource not found.", status=404)


@pytest.mark.parametrize("learn_from", ["crossref", "pubs"])
def test_a_published_preprint_is_one_work_told_once(
    db_url: str, tmp_path: Path, learn_from: str
) -> None:
    today = datetime.now(UTC).date()
    # Digest periods a day apart: every paper stays within a first digest's lookback (7 days),
    # so the subscriber who joins for the second digest is offered both versions.
    weeks = [today + timedelta(days=1 + n) for n in range(3)]
    with LocalHTTPServer() as server:
        apis = FakePreprintApis(server, learn_from)
        eutils = FakeEutils(RecordList([Record("40000010", today, ARTICLE_XML.encode())]))
        config = write_toml(
            tmp_path / "litwatch.toml",
            {"database": {"url": db_url}, "email": {"outbox_dir": str(tmp_path / "outbox")},
             "crawl": {"download_delay": 0, "autothrottle": False},
             "pubmed": {"base_url": server.url("/eutils/")},
             "crossref": {"base_url": server.url("/crossref/"), "delay": 0.0}},
            [{"id": "medrxiv-rheumatology", "kind": "biorxiv", "server": "medrxiv",
              "categories": ["rheumatology"], "base_url": server.url("/biorxiv/"),
              "topics": ["fibromyalgia"]},
             {"id": "pubmed-fibromyalgia", "kind": "pubmed", "query": "fibromyalgia",
              "base_url": eutils.install(server), "topics": ["fibromyalgia"]}],
        )  # fmt: skip
        run_cli(config, "crawl", "--no-progress", "medrxiv-rheumatology")
        for who in ("ada@example.org", "bob@example.org"):
            run_cli(config, "subscribers", "add", who, "--topics", "fibromyalgia")
        run_cli(config, "digest", "send", "--period-end", weeks[0].isoformat())
        run_cli(config, "subscribers", "add", "cy@example.org", "--topics", "fibromyalgia")
        run_cli(config, "crawl", "--no-progress", "pubmed-fibromyalgia")
        assert "1 new events" in run_cli(config, "watch")
        assert "0 new events" in run_cli(config, "watch")  # learned again: nothing new
        for week in weeks[1:]:
            run_cli(config, "digest", "send", "--period-end", week.isoformat())
        asked = [r.path for r in server.log]
    assert f"/crossref/works/{PREPRINT}" in asked and apis.pubs in asked
    mails = inbox(tmp_path / "outbox", flatten=True)
    for who in ("ada@example.org", "bob@example.org"):
        week1, week2 = mails[who]  # week 3 has nothing to tell: no digest
        assert TITLE in week1 and HEADING not in week1
        assert "Preprint (not peer reviewed)" in week1
        assert HEADING in week2 and week2.count(TITLE) == 1  # told, not sent again
        told = week2.split(HEADING, 1)[1]
        assert "Now published in Pain" in told and f"https://doi.org/{ARTICLE}" in told
        assert "0 new papers" in week2 or "No new papers" in week2
    (joined,) = mails["cy@example.org"]
    assert joined.count(TITLE) == 1 and HEADING not in joined
    assert "First posted as a preprint on" in joined and "(medRxiv)" in joined
    assert "Preprint (not peer reviewed)" not in joined
    engine = make_engine(db_url)
    try:
        with transaction(engine) as session:
            links = [(r.preprint_doi, r.published_doi, r.source)
                     for r in session.scalars(select(PaperVersionRow))]  # fmt: skip
            published = list(session.scalars(
                select(PaperEventRow.type).where(PaperEventRow.type == "published")))  # fmt: skip
    finally:
        engine.dispose()
    source = "crossref" if learn_from == "crossref" else "biorxiv"
    assert links == [(PREPRINT, ARTICLE, source)] and published == ["published"]
    shown = run_cli(config, "papers", "show", PREPRINT)
    assert f"Journal version: {ARTICLE} (Pain)" in shown
    exported = [json.loads(line) for line in run_cli(config, "papers", "export").splitlines()]
    assert len(exported) == 2  # v1 and v2 are one paper; the article is the other
    for paper in exported:
        assert paper["versions"]["published_doi"] == ARTICLE
        assert [p["doi"] for p in paper["versions"]["preprints"]] == [PREPRINT]
        assert paper["versions"]["preprints"][0]["server"] == "medRxiv"
