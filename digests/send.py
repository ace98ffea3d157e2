"""Send the digests: plan each (subscriber, period) once, deliver, record success at once.

A delivery row is created (pending, with the papers it holds and a fixed Message-ID) before
anything is sent; it is claimed in its own commit just before it is handed to the server and
marked sent in another right after the server accepted it (:mod:`digests.delivery`). A crash
or kill leaves untried rows pending, and the next run sends them with the same content and
Message-ID; sent rows are never sent again. A claim without a recorded outcome (a kill while
the server had the message, a database that refused the record) is never resent blindly:
it is ``unknown`` (at most once, the default) or resent once after a delay when the operator
set ``[email] on_unknown = "resend_once"``; the stable Message-ID lets receivers drop a
repeat. A refused (5xx) delivery stays failed and is reported as failed by every later run of
its period until ``digest send --retry-failed`` tries it once more.

The pieces: :mod:`digests.planning` creates the pending rows a page of subscribers at a time;
this module renders each and hands it to :class:`digests.delivery.Sender`, whose thread sends
it and records the outcome while the next one is rendered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime

from sqlalchemy import Engine, select

from crawler.db.engine import transaction
from crawler.db.models import Delivery, Subscriber, utcnow
from crawler.locks import SEND_LOCK, NamedLock
from crawler.settings import Settings
from digests.backends import ensure_outbox
from digests.compose import make_composer
from digests.delivery import (
    DUE_STATES,
    FAILED,
    Outgoing,
    Sender,
    SendReport,
    record,
    settle_unknown,
)
from digests.mail import DigestMail
from digests.outbound import Outbound, OutboundError, outbound
from digests.planning import Entries, PagePlan, Planned, PlannedRow, load, pages
from digests.selection import news_entries
from digests.smtp import FatalDeliveryError, ServerUnavailable
from digests.tokens import Links, signer_for
from digests.updates import updates_for

log = logging.getLogger("litwatch.digest")


class _Run:
    """One ``digest send``: plan and render here, send and record on the sender's thread."""

    def __init__(self, settings: Settings, engine: Engine, now: datetime, out: Outbound) -> None:
        self.settings = settings
        self.out = out
        self.engine = engine
        self.now = now
        self.report = SendReport()
        self.composer = make_composer(settings)
        self.entries = Entries()
        self.links = Links(settings, signer_for(engine))
        smtp = settings.email.smtp
        self.cap = smtp.max_per_run if settings.email.backend == "smtp" else 0
        self.attempted = 0
        self.sender: Sender | None = None

    def subscriber(self, sub: Subscriber, page: PagePlan) -> None:
        """Retry the subscriber's older pending digests, then plan and send this period's."""
        due, waiting = page.earlier(sub)
        self.report.add(pending=waiting)
        for earlier in due:
            self.deliver(earlier)
        target, why = page.plan(self.engine, sub)
        if target is None:
            # A refused digest is reported as failed by every run of its period, never as
            # "already sent" (``--retry-failed`` tries it again).
            existing = page.existing(sub)
            self.report.add(
                error=f"{sub.email}: {why}: {existing.last_error}"
                if existing is not None and why in ("failed", "unknown")
                else None,
                empty=int(why == "empty"),
                already=int(why == "sent"),
                pending=int(why == "waiting"),
                failed=int(why == "failed"),
                unknown=int(why == "unknown"),
            )
            return
        self.deliver(target)

    def deliver(self, target: int | Planned) -> None:
        """Render a planned delivery (its id, or just planned) and hand it to the sender."""
        if self.cap and self.attempted >= self.cap:
            self.report.add(pending=1)  # planned; the next run sends it
            return
        self.attempted += 1
        planned = load(self.engine, self.entries, target) if isinstance(target, int) else target
        delivery, sub = planned.delivery, planned.sub
        if sub.status != "active":
            record(
                self.engine,
                delivery.id,
                state="failed",
                last_error="subscriber left before sending",
            )
            self.report.add(failed=1)
            return
        papers = self.entries.cached(planned.ids)
        if papers is None:
            with transaction(self.engine) as session:
                papers = self.entries.get(session, planned.ids)
        news, told = [], []
        if planned.news or planned.events:  # stories naming no paper; updates (issue 13)
            with transaction(self.engine) as session:
                news = news_entries(session, planned.news) if planned.news else []
                told = updates_for(session, sub.id, planned.events)
        personal = self.links.personal(sub)
        rendered = self.composer.compose(
            papers, sub.topics, delivery.period, sub.format, personal, news, told
        )
        mail = DigestMail(
            rendered,
            from_header=self.settings.email.from_,
            to_email=sub.email,
            to_name=sub.name,
            msg_id=delivery.message_id,
            unsubscribe_url=personal.unsubscribe,
            unsubscribe_mailto=self.settings.email.unsubscribe_mailto,
            when=self.now,
            list_id=self.out.list_id,
            envelope_from=self.out.envelope_from(sub.id),
        )
        if self.sender is None:  # connect lazily: no connection when nothing is due
            self.sender = Sender(
                self.engine,
                self.out.backend(),
                self.report,
                self.now,
                resend_after=self.settings.email.resend_after,
            )
        self.sender.backend.prepare(mail)
        job = Outgoing(
            delivery_id=delivery.id,
            subscriber_id=sub.id,
            email=sub.email,
            period=delivery.period,
            paper_count=delivery.paper_count,
            attempts=delivery.attempts,
            mail=mail,
            state=delivery.state,
            due=delivery.next_attempt_at,
        )
        self.sender.submit(job)

    def finish(self) -> None:
        """Wait for the queued messages; raise what stopped the sender, if anything did."""
        if self.sender is not None:
            self.sender.finish()

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()


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
    try:  # before anything is planned: a bad From, List-Id, DKIM key or VERP stops the run
        out = outbound(settings, None if dry_run else engine)
    except OutboundError as exc:
        return SendReport(fatal=str(exc))
    if dry_run:
        return _dry_run(settings, engine, period_end, now, only)
    if settings.email.backend == "file":
        ensure_outbox(settings.email)  # the quick start's `ls outbox/` works on a quiet week
    # Two senders at once (the daemon's job and an operator's command) would both find the
    # same pending row due and both send it. The lock dies with its process, so a run killed
    # with -9 does not block the rerun.
    lock = NamedLock(engine, SEND_LOCK)
    if not lock.acquire(blocking=True, timeout=lock_timeout):
        return SendReport(
            fatal=f"another digest send is running on this database (waited {lock_timeout:g} s)"
        )
    try:
        return _send_all(settings, engine, period_end, now, only, should_stop, progress, out)
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
    out: Outbound,
) -> SendReport:
    run = _Run(settings, engine, now, out)
    settle_unknown(engine, settings.email.on_unknown)  # each period's plan reports them
    try:
        for page in pages(engine, only):
            page_plan = PagePlan(engine, settings, page, now, period_end=period_end)
            for position, sub in enumerate(page):
                if should_stop():
                    run.report.add(pending=page_plan.planned(page[position:]))
                    return run.report
                try:
                    run.subscriber(sub, page_plan)
                except (FatalDeliveryError, ServerUnavailable):
                    # The page's later deliveries were planned with it: they wait, pending.
                    run.report.add(pending=page_plan.planned(page[position + 1 :]))
                    raise
                if progress is not None:
                    progress(run.report)
        run.finish()
    except (FatalDeliveryError, ServerUnavailable) as exc:
        run.report.fatal = str(exc)
    finally:
        run.close()
    return run.report


