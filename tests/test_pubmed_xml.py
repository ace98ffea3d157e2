"""PubMed E-utilities parsers: ESearch (XML and JSON), EFetch XML, and the URL builders.

Real NCBI answers are read by path from the shared corpus (skipped when it is absent); the
hand-written fixture in tests/fixtures/pubmed/ covers the traps the corpus lacks.
"""

from __future__ import annotations

import gzip
import io
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import lxml.etree
import pytest

from crawler.items import Paper
from crawler.xmlsafe import UnsafeXMLError
from spiders.eutils import ESearchResult, efetch_url, esearch_url, parse_esearch
from spiders.pubmed_dates import medline_date
from spiders.pubmed_xml import EFetchError, _article_elements, iter_efetch
from tests.support.corpus import CORPUS as SHARED_CORPUS

CORPUS = SHARED_CORPUS / "pubmed"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "pubmed"
SAMPLE = "pubmedsample18n0001_177articles.xml.gz"
BASE = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"


def corpus(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"corpus file {name} not present")
    return path


def papers(path: Path) -> dict[str, Paper]:
    with path.open("rb") as f:
        return {p.pmid: p for p in iter_efetch(f, "pubmed-test") if p.pmid}


@pytest.fixture(scope="module")
def sample() -> dict[str, Paper]:
    with gzip.open(corpus(SAMPLE)) as f:
        found = list(iter_efetch(f, "pubmed-test"))
    assert len({p.pmid for p in found}) == len(found)
    return {p.pmid: p for p in found if p.pmid}


@pytest.fixture(scope="module")
def edge() -> dict[str, Paper]:
    return papers(FIXTURES / "efetch_edge_cases.xml")


# --------------------------------------------------------------------------- the 177 sample


def test_sample_counts_match_the_corpus_description(sample: dict[str, Paper]) -> None:
    # Numbers from SOURCES.md: 177 articles, 69 with a DOI, 17 with a PMC id.
    assert len(sample) == 177
    assert sum(1 for p in sample.values() if p.doi) == 69
    assert sum(1 for p in sample.values() if p.pmcid) == 17
    assert all(p.title and p.journal and p.published for p in sample.values())


def test_sample_ids_agree_with_an_independent_xpath_reading() -> None:
    # An oracle written differently (whole tree, XPath): own ids only, ArticleIdList first.
    with gzip.open(corpus(SAMPLE)) as f:
        root = lxml.etree.fromstring(f.read())
    with gzip.open(corpus(SAMPLE)) as f:
        parsed = {p.pmid: p for p in iter_efetch(f, "t")}
    for article in root.iterfind("PubmedArticle"):
        pmid = article.findtext("MedlineCitation/PMID")
        ids = article.xpath("PubmedData/ArticleIdList/ArticleId[@IdType='doi']/text()")
        eloc = article.xpath("MedlineCitation/Article/ELocationID[@EIdType='doi']/text()")
        pmc = article.xpath("PubmedData/ArticleIdList/ArticleId[@IdType='pmc']/text()")
        assert parsed[pmid].doi == (ids or eloc or [None])[0], pmid
        assert parsed[pmid].pmcid == (pmc or [None])[0], pmid


def test_sample_first_article_values(sample: dict[str, Paper]) -> None:
    p = sample["973217"]
    assert p.title == p.seen_title == "Hospital debt management and cost reimbursement."
    assert p.journal == "Topics in health care financing"
    assert p.published == date(1976, 9, 1)  # <Year>1976</Year><Season>Fall</Season>
    assert p.authors == ["Blume FR"]
    assert p.doi is None and p.abstract is None
    assert p.mesh == [
        "Accounting",
        "Economics, Hospital",
        "Hospital Administration",
        "United States",
    ]
    assert p.publication_types == ["Journal Article"]
    assert p.url == "https://pubmed.ncbi.nlm.nih.gov/973217/"
    assert p.origin == "pubmed" and p.sighting_kind == "article" and p.source_id == "pubmed-test"


