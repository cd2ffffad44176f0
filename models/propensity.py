"""Category propensity: per customer, the probability of buying from each category in the next
`horizon_days` days, from what they bought by `as_of`.

Features (point in time, `category_features`): per category the purchase orders holding it, their share
of the customer's purchase orders, the days since the last one and, when the lake has browsing events, the
customer's product views in the category in the last `VIEW_DAYS` days (what they look at before they buy);
overall the purchase orders (`purchase_count`), days since the last purchase, spend (`total_spent`, shop
currency) and days since registration. The model
is one scikit-learn logistic regression per category (binary relevance) on those features made linear
(counts and amounts log1p, days as a decay exp(-days / `RECENCY_SCALE_DAYS`), standardised): fitted on the
features at `as_of - horizon_days` with the labels "bought the category in (as_of - horizon_days, as_of]",
then applied to the features at `as_of`. A category no customer (or every customer) bought in the training
window gets its training share as a constant probability.

Baseline: the customer's most bought categories (most purchase orders, then latest, then name), filled
with the categories most bought by everyone. Metric (`evaluate_propensity`): hit rate@1 and @3 (share of
customers whose top 1 / top 3 categories hold one they bought in the evaluation window) and mean average
precision over the ranked categories, on the customers with a purchase in that window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from core.config import RecommendSettings
from core.rundate import end_of
from features.customer import known_at
from models.recommend import purchase_lines

PROPENSITY_COLUMNS = ("customer_id", "rank", "category", "probability")
#: Days since the last purchase (of a category) for a customer who never bought it: beyond any history.
NEVER_DAYS = 10_000
OVERALL_FEATURES = ("purchase_count", "recency_days", "total_spent", "tenure_days")
#: Days over which the weight of a last purchase decays by a factor e in the model's inputs.
RECENCY_SCALE_DAYS = 90.0
#: Days of browsing counted in the `views_<category>` features.
VIEW_DAYS = 30
#: Inverse L2 regularisation strength of each category's logistic regression.
INVERSE_REGULARISATION = 1.0


NO_CATEGORIES = (
    "no product has a category (products.category is null for every product, or the shop has no such column): no category propensity"
)


class PropensityDataError(ValueError):
    """The shop's data cannot give category propensities (no product categories, no customer to judge on)."""


def categories_of(products: DataFrame, as_of: date) -> list[str]:
    """The categories of the catalogue known at `as_of`, sorted (a few dozen at most)."""
    rows = known_at(products, as_of).where(F.col("category").isNotNull()).select("category").distinct().collect()
    return sorted(row["category"] for row in rows)


def category_features(
    silver: Mapping[str, DataFrame], as_of: date, purchase_statuses: Sequence[str], categories: Sequence[str]
) -> pd.DataFrame:
    """One row per customer registered by `as_of`, indexed by customer_id: `orders_<c>` (purchase orders
    with category c), `share_<c>` (their share of the customer's purchase orders, 0..1), `days_since_<c>`
    (days since the last one; `NEVER_DAYS` if never), `views_<c>` (product views in c in the last `VIEW_DAYS`
    days; 0 without events), and `OVERALL_FEATURES` (orders, days, shop currency)."""
    day = F.lit(as_of)
    lines = purchase_lines(silver, as_of, purchase_statuses).join(
        silver["products"].select(F.col("id").alias("product_id"), "category"), "product_id"
    )
    orders = (
        silver["orders"]
        .select(F.col("id").alias("order_id"), "total_amount")
        .join(lines.select("order_id", "customer_id", "ordered_at").distinct(), "order_id")
    )
    overall = orders.groupBy("customer_id").agg(
        F.count("*").alias("purchase_count"),
        F.date_diff(day, F.to_date(F.max("ordered_at"))).alias("recency_days"),
        F.sum("total_amount").cast("double").alias("total_spent"),
    )
    per_category = (
        lines.groupBy("customer_id")
        .pivot("category", list(categories))
        .agg(F.count_distinct("order_id").alias("orders"), F.date_diff(day, F.to_date(F.max("ordered_at"))).alias("days_since"))
    )
    customers = known_at(silver["customers"], as_of).select(
        F.col("id").alias("customer_id"), F.date_diff(day, F.to_date("created_at")).alias("tenure_days")
    )
    frame = customers.join(overall, "customer_id", "left").join(per_category, "customer_id", "left")
    events = silver.get("events")
    if events is not None:
        since = end_of(as_of) - timedelta(days=VIEW_DAYS)
        views = (
            events.where(
                (F.col("event_type") == "view")
                & F.col("customer_id").isNotNull()
                & (F.col("occurred_at") >= F.lit(since))
                & (F.col("occurred_at") < F.lit(end_of(as_of)))
            )
            .groupBy("customer_id")
            .pivot("category", list(categories))
            .count()
            .select("customer_id", *[F.col(f"`{c}`").alias(f"{c}_views") for c in categories])
        )
        frame = frame.join(views, "customer_id", "left")
    frame = frame.toPandas().set_index("customer_id").sort_index()
    features = pd.DataFrame(index=frame.index)
    purchase_count = frame["purchase_count"].fillna(0).astype(float)
    for category in categories:
        count = frame[f"{category}_orders"].fillna(0).astype(float)
        features[f"orders_{category}"] = count
        features[f"share_{category}"] = np.where(purchase_count > 0, count / purchase_count.where(purchase_count > 0, 1), 0.0)
        features[f"days_since_{category}"] = frame[f"{category}_days_since"].fillna(NEVER_DAYS).astype(float)
        views = frame[f"{category}_views"] if f"{category}_views" in frame else pd.Series(0.0, index=frame.index)
        features[f"views_{category}"] = views.fillna(0).astype(float)
    features["purchase_count"] = purchase_count
    features["recency_days"] = frame["recency_days"].fillna(NEVER_DAYS).astype(float)
    features["total_spent"] = frame["total_spent"].fillna(0).astype(float)
    features["tenure_days"] = frame["tenure_days"].astype(float)
    return features


