"""The night on a Spark standalone cluster with the lake on the object store (docs/scaling-out.md, "A Spark cluster").

The session starts a SeaweedFS store (tests/objectstore.py) and a master with two workers of one core each
(tests/sparkcluster.py). The same 500-customer SQLite shop as test_nightly's (same seed, date and generator
settings) runs its night with configuration only: `lake.uri` on the store, `spark.master` the cluster's. The night's
Spark Connect server is then the driver of a cluster application; the executors on the workers read and write the
lake through S3A. Its CRM rows and export must be those of test_nightly's SQLite night in local mode, which ran the
same night on a local Spark with the lake in a folder.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine, inspect
from test_nightly import NIGHT_TIMEOUT_S, RUN_DATE, crm_env, crm_rows, generate

from conftest import REPO, night_started_with_the_session, session_environ, session_night
from core.crm_schema import RUN_LOG_TABLE
from core.lake import ArrowLake
from core.lake_location import LakeLocation

pytestmark = pytest.mark.e2e

#: Columns that say which run (or MLflow run) wrote a row: the cluster's night is another run than the local one.
PROVENANCE = ("run_id", "_run_id", "uplift_model_run", "clv_model_run")


@night_started_with_the_session("cluster_night")
def run_the_night_on_the_cluster(tmp_path_factory, object_store, spark_cluster) -> dict:
    """Generate test_nightly's 500-customer SQLite shop and run its night on the cluster, the lake on the store."""
    from core.config import load_config

    base = tmp_path_factory.mktemp("cluster-night")
    prefix = "cluster-night"
    # Spark's event log (the driver's record of every task: which executor ran it, what each query read) shows
    # what the cluster did; the executors' own logs may not (seen here: with the app's jars loaded, SLF4J in an
    # executor can fall back to its no-op logger part way through the night).
    events = base / "spark-events"
    events.mkdir()
    extra = {**load_config("test").spark.extra, "spark.eventLog.enabled": "true", "spark.eventLog.dir": events.as_uri()}
    env = {
        **crm_env(base / "data"),
        **object_store.environment(),
        "CRM__LAKE__URI": f"s3a://{object_store.bucket}/{prefix}",
        "CRM__SPARK__MASTER": spark_cluster.master_url,
        "CRM__SPARK__EXTRA": json.dumps(extra),
    }
    generate(env)
    # Not the session's shared server (a local Spark): the night's own server, started by spark_up, is the driver
    # of an application on the cluster.
    environ = {key: value for key, value in {**session_environ(), **env}.items() if key != "CRM__SPARK__REMOTE"}
    started = time.monotonic()
    result = subprocess.run(
        [str(Path(sys.executable).with_name("crm")), "run", "--date", RUN_DATE.isoformat()],
        env=environ,
        capture_output=True,
        text=True,
        timeout=NIGHT_TIMEOUT_S,
        cwd=REPO,
    )
    seconds = time.monotonic() - started
    (base / "summary.txt").write_text(result.stdout)
    if result.returncode != 0:
        raise AssertionError(f"the night on the cluster exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return {"run": env, "prefix": prefix, "seconds": seconds, "stdout": result.stdout, "event_logs": events}


@pytest.fixture(scope="module")
def cluster_night(request):
    """The night on the cluster (started with the session: tests/conftest.py)."""
    return session_night(request, "cluster_night")


@pytest.fixture(scope="module")
def nightly_runs(request):
    """test_nightly's nights (started with the session when a test here needs them): its SQLite one is the local night."""
    return session_night(request, "nightly_runs")


def crm_tables(run: dict[str, str]) -> list[str]:
    url = run.get("CRM_DB_URL") or f"sqlite:///{run['CRM_DATA_DIR']}/crm.sqlite"
    return sorted(inspect(create_engine(url)).get_table_names())


def without_provenance(rows: list[dict]) -> list[dict]:
    """The rows without the columns naming the run that wrote them, in one order whatever the table's key."""
    kept = [{key: value for key, value in row.items() if key not in PROVENANCE} for row in rows]
    return sorted(kept, key=lambda row: json.dumps(row, sort_keys=True, default=str))


def test_the_night_on_the_cluster_gives_the_crm_rows_of_the_local_night(cluster_night, nightly_runs):
    """Every CRM table, row for row and exactly (run ids aside), as the same shop's night in local mode.

    Exactly, floating-point figures too: the partitioning of every query comes from the configuration
    (`spark.sql.shuffle.partitions`, `spark.default.parallelism`), not from how many executors there are, and with
    it two executors gave the same bits as `local[2]` in each of the three runs here; no tolerance was needed."""
    local, cluster = nightly_runs["sqlite"], cluster_night["run"]
    tables = crm_tables(local)
    assert crm_tables(cluster) == tables
    assert {"customer_segments", "customer_scores", "recommendations", "customer_segment_history"} <= set(tables)
    for table in tables:
        if table == RUN_LOG_TABLE:  # the runs themselves (their ids, start and end times), not customers
            continue
        expected = without_provenance(crm_rows(local, table, "1"))
        assert expected, f"{table} is empty: the comparison proves nothing"
        assert without_provenance(crm_rows(cluster, table, "1")) == expected, table


def _export_rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        return without_provenance(list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))))
    return without_provenance(pq.read_table(path).to_pylist())


