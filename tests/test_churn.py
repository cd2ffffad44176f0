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


def buyers(seed: int, customers: int = 1500, as_of: date = RUN_DATE) -> Snapshot:
    """Buyers of a BG/NBD-like shop at day 720, labelled by purchases in the 90 days after (known truth).

    Each buyer orders as a Poisson process (rate ~ Gamma) and drops out after each order with a Beta
    probability, as the generator does; the features are those of gold/customer_features that this
    history determines, plus `review_count`, which is noise.
    """
    from jobs.train import Snapshot

    rng = np.random.default_rng(seed)
    rate = rng.gamma(0.8, 1 / 40, customers)  # orders per day
    dropout = rng.beta(1.0, 4.0, customers)
    first = rng.uniform(0, 600, customers)
    end, horizon = 720.0, 90.0
    rows, outcome = [], []
    for rate_i, dropout_i, first_i in zip(rate, dropout, first):
        times, t = [first_i], first_i
        alive = rng.random() >= dropout_i
        while alive:
            t += rng.exponential(1 / rate_i)
            if t > end + horizon:
                break
            times.append(t)
            alive = rng.random() >= dropout_i
        past = [day for day in times if day <= end]
        future = len(times) - len(past)
        days = sorted({int(day) for day in past})
        rows.append(
            {
                "purchase_count": len(past),
                "recency_days": end - past[-1],
                "tenure_days": end - first_i + 30,
                "total_spent": 40.0 * len(past),
                "avg_order_value": 40.0,
                "review_count": int(rng.poisson(1)),
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
    model = churn.ChurnClassifier(["recency_days", "open_inquiries"])
    with pytest.raises(ValueError, match=r"churn features missing from the input: \['open_inquiries'\]"):
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
