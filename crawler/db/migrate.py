"""Run Alembic migrations from code and check that the schema is current."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from crawler.db.engine import DatabaseError, describe_url, table_names

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate the database to ``revision``; return (revision before, revision after)."""
    before = current_revision(engine)
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return before, current_revision(engine) or ""


def ensure_schema(engine: Engine) -> None:
    """Make sure the schema is current before a command uses it.

    A brand-new, empty database is initialised on the spot (there is nothing to lose); a
    database at an older revision is never changed behind the operator's back.
    """
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None and not table_names(engine):
        upgrade(engine)
        return
    raise DatabaseError(
        f"database {describe_url(engine)} is at schema revision {current or 'none'}, "
        f"this litwatch needs {head}: run `litwatch db upgrade`"
    )
