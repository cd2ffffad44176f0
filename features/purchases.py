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

A job that needs several histories of one shop (other as_of dates, windows after them) reads the orders
once (`orders_known_by`, to pandas) and derives each with the pandas twins `purchase_history_of` and
`future_purchase_days`, which give the same figures as the Spark functions (tests/test_purchases.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from core.rundate import end_of
from features.customer import MONETARY_VALUES, known_at, orders_as_of, valued_orders

#: The purchase model's inputs (BG/NBD's x, t_x, T), in the order `models.lifetime` takes them.
PURCHASE_MODEL_INPUTS = ("repeat_purchase_days", "purchase_span_days", "days_since_first_purchase")
HISTORY_COLUMNS = ("customer_id", *PURCHASE_MODEL_INPUTS, "mean_repeat_order_value")
#: The order columns the pandas histories need (`orders_known_by`).
ORDER_COLUMNS = ("id", "customer_id", "status", "total_amount", "created_at", "updated_at")


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


def orders_known_by(orders: DataFrame, as_of: date) -> DataFrame:
    """The silver orders created by the end of `as_of`, with `ORDER_COLUMNS`: what every purchase history and
    purchase window ending by `as_of` is made of (`purchase_history_of`, `future_purchase_days`)."""
    return known_at(orders, as_of).select(*ORDER_COLUMNS)


def _purchase_flags(orders: pd.DataFrame, as_of: date, purchase_statuses: Sequence[str]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """`orders` known at `as_of` (pandas, `ORDER_COLUMNS`) with their UTC `day`, and which of them were a
    purchase and a credit note then: `features.customer.orders_as_of` in pandas."""
    end = pd.Timestamp(end_of(as_of))
    created_at, updated_at = utc_timestamps(orders["created_at"]), utc_timestamps(orders["updated_at"])
    known = (created_at < end).to_numpy() & orders["customer_id"].notna().to_numpy()
    # Changed after as_of: still in progress then, so it counts (as in orders_as_of).
    counts = orders["status"].isin(list(purchase_statuses)).to_numpy() | (updated_at >= end).to_numpy()
    credit = np.array([amount is not None and amount == amount and amount < 0 for amount in orders["total_amount"]], dtype=bool)
    frame = pd.DataFrame({"customer_id": orders["customer_id"], "day": created_at.dt.floor("D"), "total_amount": orders["total_amount"]})
    return frame[known], (counts & ~credit)[known], (counts & credit)[known]


def utc_timestamps(timestamps: pd.Series) -> pd.Series:
    """Timestamps as UTC; naive ones (Spark's toPandas gives the session's zone, UTC here) are taken as UTC."""
    values = pd.to_datetime(timestamps)
    return values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")


def _as_double(amounts: pd.Series) -> pd.Series:
    """Summed order totals (Decimal, exact) as float64, as Spark's cast of a decimal sum to double."""
    return amounts.map(float).astype("float64")


def purchase_history_of(orders: pd.DataFrame, as_of: date, purchase_statuses: Sequence[str], monetary_value: str = "net") -> pd.DataFrame:
    """`purchase_history` in pandas, from the orders of `orders_known_by` (any as_of up to theirs): one row per
    customer with a purchase by `as_of`, indexed by customer_id in order, the other `HISTORY_COLUMNS` (days,
    shop currency), the same figures to the bit."""
    if monetary_value not in MONETARY_VALUES:
        raise ValueError(f"rfm.monetary_value: {monetary_value!r}; expected one of {', '.join(MONETARY_VALUES)}")
    known, is_purchase, is_credit = _purchase_flags(orders, as_of, purchase_statuses)
    days = known[is_purchase].groupby(["customer_id", "day"], sort=True)["total_amount"].sum().map(float).rename("value").reset_index()
    per_customer = days.groupby("customer_id", sort=True).agg(
        purchase_days=("day", "size"), first_day=("day", "min"), last_day=("day", "max"), first_value=("value", "first")
    )
    valued = is_purchase | is_credit if monetary_value == "net" else is_purchase
    total = _as_double(known[valued].groupby("customer_id", sort=True)["total_amount"].sum()).reindex(per_customer.index)
    repeat_purchase_days = (per_customer["purchase_days"] - 1).astype("int64")
    as_of_day = pd.Timestamp(as_of).tz_localize("UTC")
    history = pd.DataFrame(
        {
            "repeat_purchase_days": repeat_purchase_days,
            "purchase_span_days": (per_customer["last_day"] - per_customer["first_day"]).dt.days.astype("float64"),
            "days_since_first_purchase": (as_of_day - per_customer["first_day"]).dt.days.astype("float64"),
            "mean_repeat_order_value": np.where(
                repeat_purchase_days > 0,
                (total - per_customer["first_value"]) / repeat_purchase_days.where(repeat_purchase_days > 0, 1),
                0.0,
            ),
        },
        index=per_customer.index.astype("int64"),
    )
    return history.rename_axis("customer_id")


def future_purchase_days(orders: pd.DataFrame, as_of: date, horizon_days: int, purchase_statuses: Sequence[str]) -> pd.Series:
    """`purchases_in_horizon` of `with_future_purchases` in pandas: per customer (index customer_id) the purchase
    days in the `horizon_days` days after `as_of`, as known at the window's end; customers without one are
    not in it (0). `orders` from `orders_known_by` a date at or after the window's end."""
    known, is_purchase, _ = _purchase_flags(orders, as_of + timedelta(days=horizon_days), purchase_statuses)
    in_window = is_purchase & (known["day"] >= pd.Timestamp(end_of(as_of))).to_numpy()
    bought = known[in_window].groupby("customer_id", sort=True)["day"].nunique().astype("int64")
    return bought.set_axis(bought.index.astype("int64")).rename_axis("customer_id").rename("purchases_in_horizon")
