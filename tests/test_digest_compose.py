"""The composer's per-subscriber copy and its wire form equal rendering and encoding whole.

Each subscriber's body is made of the template's constant lines (filled and quoted-printable
encoded once per content) and the few lines holding a personal value; these tests compare
that with the slow, obviously right way: replace the placeholders in the whole body, then
encode the whole body.
"""

from __future__ import annotations

from datetime import date

import pytest

from digests.compose import Composer, Personal
from digests.mail import data_block, quoted_printable
from tests.test_render import golden_entries

PERIOD = date(2026, 3, 2)
HOSTILE = [
    Personal("Ada", "ada@example.org", "https://d.example.org/u/tok1", "https://d.example.org/p/1"),
    Personal(None, "bob@example.org", "https://d.example.org/u/2", "https://d.example.org/p/2"),
    # Values that carry line breaks of every kind str.splitlines() knows, a CR LF, trailing
    # blanks, "=" and dots at the start of a line, markup, and another placeholder's text.
    Personal(
        "Zoë\n.dot =3D <b>&amp;</b>\r\n\x0b\u2028 end ",
        "qz9mail9zq@placeholder.invalid",
        "https://d.example.org/u/\r\n.x",
        "https://placeholder.invalid/Qz9UNSUB9zQ",
    ),
    Personal(" " * 90 + "x" * 200, "e@example.org", "https://d.example.org/u/" + "t" * 300, ""),
    Personal("\n", "\r", "\n\n", ".\n."),
    Personal("Bob\n", "", "", "\r\n"),
    Personal("", "", "", ""),
]


def whole(text: str, personal: Personal, *, escape: bool) -> str:
    """The reference: the placeholders replaced in the whole body, as the composer used to."""
    from digests import compose

    return compose._fill(text, personal, escape=escape)


@pytest.mark.parametrize("fmt", ["html", "text"])
@pytest.mark.parametrize("personal", HOSTILE, ids=range(len(HOSTILE)))
def test_each_copy_and_its_wire_form_equal_the_whole_body_filled_and_encoded(
    fmt: str, personal: Personal
) -> None:
    composer = Composer({"fibromyalgia": "Fibromyalgia"}, "https://d.example.org/archive", "")
    entries = golden_entries()
    first = composer.compose(entries, ["fibromyalgia"], PERIOD, fmt, HOSTILE[0])
    copy = composer.compose(entries, ["fibromyalgia"], PERIOD, fmt, personal)
    assert composer.renders == 1 + (not personal.name)  # a name or not: two templates

    template = composer._cache[next(reversed(composer._cache))].rendered
    assert copy.text == whole(template.text, personal, escape=False)
    assert copy.text_qp == quoted_printable(copy.text)
    if fmt == "text":
        assert copy.html is None and copy.html_qp is None
    else:
        assert template.html is not None
        assert copy.html == whole(template.html, personal, escape=True)
        assert copy.html_qp == quoted_printable(copy.html)
    assert first.text != copy.text or personal == HOSTILE[0]


@pytest.mark.parametrize(
    "body",
    [
        "",
        "\n",
        "Qz9NAMEqZ9",
        "Hi Qz9NAMEqZ9",
        "Hi Qz9NAMEqZ9\n",
        "line\n\nHi Qz9NAMEqZ9, https://placeholder.invalid/Qz9UNSUB9zQ",
        "Qz9NAMEqZ9\nmiddle\n\nqz9mail9zq@placeholder.invalid\nend",
        "a\n\n\n",
    ],
)
@pytest.mark.parametrize("personal", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("escape", [False, True], ids=["text", "html"])
def test_any_body_cut_at_its_placeholders_fills_and_encodes_as_the_whole(
    body: str, personal: Personal, escape: bool
) -> None:
    from digests.compose import _Lines

    text, qp = _Lines(body).fill(personal, escape=escape)
    assert text == whole(body, personal, escape=escape)
    assert qp == quoted_printable(text)


def test_a_body_with_other_line_breaks_is_filled_whole_and_encoded_later() -> None:
    from digests.compose import _Lines

    body = "Hello Qz9NAMEqZ9\ronly a carriage return\n"
    lines = _Lines(body)
    text, qp = lines.fill(HOSTILE[0], escape=False)
    assert (text, qp) == ("Hello Ada\ronly a carriage return\n", None)


@pytest.mark.parametrize(
    ("wire", "block"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b".a\r\n.\r\nb.\r\n..c", b"..a\r\n..\r\nb.\r\n...c\r\n.\r\n"),
        (b"", b"\r\n.\r\n"),
    ],
)
def test_data_block_stuffs_every_leading_dot_and_ends_the_data(wire: bytes, block: bytes) -> None:
    assert data_block(wire) == block
