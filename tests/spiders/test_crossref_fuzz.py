"""Bounded fuzzing of the Crossref parser: whatever the bytes, CrossrefError or a sound result.

Three generators: raw bytes; any JSON under a Crossref envelope; and works that are mostly
well-formed (plausible DOIs, update types, dates and relations, with a wrong-typed value mixed
in now and then), so the event and link code is reached, not just the envelope checks.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crawler.normalise import doi_key
from spiders.crossref_parse import (
    UPDATE_TYPES,
    CrossrefError,
    CrossrefWork,
    parse_work,
    parse_work_list,
)
from tests.support.corpus import corpus_path

FUZZ = settings(max_examples=200, deadline=None, database=None)

_LEAF = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_ANY = st.recursive(
    _LEAF,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids),
    max_leaves=12,
)


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` 19 times in 20, else a leaf of any JSON type (a plain ``|`` would be 1 in 6).

    The odd one out is 13, not 0: Hypothesis favours small integers, and shrinks to valid.
    """
    return st.integers(0, 19).flatmap(lambda n: _LEAF if n == 13 else valid)


_DOI = st.sampled_from(
    ["10.5555/X.1", "10.5555/y(2)", "https://doi.org/10.5555/Z", "10.5555/a", "no"]
)
_TYPE = st.sampled_from([*UPDATE_TYPES, "Expression-of-Concern", "reinstatement"])
_PARTS = st.lists(st.lists(mostly(st.integers(-5, 10**20)), max_size=4), max_size=2)
_DATE = st.fixed_dictionaries(
    {}, optional={"date-parts": _PARTS, "date-time": st.text(max_size=25)}
)
_ENTRY = st.fixed_dictionaries(
    {"DOI": mostly(_DOI), "type": mostly(_TYPE)},
    optional={
        "source": mostly(st.sampled_from(["publisher", "retraction-watch"])),
        "label": mostly(st.text(max_size=12)),
        "updated": mostly(_DATE),
    },
)
_RELATED = st.fixed_dictionaries(
    {"id-type": mostly(st.sampled_from(["doi", "DOI", "doi", "uri"])), "id": mostly(_DOI)}
)
_RELATED_LIST = mostly(st.lists(mostly(_RELATED), max_size=2))
_RELATION = st.fixed_dictionaries(
    {}, optional={key: _RELATED_LIST for key in ("is-preprint-of", "has-preprint", "has-version")}
)
_WORK = st.fixed_dictionaries(
    {
        "DOI": mostly(_DOI),
        "update-to": mostly(st.lists(mostly(_ENTRY), max_size=3)),
        "updated-by": mostly(st.lists(mostly(_ENTRY), max_size=3)),
        "relation": mostly(_RELATION),
    },
    optional={
        "title": mostly(st.lists(st.text(max_size=30), max_size=2)),
        "type": mostly(st.just("journal-article")),
    },
)


def envelope(message: Any, message_type: Any) -> bytes:
    return json.dumps({"status": "ok", "message-type": message_type, "message": message}).encode()


def check(body: bytes) -> list[CrossrefWork]:
    """Parse ``body`` both ways: each either raises CrossrefError or gives sound works."""
    works: list[CrossrefWork] = []
    for parse in (parse_work, parse_work_list):
        try:
            result = parse(body)
        except CrossrefError:
            continue
        works += [result] if isinstance(result, CrossrefWork) else list(result.works)
    for work in works:
        dois = [work.doi] + [d for e in work.events for d in (e.target_doi, e.notice_doi) if d]
        dois += [d for link in work.preprint_links for d in (link.preprint_doi, link.published_doi)]
        assert all(doi_key(d) == d for d in dois)  # every DOI handed out is a key
        assert all(work.doi in (e.target_doi, e.notice_doi) for e in work.events)
    return works


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_bytes(body: bytes) -> None:
    check(body)


@FUZZ
@given(_ANY, st.sampled_from(["work", "work-list"]) | _LEAF)
def test_fuzz_any_json_in_the_envelope(message: Any, message_type: Any) -> None:
    check(envelope(message, message_type))


@FUZZ
@given(_WORK, st.lists(mostly(_WORK), max_size=3))
def test_fuzz_mostly_valid_works(work: dict[str, Any], items: list[Any]) -> None:
    check(envelope(work, "work"))
    check(envelope({"items": items, "next-cursor": "c"}, "work-list"))


@cache
def _f1000() -> str:
    return corpus_path(
        "lifecycle/crossref_work_f1000research_update-to_new_version.json"
    ).read_text()


@FUZZ
@given(st.sampled_from(["DOI", "title", "update-to", "relation", "type", "message"]), _ANY)
def test_fuzz_a_real_answer_with_one_field_replaced(key: str, value: Any) -> None:
    data = json.loads(_f1000())
    if key == "message":
        data[key] = value
    else:
        data["message"][key] = value
    check(json.dumps(data).encode())


def test_the_mostly_valid_generator_reaches_events_and_links() -> None:
    # Guard for the generator itself: fuzzing that never gets past the envelope proves little.
    reached = {"events": 0, "links": 0}

    @settings(max_examples=400, deadline=None, database=None, derandomize=True)
    @given(_WORK)
    def probe(work: dict[str, Any]) -> None:
        for found in check(envelope(work, "work")):
            reached["events"] += len(found.events)
            reached["links"] += len(found.preprint_links)

    probe()
    assert reached["events"] >= 20
    assert reached["links"] >= 3