@pytest.mark.parametrize(
    ("pmid", "expected"),
    [
        ("14316043", date(1965, 12, 1)),  # 1965 Dec-1966 Jan
        ("10188493", date(1998, 12, 1)),  # 1998 Dec-1999 Jan
        ("8219565", date(1993, 9, 1)),  # 1993 Sep-Oct
        ("21007460", date(1944, 1, 1)),  # 1944-1945
        ("15228064", date(2004, 6, 1)),  # <Season>Summer</Season>
    ],
)
def test_sample_medline_dates(sample: dict[str, Paper], pmid: str, expected: date) -> None:
    assert sample[pmid].published == expected


def test_sample_structured_abstract_keeps_labels(sample: dict[str, Paper]) -> None:
    abstract = sample["8219565"].abstract or ""
    lines = abstract.split("\n")
    assert [line.split(":")[0] for line in lines] == [
        "PURPOSE",
        "PATIENTS AND METHODS",
        "RESULTS",
        "CONCLUSION",
    ]
    assert lines[0] == (
        "PURPOSE: The problem of asymmetric opening of the modified hook titanium Greenfield "
        "inferior vena cava filter necessitating transcatheter manipulation was evaluated in a "
        "retrospective study."
    )


def test_sample_collective_author_and_superscript(sample: dict[str, Paper]) -> None:
    assert sample["11428848"].authors[-1] == (
        "European Society of Cardiology. Working Group on Arrhythmias and Working Group on "
        "Cardiac Pacing"
    )
    # "2.4×10<sup>28</sup>": a plain join would print the number 1028.
    assert "population size of 2.4×10²⁸ cells" in (sample["27687974"].abstract or "")


def test_gzip_stream_and_bytes_give_the_same_papers() -> None:
    data = gzip.decompress(corpus(SAMPLE).read_bytes())
    with gzip.open(corpus(SAMPLE)) as f:
        assert list(iter_efetch(f, "t")) == list(iter_efetch(data, "t"))


# --------------------------------------------------------------------------- other EFetch files


def test_biopython_structured_abstract_with_markup() -> None:
    p = papers(corpus("efetch_pubmed_biopython4_structured_pmc.xml"))["27797938"]
    assert p.title == (
        "Leucocyte telomere length, genetic variants at the TERT gene region and risk of "
        "pancreatic cancer."
    )
    assert p.doi == "10.1136/gutjnl-2016-312510"
    assert p.pmcid == "PMC5442267"
    assert p.journal == "Gut"
    assert p.published == date(2016, 10, 21)  # ArticleDate (electronic)
    assert p.authors[:2] == ["Bao Y", "Prescott J"]
    abstract = p.abstract or ""
    assert abstract.startswith("OBJECTIVE: Telomere shortening occurs")
    assert "\nDESIGN: We measured" in abstract and "\nCONCLUSIONS: Prediagnostic" in abstract
    assert "linkage disequilibrium r²<0.25" in abstract  # r<sup>2</sup>&lt;0.25
    assert "p" + "trend=0.048" in abstract  # p<sub>trend</sub>: letters stay plain
    assert "<" not in abstract.replace("r²<0.25", "")


def test_biopython_mathml_is_flattened() -> None:
    p = papers(corpus("efetch_pubmed_biopython6_mathml_frontiers.xml"))["30108519"]
    assert p.title == (
        'A "Blood Relationship" Between the Overlooked Minimum Lactate Equivalent and Maximal '
        "Lactate Steady State in Trained Runners. Back to the Old Days?"
    )
    abstract = p.abstract or ""
    assert "maximal oxygen uptake ( V.O2max ) 67.6 ± 4.1 ml·kg⁻¹·min⁻¹]" in abstract
    assert "mml" not in abstract and "\n" not in abstract and "  " not in abstract
    assert "(P < 0.001; ES: 3.54)" in abstract  # &lt; decoded, never re-escaped
    assert p.doi == "10.3389/fphys.2018.01034"  # ELocationID
    assert p.published == date(2018, 7, 31)  # ArticleDate beats the year-only PubDate


