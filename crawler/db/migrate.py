"""Run Alembic migrations from code and check that the schema is current."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
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


def known_revision(revision: str) -> bool:
    """Whether this litwatch's migrations include ``revision``."""
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except CommandError:
        return False


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate the database to ``revision``; return (revision before, revision after)."""
    before = current_revision(engine)
    if before is not None and not known_revision(before):
        raise DatabaseError(_unknown(engine, before))
    cfg = _config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except CommandError as exc:  # e.g. an unknown target revision: one line, no traceback
        raise DatabaseError(f"cannot migrate {describe_url(engine)}: {exc}") from None
    return before, current_revision(engine) or ""


def _unknown(engine: Engine, revision: str) -> str:
    # A revision this code does not know was written by a newer litwatch: upgrading the
    # database cannot help, and downgrading the code would corrupt it.
    return (
        f"database {describe_url(engine)} is at schema revision {revision}, which this "
        f"litwatch ({head_revision()}) does not know: it was migrated by a newer version; "
        "install that version"
    )


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
    if current is not None and not known_revision(current):
        raise DatabaseError(_unknown(engine, current))
    raise DatabaseError(
        f"database {describe_url(engine)} is at schema revision {current or 'none'}, "
        f"this litwatch needs {head}: run `litwatch db upgrade`"
    )
