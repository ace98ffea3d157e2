"""The SMTP backend: one connection for many messages, each sent in two steps.

Errors are classified the way SMTP defines them (RFC 5321 4.2.1): 4yz is temporary (try again
later), 5yz is permanent (for that recipient). Losing the connection is temporary. A refused
login or sender affects every message, so it stops the run instead of failing each delivery;
so does a server that cannot be reached (refused, timed out, TLS failure) or keeps dropping
the connection: the message at hand stays pending and the rest wait for the next run, rather
than every subscriber paying a connect timeout.

A message is sent in two steps, :meth:`SmtpBackend.start` (MAIL FROM, RCPT TO) and
:meth:`SmtpBackend.finish` (DATA): nothing is delivered before the second, so a sender can
claim the message in its database while the server answers the first (digests.delivery).
"""

from __future__ import annotations

import contextlib
import functools
import smtplib
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import getaddresses
from types import TracebackType

from crawler.settings import EmailSettings
from digests.dkim_sign import DkimSigner
from digests.mail import Addressed, DigestMail, data_block, flatten

#: What a backend sends: a digest (written the fast way), or any other message, with an
#: envelope sender of its own (Addressed) or the From's address.
Mail = EmailMessage | DigestMail | Addressed


class TemporaryFailure(Exception):
    """This message could not be sent now; it stays pending for a later run."""


class ServerUnavailable(TemporaryFailure):
    """The server cannot be reached or keeps dropping us: this message waits, the run stops."""


class PermanentFailure(Exception):
    """The server refused this message for good; the delivery is marked failed."""


class FatalDeliveryError(Exception):
    """Nothing can be sent this run (login refused, sender refused, server unreachable)."""


