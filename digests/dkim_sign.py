"""DKIM signatures (RFC 6376) for outgoing digests, with dkimpy; the DNS record to publish.

RFC 8058 3: a one-click unsubscribe only counts when a DKIM signature covers both
List-Unsubscribe and List-Unsubscribe-Post, so the signer refuses a header list without them.
Headers that a forwarder or attacker could usefully add a second time are signed once more
than they occur ("over-signing", RFC 6376 5.4.2 and 8.15): adding one breaks the signature.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Sequence

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

#: Covered by default: the identity and list headers mailbox providers judge, and the MIME
#: structure (a changed Content-Type would let the body be re-read differently).
DEFAULT_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
)
#: Always covered: RFC 6376 5.4 (From), RFC 8058 3 (the two one-click headers).
REQUIRED_HEADERS = frozenset({"from", "list-unsubscribe", "list-unsubscribe-post"})
#: Signed one extra time so that a second instance cannot be added unnoticed.
OVERSIGNED = frozenset({"from", "subject", "list-id", "list-unsubscribe", "list-unsubscribe-post"})
MIN_KEY_BITS = 1024  # RFC 8301 3.2: verifiers reject shorter RSA keys
MAX_KEY_FILE = 64 * 1024  # a PEM RSA key is a few kilobytes
TXT_STRING_MAX = 255  # RFC 1035 3.3.14: one character-string holds at most 255 octets

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


class DkimError(ValueError):
    """A message that cannot be signed, or a signer that cannot be built."""


class DkimKeyError(DkimError):
    """The private key file is missing, unreadable, not PEM, encrypted or not a usable RSA key."""


def load_private_key(path: str | os.PathLike[str]) -> bytes:
    """The PEM bytes of an RSA private key file; DkimKeyError (one line naming the path)."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as fh:
            data = fh.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise DkimKeyError(f"DKIM private key {where}: no such file") from None
    except IsADirectoryError:
        raise DkimKeyError(f"DKIM private key {where}: is a directory") from None
    except PermissionError:
        raise DkimKeyError(f"DKIM private key {where}: permission denied") from None
    except OSError as exc:
        raise DkimKeyError(f"DKIM private key {where}: cannot be read ({exc.strerror})") from None
    _rsa_key(data, where)
    return data


def _rsa_key(pem: bytes, where: str) -> rsa.RSAPrivateKey:
    """The RSA key in ``pem``; DkimKeyError naming ``where`` when it is not a usable one."""
    if len(pem) > MAX_KEY_FILE or b"PRIVATE KEY-----" not in pem:
        raise DkimKeyError(f"DKIM private key {where}: not a PEM private key")
    try:
        key: PrivateKeyTypes = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise DkimKeyError(
            f"DKIM private key {where}: encrypted with a passphrase; store it unencrypted"
        ) from None
    except ValueError:
        raise DkimKeyError(f"DKIM private key {where}: not a readable PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimKeyError(f"DKIM private key {where}: not an RSA key (rsa-sha256 needs one)")
    if key.key_size < MIN_KEY_BITS:
        raise DkimKeyError(
            f"DKIM private key {where}: {key.key_size} bits is too short (2048 recommended)"
        )
    return key


def _name(value: str, what: str) -> str:
    value = value.strip().rstrip(".").lower()
    if len(value) > 253 or not _NAME.fullmatch(value):
        raise DkimError(f"DKIM {what} is not a DNS name: {value!r}")
    return value


def dns_record(selector: str, domain: str, private_key_pem: bytes) -> str:
    """The zone-file line to publish for this key (RFC 6376 3.6.1), e.g.

    ``s1._domainkey.example.org. IN TXT "v=DKIM1; k=rsa; p=MIIB..." "..."``; the value is
    split into strings of at most 255 characters, which resolvers join (RFC 7208 3.3 style).
    """
    key = _rsa_key(private_key_pem, "given")
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    value = f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode('ascii')}"
    strings = [value[i : i + TXT_STRING_MAX] for i in range(0, len(value), TXT_STRING_MAX)]
    owner = f"{_name(selector, 'selector')}._domainkey.{_name(domain, 'domain')}."
    return f"{owner} IN TXT " + " ".join(f'"{s}"' for s in strings)


class DkimSigner:
    """Signs messages for one domain and selector: relaxed/relaxed, rsa-sha256."""

    def __init__(
        self,
        domain: str,
        selector: str,
        private_key_pem: bytes,
        headers: Sequence[str] = DEFAULT_HEADERS,
    ) -> None:
        self.domain = _name(domain, "domain")
        self.selector = _name(selector, "selector")
        key = _rsa_key(private_key_pem, "given")
        self._pem = private_key_pem
        # dkimpy reads PKCS#1 or PKCS#8 PEM with LF line ends only: hand it a normal form.
        self._dkimpy_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        names = list(dict.fromkeys(h.strip().lower() for h in headers if h.strip()))
        missing = REQUIRED_HEADERS.difference(names)
        if missing:
            raise DkimError(f"DKIM headers must include {', '.join(sorted(missing))}")
        self.headers = tuple(names)
        self._include = [n.encode("ascii") for n in names + [n for n in names if n in OVERSIGNED]]

    def sign(self, message_bytes: bytes) -> bytes:
        """``message_bytes`` with a DKIM-Signature header prepended (same line ends)."""
        head_end = message_bytes.find(b"\n\n")
        crlf = message_bytes.find(b"\r\n")
        linesep = b"\r\n" if crlf != -1 and (head_end == -1 or crlf < head_end) else b"\n"
        try:
            signature = dkim.sign(
                message_bytes,
                self.selector.encode("ascii"),
                self.domain.encode("ascii"),
                self._dkimpy_pem,
                canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=b"rsa-sha256",
                include_headers=self._include,
                linesep=linesep,
            )
        except dkim.DKIMException as exc:
            raise DkimError(f"cannot DKIM-sign the message: {exc}") from None
        return signature + message_bytes

    def dns_record(self) -> str:
        """The TXT record that verifies this signer's signatures (see :func:`dns_record`)."""
        return dns_record(self.selector, self.domain, self._pem)
