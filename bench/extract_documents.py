"""Benchmark: extraction from a MongoDB (document) shop into bronze, a full load and a 1 % night (run by hand, never in tests).

    .venv/bin/python -m pip install -c constraints.txt -e '.[bench]'
    .venv/bin/python -m pip install -c constraints.txt pymongoarrow   # optional, for the pymongoarrow reference
    .venv/bin/python bench/extract_documents.py 10000 100000 [--tmp /tmp] [--driver-memory 3g] [--keep]

Per size (number of customers) a throwaway FerretDB (`ferretdb_server()` of tests/dbservers.py: the MongoDB
wire protocol over SQLite, its data folder on disk under --tmp, `make ferretdb` builds the binary) gets a
database `shop`, written by `demo_shop.generate_shop.generate_shop` (seed 42, history ending 2026-11-26) as the
documents of conf/mappings/mongodb.yaml: order items, addresses and cart items embedded in their parents.
Then each stage runs in a child process of its own:

1. write: `generate_shop` itself. Its seconds include generating the rows in Python (numpy), not only the
   inserts; documents are those in the database afterwards (`count_documents` per collection), rows the
   canonical rows the generator wrote (an embedded row is a row, not a document);
2. full load: `jobs.extract.run(2026-11-26, settings, "bench-full", full=True)`;
3. references on the same data, the orders collection alone: a plain pymongo cursor (`batch_size =
   shop.fetch_size`, documents counted, nothing converted): what the server and the driver cost; the orders
   and order_items tables through `DocumentShop.rows` into Arrow batches (counted, no Delta write): what
   core/documents.py adds to the cursor; and, when pymongoarrow is installed (it is not a dependency of the
   project), `pymongoarrow.api.find_arrow_all` of orders with the schema inferred (the embedded items
   become a list of structs) and with a flat schema of the orders table's top-level fields as the
   mapping names them. find_arrow_all collects the whole collection into one Arrow table: its peak MB
   grows with the collection, the streamed readers' does not;
4. night 2: `jobs.clean.run` for night 1 first (the incremental extract starts only from tables that silver
   has; Spark, timed, but it is not extraction), then 1 % of the orders and of the customers documents
   change (`_id` % 100 = 42: `updatedAt` 2026-11-27 09:00, an order's `status`, a customer's
   `acceptsMarketing` flipped; rewritten by delete + insert, see `change_one_percent`), then
   `jobs.extract.run(2026-11-27, ...)` as configured (incremental, with the key reconciliation when due:
   with `reconcile_every_days: 1` it is), and a rerun of that date with reconciliation off (a rerun reads
   from the same watermark: the same documents), so the share of the reconciliation shows. A night also
   reads, besides the changed documents, those updated in the last `extract.overlap_minutes` before night
   1's watermark and those dated after the extraction's clock (the generator's `future_timestamp` orders,
   which never move the watermark, so every night reads them again).

What the figures mean. Seconds are the wall time of the measured call inside the child (Python imports
excluded; the clean stage includes starting the JVM). Documents are the documents the reads of the
extract returned (`documents` of `extract.run`), counted once per collection: customers feed both
`customers` and `addresses`, orders both `orders` and `order_items`, carts both `carts` and `cart_items`,
and each of those tables reads its collection again; the documents actually read (every table's reads
summed) are printed under the table and kept in the JSON as `documents_raw`. Not counted as documents:
what the schema check samples (the first 200 per collection) and the key reconciliation's reads of every
`_id` (and every embedded array) of the shop on night 2.
Docs/s is documents per collection over seconds; rows are the rows written to bronze
(`changed` + `deleted`), rows/s rows over seconds. Peak MB is the largest sum of resident memory over the
child's process tree (Python, and the Spark JVM for clean), sampled by this process with psutil every 0.1 s;
the FerretDB server is not in it: its own peak resident memory during the stage (srv MB) and the CPU seconds
it spent in the stage (srv CPU, user + system) are sampled apart, from its process id. Load is the mean
1-minute load average during the stage: the machine may be shared, and a figure taken under load says so.

FerretDB is not MongoDB. FerretDB 1.24 over SQLite pushes no filter down (explain shows a SCAN for
`updatedAt > low` and for `_id` equality alike, although generate_shop creates the `updatedAt` index):
every find, `count_documents` and sort reads the whole collection, and `count_documents` holds it in the
server's memory while it counts. So here an incremental night costs the server about what a full load
does, where a MongoDB would use the index; compare the extract with the cursor reference on the same
server (server CPU and srv MB say how much of a stage was the server), not with MongoDB figures.

Each size's folder (under --tmp) holds results.json (every figure above, per stage), stages.log (the jobs'
per-table progress with times, and the children's errors) and, with --keep, the lake (data/lake), the
generator's truth and nothing of the server (tests/dbservers.py removes its data in any case). Without
--keep only results.json and stages.log are left.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from harness import benchmark_main, clean_night_one, code_version, dbservers, run_stage

REPO = Path(__file__).resolve().parent.parent
RUN_DATE = date(2026, 11, 26)
SEED = 42
#: When night 2's changes happen (naive UTC, as the generator writes its dates).
CHANGED_AT = datetime(2026, 11, 27, 9, 0)
#: Night 2 changes the orders and customers whose `_id` leaves this remainder by 100: 1 % of each.
CHANGED_OFFSET = 42
SAMPLE_INTERVAL_S = 0.1


# --------------------------------------------------------------------------------------------------------
# Stages: each runs in a child process (`--child`) and prints one JSON line
# --------------------------------------------------------------------------------------------------------


def _settings(job: dict):
    """The configuration from the environment; `reconcile: false` turns the nightly key comparison off."""
    from core.config import load_config

    settings = load_config()
    if job.get("reconcile") is False:
        settings = settings.model_copy(update={"extract": settings.extract.model_copy(update={"reconcile_every_days": 0})})
    return settings


def stage_generate(job: dict) -> dict:
    """`generate_shop` into the FerretDB database: the rows written per table."""
    from demo_shop.generate_shop import generate_shop

    start = time.perf_counter()
    summary = generate_shop(job["url"], job["customers"], SEED, RUN_DATE, Path(job["folder"]) / "truth")
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": sum(summary["rows"].values()),
        "table_rows": summary["rows"],
        "not_written": summary.get("not_written", {}),
        "bad_rows": summary.get("bad_rows", {}),
    }


def stage_extract(job: dict) -> dict:
    """One night of `jobs.extract.run`; documents once per collection and as read."""
    from jobs import extract

    settings = _settings(job)
    mapping = extract.source_mapping(settings)
    start = time.perf_counter()
    tables = extract.run(date.fromisoformat(job["run_date"]), settings, job["run_id"], full=job["full"])
    seconds = time.perf_counter() - start
    collections: dict[str, int] = {}
    for name, value in tables.items():
        if "documents" in value:
            source = mapping.tables[name].source
            collections[source] = max(collections.get(source, 0), int(value["documents"]))
    return {
        "seconds": seconds,
        "rows": sum(int(value["changed"]) + int(value["deleted"]) for value in tables.values()),
        "documents": sum(collections.values()),
        "documents_raw": sum(int(value.get("documents", 0)) for value in tables.values()),
        "collections": collections,
        "tables": tables,
        "modes": sorted({str(value["mode"]) for value in tables.values()}),
        "reconciled": any(value.get("reconciled") for value in tables.values()),
    }


def stage_clean(job: dict) -> dict:
    """`jobs.clean.run` for night 1: the incremental extract starts only from tables that silver has."""
    return clean_night_one(job, _settings(job))


def stage_cursor(job: dict) -> dict:
    """The orders collection through a plain pymongo cursor, with the extract's client options: counted only."""
    from core.db import document_database as connect
    from jobs import extract

    settings = _settings(job)
    collection = extract.source_mapping(settings).tables[job["table"]].source
    start = time.perf_counter()
    documents = 0
    with connect(settings.shop.url) as database:
        for _ in database[collection].find({}, batch_size=settings.shop.fetch_size):
            documents += 1
    return {"seconds": time.perf_counter() - start, "documents": documents, "rows": documents}


