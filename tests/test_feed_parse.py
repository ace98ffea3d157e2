"""Tests for spiders.feed_parse: journal RSS/Atom feeds to Paper items.

Expected identifiers are read out of the corpus files with plain regular expressions (not with
the parser under test), so a test fails when the parser and the file disagree. Corpus tests
skip when /work/shared/corpus (or $LITWATCH_CORPUS) is absent.
"""

from __future__ import annotations

import re
import time
import tracemalloc
from datetime import date
from pathlib import Path

import pytest

from crawler.items import Paper
from spiders.feed_parse import FeedError, FeedResult, parse_feed
from tests.support.corpus import CORPUS, corpus_path
from tests.support.httpserver import LocalHTTPServer

FIXTURES = Path(__file__).parent / "fixtures" / "feeds"
SOURCE = "feed-test"
WILEY_BASE = "https://onlinelibrary.wiley.com/journal/15213773?af=R"


def corpus(name: str) -> bytes:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"shared corpus file not available: {name}")
    return path.read_bytes()


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def grep(pattern: str, body: bytes) -> list[str]:
    """Every match of ``pattern`` (first group) in the raw file, decoded: the independent oracle."""
    return re.findall(pattern, body.decode("utf-8"))


def parse(
    body: bytes,
    base_url: str = "https://feeds.example.org/rss.xml",
    headers: dict[str, str] | None = None,
) -> FeedResult:
    return parse_feed(body, base_url, SOURCE, headers=headers)


# --- Real publisher feeds (shared corpus) -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "count"),
    [("wiley_taxon_rss2_2021-11-23.xml", 52), ("wiley_taxon_rss2_2021-12-21.xml", 66)],
)
def test_wiley_taxon_every_item_has_its_prism_doi(name: str, count: int) -> None:
    body = corpus(f"journal_feeds/{name}")
    result = parse(body, "https://onlinelibrary.wiley.com/feed/19968175/most-recent")
    expected = grep(r"<prism:doi>([^<]+)</prism:doi>", body)
    assert len(expected) == count
    assert [p.doi for p in result.papers] == expected
    assert result.warnings == []
    assert {p.origin for p in result.papers} == {"feed"}
    assert {p.source_id for p in result.papers} == {SOURCE}
    assert {p.journal for p in result.papers} == {"TAXON"}
    assert all(
        p.url and p.url.startswith("https://onlinelibrary.wiley.com/doi/") for p in result.papers
    )


def test_wiley_taxon_fields_of_first_item() -> None:
    # Values read from the first <item> of the file by eye.
    paper = parse(corpus("journal_feeds/wiley_taxon_rss2_2021-11-23.xml")).papers[0]
    assert (
        paper.title
        == "Notes on the genus Exostema (Rubiaceae), its limits and sectional subdivision"
    )
    assert paper.seen_title == paper.title
    # Multi-line dc:creator, each line ending in ", ".
    assert paper.authors == ["Werner Greuter", "Rosa Rankin‐Rodríguez"]
    # prism:coverDate "Sun, 12 Sep 2021 11:07:48 -0700" outranks dc:date (2021-11-13).
    assert paper.published == date(2021, 9, 12)
    assert paper.abstract is not None
    assert paper.abstract.startswith("Based on recent molecular work by Paudyal & al.")
    assert "Exostema" in paper.abstract and "<i>" not in paper.abstract
    assert paper.sighting_kind == "article"


def test_angewandte_rss1_all_185_dois_despite_ns_prefixes() -> None:
    body = corpus("journal_feeds/wiley_angewandte_rss1_2020_185items_reserialized.xml")
    result = parse(body, WILEY_BASE)
    expected = grep(r"<ns3:doi>([^<]+)</ns3:doi>", body)
    assert len(expected) == 185
    assert [p.doi for p in result.papers] == expected
    assert {p.journal for p in result.papers} == {"Angewandte Chemie International Edition"}
    assert [p.url for p in result.papers] == grep(
        r"<ns1:link>([^<]+/doi/abs/[^<]+)</ns1:link>", body
    )


