"""The quality gates: a clean layer passes, a critical violation stops the run naming what failed, a warning
is recorded only, an empty bronze batch passes, a rerun replaces the date's summary, a table unchanged since
its passing gate is not validated again, rows that fit in memory are read from the table's files (the same rows
and types as Spark's, without Spark) unless its files are not its rows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pandas
import pyarrow as pa
import pytest

from core import shop_schema
from core.lake import ArrowLake, Lake
from core.types import bronze_arrow_type, bronze_type, canonical_schema
from jobs import validate
from jobs.score import COLUMNS as SEGMENT_COLUMNS

REPO = Path(__file__).resolve().parent.parent
RUN_DATE = date(2026, 11, 26)
CREATED = datetime(2026, 11, 1, 10, 0)


@pytest.fixture()
def lake_settings(settings, tmp_path):
    """Settings whose data root (lake, quality results) is this test's own folder."""
    return settings.model_copy(update={"data_dir": tmp_path})


@pytest.fixture()
def lake(spark, lake_settings) -> Lake:
    return Lake(spark, lake_settings.lake_dir)


def silver_rows(spark, table_name: str, rows: list[dict]):
    """Typed silver rows of `table_name` (columns not given are null)."""
    schema = canonical_schema(shop_schema.metadata.tables[table_name])
    return spark.createDataFrame([tuple(row.get(field.name) for field in schema.fields) for row in rows], schema)


def customer(id, email="ada@example.com", language="en"):
    return {
        "id": id,
        "email": email,
        "first_name": "Ada",
        "language": language,
        "country": "CN",
        "created_at": CREATED,
        "updated_at": CREATED,
    }


def order(id, customer_id=1, total="12.50", status="delivered"):
    return {
        "id": id,
        "customer_id": customer_id,
        "status": status,
        "total_amount": Decimal(total),
        "currency": "CNY",
        "created_at": CREATED,
        "updated_at": CREATED,
    }


def write_silver(spark, lake, customers: list[dict], orders: list[dict]) -> None:
    lake.overwrite(silver_rows(spark, "customers", customers), "silver", "customers")
    lake.overwrite(silver_rows(spark, "orders", orders), "silver", "orders")


def bronze_orders(spark, batches: dict[str, list[dict]]):
    """Bronze rows of `orders` per batch id (the run date as text), source values as extracted."""
    table = shop_schema.orders
    columns = [f"`{c.name}` {bronze_type(c.type).simpleString()}" for c in table.columns]
    schema = ", ".join(columns + ["_batch_id string", "_run_id string", "_extracted_at timestamp", "_op string", "_unreadable string"])
    data = [
        tuple(row.get(c.name) for c in table.columns) + (batch_id, "run-0", CREATED, row.get("_op", "U"), None)
        for batch_id, rows in batches.items()
        for row in rows
    ]
    return spark.createDataFrame(data, schema)


def test_a_clean_silver_layer_passes_and_writes_its_summary_and_data_docs(spark, lake, lake_settings):
    write_silver(spark, lake, [customer(1), customer(2)], [order(10), order(11, customer_id=2)])

    summary = validate.run(RUN_DATE, lake_settings, "run-1", layer="silver", tables_to_check=("customers", "orders"))

    assert summary["passed"] is True
    assert set(summary["tables"]) == {"customers", "orders"}
    assert summary["tables"]["orders"]["rows"] == 2
    # columns, id x2, status (customer_id may be null: a guest order; total_amount may be negative: a credit note)
    assert summary["tables"]["orders"]["expectations"] >= 4
    assert all(not report["critical_failures"] and not report["warnings"] for report in summary["tables"].values())
    written = lake_settings.data_dir / "quality" / "2026-11-26" / "silver.json"
    assert json.loads(written.read_text()) == summary
    assert summary["run_id"] == "run-1"
    assert Path(summary["data_docs"]).name == "index.html" and Path(summary["data_docs"]).is_file()
    assert Path(summary["tables"]["orders"]["data_docs"]).is_file()
    assert validate.quality_summary(lake_settings, RUN_DATE) == {"silver": summary}
    assert validate.quality_summary(lake_settings, date(2026, 11, 25)) is None


