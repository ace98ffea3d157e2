"""Tests for crawler.settings: layering, environment overrides, one-line errors, redaction."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from crawler.settings import ConfigError, Settings, defaults_path, load_settings, parse_duration

SMTP_SECRET = "s3cret-smtp-Pa55"
NCBI_SECRET = "ncbi0123456789abcdef"
APP_SECRET = "signing-key-XYZ-42"


def write(tmp_path: Path, body: str, name: str = "site.toml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def error_of(path: Path | None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ=environ or {})
    message = str(info.value)
    assert "\n" not in message
    return message


# --- layering -----------------------------------------------------------------------------------


def test_defaults_load_without_a_file() -> None:
    settings = load_settings(None, environ={})
    assert settings.database.url.startswith("sqlite:///")
    assert settings.email.backend == "file"
    assert settings.digest.cron == "0 7 * * mon"
    assert set(settings.topics) == {"fibromyalgia", "autoimmunity"}
    ids = [s.id for s in settings.sources]
    assert len(ids) == len(set(ids)) > 0
    for src in settings.sources:
        assert (src.query is not None) == (src.kind in ("pubmed", "europepmc"))
    # A Europe PMC query per topic, and both preprint servers through their API (issue 14).
    epmc = [t for s in settings.sources if s.kind == "europepmc" for t in s.topics]
    assert sorted(epmc) == sorted(settings.topics)
    servers = {s.server: s.categories for s in settings.sources if s.kind == "biorxiv"}
    assert set(servers) == {"biorxiv", "medrxiv"} and all(servers.values())
    assert defaults_path().is_file()


def test_user_file_layers_over_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[database]
url = "sqlite:////var/lib/litwatch/papers.db"

[email.smtp]
host = "mail.example.org"

[topics.fibromyalgia]
terms = ["fibromyalgia"]

[topics.long_covid]
terms = ["long covid", "post-COVID*"]

[[sources]]
id = "only-one"
kind = "feed"
url = "https://example.org/rss"
interval = "15m"
topics = ["long_covid"]
""",
    )
    s = load_settings(path, environ={})
    assert s.database.url == "sqlite:////var/lib/litwatch/papers.db"
    # Tables merge key by key: the other SMTP keys keep their defaults.
    assert s.email.smtp.host == "mail.example.org"
    assert s.email.smtp.port == 587 and s.email.smtp.starttls is True
    assert s.email.backend == "file"
    # A topic table merges too: the default mesh stays, the terms list is replaced.
    assert s.topics["fibromyalgia"].terms == ["fibromyalgia"]
    assert s.topics["fibromyalgia"].mesh == ["Fibromyalgia"]
    assert set(s.topics) == {"fibromyalgia", "autoimmunity", "long_covid"}
    # Lists replace: the defaults' sources are gone.
    assert [src.id for src in s.sources] == ["only-one"]
    assert s.sources[0].interval == timedelta(minutes=15)
    assert s.sources[0].enabled is True


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[web]\nbase_url = "https://litwatch.example.org/"\n')
    s = load_settings(None, environ={"LITWATCH_CONFIG": str(path)})
    assert s.web.base_url == "https://litwatch.example.org"


# --- environment overrides --------------------------------------------------------------------


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[email.smtp]\nhost = "from-file"\nport = 25\n')
    env = {
        "LITWATCH_EMAIL_SMTP_HOST": "smtp.example.org",
        "LITWATCH_EMAIL_SMTP_PORT": "465",
        "LITWATCH_EMAIL_SMTP_SSL": "true",
        "LITWATCH_EMAIL_SMTP_STARTTLS": "false",
        "LITWATCH_DATABASE_URL": "postgresql+psycopg://lw@db/litwatch",
        "LITWATCH_DIGEST_TIMEZONE": "Europe/Berlin",
        "LITWATCH_EMAIL_FROM": "Digest <digest@example.org>",
        "LITWATCH_CRAWL_TIMEOUT": "45s",
    }
    s = load_settings(path, environ=env)
    assert s.email.smtp.host == "smtp.example.org"
    assert s.email.smtp.port == 465
    assert (s.email.smtp.ssl, s.email.smtp.starttls) == (True, False)
    assert s.database.url == "postgresql+psycopg://lw@db/litwatch"
    assert s.digest.timezone == "Europe/Berlin"
    assert s.email.from_ == "Digest <digest@example.org>"
    assert s.crawl.timeout == timedelta(seconds=45)


