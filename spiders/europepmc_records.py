"""Europe PMC search records, and the identity of a paper within one search page.

:class:`PreprintRecord` wraps the shared :class:`~crawler.items.Paper` with the preprint facts it
cannot hold yet. :func:`dedupe_page` folds the records of one paper listed twice on a page (a
MED record with the DOI and PMID, a PMC record with only the PMCID) into one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from crawler import normalise
from crawler.events import EUROPEPMC, VersionLink
from crawler.items import Paper
from crawler.normalise import title_fingerprint

__all__ = ["PreprintRecord", "RecordLink", "dedupe_page"]


@dataclass(frozen=True)
class RecordLink:
    """One ``commentCorrectionList`` entry: how this record relates to another record."""

    relation: str  # "Preprint of", "Preprint in", "Erratum for", "Retraction in", ...
    source: str | None  # MED | PMC | PPR
    id: str | None
    doi: str | None = None  # printed in the citation text, when it is


@dataclass
class PreprintRecord:
    """One paper from a search page: the shared item plus what a Paper cannot hold yet."""

    paper: Paper
    #: Every Europe PMC record folded into this one, as "SOURCE:id" ("MED:40527815").
    epmc_ids: list[str] = field(default_factory=list)
    ppr_id: str | None = None
    is_preprint: bool = False
    #: The preprint server ("bioRxiv", "Research Square"), for PPR records.
    server: str | None = None
    version: int | None = None
    #: When Europe PMC first indexed the record (the date the search window is on).
    indexed: date | None = None
    full_text_urls: list[str] = field(default_factory=list)
    links: list[RecordLink] = field(default_factory=list)

    @property
    def published_ids(self) -> list[str]:
        """The journal versions of this preprint ("MED:38605817"), from ``Preprint of`` links."""
        return [f"{x.source}:{x.id}" for x in self.links if x.relation == "Preprint of" and x.id]

    @property
    def published_doi(self) -> str | None:
        """The journal version's DOI, when a ``Preprint of`` citation prints one."""
        return next((x.doi for x in self.links if x.relation == "Preprint of" and x.doi), None)

    @property
    def preprint_ids(self) -> list[str]:
        """Preprints of this journal article ("PPR179288"), from ``Preprint in`` links."""
        return [x.id for x in self.links if x.relation == "Preprint in" and x.id]

    def version_links(self) -> list[VersionLink]:
        """The preprint-to-journal links this record reports, as far as identifiers go.

        A preprint's ``Preprint of`` names its journal version by PMID (``MED:``) and, when
        the citation prints one, DOI; a journal article's ``Preprint in`` counts only when its
        citation prints the preprint's DOI (Europe PMC gives no other preprint DOI), or else
        names the held preprint of the same title and first author.
        """
        paper, found = self.paper, []
        if self.is_preprint and paper.doi:
            of = [x.id for x in self.links if x.relation == "Preprint of" and x.source == "MED"]
            pmid = next((p for p in map(normalise.pmid, of) if p), None)
            if pmid or self.published_doi:
                found.append(VersionLink(
                    preprint_doi=paper.doi, published_doi=self.published_doi, published_pmid=pmid,
                    source=EUROPEPMC, server=self.server, preprint_posted=paper.published,
                ))  # fmt: skip
        elif not self.is_preprint and (paper.doi or paper.pmid):
            for x in self.links:
                # Without a DOI the preprint is found by exact title and first author, if held.
                if x.relation == "Preprint in" and (x.doi or (paper.title and paper.authors)):
                    found.append(VersionLink(
                        preprint_doi=x.doi, published_doi=paper.doi, published_pmid=paper.pmid,
                        source=EUROPEPMC, published_journal=paper.journal,
                        published_date=paper.published,
                        match_title=None if x.doi else paper.title,
                        match_author=None if x.doi else paper.authors[0],
                    ))  # fmt: skip
        return found


_PAPER_FILL = ("url", "doi", "pmid", "pmcid", "title", "seen_title", "abstract", "journal")
_PAPER_LISTS = ("authors", "publication_types", "mesh", "keywords")


def dedupe_page(records: list[PreprintRecord]) -> tuple[list[PreprintRecord], int]:
    """Fold records of one paper together: same DOI, PMID, PMCID or PPR id, else same title.

    A title match needs agreeing identifiers and the same preprint status, so a preprint and
    its journal version (different DOIs) stay apart. Returns the records and the fold count.
    """
    kept: list[PreprintRecord] = []
    by_key: dict[tuple[str, str], int] = {}
    by_title: dict[str, list[int]] = {}
    for record in records:
        index = _match(record, kept, by_key, by_title)
        if index is None:
            index = len(kept)
            kept.append(record)
        else:
            kept[index] = _merge(kept[index], record)
        _register(kept[index], index, by_key, by_title)
    return kept, len(records) - len(kept)


def _register(
    record: PreprintRecord,
    index: int,
    by_key: dict[tuple[str, str], int],
    by_title: dict[str, list[int]],
) -> None:
    for key in _keys(record):
        by_key.setdefault(key, index)
    fingerprint = title_fingerprint(record.paper.title)
    bucket = by_title.setdefault(fingerprint, []) if fingerprint else []
    if fingerprint and index not in bucket:
        bucket.append(index)


def _keys(record: PreprintRecord) -> list[tuple[str, str]]:
    paper = record.paper
    pairs = [
        ("doi", normalise.doi_key(paper.doi)),
        ("pmid", paper.pmid),
        ("pmcid", paper.pmcid),
        ("ppr", record.ppr_id),
    ]
    return [(kind, value) for kind, value in pairs if value]


def _match(
    record: PreprintRecord,
    kept: list[PreprintRecord],
    by_key: dict[tuple[str, str], int],
    by_title: dict[str, list[int]],
) -> int | None:
    for key in _keys(record):
        if key in by_key:
            return by_key[key]
    fingerprint = title_fingerprint(record.paper.title)
    for index in by_title.get(fingerprint or "", []):
        if _compatible(kept[index], record):
            return index
    return None


def _compatible(a: PreprintRecord, b: PreprintRecord) -> bool:
    if a.is_preprint != b.is_preprint:
        return False
    mine, theirs = dict(_keys(a)), dict(_keys(b))
    return all(theirs.get(kind, value) == value for kind, value in mine.items())


def _merge(a: PreprintRecord, b: PreprintRecord) -> PreprintRecord:
    """One record from two: the stronger filled from the other.

    Stronger means a higher origin rank, then a PubMed record (the MED twin of a PMC record
    holds the DOI and PubMed's title), then a later preprint version.
    """
    if _strength(b) > _strength(a):
        a, b = b, a
    for name in _PAPER_FILL:
        if getattr(a.paper, name) is None:
            setattr(a.paper, name, getattr(b.paper, name))
    a.paper.published = a.paper.published or b.paper.published
    for name in _PAPER_LISTS:
        if not getattr(a.paper, name):
            setattr(a.paper, name, list(getattr(b.paper, name)))
    a.epmc_ids += [i for i in b.epmc_ids if i not in a.epmc_ids]
    a.ppr_id = a.ppr_id or b.ppr_id
    a.server = a.server or b.server
    a.version = a.version or b.version
    a.indexed = min((d for d in (a.indexed, b.indexed) if d), default=None)
    a.full_text_urls += [u for u in b.full_text_urls if u not in a.full_text_urls]
    a.links += [link for link in b.links if link not in a.links]
    return a


def _strength(record: PreprintRecord) -> tuple[int, bool, int]:
    return (record.paper.rank, record.paper.pmid is not None, record.version or 0)
