"""The lake on an S3-compatible object store (SeaweedFS, started by the session): Spark and delta-rs read what
the other wrote, and two delta-rs writers committing to one table at once lose nothing (docs/scaling-out.md)."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from core.config import load_config
from core.lake import ArrowLake
from core.lake_location import LakeLocation

REPO = Path(__file__).resolve().parent.parent


def _location(store, prefix: str) -> LakeLocation:
    """A lake under its own prefix of the session's bucket, reached with the store's key pair from the environment."""
    return LakeLocation.parse(f"s3a://{store.bucket}/{prefix}", environ=store.environment())


def _orders(first_id: int, count: int, writer: str = "arrow") -> pa.Table:
    return pa.table(
        {
            "order_id": pa.array(range(first_id, first_id + count), pa.int64()),
            "total_amount": pa.array([10.5 * i for i in range(count)], pa.float64()),
            "writer": pa.array([writer] * count, pa.string()),
        }
    )


def test_settings_put_the_lake_on_the_object_store_with_credentials_from_the_environment(object_store, monkeypatch):
    assert load_config("test").lake_location.is_local  # the default: <data_dir>/lake
    for name, value in object_store.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CRM__LAKE__URI", f"s3a://{object_store.bucket}/night")
    location = load_config("test").lake_location
    assert location.spark_uri("gold", "customers") == f"s3a://{object_store.bucket}/night/gold/customers"
    assert location.delta_rs_uri("gold", "customers") == f"s3://{object_store.bucket}/night/gold/customers"
    assert object_store.secret_access_key not in repr(location) + str(location)
    spark = location.spark_settings()
    assert spark["spark.hadoop.fs.s3a.endpoint"] == object_store.endpoint_url
    assert object_store.secret_access_key not in json.dumps(spark)  # the JVM reads the key pair from its environment
    assert location.delta_rs_options()["conditional_put"] == "etag"


def test_a_lake_uri_on_s3_without_a_key_pair_is_refused_naming_the_variables():
    with pytest.raises(ValueError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        LakeLocation.parse("s3a://bucket/lake", environ={})


SPARK_ROUND_TRIP = """
import json
from core.config import load_config
from core.lake import Lake
from core.spark_local import get_spark

