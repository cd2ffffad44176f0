"""MLflow: where runs, metrics, plots and models are kept, and which churn model is the `champion`.

By default a SQLite tracking store under the data root (`<data>/mlflow/mlflow.db`, artifacts beside it);
`mlflow.tracking_uri` (env `CRM__MLFLOW__TRACKING_URI`) points at a tracking server instead. The churn classifier
is registered as `mlflow.churn_model`; its alias `champion` is the version nightly scoring loads, moved
only by a training run whose challenger beats it (`jobs/train.py`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from core.config import MlflowSettings
from core.tracking_store import open_store

log = logging.getLogger(__name__)

CHAMPION = "champion"


def connect(settings: MlflowSettings) -> MlflowClient:
    """Point this process's MLflow at the configured store and experiment; returns a client for the registry."""
    return open_store(settings)


def champion(client: MlflowClient, model_name: str) -> ModelVersion | None:
    """The version of `model_name` with the alias `champion`, or None when there is none yet."""
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


#: How models are stored: cloudpickle, because MLflow's default (skops) cannot hold the project's own
#: estimator class. Loading runs the pickled code, so load only from a store you write yourself.
SERIALIZATION_FORMAT = "cloudpickle"


def load_version(version: ModelVersion):
    """The scikit-learn model of a registered version."""
    return mlflow.sklearn.load_model(f"models:/{version.name}/{version.version}")


def make_champion(client: MlflowClient, version: ModelVersion) -> None:
    client.set_registered_model_alias(version.name, CHAMPION, version.version)
    log.info("%s version %s is now the champion", version.name, version.version)


def version_label(version: ModelVersion) -> str:
    """How a model version is named in score tables: `<name>/<version>`."""
    return f"{version.name}/{version.version}"


#: Tag of the nightly model runs that carry a holdout evaluation (the run summary lists them).
EVALUATION_KIND = "holdout-evaluation"


def log_evaluation(
    model: str,
    run_date,
    pipeline_run_id: str,
    holdout: str,
    metric: str,
    value: float,
    baselines: dict[str, float],
    params: dict | None = None,
    metrics: dict[str, float] | None = None,
    night_figures: dict[str, float] | None = None,
) -> str:
    """Log one model's holdout figure beside its baselines' as an MLflow run; returns the MLflow run id.

    `metric` is the figure compared (higher is better), `holdout` says what it was measured on,
    `baselines` maps what the model is compared with to its figure; `metrics` adds any further figures.
    Metrics are named `model_<metric>` and `baseline<i>_<metric>` (i in the order of `baselines`, named by
    the tag `baseline<i>`). `night_figures` are the figures the job reports in the night's summary, kept
    (tag `night_figures`) for the nights that reuse this evaluation (`evaluate_when_due`); `params` also
    identify what was evaluated (tag `config_digest`). Call after `connect`.
    """
    with mlflow.start_run(run_name=f"{model}-{run_date}") as run:
        mlflow.set_tags(
            {
                "kind": EVALUATION_KIND,
                "model": model,
                "run_date": str(run_date),
                "pipeline_run_id": pipeline_run_id,
                "metric": metric,
                "holdout": holdout,
                "config_digest": config_digest(model, params),
                "night_figures": json.dumps(night_figures or {}, sort_keys=True),
                **{f"baseline{i}": name for i, name in enumerate(baselines)},
            }
        )
        if params:
            mlflow.log_params(params)
        figures = {
            f"model_{metric}": value,
            **{f"baseline{i}_{metric}": figure for i, figure in enumerate(baselines.values())},
            **(metrics or {}),
        }
        # A figure that could not be computed (None, NaN: no customer to average over) is not logged.
        mlflow.log_metrics({name: float(figure) for name, figure in figures.items() if _finite(figure)})
    return run.info.run_id


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def evaluations(settings: MlflowSettings, pipeline_run_id: str) -> list[dict]:
    """The holdout evaluations a pipeline run logged or reused, oldest first: model, holdout, metric, value,
    baselines (name -> value) and `evaluated_on` (the run date of the night that evaluated)."""
    connect(settings)
    runs = mlflow.search_runs(
        filter_string=f"tags.kind = '{EVALUATION_KIND}' and tags.pipeline_run_id = '{pipeline_run_id}'",
        output_format="list",
        order_by=["attributes.start_time ASC"],
    )
    found = []
    for run in runs:
        tags, metrics, metric = run.data.tags, run.data.metrics, run.data.tags["metric"]
        names = [tags[key] for key in sorted(key for key in tags if key.startswith("baseline"))]
        found.append(
            {
                "model": tags["model"],
                "holdout": tags["holdout"],
                "metric": metric,
                "value": metrics[f"model_{metric}"],
                "baselines": {name: metrics[f"baseline{i}_{metric}"] for i, name in enumerate(names)},
                "evaluated_on": tags.get(EVALUATED_ON, tags["run_date"]),
            }
        )
    return found


