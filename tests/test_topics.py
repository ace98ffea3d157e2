"""Tests for crawler.topics: term patterns, MeSH, and the shipped default topics."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from crawler.settings import ConfigError, TopicSettings, load_settings
from crawler.topics import TopicMatcher, ascii_terms_regex, terms_regex


def matcher(**topics: TopicSettings) -> TopicMatcher:
    return TopicMatcher(topics)


@pytest.fixture(scope="module")
def defaults() -> TopicMatcher:
    return TopicMatcher(load_settings(None, environ={}).topics)


# --- term patterns -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("Autoimmunity in chronic pain", True),
        ("AUTOIMMUNE small fibre neuropathy", True),
        ("autoimmune-mediated pain", True),
        ("Autoimmun", True),  # the stem alone
        ("non-autoimmune causes", True),  # a hyphen is a word boundary
        ("Preautoimmune state", False),  # the stem must start a word
        ("auto immunity", False),
    ],
)
def test_wildcard_suffix(text: str, hit: bool) -> None:
    m = matcher(a=TopicSettings(terms=["autoimmun*"]))
    assert (m.classify(text) == ["a"]) is hit


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("small fiber neuropathy in fibromyalgia", True),
        ("small-fiber neuropathy", True),
        ("Small  Fiber\nNeuropathy", True),
        ("small - fiber neuropathy", True),
        ("small fibers neuropathy", False),
        ("smallfiber neuropathy", False),
    ],
)
def test_phrases_with_hyphen_and_space_variants(text: str, hit: bool) -> None:
    m = matcher(a=TopicSettings(terms=["small-fiber neuropathy"]))
    assert bool(m.classify(text)) is hit


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("Systemic LUPUS erythematosus", True),
        ("Lupus.", True),
        ("(lupus)", True),
        ("Lupuslike disease in mice", False),
        ("Antilupus antibodies", False),
        ("The genus Lupulus", False),
    ],
)
def test_no_false_positive_on_substring(text: str, hit: bool) -> None:
    m = matcher(a=TopicSettings(terms=["lupus"]))
    assert bool(m.classify(text)) is hit


def test_apostrophes_and_composed_characters() -> None:
    m = matcher(a=TopicSettings(terms=["Graves' disease", "Sjögren*"]))
    assert m.classify("Graves’ disease and the thyroid") == ["a"]  # typographic apostrophe
    assert m.classify("Graves disease") == ["a"]
    assert m.classify("Sjo\u0308gren's syndrome") == ["a"]  # o + combining diaeresis
    assert m.classify("Gravesdisease") == []


def test_special_characters_are_literal() -> None:
    m = matcher(a=TopicSettings(terms=["IL-6", "C++"]))
    assert m.classify("Serum IL-6 levels") == ["a"]
    assert m.classify("serum IL 6 levels") == ["a"]
    assert m.classify("IL-60 receptor") == []
    assert m.classify("C++ and pain") == ["a"]
    assert m.classify("ILx6") == []


def test_mesh_match_ignores_case_and_needs_whole_heading() -> None:
    m = matcher(a=TopicSettings(mesh=["Fibromyalgia"]), b=TopicSettings(mesh=["Autoimmunity"]))
    assert m.classify("Unrelated title", mesh=["FIBROMYALGIA"]) == ["a"]
    assert m.classify("Unrelated title", mesh=["Fibromyalgia/therapy"]) == []
    assert m.classify("Unrelated", mesh=["Autoimmunity", "Fibromyalgia"]) == ["a", "b"]
    assert m.classify(None) == []


def test_searches_title_abstract_and_keywords() -> None:
    m = matcher(a=TopicSettings(terms=["fibromyalgia"]))
    assert m.classify("x", abstract="Patients with fibromyalgia") == ["a"]
    assert m.classify("x", keywords=["Fibromyalgia"]) == ["a"]
    # A word is not assembled across two fields.
    assert m.classify("fibro", abstract="myalgia") == []


def test_topic_without_rules_matches_nothing() -> None:
    m = matcher(empty=TopicSettings(), a=TopicSettings(terms=["pain"]))
    assert m.names == ["empty", "a"]
    assert m.classify("pain", mesh=["Pain"]) == ["a"]


@pytest.mark.parametrize("term", ["", "  ", "*", "- *", "auto*immune"])
def test_bad_terms_are_config_errors(tmp_path: Path, term: str) -> None:
    path = tmp_path / "topics.toml"
    path.write_text(f'[topics.x]\nterms = ["ok", "{term}"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"topics\.x\.terms"):
        load_settings(path, environ={})


# --- the ASCII fast path -------------------------------------------------------------------------


def _random_texts(terms: list[str], count: int, seed: int) -> list[str]:
    """ASCII texts made of pieces of ``terms`` in random case, glued by random separators."""
    rng = random.Random(seed)
    words = [w for t in terms for w in re.split(r"[\s\-]+", t.rstrip("*")) if w.isascii()]
    words += ["pain", "the", "x", "non", "IL", "6", "s", "e", "ed", "'s", "Lupus-like"]
    glue = [" ", "  ", "-", " - ", "", "'", "(", ")", ".", ",", "\n", "_", "/", "1"]
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 6)):
            word = rng.choice(words)
            cut = rng.randint(1, len(word))
            word = word[:cut] if rng.random() < 0.3 else word
            word = "".join(c.upper() if rng.random() < 0.3 else c for c in word)
            parts += [word, rng.choice(glue)]
        texts.append("".join(parts))
    return texts


def test_ascii_texts_match_exactly_as_the_full_search() -> None:
    terms = [*load_settings(None, environ={}).topics["autoimmunity"].terms, "IL-6", "C++"]
    full, fast = terms_regex(terms), ascii_terms_regex(terms)
    assert fast is not None
    texts = _random_texts(terms, 20_000, seed=7)
    hits = [bool(full.search(text)) for text in texts]
    assert 0.05 < sum(hits) / len(hits) < 0.95  # both outcomes well represented
    assert hits == [bool(fast.search(text.lower())) for text in texts]


def test_ascii_fast_path_leaves_out_non_ascii_terms_and_gives_up_on_ascii_lookalikes() -> None:
    fast = ascii_terms_regex(["Sjögren*", "lupus"])
    assert fast is not None and fast.pattern == ascii_terms_regex(["lupus"]).pattern  # type: ignore[union-attr]
    never = ascii_terms_regex(["Sjögren*"])
    assert never is not None and never.search("sjogren sjögren") is None
    # The long s (U+017F) equals "s" when case is ignored: no ASCII-only regex can say that.
    assert ascii_terms_regex(["\u017fyndrome"]) is None
    m = matcher(a=TopicSettings(terms=["\u017fyndrome"]), b=TopicSettings(terms=["Sjögren*"]))
    assert m.classify("Sicca SYNDROME") == ["a"]
    assert m.classify("Primary SJÖGREN syndrome") == ["a", "b"]


# --- the shipped defaults ----------------------------------------------------------------------


def test_default_topics_catch_the_jci_paper(defaults: TopicMatcher) -> None:
    title = "Passive transfer of fibromyalgia symptoms from patients to mice"
    abstract = (
        "Here we show that IgG autoantibodies from patients with fibromyalgia syndrome "
        "produce sensory hypersensitivity when transferred to mice."
    )
    assert "fibromyalgia" in defaults.classify(title)
    assert defaults.classify("Pain in mice", abstract) == ["fibromyalgia", "autoimmunity"]
    assert defaults.classify(
        "Antibodies and pain", "Serum IgG autoantibodies bind satellite glia."
    ) == ["autoimmunity"]


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Fibromyalgia and sleep", ["fibromyalgia"]),
        ("Fibrositis revisited", ["fibromyalgia"]),
        ("Nociplastic pain mechanisms", ["fibromyalgia"]),
        ("Rheumatoid arthritis flares", ["autoimmunity"]),
        ("Sjögren's syndrome and dry eye", ["autoimmunity"]),
        ("Sjogren syndrome", ["autoimmunity"]),
        ("Myasthenia gravis treatment", ["autoimmunity"]),
        ("Autoantibody profiles in patients", ["autoimmunity"]),
        ("Graves’ disease outcomes", ["autoimmunity"]),
        ("Deep learning for protein folding", []),
        ("Hip fracture surgery outcomes in the elderly", []),
    ],
)
def test_default_topics(defaults: TopicMatcher, title: str, expected: list[str]) -> None:
    assert defaults.classify(title) == expected


def test_default_mesh(defaults: TopicMatcher) -> None:
    assert defaults.classify("x", mesh=["Lupus Erythematosus, Systemic"]) == ["autoimmunity"]
    assert defaults.classify("x", mesh=["Fibromyalgia"]) == ["fibromyalgia"]
