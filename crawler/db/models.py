"""SQLAlchemy 2 models. The schema itself is created and changed only by Alembic migrations."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite has no time zones: store naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class PaperRow(Base):
    """One paper, however many places it was seen."""

    __tablename__ = "papers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    doi: Mapped[str | None] = mapped_column(String(300))  # as displayed
    doi_key: Mapped[str | None] = mapped_column(String(300), unique=True)  # normalised
    pmid: Mapped[str | None] = mapped_column(String(16), unique=True)
    pmcid: Mapped[str | None] = mapped_column(String(20), unique=True)
    title: Mapped[str | None] = mapped_column(Text)
    title_key: Mapped[str | None] = mapped_column(String(200), index=True)
    abstract: Mapped[str | None] = mapped_column(Text)
    journal: Mapped[str | None] = mapped_column(String(500))
    published: Mapped[date | None] = mapped_column(Date)
    year: Mapped[int | None] = mapped_column(Integer)
    authors: Mapped[list[str]] = mapped_column(JSON, default=list)
    publication_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    mesh: Mapped[list[str]] = mapped_column(JSON, default=list)
    keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: Highest authority of any record merged in (news 1 < feed 2 < pubmed 3).
    rank: Mapped[int] = mapped_column(Integer, default=0)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated: Mapped[datetime] = mapped_column(UTCDateTime)


class PaperTopic(Base):
    __tablename__ = "paper_topics"

    paper_id: Mapped[int] = mapped_column(
        ForeignKey("papers.id", ondelete="CASCADE"), primary_key=True
    )
    topic: Mapped[str] = mapped_column(String(64), primary_key=True)

    __table_args__ = (Index("ix_paper_topics_topic", "topic", "paper_id"),)


class Sighting(Base):
    """One place a paper was seen: a PubMed record, a feed item, a news story."""

    __tablename__ = "sightings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    paper_id: Mapped[int] = mapped_column(ForeignKey("papers.id", ondelete="CASCADE"), index=True)
    source_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # article | news | preprint
    url: Mapped[str] = mapped_column(String(2000), default="")
    title: Mapped[str | None] = mapped_column(Text)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("paper_id", "source_id", "url", name="uq_sightings_place"),)


class SourceState(Base):
    """Per-source poll state and health."""

    __tablename__ = "sources"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    #: PubMed: the end of the last successfully crawled EDAT window (UTC).
    cursor: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    items_seen: Mapped[int] = mapped_column(Integer, default=0)
    items_new: Mapped[int] = mapped_column(Integer, default=0)
    items_skipped: Mapped[int] = mapped_column(Integer, default=0)


class CrawlRun(Base):
    """Statistics of one crawl of one source."""

    __tablename__ = "crawl_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))  # running | ok | failed | skipped
    trigger: Mapped[str] = mapped_column(String(16), default="cli")  # cli | daemon
    requests: Mapped[int] = mapped_column(Integer, default=0)
    not_modified: Mapped[int] = mapped_column(Integer, default=0)
    items: Mapped[int] = mapped_column(Integer, default=0)
    new: Mapped[int] = mapped_column(Integer, default=0)
    merged: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)


class FollowedLink(Base):
    """A news story already followed, so that it is fetched once, ever."""

    __tablename__ = "followed_links"

    url: Mapped[str] = mapped_column(String(2000), primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64))
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)
    dois: Mapped[int] = mapped_column(Integer, default=0)


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), unique=True)  # case-folded
    name: Mapped[str | None] = mapped_column(String(200))
    topics: Mapped[list[str]] = mapped_column(JSON, default=list)
    format: Mapped[str] = mapped_column(String(8), default="html")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    #: Random secret; links carry a token signed over it, never the id.
    token: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # pending|active|unsubscribed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Why the address was suspended (a hard bounce, soft bounces), when status is
    #: "suspended"; ``litwatch subscribers reactivate`` clears it.
    suspended_reason: Mapped[str | None] = mapped_column(Text)
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Whether the digest tells this subscriber what happened to papers they were sent.
    updates: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


class Delivery(Base):
    """One digest for one subscriber and one period: sent at most once."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    period: Mapped[date] = mapped_column(Date)
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(300))
    paper_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("subscriber_id", "period", name="uq_deliveries_period"),
        Index("ix_deliveries_state_sent_at", "state", "sent_at"),  # status: sent in 30 days
    )


