"""Send the digests: plan each (subscriber, period) once, deliver, record success at once.

Exactly once, the way rss2email taught: a delivery row is created (pending, with the papers
it holds and a fixed Message-ID) before anything is sent; it is marked sent in its own
transaction right after the server accepted the message. A crash or kill at any point leaves
pending rows that the next run sends with the same content and Message-ID; sent rows are
never sent again. The one window no client can close (between the server's 250 and our
commit) is milliseconds wide, and the stable Message-ID lets receivers drop a repeat.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import cast

from sqlalchemy import Engine, Table, Update, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crawler.db.engine import transaction
from crawler.db.models import Delivery, DeliveryPaper, Subscriber, utcnow
from crawler.locks import NamedLock
from crawler.settings import Settings
from digests import select as sel
from digests.backends import (
    Backend,
    FatalDeliveryError,
    PermanentFailure,
    ServerUnavailable,
    TemporaryFailure,
    make_backend,
)
from digests.compose import Composer, Personal
from digests.mail import DigestMail, MailConfigError, check_sender, message_id
from digests.model import Entry
from digests.render import Rendered
from digests.tokens import PREFERENCES, UNSUBSCRIBE, Signer, signer_for

log = logging.getLogger("litwatch.digest")

#: Waits before retrying a temporary failure: 5 min, 10, 20, ... capped at 6 h.
RETRY_BASE = timedelta(minutes=5)
RETRY_MAX = timedelta(hours=6)
#: A delivery that failed temporarily this many times is given up (marked failed).
MAX_ATTEMPTS = 10
#: One sender per database at a time (see send_digests).
SEND_LOCK = "digest-send"


@dataclass
class SendReport:
    sent: int = 0
    failed: int = 0
    pending: int = 0
    empty: int = 0
    already: int = 0
    errors: list[str] = field(default_factory=list)
    fatal: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors and self.fatal is None


class Links:
    """Per-subscriber URLs built from ``[web] base_url`` with signed tokens."""

    def __init__(self, settings: Settings, signer: Signer) -> None:
        self.base = settings.web.base_url
        self.signer = signer

    def unsubscribe(self, sub: Subscriber) -> str:
        return f"{self.base}/u/{self.signer.sign(UNSUBSCRIBE, sub.token)}"

    def preferences(self, sub: Subscriber) -> str:
        return f"{self.base}/preferences/{self.signer.sign(PREFERENCES, sub.token)}"

    def personal(self, sub: Subscriber) -> Personal:
        return Personal(sub.name, sub.email, self.unsubscribe(sub), self.preferences(sub))


def make_composer(settings: Settings) -> Composer:
    titles = {name: settings.topic_title(name) for name in settings.topics}
    return Composer(titles, f"{settings.web.base_url}/archive", settings.web.base_url)


def backoff(attempts: int) -> timedelta:
    return min(RETRY_BASE * (2 ** max(attempts - 1, 0)), RETRY_MAX)


def _pages(engine: Engine, only: str | None) -> Iterator[list[Subscriber]]:
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


def _subscribers(engine: Engine, only: str | None) -> Iterator[Subscriber]:
    for page in _pages(engine, only):
        yield from page


def _planned(
    engine: Engine, settings: Settings, only: str | None, period_end: date | None, now: datetime
) -> Iterator[tuple[Subscriber, PagePlan]]:
    """Each subscriber with its page's plan, read when the page's turn comes."""
    for page in _pages(engine, only):
        page_plan = PagePlan(engine, settings, page, period_end, now)
        for sub in page:
            yield sub, page_plan


def _pending(
    settings: Settings, sub: Subscriber, period: date, cutoff: datetime, papers: int, now: datetime
) -> Delivery:
    """A new pending delivery with its fixed Message-ID (both planning paths build it here)."""
    return Delivery(
        subscriber_id=sub.id,
        period=period,
        cutoff=cutoff,
        state="pending",
        attempts=0,
        message_id=message_id(sub.id, period, settings.email.from_),
        paper_count=papers,
        created_at=now,
    )


def plan(
    engine: Engine, settings: Settings, sub: Subscriber, cutoff: datetime, now: datetime
) -> tuple[int | None, str]:
    """Create the pending delivery of ``sub`` for ``cutoff``'s period if there is none.

    Returns (delivery id to send now or None, why): ``due``, ``sent`` (or failed for good),
    ``waiting`` (a retry delay), ``empty`` (nothing new), ``inactive``. The papers are fixed
    here, so a rerun sends the same digest.
    """
    period = sel.period_of(cutoff, sub.timezone)
    with transaction(engine) as session:
        existing = session.scalar(
            select(Delivery).where(Delivery.subscriber_id == sub.id, Delivery.period == period)
        )
        if existing is not None:
            if existing.state != "pending":
                return None, "sent"
            due = existing.next_attempt_at is None or existing.next_attempt_at <= now
            return (existing.id, "due") if due else (None, "waiting")
        fresh = session.get(Subscriber, sub.id)
        if fresh is None or fresh.status != "active":
            return None, "inactive"
        ids = sel.select_paper_ids(session, fresh, cutoff, settings.digest.first_lookback)
        if not ids and not settings.digest.send_empty:
            return None, "empty"
        delivery = _pending(settings, sub, period, cutoff, len(ids), now)
        try:
            with session.begin_nested():
                session.add(delivery)
        except IntegrityError:  # another sender planned it a moment ago
            return None, "sent"
        session.add_all([DeliveryPaper(delivery_id=delivery.id, paper_id=pid) for pid in ids])
        return delivery.id, "due"


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
class _Pending:
    """A delivery row as planning needs it."""

    id: int
    period: date
    state: str
    next_attempt_at: datetime | None


class PagePlan:
    """What planning a page of subscribers needs, read in one transaction.

    Per subscriber, planning took two transactions and six queries (its deliveries, itself,
    the previous cutoff, the papers); a page of 500 now shares five or so. Only this run
    changes a subscriber's deliveries (the send lock), so what is read here stays true while
    the page is sent; the subscriber row itself is read again when its delivery is created.
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        page: Sequence[Subscriber],
        period_end: date | None,
        now: datetime,
    ) -> None:
        self.settings = settings
        self.now = now
        self.cutoffs = {
            s.id: sel.cutoff_for(s.timezone, period_end=period_end, now=now) for s in page
        }
        self.periods = {s.id: sel.period_of(self.cutoffs[s.id], s.timezone) for s in page}
        self.deliveries: dict[int, list[_Pending]] = defaultdict(list)
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
            .add_columns(Delivery.state, Delivery.next_attempt_at)
            .where(
                Delivery.subscriber_id.in_(ids),
                or_(Delivery.state == "pending", Delivery.period.in_(set(self.periods.values()))),
            )
            .order_by(Delivery.period, Delivery.id)
        )
        for sid, *rest in rows.tuples():
            self.deliveries[sid].append(_Pending(*rest))

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

    def earlier(self, sub: Subscriber) -> tuple[list[int], int]:
        """As earlier_pending: (ids of older pending deliveries due again, how many wait)."""
        period = self.periods[sub.id]
        rows = [d for d in self.deliveries[sub.id] if d.state == "pending" and d.period < period]
        due = [d.id for d in rows if d.next_attempt_at is None or d.next_attempt_at <= self.now]
        return due, len(rows) - len(due)

    def plan(self, engine: Engine, sub: Subscriber) -> tuple[int | Planned | None, str]:
        """As :func:`plan`, from what the page read: one transaction, three statements."""
        period = self.periods[sub.id]
        for existing in self.deliveries[sub.id]:
            if existing.period == period:
                if existing.state != "pending":
                    return None, "sent"
                at = existing.next_attempt_at
                return (existing.id, "due") if at is None or at <= self.now else (None, "waiting")
        cutoff = self.cutoffs[sub.id]
        with transaction(engine) as session:
            fresh = session.get(Subscriber, sub.id)
            if fresh is None or fresh.status != "active":
                return None, "inactive"
            ids = self.papers[sub.id]
            if list(fresh.topics or ()) != list(sub.topics or ()):  # changed since the page read
                ids = sel.select_paper_ids(
                    session, fresh, cutoff, self.settings.digest.first_lookback
                )
            if not ids and not self.settings.digest.send_empty:
                return None, "empty"
            return _insert_delivery(session, self.settings, fresh, period, cutoff, ids, self.now)


