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
  `clv.interval_level` interval, and the date by which the next purchase is 50% likely. With BG/NBD one fit
  serves these and the churn inputs (`shared_fit`). The fit is logged to MLflow as a run of its own, named
  in every row (`clv_model_run`), with its diagnostics (`lifetime_diagnostics.json`: convergence,
  parameters at a boundary, the holdout check). When the purchase log shows no dropout
  (`dropout_not_identifiable`), P(alive) is null and `degraded` says why.
- Expected orders: the last `churn.horizon_days` before the run date are a holdout on which the purchase
  model, the same times a seasonal index learnt a year earlier, and the customer's own count a year
  earlier compete (`models.purchase_forecast`); the lowest RMSE fills `expected_orders_*`.
- Every purchase history of the night (at the run date, the holdout's start, a year before each) comes from
  one read of the orders known by the run date, in pandas (`features.purchases.purchase_history_of`).

Written to `gold/customer_scores`, the run date's `as_of` partition, with the CRM table's columns.

A young shop still publishes what it can: without the history a churn model needs (2 x `churn.horizon_days`)
the churn columns are null, without a repeat buyer the value columns are; the log and the run summary say
why (`degraded` in the result), and the night succeeds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import date, timedelta

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
from features.purchases import PURCHASE_MODEL_INPUTS, future_purchase_days, orders_known_by, purchase_history_of
from jobs import train
from models import churn, purchase_forecast, tracking
from models.lifetime import (
    DAYS_PER_MONTH,
    DIAGNOSTICS_ARTIFACT,
    PURCHASE_MODELS,
    BetaGeoModel,
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
        lake = Lake(spark, settings.lake_location)
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
        # One read of the orders to pandas: tonight's history and the four of the expected-orders comparison
        # (`seasonal_histories`) are all made of the orders known by the run date.
        orders = orders_known_by(lake.read("silver", "orders"), run_date).toPandas()
        history = purchase_history_of(orders, run_date, settings.rfm.scored_statuses, settings.rfm.monetary_value).reindex(buyers.index)
        beta_geo = churn_purchase_model(history, degraded)
        buyers = buyers.join(churn_inputs(beta_geo, history, settings.churn.horizon_days))
        seasons = seasonal_histories(orders, run_date, settings.churn.horizon_days, settings)
        value, clv_run, lifetime_fit = value_scores(
            history, settings.clv, run_date, run_id, degraded, seasons, fitted=shared_fit(beta_geo, history, settings.clv)
        )
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
        "lifetime_fit": lifetime_fit,
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


def churn_purchase_model(history: pd.DataFrame, degraded: dict[str, str]) -> BetaGeoModel | None:
    """BG/NBD fitted on the run date's purchase history (days; customers without a history left out), for the
    churn classifier's inputs; None, with the reason in `degraded["churn_inputs"]`, when it cannot be fitted
    (e.g. no repeat buyer yet)."""
    try:
        return churn.fit_purchase_model(history)
    except (LifetimeInputError, ConvergenceError) as error:
        degraded["churn_inputs"] = f"no BG/NBD churn inputs tonight: {error}"
        log.warning("churn scores: %s", degraded["churn_inputs"])
        return None


def churn_inputs(beta_geo: BetaGeoModel | None, history: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
    """`models.churn.BGNBD_INPUTS` of every customer of `history` from `beta_geo` (`churn_purchase_model`);
    null without a fit."""
    if beta_geo is None:
        return pd.DataFrame({name: np.nan for name in churn.BGNBD_INPUTS}, index=history.index)
    return churn.purchase_model_inputs(beta_geo, history, horizon_days)


def shared_fit(beta_geo: BetaGeoModel | None, history: pd.DataFrame, options: ClvSettings) -> BetaGeoModel | None:
    """The churn inputs' BG/NBD fit when it is the value model's too: `clv.purchase_model` is BG/NBD and every
    buyer has a purchase history, so both fits would see the same rows (the churn fit leaves out customers
    without one, the value fit refuses them). None when the value model must be fitted on its own."""
    if beta_geo is None or type(beta_geo) is not PURCHASE_MODELS[options.purchase_model]:
        return None
    return beta_geo if history[list(PURCHASE_MODEL_INPUTS)].notna().all(axis=None) else None


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


@dataclass(frozen=True)
class Seasons:
    """What the expected-orders comparison (`models.purchase_forecast`) needs, all known by the run date.

    Frames are indexed by customer_id, histories in days (PURCHASE_MODEL_INPUTS), counts in purchase days:
    - `holdout`: the customers with a purchase by the holdout's start (run date - `holdout_days`), their
      history then, `holdout_purchases` (in the holdout), `last_days_purchases` (in the `holdout_days`
      before it), `year_earlier_purchases` (in the holdout's window a year earlier), `bought_year_earlier`.
    - `holdout_year_earlier`: the customers a year before the holdout's start, their history then and
      `window_purchases` (in the holdout's window a year earlier): the holdout's seasonal index.
    - `year_earlier`: the customers at run date - 365 days, their history then and `purchases_<h>d` (in
      the next h days then) for each of EXPECTED_ORDER_DAYS: the published horizons' seasonal indexes.
    - `current`: the buyers at the run date and `last_<h>d` (their purchase days in the last h days).
    """

    holdout_days: int
    holdout: pd.DataFrame
    holdout_year_earlier: pd.DataFrame
    year_earlier: pd.DataFrame
    current: pd.DataFrame


def seasonal_histories(orders: pd.DataFrame, run_date: date, holdout_days: int, settings: Settings) -> Seasons:
    """The `Seasons` of `run_date` from the silver orders known by then (pandas, `features.purchases.orders_known_by`;
    point in time: each window's purchases as known at its end)."""
    statuses, money = settings.rfm.scored_statuses, settings.rfm.monetary_value
    year = timedelta(days=purchase_forecast.YEAR_DAYS)

    def history(as_of: date, windows: dict[str, tuple[date, int]]) -> pd.DataFrame:
        frame = purchase_history_of(orders, as_of, statuses, money)[list(PURCHASE_MODEL_INPUTS)]
        for name, (window_start, days) in windows.items():
            bought = future_purchase_days(orders, window_start, days, statuses)
            frame = frame.assign(**{name: bought.reindex(frame.index, fill_value=0)})
        return frame

    start = run_date - timedelta(days=holdout_days)
    holdout = history(
        start,
        {
            "holdout_purchases": (start, holdout_days),
            "last_days_purchases": (start - timedelta(days=holdout_days), holdout_days),
            "year_earlier_purchases": (start - year, holdout_days),
        },
    )
    holdout_year_earlier = history(start - year, {"window_purchases": (start - year, holdout_days)})
    return Seasons(
        holdout_days=holdout_days,
        holdout=holdout.assign(bought_year_earlier=holdout.index.isin(holdout_year_earlier.index)),
        holdout_year_earlier=holdout_year_earlier,
        year_earlier=history(run_date - year, {f"purchases_{days}d": (run_date - year, days) for days in EXPECTED_ORDER_DAYS}),
        current=history(run_date, {f"last_{days}d": (run_date - timedelta(days=days), days) for days in EXPECTED_ORDER_DAYS}),
    )


def compare_expected_orders(model: type, seasons: Seasons) -> dict:
    """The candidates of `models.purchase_forecast` on the holdout: per candidate its figures, the chosen one,
    the holdout's seasonal index, and Fader & Hardie's check of the purchase model by calibration-period
    repeat purchases. Without a holdout to fit on, `{"chosen": "bgnbd", "reason": why}`."""
    days, calibration = seasons.holdout_days, seasons.holdout
    inputs = tuple(calibration[column].to_numpy(dtype=float) for column in PURCHASE_MODEL_INPUTS)
    try:
        fitted = model().fit(*inputs)
    except (LifetimeInputError, ConvergenceError) as error:
        return {
            "chosen": "bgnbd",
            "reason": f"no holdout check: no purchase model on the history up to {days} days before the run date ({error})",
        }
    actual = calibration["holdout_purchases"].to_numpy(dtype=float)
    predicted = {"bgnbd": fitted.expected_purchases(days, *inputs)}
    earlier = seasons.holdout_year_earlier
    ((index, basis),) = purchase_forecast.seasonal_indexes(
        model, *(earlier[column].to_numpy(dtype=float) for column in PURCHASE_MODEL_INPUTS), {days: earlier["window_purchases"]}
    ).values()
    if index is not None:
        predicted["bgnbd_seasonal"] = predicted["bgnbd"] * index
    predicted["own_count"] = purchase_forecast.own_count(
        calibration["year_earlier_purchases"], calibration["last_days_purchases"], calibration["bought_year_earlier"], inputs[2], days
    )
    scores = {name: purchase_forecast.forecast_scores(values, actual) for name, values in predicted.items()}
    return {
        "holdout_days": days,
        "customers": len(calibration),
        "scores": scores,
        "chosen": purchase_forecast.choose(scores),
        "seasonal_index": index,
        "seasonal_index_basis": basis,
        "by_frequency": purchase_forecast.by_frequency(inputs[0], predicted["bgnbd"], actual),
        "calibration_fit": fitted.diagnostics_.as_dict(),
    }


def expected_orders(chosen: str, beta_geo, model: type, purchases: tuple, seasons: Seasons | None, index: pd.Index) -> tuple[dict, dict]:
    """`expected_orders_<h>d` of every buyer from the `chosen` candidate, and per horizon the seasonal index
    used (bgnbd_seasonal; a horizon without one keeps the purchase model's expectation and says why)."""
    stationary = {days: beta_geo.expected_purchases(days, *purchases) for days in EXPECTED_ORDER_DAYS}
    if chosen == "bgnbd" or seasons is None:
        return {f"expected_orders_{days}d": stationary[days] for days in EXPECTED_ORDER_DAYS}, {}
    earlier = seasons.year_earlier
    if chosen == "bgnbd_seasonal":
        found = purchase_forecast.seasonal_indexes(
            model,
            *(earlier[column].to_numpy(dtype=float) for column in PURCHASE_MODEL_INPUTS),
            {days: earlier[f"purchases_{days}d"].to_numpy(dtype=float) for days in EXPECTED_ORDER_DAYS},
        )
        forecast = purchase_forecast.seasonal_forecast(stationary, {days: factor for days, (factor, _) in found.items()})
        columns = {f"expected_orders_{days}d": forecast[days] for days in EXPECTED_ORDER_DAYS}
        return columns, {f"{days}d": {"index": factor, "basis": basis} for days, (factor, basis) in found.items()}
    columns = {}
    for days in EXPECTED_ORDER_DAYS:
        same_window = earlier[f"purchases_{days}d"].reindex(index)
        columns[f"expected_orders_{days}d"] = purchase_forecast.own_count(
            same_window.fillna(0).to_numpy(),
            seasons.current[f"last_{days}d"].reindex(index).fillna(0).to_numpy(),
            same_window.notna().to_numpy(),
            purchases[2],
            days,
        )
    return columns, {}


def value_scores(
    history: pd.DataFrame,
    options: ClvSettings,
    run_date: date,
    run_id: str,
    degraded: dict[str, str] | None = None,
    seasons: Seasons | None = None,
    fitted: BetaGeoModel | None = None,
) -> tuple[pd.DataFrame, str | None, dict]:
    """Fit `clv.purchase_model` (BG/NBD or MBG/NBD) and Gamma-Gamma on `history` (days), log the fit and its
    diagnostics to MLflow; per customer the value scores, the MLflow run, and a summary of the fit (for the
    run summary). When the history cannot be fitted (no repeat buyer yet, or a fit that does not converge)
    the value columns are null, no run is logged, and `degraded["value"]` says why. A fit whose dropout is
    not identifiable publishes no `p_alive` (`degraded["p_alive"]`); a Gamma-Gamma fit with q <= 1 no money
    columns (`degraded["order_value"]`). With `seasons`, `expected_orders_*` come from the candidate of
    `models.purchase_forecast` with the lowest holdout RMSE. `fitted`: the purchase model already fitted on
    `history` (`shared_fit`), used instead of fitting it again."""
    degraded = {} if degraded is None else degraded
    purchases = tuple(history[column].to_numpy() for column in PURCHASE_MODEL_INPUTS)
    repeat_purchase_days = purchases[0]
    mean_repeat_order_value = history["mean_repeat_order_value"].to_numpy()
    repeat = (repeat_purchase_days > 0) & (mean_repeat_order_value > 0)
    # Repeat buyers whose repeat spend is not positive (net of credit notes): Gamma-Gamma models positive
    # order values only, so it neither learns from them nor values them (their money columns stay null).
    unvalued = (repeat_purchase_days > 0) & ~repeat
    if unvalued.any():
        _degrade(
            degraded,
            "order_value",
            f"{int(unvalued.sum())} repeat buyer(s) whose repeat spend net of credit notes is not positive "
            "(rfm.monetary_value: net): no expected order value or CLV for them (Gamma-Gamma needs order values > 0)",
        )
    valued_m = np.where(unvalued, 1.0, mean_repeat_order_value)  # any positive stand-in; their results are nulled below
    model = PURCHASE_MODELS[options.purchase_model]
    try:
        beta_geo = fitted if fitted is not None else model().fit(*purchases)
    except (LifetimeInputError, ConvergenceError) as error:
        reason = f"no value model tonight ({len(history)} buyers, {int(repeat.sum())} with a repeat purchase): {error}"
        _degrade(degraded, "value", reason)
        empty = pd.DataFrame({column: np.nan for column in VALUE_COLUMNS}, index=history.index)
        return empty.assign(next_order_date=pd.NaT).astype({"next_order_date": "datetime64[ns]"}), None, {"fitted": False, "reason": reason}
    dropout_problem = beta_geo.diagnostics_.problems.get("dropout_not_identifiable")
    if dropout_problem:
        _degrade(degraded, "p_alive", f"{dropout_problem}: p_alive left null; rank churn risk by churn_probability or expected_orders_90d")
    try:
        gamma_gamma = GammaGammaModel().fit(repeat_purchase_days[repeat], mean_repeat_order_value[repeat])
        order_value_problem = gamma_gamma.diagnostics_.problems.get("order_value_mean_undefined")
        gamma_gamma_diagnostics = gamma_gamma.diagnostics_.as_dict()
    except (LifetimeInputError, ConvergenceError) as error:
        # The purchase model's columns stand on their own: only the money columns need Gamma-Gamma.
        order_value_problem = f"no order value model tonight ({int(repeat.sum())} repeat buyers with a positive spend): {error}"
        gamma_gamma_diagnostics = {"fitted": False, "reason": order_value_problem}
    if order_value_problem:
        _degrade(degraded, "order_value", order_value_problem)
    comparison = compare_expected_orders(model, seasons) if seasons is not None else {"chosen": "bgnbd", "reason": "no holdout given"}
    orders, seasonal_indexes = expected_orders(comparison["chosen"], beta_geo, model, purchases, seasons, history.index)
    unpriced = unvalued | bool(order_value_problem)
    if order_value_problem:
        nothing = np.full(len(history), np.nan)
        order_value, clv, low, high = nothing, nothing, nothing, nothing
    else:
        order_value = gamma_gamma.expected_order_value(repeat_purchase_days, valued_m)
        clv, low, high = customer_lifetime_value_with_interval(
            beta_geo,
            gamma_gamma,
            *purchases,
            valued_m,
            level=options.interval_level,
            draws=options.interval_draws,
            seed=options.seed,
            period_length=DAYS_PER_MONTH,
            months=CLV_MONTHS,
            margin=options.margin,
            monthly_discount_rate=options.monthly_discount_rate,
        )
    days_to_next = beta_geo.time_to_next_purchase(*purchases, probability=NEXT_ORDER_PROBABILITY)
    days_to_next = np.where(days_to_next <= NEXT_ORDER_WITHIN_DAYS, np.ceil(days_to_next), np.nan)
    next_order = pd.Timestamp(run_date) + pd.to_timedelta(days_to_next, unit="D")
    value = pd.DataFrame(
        {
            "p_alive": np.nan if dropout_problem else beta_geo.probability_alive(*purchases),
            **orders,
            "expected_order_value": np.where(unpriced, np.nan, order_value),
            "clv_12m": np.where(unpriced, np.nan, clv),
            "clv_12m_low": np.where(unpriced, np.nan, low),
            "clv_12m_high": np.where(unpriced, np.nan, high),
            "next_order_date": next_order,
        },
        index=history.index,
    )
    diagnostics = {
        "purchase_model": beta_geo.diagnostics_.as_dict(),
        "gamma_gamma": gamma_gamma_diagnostics,
        "expected_orders": {**comparison, "seasonal_indexes": seasonal_indexes},
    }
    params = {
        "purchase_model": options.purchase_model,
        **{f"{options.purchase_model}_{k}": round(v, 6) for k, v in asdict(beta_geo.params_).items()},
        **{f"gamma_gamma_{k}": round(v, 6) for k, v in gamma_gamma_diagnostics.get("params", {}).items()},
        "customers": len(history),
        "repeat_buyers": int(repeat.sum()),
        "repeat_buyers_not_valued": int(unvalued.sum()),
        "margin": options.margin,
        "annual_discount_rate": options.annual_discount_rate,
        "interval_level": options.interval_level,
        "interval_draws": options.interval_draws,
        "seed": options.seed,
        "dropout_identifiable": not dropout_problem,
        "order_value_mean_defined": not order_value_problem,
        "expected_orders_model": comparison["chosen"],
        "holdout_days": comparison.get("holdout_days"),
    }
    metrics = {
        "expected_purchases_365d": float(value["expected_orders_365d"].sum()),
        "clv_12m_total": float(value["clv_12m"].sum()),  # NaN-skipping: the customers not valued add nothing
        "mean_p_alive": float(value["p_alive"].mean()),
        **fit_metrics(diagnostics),
    }
    run = log_value_fit(run_date, run_id, params, metrics, diagnostics)
    if "scores" in comparison:
        log_expected_orders_evaluation(comparison, run_date, run_id)
    return value, run, lifetime_summary(diagnostics)


def _degrade(degraded: dict[str, str], family: str, reason: str) -> None:
    """Add `reason` to what `degraded[family]` says, and log it."""
    degraded[family] = f"{degraded[family]}; {reason}" if family in degraded else reason
    log.warning("value scores (%s): %s", family, reason)


def fit_metrics(diagnostics: dict) -> dict[str, float]:
    """The diagnostics as MLflow metrics (finite numbers only): each fit's log-likelihood, iterations,
    gradient norm and figures, and each expected-orders candidate's holdout figures."""
    metrics: dict[str, float] = {}
    for fit in ("purchase_model", "gamma_gamma"):
        found = diagnostics[fit]
        if found.get("fitted") is False:
            continue
        metrics |= {f"{fit}_{name}": found[name] for name in ("log_likelihood", "iterations", "evaluations", "gradient_norm")}
        metrics |= {f"{fit}_{name}": value for name, value in found["figures"].items()}
        metrics[f"{fit}_converged"] = float(found["converged"])
        metrics[f"{fit}_parameters_at_boundary"] = float(len(found["boundary"]))
    comparison = diagnostics["expected_orders"]
    for candidate, scores in comparison.get("scores", {}).items():
        metrics |= {f"holdout_{candidate}_{name}": value for name, value in scores.items() if name != "customers"}
    if comparison.get("seasonal_index") is not None:
        metrics["holdout_seasonal_index"] = comparison["seasonal_index"]
    for horizon, found in comparison.get("seasonal_indexes", {}).items():
        if found["index"] is not None:
            metrics[f"seasonal_index_{horizon}"] = found["index"]
    return {name: float(value) for name, value in metrics.items() if value is not None and np.isfinite(value)}


def lifetime_summary(diagnostics: dict) -> dict:
    """The few facts of the night's lifetime fits that the run summary shows (the rest is in MLflow)."""
    purchase, gamma_gamma, comparison = diagnostics["purchase_model"], diagnostics["gamma_gamma"], diagnostics["expected_orders"]
    summary = {
        "fitted": True,
        "purchase_model": {name: purchase[name] for name in ("model", "params", "converged", "iterations", "gradient_norm", "boundary")},
        "dropout_identifiable": "dropout_not_identifiable" not in purchase["problems"],
        "gamma_gamma": {name: gamma_gamma[name] for name in ("params", "converged", "boundary", "reason") if name in gamma_gamma},
        "expected_orders_model": comparison["chosen"],
    }
    if "scores" in comparison:
        summary["holdout"] = {
            name: {
                figure: round(value, 4)
                for figure, value in scores.items()
                if figure in ("rmse", "mae", "predicted_total", "actual_total", "no_purchase_roc_auc")
            }
            for name, scores in comparison["scores"].items()
        }
    else:
        summary["holdout"] = comparison.get("reason")
    return summary


def log_value_fit(run_date: date, run_id: str, params: dict, metrics: dict[str, float], diagnostics: dict) -> str:
    """The MLflow run of the night's value models, with the diagnostics as `lifetime_diagnostics.json`; a rerun
    with the same fit reuses the run it logged before, so a rerun of the same date writes the same rows."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    earlier = mlflow.search_runs(
        filter_string=f"tags.kind = 'clv-fit' and tags.run_date = '{run_date.isoformat()}' and tags.fit_digest = '{digest}'",
        output_format="list",
        max_results=1,
    )
    if earlier:
        return earlier[0].info.run_id
    with mlflow.start_run(run_name=f"clv-{run_date}") as clv_run:
        mlflow.set_tags(
            {
                "kind": "clv-fit",
                "run_date": run_date.isoformat(),
                "pipeline_run_id": run_id,
                "fit_digest": digest,
                "dropout_identifiable": str(params["dropout_identifiable"]).lower(),
                "expected_orders_model": params["expected_orders_model"],
            }
        )
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.log_dict(_json_ready(diagnostics), DIAGNOSTICS_ARTIFACT)
    return clv_run.info.run_id


def _json_ready(value):
    """`value` with NaN and infinities as None (JSON has no such numbers) and numpy scalars as Python's."""
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def log_expected_orders_evaluation(comparison: dict, run_date: date, run_id: str) -> str:
    """The expected-orders comparison as a holdout evaluation (the run summary's model checks): the chosen
    candidate's ROC-AUC of ranking the no-purchase customers beside the others', all figures as metrics."""
    scores, chosen = comparison["scores"], comparison["chosen"]
    return tracking.log_evaluation(
        f"expected_orders ({chosen})",
        run_date,
        run_id,
        f"purchase days in the last {comparison['holdout_days']} days, forecast from the history before them; chosen by lowest RMSE "
        + ", ".join(f"{name} {figures['rmse']:.3f}" for name, figures in scores.items()),
        "no_purchase_roc_auc",
        scores[chosen]["no_purchase_roc_auc"],
        {name: figures["no_purchase_roc_auc"] for name, figures in scores.items() if name != chosen},
        params={"holdout_days": comparison["holdout_days"], "chosen": chosen},
        metrics={f"{name}_{figure}": value for name, figures in scores.items() for figure, value in figures.items()},
    )
