"""What every Airflow task of the DAGs does: find its run date, load the configuration, run its job.

A task body is one call, `run_task(jobs.score.run, context)`, made inside the task (never at DAG import),
so a task is its own unit: it reads the configuration of the process it runs in, opens its own Spark
session (a Connect session of the night's Spark server, see `core/spark_server.py`) and passes data on only
through the lake.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core import alerts, nightlock, runlog, spark_server
from core.config import Settings, load_config
from core.db import masked
from core.private import make_private_dir, private_files
from core.rundate import business_date, run_conf
from core.spark import night_task
from core.tracking_store import open_store


def run_task(job: Callable[..., Any], context: dict[str, Any], *, night: bool = True, holds_root: bool = True, **options: Any) -> Any:
    """Run one job, `job(run_date, settings, run_id, **options)`, as an Airflow task; returns its small,
    JSON-ready summary.

    `night`: the job is one of the nightly DAG's and shares the night's Spark server (started here when
    `spark_up` has not); otherwise (the training DAG) it uses that server when it is up, else a Spark of its
    own. The attempt goes to the run log (`core.runlog`, CRM table `pipeline_runs`): running, then success
    with the summary or failed with the error. The job runs holding the data root (`core.nightlock`): a task
    of another run than the night's that holds it fails at once, naming that night. `holds_root=False`: a job
    that only reads what a night has finished (an export folder) and runs beside the next night.
    """
    logging.getLogger("jobs").setLevel(logging.INFO)
    run_date = business_date(context)
    settings = task_settings()
    make_private_dir(settings.data_dir)  # the scheduler's task process has the umask of whoever started Airflow
    attempt = _attempt(context, run_date)
    holding = nightlock.hold_for_task(settings, attempt.run_id, run_date, attempt.stage) if holds_root else nullcontext()
    with holding, night_task() if night else nullcontext():
        return _recorded(settings, attempt, lambda: job(run_date, settings, context["run_id"], **options))


def _recorded(settings: Settings, attempt: runlog.Attempt, work: Callable[[], Any]) -> Any:
    """Run `work` with its attempt in the run log (running, then success with its JSON-ready result, or
    failed with the error); returns that result. Every task of the DAGs goes through here, so `crm status`
    lists the same tasks as Airflow."""
    started = datetime.now(timezone.utc)
    runlog.record(settings, attempt, "running", started)
    try:
        result = json.loads(json.dumps(finite_or_none(work()), default=str))
    except BaseException as error:  # recorded, then raised as it was (a timeout too)
        runlog.record(settings, attempt, "failed", started, datetime.now(timezone.utc), error=f"{type(error).__name__}: {error}")
        raise
    runlog.record(settings, attempt, "success", started, datetime.now(timezone.utc), summary=result)
    return result


def task_settings() -> Settings:
    """The configuration of a task: `load_config()`, with the shop's URL from the Airflow connection
    `airflow.shop_conn_id` and the CRM database's from `airflow.crm_conn_id` when those connections exist.

    A connection wins over `shop.url`/`crm.db_url` (conf or CRM_SHOP_URL/CRM_DB_URL): where a deployment keeps
    its credentials in Airflow, a variable left in a worker's environment must not point a task elsewhere.
    Each URL's password (and the whole URL) is registered with Airflow's secrets masker, so a task log that
    quotes it shows ***; the task log says which source each URL came from, masked (`core.db.masked`).
    """
    settings = load_config()
    _lake_credentials_from_connection(settings.airflow.lake_conn_id)
    shop_url = _connection_url(settings.airflow.shop_conn_id, "shop")
    crm_url = _connection_url(settings.airflow.crm_conn_id, "CRM database")
    if shop_url is None and crm_url is None:
        return settings
    return settings.model_copy(
        update={
            "shop": settings.shop.model_copy(update={"url": shop_url or settings.shop.url}),
            "crm": settings.crm.model_copy(update={"db_url": crm_url or settings.crm.db_url}),
        }
    )


def _in_airflow_task() -> bool:
    """Whether this process runs a task for Airflow (a scheduler's worker or `dag.test()`): the Task SDK's
    supervisor then answers connection look-ups from the metadata database or the secrets backend."""
    task_runner = sys.modules.get("airflow.sdk.execution_time.task_runner")  # imported by whatever runs a task
    return task_runner is not None and hasattr(task_runner, "SUPERVISOR_COMMS")


#: Airflow connection types whose URL scheme differs from the one `core.db` reads.
_SCHEMES = {"mongo": "mongodb", "postgres": "postgresql"}


def _connection_url(conn_id: str, what: str) -> str | None:
    """The database URL Airflow connection `conn_id` holds, its secrets masked in logs from now on; None when
    `conn_id` is empty or no such connection exists (the environment's URL is used then)."""
    if not conn_id or not (_in_airflow_task() or f"AIRFLOW_CONN_{conn_id.upper()}" in os.environ):
        return None  # outside a task only the environment's connections count: no metadata database opened
    from airflow.sdk import BaseHook  # deferred: only task processes look connections up
    from airflow.sdk.exceptions import AirflowNotFoundException
    from airflow.sdk.log import mask_secret

    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    if connection.conn_type == "sqlite":  # the file's path is the host; Airflow's own URI quotes its slashes away
        url = f"sqlite:///{connection.host}"
    else:
        scheme, _, rest = connection.get_uri().partition("://")
        url = f"{_SCHEMES.get(scheme, scheme)}://{rest}"
    for secret in (connection.password, url):
        if secret:
            mask_secret(secret)
    logging.getLogger(__name__).info("%s: %s from Airflow connection %s", what, masked(url), conn_id)
    return url


def _lake_credentials_from_connection(conn_id: str) -> None:
    """The key pair of the lake's object store from the Airflow connection `conn_id` (type aws: login = access key
    id, password = secret; extra `endpoint_url`, `region_name`), put into this task's environment, the one place
    the lake's credentials are read (`core.lake_location`; a Spark JVM the task starts inherits it). The secret is
    masked in the task's log from now on. Nothing when `conn_id` is empty or no such connection exists."""
    if not conn_id or not (_in_airflow_task() or f"AIRFLOW_CONN_{conn_id.upper()}" in os.environ):
        return
    from airflow.sdk import BaseHook  # deferred: only task processes look connections up
    from airflow.sdk.exceptions import AirflowNotFoundException
    from airflow.sdk.log import mask_secret

    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return
    if not (connection.login and connection.password):
        raise ValueError(f"Airflow connection {conn_id}: expected the lake's access key id as login and its secret as password")
    mask_secret(connection.password)
    extra = connection.extra_dejson
    os.environ.update({"AWS_ACCESS_KEY_ID": connection.login, "AWS_SECRET_ACCESS_KEY": connection.password})
    if extra.get("endpoint_url"):
        os.environ["AWS_ENDPOINT_URL"] = extra["endpoint_url"]
    if extra.get("region_name"):
        os.environ["AWS_REGION"] = extra["region_name"]
    logging.getLogger(__name__).info("lake: object store key pair %s from Airflow connection %s", connection.login, conn_id)


def finite_or_none(value: Any, path: str = "result") -> Any:
    """`value` (a job's summary) with every NaN or infinite number made None, each logged with where it was:
    Airflow refuses NaN in a task's return value (XCom is JSON), and a figure that is not a number is none."""
    if isinstance(value, float) and not math.isfinite(value):  # numpy's float64 is a float too
        logging.getLogger(__name__).warning("%s = %s: not a finite number, returned as null", path, value)
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item, f"{path}[{index}]") for index, item in enumerate(value)]
    return value


