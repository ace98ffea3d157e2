"""Digest model, sections and rendering (digests.model, digests.render).

Golden files: ``LITWATCH_UPDATE_GOLDEN=1 pytest tests/test_render.py`` rewrites
tests/golden/digest.{txt,html}; read the diff before committing it, subscribers read this.
"""

from __future__ import annotations

import dataclasses
import os
import re
from datetime import date
from pathlib import Path

import lxml.html
import pytest

from digests.model import (
    OVERLAP_KEY,
    OVERLAP_TITLE,
    Digest,
    DigestLinks,
    Entry,
    NewsEntry,
    PressLink,
    build_news,
    build_sections,
    doi_url,
    excerpt,
    paper_url,
)
from digests.render import (
    MAX_HTML_BYTES,
    TEXT_MAX_ENTRIES,
    TEXT_WIDTH,
    http_url,
    render,
    render_web,
)

GOLDEN = Path(__file__).parent / "golden"
TOPICS = {"fibromyalgia": "Fibromyalgia", "autoimmunity": "Autoimmunity"}
LINKS = DigestLinks(
    unsubscribe="https://litwatch.example.org/unsubscribe/tok123?s=1&m=2",
    preferences="https://litwatch.example.org/preferences/tok123",
    archive="https://litwatch.example.org/digests/2025-03-10/tok123",
    home="https://litwatch.example.org/",
)
HOSTILE_TITLE = "<script>alert(1)</script> Anti-TPO & \"thyroid\" antibodies in O'Brien's cohort"

MA_ABSTRACT = (
    "Background: Several small studies have reported autoantibodies against satellite glial "
    "cells in people with fibromyalgia. Methods: We searched MEDLINE, Embase and CENTRAL to "
    "January 2025 for studies measuring serum autoantibodies in fibromyalgia and controls. "
    "Results: Fourteen studies (2,113 participants) were included; pooled prevalence was "
    "higher in fibromyalgia (odds ratio 2.4, 95% CI 1.6 to 3.5) with high heterogeneity."
)
PREPRINT_ABSTRACT = (
    "In a cohort of 412 people with early systemic lupus erythematosus, those with serum "
    "IL-6 <5 pg/mL at diagnosis had fewer flares over two years."
)


def entry(paper_id: int, title: str, **kw: object) -> Entry:
    """An Entry with dull defaults; tests override what they look at."""
    fields: dict[str, object] = {
        "url": f"https://pubmed.ncbi.nlm.nih.gov/{paper_id}/",
        "doi": None,
        "pmid": str(paper_id),
        "pmcid": None,
        "authors": (),
        "journal": None,
        "published": date(2025, 3, 1),
        "publication_types": ("Journal Article",),
        "topics": ("fibromyalgia",),
        "abstract": None,
        "press": (),
        "preprint": False,
    }
    fields.update(kw)
    return Entry(paper_id=paper_id, title=title, **fields)  # type: ignore[arg-type]


