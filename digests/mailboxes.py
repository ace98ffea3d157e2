"""Where returned mail is read from: a Maildir folder, an mbox file, an IMAP mailbox.

Every reader only reads: nothing is moved, flagged or deleted (the IMAP folder is opened
read-only and fetched with ``BODY.PEEK[]``), so mail that is not a bounce stays where it was
and a rerun sees the same messages (the bounce table tells which were processed).
"""

from __future__ import annotations

import contextlib
import imaplib
import mailbox
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

IMAP_PASSWORD_ENV = "LITWATCH_IMAP_PASSWORD"  # noqa: S105 - the variable's name


class MailboxError(Exception):
    """The mailbox cannot be read; the message names it and why."""


def iter_maildir(path: str | Path) -> Iterator[bytes]:
    """The messages of the Maildir at ``path`` (``new`` and ``cur``), as bytes."""
    folder = Path(path)
    if not (folder / "cur").is_dir() and not (folder / "new").is_dir():
        raise MailboxError(f"{folder}: not a Maildir (no cur/ or new/ folder)")
    box = mailbox.Maildir(folder, factory=None, create=False)
    for key in sorted(box.keys()):
        try:
            yield box.get_bytes(key)
        except (KeyError, FileNotFoundError):
            continue  # delivered elsewhere meanwhile (another reader moved it)


def iter_mbox(path: str | Path) -> Iterator[bytes]:
    """The messages of the mbox file at ``path``, as bytes."""
    file = Path(path)
    if not file.is_file():
        raise MailboxError(f"{file}: no such mbox file")
    box = mailbox.mbox(file, factory=None, create=False)
    try:
        for key in box.iterkeys():
            yield box.get_bytes(key)
    finally:
        box.close()


def iter_imap(
    host: str,
    port: int,
    user: str,
    folder: str,
    *,
    context: ssl.SSLContext | None = None,
    ca_file: str = "",
) -> Iterator[bytes]:
    """The messages of an IMAP folder over TLS (the password from LITWATCH_IMAP_PASSWORD).

    The server's certificate is verified against the system's CAs, or ``ca_file`` when given.
    """
    password = os.environ.get(IMAP_PASSWORD_ENV, "")
    try:
        context = context or ssl.create_default_context(cafile=ca_file or None)
    except OSError as exc:
        raise MailboxError(f"IMAP {host}:{port}: cannot read imap_ca_file: {exc}") from None
    try:
        conn = imaplib.IMAP4_SSL(host, port, ssl_context=context)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"IMAP {host}:{port}: cannot connect: {exc}") from None
    try:
        try:
            conn.login(user, password)
            status, _ = conn.select(folder, readonly=True)
        except imaplib.IMAP4.error as exc:
            raise MailboxError(f"IMAP {user}@{host}: {exc}") from None
        if status != "OK":
            raise MailboxError(f"IMAP {user}@{host}: cannot open folder {folder!r}")
        _, data = conn.uid("SEARCH", "ALL")
        for uid in (data[0] or b"").split():
            _, parts = conn.uid("FETCH", uid.decode("ascii"), "(BODY.PEEK[])")
            for part in parts:
                if isinstance(part, tuple) and len(part) == 2:
                    yield bytes(part[1])
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            conn.logout()
