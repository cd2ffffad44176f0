"""The lake: atomic writes, schema enforcement, time travel, partition overwrite, merge, other readers."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from pyspark.errors import PySparkException
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from core.lake import ArrowLake, Lake, SchemaMismatchError


@pytest.fixture()
def lake(spark, tmp_path) -> Lake:
    return Lake(spark, tmp_path / "lake")


def orders(spark, rows):
    """Order rows (id, customer_id, total_amount, as_of) as a DataFrame; amounts become decimals."""
    typed = [(i, c, Decimal(str(amount)), day) for i, c, amount, day in rows]
    return spark.createDataFrame(typed, "id long, customer_id long, total_amount decimal(12,2), as_of date")


def test_a_write_that_fails_midway_leaves_the_previous_version(spark, lake):
    lake.overwrite(orders(spark, [(1, 10, 5, date(2026, 1, 1))]), "silver", "orders")
    before = lake.version("silver", "orders")
    # Many rows over several tasks; the row with id 1500 fails while other tasks have written files.
    failing = spark.range(0, 3000, numPartitions=4).select(
        F.col("id"),
        F.when(F.col("id") == 1500, F.raise_error(F.lit("disk on fire"))).otherwise(F.lit(7)).cast("long").alias("customer_id"),
        F.lit(1).cast("decimal(12,2)").alias("total_amount"),
        F.lit(date(2026, 1, 2)).alias("as_of"),
    )
    with pytest.raises(Exception, match="disk on fire"):
        lake.overwrite(failing, "silver", "orders")
    assert lake.version("silver", "orders") == before
    assertDataFrameEqual(lake.read("silver", "orders"), orders(spark, [(1, 10, 5, date(2026, 1, 1))]))


def test_a_schema_mismatch_is_refused_naming_table_and_columns(spark, lake):
    lake.overwrite(orders(spark, [(1, 10, 5, date(2026, 1, 1))]), "silver", "orders")
    wrong = spark.createDataFrame(
        [(1, 10, "5.00", date(2026, 1, 1), "x")], "id long, customer_id long, total_amount string, as_of date, note string"
    )
    with pytest.raises(SchemaMismatchError) as error:
        lake.append(wrong, "silver", "orders")
    message = str(error.value)
    assert "silver/orders" in message
    assert "unexpected column(s) note" in message
    assert "column total_amount is decimal(12,2) in the table but string in the write" in message
    assert lake.read("silver", "orders").count() == 1


def test_delta_itself_refuses_a_mismatch_behind_our_check(spark, lake):
    lake.overwrite(orders(spark, [(1, 10, 5, date(2026, 1, 1))]), "silver", "orders")
    with pytest.raises(PySparkException):
        spark.createDataFrame([(1, "x")], "id long, other string").write.format("delta").mode("append").save(lake.path("silver", "orders"))


def test_time_travel_reads_earlier_versions(spark, lake):
    lake.overwrite(orders(spark, [(1, 10, 5, date(2026, 1, 1))]), "silver", "orders")
    lake.append(orders(spark, [(2, 11, 6, date(2026, 1, 1))]), "silver", "orders")
    lake.overwrite(orders(spark, [(3, 12, 7, date(2026, 1, 1))]), "silver", "orders")
    assert lake.version("silver", "orders") == 2
    assert sorted(row.id for row in lake.read("silver", "orders", version=0).collect()) == [1]
    assert sorted(row.id for row in lake.read("silver", "orders", version=1).collect()) == [1, 2]
    assert sorted(row.id for row in lake.read("silver", "orders").collect()) == [3]


def test_replacing_a_partition_rewrites_that_date_only(spark, lake):
    day1, day2 = date(2026, 1, 1), date(2026, 1, 2)
    lake.replace_partition(orders(spark, [(1, 10, 5, day1), (2, 10, 6, day1)]), "gold", "scores", {"as_of": day1})
    lake.replace_partition(orders(spark, [(3, 10, 7, day2)]), "gold", "scores", {"as_of": day2})
    # Rerun of day 1 with other results: day 2 untouched, day 1 replaced, not appended.
    lake.replace_partition(orders(spark, [(4, 10, 8, day1)]), "gold", "scores", {"as_of": day1})
    lake.replace_partition(orders(spark, [(4, 10, 8, day1)]), "gold", "scores", {"as_of": day1})
    assert sorted((row.id, row.as_of) for row in lake.read("gold", "scores").collect()) == [(3, day2), (4, day1)]
    assert (lake.root / "gold" / "scores" / "as_of=2026-01-01").is_dir()


def test_a_row_outside_the_replaced_partition_is_refused(spark, lake):
    day1, day2 = date(2026, 1, 1), date(2026, 1, 2)
    lake.replace_partition(orders(spark, [(1, 10, 5, day1)]), "gold", "scores", {"as_of": day1})
    with pytest.raises(PySparkException):
        lake.replace_partition(orders(spark, [(2, 10, 5, day2)]), "gold", "scores", {"as_of": day1})
    assert [row.id for row in lake.read("gold", "scores").collect()] == [1]


def test_merge_updates_inserts_and_deletes_by_key(spark, lake):
    schema = "id long, name string, is_deleted boolean"
    lake.merge(
        spark.createDataFrame([(1, "a", False), (2, "b", False), (9, "gone", True)], schema),
        "silver",
        "customers",
        keys=["id"],
        delete_when="s.is_deleted",
    )
    changes = spark.createDataFrame([(2, "b2", False), (3, "c", False), (1, "a", True)], schema)
    lake.merge(changes, "silver", "customers", keys=["id"], delete_when="s.is_deleted")
    assert sorted((row.id, row.name) for row in lake.read("silver", "customers").collect()) == [(2, "b2"), (3, "c")]


def test_an_upsert_without_spark_updates_and_inserts_by_key_in_one_commit_on_a_table_spark_made(spark, lake, tmp_path):
    """A night's bookkeeping (silver/_applied, silver/_event_batches) is written by delta-rs; lakes of older
    nights hold these tables as Spark made them."""
    import pyarrow as pa

    schema = pa.schema([("table", pa.string()), ("batch_id", pa.string()), ("version_before", pa.int64())])
    arrow = ArrowLake(tmp_path / "lake")
    made = spark.createDataFrame(
        [("orders", "2026-01-01", 3), ("items", "2026-01-01", None)], "table string, batch_id string, version_before long"
    )
    lake.overwrite(made, "silver", "_applied")  # as lake.merge made it in older nights
    changes = pa.Table.from_pylist(
        [
            {"table": "items", "batch_id": "2026-01-01", "version_before": 7},
            {"table": "orders", "batch_id": "2026-01-02", "version_before": 4},
        ],
        schema=schema,
    )
    arrow.upsert(changes, "silver", "_applied", keys=["table", "batch_id"])
    rows = sorted((row.table, row.batch_id, row.version_before) for row in lake.read("silver", "_applied").collect())
    assert rows == [("items", "2026-01-01", 7), ("orders", "2026-01-01", 3), ("orders", "2026-01-02", 4)]
    assert arrow.version("silver", "_applied") == 1
    # A new table is made by the first upsert.
    arrow.upsert(changes, "silver", "_new", keys=["table", "batch_id"])
    assert arrow.read("silver", "_new").num_rows == 2


def test_tables_written_by_spark_read_the_same_with_delta_rs_and_polars(spark, lake):
    import polars as pl
    from deltalake import DeltaTable

    rows = [(i, i % 7, i * 1.5, date(2026, 1, 1 + i % 3)) for i in range(1, 301)]
    for day in (date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)):
        lake.replace_partition(orders(spark, [r for r in rows if r[3] == day]), "gold", "t", {"as_of": day})
    path = lake.path("gold", "t")
    spark_rows = sorted((row.id, row.customer_id, float(row.total_amount), row.as_of) for row in lake.read("gold", "t").collect())
    assert len(spark_rows) == 300

    delta_rs = DeltaTable(path).to_pyarrow_table()
    rs_rows = sorted(
        zip(
            delta_rs["id"].to_pylist(),
            delta_rs["customer_id"].to_pylist(),
            [float(v) for v in delta_rs["total_amount"].to_pylist()],
            delta_rs["as_of"].to_pylist(),
        )
    )
    assert rs_rows == spark_rows

    frame = pl.read_delta(path)
    polars_rows = sorted((r["id"], r["customer_id"], float(r["total_amount"]), r["as_of"]) for r in frame.iter_rows(named=True))
    assert polars_rows == spark_rows


def test_gold_never_holds_a_figure_that_is_not_a_number(spark, lake, caplog):
    """NaN and infinite figures are written as null, and the log names the table, the column and the count."""
    rows = spark.createDataFrame(
        [(1, 0.5, 1.0), (2, float("nan"), 2.0), (3, float("inf"), None), (4, None, float("-inf"))],
        "customer_id long, score double, other double",
    ).withColumn("as_of", F.lit(date(2026, 11, 26)))
    with caplog.at_level("WARNING", logger="core.lake"):
        lake.write_gold(rows, "some_figures", date(2026, 11, 26), "run-1")
    written = {row.customer_id: (row.score, row.other) for row in lake.read("gold", "some_figures").collect()}
    assert written == {1: (0.5, 1.0), 2: (None, 2.0), 3: (None, None), 4: (None, None)}
    assert (
        "gold/some_figures of 2026-11-26: not-a-number or infinite figures written as null: score (2 rows), other (1 rows)" in caplog.text
    )


def test_a_task_returns_no_number_airflow_would_refuse(caplog):
    """Airflow refuses NaN in a task's return value: run_task turns every non-finite number into null."""
    import math

    import numpy as np

    from core.airflow_task import finite_or_none

    with caplog.at_level("WARNING", logger="core.airflow_task"):
        result = finite_or_none({"figures": {"map": float("nan"), "recall": 0.25}, "values": [np.float64("inf"), 3], "rows": 5})
    assert result == {"figures": {"map": None, "recall": 0.25}, "values": [None, 3], "rows": 5}
    assert "result.figures.map = nan: not a finite number" in caplog.text and "result.values[0] = inf" in caplog.text
    assert not math.isnan(result["figures"]["recall"])


