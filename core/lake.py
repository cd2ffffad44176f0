"""The lake: where each Delta table lives and how it is written.

Tables are `<lake>/<layer>/<table>` with layer bronze, silver or gold, the lake a folder (`<data>/lake`) or a
prefix on an S3 object store (`lake.uri`; core/lake_location.py says how each engine reaches it). Every write is one Delta
commit, so a job killed midway leaves the table at its previous version. Writes check the schema first and
refuse a mismatch with an error naming the table and the columns; Delta's own schema enforcement stays on
behind that check.

Delta copies the minimum and maximum of each column of each data file into the table's log (`_delta_log`:
JSON commits, checkpoints, checksums): that log would hold customers' e-mail addresses and names in clear.
Every table here keeps statistics of its number, date and time columns only (`private_statistics`, table
properties set when the table is created, by Spark and delta-rs alike): no text column's values (e-mail,
names, phone, street, a review, a quarantined row) reach the log, and the lake's queries, which filter on
partitions, keys and dates, lose nothing by it. A table an older version made without them is rewritten
once, at its next write, with the properties set: its files' statistics then no longer reach new commits,
checksums or checkpoints (its older log files go when Delta's log retention, 30 days, ends).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import SchemaMismatchError as DeltaSchemaError
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, DoubleType, FloatType, MapType, StringType, StructType

from core.crm_schema import CRM_NAMES, crm_metadata
from core.lake_location import LakeLocation
from core.spark import is_connect
from core.types import gold_rows, no_gold_rows

log = logging.getLogger(__name__)

LAYERS = ("bronze", "silver", "gold")
#: Tables whose `private_statistics` properties this process has checked (and set when missing), by path.
_STATISTICS_CHECKED: set[str] = set()
#: Spark's names of the column types Delta keeps statistics of here: numbers, dates, times (never text).
STATISTICS_TYPES = ("tinyint", "smallint", "int", "bigint", "float", "double", "decimal", "date", "timestamp", "timestamp_ntz")
PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SchemaMismatchError(ValueError):
    """A write whose columns or types differ from the table's."""


def private_statistics(columns: Sequence[tuple[str, str]], partition_by: Sequence[str] = ()) -> dict[str, str]:
    """The Delta table properties that keep every text column out of the table's file statistics.

    `columns` are (name, Spark type name) pairs. Delta then keeps min/max only of the number, date and time
    columns named in `delta.dataSkippingStatsColumns` (not the partition columns, which Delta refuses there);
    `delta.dataSkippingNumIndexedCols = 0` means no statistics for a table with none of those, or for a column
    a later write adds, until the table's next write names it.
    """
    kept = [
        name for name, kind in columns if name not in partition_by and PLAIN_NAME.fullmatch(name) and kind.split("(")[0] in STATISTICS_TYPES
    ]
    return {"delta.dataSkippingNumIndexedCols": "0", **({"delta.dataSkippingStatsColumns": ",".join(kept)} if kept else {})}


def _arrow_type_name(kind: pa.DataType) -> str:
    """Spark's name of the kind of an Arrow type, as far as `private_statistics` needs it."""
    if pa.types.is_integer(kind):
        return "bigint"
    if pa.types.is_floating(kind):
        return "double"
    if pa.types.is_decimal(kind):
        return "decimal"
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_timestamp(kind):
        return "timestamp"
    return str(kind)


def arrow_statistics(schema: pa.Schema, partition_by: Sequence[str] = ()) -> dict[str, str]:
    """`private_statistics` of an Arrow schema (what delta-rs writes, and any table's schema read by it)."""
    return private_statistics([(field.name, _arrow_type_name(field.type)) for field in schema], partition_by)


