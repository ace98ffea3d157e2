"""What can happen to a paper after it is published: the shared vocabulary of a paper's life.

Parsers (PubMed, Crossref, Retraction Watch, feeds) turn what a source says into
:class:`PaperEvent` values; the store keeps them and the digests show the paper's status. This
module holds only the vocabulary, so it imports nothing but the standard library.

Conventions
-----------
* **Every event is about its target.** ``target_doi`` / ``target_pmid`` name the paper whose
  life changed (the retracted paper, the corrected one, the preprint that is now published).
  They are None only when the record being parsed *is* that paper and carries no identifier of
  its own: then the subject is that record, which the caller knows.
* ``notice_*`` describe the record that carries the change: the retraction notice, erratum or
  expression of concern; the newer version for ``updated``; the journal version for
  ``published``. All of them are None when the source says *that* something happened but names
  no notice (PubMed's "Retracted Publication" type without a link): a notice is never invented.
* **Paper-side types** (``retracted``, ``corrected``, ...) are read from the changed paper's side
  or from a link worded as the change (Crossref ``update-to`` / ``updated-by``). **Notice-side
  types** (``retraction_of``, ...) are read from a notice's own record, where the source words the
  link from the notice (PubMed ``RetractionOf``, ``ErratumFor``). Both describe the target: a
  notice's own status never changes because of what it announces. :func:`paper_type` folds a
  notice-side type into its paper-side type.
* DOIs are identity keys (``crawler.normalise.doi_key``: ASCII lower case), PMIDs are digits.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field

# --- event types -------------------------------------------------------------------------------

RETRACTED = "retracted"
WITHDRAWN = "withdrawn"
CONCERN = "concern"
CORRECTED = "corrected"
UPDATED = "updated"
PUBLISHED = "published"  # a preprint's journal version exists (notice_* = the journal version)

RETRACTION_OF = "retraction_of"
CORRECTION_OF = "correction_of"
CONCERN_OF = "concern_of"
UPDATE_OF = "update_of"

PAPER_TYPES: tuple[str, ...] = (RETRACTED, WITHDRAWN, CONCERN, CORRECTED, UPDATED, PUBLISHED)
NOTICE_TYPES: tuple[str, ...] = (RETRACTION_OF, CORRECTION_OF, CONCERN_OF, UPDATE_OF)
EVENT_TYPES: frozenset[str] = frozenset(PAPER_TYPES + NOTICE_TYPES)

#: The change a notice-side link announces for its target.
NOTICE_TO_PAPER: dict[str, str] = {
    RETRACTION_OF: RETRACTED,
    CORRECTION_OF: CORRECTED,
    CONCERN_OF: CONCERN,
    UPDATE_OF: UPDATED,
}

#: What kind of notice causes a paper-side change (``updated`` and ``published`` come from new
#: versions, which are papers, not notices). Parsers report a record's own kind in these words.
NOTICE_KIND: dict[str, str] = {
    RETRACTED: "retraction",
    WITHDRAWN: "withdrawal",
    CONCERN: "concern",
    CORRECTED: "correction",
}

# --- statuses ------------------------------------------------------------------------------------

CURRENT = "current"
#: Paper statuses, gravest first: the gravest event a paper has had is its status.
GRAVITY: tuple[str, ...] = (RETRACTED, WITHDRAWN, CONCERN, CORRECTED, UPDATED, CURRENT)

LABELS: dict[str, str] = {
    RETRACTED: "Retracted",
    WITHDRAWN: "Withdrawn",
    CONCERN: "Expression of concern",
    CORRECTED: "Corrected",
    UPDATED: "Updated",
    PUBLISHED: "Now published",
}

# --- sources -------------------------------------------------------------------------------------

PUBMED = "pubmed"
CROSSREF = "crossref"
RETRACTION_WATCH = "retraction-watch"
FEED = "feed"
BIORXIV = "biorxiv"
EUROPEPMC = "europepmc"
#: An exact title-and-first-author match that confirmed a link a source gave without a DOI.
TITLE_MATCH = "title-match"


@dataclass(frozen=True, slots=True, kw_only=True)
class PaperEvent:
    """One thing a source says happened to a paper (see the module docstring for the fields)."""

    type: str
    source: str
    target_doi: str | None = None
    target_pmid: str | None = None
    #: The target's title fingerprint (``crawler.normalise.title_fingerprint``), for a notice
    #: that names its paper only by title (a feed's "Correction: <title>"); the store matches
    #: it only to a paper that is the one stored with that fingerprint.
    target_title_key: str | None = None
    notice_doi: str | None = None
    notice_pmid: str | None = None
    notice_title: str | None = None
    notice_url: str | None = None
    date: datetime.date | None = None  # the date the source gives for the event

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown paper event type {self.type!r}")
        # A notice-side event is parsed from the notice, so the record parsed is not its
        # subject: without a target it would be an event about nobody.
        targets = (self.target_doi, self.target_pmid, self.target_title_key)
        if self.type in NOTICE_TO_PAPER and not any(targets):
            raise ValueError(f"a {self.type} event needs the DOI, PMID or title of its target")

    @property
    def paper_type(self) -> str:
        """The change to the target, in paper-side words (``retraction_of`` -> ``retracted``)."""
        return paper_type(self.type)


def paper_type(event_type: str) -> str:
    """The paper-side type of ``event_type``; raises ValueError for an unknown type."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown paper event type {event_type!r}")
    return NOTICE_TO_PAPER.get(event_type, event_type)