class DeliveryPaper(Base):
    __tablename__ = "delivery_papers"

    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    paper_id: Mapped[int] = mapped_column(
        ForeignKey("papers.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class NewsItem(Base):
    """Press coverage that names no paper (a news story without a DOI): shown under its own
    headline, never as a nameless paper."""

    __tablename__ = "news_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    source_id: Mapped[str] = mapped_column(String(64))
    headline: Mapped[str] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text)
    #: Who put the story out (ScienceDaily's "Source": a university, an institute).
    outlet: Mapped[str | None] = mapped_column(String(500))
    published: Mapped[date | None] = mapped_column(Date)
    topics: Mapped[list[str]] = mapped_column(JSON, default=list)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class DeliveryNews(Base):
    __tablename__ = "delivery_news"

    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    news_id: Mapped[int] = mapped_column(
        ForeignKey("news_items.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class PaperEventRow(Base):
    """A typed fact about a paper's life (retracted, corrected, ...), stored once however often
    and wherever it is learned (``key``)."""

    __tablename__ = "paper_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    paper_id: Mapped[int] = mapped_column(ForeignKey("papers.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    #: paper id, type and the notice's identity: the same event learned twice is one row.
    key: Mapped[str] = mapped_column(String(400), unique=True)
    notice_doi: Mapped[str | None] = mapped_column(String(300))
    notice_pmid: Mapped[str | None] = mapped_column(String(16))
    notice_title: Mapped[str | None] = mapped_column(Text)
    notice_url: Mapped[str | None] = mapped_column(String(2000))
    source: Mapped[str] = mapped_column(String(32))
    date: Mapped[date | None] = mapped_column(Date)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    #: Set when the event was itself withdrawn (a retraction notice retracted): kept, not shown.
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DeliveryEvent(Base):
    """An event told in a delivery: each (subscriber, event) is told once."""

    __tablename__ = "delivery_events"

    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[int] = mapped_column(
        ForeignKey("paper_events.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class PaperVersionRow(Base):
    """A preprint and its journal version: one work. Named by DOI key (and the journal
    version's PMID), so a link may be learned before either paper is held and survives
    papers being merged; :mod:`crawler.db.versions` owns it."""

    __tablename__ = "paper_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    preprint_doi: Mapped[str] = mapped_column(String(300), unique=True)
    published_doi: Mapped[str | None] = mapped_column(String(300), index=True)
    published_pmid: Mapped[str | None] = mapped_column(String(16), index=True)
    server: Mapped[str | None] = mapped_column(String(64))
    preprint_posted: Mapped[date | None] = mapped_column(Date)
    published_journal: Mapped[str | None] = mapped_column(String(500))
    published_date: Mapped[date | None] = mapped_column(Date)
    #: How it was learned: crossref | biorxiv | europepmc | title-match.
    source: Mapped[str] = mapped_column(String(32))
    learned_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RateLimit(Base):
    """A fixed-window counter shared by every web process (sign-ups per client, say)."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    count: Mapped[int] = mapped_column(Integer, default=0)


class BounceRow(Base):
    """One decision about one returned message (a bounce, complaint, auto-reply or other).

    ``message_key`` names the returned message (its Message-ID, else a hash of its bytes), so
    processing a mailbox twice counts nothing twice; a notice about several recipients gives
    one row each (``recipient`` is "" for a message that names none).
    """

    __tablename__ = "bounces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_key: Mapped[str] = mapped_column(String(300))
    recipient: Mapped[str] = mapped_column(String(320), default="")
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # hard|soft|complaint|auto_reply|not_bounce
    status: Mapped[str | None] = mapped_column(String(16))
    diagnostic: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(32))  # counted|suspended|unsubscribed|ignored
    source: Mapped[str] = mapped_column(String(32))  # maildir|mbox|imap|webhook:<provider>
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    __table_args__ = (UniqueConstraint("message_key", "recipient", name="uq_bounces_message_key"),)


class Meta(Base):
    """Small key/value facts about this installation (e.g. the generated signing key)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
