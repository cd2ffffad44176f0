"""Benchmark: `publish` into PostgreSQL, by COPY (as the night does) and by batched INSERTs, beside the floor
(run by hand, never in tests).

    .venv/bin/python bench/publish.py 10000 100000

Per size (number of customers), the rows a night publishes for that many customers, generated per CRM table from
its columns' types: 10 recommendations and 3 category propensities per customer, one row per customer in
customer_profile, customer_segments, customer_scores, customer_activity, a campaign audience row for 9 customers
in 10, one satisfaction row for 6 in 10, one inquiry for 3 in 10; a few rows in the summary tables. A throwaway
PostgreSQL server (tests/dbservers.py) holds one database per stage, migrated before the timing. Stages, each in a
child process:

- `copy`: `jobs.publish.replace_tables`, one transaction, every table by COPY (the night's way);
- `insert`: the same transaction with every table by batched INSERTs of `publish.INSERT_BATCH_ROWS` rows (the way
  before aa70f96, and still MariaDB's and SQLite's);
- `adbc`: the floor: ADBC's bulk ingest (binary COPY) of the same tables, each in its own transaction, into empty
  tables of its own: no one-transaction replacement, no segment history.

Printed: seconds, rows/s and the peak memory of each stage's process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

from harness import benchmark_main, code_version, dbservers, run_stage

RUN_DATE = date(2026, 11, 27)
#: Rows per customer of each CRM table (the rest: SUMMARY_ROWS rows each), as a night at 100k published them.
ROWS_PER_CUSTOMER = {
    "recommendations": 10,
    "category_propensity": 3,
    "customer_profile": 1,
    "customer_segments": 1,
    "customer_scores": 0.87,
    "customer_activity": 1,
    "campaign_audiences": 0.91,
    "customer_satisfaction": 0.59,
    "inquiry_triage": 0.3,
}
SUMMARY_ROWS = 12


def night_rows(customers: int):
    """The CRM tables' rows of a night of `customers` customers: {table: pyarrow Table}, values by column type;
    each key column counts up so that every row is new."""
    import numpy as np
    import pyarrow as pa
    from sqlalchemy import BigInteger, Boolean, Date, DateTime, Float, Integer, Numeric, SmallInteger, String

    from core.crm_schema import crm_metadata

    random = np.random.default_rng(7)
    tables = {}
    for table in crm_metadata("crm").sorted_tables:
        count = int(customers * ROWS_PER_CUSTOMER.get(table.name, 0)) or SUMMARY_ROWS
        keys = [column.name for column in table.primary_key.columns]
        columns = {}
        for column in table.columns:
            kind, position = column.type, keys.index(column.name) if column.name in keys else -1
            if isinstance(kind, (BigInteger, Integer, SmallInteger)):
                # The first key column counts customers, a second one the rows of a customer (a rank).
                per = max(1, round(count / customers))
                values = (
                    np.arange(count) // per + 1
                    if position == 0
                    else np.arange(count) % per + 1
                    if position > 0
                    else random.integers(1, 500, count)
                )
                columns[column.name] = pa.array(values, pa.int64())
            elif isinstance(kind, Float):
                columns[column.name] = pa.array(random.random(count))
            elif isinstance(kind, Numeric):
                columns[column.name] = pa.array(np.round(random.random(count) * 1000, kind.scale or 0)).cast(
                    pa.decimal128(kind.precision or 18, kind.scale or 0), safe=False
                )
            elif isinstance(kind, DateTime):
                columns[column.name] = pa.array(np.full(count, np.datetime64("2026-11-27T12:00:00", "us"))).cast(
                    pa.timestamp("us", tz="UTC")
                )
            elif isinstance(kind, Date):
                columns[column.name] = pa.array([RUN_DATE] * count, pa.date32())
            elif isinstance(kind, Boolean):
                columns[column.name] = pa.array(random.random(count) < 0.5)
            elif isinstance(kind, String):
                length = kind.length or 40
                values = [f"k{row}"[:length] for row in range(count)] if position >= 0 else [column.name[:length]] * count
                columns[column.name] = pa.array(values)
            else:
                raise TypeError(f"{table.name}.{column.name}: no generator for {kind!r}")
        tables[table] = pa.table(columns)
    return tables


def stage_publish(job: dict) -> dict:
    from sqlalchemy import create_engine

    from jobs import publish

    tables = night_rows(job["customers"])
    engine = create_engine(job["url"])
    if job["stage"] == "insert":  # the INSERTs of MariaDB and SQLite, into PostgreSQL
        publish._copy = publish._insert_batches
    start = time.perf_counter()
    counts = publish.replace_tables(engine, next(iter(tables)).metadata, tables, RUN_DATE)
    seconds = time.perf_counter() - start
    engine.dispose()
    return {"seconds": seconds, "rows": sum(table.num_rows for table in tables.values()), "published": sum(counts.values())}


def stage_adbc(job: dict) -> dict:
    import adbc_driver_postgresql.dbapi
    from extract import adbc_uri

    tables = night_rows(job["customers"])
    start = time.perf_counter()
    with adbc_driver_postgresql.dbapi.connect(adbc_uri(job["url"])) as connection, connection.cursor() as cursor:
        for table, data in tables.items():
            cursor.adbc_ingest(f"floor_{table.name}", data, mode="replace")
            connection.commit()
    return {"seconds": time.perf_counter() - start, "rows": sum(table.num_rows for table in tables.values())}


STAGES = {"copy": stage_publish, "insert": stage_publish, "adbc": stage_adbc}


def one_size(customers: int, args: argparse.Namespace) -> None:
    from core import migrate

    folder = Path(tempfile.mkdtemp(prefix=f"crm-bench-publish-{customers}-", dir=args.tmp))
    folder.chmod(0o755)  # the server runs as `postgres` when we are root: it must reach its folder inside ours
    try:
        with dbservers().postgres_server(base_dir=folder / "postgres") as server:
            print(f"\n{customers:,} customers, {code_version()}")
            print(f"{'stage':<8} {'seconds':>8} {'rows':>11} {'rows/s':>10} {'peak MB':>8}")
            for stage in STAGES:
                server.create_database(stage)
                migrate.upgrade(server.url(stage), "crm")
                result = run_stage(
                    __file__, {"stage": stage, "customers": customers, "url": server.url(stage)}, dict(os.environ), folder / "stages.log"
                )
                rate = result["rows"] / result["seconds"]
                print(f"{stage:<8} {result['seconds']:>8.1f} {result['rows']:>11,} {rate:>10,.0f} {result['peak_mb']:>8}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000], help="numbers of customers")
    parser.add_argument("--tmp", default="/tmp", help="where the database goes")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    benchmark_main(parser, STAGES, one_size)


if __name__ == "__main__":
    main()
