"""``litwatch email dkim-record`` prints the zone line for the configured key."""

from __future__ import annotations

import base64
from pathlib import Path

from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from crawler.cli.app import cli
from tests.support.config import write_toml


def test_dkim_record_for_the_configured_key(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "dkim.pem").write_bytes(pem)
    config = write_toml(
        tmp_path / "litwatch.toml",
        {"email.dkim": {"domain": "lists.example.org", "selector": "lw2026",
                        "key_file": str(tmp_path / "dkim.pem")}},
    )  # fmt: skip
    result = CliRunner().invoke(cli, ["--config", str(config), "email", "dkim-record"])
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert line.startswith('lw2026._domainkey.lists.example.org. IN TXT "v=DKIM1; k=rsa; p=')
    published = "".join(part for part in line.split('"')[1::2]).split("p=", 1)[1]
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert base64.b64decode(published) == spki
    assert "PRIVATE" not in result.output


def test_dkim_record_without_configuration_is_a_usage_error(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "litwatch.toml", {"email.dkim": {"domain": "example.org"}})
    result = CliRunner().invoke(cli, ["--config", str(config), "email", "dkim-record"])
    assert result.exit_code == 2
    assert "[email.dkim] needs domain, selector and key_file" in result.output


def test_dkim_record_with_a_missing_key_file_names_it(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "litwatch.toml",
        {"email.dkim": {"domain": "example.org", "selector": "s1",
                        "key_file": str(tmp_path / "nope.pem")}},
    )  # fmt: skip
    result = CliRunner().invoke(cli, ["--config", str(config), "email", "dkim-record"])
    assert result.exit_code == 2 and "nope.pem" in result.output
