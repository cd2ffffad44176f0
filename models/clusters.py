"""Behavioural clusters: k-means on scaled purchase features, k chosen by silhouette, described in words.

Only customers with a purchase are clustered (the others have no behaviour to group yet; their cluster is
null). The model is fitted with scikit-learn on a deterministic sample (a hash of the customer id), then
every customer is assigned to its nearest centroid in Spark, so the fit costs the same for 10k or 1M
customers. Cluster ids stay stable across runs: each new centroid takes the id of the previous run's
centroid it is matched to (least total distance, Hungarian assignment); unmatched ones get new ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from core.config import ClusterSettings

#: Features clustered, how each is transformed before scaling, and the words for a high and a low centroid.
#: Skewed amounts and counts are log-scaled so a few big spenders do not make their own clusters.
CLUSTER_FEATURES: dict[str, tuple[str, str, str]] = {
    "recency_days": ("log1p", "lapsed", "recent"),
    "purchase_count": ("log1p", "frequent", "one-off"),
    "avg_order_value": ("log1p", "high-spend", "low-spend"),
    "avg_basket_units": ("log1p", "big-basket", "small-basket"),
    "coupon_order_share": ("identity", "coupon-using", "full-price"),
    "categories_bought": ("log1p", "varied", "single-category"),
}
#: A centroid this many standard deviations from the mean gets the feature's word.
DESCRIBE_ABOVE = 0.5
#: At most this many words describe a cluster, the most distinctive first.
DESCRIBE_WORDS = 3


def transformed(column: str) -> Column:
    """The feature as clustered: null filled with 0 (e.g. no coupon share), then log-scaled when skewed."""
    how = CLUSTER_FEATURES[column][0]
    value = F.coalesce(F.col(column).cast("double"), F.lit(0.0))
    return F.log1p(F.greatest(value, F.lit(0.0))) if how == "log1p" else value


def to_units(values: np.ndarray) -> np.ndarray:
    """Transformed values (columns in CLUSTER_FEATURES order) back in the features' own units."""
    hows = [how for how, _, _ in CLUSTER_FEATURES.values()]
    return np.column_stack([np.expm1(values[:, j]) if how == "log1p" else values[:, j] for j, how in enumerate(hows)])


def from_units(values: np.ndarray) -> np.ndarray:
    """Values in the features' own units, transformed as they are clustered."""
    hows = [how for how, _, _ in CLUSTER_FEATURES.values()]
    return np.column_stack([np.log1p(np.maximum(values[:, j], 0)) if how == "log1p" else values[:, j] for j, how in enumerate(hows)])


def sample(buyers: DataFrame, settings: ClusterSettings, total: int) -> pd.DataFrame:
    """A deterministic sample of about `sample_customers` buyers (by a hash of the id), transformed."""
    share = min(1.0, settings.sample_customers / max(total, 1))
    bucket = F.pmod(F.xxhash64(F.col("customer_id"), F.lit(settings.seed)), F.lit(1_000_000))
    picked = buyers.where(bucket < F.lit(int(share * 1_000_000))) if share < 1.0 else buyers
    frame = picked.select("customer_id", *[transformed(c).alias(c) for c in CLUSTER_FEATURES]).toPandas()
    return frame.sort_values("customer_id").reset_index(drop=True)


@dataclass
class ClusterModel:
    """Centroids in transformed units, with the scaling used to fit them."""

    mean: np.ndarray
    std: np.ndarray
    centroids: np.ndarray  # one row per cluster, transformed (unscaled) units
    ids: list[int]
    silhouette: float

    @property
    def scaled_centroids(self) -> np.ndarray:
        return (self.centroids - self.mean) / self.std

    def describe(self, index: int) -> str:
        """Words for a centroid: its most distinctive features (e.g. "frequent high-spend coupon-using buyers")."""
        z = self.scaled_centroids[index]
        names = list(CLUSTER_FEATURES)
        words = [
            CLUSTER_FEATURES[names[j]][1] if z[j] > 0 else CLUSTER_FEATURES[names[j]][2]
            for j in np.argsort(-np.abs(z), kind="stable")
            if abs(z[j]) >= DESCRIBE_ABOVE
        ][:DESCRIBE_WORDS]
        return " ".join(words + ["buyers"]) if words else "average buyers"

    def assignment(self) -> Column:
        """A Spark expression: the id of the nearest centroid (scaled Euclidean distance; ties: lowest id)."""
        if not self.ids:
            return F.lit(None).cast("int")
        names = list(CLUSTER_FEATURES)
        distances = []
        for row in self.scaled_centroids:
            terms = [
                ((transformed(name) - F.lit(float(self.mean[j]))) / F.lit(float(self.std[j])) - F.lit(float(row[j])))
                for j, name in enumerate(names)
            ]
            distances.append(sum((term * term for term in terms), F.lit(0.0)))
        nearest = F.least(*distances) if len(distances) > 1 else distances[0]
        order = sorted(range(len(self.ids)), key=lambda i: self.ids[i])
        expression = None
        for i in order:
            expression = (
                F.when(distances[i] == nearest, F.lit(self.ids[i]))
                if expression is None
                else expression.when(distances[i] == nearest, F.lit(self.ids[i]))
            )
        return expression


