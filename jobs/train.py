"""train: churn training snapshots from silver, a challenger trained and logged to MLflow, promoted if it wins.

With h = `churn.horizon_days` and the run date D, two point-in-time snapshots of the customers who had
bought by then: the *training* snapshot at D - 2h and the *holdout* snapshot at D - h, each labelled by
what happened in the h days after it (`features.purchases.with_future_purchases`). The challenger (the
configured algorithm, calibrated) learns on the first and is judged on the second, next to:
- the logistic-regression baseline, trained the same way;
- `1 - P(alive)` of BG/NBD fitted on the holdout snapshot's history (the issue's baseline), and
  BG/NBD's own probability of no purchase within h days.
BG/NBD is fitted on each snapshot's own purchase history, so its two probabilities (`models.churn.BGNBD_INPUTS`)
are point-in-time inputs of the classifiers like the gold features.

Everything goes to one MLflow run: parameters, metrics (`<model>_roc_auc`, `_pr_auc`, `_brier`, `_ece`),
reliability tables (`calibration/<model>.csv`), plots (calibration, cumulative gains, holdout actual vs
predicted purchases) and the challenger with its signature, registered as `mlflow.churn_model`. The
`champion` alias moves to the new version only when it beats the current champion on the same holdout by
`churn.promote_margin` on `churn.promote_metric`; otherwise the champion stays and the version is tagged
with why. `champion_*` are the figures of the champion after that decision, `former_champion_*` those of
the one it replaced.

Then the publication rule: the champion's probability against BG/NBD's own on the same holdout; the
better calibrated (`models.churn.better_calibrated`) is what the nights publish until the next training.
The run and the champion's version are tagged `published_churn` (`classifier` or `bg_nbd`) and
`published_churn_reason` (both figures), the version also `published_churn_run` (this run's id).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta

import mlflow
import numpy as np
import pandas as pd
import sklearn
from mlflow.models import infer_signature
from pyspark.sql import functions as F

from core.config import Settings
from core.lake import Lake
from core.spark import spark_session
from features.customer import customer_features, silver_tables
from features.purchases import PURCHASE_MODEL_INPUTS, purchase_history, with_future_purchases
from models import churn, plots, tracking
from models.lifetime import BetaGeoModel

log = logging.getLogger(__name__)


class TrainingDataError(ValueError):
    """The lake cannot give a usable training set; the message says which date and what is missing."""


@dataclass(frozen=True)
class Snapshot:
    """The buyers at `as_of`: their features, purchase history (days) and what they did in the horizon after."""

    as_of: date
    features: pd.DataFrame  # gold/customer_features columns, index customer_id
    history: pd.DataFrame  # features.purchases.HISTORY_COLUMNS, same index
    outcome: pd.DataFrame  # purchases_in_horizon, is_churned, same index


def run(run_date: date, settings: Settings, run_id: str) -> dict:
    """Train a churn challenger as of `run_date` and promote it if it beats the champion; returns the outcome."""
    with spark_session(settings, "train") as spark:
        return train(Lake(spark, settings.lake_location), run_date, settings, run_id)


def train(lake: Lake, run_date: date, settings: Settings, run_id: str) -> dict:
    horizon = settings.churn.horizon_days
    snapshots = [snapshot(lake, run_date - timedelta(days=days), settings) for days in (2 * horizon, horizon)]
    return train_and_promote(*snapshots, settings, run_date, run_id)


def snapshot(lake: Lake, as_of: date, settings: Settings) -> Snapshot:
    """The point-in-time snapshot of the buyers at `as_of`, labelled by the `churn.horizon_days` after it."""
    statuses = settings.rfm.scored_statuses
    silver = silver_tables(lake)
    buyers = customer_features(silver, as_of, statuses, settings.rfm.monetary_value).where(F.col("purchase_count") > 0)
    labelled = (
        buyers.transform(with_future_purchases, silver["orders"], as_of, settings.churn.horizon_days, statuses)
        .toPandas()
        .set_index("customer_id")
        .sort_index()
    )
    if labelled.empty:
        raise TrainingDataError(
            f"churn training snapshot at {as_of} ({settings.churn.horizon_days}-day horizon): no customer had "
            f"bought by then; training needs purchase history from at least 2 x churn.horizon_days before the run date"
        )
    if labelled["is_churned"].nunique() < 2:
        what = "churned" if labelled["is_churned"].all() else "bought again"
        raise TrainingDataError(
            f"churn training snapshot at {as_of} ({settings.churn.horizon_days}-day horizon): all {len(labelled)} "
            f"buyers {what}, so there is nothing to tell apart; training needs both outcomes"
        )
    outcome = ["purchases_in_horizon", "is_churned"]
    return Snapshot(
        as_of=as_of,
        features=labelled.drop(columns=outcome),
        history=purchase_history_frame(lake, as_of, settings, labelled.index),
        outcome=labelled[outcome],
    )


def purchase_history_frame(lake: Lake, as_of: date, settings: Settings, customers: pd.Index) -> pd.DataFrame:
    """The BG/NBD purchase history at `as_of` of `customers` (`features.purchases.HISTORY_COLUMNS`, in days)."""
    frame = (
        purchase_history(lake.read("silver", "orders"), as_of, settings.rfm.scored_statuses, settings.rfm.monetary_value)
        .toPandas()
        .set_index("customer_id")
    )
    return frame.reindex(customers)


def train_and_promote(training: Snapshot, holdout: Snapshot, settings: Settings, run_date: date, run_id: str) -> dict:
    """Fit challenger and baselines on `training`, judge them on `holdout`, log to MLflow, move the alias."""
    options = settings.churn
    client = tracking.connect(settings.mlflow)
    y_train, y_holdout = training.outcome["is_churned"], holdout.outcome["is_churned"]
    train_features, _ = with_purchase_model_inputs(training, options.horizon_days)
    holdout_features, beta_geo = with_purchase_model_inputs(holdout, options.horizon_days)
    holdout = replace(holdout, features=holdout_features)
    challenger = churn.ChurnClassifier(options.features, options.model, options.calibration, options.seed)
    challenger.fit(train_features, y_train)
    baseline = churn.ChurnClassifier(options.features, "logistic_regression", options.calibration, options.seed)
    baseline.fit(train_features, y_train)

    history = holdout.history
    args = tuple(history[column].to_numpy() for column in PURCHASE_MODEL_INPUTS)
    expected = beta_geo.expected_purchases(options.horizon_days, *args)
    probabilities = {
        "challenger": challenger.churn_probability(holdout.features),
        "logistic_baseline": baseline.churn_probability(holdout.features),
        "p_alive_baseline": 1 - holdout.features["bgnbd_p_alive"].to_numpy(),
        "bgnbd_no_purchase": holdout.features["bgnbd_no_purchase_probability"].to_numpy(),
    }
    metrics = {name: churn.scores(y_holdout, p) for name, p in probabilities.items()}
    tables = {name: churn.calibration_table(y_holdout, p) for name, p in probabilities.items()}

    with mlflow.start_run(run_name=f"churn-training-{run_date}") as mlflow_run:
        mlflow.set_tags({"kind": "churn-training", "run_date": run_date.isoformat(), "pipeline_run_id": run_id})
        mlflow.log_params(
            {
                "algorithm": options.model,
                "calibration": options.calibration,
                "horizon_days": options.horizon_days,
                "features": ",".join(options.features),
                "training_as_of": training.as_of.isoformat(),
                "holdout_as_of": holdout.as_of.isoformat(),
                "training_customers": len(y_train),
                "holdout_customers": len(y_holdout),
                "training_churn_rate": round(float(y_train.mean()), 4),
                "holdout_churn_rate": round(float(y_holdout.mean()), 4),
                "seed": options.seed,
                **{f"bgnbd_{name}": round(value, 6) for name, value in asdict(beta_geo.params_).items()},
            }
        )
        mlflow.log_metrics({f"{name}_{metric}": value for name, values in metrics.items() for metric, value in values.items()})
        mlflow.log_metric("holdout_actual_purchases", float(holdout.outcome["purchases_in_horizon"].sum()))
        mlflow.log_metric("holdout_bgnbd_expected_purchases", float(expected.sum()))
        for name, table in tables.items():
            mlflow.log_text(table.to_csv(index=False), f"calibration/{name}.csv")
        mlflow.log_figure(plots.calibration_figure(tables), "plots/calibration.png")
        mlflow.log_figure(plots.gains_figure(y_holdout, probabilities), "plots/cumulative_gains.png")
        mlflow.log_figure(
            plots.holdout_orders_figure(history["repeat_purchase_days"], holdout.outcome["purchases_in_horizon"], expected),
            "plots/holdout_purchases.png",
        )
        inputs = challenger.feature_matrix(holdout.features.head(100))
        info = mlflow.sklearn.log_model(
            challenger,
            name="churn_model",
            registered_model_name=settings.mlflow.churn_model,
            serialization_format=tracking.SERIALIZATION_FORMAT,
            signature=infer_signature(inputs, challenger.churn_probability(inputs)),
            pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"pandas=={pd.__version__}", f"numpy=={np.__version__}"],
        )
        version = client.get_model_version(settings.mlflow.churn_model, str(info.registered_model_version))
        decision, promoted, champion, champion_probability = judge(
            client, version, holdout, y_holdout, probabilities["challenger"], metrics["challenger"], settings
        )
        metrics["champion"] = churn.scores(y_holdout, champion_probability)
        mlflow.log_metrics({f"champion_{name}": value for name, value in metrics["champion"].items()})
        mlflow.log_text(churn.calibration_table(y_holdout, champion_probability).to_csv(index=False), "calibration/champion.csv")
        ece_difference = churn.ece_difference_interval(y_holdout, champion_probability, probabilities["bgnbd_no_purchase"], options.seed)
        mlflow.log_metrics({"ece_difference_low": ece_difference[0], "ece_difference_high": ece_difference[1]})
        published = churn.better_calibrated(metrics["champion"], metrics["bgnbd_no_purchase"], ece_difference)
        figures = {churn.CLASSIFIER: metrics["champion"], churn.BG_NBD: metrics["bgnbd_no_purchase"]}
        reason = churn.publication_reason(published, tracking.version_label(champion), figures, holdout.as_of.isoformat(), ece_difference)
        publication = {"published_churn": published, "published_churn_reason": reason}
        mlflow.set_tags({"decision": decision, "champion": tracking.version_label(champion), **publication})
    client.set_model_version_tag(version.name, version.version, "decision", decision)
    for key, value in {**publication, "published_churn_run": mlflow_run.info.run_id}.items():
        client.set_model_version_tag(champion.name, champion.version, key, value)
    log.info("churn challenger %s: %s; nights publish %s (%s)", tracking.version_label(version), decision, published, reason)
    return {
        "challenger": tracking.version_label(version),
        "promoted": promoted,
        "decision": decision,
        "published_churn": published,
        "published_churn_reason": reason,
        "mlflow_run_id": mlflow_run.info.run_id,
        "metrics": {name: {metric: round(value, 4) for metric, value in values.items()} for name, values in metrics.items()},
    }


def with_purchase_model_inputs(snapshot: Snapshot, horizon_days: int) -> tuple[pd.DataFrame, BetaGeoModel]:
    """The snapshot's features with `models.churn.BGNBD_INPUTS`, from BG/NBD fitted on the snapshot's own
    purchase history (as of its date, like the features: nothing after it), and that fit."""
    beta_geo = churn.fit_purchase_model(snapshot.history)
    inputs = churn.purchase_model_inputs(beta_geo, snapshot.history, horizon_days)
    return snapshot.features.drop(columns=list(churn.BGNBD_INPUTS), errors="ignore").join(inputs), beta_geo


def judge(
    client,
    version,
    holdout: Snapshot,
    y_holdout: pd.Series,
    challenger_probability: np.ndarray,
    challenger_metrics: dict[str, float],
    settings: Settings,
) -> tuple[str, bool, object, np.ndarray]:
    """Compare the challenger with the champion on the same holdout; move the alias if the challenger wins.
    Returns the decision, whether it was promoted, the champion after it and that champion's holdout probabilities."""
    options = settings.churn
    current = tracking.champion(client, settings.mlflow.churn_model)
    if current is None:
        tracking.make_champion(client, version)
        return "first model: champion", True, version, challenger_probability
    try:
        champion_probability = tracking.load_version(current).churn_probability(holdout.features)
    except ValueError as error:  # the champion needs features this version of the pipeline no longer has
        tracking.make_champion(client, version)
        return (
            f"champion {tracking.version_label(current)} cannot score today's features ({error}): replaced",
            True,
            version,
            challenger_probability,
        )
    champion_metrics = churn.scores(y_holdout, champion_probability)
    metric, margin = options.promote_metric, options.promote_margin
    comparison = (
        f"{metric} {challenger_metrics[metric]:.4f} vs champion {tracking.version_label(current)} "
        f"{champion_metrics[metric]:.4f}, margin {margin}"
    )
    if churn.beats(challenger_metrics, champion_metrics, metric, margin):
        mlflow.log_metrics({f"former_champion_{name}": value for name, value in champion_metrics.items()})
        tracking.make_champion(client, version)
        return f"promoted: {comparison}", True, version, challenger_probability
    return f"not promoted: {comparison}", False, current, champion_probability
