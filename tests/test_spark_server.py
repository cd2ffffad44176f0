"""The night's Spark server (core/spark_server.py): one warm Spark that the night's tasks connect to.

These tests start a real server (a JVM with Spark Connect) in its own data root, as the DAG's `spark_up` does,
and talk to it from client processes, as tasks do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO


@pytest.fixture
def server_settings(tmp_path, monkeypatch):
    from core.config import load_config

    monkeypatch.setenv("CRM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CRM__SPARK__REMOTE", raising=False)  # the session's shared server: not the one tested here
    settings = load_config()
    yield settings
    from core import spark_server

    spark_server.stop(settings)


CLIENT = """
import sys
from datetime import date
from core.config import load_config
from core.lake import Lake
from core.spark import night_task, spark_session, is_connect
from pyspark.sql import functions as F

settings = load_config()
with night_task(), spark_session(settings, "client") as spark:
    assert is_connect(spark), type(spark)
    lake = Lake(spark, settings.lake_dir)
    rows = spark.createDataFrame([(1, "a"), (2, "b")], "id long, name string").withColumn("as_of", F.lit(date(2026, 11, 26)))
    lake.replace_partition(rows.withColumn("label", F.concat(F.col("name"), F.lit("!")).cast("string")), "gold", "t",
                           {"as_of": date(2026, 11, 26)})
    changed = spark.createDataFrame([(2, "B"), (3, "c")], "id long, name string").withColumn("as_of", F.lit(date(2026, 11, 26)))
    print(lake.merge(changed.withColumn("label", F.col("name")), "gold", "t", ["id"]))
"""


def run_client(settings, code: str = CLIENT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CRM_DATA_DIR": str(settings.data_dir)},
    )


def test_tasks_share_one_server_that_writes_a_lake_every_reader_understands(server_settings):
    """Two client processes use the same server (one JVM for both); what they write is plain Delta that
    delta-rs reads (no `string collate UTF8_BINARY` from Spark Connect's client in the schema)."""
    from deltalake import DeltaTable

    from core import spark_server

    url = spark_server.start(server_settings, wait=True)
    pid = spark_server.read_state(server_settings).pid
    first = run_client(server_settings)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "'inserted': 1, 'updated': 1, 'deleted': 0" in first.stdout
    # A second task (a rerun) reaches the same server and does the same.
    second = run_client(server_settings)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout == first.stdout
    assert spark_server.ensure_running(server_settings) == url
    assert spark_server.read_state(server_settings).pid == pid
    # The clients started no JVM of their own: Spark's start-up lines are in the server's log only.
    assert "log4j" not in first.stderr + second.stderr

    table = DeltaTable(str(server_settings.lake_dir / "gold" / "t"))
    types = {field.name: str(field.type) for field in table.schema().fields}
    assert "collate" not in json.dumps(types)
    rows = sorted(table.to_pyarrow_table().select(["id", "name", "label"]).to_pylist(), key=lambda row: row["id"])
    assert rows == [{"id": 1, "name": "a", "label": "a!"}, {"id": 2, "name": "B", "label": "B"}, {"id": 3, "name": "c", "label": "c"}]

    # The server's catalog folder is under the data root (not spark-warehouse/ in its working directory).
    assert (server_settings.data_dir / "spark" / "warehouse").is_dir()

    assert spark_server.stop(server_settings) is True
    assert spark_server.running_url(server_settings) is None
    assert not spark_server.state_path(server_settings).exists()
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]


LOCAL_JOB = """
from datetime import date
from core.config import load_config
from core.lake import Lake
from core.spark import spark_session, is_connect
from pyspark.sql import functions as F

settings = load_config()
with spark_session(settings, "local") as spark:
    assert not is_connect(spark), type(spark)
    lake = Lake(spark, settings.lake_dir)
    rows = spark.createDataFrame([(1, "a")], "id long, name string").withColumn("as_of", F.lit(date(2026, 11, 26)))
    lake.replace_partition(rows, "gold", "t", {"as_of": date(2026, 11, 26)})
    print(lake.merge(rows.withColumn("name", F.lit("b")), "gold", "t", ["id"]))
"""


