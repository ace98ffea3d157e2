"""The date window of an API source that is polled by date (PubMed, Europe PMC, bioRxiv).

The first poll reaches back ``baseline``; a later one starts at the last success minus
``overlap`` (records indexed late, clocks that differ), so nothing falls between two polls; the
store merges what two windows both return.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta


def date_window(
    now: datetime, cursor: datetime | None, baseline: timedelta, overlap: timedelta
) -> tuple[date, date]:
    """(first day, last day) of this poll, both inclusive."""
    end = now.date()
    start = (now - baseline).date() if cursor is None else (cursor - overlap).date()
    return min(start, end), end
