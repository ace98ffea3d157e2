"""Author lists that preprint servers print as one string, split into names in PubMed style.

The project stores authors as PubMed prints them ("Goebel A", "Smith JR"; see
:mod:`spiders.pubmed_xml`), so "Surname, Initials" names become "Surname INITIALS".

Forms seen in real answers:

* api.biorxiv.org ``authors``: one name per ``;``, each "Surname, I. I." ("Gomez Cuautle, D. D.;
  Rossi, A. R."); the ``;`` is the only reliable separator, so a name is never split further.
* bioRxiv/medRxiv RSS ``dc:creator``: every author in one string, names *and* their initials
  separated by the same comma ("LAPALU, N., SIMON, A., Plaumann, P.-L., O'Connell, R. J.").
  A part made only of initials belongs to the part before it.
* Europe PMC ``authorString``: PubMed names separated by commas, a full stop at the end
  ("Schoenfeld JD, Haas-Kogan DA, O'Neill AF.").

Work is linear in the length of the string: a few ``str.split`` passes, no backtracking regex.
"""

from __future__ import annotations

import re

from crawler.normalise import squash

__all__ = ["pubmed_style", "split_author_string"]

# The first letter of each word of a given name: "R. J." -> R J, "P.-L." -> P L.
_WORD_STARTS = re.compile(r"\b[^\W\d_]")
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv"})
# Runs of separators split once ("a;;; b" is two parts, not four). Each pattern starts with a
# literal, so it is only tried where that character is: linear on any input.
_SEMICOLONS = re.compile(r";[\s;]*")
_COMMAS = re.compile(r",[\s,]*")
# What the last name of a comma list can still take: initials, a suffix, or nothing.
_OPEN, _PAIRED, _CLOSED = "open", "paired", "closed"
# Single letters, each followed by separators: "N.", "R. J.", "P.-L.", "A". Letter and separator
# classes are disjoint, so matching is linear.
_INITIALS = re.compile(r"[^\W\d_](?:[.\s\-\u2010]+[^\W\d_])*\.?")


def split_author_string(raw: str | None) -> list[str]:
    """Every distinct author in ``raw``, in order, each in PubMed style ("Lapalu N").

    A "Surname, Given" name is never torn at its comma: with ``;`` separators each part is one
    name; with commas only, a part of initials ("N.", "P.-L.") joins the surname before it.
    """
    if not raw:
        return []
    if ";" in raw:
        printed = [part for chunk in _SEMICOLONS.split(raw) if (part := _clean(chunk))]
    else:
        printed = [name for line in raw.splitlines() for name in _split_commas(line)]
    # Identical printed names give identical output: style each distinct one once.
    styled = (_style(name) for name in dict.fromkeys(printed))
    return list(dict.fromkeys(name for name in styled if name))


def _clean(part: str) -> str | None:
    cleaned = squash(part)
    return cleaned.strip(", ") or None if cleaned else None


def _split_commas(line: str) -> list[str]:
    """Names in a comma-separated line, re-joining "Surname, Initials" pairs."""
    parts = [part for piece in _COMMAS.split(line) if (part := squash(piece))]
    initials = [_is_initials(part) for part in parts]
    if not any(initials) and _all_pairs(parts):
        # "Smith, John, Doe, Jane": single words in pairs can only be "Surname, Given".
        return [f"{parts[i]}, {parts[i + 1]}" for i in range(0, len(parts), 2)]
    names: list[str] = []
    state = _CLOSED  # what the last name can still take
    for part, initial in zip(parts, initials, strict=True):
        if initial and state == _OPEN:
            names[-1] = f"{names[-1]}, {part}"  # "LAPALU" + "N."
            state = _PAIRED
        elif not initial and state == _PAIRED and _is_suffix(part):
            names[-1] = f"{names[-1]}, {part}"  # "Smith, J." + "Jr."
            state = _CLOSED
        else:
            names.append(part)
            state = _CLOSED if initial else _OPEN
    return names


def _all_pairs(parts: list[str]) -> bool:
    return len(parts) >= 2 and len(parts) % 2 == 0 and all(" " not in p for p in parts)


def _is_initials(part: str) -> bool:
    """ "N.", "R. J.", "P.-L.", "A": single capital letters, optionally dotted or hyphenated."""
    return len(part) <= 24 and part.isupper() and _INITIALS.fullmatch(part) is not None


def _is_suffix(part: str) -> bool:
    return len(part) <= 4 and part.rstrip(".").lower() in _SUFFIXES


def pubmed_style(name: str) -> str | None:
    """One printed name in PubMed style: "O'Connell, R. J." -> "O'Connell RJ".

    Names without a comma ("Schoenfeld JD.", "Author One", a consortium) keep their words;
    only a full stop after PubMed-style initials goes.
    """
    cleaned = squash(name)
    return _style(cleaned) if cleaned else None


def _style(name: str) -> str | None:
    """:func:`pubmed_style` of an already squashed name (the hot path of a long list)."""
    if "," not in name:
        return _drop_final_stop(name)
    surname, _, given = name.partition(",")
    surname = surname.strip()
    suffixes: list[str] = []
    if "," in given:  # "Smith, J., Jr."
        pieces = [p.strip() for p in given.split(",")]
        suffixes = [p.rstrip(".") for p in pieces if _is_suffix(p)]
        given = " ".join(p for p in pieces if not _is_suffix(p))
    initials = "".join(_WORD_STARTS.findall(given)).upper()
    return " ".join([part for part in (surname, initials, *suffixes) if part]) or None


def _drop_final_stop(name: str) -> str:
    if not name.endswith(".") or " " not in name:
        return name
    last = name[name.rfind(" ") + 1 : -1]
    return name[:-1] if last.isalpha() and last.isupper() else name