_DELIVERIES = cast(Table, Delivery.__table__)
_INSERT_DELIVERY = insert(_DELIVERIES).returning(_DELIVERIES.c.id)
_INSERT_PAPERS = insert(cast(Table, DeliveryPaper.__table__))


def _insert_delivery(
    session: Session,
    settings: Settings,
    sub: Subscriber,
    period: date,
    cutoff: datetime,
    ids: Sequence[int],
    now: datetime,
) -> tuple[Planned | None, str]:
    """Insert a pending delivery and its papers (one executemany); (it, "due")."""
    delivery = _pending(settings, sub, period, cutoff, len(ids), now)
    row = {key: getattr(delivery, key) for key in _INSERTED}
    # Core statements with bound parameters: compiled once per run, not once per subscriber.
    conn = session.connection()
    try:
        with conn.begin_nested():
            delivery.id = conn.execute(_INSERT_DELIVERY, row).scalar_one()
    except IntegrityError:  # another sender planned it a moment ago
        return None, "sent"
    if ids:
        conn.execute(_INSERT_PAPERS, [{"delivery_id": delivery.id, "paper_id": pid} for pid in ids])
    return Planned(delivery, sub, tuple(ids)), "due"


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


@dataclass(frozen=True)
class Planned:
    """A delivery just created, with what sending it needs (no need to read it back)."""

    delivery: Delivery  # a detached copy of the row as inserted
    sub: Subscriber  # as read in the planning transaction
    ids: tuple[int, ...]  # its papers, in id order


