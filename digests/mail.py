"""Build digest e-mails: multipart/alternative, stable Message-ID, RFC 8058 one-click headers."""

from __future__ import annotations

import binascii
import functools
import hashlib
import io
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from email.generator import BytesGenerator
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, getaddresses

from digests.render import Rendered


class MailConfigError(ValueError):
    """The configured From address (or similar) cannot be used."""


@functools.lru_cache(maxsize=64)  # parsed for every message of a run: the same string
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


def message_id(subscriber_id: int, period: date, from_header: str, installation: str = "") -> str:
    """A Message-ID that is the same for every attempt at one (subscriber, period) digest.

    Receivers drop a repeated Message-ID, which covers the one window no client can close:
    a crash between the server's 250 and recording the send. It is computed once, when the
    delivery is planned, and stored with it: every retry and rerun sends the stored one.
    ``installation`` (crawler.db.meta.installation_id) keeps two installations from minting
    the same id for the same subscriber id and period.
    """
    where = f"{installation}:" if installation else ""  # ids before installations: as they were
    digest = hashlib.sha256(f"{where}{subscriber_id}:{period.isoformat()}".encode()).hexdigest()
    local = f"litwatch.{period.isoformat()}.{subscriber_id}.{where.replace(':', '.')}{digest[:16]}"
    return f"<{local}@{sender_domain(from_header)}>"


#: RFC 2919 list-id: a dot-atom with at least one dot (``label.namespace``).
_LIST_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+")


def check_list_id(value: str) -> str:
    """``value`` when it is an RFC 2919 list-id (``litwatch.example.org``); MailConfigError."""
    if len(value) > 255 or not _LIST_ID.fullmatch(value):
        raise MailConfigError(
            f"[email] list_id must look like litwatch.example.org (RFC 2919), got {value!r}"
        )
    return value


def list_id_header(list_id: str, list_name: str, from_header: str) -> str:
    """The List-Id value: ``name <list-id>``; the id defaults to ``litwatch.<From domain>``."""
    ident = check_list_id(list_id or f"litwatch.{sender_domain(from_header)}")
    name = _one_line(list_name)
    if not name:
        return f"<{ident}>"
    return f"{_phrase(name, 'List-Id')} <{ident}>"


def _one_line(value: str) -> str:
    # Header injection guard: nothing from data may start a new header line.
    return " ".join(value.replace("\r", " ").replace("\n", " ").split())


def list_fields(
    unsubscribe_url: str, unsubscribe_mailto: str, list_id: str = "", *, fold: str = ", "
) -> list[tuple[str, str]]:
    """The mailing-list headers every digest carries, in order: one list for both ways a
    digest is written (:func:`build_message` and :meth:`DigestMail.wire`).

    ``list_id`` is the whole List-Id value (:func:`list_id_header`); none when empty.
    ``fold`` joins the List-Unsubscribe targets: folded between targets on the wire, never
    RFC 2047 encoded, so that mailbox providers read the URL verbatim.
    """
    targets = [f"<{_one_line(unsubscribe_url)}>"]
    if unsubscribe_mailto:
        targets.append(f"<mailto:{_one_line(unsubscribe_mailto)}?subject=unsubscribe>")
    listed = [("List-Id", _one_line(list_id))] if list_id else []  # RFC 2919
    return [
        *listed,
        ("List-Unsubscribe", fold.join(targets)),
        # RFC 8058: a POST of "List-Unsubscribe=One-Click" to the https URL unsubscribes at once.
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("Auto-Submitted", "auto-generated"),  # RFC 3834: no vacation replies
        ("Precedence", "bulk"),
    ]


