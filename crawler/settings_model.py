"""The configuration's shape: one pydantic model per section, validated as a whole.

:mod:`crawler.settings` builds a :class:`Settings` from the defaults, a file and the environment.

Secrets are read from the environment only and never appear in :meth:`Settings.redacted`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from crawler import __version__
from crawler.settings_base import (  # noqa: F401 - re-exported
    CONFIG_ENV,
    RESERVED_ENV,
    SECRET_ENV,
    ConfigError,
    Duration,
    LocatedError,
    _scrub,
    _Section,
    mask_url,
    parse_duration,
)


class DatabaseSettings(_Section):
    url: str = "sqlite:///litwatch.db"


class CrawlSettings(_Section):
    user_agent: str = "litwatch/{version} (+https://github.com/litwatch/litwatch)"
    contact: str = "litwatch-operator@example.org"
    obey_robots: bool = True
    download_delay: float = Field(1.0, ge=0)
    #: Seconds between two requests to the Europe PMC and bioRxiv/medRxiv APIs (one host each):
    #: a little over one, so that at most one request a second reaches each.
    api_delay: float = Field(1.05, ge=0, le=60)
    autothrottle: bool = True
    timeout: Duration = timedelta(seconds=30)
    retries: int = Field(3, ge=0, le=10)
    #: First wait before retrying a 429/5xx without Retry-After (doubles each attempt).
    backoff_base: float = Field(1.0, ge=0)
    max_story_follows: int = Field(60, ge=0)
    #: Largest feed (and robots.txt) answer read, in MB; a larger one fails its source.
    max_feed_mb: float = Field(8, gt=0, le=1024)
    #: Largest news story page read, in MB; a larger one is skipped.
    max_story_mb: float = Field(2, gt=0, le=1024)

    @property
    def max_feed_bytes(self) -> int:
        return int(self.max_feed_mb * 1024 * 1024)

    @property
    def max_story_bytes(self) -> int:
        return int(self.max_story_mb * 1024 * 1024)

    @property
    def full_user_agent(self) -> str:
        agent = self.user_agent.replace("{version}", __version__)
        return f"{agent} {self.contact}".strip() if self.contact else agent


class PubmedSettings(_Section):
    base_url: str = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"
    tool: str = "litwatch"
    email: str = "litwatch-operator@example.org"
    baseline: Duration = timedelta(days=30)
    overlap: Duration = timedelta(days=2)
    batch_size: int = Field(500, ge=1, le=10_000)


class CrossrefSettings(_Section):
    """The Crossref REST API, asked by the lifecycle watch (``mailto`` joins the polite pool)."""

    base_url: str = "https://api.crossref.org/"
    mailto: str = "litwatch-operator@example.org"
    #: Seconds between two requests at least; Crossref's X-Rate-Limit headers may ask for more.
    delay: float = Field(1.0, ge=0.0, le=60.0)


class LifecycleSettings(_Section):
    """The watch over papers already sent: retractions, corrections, concerns, updates."""

    enabled: bool = True
    #: How often the daemon runs the watch.
    interval: Duration = timedelta(days=7)
    #: Papers delivered to anyone within this many months are watched ...
    watch_months: int = Field(24, ge=1, le=600)
    #: ... or every paper in the database.
    all_papers: bool = False
    #: PMIDs per EFetch request (POSTed: no URL grows with it).
    batch_size: int = Field(200, ge=1, le=500)


#: The shipped digest schedule (tests/test_cli_imports.py holds it valid for the daemon).
DEFAULT_CRON = "0 7 * * mon"


class DigestSettings(_Section):
    cron: str = DEFAULT_CRON
    timezone: str = "UTC"
    first_lookback: Duration = timedelta(days=7)
    send_empty: bool = False
    misfire_grace: Duration = timedelta(hours=24)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        # Validate with the daemon's own reading of the crontab (standard day-of-week numbers:
        # 0 and 7 are Sunday, unlike APScheduler's from_crontab).
        if v == DEFAULT_CRON:
            return v  # known good: no need to import APScheduler for every command
        from crawler.schedule import digest_trigger

        if len(v.split()) != 5:
            raise ValueError(f"expected 5 crontab fields, got {len(v.split())}: {v!r}")
        try:
            digest_trigger(v, "UTC")
        except ValueError as exc:
            raise ValueError(f"invalid crontab expression {v!r}: {exc}") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_timezone(v)


def _check_timezone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {v!r}") from None
    return v


class SmtpSettings(_Section):
    host: str = "localhost"
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    ssl: bool = False
    username: str = ""
    #: Extra CA bundle to trust (a private relay's certificate); empty: the system store.
    ca_file: str = ""
    timeout: Duration = timedelta(seconds=30)
    rate_per_minute: int = Field(0, ge=0)
    max_per_run: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _tls(self) -> SmtpSettings:
        if self.ssl and self.starttls:
            raise ValueError("choose one of ssl (implicit TLS, port 465) and starttls")
        return self


class BounceSettings(_Section):
    """Bounce and complaint processing: where the returned mail is, and the policy."""

    #: Where bounces arrive (any of them): a Maildir folder, an mbox file, an IMAP mailbox
    #: (TLS; password from LITWATCH_IMAP_PASSWORD).
    maildir: str = ""
    mbox: str = ""
    imap_host: str = ""
    imap_port: int = Field(993, ge=1, le=65535)
    imap_user: str = ""
    imap_folder: str = "INBOX"
    #: Extra CA bundle to trust for the IMAP server (a private server's certificate);
    #: empty: the system store.
    imap_ca_file: str = ""
    #: Hard bounces (5.x.x) that suspend an address; soft ones (4.x.x) within soft_window.
    hard_limit: int = Field(1, ge=1)
    soft_limit: int = Field(3, ge=1)
    soft_window: Duration = timedelta(days=30)
    #: Per-recipient envelope senders, ``<verp_prefix>+<signed token>@<verp_domain>``.
    verp: bool = False
    verp_domain: str = ""
    verp_prefix: str = "bounces"
    #: How often the daemon processes the mailbox (when one is configured).
    interval: Duration = timedelta(hours=1)


class DkimSettings(_Section):
    """DKIM signing (RFC 6376) when ``domain`` is set; the key's path, never the key."""

    domain: str = ""
    selector: str = ""
    key_file: str = ""


