"""Bounce and complaint webhooks of mail providers, read into :class:`BounceReport` values.

Three formats:

* ``litwatch`` (ours, for any relay that can post JSON): one object, or a list of them::

      {"type": "bounce", "email": "a@example.org", "status": "5.1.1", "permanent": true,
       "message_id": "evt-123", "original_message_id": "<...>", "diagnostic": "550 ..."}
      {"type": "complaint", "email": "a@example.org", "message_id": "evt-124"}

  ``type``, ``email`` and ``message_id`` (the event id) are required; a bounce needs
  ``permanent`` or ``status`` (and they must agree when both are given). An optional
  ``envelope_from`` (the envelope sender the relay saw) yields the VERP token.
* ``ses``: Amazon SES notifications through SNS (or raw delivery without the SNS envelope).
  A ``SubscriptionConfirmation`` comes back as :class:`SnsSubscriptionConfirmation` for the
  web layer to confirm; nothing here fetches a URL. SNS's own RSA signature is not checked
  here: the endpoint must be authenticated some other way (a secret path, Basic auth).
* ``postmark``: Postmark's Bounce and SpamComplaint webhooks.

Event ids become ``message_id`` as ``<provider>:<id>``. Anything else is a WebhookError.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from digests.bounce_report import (
    DEFAULT_VERP_PREFIX,
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

MAX_BODY = 1024 * 1024
MAX_EVENTS = 1000


class WebhookError(ValueError):
    """A webhook body that is not JSON in a known provider format, or lacks a needed field."""


@dataclass(frozen=True)
class SnsSubscriptionConfirmation:
    """SNS asks the endpoint to confirm a topic subscription by fetching ``subscribe_url``."""

    topic_arn: str
    subscribe_url: str
    token: str
    message_id: str


Result = list[BounceReport] | SnsSubscriptionConfirmation


def verify_webhook_signature(secret: bytes, body: bytes, signature_header: str | None) -> bool:
    """Whether ``signature_header`` is ``sha256=<hex HMAC-SHA256 of body>`` (or the bare hex).

    Compared in constant time. ValueError for an empty secret: that would accept anyone.
    """
    if not secret:
        raise ValueError("the webhook secret is empty")
    value = (signature_header or "").strip()
    if value[:7].lower() == "sha256=":
        value = value[7:]
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", value):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, value.lower())


def parse_webhook(
    provider: str, body: bytes | str, *, verp_prefix: str = DEFAULT_VERP_PREFIX
) -> Result:
    """Dispatch on ``provider`` ("litwatch", "ses", "postmark"); WebhookError if unknown."""
    parser = PARSERS.get(provider)
    if parser is None:
        raise WebhookError(f"unknown webhook provider {provider!r}")
    return parser(body, verp_prefix)


# --- litwatch's own format ------------------------------------------------------------------


def parse_generic(body: bytes | str, verp_prefix: str = DEFAULT_VERP_PREFIX) -> list[BounceReport]:
    """Events in litwatch's documented format (see the module docstring)."""
    data = _load(body)
    events = data if isinstance(data, list) else [data]
    if len(events) > MAX_EVENTS:
        raise WebhookError(f"more than {MAX_EVENTS} events in one body")
    return [_generic_event(_obj(event, "event"), verp_prefix) for event in events]


def _generic_event(event: dict[str, Any], verp_prefix: str) -> BounceReport:
    kind_name = _text(event, "type")
    email = _email(event, "email")
    message_id = f"litwatch:{_text(event, 'message_id')}"
    original = message_id_of(_text(event, "original_message_id", required=False))
    diagnostic = one_line(_text(event, "diagnostic", required=False))
    verp = find_verp_token(_text(event, "envelope_from", required=False), verp_prefix)
    if kind_name == "complaint":
        return BounceReport("complaint", email, None, diagnostic, message_id, original, verp)
    if kind_name != "bounce":
        raise WebhookError(f"event type must be bounce or complaint, not {kind_name!r}")
    status = _generic_status(event)
    kind = _generic_grade(event, status)
    return BounceReport(kind, email, status, diagnostic, message_id, original, verp)


