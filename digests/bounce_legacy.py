"""Bounces that are not RFC 3464 reports: qmail, Exim, and X-Failed-Recipients notices.

Deliberately narrow. A notice is only read as a bounce when it comes from a mail system
(MAILER-DAEMON, postmaster, or a null return path) AND has one of the known shapes; anything
else is left for the caller to call ``not_bounce``. A human reply that quotes a bounce must
never unsubscribe anyone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from digests import bounce_mime
from digests.bounce_report import Kind, clean_address, find_status, one_line, status_kind

#: Local parts that mail systems send notices from (RFC 5321 4.5.5 null path aside).
DAEMON_LOCAL_PARTS = frozenset({"mailer-daemon", "mailerdaemon", "mail-daemon", "postmaster"})

_QMAIL_INTRO = "hi. this is the qmail-send program"
_QMAIL_COPY = re.compile(r"(?m)^--- (Below this line is a copy|Enclosed are the original)")
_QMAIL_RECIPIENT = re.compile(r"(?m)^<([^<>\s]+@[^<>\s]+)>:[ \t]*$")

_EXIM_INTRO = "this message was created automatically by mail delivery software"
_EXIM_FAILED = "could not be delivered to one or more of its"
_EXIM_COPY = re.compile(r"(?m)^-{3,} This is a copy of the message")
_EXIM_LIST = re.compile(r"(?i)the following address\(es\) failed:")
_EXIM_RECIPIENT = re.compile(r"(?m)^ {1,4}<?([^\s<>@]+@[^\s<>:]+?)>?:?[ \t]*$")

_REPLY_LINE = re.compile(r"(?m)(?<![\d.])[45]\d\d[ -][^\n]*$")
_PERMANENT = re.compile(r"(?i)permanent error|failed permanently|permanent failure")


@dataclass(frozen=True)
class Failure:
    """One recipient a non-standard bounce names, with what it says about them."""

    kind: Kind
    recipient: str
    status: str | None
    diagnostic: str


def failures(msg: Message, body: str) -> list[Failure]:
    """The recipients ``msg`` reports as failed, or [] when it is not a recognised bounce."""
    if not from_mail_system(msg):
        return []
    opening = body.lstrip()[:400].lower()
    if opening.startswith(_QMAIL_INTRO):
        return _qmail(body)
    if opening.startswith(_EXIM_INTRO) and _EXIM_FAILED in body[:3000].lower():
        return _exim(body) or _listed(msg, body)
    return _listed(msg, body)


def from_mail_system(msg: Message) -> bool:
    """Whether ``msg`` comes from a mail system rather than a person."""
    if bounce_mime.header(msg, "Return-Path").strip() == "<>":
        return True
    sender = clean_address(bounce_mime.header(msg, "From")) or ""
    return sender.partition("@")[0] in DAEMON_LOCAL_PARTS


def _qmail(body: str) -> list[Failure]:
    """qmail-send's bounce: ``<address>:`` then what the remote host said, per recipient."""
    section = _before(body, _QMAIL_COPY)
    # qmail only bounces once it has given up ("This is a permanent error; I've given up").
    permanent = bool(_PERMANENT.search(section))
    return _per_recipient(section, _QMAIL_RECIPIENT, permanent)


def _exim(body: str) -> list[Failure]:
    """Exim's "Mail delivery failed": indented addresses under "The following address(es)"."""
    section = _before(body, _EXIM_COPY)
    listed = _EXIM_LIST.search(section)
    if listed is None:
        return []
    permanent = bool(_PERMANENT.search(section))
    return _per_recipient(section[listed.end() :], _EXIM_RECIPIENT, permanent)


def _listed(msg: Message, body: str) -> list[Failure]:
    """Any notice with X-Failed-Recipients (Exim, Gmail): the status nearest each address."""
    raw = ",".join(bounce_mime.all_headers(msg, "X-Failed-Recipients"))
    addresses = [a for a in (clean_address(x) for x in raw.split(",")[:50]) if a]
    if not addresses:
        return []
    permanent = bool(_PERMANENT.search(body))
    lowered = body.lower()
    found = []
    for address in dict.fromkeys(addresses):
        at = lowered.find(address)
        window = body[at : at + 600] if at >= 0 else ""
        status = find_status(window) or find_status(body[:4000])
        found.append(_failure(address, window or body[:600], status, permanent))
    return found


def _per_recipient(section: str, pattern: re.Pattern[str], permanent: bool) -> list[Failure]:
    """One Failure per address line, with the text up to the next address line."""
    matches = list(pattern.finditer(section))[:50]
    found = []
    for i, match in enumerate(matches):
        address = clean_address(match.group(1))
        if address is None:
            continue
        end = matches[i + 1].start() if i + 1 < len(matches) else len(section)
        block = section[match.end() : min(end, match.end() + 2000)]
        found.append(_failure(address, block, find_status(block), permanent))
    return found


def _failure(address: str, text: str, status: str | None, permanent: bool) -> Failure:
    if status is None and permanent:
        status = "5.0.0"  # RFC 3463: permanent failure, detail unknown
    # A failure that cannot be graded is soft: it counts, but never unsubscribes at once.
    kind = status_kind(status) or "soft"
    return Failure(kind, address, status, _diagnostic(text))


def _diagnostic(text: str) -> str:
    """The line carrying the remote server's reply, else the whole text, on one line."""
    reply = _REPLY_LINE.search(text)
    return one_line(reply.group(0) if reply else text)


def _before(body: str, marker: re.Pattern[str]) -> str:
    """The bounce's own text, without the copy of the returned message after ``marker``."""
    match = marker.search(body)
    return body[: match.start()] if match else body[: bounce_mime.TEXT_LIMIT]
