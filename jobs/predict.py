"""predict: the run date's churn, activity and lifetime-value scores of every customer with a purchase.

- Churn: the MLflow `champion` of `mlflow.churn_model` (trained weekly by `dags/crm_training.py`) on the
  run date's `gold/customer_features` and BG/NBD's two probabilities fitted tonight on the run date's
  purchase history (`models.churn.BGNBD_INPUTS`), with its calibrated probability, a risk band and the top
  three reasons. When the champion's training run found BG/NBD's own probability of no purchase better
  calibrated on its holdout (the version's tag `published_churn: bg_nbd`), that probability is published
  instead: its risk band, no reasons, and `churn_model_version` `bg_nbd@<champion>`. When there is no
  champion yet, one is trained first (`jobs/train.py`) and the log says so.
- Activity and value: BG/NBD (or MBG/NBD, `clv.purchase_model`) and Gamma-Gamma fitted tonight on the purchase history at the run date
  (order totals net of cancellations and returns, `features.purchases`): P(alive), expected purchases in
  30/90/365 days, expected order value, 12-month CLV (`clv.margin`, `clv.annual_discount_rate`) with its
  `clv.interval_level` interval, and the date by which the next purchase is 50% likely. The fit is logged
  to MLflow as a run of its own, named in every row (`clv_model_run`).

Written to `gold/customer_scores`, the run date's `as_of` partition, with the CRM table's columns.

A young shop still publishes what it can: without the history a churn model needs (2 x `churn.horizon_days`)
the churn columns are null, without a repeat buyer the value columns are; the log and the run summary say
why (`degraded` in the result), and the night succeeds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from datetime import date

import mlflow
import numpy as np
import pandas as pd
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.config import ClvSettings, Settings
from core.db import masked
from core.feature_schema import RENAMED
from core.lake import Lake
from core.spark import spark_session
from features.purchases import PURCHASE_MODEL_INPUTS, purchase_history
from jobs import train
from models import churn, tracking
from models.lifetime import (
    DAYS_PER_MONTH,
    PURCHASE_MODELS,
    ConvergenceError,
    GammaGammaModel,
    LifetimeInputError,
    customer_lifetime_value_with_interval,
)

log = logging.getLogger(__name__)

TABLE = "customer_scores"
CLV_MONTHS = 12
EXPECTED_ORDER_DAYS = (30, 90, 365)
NEXT_ORDER_PROBABILITY = 0.5
#: A next purchase not 50% likely within this many days has no date (null): too far off to plan with.
NEXT_ORDER_WITHIN_DAYS = 730
MONEY_COLUMNS = ("expected_order_value", "clv_12m", "clv_12m_low", "clv_12m_high")
VALUE_COLUMNS = ("p_alive", *(f"expected_orders_{days}d" for days in EXPECTED_ORDER_DAYS), *MONEY_COLUMNS, "next_order_date")


def run(run_date: date, settings: Settings, run_id: str) -> dict:
    """Score every buyer as of `run_date`; returns customers per churn risk band, the models used and what
    could not be scored yet (`degraded`: reason per score family, empty when everything was)."""
    client = tracking.connect(settings.mlflow)
    degraded: dict[str, str] = {}
    with spark_session(settings, "predict") as spark:
        lake = Lake(spark, settings.lake_dir)
        version, trained_first = champion_or_train(client, lake, run_date, settings, run_id, degraded)
        classifier = tracking.load_version(version) if version is not None else None
        gold_features = [RENAMED.get(name, name) for name in (classifier.features if classifier else []) if name not in churn.BGNBD_INPUTS]
        buyers = (
            lake.read("gold", "customer_features")
            .where((F.col("as_of") == F.lit(run_date)) & (F.col("purchase_count") > 0))
            .select("customer_id", *gold_features)
            .toPandas()
            .set_index("customer_id")
            .sort_index()
        )
        history = (
            purchase_history(lake.read("silver", "orders"), run_date, settings.rfm.scored_statuses, settings.rfm.monetary_value)
            .toPandas()
            .set_index("customer_id")
            .reindex(buyers.index)
        )
        buyers = buyers.join(churn_inputs(history, settings.churn.horizon_days, degraded))
        value, clv_run = value_scores(history, settings.clv, run_date, run_id, degraded)
        scores = value.assign(**churn_scores(classifier, buyers, settings, version, degraded), clv_model_run=clv_run).reset_index()
        # Lake.write_gold sets as_of and run_id and casts to the CRM table's types (money, next_order_date).
        lake.write_gold(spark.createDataFrame(scores, schema=score_schema(scores)), TABLE, run_date, run_id)
    bands = scores["churn_risk"].value_counts().to_dict()
    model = scores["churn_model_version"].dropna().iloc[0] if scores["churn_model_version"].notna().any() else None
    log.info(
        "gold/%s as of %s: %d customers, churn risk %s, model %s%s",
        TABLE,
        run_date,
        len(scores),
        bands,
        model,
        " (trained first: there was no champion)" if trained_first else "",
    )
    return {
        "customers": len(scores),
        "churn_risk": bands,
        "churn_model": model,
        "churn_published": (churn.BG_NBD if str(model).startswith(f"{churn.BG_NBD}@") else churn.CLASSIFIER) if model else None,
        "trained_first": trained_first,
        "clv_model_run": clv_run,
        "degraded": degraded,
    }


def score_schema(scores: pd.DataFrame):
    """The Spark schema of the scores frame: pandas columns that are all null (a score family that could not
    be computed) have no type Spark can infer, so every column's type is given (cast to the CRM table's
    types after)."""
    text = {"churn_risk", "churn_reasons", "churn_model_version", "clv_model_run"}
    fields = []
    for column in scores.columns:
        if column == "customer_id":
            kind = T.LongType()
        elif column in text:
            kind = T.StringType()
        elif column == "next_order_date":
            kind = T.TimestampType()
        else:
            kind = T.DoubleType()
        fields.append(T.StructField(column, kind, nullable=column != "customer_id"))
    return T.StructType(fields)


def churn_scores(
    classifier, buyers: pd.DataFrame, settings: Settings, version, degraded: dict[str, str] | None = None
) -> dict[str, object]:
    """The churn columns of every buyer: the champion's probability, risk band and reasons, or BG/NBD's
    probability of no purchase (`buyers.bgnbd_no_purchase_probability`) with its risk band and no reasons when
    the champion's version is tagged `published_churn: bg_nbd`; null without a champion."""
    if classifier is None:
        return {"churn_probability": np.nan, "churn_risk": None, "churn_reasons": None, "churn_model_version": None}
    label = tracking.version_label(version)
    published = version.tags.get("published_churn", churn.CLASSIFIER)
    bg_nbd = buyers["bgnbd_no_purchase_probability"].to_numpy(dtype=float) if published == churn.BG_NBD else None
    if bg_nbd is not None and not np.isfinite(bg_nbd).all():
        reason = (
            f"BG/NBD's churn probability is to be published ({label} is tagged published_churn: bg_nbd) "
            "but BG/NBD has no fit tonight: the classifier's is published"
        )
        if degraded is not None:
            degraded["churn_published"] = reason
        log.warning("churn scores: %s", reason)
        bg_nbd, published = None, churn.CLASSIFIER
    probability = classifier.churn_probability(buyers) if bg_nbd is None else bg_nbd
    return {
        "churn_probability": probability,
        "churn_risk": churn.risk_band(probability, settings.churn.medium_risk, settings.churn.high_risk),
        "churn_reasons": classifier.reasons(buyers) if bg_nbd is None else None,
        "churn_model_version": churn.published_label(published, label),
    }


