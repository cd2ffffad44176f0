"""What every Airflow task of the nightly DAG does: find its run date, load the configuration, run its job.

Called inside the task (never at DAG import), so a task is its own unit: it reads the configuration of the
process it runs in, opens its own Spark session (a Connect session of the night's Spark server, see
`jobs/spark_server.py`) and passes data on only through the lake.
"""
from __future__ import annotations

import importlib
import json
import logging
from contextlib import nullcontext
from datetime import datetime, timezone
from typing import Any

from jobs import runlog, spark_server
from jobs.config import load_config
from jobs.db import masked_uri
from jobs.rundate import business_date
from jobs.spark import night_task

NIGHTLY_JOBS = ("extract", "validate", "clean", "events", "features", "score", "predict", "recommend", "insights", "offers",
                "campaigns", "publish", "export", "report")
#: Every job a task may run: the night's, and the training DAG's.
JOBS = (*NIGHTLY_JOBS, "train")
#: The night in order: (job, its options); `validate` is the quality gate of the layer just written.
NIGHTLY_STEPS: tuple[tuple[str, dict[str, str]], ...] = (
    ("extract", {}), ("validate", {"layer": "bronze"}), ("clean", {}), ("events", {}), ("validate", {"layer": "silver"}),
    ("features", {}), ("score", {}), ("predict", {}), ("recommend", {}), ("insights", {}),
    ("offers", {}), ("campaigns", {}), ("validate", {"layer": "gold"}), ("publish", {}),
    ("export", {}), ("report", {}),
)


def run_job(name: str, context: dict[str, Any], **options: Any) -> Any:
    """Run `jobs.<name>.run(run_date, settings, run_id, **options)`; returns its small, JSON-ready summary.

    The attempt goes to the run log (`jobs.runlog`, CRM table `pipeline_runs`): running, then success with
    the summary or failed with the error.
    """
    if name not in JOBS:
        raise ValueError(f"unknown job {name!r}; expected one of {', '.join(JOBS)}")
    logging.getLogger("jobs").setLevel(logging.INFO)
    run_date = business_date(context)
    settings = load_config()
    job = importlib.import_module(f"jobs.{name}")
    if name == "extract":  # `crm run --full` (conf {"full": true}) reloads every table whole
        dag_run = context.get("dag_run")
        options["full"] = bool(((getattr(dag_run, "conf", None) or {}) if dag_run is not None else {}).get("full"))
    attempt = _attempt(context, run_date)
    started = datetime.now(timezone.utc)
    runlog.record(settings, attempt, "running", started)
    try:
        # The night's jobs share the night's Spark server (started here when `spark_up` has not); the
        # training DAG's one job uses it when it is up, else a Spark of its own.
        with night_task() if name in NIGHTLY_JOBS else nullcontext():
            outcome = job.run(run_date, settings, context["run_id"], **options)
        result = json.loads(json.dumps(outcome, default=str))
    except BaseException as error:  # recorded, then raised as it was (a timeout too)
        runlog.record(settings, attempt, "failed", started, datetime.now(timezone.utc),
                      error=f"{type(error).__name__}: {error}")
        raise
    runlog.record(settings, attempt, "success", started, datetime.now(timezone.utc), summary=result)
    return result


def start_night_spark() -> str:
    """The DAG's setup task: start the night's Spark server without waiting for it (it boots while `extract`,
    which needs no Spark, runs); says which Spark the night uses."""
    settings = load_config()
    if settings.spark.remote:
        return f"Spark Connect server {masked_uri(settings.spark.remote)} (spark.remote)"
    if not settings.spark.night_server:
        return "a local Spark per task (spark.night_server is off)"
    return f"night Spark server {masked_uri(spark_server.start(settings, wait=False))}"


def stop_night_spark() -> str:
    """The DAG's teardown task: stop the night's Spark server (it runs even when a task failed)."""
    settings = load_config()
    if settings.spark.remote or not settings.spark.night_server:
        return "nothing to stop"
    return "stopped" if spark_server.stop(settings) else "no night Spark server was running"


def record_failure(context: dict[str, Any]) -> None:
    """The DAGs' on-failure callback: a task that failed before or outside its job (a timeout, a killed
    worker, an error loading the configuration) is marked failed in the run log too."""
    try:
        settings = load_config()
        attempt = _attempt(context, business_date(context))
    except Exception as error:  # the configuration itself may be what failed
        logging.getLogger(__name__).warning("run log: failure of %s not recorded: %s", context.get("run_id"), error)
        return
    exception = context.get("exception")
    runlog.record_failure_if_open(settings, attempt, f"{type(exception).__name__}: {exception}" if exception
                                  else "failed (no exception passed to the callback)")


def _attempt(context: dict[str, Any], run_date) -> runlog.Attempt:
    ti = context.get("ti") or context.get("task_instance")
    return runlog.Attempt(
        run_id=str(context["run_id"]), stage=getattr(ti, "task_id", None) or "?",
        try_number=int(getattr(ti, "try_number", None) or 1), dag_id=getattr(ti, "dag_id", None) or "?",
        run_date=run_date)
