"""Per-customer features as of a date: pure functions of the silver tables and `as_of`.

Point in time: a row counts when it was created up to the end of `as_of` (UTC); nothing created after it
leaks in. Rows also change after they are created (an order is cancelled, a cart abandoned, an inquiry
resolved). Silver holds only their current state, so a change is seen at `as_of` only when it happened by
then (`updated_at`, `resolved_at`); a row changed later counts as it was when created:
- an order changed after `as_of` counts as a purchase (every status before the final cancelled or
  returned is a purchase status: placed, paid, shipped, delivered);
- a cart changed after `as_of` counts as open (carts are open until abandoned or converted);
- an inquiry resolved after `as_of` counts as open.
So the features of a past `as_of` computed today equal those computed on that day's data
(`tests/test_features.py` checks this property on generated histories).

Real shops' orders: a guest order (no `customer_id`) belongs to no customer and counts in no customer's
features (products still count it: `purchased_lines` keeps it). A credit note (an order with a negative
total: a refund or return invoice) is no purchase: it does not count as an order, and a customer's money
figures (`total_spent`, the spend of the last and previous 90 days) are net of it by default
(`rfm.monetary_value: net`, sales minus credits) or leave it out (`gross`). Lines of one order that repeat
a product count together (their units are summed).

Amounts are in the shop's currency; days are whole days. `core/feature_schema.py` documents every column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from core.rundate import end_of
from features.activity import CHURN_COLUMNS, activity_counts

#: Days in each half of the spend trend: the last N days up to `as_of`, and the N days before.
TREND_DAYS = 90
#: Silver tables the features read.
INPUT_TABLES = ("customers", "orders", "order_items", "products", "carts", "cart_items", "reviews", "inquiries")
#: Final order statuses that stop an order from counting as a purchase.
CANCELLED, RETURNED = "cancelled", "returned"
MONEY = "decimal(18,2)"
#: `rfm.monetary_value`: credit notes taken off a customer's money figures (net) or left out (gross).
MONETARY_VALUES = ("net", "gross")


def silver_tables(lake) -> dict[str, DataFrame]:
    """The silver tables the features read (`INPUT_TABLES`), and `events` when the lake has them."""
    tables = {table: lake.read("silver", table) for table in INPUT_TABLES}
    if lake.exists("silver", "events"):
        tables["events"] = lake.read("silver", "events")
    return tables


def known_at(table: DataFrame, as_of: date) -> DataFrame:
    """The rows created up to the end of `as_of`."""
    return table.where(F.col("created_at") < F.lit(end_of(as_of)))


def changed_by(as_of: date) -> Column:
    """True for a row whose current state was reached by the end of `as_of`."""
    return F.col("updated_at") < F.lit(end_of(as_of))


def orders_as_of(orders: DataFrame, as_of: date, purchase_statuses: Sequence[str]) -> DataFrame:
    """Orders known at `as_of` with `is_purchase`, `is_credit` (a credit note: negative total, in a status
    that counts), `is_cancelled` and `is_returned` as they were then."""
    settled = changed_by(as_of)
    # Changed after as_of: still in progress then, so it counts (see the module docstring).
    counts = F.col("status").isin(list(purchase_statuses)) | ~settled
    credit = F.coalesce(F.col("total_amount") < 0, F.lit(False))
    return known_at(orders, as_of).select(
        "id",
        "customer_id",
        "created_at",
        "total_amount",
        "coupon_id",
        (counts & ~credit).alias("is_purchase"),
        (counts & credit).alias("is_credit"),
        ((F.col("status") == CANCELLED) & settled).alias("is_cancelled"),
        ((F.col("status") == RETURNED) & settled).alias("is_returned"),
    )


def valued_orders(orders: DataFrame, monetary_value: str) -> DataFrame:
    """The orders (of `orders_as_of`) whose totals make a customer's money figures: purchases, and credit
    notes too when `monetary_value` is net (they subtract, being negative)."""
    if monetary_value not in MONETARY_VALUES:
        raise ValueError(f"rfm.monetary_value: {monetary_value!r}; expected one of {', '.join(MONETARY_VALUES)}")
    return orders.where("is_purchase OR is_credit" if monetary_value == "net" else "is_purchase")


def purchased_lines(silver: Mapping[str, DataFrame], as_of: date, purchase_statuses: Sequence[str]) -> DataFrame:
    """The order lines of purchases known at `as_of`: customer_id, product_id, quantity, created_at (the order's)."""
    purchases = orders_as_of(silver["orders"], as_of, purchase_statuses).where("is_purchase")
    return (
        known_at(silver["order_items"], as_of)
        .select("order_id", "product_id", "quantity")
        .join(purchases.select(F.col("id").alias("order_id"), "customer_id", "created_at"), "order_id")
        .select("customer_id", "product_id", "quantity", "created_at")
    )


def customer_features(
    silver: Mapping[str, DataFrame], as_of: date, purchase_statuses: Sequence[str], monetary_value: str = "net"
) -> DataFrame:
    """One row per customer registered by `as_of`, with the columns of `core.feature_schema.FEATURES`.

    The browsing columns come from `silver["events"]` when it is there (`features/activity.py`); without
    events their counts are 0 and days_since_last_visit null. Money is net of credit notes or gross
    (`monetary_value`, see the module docstring).
    """
    day = F.lit(as_of)
    orders = orders_as_of(silver["orders"], as_of, purchase_statuses)
    purchases = orders.where("is_purchase")
    customers = known_at(silver["customers"], as_of).select(F.col("id").alias("customer_id"), F.col("created_at").alias("registered_at"))
    frame = (
        customers.join(_purchase_summary(purchases, as_of), "customer_id", "left")
        .join(_spend(valued_orders(orders, monetary_value), as_of), "customer_id", "left")
        .join(_intervals(purchases), "customer_id", "left")
        .join(_order_outcomes(orders), "customer_id", "left")
        .join(_baskets(purchases, silver["order_items"], silver["products"], as_of), "customer_id", "left")
        .join(_carts(silver["carts"], silver["cart_items"], as_of), "customer_id", "left")
        .join(_reviews(silver["reviews"], as_of), "customer_id", "left")
        .join(_inquiries(silver["inquiries"], as_of), "customer_id", "left")
        .join(activity_counts(silver.get("events"), customers.select("customer_id"), as_of), "customer_id", "left")
    )
    zero = F.lit(0)
    return frame.select(
        day.alias("as_of"),
        "customer_id",
        F.date_diff(day, F.to_date("last_order_at")).alias("recency_days"),
        F.coalesce("purchase_count", zero).cast("long").alias("purchase_count"),
        F.coalesce("total_spent", zero).cast(MONEY).alias("total_spent"),
        F.when(F.col("purchase_count") > 0, F.col("total_spent") / F.col("purchase_count")).cast(MONEY).alias("avg_order_value"),
        "first_order_at",
        "last_order_at",
        F.date_diff(day, F.to_date("registered_at")).alias("tenure_days"),
        "mean_days_between_orders",
        "std_days_between_orders",
        F.coalesce("spend_last_90d", zero).cast(MONEY).alias("spend_last_90d"),
        F.coalesce("spend_previous_90d", zero).cast(MONEY).alias("spend_previous_90d"),
        F.when(F.col("spend_previous_90d") > 0, F.round(F.col("spend_last_90d") / F.col("spend_previous_90d"), 4))
        .cast("double")
        .alias("spend_trend"),
        "avg_basket_units",
        "favourite_category",
        F.coalesce("categories_bought", zero).cast("int").alias("categories_bought"),
        F.when(F.col("purchase_count") > 0, F.round(F.col("coupon_orders") / F.col("purchase_count"), 4))
        .cast("double")
        .alias("coupon_order_share"),
        F.coalesce("open_cart_value", zero).cast(MONEY).alias("open_cart_value"),
        F.coalesce("abandoned_cart_value", zero).cast(MONEY).alias("abandoned_cart_value"),
        F.coalesce("cancelled_orders", zero).cast("int").alias("cancelled_orders"),
        F.coalesce("returned_orders", zero).cast("int").alias("returned_orders"),
        F.coalesce("review_count", zero).cast("int").alias("review_count"),
        "avg_rating",
        F.coalesce("inquiry_count", zero).cast("int").alias("inquiry_count"),
        F.coalesce("open_inquiries", zero).cast("int").alias("open_inquiries"),
        satisfaction_score().alias("satisfaction_score"),
        *CHURN_COLUMNS,
    )


def satisfaction_score() -> Column:
    """Mean of the parts a customer has: stars ((avg_rating - 3) / 2, -1 to 1) and inquiries (minus the
    share still open at as_of, -1 to 0); null with neither. Point in time, so the churn model can learn it."""
    stars = (F.col("avg_rating") - 3) / 2
    inquiries = -F.col("open_inquiries") / F.col("inquiry_count")
    return (
        F.when(stars.isNotNull() & inquiries.isNotNull(), F.round((stars + inquiries) / 2, 4))
        .otherwise(F.round(F.coalesce(stars, inquiries), 4))
        .cast("double")
    )


def _purchase_summary(purchases: DataFrame, as_of: date) -> DataFrame:
    """Per customer: purchases, when the first and last were, and how many used a coupon."""
    return purchases.groupBy("customer_id").agg(
        F.count("*").alias("purchase_count"),
        F.min("created_at").alias("first_order_at"),
        F.max("created_at").alias("last_order_at"),
        F.count("coupon_id").alias("coupon_orders"),
    )


def _spend(valued: DataFrame, as_of: date) -> DataFrame:
    """Per customer: the money of the `valued_orders` in all, in the last 90 days and the 90 before (shop currency)."""
    days_ago = F.date_diff(F.lit(as_of), F.to_date("created_at"))
    return valued.groupBy("customer_id").agg(
        F.sum("total_amount").alias("total_spent"),
        F.sum(F.when(days_ago < TREND_DAYS, F.col("total_amount"))).alias("spend_last_90d"),
        F.sum(F.when(days_ago.between(TREND_DAYS, 2 * TREND_DAYS - 1), F.col("total_amount"))).alias("spend_previous_90d"),
    )


def _intervals(purchases: DataFrame) -> DataFrame:
    """Mean and sample standard deviation of the days between consecutive purchases."""
    previous = F.lag("created_at").over(Window.partitionBy("customer_id").orderBy("created_at", "id"))
    seconds = F.unix_timestamp("created_at") - F.unix_timestamp(previous)
    return (
        purchases.select("customer_id", (seconds / 86400.0).alias("gap_days"))
        .where(F.col("gap_days").isNotNull())
        .groupBy("customer_id")
        .agg(
            F.round(F.avg("gap_days"), 2).alias("mean_days_between_orders"),
            F.round(F.stddev_samp("gap_days"), 2).alias("std_days_between_orders"),
        )
    )


def _order_outcomes(orders: DataFrame) -> DataFrame:
    return orders.groupBy("customer_id").agg(
        F.count(F.when(F.col("is_cancelled"), 1)).alias("cancelled_orders"),
        F.count(F.when(F.col("is_returned"), 1)).alias("returned_orders"),
    )


def _baskets(purchases: DataFrame, order_items: DataFrame, products: DataFrame, as_of: date) -> DataFrame:
    """Units per purchase, and the category mix: the category with the most spend, and how many were bought."""
    lines = (
        known_at(order_items, as_of)
        .select("order_id", "product_id", "quantity", "unit_price")
        .join(purchases.select(F.col("id").alias("order_id"), "customer_id"), "order_id")
        .join(products.select(F.col("id").alias("product_id"), "category"), "product_id", "left")
    )
    units = lines.groupBy("customer_id").agg(
        F.round(F.sum("quantity") / F.countDistinct("order_id"), 2).alias("avg_basket_units"),
        F.countDistinct("category").alias("categories_bought"),
    )
    spend = (
        lines.where(F.col("category").isNotNull())
        .groupBy("customer_id", "category")
        .agg(F.sum(F.col("quantity") * F.col("unit_price")).alias("category_spend"))
    )
    # Most spend first; equal spend: the first category by name, so the result never depends on row order.
    favourite = spend.groupBy("customer_id").agg(
        F.sort_array(F.collect_list(F.struct(-F.col("category_spend"), F.col("category"))))[0]["category"].alias("favourite_category")
    )
    return units.join(favourite, "customer_id", "left")


def _carts(carts: DataFrame, cart_items: DataFrame, as_of: date) -> DataFrame:
    """Value of the carts open at `as_of`, and of those abandoned by then."""
    settled = changed_by(as_of)
    states = known_at(carts, as_of).select(
        F.col("id").alias("cart_id"),
        "customer_id",
        ((F.col("status") == "open") | ~settled).alias("is_open"),
        ((F.col("status") == "abandoned") & settled).alias("is_abandoned"),
    )
    value = F.col("quantity") * F.col("unit_price")
    return (
        known_at(cart_items, as_of)
        .select("cart_id", value.alias("value"))
        .join(states, "cart_id")
        .groupBy("customer_id")
        .agg(
            F.sum(F.when(F.col("is_open"), F.col("value"))).alias("open_cart_value"),
            F.sum(F.when(F.col("is_abandoned"), F.col("value"))).alias("abandoned_cart_value"),
        )
    )


def _reviews(reviews: DataFrame, as_of: date) -> DataFrame:
    return (
        known_at(reviews, as_of)
        .groupBy("customer_id")
        .agg(F.count("*").alias("review_count"), F.round(F.avg("rating"), 2).alias("avg_rating"))
    )


def _inquiries(inquiries: DataFrame, as_of: date) -> DataFrame:
    still_open = F.col("resolved_at").isNull() | (F.col("resolved_at") >= F.lit(end_of(as_of)))
    return (
        known_at(inquiries, as_of)
        .groupBy("customer_id")
        .agg(F.count("*").alias("inquiry_count"), F.count(F.when(still_open, 1)).alias("open_inquiries"))
    )
