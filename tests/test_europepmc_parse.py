"""Tests for spiders.europepmc_parse: Europe PMC ``search`` answers to preprint-aware records.

Real answers are read by path from the shared corpus (skipped when it is absent). Expected
values come from the raw JSON read with plain ``json`` in the test, not from the parser.
Small hand-written pages cover what the corpus lacks (preprint links, versions, bad input).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from spiders.europepmc_parse import (
    DEFAULT_BASE_URL,
    EuropePMCError,
    SearchPage,
    cursor_after,
    parse_search,
    search_url,
)
from tests.support.corpus import corpus_path
from tests.support.fuzz import given, settings, st

SOURCE = "epmc-test"
BIG = "apis/europepmc_search_1000results_cancer.json"
CORE = "apis/europepmc_search_cancer_core.json"
LITE = "apis/europepmc_search_cancer.json"
EMPTY = "apis/europepmc_search_no_results.json"


def raw_results(name: str) -> tuple[bytes, list[dict[str, Any]]]:
    body = corpus_path(name).read_bytes()
    return body, json.loads(body)["resultList"]["result"]


def page(*results: Any, next_mark: str = "NEXT", cursor: str = "%2A") -> bytes:
    """A search answer in Europe PMC's envelope around hand-written results."""
    request = {"queryString": "x", "resultType": "core", "cursorMark": cursor}
    envelope = {"version": "6.9", "hitCount": len(results), "nextCursorMark": next_mark}
    return json.dumps({**envelope, "request": request, "resultList": {"result": results}}).encode()


def loose_title(title: str) -> str:
    """The test's own title key: accents, case and everything but letters and digits gone."""
    decomposed = unicodedata.normalize("NFKD", title)
    return re.sub(r"[\W_]+", "", "".join(c for c in decomposed if not unicodedata.combining(c)))


# --- The 1000-result page: MED, PMC and PPR, papers listed twice -----------------------------


def test_big_page_lists_each_paper_once() -> None:
    body, raw = raw_results(BIG)
    result = parse_search(body, SOURCE)
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in raw:
        key = loose_title(record["title"]).casefold()
        if len(key) >= 24:
            groups.setdefault(key, []).append(record)
    twins = [g for g in groups.values() if len(g) == 2]
    assert len(twins) == 16 and all(len(g) <= 2 for g in groups.values())
    assert all(sorted(r["source"] for r in g) == ["MED", "PMC"] for g in twins)
    assert len(result.papers) == len(raw) - 16 == 984
    assert result.merged == 16
    by_pmcid = {r.paper.pmcid: r for r in result.papers if r.paper.pmcid}
    for group in twins:
        med = next(r for r in group if r["source"] == "MED")
        pmc = next(r for r in group if r["source"] == "PMC")
        merged = by_pmcid[pmc["pmcid"]]
        assert (merged.paper.doi, merged.paper.pmid) == (med["doi"], med["pmid"])
        assert merged.paper.title == med["title"]  # the MED twin's title wins
        assert sorted(merged.epmc_ids) == sorted([f"MED:{med['id']}", f"PMC:{pmc['id']}"])


def test_big_page_twins_include_the_twelve_that_differ_only_by_case_and_final_stop() -> None:
    body, raw = raw_results(BIG)
    simple = Counter(r["title"].casefold().rstrip(".") for r in raw)
    repeated = {t for t, n in simple.items() if n == 2}
    assert len(repeated) == 12
    result = parse_search(body, SOURCE)
    kept = Counter(r.paper.title.casefold().rstrip(".") for r in result.papers if r.paper.title)
    assert all(kept[title] == 1 for title in repeated)


def test_big_page_identifiers_are_unique_after_folding() -> None:
    body, raw = raw_results(BIG)
    papers = [r.paper for r in parse_search(body, SOURCE).papers]
    for name in ("doi", "pmid", "pmcid"):
        values = [getattr(p, name) for p in papers if getattr(p, name)]
        assert len(values) == len(set(values)), name
    assert len({p.doi for p in papers if p.doi}) == len({r["doi"] for r in raw if "doi" in r})


