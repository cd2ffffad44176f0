"""clean's rules on small bronze batches: every bad row quarantined once, with a reason naming column and value."""

from __future__ import annotations

from datetime import date

import pytest
from pyspark.sql import functions as F

from core import shop_schema
from core.documents import UNREADABLE
from core.types import bronze_type
from jobs.clean import DUPLICATE_KEYS, current_state, flag_invalid_rows, quarantined, quarantined_fields

RUN_DATE = date(2026, 11, 26)


def bronze(spark, table_name: str, rows: list[dict]):
    """A bronze batch of `table_name` with the given values (other columns null, `_unreadable` too)."""
    table = shop_schema.metadata.tables[table_name]
    schema = ", ".join([f"`{c.name}` {bronze_type(c.type).simpleString()}" for c in table.columns] + [f"`{UNREADABLE}` string"])
    data = [(*(row.get(c.name) for c in table.columns), row.get(UNREADABLE)) for row in rows]
    return spark.createDataFrame(data, schema)


def order(id, customer_id=1, total="10.00", created="2026-11-01 10:00:00", updated=None, status="delivered"):
    from decimal import Decimal

    return {
        "id": id,
        "customer_id": customer_id,
        "status": status,
        "total_amount": None if total is None else Decimal(total),
        "currency": "CNY",
        "created_at": created,
        "updated_at": updated or created,
    }


def test_each_rule_quarantines_its_row_with_a_reason(spark):
    batch = bronze(
        spark,
        "orders",
        [
            order(1),
            order(2, customer_id=None),
            order(3, total="-12.50"),
            order(4, created="2027-01-01 00:00:00"),
            order(5, created="yesterday-ish"),
            order(6, customer_id=99),
            order(7, created="2026-11-26 23:59:59"),
        ],
    )
    customers = spark.createDataFrame([(1,)], "id long")
    flagged = flag_invalid_rows(batch, shop_schema.orders, RUN_DATE, {"customer_id": customers})
    result = {row.id: (row._rule, row._reason) for row in flagged.collect()}
    assert result[1] == (None, None)
    assert result[7] == (None, None)  # the last second of the run date still counts
    assert result[2] == (None, None)  # a guest order: no customer, kept
    assert result[3] == (None, None)  # a credit note: negative total, kept
    assert result[4][0] == "future_timestamp" and "after the run date 2026-11-26" in result[4][1]
    assert result[5] == ("invalid_value", "orders.created_at = 'yesterday-ish': not a valid timestamp")
    assert result[6] == ("orphan", "customer_id = 99: no such customers.id (or it is quarantined)")


def order_line(id, order_id=1, product_id=5, quantity=1):
    from decimal import Decimal

    return {
        "id": id,
        "order_id": order_id,
        "product_id": product_id,
        "quantity": quantity,
        "unit_price": Decimal("3.00"),
        "created_at": "2026-11-01 10:00:00",
        "updated_at": "2026-11-01 10:00:00",
    }


def test_repeated_lines_and_returned_units_are_kept_and_a_line_of_nothing_is_quarantined(spark):
    """A real invoice repeats a product on purpose and a credit note's lines have negative quantities: both
    stay (the default `shop.repeated_lines: sum`); only a line of 0 units says nothing and is quarantined."""
    batch = bronze(spark, "order_items", [order_line(10), order_line(11), order_line(12, quantity=-2), order_line(13, quantity=0)])
    parents = {"order_id": spark.createDataFrame([(1,)], "id long"), "product_id": spark.createDataFrame([(5,)], "id long")}
    flagged = flag_invalid_rows(batch, shop_schema.order_items, RUN_DATE, parents)
    result = {row.id: (row._rule, row._reason) for row in flagged.collect()}
    assert result[10] == result[11] == result[12] == (None, None)
    assert result[13] == ("zero_quantity", "order_items.quantity = 0: a line orders units (> 0) or returns them (< 0)")


