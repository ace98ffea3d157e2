"""digests.dkim_sign: signatures dkimpy verifies against our own DNS record, and key errors.

A 2048-bit RSA key is generated once per module in a temporary directory; verification
uses dkim.verify with a dnsfunc that answers from dns_record()'s zone-file line.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

dkim = pytest.importorskip("dkim")

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

from digests.dkim_sign import (  # noqa: E402
    DkimError,
    DkimKeyError,
    DkimSigner,
    dns_record,
    load_private_key,
)
from digests.mail import DigestMail  # noqa: E402
from digests.render import Rendered  # noqa: E402

DOMAIN, SELECTOR = "lists.example.org", "lw2026"
PAPER = (
    "Small fibre neuropathy in fibromyalgia: a systematic review of skin biopsy studies. "
    "Journal of Pain Research 2026; 19: 101-118. doi:10.2147/JPR.S000000\n"
)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, fmt: serialization.PrivateFormat
) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


@pytest.fixture(scope="module")
def key_file(key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dkim") / "lw2026.private"
    path.write_bytes(pem(key, serialization.PrivateFormat.PKCS8))
    return path


@pytest.fixture(scope="module")
def signer(key_file: Path) -> DkimSigner:
    return DkimSigner(DOMAIN, SELECTOR, load_private_key(key_file))


def digest_message(size: int = 30_000) -> bytes:
    """A digest as the sender writes it (DigestMail.wire), with a List-Id, about ``size`` bytes."""
    text = PAPER * (size // (2 * len(PAPER)))
    html = "<html><body>" + f"<p>{PAPER}</p>" * (size // (2 * len(PAPER))) + "</body></html>"
    wire = DigestMail(
        rendered=Rendered("litwatch weekly digest: 40 new papers (2026-03-02)", text, html),
        from_header="Litwatch Digest <digest@lists.example.org>",
        to_email="dana.reader@example.com",
        to_name="Dana Reader",
        msg_id="<litwatch.2026-03-02.4217.0f3c2a9d1b7e4c55@lists.example.org>",
        unsubscribe_url="https://lists.example.org/unsubscribe/" + "t" * 120,
        unsubscribe_mailto="unsubscribe@lists.example.org",
        when=datetime(2026, 3, 2, 7, 0, tzinfo=UTC),
    ).wire()
    # RFC 2919 List-Id, which the sender will add with the signer.
    return b"List-Id: Weekly literature digest <digest.lists.example.org>\r\n" + wire


def dns_from(record: str) -> Callable[..., bytes | None]:
    """A dkimpy dnsfunc answering the one TXT record a zone-file line publishes."""
    owner, rest = record.split(" IN TXT ", 1)
    value = "".join(re.findall(r'"([^"]*)"', rest)).encode("ascii")

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return value if name.decode("ascii").lower() == owner.lower() else None

    return lookup


def verifies(signed: bytes, signer: DkimSigner) -> bool:
    return bool(dkim.verify(signed, dnsfunc=dns_from(signer.dns_record())))


def signature_tags(signed: bytes) -> dict[str, str]:
    header = signed.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n", "")
    value = re.search(r"DKIM-Signature:(.*?)(?=\S+:\s|$)", header)
    assert value is not None
    return {
        k.strip(): "".join(v.split())
        for k, _, v in (t.partition("=") for t in value.group(1).split(";"))
        if k.strip()
    }


def test_signed_digest_verifies_with_the_published_record(signer: DkimSigner) -> None:
    message = digest_message()
    assert 28_000 < len(message) < 34_000
    signed = signer.sign(message)
    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(message)
    assert verifies(signed, signer)
    tags = signature_tags(signed)
    assert (tags["a"], tags["c"], tags["d"], tags["s"]) == (
        "rsa-sha256",
        "relaxed/relaxed",
        DOMAIN,
        SELECTOR,
    )
    covered = tags["h"].lower().split(":")
    for name in ("from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe"):
        assert name in covered
    # RFC 8058 3; over-signed so that a second copy cannot be added.
    assert covered.count("list-unsubscribe") == covered.count("list-unsubscribe-post") == 2


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"https://lists.example.org/unsubscribe/", b"https://evil.example/unsubscribe/"),
        (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: x"),
        (b"List-Id: Weekly", b"List-Id: Monthly"),
        (b"Subject: litwatch weekly", b"Subject: litwatch WEEKLY"),
        (b"Small fibre neuropathy", b"Large fibre neuropathy"),  # the body
    ],
    ids=["list-unsubscribe", "list-unsubscribe-post", "list-id", "subject", "body"],
)
def test_tampering_breaks_the_signature(signer: DkimSigner, old: bytes, new: bytes) -> None:
    signed = signer.sign(digest_message())
    assert old in signed
    assert not verifies(signed.replace(old, new, 1), signer)


def test_an_added_list_unsubscribe_breaks_the_signature(signer: DkimSigner) -> None:
    signed = signer.sign(digest_message())
    extra = b"List-Unsubscribe: <https://evil.example/u>\r\n"
    at = signed.index(b"\r\nList-Id:") + 2
    assert not verifies(signed[:at] + extra + signed[at:], signer)


def test_relaxed_canonicalisation_survives_refolding(signer: DkimSigner) -> None:
    signed = signer.sign(digest_message())
    refolded = signed.replace(b"Subject: litwatch weekly", b"Subject:   litwatch \r\n\t weekly")
    assert refolded != signed and verifies(refolded, signer)


def test_lf_message_gets_an_lf_signature(signer: DkimSigner) -> None:
    message = digest_message(3_000).replace(b"\r\n", b"\n")
    signed = signer.sign(message)
    assert b"\r" not in signed[: len(signed) - len(message)]
    assert verifies(signed, signer)


@pytest.mark.parametrize(
    "fmt",
    [serialization.PrivateFormat.TraditionalOpenSSL, serialization.PrivateFormat.PKCS8],
    ids=["pkcs1", "pkcs8"],
)
@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_key_formats(key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat, crlf: bool) -> None:
    data = pem(key, fmt)
    if crlf:
        data = data.replace(b"\n", b"\r\n")  # a key edited on Windows
    signer = DkimSigner(DOMAIN, SELECTOR, data)
    assert verifies(signer.sign(digest_message(3_000)), signer)


def test_dns_record_is_the_zone_line_for_the_public_key(key: rsa.RSAPrivateKey) -> None:
    record = dns_record("LW2026", "Lists.Example.ORG.", pem(key, serialization.PrivateFormat.PKCS8))
    assert record.startswith('lw2026._domainkey.lists.example.org. IN TXT "v=DKIM1; k=rsa; p=')
    strings = re.findall(r'"([^"]*)"', record)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)  # RFC 1035 3.3.14
    assert record == record.strip() and "\n" not in record
    p = "".join(strings).split("p=", 1)[1]
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert base64.b64decode(p) == spki


def test_signer_refuses_headers_without_rfc8058_fields(key_file: Path) -> None:
    data = load_private_key(key_file)
    with pytest.raises(DkimError, match="list-unsubscribe, list-unsubscribe-post"):
        DkimSigner(DOMAIN, SELECTOR, data, headers=("From", "To", "Subject"))
    with pytest.raises(DkimError, match="from"):
        DkimSigner(DOMAIN, SELECTOR, data, headers=("List-Unsubscribe", "List-Unsubscribe-Post"))


@pytest.mark.parametrize(("domain", "selector"), [("exa mple.org", "s1"), (DOMAIN, 's1"; x')])
def test_signer_refuses_bad_names(key_file: Path, domain: str, selector: str) -> None:
    with pytest.raises(DkimError, match="not a DNS name"):
        DkimSigner(domain, selector, load_private_key(key_file))


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "key.pem"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp, key: tmp / "absent.pem", "no such file"),
        (lambda tmp, key: tmp, "is a directory"),
        (lambda tmp, key: _write(tmp, b"ssh-rsa AAAAB3Nza... me@host\n"), "not a PEM private key"),
        (
            lambda tmp, key: _write(
                tmp, b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
            ),
            "not a readable PEM private key",
        ),
        (
            lambda tmp, key: _write(
                tmp,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(b"passphrase"),
                ),
            ),
            "encrypted with a passphrase",
        ),
        (
            lambda tmp, key: _write(
                tmp, pem(ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.PKCS8)
            ),
            "not an RSA key",
        ),
    ],
    ids=["missing", "directory", "not-pem", "bad-pem", "encrypted", "ec-key"],
)
def test_load_private_key_errors_name_the_path(
    tmp_path: Path,
    key: rsa.RSAPrivateKey,
    make: Callable[[Path, rsa.RSAPrivateKey], Path],
    message: str,
) -> None:
    path = make(tmp_path, key)
    with pytest.raises(DkimKeyError) as raised:
        load_private_key(path)
    text = str(raised.value)
    assert text.startswith(f"DKIM private key {path}: ") and message in text
    assert "\n" not in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_file(tmp_path: Path, key_file: Path) -> None:
    path = _write(tmp_path, key_file.read_bytes())
    path.chmod(0)
    with pytest.raises(DkimKeyError, match="permission denied"):
        load_private_key(path)