def _load(engine: Engine, entries: Entries, delivery_id: int) -> Planned:
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
        entries.get(session, ids)  # loaded here, in the same snapshot, when not cached
    return Planned(delivery, sub, ids)


def _render(
    engine: Engine, composer: Composer, entries: Entries, links: Links, target: int | Planned
) -> tuple[Delivery, Subscriber, Rendered]:
    planned = _load(engine, entries, target) if isinstance(target, int) else target
    papers = entries.cached(planned.ids)
    if papers is None:
        with transaction(engine) as session:
            papers = entries.get(session, planned.ids)
    delivery, sub = planned.delivery, planned.sub
    rendered = composer.compose(
        papers, sub.topics, delivery.period, sub.format, links.personal(sub)
    )
    return delivery, sub, rendered


def _record(engine: Engine, delivery_id: int, **values: object) -> None:
    # One UPDATE in its own commit: the exactly-once rule needs the commit, not the ORM.
    with engine.begin() as conn:
        conn.execute(_update_for(tuple(sorted(values))), {"delivery_id": delivery_id, **values})


@functools.cache
def _update_for(columns: tuple[str, ...]) -> Update:
    """``UPDATE deliveries SET <columns> WHERE id = :delivery_id``, built (and compiled) once."""
    return (
        update(_DELIVERIES)
        .where(_DELIVERIES.c.id == bindparam("delivery_id"))
        .values({name: bindparam(name) for name in columns})
    )


def deliver_one(
    engine: Engine,
    settings: Settings,
    backend: Backend,
    composer: Composer,
    entries: Entries,
    links: Links,
    target: int | Planned,
    report: SendReport,
    now: datetime,
) -> None:
    """Send one planned delivery (its id, or just planned) and record the outcome at once.

    ServerUnavailable and FatalDeliveryError propagate (after recording this delivery as
    still pending) because they stop the run.
    """
    delivery, sub, rendered = _render(engine, composer, entries, links, target)
    delivery_id = delivery.id
    if sub.status != "active":
        _record(engine, delivery_id, state="failed", last_error="subscriber left before sending")
        report.failed += 1
        return
    msg = DigestMail(
        rendered,
        from_header=settings.email.from_,
        to_email=sub.email,
        to_name=sub.name,
        msg_id=delivery.message_id,
        unsubscribe_url=links.unsubscribe(sub),
        unsubscribe_mailto=settings.email.unsubscribe_mailto,
        when=now,
    )
    attempts = delivery.attempts + 1
    try:
        backend.send(msg, sub.email)
    except PermanentFailure as exc:
        _refused(engine, delivery, sub, attempts, str(exc), report)
        return
    except TemporaryFailure as exc:
        _deferred(engine, delivery, sub, attempts, str(exc), report, now)
        if isinstance(exc, ServerUnavailable):
            raise
        return
    except FatalDeliveryError as exc:
        _record(engine, delivery_id, last_error=str(exc))
        report.pending += 1
        raise
    # Accepted by the server: record it now, before anything else can go wrong.
    _record(
        engine,
        delivery_id,
        state="sent",
        attempts=attempts,
        sent_at=utcnow(),
        last_error=None,
        next_attempt_at=None,
    )
    report.sent += 1
    log.info(
        "event=digest.sent subscriber=%s period=%s papers=%s",
        sub.id,
        delivery.period,
        delivery.paper_count,
    )