def _generic_status(event: dict[str, Any]) -> str | None:
    raw = _text(event, "status", required=False)
    status = parse_status(raw)
    if raw and (status is None or status != raw.strip()):
        raise WebhookError(f"status must look like 5.1.1, not {raw!r}")
    return status


def _generic_grade(event: dict[str, Any], status: str | None) -> Kind:
    permanent = event.get("permanent")
    if permanent is not None and not isinstance(permanent, bool):
        raise WebhookError("permanent must be true or false")
    by_status = status_kind(status)
    by_flag: Kind | None = None if permanent is None else ("hard" if permanent else "soft")
    if by_flag and by_status and by_flag != by_status:
        raise WebhookError("permanent and status disagree")
    kind = by_flag or by_status
    if kind is None:
        raise WebhookError("a bounce needs permanent or a 4.x.x/5.x.x status")
    return kind


# --- Amazon SES through SNS -----------------------------------------------------------------

SES_BOUNCE_KINDS: dict[str, Kind] = {"Permanent": "hard", "Transient": "soft"}
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?")


def parse_ses(
    body: bytes | str, verp_prefix: str = DEFAULT_VERP_PREFIX
) -> list[BounceReport] | SnsSubscriptionConfirmation:
    """An SNS message carrying an SES notification, or SES's JSON delivered raw."""
    data = _obj(_load(body), "SNS message")
    sns_type = data.get("Type")
    if sns_type is None and ("notificationType" in data or "eventType" in data):
        return _ses_notification(data, "", verp_prefix)  # raw message delivery
    if sns_type == "SubscriptionConfirmation":
        return _sns_confirmation(data)
    if sns_type == "UnsubscribeConfirmation":
        return []
    if sns_type != "Notification":
        raise WebhookError(f"not an SNS message type litwatch knows: {sns_type!r}")
    message = _obj(_load(_text(data, "Message")), "SES notification")
    return _ses_notification(message, _text(data, "MessageId"), verp_prefix)


def _sns_confirmation(data: dict[str, Any]) -> SnsSubscriptionConfirmation:
    url = _text(data, "SubscribeURL")
    parts = urlsplit(url)
    # The web layer will fetch this URL: only ever an SNS endpoint over https (no SSRF).
    plain = parts.username is None and parts.password is None and parts.port is None
    if parts.scheme != "https" or not plain or not _SNS_HOST.fullmatch(parts.hostname or ""):
        raise WebhookError("SubscribeURL is not an https SNS endpoint")
    return SnsSubscriptionConfirmation(
        _text(data, "TopicArn"), url, _text(data, "Token"), _text(data, "MessageId")
    )


def _ses_notification(data: dict[str, Any], event_id: str, prefix: str) -> list[BounceReport]:
    kind_name = data.get("notificationType") or data.get("eventType")
    mail = _obj(data.get("mail", {}), "mail")
    headers = _obj(mail.get("commonHeaders", {}), "commonHeaders")
    original = message_id_of(_str(headers.get("messageId"))) or _str(mail.get("messageId"))
    base = BounceReport("not_bounce", None, None, "", None, original or None)
    verp = find_verp_token(_str(mail.get("source")), prefix)
    if kind_name == "Bounce":
        return _ses_bounce(_obj(data.get("bounce"), "bounce"), base, event_id, verp)
    if kind_name == "Complaint":
        return _ses_complaint(_obj(data.get("complaint"), "complaint"), base, event_id, verp)
    if not isinstance(kind_name, str):
        raise WebhookError("SES notification without notificationType")
    return []  # Delivery, Send, Open and the like: nothing to suppress


def _ses_bounce(
    bounce: dict[str, Any], base: BounceReport, event_id: str, verp: str | None
) -> list[BounceReport]:
    # Undetermined (or a new type) is soft: counted, never an unsubscribe on its own.
    kind = SES_BOUNCE_KINDS.get(_str(bounce.get("bounceType")), "soft")
    message_id = _event_id("ses", _str(bounce.get("feedbackId")) or event_id)
    reports = []
    for item in _items(bounce, "bouncedRecipients"):
        diagnostic = _str(item.get("diagnosticCode")) or _str(bounce.get("bounceSubType"))
        status = parse_status(_str(item.get("status"))) or find_status(diagnostic)
        reports.append(
            BounceReport(
                kind,
                _email(item, "emailAddress"),
                status,
                one_line(diagnostic),
                message_id,
                base.original_message_id,
                verp,
            )
        )
    return reports


