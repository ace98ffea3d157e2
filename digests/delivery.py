"""Deliver planned digests and record each outcome the moment it is known.

A :class:`Sender` owns the backend (one SMTP connection for the run) and a thread of its own:
while the server takes one message, the caller plans and renders the next. At most ``depth``
prepared messages wait for the thread; their rows are already planned (pending), so whatever
a crash or a fatal error leaves untried is sent by the next run with the same content and
Message-ID.

Each message is *claimed* in a commit of its own before its content is handed to the server
(state ``sending``, the attempt counted; it is made while the server answers the message's
MAIL FROM, since a transaction without DATA delivers nothing), and its outcome
(sent, refused, deferred) is recorded as soon as the server has answered: on its own, or in
the next message's claim when that one already waits. A claim that no outcome followed (the
process was killed, or the database refused the record) means the outcome is unknown: the
server may have taken the message. Such a delivery is never resent blindly;
:func:`settle_unknown` (run under the send lock, so no sender holds a claim) marks it
``unknown`` for good, or, when the operator chose ``[email] on_unknown = "resend_once"``,
``resend``: due once more, with the same Message-ID, ``resend_after`` after the first try.
A stale claim of that one resend is ``unknown`` for good.
"""

from __future__ import annotations

import functools
import logging
import queue
import sys
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import cast

from sqlalchemy import Engine, Table, Update, bindparam, update

from crawler.db.models import Delivery, utcnow
from digests.backends import Backend
from digests.mail import DigestMail
from digests.report import SendReport
from digests.smtp import FatalDeliveryError, PermanentFailure, ServerUnavailable, TemporaryFailure

log = logging.getLogger("litwatch.digest")

#: Waits before retrying a temporary failure: 5 min, 10, 20, ... capped at 6 h.
RETRY_BASE = timedelta(minutes=5)
RETRY_MAX = timedelta(hours=6)
#: A delivery that failed temporarily this many times is given up (marked failed).
MAX_ATTEMPTS = 10
#: The interpreter's thread switch interval while a Sender runs (seconds; default 0.005).
SWITCH_INTERVAL = 0.0005

#: Delivery states. Due: PENDING, RESEND. Claimed by a sender: SENDING, RESENDING.
#: Final: SENT, FAILED (refused, or given up), UNKNOWN (handed over, outcome never recorded).
PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
RESEND, RESENDING, UNKNOWN = "resend", "resending", "unknown"
DUE_STATES = (PENDING, RESEND)


def backoff(attempts: int) -> timedelta:
    return min(RETRY_BASE * (2 ** max(attempts - 1, 0)), RETRY_MAX)


@dataclass(frozen=True)
class Outgoing:
    """A planned delivery rendered and ready for the wire."""

    delivery_id: int
    subscriber_id: int
    email: str
    period: date
    paper_count: int
    #: Attempts before this one.
    attempts: int
    mail: DigestMail
    #: The state it is claimed from (pending, resend, or failed for ``--retry-failed``),
    #: and when it was due: both restored when nothing could be tried.
    state: str = PENDING
    due: datetime | None = None


_DELIVERIES = cast(Table, Delivery.__table__)


def record(engine: Engine, delivery_id: int, **values: object) -> None:
    """One UPDATE of the delivery in its own commit: the exactly-once rule needs the commit."""
    with engine.begin() as conn:
        conn.execute(_update_for(tuple(sorted(values))), {"delivery_id": delivery_id, **values})


def record_and_claim(
    engine: Engine, sent: dict[str, object] | None, job: Outgoing, until: datetime
) -> bool:
    """Claim ``job``: mark it as being sent and count the attempt, in one commit made before
    its DATA goes to the server; False when its row is no longer in the state it was read in.

    ``sent`` (the values and ``delivery_id`` of :func:`record`), the outcome of the message
    before it, is recorded in the same commit: each keeps its own guarantee with half the
    commits. ``until`` is kept in ``next_attempt_at``: the earliest moment a resend may
    happen if the outcome is never recorded (see :func:`settle_unknown`).
    """
    with engine.begin() as conn:
        if sent is not None:
            conn.execute(_update_for(tuple(sorted(k for k in sent if k != "delivery_id"))), sent)
        result = conn.execute(
            _CLAIM,
            {
                "delivery_id": job.delivery_id,
                "from_state": job.state,
                "state": RESENDING if job.state == RESEND else SENDING,
                "attempts": job.attempts + 1,
                "next_attempt_at": until,
            },
        )
    return result.rowcount == 1