def _refused(
    engine: Engine,
    delivery: Delivery,
    sub: Subscriber,
    attempts: int,
    error: str,
    report: SendReport,
) -> None:
    _record(engine, delivery.id, state="failed", attempts=attempts, last_error=error)
    report.failed += 1
    report.errors.append(f"{sub.email}: refused: {error}")
    log.warning(
        "event=digest.refused subscriber=%s period=%s error=%r", sub.id, delivery.period, error
    )


def _deferred(
    engine: Engine,
    delivery: Delivery,
    sub: Subscriber,
    attempts: int,
    error: str,
    report: SendReport,
    now: datetime,
) -> None:
    state = "failed" if attempts >= MAX_ATTEMPTS else "pending"
    _record(
        engine,
        delivery.id,
        state=state,
        attempts=attempts,
        last_error=error,
        next_attempt_at=now + backoff(attempts),
    )
    report.pending += state == "pending"
    report.failed += state == "failed"
    what = "gave up after repeated temporary failures" if state == "failed" else "deferred"
    report.errors.append(f"{sub.email}: {what}: {error}")
    log.warning(
        "event=digest.deferred subscriber=%s period=%s attempts=%s error=%r",
        sub.id,
        delivery.period,
        attempts,
        error,
    )


def earlier_pending(
    engine: Engine, subscriber_id: int, period: date, now: datetime
) -> tuple[list[int], int]:
    """Pending deliveries of periods before ``period``: (ids due again, how many still wait).

    A retry can outlive its period (a 451 on Sunday night, the next run on Monday): it is
    sent as it was planned, with its own papers and Message-ID, never folded into a new one.
    """
    with transaction(engine) as session:
        rows = session.execute(
            select(Delivery.id, Delivery.next_attempt_at)
            .where(
                Delivery.subscriber_id == subscriber_id,
                Delivery.period < period,
                Delivery.state == "pending",
            )
            .order_by(Delivery.period)
        ).all()
    due = [rid for rid, at in rows if at is None or at <= now]
    return due, len(rows) - len(due)


class _Run:
    """One ``digest send``: the shared pieces and the per-subscriber steps."""

    def __init__(self, settings: Settings, engine: Engine, now: datetime) -> None:
        self.settings = settings
        self.engine = engine
        self.now = now
        self.report = SendReport()
        self.composer = make_composer(settings)
        self.entries = Entries()
        self.links = Links(settings, signer_for(engine))
        smtp = settings.email.smtp
        self.cap = smtp.max_per_run if settings.email.backend == "smtp" else 0
        self.attempted = 0
        self.backend: Backend | None = None

    def subscriber(self, sub: Subscriber, page: PagePlan) -> None:
        """Retry the subscriber's older pending digests, then plan and send this period's."""
        due, waiting = page.earlier(sub)
        self.report.pending += waiting
        for earlier in due:
            self.deliver(earlier)
        target, why = page.plan(self.engine, sub)
        if target is None:
            self.report.empty += why == "empty"
            self.report.already += why == "sent"
            self.report.pending += why == "waiting"
            return
        self.deliver(target)

    def deliver(self, target: int | Planned) -> None:
        if self.cap and self.attempted >= self.cap:
            self.report.pending += 1  # planned; the next run sends it
            return
        self.attempted += 1
        if self.backend is None:  # connect lazily: no connection when nothing is due
            self.backend = make_backend(self.settings.email, self.settings.smtp_password)
        deliver_one(
            self.engine,
            self.settings,
            self.backend,
            self.composer,
            self.entries,
            self.links,
            target,
            self.report,
            self.now,
        )

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()


