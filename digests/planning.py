"""Plan the digests: one pending delivery per (subscriber, period), its papers fixed.

Subscribers are planned a page at a time (:class:`PagePlan`): their deliveries, previous
cutoffs and candidate papers are read in a handful of queries, then every pending delivery
of the page (with its papers and fixed Message-ID) is created in one transaction, before any
of them is sent. :func:`plan` plans one subscriber the same way (a page of one).
"""

from __future__ import annotations

import functools
from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import cast

from sqlalchemy import Engine, Table, bindparam, insert, or_, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

from crawler.db import meta
from crawler.db.engine import transaction
from crawler.db.models import Delivery, DeliveryEvent, DeliveryNews, DeliveryPaper, Subscriber
from crawler.settings import Settings
from digests import selection as sel
from digests import updates, works
from digests.delivery import DUE_STATES, FAILED, UNKNOWN
from digests.mail import message_id
from digests.model import Entry


def pages(engine: Engine, only: str | None) -> Iterator[list[Subscriber]]:
    """Active subscribers in pages, in id order; ``only``: just that (case-folded) address."""
    last = 0
    while True:
        with transaction(engine) as session:
            page = sel.active_subscribers(session, after_id=last)
        if not page:
            return
        last = page[-1].id
        if only is not None:
            page = [s for s in page if s.email_key == only.casefold()]
        if page:
            yield page


def plan(
    engine: Engine, settings: Settings, sub: Subscriber, cutoff: datetime, now: datetime
) -> tuple[int | None, str]:
    """Create the pending delivery of ``sub`` for ``cutoff``'s period if there is none.

    Returns (delivery id to send now or None, why): ``due``, ``sent``, ``failed`` (refused
    or given up), ``unknown`` (see :mod:`digests.delivery`), ``waiting`` (a retry delay),
    ``empty`` (nothing new), ``inactive``. The papers are fixed
    here, so a rerun sends the same digest. A page of one: the same path as ``digest send``.
    """
    target, why = PagePlan(engine, settings, [sub], now, cutoff=cutoff).plan(engine, sub)
    return (target.delivery.id if isinstance(target, Planned) else target), why


class Entries:
    """The digest entries of each distinct paper-id tuple, loaded once per run.

    Most subscribers of one run share their papers, so their entries (3 queries and 20-40
    objects each) are built once per distinct content instead of once per subscriber; the
    Composer caches the render by the same key. A run lasts minutes: papers edited meanwhile
    reach the next run's digests, as they would if the edit came a moment later.
    """

    def __init__(self, size: int = 64) -> None:
        self._cache: OrderedDict[tuple[int, ...], list[Entry]] = OrderedDict()
        self._size = size

    def cached(self, ids: tuple[int, ...]) -> list[Entry] | None:
        """The entries of ``ids`` if this run loaded them already."""
        entries = self._cache.get(ids)
        if entries is not None:
            self._cache.move_to_end(ids)
        return entries

    def get(self, session: Session, ids: tuple[int, ...]) -> list[Entry]:
        """The entries of ``ids`` (sorted), from the cache or loaded with ``session``."""
        entries = self._cache.get(ids)
        if entries is None:
            entries = sel.entries_for(session, ids)
            self._cache[ids] = entries
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(ids)
        return entries


@dataclass
class PlannedRow:
    """A delivery row as planning (and a dry run) needs it."""

    id: int
    period: date
    state: str
    next_attempt_at: datetime | None
    paper_count: int
    last_error: str | None


