"""One work across its versions, as subscribers see it.

A preprint and its journal version are two stored papers joined by a link
(:mod:`crawler.db.versions`). A digest lists a work once:

* a subscriber who was sent one version is not sent another as new: the journal version is
  told under "Updates on papers you were sent" instead (the preprint's ``published`` event,
  :mod:`digests.updates`);
* when both versions are new to a subscriber, only the journal version is listed, with the
  preprint's history ("First posted as a preprint on 2 January 2025 (medRxiv)");
* a preprint with a known journal version loses its "Preprint" badge and says where it is
  published.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from crawler.db.models import Delivery, DeliveryPaper
from crawler.db.versions import WorkLink, links_of
from digests.model import Entry, doi_url, pubmed_url


def one_per_work(session: Session, wanted: Mapping[int, Sequence[int]]) -> dict[int, list[int]]:
    """Each subscriber's new papers (``wanted``: subscriber id -> paper ids) with every work
    listed once, and no work of which the subscriber was sent a version before."""
    every = sorted({pid for ids in wanted.values() for pid in ids})
    links = links_of(session, every)
    if not links:
        return {sid: list(ids) for sid, ids in wanted.items()}
    others = {pid: {o for link in found if (o := link.other(pid)) is not None}
              for pid, found in links.items()}  # fmt: skip
    related = sorted({o for found in others.values() for o in found})
    given = _delivered(session, list(wanted), related) if related else {}
    out: dict[int, list[int]] = {}
    for sid, ids in wanted.items():
        had, chosen = given.get(sid, set()), set(ids)
        out[sid] = [
            pid
            for pid in ids
            if not others.get(pid, set()) & had
            and not any(
                link.preprint_id == pid and link.published_id in chosen
                for link in links.get(pid, ())
            )
        ]
    return out


def _delivered(
    session: Session, subscriber_ids: list[int], paper_ids: list[int]
) -> dict[int, set[int]]:
    """Which of ``paper_ids`` each subscriber was given in any earlier delivery."""
    out: dict[int, set[int]] = {}
    for start in range(0, len(paper_ids), 500):
        for sid, pid in session.execute(
            select(Delivery.subscriber_id, DeliveryPaper.paper_id)
            .join(Delivery, Delivery.id == DeliveryPaper.delivery_id)
            .where(
                Delivery.subscriber_id.in_(subscriber_ids),
                DeliveryPaper.paper_id.in_(paper_ids[start : start + 500]),
            )
        ):
            out.setdefault(sid, set()).add(pid)
    return out


def with_versions(session: Session, entries: Sequence[Entry]) -> list[Entry]:
    """``entries`` with their preprint history, or for a preprint its journal version."""
    links = links_of(session, [e.paper_id for e in entries])
    return [_told(entry, links.get(entry.paper_id, [])) for entry in entries]


def _told(entry: Entry, links: Sequence[WorkLink]) -> Entry:
    as_preprint = next((link for link in links if link.preprint_id == entry.paper_id), None)
    if as_preprint is not None:
        url = doi_url(as_preprint.published_doi) or pubmed_url(as_preprint.published_pmid)
        return replace(
            entry,
            published_in=as_preprint.published_journal or "a journal",
            published_url=url,
        )
    as_article = next((link for link in links if link.published_id == entry.paper_id), None)
    if as_article is not None:
        return replace(
            entry,
            preprint_posted=as_article.preprint_posted,
            preprint_server=as_article.server or "a preprint server",
        )
    return entry


def published_journals(session: Session, paper_ids: Sequence[int]) -> dict[int, str | None]:
    """The journal each of these preprints is published in (None: known, journal unnamed)."""
    out: dict[int, str | None] = {}
    for pid, found in links_of(session, paper_ids).items():
        for link in found:
            if link.preprint_id == pid:
                out[pid] = link.published_journal
    return out
