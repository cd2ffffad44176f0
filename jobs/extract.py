"""extract: what changed in the shop since the last night -> bronze, the shop's append-only change log.

Each run writes one batch per table (`_batch_id` = the run date) with the source columns under their
canonical names (see `jobs/mapping.py`) plus `_batch_id`, `_run_id`, `_extracted_at` and `_op` (`U`: the
row as it is now; `D`: the row is gone). The batch is written with `replaceWhere` on `_batch_id`, so a
rerun of the same date replaces its own batch and nothing else.

What a batch holds:
- **full** (the first run of a table, or `crm run --full`): every row of the shop table. A full batch is a
  snapshot: keys absent from it are deleted, and `clean` rebuilds silver from it.
- **incremental** (every other night): the rows whose `updated_at` is after the table's watermark minus
  `extract.overlap_minutes` (a transaction that committed late with an older `updated_at` is still caught;
  rows read twice are harmless, silver keeps the latest version). Soft-deleted rows (the mapping's
  `deleted_when`) come as `_op = 'D'`. Hard deletes leave nothing to read: every
  `extract.reconcile_every_days` the shop's keys are compared with silver and the missing ones are written
  as `_op = 'D'` rows carrying only `id`.

Watermarks live in the lake table `bronze/_watermarks`, one row per table and batch, written after every
bronze batch of the run has committed. A batch starts from the watermark of the latest *earlier* batch, so
rerunning a date reads at least what its first run read, and a run killed before the watermarks commit
simply reads the same rows again.

Tables are read with Spark JDBC, split into ranges of the integer key (`shop.rows_per_partition` rows each),
so no table is ever held whole in one place. Columns are read as the canonical types (`customSchema`), so
bronze looks the same whatever the source database; timestamps stay the source's text, typed by `clean`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from sqlalchemy import text

from jobs import db, shop_schema
from jobs.config import Settings
from jobs.lake import Lake
from jobs.mapping import CheckedTable, SourceMapping, check_source, load_mapping
from jobs.spark import for_each_table, spark_session
from jobs.types import bronze_type

log = logging.getLogger(__name__)

BRONZE_COLUMNS = ("_batch_id", "_run_id", "_extracted_at", "_op")
STATE_TABLE = "_watermarks"
STATE_SCHEMA = ("table string, batch_id string, mode string, low_watermark timestamp, high_watermark timestamp, "
                "changed long, deleted long, reconciled boolean, run_id string, extracted_at timestamp")
TIMESTAMP_LITERAL = "%Y-%m-%d %H:%M:%S.%f"


@dataclass(frozen=True)
class BatchState:
    """What one batch of one table read: a row of `bronze/_watermarks`."""

    table: str
    batch_id: str
    mode: str  # full or incremental
    low_watermark: datetime | None  # rows updated after this were read (None: all rows)
    high_watermark: datetime | None  # the latest updated_at seen, not in the future; the next night's start
    changed: int  # rows written with _op U
    deleted: int  # rows written with _op D
    reconciled: bool  # keys compared with the shop (always true for a full batch)
    run_id: str
    extracted_at: datetime


@dataclass(frozen=True)
class SourceScope:
    """The key range and size of the rows a batch reads, and their latest past `updated_at`."""

    lowest_id: int
    highest_id: int
    rows: int
    latest_update: datetime | None


def source_mapping(settings: Settings) -> SourceMapping:
    """The mapping `extract.mapping` names: `conf/mappings/<name>.yaml`, or a path to a .yaml file."""
    name = settings.extract.mapping
    path = settings.conf_dir / name if name.endswith((".yaml", ".yml")) else settings.conf_dir / "mappings" / f"{name}.yaml"
    return load_mapping(path)


def run(run_date: date, settings: Settings, run_id: str, full: bool = False) -> dict[str, dict[str, object]]:
    """Extract the run date's batch of every shop table; returns per table its mode and row counts."""
    extracted_at = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    plan = check_source(settings.shop.url, source_mapping(settings))  # stops before anything is written
    with spark_session(settings, "extract") as spark:
        lake = Lake(spark, settings.lake_dir)
        earlier = earlier_batches(lake, run_date)
        states = list(for_each_table(
            lambda name: extract_table(spark, lake, settings, plan[name], run_date, run_id, extracted_at,
                                       earlier.get(name, []), full),
            shop_schema.SHOP_TABLES, settings.spark.parallel_tables,
        ).values())
        # The watermarks advance only now, after every bronze batch of the run has committed.
        lake.merge(spark.createDataFrame([tuple(asdict(s).values()) for s in states], STATE_SCHEMA),
                   "bronze", STATE_TABLE, keys=["table", "batch_id"])
    return {s.table: {"mode": s.mode, "changed": s.changed, "deleted": s.deleted, "reconciled": s.reconciled}
            for s in states}


