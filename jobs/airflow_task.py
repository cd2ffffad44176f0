"""What every Airflow task of the nightly DAG does: find its run date, load the configuration, run its job.

Called inside the task (never at DAG import), so a task is its own unit: it reads the configuration of the
process it runs in, opens its own Spark session and passes data on only through the lake.
"""
from __future__ import annotations

import importlib
import json
import logging
from typing import Any

from jobs.config import load_config
from jobs.rundate import business_date

NIGHTLY_JOBS = ("extract", "validate", "clean", "features", "score", "predict", "publish", "export")
#: Every job a task may run: the night's, and the training DAG's.
JOBS = (*NIGHTLY_JOBS, "train")
#: The night in order: (job, its options); `validate` is the quality gate of the layer just written.
NIGHTLY_STEPS: tuple[tuple[str, dict[str, str]], ...] = (
    ("extract", {}), ("validate", {"layer": "bronze"}), ("clean", {}), ("validate", {"layer": "silver"}),
    ("features", {}), ("score", {}), ("predict", {}), ("validate", {"layer": "gold"}), ("publish", {}), ("export", {}),
)


def run_job(name: str, context: dict[str, Any], **options: Any) -> Any:
    """Run `jobs.<name>.run(run_date, settings, run_id, **options)`; returns its small, JSON-ready summary."""
    if name not in JOBS:
        raise ValueError(f"unknown job {name!r}; expected one of {', '.join(JOBS)}")
    logging.getLogger("jobs").setLevel(logging.INFO)
    run_date = business_date(context)
    settings = load_config()
    job = importlib.import_module(f"jobs.{name}")
    if name == "extract":  # `crm run --full` (conf {"full": true}) reloads every table whole
        dag_run = context.get("dag_run")
        options["full"] = bool(((getattr(dag_run, "conf", None) or {}) if dag_run is not None else {}).get("full"))
    result = job.run(run_date, settings, context["run_id"], **options)
    return json.loads(json.dumps(result, default=str))