#: Tags of an evaluation a night reused (`evaluate_when_due`): the MLflow run that evaluated, and its run date.
REUSED_FROM = "reused_from"
EVALUATED_ON = "evaluated_on"


@dataclass(frozen=True)
class Evaluation:
    """A holdout evaluation logged by an earlier night: its MLflow run (tags, params, metrics, as the search
    returned it), run date and summary figures."""

    run: Run
    run_date: date
    night_figures: dict[str, float]


def config_digest(model: str, params: dict | None) -> str:
    """What an evaluation evaluated: the model's name and its parameters (data-derived ones included, e.g.
    the campaigns it learnt from), as a short hash. A change of any of them makes the next night evaluate."""
    canonical = json.dumps({"model": model, "params": params or {}}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def recent_evaluation(model: str, run_date: date, params: dict | None, every_days: int) -> Evaluation | None:
    """The newest evaluation of `model` with these `params` by a night of the last `every_days` days up to
    `run_date` (itself included: a rerun reuses its first run's), or None: an evaluation is due."""
    if every_days <= 0:
        return None
    earliest = run_date - timedelta(days=every_days - 1)
    runs = mlflow.search_runs(
        filter_string=(
            f"tags.kind = '{EVALUATION_KIND}' and tags.model = '{model}' and tags.config_digest = '{config_digest(model, params)}'"
        ),
        output_format="list",
        order_by=["attributes.start_time DESC"],
        max_results=100,
    )
    for run in runs:
        tags = run.data.tags
        evaluated_on = date.fromisoformat(tags["run_date"])
        if REUSED_FROM not in tags and earliest <= evaluated_on <= run_date:
            return Evaluation(run, evaluated_on, json.loads(tags.get("night_figures") or "{}"))
    return None


def reuse_evaluation(found: Evaluation, run_date, pipeline_run_id: str) -> str:
    """Record that the night of `run_date` reports `found` instead of evaluating again: an MLflow run with the
    evaluation's tags and metrics, this night's run date and pipeline run, and `reused_from`/`evaluated_on`
    naming the evaluation; returns its run id."""
    original = found.run
    tags = {key: value for key, value in original.data.tags.items() if not key.startswith("mlflow.")}
    model = tags["model"]
    with mlflow.start_run(run_name=f"{model}-{run_date} (evaluated {found.run_date})") as run:
        mlflow.set_tags(
            tags
            | {
                "run_date": str(run_date),
                "pipeline_run_id": pipeline_run_id,
                REUSED_FROM: original.info.run_id,
                EVALUATED_ON: found.run_date.isoformat(),
            }
        )
        if original.data.params:
            mlflow.log_params(original.data.params)
        mlflow.log_metrics(original.data.metrics)
    return run.info.run_id


def evaluate_when_due(
    model: str,
    run_date: date,
    pipeline_run_id: str,
    params: dict | None,
    every_days: int,
    evaluate: Callable[[], tuple[dict[str, float], str | None]],
) -> tuple[dict[str, float], str | None]:
    """The night's figures of `model` and the MLflow run that holds them: `evaluate()` (which logs with
    `log_evaluation` and returns its night figures and run id, or no run when nothing could be judged) when
    no night of the last `every_days` days evaluated the same model with the same `params`; otherwise that
    evaluation, reused (`reuse_evaluation`) and said so in the log. `every_days` 0: every night evaluates."""
    found = recent_evaluation(model, run_date, params, every_days)
    if found is None:
        return evaluate()
    log.info("%s for %s: the evaluation of %s is reused (mlflow.evaluate_every_days %d)", model, run_date, found.run_date, every_days)
    return found.night_figures, reuse_evaluation(found, run_date, pipeline_run_id)


#: The churn probabilities a training run compares before choosing which one nights publish (`jobs/train.py`).
PUBLICATION_CANDIDATES = ("champion", "bgnbd_no_purchase")
PUBLICATION_METRICS = ("roc_auc", "brier", "ece")


def churn_publication(client: MlflowClient, version_label: str) -> dict | None:
    """Which churn probability nights publish beside champion `version_label` (`<name>/<version>`), and why: the
    tags `published_churn`, `published_churn_reason` of that version, and the holdout figures (ROC-AUC, Brier,
    ECE) of the champion and of BG/NBD from the training run that chose (`published_churn_run`). None for a
    version trained before the choice was made."""
    name, _, number = version_label.rpartition("/")
    tags = client.get_model_version(name, number).tags
    run_id = tags.get("published_churn_run")
    if run_id is None:
        return None
    run = client.get_run(run_id)
    figures = {
        model: {metric: run.data.metrics.get(f"{model}_{metric}", math.nan) for metric in PUBLICATION_METRICS}
        for model in PUBLICATION_CANDIDATES
    }
    return {
        "published": tags.get("published_churn"),
        "reason": tags.get("published_churn_reason", ""),
        "run_id": run_id,
        "holdout_as_of": run.data.params.get("holdout_as_of"),
        "figures": figures,
    }