def test_a_repeated_order_line_is_a_duplicate_and_the_first_is_kept(spark):
    from decimal import Decimal

    line = {
        "order_id": 1,
        "product_id": 5,
        "quantity": 1,
        "unit_price": Decimal("3.00"),
        "created_at": "2026-11-01 10:00:00",
        "updated_at": "2026-11-01 10:00:00",
    }
    batch = bronze(spark, "order_items", [{**line, "id": 10}, {**line, "id": 11}, {**line, "id": 12, "product_id": 6}])
    parents = {"order_id": spark.createDataFrame([(1,)], "id long"), "product_id": spark.createDataFrame([(5,), (6,)], "id long")}
    # Opt-in (`shop.repeated_lines: quarantine`): clean passes these keys only then.
    flagged = flag_invalid_rows(batch, shop_schema.order_items, RUN_DATE, parents, duplicate_keys=DUPLICATE_KEYS["order_items"])
    result = {row.id: (row._rule, row._reason) for row in flagged.collect()}
    assert result[10] == (None, None) and result[12] == (None, None)
    assert result[11] == ("duplicate", "order_items: repeats line id 10 (order_id, product_id equal)")


def test_a_rating_outside_one_to_five_is_out_of_range(spark):
    batch = bronze(
        spark,
        "reviews",
        [
            {
                "id": 1,
                "customer_id": 1,
                "product_id": 1,
                "rating": 6,
                "created_at": "2026-11-01 10:00:00",
                "updated_at": "2026-11-01 10:00:00",
            }
        ],
    )
    ids = spark.createDataFrame([(1,)], "id long")
    flagged = flag_invalid_rows(batch, shop_schema.reviews, RUN_DATE, {"customer_id": ids, "product_id": ids})
    assert [(row._rule, row._reason) for row in flagged.collect()] == [("out_of_range", "reviews.rating = 6: must be 1 to 5")]


def test_silver_keeps_one_typed_row_of_a_key_read_twice_identically(spark):
    batch = bronze(spark, "orders", [order(1, total="12.00", status="returned"), order(1, total="12.00", status="returned"), order(2)])
    flagged = flag_invalid_rows(batch, shop_schema.orders, RUN_DATE, {"customer_id": spark.createDataFrame([(1,)], "id long")})
    assert flagged.where(F.col("_rule").isNotNull()).count() == 0
    silver = current_state(flagged.where(F.col("_rule").isNull()), shop_schema.orders)
    rows = {row.id: row for row in silver.collect()}
    assert sorted(rows) == [1, 2] and silver.count() == 2
    assert rows[1].status == "returned" and str(rows[1].total_amount) == "12.00"
    assert dict(silver.dtypes)["created_at"] == "timestamp"


def test_every_copy_of_a_key_with_different_rows_in_one_batch_is_quarantined(spark):
    batch = bronze(
        spark,
        "orders",
        [
            order(1, total="10.00", updated="2026-11-01 10:00:00"),
            order(1, total="12.00", updated="2026-11-02 10:00:00", status="returned"),
            order(1, total="-1.00", updated="2026-11-02 11:00:00"),  # breaks a rule too: still a copy of key 1
            order(2),
        ],
    )
    flagged = flag_invalid_rows(batch, shop_schema.orders, RUN_DATE, {"customer_id": spark.createDataFrame([(1,)], "id long")})
    rows = [(row.id, row._rule, row._reason) for row in flagged.orderBy("id", "updated_at").collect()]
    reason = "orders.id = 1: 3 different rows with this key in the batch (every copy quarantined; silver keeps the version it had, if any)"
    assert rows == [(1, "duplicate_key", reason)] * 3 + [(2, None, None)]
    assert [row.id for row in current_state(flagged.where(F.col("_rule").isNull()), shop_schema.orders).collect()] == [2]


def customer(id, **values):
    return {
        "id": id,
        "email": f"c{id}@example.com",
        "first_name": "Ann",
        "last_name": "Lee",
        "phone": "+44 7700 900123",
        "language": "en",
        "country": "GB",
        "created_at": "2026-11-01 10:00:00",
        "updated_at": "2026-11-01 10:00:00",
        **values,
    }


