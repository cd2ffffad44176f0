"""Purchase histories for the repeat-purchase models, and the churn label: Spark functions of silver orders.

The summary follows the BG/NBD convention (Fader, Hardie & Lee 2005), in days: purchases are counted per
day (several orders on one day are one purchase, of their summed value); `frequency` is the number of
*repeat* purchase days, `recency_days` the days from the first to the last purchase day, `T_days` the days
from the first purchase day to `as_of`, `monetary_value` the mean value of the repeat purchase days (0
without repeats). Values are order totals (after discounts) of orders that count as purchases at `as_of`:
cancelled and returned orders are left out, never line items (see `features.customer.orders_as_of`).
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from core.rundate import end_of
from features.customer import orders_as_of

HISTORY_COLUMNS = ("customer_id", "frequency", "recency_days", "T_days", "monetary_value")


def purchase_history(orders: DataFrame, as_of: date, purchase_statuses: Sequence[str]) -> DataFrame:
    """One row per customer with a purchase by `as_of`: frequency, recency_days, T_days, monetary_value."""
    days = (
        orders_as_of(orders, as_of, purchase_statuses).where("is_purchase")
        .groupBy("customer_id", F.to_date("created_at").alias("day"))
        .agg(F.sum("total_amount").cast("double").alias("value"))
    )
    first_day = F.min("day")
    per_customer = days.groupBy("customer_id").agg(
        (F.count("*") - 1).alias("frequency"),
        F.date_diff(F.max("day"), first_day).alias("recency_days"),
        F.date_diff(F.lit(as_of), first_day).alias("T_days"),
        F.sum("value").alias("_total"),
        F.min_by("value", "day").alias("_first_value"),
    )
    return per_customer.select(
        "customer_id",
        F.col("frequency").cast("long").alias("frequency"),
        F.col("recency_days").cast("double").alias("recency_days"),
        F.col("T_days").cast("double").alias("T_days"),
        F.when(F.col("frequency") > 0, (F.col("_total") - F.col("_first_value")) / F.col("frequency"))
        .otherwise(F.lit(0.0)).alias("monetary_value"),
    )


def with_future_purchases(customers: DataFrame, orders: DataFrame, as_of: date, horizon_days: int,
                          purchase_statuses: Sequence[str]) -> DataFrame:
    """Add what happened after `as_of`: `purchases_in_horizon` (purchase days in the next `horizon_days`
    days) and `is_churned` (none), as known at the horizon's end.

    An order placed in the window counts when it is still a purchase on the window's last day, so an
    order cancelled within the window does not keep its customer. Only for dates at least `horizon_days`
    before the data's end: later windows are not complete.
    """
    horizon_end = as_of + timedelta(days=horizon_days)
    bought = (
        orders_as_of(orders, horizon_end, purchase_statuses)
        .where(F.col("is_purchase") & (F.col("created_at") >= F.lit(end_of(as_of))))
        .groupBy("customer_id").agg(F.count_distinct(F.to_date("created_at")).alias("purchases_in_horizon"))
    )
    return (customers.join(bought, "customer_id", "left")
            .withColumn("purchases_in_horizon", F.coalesce("purchases_in_horizon", F.lit(0)).cast("long"))
            .withColumn("is_churned", F.col("purchases_in_horizon") == 0))