def test_big_page_preprints() -> None:
    body, raw = raw_results(BIG)
    raw_ppr = {r["id"]: r for r in raw if r["source"] == "PPR"}
    preprints = [r for r in parse_search(body, SOURCE).papers if r.is_preprint]
    assert len(preprints) == len(raw_ppr) == 24
    servers = {"Research Square": 11, "bioRxiv": 6, "Preprints.org": 5, "medRxiv": 2}
    assert Counter(r.server for r in preprints) == servers
    for record in preprints:
        original = raw_ppr[record.ppr_id or ""]
        paper = record.paper
        assert paper.doi == original["doi"] and paper.journal == record.server
        assert paper.sighting_kind == "preprint" and paper.origin == "feed"
        assert paper.publication_types == ["Preprint"]
        assert paper.url == f"https://europepmc.org/article/PPR/{record.ppr_id}"
        assert record.version == original.get("versionNumber")
        assert paper.published == date.fromisoformat(original["firstPublicationDate"])
    assert sum(r.version == 1 for r in preprints) == 16


def test_lite_records_rank_as_feed_items_with_the_abbreviated_journal() -> None:
    body, raw = raw_results(LITE)
    result = parse_search(body, SOURCE)
    assert {r.paper.origin for r in result.papers} == {"feed"}
    first, paper = raw[0], result.papers[0].paper
    assert paper.journal == first["journalTitle"]
    assert paper.pmid == first["pmid"] and paper.doi == first["doi"]
    assert ", ".join(paper.authors) + "." == first["authorString"]


# --- resultType=core: the full MEDLINE record -----------------------------------------------


def test_core_med_records_rank_with_pubmed_and_carry_the_full_citation() -> None:
    body, raw = raw_results(CORE)
    records = parse_search(body, SOURCE).papers
    assert len(records) == len(raw) == 25
    for original, record in zip(raw, records, strict=True):
        paper = record.paper
        assert paper.origin == "pubmed" and paper.pmid == original["pmid"]
        assert paper.journal == original["journalInfo"]["journal"]["title"]
        assert paper.publication_types == original["pubTypeList"]["pubType"]
        mesh = original.get("meshHeadingList", {}).get("meshHeading", [])
        assert paper.mesh == [h["descriptorName"] for h in mesh]
        assert paper.keywords == original.get("keywordList", {}).get("keyword", [])
        names = [a["fullName"] for a in original.get("authorList", {}).get("author", [])]
        assert paper.authors == list(dict.fromkeys(names))
        assert record.indexed == date.fromisoformat(original["firstIndexDate"])
        urls = [u["url"] for u in original.get("fullTextUrlList", {}).get("fullTextUrl", [])]
        assert record.full_text_urls == list(dict.fromkeys(urls))


def test_core_structured_abstract_becomes_labelled_lines() -> None:
    body, raw = raw_results(CORE)
    records = {r.paper.pmid: r for r in parse_search(body, SOURCE).papers}
    original = next(r for r in raw if r.get("abstractText", "").startswith("<h4>Objective</h4>"))
    abstract = records[original["pmid"]].paper.abstract or ""
    headings = re.findall(r"<h4>([^<]*)</h4>", original["abstractText"])
    lines = abstract.split("\n")
    assert [line.split(":", 1)[0] for line in lines] == headings
    assert lines[0].startswith("Objective: This study investigated")
    assert not re.search(r"</?[a-z]", abstract)  # no markup left...
    assert "(at p < .001)" in abstract  # ...but a "<" of the text stays (thin spaces squashed)


def test_core_published_date_is_the_earliest_printed() -> None:
    body, raw = raw_results(CORE)
    records = {r.paper.pmid: r for r in parse_search(body, SOURCE).papers}
    for original in raw:
        printed = original["journalInfo"].get("printPublicationDate")
        candidates = [
            original.get(k) for k in ("firstPublicationDate", "electronicPublicationDate")
        ]
        candidates.append(printed)
        expected = min(date.fromisoformat(d) for d in candidates if d)
        assert records[original["pmid"]].paper.published == expected


def test_core_erratum_link_keeps_the_printed_doi() -> None:
    body, _ = raw_results(CORE)
    records = {r.paper.pmid: r for r in parse_search(body, SOURCE).papers}
    (link,) = records["39709208"].links
    assert (link.relation, link.source, link.id) == ("Erratum for", "MED", "39293462")
    assert link.doi == "10.1016/S0140-6736(24)01653-2"
    assert records["39709208"].published_ids == [] and records["39709208"].preprint_ids == []