def test_biopython_no_doi_and_season() -> None:
    found = papers(corpus("efetch_pubmed_biopython1_nodoi.xml"))
    assert found["12091962"].doi is None
    assert found["12091962"].published == date(1990, 3, 1)  # 1990 Spring
    assert found["12091962"].keywords == ["Health Care and Public Health", "Legal Approach"]
    assert found["9997"].doi == "10.1016/0005-2795(76)90109-4"
    assert found["9997"].published == date(1976, 9, 28)


def test_2013_dtd_prefers_the_earlier_electronic_date() -> None:
    found = papers(corpus("efetch_pubmed_2articles_2013dtd.xml"))
    # ArticleDate 2007-02-06 is earlier than the print issue (2007 Mar).
    assert found["17284678"].published == date(2007, 2, 6)
    assert found["17284678"].doi == "10.1101/gr.5823007"
    assert found["9997"].doi is None


def test_mixed_book_and_article_set() -> None:
    found = papers(corpus("efetch_pubmed_with_bookarticle.xml"))
    assert list(found) == ["17284678", "20301295"]
    article, book = found["17284678"], found["20301295"]
    assert article.abstract == "dummy-label: Lorem ipsum and ipsum lorem."
    assert article.keywords == ["Krazy Kool", "The Snap!"]  # OtherAbstract is not the abstract
    assert article.pmcid == "PMC1800922"
    assert book.title == "GeneReviews™"
    assert book.abstract == "Lorem ipsum ...."
    assert book.published == date(1993, 1, 1)
    assert book.journal is None  # a whole book is not published "in" anything
    assert book.authors == []  # the only AuthorList is Type="editors"
    assert book.doi is None


# --------------------------------------------------------------------------- hand-written traps


def test_reference_list_dois_never_leak(edge: dict[str, Paper]) -> None:
    cited = {"10.1136/cited.one", "10.1016/cited.two", "10.1038/cited.three", "10.1007/cited.four"}
    assert not {p.doi for p in edge.values()} & cited
    assert edge["39990001"].doi == "10.5555/JPI.2025.0001"  # ArticleIdList beats ELocationID
    assert edge["39990001"].pmcid == "PMC11000001"  # not the cited PMC9000001
    assert edge["39990002"].doi == "10.1101/2024.12.01.626000"  # ValidYN="N" one skipped
    assert edge["39990003"].doi is None


def test_escaped_text_comes_out_plain(edge: dict[str, Paper]) -> None:
    p = edge["39990001"]
    assert p.title == "IL-6 <5 pg/mL and fibromyalgia: a ¹H-MRS study"
    assert p.journal == "Journal of Pain & Immunity"
    assert p.abstract == (
        "BACKGROUND: Serum IL-6 was <5 pg/mL & CRP >3 mg/L in most patients.\n"
        "METHODS: We fitted x² models to n = 40 patients.\n"
        "Pain scores fell."
    )
    assert p.keywords == ["autoantibodies", "IgG transfer"]
    assert p.mesh == ["Fibromyalgia", "Interleukin-6"]


def test_authors_as_pubmed_prints_them(edge: dict[str, Paper]) -> None:
    assert edge["39990001"].authors == [
        "Goebel A",
        "Krock E",
        "Smith JP Jr",  # no Initials element: derived from "Jean-Paul"
        "Pain Genetics Consortium",
    ]  # ValidYN="N" author left out


def test_preprint_medline_date_and_vernacular_title(edge: dict[str, Paper]) -> None:
    preprint = edge["39990002"]
    assert preprint.sighting_kind == "preprint"
    assert preprint.published == date(2024, 12, 1)  # 2024 Dec-2025 Jan
    old = edge["39990003"]
    assert old.title == old.seen_title == "Fibromyalgie und Autoimmunität."
    assert old.journal == "Z Rheumatol"  # no Journal/Title or ISOAbbreviation
    assert old.published == date(1999, 6, 1)  # 1999 Summer