class PagePlan:
    """What planning a page of subscribers needs, read in one transaction.

    Per subscriber, planning took two transactions and six queries (its deliveries, itself,
    the previous cutoff, the papers); a page of 500 now shares a dozen or so. Only this run
    changes a subscriber's deliveries (the send lock), so what is read here stays true while
    the page is sent; the subscribers are read again when their deliveries are created.
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        page: Sequence[Subscriber],
        now: datetime,
        *,
        period_end: date | None = None,
        cutoff: datetime | None = None,
    ) -> None:
        """Plan for the period ending ``period_end`` (each subscriber's own midnight), or
        for the period of ``cutoff`` (one moment for all), or else the period of ``now``."""
        self.settings = settings
        self.now = now
        self.page = list(page)
        self.topics = {s.id: list(s.topics or ()) for s in page}
        self.outcomes: dict[int, tuple[Planned | None, str]] | None = None
        self.cutoffs = {
            s.id: cutoff
            if cutoff is not None
            else sel.cutoff_for(s.timezone, period_end=period_end, now=now)
            for s in page
        }
        self.periods = {s.id: sel.period_of(self.cutoffs[s.id], s.timezone) for s in page}
        self.deliveries: dict[int, list[PlannedRow]] = defaultdict(list)
        self.papers: dict[int, list[int]] = {}
        with transaction(engine) as session:
            self._read_deliveries(session, [s.id for s in page])
            self._read_papers(session, [s for s in page if self._new(s.id)])

    def _new(self, subscriber_id: int) -> bool:
        period = self.periods[subscriber_id]
        return all(d.period != period for d in self.deliveries[subscriber_id])

    def _read_deliveries(self, session: Session, ids: list[int]) -> None:
        """Each subscriber's pending deliveries and the one of this period, by period."""
        rows = session.execute(
            select(Delivery.subscriber_id, Delivery.id, Delivery.period)
            .add_columns(
                Delivery.state, Delivery.next_attempt_at, Delivery.paper_count, Delivery.last_error
            )
            .where(
                Delivery.subscriber_id.in_(ids),
                or_(
                    Delivery.state.in_(DUE_STATES),
                    Delivery.period.in_(set(self.periods.values())),
                ),
            )
            .order_by(Delivery.period, Delivery.id)
        )
        for sid, *rest in rows.tuples():
            self.deliveries[sid].append(PlannedRow(*rest))

    def _read_papers(self, session: Session, page: list[Subscriber]) -> None:
        """select_paper_ids for every subscriber that needs a new delivery, in bulk."""
        lookback = self.settings.digest.first_lookback
        by_cutoff: dict[datetime, list[int]] = defaultdict(list)
        for sub in page:
            by_cutoff[self.cutoffs[sub.id]].append(sub.id)
        previous: dict[int, datetime] = {}
        for cutoff, ids in by_cutoff.items():
            previous.update(sel.previous_cutoffs(session, ids, cutoff))
        shared: dict[tuple[tuple[str, ...], datetime, datetime], list[int]] = {}
        wanted: dict[int, list[int]] = {}
        for sub in page:
            cutoff = self.cutoffs[sub.id]
            key = (tuple(sub.topics or ()), previous.get(sub.id, cutoff) - lookback, cutoff)
            if key not in shared:
                shared[key] = sel.candidate_ids(session, *key)
            wanted[sub.id] = shared[key]
        every = sorted({pid for ids in shared.values() for pid in ids})
        given = sel.delivered_papers(session, [s.id for s in page], every) if every else {}
        for sid, ids in wanted.items():
            had = given.get(sid, set())
            self.papers[sid] = [pid for pid in ids if pid not in had]
        self.papers = works.one_per_work(session, self.papers)  # one work, once (issue 14)

    def earlier(self, sub: Subscriber) -> tuple[list[int], int]:
        """Pending deliveries of earlier periods: (ids due again, how many still wait).

        A retry can outlive its period (a 451 on Sunday night, the next run on Monday): it
        is sent as it was planned, with its own papers and Message-ID, never folded into a
        new one.
        """
        rows = self.earlier_rows(sub)
        due = [d.id for d in rows if d.next_attempt_at is None or d.next_attempt_at <= self.now]
        return due, len(rows) - len(due)

    def earlier_rows(self, sub: Subscriber) -> list[PlannedRow]:
        """The subscriber's deliveries of earlier periods still to be sent."""
        period = self.periods[sub.id]
        return [d for d in self.deliveries[sub.id] if d.state in DUE_STATES and d.period < period]

    def existing(self, sub: Subscriber) -> PlannedRow | None:
        """The subscriber's delivery of this period, if one was planned before."""
        period = self.periods[sub.id]
        return next((d for d in self.deliveries[sub.id] if d.period == period), None)

    def planned(self, subs: Sequence[Subscriber]) -> int:
        """How many of ``subs`` have a delivery this page planned (none, before planning)."""
        outcomes = self.outcomes or {}
        return sum(isinstance(outcomes.get(sub.id, (None,))[0], Planned) for sub in subs)

    def would_hold(self, sub: Subscriber) -> list[int]:
        """The papers a new delivery would hold, as the page read them (dry runs)."""
        return self.papers.get(sub.id, [])

    def plan(self, engine: Engine, sub: Subscriber) -> tuple[int | Planned | None, str]:
        """As :func:`plan`; the first call plans the whole page (see :meth:`_plan_page`)."""
        existing = self.existing(sub)
        if existing is not None:
            if existing.state not in DUE_STATES:
                # failed (refused, given up), unknown (see digests.delivery), or sent
                return None, existing.state if existing.state in (FAILED, UNKNOWN) else "sent"
            at = existing.next_attempt_at
            return (existing.id, "due") if at is None or at <= self.now else (None, "waiting")
        if self.outcomes is None:
            self.outcomes = self._plan_page(engine)
        return self.outcomes[sub.id]

    def _plan_page(self, engine: Engine) -> dict[int, tuple[Planned | None, str]]:
        """Create the pending delivery of everyone on the page who needs one, in one commit.

        One write transaction per page rather than per subscriber: on SQLite every write
        transaction waits its turn for the database's one writer, which the sender's thread
        holds for each record of a sent message. The subscribers are read again here, so one
        who left or changed topics since the page was read is planned as they are now.
        """
        todo = [sub.id for sub in self.page if self.existing(sub) is None]
        outcomes: dict[int, tuple[Planned | None, str]] = {}
        if not todo:
            return outcomes
        lookback = self.settings.digest.first_lookback
        installation = meta.installation_id(engine)  # in each Message-ID (made once, ever)
        with transaction(engine) as session:
            fresh = {
                s.id: s for s in session.scalars(select(Subscriber).where(Subscriber.id.in_(todo)))
            }
            active = [s for s in fresh.values() if s.status == "active"]
            news = sel.news_for(session, active, self.cutoffs, lookback)  # issue 12, B1
            events = updates.event_ids_by_subscriber(session, active, self.cutoffs)  # issue 13
            planned: list[Planned] = []
            for sid in todo:
                sub = fresh.get(sid)
                if sub is None or sub.status != "active":
                    outcomes[sid] = (None, "inactive")
                    continue
                cutoff = self.cutoffs[sid]
                ids = self.papers[sid]
                if list(sub.topics or ()) != self.topics[sid]:  # changed since the page read
                    ids = sel.select_paper_ids(session, sub, cutoff, lookback)
                    ids = works.one_per_work(session, {sid: ids})[sid]
                told = events[sid]
                if not ids and not news[sid] and not told and not self.settings.digest.send_empty:
                    outcomes[sid] = (None, "empty")
                    continue
                msg_id = message_id(sid, self.periods[sid], self.settings.email.from_, installation)
                delivery = Delivery(
                    subscriber_id=sid,
                    period=self.periods[sid],
                    cutoff=cutoff,
                    state="pending",
                    attempts=0,
                    message_id=msg_id,
                    paper_count=len(ids),
                    created_at=self.now,
                )
                planned.append(Planned(delivery, sub, tuple(ids), tuple(news[sid]), tuple(told)))
            for item in planned:  # "sent": another sender planned it a moment ago
                outcomes[item.sub.id] = (None, "sent")
            outcomes.update((item.sub.id, (item, "due")) for item in _insert(session, planned))
        return outcomes


_INSERT_PAPERS = insert(cast(Table, DeliveryPaper.__table__))
_INSERT_NEWS = insert(cast(Table, DeliveryNews.__table__))
_INSERT_EVENTS = insert(cast(Table, DeliveryEvent.__table__))


@functools.lru_cache(maxsize=8)  # one per page size: compiled once, like any statement
def _insert_statement(count: int) -> TextClause:
    """``INSERT INTO deliveries ... VALUES`` ``count`` rows ``ON CONFLICT (subscriber_id,
    period) DO NOTHING RETURNING id, subscriber_id``: the same syntax on SQLite (3.35+) and
    PostgreSQL, written as text because SQLAlchemy compiles a many-row ``VALUES`` with ``ON
    CONFLICT`` again for every execution (a tenth of a second for 500 rows). The columns'
    own types convert the values."""
    table = cast(Table, Delivery.__table__)
    values = ", ".join(
        "(" + ", ".join(f":{key}_{n}" for key in _INSERTED) + ")" for n in range(count)
    )
    binds = [
        bindparam(f"{key}_{n}", type_=table.c[key].type) for n in range(count) for key in _INSERTED
    ]
    return text(
        f"INSERT INTO deliveries ({', '.join(_INSERTED)}) VALUES {values}"  # noqa: S608 - constant names
        " ON CONFLICT (subscriber_id, period) DO NOTHING RETURNING id, subscriber_id"
    ).bindparams(*binds)


_INSERTED = (
    "subscriber_id",
    "period",
    "cutoff",
    "state",
    "attempts",
    "message_id",
    "paper_count",
    "created_at",
)


def _insert(session: Session, planned: list[Planned]) -> list[Planned]:
    """Insert the page's pending deliveries in one statement, unless a (subscriber, period)
    exists, then all their papers, stories and updates in one executemany each; the ones
    inserted, with their ids. A page of 500 took 1,000 statements when done one by one, all
    of them while holding SQLite's one writer, which the sender needs for every message."""
    if not planned:
        return []
    rows = {
        f"{key}_{n}": getattr(p.delivery, key) for n, p in enumerate(planned) for key in _INSERTED
    }
    stmt = _insert_statement(len(planned))
    conn = session.connection()
    new = {sid: did for did, sid in conn.execute(stmt, rows).tuples()}
    inserted = [p for p in planned if p.sub.id in new]
    for item in inserted:
        item.delivery.id = new[item.sub.id]
    for statement, attr, column in (
        (_INSERT_PAPERS, "ids", "paper_id"),
        (_INSERT_NEWS, "news", "news_id"),  # each story told once per subscriber
        (_INSERT_EVENTS, "events", "event_id"),  # each update likewise, fixed when planned
    ):
        children = [
            {"delivery_id": p.delivery.id, column: value}
            for p in inserted
            for value in getattr(p, attr)
        ]
        if children:
            conn.execute(statement, children)
    return inserted


@dataclass(frozen=True)
class Planned:
    """A delivery just created, with what sending it needs (no need to read it back)."""

    delivery: Delivery  # a detached copy of the row as inserted
    sub: Subscriber  # as read in the planning transaction
    ids: tuple[int, ...]  # its papers, in id order
    news: tuple[int, ...] = ()  # the news stories it tells (news_items ids), in id order
    events: tuple[int, ...] = ()  # the paper events it tells (paper_events ids)


def load(engine: Engine, entries: Entries, delivery_id: int) -> Planned:
    """A planned delivery read back from the database (a retry, a rerun after a crash)."""
    with transaction(engine) as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        sub = session.get(Subscriber, delivery.subscriber_id)
        assert sub is not None
        ids = tuple(
            session.scalars(
                select(DeliveryPaper.paper_id)
                .where(DeliveryPaper.delivery_id == delivery_id)
                .order_by(DeliveryPaper.paper_id)
            )
        )
        news = tuple(
            session.scalars(
                select(DeliveryNews.news_id)
                .where(DeliveryNews.delivery_id == delivery_id)
                .order_by(DeliveryNews.news_id)
            )
        )
        events = tuple(
            session.scalars(
                select(DeliveryEvent.event_id)
                .where(DeliveryEvent.delivery_id == delivery_id)
                .order_by(DeliveryEvent.event_id)
            )
        )
        entries.get(session, ids)  # loaded here, in the same snapshot, when not cached
    return Planned(delivery, sub, ids, news, events)