def golden_entries() -> list[Entry]:
    """Six papers covering every feature a subscriber can meet."""
    return [
        entry(
            101,
            "Satellite glial cell autoantibodies in fibromyalgia: a systematic review and "
            "meta-analysis",
            url=paper_url("10.1016/j.jaut.2025.103301", "40100101"),
            doi="10.1016/j.jaut.2025.103301",
            pmid="40100101",
            pmcid="PMC11900101",
            authors=("Åsa Sørensen", "Jürgen Müller", "Zoë Łukasiewicz", "Ngozi Okafor"),
            journal="Journal of Autoimmunity",
            published=date(2025, 3, 4),
            publication_types=("Journal Article", "Meta-Analysis", "Systematic Review", "Review"),
            topics=("fibromyalgia", "autoimmunity"),
            abstract=MA_ABSTRACT,
        ),
        entry(
            102,
            "Low-dose naltrexone for fibromyalgia: a randomized, double-blind, "
            "placebo-controlled trial",
            url=paper_url("10.1001/jamanetworkopen.2025.0102", "40100102"),
            doi="10.1001/jamanetworkopen.2025.0102",
            pmid="40100102",
            authors=("Lars Nilsson", "María José Gómez-Ruiz"),
            journal="JAMA Network Open",
            published=date(2025, 3, 1),
            publication_types=("Clinical Trial", "Journal Article", "Randomized Controlled Trial"),
            topics=("fibromyalgia",),
            abstract="Low-dose naltrexone did not reduce pain more than placebo at 12 weeks.",
            press=(
                PressLink(
                    "Old drug, new use? Naltrexone trial for fibromyalgia pain",
                    "https://www.sciencedaily.com/releases/2025/03/250305101010.htm",
                    "ScienceDaily",
                ),
                PressLink("Click here", "javascript:alert(document.cookie)", "Evil <Outlet>"),
            ),
        ),
        entry(
            103,
            "Serum IL-6 <5 pg/mL and flare risk in early lupus",
            url=paper_url("10.1101/2025.02.14.25322345", None),
            doi="10.1101/2025.02.14.25322345",
            pmid=None,
            authors=("Wei Chen", "Priya Raghavan"),
            journal="medRxiv",
            published=date(2025, 2, 28),
            publication_types=(),
            topics=("autoimmunity",),
            abstract=PREPRINT_ABSTRACT,
            preprint=True,
        ),
        entry(
            104,
            "Retraction: Small fibre pathology in fibromyalgia",
            url=paper_url("10.1093/brain/awaf104", "40100104"),
            doi="10.1093/brain/awaf104",
            pmid="40100104",
            journal="Brain",
            published=date(2025, 3, 3),
            publication_types=("Retraction of Publication",),
            topics=("fibromyalgia",),
        ),
        entry(
            105,
            HOSTILE_TITLE,
            url=paper_url(None, "40100105"),
            pmid="40100105",
            authors=("Seán O'Brien", "Kåre Ødegård", "Nguyễn Thị Hương"),
            journal="Clinical & Experimental Rheumatology",
            published=date(2025, 3, 2),
            topics=("autoimmunity",),
            abstract="<b>Not bold.</b> Anti-TPO titres above 1:100 & TSH <0.4 mU/L were common.",
        ),
        entry(
            106,
            "Neuroimmune mechanisms of chronic widespread pain after infection",
            url=paper_url("10.3389/fimmu.2025.1510106", "40100106"),
            doi="10.3389/fimmu.2025.1510106",
            pmid="40100106",
            pmcid="PMC11900106",
            authors=("Ana Pérez",),
            journal="Frontiers in Immunology",
            published=None,
            publication_types=("Journal Article", "Review"),
            # long-covid is not one of the subscriber's topics: it must be ignored.
            topics=("long-covid", "autoimmunity", "fibromyalgia"),
        ),
    ]


def make_digest(entries: list[Entry] | None = None, **kw: object) -> Digest:
    fields: dict[str, object] = {
        "subscriber_name": "Ana <b>Ruiz</b>",
        "subscriber_email": "ana@example.org",
        "period": date(2025, 3, 10),
        "period_start": date(2025, 3, 3),
        "links": LINKS,
        "format": "html",
    }
    fields.update(kw)
    sections = build_sections(golden_entries() if entries is None else entries, TOPICS)
    return Digest(sections=sections, **fields)  # type: ignore[arg-type]


def many_entries(n: int) -> list[Entry]:
    base = golden_entries()
    return [
        dataclasses.replace(
            base[i % 6], paper_id=1000 + i, title=f"Paper {i:03d}: {base[i % 6].title}"
        )
        for i in range(n)
    ]


def parse(html: str) -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(html)


def entry_titles(doc: lxml.html.HtmlElement) -> list[str]:
    return [p.text_content() for p in doc.find_class("title")]


# --- model ---------------------------------------------------------------------------------


def test_authors_short() -> None:
    assert entry(1, "t").authors_short == ""
    assert entry(1, "t", authors=("A",)).authors_short == "A"
    assert entry(1, "t", authors=("A", "B", "C")).authors_short == "A, B, C"
    assert entry(1, "t", authors=("A", "B", "C", "D")).authors_short == "A, B, C et al."
    assert entry(1, "t", authors=(" ", "A  B", "C")).authors_short == "A B, C"


