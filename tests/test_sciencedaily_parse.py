"""Tests for the ScienceDaily feed and story parsers.

Corpus feeds are real snapshots read by path (skipped when the folder is absent); story pages
are hand-written fixtures in tests/fixtures/sciencedaily/, shaped like real story pages.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from crawler.items import Paper
from crawler.normalise import title_fingerprint
from spiders import feed_safe
from spiders.sciencedaily_parse import (
    NewsFeedError,
    StoryPageError,
    parse_news_feed,
    parse_story,
    story_summary,
)
from tests.support.corpus import CORPUS

FIXTURES = Path(__file__).parent / "fixtures" / "sciencedaily"
EARLY = "sciencedaily/sciencedaily_all_2020-02-10T0643EST.xml"
LATE = "sciencedaily/sciencedaily_all_2020-02-10T1103EST.xml"
FEED_URL = "https://www.sciencedaily.com/rss/health_medicine/fibromyalgia.xml"
STORY_URL = "https://www.sciencedaily.com/releases/2021/07/210701120626.htm"
SOURCE = "sciencedaily-fibromyalgia"


def corpus(name: str) -> bytes:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"corpus file absent: {path}")
    return path.read_bytes()


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def story(name: str) -> list[Paper]:
    return parse_story(fixture(name), STORY_URL, SOURCE)


# --- feeds: real snapshots -------------------------------------------------------------------


@pytest.mark.parametrize("name", [EARLY, LATE])
def test_corpus_feed_yields_every_story(name: str) -> None:
    items = parse_news_feed(corpus(name), "https://www.sciencedaily.com/rss/all.xml")
    assert len(items) == 60
    assert len({item.url for item in items}) == 60
    for item in items:
        assert item.url.startswith("https://www.sciencedaily.com/releases/20")
        assert item.guid == item.url  # guid isPermaLink="true" repeats the link
        assert item.title and "&#039;" not in item.title
        # The "<!-- more -->" marker ending every description is markup, not text.
        assert item.summary and "<" not in item.summary and "more -->" not in item.summary
        assert item.published is not None and item.published.tzinfo is UTC


def test_corpus_feed_item_fields() -> None:
    items = parse_news_feed(corpus(EARLY), "https://www.sciencedaily.com/rss/all.xml")
    first = items[0]
    assert first.url == "https://www.sciencedaily.com/releases/2020/02/200209155505.htm"
    assert first.title == (
        "First-of-its-kind hydrogel platform enables on-demand production of medicines, chemicals"
    )
    assert "portable ''biofactories'' embedded" in (first.summary or "")
    assert first.summary and first.summary.endswith("small-molecule compounds.")
    # pubDate "Sun, 09 Feb 2020 15:55:05 EST" is 20:55:05 UTC.
    assert first.published == datetime(2020, 2, 9, 20, 55, 5, tzinfo=UTC)
    titles = {item.title for item in items}
    assert "Cuttlefish eat less for lunch when they know there'll be shrimp for dinner" in titles


def test_corpus_snapshots_overlap_by_fifty_links() -> None:
    base = "https://www.sciencedaily.com/rss/all.xml"
    early = [item.url for item in parse_news_feed(corpus(EARLY), base)]
    late = [item.url for item in parse_news_feed(corpus(LATE), base)]
    assert len(set(early) & set(late)) == 50
    # Ten new stories were pushed on top and the ten oldest fell off the end.
    assert late[10:] == early[:50]
    assert not set(late[:10]) & set(early)


# --- feeds: hand-made ------------------------------------------------------------------------


def test_feed_resolves_relative_links_and_skips_unusable_ones() -> None:
    items = parse_news_feed(fixture("feed_fibromyalgia.xml"), FEED_URL)
    assert [item.url for item in items] == [
        STORY_URL,
        "https://www.sciencedaily.com/releases/2021/06/210615101010.htm",
    ]
    assert items[1].guid == "sd-210615101010"
    # "Thu, 01 Jul 2021 12:06:26 EDT" is 16:06:26 UTC.
    assert items[0].published == datetime(2021, 7, 1, 16, 6, 26, tzinfo=UTC)


def test_feed_text_is_plain_and_keeps_what_was_escaped() -> None:
    hostile = parse_news_feed(fixture("feed_fibromyalgia.xml"), FEED_URL)[1]
    # The title is text: its escaped "<b>" and "<" are characters, not markup.
    assert hostile.title == "Patients' <b> tags & 1 < 2"
    # The description is HTML: the script goes, double-escaped text stays escaped once.
    assert hostile.summary == "Escaped markup &lt;kept&gt;"


def test_feed_guid_falls_back_to_link_and_dates_may_be_missing() -> None:
    body = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
        b"<item><title>x</title><link>https://www.sciencedaily.com/releases/a.htm</link></item>"
        b"</channel></rss>"
    )
    (item,) = parse_news_feed(body, FEED_URL)
    assert item.guid == "https://www.sciencedaily.com/releases/a.htm"
    assert item.published is None
    assert item.summary is None


def test_feed_without_items_is_empty_not_an_error() -> None:
    body = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'
    assert parse_news_feed(body, FEED_URL) == []


def test_xml_bomb_is_refused_before_feedparser_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("feedparser saw a document with entity declarations")

    monkeypatch.setattr(feed_safe.feedparser, "parse", must_not_parse)
    with pytest.raises(NewsFeedError, match="entity declarations are not allowed"):
        parse_news_feed(fixture("feed_xml_bomb.xml"), FEED_URL)


def test_corpus_entity_in_doctype_is_refused() -> None:
    body = corpus("malformed_feeds/feedparser_entity_in_doctype.xml")
    assert b"<!ENTITY" in body
    with pytest.raises(NewsFeedError, match="entity declarations are not allowed"):
        parse_news_feed(body, FEED_URL)


@pytest.mark.parametrize(
    "body",
    [fixture("not_a_feed.html"), b"", b"   \n", b"Service Unavailable"],
    ids=["html-page", "empty", "blank", "plain-text"],
)
def test_non_feed_is_refused(body: bytes) -> None:
    with pytest.raises(NewsFeedError, match="not a news feed"):
        parse_news_feed(body, FEED_URL)
    assert issubclass(NewsFeedError, ValueError)


# --- story pages -----------------------------------------------------------------------------


def test_story_with_one_reference() -> None:
    (paper,) = story("story_jci144201.html")
    assert paper.source_id == SOURCE
    assert (paper.origin, paper.sighting_kind, paper.url) == ("news", "news", STORY_URL)
    assert paper.seen_title == "Fibromyalgia likely the result of autoimmune problems"
    assert paper.doi == "10.1172/JCI144201"
    assert paper.title == "Passive transfer of fibromyalgia symptoms from patients to mice"
    assert paper.journal == "Journal of Clinical Investigation"
    assert paper.published == date(2021, 1, 1)  # year-only: "2021; 131 (13)"
    assert paper.authors == ["Andreas Goebel", "Clive Gentry", "Ulf Grote", "Camilla I Svensson"]
    # The story's summary is the journalist's, never the paper's abstract.
    assert paper.abstract is None


def test_story_summary() -> None:
    meta = story_summary(fixture("story_jci144201.html"))
    assert meta.headline == "Fibromyalgia likely the result of autoimmune problems"
    assert meta.date_posted == date(2021, 7, 1)
    assert meta.source == "King's College London"
    assert meta.abstract and meta.abstract.startswith("Antibodies from people with fibromyalgia")


def test_story_with_two_references() -> None:
    first, second = story("story_two_references.html")
    assert first.doi == "10.5555/art.2022.0412"  # from the https://doi.org/ link
    # An <i> inside the title is part of the title, not the journal.
    assert first.title == "Gut commensals prime autoreactive T cells in Bacteroides-colonised mice"
    assert first.journal == "Arthritis & Rheumatology"
    assert first.authors == ["Marie Côté", "Jean-Luc Tremblay", "Aisha Rahman"]
    assert first.published == date(2022, 1, 1)
    # Printed "DOI: ..." text without a link; the DOI's own brackets survive.
    assert second.doi == "10.5555/S2665-9913(21)00123-4"
    assert second.journal == "The Lancet Rheumatology"
    assert second.authors == ["Wei Zhang", "Priya Natarajan"]  # "et al." dropped
    assert second.published == date(2021, 1, 1)
    assert first.seen_title == second.seen_title == "Two studies tie gut bacteria to joint pain"


def test_story_without_references_uses_dois_in_the_text() -> None:
    papers = story("story_doi_in_text.html")
    # "(doi: 10.5555/PR9...963)." loses its ")."; the link's "%2F" is decoded.
    assert [p.doi for p in papers] == [
        "10.5555/PR9.0000000000000963",
        "10.5555/pr9.0000000000000971",
    ]
    assert all(p.title is None and p.journal is None for p in papers)
    assert all(p.seen_title == "Sleep loss worsens widespread pain" for p in papers)


def test_story_text_dois_are_deduplicated_case_insensitively() -> None:
    body = (
        b'<html><body><h1 id="headline">H</h1><div id="text"><p>doi:10.5555/ABC.1</p>'
        b'<p><a href="https://doi.org/10.5555/abc.1">again</a></p></div></body></html>'
    )
    assert [p.doi for p in parse_story(body, STORY_URL, SOURCE)] == ["10.5555/ABC.1"]


def test_story_without_story_text_searches_the_whole_page() -> None:
    body = b'<html><body><h1 id="headline">H</h1><p>See DOI: 10.5555/whole.page</p></body></html>'
    assert [p.doi for p in parse_story(body, STORY_URL, SOURCE)] == ["10.5555/whole.page"]


def test_story_without_any_doi_is_kept_as_one_news_paper() -> None:
    (paper,) = story("story_no_doi.html")
    assert paper.doi is None
    assert paper.title is None
    assert paper.seen_title == "Walking groups ease chronic pain"
    assert (paper.origin, paper.url) == ("news", STORY_URL)


def test_reference_without_doi_keeps_its_title_for_matching() -> None:
    (paper,) = story("story_reference_no_doi.html")
    assert paper.doi is None
    assert paper.title == "Thyroid autoimmunity in women with fibromyalgia syndrome"
    assert title_fingerprint(paper.title) is not None
    assert paper.journal == "Clinical Rheumatology Examples"
    assert paper.published == date(2009, 1, 1)
    assert paper.seen_title == "Thyroid antibodies common in fibromyalgia"


def test_hostile_story_content_stays_text() -> None:
    (paper,) = story("story_hostile.html")
    # Escaped markup is kept as the characters shown; live script and img are gone.
    assert paper.seen_title == (
        'Pain & <script>alert("escaped")</script> relief for IL-6 < 5 pg/mL'
    )
    assert paper.title == "Cytokines <i>really</i> matter"
    assert paper.authors == ["Eve <Attacker>", "Bob Builder"]
    assert paper.journal == "Journal of Tests"
    # The javascript: link is no DOI; the percent-encoded one decodes to text.
    assert paper.doi == "10.5555/hostile<1>"
    text = " ".join(str(v) for v in vars(paper).values())
    for live in ('alert("live")', "onerror", "steal()", "Mallory", "display:none", "onclick"):
        assert live not in text


def test_hostile_story_summary() -> None:
    meta = story_summary(fixture("story_hostile.html"))
    assert meta.source == "Evil <b>Institute</b>"
    assert meta.date_posted is None  # "February 30, 2021" is no date


def test_story_charset_from_meta_and_utf8_default() -> None:
    latin1 = '<html><head><meta charset="iso-8859-1"></head><body><h1 id="headline">Université</h1>'
    utf8 = '<html><body><h1 id="headline">Université</h1>'
    assert story_summary(latin1.encode("latin-1")).headline == "Université"
    # No declaration: UTF-8, not libxml2's Latin-1 default ("UniversitÃ©").
    assert story_summary(utf8.encode("utf-8")).headline == "Université"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"  \n ",
        b"<html><body><h1>Page Not Found</h1></body></html>",
        # No <body>: lxml's fragment parser raised AssertionError on the head (issue 12 A9).
        b'<html><head><title id="headline">x</title></head></html>',
        b'<html><head><meta id="text"><link id="journal_references"></head></html>',
    ],
    ids=["empty", "blank", "not-a-story", "head-title-landmark", "head-only-landmarks"],
)
def test_non_story_page_is_refused(body: bytes) -> None:
    with pytest.raises(StoryPageError):
        parse_story(body, STORY_URL, SOURCE)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("story_*.html")))
def test_every_story_paper_is_news_with_a_headline(name: str) -> None:
    papers = story(name)
    assert papers
    for paper in papers:
        assert (paper.origin, paper.sighting_kind, paper.source_id) == ("news", "news", SOURCE)
        assert paper.seen_title
        assert paper.abstract is None


def test_broken_feed_that_crashed_feedparser_is_a_news_feed_error() -> None:
    """feedparser itself raised KeyError on this (issue 12 A9)."""
    with pytest.raises(NewsFeedError):
        parse_news_feed(b"<channel<item<link</item</link>", FEED_URL)


def test_feed_item_with_a_link_too_long_to_record_is_skipped() -> None:
    """followed_links.url holds 2,000 characters; a longer story link could never be recorded
    as followed (PostgreSQL refused the run's whole bookkeeping), so it is not followed."""
    long_link = "https://www.sciencedaily.com/releases/" + "x" * 2000 + ".htm"
    body = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>SD</title>'
        f"<item><title>Long</title><link>{long_link}</link></item>"
        f"<item><title>Fine</title><link>{STORY_URL}</link></item>"
        "</channel></rss>"
    ).encode()
    assert [item.url for item in parse_news_feed(body, FEED_URL)] == [STORY_URL]
