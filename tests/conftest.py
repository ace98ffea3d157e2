"""Shared pytest fixtures for the whole test suite.

Layout: one section per concern, each headed by a comment. Fixtures stay thin; the logic
they wrap lives in ``tests/support/`` so plain scripts and benchmarks can reuse it. Add new
sections below the existing ones rather than mixing concerns.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.support.db import PG_ENV, migrated_engine, postgres_skip_reason, reset_postgres
from tests.support.httpserver import LocalHTTPServer
from tests.support.smtpserver import LocalCertificate, LocalSMTPServer, make_certificate

# --- Local network servers (tests/support) ----------------------------------------------------
# Real sockets on 127.0.0.1 with ephemeral ports, no mocks. Function scope: every test gets
# empty routes, logs and mailboxes; starting a server costs a few milliseconds.

SMTP_USER = "digest-sender"
SMTP_PASSWORD = "correct horse battery staple"


@pytest.fixture
def http_server() -> Iterator[LocalHTTPServer]:
    """A running HTTP/1.1 fixture server; add routes with ``http_server.add(...)``."""
    with LocalHTTPServer() as server:
        yield server


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> LocalCertificate:
    """A throwaway CA + server certificate for 127.0.0.1, made once per session."""
    directory: Path = tmp_path_factory.mktemp("tls")
    return make_certificate(directory)


@pytest.fixture
def smtp_server() -> Iterator[LocalSMTPServer]:
    """A running plain SMTP server (no TLS, no AUTH) that stores every message."""
    with LocalSMTPServer() as server:
        yield server
        _settle_signup_mail()


@pytest.fixture
def plain_smtp(smtp_server: LocalSMTPServer, monkeypatch: pytest.MonkeyPatch) -> LocalSMTPServer:
    """The plain server, with no SMTP password in the environment (no AUTH is tried)."""
    monkeypatch.delenv("LITWATCH_SMTP_PASSWORD", raising=False)
    return smtp_server


@pytest.fixture
def smtp_server_tls_auth(tls_certificate: LocalCertificate) -> Iterator[LocalSMTPServer]:
    """A running SMTP server requiring STARTTLS then AUTH as SMTP_USER / SMTP_PASSWORD.

    Clients verify it with ``smtp_server_tls_auth.client_context``.
    """
    auth = (SMTP_USER, SMTP_PASSWORD)
    with LocalSMTPServer(certificate=tls_certificate, auth=auth) as server:
        yield server
        _settle_signup_mail()


def _settle_signup_mail() -> None:
    """Let sign-up mail queued in the background reach the server, then stop its threads,
    before the server stops: a mail thread connecting as the server shuts down leaves a
    half-open connection that a later test's setup reports as an unclosed transport."""
    from digests.web.mails import drain_queues, stop_queues

    drain_queues(timeout=5.0)
    stop_queues()


# --- Databases (tests/support/db.py) ------------------------------------------------------------
# ``db_url`` runs a test on both backends: a fresh SQLite file, and PostgreSQL (from
# LITWATCH_TEST_DATABASE_URL, reset to an empty schema; skipped with the reason when absent).
# ``engine`` is the same database with the schema migrated to head.


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL with nothing in it, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'litwatch-test.db'}"
    return pg_url_or_skip()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'litwatch-test.db'}"


@pytest.fixture
def pg_url() -> str:
    return pg_url_or_skip()


def pg_url_or_skip() -> str:
    reason = postgres_skip_reason()
    if reason:
        pytest.skip(reason)
    url = os.environ[PG_ENV]
    reset_postgres(url)
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated engine on each backend."""
    eng = migrated_engine(db_url)
    yield eng
    eng.dispose()
