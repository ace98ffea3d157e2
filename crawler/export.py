"""Export paper records as JSON Lines, CSV, RIS or BibTeX.

Pure functions over records in the JSONL contract shape (``doi``, ``pmid``, ``pmcid``,
``title``, ``journal``, ``published``, ``authors``, ``abstract``, ``topics``,
``publication_types``, ``first_seen``, ``sightings``): no database, no network. Every writer
streams: it formats one record, writes it and moves on, so an export of any size needs memory
for one record (BibTeX also remembers the citation keys it has handed out).

Text in the records came from the network and is untrusted. Each format gets the escaping it
needs: spreadsheet formulas are defused in CSV, line breaks are flattened in RIS (a newline
would start a forged tag line), and LaTeX specials are escaped in BibTeX.

CSV and RIS end lines with CRLF (RFC 4180; the RIS specification): open ``out`` with
``newline=""`` so that text mode does not turn them into CR CR LF on Windows.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TextIO, get_args
from urllib.parse import quote, urlsplit

from crawler.normalise import squash

Record = Mapping[str, Any]
ExportFormat = Literal["jsonl", "csv", "ris", "bibtex"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)


def write_records(records: Iterable[Record], fmt: ExportFormat, out: TextIO) -> int:
    """Write ``records`` to ``out`` in format ``fmt`` and return how many were written.

    Example: ``write_records(papers, "ris", open("papers.ris", "w", newline=""))``.
    """
    writers: dict[str, Callable[[Iterable[Record], TextIO], int]] = {
        "jsonl": write_jsonl,
        "csv": write_csv,
        "ris": write_ris,
        "bibtex": write_bibtex,
    }
    if fmt not in writers:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return writers[fmt](records, out)


# --- JSON Lines -----------------------------------------------------------------------------

# json.dumps escapes every C0 control character, but with ensure_ascii=False it leaves NEL,
# LINE SEPARATOR and PARAGRAPH SEPARATOR raw; str.splitlines() breaks lines at them, which
# would split one record in two for a reader that uses it.
_JSON_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def write_jsonl(records: Iterable[Record], out: TextIO) -> int:
    """One compact JSON object per line, UTF-8 text kept as is; no output for no records."""
    count = 0
    for record in records:
        line = json.dumps(dict(record), ensure_ascii=False, separators=(",", ":"))
        out.write(line.translate(_JSON_LINE_BREAKS) + "\n")
        count += 1
    return count


# --- CSV ------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "doi", "pmid", "pmcid", "title", "journal", "published", "authors", "abstract",
    "topics", "publication_types", "first_seen", "sighting_count", "sighting_urls",
)  # fmt: skip
_LIST_SEPARATOR = "; "
# OWASP "CSV Injection": a cell that starts with one of these is read as a formula by Excel,
# LibreOffice and Google Sheets. Tab and CR are on OWASP's list as well.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def write_csv(records: Iterable[Record], out: TextIO) -> int:
    """A header row, then one row per paper (RFC 4180 quoting by the csv module).

    List fields are joined with ``"; "``; sightings become a count and their distinct URLs
    joined with a space (a URL may hold ``;`` but never a raw space). Every text cell that
    a spreadsheet would run as a formula gets a leading apostrophe (OWASP advice); the
    only number, the sighting count, is written as is.
    """
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for record in records:
        writer.writerow(_csv_row(record))
        count += 1
    return count


def _csv_row(record: Record) -> list[str | int]:
    urls = _sighting_urls(record)
    cells: list[str | int] = [
        _text(record.get(name))
        for name in ("doi", "pmid", "pmcid", "title", "journal", "published")
    ]
    cells.append(_LIST_SEPARATOR.join(_strings(record.get("authors"))))
    cells.append(_text(record.get("abstract")))
    cells.append(_LIST_SEPARATOR.join(_strings(record.get("topics"))))
    cells.append(_LIST_SEPARATOR.join(_strings(record.get("publication_types"))))
    cells.append(_text(record.get("first_seen")))
    cells.append(len(record.get("sightings") or []))
    cells.append(" ".join(re.sub(r"\s", "%20", url) for url in urls))
    return [defuse_formula(cell) if isinstance(cell, str) else cell for cell in cells]


def defuse_formula(cell: str) -> str:
    """Prefix a text cell that a spreadsheet would evaluate (``=cmd|...``) with ``'``."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def _sighting_urls(record: Record) -> list[str]:
    urls = (s.get("url") for s in record.get("sightings") or [] if isinstance(s, Mapping))
    return list(dict.fromkeys(url for url in urls if isinstance(url, str) and url))


# --- RIS ------------------------------------------------------------------------------------

