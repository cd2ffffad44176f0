"""Benchmark: the RFM stage against DuckDB, and the whole features + scoring (run by hand, never in tests).

    .venv/bin/python -m pip install -c constraints.txt -e '.[test,bench]'
    .venv/bin/python bench/rfm.py 100000 1000000 [--orders-per-customer 8] [--repeats 3] [--driver-memory 3g]

Per size (number of customers) silver is generated straight into Delta tables with numpy and delta-rs
(customers, default addresses, 2,000 products, ~N orders per customer with 1-2 lines each, carts, reviews,
inquiries; a fixed seed), under `--tmp`. Then, each in a child process of its own:

1. **RFM stage**, on the same silver orders and customers, `--repeats` times in one warm session (median):
   - Spark (`local[2]`, the pipeline's code): purchases as of the run date (`features.customer.orders_as_of`),
     recency / frequency / monetary per customer, `models.rfm.with_rfm_scores` (exact quintile cut points,
     no global sort), written to Spark's `noop` sink so every row is computed;
   - Spark with the former global `rank()` window (one partition, a global sort), for reference;
   - DuckDB SQL (2 threads) doing the same aggregates and the same quintile formula with `rank()` windows,
     into a temporary table, on the same Parquet files (the Delta tables' current files).
   DuckDB's scores are compared with Spark's, customer for customer: the stage fails if one differs.
2. **Pipeline**: `jobs.features.run` (all features -> gold/customer_features) and `jobs.score.run` (RFM,
   segments, clusters, profiles, summary, movement -> gold), as the nightly runs them (`CRM_ENV=demo`).

Seconds are wall time of the measured call inside the child (the pipeline's include starting Spark, as a
nightly task pays it). Peak MB: the largest resident memory of the child's process tree (Python and JVM).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from datetime import date, datetime, timezone
from pathlib import Path

from harness import benchmark_main, code_version, lake_benchmark_parser, run_stage

REPO = Path(__file__).resolve().parent.parent
RUN_DATE = date(2026, 11, 26)
HISTORY_DAYS = 730
STATUSES = ["placed", "paid", "shipped", "delivered", "cancelled", "returned"]
STATUS_WEIGHTS = [0.02, 0.03, 0.05, 0.80, 0.05, 0.05]
CATEGORIES = ["books", "garden", "toys", "kitchen", "sports", "beauty", "music", "games", "office", "pets", "baby", "tools"]


# --------------------------------------------------------------------------------------------------------
# Silver, generated
# --------------------------------------------------------------------------------------------------------


def make_silver(lake_dir: Path, customers: int, orders_per_customer: int, seed: int = 11) -> dict[str, int]:
    """Write the silver tables the features read; returns rows per table."""
    import numpy as np
    import pyarrow as pa
    from deltalake import write_deltalake

    rng = np.random.default_rng(seed)
    end = int(datetime.combine(RUN_DATE, datetime.min.time(), tzinfo=timezone.utc).timestamp()) + 86_399
    start = end - HISTORY_DAYS * 86_400
    micro = 1_000_000

    def ts(seconds, missing=None):
        return pa.array(np.asarray(seconds, dtype=np.int64) * micro, pa.timestamp("us", tz="UTC"), mask=missing)

    def amounts(cents):
        """Exact decimal(12,2) amounts from whole cents."""
        return pa.Array.from_buffers(pa.decimal128(12, 2), len(cents), [None, pa.py_buffer(_decimal_bytes(cents))])

    def write(name: str, columns: dict) -> int:
        table = pa.table(columns)
        write_deltalake(str(lake_dir / "silver" / name), table, mode="overwrite")
        return table.num_rows

    counts = {}
    ids = np.arange(1, customers + 1, dtype=np.int64)
    registered = rng.integers(start, end - 86_400, customers)
    counts["customers"] = write(
        "customers",
        {
            "id": ids,
            "email": pa.array([f"customer{i}@example.com" for i in ids]),
            "first_name": pa.array(["Ada"] * customers),
            "last_name": pa.array(["Lovelace"] * customers),
            "phone": pa.array([None] * customers, pa.string()),
            "language": pa.array(["en"] * customers),
            "country": pa.array(["DE"] * customers),
            "accepts_marketing": rng.random(customers) < 0.6,
            "created_at": ts(registered),
            "updated_at": ts(registered),
        },
    )
    counts["addresses"] = write(
        "addresses",
        {
            "id": ids,
            "customer_id": ids,
            "line1": pa.array(["1 Main St"] * customers),
            "city": pa.array(["Berlin"] * customers),
            "postal_code": pa.array(["10115"] * customers),
            "country": pa.array(["DE"] * customers),
            "is_default": np.ones(customers, dtype=bool),
            "created_at": ts(registered),
            "updated_at": ts(registered),
        },
    )
    products = 2_000
    counts["products"] = write(
        "products",
        {
            "id": np.arange(1, products + 1, dtype=np.int64),
            "sku": pa.array([f"SKU{i}" for i in range(products)]),
            "name": pa.array([f"product {i}" for i in range(products)]),
            "category": pa.array([CATEGORIES[i % len(CATEGORIES)] for i in range(products)]),
            "price": amounts(rng.integers(100, 20_000, products)),
            "created_at": ts(np.full(products, start)),
            "updated_at": ts(np.full(products, start)),
        },
    )
    per_customer = rng.poisson(orders_per_customer, customers)
    n_orders = int(per_customer.sum())
    order_customer = np.repeat(ids, per_customer)
    # Customers stop buying as in a shop: 40% are still active at the end, the others left at a random
    # point of their time since registration, so recency varies and BG/NBD has a dropout to estimate.
    leaves = rng.random(customers) >= 0.4
    active_until = np.where(leaves, registered + ((end - registered) * rng.beta(2.0, 2.0, customers)).astype(np.int64), end)
    order_created = rng.integers(np.repeat(registered, per_customer), np.repeat(np.maximum(active_until, registered + 1), per_customer))
    status = rng.choice(len(STATUSES), n_orders, p=STATUS_WEIGHTS)
    order_updated = np.minimum(order_created + rng.integers(0, 20 * 86_400, n_orders), end)
    order_ids = np.arange(1, n_orders + 1, dtype=np.int64)
    counts["orders"] = write(
        "orders",
        {
            "id": order_ids,
            "customer_id": order_customer,
            "status": pa.array(np.array(STATUSES)[status]),
            "total_amount": amounts(rng.gamma(2.0, 3_000, n_orders).astype(np.int64) + 100),
            "currency": pa.array(["EUR"] * n_orders),
            "coupon_id": pa.array(rng.integers(1, 1_000, n_orders), pa.int64(), mask=rng.random(n_orders) >= 0.1),
            "created_at": ts(order_created),
            "updated_at": ts(order_updated),
        },
    )
    lines = rng.integers(1, 3, n_orders)
    n_lines = int(lines.sum())
    line_order = np.repeat(order_ids, lines)
    counts["order_items"] = write(
        "order_items",
        {
            "id": np.arange(1, n_lines + 1, dtype=np.int64),
            "order_id": line_order,
            "product_id": rng.integers(1, products + 1, n_lines).astype(np.int64),
            "quantity": rng.integers(1, 4, n_lines).astype(np.int32),
            "unit_price": amounts(rng.integers(100, 20_000, n_lines)),
            "created_at": ts(np.repeat(order_created, lines)),
            "updated_at": ts(np.repeat(order_created, lines)),
        },
    )
    del order_customer, order_created, order_updated, line_order
    n_carts = customers // 3
    cart_created = rng.integers(end - 90 * 86_400, end, n_carts)
    counts["carts"] = write(
        "carts",
        {
            "id": np.arange(1, n_carts + 1, dtype=np.int64),
            "customer_id": rng.integers(1, customers + 1, n_carts),
            "status": pa.array(rng.choice(["open", "abandoned", "converted"], n_carts)),
            "created_at": ts(cart_created),
            "updated_at": ts(cart_created + 3_600),
        },
    )
    counts["cart_items"] = write(
        "cart_items",
        {
            "id": np.arange(1, 2 * n_carts + 1, dtype=np.int64),
            "cart_id": np.repeat(np.arange(1, n_carts + 1), 2),
            "product_id": rng.integers(1, products + 1, 2 * n_carts),
            "quantity": rng.integers(1, 3, 2 * n_carts).astype(np.int32),
            "unit_price": amounts(rng.integers(100, 20_000, 2 * n_carts)),
            "created_at": ts(np.repeat(cart_created, 2)),
            "updated_at": ts(np.repeat(cart_created, 2)),
        },
    )
    n_reviews = customers // 2
    review_created = rng.integers(start, end, n_reviews)
    counts["reviews"] = write(
        "reviews",
        {
            "id": np.arange(1, n_reviews + 1, dtype=np.int64),
            "customer_id": rng.integers(1, customers + 1, n_reviews),
            "product_id": rng.integers(1, products + 1, n_reviews),
            "rating": rng.integers(1, 6, n_reviews).astype(np.int32),
            "title": pa.array(["fine"] * n_reviews),
            "body": pa.array(["fine"] * n_reviews),
            "language": pa.array(["en"] * n_reviews),
            "created_at": ts(review_created),
            "updated_at": ts(review_created),
        },
    )
    n_inquiries = customers // 3
    inquiry_created = rng.integers(start, end, n_inquiries)
    resolved = inquiry_created + rng.integers(3_600, 10 * 86_400, n_inquiries)
    is_resolved = resolved < end
    counts["inquiries"] = write(
        "inquiries",
        {
            "id": np.arange(1, n_inquiries + 1, dtype=np.int64),
            "customer_id": rng.integers(1, customers + 1, n_inquiries),
            "channel": pa.array(["email"] * n_inquiries),
            "subject": pa.array(["order"] * n_inquiries),
            "body": pa.array(["where is it"] * n_inquiries),
            "status": pa.array(np.where(is_resolved, "resolved", "open")),
            "resolved_at": ts(resolved, missing=~is_resolved),
            "created_at": ts(inquiry_created),
            "updated_at": ts(np.where(is_resolved, resolved, inquiry_created)),
        },
    )
    return counts


def _decimal_bytes(cents) -> bytes:
    """Little-endian 128-bit two's complement of non-negative whole cents (Arrow's decimal128 layout)."""
    import numpy as np

    values = np.zeros((len(cents), 2), dtype=np.int64)
    values[:, 0] = np.asarray(cents, dtype=np.int64)
    return values.tobytes()


# --------------------------------------------------------------------------------------------------------
# Stages (each in a child process)
# --------------------------------------------------------------------------------------------------------


def _settings(job: dict):
    from core.config import load_config

    return load_config(
        "demo",
        {
            **os.environ,
            "CRM_DATA_DIR": job["data_dir"],
            "CRM__SPARK__MASTER": "local[2]",
            "CRM__SPARK__DRIVER_MEMORY": job["driver_memory"],
        },
    )


def _median_seconds(work, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def spark_measures(lake, statuses):
    """Recency, purchase count and total spent per registered customer, as the features job computes them."""
    from pyspark.sql import functions as F

    from features.customer import known_at, orders_as_of

    day = F.lit(RUN_DATE)
    purchases = orders_as_of(lake.read("silver", "orders"), RUN_DATE, statuses).where("is_purchase")
    per_customer = purchases.groupBy("customer_id").agg(
        F.count("*").alias("purchase_count"), F.sum("total_amount").alias("total_spent"), F.max("created_at").alias("last_order_at")
    )
    return (
        known_at(lake.read("silver", "customers"), RUN_DATE)
        .select(F.col("id").alias("customer_id"))
        .join(per_customer, "customer_id", "left")
        .select(
            "customer_id",
            F.date_diff(day, F.to_date("last_order_at")).alias("recency_days"),
            F.coalesce("purchase_count", F.lit(0)).cast("long").alias("purchase_count"),
            F.coalesce("total_spent", F.lit(0)).cast("decimal(18,2)").alias("total_spent"),
        )
    )


def global_window_scores(measures):
    """The former scoring: one global rank() window per measure (all rows in one partition, sorted)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    buyers = measures.where(F.col("purchase_count") > 0)
    everyone = Window.partitionBy()
    scored = buyers
    for name, column, best_is_high in (
        ("r_score", "recency_days", False),
        ("f_score", "purchase_count", True),
        ("m_score", "total_spent", True),
    ):
        order = F.col(column).asc() if best_is_high else F.col(column).desc()
        rank = F.rank().over(Window.orderBy(order))
        scored = scored.withColumn(name, F.floor((rank - 1) * 5 / F.count(F.lit(1)).over(everyone)).cast("int") + 1)
    return scored