def category_labels(
    silver: Mapping[str, DataFrame], as_of: date, horizon_days: int, purchase_statuses: Sequence[str], categories: Sequence[str]
) -> pd.DataFrame:
    """Per customer with a purchase in (as_of, as_of + horizon_days], whether they bought each category then
    (bool columns, one per category), as known at the horizon's end. Only for windows that have ended."""
    horizon_end = as_of + timedelta(days=horizon_days)
    rows = (
        purchase_lines(silver, horizon_end, purchase_statuses)
        .where(F.col("ordered_at") >= F.lit(end_of(as_of)))
        .join(silver["products"].select(F.col("id").alias("product_id"), "category"), "product_id")
        .select("customer_id", "category")
        .distinct()
        .toPandas()
    )
    table = pd.crosstab(rows["customer_id"], rows["category"]).reindex(columns=list(categories), fill_value=0)
    return (table > 0).rename_axis(index="customer_id", columns=None)


@dataclass
class CategoryPropensityModel:
    """One logistic regression per category (binary relevance); `fit` returns self."""

    seed: int
    categories_: list[str] = field(default_factory=list)
    classifiers_: dict[str, Pipeline | float] = field(default_factory=dict)
    features_: list[str] = field(default_factory=list)

    def fit(self, features: pd.DataFrame, labels: pd.DataFrame) -> "CategoryPropensityModel":
        """Fit on `features` (one row per customer) and bool `labels` (customers without a purchase in the
        label window are negatives for every category)."""
        y = labels.reindex(features.index, fill_value=False).astype(bool)
        self.categories_, self.features_, self.classifiers_ = list(labels.columns), list(features.columns), {}
        for category in self.categories_:
            target = y[category].to_numpy()
            if target.all() or not target.any():
                self.classifiers_[category] = float(target.mean())
                continue
            self.classifiers_[category] = make_pipeline(
                StandardScaler(), LogisticRegression(C=INVERSE_REGULARISATION, max_iter=1000, random_state=self.seed)
            ).fit(model_inputs(features), target)
        return self

    def probabilities(self, features: pd.DataFrame) -> pd.DataFrame:
        """P(buys category in the next horizon) per customer (rows) and category (columns), 0..1."""
        x = model_inputs(features[self.features_])
        return pd.DataFrame(
            {
                category: (np.full(len(x), model) if isinstance(model, float) else model.predict_proba(x)[:, 1])
                for category, model in self.classifiers_.items()
            },
            index=features.index,
        )


def model_inputs(features: pd.DataFrame) -> np.ndarray:
    """The features made linear: counts (orders, views) and amounts log1p, days since as exp(-days / RECENCY_SCALE_DAYS)
    (0 for never), shares and tenure as they are (tenure in years)."""
    columns = []
    for name in features.columns:
        values = features[name].to_numpy(dtype=float)
        if name.startswith("days_since_") or name == "recency_days":
            columns.append(np.exp(-values / RECENCY_SCALE_DAYS))
        elif name.startswith(("orders_", "views_")) or name in ("purchase_count", "total_spent"):
            columns.append(np.log1p(values))
        elif name == "tenure_days":
            columns.append(values / 365.25)
        else:
            columns.append(values)
    return np.column_stack(columns)


