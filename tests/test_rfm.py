"""RFM scores against a plain pandas reference; the segment rule table and its checks."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyspark.sql import functions as F

from core.config import REPO_ROOT
from models.rfm import SegmentRules, SegmentRulesError, cut_positions, with_rfm_scores, with_segment

RULES_FILE = REPO_ROOT / "conf" / "segments.yaml"


def reference_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """The documented formula in pandas: floor((rank_min - 1) * 5 / n) + 1 among buyers."""
    buyers = frame[frame["purchase_count"] > 0].copy()
    n = len(buyers)

    def score(values: pd.Series, best_is_high: bool) -> pd.Series:
        ranks = (values if best_is_high else -values).rank(method="min")
        return ((ranks - 1) * 5 // n + 1).astype(int)

    buyers["r_score"] = score(buyers["recency_days"], best_is_high=False)
    buyers["f_score"] = score(buyers["purchase_count"], best_is_high=True)
    buyers["m_score"] = score(buyers["total_spent"].astype(float), best_is_high=True)
    return buyers.set_index("customer_id")[["r_score", "f_score", "m_score"]]


def features_frame(seed: int, customers: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    purchase_count = rng.poisson(1.5, customers)  # many ties at 0, 1 and 2
    return pd.DataFrame(
        {
            "as_of": date(2026, 1, 1),
            "customer_id": np.arange(1, customers + 1),
            "recency_days": np.where(purchase_count > 0, rng.integers(0, 400, customers), -1),
            "purchase_count": purchase_count,
            "total_spent": np.where(purchase_count > 0, np.round(rng.gamma(2, 60, customers) * purchase_count, 2), 0.0),
        }
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scores_equal_the_pandas_reference_customer_for_customer(spark, seed):
    frame = features_frame(seed, 800)
    spark_frame = spark.createDataFrame(
        [
            (
                r.as_of,
                int(r.customer_id),
                None if r.purchase_count == 0 else int(r.recency_days),
                int(r.purchase_count),
                float(r.total_spent),
            )
            for r in frame.itertuples()
        ],
        "as_of date, customer_id long, recency_days int, purchase_count long, total_spent double",
    ).withColumn("total_spent", F.col("total_spent").cast("decimal(18,2)"))
    scored = with_rfm_scores(spark_frame).toPandas().set_index("customer_id")

    expected = reference_scores(frame)
    buyers = scored.loc[expected.index]
    assert (buyers[["r_score", "f_score", "m_score"]].astype(int) == expected).all().all()
    non_buyers = scored[~scored.index.isin(expected.index)]
    assert non_buyers[["r_score", "f_score", "m_score"]].isna().all().all()
    assert (buyers["rfm_code"] == expected.astype(str).agg("".join, axis=1)).all()


@given(st.lists(st.integers(-6, 6), min_size=1, max_size=60))
def test_four_cut_points_give_the_rank_formula_for_any_values(values):
    """The claim `with_rfm_scores` rests on: score = 1 + number of cut points below the value."""
    n, ordered = len(values), sorted(values)
    points = [ordered[position - 1] for position in cut_positions(n)]
    for value in values:
        rank = 1 + sum(other < value for other in values)  # ties share the lowest rank
        assert 1 + sum(value > point for point in points) == (rank - 1) * 5 // n + 1


def test_tied_values_get_the_same_score_whatever_the_row_order(spark):
    rows = [(date(2026, 1, 1), i, 10, 1 if i <= 6 else 2, 50.0) for i in range(1, 11)]
    frame = spark.createDataFrame(rows, "as_of date, customer_id long, recency_days int, purchase_count long, total_spent double")
    forward = {r.customer_id: r.f_score for r in with_rfm_scores(frame).collect()}
    backward = {r.customer_id: r.f_score for r in with_rfm_scores(frame.orderBy(frame.customer_id.desc())).collect()}
    assert forward == backward
    assert {forward[i] for i in range(1, 7)} == {1} and {forward[i] for i in range(7, 11)} == {4}
    assert {r.r_score for r in with_rfm_scores(frame).collect()} == {1}  # all equal: all the same score


def test_segments_follow_the_rule_table(spark):
    rules = SegmentRules.load(RULES_FILE)
    rows = [(5, 5, 5), (5, 1, 1), (1, 1, 1), (1, 5, 5), (2, 3, 3), (3, 3, 1), (None, None, None)]
    frame = spark.createDataFrame(rows, "r_score int, f_score int, m_score int")
    named = [r.segment for r in with_segment(frame, rules).collect()]
    assert named == ["Champions", "New", "Lost", "Can't Lose Them", "At Risk", "Need Attention", "Prospects"]
    for r, f, m in rows[:-1]:
        assert rules.segment_for(r, f, m) == named[rows.index((r, f, m))]


def test_the_shipped_rule_table_covers_all_125_score_combinations():
    rules = SegmentRules.load(RULES_FILE)
    assert len(rules.rules) == 11
    assert {rule.name for rule in rules.rules} == {
        "Champions",
        "Loyal",
        "Potential Loyalists",
        "New",
        "Promising",
        "Need Attention",
        "About to Sleep",
        "At Risk",
        "Can't Lose Them",
        "Hibernating",
        "Lost",
    }


def test_a_rule_table_with_a_gap_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "segments.yaml"
    path.write_text("segments:\n  - name: Best\n    r: [4, 5]\n")
    with pytest.raises(SegmentRulesError, match=rf"{path}: 75 score combination\(s\) match no rule, e.g. r=1 f=1 m=1"):
        SegmentRules.load(path)


def test_a_misspelled_rule_field_is_refused_naming_the_rule(tmp_path):
    path = tmp_path / "segments.yaml"
    path.write_text("segments:\n  - name: All\n    recency: [1, 5]\n")
    with pytest.raises(SegmentRulesError, match=r"segments\[0\]: unknown field\(s\) recency"):
        SegmentRules.load(path)


def test_a_range_outside_one_to_five_is_refused(tmp_path):
    path = tmp_path / "segments.yaml"
    path.write_text("segments:\n  - name: All\n    r: [0, 5]\n")
    with pytest.raises(SegmentRulesError, match=r"segments\[0\] \(All\): r must be \[low, high\]"):
        SegmentRules.load(path)