def test_book_chapter(edge: dict[str, Paper]) -> None:
    p = edge["39990004"]
    assert p.title == "Fibromyalgia"
    assert p.journal == "StatPearls"
    assert p.doi == "10.5555/nbk999001"
    assert p.authors == ["Bhargava J", "Hurley JA"]  # chapter authors, not the editors
    assert p.publication_types == ["Review"]
    assert p.published == date(2025, 1, 1)
    assert p.abstract == "Fibromyalgia is a chronic pain condition (prevalence 2–4%)."
    assert p.keywords == ["chronic widespread pain"]


def _ymd(year: str, month: str = "", day: str = "") -> str:
    parts = {"Year": year, "Month": month, "Day": day}
    return "".join(f"<{tag}>{value}</{tag}>" for tag, value in parts.items() if value)


def _article(pmid: str, body: str = "") -> str:
    return (
        f"<PubmedArticle><MedlineCitation><PMID>{pmid}</PMID><Article><Journal>"
        f"<JournalIssue>{body}</JournalIssue><Title>J</Title></Journal>"
        f"<ArticleTitle>T{pmid}</ArticleTitle></Article></MedlineCitation></PubmedArticle>"
    )


@pytest.mark.parametrize(
    ("pubdate", "article_date", "expected"),
    [
        # year-only issue vs electronic date in that year: the precise one wins the tie
        (_ymd("2018"), _ymd("2018", "08", "10"), date(2018, 8, 10)),
        # the electronic date is a month earlier
        (_ymd("2019", "Jan"), _ymd("2018", "12"), date(2018, 12, 1)),
        # the print issue month is earlier than the electronic date
        (_ymd("2018", "Mar"), _ymd("2018", "4", "2"), date(2018, 3, 1)),
        # an impossible day keeps the month
        (_ymd("2018", "Feb", "30"), "", date(2018, 2, 1)),
        (_ymd("18"), "", None),
    ],
)
def test_earliest_sensible_date(pubdate: str, article_date: str, expected: date | None) -> None:
    doc = f"<PubmedArticleSet>{_article('1', f'<PubDate>{pubdate}</PubDate>')}</PubmedArticleSet>"
    if article_date:
        doc = doc.replace("</Article>", f"<ArticleDate>{article_date}</ArticleDate></Article>")
    (paper,) = iter_efetch(doc.encode(), "t")
    assert paper.published == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1965 Dec-1966 Jan", (date(1965, 12, 1), 2)),
        ("2000 Spring", (date(2000, 3, 1), 2)),
        ("2000 Winter", (date(2000, 1, 1), 2)),
        ("1944-1945", (date(1944, 1, 1), 1)),
        ("2000 Nov 15-30", (date(2000, 11, 15), 3)),
        ("1976 Sept-Oct", (date(1976, 9, 1), 2)),
        ("no year here", None),
    ],
)
def test_medline_date(text: str, expected: tuple[date, int] | None) -> None:
    assert medline_date(text) == expected


def test_article_without_pmid_is_skipped() -> None:
    doc = _article("").replace("<PMID></PMID>", "") + _article("7")
    found = list(iter_efetch(f"<PubmedArticleSet>{doc}</PubmedArticleSet>".encode(), "t"))
    assert [p.pmid for p in found] == ["7"]


# --------------------------------------------------------------------------- EFetch failures


def test_efetch_error_document_raises() -> None:
    body = b"<eFetchResult><ERROR>Unable to obtain query #1</ERROR></eFetchResult>"
    with pytest.raises(EFetchError, match="Unable to obtain query #1"):
        list(iter_efetch(body, "t"))


def test_efetch_unexpected_root_raises() -> None:
    with pytest.raises(EFetchError, match="html"):
        list(iter_efetch(b"<html><body>Service unavailable</body></html>", "t"))