def churn_inputs(history: pd.DataFrame, horizon_days: int, degraded: dict[str, str]) -> pd.DataFrame:
    """`models.churn.BGNBD_INPUTS` of every buyer from BG/NBD fitted on the run date's purchase history (days);
    null, with the reason in `degraded["churn_inputs"]`, when BG/NBD cannot be fitted (e.g. no repeat buyer yet)."""
    try:
        return churn.purchase_model_inputs(churn.fit_purchase_model(history), history, horizon_days)
    except (LifetimeInputError, ConvergenceError) as error:
        degraded["churn_inputs"] = f"no BG/NBD churn inputs tonight: {error}"
        log.warning("churn scores: %s", degraded["churn_inputs"])
        return pd.DataFrame({name: np.nan for name in churn.BGNBD_INPUTS}, index=history.index)


def champion_or_train(client, lake: Lake, run_date: date, settings: Settings, run_id: str, degraded: dict[str, str]):
    """The champion churn model's version; trains one first when the registry has none. None (and the
    reason in `degraded["churn"]`) when there is none and the lake's history is too short to train one."""
    version = tracking.champion(client, settings.mlflow.churn_model)
    if version is not None:
        return version, False
    log.warning("no champion of %s in MLflow (%s): training one first", settings.mlflow.churn_model, masked(settings.mlflow.tracking_uri))
    try:
        train.train(lake, run_date, settings, run_id)
    except train.TrainingDataError as error:
        degraded["churn"] = f"no churn model yet: {error}"
        log.warning("churn scores left empty tonight: %s", degraded["churn"])
        return None, False
    return tracking.champion(client, settings.mlflow.churn_model), True


