"""Per-customer purchase features as of a date: recency, frequency and monetary value.

Point in time: only customers registered and orders placed up to the end of `as_of` count; nothing
after it leaks in. Amounts are in the shop's currency; recency and tenure are whole days.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def end_of(as_of: date) -> datetime:
    """The first instant after the day `as_of` (UTC): everything before it is known at `as_of`."""
    return datetime.combine(as_of + timedelta(days=1), time.min)


def purchases_as_of(orders: DataFrame, as_of: date, statuses: Sequence[str]) -> DataFrame:
    """Orders placed up to the end of `as_of` whose status counts as a purchase."""
    return orders.where((F.col("created_at") < F.lit(end_of(as_of))) & F.col("status").isin(list(statuses)))


def rfm_features(customers: DataFrame, orders: DataFrame, as_of: date, statuses: Sequence[str]) -> DataFrame:
    """One row per customer registered by `as_of`, with:

    - `recency_days`: days from the last purchase to `as_of` (null without purchases);
    - `frequency`: purchases (orders) up to `as_of`;
    - `monetary`: total spent up to `as_of`, shop currency (0 without purchases);
    - `avg_order_value`: `monetary / frequency` (null without purchases);
    - `first_order_at`, `last_order_at`: timestamps of the first and last purchase;
    - `tenure_days`: days from registration to `as_of`.
    """
    cutoff = F.lit(end_of(as_of))
    per_customer = (
        purchases_as_of(orders, as_of, statuses)
        .groupBy("customer_id")
        .agg(
            F.count("*").alias("frequency"),
            F.sum("total_amount").alias("monetary"),
            F.min("created_at").alias("first_order_at"),
            F.max("created_at").alias("last_order_at"),
        )
    )
    as_of_column = F.lit(as_of)
    return (
        customers.where(F.col("created_at") < cutoff)
        .select(F.col("id").alias("customer_id"), F.col("created_at").alias("registered_at"))
        .join(per_customer, "customer_id", "left")
        .select(
            as_of_column.alias("as_of"),
            "customer_id",
            F.date_diff(as_of_column, F.to_date("last_order_at")).alias("recency_days"),
            F.coalesce(F.col("frequency"), F.lit(0)).cast("long").alias("frequency"),
            F.coalesce(F.col("monetary"), F.lit(0)).cast("decimal(18,2)").alias("monetary"),
            (F.col("monetary") / F.col("frequency")).cast("decimal(18,2)").alias("avg_order_value"),
            "first_order_at",
            "last_order_at",
            F.date_diff(as_of_column, F.to_date("registered_at")).alias("tenure_days"),
        )
    )