def extract_table(spark: SparkSession, lake: Lake, settings: Settings, source: CheckedTable, run_date: date,
                  run_id: str, extracted_at: datetime, earlier: list[BatchState], full: bool) -> BatchState:
    """Read one table's changes (or all of it) and write them as its bronze batch; returns the batch state."""
    name = source.mapping.name
    last = max(earlier, key=lambda state: state.batch_id, default=None)
    incremental = not full and last is not None and lake.exists("silver", name)
    low = None
    if incremental and last.high_watermark is not None:
        low = last.high_watermark - timedelta(minutes=settings.extract.overlap_minutes)
    scope = source_scope(settings.shop.url, source, low, extracted_at)
    batch = read_rows(spark, settings, source, low, scope)
    reconciled = not incremental
    if incremental and reconcile_due(earlier, run_date, settings.extract.reconcile_every_days):
        shop_keys = read_keys(spark, settings, source)
        gone = lake.read("silver", name).select("id").join(shop_keys, "id", "left_anti")
        batch = batch.unionByName(deleted_rows(gone, batch))
        reconciled = True
    batch = with_batch_columns(batch, run_date.isoformat(), run_id, extracted_at)
    lake.replace_partition(batch, "bronze", name, {"_batch_id": run_date.isoformat()},
                           evolve=bool(source.carried))
    ops = {row["_op"]: row["count"] for row in lake.read("bronze", name)
           .where(F.col("_batch_id") == run_date.isoformat()).groupBy("_op").count().collect()}
    high = scope.latest_update
    if incremental and last.high_watermark is not None:
        high = max(filter(None, (high, last.high_watermark)))
    state = BatchState(name, run_date.isoformat(), "incremental" if incremental else "full", low, high,
                       int(ops.get("U", 0)), int(ops.get("D", 0)), reconciled, run_id, extracted_at)
    log.info("bronze/%s: %s batch %s, %d changed and %d deleted rows (updated after %s)",
             name, state.mode, state.batch_id, state.changed, state.deleted, low or "the beginning")
    return state


def earlier_batches(lake: Lake, run_date: date) -> dict[str, list[BatchState]]:
    """The watermark rows of the batches before `run_date`, per table."""
    if not lake.exists("bronze", STATE_TABLE):
        return {}
    rows = lake.read("bronze", STATE_TABLE).where(F.col("batch_id") < run_date.isoformat()).collect()
    found: dict[str, list[BatchState]] = {}
    for row in rows:
        found.setdefault(row["table"], []).append(BatchState(**row.asDict()))
    return found


def reconcile_due(earlier: list[BatchState], run_date: date, every_days: int) -> bool:
    """Whether this night compares keys: `every_days` after the last batch that did (0: never)."""
    if every_days <= 0:
        return False
    done = [date.fromisoformat(state.batch_id) for state in earlier if state.reconciled]
    return not done or (run_date - max(done)).days >= every_days


def with_batch_columns(source: DataFrame, batch_id: str, run_id: str, extracted_at: datetime) -> DataFrame:
    """The source rows (with their `_op`) and the other bronze bookkeeping columns, in bronze's order."""
    data = [column for column in source.columns if column != "_op"]
    return source.select(
        *data,
        F.lit(batch_id).alias("_batch_id"),
        F.lit(run_id).alias("_run_id"),
        F.lit(extracted_at).cast("timestamp").alias("_extracted_at"),
        F.col("_op"),
    )


