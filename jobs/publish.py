"""publish: gold -> CRM database tables, replaced in one transaction.

A reader sees the previous run's rows until the commit, then the new run's rows; never a partial or empty
table. The CRM tables show the latest run date: publishing an older date (a backfill) leaves a newer
publication in place.
"""
from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import functions as F
from sqlalchemy import Table, func, select, text

from jobs import db
from jobs.config import Settings
from jobs.crm_schema import crm_metadata
from jobs.lake import Lake
from jobs.spark import spark_session

log = logging.getLogger(__name__)

INSERT_BATCH_ROWS = 10_000


def run(run_date: date, settings: Settings, run_id: str) -> dict[str, int]:
    """Publish the run date's gold tables to the CRM database; returns rows published per table."""
    engine = db.engine(settings.crm.db_url)
    schema = None if db.kind(settings.crm.db_url) == "sqlite" else settings.crm.schema_name
    metadata = crm_metadata(schema)
    ensure_tables(engine, metadata, schema)
    published: dict[str, int] = {}
    with spark_session(settings, "publish") as spark:
        lake = Lake(spark, settings.lake_dir)
        for table in metadata.sorted_tables:
            rows = lake.read("gold", table.name).where(F.col("as_of") == F.lit(run_date)).select(
                *[column.name for column in table.columns]
            )
            published[table.name] = replace_rows(engine, table, rows.toArrow(), run_date)
    return published


def ensure_tables(engine, metadata, schema: str | None) -> None:
    """Create the schema and the CRM tables when missing."""
    with engine.begin() as connection:
        if schema is not None:
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        metadata.create_all(connection, checkfirst=True)


def replace_rows(engine, table: Table, rows, run_date: date) -> int:
    """Replace the table's rows with `rows` (a pyarrow Table) in one transaction; returns rows written.

    Skips (returns 0) when the table already holds a later run date.
    """
    with engine.begin() as connection:
        latest = connection.execute(select(func.max(table.c.as_of))).scalar()
        if latest is not None and latest > run_date:
            log.warning("%s holds %s, later than %s: left as it is", table.fullname, latest, run_date)
            return 0
        connection.execute(table.delete())
        for batch in rows.to_batches(max_chunksize=INSERT_BATCH_ROWS):
            connection.execute(table.insert(), batch.to_pylist())
    log.info("%s: %d rows published for %s", table.fullname, rows.num_rows, run_date)
    return rows.num_rows
