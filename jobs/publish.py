"""publish: gold -> CRM database tables, all replaced in one transaction, their history kept.

A reader sees the previous run's rows in every table until the commit, then the new run's rows; never a
partial or empty table, nor tables of two different runs. The CRM tables show the latest run date:
publishing an older date (a backfill) leaves a newer publication in place. In the same transaction the
history tables get the run date's segment summary and movement, and each customer's segment stays.

Rows go into PostgreSQL by `COPY ... FROM STDIN` (CSV written by pyarrow), into other databases by batched
INSERTs: at 100,000 customers a night publishes about 2 million rows (1 million recommendations), which
batched INSERTs took 98 s to write.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING

from pyspark.sql import functions as F
from sqlalchemy import Date, MetaData, Table, case, exists, func, literal, null, select

from core import db, migrate
from core.config import Settings
from core.crm_schema import RUN_DATE_HISTORY, SEGMENT_HISTORY, crm_metadata, database_metadata, schema_of, table_in
from core.lake import Lake
from core.spark import spark_session

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

INSERT_BATCH_ROWS = 10_000
#: Rows per COPY statement into PostgreSQL (each one CSV buffer in memory).
COPY_BATCH_ROWS = 100_000


def run(run_date: date, settings: Settings, run_id: str) -> dict[str, int]:
    """Publish the run date's gold tables to the CRM database; returns rows published per table."""
    engine = db.engine(settings.crm.db_url)
    metadata = crm_metadata(schema_of(settings.crm.db_url, settings.crm.schema_name))
    with spark_session(settings, "publish") as spark:
        lake = Lake(spark, settings.lake_location)
        rows = {
            table: lake.read("gold", table.name)
            .where(F.col("as_of") == F.lit(run_date))
            .select(*[column.name for column in table.columns])
            .toArrow()
            for table in metadata.sorted_tables
        }
    return replace_tables(engine, metadata, rows, run_date)


def replace_tables(engine, metadata: MetaData, rows: Mapping[Table, pa.Table], run_date: date) -> dict[str, int]:
    """Replace each table's rows with its pyarrow Table, all in one transaction; returns rows per table.

    First brings the database to the newest migration. A reader sees the previous run in every table until
    the commit, then this run in every table. The history tables are written in the same transaction: the
    run date's rows of `RUN_DATE_HISTORY` (replaced on a rerun, written by a backfill too) and the
    customers' segment stays (`customer_segment_history`). When the CRM already holds a later run date (a
    backfill of an older date), the published tables and the segment stays are left as they are, and their
    counts are 0.
    """
    migrate.ensure_current(engine.url.render_as_string(hide_password=False), metadata.schema)
    everything = database_metadata(metadata.schema)
    counts: dict[str, int] = {}  # the published tables first, then their history
    kept: dict[str, int] = {}
    with engine.begin() as connection:
        for table, data in rows.items():
            if table.name in RUN_DATE_HISTORY:
                history = table_in(everything, RUN_DATE_HISTORY[table.name])
                connection.execute(history.delete().where(history.c.as_of == run_date))
                kept[history.name] = _insert(connection, history, data)
        newer = [
            (table.fullname, latest)
            for table in rows
            if (latest := connection.execute(select(func.max(table.c.as_of))).scalar()) is not None and latest > run_date
        ]
        if newer:
            log.warning("%s holds %s, later than %s: the CRM is left as it is", *newer[0], run_date)
            return {table.name: 0 for table in rows} | kept
        for table, data in rows.items():
            connection.execute(table.delete())
            counts[table.name] = _insert(connection, table, data)
            if table.name == "customer_segments":
                kept[SEGMENT_HISTORY] = record_segment_stays(connection, table, table_in(everything, SEGMENT_HISTORY), run_date)
    counts |= kept
    for name, count in counts.items():
        log.info("%s: %d rows published for %s", name, count, run_date)
    return counts


def record_segment_stays(connection, segments: Table, stays: Table, run_date: date) -> int:
    """Bring each customer's segment stays (SCD type 2) up to the just-published `segments` of `run_date`:
    close the open stay of a customer whose segment changed (or who is gone) at `run_date`, open a new one.
    Returns the stays opened.

    What an earlier publication of this date (or a later one) recorded is undone first, so a rerun records
    the same. A customer's first stay starts when gold says the customer entered the segment (`changed_at`);
    later stays at the run date that saw the change.
    """
    connection.execute(stays.delete().where(stays.c.valid_from >= run_date))
    connection.execute(stays.update().where(stays.c.valid_to >= run_date).values(valid_to=None))
    still_in_it = exists().where((segments.c.customer_id == stays.c.customer_id) & (segments.c.segment == stays.c.segment))
    connection.execute(stays.update().where(stays.c.valid_to.is_(None) & ~still_in_it).values(valid_to=run_date))
    other = stays.alias("other")
    known = exists().where(other.c.customer_id == segments.c.customer_id)
    staying = exists().where((other.c.customer_id == segments.c.customer_id) & other.c.valid_to.is_(None))
    opened = connection.execute(
        stays.insert().from_select(
            ["customer_id", "valid_from", "valid_to", "segment", "run_id"],
            select(
                segments.c.customer_id,
                case((known, literal(run_date, Date)), else_=segments.c.changed_at),
                null(),
                segments.c.segment,
                segments.c.run_id,
            ).where(~staying),
        )
    )
    return opened.rowcount


def _insert(connection, table: Table, data: pa.Table) -> int:
    """Add `data`'s rows (its columns of `table`) to `table` in the transaction of `connection`."""
    data = data.select([column.name for column in table.columns])
    (_copy if connection.dialect.name == "postgresql" else _insert_batches)(connection, table, data)
    return data.num_rows


def _insert_batches(connection, table: Table, data: pa.Table) -> None:
    """Batched INSERTs of `INSERT_BATCH_ROWS` rows (MariaDB, SQLite)."""
    for batch in data.to_batches(max_chunksize=INSERT_BATCH_ROWS):
        connection.execute(table.insert(), batch.to_pylist())


def _copy(connection, table: Table, data: pa.Table) -> None:
    """PostgreSQL's `COPY FROM STDIN` in CSV, on the driver connection of `connection` (so in its transaction).

    pyarrow's CSV writer quotes every string and writes a null as an empty unquoted field, which is what
    PostgreSQL's CSV format reads as NULL (an empty string stays ''); numbers are written in the shortest form
    that reads back as the same value, timestamps in ISO 8601 with `Z` for UTC.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    preparer = connection.dialect.identifier_preparer
    statement = (
        f"COPY {preparer.format_table(table)} ({', '.join(preparer.quote(name) for name in data.column_names)}) "
        "FROM STDIN WITH (FORMAT csv)"
    )
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        for batch in data.to_batches(max_chunksize=COPY_BATCH_ROWS):
            buffer = io.BytesIO()
            pa_csv.write_csv(pa.Table.from_batches([batch]), buffer, pa_csv.WriteOptions(include_header=False))
            buffer.seek(0)
            cursor.copy_expert(statement, buffer)
    finally:
        cursor.close()
