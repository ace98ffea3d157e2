"""Feed items that are notices about a paper: "Correction to: X", "Retraction: X", "RETRACTED: X".

Journal feeds list retraction notices, errata and expressions of concern among the articles,
known only by their titles. This module reads such a title strictly and gives the event it
announces, about the paper it names; it never guesses:

* A notice title ("Retraction: X", "Retraction Note to: X", "Correction to: X", "Erratum to
  “X”", "Corrigendum: X", "Expression of Concern: X", or the same words followed by nothing)
  gives a notice-side event (``retraction_of``, ``correction_of``, ``concern_of``). Its target
  is the paper the item names by DOI (a DOI in its description other than the item's own),
  else the paper whose title fingerprint is X's (the store keeps the event only when exactly one
  stored paper has it). The item is the notice: ``notice_doi``/``notice_url`` are its own.
* "RETRACTED: X" and "Retracted article: X" are the retracted article itself, under its own
  DOI (Elsevier marks retracted articles so): a ``retracted`` event about the item's DOI, with
  no notice (none is named). Without a DOI, the target is X's fingerprint.
* "Correction to the ..." without a colon is a research title, not a notice.

Pure: no network, no database.
"""

from __future__ import annotations

import re
from dataclasses import replace

from crawler.events import CONCERN_OF, CORRECTION_OF, FEED, RETRACTED, RETRACTION_OF, PaperEvent
from crawler.items import Paper
from crawler.normalise import doi_key, find_dois, title_fingerprint

_NOTICE = re.compile(
    r"""^\s*(?:
        (?P<retraction>retraction(?:\s+note|\s+notice)?)
      | (?P<correction>(?:author\s+|publisher\s+)?correction|corrigendum|erratum)
      | (?P<concern>(?:editorial\s+)?expression\s+of\s+concern)
      | (?P<retracted>retracted(?:\s+article)?)
    )(?:\s+(?:to|for|of|on|regarding))?\s*(?::\s*|(?=["“‘'«])|\.?\s*$)""",
    re.IGNORECASE | re.VERBOSE,
)
_NOTICE_SIDE = {"retraction": RETRACTION_OF, "correction": CORRECTION_OF, "concern": CONCERN_OF}
_QUOTES = "\"“”‘’'«» "


def notice_event(paper: Paper) -> PaperEvent | None:
    """The event a feed item's title announces, or None when the title is not a notice's."""
    found = _NOTICE.match(paper.title or "")
    if found is None or found.lastgroup is None:
        return None
    named = (paper.title or "")[found.end() :].strip(_QUOTES) or None
    own = doi_key(paper.doi)
    if found.lastgroup == "retracted":
        if not named:
            return None  # a title that is only "Retracted" names no article
        key = None if own else title_fingerprint(named)
        if not (own or key):
            return None
        return PaperEvent(type=RETRACTED, source=FEED, target_doi=own, target_title_key=key)
    others = [d for d in map(doi_key, find_dois(paper.abstract)) if d and d != own]
    target = others[0] if others else None
    key = None if target else title_fingerprint(named)
    if not (target or key):
        return None  # a notice naming nothing identifiable: no event about nobody
    return PaperEvent(
        type=_NOTICE_SIDE[found.lastgroup],
        source=FEED,
        target_doi=target,
        target_title_key=key,
        notice_doi=own,
        notice_title=paper.title,
        notice_url=paper.url,
        date=paper.published,
    )


def with_notice(paper: Paper) -> Paper:
    """``paper`` carrying the event its title announces (unchanged when it announces none)."""
    event = notice_event(paper)
    return replace(paper, events=[*paper.events, event]) if event is not None else paper
