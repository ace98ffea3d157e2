"""Delivery backends: SMTP (digests.smtp) and an outbox folder, behind one protocol.

The errors a backend raises (digests.smtp) say what becomes of the message: temporary (it
stays pending), permanent (failed), or fatal (the run stops).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from crawler.settings import EmailSettings
from digests.dkim_sign import DkimError, DkimSigner, load_private_key
from digests.mail import Addressed, DigestMail
from digests.smtp import Mail, SmtpBackend


class Backend(Protocol):
    name: str

    def prepare(self, msg: Mail) -> None:
        """Do the CPU work of turning ``msg`` into what :meth:`send` writes, ahead of it."""

    def send(self, msg: Mail, recipient: str) -> None:
        """Send one message: :meth:`start` then :meth:`finish`."""

    def start(self, msg: Mail, recipient: str, meanwhile: Callable[[], None] | None = None) -> None:
        """Begin sending ``msg`` without delivering it (SMTP: the envelope). ``meanwhile``
        is called once, while the server answers the first command (or before this raises,
        when none was sent); what it raises stops the message."""

    def finish(self, msg: Mail, recipient: str) -> None:
        """Deliver the message :meth:`start` began."""

    def reset(self) -> None:
        """Abandon the message :meth:`start` began: nothing of it is delivered."""

    def ready(self) -> bool:
        """Whether :meth:`start` would begin at once (no connection to open, no pause)."""

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

    def start(self, msg: Mail, recipient: str, meanwhile: Callable[[], None] | None = None) -> None:
        if meanwhile is not None:  # nothing to open: finish() writes the files
            meanwhile()

    def finish(self, msg: Mail, recipient: str) -> None:
        self.send(msg, recipient)

    def reset(self) -> None:
        pass

    def ready(self) -> bool:
        return True

    def send(self, msg: Mail, recipient: str) -> None:
        if isinstance(msg, DigestMail):
            msg = msg.message()
        elif isinstance(msg, Addressed):
            msg = msg.message  # a file has no envelope
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
