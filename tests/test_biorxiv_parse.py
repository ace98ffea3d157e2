"""Tests for spiders.biorxiv_parse: api.biorxiv.org ``details`` and ``pubs`` answers.

The fixtures in tests/fixtures/biorxiv/ are hand-written in the API's real envelope
(``messages[0]`` with ``cursor`` as an int or a string, ``total`` as a string): a details
window over three pages with a v2 and a withdrawn preprint, an empty window, an error answer
and a pubs page.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from spiders.biorxiv_parse import (
    DEFAULT_BASE_URL,
    BiorxivError,
    BiorxivRecord,
    Paging,
    details_url,
    parse_details,
    parse_pubs,
    pubs_url,
)
from tests.support.fuzz import given, settings, st

FIXTURES = Path(__file__).parent / "fixtures" / "biorxiv"
SOURCE = "biorxiv-test"
PAGES = ["details_page1.json", "details_page2.json", "details_page3.json"]
V2_DOI = "10.1101/2024.01.15.575101"
WITHDRAWN_DOI = "10.1101/2024.01.18.576303"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def raw_collection(name: str) -> list[dict[str, Any]]:
    return json.loads(fixture(name))["collection"]


def answer(collection: list[Any], **message: Any) -> bytes:
    return json.dumps(
        {"messages": [{"status": "ok", **message}], "collection": collection}
    ).encode()


def window() -> dict[str, BiorxivRecord]:
    """Every record of the three-page window, walked by cursor as the spider will."""
    records: dict[str, BiorxivRecord] = {}
    cursor: int | None = 0
    for name in PAGES:
        page = parse_details(fixture(name), SOURCE)
        assert page.paging.cursor == cursor
        records.update({r.doi: r for r in page.records})
        cursor = page.next_cursor
    assert cursor is None
    return records


# --- details: paging --------------------------------------------------------------------------


def test_three_pages_chain_by_cursor_plus_count() -> None:
    pagings = [parse_details(fixture(name), SOURCE).paging for name in PAGES]
    assert pagings == [Paging(0, 3, 7), Paging(3, 3, 7), Paging(6, 1, 7)]
    assert [p.next_cursor for p in pagings] == [3, 6, None]


def test_next_cursor_follows_count_at_the_documented_100_per_page() -> None:
    rows = [{"doi": f"10.1101/2024.02.01.{i:06d}", "version": "1"} for i in range(100)]
    first = parse_details(answer(rows, cursor=0, count=100, total="250"), SOURCE)
    assert first.next_cursor == 100 and len(first.records) == 100
    middle = parse_details(answer(rows, cursor="100", count=100, total="250"), SOURCE)
    assert middle.next_cursor == 200
    last = parse_details(answer(rows[:50], cursor=200, count=50, total="250"), SOURCE)
    assert last.next_cursor is None


def test_a_30_record_page_is_followed_at_30() -> None:
    rows = [{"doi": f"10.1101/2026.08.01.{i:06d}", "version": "1"} for i in range(30)]
    assert parse_details(answer(rows, cursor=0, count=30, total="109"), SOURCE).next_cursor == 30


def test_paging_never_loops_on_a_zero_or_missing_count() -> None:
    assert parse_details(answer([], cursor=0, count=0, total="500"), SOURCE).next_cursor is None
    rows = [{"doi": "10.1101/2024.02.01.000001"}]
    assert parse_details(answer(rows, cursor=5, total="9"), SOURCE).paging == Paging(5, 1, 9)
    assert parse_details(answer(rows, cursor=5), SOURCE).next_cursor is None  # no total


# --- details: records -------------------------------------------------------------------------


def test_versions_of_one_preprint_fold_into_the_highest() -> None:
    page = parse_details(fixture("details_page1.json"), SOURCE)
    v1, v2 = (r for r in raw_collection("details_page1.json") if r["doi"] == V2_DOI)
    assert [r.doi for r in page.records] == [V2_DOI, "10.1101/2024.01.16.575202"]
    record = page.records[0]
    assert record.version == 2 and record.paper.title == v2["title"]
    assert record.paper.abstract == v2["abstract"]
    assert record.version_date == date.fromisoformat(v2["date"])
    assert record.paper.published == date.fromisoformat(v1["date"])  # first posted
    assert record.paper.url == f"https://www.biorxiv.org/content/{V2_DOI}v2"
    assert record.paper.authors == [
        "Evdokimov D", "Frank J", "Klitsch A", "Papagianni A", "Uceyler N",
    ]  # fmt: skip


def test_record_fields() -> None:
    record = window()["10.1101/2024.01.16.575202"]
    paper = record.paper
    assert (paper.origin, paper.sighting_kind, paper.journal) == ("feed", "preprint", "bioRxiv")
    assert paper.publication_types == ["Preprint"] and paper.source_id == SOURCE
    assert paper.authors == ["Nakamura H", "Ortiz-Lopez MJ", "Banchereau J"]
    assert (record.category, record.type, record.license) == (
        "immunology",
        "new results",
        "cc_by_nc_nd",
    )
    assert record.author_corresponding == "Jacques Banchereau"
    assert record.author_corresponding_institution == "The Jackson Laboratory"
    assert record.published_doi is None and not record.withdrawn
    assert record.jats_url and record.jats_url.endswith("575202.source.xml")


def test_withdrawn_version_is_flagged_and_keeps_the_paper_text() -> None:
    page = parse_details(fixture("details_page2.json"), SOURCE)
    record = next(r for r in page.records if r.doi == WITHDRAWN_DOI)
    v1, v2 = (r for r in raw_collection("details_page2.json") if r["doi"] == WITHDRAWN_DOI)
    assert record.withdrawn and record.version == 2
    assert record.paper.seen_title == v2["title"]  # "WITHDRAWN: ..." as printed
    assert record.paper.title == v1["title"]  # the paper's own title, for identity
    assert record.withdrawal_notice == v2["abstract"]
    assert record.paper.abstract == v1["abstract"]  # not the notice


@pytest.mark.parametrize(
    ("title", "abstract", "kind", "withdrawn"),
    [
        ("WITHDRAWN: A study", "Real abstract.", "new results", True),
        ("[Withdrawn] A study", "Real abstract.", "new results", True),
        ("A study", "The authors have withdrawn this manuscript because of an error.", None, True),
        ("A study", "This preprint has been withdrawn by the authors.", None, True),
        ("A study", "Real abstract.", "withdrawn", True),
        ("Withdrawn behaviour in mice lacking Shank3", "Mice withdrew.", "new results", False),
        ("A study", "Patients withdrawn from treatment did worse.", "new results", False),
    ],
)
def test_withdrawal_signals(title: str, abstract: str, kind: str | None, withdrawn: bool) -> None:
    row = {"doi": "10.1101/2024.03.01.000001", "version": "1", "title": title}
    row |= {"abstract": abstract, "type": kind}
    (record,) = parse_details(answer([row], cursor=0, count=1, total="1"), SOURCE).records
    assert record.withdrawn is withdrawn


def test_published_doi_and_new_doi_prefix() -> None:
    record = window()["10.64898/2024.01.19.576404"]
    assert record.published_doi == "10.1016/j.ard.2024.01.002"
    assert record.type == "confirmatory results"
    assert record.paper.authors == ["Alpizar-Rodriguez D", "Lesker TR", "The SCREEN-RA Consortium"]


def test_markup_entities_and_lower_case_server() -> None:
    record = window()["10.1101/2023.12.20.572505"]
    assert record.server == "bioRxiv" and record.version == 3
    assert record.paper.title == (
        "Central sensitisation scores and HLA-DRB1 alleles in chronic widespread pain"
    )
    assert record.paper.abstract and "(p < 0.05 threshold)" in record.paper.abstract
    assert record.paper.authors == ["O'Connell RJ", "Dallery JF", "van der Berg A"]


@pytest.mark.parametrize(
    ("categories", "kept", "left_out"),
    [
        ((), 5, 0),
        (["immunology"], 2, 4),  # left out: two neuroscience versions, microbiology, Genetics
        (["IMMUNOLOGY", "genetics"], 3, 3),
        (["cell_biology", "Genetics"], 1, 6),
        (["Animal-Behavior-and-Cognition"], 0, 7),
    ],
)
def test_category_filter(categories: list[str], kept: int, left_out: int) -> None:
    pages = [parse_details(fixture(name), SOURCE, categories=categories) for name in PAGES]
    assert sum(len(p.records) for p in pages) == kept
    assert sum(p.filtered_out for p in pages) == left_out
    assert pages[0].next_cursor == 3  # filtering never changes paging


def test_category_keys_treat_separators_alike() -> None:
    row = {"doi": "10.1101/2024.03.01.000002", "category": "animal behavior and cognition"}
    body = answer([row], cursor=0, count=1, total="1")
    assert parse_details(body, SOURCE, categories=["Animal_Behavior-and cognition"]).records


def test_records_without_a_doi_are_skipped() -> None:
    rows: list[Any] = [{"title": "No DOI"}, {"doi": "NA"}, "junk", 7, {"doi": "10.1101/2024.1"}]
    page = parse_details(answer(rows, cursor=0, count=5, total="5"), SOURCE)
    assert [r.doi for r in page.records] == ["10.1101/2024.1"]
    assert page.records[0].paper.url == "https://doi.org/10.1101/2024.1"  # no server, no version


# --- Empty and failed answers -----------------------------------------------------------------


def test_empty_window_is_an_empty_page() -> None:
    page = parse_details(fixture("details_empty.json"), SOURCE)
    assert page.records == [] and page.next_cursor is None


@pytest.mark.parametrize(
    "body",
    [
        fixture("details_error.json"),
        b"",
        b"[]",
        b"{}",
        b'{"messages": [], "collection": []}',
        b'{"messages": ["ok"], "collection": []}',
        b'{"messages": [{"status": "no posts found"}], "collection": [{"doi": "10.1101/1"}]}',
        b"<html><body>502 Bad Gateway</body></html>",
        b"\x00\xff garbage",
        b"{" * 50_000,
    ],
    ids=lambda b: repr(b[:24]),
)
def test_failed_answers_raise_the_documented_error(body: bytes) -> None:
    with pytest.raises(BiorxivError):
        parse_details(body, SOURCE)
    with pytest.raises(BiorxivError):
        parse_pubs(body)


# --- pubs -------------------------------------------------------------------------------------


def test_pubs_links_each_pair_once_and_reads_both_doi_field_names() -> None:
    page = parse_pubs(fixture("pubs_page.json"))
    assert [(link.preprint_doi, link.published_doi) for link in page.links] == [
        ("10.1101/2024.01.16.575202", "10.1126/sciimmunol.adk1234"),
        ("10.1101/2023.11.02.565123", "10.1038/S41584-024-01100-9"),
    ]
    first = page.links[0]
    assert first.published_journal == "Science Immunology" and first.server == "bioRxiv"
    assert (first.preprint_date, first.published_date) == (date(2024, 1, 17), date(2024, 6, 3))
    assert first.preprint_title == "Interferon signatures in early systemic lupus erythematosus"
    assert page.paging == Paging(0, 4, 4) and page.next_cursor is None


def test_withdrawn_and_published_preprints_say_so_to_the_store() -> None:
    page = parse_details(fixture("details_page2.json"), SOURCE)
    gone = next(r for r in page.records if r.doi == WITHDRAWN_DOI)
    [event] = gone.paper.events
    assert (event.type, event.source, event.target_doi) == ("withdrawn", "biorxiv", WITHDRAWN_DOI)
    assert event.notice_title == gone.withdrawal_notice and event.date == gone.version_date
    published = next(r for r in page.records if r.published_doi)
    [link] = published.paper.versions
    assert (link.preprint_doi, link.published_doi) == (published.doi, "10.1016/j.ard.2024.01.002")
    assert link.source == "biorxiv" and link.server == "bioRxiv"
    assert all(not r.paper.versions for r in page.records if not r.published_doi)


def test_pubs_records_are_version_links() -> None:
    link = parse_pubs(fixture("pubs_page.json")).links[0].version_link()
    assert (link.preprint_doi, link.published_doi) == (
        "10.1101/2024.01.16.575202", "10.1126/sciimmunol.adk1234",
    )  # fmt: skip
    assert link.published_journal == "Science Immunology" and link.server == "bioRxiv"
    assert (link.preprint_posted, link.published_date) == (date(2024, 1, 17), date(2024, 6, 3))


def test_pubs_empty_answer() -> None:
    body = b'{"messages": [{"status": "no articles found for published version of "}]}'
    assert parse_pubs(body).links == []


# --- URLs -------------------------------------------------------------------------------------


def test_url_builders() -> None:
    since, until = date(2024, 1, 15), date(2024, 1, 21)
    assert details_url("biorxiv", since, until) == (
        "https://api.biorxiv.org/details/biorxiv/2024-01-15/2024-01-21/0/json"
    )
    assert pubs_url("medrxiv", since, until, 200) == (
        "https://api.biorxiv.org/pubs/medrxiv/2024-01-15/2024-01-21/200/json"
    )
    local = details_url("biorxiv", since, until, 3, base_url="http://127.0.0.1:9000/api")
    assert local == "http://127.0.0.1:9000/api/details/biorxiv/2024-01-15/2024-01-21/3/json"
    assert DEFAULT_BASE_URL == "https://api.biorxiv.org/"


@pytest.mark.parametrize(
    ("server", "since", "until", "cursor"),
    [
        ("arxiv", date(2024, 1, 1), date(2024, 1, 2), 0),
        ("bioRxiv", date(2024, 1, 1), date(2024, 1, 2), 0),
        ("biorxiv", date(2024, 1, 3), date(2024, 1, 2), 0),
        ("biorxiv", date(2024, 1, 1), date(2024, 1, 2), -100),
    ],
)
def test_url_builders_refuse_bad_arguments(
    server: str, since: date, until: date, cursor: int
) -> None:
    with pytest.raises(ValueError):
        details_url(server, since, until, cursor)
    with pytest.raises(ValueError):
        pubs_url(server, since, until, cursor)


# --- Fuzz -------------------------------------------------------------------------------------

_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=30)
_value = _leaf | st.lists(_leaf, max_size=3)
_doi = st.sampled_from(["10.1101/2024.01.01.000001", "10.64898/2024.01.01.2", "NA"]) | _leaf
_row = st.fixed_dictionaries(
    {},
    optional={
        **{k: _doi for k in ("doi", "published", "preprint_doi", "biorxiv_doi")},
        "published_doi": _doi,
        "version": st.sampled_from(["1", "2", "3"]) | _leaf,
        "date": st.sampled_from(["2024-01-15", "2024-02-30"]) | _leaf,
        **{k: _value for k in ("title", "authors", "abstract", "type", "category")},
        **{k: _value for k in ("server", "jatsxml", "preprint_date", "published_date")},
    },
)
_message = st.fixed_dictionaries(
    {"status": st.sampled_from(["ok", "ok", "no posts found", "error"]) | _leaf},
    optional={k: st.integers(-5, 500) | st.text(max_size=4) | _leaf
              for k in ("cursor", "count", "total")},
)  # fmt: skip


@settings(max_examples=200, deadline=None, database=None)
@given(st.binary(max_size=300))
def test_fuzz_any_bytes_give_a_page_or_the_error(body: bytes) -> None:
    for parse in (lambda b: parse_details(b, SOURCE), parse_pubs):
        try:
            page = parse(body)
        except BiorxivError:
            continue
        assert page.next_cursor is None or page.next_cursor > page.paging.cursor


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(_row | _leaf, max_size=6), _message, st.lists(st.text(max_size=12)))
def test_fuzz_odd_answers_give_a_page_or_the_error(
    rows: list[Any], message: dict[str, Any], categories: list[str]
) -> None:
    body = json.dumps({"messages": [message], "collection": rows}).encode()
    try:
        details = parse_details(body, SOURCE, categories=categories)
        pubs = parse_pubs(body)
    except BiorxivError:
        return
    dois = [r.doi for r in details.records]
    assert len(dois) == len(set(dois)) and len(dois) + details.filtered_out <= len(rows)
    assert all(link.preprint_doi and link.published_doi for link in pubs.links)
    for page in (details, pubs):
        assert page.next_cursor is None or page.next_cursor > page.paging.cursor
