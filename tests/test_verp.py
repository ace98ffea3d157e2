"""digests.verp: signed per-subscriber envelope senders, and reading them back."""

from __future__ import annotations

import re

import pytest

from digests.bounce_report import find_verp_token
from digests.verp import read_verp, read_verp_token, verp_address, verp_token

SECRET = b"litwatch-test-verp-secret-2026"
OTHER = b"another-installation-secret-000"
#: RFC 5322 3.2.3 dot-atom text, restricted further to what survives case folding.
LOCAL_PART = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\+[0-9]+-[a-z2-7]{16}")


@pytest.mark.parametrize("subscriber_id", [0, 1, 4217, 2**31, 2**63 - 1])
def test_round_trip(subscriber_id: int) -> None:
    address = verp_address(SECRET, subscriber_id, "bounces", "Lists.Example.ORG.")
    local, _, domain = address.partition("@")
    assert domain == "lists.example.org"
    assert LOCAL_PART.fullmatch(local) and len(local) <= 64  # RFC 5321 4.5.3.1.1
    assert read_verp(SECRET, address) == subscriber_id
    assert read_verp(SECRET, f"<{address}>") == subscriber_id
    assert read_verp(SECRET, address.upper()) == subscriber_id  # mail systems that fold case


def test_known_value_stays_stable() -> None:
    # Addresses already out in the world must keep reading back after an upgrade.
    expected = "bounces+4217-gewpmx4p2g5swvj5@lists.example.org"
    assert verp_address(SECRET, 4217, "bounces", "lists.example.org") == expected


def test_longest_id_with_default_prefix_fits_64_octets() -> None:
    local = verp_address(SECRET, 2**63 - 1, "bounces", "example.org").partition("@")[0]
    assert len(local) == len("bounces+") + 19 + 1 + 16 <= 64


def test_token_is_what_the_bounce_parser_finds() -> None:
    address = verp_address(SECRET, 99, "bounces", "lists.example.org")
    token = find_verp_token(f"Delivered-To: {address}")
    assert token == verp_token(SECRET, 99)
    assert token is not None and read_verp_token(SECRET, token) == 99


@pytest.mark.parametrize(
    "address",
    [
        "bounces+4217-gewpmx4p2g5swvj4@lists.example.org",  # one character of the tag changed
        "bounces+4218-gewpmx4p2g5swvj5@lists.example.org",  # another id, same tag
        "bounces+04217-gewpmx4p2g5swvj5@lists.example.org",  # leading zero: not canonical
        "bounces+4217-gewpmx4p2g5swvj@lists.example.org",  # truncated tag
        "bounces+4217gewpmx4p2g5swvj5@lists.example.org",
        "bounces+-1-gewpmx4p2g5swvj5@lists.example.org",
        "bounces+99999999999999999999-aaaaaaaaaaaaaaaa@lists.example.org",  # > BIGINT
        "bounces@lists.example.org",
        "dana.reader@example.com",
        "not an address",
        "",
        "x" * 400,
    ],
)
def test_tampered_or_foreign_addresses_read_as_none(address: str) -> None:
    assert read_verp(SECRET, address) is None


def test_another_installations_secret_does_not_verify() -> None:
    address = verp_address(OTHER, 4217, "bounces", "lists.example.org")
    assert read_verp(OTHER, address) == 4217
    assert read_verp(SECRET, address) is None


def test_custom_prefix_and_prefix_with_plus_in_front() -> None:
    address = verp_address(SECRET, 5, "litwatch.bounce", "example.org")
    assert address.startswith("litwatch.bounce+5-")
    assert read_verp(SECRET, address) == 5
    # A relay that adds its own "+tag" in front still leaves ours last.
    assert read_verp(SECRET, "relay+" + address) == 5


@pytest.mark.parametrize(
    ("prefix", "domain"),
    [
        ("bounces+x", "example.org"),  # a second "+" would confuse reading
        ("", "example.org"),
        (".bounces", "example.org"),
        ("bounces..x", "example.org"),
        ("bounces x", "example.org"),
        ("b" * 46, "example.org"),  # local part of 65 octets (RFC 5321: 64)
        ("bounces", "exa mple.org"),
        ("bounces", "example.org\r\nBcc: x@y"),
        ("bounces", "bücher.example"),  # IDNs must come punycoded
        ("bounces", ""),
    ],
)
def test_bad_prefix_or_domain_is_refused(prefix: str, domain: str) -> None:
    with pytest.raises(ValueError):
        verp_address(SECRET, 1, prefix, domain)


@pytest.mark.parametrize("subscriber_id", [-1, 2**63])
def test_out_of_range_id_is_refused(subscriber_id: int) -> None:
    with pytest.raises(ValueError):
        verp_address(SECRET, subscriber_id, "bounces", "example.org")


def test_bool_is_not_a_subscriber_id() -> None:
    with pytest.raises(TypeError):
        verp_token(SECRET, True)


@pytest.mark.parametrize("secret", [b"", b"short"])
def test_weak_secret_is_refused_both_ways(secret: bytes) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        verp_address(secret, 1, "bounces", "example.org")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        read_verp(secret, "bounces+1-aaaaaaaaaaaaaaaa@example.org")