def test_env_list_values() -> None:
    env = {
        "LITWATCH_TOPICS_FIBROMYALGIA_TERMS": '["fibromyalgia", "FMS"]',
        "LITWATCH_SOURCES": json.dumps(
            [{"id": "env-feed", "kind": "feed", "url": "https://example.org/feed"}]
        ),
    }
    s = load_settings(None, environ=env)
    assert s.topics["fibromyalgia"].terms == ["fibromyalgia", "FMS"]
    assert [src.id for src in s.sources] == ["env-feed"]


def test_reserved_and_foreign_env_are_ignored() -> None:
    env = {
        "LITWATCH_SMTP_PASSWORD": SMTP_SECRET,
        "LITWATCH_TEST_DATABASE_URL": "postgresql://x@y/z",
        "NCBI_API_KEY": NCBI_SECRET,
        "HOME": "/root",
    }
    assert load_settings(None, environ=env).database.url.startswith("sqlite")


# --- errors: one line naming the key and where it came from ----------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[database]\nurl = "sqlite:///x.db"\nulr = "typo"\n', ["database.ulr", "unknown key"]),
        ("[nonsense]\nx = 1\n", ["nonsense", "unknown key"]),
        (
            '[[sources]]\nid = "f"\nkind = "feed"\nurl = "https://x.org/rss"\nfeed_url = "x"\n',
            ["sources[0].feed_url", "unknown key"],
        ),
        ('[topics.x]\nterms = ["a"]\nwords = ["b"]\n', ["topics.x.words", "unknown key"]),
        ('[email.smtp]\nport = "five"\n', ["email.smtp.port", "integer"]),
        ('[crawl]\nobey_robots = "maybe"\n', ["crawl.obey_robots", "boolean"]),
        ('[email]\nbackend = "sendmail"\n', ["email.backend", "'file' or 'smtp'"]),
        ('[[sources]]\nid = "pm"\nkind = "pubmed"\n', ["sources[0]", "'pm'", "needs a query"]),
        ('[[sources]]\nid = "f"\nkind = "feed"\n', ["sources[0]", "needs an http(s) url"]),
        ('[[sources]]\nkind = "feed"\nurl = "https://x.org/"\n', ["sources[0].id", "required"]),
        (
            '[[sources]]\nid = "f"\nkind = "feed"\nurl = "https://x.org/"\ntopics = ["lupus"]\n',
            ["sources[0].topics", "unknown topic 'lupus'"],
        ),
        (
            '[[sources]]\nid = "dup"\nkind = "feed"\nurl = "https://a.org/"\n'
            '[[sources]]\nid = "dup"\nkind = "feed"\nurl = "https://b.org/"\n',
            ["sources[1].id", "duplicate source id 'dup'"],
        ),
        (
            '[[sources]]\nid = "f"\nkind = "feed"\nurl = "https://x.org/"\ninterval = "soon"\n',
            ["sources[0].interval", "not a duration"],
        ),
        ('[crawl]\ntimeout = "30 parsecs"\n', ["crawl.timeout", "not a duration"]),
        ('[digest]\ncron = "0 7 * *"\n', ["digest.cron", "5 crontab fields"]),
        ('[digest]\ncron = "61 7 * * mon"\n', ["digest.cron", "invalid crontab"]),
        ('[digest]\ntimezone = "Mars/Olympus_Mons"\n', ["digest.timezone", "Mars/Olympus_Mons"]),
        ("[email.smtp]\nssl = true\nstarttls = true\n", ["email.smtp", "starttls"]),
        ('[web]\nbase_url = "ftp://example.org"\n', ["web.base_url", "http(s)"]),
    ],
)
def test_file_errors_name_key_and_file(tmp_path: Path, body: str, expected: list[str]) -> None:
    path = write(tmp_path, body)
    message = error_of(path)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, '[database\nurl = "x"\n')
    message = error_of(path)
    assert str(path) in message and "not valid TOML" in message and "line 1" in message


