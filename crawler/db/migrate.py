"""Run Alembic migrations from code and check that the schema is current.

Checking is the common case (every command that touches the database does it) and needs no
Alembic: the revision is one row of ``alembic_version`` and :data:`HEAD` is this code's head
(a test holds it equal to Alembic's). Alembic itself is imported only to migrate.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from crawler.db import HEAD
from crawler.db.engine import DatabaseError, describe_url, table_names

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    return HEAD


def alembic_head() -> str:
    """The head according to Alembic's reading of the migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision (None: never migrated)."""
    with engine.connect() as conn:
        try:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        except (OperationalError, ProgrammingError) as exc:
            if "alembic_version" not in str(exc.orig):
                raise  # locked, unreachable...: not "never migrated"
            conn.rollback()
            return None
    return rows[0][0] if rows else None


def known_revision(revision: str) -> bool:
    """Whether this litwatch's migrations include ``revision``."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except CommandError:
        return False


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate the database to ``revision``; return (revision before, revision after)."""
    before = current_revision(engine)
    if before is not None and not known_revision(before):
        raise DatabaseError(_unknown(engine, before))
    from alembic import command
    from alembic.util import CommandError

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


def ensure_schema(engine: Engine) -> str | None:
    """Make sure the schema is current before a command that writes uses it; return the
    revision created in a brand-new database (None: it was already current).

    A brand-new, empty database is initialised on the spot (there is nothing to lose); a
    database at an older revision is never changed behind the operator's back. Commands
    that only read never come here (they say to run ``litwatch db upgrade``).
    """
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return None
    if current is None and not table_names(engine):
        return upgrade(engine)[1]
    if current is not None and not known_revision(current):
        raise DatabaseError(_unknown(engine, current))
    raise DatabaseError(
        f"database {describe_url(engine)} is at schema revision {current or 'none'}, "
        f"this litwatch needs {head}: run `litwatch db upgrade`"
    )
