"""The fast wire writer (DigestMail.wire) must say exactly what the EmailMessage path says."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from digests.mail import DigestMail
from digests.render import Rendered

WHEN = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
HTML = "<html><body><p>Zoë &lt;b&gt; — " + "long line " * 40 + "=tail</p></body></html>\n"
TEXT = "Hello Zoë <b>&amp;</b>,\n\n" + "x" * 200 + "\nIL-6 <5 pg/mL =3D not encoded twice\n"


def mail(**over: object) -> DigestMail:
    values: dict[str, object] = {
        "rendered": Rendered("litwatch weekly digest: 3 new papers (2026-03-02)", TEXT, HTML),
        "from_header": "Litwatch Digest <digest@example.org>",
        "to_email": "zoe@example.org",
        "to_name": "Zoë <b>&amp;</b>",
        "msg_id": "<litwatch.2026-03-02.1.abc@example.org>",
        "unsubscribe_url": "https://digest.example.org/u/" + "t" * 120,
        "unsubscribe_mailto": "unsubscribe@example.org",
        "when": WHEN,
        "list_id": '"Litwatch: weekly" <litwatch.example.org>',
    }
    values.update(over)
    return DigestMail(**values)  # type: ignore[arg-type]


def parsed(raw: bytes):  # type: ignore[no-untyped-def]
    return message_from_bytes(raw, policy=policy.default)


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"to_name": None},
        {"rendered": Rendered("litwatch weekly digest: nothing new (2026-03-02)", TEXT, None)},
        {"to_name": "Evil\r\nBcc: victim@example.org"},
        {"unsubscribe_mailto": ""},
    ],
    ids=["html", "no-name", "text-only", "header-injection", "no-mailto"],
)
def test_wire_says_what_the_message_says(over: dict[str, object]) -> None:
    digest = mail(**over)
    fast, slow = parsed(digest.wire()), digest.message()
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe",
                 "List-Unsubscribe-Post", "Auto-Submitted", "Precedence"):  # fmt: skip
        assert str(fast[name]) == str(slow[name]), name
    assert fast["Bcc"] is None and "\r\nBcc:" not in digest.wire().decode()
    assert [p.get_content_type() for p in fast.walk()] == [
        p.get_content_type() for p in slow.walk()
    ]
    for kind in ("plain", "html"):
        a, b = fast.get_body(preferencelist=(kind,)), slow.get_body(preferencelist=(kind,))
        if b is None or b.get_content_type() != f"text/{kind}":
            continue
        # Parsed from the wire, a body keeps its CRLF line ends; in memory it has LF.
        assert a is not None and a.get_content().replace("\r\n", "\n") == b.get_content()
    raw = digest.wire()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"List-Unsubscribe: <https://digest.example.org/u/" in raw  # verbatim, not encoded