def test_toml_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[web]\nbase_url = "http://caf\xe9.example.org"\n')
    assert "not valid TOML" in error_of(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    message = error_of(path)
    assert "not found" in message and str(path) in message


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LITWATCH_DATABSE_URL": "sqlite:///x.db"}, ["LITWATCH_DATABSE_URL", "unknown"]),
        ({"LITWATCH_EMAIL_SMTP_HOSTNAME": "x"}, ["LITWATCH_EMAIL_SMTP_HOSTNAME", "unknown"]),
        ({"LITWATCH_TOPICS_LUPUS_TERMS": '["x"]'}, ["LITWATCH_TOPICS_LUPUS_TERMS", "unknown"]),
        ({"LITWATCH_EMAIL_SMTP_PORT": "smtp"}, ["LITWATCH_EMAIL_SMTP_PORT", "email.smtp.port"]),
        ({"LITWATCH_DIGEST_CRON": "weekly"}, ["LITWATCH_DIGEST_CRON", "digest.cron"]),
        ({"LITWATCH_SOURCES": "not json"}, ["LITWATCH_SOURCES", "sources"]),
    ],
)
def test_env_errors_name_the_variable(env: dict[str, str], expected: list[str]) -> None:
    message = error_of(None, env)
    for part in expected:
        assert part in message


def test_error_in_defaults_key_overridden_by_file_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[digest]\ntimezone = "Not/AZone"\n')
    assert str(path) in error_of(path, {"LITWATCH_WEB_PORT": "8081"})


# --- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30s", 30), ("15m", 900), ("6h", 21600), ("1d", 86400), ("2w", 1209600), (90, 90)],
)
def test_parse_duration(raw: str | int, seconds: int) -> None:
    assert parse_duration(raw) == timedelta(seconds=seconds)