def test_a_bad_personal_field_is_nulled_and_quarantined_and_the_customer_stays(spark):
    batch = bronze(
        spark,
        "customers",
        [
            customer(1),
            customer(2, email="not-an-email"),
            customer(3, first_name=None, **{UNREADABLE: "customers.first_name = b'J\\xffe': not valid UTF-8 text"}),
            customer(
                4,
                first_name=None,
                **{
                    UNREADABLE: "customers (collection customers): customers.first_name (field firstName) = {'x': 1}: a dict, expected text"
                },
            ),
            customer(5, phone="call me", last_name="Lee\x07"),
            customer(6, email="x@", **{UNREADABLE: "customers.created_at = 'x': expected string; customers.email = 1: x"}),
        ],
    )
    flagged = flag_invalid_rows(batch, shop_schema.customers, RUN_DATE, {}).localCheckpoint()
    rows = {row.id: row for row in flagged.collect()}
    assert all(rows[key]._rule is None for key in (1, 2, 3, 4, 5))
    assert rows[6]._rule == "wrong_type"  # a problem outside the personal fields: the row goes
    silver = {row.id: row for row in current_state(flagged.where(F.col("_rule").isNull()), shop_schema.customers).collect()}
    assert sorted(silver) == [1, 2, 3, 4, 5]
    assert silver[1].email == "c1@example.com" and silver[2].email is None and silver[2].first_name == "Ann"
    assert silver[3].first_name is None and silver[3].email == "c3@example.com"
    assert silver[5].phone is None and silver[5].last_name is None and silver[5].first_name == "Ann"
    records = {
        (row.id, row.column): (row.rule, row.reason)
        for row in quarantined_fields(flagged.where(F.col("_rule").isNull()), RUN_DATE, "run-1").collect()
    }
    assert records == {
        (2, "email"): ("invalid_email", "customers.email (id 2) = 'not-an-email': not an e-mail address"),
        (3, "first_name"): ("wrong_type", "customers.first_name (id 3) = b'J\\xffe': not valid UTF-8 text"),
        (4, "first_name"): ("wrong_type", "customers.first_name (id 4) = {'x': 1}: a dict, expected text"),
        (5, "phone"): (
            "invalid_phone",
            "customers.phone (id 5) = 'call me': not a phone number (digits, spaces, ()./- and a leading +; at least 5 digits)",
        ),
        (5, "last_name"): ("invalid_text", 'customers.last_name (id 5) = "Lee\\u0007": holds control characters'),
    }
    row_records = quarantined(flagged.where(F.col("_rule").isNotNull()), RUN_DATE, "run-1").collect()
    assert [(row.id, row.rule, row.column) for row in row_records] == [(6, "wrong_type", None)]


def test_a_key_with_different_rows_in_an_incremental_batch_keeps_its_silver_version(spark, tmp_path):
    from core.lake import Lake
    from jobs.clean import clean_table

    lake = Lake(spark, tmp_path / "lake")
    earlier = bronze(spark, "customers", [customer(5, email="old@example.com"), customer(6)]).drop(UNREADABLE)
    lake.overwrite(
        flag_invalid_rows(earlier.withColumn(UNREADABLE, F.lit(None).cast("string")), shop_schema.customers, RUN_DATE, {}).transform(
            current_state, shop_schema.customers
        ),
        "silver",
        "customers",
    )
    version = lake.version("silver", "customers")
    batch = bronze(
        spark,
        "customers",
        [
            customer(5, email="new@example.com", updated_at="2026-11-26 09:00:00"),
            customer(5, email="other@example.com", updated_at="2026-11-26 09:00:00"),
            customer(7, email="twin@example.com"),
            customer(7, email="twin@example.org"),
            customer(6, email="six@example.com", updated_at="2026-11-26 09:00:00"),
        ],
    ).withColumns(
        {"_batch_id": F.lit(RUN_DATE.isoformat()), "_op": F.lit("U"), "_run_id": F.lit("run-2"), "_extracted_at": F.current_timestamp()}
    )
    lake.overwrite(batch, "bronze", "customers", partition_by=["_batch_id"])

    counts = clean_table(lake, "customers", RUN_DATE, "run-2", "incremental", version)

    silver = {row.id: row.email for row in lake.read("silver", "customers").collect()}
    assert silver == {5: "old@example.com", 6: "six@example.com"}  # 5 as it was, 7 never applied, 6 updated
    records = sorted((row.id, row.rule, row.column) for row in lake.read("silver", "_quarantine/customers").collect())
    assert records == [(5, "duplicate_key", None)] * 2 + [(7, "duplicate_key", None)] * 2
    assert counts["quarantined"] == 4