class SmtpBackend:
    """Send over one SMTP connection, reconnecting once when the server drops it."""

    name = "smtp"
    #: Connection-level failures in a row (timeouts, drops) after which the run stops.
    MAX_LOST_IN_A_ROW = 3

    def __init__(
        self,
        settings: EmailSettings,
        password: str | None,
        *,
        signer: DkimSigner | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cfg = settings.smtp
        self.password = password
        #: Signs every message (DKIM) as it is flattened; a digest once, in :meth:`prepare`.
        self.sign = signer.sign if signer is not None else None
        self.conn: smtplib.SMTP | None = None
        self.per_minute = self.cfg.rate_per_minute
        self._clock = clock
        self._sleep = sleep
        self._next_slot = 0.0
        self._lost_in_a_row = 0
        #: The message being sent (not a digest) and its DATA block (see :meth:`_block`).
        self._at_hand: tuple[Mail, str, bytes, int] | None = None
        self._reconnected = False

    def _connect(self) -> smtplib.SMTP:
        cfg = self.cfg
        if cfg.username and not self.password:
            raise FatalDeliveryError(
                f"SMTP user {cfg.username!r} is configured but LITWATCH_SMTP_PASSWORD is not set"
            )
        where = f"{cfg.host}:{cfg.port}"
        conn = self._open()
        try:
            if cfg.username:
                conn.login(cfg.username, self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            conn.close()
            # The server's text is left out: some echo the credentials back.
            raise FatalDeliveryError(
                f"SMTP login refused for user {cfg.username!r} at {where}: {exc.smtp_code}"
            ) from None
        except smtplib.SMTPServerDisconnected as exc:
            conn.close()
            raise ServerUnavailable(f"SMTP server {where} hung up during login: {exc}") from None
        except smtplib.SMTPException as exc:  # AUTH not offered, no common mechanism
            conn.close()
            raise FatalDeliveryError(f"SMTP login at {where} failed: {_reason(exc)}") from None
        except OSError as exc:  # SMTPException is an OSError: it must be caught first
            conn.close()
            raise ServerUnavailable(f"SMTP server {where} lost during login: {exc}") from None
        return conn

    def _open(self) -> smtplib.SMTP:
        """Connect and secure the channel; ServerUnavailable or FatalDeliveryError."""
        cfg = self.cfg
        where = f"{cfg.host}:{cfg.port}"
        timeout = cfg.timeout.total_seconds()
        context = ssl.create_default_context(cafile=cfg.ca_file or None)
        try:
            if cfg.ssl:
                return smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=timeout, context=context)
            conn = smtplib.SMTP(cfg.host, cfg.port, timeout=timeout)
        except OSError as exc:  # refused, timed out, no greeting, TLS failure
            raise ServerUnavailable(
                f"cannot connect to SMTP server {where}: {_reason(exc)}"
            ) from None
        try:
            if cfg.starttls:
                conn.starttls(context=context)
        except smtplib.SMTPNotSupportedError:
            conn.close()
            raise FatalDeliveryError(f"SMTP server {where} does not offer STARTTLS") from None
        except OSError as exc:  # a refused certificate, a reply other than 220
            conn.close()
            raise ServerUnavailable(f"STARTTLS with {where} failed: {_reason(exc)}") from None
        return conn

    def _pace(self) -> None:
        # Spread messages evenly (60/rate seconds apart) rather than in bursts: relays that
        # limit a rate usually count over short windows too.
        if not self.per_minute:
            return
        now = self._clock()
        if self._next_slot > now:
            self._sleep(self._next_slot - now)
            now = self._next_slot
        self._next_slot = now + 60.0 / self.per_minute

    def prepare(self, msg: Mail) -> None:
        if isinstance(msg, DigestMail):
            msg.data_block(self.sign)  # built (and signed) once and kept: finish() writes it

    def send(self, msg: Mail, recipient: str) -> None:
        """Send one message; TemporaryFailure, PermanentFailure or FatalDeliveryError."""
        self.start(msg, recipient)
        self.finish(msg, recipient)

    def start(self, msg: Mail, recipient: str, meanwhile: Callable[[], None] | None = None) -> None:
        """Open the message's transaction: MAIL FROM and RCPT TO. Nothing is delivered until
        :meth:`finish`; :meth:`reset` abandons it. Raises as :meth:`send` does.

        ``meanwhile`` runs once, between sending MAIL FROM and reading the server's answer
        (the answer is still awaited before the next command: this is not pipelining), or,
        when the connection failed before that, before this raises.
        """
        self._pace()
        self._reconnected = False  # one reconnection per message, over both steps
        once = _Once(meanwhile)
        envelope = functools.partial(self._envelope, msg=msg, recipient=recipient, once=once)
        try:
            self._attempt(envelope, envelope, done=False)
        except _Interrupted:  # what ``meanwhile`` raised, never taken for an SMTP failure
            assert once.error is not None
            raise once.error from None
        except BaseException:
            once()  # the connection failed before MAIL FROM went out: now
            raise
        once()

    def ready(self) -> bool:
        """Whether :meth:`start` would send MAIL FROM at once: connected, no pause due."""
        return self.conn is not None and (not self.per_minute or self._next_slot <= self._clock())

    def finish(self, msg: Mail, recipient: str) -> None:
        """Send the started message's DATA: delivered once this returns. A connection dropped
        here is reopened and the whole message sent once more (see :meth:`_attempt`)."""

        def again(conn: smtplib.SMTP) -> None:
            self._envelope(conn, msg, recipient)
            self._data(conn, msg, recipient)

        self._attempt(functools.partial(self._data, msg=msg, recipient=recipient), again, done=True)
        self._at_hand = None

    def reset(self) -> None:
        """Abandon the started transaction (RSET); a connection that fails is dropped."""
        if self.conn is not None:
            try:
                self.conn.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()

    def _attempt(
        self,
        first: Callable[[smtplib.SMTP], None],
        again: Callable[[smtplib.SMTP], None],
        *,
        done: bool,
    ) -> None:
        """Run ``first`` on the connection (opened if need be); when the server drops it, open
        a new one and run ``again``, once per message (see :meth:`start`). ``done``: this
        completes a message."""
        step = first
        while True:
            if self.conn is None:
                self.conn = self._connect()
            try:
                step(self.conn)
            except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
                # Dropped (a restart, an idle limit): reconnect and try once more. Whether
                # the server kept the message is unknowable; the stable Message-ID lets the
                # receiver drop a repeat. A timeout is not retried at once: the server may
                # still be busy taking the message (smtplib reports it as a disconnect).
                self._drop()
                if self._reconnected or _timed_out(exc):
                    raise self._lost(f"connection lost: {_reason(exc)}") from None
                self._reconnected = True
                step = again
                continue
            except smtplib.SMTPException as exc:  # an OSError too: caught before those
                raise self._refused(exc) from None
            except OSError as exc:  # a timeout or a TLS failure: not retried at once
                self._drop()
                raise self._lost(f"connection failed: {_reason(exc)}") from None
            if done:
                self._lost_in_a_row = 0
            return

    def _envelope(
        self, conn: smtplib.SMTP, msg: Mail, recipient: str, once: _Once | None = None
    ) -> None:
        """MAIL FROM and RCPT TO, as ``sendmail`` sends them (SIZE when offered); ``once``
        runs while the server answers MAIL FROM (see :meth:`start`).

        The SMTPUTF8 rule (RFC 6531) is ``send_message``'s: an address that is not ASCII
        needs the extension, and then the headers go out in UTF-8 instead of encoded words.
        """
        sender = _envelope_sender(msg)
        conn.ehlo_or_helo_if_needed()
        options: list[str] = []
        if not (sender + recipient).isascii():
            if not conn.has_extn("smtputf8"):
                raise smtplib.SMTPNotSupportedError(
                    "One or more source or delivery addresses require"
                    " internationalized email support, but the server"
                    " does not advertise the required SMTPUTF8 capability"
                )
            options = ["SMTPUTF8", "BODY=8BITMIME"]
        if conn.does_esmtp and conn.has_extn("size"):
            options.insert(0, f"SIZE={self._size(msg, recipient)}")
        if options and conn.does_esmtp:
            if "SMTPUTF8" in options:
                conn.command_encoding = "utf-8"
            conn.putcmd("mail", f"FROM:{smtplib.quoteaddr(sender)} {' '.join(options)}")
        else:
            conn.putcmd("mail", f"FROM:{smtplib.quoteaddr(sender)}")
        if once is not None:
            try:
                once()
            except BaseException:
                self._drop()  # the answer is never read: this connection is done
                raise _Interrupted from None
        code, reply = conn.getreply()
        if code != 250:
            self._abandon(conn, code)
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        code, reply = conn.rcpt(recipient)
        if code not in (250, 251):
            self._abandon(conn, code)
            raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})

    def _data(self, conn: smtplib.SMTP, msg: Mail, recipient: str) -> None:
        """DATA and the message (flattened, signed and dot-stuffed once, see :meth:`_block`)."""
        conn.putcmd("data")
        code, reply = conn.getreply()
        if code == 354:
            conn.send(self._block(msg, recipient))
            code, reply = conn.getreply()
        if code != 250:
            self._abandon(conn, code)
            raise smtplib.SMTPDataError(code, reply)

    def _block(self, msg: Mail, recipient: str) -> bytes:
        """The DATA block of ``msg``, built (and signed) once: a digest keeps its own, any
        other message's is kept here for the message at hand. Headers go out in UTF-8 when
        an address is not ASCII (SMTPUTF8), as ``send_message`` writes them."""
        if isinstance(msg, DigestMail):
            return msg.data_block(self.sign)
        return self._other(msg, recipient)[2]

    def _size(self, msg: Mail, recipient: str) -> int:
        """The message's size for MAIL FROM's SIZE (RFC 1870): before dot-stuffing."""
        if isinstance(msg, DigestMail):
            return len(msg.wire(self.sign))
        return self._other(msg, recipient)[3]

    def _other(self, msg: EmailMessage | Addressed, recipient: str) -> tuple[Mail, str, bytes, int]:
        at_hand = self._at_hand
        if at_hand is not None and at_hand[0] is msg and at_hand[1] == recipient:
            return at_hand
        utf8 = not (_envelope_sender(msg) + recipient).isascii()
        data = flatten(msg.message if isinstance(msg, Addressed) else msg, utf8=utf8)
        data = self.sign(data) if self.sign is not None else data
        self._at_hand = (msg, recipient, data_block(data), len(data))
        return self._at_hand

    @staticmethod
    def _abandon(conn: smtplib.SMTP, code: int) -> None:
        """After a refusal: RSET, or close when the server is closing the channel (421)."""
        if code == 421:
            conn.close()
            return
        with contextlib.suppress(smtplib.SMTPServerDisconnected):  # the next command finds it
            conn.rset()

    def _lost(self, reason: str) -> TemporaryFailure:
        self._lost_in_a_row += 1
        if self._lost_in_a_row >= self.MAX_LOST_IN_A_ROW:
            return ServerUnavailable(
                f"SMTP server {self.cfg.host}:{self.cfg.port} failed "
                f"{self._lost_in_a_row} times in a row: {reason}"
            )
        return TemporaryFailure(reason)

    def _refused(self, exc: smtplib.SMTPException) -> Exception:
        """Classify an SMTP reply that refused the message (the connection is still up)."""
        self._lost_in_a_row = 0
        text: bytes | str
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, text = next(iter(exc.recipients.values()))
        elif isinstance(exc, smtplib.SMTPSenderRefused):
            code, text = exc.smtp_code, exc.smtp_error
            if code >= 500:
                return FatalDeliveryError(f"SMTP server refused the sender: {code} {_text(text)}")
        elif isinstance(exc, smtplib.SMTPResponseException):
            code, text = exc.smtp_code, exc.smtp_error
        elif isinstance(exc, smtplib.SMTPNotSupportedError):
            # An address that needs SMTPUTF8 (RFC 6531) and a server that lacks it: this
            # server will never take this message, the connection is fine for the others.
            return PermanentFailure(f"not sent: {_reason(exc)}")
        else:
            self._drop()
            return TemporaryFailure(f"SMTP error: {_reason(exc)}")
        if code == 421:  # RFC 5321 4.2.2: the server is closing the channel
            self._drop()
        return _classified(code, text)

    def _drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None

    def close(self) -> None:
        """Say QUIT politely; never raises."""
        if self.conn is not None:
            try:
                self.conn.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                self.conn = None

    def __enter__(self) -> SmtpBackend:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Interrupted(Exception):
    """``meanwhile`` raised (:meth:`SmtpBackend.start` raises what it raised)."""


class _Once:
    """Call a function (or nothing) the first time this is called, never again; what it
    raised is kept in :attr:`error`."""

    def __init__(self, fn: Callable[[], None] | None) -> None:
        self.fn = fn
        self.error: BaseException | None = None

    def __call__(self) -> None:
        fn, self.fn = self.fn, None
        if fn is not None:
            try:
                fn()
            except BaseException as exc:
                self.error = exc
                raise


def _envelope_sender(msg: Mail) -> str:
    """The MAIL FROM of ``msg``: its own (a digest's, an Addressed one's), else the address
    of the From header (the sender ``send_message`` would use)."""
    if isinstance(msg, DigestMail | Addressed):
        return msg.sender
    return getaddresses([str(msg["From"])])[0][1]


def _text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())[:300]


def _classified(code: int, text: bytes | str) -> Exception:
    message = f"{code} {_text(text)}"
    if 500 <= code < 600:
        return PermanentFailure(message)
    return TemporaryFailure(message)


def _timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised while handling, a socket timeout."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reason(exc: BaseException) -> str:
    return str(exc) or exc.__class__.__name__
