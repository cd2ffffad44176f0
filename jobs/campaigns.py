"""campaigns: gold scores and segments -> the run date's campaign audiences (`gold/campaign_audiences`).

Reads the campaigns of `conf/campaigns/` (`campaigns.folder`), checks each one's expressions against the
customer view before anything is written, and writes, for every campaign, its eligible customers with
their group (treatment, control, suppressed) and reason (models/campaigns.py). "Contacted recently" looks
only at earlier run dates in gold, so a rerun of a date writes the same audiences.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from core.config import Settings
from core.crm_schema import CRM_NAMES
from core.feature_schema import NAMES as FEATURE_NAMES
from core.lake import Lake
from core.spark import spark_session
from models.campaigns import Suppression, audiences, check_expressions, load_campaigns

log = logging.getLogger(__name__)

TABLE = "campaign_audiences"


def run(run_date: date, settings: Settings, run_id: str) -> dict[str, dict[str, int]]:
    """Write the run date's audiences; returns per campaign the customers per group."""
    folder = settings.conf_dir / settings.campaigns.folder
    campaigns = load_campaigns(folder)
    with spark_session(settings, "campaigns") as spark:
        lake = Lake(spark, settings.lake_location)
        view = customer_view(lake, run_date).cache()
        for campaign in campaigns:
            check_expressions(campaign, view, str(folder / f"{campaign.name}.yaml"))
        warn_of_unknown_consent(view, settings.campaigns.consent_when_missing)
        recent = contacted_recently(lake, run_date, settings.campaigns.cooldown_days)
        result = audiences(view, campaigns, Suppression(recent, settings.campaigns.consent_when_missing))
        if result is None:
            log.warning("no enabled campaign in %s: campaign_audiences for %s is empty", folder, run_date)
        lake.write_gold(result, TABLE, run_date, run_id)
        written = lake.read("gold", TABLE).where(F.col("as_of") == F.lit(run_date))
        counts: dict[str, dict[str, int]] = {campaign.name: {} for campaign in campaigns}
        for row in written.groupBy("campaign", "audience_group").count().collect():
            counts[row["campaign"]][row["audience_group"]] = row["count"]
    for name, groups in counts.items():
        log.info("campaign %s for %s: %s", name, run_date, groups)
    return counts


def warn_of_unknown_consent(view: DataFrame, consent_when_missing: str) -> int:
    """Log a warning when the shop does not record some customers' marketing consent (accepts_marketing null:
    the column is null, or the shop has none); returns how many customers that is."""
    row = view.agg(F.count("*").alias("customers"), F.count(F.when(F.col("accepts_marketing").isNull(), 1)).alias("unknown")).first()
    if row["unknown"]:
        treated = {
            "unknown": "suppressed from every campaign as consent_unknown",
            "granted": "contacted as if they had consented",
            "denied": "suppressed as unsubscribed",
        }[consent_when_missing]
        log.warning(
            "marketing consent unknown for %d of %d customers (customers.accepts_marketing is null%s): %s "
            "(campaigns.consent_when_missing: %s)",
            row["unknown"],
            row["customers"],
            ", or the shop has no such column" if row["unknown"] == row["customers"] else "",
            treated,
            consent_when_missing,
        )
    return row["unknown"]


