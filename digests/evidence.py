"""Evidence badges and ranking for digest entries.

Pure functions over what the store knows about a paper: its publication types (PubMed's
PublicationType vocabulary, plus the few Crossref / JATS article types a feed may carry),
its title, its DOI and the kinds of places it was sighted (``article``, ``news``,
``preprint``, see :data:`crawler.items.SIGHTING_KINDS`).

Two outputs: :func:`badges` (what a reader is told) and :func:`strength` (how entries are
ordered inside a digest section: strongest design first, retraction notices last).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from crawler.normalise import clean_doi


@dataclass(frozen=True)
class Badge:
    """A short label shown next to an entry; ``key`` is stable (CSS classes, tests)."""

    key: str
    label: str

    @property
    def tone(self) -> str:
        """``warning`` (notices, retractions), ``caution`` (preprints) or ``design``."""
        if self.key in _NOTICE_KEYS:
            return "warning"
        return "caution" if self.key == "preprint" else "design"


class Tier(IntEnum):
    """Ordering tiers used by :func:`strength` (higher sorts first)."""

    NOTICE = 0  # retraction / correction notices and retracted papers
    PREPRINT = 10
    OTHER = 20
    REVIEW = 30
    CLINICAL_TRIAL = 40
    RCT = 50
    SYNTHESIS = 60  # meta-analysis or systematic review


# Publication types, normalised by _norm() (case-folded, "-"/"_" as spaces), mapped to badge
# keys. PubMed's names are the real MeSH PublicationType headings; lower-case hyphenated ones
# are Crossref / JATS article types that publisher feeds use.
_TYPE_KEYS: dict[str, str] = {
    "meta analysis": "meta-analysis",
    "network meta analysis": "meta-analysis",
    "systematic review": "systematic-review",
    "randomized controlled trial": "rct",
    "randomized controlled trial, veterinary": "rct",
    "clinical trial": "clinical-trial",
    "clinical trial, phase i": "clinical-trial",
    "clinical trial, phase ii": "clinical-trial",
    "clinical trial, phase iii": "clinical-trial",
    "clinical trial, phase iv": "clinical-trial",
    "clinical trial, veterinary": "clinical-trial",
    "controlled clinical trial": "clinical-trial",
    "pragmatic clinical trial": "clinical-trial",
    "adaptive clinical trial": "clinical-trial",
    "equivalence trial": "clinical-trial",
    # "Clinical Trial Protocol" is deliberately absent: a protocol reports no results.
    "review": "review",
    "scoping review": "review",
    "preprint": "preprint",
    "posted content": "preprint",  # Crossref's type for preprints
    # PubMed tags the retracted article itself "Retracted Publication" and the notice
    # "Retraction of Publication"; a reader needs to tell the two apart.
    "retracted publication": "retracted",
    "withdrawn publication": "withdrawn",
    "retraction of publication": "retraction",
    "retraction": "retraction",
    "published erratum": "correction",
    "erratum": "correction",
    "correction": "correction",
    "expression of concern": "concern",
}

_LABELS: dict[str, str] = {
    "retracted": "Retracted",
    "withdrawn": "Withdrawn",
    "retraction": "Retraction notice",
    "correction": "Correction",
    "concern": "Expression of concern",
    "preprint": "Preprint (not peer reviewed)",
    "meta-analysis": "Meta-analysis",
    "systematic-review": "Systematic review",
    "rct": "Randomised controlled trial",
    "clinical-trial": "Clinical trial",
    "review": "Review",
}
#: Badge display order: warnings first, then the design, strongest first.
BADGE_ORDER: tuple[str, ...] = tuple(_LABELS)

_NOTICE_KEYS = frozenset({"retracted", "withdrawn", "retraction", "correction", "concern"})

# Titles that announce a notice. Elsevier and Wiley prefix the retracted article's own title
# with "RETRACTED:"; notices are titled "Retraction: <title>", "Correction to: <title>",
# "Erratum to ...", "Corrigendum: ...", "Notice of retraction", "Expression of concern: ...".
# A colon or "to" is required: "Correction of hypovitaminosis D ..." is a research paper.
_TITLE_KEYS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^\W*retracted(?: article)?\s*:", re.IGNORECASE), "retracted"),
    (
        re.compile(
            r"^\W*(?:retraction(?: notice)?\s*(?::|to\b)|retraction notice\b"
            r"|notice of retraction\b)",
            re.IGNORECASE,
        ),
        "retraction",
    ),
    (
        re.compile(r"^\W*(?:correction|erratum|corrigendum)\s*(?::|to\b)", re.IGNORECASE),
        "correction",
    ),
    (re.compile(r"^\W*expression of concern\s*(?::|to\b|for\b)", re.IGNORECASE), "concern"),
)

# Preprint servers by DOI. bioRxiv and medRxiv share Cold Spring Harbor's prefix 10.1101 with
# CSHL Press journals (10.1101/gr.*, 10.1101/gad.*), so only a numeric suffix counts there
# ("10.1101/2024.01.02.123456", older "10.1101/123456").
_PREPRINT_DOI = re.compile(
    r"^10\.(?:1101/\d|21203/rs\.|2139/ssrn\.|20944/preprints|31219/osf\.io/|48550/arxiv\.)",
    re.IGNORECASE,
)


def _norm(publication_type: str) -> str:
    return " ".join(publication_type.replace("-", " ").replace("_", " ").casefold().split())


def _keys(
    publication_types: Iterable[str],
    title: str | None,
    doi: str | None,
    sighting_kinds: Iterable[str],
) -> set[str]:
    """Every badge key that applies, before redundant ones are pruned."""
    normalised = {_norm(t) for t in publication_types if t}
    keys = {_TYPE_KEYS[t] for t in normalised if t in _TYPE_KEYS}
    # A "Corrected and Republished Article" is the full corrected paper even when its title
    # starts "Erratum:" (PMIDs 10612833 and 11748851 in NLM's baseline sample), so the title
    # rule must not call it a notice.
    if title and "corrected and republished article" not in normalised:
        keys.update(key for pattern, key in _TITLE_KEYS if pattern.match(title))
    cleaned = clean_doi(doi)
    if "preprint" in sighting_kinds or (cleaned and _PREPRINT_DOI.match(cleaned)):
        keys.add("preprint")
    return keys


def _prune(keys: set[str]) -> set[str]:
    # PubMed tags most meta-analyses and systematic reviews "Review" too, and most RCTs
    # "Clinical Trial" too; the generic badge adds nothing next to the specific one.
    if keys & {"meta-analysis", "systematic-review"}:
        keys.discard("review")
    if "rct" in keys:
        keys.discard("clinical-trial")
    return keys


#: The publication type that says what a paper's status says (crawler.events), for papers
#: whose own record has not caught up with what litwatch learned about them.
_STATUS_TYPES: dict[str, str] = {
    "retracted": "Retracted Publication",
    "withdrawn": "Withdrawn Publication",
    "concern": "Expression of Concern",
    "corrected": "Published Erratum",
}


def status_types(status: str) -> tuple[str, ...]:
    """The publication types that stand for ``status`` (none for current or updated)."""
    found = _STATUS_TYPES.get(status)
    return (found,) if found else ()


def badges(
    publication_types: Iterable[str],
    title: str | None = None,
    doi: str | None = None,
    sighting_kinds: Iterable[str] = (),
) -> tuple[Badge, ...]:
    """The badges to show for a paper, warnings first.

    >>> [b.label for b in badges(["Journal Article", "Randomized Controlled Trial"])]
    ['Randomised controlled trial']
    """
    keys = _prune(_keys(publication_types, title, doi, tuple(sighting_kinds)))
    return tuple(Badge(key, _LABELS[key]) for key in BADGE_ORDER if key in keys)


def strength(
    publication_types: Iterable[str],
    title: str | None = None,
    doi: str | None = None,
    sighting_kinds: Iterable[str] = (),
) -> int:
    """An ordering weight: higher is stronger evidence (see :class:`Tier`).

    Meta-analyses and systematic reviews > randomised trials > other clinical trials >
    reviews > everything else > preprints; notices and retracted papers come last whatever
    their design, and a preprint ranks as a preprint whatever it claims to be.
    """
    keys = _keys(publication_types, title, doi, tuple(sighting_kinds))
    if keys & _NOTICE_KEYS:
        return int(Tier.NOTICE)
    if "preprint" in keys:
        return int(Tier.PREPRINT)
    for key, tier in (
        ("meta-analysis", Tier.SYNTHESIS),
        ("systematic-review", Tier.SYNTHESIS),
        ("rct", Tier.RCT),
        ("clinical-trial", Tier.CLINICAL_TRIAL),
        ("review", Tier.REVIEW),
    ):
        if key in keys:
            return int(tier)
    return int(Tier.OTHER)