def test_excerpt_cuts_at_a_word_boundary() -> None:
    assert excerpt(None) is None
    assert excerpt("  Short\n abstract. ") == "Short abstract."
    long = MA_ABSTRACT + " " + MA_ABSTRACT
    cut = excerpt(long)
    assert cut is not None and cut.endswith("…")
    body = cut[:-1]
    assert 250 < len(body) <= 300
    assert long.startswith(body)
    assert long[len(body)] == " " or long[len(body)] in ",;:."  # stopped before a word
    assert entry(1, "t", abstract=long).excerpt == cut


def test_identifier_urls() -> None:
    e = entry(1, "t", pmid="pmid: 0123", pmcid="pmc77", doi="10.1000/x")
    assert e.pubmed_url == "https://pubmed.ncbi.nlm.nih.gov/123/"
    assert e.pmc_url == "https://pmc.ncbi.nlm.nih.gov/articles/PMC77/"
    assert entry(1, "t", pmid=None).pubmed_url is None
    assert entry(1, "t", pmcid=None).pmc_url is None
    # "#" and "?" would otherwise end the DOI at the resolver.
    assert doi_url("10.1002/(SICI)1097#x?y") == "https://doi.org/10.1002/(SICI)1097%23x%3Fy"
    assert paper_url("doi:10.1000/ABC", "5") == "https://doi.org/10.1000/ABC"
    assert paper_url(None, "5") == "https://pubmed.ncbi.nlm.nih.gov/5/"
    assert paper_url(None, None, "https://example.org/a") == "https://example.org/a"


def test_build_sections_overlap_first_each_paper_once() -> None:
    sections = build_sections(golden_entries(), TOPICS)
    assert [s.key for s in sections] == [OVERLAP_KEY, "fibromyalgia", "autoimmunity"]
    assert sections[0].title == OVERLAP_TITLE
    ids = [[e.paper_id for e in s.entries] for s in sections]
    # Overlap: meta-analysis before review; fibromyalgia: RCT before the retraction notice;
    # autoimmunity: ordinary article before the preprint.
    assert ids == [[101, 106], [102, 104], [105, 103]]


def test_build_sections_follows_the_subscribers_topics() -> None:
    only_auto = build_sections(golden_entries(), {"autoimmunity": "Autoimmunity"})
    assert [s.key for s in only_auto] == ["autoimmunity"]
    # meta-analysis, review, plain article, preprint
    assert [e.paper_id for e in only_auto[0].entries] == [101, 106, 105, 103]
    # Order of topic_titles decides both section order and where a two-topic paper goes.
    extra = [entry(7, "x", topics=("long-covid", "fibromyalgia"))]
    swapped = build_sections(extra, {"long-covid": "Long COVID", "fibromyalgia": "FM"})
    assert [(s.key, len(s.entries)) for s in swapped] == [("long-covid", 1)]


def test_build_sections_drops_duplicates_and_unrelated() -> None:
    entries = [entry(1, "a"), entry(1, "a again"), entry(2, "b", topics=("long-covid",))]
    sections = build_sections(entries, TOPICS)
    assert [[e.title for e in s.entries] for s in sections] == [["a"]]


def test_section_order_within_a_tier_is_newest_then_title() -> None:
    entries = [
        entry(1, "beta", published=date(2025, 3, 1)),
        entry(2, "Alpha", published=date(2025, 3, 1)),
        entry(3, "old", published=date(2025, 1, 1)),
        entry(4, "undated", published=None),
        entry(5, "newest", published=date(2025, 3, 9)),
    ]
    (section,) = build_sections(entries, TOPICS)
    assert [e.title for e in section.entries] == ["newest", "Alpha", "beta", "old", "undated"]


def test_paper_count_counts_distinct_papers() -> None:
    digest = make_digest()
    assert digest.paper_count == 6
    doubled = dataclasses.replace(digest, sections=digest.sections + digest.sections[:1])
    assert doubled.paper_count == 6


# --- subject -------------------------------------------------------------------------------


