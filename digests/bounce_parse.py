"""Classify mail arriving at the bounce address: hard/soft bounce, complaint, auto-reply, other.

Recognises RFC 3464 delivery status notifications, RFC 5965 (ARF) feedback reports, RFC 3834
auto-replies (and the common non-standard markers of vacation mail), and the plain-text
bounces of qmail and Exim (``digests.bounce_legacy``). Conservative by design: a notice that
is not clearly a bounce is ``not_bounce``, and nothing here raises on bad input.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from email.message import Message

from digests import bounce_legacy, bounce_mime
from digests.bounce_mime import header
from digests.bounce_report import (
    DEFAULT_VERP_PREFIX,
    SEVERITY,
    BounceReport,
    Kind,
    clean_address,
    find_status,
    find_verp_token,
    message_id_of,
    one_line,
    parse_status,
    status_kind,
)

__all__ = ["BounceReport", "Kind", "classify", "classify_all"]

log = logging.getLogger(__name__)

#: RFC 5965 3.1 feedback types that mean "the recipient objects to this mail".
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other"})
#: Headers that carry the address a notice was delivered to (where a VERP token shows).
ENVELOPE_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")
#: Non-standard auto-reply markers (RFC 3834 5 lists Auto-Submitted only; these are common).
AUTOREPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder")
#: Subjects of vacation mail that carries no marker header (Outlook, Lotus Notes, webmail).
_VACATION_SUBJECT = re.compile(
    r"(?i)^\s*(?:auto(?:matic)?[ -]?(?:reply|response)\b|auto:|out of (?:the )?office\b"
    r"|away from (?:the )?office\b|on vacation\b|vacation reply\b|abwesenheitsnotiz"
    r"|automatische antwort|r[ée]ponse automatique|respuesta autom[áa]tica"
    r"|risposta automatica|automatisch antwoord)"
)


def classify(message: Message | bytes, *, verp_prefix: str = DEFAULT_VERP_PREFIX) -> BounceReport:
    """The most severe outcome a notice reports (hard before soft), never raising.

    For a DSN about several recipients use :func:`classify_all`.
    """
    reports = classify_all(message, verp_prefix=verp_prefix)
    return min(reports, key=lambda r: SEVERITY[r.kind])


def classify_all(
    message: Message | bytes, *, verp_prefix: str = DEFAULT_VERP_PREFIX
) -> list[BounceReport]:
    """One report per failed or delayed recipient (a DSN may name several); never empty.

    Never raises: mail at a bounce address comes from anyone, and one malformed message
    must not stop the queue behind it. What cannot be read is ``not_bounce``.
    """
    try:
        msg = bounce_mime.parse(message)
        return _classify(msg, verp_prefix)
    except Exception:  # a last resort for the unforeseen; the parsing is bounded throughout
        log.debug("unreadable notice treated as not_bounce", exc_info=True)
        return [BounceReport("not_bounce")]


def _classify(msg: Message, verp_prefix: str) -> list[BounceReport]:
    own_id = message_id_of(header(msg, "Message-ID"))
    returned = bounce_mime.returned_headers(msg)
    original = _original_id(msg, returned)
    verp = _verp_token(msg, returned, verp_prefix)
    base = BounceReport("not_bounce", None, None, "", own_id, original, verp)

    dsn = bounce_mime.first_part(msg, bounce_mime.DSN_TYPES)
    if dsn is not None:
        return _dsn_reports(dsn, base, verp_prefix)
    arf = bounce_mime.first_part(msg, ("message/feedback-report",))
    if arf is not None:
        return [_arf_report(arf, returned, base, verp_prefix)]
    if _is_read_receipt(msg):
        return [replace(base, kind="auto_reply", recipient=_sender(msg))]
    body = bounce_mime.body_text(msg)
    legacy = bounce_legacy.failures(msg, body)
    if legacy:
        original = original or _original_id_in_text(body)
        return [
            replace(
                base,
                kind=f.kind,
                recipient=f.recipient,
                status=f.status,
                diagnostic=f.diagnostic,
                original_message_id=original,
                verp_token=verp or find_verp_token(body, verp_prefix),
            )
            for f in legacy
        ]
    if _is_auto_reply(msg):
        return [replace(base, kind="auto_reply", recipient=_sender(msg))]
    return [base]


# --- RFC 3464 delivery status notifications ------------------------------------------------


def _dsn_reports(part: Message, base: BounceReport, verp_prefix: str) -> list[BounceReport]:
    """One report per recipient block whose Action is failed or delayed (RFC 3464 2.3.3)."""
    blocks = bounce_mime.field_blocks(part)
    recipients = [b for b in blocks if "final-recipient" in b or "original-recipient" in b]
    per_message = blocks[0] if blocks and blocks[0] not in recipients else {}
    # Postfix names the envelope sender in the per-message block (X-Postfix-Sender).
    verp = base.verp_token or find_verp_token(" ".join(per_message.values()), verp_prefix)
    reports = []
    for fields in recipients[:100]:
        report = _dsn_recipient(fields, base)
        if report is not None:
            reports.append(replace(report, verp_token=verp))
    return reports or [replace(base, verp_token=verp)]


def _dsn_recipient(fields: dict[str, str], base: BounceReport) -> BounceReport | None:
    action = (fields.get("action", "").split() or [""])[0].lower()
    if action not in ("failed", "delayed"):
        return None  # delivered, relayed, expanded: success notices
    diagnostic = fields.get("diagnostic-code", "")
    status = parse_status(fields.get("status")) or find_status(diagnostic)
    kind: Kind = "soft"
    if action == "failed":
        # A failure without a usable status cannot be graded: soft counts but never
        # unsubscribes at once.
        kind = status_kind(status) or "soft"
    # Original-Recipient is the address litwatch sent to (RFC 3461 ORCPT); Final-Recipient
    # may be where a forward led.
    recipient = clean_address(fields.get("original-recipient")) or clean_address(
        fields.get("final-recipient")
    )
    return replace(
        base, kind=kind, recipient=recipient, status=status, diagnostic=_diag(diagnostic)
    )


def _diag(value: str) -> str:
    """A Diagnostic-Code without its type ("smtp; 550 ..." -> "550 ...", RFC 3464 2.3.6)."""
    kind, sep, rest = value.partition(";")
    return one_line(rest if sep and len(kind) <= 20 and " " not in kind.strip() else value)


# --- RFC 5965 feedback reports (complaints) -------------------------------------------------


def _arf_report(
    part: Message, returned: Message | None, base: BounceReport, verp_prefix: str
) -> BounceReport:
    blocks = bounce_mime.field_blocks(part)
    fields = blocks[0] if blocks else {}
    feedback_type = (fields.get("feedback-type", "").split() or [""])[0].lower()
    kind: Kind = "complaint" if feedback_type in COMPLAINT_TYPES else "not_bounce"
    # The complainant: Original-Rcpt-To (RFC 5965 3.2) when the provider did not redact it,
    # else the To of the reported message (our digest went to one subscriber).
    recipient = clean_address(fields.get("original-rcpt-to"))
    if recipient is None and returned is not None:
        recipient = clean_address(header(returned, "To"))
    verp = base.verp_token or find_verp_token(fields.get("original-mail-from"), verp_prefix)
    diagnostic = one_line(f"feedback-type: {feedback_type or 'missing'}")
    return replace(base, kind=kind, recipient=recipient, diagnostic=diagnostic, verp_token=verp)


# --- RFC 3834 auto-replies and RFC 8098 read receipts ---------------------------------------


def _is_auto_reply(msg: Message) -> bool:
    auto_submitted = header(msg, "Auto-Submitted").split(";")[0].strip().lower()
    if auto_submitted and auto_submitted != "no":  # RFC 3834 5.1: "no" means a person
        return True
    for name in AUTOREPLY_HEADERS:
        value = header(msg, name).strip().lower()
        if value and value not in ("no", "false", "0"):
            return True
    if header(msg, "Precedence").strip().lower() == "auto_reply":
        return True
    return bool(_VACATION_SUBJECT.match(header(msg, "Subject")))


def _is_read_receipt(msg: Message) -> bool:
    return bounce_mime.param(msg, "report-type") == "disposition-notification" or (
        bounce_mime.first_part(msg, ("message/disposition-notification",)) is not None
    )


def _sender(msg: Message) -> str | None:
    return clean_address(header(msg, "From"))


# --- identifiers ----------------------------------------------------------------------------


def _original_id(msg: Message, returned: Message | None) -> str | None:
    """The Message-ID of the mail the notice is about: from the returned copy, else the
    notice's In-Reply-To (auto-replies, some bounces)."""
    if returned is not None:
        found = message_id_of(header(returned, "Message-ID"))
        if found:
            return found
    return message_id_of(header(msg, "In-Reply-To"))


_INLINE_MESSAGE_ID = re.compile(r"(?im)^message-id:[ \t]*(<[^<>\s]{1,250}>)")


def _original_id_in_text(body: str) -> str | None:
    """The Message-ID line of a copy quoted in a plain-text bounce (qmail, Exim)."""
    match = _INLINE_MESSAGE_ID.search(body)
    return match.group(1) if match else None


def _verp_token(msg: Message, returned: Message | None, prefix: str) -> str | None:
    """The VERP token of the address the notice was sent to, or of the returned envelope."""
    values = [v for name in ENVELOPE_HEADERS for v in bounce_mime.all_headers(msg, name)]
    if returned is not None:
        values += bounce_mime.all_headers(returned, "Return-Path")
    for value in values:
        token = find_verp_token(value, prefix)
        if token:
            return token
    return None
