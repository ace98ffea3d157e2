"""Careful access to an incoming notice: bounded MIME walk, header and text reading.

Bounces arrive from anyone, in any state of repair. Everything here is bounded (parts, depth,
characters) and returns empty values instead of raising, so the classifier stays simple.
"""

from __future__ import annotations

import contextlib
import email
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import collapse_rfc2231_value

MAX_PARTS = 200
MAX_DEPTH = 12
#: Characters of one text part that are looked at (a bounce's own text is short).
TEXT_LIMIT = 64 * 1024
HEADER_LIMIT = 2000

#: RFC 3464 and RFC 6533 (internationalised) delivery status parts.
DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
#: The returned message or its headers (RFC 3462 text/rfc822-headers, RFC 6532 global forms).
RETURNED_TYPES = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/global-headers",
)


def parse(message: Message | bytes | bytearray | str) -> Message:
    """``message`` as a Message (compat32, the most forgiving policy for bytes)."""
    if isinstance(message, Message):
        return message
    if isinstance(message, str):
        return email.message_from_string(message)
    return email.message_from_bytes(bytes(message))


def header(msg: Message, name: str) -> str:
    """The first ``name`` field, RFC 2047 decoded when possible, on one line; "" if absent."""
    values = all_headers(msg, name)
    return values[0] if values else ""


def all_headers(msg: Message, name: str) -> list[str]:
    """Every ``name`` field (Delivered-To may repeat), decoded as :func:`header` does."""
    try:
        raw = msg.get_all(name) or []
    except (ValueError, TypeError, LookupError, AttributeError):
        return []  # an EmailMessage with the default policy parses lazily and may fail here
    return [_decoded(value) for value in raw[:20]]


def _decoded(value: object) -> str:
    text = str(value)[:HEADER_LIMIT]
    # An undecodable encoded word is kept as written.
    with contextlib.suppress(ValueError, LookupError, UnicodeError):
        text = str(make_header(decode_header(text)))
    return " ".join(text.split())


def content_type(part: Message) -> str:
    """The part's type, lower-cased; text/plain when the field is missing or unreadable."""
    try:
        return part.get_content_type()
    except (ValueError, TypeError, LookupError, AttributeError):
        return "text/plain"


def param(part: Message, name: str) -> str:
    """A Content-Type parameter (``report-type``), lower-cased; "" when absent."""
    try:
        value = part.get_param(name)
    except (ValueError, TypeError, LookupError, AttributeError):
        return ""
    if value is None:
        return ""
    return str(collapse_rfc2231_value(value)).strip().lower()


def walk(msg: Message) -> Iterator[Message]:
    """The parts of ``msg``, depth first, bounded; never descends into message/* parts.

    A returned or forwarded message is yielded but not entered: its own parts say nothing
    about this notice (a forwarded DSN is not a bounce of ours).
    """
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        yield part
        if part is not msg and content_type(part).startswith("message/"):
            continue
        payload = part.get_payload() if depth < MAX_DEPTH else None
        if isinstance(payload, list):
            children = [p for p in payload if isinstance(p, Message)]
            stack.extend((child, depth + 1) for child in reversed(children))


def first_part(msg: Message, types: tuple[str, ...]) -> Message | None:
    """The first part whose content type is one of ``types``."""
    return next((p for p in walk(msg) if content_type(p) in types), None)


def text(part: Message) -> str:
    """The decoded text of a non-multipart part, bounded; "" when there is none."""
    try:
        raw = part.get_payload(decode=True)
    except (ValueError, TypeError, LookupError, AttributeError, AssertionError):
        return ""
    if not isinstance(raw, bytes):
        return ""
    charset = "utf-8"
    try:
        charset = part.get_content_charset() or "utf-8"
        return raw[:TEXT_LIMIT].decode(charset, "replace")
    except (LookupError, ValueError, TypeError):
        return raw[:TEXT_LIMIT].decode("utf-8", "replace")


def body_text(msg: Message) -> str:
    """The first text/plain part of the notice itself (not of a returned message)."""
    part = first_part(msg, ("text/plain",))
    return text(part) if part is not None else ""


def field_blocks(part: Message) -> list[dict[str, str]]:
    """The ``Name: value`` blocks of a report part (RFC 3464 2.1, RFC 5965 3.1), lower-case keys.

    The email package already splits message/delivery-status into blocks and parses other
    message/* parts as one header block; a part it left as text is split here.
    """
    payload = part.get_payload()
    if isinstance(payload, list):
        return [_fields(block) for block in payload[:100] if isinstance(block, Message)]
    return _text_blocks(text(part))


def _fields(block: Message) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in list(block.items())[:50]:
        fields.setdefault(str(name).strip().lower(), _decoded(value))
    return fields


def _text_blocks(body: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    for chunk in body.replace("\r\n", "\n").split("\n\n")[:100]:
        fields: dict[str, str] = {}
        name = ""
        for line in chunk.split("\n")[:100]:
            if line[:1] in (" ", "\t") and name:
                fields[name] = f"{fields[name]} {line.strip()}"  # RFC 5322 folding
            elif ":" in line:
                key, _, value = line.partition(":")
                name = key.strip().lower()
                fields.setdefault(name, value.strip())
        if fields:
            blocks.append(fields)
    return blocks


def returned_headers(msg: Message) -> Message | None:
    """The headers of the message a notice returns or reports on, when it carries them."""
    part = first_part(msg, RETURNED_TYPES)
    if part is None:
        return None
    payload = part.get_payload()
    if isinstance(payload, list):
        inner = payload[0] if payload else None
        return inner if isinstance(inner, Message) else None
    return HeaderParser().parsestr(text(part), headersonly=True)