def test_subject_uses_only_count_and_date() -> None:
    hostile = make_digest(subscriber_name="Eve\r\nBcc: all@example.org")
    assert render(hostile).subject == "litwatch weekly digest: 6 new papers (2025-03-10)"
    one = make_digest([entry(1, "Only\nthis")])
    assert render(one).subject == "litwatch weekly digest: 1 new paper (2025-03-10)"
    empty = make_digest([])
    assert render(empty).subject == "litwatch weekly digest: nothing new (2025-03-10)"


# --- In the news (issue 12, B1) -------------------------------------------------------------

STORY = NewsEntry(
    headline='Walking groups <em>ease</em> "pain"',
    url="https://www.sciencedaily.com/releases/2025/03/250305.htm",
    site="ScienceDaily",
    outlet="Example Health Trust & Co",
    published=date(2025, 3, 5),
    summary="People who joined a weekly walking group reported less pain.",
    topics=("fibromyalgia",),
    news_id=7,
)


def legacy(paper_id: int) -> Entry:
    """A story an older version stored as a nameless paper, as selection marks it."""
    story = NewsEntry(
        "Yoga in pain clinics", "https://www.sciencedaily.com/r/1.htm", "ScienceDaily",
        None, None, None, ("fibromyalgia",), paper_id=paper_id,
    )  # fmt: skip
    return entry(paper_id, "(untitled)", pmid=None, url=story.url, story=story)


def test_news_is_its_own_section_never_a_paper() -> None:
    entries = [entry(1, "A real paper"), legacy(2)]
    news = build_news(entries, [STORY], ["fibromyalgia"])
    assert [n.headline for n in news] == [STORY.headline, "Yoga in pain clinics"]
    digest = make_digest(entries, news=news)
    assert digest.paper_count == 1 and not digest.is_empty
    rendered = render(digest)
    assert rendered.subject == "litwatch weekly digest: 1 new paper, 2 news stories (2025-03-10)"
    assert rendered.html is not None
    for part in (rendered.text, rendered.html):
        assert "(untitled)" not in part
        assert part.count("Yoga in pain clinics") == 1
    text = rendered.text
    assert text.index("A real paper") < text.index("\nIn the news\n-----------\n")
    assert '  - Walking groups <em>ease</em> "pain"' in text  # plain text, as written
    assert "    ScienceDaily · Example Health Trust & Co · 5 Mar 2025" in text
    assert f"    {STORY.url}" in text
    html = rendered.html
    page = parse(html)
    [head] = [td for td in page.xpath("//td") if td.text_content() == "In the news"]
    assert head is not None
    [link] = page.xpath(f'//a[@href="{STORY.url}"]')
    assert link.text_content() == STORY.headline  # escaped once, shown as written
    assert "&lt;em&gt;ease&lt;/em&gt;" in html and "&amp;lt;" not in html
    assert "Example Health Trust &amp; Co · 5 Mar 2025" in html


def test_news_follows_the_subscribers_topics_newest_first_and_stays_short() -> None:
    other = dataclasses.replace(STORY, url="https://e.org/2", topics=("autoimmunity",))
    older = dataclasses.replace(STORY, url="https://e.org/3", published=date(2025, 1, 1))
    many = [dataclasses.replace(STORY, url=f"https://e.org/m{i}") for i in range(20)]
    assert build_news([], [older, STORY, other], ["fibromyalgia"]) == (STORY, older)
    assert build_news([], [STORY, STORY], ["fibromyalgia"]) == (STORY,)  # each once
    assert len(build_news([], many, ["fibromyalgia"])) == 10
    only_news = make_digest([], news=(STORY,))
    assert render(only_news).subject == "litwatch weekly digest: 1 news story (2025-03-10)"
    assert "No new papers on your topics were added" in render(only_news).text


# --- HTML ----------------------------------------------------------------------------------


def test_html_escapes_stored_text_exactly_once() -> None:
    html = render(make_digest()).html
    assert html is not None
    doc = parse(html)
    assert doc.xpath("//script") == []
    assert HOSTILE_TITLE in entry_titles(doc)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "IL-6 &lt;5 pg/mL" in html
    assert "&amp;lt;" not in html and "&amp;amp;" not in html
    body = doc.text_content()
    assert "Serum IL-6 <5 pg/mL and flare risk in early lupus" in body
    assert "Hello Ana <b>Ruiz</b>," in body
    assert "Clinical & Experimental Rheumatology" in body
    assert doc.xpath("//b") == []


