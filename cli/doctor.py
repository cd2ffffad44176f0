"""`crm doctor`: is this machine ready to run the pipeline? Each check says ok or what is wrong and what to do.

Checks, in the order a night needs them: the configuration loads; the data root is writable (or can be
created) and whether a night holds it now; every campaign file holds only allowed fields and expressions
(as `crm campaigns check`); the shop and CRM databases answer; Java 17+ runs (not needed
when `spark.remote` names a Spark Connect server: then that server answers); Spark starts in local mode
with the Delta Lake jars (from the project's Ivy folder, offline once fetched) and writes and reads a Delta
table; Airflow's home (its metadata database is created by the first night) and the project's DAGs; the
MLflow store opens (a tracking server answers); the data root has `MIN_FREE_GB` free and others cannot
enter it (a warning, not a failure: the pipeline never changes the modes of a folder it did not create).
`--quick` leaves out the Spark round trip (about 15 s). Checking creates nothing.

`night_preflight` is the part `crm run`, `crm demo` and `crm train` check before they start a night, so a
night that cannot publish or start Spark fails in a second with one message instead of after its tasks.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from sqlalchemy import text
from sqlalchemy.engine import make_url

from cli.orchestrate import DAGS_FOLDER
from core import db, migrate, nightlock
from core.config import ConfigError, Settings, load_config
from core.crm_schema import schema_of
from core.db import document_database, document_error, is_document_shop, masked
from core.private import shared_with_others
from core.spark import connect_url, spark_session
from core.spark_local import JavaMissingError, find_java

#: Free space below which the data root is reported as too full (GB): the lake, logs and MLflow store grow
#: there every night, and Spark spills shuffles there.
MIN_FREE_GB = 2.0
#: How long a server may take to accept a connection before it counts as unreachable (seconds).
CONNECT_TIMEOUT_S = 5


class NotReadyError(RuntimeError):
    """Something a night needs is missing; the message says what and what to do."""


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
        ("data root", _data_root),
        ("campaigns", _campaigns),
        ("shop database", lambda s: _document_shop(s.shop.url) if is_document_shop(s.shop.url) else _database(s.shop.url, "shop.url")),
        ("CRM database", _crm_database),
        ("java", _java),
        *([("spark server", _spark_server)] if quick and settings.spark.remote else []),
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


def night_preflight(settings: Settings) -> None:
    """What a night needs that fails only late in it: the CRM database (publish is its last task) and, for a
    local Spark, Java. Raises NotReadyError with what failed and what to do."""
    for name, check in (("CRM database", _crm_database), ("java", _java)):
        try:
            check(settings)
        except Exception as error:
            raise NotReadyError(f"{name}: {_reason(error)}\n(`crm doctor` checks everything a night needs)") from None


def _data_root(settings: Settings) -> str:
    """The data root is a folder this user can write in (or can create), and whether a night holds it."""
    root = Path(settings.data_dir)
    if not root.exists():
        existing = next(parent for parent in root.parents if parent.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            why = "is a file" if not existing.is_dir() else "is not writable by this user"
            raise RuntimeError(f"{root} cannot be created: {existing} {why}; set CRM_DATA_DIR (or data_dir) to a folder you can write")
        return f"{root}: not there yet; the first night creates it"
    try:
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as error:
        raise RuntimeError(
            f"{root} is not writable ({error.strerror}): make it writable by this user or set CRM_DATA_DIR to a folder that is"
        ) from None
    night = nightlock.holder(settings)
    if night is None:
        return f"{root} writable; no night running"
    return f"{root} writable; a night runs now: {nightlock.describe(night)}"


def _crm_database(settings: Settings) -> str:
    url = settings.crm.db_url
    return _database(url, "crm.db_url", created_by_the_pipeline=True, schema=schema_of(url, settings.crm.schema_name))


def _database(url: str, setting: str, created_by_the_pipeline: bool = False, schema: str | None = None) -> str:
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
        variable = "CRM_DB_URL" if setting == "crm.db_url" else "CRM_SHOP_URL"
        raise RuntimeError(
            f"{db.masked(url)}: {_reason(error)}; is the server running, and are host, user and password right ({setting}, env {variable})?"
        ) from None
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


def _campaigns(settings: Settings) -> str:
    # deferred: models.campaigns imports pyspark; a broken install fails this check, not the doctor
    from models.campaigns import check_campaign_files

    folder = settings.conf_dir / settings.campaigns.folder
    good, problems = check_campaign_files(folder)
    if problems:
        raise RuntimeError(f"{len(problems)} bad campaign file(s), the night's campaigns task would stop: " + " | ".join(problems))
    return f"{len(good)} campaign file(s) in {folder} hold only allowed fields and expressions"


def _java(settings: Settings) -> str:
    try:
        java, version = find_java()
    except JavaMissingError as error:
        if settings.spark.remote:
            return f"not needed here: Spark is the Connect server {masked(settings.spark.remote)} (spark.remote); {error}"
        raise
    return f"{java}: {version}"


def _reachable(url: str) -> None:
    """A TCP connection to the URL's host and port opens, or RuntimeError naming the URL (masked)."""
    parsed = urlsplit(url)
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    try:
        socket.create_connection((parsed.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise RuntimeError(f"{masked(url)} does not answer ({error.strerror or error}): is the server running there?") from None


def _spark_server(settings: Settings) -> str:
    _reachable(settings.spark.remote.replace("sc://", "http://", 1).split(";")[0])
    return f"{masked(settings.spark.remote)} accepts connections (spark.remote; the Spark round trip: crm doctor without --quick)"


def _spark(settings: Settings) -> str:
    # deferred: `--quick` skips Spark, and a broken pyspark install fails this check instead of the whole doctor
    from pyspark.sql import functions as F

    from core.lake import ArrowLake, Lake

    started = time.perf_counter()
    url = connect_url(settings)
    if url is None:
        which = "local"
    elif settings.spark.remote:
        which = f"Spark Connect server {db.masked(url)}"
    else:
        which = "the night's Spark server"
    # A scratch table in the lake itself (its folder, or its prefix on the object store): Spark and delta-rs must
    # both reach the lake, and a Spark server reads and writes the lake's file system, not this process's /tmp.
    scratch = settings.lake_location.child(f"_doctor-{uuid.uuid4().hex}")
    try:
        with spark_session(settings, "doctor") as spark:
            lake = Lake(spark, scratch)
            today = datetime.now(timezone.utc).date()
            lake.replace_partition(spark.range(3).withColumn("as_of", F.lit(today)), "gold", "doctor", {"as_of": today})
            rows = lake.read("gold", "doctor").count()
            version = spark.version
        rows_delta_rs = ArrowLake(scratch).read("gold", "doctor").num_rows
    finally:
        scratch.remove()
    if rows_delta_rs != 3:
        raise RuntimeError(f"Spark wrote 3 rows to a Delta table in {scratch} and delta-rs read {rows_delta_rs}")
    if rows != 3:
        raise RuntimeError(f"wrote 3 rows to a Delta table and read {rows}")
    return (
        f"Spark {version} ({which}) with Delta Lake: wrote and read a Delta table in the lake ({settings.lake_location}), "
        f"delta-rs read it too, in {time.perf_counter() - started:.1f} s (jars: {settings.spark.jars_dir})"
    )


def _airflow(settings: Settings) -> str:
    home = Path(settings.airflow.home)
    dags = sorted(path.stem for path in DAGS_FOLDER.glob("*.py"))
    expected = {settings.airflow.dag_id, settings.airflow.training_dag_id}
    missing = expected - set(dags)
    if missing:
        raise RuntimeError(f"DAG file(s) for {sorted(missing)} not found in {DAGS_FOLDER}")
    created = "" if (home / "airflow.db").exists() else " (its metadata database is created by the first night)"
    return f"home {home}{created}, DAGs {', '.join(dags)} in {DAGS_FOLDER}"


def _mlflow(settings: Settings) -> str:
    from mlflow import MlflowClient  # deferred: seconds to import; a broken install fails this check, not the doctor

    uri = settings.mlflow.tracking_uri
    if uri.startswith(("http://", "https://")):
        _reachable(uri)  # MLflow's client retries an unreachable server for minutes
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