def _ses_complaint(
    complaint: dict[str, Any], base: BounceReport, event_id: str, verp: str | None
) -> list[BounceReport]:
    feedback = _str(complaint.get("complaintFeedbackType"))
    kind: Kind = "not_bounce" if feedback.lower() == "not-spam" else "complaint"
    message_id = _event_id("ses", _str(complaint.get("feedbackId")) or event_id)
    return [
        BounceReport(
            kind,
            _email(item, "emailAddress"),
            None,
            one_line(f"feedback-type: {feedback or 'unknown'}"),
            message_id,
            base.original_message_id,
            verp,
        )
        for item in _items(complaint, "complainedRecipients")
    ]


# --- Postmark -------------------------------------------------------------------------------

POSTMARK_KINDS: dict[str, Kind] = {
    "HardBounce": "hard",
    "BadEmailAddress": "hard",
    "SoftBounce": "soft",
    "Transient": "soft",
    "DnsError": "soft",
    "SpamNotification": "soft",
    "Blocked": "soft",
    "Unknown": "soft",
    "AutoResponder": "auto_reply",
    "SpamComplaint": "complaint",
}
#: RecordTypes that carry no bounce: acknowledged and ignored.
POSTMARK_IGNORED = frozenset({"Delivery", "Open", "Click", "SubscriptionChange"})


def parse_postmark(body: bytes | str, verp_prefix: str = DEFAULT_VERP_PREFIX) -> list[BounceReport]:
    """A Postmark Bounce or SpamComplaint webhook (other RecordTypes give []).

    Postmark sends from its own return path, so there is no VERP token to read;
    ``verp_prefix`` is accepted for the common parser signature.
    """
    data = _obj(_load(body), "Postmark event")
    record = data.get("RecordType", "Bounce")  # older bounce hooks carry no RecordType
    if not isinstance(record, str):
        raise WebhookError("Postmark RecordType must be a string")
    if record in POSTMARK_IGNORED:
        return []
    if record not in ("Bounce", "SpamComplaint"):
        raise WebhookError(f"unknown Postmark RecordType {record!r}")
    type_name = "SpamComplaint" if record == "SpamComplaint" else _text(data, "Type")
    # Types that say nothing about the address (Subscribe, DMARCPolicy, ...) are not bounces.
    kind = POSTMARK_KINDS.get(type_name, "not_bounce")
    details = _str(data.get("Details")) or _str(data.get("Description"))
    status = find_status(details) if kind in ("hard", "soft") else None
    event_id = data.get("ID")
    if not isinstance(event_id, int | str) or isinstance(event_id, bool) or event_id == "":
        raise WebhookError("Postmark event without an ID")
    return [
        BounceReport(
            kind,
            _email(data, "Email"),
            status,
            one_line(f"{type_name}: {details}" if details else type_name),
            f"postmark:{event_id}",
            message_id_of(_str(data.get("MessageID"))) or _str(data.get("MessageID")) or None,
        )
    ]


PARSERS: dict[str, Callable[[bytes | str, str], Result]] = {
    "litwatch": parse_generic,
    "ses": parse_ses,
    "postmark": parse_postmark,
}


# --- JSON helpers ---------------------------------------------------------------------------


def _event_id(provider: str, event_id: str) -> str | None:
    return f"{provider}:{event_id}" if event_id else None


def _load(body: bytes | str) -> Any:
    if len(body) > MAX_BODY:
        raise WebhookError(f"webhook body over {MAX_BODY} bytes")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError included
        raise WebhookError("webhook body is not JSON") from None


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebhookError(f"{what} is not a JSON object")
    return value


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _text(data: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise WebhookError(f"{key} must be a non-empty string")
    return value


def _email(data: dict[str, Any], key: str) -> str:
    address = clean_address(_text(data, key))
    if address is None:
        raise WebhookError(f"{key} is not an e-mail address")
    return address


def _items(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = data.get(key)
    if not isinstance(items, list) or not items or len(items) > MAX_EVENTS:
        raise WebhookError(f"{key} must be a non-empty list")
    return [_obj(item, key) for item in items]