def full_reload(context: dict[str, Any]) -> bool:
    """Whether the run asks `extract` to reload every table whole: conf `{"full": true}` (`crm run --full`)."""
    return bool(run_conf(context).get("full"))


def start_night_spark(context: dict[str, Any]) -> str:
    """The DAG's setup task: start the night's Spark server without waiting for it (it boots while `extract`,
    which needs no Spark, runs); says which Spark the night uses. Refused while another night holds the root."""
    settings = task_settings()
    make_private_dir(settings.data_dir)  # the server and its JVM inherit the umask
    attempt = _attempt(context, business_date(context))
    with nightlock.hold_for_task(settings, attempt.run_id, attempt.run_date, attempt.stage):
        return _recorded(settings, attempt, lambda: _start_spark(settings))


def _start_spark(settings: Settings) -> str:
    _create_mlflow_store(settings)
    if settings.spark.remote:
        return f"Spark Connect server {masked(settings.spark.remote)} (spark.remote)"
    if not settings.spark.night_server:
        return "a local Spark per task (spark.night_server is off)"
    return f"night Spark server {masked(spark_server.start(settings, wait=False))}"


def _create_mlflow_store(settings: Settings) -> None:
    """Create a SQLite MLflow store that does not exist yet, before the night's parallel tasks: under a
    scheduler, two tasks creating it at once fail one of them (alembic: "Online migration expected to match
    one row"; seen in tests/test_scheduler.py, healed only by the retry)."""
    uri = settings.mlflow.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        open_store(settings.mlflow)


def stop_night_spark(context: dict[str, Any]) -> str:
    """The DAG's teardown task: stop the night's Spark server (it runs even when a task failed); a run refused
    because another night holds the data root leaves that night's server alone."""
    private_files()
    settings = task_settings()
    attempt = _attempt(context, business_date(context))
    return _recorded(settings, attempt, lambda: _stop_spark(settings, attempt))


def _stop_spark(settings: Settings, attempt: runlog.Attempt) -> str:
    if settings.spark.remote or not settings.spark.night_server:
        return "nothing to stop"
    try:
        with nightlock.hold_for_task(settings, attempt.run_id, attempt.run_date, attempt.stage):
            return "stopped" if spark_server.stop(settings) else "no night Spark server was running"
    except nightlock.NightBusyError as error:
        return f"left running: {error}"


def record_failure(context: dict[str, Any]) -> None:
    """The DAGs' on-failure callback (a task failed with no retry left): a task that failed before or outside
    its job (a timeout, a killed worker, an error loading the configuration) is marked failed in the run log
    too, and the failure goes out as a `task_failed` alert (`core.alerts`: log, and the configured webhook)."""
    private_files()
    try:
        settings = task_settings()
        attempt = _attempt(context, business_date(context))
    except Exception as error:  # the configuration itself may be what failed
        logging.getLogger(__name__).warning("run log: failure of %s not recorded: %s", context.get("run_id"), error)
        return
    exception = context.get("exception")
    error = f"{type(exception).__name__}: {exception}" if exception else "failed (no exception passed to the callback)"
    runlog.record_failure_if_open(settings, attempt, error)
    alerts.send(
        settings,
        {
            "event": "task_failed",
            "dag_id": attempt.dag_id,
            "run_id": attempt.run_id,
            "run_date": attempt.run_date.isoformat(),
            "task_id": attempt.stage,
            "try_number": attempt.try_number,
            "error": error,
        },
    )


def _attempt(context: dict[str, Any], run_date) -> runlog.Attempt:
    ti = context.get("ti") or context.get("task_instance")
    return runlog.Attempt(
        run_id=str(context["run_id"]),
        stage=getattr(ti, "task_id", None) or "?",
        try_number=int(getattr(ti, "try_number", None) or 1),
        dag_id=getattr(ti, "dag_id", None) or "?",
        run_date=run_date,
    )