class LakeLayout:
    """Where the Delta tables under one root (a folder, or a prefix on an object store) live, whatever engine
    reads or writes them: `path` is Spark's, `delta_table` and `delta_rs_uri` with `storage_options` delta-rs'
    (core/lake_location.py)."""

    def __init__(self, root: Path | str | LakeLocation):
        self.location = LakeLocation.parse(root)
        #: The lake's folder, or its location on an object store.
        self.root = self.location.folder if self.location.is_local else self.location
        self.storage_options = self.location.delta_rs_options()

    def path(self, layer: str, table: str) -> str:
        """The table's path for Spark: a folder, or s3a://bucket/prefix/layer/table."""
        if layer not in LAYERS:
            raise ValueError(f"unknown lake layer {layer!r}; expected one of {', '.join(LAYERS)}")
        return self.location.spark_uri(layer, table)

    def delta_rs_uri(self, layer: str, table: str) -> str:
        """The table's path for delta-rs (with `storage_options`): a folder, or s3://bucket/prefix/layer/table."""
        self.path(layer, table)  # the layer's check
        return self.location.delta_rs_uri(layer, table)

    def delta_table(self, layer: str, table: str) -> DeltaTable:
        """The table's Delta log, read by delta-rs (no JVM)."""
        return DeltaTable(self.delta_rs_uri(layer, table), storage_options=self.storage_options)

    def exists(self, layer: str, table: str) -> bool:
        """True when the table has at least one commit (a failed first write leaves none)."""
        self.path(layer, table)  # the layer's check
        if self.location.is_local:
            log = self.location.folder / layer / table / "_delta_log"
            return log.is_dir() and any(log.glob("*.json"))
        selector = pafs.FileSelector(self.location.arrow_path(layer, table, "_delta_log"), allow_not_found=True)
        return any(info.path.endswith(".json") for info in self.filesystem().get_file_info(selector))

    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow file system of the lake (local, or S3 with the store's access): `location.arrow_path`s."""
        if not hasattr(self, "_arrow_filesystem"):
            self._arrow_filesystem = self.location.arrow_filesystem()
        return self._arrow_filesystem

    def version(self, layer: str, table: str) -> int | None:
        """The table's current version, or None when it does not exist yet (read from the log, no JVM)."""
        return self.delta_table(layer, table).version() if self.exists(layer, table) else None

    def latest_commit(self, layer: str, table: str) -> dict[str, int | bool | None]:
        """The table's current version, when it was committed (ms since the epoch: which state of the table this
        is, even if it was dropped and written again, its versions starting at 0 again) and `rows_at_most`: its
        rows from the files' statistics in the log (an upper bound of any filter's rows; None when a file was
        written without a row count); `plain_files`: its rows are exactly its data files' rows (reader protocol 1:
        no deletion vectors, no column mapping), so `ArrowLake.read` gives what Spark reads. One read of the log,
        no JVM."""
        table_log = self.delta_table(layer, table)
        counts = pa.table(table_log.get_add_actions(flatten=True)).column("num_records")
        return {
            "version": table_log.version(),
            "committed_at": int(table_log.history(1)[0]["timestamp"]),
            "rows_at_most": None if counts.null_count else int(pc.sum(counts).as_py() or 0),
            "plain_files": table_log.protocol().min_reader_version == 1,
        }

    def rows_written(self, layer: str, table: str) -> int:
        """Rows the table's latest commit wrote (from the operation metrics in its log, whoever wrote it)."""
        metrics = self.delta_table(layer, table).history(1)[0].get("operationMetrics") or {}
        return int(metrics.get("numOutputRows") or metrics.get("num_added_rows") or 0)

    def has_rows(self, layer: str, table: str, partition: Mapping[str, object]) -> bool:
        """Whether the table exists and holds rows in the partition (e.g. `{"run_date": d}`), from file statistics."""
        if not self.exists(layer, table):
            return False
        condition = None
        for column, value in partition.items():
            term = pc.field(column) == value
            condition = term if condition is None else condition & term
        return self._dataset(layer, table).count_rows(filter=condition) > 0

    def _dataset(self, layer: str, table: str) -> ds.Dataset:
        """The table's current files as a pyarrow dataset, their partition values from the folder names (not
        delta-rs' `to_pyarrow_dataset`, which can abort the interpreter at exit: see `ArrowLake.read`)."""
        delta = self.delta_table(layer, table)
        schema = pa.schema(delta.schema().to_arrow())
        partitions = delta.metadata().partition_columns
        partitioning = ds.partitioning(pa.schema([schema.field(name) for name in partitions]), flavor="hive") if partitions else None
        files = delta.file_uris()
        if not self.location.is_local:  # s3://bucket/key: the file system's paths are bucket/key
            files = [uri.split("://", 1)[1] for uri in files]
        return ds.dataset(files, schema=schema, format="parquet", partitioning=partitioning, filesystem=self.filesystem())

    def missing_statistics_properties(self, layer: str, table: str) -> dict[str, str]:
        """The `private_statistics` properties an existing table lacks (a table made by an older version, or
        whose columns grew): what its next write sets. A table made by an older version lacks
        `delta.dataSkippingNumIndexedCols`: its files' statistics hold text columns."""
        delta = self.delta_table(layer, table)
        metadata = delta.metadata()
        wanted = arrow_statistics(pa.schema(delta.schema().to_arrow()), metadata.partition_columns)
        return {key: value for key, value in wanted.items() if metadata.configuration.get(key) != value}

    def statistics_to_mend(self, layer: str, table: str) -> dict[str, str]:
        """`missing_statistics_properties` of an existing table, read once per table and process: a table this
        process has already checked (and mended) is not opened again before each write (`statistics_mended`)."""
        if str(self.path(layer, table)) in _STATISTICS_CHECKED:
            return {}
        return self.missing_statistics_properties(layer, table)

    def statistics_mended(self, layer: str, table: str) -> None:
        """Remember that the table has its `private_statistics` properties (see `statistics_to_mend`)."""
        _STATISTICS_CHECKED.add(str(self.path(layer, table)))

    def tables(self) -> list[tuple[str, str]]:
        """Every Delta table under the root as (layer, table); nested names like `_quarantine/orders`."""
        found = []
        for layer in LAYERS:
            if self.location.is_local:
                base = self.location.folder / layer
                if base.is_dir():
                    found += [(layer, str(log.parent.relative_to(base))) for log in sorted(base.rglob("_delta_log"))]
                continue
            base = self.location.arrow_path(layer)
            listing = self.filesystem().get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            logs = sorted(info.path for info in listing if info.type == pafs.FileType.Directory and info.base_name == "_delta_log")
            found += [(layer, log[len(base) + 1 : -len("/_delta_log")]) for log in logs]
        return found


class ArrowLake(LakeLayout):
    """The lake without a JVM: Arrow in and out through delta-rs (`deltalake`), one Delta commit per write.

    Extraction writes bronze this way (no Spark session to start, commits in milliseconds); Spark reads the
    same tables. Timestamps must be Arrow `timestamp[us, tz=UTC]`, which Delta and Spark call `timestamp`.
    """

    def read(self, layer: str, table: str, columns: Sequence[str] | None = None, where=None) -> pa.Table:
        """The table, or some of its columns and the rows matching `where` (a `pyarrow.compute` expression).

        The files of the current version come from the Delta log (delta-rs); pyarrow reads them itself, with
        the partition values from their folder names, rather than through delta-rs' own
        `to_pyarrow_dataset`, which can leave a thread behind that aborts the interpreter at exit
        ("terminate called without an active exception") and so fails a command that had succeeded.
        """
        if not self.exists(layer, table):
            raise FileNotFoundError(f"lake table {layer}/{table} does not exist at {self.path(layer, table)}")
        return self._dataset(layer, table).to_table(columns=list(columns) if columns else None, filter=where)

    def count_rows(self, layer: str, table: str, where=None) -> int:
        """How many rows `read` would give, counted by streaming the files (none kept in memory)."""
        return self._dataset(layer, table).count_rows(filter=where)

    def replace_partition(self, data, layer: str, table: str, partition: Mapping[str, object], evolve: bool = False) -> None:
        """Replace one partition (e.g. `_batch_id`) with `data` (a table or a stream of batches) in one commit."""
        condition = " AND ".join(f"{column} = {_sql_literal(value)}" for column, value in partition.items())
        exists = self.exists(layer, table)
        try:
            write_deltalake(
                self.delta_rs_uri(layer, table),
                data,
                storage_options=self.storage_options,
                mode="overwrite",
                partition_by=list(partition),
                predicate=condition if exists else None,
                schema_mode="merge" if evolve else None,
                configuration=self._statistics_properties(data.schema, layer, table, list(partition)),
            )
        except DeltaSchemaError as error:
            raise SchemaMismatchError(f"lake table {layer}/{table}: the write does not match the table's schema: {error}") from None

    def upsert(self, rows: pa.Table, layer: str, table: str, keys: Sequence[str]) -> None:
        """Write `rows` by `keys` in one commit (delta-rs MERGE): a key the table holds gets the row's values, a
        new one is inserted; creates the table. For small bookkeeping tables (a night's record of what it applied)."""
        if not self.exists(layer, table):
            self.overwrite(rows, layer, table)
            return
        self._statistics_properties(rows.schema, layer, table)  # an existing table: sets the properties it lacks
        on = " AND ".join(f"t.`{key}` = s.`{key}`" for key in keys)
        (
            self.delta_table(layer, table)
            .merge(rows, on, source_alias="s", target_alias="t")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )

    def overwrite(self, data, layer: str, table: str) -> None:
        """Replace the whole table in one commit."""
        write_deltalake(
            self.delta_rs_uri(layer, table),
            data,
            mode="overwrite",
            configuration=self._statistics_properties(data.schema, layer, table),
            storage_options=self.storage_options,
        )

    def _statistics_properties(self, schema: pa.Schema, layer: str, table: str, partition_by: Sequence[str] = ()) -> dict[str, str] | None:
        """The `private_statistics` of a new table (set by its first commit); an existing table that lacks them
        gets them first, in a commit of their own (delta-rs sets a new table's properties only), and one made
        by an older version is rewritten (streamed: the replaced files stay until a vacuum)."""
        if not self.exists(layer, table):
            return arrow_statistics(schema, partition_by)
        missing = self.statistics_to_mend(layer, table)
        if missing:
            self.delta_table(layer, table).alter.set_table_properties(missing)
            if "delta.dataSkippingNumIndexedCols" in missing:
                partitions = self.delta_table(layer, table).metadata().partition_columns
                write_deltalake(
                    self.delta_rs_uri(layer, table),
                    self._dataset(layer, table).scanner().to_reader(),
                    mode="overwrite",
                    partition_by=partitions or None,
                    storage_options=self.storage_options,
                )
        self.statistics_mended(layer, table)
        return None


def with_finite_figures(rows: DataFrame) -> tuple[DataFrame, Observation | None]:
    """`rows` with every NaN or infinite floating-point figure made null, and an Observation that counts them
    per column while the rows are written (None when `rows` has no floating-point column): gold (and so the CRM
    and the exports) never holds a figure that is not a number, and counting them costs no Spark job of its
    own. A figure that cannot be computed is null; the job that made it says why."""
    floating = [field.name for field in rows.schema.fields if isinstance(field.dataType, (DoubleType, FloatType))]
    if not floating:
        return rows, None
    bad = {name: ~F.col(name).isNull() & (F.isnan(name) | F.col(name).isin(float("inf"), float("-inf"))) for name in floating}
    observation = Observation(f"non_finite_{uuid.uuid4().hex}")
    counted = rows.observe(observation, *[F.count(F.when(condition, 1)).alias(name) for name, condition in bad.items()])
    nulled = counted.withColumns(
        {name: F.when(bad[name], F.lit(None).cast(rows.schema[name].dataType)).otherwise(F.col(name)) for name in floating}
    )
    return nulled, observation


def warn_of_non_finite(observation: Observation | None, label: str) -> None:
    """After the write of `with_finite_figures`' rows: a warning naming each column that held NaN or infinite
    figures and how many rows."""
    found = {name: count for name, count in (observation.get if observation is not None else {}).items() if count}
    if found:
        log.warning(
            "%s: not-a-number or infinite figures written as null: %s",
            label,
            ", ".join(f"{name} ({count:,} rows)" for name, count in found.items()),
        )


class Lake(LakeLayout):
    """Names, opens and writes the Delta tables under one root folder with Spark."""

    def __init__(self, spark: SparkSession, root: Path | str | LakeLocation):
        super().__init__(root)
        self.spark = spark

    # ---- reads -------------------------------------------------------------------------------
    def read(self, layer: str, table: str, version: int | None = None, timestamp: datetime | str | None = None) -> DataFrame:
        """The table now, or as it was at a version or timestamp (Delta time travel)."""
        if not self.exists(layer, table):
            raise FileNotFoundError(f"lake table {layer}/{table} does not exist at {self.path(layer, table)}")
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        if timestamp is not None:
            reader = reader.option("timestampAsOf", str(timestamp))
        return reader.load(self.path(layer, table))

    # ---- writes ------------------------------------------------------------------------------
    def overwrite(self, df: DataFrame, layer: str, table: str, partition_by: Sequence[str] = (), evolve: bool = False) -> None:
        """Replace the whole table in one commit (same schema as before, or more columns with `evolve`)."""
        self._write(df, layer, table, "overwrite", partition_by, evolve=evolve)

    def append(self, df: DataFrame, layer: str, table: str, partition_by: Sequence[str] = ()) -> None:
        """Add rows in one commit."""
        self._write(df, layer, table, "append", partition_by)

    def replace_partition(
        self, df: DataFrame, layer: str, table: str, partition: Mapping[str, object], partition_by: Sequence[str] = (), evolve: bool = False
    ) -> None:
        """Replace the rows of one partition (e.g. one run date) in one commit: `replaceWhere`.

        Rerunning a date rewrites only that date. Every row of `df` must belong to the partition; Delta
        refuses the commit otherwise. `evolve` lets the write add columns (and leave some out: null).
        """
        condition = " AND ".join(f"`{column}` = {_sql_literal(value)}" for column, value in partition.items())
        self._write(df, layer, table, "overwrite", partition_by or tuple(partition), replace_where=condition, evolve=evolve)

    def write_gold(self, rows: DataFrame | None, table: str, run_date: date, run_id: str) -> int:
        """Replace the run date's partition (`as_of`) of gold/<table> with `rows` in one commit; returns the
        rows written (from the commit, no re-read). The way every job writes gold, so a rerun of a date
        rewrites only that date.

        A table that becomes a CRM table gets exactly the CRM table's columns, in its order and types, with
        `as_of` and `run_id` set here (`core.types.gold_rows`); None writes an empty partition (nothing
        tonight). `customer_features`, which has no CRM table (its columns are the feature registry's and
        carry `as_of`), is written as it comes.
        """
        if table in crm_metadata(None).tables:
            if rows is None:
                rows = no_gold_rows(self.spark, table)
            else:  # measures under the CRM's older column names: the one place they are renamed
                rows = gold_rows(rows.withColumnsRenamed(CRM_NAMES.get(table, {})), table, run_date, run_id)
        elif rows is None:
            raise ValueError(f"gold/{table}: no rows given and no CRM table to take empty columns from")
        rows, non_finite = with_finite_figures(rows)
        self.replace_partition(rows, "gold", table, {"as_of": run_date}, evolve=True)
        warn_of_non_finite(non_finite, f"gold/{table} of {run_date}")
        return self.rows_written("gold", table)

    def merge(
        self,
        df: DataFrame,
        layer: str,
        table: str,
        keys: Sequence[str],
        delete_when: str | None = None,
        update_when: str | None = None,
        insert_when: str | None = None,
        control_columns: Sequence[str] = (),
        evolve: bool = False,
        target_condition: str | None = None,
    ) -> dict[str, int]:
        """Upsert `df` into the table by `keys` in one commit (Delta MERGE); returns rows inserted/updated/deleted.

        `df` must be materialized (`localCheckpoint(eager=True)`, or rows made in Python): MERGE reads its source
        twice, and the night's Spark does not copy it first (`spark.databricks.delta.merge.materializeSource`
        is `none`, `core.spark_local.spark_settings`), so a source read from files could change in between.
        `delete_when` is a SQL condition on the incoming row, its columns prefixed `s.`
        (e.g. `s.is_deleted`): a matching row deletes its key instead of being written.
        `update_when` guards updates of existing rows (columns of the table prefixed `t.`), e.g.
        `s.updated_at >= t.updated_at` so an older version never overwrites a newer one.
        `insert_when` guards inserts of new keys (default: not `delete_when`).
        `target_condition` narrows the table's rows the MERGE looks at (e.g. `t.event_date >= '2026-11-01'`):
        Delta reads only the partitions and files it can match.
        `control_columns` of `df` are used in those conditions but not written. `evolve` adds the columns
        of `df` the table lacks (as they are) and fills the table's columns `df` lacks with nulls.
        Creates the table from `df` when it does not exist yet.
        """
        data_columns = [column for column in df.columns if column not in control_columns]
        if evolve and self.exists(layer, table):
            current = self.read(layer, table).schema
            added = [field for field in df.schema.fields if field.name in data_columns and field.name not in current.fieldNames()]
            if added:
                columns = ", ".join(f"`{field.name}` {field.dataType.simpleString()}" for field in added)
                self.spark.sql(f"ALTER TABLE delta.`{self.path(layer, table)}` ADD COLUMNS ({columns})")
            df = self._with_table_columns(df, layer, table)
            data_columns = [column for column in df.columns if column not in control_columns]
        if not self.exists(layer, table):
            keep = insert_when or (None if delete_when is None else f"NOT ({delete_when})")
            rows = df if keep is None else df.alias("s").where(keep)
            self._write(rows.select(*data_columns), layer, table, "overwrite", ())
            return {"inserted": self.rows_written(layer, table), "updated": 0, "deleted": 0}
        self._check_schema(df.select(*data_columns).schema, layer, table)
        self._keep_statistics_private(layer, table)
        # SQL MERGE rather than delta-spark's DeltaTable builder: the same statement runs in a local
        # session and through Spark Connect, whose servers need no Delta Connect plugin for it.
        source = f"_merge_source_{uuid.uuid4().hex}"
        plain_string_types(df).createOrReplaceTempView(source)
        on = " AND ".join([f"t.`{key}` = s.`{key}`" for key in keys] + ([f"({target_condition})"] if target_condition else []))
        columns = ", ".join(f"`{column}`" for column in data_columns)
        clauses = []
        insert_condition = insert_when
        if delete_when is not None:
            clauses.append(f"WHEN MATCHED AND ({delete_when}) THEN DELETE")
            insert_condition = insert_when or f"NOT ({delete_when})"
        clauses.append(
            f"WHEN MATCHED{f' AND ({update_when})' if update_when else ''} THEN UPDATE SET "
            + ", ".join(f"t.`{column}` = s.`{column}`" for column in data_columns)
        )
        clauses.append(
            f"WHEN NOT MATCHED{f' AND ({insert_condition})' if insert_condition else ''} THEN INSERT "
            f"({columns}) VALUES ({', '.join(f's.`{column}`' for column in data_columns)})"
        )
        try:
            metrics = self.spark.sql(
                f"MERGE INTO delta.`{self.path(layer, table)}` AS t USING {source} AS s ON {on} " + " ".join(clauses)
            ).first()
        finally:
            self.spark.catalog.dropTempView(source)
        return {
            "inserted": int(metrics["num_inserted_rows"]),
            "updated": int(metrics["num_updated_rows"]),
            "deleted": int(metrics["num_deleted_rows"]),
        }

    def _write(
        self,
        df: DataFrame,
        layer: str,
        table: str,
        mode: str,
        partition_by: Sequence[str],
        replace_where: str | None = None,
        evolve: bool = False,
    ) -> None:
        exists = self.exists(layer, table)
        if exists:
            if evolve:
                df = self._with_table_columns(df, layer, table)
            self._check_schema(df.schema, layer, table, evolve)
            self._keep_statistics_private(layer, table)
        writer = plain_string_types(df).write.format("delta").mode(mode)
        if not exists:  # a new table's properties come with its first commit
            statistics = private_statistics([(field.name, field.dataType.simpleString()) for field in df.schema.fields], partition_by)
            for key, value in statistics.items():
                writer = writer.option(key, value)
        if evolve:
            writer = writer.option("mergeSchema", "true")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        if replace_where is not None:
            writer = writer.option("replaceWhere", replace_where)
        writer.save(self.path(layer, table))

    def _keep_statistics_private(self, layer: str, table: str) -> None:
        """Set the `private_statistics` properties an existing table lacks, before it is written; a table made
        by an older version is rewritten as it is, in one commit, so its files' statistics hold no text."""
        missing = self.statistics_to_mend(layer, table)
        if missing:
            path = self.path(layer, table)
            properties = ", ".join(f"'{key}' = '{value}'" for key, value in missing.items())
            self.spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({properties})")
            if "delta.dataSkippingNumIndexedCols" in missing:
                partitions = self.delta_table(layer, table).metadata().partition_columns
                plain_string_types(self.read(layer, table)).write.format("delta").mode("overwrite").partitionBy(*partitions).save(path)
        self.statistics_mended(layer, table)

    def _with_table_columns(self, df: DataFrame, layer: str, table: str) -> DataFrame:
        """`df` plus, as nulls, the table's columns it lacks (a carried source column that went away)."""
        missing = [field for field in self.read(layer, table).schema.fields if field.name not in df.columns]
        return df.withColumns({field.name: F.lit(None).cast(field.dataType) for field in missing}) if missing else df

    def _check_schema(self, incoming: StructType, layer: str, table: str, evolve: bool = False) -> None:
        current = self.read(layer, table).schema
        problems = schema_differences(current, incoming)
        if evolve:  # new columns are welcome; a changed type is not
            problems = [problem for problem in problems if not problem.startswith("unexpected column")]
        if problems:
            raise SchemaMismatchError(f"lake table {layer}/{table}: the write does not match the table's schema: " + "; ".join(problems))


def plain_string_types(df: DataFrame) -> DataFrame:
    """`df` with its text columns of Spark's plain `string` type, as every reader of the lake expects.

    Spark Connect's Python client sends each string type with its collation (UTF8_BINARY) spelled out; the
    server keeps it as an explicit collation and Delta writes `string collate UTF8_BINARY` into the table's
    schema, a type delta-rs (the extraction's writer and the tests' independent reader) refuses. A cast to
    the type's DDL name gives the plain type back; a local session needs none.
    """
    if not is_connect(df.sparkSession):
        return df

    def holds_text(kind: DataType) -> bool:
        return isinstance(kind, StringType) or (isinstance(kind, (ArrayType, MapType, StructType)) and "string" in kind.simpleString())

    columns = [
        F.col(f"`{field.name}`").cast(field.dataType.simpleString()).alias(field.name)
        if holds_text(field.dataType)
        else F.col(f"`{field.name}`")
        for field in df.schema.fields
    ]
    return df.select(*columns)


def schema_differences(table_schema: StructType, write_schema: StructType) -> list[str]:
    """What differs between a table's columns and a write's, in words; empty when they match."""
    table_types = {field.name: field.dataType.simpleString() for field in table_schema.fields}
    write_types = {field.name: field.dataType.simpleString() for field in write_schema.fields}
    problems = []
    missing = [name for name in table_types if name not in write_types]
    extra = [name for name in write_types if name not in table_types]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected column(s) {', '.join(extra)}")
    for name, kind in write_types.items():
        if name in table_types and table_types[name] != kind:
            problems.append(f"column {name} is {table_types[name]} in the table but {kind} in the write")
    return problems


def _sql_literal(value: object) -> str:
    if isinstance(value, (date, datetime)):
        return f"'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)