def deleted_rows(keys: DataFrame, like: DataFrame) -> DataFrame:
    """`_op = 'D'` rows for the given keys: `id` set, every other column of `like` null."""
    return keys.select(*[
        F.col("id") if field.name == "id"
        else F.lit("D").alias("_op") if field.name == "_op"
        else F.lit(None).cast(field.dataType).alias(field.name)
        for field in like.schema.fields
    ])


def source_scope(url: str, source: CheckedTable, low: datetime | None, now: datetime) -> SourceScope:
    """Key range, row count and latest past `updated_at` of the rows updated after `low` (all when None)."""
    key, updated = (_quoted(url, source.mapping.source_column(c)) for c in ("id", "updated_at"))
    where = f" WHERE {updated} > '{low.strftime(TIMESTAMP_LITERAL)}'" if low else ""
    sql = (f"SELECT min({key}), max({key}), count(*), "
           f"max(CASE WHEN {updated} <= '{now.strftime(TIMESTAMP_LITERAL)}' THEN {updated} END) "
           f"FROM {_quoted(url, source.mapping.source)}{where}")
    with db.engine(url).connect() as connection:
        lowest, highest, rows, latest = connection.execute(text(sql)).one()
    return SourceScope(int(lowest or 0), int(highest or 0), int(rows), _as_datetime(latest))


def read_rows(spark: SparkSession, settings: Settings, source: CheckedTable, low: datetime | None,
              scope: SourceScope) -> DataFrame:
    """The shop rows updated after `low` (all when None) as canonical bronze columns, in parallel key ranges."""
    url = settings.shop.url
    mapping = source.mapping
    selected = [f"{_quoted(url, mapping.source_column(c.name))} AS {_quoted(url, c.name)}"
                for c in mapping.canonical.columns]
    selected += [_quoted(url, column) for column in source.carried]
    custom = [f"`{c.name}` {bronze_type(c.type).simpleString().upper()}" for c in mapping.canonical.columns]
    custom += [f"`{column}` STRING" for column in source.carried]
    if mapping.deleted_when:
        selected.append(f"CASE WHEN ({mapping.deleted_when}) THEN 'D' ELSE 'U' END AS {_quoted(url, '_op')}")
        custom.append("`_op` STRING")
    where = ""
    if low is not None:
        where = f" WHERE {_quoted(url, mapping.source_column('updated_at'))} > '{low.strftime(TIMESTAMP_LITERAL)}'"
    query = f"(SELECT {', '.join(selected)} FROM {_quoted(url, mapping.source)}{where}) source_{mapping.name}"
    rows = _jdbc_reader(spark, settings, query, scope).option("customSchema", ", ".join(custom)).load()
    names = [c.name for c in mapping.canonical.columns] + list(source.carried)
    op = F.col("_op") if mapping.deleted_when else F.lit("U").alias("_op")
    return rows.select(*names, op)


def read_keys(spark: SparkSession, settings: Settings, source: CheckedTable) -> DataFrame:
    """Every key of the shop table (column `id`), in parallel key ranges."""
    url = settings.shop.url
    key = _quoted(url, source.mapping.source_column("id"))
    scope = source_scope(url, source, None, datetime.now(timezone.utc).replace(tzinfo=None))
    query = f"(SELECT {key} AS {_quoted(url, 'id')} FROM {_quoted(url, source.mapping.source)}) keys_{source.mapping.name}"
    return _jdbc_reader(spark, settings, query, scope).option("customSchema", "`id` BIGINT").load()


def _jdbc_reader(spark: SparkSession, settings: Settings, query: str, scope: SourceScope):
    reader = (
        spark.read.format("jdbc")
        .options(**db.jdbc_target(settings.shop.url).options())
        .option("dbtable", query)
        .option("fetchsize", settings.shop.fetch_size)
    )
    partitions = max(1, math.ceil(scope.rows / settings.shop.rows_per_partition))
    if partitions > 1:
        reader = (
            reader.option("partitionColumn", "id")
            .option("lowerBound", scope.lowest_id)
            .option("upperBound", scope.highest_id + 1)
            .option("numPartitions", partitions)
        )
    return reader


def _as_datetime(value) -> datetime | None:
    """A timestamp as the database returned it (SQLite: text) as a naive UTC datetime."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _quoted(url: str, identifier: str) -> str:
    return f"`{identifier}`" if db.kind(url) == "mysql" else f'"{identifier}"'
