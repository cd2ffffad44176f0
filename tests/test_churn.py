"""The churn classifier and its governance: calibration, reasons, and the champion decision in a real MLflow store."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from models import churn

if TYPE_CHECKING:
    from jobs.train import Snapshot

RUN_DATE = date(2026, 11, 26)


def buyers(seed: int, customers: int = 1500, as_of: date = RUN_DATE, leaving_share: float = 0.0) -> Snapshot:
    """Buyers of a BG/NBD-like shop at day 720, labelled by purchases in the 90 days after (known truth).

    Each buyer orders as a Poisson process (rate ~ Gamma) and drops out after each order
    with a Beta probability, as the generator does; the features are those of gold/customer_features that
    this history determines, plus `review_count`, which is noise. A `leaving_share` of the buyers has an open
    inquiry (`open_inquiries` 1) and buys nothing in the 90 days whatever its history: a cause of churn
    that BG/NBD cannot see and the classifier can.
    """
    from jobs.train import Snapshot

    rng = np.random.default_rng(seed)
    rate = rng.gamma(0.8, 1 / 40, customers)  # orders per day
    leaving = np.random.default_rng([seed, 1]).random(customers) < leaving_share  # own stream: the rest as without
    dropout = rng.beta(1.0, 4.0, customers)
    first = rng.uniform(0, 600, customers)
    end, horizon = 720.0, 90.0
    rows, outcome = [], []
    for rate_i, dropout_i, first_i, leaving_i in zip(rate, dropout, first, leaving):
        times, t = [first_i], first_i
        alive = rng.random() >= dropout_i
        while alive:
            t += rng.exponential(1 / rate_i)
            if t > end + horizon:
                break
            times.append(t)
            alive = rng.random() >= dropout_i
        past = [day for day in times if day <= end]
        future = 0 if leaving_i else len(times) - len(past)
        days = sorted({int(day) for day in past})
        rows.append(
            {
                "purchase_count": len(past),
                "recency_days": end - past[-1],
                "tenure_days": end - first_i + 30,
                "total_spent": 40.0 * len(past),
                "avg_order_value": 40.0,
                "review_count": int(rng.poisson(1)),
                "open_inquiries": int(leaving_i),
                "history_repeat_purchase_days": len(days) - 1,
                "history_recency": float(days[-1] - days[0]),
                "history_T": float(int(end) - days[0]),
            }
        )
        outcome.append(future)
    frame = pd.DataFrame(rows)
    frame.index = pd.Index(np.arange(1, customers + 1), name="customer_id")
    history = pd.DataFrame(
        {
            "repeat_purchase_days": frame.pop("history_repeat_purchase_days"),
            "purchase_span_days": frame.pop("history_recency"),
            "days_since_first_purchase": frame.pop("history_T"),
            "mean_repeat_order_value": 40.0,
        }
    )
    purchases = pd.Series(outcome, index=frame.index)
    return Snapshot(
        as_of=as_of,
        features=frame,
        history=history,
        outcome=pd.DataFrame({"purchases_in_horizon": purchases, "is_churned": purchases == 0}),
    )


@pytest.fixture(scope="module")
def snapshots():
    return buyers(1, as_of=RUN_DATE - timedelta(days=180)), buyers(2, as_of=RUN_DATE - timedelta(days=90))


def test_the_classifier_ranks_and_calibrates_churn_on_a_holdout(snapshots):
    training, holdout = snapshots
    features = ["purchase_count", "recency_days", "tenure_days", "total_spent"]
    model = churn.ChurnClassifier(features, "hist_gradient_boosting", "isotonic", 0).fit(training.features, training.outcome["is_churned"])
    probability = model.churn_probability(holdout.features)
    y = holdout.outcome["is_churned"]
    metrics = churn.scores(y, probability)
    constant = churn.scores(y, np.full(len(y), y.mean()))
    assert metrics["roc_auc"] > 0.75
    assert metrics["brier"] < 0.8 * constant["brier"]
    table = churn.calibration_table(y, probability)
    # Calibrated: weighted by customers, the observed churn rate per band is close to the predicted one.
    error = (table["customers"] * (table["observed"] - table["mean_predicted"]).abs()).sum() / table["customers"].sum()
    assert error < 0.05
    assert table["customers"].sum() == len(y)


def test_reasons_name_what_raises_each_customers_risk_in_words(snapshots):
    training, holdout = snapshots
    model = churn.ChurnClassifier(["purchase_count", "recency_days", "tenure_days"], "logistic_regression", "sigmoid", 0).fit(
        training.features, training.outcome["is_churned"]
    )
    long_gone = holdout.features["recency_days"].idxmax()
    reasons = model.reasons(holdout.features.loc[[long_gone]])
    assert reasons[0].startswith("days since the last purchase: ")
    assert "(typical " in reasons[0] and len(reasons[0].split("; ")) <= 3
    # A contribution is the fall in probability when the feature goes to the population's median.
    contributions = model.contributions(holdout.features.loc[[long_gone]])
    assert contributions.loc[long_gone, "recency_days"] > 0


def test_contributions_in_batches_are_those_of_one_prediction_per_feature(snapshots, monkeypatch):
    """The reasons' contributions are predicted in batches of rows (all features at once): each figure is the
    one a prediction per feature gives, to the bit, whatever rows fall into one batch."""
    training, holdout = snapshots
    features = ["purchase_count", "recency_days", "tenure_days", "total_spent"]
    model = churn.ChurnClassifier(features, "hist_gradient_boosting", "isotonic", 0).fit(training.features, training.outcome["is_churned"])
    customers = holdout.features.head(301)
    matrix = model.feature_matrix(customers)
    probability = model.predict_proba(customers)[:, 1]
    one_per_feature = pd.DataFrame(
        {name: probability - model.model_.predict_proba(matrix.assign(**{name: model.reference_[name]}))[:, 1] for name in features},
        index=customers.index,
    )
    assert (one_per_feature != 0).any(axis=None)
    customers_per_batch = len(customers) // 3 + 1  # three batches, the last one shorter
    monkeypatch.setattr(churn, "CONTRIBUTION_BATCH_ROWS", customers_per_batch * (len(features) + 1))
    assert len(customers) % customers_per_batch
    pd.testing.assert_frame_equal(model.contributions(customers), one_per_feature, check_exact=True)


def test_a_model_trained_under_the_former_feature_names_scores_the_renamed_features_alike(snapshots, settings):
    # A champion registered before `frequency`/`monetary` became purchase_count/total_spent keeps scoring.
    from core.config import ChurnSettings

    training, holdout = snapshots
    former = {"purchase_count": "frequency", "total_spent": "monetary"}
    old = churn.ChurnClassifier(["frequency", "recency_days", "monetary"], "logistic_regression", "sigmoid", 0).fit(
        training.features.rename(columns=former), training.outcome["is_churned"]
    )
    new = churn.ChurnClassifier(["purchase_count", "recency_days", "total_spent"], "logistic_regression", "sigmoid", 0).fit(
        training.features, training.outcome["is_churned"]
    )
    assert np.array_equal(old.churn_probability(holdout.features), new.churn_probability(holdout.features))
    assert old.reasons(holdout.features.head(50)) == new.reasons(holdout.features.head(50))
    options = ChurnSettings.model_validate({**settings.churn.model_dump(), "features": ["frequency", "monetary"]})
    assert options.features == ["purchase_count", "total_spent"]


def test_missing_features_and_one_sided_labels_are_clear_errors(snapshots):
    training, _ = snapshots
    model = churn.ChurnClassifier(["recency_days", "avg_rating"])
    with pytest.raises(ValueError, match=r"churn features missing from the input: \['avg_rating'\]"):
        model.fit(training.features, training.outcome["is_churned"])
    with pytest.raises(ValueError, match="all 1500 customers are active"):
        churn.ChurnClassifier(["recency_days"]).fit(training.features, np.zeros(1500, dtype=bool))


def test_a_feature_without_any_value_in_training_is_held_at_zero(snapshots):
    # A shop's first nights with browsing events: the training snapshot predates them (days_since_last_visit
    # null for everyone), which histogram binning cannot bin.
    training, holdout = snapshots
    features = ["purchase_count", "recency_days", "days_since_last_visit"]
    train = training.features.assign(days_since_last_visit=np.nan)
    for algorithm in churn.ALGORITHMS:
        model = churn.ChurnClassifier(features, algorithm, "isotonic", 0).fit(train, training.outcome["is_churned"])
        assert model.without_values_ == ["days_since_last_visit"]
        scored = holdout.features.assign(days_since_last_visit=3.0)  # values later change nothing it learned
        probability = model.churn_probability(scored)
        assert np.allclose(probability, model.churn_probability(holdout.features.assign(days_since_last_visit=np.nan)))
        assert churn.scores(holdout.outcome["is_churned"], probability)["roc_auc"] > 0.7


def test_a_feature_known_only_for_the_earliest_customers_trains_and_calibrates(snapshots):
    # A real shop numbers its customers in order of sign-up (CDNOW does): sorted by id, the earliest
    # customers come first, and a feature only they have (the spend trend, which needs 180 days of history)
    # is missing from whole contiguous blocks of rows. Calibration folds cut in id order then train on rows
    # where the feature has no value at all; shuffled folds mix old and new customers.
    training, holdout = snapshots
    earliest = training.features.index <= len(training.features) // 5
    train = training.features.assign(spend_trend=np.where(earliest, 1.0 + training.features["recency_days"] / 100, np.nan))
    features = ["purchase_count", "recency_days", "spend_trend"]
    for algorithm in churn.ALGORITHMS:
        model = churn.ChurnClassifier(features, algorithm, "isotonic", 0).fit(train, training.outcome["is_churned"])
        probability = model.churn_probability(holdout.features.assign(spend_trend=np.nan))
        assert churn.scores(holdout.outcome["is_churned"], probability)["roc_auc"] > 0.7


def with_churn(settings, tmp_path, **churn_options):
    """The test settings with their own MLflow store under tmp_path and the given churn options."""
    return settings.model_copy(
        update={
            "churn": settings.churn.model_copy(update=churn_options),
            "mlflow": settings.mlflow.model_copy(
                update={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_root": str(tmp_path / "artifacts")}
            ),
        }
    )


def test_a_worse_challenger_leaves_the_champion_and_a_better_one_replaces_it(snapshots, settings, tmp_path):
    from mlflow import MlflowClient

    from jobs.train import train_and_promote
    from models import tracking

    training, holdout = snapshots
    # The noise feature alone makes a deliberately weak model; the purchase history a good one.
    weak = with_churn(settings, tmp_path, features=["review_count"])
    good = with_churn(settings, tmp_path, features=["purchase_count", "recency_days", "tenure_days", "total_spent"])
    client = MlflowClient(good.mlflow.tracking_uri, good.mlflow.tracking_uri)

    def champion() -> str:
        return tracking.version_label(tracking.champion(client, good.mlflow.churn_model))

    first = train_and_promote(training, holdout, weak, RUN_DATE, "run-1")
    assert first["promoted"] and first["decision"] == "first model: champion" and champion() == first["challenger"]

    better = train_and_promote(training, holdout, good, RUN_DATE, "run-2")
    assert better["promoted"] and better["decision"].startswith("promoted: roc_auc")
    assert champion() == better["challenger"] != first["challenger"]

    worse = train_and_promote(training, holdout, weak, RUN_DATE, "run-3")
    assert not worse["promoted"] and worse["decision"].startswith("not promoted: roc_auc")
    assert worse["metrics"]["challenger"]["roc_auc"] < better["metrics"]["challenger"]["roc_auc"] - 0.1
    assert champion() == better["challenger"]
    version = client.get_model_version(good.mlflow.churn_model, worse["challenger"].split("/")[1])
    assert version.tags["decision"] == worse["decision"]

    # Logged with the holdout metrics of every model, the plots and a loadable model with a signature.
    run = client.get_run(worse["mlflow_run_id"])
    for model in ("challenger", "champion", "logistic_baseline", "p_alive_baseline", "bgnbd_no_purchase"):
        assert {f"{model}_roc_auc", f"{model}_pr_auc", f"{model}_brier"} <= set(run.data.metrics)
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/calibration.png", "plots/cumulative_gains.png", "plots/holdout_purchases.png"}
    loaded = tracking.load_version(tracking.champion(client, good.mlflow.churn_model))
    assert loaded.features == good.churn.features
    assert loaded.churn_probability(holdout.features).shape == (len(holdout.features),)

    # As good as the champion but not by the margin: the champion stays.
    strict = with_churn(settings, tmp_path, features=good.churn.features, promote_margin=0.5)
    assert not train_and_promote(training, holdout, strict, RUN_DATE, "run-4")["promoted"]
    assert champion() == better["challenger"]


# ---- calibration and what the night publishes --------------------------------------------------------------


def test_expected_calibration_error_is_the_customer_weighted_gap_per_equal_width_bin():
    # Bins include their lower edge. 0.2-0.3: p 0.2, 0.2, none churned -> gap 0.2; 0.3-0.4: p 0.3, 0.3, one of
    # two churned -> gap 0.2; 0.8-0.9: p 0.8, 0.8, one of two -> gap 0.3; 0.9-1.0 (holds 1.0): p 1.0, churned
    # -> gap 0. By hand: (2 x 0.2 + 2 x 0.2 + 2 x 0.3 + 1 x 0) / 7 = 0.2.
    churned = [False, False, True, False, True, False, True]
    probability = [0.2, 0.2, 0.3, 0.3, 0.8, 0.8, 1.0]
    table = churn.calibration_table(churned, probability)
    assert list(table["churn_probability"]) == ["0.2-0.3", "0.3-0.4", "0.8-0.9", "0.9-1.0"]
    assert list(table["customers"]) == [2, 2, 2, 1]
    assert np.allclose(table["mean_predicted"], [0.2, 0.3, 0.8, 1.0]) and np.allclose(table["observed"], [0.0, 0.5, 0.5, 1.0])
    assert churn.expected_calibration_error(churned, probability) == pytest.approx(0.2)
    assert churn.scores(churned, probability)["ece"] == pytest.approx(0.2)
    # Bin 0.2-0.3 off by 0.25 for half the customers: 0.125; perfectly calibrated bins: 0.
    assert churn.expected_calibration_error([True, False, True, False], [0.5, 0.5, 0.25, 0.25]) == pytest.approx(0.125)
    assert churn.expected_calibration_error([True, False, False, False], [0.5, 0.5, 0.0, 0.0]) == pytest.approx(0.0)


def test_the_better_calibrated_probability_is_published_and_brier_breaks_a_tie():
    classifier = {"roc_auc": 0.86, "brier": 0.146, "ece": 0.031}
    assert churn.better_calibrated(classifier, {"roc_auc": 0.87, "brier": 0.150, "ece": 0.012}) == churn.BG_NBD
    assert churn.better_calibrated(classifier, {"roc_auc": 0.87, "brier": 0.140, "ece": 0.045}) == churn.CLASSIFIER
    # ECE equal at 4 decimals: the lower Brier; then the classifier.
    assert churn.better_calibrated(classifier, {"roc_auc": 0.8, "brier": 0.140, "ece": 0.03104}) == churn.BG_NBD
    assert churn.better_calibrated(classifier, {"roc_auc": 0.8, "brier": 0.146, "ece": 0.031}) == churn.CLASSIFIER
    assert churn.published_label(churn.BG_NBD, "crm_churn/3") == "bg_nbd@crm_churn/3"
    assert churn.judged_version("bg_nbd@crm_churn/3") == churn.judged_version("crm_churn/3") == "crm_churn/3"


def published_night(settings, tmp_path, training, holdout, features):
    """Train on `training`, judge on `holdout` in a store of its own; then score the holdout as a night would:
    the training result, the champion's version and the published churn columns."""
    from mlflow import MlflowClient

    from jobs import predict
    from jobs.train import train_and_promote, with_purchase_model_inputs
    from models import tracking

    options = with_churn(settings, tmp_path, features=features)
    result = train_and_promote(training, holdout, options, RUN_DATE, "publication")
    client = MlflowClient(options.mlflow.tracking_uri, options.mlflow.tracking_uri)
    version = tracking.champion(client, options.mlflow.churn_model)
    scored, _ = with_purchase_model_inputs(holdout, options.churn.horizon_days)
    columns = predict.churn_scores(tracking.load_version(version), scored, options, version, {})
    return result, version, scored, pd.DataFrame(columns, index=scored.index)


