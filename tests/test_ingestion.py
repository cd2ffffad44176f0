"""Reading shops whose names differ from the model, and shops whose schema drifted.

Small SQLite shops written by the generator (the same seed, so the same rows), read in this session's Spark.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from core import shop_schema
from core.lake import Lake
from core.mapping import SourceSchemaError, check_source, load_mapping
from demo_shop.generate_shop import generate_shop
from demo_shop.mapped import rename_shop
from jobs import clean, extract

RUN_DATE = date(2026, 11, 26)
NIGHT2 = date(2026, 11, 27)
CONF = Path(__file__).resolve().parent.parent / "conf"


def shop(folder: Path, schema: str) -> str:
    url = f"sqlite:///{folder / f'{schema}.sqlite'}"
    generate_shop(url, customers=60, seed=11, end_date=RUN_DATE, truth_dir=folder / f"truth-{schema}")
    rename_shop(url, load_mapping(CONF / "mappings" / f"{schema}.yaml"))
    return url


def configured(settings, data_dir: Path, shop_url: str, mapping: str):
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "shop": settings.shop.model_copy(update={"url": shop_url}),
            "extract": settings.extract.model_copy(update={"mapping": mapping}),
        }
    )


def night(settings, day: date) -> None:
    extract.run(day, settings, f"run-{day}")
    clean.run(day, settings, f"run-{day}")


@pytest.fixture(scope="module")
def two_shops(tmp_path_factory, settings, spark):
    """The same shop under canonical and under WooCommerce-like names, each read into its own lake."""
    base = tmp_path_factory.mktemp("shops")
    runs = {}
    for schema in ("canonical", "woocommerce"):
        runs[schema] = configured(settings, base / f"lake-{schema}", shop(base, schema), schema)
        night(runs[schema], RUN_DATE)
    return base, runs


def test_a_woocommerce_named_shop_gives_the_same_silver_by_configuration_alone(two_shops, spark):
    _, runs = two_shops
    canonical, woo = (Lake(spark, runs[name].lake_dir) for name in ("canonical", "woocommerce"))
    for name in shop_schema.SHOP_TABLES:
        left, right = canonical.read("silver", name), woo.read("silver", name)
        assert left.columns == right.columns, name
        assert left.count() > 0 and left.exceptAll(right).count() == 0 and right.exceptAll(left).count() == 0, name


def test_soft_deletes_carried_new_columns_and_mistyped_values_reach_silver_or_quarantine(two_shops, spark):
    from pyspark.sql import functions as F

    base, runs = two_shops
    woo = runs["woocommerce"]
    lake = Lake(spark, woo.lake_dir)
    order_id, customer_id = (lake.read("silver", "orders").orderBy("id").first()[key] for key in ("id", "customer_id"))
    mistyped = lake.read("silver", "orders").orderBy(F.col("id").desc()).first()["id"]
    morning = "2026-11-27 09:00:00.000000"
    with create_engine(woo.shop.url).begin() as connection:
        connection.execute(
            text(f"UPDATE wc_orders SET order_status = 'trash', date_modified_gmt = '{morning}' WHERE order_id = {order_id}")
        )
        # SQLite lets an integer column hold text: the row goes to quarantine, the run goes on.
        connection.execute(
            text(f"UPDATE wc_orders SET customer_id = 'C-0042', date_modified_gmt = '{morning}' WHERE order_id = {mistyped}")
        )
        connection.execute(text("ALTER TABLE wc_customers ADD COLUMN loyalty_tier VARCHAR(10)"))
        connection.execute(
            text(f"UPDATE wc_customers SET loyalty_tier = 'gold', date_modified_gmt = '{morning}' WHERE customer_id = {customer_id}")
        )
    carrying = yaml.safe_load((CONF / "mappings" / "woocommerce.yaml").read_text())
    carrying["tables"]["customers"]["new_columns"] = "carry"
    mapping_file = base / "woocommerce-carry.yaml"
    mapping_file.write_text(yaml.safe_dump(carrying))
    night(woo.model_copy(update={"extract": woo.extract.model_copy(update={"mapping": str(mapping_file)})}), NIGHT2)

    quarantined = lake.read("silver", "_quarantine/orders").where((F.col("run_date") == NIGHT2) & (F.col("id") == mistyped))
    assert [(row["rule"], row["reason"]) for row in quarantined.collect()] == [
        ("wrong_type", "wc_orders.customer_id = 'C-0042': expected int64")
    ]
    trashed = lake.read("bronze", "orders").where((F.col("_batch_id") == NIGHT2.isoformat()) & (F.col("id") == order_id))
    assert [row["_op"] for row in trashed.collect()] == ["D"]
    assert lake.read("silver", "orders").where(F.col("id") == order_id).count() == 0
    customers = lake.read("silver", "customers")
    assert "loyalty_tier" in customers.columns
    assert {row["id"]: row["loyalty_tier"] for row in customers.where(F.col("loyalty_tier").isNotNull()).collect()} == {customer_id: "gold"}
    # Ignored by default: the canonical lake never sees the column.
    assert "loyalty_tier" not in Lake(spark, runs["canonical"].lake_dir).read("silver", "customers").columns


def empty_shop(folder: Path) -> str:
    url = f"sqlite:///{folder / 'shop.sqlite'}"
    shop_schema.metadata.create_all(create_engine(url))
    return url


def test_a_backfill_of_an_older_date_leaves_bronze_and_silver_as_they_are(two_shops, spark):
    _, runs = two_shops
    settings = runs["canonical"]
    lake = Lake(spark, settings.lake_dir)
    tables = [(layer, name) for layer, name in lake.tables() if layer in ("bronze", "silver")]
    versions = {table: lake.version(*table) for table in tables}
    older = date(2026, 9, 30)

    extracted = extract.run(older, settings, "backfill")
    cleaned = clean.run(older, settings, "backfill")

    assert {result["mode"] for result in extracted.values()} == {"skipped"}
    assert all(result["later_night"] == RUN_DATE.isoformat() for result in cleaned.values())
    assert {table: lake.version(*table) for table in tables} == versions  # not one commit


def test_a_missing_required_column_stops_the_run_before_anything_is_written(tmp_path, settings):
    url = empty_shop(tmp_path)
    with create_engine(url).begin() as connection:
        connection.execute(text("ALTER TABLE orders DROP COLUMN total_amount"))
    run = configured(settings, tmp_path / "data", url, "canonical")
    with pytest.raises(SourceSchemaError, match=r"orders: column total_amount is missing \(needed for orders.total_amount"):
        extract.run(RUN_DATE, run, "drifted")
    assert not (tmp_path / "data" / "lake").exists()


def test_an_incompatible_column_type_is_named_with_what_was_expected(tmp_path):
    url = empty_shop(tmp_path)
    with create_engine(url).begin() as connection:
        connection.execute(text("ALTER TABLE order_items RENAME TO old_items"))
        connection.execute(
            text(
                "CREATE TABLE order_items (id BIGINT, order_id BIGINT, product_id BIGINT, quantity TEXT, "
                "unit_price NUMERIC(12, 2), created_at DATETIME, updated_at DATETIME)"
            )
        )
    with pytest.raises(SourceSchemaError) as error:
        check_source(url, load_mapping(CONF / "mappings" / "canonical.yaml"))
    assert "order_items: column quantity is TEXT, which cannot be read as order_items.quantity INTEGER (expected a numeric column)" in str(
        error.value
    )


def test_a_mapping_naming_an_unknown_column_fails_naming_the_file_and_key(tmp_path):
    from core.mapping import MappingError

    path = tmp_path / "bad.yaml"
    path.write_text("tables:\n  orders:\n    columns: {totl_amount: order_total}\n")
    with pytest.raises(MappingError, match=r"bad.yaml: tables.orders.columns.totl_amount: not a column of canonical table orders"):
        load_mapping(path)


def test_a_column_the_shop_lacks_is_mapped_to_null_unless_the_model_needs_it(tmp_path):
    """`category: null` says the shop has no such column (read as null); an id, a required reference or a
    timestamp cannot be absent, and the error says which."""
    from core.mapping import MappingError, absent_columns

    retail = load_mapping(CONF / "mappings" / "retail.yaml")
    assert absent_columns(retail["products"]) == ["category"] and absent_columns(retail["customers"]) == ["accepts_marketing"]
    path = tmp_path / "bad.yaml"
    path.write_text("tables:\n  order_items:\n    columns: {order_id: null}\n")
    with pytest.raises(
        MappingError, match=r"bad.yaml: tables.order_items.columns.order_id: null \(no such shop column\) is only for a column"
    ):
        load_mapping(path)
