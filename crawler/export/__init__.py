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

from collections.abc import Callable, Iterable
from typing import TextIO

from crawler.export.authors import AuthorName, parse_author
from crawler.export.bibtex import CitationKeys, bibtex_entry, write_bibtex
from crawler.export.fields import is_press_only
from crawler.export.formats import FORMATS, ExportFormat, Record
from crawler.export.ris import write_ris
from crawler.export.tabular import write_csv, write_jsonl

__all__ = [
    "FORMATS",
    "AuthorName",
    "CitationKeys",
    "ExportFormat",
    "Record",
    "bibtex_entry",
    "parse_author",
    "write_bibtex",
    "write_csv",
    "write_jsonl",
    "write_records",
    "write_ris",
]


def write_records(
    records: Iterable[Record], fmt: ExportFormat, out: TextIO, *, excel: bool = False
) -> int:
    """Write ``records`` to ``out`` in format ``fmt`` and return how many were written.

    Records that are only press coverage (:func:`~crawler.export.fields.is_press_only`)
    are left out: exports hold papers. ``excel`` (CSV only): UTF-8 with a byte order mark,
    for Excel (see :func:`write_csv`).
    Example: ``write_records(papers, "ris", open("papers.ris", "w", newline=""))``.
    """
    if excel and fmt != "csv":
        raise ValueError("excel applies to the csv format only")
    papers = (record for record in records if not is_press_only(record))
    if excel:
        return write_csv(papers, out, excel=True)
    writers: dict[str, Callable[[Iterable[Record], TextIO], int]] = {
        "jsonl": write_jsonl,
        "csv": write_csv,
        "ris": write_ris,
        "bibtex": write_bibtex,
    }
    if fmt not in writers:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return writers[fmt](papers, out)
