"""publish: gold -> CRM database tables, all replaced in one transaction.

A reader sees the previous run's rows in every table until the commit, then the new run's rows; never a
partial or empty table, nor tables of two different runs. The CRM tables show the latest run date:
publishing an older date (a backfill) leaves a newer publication in place.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date

from pyspark.sql import functions as F
from sqlalchemy import MetaData, Table, func, inspect, select

from jobs import db
from jobs.config import Settings
from jobs.crm_schema import crm_metadata, ensure_schema, schema_of
from jobs.lake import Lake
from jobs.spark import spark_session

log = logging.getLogger(__name__)

INSERT_BATCH_ROWS = 10_000


def run(run_date: date, settings: Settings, run_id: str) -> dict[str, int]:
    """Publish the run date's gold tables to the CRM database; returns rows published per table."""
    engine = db.engine(settings.crm.db_url)
    metadata = crm_metadata(schema_of(settings.crm.db_url, settings.crm.schema_name))
    with spark_session(settings, "publish") as spark:
        lake = Lake(spark, settings.lake_dir)
        rows = {
            table: lake.read("gold", table.name).where(F.col("as_of") == F.lit(run_date))
            .select(*[column.name for column in table.columns]).toArrow()
            for table in metadata.sorted_tables
        }
    return replace_tables(engine, metadata, rows, run_date)


def ensure_tables(connection, metadata: MetaData) -> None:
    """Create the schema and the CRM tables when missing; recreate a table whose columns (or their
    nullability) changed.

    The CRM tables hold only the latest run (gold keeps every run date), so a table left by an older
    version of the pipeline is dropped and created anew, inside the publishing transaction.
    """
    ensure_schema(connection, metadata.schema)
    found = inspect(connection)
    for table in metadata.sorted_tables:
        if not found.has_table(table.name, schema=metadata.schema):
            continue
        columns = [(column["name"], bool(column["nullable"]))
                   for column in found.get_columns(table.name, schema=metadata.schema)]
        if columns != [(column.name, bool(column.nullable)) for column in table.columns]:
            log.warning("%s has columns (name, nullable) %s, this version writes %s: recreated", table.fullname,
                        columns, [(column.name, bool(column.nullable)) for column in table.columns])
            table.drop(connection)
    metadata.create_all(connection, checkfirst=True)


def replace_tables(engine, metadata: MetaData, rows: Mapping[Table, "pa.Table"], run_date: date) -> dict[str, int]:
    """Replace each table's rows with its pyarrow Table, all in one transaction; returns rows per table.

    A reader sees the previous run in every table until the commit, then this run in every table. When
    the CRM already holds a later run date (a backfill of an older date), nothing changes and every count
    is 0.
    """
    with engine.begin() as connection:
        ensure_tables(connection, metadata)
        for table in rows:
            latest = connection.execute(select(func.max(table.c.as_of))).scalar()
            if latest is not None and latest > run_date:
                log.warning("%s holds %s, later than %s: the CRM is left as it is", table.fullname, latest, run_date)
                return {table.name: 0 for table in rows}
        for table, data in rows.items():
            connection.execute(table.delete())
            for batch in data.to_batches(max_chunksize=INSERT_BATCH_ROWS):
                connection.execute(table.insert(), batch.to_pylist())
    for table, data in rows.items():
        log.info("%s: %d rows published for %s", table.fullname, data.num_rows, run_date)
    return {table.name: data.num_rows for table, data in rows.items()}
