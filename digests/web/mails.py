"""The two short e-mails of the sign-up: "confirm your address" and "already subscribed".

Headers hold only the configured sender, a fixed subject and the address that
email-validator accepted (it refuses line breaks), so nothing from the request can add a
header. Sent through the configured backend (file outbox or SMTP), one connection per mail.
"""

from __future__ import annotations

import logging
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from crawler.settings import Settings
from digests.backends import FatalDeliveryError, PermanentFailure, TemporaryFailure, make_backend
from digests.mail import check_sender, sender_domain

log = logging.getLogger("litwatch.web")

CONFIRM_SUBJECT = "Confirm your litwatch subscription"
ALREADY_SUBJECT = "You are already subscribed to litwatch"


class MailUnavailable(Exception):
    """The mail could not be handed to the server now; the visitor should try again later."""


def confirmation_message(
    settings: Settings, to: str, link: str, hours: int, when: datetime
) -> EmailMessage:
    """The double opt-in mail with its signed, expiring confirmation link."""
    body = (
        "Someone, probably you, asked to receive the litwatch weekly digest of new research\n"
        "on fibromyalgia and autoimmunity at this address.\n\n"
        f"To confirm, open this link (it works for {hours} hours) and press the button:\n\n"
        f"{link}\n\n"
        "If you did not ask for this, ignore this message: nothing will be sent to you.\n"
    )
    return _message(settings, to, CONFIRM_SUBJECT, body, when)


def already_message(settings: Settings, to: str, preferences: str, when: datetime) -> EmailMessage:
    """The note for an address that is already subscribed (no second subscription)."""
    body = (
        "Someone, probably you, asked to subscribe this address to the litwatch weekly digest.\n"
        "It is already subscribed, so nothing has changed.\n\n"
        "To change your topics or format, or to unsubscribe, use this link:\n\n"
        f"{preferences}\n"
    )
    return _message(settings, to, ALREADY_SUBJECT, body, when)


def _message(settings: Settings, to: str, subject: str, body: str, when: datetime) -> EmailMessage:
    msg = EmailMessage()
    name, addr = check_sender(settings.email.from_)
    msg["From"] = Address(display_name=name, addr_spec=addr)
    local, _, domain = to.rpartition("@")
    msg["To"] = Address(username=local, domain=domain)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = make_msgid("litwatch.signup", domain=sender_domain(settings.email.from_))
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    msg.set_content(body, charset="utf-8", cte="quoted-printable")
    return msg


def send_mail(settings: Settings, msg: EmailMessage, to: str) -> None:
    """Send one message; MailUnavailable when the server cannot take it now.

    A permanent refusal of this recipient is only logged: the visitor sees the same page as
    for any address, so the answer never tells which addresses a server refuses.
    """
    backend = make_backend(settings.email, settings.smtp_password)
    try:
        backend.send(msg, to)
    except PermanentFailure as exc:
        log.warning("event=web.mail_refused error=%r", str(exc))
    except (TemporaryFailure, FatalDeliveryError, OSError) as exc:  # OSError: outbox folder
        log.error("event=web.mail_failed error=%r", str(exc))
        raise MailUnavailable(str(exc)) from None
    finally:
        backend.close()
