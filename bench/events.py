"""Benchmark: browsing events from landing files into silver, and the activity features (run by hand).

    .venv/bin/python -m pip install -c constraints.txt -e '.[bench]'
    .venv/bin/python bench/events.py 1000000 10000000 [--days 240] [--driver-memory 3g] [--keep]

Per size (a target number of events) a SQLite shop of `size / EVENTS_PER_CUSTOMER` customers is generated
with its events as NDJSON files, one per day of the last `--days` days (`crm generate-shop --events files`:
about 50 events per active customer-month, 0.5 % re-sent duplicates, anonymous sessions that log in). The
shop tables go to silver first (extract and clean, timed but not the subject). Then each stage runs in a
child process of its own:

1. events, night 1: every file into bronze/events (`jobs.events.ingest`: SHA-256 of each file, Spark's
   JSON reader, one Delta commit) and bronze into silver/events (`jobs.events.apply_batches`: typing and
   the quarantine rules, deduplication by event_id, stitching sessions to logins, visits): the backfill;
2. the same night again (a rerun: every file is its own batch's, re-read and replaced; nothing new lands);
3. night 2: one new day of events (the last day's file again, with new event ids, a day later), as a
   nightly increment at that size: ingest, then MERGE into silver with the sessions it touches;
4. activity: `jobs.features.run` for night 2 (gold/customer_features with the activity columns, and
   gold/customer_activity), and `features.activity.customer_activity` alone (counted, not written).

Seconds are the wall time of the measured call inside the child (stages include starting the JVM, as a
nightly task pays it). Peak MB is the largest resident memory of the child's process tree (Python and the
Spark JVM), sampled every 0.1 s. Load is the mean 1-minute load average during the stage. Spark runs
`CRM_ENV=demo` with `local[2]`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from harness import benchmark_main, clean_night_one, code_version, run_stage

REPO = Path(__file__).resolve().parent.parent
RUN_DATE = date(2026, 11, 26)
#: Events the generator writes per customer over 240 days (measured: 1,232,171 for 5,000 customers).
EVENTS_PER_CUSTOMER_240_DAYS = 246


def _settings():
    from core.config import load_config

    return load_config()


def stage_shop(job: dict) -> dict:
    """Extract and clean the shop tables (the activity features need silver customers and orders)."""
    from jobs import extract

    settings = _settings()
    start = time.perf_counter()
    extract.run(date.fromisoformat(job["run_date"]), settings, "bench-extract-1", full=True)
    extracted = time.perf_counter() - start
    cleaned = clean_night_one(job, settings)
    return {"seconds": extracted + cleaned["seconds"], "rows": cleaned["rows"]}


def stage_events(job: dict) -> dict:
    """One night of `jobs.events`: the bronze ingest and the silver apply timed apart, in one Spark session."""
    from core.lake import Lake
    from core.spark import spark_session
    from jobs import events

    settings = _settings()
    run_date = date.fromisoformat(job["run_date"])
    start = time.perf_counter()
    with spark_session(settings, "bench-events") as spark:
        lake = Lake(spark, settings.lake_dir)
        started = datetime.now(timezone.utc).replace(microsecond=0)
        bronze = events.ingest(lake, settings, run_date, f"bench-events-{run_date}", started)
        ingested = time.perf_counter()
        silver = events.apply_batches(lake, settings, run_date, f"bench-events-{run_date}")
    done = time.perf_counter()
    return {
        "seconds": done - start,
        "ingest_seconds": ingested - start,
        "apply_seconds": done - ingested,
        "rows": bronze["bronze_rows"],
        "files": bronze["files_ingested"],
        "already": bronze["files_already_ingested"],
        "inserted": silver["silver_inserted"],
        "restitched": silver["silver_restitched"],
        "duplicates": silver["duplicates"],
        "quarantined": silver["quarantined"],
    }


def stage_features(job: dict) -> dict:
    """`jobs.features.run` (customer features with activity, and gold/customer_activity), then the activity alone."""
    from pyspark.sql import functions as F

    from core.lake import Lake
    from core.spark import spark_session
    from features.activity import customer_activity
    from features.customer import known_at, purchased_lines, silver_tables
    from jobs import features

    settings = _settings()
    run_date = date.fromisoformat(job["run_date"])
    start = time.perf_counter()
    customers = features.run(run_date, settings, "bench-features")
    written = time.perf_counter()
    with spark_session(settings, "bench-activity") as spark:
        silver = silver_tables(Lake(spark, settings.lake_dir))
        registered = known_at(silver["customers"], run_date).select(F.col("id").alias("customer_id"))
        activity = customer_activity(
            silver["events"],
            registered,
            purchased_lines(silver, run_date, settings.rfm.scored_statuses),
            run_date,
            settings.events.browse_abandonment_days,
            settings.events.top_categories,
        )
        alone = time.perf_counter()
        active = activity.where(F.col("visits_30d") > 0).count()
        events_rows = silver["events"].count()
    return {
        "seconds": written - start,
        "activity_seconds": time.perf_counter() - alone,
        "rows": events_rows,
        "customers": customers,
        "active_customers": active,
    }


STAGES = {"shop": stage_shop, "events": stage_events, "features": stage_features}


def next_day_file(landing: Path, last_day: date) -> tuple[Path, int]:
    """The last day's events again, a day later and with new ids: night 2's file; returns it and its lines."""
    source = landing / f"events-{last_day.isoformat()}.ndjson"
    target = landing / f"events-{(last_day + timedelta(days=1)).isoformat()}.ndjson"
    lines = 0
    with source.open(encoding="utf-8") as read, target.open("w", encoding="utf-8") as write:
        for line in read:
            event = json.loads(line)
            event["event_id"] = f"n2-{event['event_id']}"
            event["session_id"] = f"n2-{event['session_id']}"
            moment = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00")) + timedelta(days=1)
            event["occurred_at"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
            write.write(json.dumps(event) + "\n")
            lines += 1
    old = time.time() - 3600  # settled: the night does not wait for it
    os.utime(target, (old, old))
    return target, lines


def one_size(events_target: int, args) -> None:
    from demo_shop.generate_shop import generate_shop

    customers = max(1, round(events_target * 240 / args.days / EVENTS_PER_CUSTOMER_240_DAYS))
    folder = Path(tempfile.mkdtemp(prefix=f"crm-bench-events-{events_target}-", dir=args.tmp))
    log = folder / "stages.log"
    data = folder / "data"
    landing = data / "landing" / "events"
    try:
        start = time.perf_counter()
        summary = generate_shop(
            f"sqlite:///{folder / 'shop.sqlite'}",
            customers=customers,
            seed=42,
            end_date=RUN_DATE,
            truth_dir=folder / "truth",
            events="files",
            events_days=args.days,
            landing_dir=landing,
        )
        generated = time.perf_counter() - start
        for path in landing.iterdir():  # generated a moment ago: settled for the benchmark's nights
            os.utime(path, (time.time() - 3600,) * 2)
        written = summary["events"]
        size = sum(path.stat().st_size for path in landing.iterdir())
        print(
            f"\n{written['written']:,} events of {customers:,} customers over {args.days} days in "
            f"{written['files']} NDJSON files ({size / 2**20:,.0f} MB), generated in {generated:.0f} s; "
            f"{code_version()}"
        )
        environment = {
            **os.environ,
            "CRM_ENV": "demo",
            "CRM_SHOP_URL": f"sqlite:///{folder / 'shop.sqlite'}",
            "CRM_DATA_DIR": str(data),
            "CRM__SPARK__MASTER": "local[2]",
            "CRM__SPARK__DRIVER_MEMORY": args.driver_memory,
            "CRM__EVENTS__SETTLE_SECONDS": "0",
        }
        night_1 = {"folder": str(folder), "run_date": RUN_DATE.isoformat()}
        night_2 = {**night_1, "run_date": (RUN_DATE + timedelta(days=1)).isoformat()}
        print(f"{'stage':<46} {'seconds':>8} {'rows':>11} {'rows/s':>9} {'peak MB':>8} {'load':>5}", flush=True)
        print_row("shop tables -> silver (extract, clean)", run_stage(__file__, {**night_1, "stage": "shop"}, environment, log))
        first = run_stage(__file__, {**night_1, "stage": "events"}, environment, log)
        print_events("events night 1, files -> bronze -> silver", first)
        again = run_stage(__file__, {**night_1, "stage": "events"}, environment, log)
        print_events("events night 1 rerun (nothing new lands)", again)
        _, lines = next_day_file(landing, RUN_DATE)
        second = run_stage(__file__, {**night_2, "stage": "events"}, environment, log)
        print_events(f"events night 2, one new day ({lines:,} events)", second)
        result = run_stage(__file__, {**night_2, "stage": "features"}, environment, log)
        print_row("features night 2 (customer features + activity)", result)
        print(
            f"  {result['customers']:,} customers, {result['active_customers']:,} with a visit in 30 days; "
            f"customer_activity alone (counted, not written): {result['activity_seconds']:.1f} s",
            flush=True,
        )
    finally:
        if args.keep:
            print(f"  kept: {folder} (lake in data/lake, files in data/landing/events, stage logs in stages.log)")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def print_row(title: str, result: dict) -> None:
    print(
        f"{title:<46} {result['seconds']:>8.1f} {result['rows']:>11,} "
        f"{round(result['rows'] / max(result['seconds'], 1e-9)):>9,} {result['peak_mb']:>8} {result['load']:>5.1f}",
        flush=True,
    )


def print_events(title: str, result: dict) -> None:
    print_row(title, result)
    print(
        f"  bronze {result['ingest_seconds']:.1f} s ({result['files']} files read, {result['already']} already), "
        f"silver {result['apply_seconds']:.1f} s: {result['inserted']:,} new, {result['duplicates']:,} duplicates, "
        f"{result['restitched']:,} restitched, {result['quarantined']:,} quarantined",
        flush=True,
    )


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int, default=[1_000_000, 10_000_000], help="numbers of events")
    parser.add_argument("--days", type=int, default=240, help="days of events (the generator's events_days)")
    parser.add_argument("--driver-memory", default="3g", help="Spark driver heap (local mode: all of Spark)")
    parser.add_argument("--tmp", default="/tmp", help="where the shop, the files and the lake go")
    parser.add_argument("--keep", action="store_true", help="keep each size's folder")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    benchmark_main(parser, STAGES, one_size)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
