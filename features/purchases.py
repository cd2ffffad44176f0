"""Purchase histories for the repeat-purchase models, and the churn label: Spark functions of silver orders.

The summary follows the BG/NBD convention (Fader, Hardie & Lee 2005), in days: purchases are counted per
day (several orders on one day are one purchase, of their summed value). Columns, with the paper's symbol:
`repeat_purchase_days` (x) the purchase days after the first, `purchase_span_days` (t_x) the days from the
first to the last purchase day, `days_since_first_purchase` (T) the days from the first purchase day to
`as_of`, `mean_repeat_order_value` (m_x, shop currency) the mean value of the repeat purchase days (0
without repeats). lifetimes calls x `frequency`; here `frequency` is not used, since it reads as the
number of purchases. Values are order totals (after discounts) of orders that count as purchases at `as_of`:
cancelled and returned orders are left out, never line items (see `features.customer.orders_as_of`).
Credit notes (negative totals) are no purchase days; with `rfm.monetary_value: net` (the default) they
are taken off the repeat purchases' value, so `mean_repeat_order_value` is net and may be 0 or negative
(the Gamma-Gamma model then leaves the customer out: `jobs.predict`); `gross` leaves them out. Guest
orders (no customer) are in no history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from core.rundate import end_of
from features.customer import orders_as_of, valued_orders

#: The purchase model's inputs (BG/NBD's x, t_x, T), in the order `models.lifetime` takes them.
PURCHASE_MODEL_INPUTS = ("repeat_purchase_days", "purchase_span_days", "days_since_first_purchase")
HISTORY_COLUMNS = ("customer_id", *PURCHASE_MODEL_INPUTS, "mean_repeat_order_value")


def purchase_history(orders: DataFrame, as_of: date, purchase_statuses: Sequence[str], monetary_value: str = "net") -> DataFrame:
    """One row per customer with a purchase by `as_of`: the columns of `HISTORY_COLUMNS` (days, shop currency;
    values net of credit notes or gross, `monetary_value`)."""
    known = orders_as_of(orders, as_of, purchase_statuses).where(F.col("customer_id").isNotNull())
    days = (
        known.where("is_purchase")
        .groupBy("customer_id", F.to_date("created_at").alias("day"))
        .agg(F.sum("total_amount").cast("double").alias("value"))
    )
    first_day = F.min("day")
    per_customer = days.groupBy("customer_id").agg(
        (F.count("*") - 1).alias("repeat_purchase_days"),
        F.date_diff(F.max("day"), first_day).alias("purchase_span_days"),
        F.date_diff(F.lit(as_of), first_day).alias("days_since_first_purchase"),
        F.min_by("value", "day").alias("_first_value"),
    )
    totals = valued_orders(known, monetary_value).groupBy("customer_id").agg(F.sum("total_amount").cast("double").alias("_total"))
    return per_customer.join(totals, "customer_id", "left").select(
        "customer_id",
        F.col("repeat_purchase_days").cast("long").alias("repeat_purchase_days"),
        F.col("purchase_span_days").cast("double").alias("purchase_span_days"),
        F.col("days_since_first_purchase").cast("double").alias("days_since_first_purchase"),
        F.when(F.col("repeat_purchase_days") > 0, (F.col("_total") - F.col("_first_value")) / F.col("repeat_purchase_days"))
        .otherwise(F.lit(0.0))
        .alias("mean_repeat_order_value"),
    )


def with_future_purchases(
    customers: DataFrame, orders: DataFrame, as_of: date, horizon_days: int, purchase_statuses: Sequence[str]
) -> DataFrame:
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
        .groupBy("customer_id")
        .agg(F.count_distinct(F.to_date("created_at")).alias("purchases_in_horizon"))
    )
    return (
        customers.join(bought, "customer_id", "left")
        .withColumn("purchases_in_horizon", F.coalesce("purchases_in_horizon", F.lit(0)).cast("long"))
        .withColumn("is_churned", F.col("purchases_in_horizon") == 0)
    )