# ---- personal data stays out of the Delta log ---------------------------------------------------------------

EMAIL, NAME = "ada.lovelace@example.org", "Lovelace"


def customers(spark, day: date):
    return spark.createDataFrame(
        [(1, EMAIL, NAME, Decimal("12.50"), day), (2, "alan.turing@example.org", "Turing", Decimal("3.00"), day)],
        "id long, email string, last_name string, total_spent decimal(12,2), as_of date",
    )


def log_files_holding(table: Path, *texts: str) -> list[str]:
    """The files of the table's `_delta_log` (JSON commits, checksums, checkpoint Parquet, read as data) that
    hold any of `texts`."""
    found = []
    for path in sorted((table / "_delta_log").rglob("*")):
        if not path.is_file():
            continue
        content = str(pq.read_table(path).to_pylist()) if path.suffix == ".parquet" else path.read_text(errors="replace")
        if any(text in content for text in texts):
            found.append(path.name)
    return found


def statistics_columns(table: Path) -> set[str]:
    """The columns whose minimum the add actions of the table's current files record."""
    actions = DeltaTable(str(table)).get_add_actions(flatten=True)
    return {name.removeprefix("min.") for name in actions.schema.names if name.startswith("min.")}


def test_spark_keeps_text_columns_out_of_the_log_and_its_checkpoints(spark, lake):
    for day in range(1, 12):  # the 11th commit is past Delta's checkpoint interval (10): a checkpoint is written
        lake.replace_partition(customers(spark, date(2026, 1, day)), "gold", "customer_profile", {"as_of": date(2026, 1, day)})
    table = Path(lake.path("gold", "customer_profile"))
    assert list((table / "_delta_log").glob("*.checkpoint.parquet")), "no checkpoint written: the test proves nothing about them"
    assert log_files_holding(table, EMAIL, NAME) == []
    assert statistics_columns(table) == {"id", "total_spent"}  # numbers keep theirs: files are still skipped on keys
    assert lake.read("gold", "customer_profile").where(F.col("email") == EMAIL).count() == 11


