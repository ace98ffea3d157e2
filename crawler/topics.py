"""Topic classification: which configured topics a paper belongs to.

A topic has ``terms`` (case-insensitive words or phrases; a trailing ``*`` matches any word
ending) matched over title, abstract and keywords, and ``mesh`` headings matched exactly
(ignoring case) against a PubMed record's MeSH descriptors.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from crawler.settings import TopicSettings

# Typing "Graves' disease" in the config should match the typographic apostrophe of a title
# ("Graves’ disease") and the possessive-less spelling ("Graves disease") alike.
_APOSTROPHE = "['\u2019\u02bc]?"


_NOT_AFTER_WORD = r"(?<!\w)"


def term_pattern(term: str) -> str:
    """Regex for one configured term: word-bounded, spaces and hyphens interchangeable."""
    wildcard = term.endswith("*")
    body = r"[\s\-]+".join(_word_pattern(w) for w in _term_words(term))
    tail = r"[\w\-]*" if wildcard else ""
    return rf"{_NOT_AFTER_WORD}{body}{tail}(?!\w)"


def terms_regex(
    terms: Sequence[str], flags: int = re.IGNORECASE, not_after_word: str = _NOT_AFTER_WORD
) -> re.Pattern[str]:
    """One regex matching wherever any of ``terms`` matches (ignoring case, by default).

    Python's ``re`` tries every alternative at every position of the text, so the plain
    alternation of the term patterns, each opening with its own look-behind, was the slowest
    step of an ingest. Two rewrites that match exactly the same texts make it an order of
    magnitude faster (docs/benchmarks.md): the shared look-behind is tested once per position,
    and terms are grouped by their first character, so one comparison rejects a whole group.
    """
    groups: dict[str, list[str]] = {}
    other: list[str] = []
    for term in terms:
        body = term_pattern(term).removeprefix(_NOT_AFTER_WORD)
        # An alphanumeric first character is a literal that re.escape left alone; anything
        # else (an escaped symbol, an optional apostrophe) stays an alternative of its own.
        if body[:1].isalnum():
            groups.setdefault(body[0], []).append(body[1:])
        else:
            other.append(body)
    parts = [f"{first}(?:{'|'.join(rests)})" for first, rests in groups.items()] + other
    return re.compile(f"{not_after_word}(?:{'|'.join(parts)})", flags)


def _word_pattern(word: str) -> str:
    return _APOSTROPHE.join(re.escape(part) for part in _word_parts(word))


def _term_words(term: str) -> list[str]:
    return [w for w in re.split(r"[\s\-]+", _nfc(term).rstrip("*").strip()) if w]


def _word_parts(word: str) -> list[str]:
    return re.split(r"['\u2019\u02bc]", word)


def ascii_terms_regex(terms: Sequence[str]) -> re.Pattern[str] | None:
    """A regex for lower-cased ASCII texts, matching one exactly when ``terms_regex`` matches.

    Ignoring case doubles the cost of Python's ``re`` (every comparison folds case), and
    ~98% of PubMed texts are ASCII: lower-casing such a text once and searching it with
    lower-case terms, case-sensitively, finds the same matches in half the time. The
    look-behind tested at every position is a plain class too, ``[a-z0-9_]`` being all the
    word characters of a lower-case ASCII text. Terms with a non-ASCII letter match no ASCII
    text and are left out, unless that letter equals an ASCII one when case is ignored (the
    long s and the Kelvin sign do): then None is returned and every text gets the full search.
    """
    kept: list[str] = []
    for term in terms:
        odd = {ch for ch in _nfc(term) if not ch.isascii()}
        if any(_matches_ascii(ch) for ch in odd):
            return None
        if not odd:
            kept.append(term.lower())
    if not kept:
        return re.compile("(?!)")  # never matches
    return terms_regex(kept, flags=0, not_after_word=r"(?<![a-z0-9_])")


def _matches_ascii(ch: str) -> bool:
    """Whether ``ch`` matches some ASCII character in a case-insensitive regex."""
    pattern = re.compile(re.escape(ch), re.IGNORECASE)
    return any(pattern.fullmatch(chr(code)) for code in range(128))


def _nfc(text: str) -> str:
    # Feeds deliver "ö" composed or as "o" + combining diaeresis; compare one form.
    return unicodedata.normalize("NFC", text)


@dataclass(frozen=True)
class _Compiled:
    name: str
    terms: re.Pattern[str] | None
    mesh: frozenset[str]
    #: ``ascii_terms_regex`` of the terms (None: ``terms`` for every text).
    ascii_terms: re.Pattern[str] | None

    def match_terms(self, text: str, lowered: str | None) -> bool:
        """Whether the terms match ``text`` (``lowered``: its lower case, when ASCII)."""
        if lowered is not None and self.ascii_terms is not None:
            return self.ascii_terms.search(lowered) is not None
        return self.terms is not None and self.terms.search(text) is not None


class TopicMatcher:
    """Compiled topic rules; ``classify`` is a pure function of a paper's text."""

    def __init__(self, topics: Mapping[str, TopicSettings]) -> None:
        self._topics = [
            _Compiled(
                name=name,
                terms=terms_regex(spec.terms) if spec.terms else None,
                mesh=frozenset(m.casefold() for m in spec.mesh),
                ascii_terms=ascii_terms_regex(spec.terms) if spec.terms else None,
            )
            for name, spec in topics.items()
        ]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._topics]

    def classify(
        self,
        title: str | None,
        abstract: str | None = None,
        mesh: Sequence[str] = (),
        keywords: Iterable[str] = (),
        *,
        skip: Collection[str] = (),
    ) -> list[str]:
        """Names of the topics this text matches, in configuration order.

        Topics named in ``skip`` (already known to apply, such as a source's own topics) are
        not searched for and not returned: searching is most of the cost.
        """
        topics = [t for t in self._topics if t.name not in skip]
        if not topics:
            return []
        text = _nfc("\n".join(filter(None, [title, abstract, *keywords])))
        lowered = text.lower() if text.isascii() else None
        mesh_keys = {m.casefold() for m in mesh}
        found = []
        for topic in topics:
            if (topic.mesh and topic.mesh & mesh_keys) or (
                topic.terms and topic.match_terms(text, lowered)
            ):
                found.append(topic.name)
        return found
