"""RIS writer (the tagged format reference managers import)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TextIO

from crawler.export.authors import parse_author, ris_author
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
    yield from _tagged("N1", [status_note(record)])


def _tagged(tag: str, values: Iterable[object]) -> Iterator[tuple[str, str]]:
    for value in values:
        flat = _flat(_text(value))
        if flat:
            yield tag, flat
