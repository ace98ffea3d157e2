"""The two short e-mails of the sign-up: "confirm your address" and "already subscribed".

Headers hold only the configured sender, a fixed subject and the address that
email-validator accepted (it refuses line breaks), so nothing from the request can add a
header. Sent through the configured backend (file outbox or SMTP), one connection per mail,
never inside the request: a sign-up queues its mail (:func:`queue_mail`) and one background
thread per mail relay sends it, so a relay that stalls holds that thread only, never the
web server's threads (a stalled relay once froze /healthz and one-click unsubscribe).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from crawler.settings import Settings
from digests.backends import dkim_signer, make_backend
from digests.dkim_sign import DkimError
from digests.mail import check_sender, sender_domain
from digests.smtp import FatalDeliveryError, Mail, PermanentFailure, TemporaryFailure

log = logging.getLogger("litwatch.web")

CONFIRM_SUBJECT = "Confirm your litwatch subscription"
ALREADY_SUBJECT = "You are already subscribed to litwatch"


class MailUnavailable(Exception):
    """The mail could not be handed to the server now; the visitor should try again later."""


def confirmation_message(
    settings: Settings, to: str, link: str, hours: int, when: datetime
) -> EmailMessage:
    """The double opt-in mail with its signed, expiring confirmation link."""
    body = (
        "Someone, probably you, asked to receive the litwatch weekly digest of new research\n"
        "on fibromyalgia and autoimmunity at this address.\n\n"
        f"To confirm, open this link (it works for {hours} hours) and press the button:\n\n"
        f"{link}\n\n"
        "If you did not ask for this, ignore this message: nothing will be sent to you.\n"
    )
    return _message(settings, to, CONFIRM_SUBJECT, body, when)


def already_message(settings: Settings, to: str, preferences: str, when: datetime) -> EmailMessage:
    """The note for an address that is already subscribed (no second subscription)."""
    body = (
        "Someone, probably you, asked to subscribe this address to the litwatch weekly digest.\n"
        "It is already subscribed, so nothing has changed.\n\n"
        "To change your topics or format, or to unsubscribe, use this link:\n\n"
        f"{preferences}\n"
    )
    return _message(settings, to, ALREADY_SUBJECT, body, when)


def _message(settings: Settings, to: str, subject: str, body: str, when: datetime) -> EmailMessage:
    msg = EmailMessage()
    name, addr = check_sender(settings.email.from_)
    msg["From"] = Address(display_name=name, addr_spec=addr)
    local, _, domain = to.rpartition("@")
    msg["To"] = Address(username=local, domain=domain)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = make_msgid("litwatch.signup", domain=sender_domain(settings.email.from_))
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    msg.set_content(body, charset="utf-8", cte="quoted-printable")
    return msg


def send_mail(settings: Settings, msg: Mail, to: str) -> None:
    """Send one message now; MailUnavailable when the server cannot take it now.

    A permanent refusal of this recipient is only logged: the visitor sees the same page as
    for any address, so the answer never tells which addresses a server refuses.
    """
    try:  # DKIM-signed like every digest (RFC 6376), when [email.dkim] is set
        signer = dkim_signer(settings.email)
    except DkimError as exc:  # the key file: the operator's to fix; the visitor tries later
        log.error("event=web.mail_failed error=%r", str(exc))
        raise MailUnavailable(str(exc)) from None
    backend = make_backend(settings.email, settings.smtp_password, signer)
    try:
        backend.send(msg, to)
    except PermanentFailure as exc:
        log.warning("event=web.mail_refused error=%r", str(exc))
    except (TemporaryFailure, FatalDeliveryError, OSError) as exc:  # OSError: outbox folder
        log.error("event=web.mail_failed error=%r", str(exc))
        raise MailUnavailable(str(exc)) from None
    finally:
        backend.close()


class MailQueue:
    """Mails waiting for one relay, sent in due order by a thread of their own.

    A mail the relay cannot take now is tried again after each of :attr:`RETRY_AFTER`,
    then given up (logged). The queue lives in memory: mails not yet sent when the process
    stops are lost, and the visitor signs up again. It holds at most :attr:`MAX_WAITING`
    mails; beyond that :meth:`submit` raises MailUnavailable (the relay is far behind).
    """

    MAX_WAITING = 500
    RETRY_AFTER = (60.0, 300.0)
    #: The thread ends after this long without mail; the next one starts it again.
    IDLE_SECONDS = 30.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._heap: list[tuple[float, int, Mail, str, int]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._busy = False

    def submit(self, msg: Mail, to: str) -> None:
        """Queue ``msg`` for sending now; MailUnavailable when the queue is full."""
        with self._changed:
            if len(self._heap) >= self.MAX_WAITING:
                raise MailUnavailable(f"{len(self._heap)} mails wait for the mail server")
            self._push(time.monotonic(), msg, to, 0)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="litwatch-mail", daemon=True)
                self._thread.start()

    def drain(self, timeout: float) -> bool:
        """Wait until no mail is being sent or due now; False when ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._busy or (self._heap and self._heap[0][0] <= time.monotonic()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.05))
            return True

    def stop(self) -> None:
        """Drop what waits and let the thread end (after the mail it is sending)."""
        with self._changed:
            self._stopped = True
            self._heap.clear()
            self._changed.notify_all()

    def _push(self, due: float, msg: Mail, to: str, tries: int) -> None:
        heapq.heappush(self._heap, (due, next(self._order), msg, to, tries))
        self._changed.notify_all()

    def _run(self) -> None:
        while (job := self._next()) is not None:
            _, _, msg, to, tries = job
            try:
                send_mail(self.settings, msg, to)
            except MailUnavailable:
                self._retry(msg, to, tries)
            except Exception:  # the thread must go on for the other mails
                log.exception("event=web.mail_error")
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _retry(self, msg: Mail, to: str, tries: int) -> None:
        if tries >= len(self.RETRY_AFTER):
            log.error("event=web.mail_given_up tries=%s", tries + 1)
            return
        with self._changed:
            if not self._stopped:
                self._push(time.monotonic() + self.RETRY_AFTER[tries], msg, to, tries + 1)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def _next(self) -> tuple[float, int, Mail, str, int] | None:
        """The next due mail, waiting for it; None (and the thread ends) when idle or stopped."""
        with self._changed:
            while not self._stopped:
                if not self._heap:
                    self._changed.wait(self.IDLE_SECONDS)
                    if not self._heap:
                        break
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait <= 0:
                    self._busy = True
                    return heapq.heappop(self._heap)
                self._changed.wait(wait)
            self._thread = None
            return None


