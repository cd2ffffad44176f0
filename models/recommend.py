"""Product recommendations: implicit-feedback ALS (Spark MLlib) with a popularity fallback, and their
time-split evaluation.

Implicit feedback follows Hu, Koren & Volinsky (2008), "Collaborative Filtering for Implicit Feedback
Datasets", ICDM: the observation r_ui of customer u and product i is the number of distinct purchase
orders of u that hold i (repeat purchases count, the units of one line do not: a box of six is one
choice), and ALS weighs it with the confidence c_ui = 1 + alpha * r_ui (eq. 2, `recommend.alpha`).
Purchases are those known at `as_of` (`features.customer.orders_as_of`: an order changed later counts as
it was then), lines of orders created up to the end of `as_of`; nothing later leaks in. Lines of one order
that repeat a product count as one line of their summed units; a product whose units in an order sum to 0
or less (returned within it) was not bought in it; credit notes are no purchases. Guest orders (no
customer) count for the products' popularity, and for no customer (ALS learns customers only).

Browsing events add to the observation when the lake has them (`silver/events`): each event of a customer
on a product in the `recommend.event_days` days up to `as_of` adds its type's weight
(`recommend.event_weights`, e.g. a view 0.1, an add to cart 0.5), so r_ui = purchase orders + weighted
events. A customer who browsed but never bought is then known to ALS. "Bought" (what is excluded, and the
evaluation's truth) stays purchases only.

Every customer of the given list gets `top_n` products (fewer only when the catalogue minus the products
they bought is smaller): first the ALS scores of customers ALS knows (`reason` 'similar_customers', score
= predicted preference p_ui, unitless, about 0..1), then, for customers ALS cannot score (no purchase yet)
or to fill a short list, the products most bought in the last `recommend.popularity_days` days (`reason` 'popular',
score = the product's share of purchase order lines in that window, 0..1). With `exclude_bought`, products
the customer bought by `as_of` are left out of both.

Ids: MLlib ALS keeps user and item ids as 32-bit integers; customer and product ids above 2^31 - 1 are
refused (`AlsIdError`) rather than silently wrapped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from core.config import RecommendSettings
from core.rundate import end_of
from features.customer import known_at, orders_as_of

#: Reasons written to `recommendations.reason`.
SIMILAR_CUSTOMERS, POPULAR = "similar_customers", "popular"
#: Days of purchases the popularity fallback counts, up to `as_of`.
#: Cut-off of the offline metrics (precision@K, recall@K).
EVAL_K = 10
RECOMMENDATION_COLUMNS = ("customer_id", "rank", "product_id", "score", "reason")
INT_MAX = 2**31 - 1


class AlsIdError(ValueError):
    """A customer or product id does not fit the 32-bit integer ids of MLlib ALS."""


def purchase_lines(silver: Mapping[str, DataFrame], as_of: date, purchase_statuses: Sequence[str]) -> DataFrame:
    """Order lines of purchases known at `as_of`: customer_id, order_id, product_id, quantity (units), ordered_at."""
    purchases = (
        orders_as_of(silver["orders"], as_of, purchase_statuses)
        .where("is_purchase")
        .select(F.col("id").alias("order_id"), "customer_id", F.col("created_at").alias("ordered_at"))
    )
    return (
        known_at(silver["order_items"], as_of)
        .groupBy("order_id", "product_id")
        .agg(F.sum("quantity").alias("quantity"))
        .where(F.col("quantity") > 0)
        .join(purchases, "order_id")
        .select("customer_id", "order_id", "product_id", "quantity", "ordered_at")
    )


def interactions(lines: DataFrame) -> DataFrame:
    """One row per (customer, product) bought: `orders` = distinct purchase orders holding it (the implicit
    observation r_ui, a count), `units` = units bought, `last_ordered_at`. Guest orders' lines (no
    customer) are left out."""
    return (
        lines.where(F.col("customer_id").isNotNull())
        .groupBy("customer_id", "product_id")
        .agg(
            F.count_distinct("order_id").alias("orders"),
            F.sum("quantity").cast("long").alias("units"),
            F.max("ordered_at").alias("last_ordered_at"),
        )
    )


def preferences(bought: DataFrame, events: DataFrame | None, as_of: date, options: RecommendSettings) -> DataFrame:
    """The observations ALS fits: (customer_id, product_id, `preference` = purchase orders + the weights of
    the customer's events on the product in the `event_days` days up to `as_of`); purchases alone without
    `events` or weights."""
    purchased = bought.select("customer_id", "product_id", F.col("orders").cast("double").alias("_orders"))
    weights = {kind: weight for kind, weight in options.event_weights.items() if weight > 0}
    if events is None or not weights:
        return purchased.withColumnRenamed("_orders", "preference")
    weight = F.lit(0.0)
    for kind, value in weights.items():
        weight = F.when(F.col("event_type") == kind, F.lit(float(value))).otherwise(weight)
    browsed = (
        events.where(
            F.col("customer_id").isNotNull()
            & F.col("product_id").isNotNull()
            & F.col("event_type").isin(list(weights))
            & (F.col("occurred_at") < F.lit(end_of(as_of)))
            & (F.col("occurred_at") >= F.lit(end_of(as_of) - timedelta(days=options.event_days)))
        )
        .groupBy("customer_id", "product_id")
        .agg(F.sum(weight).alias("_events"))
    )
    return purchased.join(browsed, ["customer_id", "product_id"], "full").select(
        "customer_id", "product_id", (F.coalesce("_orders", F.lit(0.0)) + F.coalesce("_events", F.lit(0.0))).alias("preference")
    )


def fit_als(observed: DataFrame, options: RecommendSettings, nonnegative: bool = False) -> ALSModel:
    """Implicit ALS (Hu et al. 2008) on `preferences` rows (or `interactions` rows: r_ui = `orders`),
    confidence 1 + alpha * r_ui,
    `coldStartStrategy='drop'` so unknown ids never give NaN scores.

    `nonnegative` factors (NNLS) are off by default: on small, cleanly separated data they can collapse to
    zero for a whole customer group (every score 0, tests/test_recommend.py). Lineage grows with
    `max_iter`; without a checkpoint folder (`SparkContext.setCheckpointDir`) a deep one can overflow the
    JVM stack, so the job sets one.

    Factors are split into as many blocks as the session's shuffle partitions (`spark.shuffle_partitions`), not
    MLlib's fixed 10 (ten tiny tasks per side and iteration on a small shop; docs/spark.md). The blocks seed the
    initial factors: the fit depends on that setting, not on the machine.
    """
    _check_ids(observed)
    rating = "preference" if "preference" in observed.columns else "orders"
    blocks = int(observed.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    als = ALS(
        userCol="customer_id",
        itemCol="product_id",
        ratingCol=rating,
        implicitPrefs=True,
        rank=options.rank,
        maxIter=options.max_iter,
        regParam=options.reg_param,
        alpha=options.alpha,
        seed=options.seed,
        nonnegative=nonnegative,
        coldStartStrategy="drop",
        numUserBlocks=blocks,
        numItemBlocks=blocks,
    )
    return als.fit(observed.select(F.col("customer_id").cast("int"), F.col("product_id").cast("int"), F.col(rating).cast("float")))


def popular_products(lines: DataFrame, products: DataFrame, as_of: date, popularity_days: int) -> DataFrame:
    """Every product of the catalogue known at `as_of` with `score` = its share of purchase order lines in
    the last `popularity_days` days (0..1; 0 when not bought then) and `popularity_rank` (1 = most bought;
    ties: all-time lines, then product id, so the order never depends on row order)."""
    since = F.lit(end_of(as_of - timedelta(days=popularity_days)))
    counts = lines.groupBy("product_id").agg(
        F.count(F.when(F.col("ordered_at") >= since, 1)).alias("recent_lines"), F.count("*").alias("all_lines")
    )
    catalogue = known_at(products, as_of).select(F.col("id").alias("product_id"))
    total = F.sum("recent_lines").over(Window.partitionBy())
    # One global window over the catalogue (thousands of rows): a single partition is fine at that size.
    ranked = (
        catalogue.join(counts, "product_id", "left")
        .fillna(0, ["recent_lines", "all_lines"])
        .withColumn("score", F.coalesce(F.col("recent_lines") / total, F.lit(0.0)).cast("double"))
    )
    order = Window.orderBy(F.desc("score"), F.desc("all_lines"), "product_id")
    return ranked.select("product_id", "score", F.row_number().over(order).alias("popularity_rank"))


def recommend_products(
    customers: DataFrame, bought: DataFrame, popular: DataFrame, top_n: int, exclude_bought: bool, model: ALSModel | None = None
) -> DataFrame:
    """`top_n` recommendations per customer of `customers` (a `customer_id` column): ALS first (when a
    `model` is given and knows the customer), popular products after; ranks 1..top_n.

    ALS is asked for `top_n` plus the most products any customer bought, so that `top_n` remain after the
    bought ones are taken out, without scoring the whole catalogue per customer.
    """
    depth = top_n + (_most_products_bought(bought) if exclude_bought else 0)
    targets = customers.select("customer_id").distinct()
    candidates = (
        targets.crossJoin(F.broadcast(popular.where(F.col("popularity_rank") <= depth).select("product_id", "score")))
        .withColumn("reason", F.lit(POPULAR))
        .withColumn("priority", F.lit(1))
    )
    if model is not None:
        _check_ids(targets)
        scored = (
            model.recommendForUserSubset(targets.select(F.col("customer_id").cast("int")), depth)
            .select(F.col("customer_id").cast("long"), F.inline("recommendations"))
            .select(
                "customer_id",
                F.col("product_id").cast("long"),
                F.col("rating").cast("double").alias("score"),
                F.lit(SIMILAR_CUSTOMERS).alias("reason"),
                F.lit(0).alias("priority"),
            )
        )
        candidates = scored.unionByName(candidates)
    if exclude_bought:
        candidates = candidates.join(bought.select("customer_id", "product_id"), ["customer_id", "product_id"], "left_anti")
    # A product both ALS and popularity propose stays once, as ALS's.
    first = Window.partitionBy("customer_id", "product_id").orderBy("priority")
    by_rank = Window.partitionBy("customer_id").orderBy("priority", F.desc("score"), "product_id")
    return (
        candidates.withColumn("_first", F.row_number().over(first))
        .where(F.col("_first") == 1)
        .withColumn("rank", F.row_number().over(by_rank))
        .where(F.col("rank") <= top_n)
        .select(F.col("customer_id").cast("long"), F.col("rank").cast("int"), F.col("product_id").cast("long"), "score", "reason")
    )


def recommendations(
    silver: Mapping[str, DataFrame], customers: DataFrame, as_of: date, purchase_statuses: Sequence[str], options: RecommendSettings
) -> DataFrame:
    """The `recommendations` rows of `customers` at `as_of`: ALS fitted on the purchases known then, the
    popularity fallback of the last `options.popularity_days` days; columns `RECOMMENDATION_COLUMNS`."""
    lines = purchase_lines(silver, as_of, purchase_statuses)
    bought = interactions(lines).cache()  # read by the fit, the exclusion and the ALS depth
    observed = preferences(bought, silver.get("events"), as_of, options)
    model = fit_als(observed, options) if observed.take(1) else None
    popular = popular_products(lines, silver["products"], as_of, options.popularity_days)
    return recommend_products(customers, bought, popular, options.top_n, options.exclude_bought, model)


def evaluate_recommendations(
    silver: Mapping[str, DataFrame], as_of: date, purchase_statuses: Sequence[str], options: RecommendSettings, k: int = EVAL_K
) -> dict[str, float | int | str]:
    """Precision@k and recall@k of ALS (with its fallback) and of popularity alone, on a time split.

    Both are fitted on purchases known at `cutoff = as_of - holdout_days`; the truth is the products each
    customer bought after the cutoff up to the end of `as_of` (orders still purchases at `as_of`). Customers
    with at least one such product are evaluated; with `exclude_bought` the products they had bought by the
    cutoff are not counted in their truth (neither recommender may propose them). Precision = hits / k,
    recall = hits / truth size, both averaged over customers; `warm_*` are the customers ALS knows.
    With events in `silver`, ALS is fitted on purchases and events (`als_*`) and also on purchases alone
    (`als_purchases_only_*`), so the events' worth is measured each time.
    """
    cutoff = as_of - timedelta(days=options.holdout_days)
    train_lines = purchase_lines(silver, cutoff, purchase_statuses)
    bought = interactions(train_lines).cache()  # read by the fit, the exclusion and both recommenders
    later = (
        purchase_lines(silver, as_of, purchase_statuses)
        .where((F.col("ordered_at") >= F.lit(end_of(cutoff))) & F.col("customer_id").isNotNull())
        .select("customer_id", "product_id")
        .distinct()
    )
    if options.exclude_bought:
        later = later.join(bought.select("customer_id", "product_id"), ["customer_id", "product_id"], "left_anti")
    truth = later.cache()  # joined with both recommenders
    customers = truth.select("customer_id").distinct()
    popular = popular_products(train_lines, silver["products"], cutoff, options.popularity_days)
    observed = preferences(bought, silver.get("events"), cutoff, options).cache()
    model = fit_als(observed, options)
    als = recommend_products(customers, bought, popular, k, options.exclude_bought, model)
    baseline = recommend_products(customers, bought, popular, k, options.exclude_bought)
    compared = [("als", als), ("popularity", baseline)]
    if silver.get("events") is not None:
        purchases_only = recommend_products(customers, bought, popular, k, options.exclude_bought, fit_als(bought, options))
        compared.append(("als_purchases_only", purchases_only))
    warm = observed.select("customer_id").distinct().withColumn("is_warm", F.lit(True))
    figures: dict[str, float | int | str] = {
        "cutoff": cutoff.isoformat(),
        "k": k,
        "train_interactions": bought.count(),
        "train_observations": observed.count(),
    }
    for name, recommended in compared:
        figures.update({f"{name}_{key}": value for key, value in _ranking_metrics(recommended, truth, warm, k).items()})
    bought.unpersist()
    observed.unpersist()
    truth.unpersist()
    return figures


def _ranking_metrics(recommended: DataFrame, truth: DataFrame, warm: DataFrame, k: int) -> dict[str, float | int]:
    """Mean precision@k and recall@k over the customers of `truth`, all of them and the warm ones."""
    hits = recommended.join(truth, ["customer_id", "product_id"]).groupBy("customer_id").agg(F.count("*").alias("hits"))
    per_customer = (
        truth.groupBy("customer_id")
        .agg(F.count("*").alias("relevant"))
        .join(hits, "customer_id", "left")
        .fillna(0, ["hits"])
        .join(warm, "customer_id", "left")
        .fillna(False, ["is_warm"])
        .withColumn("precision", F.col("hits") / F.lit(k))
        .withColumn("recall", F.col("hits") / F.col("relevant"))
    )
    row = per_customer.agg(
        F.count("*").alias("customers"),
        F.avg("precision").alias("precision"),
        F.avg("recall").alias("recall"),
        F.count(F.when(F.col("is_warm"), 1)).alias("warm_customers"),
        F.avg(F.when(F.col("is_warm"), F.col("precision"))).alias("warm_precision"),
        F.avg(F.when(F.col("is_warm"), F.col("recall"))).alias("warm_recall"),
    ).first()
    return {f"{key}_at_{k}" if key.endswith(("precision", "recall")) else key: value for key, value in row.asDict().items()}


def _most_products_bought(bought: DataFrame) -> int:
    """The most distinct products one customer bought (0 without purchases)."""
    return bought.groupBy("customer_id").count().agg(F.max("count")).first()[0] or 0


def _check_ids(frame: DataFrame) -> None:
    columns = [name for name in ("customer_id", "product_id") if name in frame.columns]
    row = frame.agg(*(F.max(name).alias(name) for name in columns)).first()
    too_big = {name: row[name] for name in columns if row[name] is not None and row[name] > INT_MAX}
    if too_big:
        raise AlsIdError(f"ALS needs ids up to {INT_MAX}; largest found: {too_big}")