settings = load_config()
spark = get_spark(settings, "object-store-test")
lake = Lake(spark, settings.lake_location)
seen = sorted(tuple(row) for row in lake.read("bronze", "orders").select("order_id", "writer").collect())
written = lake.read("bronze", "orders").selectExpr("order_id + 1000 AS order_id", "total_amount * 2 AS total_amount", "'spark' AS writer")
lake.overwrite(written, "silver", "orders")
print("RESULT " + json.dumps({"seen": seen, "tables": lake.tables(), "path": lake.path("silver", "orders")}))
"""


def test_spark_and_delta_rs_read_what_the_other_wrote_on_the_object_store(object_store, tmp_path):
    prefix = f"roundtrip-{uuid.uuid4().hex[:8]}"
    arrow = ArrowLake(_location(object_store, prefix))
    arrow.overwrite(_orders(1, 5), "bronze", "orders")

    environment = {
        # Not a Connect client: pyspark marks this process as one once the session's shared client exists.
        **{key: value for key, value in os.environ.items() if key not in {"SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE"}},
        **object_store.environment(),
        "CRM_ENV": "test",
        "CRM_DATA_DIR": str(tmp_path),
        "CRM__LAKE__URI": f"s3a://{object_store.bucket}/{prefix}",
        "PYTHONPATH": str(REPO),
    }
    result = subprocess.run(
        [sys.executable, "-c", SPARK_ROUND_TRIP], cwd=REPO, env=environment, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])

    assert report["seen"] == [[order_id, "arrow"] for order_id in range(1, 6)]  # Spark read delta-rs' commit
    assert report["path"] == f"s3a://{object_store.bucket}/{prefix}/silver/orders"
    assert sorted(map(tuple, report["tables"])) == [("bronze", "orders"), ("silver", "orders")]
    from_spark = arrow.read("silver", "orders").sort_by("order_id")  # delta-rs read Spark's commit
    assert from_spark.column("order_id").to_pylist() == list(range(1001, 1006))
    assert from_spark.column("writer").to_pylist() == ["spark"] * 5
    assert from_spark.column("total_amount").to_pylist() == [21.0 * i for i in range(5)]
    # Nothing of it is on the local disk: the files are objects in the bucket.
    objects = object_store.filesystem().get_file_info(_selector(f"{object_store.bucket}/{prefix}/silver/orders/_delta_log"))
    assert any(info.path.endswith("00000000000000000000.json") for info in objects)
    assert not (tmp_path / "lake").exists()


def _selector(path: str):
    from pyarrow import fs

    return fs.FileSelector(path, recursive=True)


def test_a_commit_on_a_stale_version_is_refused_by_the_store_not_written_over_the_winner(object_store):
    """Two writers that both read version 0 and both commit version 1: the store's conditional put (If-None-Match)
    lets the first in and refuses the second, which fails (no retries) or commits as version 2 (delta-rs' retry)."""
    location = _location(object_store, f"stale-{uuid.uuid4().hex[:8]}")
    uri, options = location.delta_rs_uri("bronze", "orders"), location.delta_rs_options()
    write_deltalake(uri, _orders(1, 3, "first"), storage_options=options)
    stale = DeltaTable(uri, storage_options=options)  # the loser's snapshot: version 0
    write_deltalake(uri, _orders(10, 3, "winner"), mode="append", storage_options=options)  # version 1

    with pytest.raises(CommitFailedError, match="(?i)version.*(exists|already)|conflict|transaction"):
        write_deltalake(stale, _orders(20, 3, "loser"), mode="append", commit_properties=CommitProperties(max_commit_retries=0))
    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 1
    assert sorted(ArrowLake(location).read("bronze", "orders").column("writer").to_pylist()) == ["first"] * 3 + ["winner"] * 3

    write_deltalake(DeltaTable(uri, storage_options=options, version=0), _orders(30, 3, "retried"), mode="append")  # retries
    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 2
    assert sorted(set(ArrowLake(location).read("bronze", "orders").column("writer").to_pylist())) == ["first", "retried", "winner"]


def _append_many(uri: str, options: dict[str, str], writer: str, commits: int, start, results) -> None:
    """One of the concurrent writers: `commits` appends of 3 rows each, all tagged with the writer and the commit."""
    from deltalake import write_deltalake

    start.wait()
    done = []
    for commit in range(commits):
        rows = pa.table(
            {
                "order_id": pa.array([commit * 10 + i for i in range(3)], pa.int64()),
                "total_amount": pa.array([1.0, 2.0, 3.0], pa.float64()),
                "writer": pa.array([f"{writer}-{commit}"] * 3, pa.string()),
            }
        )
        try:
            write_deltalake(uri, rows, mode="append", storage_options=options)
            done.append(f"{writer}-{commit}")
        except Exception as error:  # the test asserts on what failed and why
            results.put((writer, "failed", f"{type(error).__name__}: {error}"))
    results.put((writer, "committed", done))


def test_two_writers_appending_at_once_lose_no_commit_and_leave_one_log_entry_per_version(object_store):
    location = _location(object_store, f"concurrent-{uuid.uuid4().hex[:8]}")
    uri, options = location.delta_rs_uri("bronze", "orders"), location.delta_rs_options()
    write_deltalake(uri, _orders(0, 0, "none"), storage_options=options)  # version 0: the empty table
    commits = 6
    context = multiprocessing.get_context("spawn")  # delta-rs' runtime does not survive a fork
    start, results = context.Barrier(2), context.Queue()
    writers = [context.Process(target=_append_many, args=(uri, options, name, commits, start, results)) for name in ("a", "b")]
    for process in writers:
        process.start()
    outcomes = [results.get(timeout=300) for _ in writers]
    for process in writers:
        process.join(timeout=60)
        assert process.exitcode == 0

    failures = [outcome for outcome in outcomes if outcome[1] == "failed"]
    assert not failures, failures  # delta-rs retried each refused commit on the next version
    committed = sorted(tag for outcome in outcomes for tag in outcome[2])
    assert committed == sorted(f"{writer}-{commit}" for writer in ("a", "b") for commit in range(commits))

    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 2 * commits  # one log entry per commit, none written over another
    log = object_store.filesystem().get_file_info(_selector(location.arrow_path("bronze", "orders", "_delta_log")))
    versions = sorted(int(Path(info.path).stem) for info in log if info.path.endswith(".json"))
    assert versions == list(range(2 * commits + 1))
    tags = ArrowLake(location).read("bronze", "orders").column("writer").to_pylist()
    assert sorted(set(tags)) == committed and len(tags) == 3 * len(committed)  # every row of every commit, once


def test_an_airflow_connection_gives_a_task_the_lake_key_pair_and_the_lake_is_reached_with_it(object_store, monkeypatch):
    from core.airflow_task import task_settings

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.setenv(name, "wrong")  # a variable left in a worker's environment: the connection wins
    monkeypatch.setenv("CRM__LAKE__URI", f"s3a://{object_store.bucket}/from-connection")
    connection = {
        "conn_type": "aws",
        "login": object_store.access_key_id,
        "password": object_store.secret_access_key,
        "extra": {"endpoint_url": object_store.endpoint_url, "region_name": object_store.region},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CRM_LAKE", json.dumps(connection))

    lake = ArrowLake(task_settings().lake_location)

    lake.overwrite(_orders(1, 2), "bronze", "orders")
    assert lake.read("bronze", "orders").column("order_id").to_pylist() == [1, 2]
    assert os.environ["AWS_ACCESS_KEY_ID"] == object_store.access_key_id  # a Spark JVM the task starts inherits it


def test_spark_checkpoints_go_under_the_lakes_own_prefix_on_the_store_and_the_server_removes_them(object_store, monkeypatch):
    """On a cluster an executor writes a checkpoint (ALS's) and another may read it back, so with the lake on the
    store they go there too, under `_checkpoints/` beside the layers (no reader takes them for a table); the night's
    server removes them when it stops. With the lake in a folder they stay under the data root."""
    from pyarrow import fs

    from core import spark_server
    from core.spark_local import checkpoint_location

    assert spark_server.server_settings(load_config("test"), 0)["spark.checkpoint.dir"] == str(
        load_config("test").data_dir / "spark" / "checkpoints" / spark_server.SERVER_CHECKPOINTS
    )
    for name, value in object_store.environment().items():
        monkeypatch.setenv(name, value)
    prefix = f"checkpoints-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CRM__LAKE__URI", f"s3a://{object_store.bucket}/{prefix}")
    settings = load_config("test")
    assert (
        spark_server.server_settings(settings, 0)["spark.checkpoint.dir"]
        == f"s3a://{object_store.bucket}/{prefix}/_checkpoints/night-server"
    )
    lake = ArrowLake(settings.lake_location)
    lake.overwrite(_orders(1, 2), "gold", "orders")
    checkpoints = checkpoint_location(settings, spark_server.SERVER_CHECKPOINTS)
    store = checkpoints.arrow_filesystem()
    with store.open_output_stream(checkpoints.arrow_path("rdd-12", "part-00000")) as out:
        out.write(b"an RDD's checkpointed partition")
    assert lake.tables() == [("gold", "orders")]

    spark_server._remove_checkpoints(settings)

    listing = store.get_file_info(_selector(f"{object_store.bucket}/{prefix}"))
    # No object left (SeaweedFS may keep the emptied folder itself: a directory entry of its filer, no data).
    assert not [info.path for info in listing if "/_checkpoints/" in info.path and info.type == fs.FileType.File]
    assert lake.read("gold", "orders").num_rows == 2  # the lake itself untouched