def test_bg_nbd_is_published_when_it_is_the_better_calibrated(settings, tmp_path):
    # The holdout's buyers follow a BG/NBD-like process (they may also leave after the first purchase); the
    # classifier sees only noise (review_count) and learned when 60% of the buyers left for a reason it cannot
    # see, so its probabilities are too high. BG/NBD, fitted on the holdout's own history, is close to calibrated.
    training = buyers(3, as_of=RUN_DATE - timedelta(days=180), leaving_share=0.6)
    holdout = buyers(4, as_of=RUN_DATE - timedelta(days=90))
    result, version, scored, columns = published_night(settings, tmp_path, training, holdout, ["review_count"])

    figures = result["metrics"]
    assert figures["bgnbd_no_purchase"]["ece"] < 0.05 and figures["champion"]["ece"] > figures["bgnbd_no_purchase"]["ece"] + 0.04, figures
    assert result["published_churn"] == churn.BG_NBD == version.tags["published_churn"]
    assert result["published_churn_reason"].startswith("BG/NBD's P(no purchase) better calibrated than classifier crm_churn/1")
    assert version.tags["published_churn_run"] == result["mlflow_run_id"]
    # The night publishes BG/NBD's probability, its risk band, no reasons, and says whose it is.
    assert np.allclose(columns["churn_probability"], scored["bgnbd_no_purchase_probability"])
    assert list(columns["churn_risk"]) == list(churn.risk_band(scored["bgnbd_no_purchase_probability"], 0.4, 0.7))
    assert columns["churn_reasons"].isna().all()
    assert set(columns["churn_model_version"]) == {"bg_nbd@crm_churn/1"}