def test_angewandte_relative_rdf_about_resolves_against_base_url() -> None:
    # Without <ns1:link> the entry's address is its rdf:about, which Wiley writes relative
    # ("/doi/abs/10.1002/...?af=R"): it must resolve against the feed URL.
    body = corpus("journal_feeds/wiley_angewandte_rss1_2020_185items_reserialized.xml")
    without_links = re.sub(rb"<ns1:link>[^<]*</ns1:link>", b"", body)
    abouts = grep(r"<ns1:item rdf:about=\"([^\"]+)\"", body)
    assert len(abouts) == 185 and all(a.startswith("/doi/abs/") for a in abouts)
    result = parse(without_links, WILEY_BASE)
    assert [p.url for p in result.papers] == [f"https://onlinelibrary.wiley.com{a}" for a in abouts]


def test_angewandte_multiline_creators_and_abstract() -> None:
    body = corpus("journal_feeds/wiley_angewandte_rss1_2020_185items_reserialized.xml")
    first = parse(body, WILEY_BASE).papers[0]
    assert first.title == "Tetrabenzononacene: “Butterfly Wings” Stabilize the Core"
    assert first.authors[0] == "Matthias Müller" and first.authors[-1] == "Uwe H. F. Bunz"
    assert len(first.authors) == 6
    assert first.published == date(2019, 12, 17)  # dc:date 2019-12-17T07:55:25-08:00
    assert first.abstract is not None and first.abstract.startswith("In combination with bulky")


def test_sciencedirect_has_no_doi_but_urls_and_no_boilerplate_abstract() -> None:
    body = corpus("journal_feeds/sciencedirect_molphylevol_rss2_2021-12-21.xml")
    result = parse(body, "https://rss.sciencedirect.com/publication/science/10557903")
    links = grep(r"<link>(https://www\.sciencedirect\.com/science/article/pii/[^<]+)</link>", body)
    assert len(links) == 51 == len(result.papers)
    assert [p.url for p in result.papers] == links
    assert all(p.doi is None for p in result.papers)
    # The description is only "Publication date: ... Source: ... Author(s): ...".
    assert all(p.abstract is None for p in result.papers)


def test_sciencedirect_description_gives_date_journal_and_authors() -> None:
    """Issue 12 B4: all 51 items came out with no authors, no date and the journal
    "ScienceDirect Publication: ..."; the description's labelled lines name all three."""
    path = corpus_path("journal_feeds/sciencedirect_molphylevol_rss2_2021-12-21.xml")
    body = path.read_bytes()
    papers = parse(body, "https://rss.sciencedirect.com/publication/science/10557903").papers
    assert len(papers) == 51
    assert {p.journal for p in papers} == {"Molecular Phylogenetics and Evolution"}
    # The oracle: the raw "Author(s):" and "Publication date:" lines, read with a regex.
    printed = grep(r"Author\(s\): ([^<]*)</p>", body)
    assert [", ".join(p.authors) for p in papers] == [names.strip() for names in printed]
    assert papers[0].authors == ["David R. Bickel"]
    assert len(papers[1].authors) == 7 and papers[1].authors[-1] == "Jane Melville"
    dates = grep(r"Publication date: ([^<]*)</p>", body)
    expected = {
        "February 2022": date(2022, 2, 1),
        "January 2022": date(2022, 1, 1),
        "Available online 10 December 2021": date(2021, 12, 10),
        "Available online 15 November 2021": date(2021, 11, 15),
        "Available online 17 March 2021": date(2021, 3, 17),
        "Available online 21 December 2021": date(2021, 12, 21),
    }
    assert [p.published for p in papers] == [expected[d] for d in dates]


def test_sciencedirect_labelled_lines_in_other_shapes() -> None:
    from spiders.feed_sciencedirect import feed_journal, labelled_fields

    found = labelled_fields(
        [
            "Publication date: January–February 2023",
            "Source: Journal of Autoimmunity, In press, journal pre-proof",
            "Author(s): Ann Lee, Bo Chen",
        ]
    )
    assert found is not None
    assert (found.published, found.journal) == (date(2023, 1, 1), "Journal of Autoimmunity")
    assert found.authors == ["Ann Lee", "Bo Chen"]
    assert labelled_fields(["An abstract.", "Nothing labelled"]) is None
    assert labelled_fields(["Publication date: 31 February 2022"]) == type(found)()
    assert feed_journal("ScienceDirect Publication: Journal of Autoimmunity") == (
        "Journal of Autoimmunity"
    )
    assert feed_journal("bioRxiv") == "bioRxiv"