@pytest.mark.parametrize("in_memory_max_rows", [validate.IN_MEMORY_MAX_ROWS, 0], ids=["pandas engine", "spark engine"])
def test_a_critical_violation_stops_the_gate_naming_table_column_and_values(spark, lake, lake_settings, monkeypatch, in_memory_max_rows):
    """Whichever GX engine validates (rows in memory, or more than IN_MEMORY_MAX_ROWS on Spark), the same failures."""
    monkeypatch.setattr(validate, "IN_MEMORY_MAX_ROWS", in_memory_max_rows)
    write_silver(
        spark, lake, [customer(1), customer(2, email="not-an-email")], [order(10), order(10, total="3.00"), order(11, total="-5.00")]
    )

    with pytest.raises(validate.QualityGateError) as raised:
        validate.run(RUN_DATE, lake_settings, "run-1", layer="silver", tables_to_check=("customers", "orders"))

    message = str(raised.value)
    # A negative order total is a credit note, which clean keeps: not a failure.
    assert message.startswith("quality gate silver for 2026-11-26 failed: 2 critical expectation(s) not met (customers.email, orders.id)")
    assert "silver/orders: expect_column_values_to_be_unique on column id: 2 of 3 rows unexpected, e.g. 10" in message
    assert "total_amount" not in message
    assert ("silver/customers: expect_column_values_to_match_regex on column email: 1 of 2 rows unexpected, e.g. 'not-an-email'") in message
    pages = re.findall(r"\(Data Docs: (\S+\.html)\)", message)
    assert len(pages) == 2 and all(Path(page).is_file() for page in pages)
    recorded = validate.quality_summary(lake_settings, RUN_DATE)["silver"]
    assert recorded["passed"] is False and recorded["critical_failures"] == 2


def test_an_unknown_order_status_is_a_warning_that_does_not_stop_the_gate(spark, lake, lake_settings):
    write_silver(spark, lake, [customer(1)], [order(10), order(11, status="lost_in_mail")])

    summary = validate.run(RUN_DATE, lake_settings, "run-1", layer="silver", tables_to_check=("customers", "orders"))

    assert summary["passed"] is True and summary["warnings"] == 1
    assert summary["tables"]["orders"]["critical_failures"] == []
    assert summary["tables"]["orders"]["warnings"] == [
        {
            "expectation": "expect_column_values_to_be_in_set",
            "column": "status",
            "unexpected_count": 1,
            "rows": 2,
            "examples": ["lost_in_mail"],
        }
    ]
    assert validate.quality_summary(lake_settings, RUN_DATE)["silver"]["tables"]["orders"]["warnings"][0]["column"] == "status"
    [stored] = (lake_settings.data_dir / "quality" / "gx" / "uncommitted" / "validations" / "silver" / "orders").rglob("*.json")
    outcomes = {
        (r["expectation_config"]["type"], r["expectation_config"]["kwargs"].get("column")): r
        for r in json.loads(stored.read_text())["results"]
    }
    status = outcomes[("expect_column_values_to_be_in_set", "status")]
    assert status["success"] is False and status["expectation_config"]["severity"] == "warning"
    assert status["result"]["partial_unexpected_list"] == ["lost_in_mail"]


def test_an_empty_bronze_batch_passes(spark, lake, lake_settings):
    # Only an older batch holds rows, and one that would fail: the gate looks at the run's batch alone.
    broken = {"id": None, "status": "paid", "_op": "X"}
    lake.overwrite(bronze_orders(spark, {"2026-11-25": [broken]}), "bronze", "orders", partition_by=["_batch_id"])

    summary = validate.run(RUN_DATE, lake_settings, "run-1", layer="bronze", tables_to_check=("orders",))

    assert summary["passed"] is True
    assert summary["tables"]["orders"]["rows"] == 0
    assert summary["tables"]["orders"]["expectations"] == 4  # columns, id (warning), _op x2


def test_a_table_missing_from_the_layer_stops_the_gate(spark, lake, lake_settings):
    write_silver(spark, lake, [customer(1)], [order(10)])
    with pytest.raises(validate.QualityGateError, match=r"silver: table\(s\) not in the lake: addresses, products"):
        validate.run(RUN_DATE, lake_settings, "run-1", layer="silver")