DUCKDB_RFM = """
CREATE OR REPLACE TEMP TABLE rfm AS
WITH purchases AS (
    SELECT customer_id, total_amount, created_at FROM read_parquet({orders})
    WHERE created_at < TIMESTAMPTZ '{cutoff}' AND (status IN ({statuses}) OR updated_at >= TIMESTAMPTZ '{cutoff}')
), per_customer AS (
    SELECT customer_id, count(*) AS purchase_count, sum(total_amount) AS total_spent, max(created_at) AS last_order_at
    FROM purchases GROUP BY customer_id
), buyers AS (
    SELECT c.id AS customer_id, date_diff('day', CAST(p.last_order_at AS DATE), DATE '{as_of}') AS recency_days,
           p.purchase_count, p.total_spent
    FROM read_parquet({customers}) c JOIN per_customer p ON p.customer_id = c.id
    WHERE c.created_at < TIMESTAMPTZ '{cutoff}'
)
SELECT customer_id, recency_days, purchase_count, total_spent,
       CAST(floor((rank() OVER (ORDER BY recency_days DESC) - 1) * 5 / count(*) OVER ()) + 1 AS INTEGER) AS r_score,
       CAST(floor((rank() OVER (ORDER BY purchase_count) - 1) * 5 / count(*) OVER ()) + 1 AS INTEGER) AS f_score,
       CAST(floor((rank() OVER (ORDER BY total_spent) - 1) * 5 / count(*) OVER ()) + 1 AS INTEGER) AS m_score
FROM buyers
"""