def test_ijsem_doi_taken_from_link_path() -> None:
    body = corpus("journal_feeds/microbiologysociety_ijsem_rss2_2021-12-21.xml")
    result = parse(
        body, "https://www.microbiologyresearch.org/rss/content/journal/ijsem/latestarticles"
    )
    expected = grep(
        r"<link>https://www\.microbiologyresearch\.org/[\w/]+/(10\.[^?<]+)\?TRACK=RSS<", body
    )
    assert len(expected) == 25
    assert [p.doi for p in result.papers] == expected
    # The descriptions link to Names for Life DOIs (10.1601/nm.*): never the paper's DOI.
    assert not any(p.doi and p.doi.startswith("10.1601/") for p in result.papers)


def test_pensoft_doi_from_description_and_bom_stripped_from_titles() -> None:
    body = corpus("journal_feeds/pensoft_zookeys_rss2_2021-12-21.xml")
    result = parse(body, "https://zookeys.pensoft.net/rss.php")
    expected = grep(r"<p>DOI: (10\.[^<\s]+)</p>", body)
    assert len(expected) == 100
    assert [p.doi for p in result.papers] == expected
    assert len(grep(r"<title>(\ufeff)", body)) > 0  # the file really has BOM-led titles
    assert not any(p.title and p.title.startswith("\ufeff") for p in result.papers)
    first = result.papers[0]
    assert first.title == (
        "Checklist and keys to Deltocephalinae leafhoppers (Hemiptera, Cicadellidae) from Pakistan"
    )
    assert first.abstract is not None
    assert first.abstract.startswith("Keys to all levels of the subfamily Deltocephalinae")
    assert "DOI:" not in first.abstract and "PDF" not in first.abstract


def test_ojs_html_title_flattened() -> None:
    body = corpus("journal_feeds/ojs_zootaxa_rss1_2021-12-21.xml")
    result = parse(body, "https://www.mapress.com/zt/gateway/plugin/WebFeedGatewayPlugin/rss")
    assert [p.doi for p in result.papers] == grep(r"<prism:doi>([^<]+)</prism:doi>", body)
    assert len(result.papers) == 8
    assert result.papers[0].title == (
        "Description of Nola estonica sp. nov., with comparison to N. aerugula and N. atomosa "
        "stat. rev. (Lepidoptera, Nolidae, Nolinae)"
    )
    assert not any("<" in (p.title or "") for p in result.papers)
    assert {p.journal for p in result.papers} == {"Zootaxa"}


def test_biorxiv_padded_title_and_link_trimmed_and_preprint() -> None:
    body = corpus("journal_feeds/biorxiv_genomics_rss1_1item.xml")
    [paper] = parse(body, "http://connect.biorxiv.org/biorxiv_xml/genomics").papers
    assert paper.title == (
        "Complete genome of the Medicago anthracnose fungus, Colletotrichum destructivum, "
        "reveals a mini-chromosome-like region within a core chromosome."
    )
    assert paper.url == "http://biorxiv.org/cgi/content/short/2023.12.16.571984v1?rss=1"
    assert paper.doi == "10.1101/2023.12.16.571984"
    assert paper.sighting_kind == "preprint"
    assert paper.published == date(2023, 12, 16)
    # Channel-level prism:publicationName, not the feed title "bioRxiv Subject Collection: ...".
    assert paper.journal == "bioRxiv"
    # One dc:creator holds every author, names and initials split by the same comma: split
    # into names (issue 12 B3), never torn at every comma.
    assert paper.authors == [
        "LAPALU N", "SIMON A", "Lu A", "Plaumann PL", "Amselem J", "Pigne S", "Auger A",
        "Koch C", "Dallery JF", "O'Connell RJ",
    ]  # fmt: skip


def test_medrxiv_creator_string_is_split_into_authors() -> None:
    item = (
        "<item><title>Long COVID in a cohort</title>"
        "<link>https://www.medrxiv.org/content/10.1101/2024.01.02.24300001v1?rss=1</link>"
        "<dc:creator>Smith, J. R., van der Berg, A., Nguyen, T.-H., Collaborative Group, "
        "Doe, J., Jr.</dc:creator></item>"
    )
    body = (
        '<?xml version="1.0"?><rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<channel><title>medRxiv</title>{item}</channel></rss>"
    ).encode()
    [paper] = parse(body, "https://connect.medrxiv.org/medrxiv_xml/infectious").papers
    assert paper.sighting_kind == "preprint"
    assert paper.authors == [
        "Smith JR", "van der Berg A", "Nguyen TH", "Collaborative Group", "Doe J Jr",
    ]  # fmt: skip