def test_a_bronze_row_without_id_is_a_warning_and_an_unknown_operation_stops_the_gate(spark, lake, lake_settings):
    # A row without id is the shop's data: clean quarantines it (null_key), so the gate records it and goes on.
    lake.overwrite(
        bronze_orders(spark, {"2026-11-26": [{"id": 1, "status": "paid"}, {"id": None, "status": "paid"}]}),
        "bronze",
        "orders",
        partition_by=["_batch_id"],
    )
    summary = validate.run(RUN_DATE, lake_settings, "run-1", layer="bronze", tables_to_check=("orders",))
    assert summary["passed"] is True and summary["tables"]["orders"]["critical_failures"] == []
    assert [(w["column"], w["unexpected_count"]) for w in summary["tables"]["orders"]["warnings"]] == [("id", 1)]

    rows = [{"id": 1, "status": "paid"}, {"id": None, "status": "paid"}, {"id": 3, "_op": "X"}]
    lake.overwrite(bronze_orders(spark, {"2026-11-26": rows}), "bronze", "orders", partition_by=["_batch_id"])
    with pytest.raises(validate.QualityGateError) as raised:
        validate.run(RUN_DATE, lake_settings, "run-1", layer="bronze", tables_to_check=("orders",))
    message = str(raised.value)
    assert message.startswith("quality gate bronze for 2026-11-26 failed: 1 critical expectation(s) not met (orders._op)\n")
    assert "bronze/orders: expect_column_values_to_be_in_set on column _op: 1 of 3 rows unexpected, e.g. 'X'" in message
    assert "on column id" not in message


def test_gold_segments_of_the_run_date_must_have_one_row_per_customer_and_scores_1_to_5(spark, lake, lake_settings):
    def segment(as_of, customer_id, r_score):
        return (as_of, customer_id, 3, 2, Decimal("40.00"), r_score, 2, 3, "423", "Loyal", None, as_of, 1, "run-1")

    schema = (
        "as_of date, customer_id long, recency_days int, frequency long, monetary decimal(18,2), "
        "r_score int, f_score int, m_score int, rfm_code string, segment string, previous_segment string, "
        "changed_at date, cluster_id int, run_id string"
    )
    rows = [
        segment(date(2026, 11, 25), 1, 9),  # an older partition: not this run's business
        segment(RUN_DATE, 1, 4),
        segment(RUN_DATE, 1, 4),
        segment(RUN_DATE, 2, 6),
    ]
    lake.overwrite(spark.createDataFrame(rows, schema).select(*SEGMENT_COLUMNS), "gold", "customer_segments", partition_by=["as_of"])

    with pytest.raises(validate.QualityGateError) as raised:
        validate.run(RUN_DATE, lake_settings, "run-1", layer="gold", tables_to_check=("customer_segments",))

    message = str(raised.value)
    assert "gold/customer_segments: expect_column_values_to_be_unique on column customer_id: 2 of 3 rows" in message
    assert "gold/customer_segments: expect_column_values_to_be_between on column r_score: 1 of 3 rows unexpected, e.g. 6" in message
    assert "failed: 2 critical" in message


def test_a_rerun_of_the_same_date_replaces_its_summary(spark, lake, lake_settings):
    write_silver(spark, lake, [customer(1)], [order(10, status="lost_in_mail")])
    first = validate.run(RUN_DATE, lake_settings, "run-1", layer="silver", tables_to_check=("customers", "orders"))
    assert first["warnings"] == 1

    write_silver(spark, lake, [customer(1)], [order(10)])
    validate.run(RUN_DATE, lake_settings, "run-2", layer="silver", tables_to_check=("customers", "orders"))

    recorded = validate.quality_summary(lake_settings, RUN_DATE)["silver"]
    assert recorded["run_id"] == "run-2" and recorded["warnings"] == 0
    folder = lake_settings.data_dir / "quality" / "2026-11-26"
    assert sorted(path.name for path in folder.iterdir()) == ["silver.json"]