def stage_rfm(job: dict) -> dict:
    import duckdb
    from deltalake import DeltaTable
    from pyspark.sql import functions as F

    from core.lake import Lake
    from core.spark_local import get_spark
    from features.customer import end_of
    from models.rfm import with_rfm_scores

    settings = _settings(job)
    statuses = settings.rfm.scored_statuses
    spark = get_spark(settings, "bench-rfm")
    lake = Lake(spark, settings.lake_dir)
    spark_measures(lake, statuses).write.format("noop").mode("overwrite").save()  # warm: JIT, file listing

    def pipeline_scoring():
        measures = spark_measures(lake, statuses).cache()
        try:
            with_rfm_scores(measures).write.format("noop").mode("overwrite").save()
        finally:
            measures.unpersist()

    def global_window():
        global_window_scores(spark_measures(lake, statuses)).write.format("noop").mode("overwrite").save()

    spark_seconds, spark_times = _median_seconds(pipeline_scoring, job["repeats"])
    window_seconds, window_times = _median_seconds(global_window, job["repeats"])
    scores = ["customer_id", "r_score", "f_score", "m_score"]
    measures = spark_measures(lake, statuses).cache()
    from_spark = with_rfm_scores(measures).where(F.col("purchase_count") > 0).select(*scores).toPandas()

    files = {name: [f"{uri}" for uri in DeltaTable(lake.path("silver", name)).file_uris()] for name in ("orders", "customers")}
    sql = DUCKDB_RFM.format(
        orders=files["orders"],
        customers=files["customers"],
        cutoff=f"{end_of(RUN_DATE).isoformat()}",
        as_of=RUN_DATE.isoformat(),
        statuses=", ".join(f"'{status}'" for status in statuses),
    )
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'; SET threads = 2")
    duck_seconds, duck_times = _median_seconds(lambda: connection.execute(sql), job["repeats"])
    from_duckdb = connection.execute(f"SELECT {', '.join(scores)} FROM rfm").df()

    merged = from_spark.merge(from_duckdb, on="customer_id", how="outer", suffixes=("_spark", "_duckdb"), indicator=True)
    differing = int((merged["_merge"] != "both").sum()) + int(
        sum((merged[f"{score}_spark"] != merged[f"{score}_duckdb"]).sum() for score in scores[1:])
    )
    if differing:
        raise AssertionError(f"Spark and DuckDB disagree on {differing} customer scores")
    spark.stop()
    return {
        "spark": spark_seconds,
        "spark_times": spark_times,
        "global_window": window_seconds,
        "global_window_times": window_times,
        "duckdb": duck_seconds,
        "duckdb_times": duck_times,
        "buyers": len(from_spark),
        "seconds": spark_seconds + window_seconds + duck_seconds,
        "rows": len(from_spark),
    }