def build_message(
    rendered: Rendered,
    *,
    from_header: str,
    to_email: str,
    to_name: str | None,
    msg_id: str,
    unsubscribe_url: str,
    unsubscribe_mailto: str = "",
    list_id: str = "",
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
    for name, value in list_fields(unsubscribe_url, unsubscribe_mailto, list_id):
        msg[name] = value
    # Quoted-printable keeps the parts readable in any mail source view. The parts are
    # encoded here with binascii (C speed, 76-column lines) rather than by set_content's
    # pure-Python encoder, which cost more than the SMTP exchange on a 50 KB digest.
    text = _text_part("plain", rendered.text)
    if rendered.html is None:
        _adopt(msg, text)
    else:
        msg["MIME-Version"] = "1.0"
        msg["Content-Type"] = "multipart/alternative"
        msg.set_payload([text, _text_part("html", rendered.html)])
    # Bodies are encoded by now (at 76 columns). From here on, allow header lines up to the
    # RFC 5322 limit so that List-Unsubscribe's long signed URL is folded, never RFC 2047
    # encoded: mailbox providers must read it verbatim.
    msg.policy = msg.policy.clone(max_line_length=998)
    return msg


def _text_part(subtype: str, content: str) -> EmailMessage:
    """A UTF-8 text part, quoted-printable, line ends normalised as set_content does."""
    part = EmailMessage()
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["Content-Transfer-Encoding"] = "quoted-printable"
    body = "\n".join(content.splitlines()) + "\n"
    part.set_payload(binascii.b2a_qp(body.encode("utf-8"), istext=True).decode("ascii"))
    return part


def _adopt(msg: EmailMessage, part: EmailMessage) -> None:
    """Make ``msg`` itself the single text part (a text-only digest is not multipart)."""
    msg["MIME-Version"] = "1.0"
    for name in ("Content-Type", "Content-Transfer-Encoding"):
        msg[name] = part[name]
    msg.set_payload(part.get_payload())


@dataclass(frozen=True)
class Addressed:
    """A message with its own envelope sender (MAIL FROM), a VERP address: sign-up mail."""

    message: EmailMessage
    sender: str


@dataclass(frozen=True)
class DigestMail:
    """One personalised digest, ready to become an EmailMessage or the bytes for the wire."""

    rendered: Rendered
    from_header: str
    to_email: str
    to_name: str | None
    msg_id: str
    unsubscribe_url: str
    unsubscribe_mailto: str
    when: datetime
    #: The List-Id value (:func:`list_id_header`); none when empty.
    list_id: str = ""
    #: The envelope sender (MAIL FROM): a VERP address (digests.verp), else the From's.
    envelope_from: str = ""

    @property
    def sender(self) -> str:
        """The envelope sender: :attr:`envelope_from`, else the address of the From."""
        return self.envelope_from or check_sender(self.from_header)[1]

    def message(self) -> EmailMessage:
        """The digest as an EmailMessage (the file backend, tests)."""
        return build_message(
            self.rendered,
            from_header=self.from_header,
            to_email=self.to_email,
            to_name=self.to_name,
            msg_id=self.msg_id,
            unsubscribe_url=self.unsubscribe_url,
            unsubscribe_mailto=self.unsubscribe_mailto,
            list_id=self.list_id,
            when=self.when,
        )

    def wire(self, sign: Callable[[bytes], bytes] | None = None) -> bytes:
        """The same message as :meth:`message` gives, flattened for SMTP (CRLF line ends);
        passed through ``sign`` (a DKIM signer's) when one is given.

        Built (and signed) once per message: the sender's thread sends what was prepared.
        """
        if sign is None:
            return self._wire
        signed = self.__dict__.get("_signed")
        if signed is None:  # the dataclass is frozen: cached as cached_property caches
            signed = self.__dict__["_signed"] = sign(self._wire)
        return signed

    def data_block(self, sign: Callable[[bytes], bytes] | None = None) -> bytes:
        """What follows the SMTP ``DATA`` command for :meth:`wire`: dot-stuffed (RFC 5321
        4.5.2), ending in CRLF "." CRLF. Kept, like :meth:`wire`: the sender's thread only
        writes it."""
        block = self.__dict__.get("_data_block")
        if block is None:
            block = self.__dict__["_data_block"] = data_block(self.wire(sign))
        return block

    @functools.cached_property
    def _wire(self) -> bytes:
        """See :meth:`wire`.

        Assembled directly: building and flattening an EmailMessage parses and refolds every
        header and writes the bodies line by line in Python, several times the cost of the
        SMTP exchange itself. An address that is not ASCII goes out as UTF-8 (SMTPUTF8,
        RFC 6531), as ``send_message`` would write it; everything else is 7-bit.
        """
        from_addr = check_sender(self.from_header)[1]
        if not (_plain_address(self.to_email) and _plain_address(from_addr)):
            # A quoted local part and the like: let the email package write it.
            return flatten(self.message(), utf8=not (self.to_email + from_addr).isascii())
        rendered = self.rendered
        text = rendered.text_qp if rendered.text_qp is not None else quoted_printable(rendered.text)
        if rendered.html is None:
            body = _TEXT_HEAD + text
        else:
            html = rendered.html_qp
            if html is None:
                html = quoted_printable(rendered.html)
            boundary = f"==============={secrets.randbelow(10**19):019d}=="
            body = (
                f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
                f"--{boundary}\r\n{_PART_HEAD}plain{_PART_TAIL}{text}\r\n"
                f"--{boundary}\r\n{_PART_HEAD}html{_PART_TAIL}{html}\r\n"
                f"--{boundary}--\r\n"
            )
        return (self._headers() + "MIME-Version: 1.0\r\n" + body).encode("utf-8")

    def _headers(self) -> str:
        fields = [
            ("From", _from_field(self.from_header)),
            ("To", _mailbox(self.to_name or "", self.to_email)),
            ("Subject", _encoded("Subject", self.rendered.subject)),
            ("Date", _date_field(self.when)),
            ("Message-ID", _one_line(self.msg_id)),
            *list_fields(
                self.unsubscribe_url, self.unsubscribe_mailto, self.list_id, fold=",\r\n "
            ),
        ]
        return "".join(f"{name}: {value}\r\n" for name, value in fields)


@functools.lru_cache(maxsize=16)  # one From and one Date for every message of a run
def _from_field(from_header: str) -> str:
    return _mailbox(*check_sender(from_header))


@functools.lru_cache(maxsize=16)
def _date_field(when: datetime) -> str:
    return format_datetime(when)


#: What an address must not hold to be written unquoted (and what would inject a header).
_NOT_PLAIN = re.compile(r'[\s<>()\[\],;:"\\]')
#: Display-name characters that need a quoted string (as email.utils.formataddr quotes).
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_PART_HEAD = "Content-Type: text/"
_PART_TAIL = '; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
_TEXT_HEAD = f"{_PART_HEAD}plain{_PART_TAIL}"


def quoted_printable(content: str) -> str:
    """Quoted-printable UTF-8 with CRLF line ends (set_content's line-end normalisation).

    Encoded a block of lines at a time (quoted-printable never joins input lines, so the
    result is the same as line by line): the lines of one digest's content repeat for every
    subscriber who gets it, only the few personal ones differ, so each distinct block is
    encoded once and the blocks holding a personal line are encoded each time.
    """
    cache = _QP_BLOCKS
    if len(cache) > _QP_CACHE_BLOCKS:  # bounded: a run sees a few distinct contents
        cache.clear()
    lines = content.splitlines() or [""]  # an empty body is still one line
    out = []
    for start in range(0, len(lines), _QP_BLOCK_LINES):
        # With its line end: b2a_qp treats trailing blanks at the end of data differently.
        block = "\n".join(lines[start : start + _QP_BLOCK_LINES]) + "\n"
        encoded = cache.get(block)
        if encoded is None:
            cache[block] = encoded = _qp_block(block)
        out.append(encoded)
    return "".join(out)


def quoted_printable_lines(content: str) -> str:
    """:func:`quoted_printable` without the block cache: for lines met once (personal ones)."""
    return _qp_block("\n".join(content.splitlines() or [""]) + "\n")


def _qp_block(block: str) -> str:
    """Lines each ending in "\\n", encoded, with CRLF line ends."""
    return binascii.b2a_qp(block.encode(), istext=True).decode("ascii").replace("\n", "\r\n")


_QP_BLOCKS: dict[str, str] = {}
_QP_BLOCK_LINES = 16
_QP_CACHE_BLOCKS = 5_000


@functools.lru_cache(maxsize=1024)  # a run's subjects repeat for every subscriber
def _encoded(name: str, value: str) -> str:
    """An unstructured header value on one logical line, RFC 2047 encoded when not ASCII."""
    value = _one_line(value)
    charset = "us-ascii" if value.isascii() else "utf-8"
    return Header(value, charset, header_name=name).encode(linesep="\r\n")


def _plain_address(addr: str) -> bool:
    """Whether ``addr`` can go between angle brackets as it is (no quoting, one line)."""
    return bool(addr) and not _NOT_PLAIN.search(addr)


def _mailbox(name: str, addr: str) -> str:
    """``name <addr>``: the name quoted or RFC 2047 encoded as needed (RFC 5322 3.4)."""
    name = _one_line(name)
    return f"{_phrase(name, 'To')} <{addr}>" if name else addr


def _phrase(name: str, header: str) -> str:
    """A display name as a header phrase: as is, quoted, or RFC 2047 encoded."""
    if not name.isascii():
        return _encoded(header, name)
    if _SPECIALS.search(name):
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return name


def flatten(msg: EmailMessage, *, utf8: bool) -> bytes:
    """``msg`` as it goes over the wire: CRLF line ends (RFC 5321 2.3.8), flattened once.

    ``utf8``: headers in UTF-8 instead of encoded words (SMTPUTF8, RFC 6531), as
    ``smtplib.send_message`` writes a message to an address that is not ASCII.
    """
    out = io.BytesIO()
    policy = msg.policy.clone(linesep="\r\n")
    if utf8 and isinstance(policy, EmailPolicy):  # compat32 has no UTF-8 header mode
        policy = policy.clone(utf8=True)
    BytesGenerator(out, policy=policy).flatten(msg, linesep="\r\n")
    return out.getvalue()


def data_block(wire: bytes) -> bytes:
    """``wire`` as it follows the SMTP ``DATA`` command: a line that starts with "." gets one
    more (RFC 5321 4.5.2), and CRLF "." CRLF ends it (after a CRLF added if missing)."""
    if b"\n." in wire:  # every line but the first starts after a line feed
        wire = wire.replace(b"\n.", b"\n..")
    if wire.startswith(b"."):
        wire = b"." + wire
    return wire + (b".\r\n" if wire.endswith(b"\r\n") else b"\r\n.\r\n")