def customer_view(lake: Lake, run_date: date) -> DataFrame:
    """One row per customer as of `run_date`: what a campaign's `audience` and `order_by` may use.

    The customer features (`purchase_count` and `total_spent` also under their CRM names in customer_segments,
    `frequency` and `monetary`, which campaign files use), the segment (with `segment_since`), the scores,
    consent and language from the profile, `has_email`, `clv_12m_rank` (the customer's percentile of clv_12m among the scored, 0-1) and
    `run_date` itself (for conditions such as `next_order_date <= date_add(run_date, 14)`), and from the
    night's other models `satisfaction_score`, `likely_category` (with `likely_category_probability`),
    `offered_coupon` (with its `expected_uplift`) and the browsing activity (`customer_activity`: views, visits,
    top categories, browse_abandoned_products and their ids, ...). No personal data: a campaign selects on behaviour, the
    export adds the contact. Its columns are exactly `models.campaigns.VIEW_COLUMNS`, which campaign files are
    checked against when loaded (tested).
    """
    day = F.col("as_of") == F.lit(run_date)
    features = (
        lake.read("gold", "customer_features")
        .where(day)
        .select(
            # the view's satisfaction_score is the model's (customer_satisfaction), not the features' star-rating form
            *[name for name in FEATURE_NAMES if name not in ("as_of", "satisfaction_score")],
            *[F.col(measure).alias(crm) for measure, crm in CRM_NAMES["customer_segments"].items()],
        )
    )
    segments = (
        lake.read("gold", "customer_segments")
        .where(day)
        .select(
            "customer_id",
            "segment",
            "previous_segment",
            F.col("changed_at").alias("segment_since"),
            "rfm_code",
            "r_score",
            "f_score",
            "m_score",
            "cluster_id",
        )
    )
    scores = (
        lake.read("gold", "customer_scores")
        .where(day)
        .select(
            "customer_id",
            "churn_probability",
            "churn_risk",
            "p_alive",
            "expected_orders_30d",
            "expected_orders_90d",
            "expected_orders_365d",
            "expected_order_value",
            "clv_12m",
            "next_order_date",
        )
    )
    profile = (
        lake.read("gold", "customer_profile")
        .where(day)
        .select("customer_id", "language", "country", "accepts_marketing", F.col("email").isNotNull().alias("has_email"), "registered_at")
    )
    ranks = scores.where(F.col("clv_12m").isNotNull()).select(
        "customer_id", F.percent_rank().over(Window.orderBy("clv_12m")).alias("clv_12m_rank")
    )
    satisfaction = lake.read("gold", "customer_satisfaction").where(day).select("customer_id", "satisfaction_score")
    likely = (
        lake.read("gold", "category_propensity")
        .where(day & (F.col("rank") == 1))
        .select("customer_id", F.col("category").alias("likely_category"), F.col("probability").alias("likely_category_probability"))
    )
    offers = lake.read("gold", "coupon_offers").where(day).select("customer_id", F.col("coupon").alias("offered_coupon"), "expected_uplift")
    activity = lake.read("gold", "customer_activity").where(day).drop("as_of", "run_id")
    activity = activity.select("customer_id", *[name for name in activity.columns if name not in features.columns])
    view = features
    for part in (segments, scores, profile, ranks, satisfaction, likely, offers, activity):
        view = view.join(part, "customer_id", "left")
    return view.withColumn("run_date", F.lit(run_date))


def contacted_recently(lake: Lake, run_date: date, cooldown_days: int) -> DataFrame:
    """Customers in the treatment group of any campaign on a run date within `cooldown_days` before `run_date`."""
    if cooldown_days == 0 or not lake.exists("gold", TABLE):
        return lake.spark.createDataFrame([], "customer_id long")
    return (
        lake.read("gold", TABLE)
        .where(
            F.col("as_of").between(F.lit(run_date - timedelta(days=cooldown_days)), F.lit(run_date - timedelta(days=1)))
            & (F.col("audience_group") == "treatment")
        )
        .select("customer_id")
        .distinct()
    )


def preview(settings: Settings, run_date: date | None = None) -> list[str]:
    """`crm campaigns`: each enabled campaign checked against the customer view of `run_date` (default: the
    newest run date gold holds) and how many customers its condition selects; nothing is written."""
    folder = settings.conf_dir / settings.campaigns.folder
    campaigns = load_campaigns(folder)
    with spark_session(settings, "campaigns") as spark:
        lake = Lake(spark, settings.lake_location)
        if not lake.exists("gold", "customer_scores"):
            raise ValueError(
                f"no gold customer view in {settings.lake_location.spark_uri('gold')} to check the campaigns against; "
                "run a night first: crm run --date YYYY-MM-DD"
            )
        day = run_date or lake.read("gold", "customer_scores").agg(F.max("as_of")).first()[0]
        view = customer_view(lake, day).cache()
        lines = [f"{len(campaigns)} campaign(s) in {folder}, checked against the customer view of {day} ({view.count():,} customers):"]
        for campaign in campaigns:
            check_expressions(campaign, view, str(folder / f"{campaign.name}.yaml"))
            selected = view.where(F.expr(campaign.audience)).count()
            cap = f", at most {campaign.max_audience:,}" if campaign.max_audience else ""
            lines.append(
                f"  {campaign.priority:>4}  {campaign.name:<24} {selected:>8,} selected{cap}, "
                f"{campaign.channel}, control {campaign.control_share:.0%}: {campaign.description}"
            )
    return lines