def test_html_links_are_http_only() -> None:
    doc = parse(render(make_digest()).html or "")
    hrefs = [a.get("href") for a in doc.iter("a")]
    assert hrefs and all(h.startswith(("https://", "http://")) for h in hrefs)
    # The javascript: press link is shown as text, not as a link.
    assert "Evil <Outlet>: Click here" in doc.text_content()
    assert "Evil <Outlet>: Click here" not in [a.text_content() for a in doc.iter("a")]


def test_html_entry_parts() -> None:
    doc = parse(render(make_digest()).html or "")
    (ma,) = [a for a in doc.iter("a") if a.text_content().startswith("Satellite glial")]
    assert ma.get("href") == "https://doi.org/10.1016/j.jaut.2025.103301"
    text = doc.text_content()
    assert "Åsa Sørensen, Jürgen Müller, Zoë Łukasiewicz et al." in text
    assert "Ngozi Okafor" not in text
    links = {(a.get("href"), a.text_content()) for a in doc.iter("a")}
    pmc = "https://pmc.ncbi.nlm.nih.gov/articles/PMC11900101/"
    assert (pmc, "Free full text (PMC)") in links
    # No DOI: the title links to PubMed.
    assert ("https://pubmed.ncbi.nlm.nih.gov/40100105/", HOSTILE_TITLE) in links
    press = "https://www.sciencedaily.com/releases/2025/03/250305101010.htm"
    assert (
        press,
        "ScienceDaily: Old drug, new use? Naltrexone trial for fibromyalgia pain",
    ) in links
    badges = {b.text_content(): b.get("class") for b in doc.find_class("badge")}
    assert badges["Meta-analysis"] == badges["Randomised controlled trial"] == "badge design"
    assert badges["Retraction notice"] == "badge warning"
    assert badges["Preprint (not peer reviewed)"] == "badge caution"


def test_html_footer_links() -> None:
    doc = parse(render(make_digest()).html or "")
    by_text = {a.text_content(): a.get("href") for a in doc.iter("a")}
    assert by_text["Unsubscribe"] == LINKS.unsubscribe
    assert by_text["Change topics or format"] == LINKS.preferences
    assert by_text["View in browser"] == LINKS.archive


def test_bad_digest_links_are_dropped() -> None:
    links = dataclasses.replace(LINKS, preferences="javascript:alert(1)")
    doc = parse(render(make_digest(links=links)).html or "")
    assert "javascript" not in lxml.html.tostring(doc, encoding="unicode")
    assert "Change topics or format" not in doc.text_content()


def test_unlinkable_entry_url_leaves_the_title_as_text() -> None:
    bad = entry(1, "A title", url="javascript:alert(1)", pmid=None)
    doc = parse(render(make_digest([bad])).html or "")
    assert entry_titles(doc) == ["A title"]
    assert doc.find_class("title")[0].find("a") is None


def test_css_is_inlined_and_layout_is_mail_safe() -> None:
    doc = parse(render(make_digest()).html or "")
    (container,) = doc.find_class("container")
    assert container.tag == "table" and "max-width:600px" in container.get("style", "")
    first_link = doc.find_class("title")[0].find("a")
    assert "color:" in first_link.get("style", "")
    styles = " ".join(s.text_content() for s in doc.iter("style"))
    assert "@media" in styles and ".title a" not in styles


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://example.org/a?b=1&c=2", True),
        ("HTTP://EXAMPLE.ORG/", True),
        ("javascript:alert(1)", False),
        (" javascript:alert(1)", False),
        ("java\tscript:alert(1)", False),
        ("data:text/html,hi", False),
        ("//evil.example/", False),
        ("ftp://example.org/file", False),
        ("https://exa mple.org/", False),
        ("http://[::1", False),
        ("", False),
        (None, False),
    ],
)
def test_http_url(url: str | None, ok: bool) -> None:
    assert (http_url(url) is not None) is ok


def test_text_only_subscribers_get_no_html() -> None:
    rendered = render(make_digest(format="text"))
    assert rendered.html is None
    assert "Serum IL-6 <5 pg/mL" in rendered.text


