"""Delivery backends: SMTP (one connection for many messages) and an outbox folder.

Errors are classified the way SMTP defines them (RFC 5321 4.2.1): 4yz is temporary (try again
later), 5yz is permanent (for that recipient). Losing the connection is temporary. A refused
login or sender affects every message, so it stops the run instead of failing each delivery;
so does a server that cannot be reached (refused, timed out, TLS failure) or keeps dropping
the connection: the message at hand stays pending and the rest wait for the next run, rather
than every subscriber paying a connect timeout.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from types import TracebackType
from typing import Protocol

from crawler.settings import EmailSettings
from digests.dkim_sign import DkimError, DkimSigner, load_private_key
from digests.mail import DigestMail, flatten

#: What a backend sends: a digest (written the fast way) or any other message.
Mail = EmailMessage | DigestMail


class TemporaryFailure(Exception):
    """This message could not be sent now; it stays pending for a later run."""


class ServerUnavailable(TemporaryFailure):
    """The server cannot be reached or keeps dropping us: this message waits, the run stops."""


class PermanentFailure(Exception):
    """The server refused this message for good; the delivery is marked failed."""


class FatalDeliveryError(Exception):
    """Nothing can be sent this run (login refused, sender refused, server unreachable)."""


class Backend(Protocol):
    name: str

    def prepare(self, msg: Mail) -> None:
        """Do the CPU work of turning ``msg`` into what :meth:`send` writes, ahead of it."""

    def send(self, msg: Mail, recipient: str) -> None: ...

    def close(self) -> None: ...


class FileBackend:
    """Write each message as ``.eml`` (and its HTML part as ``.html``) into a folder."""

    name = "file"

    def __init__(self, outbox: Path, signer: DkimSigner | None = None) -> None:
        self.outbox = outbox
        self.outbox.mkdir(parents=True, exist_ok=True)
        self.signer = signer

    def prepare(self, msg: Mail) -> None:
        pass  # writing a file is the work

    def send(self, msg: Mail, recipient: str) -> None:
        if isinstance(msg, DigestMail):
            msg = msg.message()
        stem = _file_stem(msg)
        data = bytes(msg)
        _atomic_write(self.outbox / f"{stem}.eml", self.signer.sign(data) if self.signer else data)
        part = msg.get_body(preferencelist=("html",))
        if part is not None and part.get_content_type() == "text/html":
            _atomic_write(self.outbox / f"{stem}.html", part.get_content().encode("utf-8"))

    def close(self) -> None:
        pass


def _file_stem(msg: EmailMessage) -> str:
    raw = str(msg["Message-ID"] or "message").strip("<>")
    return "".join(ch if ch.isalnum() or ch in "._-@" else "_" for ch in raw)[:200]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
            msg.wire(self.sign)  # built (and signed) once and kept: send() writes the same bytes

    def send(self, msg: Mail, recipient: str) -> None:
        """Send one message; TemporaryFailure, PermanentFailure or FatalDeliveryError."""
        self._pace()
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = self._connect()
            try:
                self._transmit(self.conn, msg, recipient)
            except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
                # Dropped (a restart, an idle limit): reconnect and try once more. Whether
                # the server kept the message is unknowable; the stable Message-ID lets the
                # receiver drop a repeat. A timeout is not retried at once: the server may
                # still be busy taking the message (smtplib reports it as a disconnect).
                self._drop()
                if attempt == 2 or _timed_out(exc):
                    raise self._lost(f"connection lost: {_reason(exc)}") from None
                continue
            except smtplib.SMTPException as exc:  # an OSError too: caught before those
                raise self._refused(exc) from None
            except OSError as exc:  # a timeout or a TLS failure: not retried at once
                self._drop()
                raise self._lost(f"connection failed: {_reason(exc)}") from None
            self._lost_in_a_row = 0
            return

    def _transmit(self, conn: smtplib.SMTP, msg: Mail, recipient: str) -> None:
        """Flatten ``msg`` once and hand the bytes to ``sendmail``.

        ``send_message`` would copy the message and flatten it again; the envelope and the
        SMTPUTF8 rule (RFC 6531) are the same as there: an address that is not ASCII needs
        the extension, and then the headers go out in UTF-8 instead of encoded words.
        """
        sender = msg.sender if isinstance(msg, DigestMail) else _envelope_sender(msg)
        options: list[str] = []
        if not (sender + recipient).isascii():
            conn.ehlo_or_helo_if_needed()  # has_extn only knows after EHLO
            if not conn.has_extn("smtputf8"):
                raise smtplib.SMTPNotSupportedError(
                    "One or more source or delivery addresses require"
                    " internationalized email support, but the server"
                    " does not advertise the required SMTPUTF8 capability"
                )
            options = ["SMTPUTF8", "BODY=8BITMIME"]
        if isinstance(msg, DigestMail):
            data = msg.wire(self.sign)
        else:
            data = flatten(msg, utf8=bool(options))
            data = self.sign(data) if self.sign is not None else data
        conn.sendmail(sender, [recipient], data, options)

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


def _envelope_sender(msg: EmailMessage) -> str:
    """The address of the From header (the sender send_message would use)."""
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


def ensure_outbox(settings: EmailSettings) -> Path:
    """Create the file backend's folder (a send with nothing to send still leaves it)."""
    outbox = Path(settings.outbox_dir)
    outbox.mkdir(parents=True, exist_ok=True)
    return outbox


def dkim_signer(settings: EmailSettings) -> DkimSigner | None:
    """The DKIM signer of ``[email.dkim]`` (None when no domain is set); DkimError, one line,
    for a key file that is missing or unusable or a selector that is missing."""
    cfg = settings.dkim
    if not cfg.domain:
        return None
    if not cfg.selector or not cfg.key_file:
        raise DkimError("[email.dkim] domain is set: selector and key_file are needed too")
    return DkimSigner(cfg.domain, cfg.selector, load_private_key(cfg.key_file))


def make_backend(
    settings: EmailSettings, password: str | None, signer: DkimSigner | None = None
) -> Backend:
    """The configured backend; ``signer`` DKIM-signs what it sends (see :func:`dkim_signer`)."""
    if settings.backend == "smtp":
        return SmtpBackend(settings, password, signer=signer)
    return FileBackend(ensure_outbox(settings), signer)
