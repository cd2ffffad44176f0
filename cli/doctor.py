"""`crm doctor`: is this machine ready to run the pipeline? Each check says ok or what is wrong and what to do.

Checks, in the order a night needs them: the configuration loads; the shop and CRM databases answer;
Java runs; Spark starts in local mode with the Delta Lake jars (from the project's Ivy folder, offline once
fetched) and writes and reads a Delta table; Airflow's home has a migrated metadata database and sees the
project's DAGs; the MLflow store opens; the data root has room and others cannot enter it (a warning, not a
failure: the pipeline never changes the modes of a folder it did not create). `--quick` leaves out Spark
(about 15 s).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from sqlalchemy import text
from sqlalchemy.engine import make_url

from cli.orchestrate import DAGS_FOLDER
from core import db, migrate
from core.config import ConfigError, Settings, load_config
from core.crm_schema import schema_of
from core.db import document_database, document_error, is_document_shop, masked
from core.private import shared_with_others
from core.spark import connect_url, spark_session

#: Free space below which the data root is reported as too full.
MIN_FREE_GB = 2.0


@dataclass(frozen=True)
class Check:
    """The outcome of one check: `ok`, and what was found (or what is wrong and how to fix it)."""

    name: str
    ok: bool
    detail: str
    warning: bool = False


class DoctorWarning(Exception):
    """What a check found that the night survives but the user should fix (shown as `warn`, not a failure)."""


def run_checks(quick: bool = False) -> list[Check]:
    """Every check in order; the later ones are skipped when the configuration itself does not load."""
    try:
        settings = load_config()
    except ConfigError as error:
        return [Check("configuration", False, str(error))]
    checks = [Check("configuration", True, f"env {settings.env}, conf {settings.conf_dir}, data {settings.data_dir}")]
    steps: list[tuple[str, Callable[[Settings], str]]] = [
        ("shop database", lambda s: _document_shop(s.shop.url) if is_document_shop(s.shop.url) else _database(s.shop.url)),
        (
            "CRM database",
            lambda s: _database(s.crm.db_url, created_by_the_pipeline=True, schema=schema_of(s.crm.db_url, s.crm.schema_name)),
        ),
        ("java", lambda s: _java()),
        *([] if quick else [("spark + delta", _spark)]),
        ("airflow", _airflow),
        ("mlflow", _mlflow),
        ("disk", _disk),
        ("private files", _private_root),
    ]
    for name, check in steps:
        try:
            checks.append(Check(name, True, check(settings)))
        except DoctorWarning as warning:
            checks.append(Check(name, True, str(warning), warning=True))
        except Exception as error:  # each check reports its own failure and the next still runs
            checks.append(Check(name, False, _reason(error)))
    return checks


def render(checks: list[Check]) -> str:
    width = max(len(check.name) for check in checks)
    lines = [f"{'warn' if check.warning else 'ok ' if check.ok else 'FAIL'} {check.name:<{width}}  {check.detail}" for check in checks]
    failed = sum(not check.ok for check in checks)
    lines.append("all checks passed" if not failed else f"{failed} check(s) failed")
    return "\n".join(lines)


def _reason(error: Exception) -> str:
    """One line: the driver's own message for a database error (not SQLAlchemy's wrapper and link)."""
    message = str(getattr(error, "orig", None) or error).strip()
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _document_shop(url: str) -> str:
    started = time.perf_counter()
    try:
        with document_database(url) as database:
            version = database.client.server_info().get("version", "?")
            collections = len(database.list_collection_names())
    except Exception as error:
        raise RuntimeError(f"{masked(url)}: {document_error(error)}") from None
    return f"{masked(url)} answers (MongoDB protocol {version}, {collections} collections, {1000 * (time.perf_counter() - started):.0f} ms)"


def _database(url: str, created_by_the_pipeline: bool = False, schema: str | None = None) -> str:
    database = make_url(url).database
    if db.kind(url) == "sqlite" and database and not Path(database).exists():  # connecting would create it
        if created_by_the_pipeline:
            return f"{db.masked(url)}: not there yet; the first publish creates it"
        raise RuntimeError(f"{db.masked(url)}: no such SQLite file (a demo shop: `crm generate-shop`)")
    started = time.perf_counter()
    try:
        with db.engine(url).connect() as connection:
            connection.execute(text("SELECT 1"))
            version = connection.dialect.server_version_info
            revision = migrate.current(connection, schema) if created_by_the_pipeline else None
    except Exception as error:
        raise RuntimeError(f"{db.masked(url)}: {_reason(error)}") from None
    shown = ".".join(str(part) for part in version) if version else "?"
    detail = f"{db.masked(url)} answers ({db.kind(url)} {shown}, {1000 * (time.perf_counter() - started):.0f} ms)"
    if created_by_the_pipeline:
        newest = migrate.head()
        detail += (
            f"; schema at the newest revision, {newest}"
            if revision == newest
            else f"; schema at revision {revision or 'none'}, the next publish (or `crm db-upgrade`) migrates it to {newest}"
        )
    return detail


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("no `java` on PATH; Spark needs Java 17 or 21: run `make system` (Debian: default-jre-headless)")
    result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    return f"{java}: {(result.stderr or result.stdout).splitlines()[0]}"


def _spark(settings: Settings) -> str:
    # deferred: `--quick` skips Spark, and a broken pyspark install fails this check instead of the whole doctor
    from pyspark.sql import functions as F

    from core.lake import Lake

    started = time.perf_counter()
    url = connect_url(settings)
    if url is None:
        which = "local"
    elif settings.spark.remote:
        which = f"Spark Connect server {db.masked(url)}"
    else:
        which = "the night's Spark server"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Under the data root: a Spark server reads and writes the lake's file system, not this process's /tmp.
    with tempfile.TemporaryDirectory(prefix="crm-doctor-", dir=settings.data_dir) as folder, spark_session(settings, "doctor") as spark:
        lake = Lake(spark, Path(folder))
        today = datetime.now(timezone.utc).date()
        lake.replace_partition(spark.range(3).withColumn("as_of", F.lit(today)), "gold", "doctor", {"as_of": today})
        rows = lake.read("gold", "doctor").count()
        version = spark.version
    if rows != 3:
        raise RuntimeError(f"wrote 3 rows to a Delta table and read {rows}")
    return (
        f"Spark {version} ({which}) with Delta Lake: wrote and read a Delta table in "
        f"{time.perf_counter() - started:.1f} s (jars: {settings.spark.jars_dir})"
    )


def _airflow(settings: Settings) -> str:
    home = Path(settings.airflow.home)
    if not (home / "airflow.db").exists():
        raise RuntimeError(f"no Airflow metadata database in {home}: it is created by the first `crm run` (or run `make airflow`)")
    dags = sorted(path.stem for path in DAGS_FOLDER.glob("*.py"))
    expected = {settings.airflow.dag_id, settings.airflow.training_dag_id}
    missing = expected - set(dags)
    if missing:
        raise RuntimeError(f"DAG file(s) for {sorted(missing)} not found in {DAGS_FOLDER}")
    return f"home {home}, DAGs {', '.join(dags)} in {DAGS_FOLDER}"


def _mlflow(settings: Settings) -> str:
    from mlflow import MlflowClient  # deferred: seconds to import; a broken install fails this check, not the doctor

    uri = settings.mlflow.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return f"{uri}: not there yet; the first churn training creates it"
    client = MlflowClient(uri, uri)
    models = client.search_registered_models(max_results=10)
    names = ", ".join(model.name for model in models) or "none yet"
    return f"{masked(uri)} opens; registered models: {names}"


def _disk(settings: Settings) -> str:
    root = Path(settings.data_dir)
    existing = next(parent for parent in [root, *root.parents] if parent.exists())
    free = shutil.disk_usage(existing).free / 1e9
    if free < MIN_FREE_GB:
        raise RuntimeError(f"{free:.1f} GB free under {existing}; a night needs at least {MIN_FREE_GB:g} GB")
    return f"{free:.0f} GB free under {existing}"


def _private_root(settings: Settings) -> str:
    root = Path(settings.data_dir)
    shared = shared_with_others(root)
    if shared:
        raise DoctorWarning(
            f"{root} is open to {shared}: others on this machine may read the customers' data under it; close it with: chmod go-rwx {root}"
        )
    if not root.exists():
        return f"{root} does not exist yet; the first command that writes creates it 0700 (files 0600)"
    return f"{root} is yours alone (0700); what the pipeline creates under it is 0700/0600"


if __name__ == "__main__":
    results = run_checks(quick="--quick" in sys.argv)
    print(render(results))
    sys.exit(0 if all(check.ok for check in results) else 1)
