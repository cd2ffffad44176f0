"""Per-customer browsing activity as of a date: pure functions of silver events and orders and `as_of`.

An event counts when it occurred up to the end of `as_of` (UTC), attributed to the customer its session
logged in as (`silver/events.customer_id`, see `jobs/events.py`). Windows are whole days: "the last 7
days" are `as_of` and the 6 days before it. A login that happened after `as_of` still attributes the
session's earlier events: stitching is applied to silver as logins arrive, so the activity of a past date
computed today can count a few more of its anonymous events than it could on that day.

`gold/customer_activity` has the columns of `ACTIVITY_COLUMNS`; the churn features take the `CHURN_COLUMNS`
part of it (`core/feature_schema.py`).
"""

from __future__ import annotations

from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from core.feature_schema import ABANDONED_IDS_LISTED, ACTIVITY_COLUMNS
from core.rundate import end_of

#: The activity columns that join the churn features (gold/customer_features).
CHURN_COLUMNS = ("views_30d", "visits_30d", "visits_previous_30d", "cart_adds_30d", "days_since_last_visit")


def customer_activity(
    events: DataFrame | None, customers: DataFrame, purchase_lines: DataFrame, as_of: date, abandonment_days: int, top_categories: int
) -> DataFrame:
    """One row per customer of `customers` (`customer_id`), with `as_of` and the columns of ACTIVITY_COLUMNS.

    `purchase_lines` are the purchased order lines known at `as_of`: customer_id, product_id, created_at.
    Without events (`None`: the lake has none) every count is 0 and every time null.
    """
    day = F.lit(as_of)
    if events is None:
        summary = customers.select("customer_id")
    else:
        known = events.where(F.col("customer_id").isNotNull() & (F.col("occurred_at") < F.lit(end_of(as_of))))
        summary = (
            customers.select("customer_id")
            .join(_counts(known, as_of), "customer_id", "left")
            .join(_conversion(known, purchase_lines, as_of), "customer_id", "left")
            .join(_categories(known, as_of, top_categories), "customer_id", "left")
            .join(_abandoned(known, purchase_lines, as_of, abandonment_days), "customer_id", "left")
        )
    typed = _typed(summary, as_of, [(name, kind) for name, kind, _ in ACTIVITY_COLUMNS])
    return typed.select(day.alias("as_of"), *typed.columns)


def activity_counts(events: DataFrame | None, customers: DataFrame, as_of: date) -> DataFrame:
    """`customer_id` and the CHURN_COLUMNS of `customers` (the cheap part of customer_activity)."""
    known = None if events is None else events.where(F.col("customer_id").isNotNull() & (F.col("occurred_at") < F.lit(end_of(as_of))))
    summary = customers if known is None else customers.join(_counts(known, as_of), "customer_id", "left")
    return _typed(summary, as_of, [(name, kind) for name, kind, _ in ACTIVITY_COLUMNS if name in CHURN_COLUMNS])


def _typed(summary: DataFrame, as_of: date, columns: list[tuple[str, str]]) -> DataFrame:
    """`customer_id` and `columns` (name, type) of `summary`: counts 0 when missing, the rest null."""
    day = F.lit(as_of)
    if "last_visit_at" in summary.columns:
        summary = summary.withColumn("days_since_last_visit", F.date_diff(day, F.to_date("last_visit_at")))
    present = set(summary.columns)

    def column(name: str, kind: str):
        value = F.col(name) if name in present else F.lit(None)
        return (F.coalesce(value, F.lit(0)) if kind == "bigint" else value).cast(kind).alias(name)

    return summary.select("customer_id", *[column(name, kind) for name, kind in columns])


def _since(as_of: date, days: int):
    """The first instant of the last `days` days up to the end of `as_of`."""
    return F.lit(end_of(as_of) - timedelta(days=days))


def _counts(events: DataFrame, as_of: date) -> DataFrame:
    last_7, last_30, last_60 = (F.col("occurred_at") >= _since(as_of, days) for days in (7, 30, 60))
    view, search, cart = (F.col("event_type") == kind for kind in ("view", "search", "add_to_cart"))
    return events.groupBy("customer_id").agg(
        F.count(F.when(view & last_7, 1)).alias("views_7d"),
        F.count(F.when(view & last_30, 1)).alias("views_30d"),
        F.countDistinct(F.when(last_7, F.col("visit_id"))).alias("visits_7d"),
        F.countDistinct(F.when(last_30, F.col("visit_id"))).alias("visits_30d"),
        F.countDistinct(F.when(last_60 & ~last_30, F.col("visit_id"))).alias("visits_previous_30d"),
        F.count(F.when(search & last_30, 1)).alias("searches_30d"),
        F.count(F.when(cart & last_30, 1)).alias("cart_adds_30d"),
        F.max("occurred_at").alias("last_visit_at"),
    )


def _conversion(events: DataFrame, purchase_lines: DataFrame, as_of: date) -> DataFrame:
    viewed = (
        events.where((F.col("event_type") == "view") & F.col("product_id").isNotNull() & (F.col("occurred_at") >= _since(as_of, 30)))
        .select("customer_id", "product_id")
        .distinct()
    )
    bought = (
        purchase_lines.where(F.col("created_at") >= _since(as_of, 30))
        .select("customer_id", "product_id")
        .distinct()
        .withColumn("_bought", F.lit(1))
    )
    return (
        viewed.join(bought, ["customer_id", "product_id"], "left")
        .groupBy("customer_id")
        .agg(F.round(F.count("_bought") / F.count("*"), 4).alias("view_to_purchase_30d"))
    )


def _categories(events: DataFrame, as_of: date, top: int) -> DataFrame:
    views = (
        events.where((F.col("event_type") == "view") & F.col("category").isNotNull() & (F.col("occurred_at") >= _since(as_of, 30)))
        .groupBy("customer_id", "category")
        .agg(F.count("*").alias("_views"))
    )
    # Most views first; equal views: by name, so the list never depends on row order.
    ranked = F.sort_array(F.collect_list(F.struct(-F.col("_views"), F.col("category"))))
    return views.groupBy("customer_id").agg(F.array_join(F.slice(ranked, 1, top).getField("category"), ", ").alias("top_categories"))


def _abandoned(events: DataFrame, purchase_lines: DataFrame, as_of: date, days: int) -> DataFrame:
    """Products viewed or carted in the last `days` days and not bought since (by the end of as_of)."""
    interest = (
        events.where(
            F.col("event_type").isin("view", "add_to_cart")
            & F.col("product_id").isNotNull()
            & (F.col("occurred_at") >= _since(as_of, days))
        )
        .groupBy("customer_id", "product_id")
        .agg(F.max("occurred_at").alias("_last_seen"), F.max((F.col("event_type") == "add_to_cart").cast("int")).alias("_carted"))
    )
    last_bought = purchase_lines.groupBy("customer_id", "product_id").agg(F.max("created_at").alias("_bought_at"))
    open_interest = interest.join(last_bought, ["customer_id", "product_id"], "left").where(
        F.col("_bought_at").isNull() | (F.col("_bought_at") < F.col("_last_seen"))
    )
    recent_first = F.sort_array(F.collect_list(F.struct(-F.col("_last_seen").cast("long"), F.col("product_id"))))
    return open_interest.groupBy("customer_id").agg(
        F.count("*").alias("browse_abandoned_products"),
        F.array_join(F.slice(recent_first, 1, ABANDONED_IDS_LISTED).getField("product_id").cast("array<string>"), ",").alias(
            "browse_abandoned_product_ids"
        ),
        F.sum("_carted").alias("cart_abandoned_products"),
    )