def fit(frame: pd.DataFrame, settings: ClusterSettings, previous: pd.DataFrame | None) -> ClusterModel:
    """Fit k-means for each k in range on the sample, keep the best silhouette; ids matched to `previous`.

    `previous` holds the last run's centroids (`cluster_id` and the feature columns, in their own units).
    """
    names = list(CLUSTER_FEATURES)
    values = frame[names].to_numpy(dtype=float)
    if len(values) == 0:  # nobody has bought yet: no clusters
        empty = np.zeros((0, len(names)))
        return ClusterModel(np.zeros(len(names)), np.ones(len(names)), empty, [], 0.0)
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    std[std == 0] = 1.0
    scaled = (values - mean) / std
    distinct = len(np.unique(scaled, axis=0))
    best = None
    for k in range(settings.k_min, min(settings.k_max, distinct - 1) + 1):
        model = KMeans(n_clusters=k, n_init=10, random_state=settings.seed).fit(scaled)
        score = float(
            silhouette_score(scaled, model.labels_, sample_size=min(settings.silhouette_customers, len(scaled)), random_state=settings.seed)
        )
        if best is None or score > best[0] + 1e-9:
            best = (score, model)
    if best is None:  # too few distinct customers to cluster: one cluster
        centroids, silhouette = values.mean(axis=0, keepdims=True), 0.0
    else:
        centroids, silhouette = best[1].cluster_centers_ * std + mean, best[0]
    # A canonical order (by the scaled centroid) before matching, so ids never depend on k-means' labels.
    centroids = centroids[np.lexsort(((centroids - mean) / std).T[::-1])]
    return ClusterModel(mean, std, centroids, matched_ids(centroids, mean, std, previous), silhouette)


def matched_ids(centroids: np.ndarray, mean: np.ndarray, std: np.ndarray, previous: pd.DataFrame | None) -> list[int]:
    """Ids for the new centroids: the previous run's id of the matched centroid, new ids for the rest."""
    if previous is None or previous.empty:
        return list(range(1, len(centroids) + 1))
    old = (from_units(previous[list(CLUSTER_FEATURES)].to_numpy(dtype=float)) - mean) / std
    new = (centroids - mean) / std
    cost = ((new[:, None, :] - old[None, :, :]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    ids: list[int | None] = [None] * len(centroids)
    for row, col in zip(rows, cols):
        ids[row] = int(previous["cluster_id"].iloc[col])
    next_id = int(previous["cluster_id"].max()) + 1
    for i, found in enumerate(ids):
        if found is None:
            ids[i], next_id = next_id, next_id + 1
    return ids  # type: ignore[return-value]


#: The Spark schema of `centroid_rows`.
CENTROID_SCHEMA = "cluster_id int, description string, customers long, silhouette double, " + ", ".join(
    f"{name} double" for name in CLUSTER_FEATURES
)


def centroid_rows(model: ClusterModel, sizes: dict[int, int]) -> pd.DataFrame:
    """One row per cluster: id, description, customers, silhouette and the centroid (in the features' units)."""
    units = to_units(model.centroids) if len(model.ids) else model.centroids
    frame = pd.DataFrame(units.round(4), columns=list(CLUSTER_FEATURES))
    frame.insert(0, "cluster_id", model.ids)
    frame.insert(1, "description", [model.describe(i) for i in range(len(model.ids))])
    frame.insert(2, "customers", [int(sizes.get(cluster, 0)) for cluster in model.ids])
    frame.insert(3, "silhouette", model.silhouette)
    return frame.sort_values("cluster_id").reset_index(drop=True)