def _dry_run(
    settings: Settings, engine: Engine, period_end: date | None, now: datetime, only: str | None
) -> SendReport:
    """What a send would do now, without planning, sending or recording anything.

    ``would_send`` lists each digest that would go out now (address, papers); ``pending``
    counts the retries whose time has not come.
    """
    report = SendReport()
    for page in pages(engine, only):
        page_plan = PagePlan(engine, settings, page, now, period_end=period_end)
        for sub in page:
            for row in page_plan.earlier_rows(sub):
                _dry_row(report, sub.email, row, now)
            existing = page_plan.existing(sub)
            if existing is not None:
                _dry_row(report, sub.email, existing, now)
                continue
            papers = len(page_plan.would_hold(sub))
            if papers or settings.digest.send_empty:
                report.would_send.append((sub.email, papers))
                log.info("event=digest.would_send subscriber=%s papers=%s", sub.id, papers)
            else:
                report.empty += 1
    return report


def _dry_row(report: SendReport, email: str, row: PlannedRow, now: datetime) -> None:
    """Count one delivery planned before, as a send now would treat it."""
    if row.state in DUE_STATES:
        if row.next_attempt_at is None or row.next_attempt_at <= now:
            report.would_send.append((email, row.paper_count))
        else:
            report.pending += 1
    elif row.state == FAILED:
        report.failed += 1
    elif row.state == "sent":
        report.already += 1
    else:  # unknown, or a claim a send would settle as unknown or resend
        report.unknown += 1


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
    try:
        out = outbound(settings, engine)
    except OutboundError as exc:
        return SendReport(fatal=str(exc))
    lock = NamedLock(engine, SEND_LOCK)
    if not lock.acquire(blocking=True, timeout=lock_timeout):
        return SendReport()  # a full send is running; it retries what is due itself
    run = _Run(settings, engine, now, out)
    try:
        run.report.add(unknown=settle_unknown(engine, settings.email.on_unknown))
        with transaction(engine) as session:
            due = list(
                session.scalars(
                    select(Delivery.id)
                    .where(
                        Delivery.state.in_(DUE_STATES),
                        (Delivery.next_attempt_at.is_(None)) | (Delivery.next_attempt_at <= now),
                    )
                    .order_by(Delivery.id)
                )
            )
        for delivery_id in due:
            if should_stop():
                break
            run.deliver(delivery_id)
        run.finish()
    except (FatalDeliveryError, ServerUnavailable) as exc:
        run.report.fatal = str(exc)
    finally:
        run.close()
        lock.release()
    return run.report


def retry_failed(
    settings: Settings,
    engine: Engine,
    *,
    period_end: date | None = None,
    now: datetime | None = None,
    only: str | None = None,
    lock_timeout: float = 60.0,
) -> SendReport:
    """Try each failed delivery of the period once more (``digest send --retry-failed``).

    The period is the one ``digest send`` would send with the same ``period_end``; only
    active subscribers' deliveries are tried, each with the content and Message-ID it was
    planned with. A refusal leaves it failed; a temporary failure defers it as usual.
    """
    now = now or utcnow()
    try:
        out = outbound(settings, engine)
    except OutboundError as exc:
        return SendReport(fatal=str(exc))
    lock = NamedLock(engine, SEND_LOCK)
    if not lock.acquire(blocking=True, timeout=lock_timeout):
        return SendReport(
            fatal=f"another digest send is running on this database (waited {lock_timeout:g} s)"
        )
    run = _Run(settings, engine, now, out)
    try:
        settle_unknown(engine, settings.email.on_unknown)
        for page in pages(engine, only):
            page_plan = PagePlan(engine, settings, page, now, period_end=period_end)
            for sub in page:
                existing = page_plan.existing(sub)
                if existing is not None and existing.state == FAILED:
                    run.deliver(existing.id)
        run.finish()
    except (FatalDeliveryError, ServerUnavailable) as exc:
        run.report.fatal = str(exc)
    finally:
        run.close()
        lock.release()
    return run.report
