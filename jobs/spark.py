"""The Spark session every job opens: a Connect client of the night's server, or a local Spark of its own.

- `spark.remote` set: a client of that Spark Connect server (one you run, e.g. on a cluster).
- Else, with `spark.night_server` (the default), a client of the data root's night server
  (`jobs.spark_server`): the DAG's tasks start it when it is not up; other commands use it when it is.
- Else a classic local session in this process: UTC, Delta Lake and the JDBC drivers on board.

The JVM packages (Delta, PostgreSQL, MariaDB and SQLite JDBC drivers) are resolved from Maven Central on
first use and kept in the project's own Ivy folder (`spark.jars_dir`); the resolved jar list is noted
there too, so later starts use the jars directly: no Ivy resolution, no network. To run without network
access, copy a filled `.cache/ivy` folder from a machine that has it.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from jobs.config import Settings

DELTA_SQL_SETTINGS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}

T = TypeVar("T")

UTC_JVM_OPTIONS = "-Duser.timezone=UTC -Dfile.encoding=UTF-8"


def spark_settings(settings: Settings, app_name: str) -> dict[str, str]:
    """Every Spark setting of a session for `app_name`, from the configuration."""
    spark = settings.spark
    values = {
        "spark.app.name": app_name,
        "spark.master": spark.master,
        "spark.driver.memory": spark.driver_memory,
        "spark.sql.shuffle.partitions": str(spark.shuffle_partitions),
        "spark.default.parallelism": str(spark.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": f"{UTC_JVM_OPTIONS} {spark.java_options}".strip(),
        "spark.executor.extraJavaOptions": UTC_JVM_OPTIONS,
        **_jar_settings(spark.packages, spark.jars_dir),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.ansi.enabled": "true",
        # delta-rs, DuckDB and Polars read the lake too: keep to features they all understand.
        "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
        # Rebuilding a table's state from its log is small work: more tasks only add overhead (measured:
        # a 500-row partition rewrite takes 0.9 s with one partition, 1.4 s with two).
        "spark.databricks.delta.snapshotPartitions": "1",
        "spark.sql.sources.partitionOverwriteMode": "static",
        # A source's VARCHAR(n) must not become a length constraint on the lake table.
        "spark.sql.legacy.charVarcharAsString": "true",
        **DELTA_SQL_SETTINGS,
    }
    values.update(spark.extra)
    return values


def _classpath_file(packages: list[str], jars_dir: str) -> Path:
    digest = hashlib.sha256(",".join(packages).encode()).hexdigest()[:16]
    return Path(jars_dir) / f"classpath-{digest}.txt"


def _jar_settings(packages: list[str], jars_dir: str) -> dict[str, str]:
    """The resolved jars when a previous start cached them (no Ivy, no network); else Ivy's settings."""
    cached = _classpath_file(packages, jars_dir)
    if cached.exists():
        jars = cached.read_text().split(",")
        if all(Path(jar.removeprefix("file://")).exists() for jar in jars):
            return {"spark.jars": ",".join(jars)}
    return {"spark.jars.packages": ",".join(packages), "spark.jars.ivy": jars_dir}


def _remember_classpath(session, packages: list[str], jars_dir: str) -> None:
    """After Ivy resolved the packages, note the jar files so the next start skips the resolution."""
    jars = session.sparkContext.getConf().get("spark.jars", "")
    target = _classpath_file(packages, jars_dir)
    if jars and not target.exists():
        temporary = target.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(jars)
        os.replace(temporary, target)


def get_spark(settings: Settings, app_name: str = "shop-crm", overrides: dict[str, str] | None = None):
    """Open (or join) the process's classic local Spark session configured from `settings` (plus `overrides`)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder
    for key, value in {**spark_settings(settings, app_name), **(overrides or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    _remember_classpath(session, settings.spark.packages, settings.spark.jars_dir)
    return session


#: Set while a DAG task runs (`night_task`): its jobs start the night's server when it is not up.
_in_night_task = False


@contextmanager
def night_task() -> Iterator[None]:
    """Within a task of a night: a job's Spark session comes from the night's server, started if needed."""
    global _in_night_task
    previous, _in_night_task = _in_night_task, True
    try:
        yield
    finally:
        _in_night_task = previous


def connect_url(settings: Settings) -> str | None:
    """The Spark Connect server a job should use, or None for a local Spark of its own (see the module doc)."""
    if settings.spark.remote:
        return settings.spark.remote
    if not settings.spark.night_server:
        return None
    from jobs import spark_server

    return spark_server.ensure_running(settings) if _in_night_task else spark_server.running_url(settings)


def is_connect(spark) -> bool:
    """Whether `spark` is a Spark Connect client (no SparkContext in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


@contextmanager
def spark_session(settings: Settings, app_name: str) -> Iterator:
    """A Spark session for one job, closed at the end so the next job starts clean.

    Under the Airflow scheduler every task is its own process; closing here makes `dag.test()`, which
    runs all tasks in one process, behave the same: nothing passes between tasks but the lake. A Connect
    session's cached data lives in the server: it is dropped with the session.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:  # a caller (a test session, a notebook) owns it: use it, leave it open
        yield active
        return
    url = connect_url(settings)
    if url is None:
        session = get_spark(settings, app_name)
        try:
            yield session
        finally:
            session.stop()
        return
    session = SparkSession.builder.remote(url).create()
    session.addTag(f"shop-crm-{app_name}")
    try:
        yield session
    finally:
        try:
            session.catalog.clearCache()
        finally:
            session.stop()


@contextmanager
def checkpoint_dir(spark, folder: str) -> Iterator[None]:
    """Checkpoints (ALS's deep lineage) go to `folder` in a local Spark; a Connect server has its own
    (`spark.checkpoint.dir`, set when the night's server starts)."""
    if not is_connect(spark):
        spark.sparkContext.setCheckpointDir(folder)
    yield


def for_each_table(work: Callable[[str], T], tables: Iterable[str], workers: int = 4) -> dict[str, T]:
    """Run `work(table)` for several tables at once, in threads of this driver; results by table.

    Small tables spend their time waiting (JDBC round trips, Delta commits, job scheduling), not computing,
    so a few at once keep the cores busy. The first failure is raised once every started table has ended.
    """
    from concurrent.futures import ThreadPoolExecutor

    names = list(tables)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(names))), thread_name_prefix="table") as pool:
        futures = {name: pool.submit(work, name) for name in names}
    return {name: future.result() for name, future in futures.items()}