def top_categories(probabilities: pd.DataFrame, n: int) -> pd.DataFrame:
    """The `n` most likely categories per customer: customer_id, rank (1 = most likely), category,
    probability (ties: category name)."""
    long = (
        probabilities.rename_axis(index="customer_id", columns="category")
        .stack()
        .rename("probability")
        .reset_index()
        .sort_values(["customer_id", "probability", "category"], ascending=[True, False, True])
    )
    long["rank"] = long.groupby("customer_id").cumcount() + 1
    return (
        long[long["rank"] <= n][list(PROPENSITY_COLUMNS)]
        .reset_index(drop=True)
        .astype({"customer_id": "int64", "rank": "int32", "probability": "float64"})
    )


def most_bought_scores(features: pd.DataFrame, categories: Sequence[str]) -> pd.DataFrame:
    """The baseline as scores (higher first): the customer's purchase orders per category, ties broken by
    the more recent one, then by the categories' popularity among all customers."""
    counts = features[[f"orders_{c}" for c in categories]].to_numpy()
    recency = features[[f"days_since_{c}" for c in categories]].to_numpy()
    overall = counts.sum(axis=0)
    popularity_rank = overall.argsort().argsort() / max(len(categories), 1)  # 0..1, higher = more bought overall
    scores = counts * 1e6 + (NEVER_DAYS - recency) + popularity_rank
    return pd.DataFrame(scores, index=features.index, columns=list(categories))


def category_propensity(
    silver: Mapping[str, DataFrame], as_of: date, horizon_days: int, purchase_statuses: Sequence[str], options: RecommendSettings
) -> pd.DataFrame:
    """The `category_propensity` rows at `as_of`: fitted on the snapshot `horizon_days` before `as_of` with
    what was bought since, applied to the snapshot at `as_of`; `top_categories` per customer."""
    categories = _categories_or_fail(silver["products"], as_of)
    train_at = as_of - timedelta(days=horizon_days)
    model = CategoryPropensityModel(seed=options.seed).fit(
        category_features(silver, train_at, purchase_statuses, categories),
        category_labels(silver, train_at, horizon_days, purchase_statuses, categories),
    )
    probabilities = model.probabilities(category_features(silver, as_of, purchase_statuses, categories))
    return top_categories(probabilities, options.top_categories)


def evaluate_propensity(
    silver: Mapping[str, DataFrame], as_of: date, horizon_days: int, purchase_statuses: Sequence[str], options: RecommendSettings
) -> dict[str, float | int | str]:
    """Hit rate@1, @3 and mean average precision of the model and of the most-bought baseline on a time
    split: fitted at `as_of - 2 * horizon_days` (labels up to `as_of - horizon_days`), scored at
    `as_of - horizon_days` against what was bought in the last `horizon_days` up to `as_of`."""
    scored_at = as_of - timedelta(days=horizon_days)
    train_at = scored_at - timedelta(days=horizon_days)
    categories = _categories_or_fail(silver["products"], scored_at)
    model = CategoryPropensityModel(seed=options.seed).fit(
        category_features(silver, train_at, purchase_statuses, categories),
        category_labels(silver, train_at, horizon_days, purchase_statuses, categories),
    )
    features = category_features(silver, scored_at, purchase_statuses, categories)
    truth = category_labels(silver, scored_at, horizon_days, purchase_statuses, categories)
    truth = truth[truth.index.isin(features.index)]
    if truth.empty:
        raise PropensityDataError(
            f"no registered customer bought a product with a category in the {horizon_days} days after {scored_at}: nothing to evaluate on"
        )
    figures: dict[str, float | int | str] = {
        "scored_at": scored_at.isoformat(),
        "categories": len(categories),
        "customers": len(truth),
        "buyers_at_scoring": int((features["purchase_count"] > 0).sum()),
    }
    for name, scores in (("model", model.probabilities(features)), ("most_bought", most_bought_scores(features, categories))):
        figures.update({f"{name}_{key}": value for key, value in _hit_rates(scores.loc[truth.index], truth).items()})
    return figures


def _categories_or_fail(products: DataFrame, as_of: date) -> list[str]:
    categories = categories_of(products, as_of)
    if not categories:
        raise PropensityDataError(NO_CATEGORIES)
    return categories


def _hit_rates(scores: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Hit rate@1, @3 and mean average precision of `scores` against bool `truth` (same rows and columns)."""
    y = truth[scores.columns].to_numpy()
    s = scores.to_numpy()
    order = np.argsort(-s, axis=1, kind="stable")
    ranked_hits = np.take_along_axis(y, order, axis=1)
    return {
        "hit_rate_at_1": float(ranked_hits[:, :1].any(axis=1).mean()),
        "hit_rate_at_3": float(ranked_hits[:, :3].any(axis=1).mean()),
        "mean_average_precision": float(np.mean([average_precision_score(t, p) for t, p in zip(y, s)])),
    }