def settle_unknown(engine: Engine, policy: str) -> int:
    """Resolve the claims no sender holds any more (call with the send lock held).

    A ``sending`` row becomes ``unknown`` (policy "skip": at most once) or ``resend`` (policy
    "resend_once": due again at its ``next_attempt_at``, the claim time plus the delay); a
    ``resending`` row, the one resend already tried, becomes ``unknown``. Returns how many
    became ``unknown``.
    """
    first = RESEND if policy == "resend_once" else UNKNOWN
    note = "outcome unknown: handed to the server, but no answer was recorded"
    with engine.begin() as conn:
        resent = conn.execute(_SETTLE, {"old": RESENDING, "new": UNKNOWN, "note": note}).rowcount
        claimed = conn.execute(_SETTLE, {"old": SENDING, "new": first, "note": note}).rowcount
    unknown = resent + (claimed if first == UNKNOWN else 0)
    if claimed or resent:
        log.warning(
            "event=digest.unknown_outcome claims=%s unknown=%s resend=%s policy=%s",
            claimed + resent,
            unknown,
            claimed if first == RESEND else 0,
            policy,
        )
    return unknown


_CLAIM = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.id == bindparam("delivery_id"),
        _DELIVERIES.c.state == bindparam("from_state"),
    )
    .values(
        state=bindparam("state"),
        attempts=bindparam("attempts"),
        next_attempt_at=bindparam("next_attempt_at"),
    )
)
_SETTLE = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.state == bindparam("old"))
    .values(state=bindparam("new"), last_error=bindparam("note"))
)


@functools.cache
def _update_for(columns: tuple[str, ...]) -> Update:
    """``UPDATE deliveries SET <columns> WHERE id = :delivery_id``, built (and compiled) once."""
    return (
        update(_DELIVERIES)
        .where(_DELIVERIES.c.id == bindparam("delivery_id"))
        .values({name: bindparam(name) for name in columns})
    )


