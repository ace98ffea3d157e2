"""Pure normalisation functions: identifiers, text and titles.

Used by the pipelines, the store and the digests; none of them needs a crawler or a database.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

if TYPE_CHECKING:
    import lxml.html

# A DOI is "10.<registrant>/<suffix>". Validation is deliberately loose (Crossref's advice):
# registrant codes are 4-9 digits, the suffix is anything without white space.
_DOI_VALID = re.compile(r"^10\.\d{4,9}/\S+$")
# Finding a DOI in prose or a URL path: stop at white space, quotes and angle brackets, except
# for a SICI's "<463::AID-JBM6>" part (a digit then a colon inside the brackets), which no HTML
# tag looks like: "10.1002/(SICI)1097-4636(199706)35:4<463::AID-JBM6>3.0.CO;2-R".
_DOI_FIND = re.compile(
    r"\b(10\.\d{4,9}/(?:<\d+:[^\s\"'<>]*>|[^\s\"'<>])+)",
    re.IGNORECASE,
)
# A resolver or publisher URL: its query string and fragment are never part of the DOI (a DOI's
# own "?" or "#" is percent-encoded in a URL).
_URL_START = re.compile(r"^(?:https?://|(?:dx\.|www\.)?doi\.org/)", re.IGNORECASE)
# Prefixes that wrap a DOI: resolver URLs, URI schemes and the printed "DOI:" label.
_DOI_PREFIX = re.compile(
    r"^(?:https?://(?:dx\.|www\.)?doi\.org/|(?:dx\.)?doi\.org/|info:doi/|urn:doi:|doi\s*:\s*|doi\s+)",
    re.IGNORECASE,
)
# NUL too: PostgreSQL refuses it in text, and it is never meaningful in a title.
_INVISIBLE = dict.fromkeys(map(ord, "\x00\ufeff\u200b\u200c\u200d\u2060\u00ad"), None)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_TRAILING = ".,;:'\"!?*"
_PAIRS = {")": "(", "]": "[", "}": "{", ">": "<"}


# A DOI that every step of clean_doi would leave as it is: printable ASCII without "%" or
# white space, starting "10.", and (checked apart) not ending in punctuation or a bracket.
_PLAIN_DOI = re.compile(r"10\.\d{4,9}/[!-$&-~]+")
#: The longest DOI kept (the width of the papers.doi column). Real DOIs are under 100
#: characters; a 400-character "DOI" is a scraping accident, and PostgreSQL would refuse
#: the whole batch holding it (issue 12 A3), so it is no DOI at all.
MAX_DOI = 300
# The longest text searched for one DOI: a resolver URL with a query string (the longest URL
# stored is 2,000 characters). Longer input only makes the clean-up slow.
_MAX_DOI_INPUT = 2048


def clean_doi(raw: str | None) -> str | None:
    """Return the DOI in ``raw`` as it should be displayed, or None when there is none.

    Strips resolver prefixes (``https://doi.org/``, ``dx.doi.org``, ``doi:``, ``info:doi/``),
    percent-decodes once, and drops punctuation that prose put after it (a closing bracket is
    kept when the DOI itself opened it, as in ``10.1016/S0140-6736(20)30183-5``).
    """
    if not raw:
        return None
    if len(raw) > _MAX_DOI_INPUT:
        return None
    if (
        len(raw) <= MAX_DOI
        and _PLAIN_DOI.fullmatch(raw)
        and raw[-1] not in _TRAILING
        and raw[-1] not in _PAIRS
    ):
        return raw  # the common case (every PubMed DOI), for a fraction of the cost
    return _clean_doi(raw)


def _clean_doi(raw: str) -> str | None:
    s = unicodedata.normalize("NFC", raw.translate(_INVISIBLE)).strip()
    if _URL_START.match(s):
        s = re.split(r"[?#]", s, maxsplit=1)[0]
    for _ in range(3):  # "doi: https://doi.org/10..." happens
        stripped = _DOI_PREFIX.sub("", s, count=1).strip()
        if stripped == s:
            break
        s = stripped
    if "%" in s:
        s = unquote(s)  # once: "10.1172%2FJCI144201"; a DOI may itself contain "%25"
    s = s.strip().lstrip("([{<'\"")
    s = _strip_trailing(s)
    if len(s) > MAX_DOI or not _DOI_VALID.match(s):
        return None
    return s


def _strip_trailing(s: str) -> str:
    while s:
        last = s[-1]
        if last in _TRAILING or (last in _PAIRS and s.count(_PAIRS[last]) < s.count(last)):
            s = s[:-1]
        else:
            break
    return s


def doi_key(raw: str | None) -> str | None:
    """The identity key of a DOI: the cleaned DOI with ASCII letters lower-cased.

    DOIs are case-insensitive for ASCII characters only (DOI Handbook 2.4), so non-ASCII
    letters keep their case.
    """
    cleaned = clean_doi(raw)
    return cleaned.translate(_ASCII_LOWER) if cleaned else None


def find_dois(text: str | None) -> list[str]:
    """Every distinct DOI in a piece of prose or a URL, cleaned, in order of appearance.

    A DOI inside a link loses what the link added after it: the query string (``?af=R``,
    ``?TRACK=RSS``), the fragment, and a bioRxiv/medRxiv version suffix (``v1``).
    """
    if not text:
        return []
    found: list[str] = []
    keys: set[str] = set()
    for match in _DOI_FIND.finditer(text):
        candidate = _drop_url_tail(match.group(1), _in_url(text, match.start()))
        cleaned = clean_doi(candidate)
        if cleaned is None:
            continue
        key = cleaned.translate(_ASCII_LOWER)
        if key not in keys:
            keys.add(key)
            found.append(cleaned)
    return found


def _in_url(text: str, start: int) -> bool:
    """Whether the DOI found at ``start`` sits inside a URL ("https://host/doi/10...")."""
    token = re.split(r"[\s\"'<>(]", text[max(0, start - 2000) : start])[-1]
    # A relative link ("/doi/abs/10.1002/anie.201909614?af=R") is a URL path too.
    return "://" in token or token.lower().startswith(("/", "doi.org/", "www.", "dx.doi.org/"))


# bioRxiv/medRxiv page URLs append the version to the DOI: ".../10.1101/2023.12.16.571984v1".
_PREPRINT_VERSION = re.compile(r"^(10\.1101/\d{4}\.\d{2}\.\d{2}\.\d+)v\d+$")


def _drop_url_tail(candidate: str, in_url: bool) -> str:
    """Cut what a link adds after a DOI: a query string ("?af=R"), a fragment, a version."""
    if in_url:
        candidate = re.split(r"[?#]", candidate, maxsplit=1)[0]
        candidate = _PREPRINT_VERSION.sub(r"\1", candidate)
    elif "?" in candidate and ("=" in candidate.split("?", 1)[1] or candidate.endswith("?")):
        # A DOI quoted in prose with a query string still came from a link.
        candidate = candidate.split("?", 1)[0]
    return candidate


_PMID = re.compile(r"^(?:pmid\s*:?\s*|pubmed\s*:\s*)?(\d{1,9})$", re.IGNORECASE)
_PMCID = re.compile(r"^(?:pmcid\s*:?\s*)?(?:pmc)?\s*(\d{1,9})$", re.IGNORECASE)


def pmid(raw: str | int | None) -> str | None:
    """A PubMed id as a string of digits without leading zeros (``pmid:123`` -> ``123``)."""
    if raw is None:
        return None
    m = _PMID.match(str(raw).strip())
    if not m or int(m.group(1)) == 0:
        return None
    return str(int(m.group(1)))


def pmcid(raw: str | None) -> str | None:
    """A PubMed Central id in its canonical ``PMC123`` form."""
    if raw is None:
        return None
    m = _PMCID.match(str(raw).strip())
    if not m or int(m.group(1)) == 0:
        return None
    return f"PMC{int(m.group(1))}"


def squash(text: str | None) -> str | None:
    """Collapse runs of white space, strip the ends and drop invisible characters."""
    if text is None:
        return None
    if not text.isascii() or "\x00" in text:  # NUL is the only invisible ASCII character
        text = text.translate(_INVISIBLE)
    # str.split() splits at white space as the regex \s defines it (str.isspace): the same
    # result as re.sub(r"\s+", " ", text).strip(), three times faster.
    return " ".join(text.split()) or None


_BLOCK_TAGS = {
    "p", "div", "br", "li", "ul", "ol", "tr", "td", "th", "table", "h1", "h2", "h3", "h4",
    "h5", "h6", "blockquote", "section", "article", "header", "footer", "dd", "dt", "hr",
}  # fmt: skip


def html_to_text(fragment: str | None) -> str | None:
    """Reduce an HTML fragment to its plain text.

    For fields that the source declares as HTML (feed summaries, titles with ``<i>``): tags go,
    their text stays, entities are decoded, scripts and styles are dropped, and block
    elements become spaces. The result is plain text, to be escaped once on output.
    """
    if fragment is None:
        return None
    if "<" not in fragment and "&" not in fragment:
        return squash(fragment)
    import lxml.etree  # here, not at the top: a CLI command that never parses HTML
    import lxml.html  # (papers list, status) should not pay for lxml

    try:
        root = lxml.html.fragment_fromstring(fragment, create_parent="div")
    except (lxml.etree.ParserError, ValueError):
        return squash(fragment)
    except AssertionError:
        # lxml asserts that the fragment parsed into one <body>; a fragment of head-only
        # elements ("<title>x</title>", "<meta>") gives none (issue 12 A9). Read it as a
        # document instead: head elements carry no text that is shown.
        try:
            root = lxml.html.document_fromstring(fragment)
        except (lxml.etree.ParserError, ValueError):
            return None
    parts: list[str] = []
    _collect_text(root, parts)
    return squash("".join(parts))


def _collect_text(el: lxml.html.HtmlElement, parts: list[str]) -> None:
    tag = el.tag if isinstance(el.tag, str) else ""
    local = tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1].lower()
    if local in {"script", "style", "head", "title"} or not isinstance(el.tag, str):
        if el.tail:
            parts.append(el.tail)
        return
    block = local in _BLOCK_TAGS
    if block:
        parts.append(" ")
    if el.text:
        parts.append(el.text)
    for child in el:
        _collect_text(child, parts)
    if block:
        parts.append(" ")
    if el.tail:
        parts.append(el.tail)


# Letters of every script count (after accents are removed): a Greek letter tells "TNF-α" from
# "TNF-β", and a Cyrillic or CJK title still gets a key instead of an empty one.
_NON_WORD = re.compile(r"[\W_]+")
#: Titles shorter than this (after normalising) are too generic to identify a paper.
MIN_FINGERPRINT = 24


def title_fingerprint(title: str | None) -> str | None:
    """A normalised title for matching records that have no shared identifier.

    Accents, case, punctuation and white space are removed ("Fibromyalgia: an Auto-immune
    disease?" and "fibromyalgia an autoimmune disease" give the same key). Titles too short
    to identify a paper ("Editorial") give None.
    """
    if not title:
        return None
    if title.isascii():
        # NFKD leaves ASCII as it is and no ASCII character is combining: skip the
        # per-character pass, the costliest step of storing a (mostly ASCII) PubMed batch.
        text = title.lower()
    else:
        text = unicodedata.normalize("NFKD", title)
        text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    key = _NON_WORD.sub("", text)
    if len(key) < MIN_FINGERPRINT:
        return None
    return key[:200]


#: What a DOI keeps unencoded in a doi.org URL (the DOI Handbook's safe characters).
_DOI_URL_SAFE = "/:;()[],.-_+=@!$'*~"


def doi_url(doi: str | None) -> str | None:
    """``https://doi.org/<doi>`` with the DOI percent-encoded, or None for a missing DOI."""
    cleaned = clean_doi(doi)
    return f"https://doi.org/{quote(cleaned, safe=_DOI_URL_SAFE)}" if cleaned else None


def pubmed_url(raw_pmid: str | None) -> str | None:
    """``https://pubmed.ncbi.nlm.nih.gov/<pmid>/``, or None for a missing or bad PMID."""
    canonical = pmid(raw_pmid)
    return f"https://pubmed.ncbi.nlm.nih.gov/{canonical}/" if canonical else None
