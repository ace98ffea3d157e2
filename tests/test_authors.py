"""Tests for spiders.authors: one-string author lists of preprint servers to PubMed-style names.

The RSS case reads the real bioRxiv feed item in the shared corpus (skipped when absent); its
expected names are written out by hand from the file, not produced by the code under test.
"""

from __future__ import annotations

import re
import timeit

import pytest

from spiders.authors import pubmed_style, split_author_string
from tests.support.corpus import corpus_path
from tests.support.fuzz import given, settings, st

# --- api.biorxiv.org "authors": one name per ";" ----------------------------------------------


def test_api_string_splits_at_semicolons_into_pubmed_style_names() -> None:
    raw = "Gomez Cuautle, D. D.; Rossi, A. R.; Zhao, Y."
    assert split_author_string(raw) == ["Gomez Cuautle DD", "Rossi AR", "Zhao Y"]


def test_api_string_never_tears_a_surname_given_name_pair() -> None:
    assert split_author_string("Smith, John") == ["Smith J"]
    assert split_author_string("Smith, John Paul; Doe, Jane") == ["Smith JP", "Doe J"]


def test_api_string_keeps_hyphenated_and_undotted_initials() -> None:
    raw = "Dallery, J.-F.; Plaumann, P.-L.; Doe, A; Ng, W.-F."
    assert split_author_string(raw) == ["Dallery JF", "Plaumann PL", "Doe A", "Ng WF"]


def test_collective_names_and_trailing_separators_survive() -> None:
    raw = "Alpizar-Rodriguez, D.; The SCREEN-RA Consortium;"
    assert split_author_string(raw) == ["Alpizar-Rodriguez D", "The SCREEN-RA Consortium"]


def test_non_ascii_names_keep_their_letters() -> None:
    assert split_author_string("Ébert, É.; Øster, Å. B.") == ["Ébert É", "Øster ÅB"]


# --- RSS dc:creator: names and initials separated by the same comma ---------------------------


def test_real_biorxiv_rss_creator_string() -> None:
    body = corpus_path("journal_feeds/biorxiv_genomics_rss1_1item.xml").read_text("utf-8")
    creator = re.search(r"<dc:creator>\s*<!\[CDATA\[(.*?)\]\]>", body, re.DOTALL)
    assert creator is not None
    assert split_author_string(creator.group(1)) == [
        "LAPALU N",
        "SIMON A",
        "Lu A",
        "Plaumann PL",
        "Amselem J",
        "Pigne S",
        "Auger A",
        "Koch C",
        "Dallery JF",
        "O'Connell RJ",
    ]


def test_comma_list_attaches_a_suffix_to_its_name() -> None:
    assert split_author_string("Smith, J., Jr., Doe, A.") == ["Smith J Jr", "Doe A"]


def test_comma_list_with_a_collective_name_keeps_alignment() -> None:
    raw = "COVID-19 Genomics UK Consortium, Smith, J., Li, X."
    assert split_author_string(raw) == ["COVID-19 Genomics UK Consortium", "Smith J", "Li X"]


def test_comma_list_of_single_word_pairs_reads_surname_given() -> None:
    assert split_author_string("Smith, John, Doe, Jane") == ["Smith J", "Doe J"]


def test_one_name_per_line_is_one_name_each() -> None:
    assert split_author_string("Jane Roe,\nRichard Miles,\n") == ["Jane Roe", "Richard Miles"]


# --- Europe PMC authorString: PubMed names, commas, a final full stop -------------------------


def test_europe_pmc_author_string() -> None:
    raw = "Schoenfeld JD, Haas-Kogan DA, O'Neill AF."
    assert split_author_string(raw) == ["Schoenfeld JD", "Haas-Kogan DA", "O'Neill AF"]


def test_duplicates_and_empty_input() -> None:
    assert split_author_string("Roe, J.; Roe, J.; ; Miles, R.") == ["Roe J", "Miles R"]
    assert split_author_string("") == []
    assert split_author_string(None) == []
    assert split_author_string(" ; , ;") == []


@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        ("O'Connell, R. J.", "O'Connell RJ"),
        ("van der Berg, Anna Maria", "van der Berg AM"),
        ("Smith, J., Jr.", "Smith J Jr"),
        ("Goebel A", "Goebel A"),
        ("O'Neill AF.", "O'Neill AF"),
        ("John Smith Jr.", "John Smith Jr."),
        ("The SCREEN-RA Consortium", "The SCREEN-RA Consortium"),
        (", A. B.", "AB"),
        ("   ", None),
    ],
)
def test_pubmed_style(printed: str, expected: str | None) -> None:
    assert pubmed_style(printed) == expected


# --- Bounded work -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "".join(f"Surname{i}, A. B.; " for i in range(60_000)),  # ~1.2 MB, API form
        "".join(f"SURNAME{i}, A., Other, B.-C., " for i in range(30_000)),  # ~1 MB, RSS form
        "Surname, A. B.; " * 70_000,  # ~1 MB of one name repeated
        "," * 1_000_000,
        ";" * 1_000_000,
        "A. " * 350_000,
        "x" * 1_000_000,
    ],
    ids=["api", "rss", "repeated", "commas", "semicolons", "initials", "one-word"],
)
def test_a_megabyte_splits_in_well_under_a_second(raw: str) -> None:
    # Best of three, so a busy machine does not fail a linear-time splitter; a quadratic one
    # takes minutes on these inputs.
    elapsed = min(timeit.repeat(lambda: split_author_string(raw), number=1, repeat=3))
    assert elapsed < 1.0, f"{elapsed:.2f}s"
    names = split_author_string(raw)
    assert all(name and name == name.strip() for name in names)


# --- Fuzz -------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(alphabet=st.sampled_from("Ab É.-,; \n'xyJr"), max_size=80) | st.text())
def test_fuzz_any_string_gives_clean_distinct_names(raw: str) -> None:
    names = split_author_string(raw)
    assert len(names) == len(set(names))
    for name in names:
        assert name and name == " ".join(name.split())
        assert ";" not in name and "\n" not in name