def stage_pipeline(job: dict) -> dict:
    from jobs import features, score

    settings = _settings(job)
    timings = {}
    started = time.perf_counter()
    customers = features.run(RUN_DATE, settings, "bench")
    timings["features"] = time.perf_counter() - started
    started = time.perf_counter()
    segments = score.run(RUN_DATE, settings, "bench")
    timings["score"] = time.perf_counter() - started
    return {**timings, "customers": customers, "segments": segments, "seconds": sum(timings.values()), "rows": customers}


STAGES = {"rfm": stage_rfm, "pipeline": stage_pipeline}


# --------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------


def one_size(customers: int, args: argparse.Namespace) -> None:
    folder = Path(args.tmp) / f"crm-bench-rfm-{customers}"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "lake").mkdir(parents=True)
    started = time.perf_counter()
    rows = make_silver(folder / "lake", customers, args.orders_per_customer)
    print(
        f"\n{customers:,} customers, {rows['orders']:,} orders, {rows['order_items']:,} order lines "
        f"(silver generated in {time.perf_counter() - started:.1f} s); {code_version()}",
        flush=True,
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO), "CRM_ENV": "demo"}
    job = {"data_dir": str(folder), "driver_memory": args.driver_memory, "repeats": args.repeats}
    log = folder / "stages.log"
    try:
        rfm = run_stage(__file__, {**job, "stage": "rfm"}, environment, log)
        print(
            f"RFM stage, median of {args.repeats} (s): Spark {rfm['spark']:.2f}  "
            f"Spark global rank() window {rfm['global_window']:.2f}  DuckDB {rfm['duckdb']:.2f}  "
            f"ratio Spark/DuckDB {rfm['spark'] / rfm['duckdb']:.1f}x  "
            f"(scores equal for all {rfm['buyers']:,} buyers; peak {rfm['peak_mb']} MB, load {rfm['load']:.1f})",
            flush=True,
        )
        print(
            f"  runs: Spark {_list(rfm['spark_times'])}; window {_list(rfm['global_window_times'])}; DuckDB {_list(rfm['duckdb_times'])}",
            flush=True,
        )
        pipeline = run_stage(__file__, {**job, "stage": "pipeline"}, environment, log)
        print(
            f"features {pipeline['features']:.1f} s + score (RFM, segments, clusters, profiles, summaries) "
            f"{pipeline['score']:.1f} s = {pipeline['seconds']:.1f} s for {pipeline['customers']:,} customers "
            f"(peak {pipeline['peak_mb']} MB, load {pipeline['load']:.1f})",
            flush=True,
        )
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def _list(values: list[float]) -> str:
    return " ".join(f"{value:.2f}" for value in values)


def main() -> None:
    parser = lake_benchmark_parser(__doc__, [100_000, 1_000_000], "lake, stages.log")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each RFM variant (the median is shown)")
    benchmark_main(parser, STAGES, one_size)


if __name__ == "__main__":
    main()