def value_scores(
    history: pd.DataFrame, options: ClvSettings, run_date: date, run_id: str, degraded: dict[str, str] | None = None
) -> tuple[pd.DataFrame, str | None]:
    """Fit `clv.purchase_model` (BG/NBD or MBG/NBD) and Gamma-Gamma on `history` (days), log the fit to MLflow;
    per customer the value scores. When the history cannot be fitted (no repeat buyer yet, or a fit that
    does not converge) the value columns are null, no run is logged, and `degraded["value"]` says why."""
    purchases = tuple(history[column].to_numpy() for column in PURCHASE_MODEL_INPUTS)
    repeat_purchase_days = purchases[0]
    mean_repeat_order_value = history["mean_repeat_order_value"].to_numpy()
    repeat = (repeat_purchase_days > 0) & (mean_repeat_order_value > 0)
    # Repeat buyers whose repeat spend is not positive (net of credit notes): Gamma-Gamma models positive
    # order values only, so it neither learns from them nor values them (their money columns stay null).
    unvalued = (repeat_purchase_days > 0) & ~repeat
    if unvalued.any():
        reason = (
            f"{int(unvalued.sum())} repeat buyer(s) whose repeat spend net of credit notes is not positive "
            "(rfm.monetary_value: net): no expected order value or CLV for them (Gamma-Gamma needs order values > 0)"
        )
        if degraded is not None:
            degraded["order_value"] = reason
        log.warning("value scores: %s", reason)
    valued_m = np.where(unvalued, 1.0, mean_repeat_order_value)  # any positive stand-in; their results are nulled below
    try:
        beta_geo = PURCHASE_MODELS[options.purchase_model]().fit(*purchases)
        gamma_gamma = GammaGammaModel().fit(repeat_purchase_days[repeat], mean_repeat_order_value[repeat])
    except (LifetimeInputError, ConvergenceError) as error:
        reason = f"no value model tonight ({len(history)} buyers, {int(repeat.sum())} with a repeat purchase): {error}"
        if degraded is not None:
            degraded["value"] = reason
        log.warning("value scores left empty tonight: %s", reason)
        empty = pd.DataFrame({column: np.nan for column in VALUE_COLUMNS}, index=history.index)
        return empty.assign(next_order_date=pd.NaT).astype({"next_order_date": "datetime64[ns]"}), None
    clv_options = dict(
        period_length=DAYS_PER_MONTH, months=CLV_MONTHS, margin=options.margin, monthly_discount_rate=options.monthly_discount_rate
    )
    clv, low, high = customer_lifetime_value_with_interval(
        beta_geo,
        gamma_gamma,
        *purchases,
        valued_m,
        level=options.interval_level,
        draws=options.interval_draws,
        seed=options.seed,
        **clv_options,
    )
    days_to_next = beta_geo.time_to_next_purchase(*purchases, probability=NEXT_ORDER_PROBABILITY)
    days_to_next = np.where(days_to_next <= NEXT_ORDER_WITHIN_DAYS, np.ceil(days_to_next), np.nan)
    next_order = pd.Timestamp(run_date) + pd.to_timedelta(days_to_next, unit="D")
    value = pd.DataFrame(
        {
            "p_alive": beta_geo.probability_alive(*purchases),
            **{f"expected_orders_{days}d": beta_geo.expected_purchases(days, *purchases) for days in EXPECTED_ORDER_DAYS},
            "expected_order_value": np.where(unvalued, np.nan, gamma_gamma.expected_order_value(repeat_purchase_days, valued_m)),
            "clv_12m": np.where(unvalued, np.nan, clv),
            "clv_12m_low": np.where(unvalued, np.nan, low),
            "clv_12m_high": np.where(unvalued, np.nan, high),
            "next_order_date": next_order,
        },
        index=history.index,
    )
    params = {
        "purchase_model": options.purchase_model,
        **{f"{options.purchase_model}_{k}": round(v, 6) for k, v in asdict(beta_geo.params_).items()},
        **{f"gamma_gamma_{k}": round(v, 6) for k, v in asdict(gamma_gamma.params_).items()},
        "customers": len(history),
        "repeat_buyers": int(repeat.sum()),
        "repeat_buyers_not_valued": int(unvalued.sum()),
        "margin": options.margin,
        "annual_discount_rate": options.annual_discount_rate,
        "interval_level": options.interval_level,
        "interval_draws": options.interval_draws,
        "seed": options.seed,
    }
    metrics = {
        "expected_purchases_365d": float(value["expected_orders_365d"].sum()),
        "clv_12m_total": float(value["clv_12m"].sum()),  # NaN-skipping: the customers not valued add nothing
        "mean_p_alive": float(value["p_alive"].mean()),
    }
    return value, log_value_fit(run_date, run_id, params, metrics)


def log_value_fit(run_date: date, run_id: str, params: dict, metrics: dict[str, float]) -> str:
    """The MLflow run of the night's value models; a rerun with the same fit reuses the run it logged before,
    so a rerun of the same date writes the same rows."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    earlier = mlflow.search_runs(
        filter_string=f"tags.kind = 'clv-fit' and tags.run_date = '{run_date.isoformat()}' and tags.fit_digest = '{digest}'",
        output_format="list",
        max_results=1,
    )
    if earlier:
        return earlier[0].info.run_id
    with mlflow.start_run(run_name=f"clv-{run_date}") as clv_run:
        mlflow.set_tags({"kind": "clv-fit", "run_date": run_date.isoformat(), "pipeline_run_id": run_id, "fit_digest": digest})
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
    return clv_run.info.run_id
