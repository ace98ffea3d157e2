"""Test databases: a fresh SQLite file, and the CI PostgreSQL reset to an empty schema.

PostgreSQL tests use ``LITWATCH_TEST_DATABASE_URL`` (``.ci/run`` creates a throwaway
database and sets it). Without it, or when the server cannot be reached, they skip and say
why, so a fresh clone still passes.
"""

from __future__ import annotations

import os
from functools import cache

from sqlalchemy import Engine, text

from crawler.db.engine import make_engine
from crawler.db.migrate import upgrade

PG_ENV = "LITWATCH_TEST_DATABASE_URL"


@cache
def postgres_skip_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    url = os.environ.get(PG_ENV)
    if not url:
        return f"{PG_ENV} is not set (PostgreSQL tests need a server)"
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        where = engine.url.render_as_string(hide_password=True)
        return f"PostgreSQL at {where} unreachable: {exc.__class__.__name__}"
    finally:
        engine.dispose()
    return None


def reset_postgres(url: str) -> None:
    """Drop everything in the test database so each test starts from an empty schema."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


def migrated_engine(url: str) -> Engine:
    engine = make_engine(url)
    upgrade(engine)
    return engine