def test_the_classifier_is_published_when_it_is_the_better_calibrated(settings, tmp_path):
    # 40% of the buyers leave for a reason BG/NBD cannot see (an open inquiry): its probabilities are too
    # low for them; the classifier has the feature and BG/NBD's own probabilities as inputs.
    training = buyers(5, as_of=RUN_DATE - timedelta(days=180), leaving_share=0.4)
    holdout = buyers(6, as_of=RUN_DATE - timedelta(days=90), leaving_share=0.4)
    features = ["open_inquiries", "bgnbd_no_purchase_probability", "bgnbd_p_alive"]
    result, version, scored, columns = published_night(settings, tmp_path, training, holdout, features)

    figures = result["metrics"]
    assert figures["champion"]["ece"] < 0.05 and figures["bgnbd_no_purchase"]["ece"] > figures["champion"]["ece"] + 0.02, figures
    assert figures["champion"]["roc_auc"] > figures["bgnbd_no_purchase"]["roc_auc"] + 0.05
    assert result["published_churn"] == churn.CLASSIFIER == version.tags["published_churn"]
    assert set(columns["churn_model_version"]) == {"crm_churn/1"}
    assert not np.allclose(columns["churn_probability"], scored["bgnbd_no_purchase_probability"])
    assert columns["churn_reasons"].notna().all()