def status_of(event_types: Iterable[str]) -> str:
    """A paper's status from the types of the events about it: the gravest wins.

    Notice-side types count as the change they announce; ``published`` changes no status
    (a preprint with a journal version is not in trouble). No events give ``current``.
    """
    found = {paper_type(t) for t in event_types}
    return next((status for status in GRAVITY if status in found), CURRENT)


def gravest_kind(kinds: Iterable[str | None]) -> str | None:
    """The gravest notice kind among ``kinds`` (None and unknown kinds are ignored)."""
    found = set(kinds)
    ranked = (NOTICE_KIND[status] for status in GRAVITY if status in NOTICE_KIND)
    return next((kind for kind in ranked if kind in found), None)


def label_of(type_or_status: str) -> str:
    """The human label for an event type or a status ("Retracted"); "" for ``current``."""
    if type_or_status == CURRENT:
        return ""
    return LABELS[paper_type(type_or_status)]


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionLink:
    """A preprint and its journal version: one *work* (see :mod:`crawler.db.versions`).

    ``preprint_doi`` names the preprint (a DOI key); the journal version is named by
    ``published_doi`` and/or ``published_pmid``. ``source`` says how it was learned
    (``crossref``, ``biorxiv``, ``europepmc``, ``title-match``). A source that says a preprint
    exists without naming its DOI (Europe PMC's "Preprint in") gives ``match_title`` and
    ``match_author`` instead: the link holds only if exactly one held preprint has that title
    and first author (:mod:`crawler.db.versions`).
    """

    preprint_doi: str | None
    source: str
    published_doi: str | None = None
    published_pmid: str | None = None
    server: str | None = None  # "medRxiv", "bioRxiv", "Research Square"
    preprint_posted: datetime.date | None = None
    published_journal: str | None = None
    published_date: datetime.date | None = None
    match_title: str | None = None
    match_author: str | None = None

    def __post_init__(self) -> None:
        if not (self.published_doi or self.published_pmid):
            raise ValueError("a version link needs the journal version's DOI or PMID")
        if not (self.preprint_doi or (self.match_title and self.match_author)):
            raise ValueError("a version link needs the preprint's DOI, or title and author")


@dataclass(slots=True)
class EventBatch:
    """What one answer of a lifecycle source said: the events, and how far the watch got.

    ``checked`` counts the papers this answer covered; ``progress`` is where a rerun after a
    crash may resume (the last PMID of an EFetch batch, a Crossref cursor), saved only once the
    batch's events are stored.
    """

    stage: str
    events: list[PaperEvent]
    checked: int = 0
    progress: str | None = None
    #: Preprint-to-journal links learned from the same answer (crawler.db.versions).
    links: list[VersionLink] = field(default_factory=list)
