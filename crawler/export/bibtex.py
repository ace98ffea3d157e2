"""BibTeX writer and citation keys."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import TextIO

from crawler.export.authors import AuthorName, parse_author
from crawler.export.fields import (
    _date_parts,
    _flat,
    _strings,
    _text,
    is_preprint,
    landing_url,
    status_note,
)
from crawler.export.formats import Record

# --- BibTeX ---------------------------------------------------------------------------------

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# One pass over the text, so the braces that a replacement brings are never escaped again.
# Braces become commands rather than \{ and \}: BibTeX counts braces without regard to a
# backslash, so one stray "{" in a title would unbalance the entry and swallow the file.
# "<" and ">" print as "¡" and "¿" in LaTeX's default OT1 font encoding.
_LATEX_ESCAPES = str.maketrans(
    {
        "\\": r"\textbackslash{}",
        "{": r"\textbraceleft{}",
        "}": r"\textbraceright{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "<": r"\textless{}",
        ">": r"\textgreater{}",
    }
)


def write_bibtex(records: Iterable[Record], out: TextIO) -> int:
    """BibTeX entries with citation keys that are unique within this export.

    Journal papers are ``@article``; preprints are ``@misc`` with the server in
    ``howpublished`` and ``note = {Preprint}`` (``@article`` without a journal draws
    warnings from BibTeX styles). Titles are wrapped in double braces so that styles keep
    their case exactly: biomedical titles are full of case-sensitive symbols (IL-6, mRNA,
    SARS-CoV-2) that per-word heuristics miss. Non-ASCII text stays UTF-8 (biber, Zotero
    and modern LaTeX read it); LaTeX specials are escaped.
    """
    keys = CitationKeys()
    count = 0
    for record in records:
        out.write(bibtex_entry(record, keys.assign(record)))
        count += 1
    return count


def bibtex_entry(record: Record, key: str) -> str:
    """One BibTeX entry for ``record`` under citation ``key``, followed by a blank line."""
    preprint = is_preprint(record)
    fields = [f"  {name} = {value}" for name, value in _bibtex_fields(record, preprint)]
    kind = "misc" if preprint else "article"
    return f"@{kind}{{{key},\n" + ",\n".join(fields) + "\n}\n\n"


def _bibtex_fields(record: Record, preprint: bool) -> Iterator[tuple[str, str]]:
    title = _latex(record.get("title"))
    if title:
        yield "title", "{{" + title + "}}"
    authors = [bibtex_author(parse_author(a)) for a in _strings(record.get("authors"))]
    if authors:
        yield "author", "{" + " and ".join(authors) + "}"
    journal = _latex(record.get("journal"))
    if journal:
        yield ("howpublished" if preprint else "journal"), "{" + journal + "}"
    date = _date_parts(record.get("published"))
    if date:
        yield "year", "{" + date[0] + "}"
        if date[1] != "":
            yield "month", _MONTHS[int(date[1]) - 1]  # a macro: bare, not braced
    yield from _bibtex_identifiers(record)
    notes = ["Preprint"] if preprint else []
    notes += [_latex(note)] if (note := status_note(record)) else []
    if notes:
        yield "note", "{" + "; ".join(notes) + "}"
    abstract = _latex(record.get("abstract"))
    if abstract:
        yield "abstract", "{" + abstract + "}"
    keywords = ", ".join(_latex(t) for t in _strings(record.get("topics")))
    if keywords:
        yield "keywords", "{" + keywords + "}"


def _bibtex_identifiers(record: Record) -> Iterator[tuple[str, str]]:
    # doi and url are verbatim fields in biblatex (and go through \url in BibTeX styles), so
    # they are not LaTeX-escaped; a DOI that holds a brace or backslash cannot be written
    # safely and is left out (the url field still carries it, percent-encoded).
    doi = _flat(_text(record.get("doi")))
    if doi and not set(doi) & set("{}\\"):
        yield "doi", "{" + doi + "}"
    for name in ("pmid", "pmcid"):
        value = _latex(record.get(name))
        if value:
            yield name, "{" + value + "}"
    url = landing_url(record)
    if url:
        yield "url", "{" + url + "}"


# TeX ligatures: "--" and "---" print as en and em dashes, "``" and "''" as curly quotes,
# "?`" and "!`" as inverted marks; BibTeX readers (pybtex, bibtexparser's LaTeX decoding)
# turn them into those characters too. An empty group between the two characters breaks the
# ligature, so "IL-6--TNF" and the SMILES-like "C--C" survive as written.
_LIGATURE = re.compile(r"-(?=-)|`(?=`)|'(?=')|[?!](?=`)")


def _latex(value: object) -> str:
    escaped = _flat(_text(value)).translate(_LATEX_ESCAPES)
    return _LIGATURE.sub(lambda m: m.group(0) + "{}", escaped)


class CitationKeys:
    """Hands out citation keys like ``goebel2021fibromyalgia``, unique within one export.

    The key is the first author's family name, the year and the first title word (skipping
    "a", "an", "the"), folded to ASCII letters and digits. A repeated key gets ``a``, ``b``,
    ... ``z``, ``aa``, ... appended, skipping any suffixed key that is already taken.
    """

    def __init__(self) -> None:
        self._taken: set[str] = set()
        self._next_suffix: dict[str, int] = {}

    def assign(self, record: Record) -> str:
        """The key for ``record``: its base key, or the base with the next free suffix."""
        base = citation_base(record)
        key = base
        while key in self._taken:
            index = self._next_suffix.get(base, 1)
            self._next_suffix[base] = index + 1
            key = base + _letters(index)
        self._taken.add(key)
        return key


_KEY_SKIP = frozenset({"a", "an", "the"})


def citation_base(record: Record) -> str:
    """The citation key before de-duplication (``anon``/``nd``/``untitled`` stand in)."""
    authors = _strings(record.get("authors"))
    family = _ascii_word(parse_author(authors[0]).family) if authors else ""
    date = _date_parts(record.get("published"))
    words = (_ascii_word(w) for w in re.findall(r"\w+", _text(record.get("title"))))
    first = next((w for w in words if re.search("[a-z]", w) and w not in _KEY_SKIP), "")
    return (family or "anon") + (date[0] if date else "nd") + (first or "untitled")


def _letters(index: int) -> str:
    """1 -> a, 26 -> z, 27 -> aa: bijective base 26."""
    out = ""
    while index > 0:
        index, rem = divmod(index - 1, 26)
        out = chr(ord("a") + rem) + out
    return out


# Letters that NFKD does not decompose into a base letter plus accents.
_FOLD = str.maketrans(
    {"ø": "o", "Ø": "o", "æ": "ae", "Æ": "ae", "ß": "ss", "đ": "d", "Đ": "d", "ł": "l", "Ł": "l"}
)


def _ascii_word(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return re.sub(r"[^a-z0-9]", "", decomposed.encode("ascii", "ignore").decode().lower())


def bibtex_author(name: AuthorName) -> str:
    """BibTeX "Family, Given" with dotted initials ("Goebel, A. B."), LaTeX-escaped.

    Group names are braced so BibTeX neither splits them into given and family nor reads
    an "and" inside them as a separator.
    """
    if name.corporate:
        return "{" + _latex(name.family) + "}"
    given = ". ".join(name.given) + "." if name.initials else name.given
    parts = [name.family, name.suffix, given]  # BibTeX's "von Last, Jr, First" order
    return ", ".join(_latex(part) for part in parts if part)
