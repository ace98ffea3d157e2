"""Database layer: engine, models, migrations, and one module owning each table family."""

#: The newest migration's revision: what this litwatch's code needs (``crawler.db.migrate``
#: checks it with SQLAlchemy, ``crawler.db.reader`` without; a test holds it equal to Alembic's
#: reading of the migration scripts). Update it with every new migration.
HEAD = "0005"

# Keys of the ``meta`` table (written by crawler.db.meta only). Here, not there, so that the
# read-only reports (crawler.db.status) can name them without importing SQLAlchemy.
SECRET_KEY = "secret_key"  # noqa: S105 - the row's name, not a secret
DAEMON_KEY = "daemon"
DIGEST_DONE_KEY = "digest.last_fire"
#: This installation's random id (in every digest's Message-ID: unique across installations).
INSTALLATION_KEY = "installation_id"
#: The lifecycle watch: its last run, and where an interrupted one resumes (JSON).
WATCH_KEY = "lifecycle.watch"