def test_500_entries_fit_under_the_clip_limit() -> None:
    entries = many_entries(500)
    digest = make_digest(entries)
    rendered = render(digest)
    html = rendered.html or ""
    assert len(html.encode()) <= MAX_HTML_BYTES
    doc = parse(html)
    shown = entry_titles(doc)
    ordered = [e.title for s in digest.sections for e in s.entries]
    assert 10 < len(shown) < 500
    assert shown == ordered[: len(shown)]  # dropped from the end, order kept
    (more,) = doc.find_class("more")
    assert more.text_content() == f"{500 - len(shown)} more papers — see the web version"
    assert more.find("a").get("href") == LINKS.archive
    assert {a.text_content() for a in doc.iter("a")} >= {"Unsubscribe", "View in browser"}
    # The text part lists the first TEXT_MAX_ENTRIES and says how many more.
    numbers = [int(n) for n in re.findall(r"^(\d+)\. +Paper", rendered.text, re.MULTILINE)]
    assert numbers == list(range(1, TEXT_MAX_ENTRIES + 1))
    assert f"{500 - TEXT_MAX_ENTRIES} more papers — see the web version:" in rendered.text


def test_web_version_lists_everything() -> None:
    page = render_web(make_digest(many_entries(120)))
    doc = parse(page)
    assert len(entry_titles(doc)) == 120
    assert not doc.find_class("more")
    assert "View in browser" not in doc.text_content()


def test_period_without_a_start_date() -> None:
    rendered = render(make_digest(period_start=None, subscriber_name=None))
    assert "New papers on your topics, added in the week to 10 Mar 2025." in rendered.text
    assert "Hello" not in rendered.text
    intro = parse(rendered.html or "").find_class("intro")
    assert [p.text_content() for p in intro] == [
        "New papers on your topics, added in the week to 10 Mar 2025."
    ]


def test_empty_digest_note() -> None:
    rendered = render(make_digest([]))
    assert "Nothing new this week" in parse(rendered.html or "").text_content()
    assert "Nothing new this week" in rendered.text
    assert "Unsubscribe:" in rendered.text


# --- text ----------------------------------------------------------------------------------


def test_text_part_reads_on_its_own() -> None:
    text = render(make_digest()).text
    flat = " ".join(text.split())  # undo the wrapping
    assert HOSTILE_TITLE in flat  # exactly as written: no escaping in the text part
    assert "TSH <0.4 mU/L" in flat
    assert "&lt;" not in text and "&amp;" not in text
    lines = text.splitlines()
    # Every section heading is underlined with a rule of its own length.
    for title in (OVERLAP_TITLE, "Fibromyalgia", "Autoimmunity"):
        i = lines.index(title)
        assert lines[i + 1] == "-" * len(title)
    assert [line.split(".")[0] for line in lines if re.match(r"^\d+\. ", line)] == [
        "1", "2", "3", "4", "5", "6",
    ]  # fmt: skip
    assert lines[-1] == f"Unsubscribe:              {LINKS.unsubscribe}"
    assert "javascript" not in text
    for line in lines:  # URLs are never broken, so only lines holding one may run long
        assert len(line) <= TEXT_WIDTH or "https://" in line


def test_text_strips_control_characters() -> None:
    sneaky = entry(1, "Title\x1b[31m red\r\nSubject: forged")
    text = render(make_digest([sneaky])).text
    assert "\x1b" not in text and "\r" not in text
    assert "Title [31m red Subject: forged" in text


# --- golden files --------------------------------------------------------------------------


@pytest.mark.parametrize("part", ["txt", "html"])
def test_golden(part: str) -> None:
    rendered = render(make_digest())
    actual = rendered.text if part == "txt" else rendered.html
    assert actual is not None
    path = GOLDEN / f"digest.{part}"
    if os.environ.get("LITWATCH_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        pytest.skip(f"rewrote {path}")
    if not path.exists():
        pytest.fail(f"{path} missing: run with LITWATCH_UPDATE_GOLDEN=1 and review it")
    assert actual == path.read_text(encoding="utf-8")