def test_preprint_and_published_links_become_version_links() -> None:
    preprint = {
        "id": "PPR800001",
        "source": "PPR",
        "doi": "10.1101/2025.03.01.25320001",
        "title": "IgG transfers fibromyalgia pain",
        "pubTypeList": {"pubType": ["Preprint"]},
        "bookOrReportDetails": {"publisher": "medRxiv"},
        "firstPublicationDate": "2025-03-02",
        "commentCorrectionList": {
            "commentCorrection": [
                {
                    "type": "Preprint of",
                    "source": "MED",
                    "id": "40000010",
                    "reference": "Pain. 2026;167:1. doi: 10.1016/j.pain.2026.01.001",
                },
            ]
        },
    }
    article = {
        "id": "40000011", "source": "MED", "pmid": "40000011", "doi": "10.1000/journal.2",
        "title": "Another study", "journalInfo": {"journal": {"title": "Pain"}},
        "commentCorrectionList": {"commentCorrection": [
            {"type": "Preprint in", "source": "PPR", "id": "PPR800002",
             "reference": "medRxiv. doi: 10.1101/2025.04.01.25330002"},
            {"type": "Preprint in", "source": "PPR", "id": "PPR800003", "reference": "no DOI"},
        ]},
    }  # fmt: skip
    records = parse_search(page(preprint, article), SOURCE).papers
    [of] = records[0].paper.versions
    assert (of.preprint_doi, of.published_doi, of.published_pmid) == (
        "10.1101/2025.03.01.25320001", "10.1016/j.pain.2026.01.001", "40000010",
    )  # fmt: skip
    assert of.source == "europepmc" and of.server == "medRxiv"
    [into] = records[1].paper.versions  # the link without a preprint DOI names nothing
    assert (into.preprint_doi, into.published_doi, into.published_pmid) == (
        "10.1101/2025.04.01.25330002", "10.1000/journal.2", "40000011",
    )  # fmt: skip


def test_records_without_preprint_links_carry_no_versions() -> None:
    body, _ = raw_results(CORE)
    assert all(not r.paper.versions for r in parse_search(body, SOURCE).papers)


# --- Paging -----------------------------------------------------------------------------------


def test_cursor_is_read_from_the_percent_encoded_echo() -> None:
    body = corpus_path(LITE).read_bytes()
    result = parse_search(body, SOURCE)
    assert result.cursor == "*"
    assert result.next_cursor == json.loads(body)["nextCursorMark"]
    assert result.hit_count == 5059039


def test_no_results_page_has_no_next_cursor() -> None:
    result = parse_search(corpus_path(EMPTY).read_bytes(), SOURCE)
    assert result == SearchPage(papers=[], next_cursor=None, hit_count=0, cursor="*", merged=0)


def test_repeated_cursor_ends_paging() -> None:
    record = {"id": "1", "source": "MED", "pmid": "1", "title": "A title long enough to count"}
    body = page(record, next_mark="AoIIP4ZawSg1MzEyODI1MA==", cursor="AoIIP4ZawSg1MzEyODI1MA%3D%3D")
    assert parse_search(body, SOURCE).next_cursor is None
    assert parse_search(body, SOURCE, sent_cursor="*").next_cursor == "AoIIP4ZawSg1MzEyODI1MA=="


def test_cursor_after() -> None:
    assert cursor_after("*", "AoE") == "AoE"
    assert (
        cursor_after("AoE", "AoE") is cursor_after("AoE", None) is cursor_after("AoE", "") is None
    )


def test_search_url() -> None:
    url = search_url(
        DEFAULT_BASE_URL, 'fibromyalgia OR "chronic pain"', date(2025, 6, 1), date(2025, 6, 7),
        cursor="AoIIP4ZawSg1MzEyODI1MA==", page_size=500,
    )  # fmt: skip
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == DEFAULT_BASE_URL + "search"
    assert parse_qs(parts.query) == {
        "query": ['(fibromyalgia OR "chronic pain") AND FIRST_IDATE:[2025-06-01 TO 2025-06-07]'],
        "resultType": ["core"],
        "format": ["json"],
        "pageSize": ["500"],
        "cursorMark": ["AoIIP4ZawSg1MzEyODI1MA=="],
    }
    assert "+" not in parts.query  # spaces as %20, the "=" of a cursor as %3D
    other = search_url("http://127.0.0.1:8080/rest", "lupus", date(2025, 1, 1), date(2025, 1, 1))
    assert other.startswith("http://127.0.0.1:8080/rest/search?") and "cursorMark=%2A" in other