def test_elsevier_jpeds_bare_dc_identifier_doi() -> None:
    body = corpus("journal_feeds/elsevier_jpeds_rss1_atypon_1item.xml")
    [paper] = parse(body, "https://www.jpeds.com/current.rss").papers
    assert paper.doi == "10.1016/j.jpeds.2018.08.009"
    assert paper.published == date(2018, 10, 11)
    assert paper.journal == "The Journal of Pediatrics"
    assert paper.url == "https://www.jpeds.com/article/S0022-3476(18)31119-3/fulltext?rss=yes"
    # One-line comma-separated full names are split (13 names in the file).
    assert len(paper.authors) == 13
    assert paper.authors[0] == "Gbolahan Ajibola" and paper.authors[-1] == "Shahin Lockman"


def test_elsevier_odd_channel_date_format_parses_when_on_an_item() -> None:
    # The jpeds channel carries prism:publicationDate "2018-12-17-08:00"; move it onto the item.
    body = corpus("journal_feeds/elsevier_jpeds_rss1_atypon_1item.xml")
    assert b"<prism:publicationDate>2018-12-17-08:00</prism:publicationDate>" in body
    odd = body.replace(
        b"<prism:publicationDate>2018-10-11</prism:publicationDate>",
        b"<prism:publicationDate>2018-12-17-08:00</prism:publicationDate>",
    )
    [paper] = parse(odd).papers
    assert paper.published == date(2018, 12, 17)


@pytest.mark.parametrize("day", ["2021-11-23", "2021-11-24"])
def test_pubmed_saved_search_rss(day: str) -> None:
    body = corpus(f"pubmed/pubmed_rss_search_{day}.xml")
    result = parse(body, "https://pubmed.ncbi.nlm.nih.gov/rss/search/1rE397IRBYU0/?limit=15")
    pmids = grep(r"<guid isPermaLink=\"false\">pubmed:(\d+)</guid>", body)
    assert pmids == grep(r"<dc:identifier>pmid:(\d+)</dc:identifier>", body)
    dois = grep(r"<dc:identifier>doi:([^<]+)</dc:identifier>", body)
    assert len(pmids) == len(dois) == 15
    assert [p.pmid for p in result.papers] == pmids
    assert [p.doi for p in result.papers] == dois
    assert [p.journal for p in result.papers] == grep(r"<dc:source>([^<]+)</dc:source>", body)
    for paper in result.papers:
        assert paper.url is not None and " " not in paper.url
        assert "utm_source=Mobile%20Safari%20UI/WKWebView" in paper.url
        assert paper.abstract and "PMID:" not in paper.abstract and "ABSTRACT" not in paper.abstract


def test_pubmed_snapshots_overlap_by_13_items() -> None:
    early = parse(corpus("pubmed/pubmed_rss_search_2021-11-23.xml")).papers
    late = parse(corpus("pubmed/pubmed_rss_search_2021-11-24.xml")).papers
    assert len({p.pmid for p in early} & {p.pmid for p in late}) == 13


# --- Broken and odd feeds from feedparser's test suite ----------------------------------------

# Per file: the outcome decided for it. "error" = FeedError whose message contains the text;
# otherwise (papers, warnings): paper count and a substring of each expected warning.
SKIPPED = "skipped 1 entry with no title, link or identifier"
MALFORMED: dict[str, str | tuple[int, list[str]]] = {
    "feedparser_aaa_illformed.xml": "error:broken feed with no usable entry",
    "feedparser_always_strip_doctype.xml": (0, []),
    # The only entry has a summary and nothing to identify it.
    "feedparser_atom03_summary_script_cdata.xml": (0, [SKIPPED]),
    "feedparser_bozo_bogus_encoding.xml": "error:declared as bogus",
    "feedparser_bozo_double-encoded-html.xml": "error:undefined entity",
    "feedparser_bozo_invalid-bytes-with-bom.xml": (0, ["unclosed token"]),
    "feedparser_demoronize-1.xml": (0, [SKIPPED]),
    "feedparser_entity_aacute_html_named_entity.xml": (0, ["undefined entity"]),
    # Deliberately refused: a harmless internal entity, but every entity declaration is.
    "feedparser_entity_in_doctype.xml": "error:XML entity declarations are not allowed",
    "feedparser_http_high_bit_date.xml": (0, []),
    "feedparser_item_description_naked_markup.xml": (0, [SKIPPED]),
    "feedparser_rel_uri_with_unicode_character.xml": (0, [SKIPPED]),
    "feedparser_rss_empty_document.xml": "error:not an RSS or Atom feed",
    "feedparser_rss_incomplete_cdata.xml": (0, ["not at start of entity", SKIPPED]),
    "feedparser_rss_item_link_corrupted_ampersands.xml": (1, ["unclosed token"]),
    "feedparser_undeclared_namespace.xml": "error:unbound prefix",
    "feedparser_utf-16le-bom.xml": (0, []),
}


