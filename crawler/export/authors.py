"""Author names as the export formats want them (family, given, suffix)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from crawler.normalise import squash

# --- Author names ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthorName:
    """An author split into parts; ``corporate`` names are kept whole."""

    family: str
    given: str = ""
    suffix: str = ""
    #: ``given`` holds PubMed-style initials without dots ("AB").
    initials: bool = False
    corporate: bool = False


_PARTICLES = frozenset(
    {"van", "von", "der", "den", "de", "del", "della", "di", "da", "dos", "das", "du", "le", "la"}
    | {"ter", "ten", "zu", "af", "av"}
)
_SUFFIXES = frozenset({"jr", "jr.", "sr", "sr.", "ii", "iii", "iv", "2nd", "3rd"})
_CORPORATE = re.compile(
    r"\b(?:group|consortium|collaborat\w*|investigators|committee|network|society|"
    r"association|team|initiative|council|organi[sz]ation|foundation|institute|study)\b",
    re.IGNORECASE,
)


def parse_author(raw: str) -> AuthorName:
    """Split "Goebel A", "Andreas Goebel", "Goebel, Andreas" or "van der Berg JM, Jr".

    PubMed writes "Family Initials"; feeds write "Given Family". A trailing run of one to
    three capitals is read as initials; otherwise the last word is the family name, with
    the lower-case particles before it ("van der"). Group names stay whole.
    """
    # An asterisk marks the corresponding author on some sites; it is never part of a name.
    name = squash(raw.replace("*", "")) or ""
    if not name or _CORPORATE.search(name):
        return AuthorName(family=name, corporate=True)
    if "," in name:
        family, _, rest = name.partition(",")
        given, _, suffix = rest.partition(",")
        given, suffix = given.strip(), suffix.strip()
        return AuthorName(family.strip(), given, suffix, initials=_is_initials(given))
    words = name.split(" ")
    suffix = words.pop() if len(words) > 2 and words[-1].lower() in _SUFFIXES else ""
    if len(words) == 1:
        return AuthorName(words[0], suffix=suffix)
    if _is_initials(words[-1]):
        return AuthorName(" ".join(words[:-1]), words[-1], suffix, initials=True)
    start = len(words) - 1
    while start > 1 and words[start - 1] in _PARTICLES:
        start -= 1
    return AuthorName(" ".join(words[start:]), " ".join(words[:start]), suffix)


def _is_initials(word: str) -> bool:
    return 0 < len(word) <= 3 and word.isalpha() and word.isupper()


def ris_author(name: AuthorName) -> str:
    """RIS wants "Family, Given, Suffix" ("Goebel, A"); group names stay as they are."""
    if name.corporate or not name.given:
        return ", ".join(part for part in (name.family, name.suffix) if part)
    return ", ".join(part for part in (name.family, name.given, name.suffix) if part)