@pytest.mark.parametrize(
    ("query", "since", "until", "size"),
    [
        ("", date(2025, 1, 1), date(2025, 1, 2), 100),
        ("lupus", date(2025, 1, 3), date(2025, 1, 2), 100),
        ("lupus", date(2025, 1, 1), date(2025, 1, 2), 0),
        ("lupus", date(2025, 1, 1), date(2025, 1, 2), 1001),
    ],
)
def test_search_url_refuses_bad_arguments(query: str, since: date, until: date, size: int) -> None:
    with pytest.raises(ValueError):
        search_url(DEFAULT_BASE_URL, query, since, until, page_size=size)


# --- Identity within a page (hand-written records) ------------------------------------------

TITLE = "Interferon signatures in early systemic lupus erythematosus"


@pytest.mark.parametrize(
    ("one", "two"),
    [  # a preprint and its journal version; two PubMed records with one title
        ({"id": "PPR1", "source": "PPR", "doi": "10.1101/2024.01.16.575202", "title": TITLE},
         {"id": "2", "source": "MED", "pmid": "2", "doi": "10.1126/x.1", "title": TITLE}),
        ({"id": "11", "source": "MED", "pmid": "11", "title": TITLE},
         {"id": "12", "source": "MED", "pmid": "12", "title": TITLE + "."}),
    ],
)  # fmt: skip
def test_same_title_with_disagreeing_identity_stays_apart(one: Any, two: Any) -> None:
    assert len(parse_search(page(one, two), SOURCE).papers) == 2


def test_shared_doi_folds_preprint_versions_keeping_the_latest() -> None:
    v1 = dict(id="PPR10", source="PPR", doi="10.1101/2024.1", title=TITLE, versionNumber=1)
    v2 = {**v1, "id": "PPR20", "title": TITLE + " (v2)", "versionNumber": "2"}
    (record,) = parse_search(page(v1, v2), SOURCE).papers
    assert (record.ppr_id, record.version, record.paper.title) == ("PPR20", 2, TITLE + " (v2)")
    assert record.epmc_ids == ["PPR:PPR20", "PPR:PPR10"]


def test_preprint_links_from_comment_correction_list() -> None:
    preprint = {
        "id": "PPR707121", "source": "PPR", "doi": "10.1101/2023.08.21.554000", "title": TITLE,
        "commentCorrectionList": {"commentCorrection": [
            {"id": "38605817", "source": "MED", "type": "Preprint of", "orderIn": 10001,
             "reference": "Sci Immunol. 2024;9(93):eadk1234. doi: 10.1126/sciimmunol.adk1234."},
        ]},
    }  # fmt: skip
    article = {
        "id": "38605817", "source": "MED", "pmid": "38605817", "doi": "10.1126/sciimmunol.adk1234",
        "title": TITLE + " in adults",
        "commentCorrectionList": {"commentCorrection": [
            {"id": "PPR707121", "source": "PPR", "type": "Preprint in", "orderIn": 10002},
        ]},
    }  # fmt: skip
    first, second = parse_search(page(preprint, article), SOURCE).papers
    assert first.published_ids == ["MED:38605817"]
    assert first.published_doi == "10.1126/sciimmunol.adk1234"
    assert second.preprint_ids == ["PPR707121"] and second.published_doi is None


def test_odd_values_are_ignored_not_fatal() -> None:
    odd = {
        "id": "PPR5", "source": "PPR", "doi": 42, "title": ["not", "text"], "pmid": True,
        "authorList": "Smith J", "authorString": "Roe, J.; Miles, R.", "pubTypeList": [],
        "abstractText": "<h4>Background</h4>H<sub>2</sub>S <i>in vivo</i><h4></h4>tail",
        "firstPublicationDate": "2025-02-30", "versionNumber": "2",
        "fullTextUrlList": {"fullTextUrl": [{"url": "javascript:alert(1)"}, "x"]},
        "commentCorrectionList": {"commentCorrection": [{"type": None}, 7]},
    }  # fmt: skip
    result = parse_search(page("junk", 3, None, {}, odd), SOURCE)
    (record,) = result.papers
    paper = record.paper
    assert (paper.doi, paper.pmid, paper.title, paper.published) == (None, None, None, None)
    assert paper.authors == ["Roe J", "Miles R"]
    assert paper.abstract == "Background: H2S in vivo\ntail"
    assert (record.version, record.full_text_urls, record.links) == (2, [], [])


