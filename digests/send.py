"""Send the digests: plan each (subscriber, period) once, deliver, record success at once.

Exactly once, the way rss2email taught: a delivery row is created (pending, with the papers
it holds and a fixed Message-ID) before anything is sent; it is marked sent in its own
transaction right after the server accepted the message. A crash or kill at any point leaves
pending rows that the next run sends with the same content and Message-ID; sent rows are
never sent again. The one window no client can close (between the server's 250 and our
commit) is milliseconds wide, and the stable Message-ID lets receivers drop a repeat.

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
from digests.backends import FatalDeliveryError, ServerUnavailable, make_backend
from digests.compose import make_composer
from digests.delivery import Outgoing, Sender, SendReport, record
from digests.mail import DigestMail, MailConfigError, check_sender
from digests.planning import Entries, PagePlan, Planned, load, pages
from digests.selection import news_entries
from digests.tokens import Links, signer_for
from digests.updates import updates_for

log = logging.getLogger("litwatch.digest")


class _Run:
    """One ``digest send``: plan and render here, send and record on the sender's thread."""

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
        self.sender: Sender | None = None

    def subscriber(self, sub: Subscriber, page: PagePlan) -> None:
        """Retry the subscriber's older pending digests, then plan and send this period's."""
        due, waiting = page.earlier(sub)
        self.report.add(pending=waiting)
        for earlier in due:
            self.deliver(earlier)
        target, why = page.plan(self.engine, sub)
        if target is None:
            self.report.add(
                empty=int(why == "empty"),
                already=int(why == "sent"),
                pending=int(why == "waiting"),
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
        )
        if self.sender is None:  # connect lazily: no connection when nothing is due
            backend = make_backend(self.settings.email, self.settings.smtp_password)
            self.sender = Sender(self.engine, backend, self.report, self.now)
        self.sender.backend.prepare(mail)
        job = Outgoing(
            delivery_id=delivery.id,
            subscriber_id=sub.id,
            email=sub.email,
            period=delivery.period,
            paper_count=delivery.paper_count,
            attempts=delivery.attempts,
            mail=mail,
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
    """What a send would do now, without planning, sending or recording anything."""
    report = SendReport()
    for page in pages(engine, only):
        page_plan = PagePlan(engine, settings, page, now, period_end=period_end)
        for sub in page:
            due, waiting = page_plan.earlier(sub)
            report.pending += len(due) + waiting
            existing = page_plan.existing(sub)
            if existing is not None:
                report.pending += existing.state == "pending"
                report.already += existing.state != "pending"
                continue
            papers = len(page_plan.would_hold(sub))
            if papers or settings.digest.send_empty:
                report.pending += 1
                log.info("event=digest.would_send subscriber=%s papers=%s", sub.id, papers)
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
            run.deliver(delivery_id)
        run.finish()
    except (FatalDeliveryError, ServerUnavailable) as exc:
        run.report.fatal = str(exc)
    finally:
        run.close()
        lock.release()
    return run.report