def test_bg_nbd_inputs_of_a_snapshot_see_no_order_after_its_as_of(spark, tmp_path, settings):
    """The training snapshot's BG/NBD inputs equal those of a shop whose orders stop at the snapshot's date:
    the orders after it (the label period) change nothing."""
    from datetime import datetime
    from decimal import Decimal

    from test_features import silver_frames

    from core.lake import Lake
    from features.customer import INPUT_TABLES
    from jobs.train import purchase_history_frame, snapshot, with_purchase_model_inputs

    as_of = date(2026, 6, 30)
    rng = np.random.default_rng(8)
    customers, orders = [], []
    for customer_id in range(1, 121):
        first = datetime(2025, 7, 1) + timedelta(days=int(rng.integers(0, 300)))
        customers.append({"id": customer_id, "created_at": first, "updated_at": first})
        day, gap = first, float(rng.uniform(10, 120))
        while day < datetime(2026, 9, 28):
            orders.append(
                {
                    "id": len(orders) + 1,
                    "customer_id": customer_id,
                    "status": "delivered",
                    "total_amount": Decimal("30.00"),
                    "created_at": day,
                    "updated_at": day,
                }
            )
            day += timedelta(days=float(rng.exponential(gap)) + 1)
    assert sum(row["created_at"] >= datetime(2026, 7, 1) for row in orders) > 100  # label-period orders a leak would use

    def lake_of(rows: list[dict], folder: str) -> Lake:
        lake = Lake(spark, tmp_path / folder)
        for table, frame in silver_frames(spark, {"customers": customers, "orders": rows}).items():
            if table in INPUT_TABLES:
                frame.write.format("delta").save(lake.path("silver", table))
        return lake

    def inputs_of(history: pd.DataFrame) -> pd.DataFrame:
        return churn.purchase_model_inputs(churn.fit_purchase_model(history), history, settings.churn.horizon_days)

    whole = lake_of(orders, "whole")
    taken = snapshot(whole, as_of, settings)
    assert 0 < taken.outcome["is_churned"].mean() < 1
    computed = with_purchase_model_inputs(taken, settings.churn.horizon_days)[0][list(churn.BGNBD_INPUTS)]
    assert computed.notna().all().all()
    # The shop as it was at as_of: no order after it.
    cut = lake_of([row for row in orders if row["created_at"] < datetime(2026, 7, 1)], "cut")
    pd.testing.assert_frame_equal(computed, inputs_of(purchase_history_frame(cut, as_of, settings, computed.index)))
    # Fitted on the history at the horizon's end instead (a leak), the inputs differ: the comparison can fail.
    leaked_inputs = inputs_of(purchase_history_frame(whole, as_of + timedelta(days=90), settings, computed.index))
    assert not np.allclose(leaked_inputs["bgnbd_p_alive"], computed["bgnbd_p_alive"])