@pytest.mark.parametrize("mode", ["incremental", "full"])
def test_silver_written_before_the_shop_model_gained_a_column_takes_it_at_the_next_night(spark, tmp_path, mode):
    """A lake cleaned by an older version (here: silver customers without `accepts_marketing`) is upgraded by
    the next night: the column is added, the earlier rows have it null until the shop sends them again."""
    from core.lake import Lake
    from jobs.clean import clean_table

    lake = Lake(spark, tmp_path / "lake")
    earlier = bronze(spark, "customers", [customer(5), customer(6)])
    older = flag_invalid_rows(earlier, shop_schema.customers, RUN_DATE, {}).transform(current_state, shop_schema.customers)
    lake.overwrite(older.drop("accepts_marketing"), "silver", "customers")
    version = lake.version("silver", "customers")
    sent = [customer(6, accepts_marketing=True, updated_at="2026-11-26 09:00:00")] + ([customer(5)] if mode == "full" else [])
    batch = bronze(spark, "customers", sent).withColumns(
        {"_batch_id": F.lit(RUN_DATE.isoformat()), "_op": F.lit("U"), "_run_id": F.lit("run-2"), "_extracted_at": F.current_timestamp()}
    )
    lake.overwrite(batch, "bronze", "customers", partition_by=["_batch_id"])

    clean_table(lake, "customers", RUN_DATE, "run-2", mode, version)

    silver = {row.id: row.accepts_marketing for row in lake.read("silver", "customers").collect()}
    assert silver == {5: None, 6: True}


def bronze_night(spark, lake, day: date, mode: str, changed: dict[str, list[dict]], deleted: dict[str, list[int]] | None = None) -> None:
    """Write one night's bronze batch of every shop table (`changed` rows as updates, `deleted` keys as
    deletes, the other tables empty) and its row of `bronze/_watermarks`, as extraction does."""
    import pyarrow as pa

    from core.lake import ArrowLake
    from jobs.extract import STATE_SCHEMA, STATE_TABLE

    for name in shop_schema.SHOP_TABLES:
        updates = bronze(spark, name, changed.get(name, [])).withColumn("_op", F.lit("U"))
        deletes = bronze(spark, name, [{"id": key} for key in (deleted or {}).get(name, [])]).withColumn("_op", F.lit("D"))
        batch = updates.unionByName(deletes).withColumns(
            {"_batch_id": F.lit(day.isoformat()), "_run_id": F.lit(f"run-{day}"), "_extracted_at": F.current_timestamp()}
        )
        lake.replace_partition(batch, "bronze", name, {"_batch_id": day.isoformat()})
    arrow = ArrowLake(lake.root)
    earlier = arrow.read("bronze", STATE_TABLE).to_pylist() if arrow.exists("bronze", STATE_TABLE) else []
    state = earlier + [
        {
            "table": name,
            "batch_id": day.isoformat(),
            "mode": mode,
            "changed": len(changed.get(name, [])),
            "deleted": len((deleted or {}).get(name, [])),
        }
        for name in shop_schema.SHOP_TABLES
    ]
    arrow.overwrite(pa.Table.from_pylist(state, schema=STATE_SCHEMA), "bronze", STATE_TABLE)


def silver_versions(lake) -> dict[str, int]:
    return {
        name: lake.version("silver", name) for name in [*shop_schema.SHOP_TABLES, *(f"_quarantine/{n}" for n in shop_schema.SHOP_TABLES)]
    }


