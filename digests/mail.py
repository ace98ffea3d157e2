"""Build digest e-mails: multipart/alternative, stable Message-ID, RFC 8058 one-click headers."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses

from digests.render import Rendered


class MailConfigError(ValueError):
    """The configured From address (or similar) cannot be used."""


def check_sender(from_header: str) -> tuple[str, str]:
    """(display name, address) of the configured From; MailConfigError unless it is one address.

    The From comes from the operator's configuration, but a typo there ("litwatch" without an
    address, two addresses) must stop the send with one clear line, not a traceback per message.
    """
    if any(ch in from_header for ch in "\r\n"):
        raise MailConfigError("[email] from must be one line")
    pairs = getaddresses([from_header])
    if len(pairs) != 1:
        raise MailConfigError(f"[email] from must hold exactly one address, got {from_header!r}")
    name, addr = pairs[0]
    local, _, domain = addr.rpartition("@")
    if not local or not domain or any(ch.isspace() for ch in addr):
        raise MailConfigError(f"[email] from must contain an address, got {from_header!r}")
    return name, addr


def sender_domain(from_header: str) -> str:
    """The domain of the configured From address (the right-hand side of Message-IDs)."""
    return check_sender(from_header)[1].rsplit("@", 1)[1].strip().lower()


def message_id(subscriber_id: int, period: date, from_header: str) -> str:
    """A Message-ID that is the same for every attempt at one (subscriber, period) digest.

    Receivers drop a repeated Message-ID, which covers the one window no client can close:
    a crash between the server's 250 and recording the send.
    """
    digest = hashlib.sha256(f"{subscriber_id}:{period.isoformat()}".encode()).hexdigest()[:16]
    return f"<litwatch.{period.isoformat()}.{subscriber_id}.{digest}@{sender_domain(from_header)}>"


def _one_line(value: str) -> str:
    # Header injection guard: nothing from data may start a new header line.
    return " ".join(value.replace("\r", " ").replace("\n", " ").split())


def build_message(
    rendered: Rendered,
    *,
    from_header: str,
    to_email: str,
    to_name: str | None,
    msg_id: str,
    unsubscribe_url: str,
    unsubscribe_mailto: str = "",
    when: datetime,
) -> EmailMessage:
    """A ready-to-send digest: text part first, then the HTML alternative (when any)."""
    msg = EmailMessage()
    from_name, from_addr = check_sender(from_header)
    msg["From"] = Address(display_name=_one_line(from_name), addr_spec=from_addr)
    local, _, domain = to_email.rpartition("@")
    msg["To"] = Address(display_name=_one_line(to_name or ""), username=local, domain=domain)
    msg["Subject"] = _one_line(rendered.subject)
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = msg_id
    targets = [f"<{unsubscribe_url}>"]
    if unsubscribe_mailto:
        targets.append(f"<mailto:{unsubscribe_mailto}?subject=unsubscribe>")
    msg["List-Unsubscribe"] = ", ".join(targets)
    # RFC 8058: a POST of "List-Unsubscribe=One-Click" to the https URL unsubscribes at once.
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    msg["Precedence"] = "bulk"
    # Quoted-printable keeps the parts readable in any mail source view.
    msg.set_content(rendered.text, charset="utf-8", cte="quoted-printable")
    if rendered.html is not None:
        msg.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    # Bodies are encoded by now (at 76 columns). From here on, allow header lines up to the
    # RFC 5322 limit so that List-Unsubscribe's long signed URL is folded, never RFC 2047
    # encoded: mailbox providers must read it verbatim.
    msg.policy = msg.policy.clone(max_line_length=998)
    return msg
