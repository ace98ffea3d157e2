"""Delivery backends: SMTP (one connection for many messages) and an outbox folder.

Errors are classified the way SMTP defines them (RFC 5321 4.2.1): 4yz is temporary (try again
later), 5yz is permanent (for that recipient). Losing the connection is temporary. A refused
login or sender affects every message, so it stops the run instead of failing each delivery.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import time
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Protocol

from crawler.settings import EmailSettings


class TemporaryFailure(Exception):
    """This message could not be sent now; it stays pending for a later run."""


class PermanentFailure(Exception):
    """The server refused this message for good; the delivery is marked failed."""


class FatalDeliveryError(Exception):
    """Nothing can be sent this run (login refused, sender refused, server unreachable)."""


class Backend(Protocol):
    name: str

    def send(self, msg: EmailMessage, recipient: str) -> None: ...

    def close(self) -> None: ...


class FileBackend:
    """Write each message as ``.eml`` (and its HTML part as ``.html``) into a folder."""

    name = "file"

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self.outbox.mkdir(parents=True, exist_ok=True)

    def send(self, msg: EmailMessage, recipient: str) -> None:
        stem = _file_stem(msg)
        _atomic_write(self.outbox / f"{stem}.eml", bytes(msg))
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

    def __init__(self, settings: EmailSettings, password: str | None) -> None:
        self.cfg = settings.smtp
        self.password = password
        self.conn: smtplib.SMTP | None = None
        self.per_minute = self.cfg.rate_per_minute
        self._sent_times: list[float] = []

    def _connect(self) -> smtplib.SMTP:
        cfg = self.cfg
        timeout = cfg.timeout.total_seconds()
        context = ssl.create_default_context(cafile=cfg.ca_file or None)
        try:
            if cfg.ssl:
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    cfg.host, cfg.port, timeout=timeout, context=context
                )
            else:
                conn = smtplib.SMTP(cfg.host, cfg.port, timeout=timeout)
                if cfg.starttls:
                    conn.starttls(context=context)
            if cfg.username:
                conn.login(cfg.username, self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise FatalDeliveryError(
                f"SMTP login refused for user {cfg.username!r}: {exc.smtp_code}"
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise FatalDeliveryError(f"SMTP server {cfg.host}:{cfg.port}: {exc}") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise FatalDeliveryError(
                f"cannot connect to SMTP server {cfg.host}:{cfg.port}: {_reason(exc)}"
            ) from None
        return conn

    def _pace(self) -> None:
        if not self.per_minute:
            return
        now = time.monotonic()
        self._sent_times = [t for t in self._sent_times if now - t < 60]
        if len(self._sent_times) >= self.per_minute:
            time.sleep(60 - (now - self._sent_times[0]))
        self._sent_times.append(time.monotonic())

    def send(self, msg: EmailMessage, recipient: str) -> None:
        self._pace()
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = self._connect()
            try:
                self.conn.send_message(msg, to_addrs=[recipient])
                return
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
                raise _classified(code, text) from None
            except smtplib.SMTPSenderRefused as exc:
                if 400 <= exc.smtp_code < 500:
                    raise TemporaryFailure(f"sender refused ({exc.smtp_code})") from None
                raise FatalDeliveryError(
                    f"SMTP server refused the sender: {exc.smtp_code} {_text(exc.smtp_error)}"
                ) from None
            except smtplib.SMTPDataError as exc:
                raise _classified(exc.smtp_code, exc.smtp_error) from None
            except (TimeoutError, smtplib.SMTPServerDisconnected, ConnectionError) as exc:
                self._drop()
                if attempt == 2:
                    raise TemporaryFailure(f"connection lost: {_reason(exc)}") from None
            except smtplib.SMTPResponseException as exc:
                self._drop()
                raise _classified(exc.smtp_code, exc.smtp_error) from None

    def _drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None

    def close(self) -> None:
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


def _text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())[:300]


def _classified(code: int, text: bytes | str) -> Exception:
    message = f"{code} {_text(text)}"
    if 500 <= code < 600:
        return PermanentFailure(message)
    return TemporaryFailure(message)


def _reason(exc: BaseException) -> str:
    return str(exc) or exc.__class__.__name__


def make_backend(settings: EmailSettings, password: str | None) -> Backend:
    if settings.backend == "smtp":
        return SmtpBackend(settings, password)
    return FileBackend(Path(settings.outbox_dir))