@pytest.fixture
def two_customers_night(spark, settings, tmp_path):
    """A lake after a first (full) night: customers 1 and 2, order 10 of customer 1, order 11 of customer 2."""
    from core.lake import Lake
    from jobs import clean

    configured = settings.model_copy(update={"data_dir": tmp_path})
    lake = Lake(spark, configured.lake_dir)
    bronze_night(spark, lake, RUN_DATE, "full", {"customers": [customer(1), customer(2)], "orders": [order(10, 1), order(11, 2)]})
    clean.run(RUN_DATE, configured, "run-1")
    return configured, lake


def test_a_child_of_a_parent_that_lost_a_key_on_a_partial_night_is_still_checked_on_the_rerun(spark, two_customers_night):
    """The first attempt of night 2 applied customers (customer 2 deleted) and failed before orders; the
    rerun must still find order 11 orphaned, although its batch of orders is empty."""
    from jobs import clean

    settings, lake = two_customers_night
    night2 = date(2026, 11, 27)
    bronze_night(spark, lake, night2, "incremental", {}, deleted={"customers": [2]})
    before = clean.silver_versions_before(lake, night2, "run-2")
    clean.clean_table(lake, "customers", night2, "run-2", "incremental", before["customers"])  # then the night died

    counts = clean.run(night2, settings, "run-2-again")

    assert sorted(row.id for row in lake.read("silver", "orders").collect()) == [10]
    orphans = lake.read("silver", "_quarantine/orders").where(F.col("run_date") == night2).collect()
    assert [(row.id, row.rule) for row in orphans] == [(11, "orphan")]
    assert counts["orders"]["deleted"] == 1 and counts["orders"]["quarantined"] == 1


def test_a_silver_row_whose_key_is_ambiguous_in_the_batch_follows_its_parent_deleted_the_same_night(spark, two_customers_night):
    """Night 2 deletes customer 2 and reads order 11 in two different versions (`duplicate_key`: silver keeps
    its version): that version is checked for orphans this night, as no later night would check it again."""
    from jobs import clean

    settings, lake = two_customers_night
    night2 = date(2026, 11, 27)
    twice = [order(11, 2, total="20.00", updated="2026-11-27 08:00:00"), order(11, 2, total="30.00", updated="2026-11-27 08:00:00")]
    bronze_night(spark, lake, night2, "incremental", {"orders": twice}, deleted={"customers": [2]})

    counts = clean.run(night2, settings, "run-2")

    assert sorted(row.id for row in lake.read("silver", "orders").collect()) == [10]
    rules = sorted(row.rule for row in lake.read("silver", "_quarantine/orders").where(F.col("run_date") == night2).collect())
    assert rules == ["duplicate_key", "duplicate_key", "orphan"]
    assert counts["orders"]["deleted"] == 1


def test_a_night_whose_batch_is_empty_and_whose_parents_lost_no_key_writes_nothing(spark, two_customers_night):
    """Customer 1 changes; nothing else does: only silver/customers gets a commit, and a rerun of the date
    reaches the same silver and quarantine."""
    from jobs import clean

    settings, lake = two_customers_night
    night2 = date(2026, 11, 27)
    bronze_night(
        spark, lake, night2, "incremental", {"customers": [customer(1, email="new@example.com", updated_at="2026-11-27 08:00:00")]}
    )
    versions = silver_versions(lake)

    counts = clean.run(night2, settings, "run-2")
    clean.run(night2, settings, "run-2-again")

    changed = {table for table, version in silver_versions(lake).items() if version != versions[table]}
    assert changed == {"customers"}
    assert counts["orders"] == {"mode": "incremental", "inserted": 0, "updated": 0, "deleted": 0, "quarantined": 0}
    assert sorted((row.id, row.customer_id) for row in lake.read("silver", "orders").collect()) == [(10, 1), (11, 2)]
    assert {row.id: row.email for row in lake.read("silver", "customers").collect()}[1] == "new@example.com"