def test_every_malformed_corpus_file_has_a_decided_outcome() -> None:
    folder = CORPUS / "malformed_feeds"
    if not folder.is_dir():
        pytest.skip("shared corpus not available")
    assert sorted(p.name for p in folder.iterdir()) == sorted(MALFORMED)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_feed_outcome(name: str) -> None:
    body = corpus(f"malformed_feeds/{name}")
    expected = MALFORMED[name]
    if isinstance(expected, str):
        with pytest.raises(FeedError, match=re.escape(expected.removeprefix("error:"))) as info:
            parse(body)
        assert "\n" not in str(info.value)
        return
    count, warnings = expected
    result = parse(body)
    assert len(result.papers) == count
    assert len(result.warnings) == len(warnings)
    for got, want in zip(result.warnings, warnings, strict=True):
        assert want in got


def test_corrupted_ampersands_link_is_kept_decoded() -> None:
    body = corpus("malformed_feeds/feedparser_rss_item_link_corrupted_ampersands.xml")
    assert [p.url for p in parse(body).papers] == ["http://link/get?a=1&b=2"]


# --- Hand-written fixtures --------------------------------------------------------------------


def test_atom_doi_from_doi_org_link_and_relative_alternate_link() -> None:
    result = parse(fixture("atom10_doi_link.xml"), "https://pain.example.org/feeds/latest.atom")
    first, erratum = result.papers
    assert first.doi == "10.5555/JPRN.2024.981"
    assert first.url == "https://pain.example.org/feeds/articles/981?src=atom"
    assert first.title == "Central sensitisation in fibromyalgia: a cohort study"
    assert first.authors == ["Ana Pereira", "Tomás Ruiz"]
    # The publisher's calendar date, not UTC (23:30 -05:00 is already the 5th in UTC).
    assert first.published == date(2024, 3, 4)
    assert first.abstract == "Background: Pain thresholds were lower."
    assert first.journal == "Journal of Pain Research Notes: Latest"
    # No DOI, an id that is a URL: kept, with the id as its address.
    assert erratum.doi is None and erratum.url == "https://pain.example.org/articles/982"
    assert erratum.title == "Erratum"


def rss_fixture() -> list[Paper]:
    return parse(
        fixture("rss20_plain_title_lt.xml"), "https://rheum.example.org/feeds/rss.xml"
    ).papers


def test_plain_text_title_keeps_less_than_sign() -> None:
    paper = rss_fixture()[0]
    assert paper.title == "Serum IL-6 <5 pg/mL & pain in fibromyalgia"
    assert paper.doi == "10.5555/rheum.2018.0042"
    assert paper.url == "https://rheum.example.org/articles/il6?ref=rss"
    assert paper.published == date(2018, 12, 17)  # prism:publicationDate "2018-12-17-08:00"
    assert paper.pmid is None  # guid "rheum-2018-0042" is no PubMed id


def test_html_title_flattened_doi_with_space_and_hostile_link_dropped() -> None:
    paper = rss_fixture()[1]
    assert paper.title == "Fatigue and HLA-B27 status"
    assert paper.doi == "10.5555/rheum.2019.0007"  # dc:identifier "doi: 10.5555/..."
    assert paper.url is None  # javascript: never reaches a digest
    assert paper.published == date(2021, 12, 21)  # "Tue, 21 Dec 2021 00:30:00 +0200"


def test_doi_org_guid_and_pmcid_identifier() -> None:
    paper = rss_fixture()[2]
    assert paper.doi == "10.5555/rheum.2020.0100"
    assert paper.pmcid == "PMC8123456"


