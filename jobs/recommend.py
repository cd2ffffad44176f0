"""recommend: purchases -> product recommendations and category propensity (`gold/recommendations`,
`gold/category_propensity`).

Recommendations (models/recommend.py): implicit-feedback ALS (Spark MLlib) fitted tonight on the order items
known at the run date; customers ALS cannot score (no purchase yet) get the most popular products of the
last `recommend.popularity_days` days; products a customer already bought are left out
(`recommend.exclude_bought`). `recommend.top_n` rows per customer, with the reason.
Category propensity (models/propensity.py): per customer, the probability of buying from each category in
the next `recommend.holdout_days` days, from point-in-time features; the `recommend.top_categories` most
likely per customer.

Before that, both are evaluated on a time split (fitted on what was known `holdout_days` before the run
date, checked on what was bought since): recall@10 of ALS against popularity, mean average precision of
the propensity model against "the category the customer bought most". Figures go to MLflow and the run
summary. Each evaluation runs when due: when no night of the last `mlflow.evaluate_every_days` days evaluated
the model with the same parameters (otherwise the night reports that one, with its date; two of tonight's
three ALS fits are the evaluation's). A shop younger than the split needs (one or two `holdout_days`) skips
the evaluation and says so.
"""

from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import functions as F

from core.config import Settings
from core.lake import Lake
from core.spark import checkpoint_dir, spark_session
from features.customer import silver_tables
from models import propensity, recommend, tracking

log = logging.getLogger(__name__)

TABLES = ("recommendations", "category_propensity")


def run(run_date: date, settings: Settings, run_id: str) -> dict:
    """Write the run date's recommendations and category propensities; returns rows per table, customers
    per recommendation reason, the holdout figures and `degraded`."""
    conf = settings.recommend
    statuses = settings.rfm.scored_statuses
    tracking.connect(settings.mlflow)
    degraded: dict[str, str] = {}
    figures: dict[str, float] = {}
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with (
        spark_session(settings, "recommend") as spark,
        checkpoint_dir(spark, settings, "recommend"),
    ):  # ALS's lineage grows with each iteration; without checkpoints the JVM stack overflows
        lake = Lake(spark, settings.lake_location)
        silver = silver_tables(lake)
        first_order = silver["orders"].agg(F.min("created_at")).first()[0]
        history_days = (run_date - first_order.date()).days if first_order is not None else 0

        if history_days > conf.holdout_days:
            judged, _ = tracking.evaluate_when_due(
                "product_recommendations",
                run_date,
                run_id,
                recommendation_params(settings),
                settings.mlflow.evaluate_every_days,
                lambda: evaluate_recommendations(silver, run_date, settings, run_id),
            )
            figures.update(judged)
            if not judged:
                degraded["recommendations_evaluation"] = (
                    f"no customer bought a product in the {conf.holdout_days} days up to {run_date} that they had not "
                    "bought before (recommend.exclude_bought): nothing to judge the recommendations on"
                )
        else:
            degraded["recommendations_evaluation"] = (
                f"{history_days} days of orders up to {run_date}: the time "
                f"split needs more than recommend.holdout_days ({conf.holdout_days})"
            )
        customers = lake.read("gold", "customer_features").where(F.col("as_of") == F.lit(run_date)).select("customer_id")
        recommended = recommend.recommendations(silver, customers, run_date, statuses, conf)

        likely = None
        if not propensity.categories_of(silver["products"], run_date):
            degraded["category_propensity"] = propensity.NO_CATEGORIES
        elif history_days > 2 * conf.holdout_days:
            try:
                judged, _ = tracking.evaluate_when_due(
                    "category_propensity",
                    run_date,
                    run_id,
                    propensity_params(settings),
                    settings.mlflow.evaluate_every_days,
                    lambda: evaluate_propensity(silver, run_date, settings, run_id),
                )
                figures.update(judged)
            except propensity.PropensityDataError as error:
                degraded["category_propensity_evaluation"] = str(error)
            try:
                likely = spark.createDataFrame(
                    propensity.category_propensity(silver, run_date, conf.holdout_days, statuses, conf),
                    schema="customer_id long, rank int, category string, probability double",
                )
            except propensity.PropensityDataError as error:
                degraded["category_propensity"] = str(error)
        else:
            degraded["category_propensity"] = (
                f"{history_days} days of orders up to {run_date}: training needs "
                f"more than 2 x recommend.holdout_days ({2 * conf.holdout_days})"
            )

        counts = {
            table: lake.write_gold(rows, table, run_date, run_id)
            for table, rows in (("recommendations", recommended), ("category_propensity", likely))
        }
        reasons = {
            row["reason"]: row["customers"]
            for row in lake.read("gold", "recommendations")
            .where((F.col("as_of") == F.lit(run_date)) & (F.col("rank") == 1))
            .groupBy("reason")
            .agg(F.count("*").alias("customers"))
            .collect()
        }
    for reason in degraded.values():
        log.warning("recommend for %s: %s", run_date, reason)
    log.info("recommend for %s: %s, customers by reason %s; %s", run_date, counts, reasons, figures)
    return {"rows": counts, "customers_by_reason": reasons, "figures": figures, "degraded": degraded}