class Sender:
    """Send :class:`Outgoing` messages on a thread, in order, recording each outcome.

    ``submit`` blocks while ``depth`` messages already wait. A failure that stops the run
    (login or sender refused, server unreachable) is kept in :attr:`stopped`; the messages
    still queued behind it are left pending, and ``submit`` raises it to the caller. Any
    other error on the thread (the database refusing the record) is raised the same way.
    """

    def __init__(
        self,
        engine: Engine,
        backend: Backend,
        report: SendReport,
        now: datetime,
        *,
        depth: int = 1,
        resend_after: timedelta = timedelta(hours=1),
    ) -> None:
        self.engine = engine
        self.backend = backend
        self.report = report
        self.now = now
        self.resend_after = resend_after
        self._queue: queue.Queue[Outgoing | None] = queue.Queue(maxsize=depth)
        self.stopped: BaseException | None = None
        self._raised = False
        self._closed = False
        self._accepted = False
        #: The record of the message just sent, when the next one already waits: committed
        #: with that one's claim (:meth:`_deliver`), else on its own at the end.
        self._unrecorded: dict[str, object] | None = None
        # The thread waits on the server four times per message; when an answer arrives it
        # must get the interpreter back from the planning thread at once, not after the
        # default 5 ms switch interval (which cost more than the exchange itself).
        self._interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._interval, SWITCH_INTERVAL))
        self._thread = threading.Thread(target=self._work, name="litwatch-send", daemon=True)
        self._thread.start()

    def submit(self, job: Outgoing) -> None:
        """Queue ``job`` for sending; raise what stopped the sender, if anything did."""
        if self.stopped is not None:
            self.report.add(pending=1)  # planned, left for the next run
            self._raise()
        self._queue.put(job)
        if not self._accepted:
            # Until the server has taken one message, wait for each: a server that cannot
            # be reached or refuses the login stops the run before more is planned.
            self._queue.join()
        if self.stopped is not None:
            self._raise()

    def finish(self) -> None:
        """Send what is queued, close the backend, and raise what stopped the sender."""
        self.close()
        if self.stopped is not None and not self._raised:
            self._raise()

    def close(self) -> None:
        """Send what is queued and close the backend; never raises (see :meth:`finish`)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
            sys.setswitchinterval(self._interval)

    def _raise(self) -> None:
        assert self.stopped is not None
        self._raised = True
        raise self.stopped

    # ---------------------------------------------------------------- on the sender's thread

    def _work(self) -> None:
        try:
            while (job := self._queue.get()) is not None:
                try:
                    if self.stopped is not None:
                        self.report.add(pending=1)  # planned, left for the next run
                    else:
                        self._deliver(job)
                except BaseException as exc:  # kept for the caller's thread, which raises it
                    self.stopped = exc
                finally:
                    self._queue.task_done()
        finally:
            try:
                if self._unrecorded is not None:  # the last message: recorded on its own
                    record(self.engine, **self._unrecorded)  # type: ignore[arg-type]
            except BaseException as exc:
                self.stopped = self.stopped or exc
            finally:
                self._unrecorded = None
                self.backend.close()

    def _deliver(self, job: Outgoing) -> None:
        """Send one message and record the outcome at once (see the module docstring).

        Its claim is committed (with the previous message's record, when that waited for it)
        while the server answers its MAIL FROM: nothing is delivered before DATA, which comes
        after the claim. ServerUnavailable and FatalDeliveryError propagate (after recording
        this delivery as still due) because they stop the run.
        """
        attempts = job.attempts + 1
        sent, self._unrecorded = self._unrecorded, None
        claimed = False

        def claim() -> None:
            nonlocal claimed
            claimed = record_and_claim(self.engine, sent, job, self.now + self.resend_after)

        early: Exception | None = None
        try:
            self.backend.start(job.mail, job.email, claim)  # a database error stops the run
        except (PermanentFailure, TemporaryFailure, FatalDeliveryError) as exc:
            early = exc  # handled below, once the claim says whether the message is ours
        if not claimed:
            self.report.add(already=1)  # changed since it was read: not ours to send
            if early is None:
                self.backend.reset()
            elif isinstance(early, (ServerUnavailable, FatalDeliveryError)):
                raise early
            return
        try:
            if early is not None:
                raise early
            self.backend.finish(job.mail, job.email)
        except PermanentFailure as exc:
            self._refused(job, attempts, str(exc))
            return
        except TemporaryFailure as exc:
            self._deferred(job, attempts, str(exc))
            if isinstance(exc, ServerUnavailable):
                raise
            return
        except FatalDeliveryError as exc:
            # Nothing was handed over (login or sender refused): release the claim as it was.
            record(
                self.engine,
                job.delivery_id,
                state=job.state,
                attempts=job.attempts,
                next_attempt_at=job.due,
                last_error=str(exc),
            )
            self.report.add(pending=int(job.state != FAILED), failed=int(job.state == FAILED))
            raise
        # Accepted by the server: recorded now, or with the next message's claim when that
        # message is already waiting (one commit, made while its MAIL FROM is answered).
        self._accepted = True
        self.report.add(sent=1)
        log.info(
            "event=digest.sent subscriber=%s period=%s papers=%s",
            job.subscriber_id,
            job.period,
            job.paper_count,
        )
        outcome: dict[str, object] = {
            "delivery_id": job.delivery_id,
            "state": SENT,
            "attempts": attempts,
            "sent_at": utcnow(),
            "last_error": None,
            "next_attempt_at": None,
        }
        with self._queue.mutex:  # this thread alone takes from the queue: a job seen stays
            ready = bool(self._queue.queue) and self._queue.queue[0] is not None
        # Held for the next claim only when that comes at once: not across a rate-limit
        # pause or a reconnection, which would leave this message in doubt meanwhile.
        if ready and self.backend.ready():
            self._unrecorded = outcome
        else:
            record(self.engine, **outcome)  # type: ignore[arg-type]

    def _refused(self, job: Outgoing, attempts: int, error: str) -> None:
        record(self.engine, job.delivery_id, state=FAILED, attempts=attempts, last_error=error)
        self.report.add(failed=1, error=f"{job.email}: refused: {error}")
        log.warning(
            "event=digest.refused subscriber=%s period=%s error=%r",
            job.subscriber_id,
            job.period,
            error,
        )

    def _deferred(self, job: Outgoing, attempts: int, error: str) -> None:
        # A deferred resend stays the one resend its policy allows (RESEND, not PENDING).
        again = RESEND if job.state == RESEND else PENDING
        state = FAILED if attempts >= MAX_ATTEMPTS else again
        record(
            self.engine,
            job.delivery_id,
            state=state,
            attempts=attempts,
            last_error=error,
            next_attempt_at=self.now + backoff(attempts),
        )
        what = "gave up after repeated temporary failures" if state == FAILED else "deferred"
        self.report.add(
            pending=int(state != FAILED),
            failed=int(state == FAILED),
            error=f"{job.email}: {what}: {error}",
        )
        log.warning(
            "event=digest.deferred subscriber=%s period=%s attempts=%s error=%r",
            job.subscriber_id,
            job.period,
            attempts,
            error,
        )
