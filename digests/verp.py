"""Per-recipient envelope senders (VERP): ``bounces+<id>-<mac>@domain`` names the subscriber.

A bounce comes back to the envelope sender, so a sender unique to each subscriber says whose
address failed even when the bounce itself is unreadable. The token is the subscriber id and
an HMAC-SHA256 tag over it, so a forged bounce cannot name another subscriber.

Shape, chosen to survive mail systems: lower-case letters, digits and one ``-`` only (RFC 5321
4.1.2 dot-atom characters, no quoting; mail systems that lower-case local parts, which some
do, change nothing), and the whole local part within RFC 5321's 64 octets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

#: 10 bytes of tag (80 bits) are 16 base32 characters with no padding: forging one by
#: guessing takes about 2**79 tries, and each try is a mail that has to reach us.
_TAG_BYTES = 10
_CONTEXT = b"litwatch-verp-v1:"  # domain separation from the other uses of the secret
MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
MAX_ID = 2**63 - 1  # a database BIGINT
MIN_SECRET = 16

_PREFIX = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")  # RFC 5322 dot-atom, no "+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_TOKEN = re.compile(r"(0|[1-9][0-9]{0,18})-([a-z2-7]{16})")


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET:
        raise ValueError(f"the VERP secret must be at least {MIN_SECRET} bytes")


def _tag(secret: bytes, subscriber_id: int) -> str:
    mac = hmac.new(secret, _CONTEXT + str(subscriber_id).encode(), hashlib.sha256).digest()
    return base64.b32encode(mac[:_TAG_BYTES]).decode("ascii").lower()


def verp_token(secret: bytes, subscriber_id: int) -> str:
    """The signed token for ``subscriber_id``: ``<id>-<16 base32 characters>``."""
    _check_secret(secret)
    if isinstance(subscriber_id, bool) or not isinstance(subscriber_id, int):
        raise TypeError("subscriber_id must be an int")
    if not 0 <= subscriber_id <= MAX_ID:
        raise ValueError(f"subscriber_id out of range: {subscriber_id}")
    return f"{subscriber_id}-{_tag(secret, subscriber_id)}"


def verp_address(secret: bytes, subscriber_id: int, prefix: str, domain: str) -> str:
    """The envelope sender ``<prefix>+<token>@<domain>`` for one subscriber's mail.

    ValueError for a prefix or domain that would not make a plain RFC 5321 address.
    """
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"VERP prefix must be letters, digits, '-', '_' or '.': {prefix!r}")
    domain = domain.rstrip(".")
    if len(domain) > 253 or not _DOMAIN.fullmatch(domain):
        raise ValueError(f"VERP domain is not an ASCII host name: {domain!r}")
    local = f"{prefix.lower()}+{verp_token(secret, subscriber_id)}"
    if len(local) > MAX_LOCAL_PART:
        raise ValueError(f"VERP prefix too long: the local part would be {len(local)} > 64")
    return f"{local}@{domain.lower()}"


def read_verp_token(secret: bytes, token: str) -> int | None:
    """The subscriber id a token names; None when it is malformed, forged or another key's."""
    _check_secret(secret)
    match = _TOKEN.fullmatch(token.strip().lower()) if isinstance(token, str) else None
    if match is None:
        return None
    subscriber_id = int(match.group(1))
    if subscriber_id > MAX_ID:
        return None
    expected = _tag(secret, subscriber_id)
    return subscriber_id if hmac.compare_digest(expected, match.group(2)) else None


def read_verp(secret: bytes, address: str) -> int | None:
    """The subscriber id in a VERP address (bare or in angle brackets); None if not ours.

    The prefix and domain are not checked: only the signed token says who it is.
    """
    if not isinstance(address, str) or len(address) > 320:
        _check_secret(secret)
        return None
    local, at, _domain = address.strip().strip("<>").rpartition("@")
    _, plus, token = local.rpartition("+")
    if not at or not plus:
        _check_secret(secret)
        return None
    return read_verp_token(secret, token)