def test_clean_runs_its_queries_interpreted_below_code_generation_from_rows_and_compiled_from_there(spark, two_customers_night):
    """`spark.code_generation: auto`: clean counts the rows it reads from the logs (the batch as extract counted
    it, silver's files); compiled or not, silver and quarantine come out the same, and the session's own
    settings come back after the job."""
    from core.spark import code_generation_for
    from jobs import clean

    settings, lake = two_customers_night
    night2 = date(2026, 11, 27)
    bronze_night(
        spark,
        lake,
        night2,
        "incremental",
        {"customers": [customer(1, email="new@example.com", updated_at="2026-11-27 08:00:00"), customer(3)]},
        deleted={"orders": [11]},
    )
    batch = clean.batch_state(lake, night2)
    assert clean.input_rows(lake, batch) == 3 + 4  # the batch: 2 changed, 1 deleted; silver: 2 customers, 2 orders

    auto = settings.model_copy(
        update={"spark": settings.spark.model_copy(update={"code_generation": "auto", "code_generation_from_rows": 8})}
    )
    own = {key: spark.conf.get(key) for key in ("spark.sql.codegen.wholeStage", "spark.sql.codegen.factoryMode")}
    with code_generation_for(spark, auto, 7) as compiled:
        assert not compiled
        assert spark.conf.get("spark.sql.codegen.factoryMode") == "NO_CODEGEN"
    with code_generation_for(spark, auto, 8) as compiled:
        assert compiled
        assert (spark.conf.get("spark.sql.codegen.wholeStage"), spark.conf.get("spark.sql.codegen.factoryMode")) == ("true", "FALLBACK")
    assert {key: spark.conf.get(key) for key in own} == own

    for from_rows in (8, 7):  # interpreted, then a rerun of the date compiled: the same silver
        clean.run(
            night2, settings.model_copy(update={"spark": auto.spark.model_copy(update={"code_generation_from_rows": from_rows})}), "run-2"
        )
        assert sorted((row.id, row.email) for row in lake.read("silver", "customers").collect())[0] == (1, "new@example.com")
        assert sorted(row.id for row in lake.read("silver", "customers").collect()) == [1, 2, 3]
        assert sorted(row.id for row in lake.read("silver", "orders").collect()) == [10]
        assert {key: spark.conf.get(key) for key in own} == own


def test_a_parent_that_lost_a_key_on_an_earlier_night_than_the_last_check_is_not_checked_again(spark, two_customers_night):
    """Night 2 deletes customer 2 (order 11 follows it); night 3 changes nothing: orders are not rewritten,
    and night 2's orphan stays in night 2's quarantine only."""
    from jobs import clean

    settings, lake = two_customers_night
    night2, night3 = date(2026, 11, 27), date(2026, 11, 28)
    bronze_night(spark, lake, night2, "incremental", {}, deleted={"customers": [2]})
    clean.run(night2, settings, "run-2")
    bronze_night(spark, lake, night3, "incremental", {})
    versions = silver_versions(lake)

    clean.run(night3, settings, "run-3")

    assert silver_versions(lake) == versions
    orphans = lake.read("silver", "_quarantine/orders").where(F.col("rule") == "orphan").collect()
    assert [(row.id, row.run_date) for row in orphans] == [(11, night2)]


def test_tables_start_once_their_own_parents_have_ended_and_a_failure_stops_their_children():
    """`for_each_table_after_parents`, as clean runs the shop tables: `carts` follows `customers` only, so it
    ends while the slow `orders` still runs, and the child of a failed table never starts."""
    import threading
    import time

    from core.spark import for_each_table_after_parents

    events: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> str:
        with lock:
            events.append(f"start {name}")
        time.sleep({"orders": 0.5}.get(name, 0.05))
        if name == "broken":
            raise RuntimeError("broken failed")
        with lock:
            events.append(f"end {name}")
        return name.upper()

    parents = {"customers": [], "orders": ["customers"], "carts": ["customers"], "order_items": ["orders"]}
    results = for_each_table_after_parents(work, parents, workers=4)

    assert results == {name: name.upper() for name in parents}
    for child, before in parents.items():
        assert all(events.index(f"end {parent}") < events.index(f"start {child}") for parent in before)
    assert events.index("end carts") < events.index("end orders")
    events.clear()
    with pytest.raises(RuntimeError, match="broken failed"):
        for_each_table_after_parents(work, {"broken": [], "child": ["broken"], "other": []}, workers=2)
    assert "start child" not in events and "end other" in events