def test_preprint_kind_by_doi_and_host_but_not_for_cshl_journals() -> None:
    medrxiv, cshl = rss_fixture()[3:5]
    # The version suffix of the content URL is not part of the DOI.
    assert medrxiv.doi == "10.1101/2024.01.15.24301234"
    assert medrxiv.sighting_kind == "preprint"
    assert cshl.doi == "10.1101/gr.275121.120"
    assert cshl.sighting_kind == "article"


def test_bare_number_guid_is_not_a_pmid() -> None:
    paper = rss_fixture()[5]
    assert paper.pmid is None and paper.doi is None
    assert paper.url == "https://rheum.example.org/articles/12345"


def test_pubmed_footer_gives_pmcid_and_mislabelled_charset_is_ignored() -> None:
    # The server claims ISO-8859-1; the document declares UTF-8 and is UTF-8.
    result = parse(
        fixture("pubmed_rss_footer_pmcid.xml"),
        "https://pubmed.ncbi.nlm.nih.gov/rss/search/EXAMPLE/",
        headers={"Content-Type": "text/xml; charset=ISO-8859-1"},
    )
    [paper] = result.papers
    assert result.warnings == []
    assert (paper.pmid, paper.pmcid, paper.doi) == (
        "31234567",
        "PMC6543210",
        "10.5555/pain.2019.160",
    )
    assert paper.authors == ["Nurcan Üçeyler", "Claudia Sommer"]
    assert paper.journal == "Pain"
    assert (
        paper.abstract
        == "Small fibre pathology was found in about half of the patients with fibromyalgia."
    )
    assert paper.url == (
        "https://pubmed.ncbi.nlm.nih.gov/31234567/?utm_source=Mobile%20Safari%20UI/WKWebView&utm_medium=rss"
    )


def test_http_charset_used_when_document_declares_none() -> None:
    body = (
        "<rss version='2.0'><channel><title>Revue</title><item>"
        "<title>Fibromyalgie et sommeil: étude</title><link>https://r.example.org/1</link>"
        "</item></channel></rss>"
    ).encode("latin-1")
    [paper] = parse(
        body, headers={"content-type": "application/rss+xml; charset=ISO-8859-1"}
    ).papers
    assert paper.title == "Fibromyalgie et sommeil: étude"


def test_text_xml_without_charset_is_not_a_warning() -> None:
    # RFC 3023 made this US-ASCII; RFC 7303 dropped that rule.
    result = parse(fixture("pubmed_rss_footer_pmcid.xml"), headers={"Content-Type": "text/xml"})
    assert result.warnings == []
    assert result.papers[0].authors[0] == "Nurcan Üçeyler"


# --- Documents that are not feeds --------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"  \r\n\t "])
def test_empty_body(body: bytes) -> None:
    with pytest.raises(FeedError, match="empty response body"):
        parse(body)


def test_html_captcha_page_served_with_200() -> None:
    with pytest.raises(FeedError, match="HTML page, not a feed"):
        parse(fixture("captcha_page.html"), headers={"Content-Type": "text/html; charset=utf-8"})


@pytest.mark.parametrize(
    "body", [b'{"version": "https://jsonfeed.org/version/1.1", "items": []}', b"\xef\xbb\xbf[1, 2]"]
)
def test_json_document(body: bytes) -> None:
    with pytest.raises(FeedError, match="JSON document"):
        parse(body)


def test_truncated_xml_without_entries_or_title() -> None:
    with pytest.raises(FeedError, match="broken feed with no usable entry"):
        parse(fixture("truncated.xml"))


def test_plain_text_error_body() -> None:
    with pytest.raises(FeedError, match="not an RSS or Atom feed"):
        parse(b"Rate limit exceeded. Try again later.\n")


def test_feed_error_is_a_value_error() -> None:
    assert issubclass(FeedError, ValueError)


# --- XML safety -------------------------------------------------------------------------------


def test_billion_laughs_fails_fast_with_bounded_memory() -> None:
    body = fixture("billion_laughs.xml")
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(FeedError, match="XML entity declarations are not allowed"):
            parse(body)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Fully expanded, the title alone would be 3 GB (10**9 x "lol").
    assert elapsed < 1.0
    assert peak < 5_000_000


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_entity_declarations_refused_in_wide_encodings(encoding: str) -> None:
    text = (
        fixture("billion_laughs.xml")
        .decode("utf-8")
        .replace('encoding="utf-8"', f'encoding="{encoding}"')
    )
    with pytest.raises(FeedError, match="XML entity declarations are not allowed"):
        parse(text.encode(encoding))


