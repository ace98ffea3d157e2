"""Fake E-utilities EFetch (POSTed PMIDs) and Crossref works answers for the lifecycle watch.

The paper is the JCI passive-transfer study (PMID 34196305, DOI 10.1172/JCI144201), here
retracted by an invented notice (PMID 40000001) and corrected by an invented Crossref notice
(10.5555/correction.1); a second notice names a paper litwatch does not hold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import parse_qs

from sqlalchemy import Engine

from crawler.db.engine import transaction
from crawler.db.models import Delivery, DeliveryPaper, Subscriber
from tests.support.httpserver import LocalHTTPServer, Request, Response

ARTICLE = (
    '<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM">'
    '<PMID Version="1">{pmid}</PMID><Article PubModel="Print">'
    "<Journal><Title>J Test</Title><JournalIssue><PubDate><Year>2021</Year></PubDate>"
    "</JournalIssue></Journal><ArticleTitle>{title}</ArticleTitle>"
    "<PublicationTypeList>{types}</PublicationTypeList></Article>"
    "<CommentsCorrectionsList>{links}</CommentsCorrectionsList></MedlineCitation>"
    '<PubmedData><ArticleIdList><ArticleId IdType="pubmed">{pmid}</ArticleId>'
    "{doi}</ArticleIdList></PubmedData></PubmedArticle>"
)
RETRACTED = ARTICLE.format(
    pmid="34196305",
    title="Passive transfer of fibromyalgia symptoms from patients to mice.",
    types='<PublicationType UI="D016441">Retracted Publication</PublicationType>',
    links='<CommentsCorrections RefType="RetractionIn"><RefSource>J Test. 2026;5:1</RefSource>'
    '<PMID Version="1">40000001</PMID></CommentsCorrections>',
    doi='<ArticleId IdType="doi">10.1172/JCI144201</ArticleId>',
)
PLAIN = ARTICLE.format(
    pmid="30000002", title="A second paper.", types="", links="", doi=""
)  # fmt: skip
NOTICES = {
    "status": "ok",
    "message-type": "work-list",
    "message-version": "1.0.0",
    "message": {
        "total-results": 2,
        "items-per-page": 1000,
        "next-cursor": "cursor-2",
        "items": [
            {
                "DOI": "10.5555/correction.1",
                "type": "journal-article",
                "title": ["Correction: Passive transfer of fibromyalgia symptoms"],
                "update-to": [
                    {"DOI": "10.1172/JCI144201", "type": "correction", "label": "Correction",
                     "updated": {"date-parts": [[2026, 11, 20]]}},
                ],
            },
            {
                "DOI": "10.5555/retraction.9",
                "type": "journal-article",
                "title": ["Retraction: a paper litwatch never saw"],
                "update-to": [
                    {"DOI": "10.5555/unknown.paper", "type": "retraction", "label": "Retraction",
                     "updated": {"date-parts": [[2026, 11, 21]]}},
                ],
            },
        ],
    },
}  # fmt: skip
UNTOLD = ARTICLE.format(
    pmid="34196305",
    title="Passive transfer of fibromyalgia symptoms from patients to mice.",
    types="",
    links="",
    doi='<ArticleId IdType="doi">10.1172/JCI144201</ArticleId>',
)
CROSSREF_RETRACTION = {
    "status": "ok",
    "message-type": "work-list",
    "message": {
        "total-results": 1,
        "next-cursor": "cursor-2",
        "items": [
            {
                "DOI": "10.5555/retraction.jci",
                "type": "journal-article",
                "title": ["Retraction: Passive transfer of fibromyalgia symptoms"],
                "update-to": [
                    {"DOI": "10.1172/JCI144201", "type": "retraction", "label": "Retraction",
                     "source": "retraction-watch", "updated": {"date-parts": [[2026, 11, 25]]}},
                ],
            },
        ],
    },
}  # fmt: skip
EMPTY_PAGE = {
    "status": "ok",
    "message-type": "work-list",
    "message": {"total-results": 2, "next-cursor": "cursor-3", "items": []},
}


class FakeApis:
    """EFetch by POSTed id list, and Crossref's cursor-paged works query."""

    def __init__(self, server: LocalHTTPServer, *, crossref_only: bool = False) -> None:
        """``crossref_only``: PubMed's records say nothing happened; Crossref knows of the
        retraction (a notice whose ``update-to`` names the paper)."""
        self.crossref_only = crossref_only
        self.fetched: list[list[str]] = []
        self.cursors: list[str] = []
        server.add_handler("/eutils/efetch.fcgi", self.efetch)
        server.add_handler("/crossref/works", self.works)

    def efetch(self, request: Request) -> Response:
        assert request.method == "POST"
        ids = parse_qs(request.body.decode())["id"][0].split(",")
        self.fetched.append(ids)
        records = {"34196305": UNTOLD if self.crossref_only else RETRACTED, "30000002": PLAIN}
        body = "<PubmedArticleSet>" + "".join(records[i] for i in ids) + "</PubmedArticleSet>"
        return Response(body=body.encode(), content_type="text/xml; charset=UTF-8")

    def works(self, request: Request) -> Response:
        cursor = request.arg("cursor") or ""
        self.cursors.append(cursor)
        page = (
            (CROSSREF_RETRACTION if self.crossref_only else NOTICES)
            if cursor == "*"
            else EMPTY_PAGE
        )
        headers = {"X-Rate-Limit-Limit": "50", "X-Rate-Limit-Interval": "1s"}
        return Response(
            body=json.dumps(page).encode(), content_type="application/json", headers=headers
        )


def run_cli(config: Path, *args: str, timeout: float = 180) -> str:
    """``litwatch --config CONFIG ARGS...`` in a child process; its stdout (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "crawler.cli", "--config", str(config), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def inbox(outbox: Path, *, flatten: bool = False) -> dict[str, list[str]]:
    """Each recipient's messages in ``outbox`` (text parts), oldest first; ``flatten`` folds
    white space (the text part wraps long lines wherever a word ends)."""
    mails: dict[str, list[str]] = {}
    for path in sorted(outbox.rglob("*.eml")):
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        body = msg.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        mails.setdefault(str(msg["To"]), []).append(" ".join(text.split()) if flatten else text)
    return mails


def sent_to(engine: Engine, email: str, paper_ids: Iterable[int]) -> None:
    """A subscriber ``email`` whose digest of 2 March 2026, with ``paper_ids``, was sent."""
    now = datetime.now(UTC)
    with transaction(engine) as session:
        sub = Subscriber(email=email, email_key=email, token="t" * 32, topics=["fibromyalgia"],
                         created_at=now)  # fmt: skip
        session.add(sub)
        session.flush()
        delivery = Delivery(
            subscriber_id=sub.id, period=date(2026, 3, 2), cutoff=now, state="sent",
            message_id="<m@x>", created_at=now, sent_at=now,
        )  # fmt: skip
        session.add(delivery)
        session.flush()
        for pid in paper_ids:
            session.add(DeliveryPaper(delivery_id=delivery.id, paper_id=pid))
