"""PubMed dates: Year/Month/Day, Season and free-text MedlineDate, with their precision.

Month as "Dec" or "12", Season as "Spring", MedlineDate as "1965 Dec-1966 Jan"; missing parts
mean "the first", and the precision says how much of the date was given.
"""

from __future__ import annotations

import re
from datetime import date

from lxml.etree import _Element as Element

#: A date and its precision: 1 = year only, 2 = year and month, 3 = full date.
Partial = tuple[date, int]

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
# A season is read as its first month; "Winter" as January, the earliest month it can cover
# in its own year.
_SEASONS = {"spr": 3, "sum": 6, "fal": 9, "aut": 9, "win": 1}
_MEDLINE_DATE = re.compile(r"(\d{4})(?:\s+([A-Za-z]{3,})\.?(?:\s+(\d{1,2})(?!\d))?)?")


def partial_date(el: Element) -> Partial | None:
    """Read a PubDate / ArticleDate / PubMedPubDate element; None when it has no usable year."""
    values = {child.tag: (child.text or "").strip() for child in el}
    if "MedlineDate" in values:
        return medline_date(values["MedlineDate"])
    month = _month(values.get("Month", "")) or _SEASONS.get(values.get("Season", "")[:3].lower())
    return _make_date(values.get("Year", ""), month, values.get("Day", ""))


def medline_date(text: str) -> Partial | None:
    """Read a free-text MedlineDate ("1998 Dec-1999 Jan", "2000 Spring", "1944-1945").

    The first year and month are taken: the start of the range the issue covers.
    """
    match = _MEDLINE_DATE.search(text)
    if match is None:
        return None
    year, word, day = match.groups()
    key = (word or "")[:3].lower()
    return _make_date(year, _MONTHS.get(key) or _SEASONS.get(key), day or "")


def _month(text: str) -> int | None:
    if text.isdigit():
        return int(text) if 1 <= int(text) <= 12 else None
    return _MONTHS.get(text[:3].lower())


def _make_date(year: str, month: int | None, day: str) -> Partial | None:
    if not (year.isdigit() and len(year) == 4):
        return None
    if month is None:
        return date(int(year), 1, 1), 1
    if day.isdigit():
        try:
            return date(int(year), month, int(day)), 3
        except ValueError:
            pass  # "Feb 30": keep the month
    return date(int(year), month, 1), 2


def earliest(a: Partial | None, b: Partial | None) -> date | None:
    """The earlier of two dates, compared at the coarser precision of the two.

    A print issue dated only "2018" (read as 2018-01-01) does not beat an electronic date of
    2018-08-10: at year precision they tie, and a tie goes to the more precise date. Under this
    rule the electronic date (ArticleDate) wins whenever it is not provably later, which is
    what "first published" means for a digest.
    """
    if a is None or b is None:
        return (a or b or (None, 0))[0]
    precision = min(a[1], b[1])
    key_a, key_b = _truncate(a[0], precision), _truncate(b[0], precision)
    if key_a != key_b:
        return a[0] if key_a < key_b else b[0]
    return a[0] if a[1] >= b[1] else b[0]


def _truncate(day: date, precision: int) -> tuple[int, ...]:
    return (day.year, day.month, day.day)[:precision]