def send_digests(
    settings: Settings,
    engine: Engine,
    *,
    period_end: date | None = None,
    now: datetime | None = None,
    only: str | None = None,
    dry_run: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    progress: Callable[[SendReport], None] | None = None,
    lock_timeout: float = 60.0,
) -> SendReport:
    """Plan and send every active subscriber's digest for this moment (see the module doc).

    ``only`` is a case-folded address (one subscriber). A problem that stops the whole run
    (login refused, server unreachable, unusable From, another send running) is in
    ``report.fatal``.
    """
    now = now or utcnow()
    try:
        check_sender(settings.email.from_)
    except MailConfigError as exc:
        return SendReport(fatal=str(exc))
    if dry_run:
        return _dry_run(settings, engine, period_end, now, only)
    # Two senders at once (the daemon's job and an operator's command) would both find the
    # same pending row due and both send it. The lock dies with its process, so a run killed
    # with -9 does not block the rerun.
    lock = NamedLock(engine, SEND_LOCK)
    if not lock.acquire(blocking=True, timeout=lock_timeout):
        return SendReport(
            fatal=f"another digest send is running on this database (waited {lock_timeout:g} s)"
        )
    try:
        return _send_all(settings, engine, period_end, now, only, should_stop, progress)
    finally:
        lock.release()


def _send_all(
    settings: Settings,
    engine: Engine,
    period_end: date | None,
    now: datetime,
    only: str | None,
    should_stop: Callable[[], bool],
    progress: Callable[[SendReport], None] | None,
) -> SendReport:
    run = _Run(settings, engine, now)
    try:
        for sub, page in _planned(engine, settings, only, period_end, now):
            if should_stop():
                break
            try:
                run.subscriber(sub, page)
            except (FatalDeliveryError, ServerUnavailable) as exc:
                run.report.fatal = str(exc)
                break
            if progress is not None:
                progress(run.report)
    finally:
        run.close()
    return run.report


def _dry_run(
    settings: Settings, engine: Engine, period_end: date | None, now: datetime, only: str | None
) -> SendReport:
    """What a send would do now, without planning, sending or recording anything."""
    report = SendReport()
    for sub in _subscribers(engine, only):
        cutoff = sel.cutoff_for(sub.timezone, period_end=period_end, now=now)
        period = sel.period_of(cutoff, sub.timezone)
        due, waiting = earlier_pending(engine, sub.id, period, now)
        report.pending += len(due) + waiting
        with transaction(engine) as session:
            existing = session.scalar(
                select(Delivery).where(Delivery.subscriber_id == sub.id, Delivery.period == period)
            )
            ids = (
                []
                if existing is not None
                else sel.select_paper_ids(session, sub, cutoff, settings.digest.first_lookback)
            )
        if existing is not None:
            report.pending += existing.state == "pending"
            report.already += existing.state != "pending"
        elif ids or settings.digest.send_empty:
            report.pending += 1
            log.info("event=digest.would_send subscriber=%s papers=%s", sub.id, len(ids))
        else:
            report.empty += 1
    return report


def retry_pending(
    settings: Settings,
    engine: Engine,
    *,
    now: datetime | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    lock_timeout: float = 5.0,
) -> SendReport:
    """Send the pending deliveries whose retry time has come, planning nothing new.

    The daemon runs this every few minutes, so a digest deferred by a 4xx or a dropped
    connection goes out after its backoff instead of waiting for next week's digest run.
    """
    now = now or utcnow()
    lock = NamedLock(engine, SEND_LOCK)
    if not lock.acquire(blocking=True, timeout=lock_timeout):
        return SendReport()  # a full send is running; it retries what is due itself
    run = _Run(settings, engine, now)
    try:
        with transaction(engine) as session:
            due = list(
                session.scalars(
                    select(Delivery.id)
                    .where(
                        Delivery.state == "pending",
                        (Delivery.next_attempt_at.is_(None)) | (Delivery.next_attempt_at <= now),
                    )
                    .order_by(Delivery.id)
                )
            )
        for delivery_id in due:
            if should_stop():
                break
            try:
                run.deliver(delivery_id)
            except (FatalDeliveryError, ServerUnavailable) as exc:
                run.report.fatal = str(exc)
                break
    finally:
        run.close()
        lock.release()
    return run.report
