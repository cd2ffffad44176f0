"""migrate: the CRM database's schema brought to this code's version by the migrations in `core/migrations/`.

Each revision there is a frozen step (tables, indexes, comments, views); the version a database is at is
kept in its `crm_schema_version` table. Publishing and the run log bring the database to the newest
revision themselves (`ensure_current`), so a new release needs no manual step; `crm db-upgrade` does it by
hand, `--sql` prints the SQL for review instead. Two processes upgrading at once take turns (PostgreSQL
advisory lock).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from core import db
from core.crm_schema import ensure_schema

log = logging.getLogger(__name__)

SCRIPTS = Path(__file__).parent / "migrations"
VERSION_TABLE = "crm_schema_version"
#: PostgreSQL advisory lock key (any constant) that serialises concurrent upgrades of one database.
LOCK_KEY = 7_262_013_001
#: (URL, schema) pairs this process has seen at the newest revision.
_CURRENT: set[tuple[str, str | None]] = set()


def is_crm_object(name: str | None, kind: str, parent_names: dict) -> bool:
    """What autogenerate compares with the code's tables: all but the version table."""
    return not (kind == "table" and name == VERSION_TABLE)


def alembic_config(schema: str | None, url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["schema"] = schema
    return config


def head() -> str:
    """The newest revision of the migrations."""
    return ScriptDirectory.from_config(alembic_config(None)).get_current_head()


def current(connection, schema: str | None) -> str | None:
    """The revision the database is at; None before its first migration."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE, "version_table_schema": schema})
    return context.get_current_revision()


def upgrade(url: str, schema: str | None, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the CRM database to `revision` in one transaction; returns (revision before, revision after)."""
    return _migrate(url, schema, lambda config: command.upgrade(config, revision))


def downgrade(url: str, schema: str | None, revision: str) -> tuple[str | None, str | None]:
    """Migrate the CRM database back to `revision` ("base": before the first); returns (before, after)."""
    return _migrate(url, schema, lambda config: command.downgrade(config, revision))


def upgrade_sql(url: str, schema: str | None, revision: str = "head") -> str:
    """The SQL that upgrading an empty database of the URL's kind to `revision` runs, without connecting."""
    config = alembic_config(schema, url)
    config.output_buffer = io.StringIO()
    command.upgrade(config, revision, sql=True)
    return config.output_buffer.getvalue()


def ensure_current(url: str, schema: str | None) -> None:
    """Bring the database to the newest revision unless this process already saw it there."""
    if (url, schema) in _CURRENT:
        return
    newest = head()
    with db.engine(url).connect() as connection:
        at = current(connection, schema)
    if at != newest:
        before, after = upgrade(url, schema)
        log.warning("CRM database %s migrated from %s to %s", db.masked(url), before or "no version", after)
    _CURRENT.add((url, schema))


def _migrate(url: str, schema: str | None, step) -> tuple[str | None, str | None]:
    config = alembic_config(schema)
    if db.kind(url) == "sqlite" and make_url(url).database not in (None, "", ":memory:"):
        Path(make_url(url).database).parent.mkdir(parents=True, exist_ok=True)
    try:
        with db.engine(url).begin() as connection:
            if db.kind(url) == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            ensure_schema(connection, schema)
            before = current(connection, schema)
            config.attributes["connection"] = connection
            step(config)
            after = current(connection, schema)
    except SQLAlchemyError as error:
        reason = " ".join(str(getattr(error, "orig", None) or error).split())
        raise RuntimeError(f"CRM database {db.masked(url)}: migrating failed: {reason}") from error
    _CURRENT.discard((url, schema))
    return before, after