_LIST_ID = re.compile(r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)+", re.ASCII)


class EmailSettings(_Section):
    backend: Literal["file", "smtp"] = "file"
    from_: str = Field("litwatch <litwatch@localhost>", alias="from")
    outbox_dir: str = "outbox"
    unsubscribe_mailto: str = ""
    #: RFC 2919 List-Id, ``list_name <list_id>``; "" is ``litwatch.<the From's domain>``.
    list_id: str = ""
    list_name: str = "litwatch"
    #: A digest handed to the server whose outcome was never recorded (a crash, a failed
    #: commit): "skip" never sends it again (at most once), "resend_once" sends it once
    #: more, with the same Message-ID, ``resend_after`` after the first try.
    on_unknown: Literal["skip", "resend_once"] = "skip"
    resend_after: Duration = timedelta(hours=1)
    smtp: SmtpSettings = SmtpSettings()
    bounces: BounceSettings = BounceSettings()
    dkim: DkimSettings = DkimSettings()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("from_", "list_name", "list_id")
    @classmethod
    def _no_header_injection(cls, v: str, info: ValidationInfo) -> str:
        if "\r" in v or "\n" in v:
            raise ValueError("must be one line")
        if info.field_name == "list_id" and v and not _LIST_ID.fullmatch(v):
            raise ValueError(f"must be a dot-atom like litwatch.example.org, got {v!r}")
        return v


class StatusSettings(_Section):
    #: ``status --check`` reports a source that failed this many polls in a row.
    failed_polls: int = Field(3, ge=1)
    #: ``status`` warns (and ``--check`` fails) when, over the last 30 days, bounces or
    #: complaints exceed this percentage of the digests sent.
    max_bounce_percent: float = Field(2.0, ge=0, le=100)
    max_complaint_percent: float = Field(0.1, ge=0, le=100)


class WebSettings(_Section):
    base_url: str = "http://localhost:8080"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    #: Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or CIDRs).
    trusted_proxies: list[str] = ["127.0.0.1"]

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        # uvicorn takes addresses and networks; "*" (trust anyone) is refused on purpose.
        try:
            return [
                str(
                    ipaddress.ip_network(i.strip(), strict=False)
                    if "/" in i
                    else ipaddress.ip_address(i.strip())
                )
                for i in v
            ]
        except ValueError as exc:
            raise ValueError(f"not an address or network: {exc}") from None

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"must be an http(s) URL, got {v!r}")
        return v.rstrip("/")


class DaemonSettings(_Section):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    crawl_timeout: Duration = timedelta(minutes=30)
    jitter: Duration = timedelta(minutes=5)