def test_the_data_docs_index_lists_only_the_newest_results(spark, lake, lake_settings, monkeypatch):
    monkeypatch.setattr(validate, "DATA_DOCS_INDEX_RESULTS", 2)
    for night in (1, 2):  # two tables written and validated each night: four stored results
        write_silver(spark, lake, [customer(1)], [order(10)])
        day = date(2026, 11, 25 + night)
        summary = validate.run(day, lake_settings, f"run-{night}", layer="silver", tables_to_check=("customers", "orders"))
    index = Path(summary["data_docs"]).read_text()
    listed = set(re.findall(r'validations/[^"]+?\.html', index))
    assert len(listed) == 2 and all("2026-11-27" in link or "run-2" in link for link in listed), listed


def test_a_missing_column_is_named_with_the_present_ones(spark, lake, lake_settings):
    lake.overwrite(spark.createDataFrame([(1, "open")], "id long, status string"), "silver", "carts")

    with pytest.raises(validate.QualityGateError) as raised:
        validate.run(RUN_DATE, lake_settings, "run-1", layer="silver", tables_to_check=("carts",))

    message = str(raised.value)
    assert (
        "silver/carts: expect_table_columns_to_match_set: missing column(s) created_at, customer_id, updated_at (present: id, status)"
    ) in message
    assert (
        "silver/carts: expect_column_values_to_not_be_null on column customer_id could not be evaluated: "
        'Error: The column "customer_id" in BatchData does not exist.'
    ) in message


def test_a_table_unchanged_since_its_passing_gate_is_not_validated_again(spark, lake, lake_settings):
    write_silver(spark, lake, [customer(1)], [order(10)])
    first = validate.run(RUN_DATE, lake_settings, "run-1", layer="silver", tables_to_check=("customers", "orders"))
    lake.overwrite(silver_rows(spark, "orders", [order(10), order(11, status="lost_in_mail")]), "silver", "orders")

    later = validate.run(date(2026, 11, 27), lake_settings, "run-2", layer="silver", tables_to_check=("customers", "orders"))

    customers = later["tables"]["customers"]
    assert customers["reused_from"] == {"run_date": "2026-11-26", "run_id": "run-1"}
    assert customers["data_docs"] == first["tables"]["customers"]["data_docs"] and Path(customers["data_docs"]).is_file()
    assert (customers["rows"], customers["seconds"]) == (1, 0.0)
    orders = later["tables"]["orders"]  # written again: validated, and its new row's status is a warning
    assert "reused_from" not in orders and orders["rows"] == 2 and later["warnings"] == 1

    # A failing table is validated every time: its result is never reused.
    lake.overwrite(silver_rows(spark, "customers", [customer(1, email="not-an-email")]), "silver", "customers")
    for night, day in enumerate((date(2026, 11, 28), date(2026, 11, 29)), start=3):
        with pytest.raises(validate.QualityGateError, match="customers.email"):
            validate.run(day, lake_settings, f"run-{night}", layer="silver", tables_to_check=("customers", "orders"))
    failed = validate.quality_summary(lake_settings, date(2026, 11, 29))["silver"]["tables"]
    assert "reused_from" not in failed["customers"] and failed["orders"]["reused_from"]["run_id"] == "run-2"


def test_a_bronze_gate_of_another_date_checks_that_date_s_batch(spark, lake, lake_settings):
    """The same bronze version holds every night's batch: a result is of one run date's rows only."""
    batches = {"2026-11-26": [order(10)], "2026-11-27": [order(11, status=None)]}
    lake.overwrite(bronze_orders(spark, batches), "bronze", "orders")
    validate.run(RUN_DATE, lake_settings, "run-1", layer="bronze", tables_to_check=("orders",))

    again = validate.run(RUN_DATE, lake_settings, "run-2", layer="bronze", tables_to_check=("orders",))
    later = validate.run(date(2026, 11, 27), lake_settings, "run-3", layer="bronze", tables_to_check=("orders",))

    assert again["tables"]["orders"]["reused_from"]["run_id"] == "run-1"
    assert "reused_from" not in later["tables"]["orders"] and later["tables"]["orders"]["rows"] == 1