_CRLF = "\r\n"  # the RIS specification ends every line with CR LF
# The RIS specification bars the asterisk from author, keyword and periodical-name fields
# (parse_author already drops it from names).
_NO_ASTERISK = frozenset({"KW", "T2"})


def write_ris(records: Iterable[Record], out: TextIO) -> int:
    """RIS records (``TAG  - value``, CRLF, ``TY`` first and ``ER`` last) for Zotero and others.

    Journal papers are ``JOUR``; preprints are ``UNPB`` (RIS has no preprint type; Zotero
    imports ``UNPB`` as a journal article with the server as publication). The PMID goes in
    ``AN`` (accession number, where EndNote keeps PMIDs) with ``DB  - PubMed``; Zotero stores
    them as "Loc. in Archive" and "Archive" and exports them the same way. Line breaks inside a
    value are flattened to spaces. Zotero HTML-unescapes imported values other than ``AB``,
    so a literal ``&amp;`` in a title comes back as ``&``: no portable escape exists.
    """
    count = 0
    for record in records:
        for tag, value in _ris_fields(record):
            out.write(_ris_line(tag, value))
        out.write("ER  - " + _CRLF + _CRLF)
        count += 1
    return count


def _ris_line(tag: str, value: str) -> str:
    if tag in _NO_ASTERISK:
        value = value.replace("*", "")
    return f"{tag}  - {value}{_CRLF}"


def _ris_fields(record: Record) -> Iterator[tuple[str, str]]:
    yield "TY", "UNPB" if is_preprint(record) else "JOUR"
    yield from _tagged("TI", [record.get("title")])
    yield from _tagged("AU", [ris_author(parse_author(a)) for a in _strings(record.get("authors"))])
    yield from _tagged("T2", [record.get("journal")])
    date = _date_parts(record.get("published"))
    if date:
        year, month, day = date
        yield "PY", year
        yield "DA", f"{year}/{month}/{day}/"
    yield from _tagged("DO", [record.get("doi")])
    yield from _tagged("AB", [record.get("abstract")])
    yield from _tagged("KW", _strings(record.get("topics")))
    pmid = _text(record.get("pmid"))
    if pmid:
        yield "AN", _flat(pmid)
        yield "DB", "PubMed"
    yield from _tagged("UR", [landing_url(record)])


def _tagged(tag: str, values: Iterable[object]) -> Iterator[tuple[str, str]]:
    for value in values:
        flat = _flat(_text(value))
        if flat:
            yield tag, flat


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
    if preprint:
        yield "note", "{Preprint}"
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


def _latex(value: object) -> str:
    return _flat(_text(value)).translate(_LATEX_ESCAPES)


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


# --- Shared helpers -------------------------------------------------------------------------

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def _date_parts(value: object) -> tuple[str, str, str] | None:
    """("2021", "07", "01") from "2021-07-01"; missing month or day parts are ""."""
    m = _DATE.match(_text(value))
    if not m:
        return None
    month, day = m.group(2) or "", m.group(3) or ""
    if not month or not 1 <= int(month) <= 12:
        return m.group(1), "", ""
    return m.group(1), month, day if day and 1 <= int(day) <= 31 else ""


def is_preprint(record: Record) -> bool:
    """A preprint by publication type, or seen only as a preprint (never as an article)."""
    types = {t.casefold() for t in _strings(record.get("publication_types"))}
    if "preprint" in types:
        return True
    kinds = {s.get("kind") for s in record.get("sightings") or [] if isinstance(s, Mapping)}
    return "preprint" in kinds and "article" not in kinds


def landing_url(record: Record) -> str:
    """The DOI resolver URL, else the PubMed page, else the first http(s) sighting URL."""
    doi = _text(record.get("doi"))
    if doi:
        # DOI Handbook: characters such as "#", "?", "%" and "<" must be encoded in a URL.
        return "https://doi.org/" + quote(doi, safe="/():;[]")
    pmid = _text(record.get("pmid"))
    if pmid.isdigit():
        return f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/"
    for url in _sighting_urls(record):
        # Only web links: a "javascript:" URL from a feed would become clickable in Zotero.
        if urlsplit(url).scheme.lower() in {"http", "https"}:
            return quote(url, safe=":/?#[]@!$&'()*+,;=%~")
    return ""


def _text(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _strings(value: object) -> list[str]:
    if not isinstance(value, list | tuple):
        return []
    return [item for item in (_text(v).strip() for v in value) if item]


def _flat(text: str) -> str:
    """One line of text: control characters dropped, white space (any line break) squashed."""
    cleaned = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return squash(cleaned) or ""
