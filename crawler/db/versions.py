"""The one owner of ``paper_versions``: a preprint and its journal version are one *work*.

A link names the preprint by DOI key and the journal version by DOI key and/or PMID, so it
may be learned before either paper is held (bioRxiv's ``pubs`` lists every preprint published
in a window) and survives papers being merged. One row per preprint DOI: the same link learned
again, from the same source or another, fills in what the row lacks and adds nothing.

When the preprint is held, a link means the work is now published: a ``published`` event on
the preprint's paper (:mod:`crawler.db.events`), stored once however often the link is learned
(``published`` is singular). A preprint stored after its link was learned gets the event when
it is stored (:func:`announce`, called by the store).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from crawler.db import events as event_store
from crawler.db.engine import insert_ignore
from crawler.db.identity import column_width, fit
from crawler.db.models import PaperRow, PaperVersionRow, Sighting
from crawler.events import PUBLISHED, TITLE_MATCH, PaperEvent, VersionLink
from crawler.normalise import doi_key, doi_url, pmid, pubmed_url, squash, title_fingerprint

_FILLED = (
    "published_doi", "published_pmid", "server", "preprint_posted", "published_journal",
    "published_date",
)  # fmt: skip
_JOURNAL_WIDTH = column_width(PaperVersionRow, "published_journal")
_SERVER_WIDTH = column_width(PaperVersionRow, "server")
_CHUNK = 500


@dataclass(frozen=True)
class WorkLink:
    """One stored link with the papers it joins (None for a side litwatch does not hold)."""

    preprint_doi: str
    published_doi: str | None
    published_pmid: str | None
    preprint_id: int | None
    published_id: int | None
    #: The preprint server ("medRxiv"), from the link or else the held preprint's journal.
    server: str | None
    #: When the preprint was first posted, from the link or else the held preprint's date.
    preprint_posted: date | None
    #: The journal, from the held journal version or else the link.
    published_journal: str | None
    published_date: date | None
    source: str

    def other(self, paper_id: int) -> int | None:
        """The paper on the other side of this link from ``paper_id``."""
        return self.published_id if paper_id == self.preprint_id else self.preprint_id


@dataclass(frozen=True)
class Learned:
    """What storing some links did: new links, new ``published`` events."""

    links: int = 0
    events: int = 0


def record(
    session: Session, links: Iterable[VersionLink], now: datetime, *, only_held: bool = False
) -> Learned:
    """Store links (each preprint DOI once) and the ``published`` events they mean.

    ``only_held``: keep only links whose preprint or journal version is a stored paper (a
    ``pubs`` page lists every preprint of its server published that week).
    """
    wanted: dict[str, dict[str, object]] = {}
    for link in links:
        if not link.preprint_doi:
            link = _by_title(session, link)
        values = _values(link, now)
        if values is None:
            continue
        key = str(values["preprint_doi"])
        if key in wanted:
            _fill_values(wanted[key], values)
        else:
            wanted[key] = values
    if only_held:
        wanted = _held(session, wanted)
    if not wanted:
        return Learned()
    stored = {
        row.preprint_doi: row
        for row in session.scalars(
            select(PaperVersionRow).where(PaperVersionRow.preprint_doi.in_(list(wanted)))
        )
    }
    fresh = [values for key, values in wanted.items() if key not in stored]
    for key, row in stored.items():
        for name in _FILLED:
            if getattr(row, name) is None and wanted[key].get(name) is not None:
                setattr(row, name, wanted[key][name])
    new = insert_ignore(session, PaperVersionRow, fresh, returning="id") if fresh else 0
    session.flush()
    return Learned(new, announce(session, list(wanted), now))


def _held(session: Session, wanted: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    dois = set(wanted) | {str(v["published_doi"]) for v in wanted.values() if v["published_doi"]}
    pmids = {str(v["published_pmid"]) for v in wanted.values() if v["published_pmid"]}
    held: set[str] = set()
    ordered = sorted(dois)
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        held.update(k for k in session.scalars(select(PaperRow.doi_key).where(
            PaperRow.doi_key.in_(chunk))) if k)  # fmt: skip
    if pmids:
        held.update(k for k in session.scalars(select(PaperRow.pmid).where(
            PaperRow.pmid.in_(sorted(pmids)))) if k)  # fmt: skip
    return {key: v for key, v in wanted.items()
            if held & {key, v["published_doi"], v["published_pmid"]}}  # fmt: skip


def _by_title(session: Session, link: VersionLink) -> VersionLink:
    """A link without a preprint DOI, completed when exactly one held preprint has its exact
    title and first author (the source said a preprint exists: this only finds which)."""
    key = title_fingerprint(link.match_title)
    author = _surname(link.match_author)
    if key is None or not author:
        return link
    preprints = select(Sighting.paper_id).where(Sighting.kind == "preprint")
    rows = session.execute(
        select(PaperRow.doi_key, PaperRow.title, PaperRow.authors).where(
            PaperRow.title_key == key, PaperRow.doi_key.is_not(None), PaperRow.id.in_(preprints)
        )
    ).all()
    exact = (squash(link.match_title) or "").casefold()
    found = {doi for doi, title, authors in rows
             if (squash(title) or "").casefold() == exact
             and _surname((authors or [None])[0]) == author}  # fmt: skip
    if len(found) != 1:
        return link
    return replace(link, preprint_doi=found.pop(), source=TITLE_MATCH)


def _surname(name: str | None) -> str:
    # "Goebel A", "Goebel, A." and "Goebel Andreas" agree on the family name.
    return (squash(name) or "").replace(",", " ").split(" ")[0].casefold()


def _values(link: VersionLink, now: datetime) -> dict[str, object] | None:
    preprint = doi_key(link.preprint_doi)
    published = doi_key(link.published_doi)
    published_pmid = pmid(link.published_pmid)
    if preprint is None or not (published or published_pmid) or preprint == published:
        return None
    return {
        "preprint_doi": preprint,
        "published_doi": published,
        "published_pmid": published_pmid,
        "server": fit(squash(link.server), _SERVER_WIDTH),
        "preprint_posted": link.preprint_posted,
        "published_journal": fit(squash(link.published_journal), _JOURNAL_WIDTH),
        "published_date": link.published_date,
        "source": link.source[:32],
        "learned_at": now,
    }


def _fill_values(kept: dict[str, object], other: dict[str, object]) -> None:
    for name in _FILLED:
        if kept.get(name) is None and other.get(name) is not None:
            kept[name] = other[name]


def announce(session: Session, preprint_dois: Sequence[str], now: datetime) -> int:
    """Record the ``published`` event of each held preprint among ``preprint_dois`` that has
    a stored link (once: a second call adds nothing); how many events were new."""
    keys = sorted({k for k in preprint_dois if k})
    found: list[PaperEvent] = []
    for start in range(0, len(keys), _CHUNK):
        rows = session.scalars(
            select(PaperVersionRow).where(
                PaperVersionRow.preprint_doi.in_(keys[start : start + _CHUNK])
            )
        )
        found += [_event(row) for row in rows]
    if not found:
        return 0
    return event_store.learn(session, found, now)


def _event(row: PaperVersionRow) -> PaperEvent:
    url = doi_url(row.published_doi) or pubmed_url(row.published_pmid)
    return PaperEvent(
        type=PUBLISHED,
        source=row.source,
        target_doi=row.preprint_doi,
        notice_doi=row.published_doi,
        notice_pmid=row.published_pmid,
        notice_title=row.published_journal,
        notice_url=url,
        date=row.published_date,
    )


def links_of(session: Session, paper_ids: Iterable[int]) -> dict[int, list[WorkLink]]:
    """The links each of these papers takes part in, as preprint or as journal version."""
    ids = sorted(set(paper_ids))
    if not ids:
        return {}
    papers: dict[int, PaperRow] = {}
    for start in range(0, len(ids), _CHUNK):
        for paper in session.scalars(
            select(PaperRow).where(PaperRow.id.in_(ids[start : start + _CHUNK]))
        ):
            papers[paper.id] = paper
    dois = sorted({p.doi_key for p in papers.values() if p.doi_key})
    pmids = sorted({p.pmid for p in papers.values() if p.pmid})
    rows: dict[int, PaperVersionRow] = {}
    for column, values in (
        (PaperVersionRow.preprint_doi, dois),
        (PaperVersionRow.published_doi, dois),
        (PaperVersionRow.published_pmid, pmids),
    ):
        for start in range(0, len(values), _CHUNK):
            for row in session.scalars(
                select(PaperVersionRow).where(column.in_(values[start : start + _CHUNK]))
            ):
                rows[row.id] = row
    if not rows:
        return {}
    _load_sides(session, papers, rows.values())
    by_doi = {p.doi_key: p for p in papers.values() if p.doi_key}
    by_pmid = {p.pmid: p for p in papers.values() if p.pmid}
    out: dict[int, list[WorkLink]] = defaultdict(list)
    for row in rows.values():
        link = _work_link(row, by_doi, by_pmid)
        for pid in (link.preprint_id, link.published_id):
            if pid in ids:
                out[pid].append(link)
    return out


def _load_sides(
    session: Session, papers: dict[int, PaperRow], rows: Iterable[PaperVersionRow]
) -> None:
    """Add to ``papers`` the held papers on either side of ``rows``."""
    rows = list(rows)
    dois = sorted(
        {r.preprint_doi for r in rows} | {r.published_doi for r in rows if r.published_doi}
    )
    pmids = sorted({r.published_pmid for r in rows if r.published_pmid})
    conditions = []
    if dois:
        conditions.append(PaperRow.doi_key.in_(dois))
    if pmids:
        conditions.append(PaperRow.pmid.in_(pmids))
    for paper in session.scalars(select(PaperRow).where(or_(*conditions))):
        papers.setdefault(paper.id, paper)


def _work_link(
    row: PaperVersionRow, by_doi: dict[str, PaperRow], by_pmid: dict[str, PaperRow]
) -> WorkLink:
    preprint = by_doi.get(row.preprint_doi)
    published = (by_doi.get(row.published_doi) if row.published_doi else None) or (
        by_pmid.get(row.published_pmid) if row.published_pmid else None
    )
    return WorkLink(
        preprint_doi=row.preprint_doi,
        published_doi=row.published_doi or (published.doi_key if published else None),
        published_pmid=row.published_pmid or (published.pmid if published else None),
        preprint_id=preprint.id if preprint else None,
        published_id=published.id if published else None,
        server=row.server or (preprint.journal if preprint else None),
        preprint_posted=row.preprint_posted or (preprint.published if preprint else None),
        published_journal=(published.journal if published else None) or row.published_journal,
        published_date=row.published_date or (published.published if published else None),
        source=row.source,
    )


def unlinked_preprints(session: Session, since: datetime | None) -> list[str]:
    """DOI keys of held preprints with no known journal version (first seen since ``since``;
    all when None): the ones the lifecycle watch asks Crossref about."""
    linked = select(PaperVersionRow.preprint_doi)
    preprints = select(Sighting.paper_id).where(Sighting.kind == "preprint")
    stmt = select(PaperRow.doi_key).where(
        PaperRow.doi_key.is_not(None),
        PaperRow.id.in_(preprints),
        PaperRow.doi_key.not_in(linked),
    )
    if since is not None:
        stmt = stmt.where(PaperRow.first_seen >= since)
    return sorted(k for k in session.scalars(stmt) if k)