def test_a_local_spark_leaves_no_spark_warehouse_or_derby_log_in_the_working_directory(server_settings, tmp_path):
    """A job with a Spark of its own (no night server up), run from some folder: a MERGE makes Spark create its
    catalog folder, which goes under the data root, not into the folder the job was started from."""
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    # Not a Spark Connect client: a Connect session made earlier in this process marks the environment as one.
    environment = {
        key: value for key, value in os.environ.items() if key not in {"CRM__SPARK__REMOTE", "SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED"}
    }
    result = subprocess.run(
        [sys.executable, "-c", LOCAL_JOB],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**environment, "CRM_DATA_DIR": str(server_settings.data_dir), "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'updated': 1" in result.stdout
    assert sorted(path.name for path in cwd.iterdir()) == []
    assert (server_settings.data_dir / "spark" / "warehouse").is_dir()


def test_only_a_client_with_the_servers_token_may_use_it(server_settings):
    """Anyone on the machine can reach 127.0.0.1: the server answers only to the token in its 0600 state file."""
    from core import spark_server

    url = spark_server.start(server_settings, wait=True)
    assert oct(spark_server.state_path(server_settings).stat().st_mode & 0o777) == "0o600"
    without_token = url.split("/;token=")[0]
    code = (
        f"from pyspark.sql import SparkSession\n"
        f"spark = SparkSession.builder.remote({without_token!r}).create()\n"
        f"print(spark.range(3).count())\n"
    )
    refused = run_client(server_settings, code)
    assert refused.returncode != 0
    assert "UNAUTHENTICATED" in refused.stderr or "token" in refused.stderr.lower(), refused.stderr[-2000:]


def test_a_server_started_with_other_settings_is_replaced_and_a_dead_one_is_not_used(server_settings, monkeypatch):
    from core import spark_server
    from core.config import load_config

    spark_server.start(server_settings, wait=False)
    first = spark_server.read_state(server_settings)
    monkeypatch.setenv("CRM__SPARK__SHUFFLE_PARTITIONS", "3")
    changed = load_config()
    assert spark_server.running_url(changed) is None  # not the settings this configuration asks for
    spark_server.start(changed, wait=True)
    second = spark_server.read_state(changed)
    assert second.pid != first.pid and second.settings_digest != first.settings_digest
    os.kill(second.pid, 9)  # killed: its state file stays behind, and must not be trusted
    deadline = time.monotonic() + 30
    while spark_server.running_url(changed) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert spark_server.running_url(changed) is None


def test_a_server_is_the_same_whether_its_jars_were_resolved_by_ivy_or_named_from_the_cache(tmp_path, monkeypatch):
    """The first start resolves the packages with Ivy and notes the jars; the next names the jars. The
    configuration is the same, so a task must not replace the night's server for that."""
    from core import spark_server
    from core.config import load_config
    from core.spark_local import _classpath_file, spark_settings

    monkeypatch.setenv("CRM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CRM__SPARK__JARS_DIR", str(tmp_path / "ivy"))
    settings = load_config()
    resolving = spark_server.settings_digest(settings)
    assert "spark.jars.packages" in spark_settings(settings, "x")
    jar = tmp_path / "ivy" / "jars" / "delta.jar"
    jar.parent.mkdir(parents=True)
    jar.write_text("")
    _classpath_file(settings.spark.packages, settings.spark.jars_dir).write_text(f"file://{jar}")
    assert spark_settings(settings, "x")["spark.jars"] == f"file://{jar}"
    assert spark_server.settings_digest(settings) == resolving
    monkeypatch.setenv("CRM__SPARK__DRIVER_MEMORY", "5g")
    assert spark_server.settings_digest(load_config()) != resolving