def test_efetch_empty_set_yields_nothing() -> None:
    assert list(iter_efetch(b"<PubmedArticleSet></PubmedArticleSet>", "t")) == []


def test_efetch_refuses_entity_declarations() -> None:
    body = (
        b'<!DOCTYPE PubmedArticleSet [<!ENTITY x SYSTEM "file:///etc/passwd">]><PubmedArticleSet/>'
    )
    # EFetchError is iter_efetch's one error (issue 12 A9); the cause says why.
    with pytest.raises(EFetchError) as info:
        list(iter_efetch(body, "t"))
    assert isinstance(info.value.__cause__, UnsafeXMLError)


def test_truncated_efetch_yields_what_it_read_then_raises() -> None:
    doc = ("<PubmedArticleSet>" + _article("1") + _article("2")).encode()[:-40]
    found: list[str | None] = []
    with pytest.raises(EFetchError) as info:
        found.extend(p.pmid for p in iter_efetch(doc, "t"))
    assert isinstance(info.value.__cause__, lxml.etree.XMLSyntaxError)
    assert found == ["1"]


def test_parsing_is_incremental_and_frees_each_article() -> None:
    # White-box: while the consumer holds article n, article n-1 has been emptied and at most
    # that empty shell precedes n in the root; after n come only the articles the parser has
    # read ahead (one input buffer). Without the clearing the root would hold 5000 children.
    doc = "<PubmedArticleSet>\n" + "\n".join(_article(str(n)) for n in range(1, 5001))
    stream = io.BytesIO((doc + "\n</PubmedArticleSet>").encode())
    previous, widest, seen = None, 0, 0
    for element in _article_elements(stream):
        seen += 1
        root = element.getparent()
        before = list(root)[: root.index(element)]
        assert len(before) <= 1 and all(len(e) == 0 for e in before)
        assert len(element) > 0  # the current article is intact while it is read
        if previous is not None:
            assert len(previous) == 0
        previous, widest = element, max(widest, len(root))
    assert seen == 5000
    assert widest < 1000


# --------------------------------------------------------------------------- ESearch


def test_esearch_plain() -> None:
    result = parse_esearch(corpus("esearch1_biopython.xml").read_bytes())
    assert (result.count, result.retmax, result.retstart) == (63, 20, 0)
    assert len(result.ids) == 20 and result.ids[0] == "41282813" and result.ids[-1] == "37810457"
    assert result.webenv is None and result.query_key is None
    assert result.errors == [] and result.warnings == []


def test_esearch_history() -> None:
    result = parse_esearch(corpus("esearch2_biopython.xml").read_bytes())
    assert result.count == 42249 and result.retmax == 100 and len(result.ids) == 100
    assert result.webenv == "MCID_6927d6e7fee3e90f880ec190" and result.query_key == "1"
    assert result.errors == []


def test_esearch_no_results_with_unknown_phrase_is_an_error() -> None:
    result = parse_esearch(corpus("esearch8_biopython.xml").read_bytes())
    assert result.count == 0 and result.ids == []
    assert result.errors == ["PhraseNotFound: abcXYZ"]
    assert result.warnings == ["No items found."]


def test_esearch_results_with_unknown_phrase_is_a_warning() -> None:
    result = parse_esearch(corpus("klortho_esearch.error.xml").read_bytes())
    assert result.count == 5163 and len(result.ids) == 20
    assert result.errors == []
    assert result.warnings == ["PhraseNotFound: fleegle[MeSH Terms]"]


@pytest.mark.parametrize("name", ["klortho_esearch.baderror.xml", "klortho_esearch.baderror.json"])
def test_esearch_top_level_error(name: str) -> None:
    result = parse_esearch(corpus(name).read_bytes())
    assert result.errors == ["Invalid db name specified: fleegle"]
    assert result.count == 0 and result.ids == []