def test_the_night_on_the_cluster_exports_the_files_of_the_local_night(cluster_night, nightly_runs):
    """The same export files with the same rows (run ids aside); the manifest the same but for checksums and sizes,
    which cover the run id column."""
    folders = [Path(run["CRM_DATA_DIR"]) / "exports" / RUN_DATE.isoformat() for run in (nightly_runs["sqlite"], cluster_night["run"])]
    manifests = [json.loads((folder / "manifest.json").read_text()) for folder in folders]
    assert sorted(manifests[1]["files"]) == sorted(manifests[0]["files"])
    per_file = lambda manifest: {  # noqa: E731
        name: {key: value for key, value in entry.items() if key not in ("sha256", "bytes")} for name, entry in manifest["files"].items()
    }
    assert per_file(manifests[1]) == per_file(manifests[0])
    compared = 0
    for name in manifests[0]["files"]:
        if name.endswith((".csv", ".parquet")):
            assert _export_rows(folders[1] / name) == _export_rows(folders[0] / name), name
            compared += 1
        else:
            assert (folders[1] / name).read_bytes() == (folders[0] / name).read_bytes(), name
    assert compared >= 12  # six datasets and at least one campaign, each as CSV and Parquet


def spark_events(folder: Path) -> list[dict]:
    """The events of the one Spark application logged in `folder` (the night's server), in Spark 4's layout:
    `eventlog_v2_<app id>/events_<n>_<app id>.zstd`, JSON lines compressed with zstd."""
    import zstandard

    (application,) = folder.glob("eventlog_v2_*")
    parts = sorted(application.glob("events_*"), key=lambda path: int(path.name.split("_")[1]))
    assert parts, f"no event log in {application}"
    lines = []
    for part in parts:
        data = part.read_bytes()
        if part.suffix == ".zstd":
            data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
        lines += data.decode().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_the_cluster_ran_the_night_on_both_workers_reading_nothing_from_the_local_disk(cluster_night, spark_cluster):
    """The night's server was an application of the cluster whose two executors, one on each worker, ran the night's
    tasks, and no query read a local file: everything Spark read came from the store. In local mode there would be
    no application on the master, one executor ("driver") and no executor folder on the workers."""
    state = spark_cluster.state()
    assert state["aliveworkers"] == 2
    (application,) = [app for app in state["completedapps"] + state["activeapps"] if app["name"] == "shop-crm-night"]
    executors_by_worker = {
        work.name: sorted(path.name for path in (work / application["id"]).glob("*")) for work in spark_cluster.work_dirs
    }
    assert sorted(sum(executors_by_worker.values(), [])) == ["0", "1"], executors_by_worker  # one executor per worker

    events = spark_events(cluster_night["event_logs"])
    (start,) = [event for event in events if event["Event"] == "SparkListenerApplicationStart"]
    assert start["App ID"] == application["id"]
    tasks_by_executor: dict[str, int] = {}
    for event in events:
        if event["Event"] == "SparkListenerTaskEnd" and event["Task End Reason"]["Reason"] == "Success":
            executor = event["Task Info"]["Executor ID"]
            tasks_by_executor[executor] = tasks_by_executor.get(executor, 0) + 1
    assert set(tasks_by_executor) == {"0", "1"} and min(tasks_by_executor.values()) > 100, tasks_by_executor
    plans = [event["physicalPlanDescription"] for event in events if event["Event"].endswith("SparkListenerSQLExecutionStart")]
    scans = [line for plan in plans for line in plan.splitlines() if "Location: " in line]
    assert any("s3a://" in line for line in scans)
    assert not [line for line in scans if "file:" in line], "a query read files of the local disk"


