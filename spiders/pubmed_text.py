"""Text of PubMed elements: inline markup and MathML flattened, abstracts with their section
labels, author names in PubMed's stored form ("Surname INITIALS")."""

from __future__ import annotations

import re

from lxml.etree import _Element as Element

from crawler.normalise import squash

_MATHML = "{http://www.w3.org/1998/Math/MathML}"


def clean_text(text: str | None) -> str | None:
    """:func:`crawler.normalise.squash`, with a fast path for ASCII (most PubMed text)."""
    if text is None:
        return None
    if text.isascii():  # nothing invisible to drop; str.split() is ~3x faster than a regex
        return " ".join(text.split()) or None
    return squash(text)


def plain_text(el: Element) -> str | None:
    """The text of an element with inline markup and MathML flattened, white space squashed."""
    if len(el) == 0:  # the common case: no markup at all
        return clean_text(el.text)
    parts: list[str] = []
    _flatten(el, parts)
    return clean_text("".join(parts))


# Plain concatenation turns "2.4×10<sup>28</sup>" into "2.4×1028", a different number. Scripts
# made only of digits and signs have Unicode forms ("10²⁸", "h⁻¹", "CO₂"), which stay correct in
# a plain-text mail; anything else ("3<sup>rd</sup>", "p<sub>trend</sub>") is kept as written.
# NFKD (used by title fingerprints) maps these back to ASCII digits.
_SCRIPT_CHARS = "0123456789+-\u2212=()"
_SCRIPTS = {
    "sup": str.maketrans(_SCRIPT_CHARS, "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁻⁼⁽⁾"),
    "sub": str.maketrans(_SCRIPT_CHARS, "₀₁₂₃₄₅₆₇₈₉₊₋₋₌₍₎"),
}


def _flatten(el: Element, parts: list[str]) -> None:
    if el.text:
        parts.append(el.text)
    for child in el:
        tag = child.tag
        if isinstance(tag, str):  # comments, PIs and unexpanded entities contribute no text
            if tag.startswith(_MATHML):
                parts.append(_math_text(child))
            elif tag in _SCRIPTS and len(child) == 0:
                parts.append(_script_text(child.text or "", _SCRIPTS[tag]))
            else:
                _flatten(child, parts)
        if child.tail:
            parts.append(child.tail)


def _script_text(text: str, table: dict[int, int]) -> str:
    stripped = text.strip()
    if stripped and all(ord(ch) in table for ch in stripped):
        return stripped.translate(table)
    return text


def _math_text(el: Element) -> str:
    # PubMed pretty-prints MathML; the white space between tokens is indentation, not
    # content, so token texts are joined directly: <mi>V</mi><mo>.</mo><mi>O</mi> -> "V.O".
    # Tails inside <math> are that indentation too, so they are dropped.
    children = [child for child in el if isinstance(child.tag, str)]
    local = str(el.tag).rpartition("}")[2]
    if local in ("msup", "msub", "msubsup") and len(children) >= 2:
        base, *scripts = (_math_text(child) for child in children)
        kinds = {"msup": ["sup"], "msub": ["sub"], "msubsup": ["sub", "sup"]}[local]
        return base + "".join(
            _script_text(t, _SCRIPTS[k]) for t, k in zip(scripts, kinds, strict=False)
        )
    return (el.text or "").strip() + "".join(_math_text(child) for child in children)


def abstract_text(abstract: Element) -> str | None:
    """An ``Abstract`` as plain text: one line per AbstractText, ``LABEL: text`` when labelled.

    Sections are joined by newlines, as PubMed shows them; HTML output collapses them to
    spaces. CopyrightInformation is left out.
    """
    sections = []
    for part in abstract:
        if part.tag != "AbstractText" or not (text := plain_text(part)):
            continue
        label = clean_text(part.get("Label"))
        # "UNLABELLED" is NLM's placeholder for a section without a printed label.
        sections.append(f"{label}: {text}" if label and label != "UNLABELLED" else text)
    return "\n".join(sections) or None


def author_name(author: Element) -> str | None:
    """An author as PubMed prints it: "Goebel A", "Smith JR Jr", or a collective name."""
    if author.get("ValidYN") == "N":  # kept by NLM only to record a correction
        return None
    # One pass over the children, texts only (the last of a repeated element wins): an
    # ingest reads ~10 authors per record, so this is a hot loop.
    texts: dict[str, str | None] = {}
    collective = None
    for child in author:
        tag = child.tag
        if tag in _NAME_PARTS:  # not AffiliationInfo, Identifier: their text is indentation
            texts[tag] = child.text
        elif tag == "CollectiveName":
            collective = child
    if collective is not None:
        return plain_text(collective)
    last = clean_text(texts.get("LastName"))
    if not last:
        return None
    initials = clean_text(texts.get("Initials")) or _initials(clean_text(texts.get("ForeName")))
    suffix = clean_text(texts.get("Suffix"))
    if initials:
        return f"{last} {initials} {suffix}" if suffix else f"{last} {initials}"
    return f"{last} {suffix}" if suffix else last


_NAME_PARTS = frozenset({"LastName", "ForeName", "Initials", "Suffix"})


def _initials(forename: str | None) -> str | None:
    if not forename:
        return None
    return "".join(word[0] for word in re.split(r"[\s\-.]+", forename) if word) or None