def test_esearch_json_and_xml_agree() -> None:
    from_xml = parse_esearch(corpus("klortho_esearch.pubmed.xml").read_bytes())
    from_json = parse_esearch(corpus("klortho_esearch.pubmed.json").read_bytes())
    assert from_xml == from_json
    # The TranslationStack's own <Count> elements (2382851, ...) must not replace the Count.
    assert from_xml.count == 15169 and len(from_xml.ids) == 100
    assert from_xml.webenv == "NCID_1_18991374_130.14.18.48_5555_1353814292_87026138"
    assert from_xml.ids[0] == "23175848" and from_xml.ids[-1] == "23174999"


def test_esearch_json_error_and_warning_lists() -> None:
    result = parse_esearch((FIXTURES / "esearch_phrase_not_found.json").read_bytes())
    assert result.errors == ["PhraseNotFound: fibromyalgai"]
    assert result.warnings == ["No items found."]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"error":"API rate limit exceeded","count":"11","limit":"10"}', "rate limit"),
        (b"<html><body>502 Bad Gateway</body></html>", "unexpected ESearch root"),
        (b"<eSearchResult><Count>12", "unreadable"),
        (b"{not json", "unreadable"),
        (b"<eSearchResult><Count>many</Count></eSearchResult>", "Count is not a number"),
        (b'<!DOCTYPE x [<!ENTITY a "b">]><eSearchResult/>', "unreadable"),
    ],
)
def test_esearch_bad_answers_become_errors(body: bytes, fragment: str) -> None:
    result = parse_esearch(body)
    assert isinstance(result, ESearchResult)
    assert any(fragment in e for e in result.errors), result.errors


# --------------------------------------------------------------------------- URLs


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_esearch_url() -> None:
    url = esearch_url(
        BASE,
        term="fibromyalgia[tiab] AND autoimmun*",
        mindate=date(2025, 1, 1),
        maxdate=date(2025, 1, 8),
        retmax=500,
        tool="litwatch",
        email="ops@example.org",
        api_key=None,
    )
    assert url.startswith("https://eutils.ncbi.nlm.nih.gov/entrez/eutils/esearch.fcgi?")
    assert _query(url) == {
        "db": ["pubmed"],
        "term": ["fibromyalgia[tiab] AND autoimmun*"],
        "datetype": ["edat"],
        "mindate": ["2025/01/01"],
        "maxdate": ["2025/01/08"],
        "retmax": ["500"],
        "usehistory": ["y"],
        "tool": ["litwatch"],
        "email": ["ops@example.org"],
    }


def test_esearch_url_with_key_and_without_history() -> None:
    url = esearch_url(
        BASE.rstrip("/"),
        term="x",
        mindate=date(2025, 1, 1),
        maxdate=date(2025, 1, 2),
        retmax=1,
        tool="t",
        email="e@example.org",
        api_key="k&y",
        datetype="pdat",
        usehistory=False,
    )
    query = _query(url)
    assert urlsplit(url).path == "/entrez/eutils/esearch.fcgi"
    assert query["api_key"] == ["k&y"] and query["datetype"] == ["pdat"]
    assert "usehistory" not in query


def test_efetch_url() -> None:
    url = efetch_url(
        BASE,
        webenv="MCID_6927d6e7fee3e90f880ec190",
        query_key="1",
        retstart=200,
        retmax=100,
        tool="litwatch",
        email="ops@example.org",
        api_key="secret",
    )
    assert url.startswith("https://eutils.ncbi.nlm.nih.gov/entrez/eutils/efetch.fcgi?")
    assert _query(url) == {
        "db": ["pubmed"],
        "query_key": ["1"],
        "WebEnv": ["MCID_6927d6e7fee3e90f880ec190"],
        "retstart": ["200"],
        "retmax": ["100"],
        "retmode": ["xml"],
        "tool": ["litwatch"],
        "email": ["ops@example.org"],
        "api_key": ["secret"],
    }