def test_nothing_of_the_lake_is_on_the_local_disk_and_the_checkpoints_are_gone(cluster_night, object_store):
    from pyarrow import fs

    data_dir = Path(cluster_night["run"]["CRM_DATA_DIR"])
    assert not (data_dir / "lake").exists()
    assert list(data_dir.rglob("_delta_log")) == []
    root = f"{object_store.bucket}/{cluster_night['prefix']}"
    listing = object_store.filesystem().get_file_info(fs.FileSelector(root, recursive=True))
    assert {info.path[len(root) + 1 :].split("/")[0] for info in listing if info.type == fs.FileType.File} == {"bronze", "silver", "gold"}
    # ALS's checkpoints were on the store (_checkpoints/, beside the layers); the night's server removed them.
    assert not [info.path for info in listing if "/_checkpoints/" in info.path and info.type == fs.FileType.File]


def _delta_table_rows(location: LakeLocation, layer: str, table: str) -> tuple[pa.Schema, list[dict]]:
    """A table as delta-rs and pyarrow read it: the current version's files from the Delta log, each read."""
    from deltalake import DeltaTable

    delta = DeltaTable(location.delta_rs_uri(layer, table), storage_options=location.delta_rs_options())
    assert delta.version() >= 0
    assert "deletionVectors" not in (delta.protocol().reader_features or []), f"{layer}/{table}"
    rows = ArrowLake(location).read(layer, table)
    # The log's own count of each file's rows, against the rows pyarrow read from those files.
    assert rows.num_rows == sum(pa.table(delta.get_add_actions(flatten=True)).column("num_records").to_pylist()), f"{layer}/{table}"
    return rows.schema, rows.to_pylist()


def test_delta_rs_reads_every_table_on_the_store_as_the_local_night_wrote_it(cluster_night, nightly_runs, object_store):
    """The independent reader (delta-rs for the log, pyarrow for the files, no Spark) reads every table the cluster
    wrote to the store: the same tables as the local night's lake, each with its schema and row count, the gold tables
    (which the CRM and the export come from) row for row, run ids aside."""
    store = LakeLocation.parse(f"s3a://{object_store.bucket}/{cluster_night['prefix']}", environ=object_store.environment())
    folder = LakeLocation.parse(Path(nightly_runs["sqlite"]["CRM_DATA_DIR"]) / "lake")
    tables = ArrowLake(store).tables()
    assert tables == ArrowLake(folder).tables()
    assert {layer for layer, _ in tables} == {"bronze", "silver", "gold"}
    for layer, table in tables:
        schema, rows = _delta_table_rows(store, layer, table)
        local_schema, local_rows = _delta_table_rows(folder, layer, table)
        assert schema == local_schema, f"{layer}/{table}"
        assert len(rows) == len(local_rows), f"{layer}/{table}"
        if layer == "gold":
            assert without_provenance(rows) == without_provenance(local_rows), f"{layer}/{table}"
