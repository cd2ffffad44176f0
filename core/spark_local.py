"""A classic Spark session in this process, configured from the settings: UTC, ANSI SQL, Delta Lake.

Used by the night's Spark Connect server (`core/spark_server.py`) and, without a server, by a job itself
(`core/spark.py` chooses). The JVM packages (`spark.packages`: Delta Lake) are resolved from Maven Central on
first use and kept in the project's own Ivy folder (`spark.jars_dir`); the resolved jar list is noted
there too, so later starts use the jars directly: no Ivy resolution, no network. To run without network
access, copy a filled `.cache/ivy` folder from a machine that has it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from core.config import Settings
from core.lake_location import LakeLocation

DELTA_SQL_SETTINGS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}

#: Queries run interpreted: no whole-stage code and no generated classes for expressions (`spark.code_generation`).
INTERPRETED_SETTINGS = {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}
#: Queries compiled to JVM code where Spark can (its defaults), whatever a server's defaults are.
COMPILED_SETTINGS = {"spark.sql.codegen.wholeStage": "true", "spark.sql.codegen.factoryMode": "FALLBACK"}

UTC_JVM_OPTIONS = "-Duser.timezone=UTC -Dfile.encoding=UTF-8"

#: The lake's prefix for Spark's checkpoints when the lake is on an object store (`checkpoint_location`).
CHECKPOINTS_PREFIX = "_checkpoints"

#: The oldest Java that Spark 4 runs on (it supports 17 and 21).
MIN_JAVA = 17


class JavaMissingError(RuntimeError):
    """No Java that Spark can start; the message says which was looked for and what to do."""


def find_java() -> tuple[str, str]:
    """The `java` a local Spark starts (JAVA_HOME's, else the PATH's) and its version line, or JavaMissingError."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if java is None or not os.access(java, os.X_OK):
        where = f"JAVA_HOME={home} has no bin/java" if home else "no `java` on PATH (and JAVA_HOME is not set)"
        raise JavaMissingError(
            f"{where}; Spark needs Java {MIN_JAVA} or 21: install it (`make system`, Debian: default-jre-headless) "
            "or set JAVA_HOME to a Java 17+ home"
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    line = ((result.stderr or result.stdout).strip().splitlines() or ["?"])[0]
    found = re.search(r'version "(\d+)(?:\.(\d+))?', line)
    major = (int(found.group(2)) if found.group(1) == "1" else int(found.group(1))) if found else None
    if result.returncode != 0 or major is None or major < MIN_JAVA:
        raise JavaMissingError(f"{java}: {line}; Spark needs Java {MIN_JAVA} or 21: install one and put it first on PATH or in JAVA_HOME")
    return java, line


def spark_settings(settings: Settings, app_name: str) -> dict[str, str]:
    """Every Spark setting of a session for `app_name`, from the configuration."""
    spark = settings.spark
    # Spark's catalog (spark-warehouse/) and Derby's log (derby.log, with a Hive catalog) go under the data root:
    # by default both land in whatever the working directory is.
    catalog = settings.data_dir / "spark"
    jvm_options = f"{UTC_JVM_OPTIONS} -Dderby.system.home={shlex.quote(str(catalog / 'derby'))}"
    values = {
        "spark.app.name": app_name,
        "spark.master": spark.master,
        "spark.driver.memory": spark.driver_memory,
        "spark.sql.shuffle.partitions": str(spark.shuffle_partitions),
        "spark.default.parallelism": str(spark.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": f"{jvm_options} {spark.java_options}".strip(),
        "spark.executor.extraJavaOptions": UTC_JVM_OPTIONS,
        **_jar_settings(spark_packages(settings), spark.jars_dir),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.warehouse.dir": str(catalog / "warehouse"),
        # No `${env:...}`/`${system:...}` expansion in SQL text: an expression would read the environment.
        "spark.sql.variable.substitute": "false",
        "spark.sql.ansi.enabled": "true",
        # delta-rs, DuckDB and Polars read the lake too: keep to features they all understand.
        "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
        # Rebuilding a table's state from its log is small work: more tasks only add overhead.
        "spark.databricks.delta.snapshotPartitions": "1",
        # Every MERGE's source is materialized already (`Lake.merge`: checkpointed or local rows): by default
        # Delta copies such a source (not a Delta scan) once more before it runs.
        "spark.databricks.delta.merge.materializeSource": "none",
        "spark.sql.sources.partitionOverwriteMode": "static",
        # A source's VARCHAR(n) must not become a length constraint on the lake table.
        "spark.sql.legacy.charVarcharAsString": "true",
        # Hadoop's file system sets each file's mode itself, from a umask of its own (022 by default, so the
        # lake's files would be world-readable): the pipeline's private one (core/private.py).
        "spark.hadoop.fs.permissions.umask-mode": "077",
        **DELTA_SQL_SETTINGS,
        # The lake on an object store: the S3A connector's endpoint, addressing, credentials from the environment.
        **settings.lake_location.spark_settings(),
        # `auto`: Spark's default (compiled), unless a job chooses by its input's size (core.spark.code_generation_for).
        **{"on": COMPILED_SETTINGS, "off": INTERPRETED_SETTINGS}.get(spark.code_generation, {}),
    }
    values.update(spark.extra)
    return values


def checkpoint_location(settings: Settings, name: str) -> LakeLocation:
    """Where a Spark application keeps its checkpoints (ALS's lineage), `name` being the application's own folder.

    Executors write a checkpoint and any executor may read it back, so on a cluster it must be storage they all
    reach: with the lake on an object store, the lake's `_checkpoints/` prefix (beside the layers, so no reader of
    the lake takes it for a table); with the lake in a folder, a folder under the data root.
    """
    if settings.lake_location.is_local:
        return LakeLocation(folder=settings.data_dir / "spark" / "checkpoints" / name)
    return settings.lake_location.child(CHECKPOINTS_PREFIX, name)


def spark_packages(settings: Settings) -> list[str]:
    """The JVM packages of a session: the configured ones (Delta Lake), plus S3A when the lake is on an object store."""
    return [*settings.spark.packages, *settings.lake_location.spark_packages()]


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
    from pyspark.sql import SparkSession  # deferred: the DAG files import this module; pyspark is the task's

    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if SparkSession.getActiveSession() is None:
        find_java()  # a clear message instead of pyspark's JAVA_GATEWAY_EXITED
    builder = SparkSession.builder
    for key, value in {**spark_settings(settings, app_name), **(overrides or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    _remember_classpath(session, spark_packages(settings), settings.spark.jars_dir)
    return session
