"""Topic classification: which configured topics a paper belongs to.

A topic has ``terms`` (case-insensitive words or phrases; a trailing ``*`` matches any word
ending) matched over title, abstract and keywords, and ``mesh`` headings matched exactly
(ignoring case) against a PubMed record's MeSH descriptors.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from crawler.settings import TopicSettings

# Typing "Graves' disease" in the config should match the typographic apostrophe of a title
# ("Graves’ disease") and the possessive-less spelling ("Graves disease") alike.
_APOSTROPHE = "['\u2019\u02bc]?"


def term_pattern(term: str) -> str:
    """Regex for one configured term: word-bounded, spaces and hyphens interchangeable."""
    wildcard = term.endswith("*")
    words = re.split(r"[\s\-]+", _nfc(term).rstrip("*").strip())
    body = r"[\s\-]+".join(_word_pattern(w) for w in words if w)
    tail = r"[\w\-]*" if wildcard else ""
    return rf"(?<!\w){body}{tail}(?!\w)"


def _word_pattern(word: str) -> str:
    return _APOSTROPHE.join(re.escape(part) for part in re.split(r"['\u2019\u02bc]", word))


def _nfc(text: str) -> str:
    # Feeds deliver "ö" composed or as "o" + combining diaeresis; compare one form.
    return unicodedata.normalize("NFC", text)


@dataclass(frozen=True)
class _Compiled:
    name: str
    terms: re.Pattern[str] | None
    mesh: frozenset[str]


class TopicMatcher:
    """Compiled topic rules; ``classify`` is a pure function of a paper's text."""

    def __init__(self, topics: Mapping[str, TopicSettings]) -> None:
        self._topics = [
            _Compiled(
                name=name,
                terms=re.compile("|".join(term_pattern(t) for t in spec.terms), re.IGNORECASE)
                if spec.terms
                else None,
                mesh=frozenset(m.casefold() for m in spec.mesh),
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
    ) -> list[str]:
        """Names of the topics this text matches, in configuration order."""
        text = _nfc("\n".join(filter(None, [title, abstract, *keywords])))
        mesh_keys = {m.casefold() for m in mesh}
        found = []
        for topic in self._topics:
            if (topic.mesh and topic.mesh & mesh_keys) or (
                topic.terms and topic.terms.search(text)
            ):
                found.append(topic.name)
        return found
