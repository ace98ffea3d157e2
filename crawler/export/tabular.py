"""JSON Lines and CSV writers."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from typing import TextIO

from crawler.export.fields import _sighting_urls, _strings, _text
from crawler.export.formats import Record

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


#: The UTF-8 byte order mark, as text: Excel reads a CSV file without it in the system's
#: legacy code page (Windows-1252 in the West), so "Müller" shows as "MÃ¼ller".
EXCEL_BOM = "\ufeff"


def write_csv(records: Iterable[Record], out: TextIO, *, excel: bool = False) -> int:
    """A header row, then one row per paper (RFC 4180 quoting by the csv module).

    ``excel``: start with a byte order mark (UTF-8 with BOM), which is how Excel learns
    that the file is UTF-8; other readers (pandas, LibreOffice, Python's ``utf-8-sig``)
    skip it.

    List fields are joined with ``"; "``; sightings become a count and their distinct URLs
    joined with a space (a URL may hold ``;`` but never a raw space). Every text cell that
    a spreadsheet would run as a formula gets a leading apostrophe (OWASP advice); the
    only number, the sighting count, is written as is.
    """
    if excel:
        out.write(EXCEL_BOM)
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