def test_a_calibration_lead_within_the_holdouts_noise_is_a_tie_and_the_lower_brier_wins():
    """Two calibrated probabilities: one sharp (the true risk), one blurred. Their ECEs differ
    by noise, so the paired bootstrap's interval holds 0 and the sharper one (lower Brier) is published; a
    probability that is off by 0.15 everywhere loses on calibration whatever its ranking."""
    rng = np.random.default_rng(3)
    risk = rng.uniform(0.05, 0.95, 1000)  # a holdout of 1,000 buyers
    churned = rng.random(1000) < risk
    # Blurred: the mean risk of customers with a similar noisy signal of it (50 groups): calibrated, less sharp.
    signal = pd.qcut(risk + rng.normal(0, 0.25, len(risk)), 50, labels=False)
    sharp, flat = risk, pd.Series(risk).groupby(signal).transform("mean").to_numpy()
    figures = {name: churn.scores(churned, p) for name, p in {"sharp": sharp, "flat": flat}.items()}
    interval = churn.ece_difference_interval(churned, sharp, flat, seed=1)
    assert interval[0] < figures["sharp"]["ece"] - figures["flat"]["ece"] < interval[1] and interval[0] < 0 < interval[1]
    assert churn.better_calibrated(figures["sharp"], figures["flat"], interval) == churn.CLASSIFIER
    assert (
        churn.better_calibrated(figures["flat"], figures["sharp"], churn.ece_difference_interval(churned, flat, sharp, 1)) == churn.BG_NBD
    )
    reason = churn.publication_reason(
        churn.CLASSIFIER, "crm_churn/2", {churn.CLASSIFIER: figures["sharp"], churn.BG_NBD: figures["flat"]}, "2026-09-03", interval
    )
    assert "as well calibrated as BG/NBD's P(no purchase) and a lower Brier score" in reason and "90% bootstrap" in reason

    shifted = np.clip(risk + 0.15, 0, 1)
    off = churn.ece_difference_interval(churned, shifted, sharp, seed=1)
    assert off[0] > 0.05
    assert churn.better_calibrated(churn.scores(churned, shifted), figures["sharp"], off) == churn.BG_NBD
    # The bootstrap's ECE is the reliability table's: identical probabilities differ by exactly 0.
    assert churn.ece_difference_interval(churned, sharp, sharp, seed=1) == (0.0, 0.0)
    assert churn._binned_ece(churned[None].astype(float), sharp[None], 10)[0] == pytest.approx(figures["sharp"]["ece"])
