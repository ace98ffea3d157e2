"""Alembic environment: always run from code (crawler.db.migrate) on a given connection."""

from __future__ import annotations

from alembic import context

from crawler.db.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