def stage_documents(job: dict) -> dict:
    """One table through `DocumentShop.rows` into Arrow record batches (as the full load reads it), counted,
    not written: the cursor plus the conversion of core/documents.py. The schema check is timed apart."""
    import pyarrow as pa

    from core.documents import DocumentShop
    from jobs import extract

    settings = _settings(job)
    shop = DocumentShop(settings.shop.url, settings.shop.fetch_size)
    start = time.perf_counter()
    plan = shop.check(extract.source_mapping(settings))
    checked = time.perf_counter() - start
    source = plan[job["table"]]
    read_schema = pa.schema([field for field in extract.bronze_schema(source) if field.name not in extract.BATCH_COLUMNS])
    rows = batches = 0
    start = time.perf_counter()
    scope = shop.scope(source, None, datetime.now(timezone.utc).replace(tzinfo=None))
    for batch in shop.rows(source, None, scope, read_schema):
        rows += batch.num_rows
        batches += 1
    return {
        "seconds": time.perf_counter() - start,
        "rows": rows,
        "batches": batches,
        "documents": shop.documents_read.get(job["table"], 0),
        "check_s": checked,
    }


def stage_pymongoarrow(job: dict) -> dict:
    """The orders collection by `pymongoarrow.api.find_arrow_all` into one Arrow table: schema inferred, or
    flat (the orders table's fields as the mapping names them, as Arrow types)."""
    import pyarrow as pa
    from pymongoarrow.api import Schema, find_arrow_all
    from sqlalchemy import BigInteger, Boolean, Date, DateTime, Integer, Numeric

    from core.db import document_database as connect
    from jobs import extract

    settings = _settings(job)
    source = extract.source_mapping(settings).tables[job["table"]]
    schema = None
    if job["schema"] == "flat":

        def arrow_type(sql_type) -> pa.DataType:
            if isinstance(sql_type, BigInteger):
                return pa.int64()
            if isinstance(sql_type, Integer):
                return pa.int32()
            if isinstance(sql_type, Numeric):
                return pa.float64()
            if isinstance(sql_type, Boolean):
                return pa.bool_()
            if isinstance(sql_type, (DateTime, Date)):
                return pa.timestamp("ms")
            return pa.string()

        schema = Schema({source.source_column(column.name): arrow_type(column.type) for column in source.canonical.columns})
    start = time.perf_counter()
    with connect(settings.shop.url) as database:
        table = find_arrow_all(database[source.source], {}, schema=schema, batch_size=settings.shop.fetch_size)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "documents": table.num_rows,
        "rows": table.num_rows,
        "columns": table.num_columns,
        "arrow_mb": round(table.nbytes / 2**20, 1),
        "schema": ", ".join(f"{field.name}: {field.type}" for field in table.schema)[:400],
    }


