"""Crossref REST answers: update-to / updated-by events, work-list pages, titles, URLs, errors.

The hand-written fixtures in tests/fixtures/lifecycle/ are invented works (10.5555 test prefix)
in the REST API's format; the real Crossref lifecycle files are checked in
test_lifecycle_events.py, and test_crossref_fuzz.py holds the parser to its one error class.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from scrapy.http import Headers

from crawler.events import PaperEvent, status_of
from spiders.crossref_parse import (
    CrossrefError,
    crossref_rate_limit,
    crossref_updates_url,
    crossref_work_url,
    notice_kind_from_title,
    parse_work,
    parse_work_list,
    read_work,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lifecycle"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def answer(message: Any, message_type: str = "work") -> bytes:
    return json.dumps({"status": "ok", "message-type": message_type, "message": message}).encode()


def work(**fields: Any) -> bytes:
    return answer({"DOI": "10.5555/w.1", **fields})


# --------------------------------------------------------------------------- fixtures


def test_updated_by_with_a_retraction_watch_entry() -> None:
    found = parse_work(fixture("crossref_work_updated-by_retraction-watch.json"))
    assert found.doi == "10.5555/jir.2021.0042"  # upper case in the answer
    assert found.title == "Serum cytokine profiles in fibromyalgia: a cohort study"  # <i> dropped
    correction, retraction = found.events
    assert retraction == PaperEvent(
        type="retracted",
        source="retraction-watch",
        target_doi="10.5555/jir.2021.0042",
        notice_doi="10.5555/jir.2024.0113",
        notice_title="Retraction",
        notice_url="https://doi.org/10.5555/jir.2024.0113",
        date=date(2024, 11, 5),
    )
    assert (correction.type, correction.source) == ("corrected", "crossref")
    assert (correction.notice_doi, correction.date) == ("10.5555/jir.2022.0007", date(2022, 3, 14))
    assert status_of(e.type for e in found.events) == "retracted"
    assert found.notice_kind is None  # the changed paper is not a notice


def test_expression_of_concern_notice_is_about_its_target_and_never_a_retraction() -> None:
    found = parse_work(fixture("crossref_work_expression_of_concern_notice.json"))
    [event] = found.events
    assert (event.type, event.target_doi, event.notice_doi) == (
        "concern",
        "10.5555/jir.2020.0731",
        "10.5555/jir.2024.0050",
    )
    assert event.notice_title == found.title
    assert found.notice_kind == "concern"


def test_work_list_page() -> None:
    page = parse_work_list(fixture("crossref_works_page_notices_cursor.json"))
    assert page.next_cursor == "DnF1ZXJ5VGhlbkZldGNoBgAAAAAAAlitwatchTEST+cursor/0=="
    assert page.total_results == 1843
    by_doi = {w.doi: w for w in page.works}
    assert list(by_doi) == [
        "10.5555/ijim.2025.0101",
        "10.5555/ijim.2025.0102",
        "10.5555/preprint.2025.0005",
        "10.5555/ijim.2025.0140",
        "10.5555/ijim.2021.0077",
    ]
    summary = {
        doi: [(e.type, e.target_doi, e.source, e.date) for e in w.events]
        for doi, w in by_doi.items()
    }
    assert summary == {
        "10.5555/ijim.2025.0101": [
            ("retracted", "10.5555/ijim.2023.0455", "crossref", date(2025, 3, 3))
        ],
        # A partial retraction: the rest of the paper stands.
        "10.5555/ijim.2025.0102": [
            ("corrected", "10.5555/ijim.2022.0310", "crossref", date(2025, 3, 4))
        ],
        # date-parts [[2025, 3]]: missing day means the first.
        "10.5555/preprint.2025.0005": [
            ("withdrawn", "10.5555/preprint.2024.0881", "crossref", date(2025, 3, 1))
        ],
        "10.5555/ijim.2025.0140": [],  # "reinstatement" is not tracked
        "10.5555/ijim.2021.0077": [
            ("retracted", "10.5555/ijim.2021.0077", "crossref", date(2025, 2, 27)),
            ("concern", "10.5555/ijim.2021.0077", "retraction-watch", date(2023, 10, 2)),
        ],
    }
    kinds = {doi: w.notice_kind for doi, w in by_doi.items()}
    assert kinds == {
        "10.5555/ijim.2025.0101": "retraction",
        "10.5555/ijim.2025.0102": "correction",  # from update-to; its title names no kind
        "10.5555/preprint.2025.0005": "withdrawal",
        "10.5555/ijim.2025.0140": None,
        "10.5555/ijim.2021.0077": None,  # updated in place, "RETRACTED:" title: not a notice
    }
    [link] = by_doi["10.5555/ijim.2021.0077"].preprint_links
    assert (link.preprint_doi, link.published_doi) == (
        "10.5555/preprint.2020.0400",
        "10.5555/ijim.2021.0077",
    )


def test_last_page_has_no_works() -> None:
    page = parse_work_list(answer({"items": [], "next-cursor": "abc"}, "work-list"))
    assert (page.works, page.next_cursor, page.total_results) == ((), "abc", None)


# --------------------------------------------------------------------------- leniency on values


@pytest.mark.parametrize(
    ("updated", "expected"),
    [
        ({"date-parts": [[2024, 2, 30]]}, None),  # impossible day
        ({"date-parts": [[None]]}, None),  # Crossref's "unknown"
        ({"date-parts": [[10**30, 1, 1]]}, None),
        ({"date-parts": [[2024.5]]}, None),
        ({"date-parts": [[True, 1, 1]]}, None),
        ({"date-parts": [[2024]]}, date(2024, 1, 1)),
        ({"date-time": "2023-09-17T00:00:00Z"}, date(2023, 9, 17)),
        ("2023-09-17", None),
    ],
)
def test_unusable_dates_are_none(updated: Any, expected: date | None) -> None:
    entry = {"DOI": "10.5555/n.1", "type": "Retraction", "updated": updated}
    [event] = parse_work(work(**{"updated-by": [entry]})).events
    assert (event.type, event.date) == ("retracted", expected)


def test_entries_that_name_nothing_usable_are_skipped() -> None:
    entries = [
        {"type": "retraction"},  # no DOI
        {"DOI": "not a doi", "type": "retraction"},
        {"DOI": "10.5555/n.2", "type": "comment"},
        {"DOI": "10.5555/n.3"},  # no type
        {"DOI": "10.5555/n.4", "type": "Expression of Concern"},
    ]
    found = parse_work(work(**{"updated-by": entries}))
    assert [(e.type, e.notice_doi) for e in found.events] == [("concern", "10.5555/n.4")]


def test_notice_url_escapes_what_a_url_cannot_hold() -> None:
    sici = "10.1002/(SICI)1097-4636(199706)35:4<463::AID-JBM6>3.0.CO;2-R"
    [event] = parse_work(work(**{"updated-by": [{"DOI": sici, "type": "erratum"}]})).events
    assert event.notice_doi == sici.lower()
    assert event.notice_url is not None and "<" not in event.notice_url
    assert unquote(event.notice_url) == f"https://doi.org/{sici.lower()}"


# --------------------------------------------------------------------------- titles


@pytest.mark.parametrize(
    ("title", "kind"),
    [
        ("Correction: Development of a therapeutic video game", "correction"),
        ("Correction to: Pain in lupus", "correction"),
        ("Erratum to “Pain in lupus”", "correction"),
        ("Corrigendum to 'Pain in lupus' [J Pain 3 (2020) 1-9]", "correction"),
        ("Author Correction: Pain in lupus", "correction"),
        ("Publisher Correction: Pain in lupus", "correction"),
        ("Erratum", "correction"),
        ("Retraction: Gut microbiome shifts", "retraction"),
        ("Retraction Note: Pain in lupus", "retraction"),
        ("Retraction notice to “Pain in lupus”", "retraction"),
        ("RETRACTION NOTICE.", "retraction"),
        ("Expression of Concern: Pain in lupus", "concern"),
        ("Editorial Expression of Concern: Pain in lupus", "concern"),
        ("Expression of concern", "concern"),
        # Not clear notice prefixes:
        ("RETRACTED: Vitamin D status", None),  # Elsevier marks the retracted article itself
        ("Retracted: Vitamin D status", None),
        ("RETRACTED ARTICLE: Vitamin D status", None),
        ("Notice of Retraction: Vitamin D status", None),
        ("Correction to the Hubble constant from lensing", None),
        ("Corrections of sampling bias in pain surveys", None),
        ("Retraction Watch and the research record", None),
        ("Expressions of concern in medical journals: a survey", None),
        ("A correction: why pain scores drift", None),
        ("", None),
        (None, None),
    ],
)
def test_notice_kind_from_title_is_strict(title: str | None, kind: str | None) -> None:
    assert notice_kind_from_title(title) == kind


# --------------------------------------------------------------------------- politeness


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"X-Rate-Limit-Limit": "50", "X-Rate-Limit-Interval": "1s"}, 0.02),
        (Headers({"X-Rate-Limit-Limit": "50", "X-Rate-Limit-Interval": "1s"}), 0.02),
        ({b"x-rate-limit-limit": [b"10"], b"x-rate-limit-interval": [b"2s"]}, 0.2),
        ({"X-Rate-Limit-Limit": "5", "X-Rate-Limit-Interval": "500ms"}, 0.1),
        ({"X-Rate-Limit-Limit": "60", "X-Rate-Limit-Interval": "1m"}, 1.0),
        ({"X-Rate-Limit-Limit": " 4 ", "X-Rate-Limit-Interval": "2"}, 0.5),
    ],
)
def test_rate_limit_from_headers(headers: Any, seconds: float) -> None:
    assert crossref_rate_limit(headers) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Rate-Limit-Limit": "50"},
        {"X-Rate-Limit-Limit": "0", "X-Rate-Limit-Interval": "1s"},
        {"X-Rate-Limit-Limit": "-5", "X-Rate-Limit-Interval": "1s"},
        {"X-Rate-Limit-Limit": "fifty", "X-Rate-Limit-Interval": "1s"},
        {"X-Rate-Limit-Limit": "50", "X-Rate-Limit-Interval": "soon"},
        {"X-Rate-Limit-Limit": "50", "X-Rate-Limit-Interval": "0s"},
        {"X-Rate-Limit-Limit": "50", "X-Rate-Limit-Interval": "9" * 400},
        {"X-Rate-Limit-Limit": [], "X-Rate-Limit-Interval": "1s"},
    ],
)
def test_rate_limit_falls_back_to_the_default(headers: dict[str, Any]) -> None:
    assert crossref_rate_limit(headers, default=0.75) == 0.75


def test_bulk_notice_url() -> None:
    url = crossref_updates_url(date(2025, 1, 2), "lit@example.org", update_types=("retraction",))
    assert url == (
        "https://api.crossref.org/works?filter=from-index-date:2025-01-02,update-type:retraction"
        "&cursor=*&rows=1000&mailto=lit@example.org"
    )


def test_bulk_notice_url_defaults_and_escaping() -> None:
    cursor = "DnF1ZXJ5+VGhl/bkZl=="
    url = crossref_updates_url(
        date(2025, 1, 2), "me+lit@example.org", cursor=cursor, rows=20, base="http://127.0.0.1:9/cr"
    )
    parts = urlsplit(url)
    assert parts.path == "/cr/works"
    query = parse_qs(parts.query)
    assert (query["cursor"], query["rows"], query["mailto"]) == (
        [cursor],
        ["20"],
        ["me+lit@example.org"],
    )
    filters = query["filter"][0].split(",")
    assert filters[0] == "from-index-date:2025-01-02"
    assert {"update-type:retraction", "update-type:expression_of_concern"} <= set(filters)
    assert "update-type:new_version" not in filters  # versions are not integrity notices


@pytest.mark.parametrize(("rows", "mailto"), [(0, "a@b.org"), (1001, "a@b.org"), (10, " ")])
def test_bulk_notice_url_refuses_what_crossref_would(rows: int, mailto: str) -> None:
    with pytest.raises(ValueError):
        crossref_updates_url(date(2025, 1, 2), mailto, rows=rows)


def test_work_url_escapes_the_doi() -> None:
    sici = "10.1002/(SICI)1097-4636(199706)35:4<463::AID-JBM6>3.0.CO;2-R"
    url = crossref_work_url(f"https://doi.org/{sici}", "a@b.org")
    parts = urlsplit(url)
    assert url.startswith("https://api.crossref.org/works/10.1002/")
    assert unquote(parts.path) == f"/works/{sici}"
    assert parse_qs(parts.query) == {"mailto": ["a@b.org"]}
    with pytest.raises(ValueError):
        crossref_work_url("not a doi", "a@b.org")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"Resource not found.",
        b"\xff\xfe\xfa\x00garbage",
        b"[]",
        b'"work"',
        b'{"status":"failed","message-type":"validation-failure","message":[{"type":"x"}]}',
        answer({"items": []}, "work-list"),  # a list where a work was expected
        answer([], "work"),
        answer({"title": ["No DOI"]}),
        work(DOI=42),
        answer({"DOI": "not-a-doi"}),
        work(title="not a list"),
        work(title=[1]),
        work(**{"update-to": {}}),
        work(**{"update-to": [1]}),
        work(**{"updated-by": [{"DOI": "10.5555/n", "type": 5}]}),
        work(**{"updated-by": [{"DOI": ["10.5555/n"], "type": "retraction"}]}),
        work(relation=[]),
        work(relation={"is-preprint-of": {}}),
        work(relation={"has-preprint": [{"id-type": "doi", "id": 5}]}),
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b'{"status":"ok","message-type":"work","message":{"DOI":' + b"1" * 5000 + b"}}",
    ],
)
def test_bad_work_answers_raise_crossref_error(body: bytes) -> None:
    with pytest.raises(CrossrefError):
        parse_work(body)


@pytest.mark.parametrize(
    "message",
    [{}, {"items": {}}, {"items": [1]}, {"items": [], "next-cursor": 5}, {"items": [{"DOI": "x"}]}],
)
def test_bad_work_list_answers_raise_crossref_error(message: dict[str, Any]) -> None:
    with pytest.raises(CrossrefError):
        parse_work_list(answer(message, "work-list"))


def test_the_one_error_class_is_a_value_error() -> None:
    # Callers that already handle ValueError (bad input) need nothing new.
    assert issubclass(CrossrefError, ValueError)
    with pytest.raises(CrossrefError, match="object"):
        read_work(["not", "an", "object"])