@pytest.mark.parametrize("raw", ["", "6", "6 hours", "h", "-1h", True, None])
def test_parse_duration_rejects(raw: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(raw)


# --- redaction ----------------------------------------------------------------------------------


def test_redacted_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITWATCH_SMTP_PASSWORD", SMTP_SECRET)
    monkeypatch.setenv("NCBI_API_KEY", NCBI_SECRET)
    monkeypatch.setenv("LITWATCH_SECRET_KEY", APP_SECRET)
    env = {
        "LITWATCH_DATABASE_URL": "postgresql+psycopg://litwatch:db-Pa55word@db.internal:5432/lw",
        # An operator who pasted the SMTP password where it does not belong.
        "LITWATCH_EMAIL_SMTP_USERNAME": f"digest {SMTP_SECRET}",
    }
    settings = load_settings(None, environ=env)
    assert settings.smtp_password == SMTP_SECRET and settings.ncbi_api_key == NCBI_SECRET
    data = settings.redacted()
    dumped = json.dumps(data)
    for secret in (SMTP_SECRET, NCBI_SECRET, APP_SECRET, "db-Pa55word"):
        assert secret not in dumped
    assert data["database"]["url"] == "postgresql+psycopg://litwatch:***@db.internal:5432/lw"
    assert data["secrets"] == {
        "LITWATCH_SMTP_PASSWORD": "set (hidden)",
        "NCBI_API_KEY": "set (hidden)",
        "LITWATCH_SECRET_KEY": "set (hidden)",
        "LITWATCH_IMAP_PASSWORD": "not set",
        "LITWATCH_WEBHOOK_SECRET": "not set",
    }


@pytest.mark.parametrize(
    ("url", "hidden"),
    [
        ("postgresql://u:p/ss@host/db", "p/ss"),  # a raw "/" in the password
        ("postgresql://u:pa@ss@host/db", "pa@ss"),  # a raw "@" in the password
        ("postgresql://host/db?user=u&password=qwerty99", "qwerty99"),
    ],
)
def test_redacted_database_url_forms(url: str, hidden: str) -> None:
    data = load_settings(None, environ={"LITWATCH_DATABASE_URL": url}).redacted()
    assert hidden not in data["database"]["url"]
    assert "host" in data["database"]["url"]


def test_redacted_keeps_plain_urls() -> None:
    data = load_settings(None, environ={}).redacted()
    assert data["database"]["url"] == Settings().database.url
    assert data["secrets"]["NCBI_API_KEY"] in {"set (hidden)", "not set"}


# --- errors quote the value given and name the source (issue 12, B11) -------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '[[sources]]\nid = "x"\nkind = "gopher"\nurl = "https://x.org/"\n',
            "source 'x': sources[0].kind: Input should be 'pubmed', 'feed', 'sciencedaily',"
            " 'europepmc' or 'biorxiv' (given: 'gopher')",
        ),
        (
            '[[sources]]\nid = "a"\nkind = "feed"\nurl = "https://a.org/"\n'
            '[[sources]]\nid = "b"\nkind = "feed"\nurl = "https://b.org/"\nenabled = "often"\n',
            "source 'b': sources[1].enabled: Input should be a valid boolean, unable to "
            "interpret input (given: 'often')",
        ),
        (
            '[[sources]]\nid = "f"\nkind = "feed"\nurl = "https://x.org/"\ntopics = ["lupus"]\n',
            "(given: ['lupus'])",
        ),
        ('[email.smtp]\nport = "five"\n', "email.smtp.port: Input should be a valid integer"),
        ('[email]\nbackend = "sendmail"\n', "(given: 'sendmail')"),
        ('[crawl]\nobey_robots = "maybe"\n', "(given: 'maybe')"),
        ('[web]\nbase_url = "gopher://example.org"\n', "got 'gopher://example.org'"),
        ("[email.smtp]\nport = 1.5\n", "fractional part (given: 1.5)"),
    ],
)
def test_errors_quote_the_value_and_the_source(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in error_of(write(tmp_path, body))


def test_error_value_is_quoted_once(tmp_path: Path) -> None:
    """A message that already quotes the value (or the source) does not repeat it."""
    body = '[[sources]]\nid = "f"\nkind = "feed"\nurl = "https://x.org/"\ninterval = "soon"\n'
    message = error_of(write(tmp_path, body))
    assert message.count("'soon'") == 1 and "source 'f': sources[0].interval" in message
    body = '[[sources]]\nid = "pm"\nkind = "pubmed"\n'
    message = error_of(write(tmp_path, body))
    assert message.count("'pm'") == 1 and "given" not in message  # a whole table: no value


def test_error_value_is_truncated_and_masked(tmp_path: Path) -> None:
    long = "x" * 500
    message = error_of(write(tmp_path, f'[email]\nbackend = "{long}"\n'))
    assert "(given: 'xxxx" in message and long not in message and len(message) < 300
    url = "postgresql+psycopg://ops:hunter2@db.example.org/litwatch"
    message = error_of(write(tmp_path, f"[database]\nurl = {json.dumps(url)}\nulr = 1\n"))
    assert "hunter2" not in message
    message = error_of(None, {"LITWATCH_WEB_BASE_URL": "ftp://u:pw-123@example.org/"})
    assert "'ftp://u:***@example.org/'" in message and "pw-123" not in message
    # A secret's value, wherever it turns up, is masked too.
    environ = {"LITWATCH_SECRET_KEY": APP_SECRET, "LITWATCH_EMAIL_BACKEND": APP_SECRET}
    message = error_of(None, environ)
    assert APP_SECRET not in message and "(given: '***')" in message


def test_error_for_a_source_without_an_id_names_no_source(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[[sources]]\nkind = "gopher"\nurl = "https://x.org/"\n'))
    assert message.endswith("sources[0].id: Field required")