STAGES = {
    "generate": stage_generate,
    "extract": stage_extract,
    "clean": stage_clean,
    "cursor": stage_cursor,
    "documents": stage_documents,
    "pymongoarrow": stage_pymongoarrow,
}


# --------------------------------------------------------------------------------------------------------
# The server: its memory and CPU while a stage runs; night 2's changes
# --------------------------------------------------------------------------------------------------------


class ServerWatch:
    """The FerretDB server's peak resident memory (MB) and CPU seconds while the `with` block runs."""

    def __init__(self, pid: int):
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0
        self.cpu_s = 0.0
        self._done = threading.Event()

    def _rss(self) -> int:
        import psutil

        total = 0
        with contextlib.suppress(psutil.NoSuchProcess):
            for member in [self.process, *self.process.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += member.memory_info().rss
        return total

    def _cpu(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def _sample(self) -> None:
        while not self._done.wait(SAMPLE_INTERVAL_S):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> "ServerWatch":
        self._cpu_before = self._cpu()
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._sample, name="ferretdb-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.cpu_s = self._cpu() - self._cpu_before


def staged(server, job: dict, environment: dict[str, str], log: Path, check: bool = True) -> dict:
    """`run_stage` with the server's peak memory and CPU seconds during it added."""
    with ServerWatch(server.pid) as watch:
        result = run_stage(__file__, job, environment, log, check=check)
    if "skipped" not in result:
        result["server_peak_mb"] = round(watch.peak / 2**20)
        result["server_cpu_s"] = round(watch.cpu_s, 1)
    return result


def collection_documents(url: str) -> dict[str, int]:
    from core.db import document_database as connect

    with connect(url) as database:
        return {name: database[name].count_documents({}) for name in sorted(database.list_collection_names())}


def change_one_percent(url: str, at: datetime) -> dict[str, int]:
    """Every 100th order and customer document (`_id` % 100 = CHANGED_OFFSET) changes at `at`: an order's
    status (delivered -> returned, any other -> delivered), a customer's acceptsMarketing flipped. Returns
    documents changed per collection.

    The documents are read, deleted and inserted again changed (same `_id`), not updated in place: FerretDB
    1.24 over SQLite updates each matched document with a scan of the whole collection (~0.13 s a document
    at 12,700 orders), which would take hours at 100,000 customers; a find, a delete_many and an insert_many
    are two scans and one bulk insert. The extract reads documents, not an oplog: it cannot tell the two apart.
    """
    from core.db import document_database as connect

    changes = {
        "orders": lambda document: {"status": "returned" if document.get("status") == "delivered" else "delivered"},
        "customers": lambda document: {"acceptsMarketing": document.get("acceptsMarketing") is not True},
    }
    chosen = {"_id": {"$mod": [100, CHANGED_OFFSET]}}
    changed: dict[str, int] = {}
    with connect(url) as database:
        for collection, change in changes.items():
            documents = list(database[collection].find(chosen))
            for document in documents:
                document.update(change(document), updatedAt=at)
            deleted = database[collection].delete_many(chosen).deleted_count
            if deleted != len(documents):
                raise RuntimeError(f"{collection}: {len(documents)} documents read to change, {deleted} deleted")
            if documents:
                database[collection].insert_many(documents, ordered=False)
            changed[collection] = len(documents)
    return changed


# --------------------------------------------------------------------------------------------------------
# One size
# --------------------------------------------------------------------------------------------------------


def one_size(customers: int, args: argparse.Namespace) -> None:
    """Write a fresh document shop of `customers`, run every stage on it and print its table, row by row."""
    ferretdb_server = dbservers().ferretdb_server
    folder = Path(tempfile.mkdtemp(prefix=f"crm-bench-extract-documents-{customers}-", dir=args.tmp))
    log = folder / "stages.log"
    results: dict = {
        "customers": customers,
        "started": datetime.now().isoformat(timespec="seconds"),
        "code": code_version(),
        "cpus": os.cpu_count(),
        "stages": {},
    }
    stages = results["stages"]

    def record(key: str, title: str, result: dict) -> dict:
        stages[key] = {"title": title, **result}
        print_row(title, result)
        return result

    try:
        with ferretdb_server(base_dir=folder / "ferretdb") as server:
            server.create_database("shop")
            url = server.url("shop")
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
            print(f"\n{customers:,} customers, {results['code']}")
            print(f"FerretDB pid {server.pid} on {url}, data under {server.base_dir}", flush=True)

            generated = staged(server, {**night_1, "stage": "generate", "customers": customers}, environment, log)
            written = collection_documents(url)
            generated["documents"] = sum(written.values())
            generated["collections"] = written
            results["shop"] = {"collections": written, "table_rows": generated["table_rows"], "not_written": generated["not_written"]}
            print("documents per collection: " + ", ".join(f"{name} {count:,}" for name, count in written.items()))
            print(
                "rows per table: "
                + ", ".join(f"{name} {count:,}" for name, count in generated["table_rows"].items())
                + (f"; not written (no parent document): {generated['not_written']}" if generated["not_written"] else "")
            )
            print_header()
            record("write", "write: generate_shop -> FerretDB", generated)

            full = record(
                "full",
                "full load -> bronze (extract)",
                staged(server, {**night_1, "stage": "extract", "run_id": "bench-full", "full": True}, environment, log),
            )
            print_documents(full)
            expected = {name: count for name, count in generated["table_rows"].items()}
            wrote = {name: int(value["changed"]) for name, value in full["tables"].items()}
            if wrote != expected:
                differ = {name: f"{wrote.get(name)}/{expected.get(name)}" for name in expected if wrote.get(name) != expected.get(name)}
                print(f"  warning: bronze rows/generated rows differ: {differ}", flush=True)
            for name, count in full["collections"].items():
                if count != written.get(name):
                    print(f"  warning: collection {name}: {count:,} documents read, {written.get(name, 0):,} in it")

            record(
                "cursor",
                "orders, pymongo cursor, counted (reference)",
                staged(server, {**night_1, "stage": "cursor", "table": "orders"}, environment, log, check=False),
            )
            for table in ("orders", "order_items"):
                result = record(
                    f"documents_{table}",
                    f"{table}, DocumentShop.rows -> Arrow (reference)",
                    staged(server, {**night_1, "stage": "documents", "table": table}, environment, log, check=False),
                )
                if "check_s" in result:
                    print(f"  (its schema check, before: {result['check_s']:.1f} s)", flush=True)
            for schema in ("inferred", "flat"):
                title = f"orders, pymongoarrow {schema} schema (reference)"
                if importlib.util.find_spec("pymongoarrow") is None:
                    record(
                        f"pymongoarrow_{schema}",
                        title,
                        {"skipped": "pymongoarrow is not installed: .venv/bin/python -m pip install -c constraints.txt pymongoarrow"},
                    )
                    continue
                result = record(
                    f"pymongoarrow_{schema}",
                    title,
                    staged(
                        server, {**night_1, "stage": "pymongoarrow", "table": "orders", "schema": schema}, environment, log, check=False
                    ),
                )
                if "arrow_mb" in result:
                    print(f"  {result['columns']} columns, {result['arrow_mb']} MB of Arrow: {result['schema']}", flush=True)

            if args.full_load_only:
                return
            record("clean", "clean night 1 -> silver (not extraction)", staged(server, {**night_1, "stage": "clean"}, environment, log))
            start = time.perf_counter()
            changed = change_one_percent(url, CHANGED_AT)
            results["night_2_changed"] = changed
            print(
                f"  {sum(changed.values()):,} documents changed at {CHANGED_AT} "
                f"({', '.join(f'{name} {count:,}' for name, count in changed.items())}) "
                f"in {time.perf_counter() - start:.1f} s",
                flush=True,
            )
            night = record(
                "night_2",
                "night 2, 1 % changed, as configured",
                staged(server, {**night_2, "stage": "extract", "run_id": "bench-night2", "full": False}, environment, log),
            )
            print_documents(night)
            again = record(
                "night_2_rerun",
                "night 2 rerun, no key reconciliation",
                staged(
                    server,
                    {**night_2, "stage": "extract", "run_id": "bench-night2-rerun", "full": False, "reconcile": False},
                    environment,
                    log,
                ),
            )
            print_documents(again)
    finally:
        results["finished"] = datetime.now().isoformat(timespec="seconds")
        (folder / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        if args.keep:
            print(f"  kept: {folder} (lake in data/lake, results.json, stage logs in stages.log)")
        else:
            for part in ("data", "truth", "ferretdb"):
                shutil.rmtree(folder / part, ignore_errors=True)
            print(f"  results: {folder / 'results.json'} (stage logs in stages.log)")


HEADER = (
    f"{'stage':<52} {'seconds':>8} {'documents':>10} {'docs/s':>8} {'rows':>10} {'rows/s':>8} "
    f"{'peak MB':>7} {'srv MB':>6} {'srv CPU':>7} {'load':>5}"
)


def print_header() -> None:
    print(HEADER)
    print("-" * len(HEADER), flush=True)


def print_row(title: str, result: dict) -> None:
    if "skipped" in result:
        print(f"{title:<52} skipped: {result['skipped']}", flush=True)
        return
    seconds = result["seconds"]
    documents = result.get("documents")
    shown_documents = (
        f"{documents:>10,} {round(documents / seconds) if seconds else 0:>8,}" if documents is not None else f"{'':>10} {'':>8}"
    )
    print(
        f"{title:<52} {seconds:>8.1f} {shown_documents} {result['rows']:>10,} "
        f"{round(result['rows'] / seconds) if seconds else 0:>8,} {result['peak_mb']:>7} "
        f"{result.get('server_peak_mb', ''):>6} {result.get('server_cpu_s', ''):>7} {result['load']:>5.1f}",
        flush=True,
    )


def print_documents(result: dict) -> None:
    """Under an extract row: its modes, documents per collection and as read, rows per table."""
    print(
        f"  modes {'/'.join(result['modes'])}, keys reconciled: {'yes' if result['reconciled'] else 'no'}; "
        f"documents read {result['documents_raw']:,} (each collection once: {result['documents']:,}: "
        + ", ".join(f"{name} {count:,}" for name, count in result["collections"].items())
        + ")",
        flush=True,
    )
    print(
        "  rows: "
        + ", ".join(
            f"{name} {int(value['changed']):,}" + (f"+{int(value['deleted'])} D" if value["deleted"] else "")
            for name, value in result["tables"].items()
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000], help="numbers of customers")
    parser.add_argument("--driver-memory", default="3g", help="Spark driver heap for clean (local mode: all of Spark)")
    parser.add_argument("--tmp", default="/tmp", help="where the FerretDB data, the lake and the results go (on disk by default)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep each size's lake and truth (results.json and "
        "stages.log are kept in any case); the FerretDB data is removed by tests/dbservers.py",
    )
    parser.add_argument(
        "--full-load-only",
        action="store_true",
        help="stop after the full load and its references (no clean, no night 2: on FerretDB a night scans every collection again)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    benchmark_main(parser, STAGES, one_size)


if __name__ == "__main__":
    main()
