"""Benchmark: whole nights through Airflow on a PostgreSQL shop, beside the single-node floor of the same work
(run by hand, never in tests).

    .venv/bin/python -m pip install -c constraints.txt -e '.[bench]'
    .venv/bin/python bench/nightly.py 10000 100000 [--orders-per-customer 8] [--driver-memory 6g] [--keep]
    .venv/bin/python bench/nightly.py 100000 --cluster [--driver-memory 2g] [--executor-memory 2g]

Per size (number of customers) a throwaway PostgreSQL server (tests/dbservers.py) holds the shop, filled on
the server as bench/extract.py does, plus `--event-days` days of browsing events in the shop's `events`
table, and the CRM database. Then:

1. night 1: `crm run --date D` (Airflow's dag.test, the night's Spark server, every task), a full load;
2. about 1 % of every shop table changes on D + 1 (bench/extract.py's `change_one_percent`: updates spread
   over the tables) and one more day of events arrives;
3. night 2: `crm run --date D+1`;
4. the floor, in a child process on the same data: ADBC read of the rows night 2 read (updated since
   night 1's high watermark, less the overlap), DuckDB RFM on silver's Parquet files (listed from the Delta
   log), the BG/NBD and Gamma-Gamma fits of `models.lifetime` on that summary, and an ADBC write of one
   score row per customer into the CRM database: the core of a night with no JVM, no Delta commit, no gate.

Printed per night: every task's seconds (from the run log, `crm status`), the night's wall time (the whole
`crm run` command, Airflow's start included), and the peak resident memory of the whole process tree: the
`crm run` process, its children, and the night's Spark server (a process of its own session). Then the floor
per step, and the ratio of night 2 to the floor. Load is the mean 1-minute load average during the night.

`--cluster`: the same nights on a Spark standalone cluster with the lake on an S3-compatible object store, the
shape of docs/scaling-out.md, on this machine: the tests' SeaweedFS server (tests/objectstore.py; `make seaweedfs`)
and a master with two workers of one core each (tests/sparkcluster.py), each worker offering one executor of
`--executor-memory`. The night's Spark server is then the driver (`--driver-memory`) of an application on the
cluster; `lake.uri` is `s3a://<bucket>/bench-nightly`. The peak memory then counts the store, the master, the
workers and their executors too. The floor reads the same lake on the store: copying silver's current files to
a local folder for DuckDB is one of its steps.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Iterator

import extract as shop_fill
from harness import benchmark_main, code_version, dbservers, rss_of_trees, run_stage, test_servers

REPO = Path(__file__).resolve().parent.parent
RUN_DATE = shop_fill.RUN_DATE
SAMPLE_INTERVAL_S = 0.2
#: What a worker offers beyond its executor's heap: Spark's memory overhead (10 %, at least 384 MB) and some.
WORKER_OVERHEAD_MB = 512


def fill_events(url: str, customers: int, first_day: date, days: int, per_customer_day: float) -> int:
    """Browsing events on the server: `per_customer_day` events per customer and day on average, a fifth of
    them anonymous; returns the rows inserted."""
    from sqlalchemy import text

    from core import db, shop_schema

    engine = db.engine(url)
    shop_schema.events_metadata.create_all(engine)
    rows = int(customers * days * per_customer_day)
    span_s = days * 86400
    with engine.begin() as connection:
        connection.execute(
            text(f"""
            INSERT INTO events (event_id, customer_id, session_id, event_type, product_id, category, channel,
                                occurred_at, properties)
            SELECT 'e-{first_day:%Y%m%d}-' || k,
                   CASE WHEN k % 5 = 0 THEN NULL ELSE 1 + (k * 7919) % {customers} END,
                   's-{first_day:%Y%m%d}-' || (k / 6),
                   (ARRAY['view', 'view', 'view', 'click', 'search', 'add_to_cart'])[1 + k % 6],
                   1 + (k * 104729) % 500, 'category-' || (k % 12), 'web',
                   TIMESTAMP '{first_day:%Y-%m-%d}' + interval '1 second' * ((k::bigint * 15485863) % {span_s}),
                   '{{}}'
            FROM generate_series(1::bigint, {rows}::bigint) AS k""")
        )
    engine.dispose()
    return rows


def run_night(run_date: date, environment: dict[str, str], log: Path, servers: list[int]) -> dict:
    """`crm run --date` in a child process; its wall time, the peak RSS of its tree, the night's Spark server's and
    the trees of `servers` (the object store and the cluster's daemons with their executors, in cluster mode)."""
    from core import spark_server
    from core.config import load_config

    settings = load_config(environ=environment)
    crm = Path(sys.executable).with_name("crm")
    start = time.perf_counter()
    peak, loads = 0, []
    with log.open("ab") as out:
        child = subprocess.Popen(
            [str(crm), "run", "--date", run_date.isoformat()], env=environment, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
        while child.poll() is None:
            # The night's server runs in a session of its own but may still be a child of `crm run`'s
            # process (dag.test runs spark_up in it): count each process once.
            roots = [child.pid, *servers]
            state = spark_server.read_state(settings)
            if state is not None:
                roots.append(state.pid)
            peak = max(peak, rss_of_trees(roots))
            loads.append(os.getloadavg()[0])
            time.sleep(SAMPLE_INTERVAL_S)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(f"crm run --date {run_date} failed (exit {child.returncode}); see {log}")
    return {
        "wall": wall,
        "peak_mb": round(peak / 2**20),
        "load": sum(loads) / max(1, len(loads)),
        "tasks": task_seconds(settings, run_date),
    }


def task_seconds(settings, run_date: date) -> dict[str, float]:
    """Each task's seconds in the newest run of `run_date`, from the run log."""
    from core import runlog

    for run in runlog.recent_runs(settings, 5):
        stages = run["stages"]
        if stages and stages[0]["run_date"] == run_date:
            return {stage["stage"]: float(stage["seconds"] or 0) for stage in stages}
    return {}


# --------------------------------------------------------------------------------------------------------
# The floor: the same core work on one node, no JVM (a child process of its own, `--child`)
# --------------------------------------------------------------------------------------------------------


def stage_floor(job: dict) -> dict:
    import adbc_driver_postgresql.dbapi
    import duckdb
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from rfm import DUCKDB_RFM

    from core import shop_schema
    from core.config import load_config
    from core.lake import ArrowLake
    from core.rundate import end_of
    from models.lifetime import BetaGeoModel, GammaGammaModel

    settings = load_config()
    night = date.fromisoformat(job["run_date"])
    lake = ArrowLake(settings.lake_location)
    seconds: dict[str, float] = {}

    # 1. What night 2 read: rows updated since night 1's high watermark, less the overlap.
    marks = lake.read("bronze", "_watermarks", where=pc.field("batch_id") == (night - timedelta(days=1)).isoformat())
    high = dict(zip(marks.column("table").to_pylist(), marks.column("high_watermark").to_pylist()))
    overlap = timedelta(minutes=settings.extract.overlap_minutes)
    start = time.perf_counter()
    rows_read = 0
    with adbc_driver_postgresql.dbapi.connect(shop_fill.adbc_uri(job["shop_url"])) as connection, connection.cursor() as cursor:
        for table in shop_schema.SHOP_TABLES:
            since = (high[table] - overlap).replace(tzinfo=None).isoformat(sep=" ")
            columns = ", ".join(
                f"{column.name}::text AS {column.name}" if str(column.type).startswith("NUMERIC") else column.name
                for column in shop_schema.metadata.tables[table].columns
            )
            cursor.execute(f"SELECT {columns} FROM {table} WHERE updated_at > '{since}'")
            rows_read += cursor.fetch_arrow_table().num_rows
    seconds["adbc_read_changed"] = time.perf_counter() - start

    # 2. RFM in DuckDB on silver's files (the current version's, from the Delta log); from the object store,
    # DuckDB reads local copies of them.
    files = {name: lake.delta_table("silver", name).file_uris() for name in ("orders", "customers")}
    if not settings.lake_location.is_local:
        start = time.perf_counter()
        files = copy_from_store(files, settings.lake_location.arrow_filesystem(), Path(job["scratch"]))
        seconds["copy_silver_from_store"] = time.perf_counter() - start
    start = time.perf_counter()
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'; SET threads = 2")
    connection.execute(
        DUCKDB_RFM.format(
            orders=files["orders"],
            customers=files["customers"],
            cutoff=f"{end_of(night).isoformat()}",
            as_of=night.isoformat(),
            statuses=", ".join(f"'{status}'" for status in settings.rfm.scored_statuses),
        )
    )
    seconds["duckdb_rfm"] = time.perf_counter() - start

    # 3. BG/NBD and Gamma-Gamma on the same orders (repeat purchases, recency and age in days).
    start = time.perf_counter()
    summary = connection.execute(f"""
        WITH o AS (SELECT customer_id, CAST(created_at AS DATE) AS day, sum(total_amount) AS amount
                   FROM read_parquet({files["orders"]})
                   WHERE created_at < TIMESTAMPTZ '{end_of(night).isoformat()}' GROUP BY 1, 2)
        SELECT customer_id, count(*) - 1 AS repeat_purchase_days,
               date_diff('day', min(day), max(day)) AS purchase_span_days,
               date_diff('day', min(day), DATE '{night}') AS days_since_first_purchase,
               CASE WHEN count(*) > 1 THEN (sum(amount) - arg_min(amount, day)) / (count(*) - 1) ELSE 0 END
                   AS mean_repeat_order_value
        FROM o GROUP BY customer_id""").to_arrow_table()
    repeat_purchase_days = summary.column("repeat_purchase_days").to_numpy().astype(float)
    BetaGeoModel().fit(
        repeat_purchase_days,
        summary.column("purchase_span_days").to_numpy().astype(float),
        summary.column("days_since_first_purchase").to_numpy().astype(float),
    )
    GammaGammaModel().fit(repeat_purchase_days, np.asarray(summary.column("mean_repeat_order_value").to_numpy(), dtype=float))
    seconds["lifetime_fits"] = time.perf_counter() - start

    # 4. One score row per customer into the CRM database.
    start = time.perf_counter()
    scores = pa.table(
        {
            "customer_id": summary.column("customer_id"),
            "p_alive": pa.array(np.random.default_rng(1).random(summary.num_rows)),
            "clv_12m": pa.array(np.random.default_rng(2).random(summary.num_rows) * 100),
        }
    )
    with adbc_driver_postgresql.dbapi.connect(shop_fill.adbc_uri(job["crm_url"])) as crm, crm.cursor() as cursor:
        cursor.adbc_ingest("bench_floor_scores", scores, mode="replace")
        crm.commit()
    seconds["adbc_write_scores"] = time.perf_counter() - start
    return {"seconds": sum(seconds.values()), "steps": seconds, "rows": rows_read, "customers": summary.num_rows}


def copy_from_store(files: dict[str, list[str]], store, folder: Path) -> dict[str, list[str]]:
    """Each table's files (s3://bucket/key URIs) copied into `folder`/<table>/: their local paths."""
    from pyarrow import fs

    local = fs.LocalFileSystem()
    copied: dict[str, list[str]] = {}
    for table, uris in files.items():
        (folder / table).mkdir(parents=True, exist_ok=True)
        copied[table] = []
        for number, uri in enumerate(uris):
            target = str(folder / table / f"{number:05d}.parquet")
            fs.copy_files(uri.split("://", 1)[1], target, source_filesystem=store, destination_filesystem=local)
            copied[table].append(target)
    return copied


STAGES = {"floor": stage_floor}


# --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def on_a_cluster(folder: Path, args: argparse.Namespace) -> Iterator[tuple[dict[str, str], list[int], str]]:
    """The object store and a standalone cluster for the nights: the environment that puts the lake on the store
    and the night's Spark on the cluster, the pids of their processes, and a line saying what runs where."""
    from core.config import load_config

    objectstore, sparkcluster = test_servers("objectstore"), test_servers("sparkcluster")
    executor_mb = megabytes(args.executor_memory)
    with (
        objectstore.seaweedfs_server(base_dir=folder) as store,
        sparkcluster.spark_standalone_cluster(
            store.environment(), base_dir=folder, worker_memory=f"{executor_mb + WORKER_OVERHEAD_MB}m"
        ) as cluster,
    ):
        extra = {**load_config("demo").spark.extra, "spark.executor.memory": f"{executor_mb}m"}
        environment = {
            **store.environment(),
            "CRM__LAKE__URI": f"s3a://{store.bucket}/bench-nightly",
            "CRM__SPARK__MASTER": cluster.master_url,
            "CRM__SPARK__EXTRA": json.dumps(extra),
        }
        where = (
            f"cluster {cluster.master_url}: {sparkcluster.WORKERS} workers of {sparkcluster.WORKER_CORES} core, executors of "
            f"{executor_mb} MB, driver {args.driver_memory}; lake {environment['CRM__LAKE__URI']} (SeaweedFS {store.endpoint_url})"
        )
        yield environment, [store.pid, *cluster.pids], where


def megabytes(size: str) -> int:
    """A JVM memory size (`2g`, `1536m`) in MB."""
    units = {"g": 1024, "m": 1}
    if size[-1:].lower() not in units or not size[:-1].isdigit():
        raise SystemExit(f"--executor-memory: expected a size like 2g or 1536m, got {size!r}")
    return int(size[:-1]) * units[size[-1].lower()]


def one_size(customers: int, args: argparse.Namespace) -> None:
    postgres_server = dbservers().postgres_server
    folder = Path(tempfile.mkdtemp(prefix=f"crm-bench-nightly-{customers}-", dir=args.tmp))
    folder.chmod(0o755)  # the server runs as `postgres` when we are root: it must reach its folder inside ours
    log = folder / "nights.log"
    try:
        with contextlib.ExitStack() as servers:
            server = servers.enter_context(postgres_server(base_dir=folder / "postgres"))
            server.create_database("shop")
            server.create_database("crm")
            shop_url, crm_url = server.url("shop"), server.url("crm")
            fill = shop_fill.fill_shop(shop_url, customers, args.orders_per_customer, RUN_DATE)
            events = fill_events(
                shop_url, customers, RUN_DATE - timedelta(days=args.event_days - 1), args.event_days, args.events_per_customer_day
            )
            rows = shop_fill.table_rows(shop_url)
            environment = {
                **os.environ,
                "CRM_ENV": "demo",
                "CRM_SHOP_URL": shop_url,
                "CRM_DB_URL": crm_url,
                "CRM_DATA_DIR": str(folder / "data"),
                "CRM__SPARK__MASTER": "local[2]",
                "CRM__SPARK__DRIVER_MEMORY": args.driver_memory,
                "CRM__EVENTS__SOURCE": "table",
            }
            watched, where = [], f"local[2], driver {args.driver_memory}; lake {folder / 'data' / 'lake'}"
            if args.cluster:
                cluster_environment, watched, where = servers.enter_context(on_a_cluster(folder, args))
                environment.update(cluster_environment)
            print(f"\n{customers:,} customers, {code_version()}\n{where}")
            print(
                f"{sum(rows.values()):,} shop rows ({rows['orders']:,} orders, {rows['order_items']:,} order "
                f"items), {events:,} events; filled in {sum(fill.values()):.1f} s",
                flush=True,
            )
            night_1 = run_night(RUN_DATE, environment, log, watched)
            changed = shop_fill.change_one_percent(shop_url, RUN_DATE + timedelta(days=1))
            new_events = fill_events(shop_url, customers, RUN_DATE + timedelta(days=1), 1, args.events_per_customer_day)
            print(f"night 2: {sum(changed.values()):,} rows changed, {new_events:,} new events", flush=True)
            night_2 = run_night(RUN_DATE + timedelta(days=1), environment, log, watched)
            floor = run_stage(
                __file__,
                {
                    "stage": "floor",
                    "run_date": (RUN_DATE + timedelta(days=1)).isoformat(),
                    "shop_url": shop_url,
                    "crm_url": crm_url,
                    "scratch": str(folder / "floor"),
                },
                environment,
                folder / "floor.log",
            )
            print_nights(night_1, night_2, floor)
    finally:
        if args.keep:
            kept = "the store and its lake go when the store stops" if args.cluster else "the lake in data/lake"
            print(f"  kept: {folder} (logs in nights.log and data/logs; {kept})")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def print_nights(night_1: dict, night_2: dict, floor: dict) -> None:
    tasks = list(dict.fromkeys([*night_1["tasks"], *night_2["tasks"]]))
    print(f"{'task':<18} {'night 1 s':>10} {'night 2 s':>10}")
    for task in tasks:
        print(f"{task:<18} {night_1['tasks'].get(task, 0):>10.1f} {night_2['tasks'].get(task, 0):>10.1f}")
    print(f"{'tasks, summed':<18} {sum(night_1['tasks'].values()):>10.1f} {sum(night_2['tasks'].values()):>10.1f}")
    print(f"{'wall (crm run)':<18} {night_1['wall']:>10.1f} {night_2['wall']:>10.1f}")
    print(f"{'peak MB (tree)':<18} {night_1['peak_mb']:>10} {night_2['peak_mb']:>10}")
    print(f"{'load':<18} {night_1['load']:>10.1f} {night_2['load']:>10.1f}")
    steps = ", ".join(f"{name} {value:.2f}" for name, value in floor["steps"].items())
    print(
        f"floor (no JVM) {floor['seconds']:.1f} s: {steps}; {floor['rows']:,} changed rows, "
        f"{floor['customers']:,} buyers; peak {floor['peak_mb']} MB"
    )
    print(f"night 2 / floor: {night_2['wall'] / floor['seconds']:.0f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000], help="numbers of customers")
    parser.add_argument("--orders-per-customer", type=int, default=8)
    parser.add_argument("--event-days", type=int, default=7, help="days of browsing events before night 1")
    parser.add_argument("--events-per-customer-day", type=float, default=2.0)
    parser.add_argument("--driver-memory", default="6g", help="the night's Spark server heap (local mode: all of Spark)")
    parser.add_argument("--cluster", action="store_true", help="the nights on a standalone cluster, the lake on an object store")
    parser.add_argument("--executor-memory", default="2g", help="with --cluster: each of the two executors' heap")
    parser.add_argument("--tmp", default="/tmp", help="where the database and the lake go (on disk by default)")
    parser.add_argument("--keep", action="store_true", help="keep each size's folder (lake, logs)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    benchmark_main(parser, STAGES, one_size)


if __name__ == "__main__":
    main()
