"""A digest rendered for looking at, not for sending: nothing is recorded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from crawler.db.engine import transaction
from crawler.db.models import Subscriber, utcnow
from crawler.settings import Settings
from digests import selection as sel
from digests import subscribers as subs
from digests import updates, works
from digests.compose import Personal, make_composer
from digests.render import render
from digests.tokens import Links, Signer, signer_for


class PreviewError(ValueError):
    """The preview cannot be made as asked (an unknown subscriber, say)."""


@dataclass
class Preview:
    """What ``litwatch digest preview`` shows."""

    body: str
    subject: str
    papers: int
    is_html: bool


def preview(
    settings: Settings,
    engine: Engine,
    *,
    email: str | None = None,
    period_end: date | None = None,
    as_text: bool = False,
) -> Preview:
    """Render ``email``'s digest (everyone's, with no history, when None) as of ``period_end``."""
    composer = make_composer(settings)
    now = utcnow()
    # Signing needs the installation key, which the first use may create in its own
    # transaction: get it before opening ours (SQLite allows one writer at a time).
    signer = signer_for(engine) if email else None
    with transaction(engine) as session:
        sub, personal = _target(settings, session, email, signer)
        tz = sub.timezone
        cutoff = sel.cutoff_for(tz, period_end=period_end, now=now)
        ids = sel.select_paper_ids(session, sub, cutoff, settings.digest.first_lookback)
        ids = works.one_per_work(session, {sub.id: ids})[sub.id]
        entries = sel.entries_for(session, ids)
        told = sel.news_for(session, [sub], {sub.id: cutoff}, settings.digest.first_lookback)
        news = sel.news_entries(session, told[sub.id])
        told_events = updates.updates_for(
            session, sub.id, updates.event_ids_for(session, sub, cutoff)
        )
        topics, fmt = list(sub.topics), sub.format
    period = sel.period_of(cutoff, tz)
    shown = "html" if not as_text else fmt
    rendered = render(composer.digest(entries, topics, period, shown, personal, news, told_events))
    is_html = not as_text and rendered.html is not None
    body = rendered.html if is_html and rendered.html is not None else rendered.text
    return Preview(body, rendered.subject, len(ids), is_html)


def _target(
    settings: Settings, session: Session, email: str | None, signer: Signer | None
) -> tuple[Subscriber, Personal]:
    """The subscriber to preview for (an unsaved stand-in for everyone) and their links."""
    if email and signer is not None:
        try:
            sub = subs.find(session, email)
        except subs.SubscriberError as exc:
            raise PreviewError(str(exc)) from None
        if sub is None:
            raise PreviewError(f"{email} is not a subscriber")
        return sub, Links(settings, signer).personal(sub)
    # Not added to the session: id 0 has no history, so nothing counts as sent before.
    stand_in = Subscriber(
        id=0,
        topics=list(settings.topics),
        timezone=settings.digest.timezone,
        format="html",
        status="active",
    )
    base = settings.web.base_url
    personal = Personal(
        None, "preview@example.invalid", f"{base}/u/preview", f"{base}/preferences/preview"
    )
    return stand_in, personal