class TopicSettings(_Section):
    title: str | None = None
    terms: list[str] = []
    mesh: list[str] = []

    @field_validator("terms")
    @classmethod
    def _terms(cls, v: list[str]) -> list[str]:
        # An empty term (or a bare "*") would match every paper.
        for term in v:
            stem = term.strip().removesuffix("*")
            if not stem.strip(" -"):
                raise ValueError(f"empty term {term!r}")
            if "*" in stem:
                raise ValueError(f"{term!r}: '*' is allowed only at the end of a term")
        return v


_SOURCE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class SourceSettings(_Section):
    id: str
    kind: Literal["pubmed", "feed", "sciencedaily", "europepmc", "biorxiv"]
    enabled: bool = True
    url: str | None = None
    query: str | None = None
    base_url: str | None = None
    #: kind "biorxiv": which server (bioRxiv or medRxiv) and which subject categories (none:
    #: every category, kept when on topic).
    server: Literal["biorxiv", "medrxiv"] | None = None
    categories: list[str] = []
    interval: Duration = timedelta(hours=6)
    topics: list[str] | None = None
    name: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _SOURCE_ID.match(v):
            raise ValueError(f"{v!r}: use lower-case letters, digits, '.', '_' and '-'")
        return v

    @model_validator(mode="after")
    def _kind_fields(self) -> SourceSettings:
        if self.kind in ("pubmed", "europepmc"):
            if not self.query:
                raise ValueError(f"source {self.id!r}: kind {self.kind!r} needs a query")
            if self.url:
                raise ValueError(f"source {self.id!r}: kind {self.kind!r} takes query, not url")
        elif self.kind == "biorxiv":
            if not self.server:
                raise ValueError(f"source {self.id!r}: kind 'biorxiv' needs server = \"biorxiv\""
                                 " or \"medrxiv\"")  # fmt: skip
            if self.url or self.query:
                raise ValueError(f"source {self.id!r}: kind 'biorxiv' takes server and categories")
        else:
            if not self.url or not re.match(r"^https?://", self.url):
                raise ValueError(f"source {self.id!r}: kind {self.kind!r} needs an http(s) url")
            if self.query:
                raise ValueError(f"source {self.id!r}: kind {self.kind!r} takes url, not query")
        if self.interval < timedelta(seconds=1):
            raise ValueError(f"source {self.id!r}: interval must be at least 1s")
        return self


class Settings(_Section):
    """The whole validated configuration."""

    database: DatabaseSettings = DatabaseSettings()
    crawl: CrawlSettings = CrawlSettings()
    pubmed: PubmedSettings = PubmedSettings()
    crossref: CrossrefSettings = CrossrefSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    digest: DigestSettings = DigestSettings()
    email: EmailSettings = EmailSettings()
    web: WebSettings = WebSettings()
    daemon: DaemonSettings = DaemonSettings()
    status: StatusSettings = StatusSettings()
    topics: dict[str, TopicSettings] = {}
    sources: list[SourceSettings] = []

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        seen: set[str] = set()
        for i, src in enumerate(self.sources):
            if src.id in seen:
                raise LocatedError(f"duplicate source id {src.id!r}", ("sources", i, "id"))
            seen.add(src.id)
            for topic in src.topics or []:
                if topic not in self.topics:
                    known = ", ".join(self.topics) or "none"
                    raise LocatedError(
                        f"source {src.id!r}: unknown topic {topic!r} (known: {known})",
                        ("sources", i, "topics"),
                    )
        return self

    # Secrets come from the environment only, read when needed, never stored on the object.
    @property
    def smtp_password(self) -> str | None:
        return os.environ.get("LITWATCH_SMTP_PASSWORD") or None

    @property
    def ncbi_api_key(self) -> str | None:
        return os.environ.get("NCBI_API_KEY") or None

    def source(self, source_id: str) -> SourceSettings:
        for src in self.sources:
            if src.id == source_id:
                return src
        known = ", ".join(s.id for s in self.sources) or "none configured"
        raise ConfigError(f"unknown source {source_id!r} (known: {known})")

    def topic_title(self, name: str) -> str:
        topic = self.topics.get(name)
        return topic.title if topic and topic.title else name.replace("_", " ").capitalize()

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain data, with secrets masked."""
        data = self.model_dump(mode="json", by_alias=True)
        # Any URL may carry credentials (the database URL usually does), and a secret's value
        # must not leak even where an operator pasted it into an ordinary key.
        secrets = [v for v in (os.environ.get(n) for n in SECRET_ENV) if v]
        data = _scrub(data, secrets)
        data["secrets"] = {
            name: ("set (hidden)" if os.environ.get(name) else "not set") for name in SECRET_ENV
        }
        return data
