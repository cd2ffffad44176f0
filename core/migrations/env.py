"""Alembic's entry for the CRM schema's migrations; `core.migrate` runs them (`crm db-upgrade`).

The caller passes the connection (`config.attributes["connection"]`, inside its transaction) and the
schema (`config.attributes["schema"]`: None for SQLite); the version table lives in that schema. Offline
(`crm db-upgrade --sql`) the SQL is printed for the URL's dialect instead of run.
"""

from __future__ import annotations

from alembic import context

from core.crm_schema import database_metadata
from core.migrate import VERSION_TABLE, is_crm_object

config = context.config
schema = config.attributes.get("schema")
options = dict(
    target_metadata=database_metadata(schema),
    version_table=VERSION_TABLE,
    version_table_schema=schema,
    include_schemas=False,
    include_name=is_crm_object,
)

if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **options)
else:
    context.configure(connection=config.attributes["connection"], **options)
with context.begin_transaction():
    context.run_migrations()
