"""ScienceDirect feed items: the date, journal and authors printed in the description.

ScienceDirect RSS (``rss.sciencedirect.com/publication/science/<ISSN>``) gives an item only a
title, a link and a description made of three labelled paragraphs::

    <p>Publication date: February 2022</p>
    <p><b>Source:</b> Molecular Phylogenetics and Evolution, Volume 167</p>
    <p>Author(s): Katja E. Boysen, Susan L. Perkins, Jane Melville</p>

No dc:creator, no pubDate, and the channel title is "ScienceDirect Publication: <journal>".
Without reading these lines every item came out with no authors, no date and that channel
title as its journal (issue 12 B4). Dates are "February 2022" (an issue: the first of the
month, as PubMed reads a month-only date), "Available online 10 December 2021" or
"January–February 2022" (the first month named).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

__all__ = ["FEED_TITLE_PREFIX", "Labelled", "feed_journal", "labelled_fields"]

#: How ScienceDirect titles a journal's feed.
FEED_TITLE_PREFIX = "ScienceDirect Publication:"

_LABEL = re.compile(r"^(publication date|source|author\(s\))\s*:\s*(.*)$", re.IGNORECASE)
# What follows the journal name in "Source:": "Molecular ..., Volume 167", ", In press, ...".
_AFTER_JOURNAL = re.compile(
    r",\s*(?:volume|vol\.|issue|in press|part|pages?|article|available)\b.*$", re.IGNORECASE
)
_MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
# "10 December 2021", "February 2022", "January–February 2022" (day, first month, year).
_DATE = re.compile(
    r"(?:\b(\d{1,2})\s+)?\b(" + "|".join(m[:3] for m in _MONTHS) + r")[a-z]*\.?\b\D*?(\d{4})\b",
    re.IGNORECASE,
)


@dataclass
class Labelled:
    """What the labelled lines of one description said (None / empty when they did not)."""

    published: date | None = None
    journal: str | None = None
    authors: list[str] = field(default_factory=list)


def labelled_fields(lines: list[str]) -> Labelled | None:
    """The fields of ScienceDirect's labelled description lines, or None when there are none.

    ``lines`` are the description's blocks as plain text ("Source: Molecular ..., Volume 1").
    """
    found = Labelled()
    seen = False
    for line in lines:
        match = _LABEL.match(line)
        if not match:
            continue
        seen = True
        label, value = match.group(1).lower(), match.group(2).strip()
        if label == "publication date":
            found.published = _date(value)
        elif label == "source":
            found.journal = _AFTER_JOURNAL.sub("", value).strip(" ,") or None
        else:
            found.authors = [name for part in value.split(",") if (name := part.strip())]
    return found if seen else None


def feed_journal(title: str | None) -> str | None:
    """The journal a ScienceDirect channel title names ("ScienceDirect Publication: X" -> X)."""
    if title and title.startswith(FEED_TITLE_PREFIX):
        return title.removeprefix(FEED_TITLE_PREFIX).strip() or None
    return title


def _date(text: str) -> date | None:
    match = _DATE.search(text[:100])  # a real date line is short; bound the search
    if not match:
        return None
    day, month, year = match.group(1), match.group(2).lower(), int(match.group(3))
    number = next(i for i, name in enumerate(_MONTHS, start=1) if name.startswith(month))
    try:
        return date(year, number, int(day) if day else 1)
    except ValueError:  # "31 February 2022"
        return None
