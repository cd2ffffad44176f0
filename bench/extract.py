"""Benchmark: extraction from PostgreSQL into bronze, a full load and a 1 % night (run by hand, never in tests).

    .venv/bin/python -m pip install -c constraints.txt -e '.[bench]'
    .venv/bin/python bench/extract.py 10000 100000 [--orders-per-customer 8] [--driver-memory 3g] [--keep]

Per size (number of customers) a throwaway PostgreSQL server (`postgres_server()` of tests/dbservers.py,
its data folder on disk under --tmp) gets the canonical shop tables, filled on the server with
`INSERT ... SELECT ... FROM generate_series` (the Python generator takes ~15 min for 1M customers), an index
on `updated_at` per table, VACUUM ANALYZE. Then each stage runs in a child process of its own:

1. full load: `jobs.extract.run(run_date, settings, run_id, full=True)` (`full` only where `run` has it);
2. references on the same data, the orders table alone: read with ADBC into Arrow record batches (streamed,
   counted, never collected): what reading alone costs; the same stream written into a Delta table by
   `deltalake.write_deltalake`;
3. night 2, only where `run` has `full` (the incremental extract): `jobs.clean.run` for night 1 first (the
   incremental extract starts from tables that silver has; timed, but it is not extraction), then 1 % of
   every table's rows change on the next day (`updated_at` on that day, a value changed), then
   `jobs.extract.run(run_date + 1, ...)` as configured (with its key reconciliation when due), and a rerun
   of that date with reconciliation off (a rerun reads from the same watermark: the same rows).

Seconds are the wall time of the measured call inside the child (Spark stages include starting the JVM,
as a nightly task pays it; Python imports are excluded). Peak MB is the largest sum of resident memory
over the child's whole process tree (Python and the Spark JVM), sampled by this process with psutil every
0.1 s; the PostgreSQL server's memory is not counted. Load is the mean 1-minute load average during the
stage: the machine may be shared, and a figure taken under load says so. Spark runs `CRM_ENV=demo` with
`local[2]`; the jobs' per-table progress is in each size's `stages.log` (kept with --keep).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from datetime import time as clock
from pathlib import Path

from harness import clean_night_one, code_version, dbservers, run_stage

REPO = Path(__file__).resolve().parent.parent
RUN_DATE = date(2026, 11, 26)
HISTORY_DAYS = 730
#: Night 2 changes the rows whose id leaves this remainder by 100: 1 % of every table, spread over it.
CHANGED_ID_REMAINDER = 42


# --------------------------------------------------------------------------------------------------------
# The shop, filled on the server
# --------------------------------------------------------------------------------------------------------


def row_counts(customers: int, orders_per_customer: int) -> dict[str, int]:
    """Rows generated per table (orders' children are exact only on average: see `fill_sql`)."""
    orders = customers * orders_per_customer
    return {
        "customers": customers,
        "addresses": customers * 13 // 10,
        "products": max(500, customers // 200),
        "coupons": max(50, customers // 20),
        "orders": orders,
        "carts": customers,
        "inquiries": customers * 3 // 10,
    }


def fill_sql(customers: int, orders_per_customer: int, run_date: date) -> list[tuple[str, str]]:
    """(table, INSERT ... SELECT) per shop table, in load order; every row dated before `run_date + 1`.

    Customers sign up in id order over the two years before the end of `run_date`; each order goes to a
    customer who had signed up by then, so ids and times grow together as in a real shop. Orders have
    1-3 items of distinct products (2 on average), carts likewise, every 10th order a review, 5 % of orders a coupon (and so a
    redemption). Order totals are drawn, not summed from the items: no join on the hot path of the fill.
    """
    n = customers
    counts = row_counts(customers, orders_per_customer)
    start = datetime.combine(run_date - timedelta(days=HISTORY_DAYS - 1), clock())
    end = datetime.combine(run_date + timedelta(days=1), clock())
    span_s = int((end - start).total_seconds())
    start_sql, end_sql = f"TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}'", f"TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'"

    def signup(k: str) -> str:
        return f"({start_sql} + interval '1 second' * floor({span_s}::float8 * ({k} - 1) / {n}))"

    def later(t: str, days: int | None = None) -> str:
        """A random second after `t` and before the end of the run date (within `days` when given)."""
        gap = f"({end_sql} - {t})" if days is None else f"least({end_sql} - {t}, interval '{days} days')"
        return f"date_trunc('second', {t} + {gap} * random())"

    def anytime(share_of_history: float = 1.0) -> str:
        return f"date_trunc('second', {start_sql} + interval '1 second' * {span_s * share_of_history} * random())"

    def pick(values: list) -> str:
        items = ", ".join(f"'{value}'" if isinstance(value, str) else str(value) for value in values)
        return f"(ARRAY[{items}])[1 + floor(random() * {len(values)})::int]"

    def money(low: int, high: int) -> str:
        return f"round(({low} + random() * {high - low})::numeric, 2)"

    def price(product: str) -> str:  # the list price of a product id: the same formula in products and items
        return f"round((5 + ({product} * 7919 % 49500) / 100.0)::numeric, 2)"

    def random_id(count: int) -> str:
        return f"(1 + floor(random() * {count}))::bigint"

    products, coupons = counts["products"], counts["coupons"]

    def line_product(first: str, line: str) -> str:
        """The product of an order's (a cart's) line 1-3: distinct within it, as `clean` expects."""
        return f"(1 + ({first} + ({line} - 1) * {products // 3 + 1}) % {products})"

    orders = counts["orders"]
    names = ["Li", "Wang", "Zhang", "Anna", "Ben", "Chen", "Maria", "Tom", "Yu", "Sara"]
    surnames = ["Liu", "Huang", "Zhao", "Smith", "Müller", "Garcia", "Wu", "Zhou", "Lee", "Brown"]
    cities = ["Shanghai", "Beijing", "Shenzhen", "Hangzhou", "Chengdu", "Berlin", "London", "Singapore"]
    review_titles = ["Great", "Good value", "As described", "Disappointing", "很好", "质量不错", "一般"]
    review_bodies = [
        "Arrived quickly and works as expected.",
        "The size runs small, order one up.",
        "Packaging was damaged but the product is fine.",
        "物流很快，质量很好，会再买。",
        "Not what the pictures show; returned it.",
    ]
    return [
        (
            "customers",
            f"""
            INSERT INTO customers (id, email, first_name, last_name, phone, language, country,
                                   accepts_marketing, created_at, updated_at)
            SELECT k, 'customer' || k || '@example.com', {pick(names)}, {pick(surnames)},
                   '+86 1' || lpad((k::bigint * 7919 % 10000000000)::text, 10, '0'),
                   CASE WHEN random() < 0.3 THEN 'zh' ELSE 'en' END,
                   {pick(["CN", "CN", "CN", "CN", "US", "DE", "GB", "SG"])}, random() < 0.4,
                   created_at, {later("created_at", 60)}
            FROM (SELECT k, {signup("k")} AS created_at FROM generate_series(1, {n}) AS k) AS c""",
        ),
        (
            "addresses",
            f"""
            INSERT INTO addresses (id, customer_id, line1, city, postal_code, country, is_default,
                                   created_at, updated_at)
            SELECT i, customer_id, (1 + i % 997) || ' ' || {pick(["Nanjing Road", "Main Street", "Park Lane"])},
                   {pick(cities)}, lpad((100000 + i * 37 % 900000)::text, 6, '0'), 'CN', i <= {n},
                   created_at, created_at
            FROM (SELECT i, customer_id,
                         CASE WHEN i <= {n} THEN {signup("customer_id")} ELSE {later(signup("customer_id"))} END
                           AS created_at
                  FROM (SELECT i, 1 + (i - 1) % {n} AS customer_id
                        FROM generate_series(1, {counts["addresses"]}) AS i) AS s) AS a""",
        ),
        (
            "products",
            f"""
            INSERT INTO products (id, sku, name, category, price, created_at, updated_at)
            SELECT i, 'SKU-' || lpad(i::text, 7, '0'),
                   {pick(["Classic", "Organic", "Smart", "Compact", "Deluxe"])} || ' '
                     || {pick(["tea", "kettle", "backpack", "lamp", "sneakers", "notebook"])} || ' ' || i,
                   {pick(["home", "food", "fashion", "electronics", "outdoor", "books"])}, {price("i")},
                   created_at, {later("created_at")}
            FROM (SELECT i, {anytime(0.5)} AS created_at FROM generate_series(1, {products}) AS i) AS p""",
        ),
        (
            "coupons",
            f"""
            INSERT INTO coupons (id, code, campaign, customer_id, discount_type, discount_value, valid_from,
                                 valid_to, created_at, updated_at)
            SELECT i, 'C' || lpad(i::text, 8, '0'),
                   {pick(["welcome", "winback", "birthday", "vip", "holiday"])},
                   CASE WHEN random() < 0.8 THEN {random_id(n)} END,
                   CASE WHEN i % 2 = 0 THEN 'percent' ELSE 'fixed' END,
                   CASE WHEN i % 2 = 0 THEN (5 + i % 26)::numeric ELSE (10 + i % 91)::numeric END,
                   created_at::date, created_at::date + (30 + i % 61), created_at, created_at
            FROM (SELECT i, {anytime()} AS created_at FROM generate_series(1, {coupons}) AS i) AS c""",
        ),
        (
            "orders",
            f"""
            INSERT INTO orders (id, customer_id, status, total_amount, currency, coupon_id, created_at, updated_at)
            SELECT i, customer_id,
                   {pick(["delivered"] * 6 + ["shipped", "paid", "placed", "cancelled", "returned"])},
                   {money(15, 800)}, 'CNY', CASE WHEN random() < 0.05 THEN {random_id(coupons)} END,
                   created_at, {later("created_at", 14)}
            FROM (SELECT i,
                         (1 + floor(random() * greatest(1, floor({n}::float8 * (i - 1) / {orders}))))::bigint
                           AS customer_id,
                         {start_sql} + interval '1 second' * floor({span_s}::float8 * (i - 1 + random()) / {orders})
                           AS created_at
                  FROM generate_series(1, {orders}) AS i) AS o""",
        ),
        (
            "order_items",
            f"""
            INSERT INTO order_items (id, order_id, product_id, quantity, unit_price, created_at, updated_at)
            SELECT row_number() OVER (), order_id, product_id, 1 + floor(random() * 3)::int,
                   {price("product_id")}, created_at, created_at
            FROM (SELECT o.id AS order_id, o.created_at, {line_product("o.first_product", "line")} AS product_id
                  FROM (SELECT id, created_at, floor(random() * {products})::bigint AS first_product FROM orders) AS o,
                       generate_series(1, 1 + (o.id % 3)::int) AS line) AS l""",
        ),
        (
            "carts",
            f"""
            INSERT INTO carts (id, customer_id, status, created_at, updated_at)
            SELECT i, customer_id, {pick(["open", "abandoned", "abandoned", "converted"])},
                   created_at, {later("created_at", 3)}
            FROM (SELECT i, customer_id, {later(signup("customer_id"))} AS created_at
                  FROM (SELECT i, {random_id(n)} AS customer_id
                        FROM generate_series(1, {counts["carts"]}) AS i) AS s) AS c""",
        ),
        (
            "cart_items",
            f"""
            INSERT INTO cart_items (id, cart_id, product_id, quantity, unit_price, created_at, updated_at)
            SELECT row_number() OVER (), cart_id, product_id, 1 + floor(random() * 3)::int,
                   {price("product_id")}, created_at, created_at
            FROM (SELECT c.id AS cart_id, {line_product("c.first_product", "line")} AS product_id,
                         date_trunc('second', c.created_at + (c.updated_at - c.created_at) * random()) AS created_at
                  FROM (SELECT id, created_at, updated_at, floor(random() * {products})::bigint AS first_product
                        FROM carts) AS c,
                       generate_series(1, 1 + (c.id % 3)::int) AS line) AS l""",
        ),
        (
            "reviews",
            f"""
            INSERT INTO reviews (id, customer_id, product_id, rating, title, body, language, created_at, updated_at)
            SELECT order_id / 10, customer_id, {random_id(products)}, {pick([5, 5, 5, 4, 4, 3, 2, 1])},
                   {pick(review_titles)}, {pick(review_bodies)} || ' ' || {pick(review_bodies)},
                   {pick(["en", "en", "zh"])}, created_at, created_at
            FROM (SELECT o.id AS order_id, o.customer_id, {later("o.updated_at", 30)} AS created_at
                  FROM orders AS o WHERE o.id % 10 = 0) AS r""",
        ),
        (
            "inquiries",
            f"""
            INSERT INTO inquiries (id, customer_id, channel, subject, body, status, resolved_at, created_at,
                                   updated_at)
            SELECT i, customer_id, channel, subject, subject || ': please help, order reference ' || i,
                   status, resolved_at, created_at, coalesce(resolved_at, {later("created_at", 2)})
            FROM (SELECT i, customer_id, channel, subject, status, created_at,
                         CASE WHEN status = 'resolved' THEN {later("created_at", 5)} END AS resolved_at
                  FROM (SELECT i, customer_id, {later(signup("customer_id"))} AS created_at,
                               {pick(["email", "chat", "phone"])} AS channel,
                               {pick(["Where is my order?", "Refund", "Wrong size", "发票问题"])} AS subject,
                               {pick(["open", "pending", "resolved", "resolved", "resolved"])} AS status
                        FROM (SELECT i, {random_id(n)} AS customer_id
                              FROM generate_series(1, {counts["inquiries"]}) AS i) AS s) AS t) AS q""",
        ),
        (
            "coupon_redemptions",
            """
            INSERT INTO coupon_redemptions (id, coupon_id, customer_id, order_id, created_at, updated_at)
            SELECT row_number() OVER (ORDER BY o.id), o.coupon_id, o.customer_id, o.id, o.created_at, o.created_at
            FROM orders AS o WHERE o.coupon_id IS NOT NULL""",
        ),
    ]


#: What night 2 changes in each table besides `updated_at` (SQL assignments; `{at}` is the new time).
CHANGES: dict[str, str] = {
    "customers": "accepts_marketing = NOT accepts_marketing",
    "addresses": "city = 'Suzhou'",
    "products": "price = round(price * 1.05, 2)",
    "coupons": "valid_to = valid_to + 30",
    "orders": "status = CASE WHEN status = 'delivered' THEN 'returned' ELSE 'delivered' END",
    "order_items": "quantity = quantity + 1",
    "carts": "status = 'converted'",
    "cart_items": "quantity = quantity + 1",
    "reviews": "rating = greatest(1, rating - 1)",
    "inquiries": "status = 'resolved', resolved_at = {at}",
    # every column of a redemption is a key: only its `updated_at` moves (a re-sent record)
    "coupon_redemptions": "",
}


def fill_shop(url: str, customers: int, orders_per_customer: int, run_date: date) -> dict[str, float]:
    """Create the canonical tables and fill them on the server; returns seconds per step."""
    from sqlalchemy import text

    from core import db, shop_schema

    engine = db.engine(url)
    shop_schema.metadata.create_all(engine)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(text("SELECT setseed(0.42)"))
        for table, sql in fill_sql(customers, orders_per_customer, run_date):
            connection.execute(text(sql))
    seconds["insert"] = time.perf_counter() - start
    start = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("SET maintenance_work_mem = '256MB'"))
        for table in shop_schema.SHOP_TABLES:
            connection.execute(text(f"CREATE INDEX ix_{table}_updated_at ON {table} (updated_at)"))
        seconds["index"] = time.perf_counter() - start
        start = time.perf_counter()
        # VACUUM too: the first reader would otherwise pay for setting the hint bits of 30M fresh rows.
        connection.execute(text("VACUUM ANALYZE"))
    seconds["vacuum"] = time.perf_counter() - start
    engine.dispose()
    return seconds


def table_rows(url: str) -> dict[str, int]:
    from sqlalchemy import text

    from core import db, shop_schema

    engine = db.engine(url)
    with engine.connect() as connection:
        rows = {table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() for table in shop_schema.SHOP_TABLES}
    engine.dispose()
    return rows


def change_one_percent(url: str, day: date) -> dict[str, int]:
    """Change 1 % of every table's rows at random times on `day`; returns rows changed per table."""
    from sqlalchemy import text

    from core import db, shop_schema

    at = f"(TIMESTAMP '{day:%Y-%m-%d}' + interval '1 second' * (id * 7919 % 86400))"  # per row, any time of day
    engine = db.engine(url)
    changed: dict[str, int] = {}
    with engine.begin() as connection:
        for table in shop_schema.SHOP_TABLES:
            assignments = ", ".join(part for part in (f"updated_at = {at}", CHANGES[table].format(at=at)) if part)
            result = connection.execute(text(f"UPDATE {table} SET {assignments} WHERE id % 100 = {CHANGED_ID_REMAINDER}"))
            changed[table] = result.rowcount
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE"))
    engine.dispose()
    return changed


# --------------------------------------------------------------------------------------------------------
# Stages: each runs in a child process (`--child`) and prints one JSON line
# --------------------------------------------------------------------------------------------------------


def stage_extract(job: dict) -> dict:
    """One night of `jobs.extract.run`: night 1 a full load (`full=True` where `run` has it), night 2 incremental."""
    from jobs import extract

    has_full = "full" in inspect.signature(extract.run).parameters
    settings = _settings(job)
    options = {"full": True} if job["night"] == 1 and has_full else {}
    start = time.perf_counter()
    tables = extract.run(date.fromisoformat(job["run_date"]), settings, f"bench-night-{job['night']}", **options)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "incremental": has_full,
        "rows": sum(_rows_read(value) for value in tables.values()),
        "tables": {name: _rows_read(value) for name, value in tables.items()},
        "modes": sorted({value["mode"] for value in tables.values() if isinstance(value, dict) and "mode" in value}),
        "reconciled": any(isinstance(value, dict) and value.get("reconciled") for value in tables.values()),
    }


def _rows_read(value: int | dict) -> int:
    """Rows of one table's batch: the full-snapshot `run` returns a count, the incremental one a summary."""
    return value if isinstance(value, int) else int(value.get("changed", 0)) + int(value.get("deleted", 0))


def _settings(job: dict):
    """The configuration from the environment; `reconcile: false` turns the nightly key comparison off."""
    from core.config import load_config

    settings = load_config()
    if job.get("reconcile") is False:
        settings = settings.model_copy(update={"extract": settings.extract.model_copy(update={"reconcile_every_days": 0})})
    return settings


def stage_clean(job: dict) -> dict:
    """`jobs.clean.run` for night 1: the incremental extract starts only from tables that silver has."""
    return clean_night_one(job, _settings(job))


def _delta_rows_written(path: str) -> int:
    from deltalake import DeltaTable

    metrics = DeltaTable(path).history(1)[0].get("operationMetrics", {})
    return int(metrics.get("num_added_rows") or metrics.get("numOutputRows") or -1)


#: The orders table as bronze has it, for the reference readers.
ORDERS_QUERY = "SELECT id, customer_id, status, total_amount, currency, coupon_id, created_at, updated_at FROM orders"


def orders_query() -> str:
    # ADBC hands `numeric` over as an opaque text type (PITFALLS.md): ask for text, type it in Arrow.
    return ORDERS_QUERY.replace("total_amount,", "total_amount::text AS total_amount,")


def with_money_typed(batches):
    """The record batches with `total_amount` as decimal(12, 2), as bronze types it; still a stream."""
    import pyarrow as pa
    import pyarrow.compute as pc

    money = pa.decimal128(12, 2)
    schema = batches.schema.set(batches.schema.get_field_index("total_amount"), pa.field("total_amount", money))

    def typed():
        for batch in batches:
            column = batch.schema.get_field_index("total_amount")
            yield batch.set_column(column, schema.field(column), pc.cast(batch.column(column), money))

    return pa.RecordBatchReader.from_batches(schema, typed())


def adbc_uri(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def stage_adbc_arrow(job: dict) -> dict:
    import adbc_driver_postgresql.dbapi

    start = time.perf_counter()
    rows = batches = 0
    with adbc_driver_postgresql.dbapi.connect(adbc_uri(job["url"])) as connection, connection.cursor() as cursor:
        cursor.execute(orders_query())
        for batch in cursor.fetch_record_batch():
            rows += batch.num_rows
            batches += 1
    return {"seconds": time.perf_counter() - start, "rows": rows, "batches": batches}


def stage_adbc_delta(job: dict) -> dict:
    import adbc_driver_postgresql.dbapi
    from deltalake import write_deltalake

    target = str(Path(job["folder"]) / "adbc_orders")
    start = time.perf_counter()
    with adbc_driver_postgresql.dbapi.connect(adbc_uri(job["url"])) as connection, connection.cursor() as cursor:
        cursor.execute(orders_query())
        write_deltalake(target, with_money_typed(cursor.fetch_record_batch()), mode="overwrite")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": _delta_rows_written(target)}


STAGES = {"extract": stage_extract, "clean": stage_clean, "adbc_arrow": stage_adbc_arrow, "adbc_delta": stage_adbc_delta}


# --------------------------------------------------------------------------------------------------------
# One size
# --------------------------------------------------------------------------------------------------------


def one_size(customers: int, args: argparse.Namespace) -> None:
    """Fill a fresh shop of `customers`, run every stage on it and print its table, row by row."""
    postgres_server = dbservers().postgres_server
    folder = Path(tempfile.mkdtemp(prefix=f"crm-bench-extract-{customers}-", dir=args.tmp))
    # The server runs as the `postgres` user when we are root: it must reach its folder inside ours.
    folder.chmod(0o755)
    log = folder / "stages.log"
    try:
        with postgres_server(base_dir=folder / "postgres") as server:
            server.create_database("shop")
            url = server.url("shop")
            fill = fill_shop(url, customers, args.orders_per_customer, RUN_DATE)
            rows = table_rows(url)
            environment = {
                **os.environ,
                "CRM_ENV": "demo",
                "CRM_SHOP_URL": url,
                "CRM_DATA_DIR": str(folder / "data"),
                "CRM__SPARK__MASTER": "local[2]",
                "CRM__SPARK__DRIVER_MEMORY": args.driver_memory,
            }
            night_1 = {"url": url, "folder": str(folder), "run_date": RUN_DATE.isoformat()}
            night_2 = {**night_1, "run_date": (RUN_DATE + timedelta(days=1)).isoformat()}
            print(f"\n{customers:,} customers, {code_version()}")
            print(
                f"{sum(rows.values()):,} shop rows ({rows['orders']:,} orders, "
                f"{rows['order_items']:,} order items); filled in {fill['insert']:.1f} s, indexed in "
                f"{fill['index']:.1f} s, vacuumed in {fill['vacuum']:.1f} s"
            )
            print(f"{'stage':<44} {'seconds':>8} {'rows':>11} {'rows/s':>9} {'peak MB':>8} {'load':>5}", flush=True)

            full = run_stage(__file__, {**night_1, "stage": "extract", "night": 1}, environment, log)
            print_row("full load, Arrow -> bronze (extract)", full)
            if full["rows"] != sum(rows.values()):
                print(f"  warning: the full load wrote {full['rows']:,} rows, the shop has {sum(rows.values()):,}: {full['tables']}")
            references = [
                ("orders, ADBC -> Arrow batches (reference)", "adbc_arrow"),
                ("orders, ADBC -> Delta, deltalake (reference)", "adbc_delta"),
            ]
            for title, stage in references:
                print_row(title, run_stage(__file__, {**night_1, "stage": stage}, environment, log, check=False))

            if not full["incremental"]:
                print_row(
                    "night 2, 1 % changed",
                    {"skipped": "jobs.extract.run has no `full` parameter yet: night 2 needs the incremental extract"},
                )
                return
            # The incremental extract starts only from tables that silver has: clean night 1 as the DAG does.
            print_row("clean night 1 -> silver (not extraction)", run_stage(__file__, {**night_1, "stage": "clean"}, environment, log))
            start = time.perf_counter()
            changed = change_one_percent(url, RUN_DATE + timedelta(days=1))
            print(
                f"  {sum(changed.values()):,} rows changed on {RUN_DATE + timedelta(days=1)} in {time.perf_counter() - start:.1f} s",
                flush=True,
            )
            night = run_stage(__file__, {**night_2, "stage": "extract", "night": 2}, environment, log)
            print_row("night 2, 1 % changed, as configured", night)
            print_night(night, changed)
            # Rerunning a date replaces its batch and starts from the same watermark: the same rows again.
            again = run_stage(__file__, {**night_2, "stage": "extract", "night": 2, "reconcile": False}, environment, log)
            print_row("night 2 rerun, no key reconciliation", again)
            print_night(again, changed)
    finally:
        if args.keep:
            print(f"  kept: {folder} (lake in data/lake, stage logs in stages.log)")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def print_row(title: str, result: dict) -> None:
    if "skipped" in result:
        print(f"{title:<44} skipped: {result['skipped']}", flush=True)
        return
    print(
        f"{title:<44} {result['seconds']:>8.1f} {result['rows']:>11,} "
        f"{round(result['rows'] / result['seconds']):>9,} {result['peak_mb']:>8} {result['load']:>5.1f}",
        flush=True,
    )


def print_night(night: dict, changed: dict[str, int]) -> None:
    read = ", ".join(f"{table} {count:,}/{changed[table]:,}" for table, count in night["tables"].items())
    print(
        f"  modes {'/'.join(night['modes'])}, keys reconciled: {'yes' if night['reconciled'] else 'no'}; rows read/changed: {read}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000], help="numbers of customers")
    parser.add_argument("--orders-per-customer", type=int, default=8)
    parser.add_argument("--driver-memory", default="3g", help="Spark driver heap (local mode: all of Spark)")
    parser.add_argument("--tmp", default="/tmp", help="where the database and the lake go (on disk by default)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep each size's folder (lake, logs); the "
        "PostgreSQL server is stopped and its data removed by tests/dbservers.py in any case",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        # The jobs' per-table progress, with times, goes to the stage log (stderr) for finding bottlenecks.
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("jobs").setLevel(logging.INFO)
        job = json.loads(sys.stdin.read())
        print(json.dumps(STAGES[job["stage"]](job)))
        return
    for size in args.sizes:
        one_size(size, args)


if __name__ == "__main__":
    main()
