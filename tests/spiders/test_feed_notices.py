"""spiders.feed_notices: feed items whose titles announce a notice, matched strictly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select

from crawler.db.engine import transaction
from crawler.db.models import PaperEventRow, PaperRow
from crawler.db.store import upsert
from crawler.items import Paper
from crawler.normalise import title_fingerprint
from spiders.feed_notices import notice_event
from spiders.feed_parse import parse_feed
from tests.support.corpus import corpus_path

TITLE = "Passive transfer of fibromyalgia symptoms from patients to mice"


def item(
    title: str, doi: str | None = "10.1172/jci.notice.1", abstract: str | None = None
) -> Paper:
    return Paper(source_id="jci", origin="feed", title=title, doi=doi, abstract=abstract,
                 url="https://www.jci.org/notice/1")  # fmt: skip


@pytest.mark.parametrize(
    ("title", "kind"),
    [
        (f"Correction to: {TITLE}", "correction_of"),
        (f"Erratum to “{TITLE}”", "correction_of"),
        (f"Corrigendum: {TITLE}", "correction_of"),
        (f"Retraction Note: {TITLE}", "retraction_of"),
        (f"Retraction: {TITLE}", "retraction_of"),
        (f"Expression of Concern: {TITLE}", "concern_of"),
    ],
)
def test_notice_titles_name_their_paper_by_title(title: str, kind: str) -> None:
    event = notice_event(item(title))
    assert event is not None
    assert (event.type, event.paper_type != kind) == (kind, True)
    assert event.target_title_key == title_fingerprint(TITLE) and event.target_doi is None
    assert event.notice_doi == "10.1172/jci.notice.1" and event.notice_title == title
    assert event.notice_url == "https://www.jci.org/notice/1" and event.source == "feed"


def test_a_doi_named_in_the_description_is_the_target() -> None:
    event = notice_event(item(f"Correction: {TITLE}", abstract="Corrects doi:10.1172/JCI144201."))
    assert event is not None
    assert event.target_doi == "10.1172/jci144201" and event.target_title_key is None


def test_retracted_marks_the_article_itself() -> None:
    event = notice_event(item(f"RETRACTED: {TITLE}", doi="10.1016/j.jaut.2020.1"))
    assert event is not None
    assert (event.type, event.target_doi, event.notice_doi) == (
        "retracted", "10.1016/j.jaut.2020.1", None
    )  # fmt: skip


@pytest.mark.parametrize(
    "title",
    [
        "Correction to the widespread pain index in fibromyalgia criteria",  # research title
        "Retracted",  # names no article
        "Correction: short",  # too short to identify a paper
        TITLE,
        "Retractions in rheumatology: a bibliometric study of autoimmunity papers",
    ],
)
def test_other_titles_announce_nothing(title: str) -> None:
    assert notice_event(item(title)) is None


def feed(*entries: tuple[str, str]) -> bytes:
    items = "".join(
        f"<item><title>{t}</title><link>https://www.jci.org/{n}</link>"
        f"<description>{d}</description></item>"
        for n, (t, d) in enumerate(entries)
    )
    channel = f"<channel><title>JCI</title>{items}</channel>"
    return f'<?xml version="1.0"?><rss version="2.0">{channel}</rss>'.encode()


def test_a_feed_correction_reaches_the_paper_it_names_once(engine: Engine) -> None:
    upsert(engine, [Paper(source_id="s", origin="pubmed", pmid="34196305", title=TITLE,
                          doi="10.1172/JCI144201")])  # fmt: skip
    body = feed(
        (f"Correction to: {TITLE}", "A figure was corrected."),
        ("Expression of concern: a paper litwatch never stored about autoimmunity", "x"),
    )
    papers = parse_feed(body, "https://www.jci.org/rss", "jci").papers
    assert [len(p.events) for p in papers] == [1, 1]
    upsert(engine, papers, now=datetime(2026, 6, 1, tzinfo=UTC))
    upsert(engine, papers, now=datetime(2026, 6, 2, tzinfo=UTC))  # learned again: still once
    with transaction(engine) as session:
        held = session.scalar(select(PaperRow.id).where(PaperRow.pmid == "34196305"))
        rows = [(r.paper_id, r.type, r.source) for r in session.scalars(select(PaperEventRow))]
    assert rows == [(held, "corrected", "feed")]


def test_two_papers_with_the_same_title_get_no_event(engine: Engine) -> None:
    upsert(engine, [
        Paper(source_id="s", origin="pubmed", doi="10.5555/one", title=TITLE),
        Paper(source_id="s", origin="feed", doi="10.5555/other", title=TITLE + "."),
    ])  # fmt: skip
    with transaction(engine) as session:  # two papers (their DOIs differ), one fingerprint
        assert len(list(session.scalars(select(PaperRow)))) == 2
    papers = parse_feed(feed((f"Retraction: {TITLE}", "")), "https://x.org/rss", "x").papers
    upsert(engine, papers)
    with transaction(engine) as session:
        assert list(session.scalars(select(PaperEventRow))) == []


def test_a_real_feed_lists_two_corrigenda_and_no_other_notice() -> None:
    path = corpus_path("journal_feeds/microbiologysociety_ijsem_rss2_2021-12-21.xml")
    papers = parse_feed(path.read_bytes(), "https://www.microbiologyresearch.org/", "ijsem").papers
    noticed = [p for p in papers if p.events]
    assert len(papers) > 20 and len(noticed) == 2
    assert all(p.title and p.title.startswith("Corrigendum: ") for p in noticed)
    assert {e.type for p in noticed for e in p.events} == {"correction_of"}
