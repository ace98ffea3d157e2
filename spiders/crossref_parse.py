"""A paper's life as Crossref records it: REST API answers to events and preprint links.

Pure functions from the bytes of a ``/works/{doi}`` answer (``message-type: work``) or a
``/works?filter=...`` page (``message-type: work-list``) to values; plus the polite request
URLs and the rate limit Crossref asks for. No network, no database.

What Crossref says, and how it is read:

* A notice points at what it changes with ``update-to`` (``DOI``, ``type``, ``source``,
  ``updated.date-parts``); the changed work lists its notices in ``updated-by``. Crossref words
  both with the same update type, so both give the same *paper-side* event about the changed
  work, whichever side is parsed: target = the changed work, notice = the notice.
* :data:`UPDATE_TYPES` maps Crossmark update types, however spelled (``expression-of-concern``),
  to ours; ``new_version`` is ``updated``, never a retraction. Judgement calls:
  ``partial_retraction`` is ``corrected`` (the rest of the paper stands, and COPE treats a
  partial retraction as a correction; the notice's title, or for ``updated-by`` Crossref's
  label "Partial Retraction", stays in notice_title) and ``removal`` is ``withdrawn``.
  Unknown types (``reinstatement``, ...) give no event.
* ``source: "retraction-watch"`` marks entries Crossref took from the Retraction Watch
  database (since 2025); their events have source ``retraction-watch``, the rest ``crossref``.
* ``relation.is-preprint-of`` (on the preprint) and ``relation.has-preprint`` (on the journal
  version) give :class:`PreprintLink` values; their DOIs may be upper case and are normalised.
* Some real notices carry no ``update-to`` at all (JMIR's "Correction: ..."). Their kind comes
  from a strict title prefix (:func:`notice_kind_from_title`); they name no target, so they give
  no event.

Errors: anything that is not a documented answer (not UTF-8 JSON, nested too deeply, an error
status, the wrong message type, a field of the wrong JSON type, a work without a DOI) raises
:class:`CrossrefError` and nothing else. Values the parser cannot use (an unknown update type,
an entry without a valid DOI, an impossible date) are skipped or read as None.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar
from urllib.parse import quote

from crawler.events import (
    CONCERN,
    CORRECTED,
    CROSSREF,
    NOTICE_KIND,
    PUBLISHED,
    RETRACTED,
    RETRACTION_WATCH,
    UPDATED,
    WITHDRAWN,
    PaperEvent,
    gravest_kind,
)
from crawler.normalise import clean_doi, doi_key, html_to_text

CROSSREF_API = "https://api.crossref.org/"

# Crossmark update types (normalised: lower case, "_" for "-" and " ") -> paper-side type.
UPDATE_TYPES: dict[str, str] = {
    "retraction": RETRACTED,
    "withdrawal": WITHDRAWN,
    "removal": WITHDRAWN,
    "expression_of_concern": CONCERN,
    "correction": CORRECTED,
    "corrigendum": CORRECTED,
    "erratum": CORRECTED,
    "partial_retraction": CORRECTED,
    "new_version": UPDATED,
    "new_edition": UPDATED,
    "addendum": UPDATED,
    "clarification": UPDATED,
}
#: The update types a bulk notice query asks for by default: integrity notices, not versions.
NOTICE_UPDATE_TYPES: tuple[str, ...] = tuple(t for t, v in UPDATE_TYPES.items() if v != UPDATED)

T = TypeVar("T")


class CrossrefError(ValueError):
    """The bytes are not a Crossref work / work-list answer as documented (see module doc)."""


@dataclass(frozen=True, slots=True)
class PreprintLink:
    """A preprint and its journal version, both as DOI keys."""

    preprint_doi: str
    published_doi: str


@dataclass(frozen=True, slots=True)
class CrossrefWork:
    """What one Crossref work says about its own life.

    ``notice_kind`` is "retraction", "withdrawal", "concern" or "correction" when the work is
    itself a notice (from its ``update-to`` types, else a strict title prefix), else None.
    """

    doi: str
    title: str | None
    type: str | None
    notice_kind: str | None
    events: tuple[PaperEvent, ...]
    preprint_links: tuple[PreprintLink, ...]


@dataclass(frozen=True, slots=True)
class CrossrefPage:
    """One page of a work list. Crossref keeps giving a ``next_cursor`` after the last page:
    stop when a page holds fewer works than the ``rows`` asked for."""

    works: tuple[CrossrefWork, ...]
    next_cursor: str | None
    total_results: int | None


# --------------------------------------------------------------------------- answers


def parse_work(body: bytes | str) -> CrossrefWork:
    """Read a ``/works/{doi}`` answer (``message-type: work``)."""
    return read_work(_message(body, "work"))


def parse_work_list(body: bytes | str) -> CrossrefPage:
    """Read a ``/works?...`` answer (``message-type: work-list``, ``items``, ``next-cursor``)."""
    message = _message(body, "work-list")
    items = _field(message, "items", list)
    if items is None:
        raise CrossrefError("work-list message has no items")
    total = _field(message, "total-results", int)
    return CrossrefPage(
        works=tuple(read_work(item) for item in items),
        next_cursor=_field(message, "next-cursor", str),
        total_results=None if isinstance(total, bool) else total,
    )


def read_work(message: object) -> CrossrefWork:
    """Read one work object (a ``message``, or one of a list's ``items``)."""
    if not isinstance(message, dict):
        raise CrossrefError("a work must be a JSON object")
    doi = doi_key(_field(message, "DOI", str))
    if doi is None:
        raise CrossrefError("work has no valid DOI")
    title = _title(_field(message, "title", list))
    found = [_update_event(e, doi, title, notice=True) for e in _entries(message, "update-to")]
    found += [_update_event(e, doi, title, notice=False) for e in _entries(message, "updated-by")]
    events = [e for e in found if e is not None]
    # The work is a notice when its update-to names another work (not an in-place update).
    announced = [e.type for e in events if e.notice_doi == doi != e.target_doi]
    kind = gravest_kind(NOTICE_KIND.get(t) for t in announced)
    return CrossrefWork(
        doi=doi,
        title=title,
        type=_field(message, "type", str),
        notice_kind=kind or notice_kind_from_title(title),
        events=tuple(dict.fromkeys(events)),
        preprint_links=_preprint_links(message, doi),
    )


def _message(body: bytes | str, expected: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, too deep, too many digits
        raise CrossrefError(f"not a JSON document: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise CrossrefError("a Crossref answer must be a JSON object")
    if data.get("status") != "ok":
        # Failures look like {"status": "failed", "message-type": "validation-failure", ...}.
        raise CrossrefError(f"Crossref answered {data.get('message-type')!r}, not ok")
    if data.get("message-type") != expected:
        raise CrossrefError(f"expected message-type {expected!r}, got {data.get('message-type')!r}")
    message = data.get("message")
    if not isinstance(message, dict):
        raise CrossrefError("the answer's message is not a JSON object")
    return message


def _field(obj: dict[str, Any], key: str, kind: type[T]) -> T | None:
    """``obj[key]`` when present and not null; a value of another JSON type is an error."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, kind):
        raise CrossrefError(f"{key!r} should be a {kind.__name__}")
    return value


def _title(titles: list[Any] | None) -> str | None:
    # "title" is a list of strings; titles may carry JATS/HTML inline markup.
    for text in titles or ():
        if not isinstance(text, str):
            raise CrossrefError("'title' should hold strings")
        if cleaned := html_to_text(text):
            return cleaned
    return None


def _entries(message: dict[str, Any], key: str) -> list[dict[str, Any]]:
    entries = _field(message, key, list) or []
    if not all(isinstance(entry, dict) for entry in entries):
        raise CrossrefError(f"{key!r} should hold objects")
    return entries


# --------------------------------------------------------------------------- events


def _update_event(
    entry: dict[str, Any], work_doi: str, title: str | None, *, notice: bool
) -> PaperEvent | None:
    """One ``update-to`` entry (``notice``: this work is the notice) or ``updated-by`` entry."""
    raw_type = _field(entry, "type", str) or ""
    event_type = UPDATE_TYPES.get(re.sub(r"[\s-]+", "_", raw_type.strip().lower()))
    other = doi_key(_field(entry, "DOI", str))
    if event_type is None or other is None:
        return None  # an update litwatch does not track, or one that names no usable DOI
    source = RETRACTION_WATCH if _field(entry, "source", str) == "retraction-watch" else CROSSREF
    label = (_field(entry, "label", str) or "").strip() or None
    target_doi, notice_doi = (other, work_doi) if notice else (work_doi, other)
    return PaperEvent(
        type=event_type,
        source=source,
        target_doi=target_doi,
        notice_doi=notice_doi,
        # updated-by gives no notice title; Crossref's label ("Partial Retraction") says what.
        notice_title=(title if notice else None) or label,
        notice_url=doi_url(notice_doi),
        date=_date(entry.get("updated")),
    )


def _date(value: object) -> date | None:
    """``{"date-parts": [[2024, 5, 2]]}``; missing month/day mean the first, as elsewhere."""
    if not isinstance(value, dict):
        return None
    parts = value.get("date-parts")
    first = parts[0] if isinstance(parts, list) and parts else None
    if isinstance(first, list) and first and all(_is_int(p) for p in first[:3]):
        year, month, day = (*first[:3], 1, 1)[:3]
        try:
            return date(year, month, day)
        except (ValueError, OverflowError):
            return None
    # Crossref writes [[null]] for an unknown date; some answers only have "date-time".
    stamp = value.get("date-time")
    try:
        return date.fromisoformat(stamp[:10]) if isinstance(stamp, str) else None
    except ValueError:
        return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _preprint_links(message: dict[str, Any], doi: str) -> tuple[PreprintLink, ...]:
    relation = _field(message, "relation", dict) or {}
    links: dict[PreprintLink, None] = {}
    for other in _related(relation, "is-preprint-of"):
        links[PreprintLink(preprint_doi=doi, published_doi=other)] = None
    for other in _related(relation, "has-preprint"):
        links[PreprintLink(preprint_doi=other, published_doi=doi)] = None
    return tuple(links)


def _related(relation: dict[str, Any], key: str) -> list[str]:
    """The DOI keys a relation names (``{"id-type": "doi", "id": "10.1002/ANIE..."}``)."""
    found = []
    for entry in _entries(relation, key):
        id_type = _field(entry, "id-type", str)
        if id_type and id_type.lower() == "doi" and (key_ := doi_key(_field(entry, "id", str))):
            found.append(key_)
    return found


def preprint_event(link: PreprintLink, source: str = CROSSREF) -> PaperEvent:
    """The ``published`` event a preprint link means: the preprint now has a journal version."""
    return PaperEvent(
        type=PUBLISHED,
        source=source,
        target_doi=link.preprint_doi,
        notice_doi=link.published_doi,
        notice_url=doi_url(link.published_doi),
    )


def doi_url(doi: str) -> str:
    """The resolver URL of a DOI; what a URL path cannot hold (``#?%<>`` ...) is escaped."""
    return "https://doi.org/" + quote(doi, safe="/();:")


# --------------------------------------------------------------------------- titles

# Only prefixes that name a notice, followed by ":", an opening quote or the end of the title:
# "Correction: ...", "Erratum to “...”", "Retraction Note to: ...", "Expression of Concern".
# "RETRACTED:", "Retracted:" and "Notice of Retraction" are left out on purpose: publishers
# put them both on retracted articles themselves (Elsevier, IEEE) and on notices (Hindawi).
_TITLE_KIND = re.compile(
    r"""^\s*(?:
        (?P<retraction>retraction(?:\s+note|\s+notice)?)
      | (?P<correction>(?:author\s+|publisher\s+)?correction|corrigendum|erratum)
      | (?P<concern>(?:editorial\s+)?expression\s+of\s+concern)
    )(?:\s+(?:to|for|of|on|regarding))?\s*(?::|["“‘'«]|\.?\s*$)""",
    re.IGNORECASE | re.VERBOSE,
)


def notice_kind_from_title(title: str | None) -> str | None:
    """The kind of notice a title announces ("retraction", "correction", "concern"), or None.

    Strict: only a clear notice prefix counts ("Correction: X", "Erratum to “X”", "Retraction
    Note: X", "Expression of Concern: X", or the bare word as the whole title). "Correction to
    the ..." is a research title; "RETRACTED: X" may be the retracted article itself.
    """
    found = _TITLE_KIND.match(title or "")
    return found.lastgroup if found else None


# --------------------------------------------------------------------------- politeness

_INTERVAL = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def crossref_rate_limit(headers: Mapping[Any, Any], default: float = 1.0) -> float:
    """Seconds to wait between requests: ``X-Rate-Limit-Interval`` / ``X-Rate-Limit-Limit``.

    "50" requests per "1s" gives 0.02. ``headers`` may be a plain dict or Scrapy's Headers
    (bytes keys, lists of values). Missing or unreadable headers give ``default``.
    """
    limit = _header(headers, "x-rate-limit-limit")
    interval = _INTERVAL.match(_header(headers, "x-rate-limit-interval") or "")
    if not (limit and limit.isdigit() and int(limit) > 0 and interval):
        return default
    seconds = float(interval.group(1)) * _UNIT_SECONDS[(interval.group(2) or "s").lower()]
    return seconds / int(limit) if 0 < seconds < math.inf else default


def _header(headers: Mapping[Any, Any], name: str) -> str | None:
    for key, value in headers.items():
        if _text(key).lower() == name:
            if isinstance(value, list | tuple):
                value = value[-1] if value else None
            return _text(value).strip() if value is not None else None
    return None


def _text(value: object) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def crossref_updates_url(
    since: date,
    mailto: str,
    *,
    update_types: tuple[str, ...] = NOTICE_UPDATE_TYPES,
    base: str = CROSSREF_API,
    rows: int = 1000,
    cursor: str = "*",
) -> str:
    """The first (or, with ``cursor``, a later) page of notices indexed since ``since``.

    ``from-index-date`` is the filter Crossref recommends for incremental harvests; repeated
    ``update-type`` filters are ORed. ``rows`` is at most 1000; ``mailto`` selects the polite pool.
    """
    if not 1 <= rows <= 1000:
        raise ValueError("Crossref serves 1 to 1000 rows per page")
    filters = [f"from-index-date:{since.isoformat()}"]
    filters += [f"update-type:{kind}" for kind in update_types]
    return (
        f"{_base(base)}works?filter={quote(','.join(filters), safe=':,')}"
        f"&cursor={quote(cursor, safe='*')}&rows={rows}&mailto={_mailto(mailto)}"
    )


def crossref_work_url(doi: str, mailto: str, *, base: str = CROSSREF_API) -> str:
    """The ``/works/{doi}`` URL of one work (its ``updated-by`` lists every notice)."""
    cleaned = clean_doi(doi)
    if cleaned is None:
        raise ValueError(f"not a DOI: {doi!r}")
    return f"{_base(base)}works/{quote(cleaned, safe='/')}?mailto={_mailto(mailto)}"


def _base(base: str) -> str:
    return base.rstrip("/") + "/"


def _mailto(mailto: str) -> str:
    if not mailto.strip():
        raise ValueError("Crossref's polite pool needs a contact address (mailto)")
    return quote(mailto.strip(), safe="@")