@pytest.mark.parametrize(
    "body",
    [
        b"", b"   ", b"[]", b"{}", b'{"hitCount": 3}', b'{"resultList": {"result": []}}',
        b'{"hitCount": "many", "resultList": {"result": []}}',
        b"<html><body>Service unavailable</body></html>", b"\xff\xfe\xfa not json", b"[" * 100_000,
    ],
    ids=lambda b: repr(b[:20]),
)  # fmt: skip
def test_non_answers_raise_the_documented_error(body: bytes) -> None:
    with pytest.raises(EuropePMCError):
        parse_search(body, SOURCE)


# --- Fuzz -------------------------------------------------------------------------------------

_keys = st.sampled_from(
    ["id", "source", "doi", "pmid", "pmcid", "title", "authorList", "author", "fullName",
     "lastName", "initials", "collectiveName", "authorString", "abstractText", "pubType",
     "pubTypeList", "journalInfo", "journal", "journalTitle", "printPublicationDate",
     "bookOrReportDetails", "publisher", "versionNumber", "firstPublicationDate",
     "firstIndexDate", "commentCorrectionList", "commentCorrection", "type", "reference",
     "fullTextUrlList", "fullTextUrl", "url", "meshHeadingList", "meshHeading",
     "descriptorName", "keywordList", "keyword"]
)  # fmt: skip


def _objects(values: Any, size: int) -> Any:
    # Pairs made into a dict: no unique-key filter for hypothesis to retry.
    return st.lists(st.tuples(_keys, values), max_size=size).map(dict)


_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
_json = _leaf
for _ in range(3):  # three levels: enough for authorList.author[].fullName
    _json = _leaf | st.lists(_json, max_size=3) | _objects(_json, 3)


@settings(max_examples=200, deadline=None, database=None)
@given(st.binary(max_size=300) | _json.map(lambda value: json.dumps(value).encode()))
def test_fuzz_any_bytes_give_a_page_or_the_error(body: bytes) -> None:
    try:
        result = parse_search(body, SOURCE)
    except EuropePMCError:
        return
    assert result.hit_count >= 0 and result.merged >= 0
    assert result.next_cursor is None or result.next_cursor != result.cursor


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(_objects(_json, 8), max_size=5), _json)
def test_fuzz_odd_records_never_break_a_page(records: list[Any], extra: Any) -> None:
    body = json.dumps({"hitCount": 1, "nextCursorMark": extra, "resultList": {"result": records}})
    result = parse_search(body.encode(), SOURCE)
    assert len(result.papers) <= len(records)
    for record in result.papers:
        assert all(isinstance(a, str) and a for a in record.paper.authors)


_CORE_RECORD: dict[str, Any] = {
    "id": "40000001", "source": "MED", "pmid": "40000001", "pmcid": "PMC12000001",
    "doi": "10.1000/xyz.2025.1", "title": TITLE,
    "authorList": {"author": [{"fullName": "Roe J", "lastName": "Roe", "initials": "J"}]},
    "journalInfo": {"journal": {"title": "Lupus"}, "printPublicationDate": "2025-07-01"},
    "pubTypeList": {"pubType": ["Journal Article"]},
    "abstractText": "<h4>Background</h4>Text.",
    "meshHeadingList": {"meshHeading": [{"descriptorName": "Humans"}]},
    "keywordList": {"keyword": ["SLE"]},
    "firstPublicationDate": "2025-06-20", "firstIndexDate": "2025-06-21",
}  # fmt: skip
_EXPECTED = {  # raw key -> the Paper attribute it fills, and its value in _CORE_RECORD
    "doi": ("doi", "10.1000/xyz.2025.1"), "pmid": ("pmid", "40000001"),
    "pmcid": ("pmcid", "PMC12000001"), "title": ("title", TITLE),
    "authorList": ("authors", ["Roe J"]), "abstractText": ("abstract", "Background: Text."),
    "keywordList": ("keywords", ["SLE"]), "meshHeadingList": ("mesh", ["Humans"]),
}  # fmt: skip


@settings(max_examples=200, deadline=None, database=None)
@given(st.sampled_from(sorted(_CORE_RECORD)), _json)
def test_fuzz_one_broken_field_spoils_only_itself(key: str, value: Any) -> None:
    (record,) = parse_search(page({**_CORE_RECORD, key: value}), SOURCE).papers
    for raw_key, (attribute, expected) in _EXPECTED.items():
        if raw_key != key:
            assert getattr(record.paper, attribute) == expected, attribute