def test_rows_copied_from_the_table_s_files_are_those_spark_gives(spark, lake, lake_settings):
    """The gate's in-memory rows come from the Delta files through pyarrow: GX must see the same values and types
    as in Spark's copy (timestamps without a zone, decimals, dates, integers with nulls)."""
    rows = [(1, datetime(2026, 11, 1, 10, 0, 5), Decimal("12.50"), date(2026, 11, 1), None), (2, None, Decimal("-3.00"), None, 7)]
    schema = "id long, created_at timestamp, total_amount decimal(18,2), as_of date, recency_days int"
    lake.overwrite(spark.createDataFrame(rows, schema), "gold", "customer_features", partition_by=["as_of"])
    scope = {"as_of": date(2026, 11, 1)}

    copied = validate.as_spark_gives(
        ArrowLake(lake_settings.lake_dir).read("gold", "customer_features", where=validate.arrow_condition(scope))
    )

    expected = lake.read("gold", "customer_features").where(validate.spark_condition(scope)).toPandas()
    pandas.testing.assert_frame_equal(copied, expected)
    assert copied["created_at"].iloc[0] == pandas.Timestamp("2026-11-01 10:00:05")


def test_a_table_whose_files_are_not_its_rows_is_read_through_spark(spark, lake, lake_settings):
    """A row deleted through a deletion vector is still in the table's files: the gate must not see it."""
    lake.overwrite(silver_rows(spark, "customers", [customer(1)]), "silver", "customers")
    orders = silver_rows(spark, "orders", [order(10), order(11, status="lost_in_mail")]).coalesce(1)  # one file: a DELETE marks a row
    lake.overwrite(orders, "silver", "orders")
    path = lake.path("silver", "orders")
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = true)")
    spark.sql(f"DELETE FROM delta.`{path}` WHERE id = 11")
    assert ArrowLake(lake_settings.lake_dir).read("silver", "orders").num_rows == 2  # the files still hold it

    summary = validate.run(RUN_DATE, lake_settings, "run-1", layer="silver", tables_to_check=("customers", "orders"))

    assert summary["tables"]["orders"]["rows"] == 1 and summary["warnings"] == 0


def test_a_gate_whose_rows_fit_in_memory_needs_no_spark(lake_settings, tmp_path):
    """The bronze gate of a night reads its batches from the lake's files: it neither starts nor waits for the
    night's Spark server (here the configured one does not answer), which boots meanwhile."""
    arrow_lake = ArrowLake(lake_settings.lake_dir)
    bronze = bronze_orders_arrow({"2026-11-26": [{"id": 1, "status": "paid"}, {"id": 2, "_op": "X"}]})
    arrow_lake.replace_partition(bronze, "bronze", "orders", {"_batch_id": "2026-11-26"})
    gate = tmp_path / "gate.py"
    gate.write_text(
        "import sys\nfrom datetime import date\nfrom core.config import load_config\nfrom jobs import validate\n"
        "try:\n"
        "    validate.run(date(2026, 11, 26), load_config(), 'run-1', layer='bronze', tables_to_check=('orders',))\n"
        "except validate.QualityGateError as error:\n"
        "    print(error)\n"
    )
    nowhere = {"CRM_DATA_DIR": str(lake_settings.data_dir), "CRM__SPARK__REMOTE": "sc://127.0.0.1:9", "PYTHONPATH": str(REPO)}

    done = subprocess.run([sys.executable, str(gate)], env={**os.environ, **nowhere}, capture_output=True, text=True, timeout=300, cwd=REPO)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "bronze/orders: expect_column_values_to_be_in_set on column _op: 1 of 2 rows unexpected, e.g. 'X'" in done.stdout
    assert validate.quality_summary(lake_settings, RUN_DATE)["bronze"]["tables"]["orders"]["rows"] == 2


def bronze_orders_arrow(batches: dict[str, list[dict]]):
    """`bronze_orders` as the JVM-free extraction writes them (Arrow, through delta-rs)."""
    table = shop_schema.orders
    fields = [pa.field(c.name, bronze_arrow_type(c.type)) for c in table.columns]
    fields += [pa.field(name, kind) for name, kind in (("_batch_id", pa.string()), ("_run_id", pa.string()))]
    fields += [pa.field("_extracted_at", pa.timestamp("us", tz="UTC")), pa.field("_op", pa.string()), pa.field("_unreadable", pa.string())]
    rows = [
        {
            **{c.name: row.get(c.name) for c in table.columns},
            "_batch_id": batch_id,
            "_run_id": "run-0",
            "_extracted_at": CREATED,
            "_op": row.get("_op", "U"),
        }
        for batch_id, batch in batches.items()
        for row in batch
    ]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))
