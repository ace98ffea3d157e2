"""What a bounce, complaint or auto-reply says, one record per affected recipient.

Shared by the mail parser (``bounce_parse``) and the provider webhooks (``bounce_webhooks``) so
that both feed the same suppression logic. Also the small text helpers both need: address
clean-up, status codes (RFC 3463) and VERP tokens in addresses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

Kind = Literal["hard", "soft", "complaint", "auto_reply", "not_bounce"]
KINDS: frozenset[str] = frozenset(get_args(Kind))

#: Longest diagnostic kept: enough for "550 5.1.1 <a@b>: user unknown", short enough to log.
DIAGNOSTIC_MAX = 200
#: The VERP local-part prefix litwatch uses unless configured otherwise (digests.verp).
DEFAULT_VERP_PREFIX = "bounces"

#: classify() picks the most severe report of a multi-recipient notice in this order.
SEVERITY: dict[str, int] = {"hard": 0, "soft": 1, "complaint": 2, "auto_reply": 3, "not_bounce": 4}


@dataclass(frozen=True)
class BounceReport:
    """One recipient's outcome from one notice (DSN, ARF report, auto-reply, webhook event).

    ``message_id`` identifies the notice itself (a Message-ID, or ``provider:event-id`` for a
    webhook) so that handling the same notice twice can be detected; a notice about several
    recipients gives several reports with the same ``message_id``, told apart by ``recipient``.
    """

    kind: Kind
    recipient: str | None = None
    status: str | None = None
    diagnostic: str = ""
    message_id: str | None = None
    original_message_id: str | None = None
    verp_token: str | None = None

    @property
    def is_bounce(self) -> bool:
        """Whether this counts towards a bounce score (auto-replies and complaints do not)."""
        return self.kind in ("hard", "soft")


def one_line(value: object, limit: int = DIAGNOSTIC_MAX) -> str:
    """``value`` as one printable line of at most ``limit`` characters."""
    text = " ".join(str(value).split())
    return "".join(ch for ch in text if ch.isprintable())[:limit]


_BRACKETED = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
_ADDRESS = re.compile(r"[^\s<>@,;:\"()\[\]\\]+@[^\s<>@,;:\"()\[\]\\]+")
#: RFC 3464 2.1.2 address-type ("rfc822;", RFC 6533 "utf-8;") in front of the address.
_ADDRESS_TYPE = re.compile(r"^\s*[A-Za-z0-9-]{1,20}\s*;")


def clean_address(raw: str | None) -> str | None:
    """The e-mail address in ``raw`` (bare, bracketed, or ``rfc822;`` typed), lower-cased.

    None unless exactly one plausible address is found: a wrong address is worse than none.
    """
    if not raw:
        return None
    text = _ADDRESS_TYPE.sub("", str(raw)[:1000], count=1)
    bracketed = _BRACKETED.findall(text)
    found = bracketed if bracketed else _ADDRESS.findall(text)
    if len(set(a.lower() for a in found)) != 1:
        return None
    addr = found[0].strip(".").lower()
    local, _, domain = addr.rpartition("@")
    # RFC 5321 4.5.3.1: 64 octets of local part, 254 for a usable path.
    if not local or not domain or len(local) > 64 or len(addr) > 254 or "@" in local:
        return None
    return addr


#: A status code (RFC 3463): class 2, 4 or 5, subject and detail; not part of a longer number.
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\d|\.\d)")
#: "550 5.1.1" or "550-5.1.1": a status right after an SMTP reply code is the most reliable.
_REPLY_AND_STATUS = re.compile(r"(?<!\d)([245]\d\d)[ -]#?([245]\.\d{1,3}\.\d{1,3})(?!\d|\.\d)")
#: A bare SMTP reply code where one is expected (line start, "said:", "smtp;").
_REPLY_CODE = re.compile(r"(?im)(?:^|said:|smtp;|\]:)[ \t]*([45][0-5]\d)(?=[\s-])")


def parse_status(value: str | None) -> str | None:
    """The status code at the start of a DSN ``Status:`` field (RFC 3464 2.3.4), or None."""
    match = _STATUS.match((value or "").strip())
    return ".".join(match.groups()) if match else None


def find_status(text: str) -> str | None:
    """The most specific failure status named in free text (a diagnostic, a bounce body).

    A 4xx/5xx reply code alone gives ``4.0.0``/``5.0.0`` (RFC 3463: class known, detail not).
    """
    paired = _REPLY_AND_STATUS.search(text)
    if paired and paired.group(1)[0] == paired.group(2)[0]:
        return paired.group(2)
    for match in _STATUS.finditer(text):
        if match.group(1) in "45":
            return ".".join(match.groups())
    reply = _REPLY_CODE.search(text)
    return f"{reply.group(1)[0]}.0.0" if reply else None


def status_kind(status: str | None) -> Kind | None:
    """hard for a permanent status (5.x.x), soft for a transient one (4.x.x), else None."""
    if status and status[0] == "5":
        return "hard"
    if status and status[0] == "4":
        return "soft"
    return None


def find_verp_token(text: str | None, prefix: str = DEFAULT_VERP_PREFIX) -> str | None:
    """The token of the first ``<prefix>+<token>@domain`` address in ``text``, lower-cased.

    Only finds it: whether it is genuine is for ``digests.verp.read_verp_token`` to say.
    """
    if not text:
        return None
    pattern = rf"(?i)(?<![^\s<:;,\"'])({re.escape(prefix)})\+([A-Za-z0-9_=-]{{1,64}})@"
    match = re.search(pattern, str(text)[:20_000])
    return match.group(2).lower() if match else None


def message_id_of(value: str | None) -> str | None:
    """The one ``<msg-id>`` in a Message-ID / In-Reply-To value, or None (RFC 5322 3.6.4)."""
    if not value:
        return None
    ids = re.findall(r"<[^<>\s]{1,250}>", str(value)[:2000])
    if len(ids) == 1:
        return ids[0]
    bare = str(value).strip()
    if not ids and bare and len(bare) <= 250 and not any(ch.isspace() for ch in bare):
        return f"<{bare.strip('<>')}>" if "@" in bare else None
    return None