def test_entity_declarations_refused_when_hidden_by_a_declared_codec() -> None:
    # In UTF-7 "<!" is written "<+ACE-": no "<!ENTITY" bytes, but feedparser decodes the
    # declared codec before expat sees the text.
    doc = (
        '<?xml version="1.0" encoding="utf-7"?>\n<!DOCTYPE rss [\n<!ENTITY a "EXPANDED">\n]>\n'
        '<rss version="2.0"><channel><title>&a;</title>'
        "<item><title>x</title><link>https://e.org/1</link></item></channel></rss>"
    )
    body = doc.encode("ascii").replace(b"<!", b"<+ACE-")
    assert b"<!ENTITY" not in body
    with pytest.raises(FeedError, match="XML entity declarations are not allowed"):
        parse(body)


def test_external_entity_is_refused() -> None:
    doc = (
        b'<?xml version="1.0"?>\n<!DOCTYPE rss [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>\n'
        b'<rss version="2.0"><channel><title>&xxe;</title></channel></rss>'
    )
    with pytest.raises(FeedError, match="XML entity declarations are not allowed"):
        parse(doc)


def test_entity_text_inside_cdata_is_not_a_declaration() -> None:
    doc = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>XML news</title><item>'
        b"<title>Why <![CDATA[<!ENTITY>]]> declarations are dangerous</title>"
        b"<link>https://e.org/xml</link></item></channel></rss>"
    )
    [paper] = parse(doc).papers
    assert paper.title == "Why <!ENTITY> declarations are dangerous"


def test_nothing_is_fetched_for_external_dtd_stylesheet_or_base_url(
    http_server: LocalHTTPServer,
) -> None:
    http_server.add("/evil.dtd", b'<!ENTITY ext "LEAKED">', content_type="application/xml-dtd")
    dtd = http_server.url("/evil.dtd").encode()
    doc = (
        b'<?xml version="1.0"?><!DOCTYPE rss SYSTEM "' + dtd + b'">\n'
        b'<?xml-stylesheet type="text/xsl" href="' + dtd + b'"?>\n'
        b'<rss version="2.0"><channel><title>T &ext;</title>'
        b"<item><title>Item &ext;</title><link>/a</link></item></channel></rss>"
    )
    result = parse(doc, http_server.url("/feed.xml"))
    assert http_server.count("/evil.dtd") == 0
    assert http_server.count("/feed.xml") == 0
    assert all("LEAKED" not in (p.title or "") for p in result.papers)
    assert [p.url for p in result.papers] == [http_server.url("/a")]


# --- Robustness: untrusted bytes never crash the parser ---------------------------------------


def test_undecodable_bytes_in_encoding_declaration() -> None:
    # Found by fuzzing: feedparser's own encoding sniffing raises UnicodeDecodeError here.
    body = b'<?xml version="1.0" encoding="u\xe1f-8"?><rss version="2.0"><channel/></rss>'
    with pytest.raises(FeedError, match="undecodable XML declaration"):
        parse(body)


def test_malformed_ipv6_link_is_dropped_not_raised() -> None:
    body = (
        b'<rss version="2.0"><channel><title>T</title><item><title>Broken link</title>'
        b"<link>http://[broken/article</link><guid>doi:10.5555/broken.1</guid></item>"
        b"</channel></rss>"
    )
    [paper] = parse(body).papers
    assert paper.url is None and paper.doi == "10.5555/broken.1"


def test_truncated_real_feed_at_many_points_yields_a_prefix_or_an_error() -> None:
    body = corpus("journal_feeds/wiley_taxon_rss2_2021-11-23.xml")
    all_dois = grep(r"<prism:doi>([^<]+)</prism:doi>", body)
    for cut in range(0, len(body), len(body) // 16):
        try:
            result = parse(body[:cut])
        except FeedError:
            continue
        dois = [p.doi for p in result.papers]
        # Items come out in order and only whole-enough items carry a DOI: never a made-up one.
        assert [d for d in dois if d] == all_dois[: len([d for d in dois if d])]
        if cut < len(body) - 100:
            assert result.warnings, f"truncation at {cut} went unreported"