_QUEUES: dict[str, MailQueue] = {}
_QUEUES_LOCK = threading.Lock()


def queue_for(settings: Settings) -> MailQueue:
    """The queue of ``settings``' mail relay (one per distinct ``[email]`` configuration, so
    a stalled relay delays only its own mails)."""
    key = settings.email.model_dump_json()
    with _QUEUES_LOCK:
        queue = _QUEUES.get(key)
        if queue is None or queue.stopped:
            queue = _QUEUES[key] = MailQueue(settings)
        return queue


def queue_mail(settings: Settings, msg: Mail, to: str) -> None:
    """Hand ``msg`` to the background sender; MailUnavailable only when it is far behind."""
    queue_for(settings).submit(msg, to)


def drain_queues(timeout: float = 10.0) -> bool:
    """Wait until every queue has sent what is due now (tests, before their relay stops)."""
    with _QUEUES_LOCK:
        queues = list(_QUEUES.values())
    deadline = time.monotonic() + timeout
    return all(q.drain(max(0.0, deadline - time.monotonic())) for q in queues)


def stop_queues() -> None:
    """Drop every waiting mail and stop the senders (tests; a server shutting down)."""
    with _QUEUES_LOCK:
        queues = list(_QUEUES.values())
        _QUEUES.clear()
    for queue in queues:
        queue.stop()
