"""What a poll knows and learns: the state a source keeps between polls, what one poll
reports, and the outcome of one source in one crawl (shared by spiders, the runner and the
database's poll bookkeeping)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class PollState:
    """What the database remembers about a source between polls."""

    etag: str | None = None
    last_modified: str | None = None
    #: PubMed: end of the last fully crawled entry-date window.
    cursor: datetime | None = None
    #: ScienceDaily: story URLs already followed (each is fetched once, ever). One set shared
    #: by every spider of a crawl; a spider adds the stories it is about to fetch.
    followed: set[str] = field(default_factory=set)


@dataclass
class PollReport:
    """What one poll learned, saved by the runner once the items are stored."""

    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    not_modified: int = 0
    #: Items the spider produced, items dropped as off-topic, items stored, new papers,
    #: and items that matched a paper already known.
    items: int = 0
    skipped: int = 0
    stored: int = 0
    new: int = 0
    merged: int = 0
    #: True when a full answer was read and its validators (possibly none) replace the stored
    #: ones; a 304, or a feed read only in part, leaves the stored validators alone.
    validators_seen: bool = False
    etag: str | None = None
    last_modified: str | None = None
    cursor: datetime | None = None
    followed: list[tuple[str, int]] = field(default_factory=list)
    #: Set when a batch could not be stored: nothing this poll learned may then be saved as
    #: done (a story marked followed whose paper was never stored would be lost for good).
    store_failed: bool = False


@dataclass
class SourceResult:
    """The outcome of one source in one crawl (one row of the final table)."""

    source_id: str
    kind: str
    status: str = "ok"  # ok | failed | busy
    requests: int = 0
    not_modified: int = 0
    items: int = 0
    new: int = 0
    merged: int = 0
    skipped: int = 0
    errors: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "busy")
