"""NCBI E-utilities: the ESearch and EFetch URLs, and ESearch answers (XML or JSON).

Pure functions; the PubMed spider does the fetching and :mod:`spiders.pubmed_xml` reads the
EFetch records. An ESearch that failed may still answer HTTP 200, with its problems in
``ERROR`` / ``ErrorList`` / ``WarningList`` (XML) or ``esearchresult.ERROR`` (JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import urlencode

import lxml.etree

from crawler.xmlsafe import UnsafeXMLError, parse_bytes

# --------------------------------------------------------------------------- ESearch


@dataclass
class ESearchResult:
    """One ESearch answer.

    ``errors`` non-empty means the answer cannot be trusted as "these are the matches": a
    top-level ``ERROR`` (bad database, bad query syntax, backend failure), an unreadable body,
    or an ErrorList entry (PhraseNotFound, FieldNotFound) **when Count is 0**. With no results,
    an unknown phrase is most likely a typo in the configured query, and calling it "nothing new
    this week" would hide it for ever. When Count > 0, NCBI dropped the unknown phrase and
    searched the rest, so the ids are real; the entries go to ``warnings`` for the log, along
    with the WarningList (PhraseIgnored, QuotedPhraseNotFound, OutputMessage).
    """

    count: int = 0
    retmax: int = 0
    retstart: int = 0
    ids: list[str] = field(default_factory=list)
    webenv: str | None = None
    query_key: str | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# JSON list names (retmode=json) mapped to the element names of the XML answer.
_JSON_PROBLEMS = {
    "phrasesnotfound": "PhraseNotFound",
    "fieldsnotfound": "FieldNotFound",
    "phrasesignored": "PhraseIgnored",
    "quotedphrasesnotfound": "QuotedPhraseNotFound",
    "outputmessages": "OutputMessage",
}


def parse_esearch(body: bytes) -> ESearchResult:
    """Read an ESearch answer, XML (the default retmode) or JSON (``retmode=json``).

    Never raises for bad input: problems land in ``errors`` / ``warnings`` (see
    :class:`ESearchResult`) and the caller decides.
    """
    if body.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return _esearch_json(body)
    return _esearch_xml(body)


def _esearch_xml(body: bytes) -> ESearchResult:
    result = ESearchResult()
    try:
        root = parse_bytes(body)
    except (UnsafeXMLError, lxml.etree.XMLSyntaxError) as exc:
        result.errors.append(f"unreadable ESearch answer: {exc}")
        return result
    if root.tag != "eSearchResult":
        result.errors.append(f"unexpected ESearch root element <{root.tag}>")
        return result
    problems: list[str] = []
    for child in root:  # direct children only: TranslationStack has <Count> elements too
        tag, text = child.tag, (child.text or "").strip()
        if tag in ("Count", "RetMax", "RetStart"):
            setattr(result, tag.lower(), _to_int(text, tag, result.errors))
        elif tag == "QueryKey":
            result.query_key = text or None
        elif tag == "WebEnv":
            result.webenv = text or None
        elif tag == "IdList":
            result.ids = [(i.text or "").strip() for i in child if i.tag == "Id"]
        elif tag == "ERROR":
            result.errors.append(text or "ERROR")
        elif tag == "ErrorList":
            problems += [_problem(str(e.tag), e.text) for e in child if isinstance(e.tag, str)]
        elif tag == "WarningList":
            result.warnings += [
                _problem(str(w.tag), w.text) for w in child if isinstance(w.tag, str)
            ]
    _file_problems(result, problems)
    return result


def _esearch_json(body: bytes) -> ESearchResult:
    result = ESearchResult()
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the interpreter's stack (issue 12 A9).
        result.errors.append(f"unreadable ESearch answer: {type(exc).__name__}: {exc}")
        return result
    if not isinstance(data, dict):
        result.errors.append("unexpected ESearch JSON (not an object)")
        return result
    if data.get("error"):  # the rate-limit answer: {"error": "API rate limit exceeded", ...}
        result.errors.append(str(data["error"]))
    found = data.get("esearchresult")
    if not isinstance(found, dict):
        result.errors.append("ESearch JSON has no esearchresult")
        return result
    for key in ("count", "retmax", "retstart"):
        setattr(result, key, _to_int(str(found.get(key, "0")), key, result.errors))
    result.query_key = _opt_str(found.get("querykey"))
    result.webenv = _opt_str(found.get("webenv"))
    result.ids = [str(i).strip() for i in _json_list(found.get("idlist"))]
    if found.get("ERROR"):
        result.errors.append(str(found["ERROR"]))
    result.warnings += _json_problems(found.get("warninglist"))
    _file_problems(result, _json_problems(found.get("errorlist")))
    return result


def _json_problems(section: Any) -> list[str]:
    if not isinstance(section, dict):
        return []
    names = ((_JSON_PROBLEMS.get(str(key), str(key)), values) for key, values in section.items())
    return [_problem(name, str(v)) for name, values in names for v in _json_list(values)]


def _json_list(value: Any) -> list[Any]:
    """A JSON list as it is; any other value (a number, a string, an object) as one item."""
    if isinstance(value, list):
        return value
    return [] if value in (None, "", {}) else [value]


def _problem(name: str, text: str | None) -> str:
    text = (text or "").strip()
    return text if name == "OutputMessage" else f"{name}: {text}"


def _file_problems(result: ESearchResult, problems: list[str]) -> None:
    # See ESearchResult: an unknown phrase only invalidates an answer that found nothing.
    (result.errors if result.count == 0 else result.warnings).extend(problems)


def _to_int(text: str, name: str, errors: list[str]) -> int:
    try:
        return int(text or 0)
    except ValueError:
        errors.append(f"{name} is not a number: {text!r}")
        return 0


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    return str(value).strip() or None


# --------------------------------------------------------------------------- URLs


def esearch_url(
    base_url: str,
    *,
    term: str,
    mindate: date,
    maxdate: date,
    retmax: int,
    tool: str,
    email: str,
    api_key: str | None,
    datetype: str = "edat",
    usehistory: bool = True,
) -> str:
    """The ESearch URL for ``term`` between two dates (inclusive) of kind ``datetype``.

    ``edat`` (Entrez date) is when a record entered PubMed, which is what a poll for new
    records wants; ``usehistory`` keeps the result on NCBI's history server for EFetch paging.
    ``tool`` and ``email`` identify us as the NCBI usage policy asks; ``api_key`` is left out
    when None.
    """
    params: dict[str, str | int] = {
        "db": "pubmed",
        "term": term,
        "datetype": datetype,
        "mindate": _ncbi_date(mindate),
        "maxdate": _ncbi_date(maxdate),
        "retmax": retmax,
    }
    if usehistory:
        params["usehistory"] = "y"
    return _eutils_url(base_url, "esearch.fcgi", params, tool, email, api_key)


def efetch_url(
    base_url: str,
    *,
    webenv: str,
    query_key: str,
    retstart: int,
    retmax: int,
    tool: str,
    email: str,
    api_key: str | None,
) -> str:
    """The EFetch URL for one page (``retstart``, ``retmax``) of a history-server result."""
    params: dict[str, str | int] = {
        "db": "pubmed",
        "query_key": query_key,
        "WebEnv": webenv,
        "retstart": retstart,
        "retmax": retmax,
        "retmode": "xml",
    }
    return _eutils_url(base_url, "efetch.fcgi", params, tool, email, api_key)


def _eutils_url(
    base_url: str,
    endpoint: str,
    params: dict[str, str | int],
    tool: str,
    email: str,
    api_key: str | None,
) -> str:
    params = {**params, "tool": tool, "email": email}
    if api_key is not None:
        params["api_key"] = api_key
    return f"{base_url.rstrip('/')}/{endpoint}?{urlencode(params)}"


def _ncbi_date(day: date) -> str:
    return day.strftime("%Y/%m/%d")