def recommendation_params(settings: Settings) -> dict:
    """What the recommendations' evaluation depends on (MLflow params; a change makes the next night evaluate)."""
    conf = settings.recommend
    return {
        "rank": conf.rank,
        "max_iter": conf.max_iter,
        "reg_param": conf.reg_param,
        "alpha": conf.alpha,
        "exclude_bought": conf.exclude_bought,
        "seed": conf.seed,
        "event_weights": conf.event_weights,
        "event_days": conf.event_days,
        "holdout_days": conf.holdout_days,
        "popularity_days": conf.popularity_days,
        "top_n": conf.top_n,
        "scored_statuses": sorted(settings.rfm.scored_statuses),
    }


def propensity_params(settings: Settings) -> dict:
    """What the category propensity's evaluation depends on."""
    conf = settings.recommend
    return {
        "horizon_days": conf.holdout_days,
        "seed": conf.seed,
        "top_categories": conf.top_categories,
        "scored_statuses": sorted(settings.rfm.scored_statuses),
    }


def evaluate_recommendations(silver, run_date: date, settings: Settings, run_id: str) -> tuple[dict[str, float], str | None]:
    """Recall@10 and precision@10 of ALS and of popularity on the last `holdout_days` (MLflow): the night's
    figures and the MLflow run; none (and nothing logged) when no customer bought a product new to them then
    (e.g. a shop of one product)."""
    conf = settings.recommend
    figures = recommend.evaluate_recommendations(silver, run_date, settings.rfm.scored_statuses, conf)
    if not figures["popularity_customers"]:
        return {}, None
    baselines = {"popularity": figures["popularity_recall_at_10"]}
    if "als_purchases_only_recall_at_10" in figures:  # the lake has events: ALS on purchases alone, beside
        baselines["ALS on purchases alone"] = figures["als_purchases_only_recall_at_10"]
    night_figures = {
        name: figures[name]
        for name in ("als_recall_at_10", "popularity_recall_at_10", "als_purchases_only_recall_at_10")
        if name in figures
    }
    mlflow_run = tracking.log_evaluation(
        "product_recommendations",
        run_date,
        run_id,
        f"purchases of the last {conf.holdout_days} days, fitted on those (and the browsing events) before ({figures['cutoff']})",
        "recall_at_10",
        figures["als_recall_at_10"],
        baselines,
        params=recommendation_params(settings),
        metrics={name: float(value) for name, value in figures.items() if isinstance(value, (int, float))},
        night_figures=night_figures,
    )
    return night_figures, mlflow_run


def evaluate_propensity(silver, run_date: date, settings: Settings, run_id: str) -> tuple[dict[str, float], str]:
    """Mean average precision of the category model and of "most bought category" on a time split (MLflow)."""
    conf = settings.recommend
    figures = propensity.evaluate_propensity(silver, run_date, conf.holdout_days, settings.rfm.scored_statuses, conf)
    night_figures = {
        "propensity_map": figures["model_mean_average_precision"],
        "most_bought_map": figures["most_bought_mean_average_precision"],
    }
    mlflow_run = tracking.log_evaluation(
        "category_propensity",
        run_date,
        run_id,
        f"categories bought in the {conf.holdout_days} days after {figures['scored_at']}",
        "mean_average_precision",
        figures["model_mean_average_precision"],
        {"most bought category": figures["most_bought_mean_average_precision"]},
        params=propensity_params(settings),
        metrics={name: float(value) for name, value in figures.items() if isinstance(value, (int, float))},
        night_figures=night_figures,
    )
    return night_figures, mlflow_run