def test_delta_rs_keeps_text_columns_out_of_the_log_and_its_checkpoints(spark, tmp_path):
    lake = ArrowLake(tmp_path / "lake")
    for batch in ("2026-01-01", "2026-01-02"):
        rows = customers(spark, date(2026, 1, 1)).drop("as_of").withColumn("_batch_id", F.lit(batch)).toArrow()
        lake.replace_partition(rows, "bronze", "customers", {"_batch_id": batch})
    table = Path(lake.path("bronze", "customers"))
    DeltaTable(str(table)).create_checkpoint()
    assert log_files_holding(table, EMAIL, NAME) == []
    assert statistics_columns(table) == {"id", "total_spent"}


def test_a_table_made_without_the_properties_is_rewritten_without_text_statistics_at_its_next_write(spark, lake, tmp_path):
    spark_table = Path(lake.path("silver", "customers"))
    customers(spark, date(2026, 1, 1)).write.format("delta").partitionBy("as_of").save(str(spark_table))  # as an older version did
    lake.append(customers(spark, date(2026, 1, 2)), "silver", "customers")
    arrow_lake = ArrowLake(tmp_path / "lake")
    rows = customers(spark, date(2026, 1, 1)).drop("as_of").toArrow()
    write_deltalake(arrow_lake.path("bronze", "customers"), rows)
    arrow_lake.overwrite(rows, "bronze", "customers")
    for table in (spark_table, Path(arrow_lake.path("bronze", "customers"))):
        assert DeltaTable(str(table)).metadata().configuration["delta.dataSkippingStatsColumns"] == "id,total_spent"
        assert statistics_columns(table) == {"id", "total_spent"}
        # Only the log files from before the rewrite (version 0 the older code wrote, 1 setting the properties)
        # still hold them, until Delta's log retention ends; the rewrite (2) and the write (3) do not.
        assert {int(name.split(".")[0]) for name in log_files_holding(table, EMAIL)} <= {0, 1}
        assert DeltaTable(str(table)).version() == 3
    assert lake.read("silver", "customers").count() == 4 and arrow_lake.read("bronze", "customers").num_rows == 2
