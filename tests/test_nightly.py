"""The nightly DAG end to end, on small generated shops, the way users and the scheduler run it.

Three runs of the same 500-customer shop (same seed) go at once, each in its own data root:
- SQLite shop, every task in its own process (`airflow tasks test`), as under the scheduler: data passes
  between tasks only through the lake;
- PostgreSQL shop, `crm run --date` (Airflow's dag.test), CRM tables in PostgreSQL schema `crm`;
- MariaDB shop, `crm run --date`, CRM tables in PostgreSQL too.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from conftest import REPO, run_crm

pytestmark = pytest.mark.e2e

CUSTOMERS = 500
SEED = 7
RUN_DATE = date(2026, 11, 26)
TASKS = ("extract", "clean", "features", "score", "publish", "export")


def crm_env(data_dir: Path, shop_url: str | None = None, db_url: str | None = None) -> dict[str, str]:
    env = {"CRM_ENV": "test", "CRM_DATA_DIR": str(data_dir)}
    if shop_url:
        env["CRM_SHOP_URL"] = shop_url
    if db_url:
        env["CRM_DB_URL"] = db_url
    return env


def generate(env: dict[str, str]) -> None:
    run_crm("generate-shop", "--customers", str(CUSTOMERS), "--seed", str(SEED),
            "--end-date", RUN_DATE.isoformat(), env=env)


def run_tasks_in_separate_processes(env: dict[str, str], log: Path) -> None:
    """Each task of the nightly DAG in a process of its own, in DAG order (as the scheduler would)."""
    from jobs.config import load_config
    from jobs.orchestrate import airflow_environment, logical_date_for

    full_env = {**os.environ, **env}
    settings = load_config(environ=full_env)
    airflow_env = {**full_env, **airflow_environment(settings),
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    Path(airflow_env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=airflow_env, stdout=out,
                       stderr=subprocess.STDOUT, check=True, cwd=REPO)
        for task in TASKS:
            result = subprocess.run(
                [sys.executable, "-m", "airflow", "tasks", "test", "crm_nightly", task,
                 logical_date_for(RUN_DATE).isoformat()],
                env=airflow_env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, timeout=900,
            )
            if result.returncode != 0:
                raise AssertionError(f"task {task} failed; see {log}")


@pytest.fixture(scope="module")
def nightly_runs(tmp_path_factory, postgres, mariadb):
    """Run the three nightlies concurrently; returns their data roots and URLs."""
    base = tmp_path_factory.mktemp("nightly")
    postgres.create_database("shop")
    postgres.create_database("crm")
    mariadb.create_database("shop")
    runs = {
        "sqlite": crm_env(base / "sqlite"),
        "postgresql": crm_env(base / "postgresql", postgres.url("shop"), postgres.url("crm")),
        "mariadb": crm_env(base / "mariadb", mariadb.url("shop"), postgres.url("crm")),
    }
    # The PostgreSQL and MariaDB runs share one CRM database: give each its own schema.
    runs["postgresql"]["CRM__CRM__SCHEMA_NAME"] = "crm"
    runs["mariadb"]["CRM__CRM__SCHEMA_NAME"] = "crm_from_mariadb"
    errors: dict[str, BaseException] = {}

    def work(kind: str) -> None:
        try:
            generate(runs[kind])
            if kind == "sqlite":
                run_tasks_in_separate_processes(runs[kind], base / "sqlite-tasks.log")
            else:
                result = run_crm("run", "--date", RUN_DATE.isoformat(), env=runs[kind])
                (base / f"{kind}-summary.txt").write_text(result.stdout)
        except BaseException as error:  # reported below, per run
            errors[kind] = error

    threads = [threading.Thread(target=work, args=(kind,)) for kind in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, "\n\n".join(f"{kind}: {error}" for kind, error in errors.items())
    return {"base": base, **runs}


def truth(run: dict[str, str]) -> dict:
    return json.loads((Path(run["CRM_DATA_DIR"]) / "truth" / "summary.json").read_text())


def crm_segments(run: dict[str, str]) -> list[dict]:
    url = run.get("CRM_DB_URL") or f"sqlite:///{run['CRM_DATA_DIR']}/crm.sqlite"
    table = f"{run['CRM__CRM__SCHEMA_NAME']}.customer_segments" if "CRM__CRM__SCHEMA_NAME" in run else "customer_segments"
    with create_engine(url).connect() as connection:
        rows = connection.execute(text(f"SELECT * FROM {table} ORDER BY customer_id")).mappings().all()
    return [dict(row) for row in rows]


def segment_counts(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["segment"]] = counts.get(row["segment"], 0) + 1
    return counts


def test_every_customer_is_published_with_a_segment_and_the_run_id(nightly_runs):
    rows = crm_segments(nightly_runs["sqlite"])
    assert len(rows) == CUSTOMERS
    assert all(row["segment"] for row in rows)
    assert {row["as_of"] for row in rows} in ({RUN_DATE}, {RUN_DATE.isoformat()})
    assert len({row["run_id"] for row in rows}) == 1
    buyers = [row for row in rows if row["frequency"] > 0]
    assert buyers and all(1 <= row["r_score"] <= 5 and row["rfm_code"] for row in buyers)
    assert all(row["segment"] == "Prospects" for row in rows if row["frequency"] == 0)


def test_the_same_seed_gives_the_same_segments_from_sqlite_postgresql_and_mariadb(nightly_runs):
    sqlite_rows = crm_segments(nightly_runs["sqlite"])
    expected = [(row["customer_id"], row["rfm_code"], row["segment"]) for row in sqlite_rows]
    for kind in ("postgresql", "mariadb"):
        rows = crm_segments(nightly_runs[kind])
        assert segment_counts(rows) == segment_counts(sqlite_rows), kind
        assert [(row["customer_id"], row["rfm_code"], row["segment"]) for row in rows] == expected, kind


def test_every_planted_bad_row_is_quarantined_with_its_rule(nightly_runs, spark):
    from pyspark.sql import functions as F

    from jobs.lake import Lake

    for kind in ("sqlite", "mariadb"):
        run = nightly_runs[kind]
        lake = Lake(spark, Path(run["CRM_DATA_DIR"]) / "lake")
        found: dict[str, dict[str, int]] = {}
        for layer, name in lake.tables():
            if layer == "silver" and name.startswith("_quarantine/"):
                table = name.split("/", 1)[1]
                for row in lake.read(layer, name).where(F.col("run_date") == RUN_DATE).groupBy("rule").count().collect():
                    found.setdefault(table, {})[row["rule"]] = row["count"]
        assert found == truth(run)["bad_rows"], kind


def test_silver_holds_every_good_row_once(nightly_runs, spark):
    from jobs.lake import Lake

    run = nightly_runs["sqlite"]
    lake = Lake(spark, Path(run["CRM_DATA_DIR"]) / "lake")
    facts = truth(run)
    for table, rows in facts["rows"].items():
        bad = sum(facts["bad_rows"].get(table, {}).values())
        silver = lake.read("silver", table)
        assert silver.count() == rows - bad, table
        assert silver.select("id").distinct().count() == rows - bad, table


def test_every_lake_table_counts_the_same_in_spark_and_delta_rs(nightly_runs, spark):
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    from jobs.lake import Lake

    run = nightly_runs["sqlite"]
    lake = Lake(spark, Path(run["CRM_DATA_DIR"]) / "lake")
    tables = lake.tables()
    assert len(tables) == 11 + 11 + 11 + 2  # bronze, silver, quarantine, gold
    for layer, name in tables:
        delta_rs = DeltaTable(lake.path(layer, name))
        # Files of the current snapshot read by pyarrow (delta-rs' own to_pandas can abort at exit).
        rows_by_files = sum(pq.ParquetFile(uri.removeprefix("file://")).metadata.num_rows for uri in delta_rs.file_uris())
        assert rows_by_files == lake.read(layer, name).count(), f"{layer}/{name}"


def test_export_matches_its_manifest_and_latest_points_at_it(nightly_runs):
    exports = Path(nightly_runs["sqlite"]["CRM_DATA_DIR"]) / "exports"
    folder = exports / RUN_DATE.isoformat()
    assert (folder / "_SUCCESS").exists()
    assert (exports / "latest").resolve() == folder.resolve()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["run_date"] == RUN_DATE.isoformat() and manifest["schema_version"]
    entry = manifest["files"]["customer_segments.csv"]
    from jobs.crm_schema import crm_metadata

    assert entry["columns"] == [column.name for column in crm_metadata(None).tables["customer_segments"].columns]
    data = (folder / "customer_segments.csv").read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert data.decode().count("\n") == entry["rows"] + 1 == CUSTOMERS + 1
    assert not [path for path in exports.iterdir() if path.name.startswith(".")]


def test_a_rerun_of_the_same_date_gives_the_same_lake_crm_rows_and_export(nightly_runs, spark):
    """Every job of the night again, for the same date: same rows everywhere, nothing appended twice.

    The jobs run here in the test's own Spark session (the code each Airflow task calls).
    """
    from jobs import airflow_task
    from jobs.config import load_config
    from jobs.lake import Lake

    run = nightly_runs["postgresql"]
    settings = load_config(environ={**os.environ, **run})
    lake = Lake(spark, settings.lake_dir)
    export_file = settings.exports_dir / RUN_DATE.isoformat() / "customer_segments.csv"
    before = {"crm": crm_segments(run), "export": export_file.read_text(),
              "lake": {table: lake.read(*table).count() for table in lake.tables()}}

    for name in airflow_task.NIGHTLY_JOBS:
        __import__(f"jobs.{name}", fromlist=["run"]).run(RUN_DATE, settings, "rerun-1")

    after_crm = crm_segments(run)
    assert {row["run_id"] for row in after_crm} == {"rerun-1"}
    without_run_id = lambda rows: [{k: v for k, v in row.items() if k != "run_id"} for row in rows]  # noqa: E731
    assert without_run_id(after_crm) == without_run_id(before["crm"])
    assert {table: lake.read(*table).count() for table in lake.tables()} == before["lake"]
    strip = lambda text: [line.rsplit(",", 1)[0] for line in text.splitlines()]  # noqa: E731  (last column: run_id)
    assert strip(export_file.read_text()) == strip(before["export"])
