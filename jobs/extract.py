"""extract: copy the shop's tables into bronze, one batch per run date.

Bronze is the change log of the shop: each run appends its batch (source columns plus `_batch_id`,
`_run_id`, `_extracted_at`, `_op`), written with `replaceWhere` on `_batch_id` so a rerun of the same
date replaces its own batch and nothing else. This version pulls every row (a full snapshot, `_op = 'U'`).

Tables are read with Spark JDBC, split into ranges of the integer key so no table is ever held whole in
one place. Columns are read as the canonical types (`customSchema`), so bronze looks the same whatever the
source database; timestamps are kept as the source's text, typed later by `clean`.
"""
from __future__ import annotations

import logging
import math
from datetime import date, datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from sqlalchemy import Table, func, select

from jobs import db, shop_schema
from jobs.config import Settings
from jobs.lake import Lake
from jobs.spark import spark_session
from jobs.types import jdbc_custom_schema

log = logging.getLogger(__name__)

BRONZE_COLUMNS = ("_batch_id", "_run_id", "_extracted_at", "_op")


class SourceTableError(ValueError):
    """A shop table that cannot be read as the canonical model expects."""


def run(run_date: date, settings: Settings, run_id: str) -> dict[str, int]:
    """Pull every shop table into bronze as the batch of `run_date`; returns rows per table."""
    extracted_at = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    check_source_columns(settings.shop.url)
    rows: dict[str, int] = {}
    with spark_session(settings, "extract") as spark:
        lake = Lake(spark, settings.lake_dir)
        for table in shop_schema.SHOP_TABLES:
            source = read_shop_table(spark, settings, table)
            batch = with_batch_columns(source, run_date.isoformat(), run_id, extracted_at)
            lake.replace_partition(batch, "bronze", table, {"_batch_id": run_date.isoformat()})
            rows[table] = lake.rows_written("bronze", table)
            log.info("bronze/%s: %d rows extracted for %s", table, rows[table], run_date)
    return rows


def with_batch_columns(source: DataFrame, batch_id: str, run_id: str, extracted_at: datetime) -> DataFrame:
    """The source rows with the bronze bookkeeping columns."""
    return source.withColumns({
        "_batch_id": F.lit(batch_id),
        "_run_id": F.lit(run_id),
        "_extracted_at": F.lit(extracted_at).cast("timestamp"),
        "_op": F.lit("U"),
    })


def check_source_columns(url: str) -> None:
    """Stop before anything is written when a shop table or a canonical column is missing."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url

    if db.kind(url) == "sqlite" and not Path(make_url(url).database or "").is_file():
        raise SourceTableError(f"shop database {db.masked(url)}: no such SQLite file")
    inspector = inspect(db.engine(url))
    present_tables = set(inspector.get_table_names())
    problems = []
    for name in shop_schema.SHOP_TABLES:
        if name not in present_tables:
            problems.append(f"table {name} is missing")
            continue
        present = {column["name"] for column in inspector.get_columns(name)}
        expected = [column.name for column in shop_schema.metadata.tables[name].columns]
        missing = [column for column in expected if column not in present]
        if missing:
            problems.append(f"{name}: missing column(s) {', '.join(missing)} (present: {', '.join(sorted(present))})")
    if problems:
        raise SourceTableError(f"shop database {db.masked(url)}: " + "; ".join(problems))


def read_shop_table(spark: SparkSession, settings: Settings, name: str) -> DataFrame:
    """One shop table as a DataFrame of canonical columns, read in parallel ranges of `id`."""
    table: Table = shop_schema.metadata.tables[name]
    target = db.jdbc_target(settings.shop.url)
    lowest, highest, count = _key_range(settings.shop.url, table)
    partitions = max(1, math.ceil(count / settings.shop.rows_per_partition))
    columns = ", ".join(_quoted(settings.shop.url, column.name) for column in table.columns)
    reader = (
        spark.read.format("jdbc")
        .options(**target.options())
        .option("dbtable", f"(SELECT {columns} FROM {_quoted(settings.shop.url, name)}) source_{name}")
        .option("customSchema", jdbc_custom_schema(table))
        .option("fetchsize", settings.shop.fetch_size)
    )
    if partitions > 1:
        reader = (
            reader.option("partitionColumn", "id")
            .option("lowerBound", lowest)
            .option("upperBound", highest + 1)
            .option("numPartitions", partitions)
        )
    return reader.load().select(*[column.name for column in table.columns])


def _key_range(url: str, table: Table) -> tuple[int, int, int]:
    with db.engine(url).connect() as connection:
        lowest, highest, count = connection.execute(
            select(func.min(table.c.id), func.max(table.c.id), func.count())
        ).one()
    return int(lowest or 0), int(highest or 0), int(count)


def _quoted(url: str, identifier: str) -> str:
    return f"`{identifier}`" if db.kind(url) == "mysql" else f'"{identifier}"'
