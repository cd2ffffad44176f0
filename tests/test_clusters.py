"""Behavioural clusters: k by silhouette, words from centroids, ids that survive a refit, Spark assignment."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.config import ClusterSettings
from models.clusters import CLUSTER_FEATURES, centroid_rows, fit, from_units, to_units

SETTINGS = ClusterSettings(k_min=2, k_max=6, sample_customers=10_000, silhouette_customers=2_000, seed=7)
NAMES = list(CLUSTER_FEATURES)


def blobs(seed: int, centres: list[dict], per_blob: int = 150) -> pd.DataFrame:
    """Customers around given centres (features in their own units), transformed as clustering sees them."""
    rng = np.random.default_rng(seed)
    rows = []
    for centre in centres:
        base = from_units(np.array([[centre[name] for name in NAMES]]))[0]
        rows.append(base + rng.normal(0, 0.08, (per_blob, len(NAMES))))
    frame = pd.DataFrame(np.vstack(rows), columns=NAMES)
    frame.insert(0, "customer_id", np.arange(1, len(frame) + 1))
    return frame


LOYAL = dict(recency_days=10, purchase_count=20, avg_order_value=300, avg_basket_units=4, coupon_order_share=0.0, categories_bought=8)
BARGAIN = dict(recency_days=40, purchase_count=6, avg_order_value=40, avg_basket_units=2, coupon_order_share=0.9, categories_bought=3)
LAPSED = dict(recency_days=400, purchase_count=1, avg_order_value=80, avg_basket_units=1, coupon_order_share=0.0, categories_bought=1)
BIG_ONCE = dict(recency_days=200, purchase_count=1, avg_order_value=2000, avg_basket_units=9, coupon_order_share=0.0, categories_bought=2)


GROUPS = {"loyal": LOYAL, "bargain": BARGAIN, "lapsed": LAPSED, "big once": BIG_ONCE}


def group_of(row) -> str:
    """The name of the generating centre nearest to a centroid row (log scale, as k-means sees it)."""
    point = from_units(np.array([[getattr(row, name) for name in NAMES]]))[0]
    return min(GROUPS, key=lambda g: float(((from_units(np.array([[GROUPS[g][n] for n in NAMES]]))[0] - point) ** 2).sum()))


def test_k_is_the_number_of_groups_the_data_has():
    model = fit(blobs(1, [LOYAL, BARGAIN, LAPSED]), SETTINGS, None)
    assert len(model.ids) == 3 and model.silhouette > 0.5
    model = fit(blobs(1, [LOYAL, BARGAIN, LAPSED, BIG_ONCE]), SETTINGS, None)
    assert len(model.ids) == 4


def test_clusters_are_described_by_their_centroids():
    model = fit(blobs(2, [LOYAL, BARGAIN, LAPSED]), SETTINGS, None)
    rows = centroid_rows(model, {})
    words = {group_of(row): row.description for row in rows.itertuples()}
    # At most three words each, the most distinctive features first, every word true of the centroid.
    assert set(words["loyal"].split()) <= {"frequent", "recent", "high-spend", "big-basket", "varied", "full-price", "buyers"}
    assert "coupon-using" in words["bargain"].split()
    assert set(words["lapsed"].split()) <= {"lapsed", "one-off", "single-category", "small-basket", "full-price", "buyers"}
    assert all(len(d.split()) <= 4 and d.endswith(" buyers") for d in words.values()) and len(set(words.values())) == 3


def test_a_refit_on_new_data_keeps_each_groups_id():
    first = fit(blobs(3, [LOYAL, BARGAIN, LAPSED]), SETTINGS, None)
    previous = centroid_rows(first, {})
    id_of = {group_of(row): row.cluster_id for row in previous.itertuples()}
    # Next night: other customers, the groups in another order, one group new.
    second = fit(blobs(4, [BIG_ONCE, LAPSED, BARGAIN, LOYAL]), SETTINGS, previous)
    rows = centroid_rows(second, {})
    again = {group_of(row): row.cluster_id for row in rows.itertuples()}
    assert {g: again[g] for g in ("loyal", "bargain", "lapsed")} == id_of
    assert again["big once"] == max(id_of.values()) + 1  # the new group gets a new id


def test_the_same_data_gives_the_same_model():
    data = blobs(5, [LOYAL, BARGAIN, LAPSED])
    one, two = fit(data, SETTINGS, None), fit(data.sample(frac=1.0, random_state=1).sort_values("customer_id"), SETTINGS, None)
    assert one.ids == two.ids and np.allclose(one.centroids, two.centroids)


def test_spark_assigns_every_customer_to_its_nearest_centroid(spark):
    data = blobs(6, [LOYAL, BARGAIN, LAPSED])
    model = fit(data, SETTINGS, None)
    own_units = pd.DataFrame(to_units(data[NAMES].to_numpy()), columns=NAMES)
    own_units.insert(0, "customer_id", data["customer_id"])
    frame = spark.createDataFrame(own_units).withColumn("cluster_id", model.assignment())
    assigned = {row.customer_id: row.cluster_id for row in frame.collect()}
    scaled = (data[NAMES].to_numpy() - model.mean) / model.std
    nearest = ((scaled[:, None, :] - model.scaled_centroids[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    assert [assigned[c] for c in data["customer_id"]] == [model.ids[i] for i in nearest]
