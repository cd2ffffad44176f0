"""offers: the shop's past randomised coupon campaigns -> whom to offer which coupon (`gold/coupon_offers`).

Learns from every personal-coupon campaign whose window ended before the run date (models/uplift.py): its
eligible customers, treated (got the coupon) or control, and whether they bought in the window, with the
customer features as of the day before the campaign started (point in time, `features/customer.py`). One
pooled uplift model (`uplift.method`, `uplift.algorithm`) with the coupon's terms as features:

1. evaluated on a held-out share of each campaign's customers (`uplift.holdout_share`): Qini coefficient
   and uplift at 10% and 30%, against random targeting and against targeting the highest churn risk (the
   churn champion's probability at the campaign's start), logged to MLflow and listed in the run summary;
2. refitted on all campaign customers and applied to tonight's features for each past coupon's terms.
   Each customer gets at most the coupon with the best expected incremental revenue (expected order value:
   tonight's Gamma-Gamma `expected_order_value`, else the customer's average order value, else the median),
   within `uplift.budget` of expected discount cost.

A shop with no finished campaign (or one without a control group) writes an empty partition and says why.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from core.config import Settings
from core.lake import Lake
from core.spark import spark_session
from features.customer import customer_features, known_at, silver_tables
from features.purchases import orders_known_by, purchase_history_of
from jobs import predict
from models import churn, tracking, uplift

log = logging.getLogger(__name__)

TABLE = "coupon_offers"
TARGET_SHARES = (0.1, 0.3)


def run(run_date: date, settings: Settings, run_id: str) -> dict:
    """Write the run date's coupon offers; returns the offers per coupon, their expected cost and revenue,
    the holdout figures and `degraded`."""
    conf = settings.uplift
    client = tracking.connect(settings.mlflow)
    with spark_session(settings, "offers") as spark:
        lake = Lake(spark, settings.lake_location)
        # Read once: the campaigns' outcomes and every campaign eve's purchase history are made of them.
        orders = orders_known_by(lake.read("silver", "orders"), run_date).toPandas()
        outcomes, reason = finished_campaigns(lake, run_date, orders, settings.rfm.scored_statuses)
        if reason:
            log.warning("offers for %s: %s; coupon_offers is empty", run_date, reason)
            lake.write_gold(None, TABLE, run_date, run_id)
            return {"offers": {}, "figures": {}, "degraded": {"offers": reason}}
        champion = tracking.champion(client, settings.mlflow.churn_model)
        churn_model = tracking.load_version(champion) if champion is not None else None
        data = training_frame(lake, outcomes, orders, settings, churn_model)
        today = (
            lake.read("gold", "customer_features")
            .where(F.col("as_of") == F.lit(run_date))
            .drop("as_of", "run_id")
            .join(
                lake.read("gold", "customer_scores").where(F.col("as_of") == F.lit(run_date)).select("customer_id", "expected_order_value"),
                "customer_id",
                "left",
            )
            .toPandas()
        )
        # The uplift model learns from the gold features of the churn list (BG/NBD's churn inputs are no gold column).
        features = [*(name for name in settings.churn.features if name not in churn.BGNBD_INPUTS), *uplift.TERM_FEATURES]
        figures, model_run = evaluate(data, features, settings, run_date, run_id, churn_model is not None)
        model = fit(data, features, settings)
        offers = choose_offers(model, today, uplift.coupon_terms(outcomes), conf.budget, conf.min_expected_uplift)
        rows = spark.createDataFrame(
            offers.assign(uplift_model_run=model_run),
            schema="customer_id long, coupon string, expected_uplift double, "
            "expected_incremental_revenue double, expected_cost double, "
            "uplift_model_run string",
        )
        lake.write_gold(rows, TABLE, run_date, run_id)
    per_coupon = offers.groupby("coupon").size().to_dict()
    log.info(
        "offers for %s: %d customers (%s), expected cost %.2f, expected incremental revenue %.2f; %s",
        run_date,
        len(offers),
        per_coupon,
        offers["expected_cost"].sum(),
        offers["expected_incremental_revenue"].sum(),
        figures,
    )
    return {
        "offers": {coupon: int(count) for coupon, count in per_coupon.items()},
        "expected_cost": round(float(offers["expected_cost"].sum()), 2),
        "expected_incremental_revenue": round(float(offers["expected_incremental_revenue"].sum()), 2),
        "figures": figures,
        "degraded": {},
    }


def finished_campaigns(lake: Lake, run_date: date, orders: pd.DataFrame, statuses) -> tuple[pd.DataFrame | None, str | None]:
    """Outcomes of the personal-coupon campaigns whose window ended by the run date (known then), or the
    reason there are none to learn from; `orders`: the silver orders known by the run date
    (`features.purchases.orders_known_by`)."""
    coupons = (
        known_at(lake.read("silver", "coupons"), run_date)
        .where(F.col("customer_id").isNotNull() & (F.col("valid_to") < F.lit(run_date)))
        .toPandas()
    )
    if coupons.empty:
        return None, f"no personal-coupon campaign ended before {run_date}"
    customers = known_at(lake.read("silver", "customers"), run_date).select("id", "created_at").toPandas()
    try:
        return uplift.campaign_outcomes(customers, coupons, orders, statuses), None
    except ValueError as error:
        return None, f"past coupon campaigns cannot be learnt from: {error}"


def training_frame(lake: Lake, outcomes: pd.DataFrame, orders: pd.DataFrame, settings: Settings, churn_model) -> pd.DataFrame:
    """The campaigns' outcome rows with each customer's features as of the day before the campaign started,
    the coupon's term features, a held-out flag and, for the churn-risk baseline, the churn champion's
    probability then (NaN without a champion or a purchase; BG/NBD's inputs from the purchase history of
    `orders`, the silver orders known by the run date, then)."""
    silver = silver_tables(lake)
    parts = []
    for campaign, rows in outcomes.groupby("campaign", sort=True):
        as_of = pd.Timestamp(rows["valid_from"].iloc[0]).date() - timedelta(days=1)
        features = customer_features(silver, as_of, settings.rfm.scored_statuses, settings.rfm.monetary_value).toPandas()
        part = rows.merge(features, on="customer_id", how="left", validate="one_to_one")
        risk = np.full(len(part), np.nan)
        if churn_model is not None:
            bought = (part["purchase_count"] > 0).to_numpy()
            if bought.any():
                history = purchase_history_of(orders, as_of, settings.rfm.scored_statuses, settings.rfm.monetary_value)
                # BG/NBD as of the campaign's eve
                inputs = predict.churn_inputs(predict.churn_purchase_model(history, {}), history, settings.churn.horizon_days)
                risk[bought] = churn_model.churn_probability(part.loc[bought].join(inputs, on="customer_id"))
        part["churn_probability"] = risk
        part["is_holdout"] = uplift.holdout_mask(
            part["customer_id"], part["is_treated"], settings.uplift.holdout_share, settings.uplift.seed
        )
        parts.append(part)
    return uplift.with_term_features(pd.concat(parts, ignore_index=True))


def fit(rows: pd.DataFrame, features: list[str], settings: Settings) -> uplift.UpliftModel:
    conf = settings.uplift
    return uplift.UpliftModel(features, conf.method, conf.algorithm, conf.seed).fit(rows, rows["is_treated"], rows["has_order"])


def evaluate(
    data: pd.DataFrame, features: list[str], settings: Settings, run_date: date, run_id: str, has_churn_risk: bool
) -> tuple[dict[str, float], str]:
    """Qini and uplift@k of the model fitted without the held-out customers, on them, against random
    targeting and the highest churn risk; logged to MLflow (its run id is returned)."""
    conf = settings.uplift
    train, holdout = data[~data["is_holdout"]], data[data["is_holdout"]]
    scores = {"model": fit(train, features, settings).expected_uplift(holdout)}
    if has_churn_risk:
        scores["highest churn risk"] = holdout["churn_probability"].to_numpy()
    report = uplift.targeting_report(holdout, scores, TARGET_SHARES, conf.seed).set_index("strategy")
    figure = report.loc["model"]
    baselines = {name: float(report.loc[name, "qini"]) for name in report.index if name != "model"}
    model_run = tracking.log_evaluation(
        "coupon_uplift",
        run_date,
        run_id,
        f"held-out {conf.holdout_share:.0%} of {data['campaign'].nunique()} past coupon campaigns' customers",
        "qini",
        float(figure["qini"]),
        baselines,
        params={
            "method": conf.method,
            "algorithm": conf.algorithm,
            "seed": conf.seed,
            "campaigns": ",".join(sorted(data["campaign"].unique())),
            "features": ",".join(features),
        },
        metrics={
            f"{name.replace(' ', '_')}_{column}": float(report.loc[name, column])
            for name in report.index
            for column in report.columns
            if column.startswith("uplift_at_")
        }
        | {"holdout_customers": len(holdout), "training_customers": len(train)},
    )
    return {"qini": float(figure["qini"]), **{f"{name.replace(' ', '_')}_qini": value for name, value in baselines.items()}}, model_run


def choose_offers(
    model: uplift.UpliftModel, today: pd.DataFrame, terms: pd.DataFrame, budget: float, min_expected_uplift: float
) -> pd.DataFrame:
    """Each customer's best coupon among the past campaigns' terms, within the budget (models/uplift)."""
    scored = []
    for term in terms.itertuples():
        frame = uplift.with_term_features(
            today.assign(discount_type=term.discount_type, discount_value=term.discount_value, window_days=term.window_days)
        )
        scored.append(
            pd.DataFrame(
                {
                    "customer_id": today["customer_id"],
                    "coupon": term.coupon,
                    "expected_uplift": model.expected_uplift(frame),
                    "baseline_probability": model.baseline_probability(frame),
                }
            )
        )
    value = pd.to_numeric(today["expected_order_value"], errors="coerce").astype(float)
    value = value.fillna(pd.to_numeric(today["avg_order_value"], errors="coerce").astype(float))
    order_value = pd.DataFrame({"customer_id": today["customer_id"], "expected_order_value": value.fillna(value.median()).fillna(0.0)})
    return uplift.select_offers(pd.concat(scored, ignore_index=True), order_value, terms, budget, min_expected_uplift)
