"""Churn: the probability that a customer makes no purchase within the horizon after `as_of`.

A scikit-learn classifier on the point-in-time features of `gold/customer_features` (the list is in
`conf/base.yaml`, `churn.features`), with cross-validated probability calibration so that "0.7" means
seven in ten such customers do not come back. Histogram gradient boosting is the challenger; logistic
regression (median-imputed, standardised) the baseline. Only customers with a purchase by `as_of` are
scored: churn is the loss of a buyer.

Two inputs come from BG/NBD rather than gold: its probability of no purchase within the horizon and
P(alive), fitted on the purchase history at the same `as_of` as the features (point in time: the fit of a
training snapshot sees no order after that snapshot's date). BG/NBD's own probability is also the
classifier's rival: on the training run's holdout the better-calibrated of the two (lower expected
calibration error, ECE, when a paired bootstrap tells them apart; else lower Brier) is what the night publishes
(`better_calibrated`).

Each customer's top three reasons come from occlusion: the fall in its churn probability when one feature
is set to the training population's median. The largest falls name the features that push this customer's
risk above a typical customer's, in plain words from the feature registry:
"days since the last purchase: 212 (typical 64)" (n/a: the feature has no value, e.g. no reviews).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core.feature_schema import FEATURES, PURCHASE_MODEL_FEATURES, RENAMED
from features.purchases import PURCHASE_MODEL_INPUTS
from models.lifetime import BetaGeoModel

ALGORITHMS = ("hist_gradient_boosting", "logistic_regression")
REASONS = 3
CALIBRATION_FOLDS = 3
#: Probability bins of the reliability table and the expected calibration error: equal width, tenths.
CALIBRATION_BINS = 10
#: Higher is better for these metrics; lower for the others (Brier score, expected calibration error).
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "brier": False, "ece": False}
#: The classifier's inputs computed from BG/NBD (`core.feature_schema.PURCHASE_MODEL_FEATURES`), not read from gold.
BGNBD_INPUTS = tuple(feature.name for feature in PURCHASE_MODEL_FEATURES)
#: What a night publishes as churn_probability: the champion classifier's, or BG/NBD's own.
CLASSIFIER, BG_NBD = "classifier", "bg_nbd"
#: Rows per prediction call when churn reasons are explained (`ChurnClassifier.contributions`): the customers
#: and their copies with one feature at the median, about 150 MB of features at 30 of them.
CONTRIBUTION_BATCH_ROWS = 600_000
#: ECEs equal at this many decimals are a tie, decided by the Brier score.
ECE_DECIMALS = 4
#: The paired bootstrap that tells whether two ECEs on one holdout differ (`ece_difference_interval`):
#: resamples of the holdout's customers, and the interval's two-sided level.
ECE_BOOTSTRAP_RESAMPLES = 1000
ECE_INTERVAL_LEVEL = 0.9
_WORDS = {feature.name: feature.words for feature in (*FEATURES, *PURCHASE_MODEL_FEATURES)}
_WORDS |= {former: _WORDS[name] for former, name in RENAMED.items()}


def estimator(algorithm: str, seed: int) -> BaseEstimator:
    """The uncalibrated classifier of `algorithm`."""
    if algorithm == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, early_stopping=False, l2_regularization=1.0, random_state=seed
        )
    if algorithm == "logistic_regression":
        return make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler(), LogisticRegression(max_iter=2000))
    raise ValueError(f"churn.model: unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")


class ChurnClassifier(ClassifierMixin, BaseEstimator):
    """A calibrated churn classifier that knows its features and explains each prediction.

    `fit(X, is_churned)` takes a frame with (at least) the feature columns; `churn_probability(X)` and
    `reasons(X)` work on any frame with those columns, in any order.
    """

    def __init__(self, features: list[str], algorithm: str = "hist_gradient_boosting", calibration: str = "isotonic", seed: int = 0):
        self.features = features
        self.algorithm = algorithm
        self.calibration = calibration
        self.seed = seed

    def fit(self, X: pd.DataFrame, y) -> ChurnClassifier:
        # A feature with no value at all in training (browsing activity before a shop had events) carries no
        # information, and histogram binning cannot bin it: it is held at 0, in training and scoring alike.
        self.without_values_ = []
        matrix = self.feature_matrix(X)
        self.without_values_ = [name for name in self.features if len(matrix) and matrix[name].isna().all()]
        matrix = self.feature_matrix(X)
        labels = np.asarray(y, dtype=bool)
        if labels.all() or not labels.any():
            raise ValueError(
                f"churn training data: all {len(labels)} customers are "
                f"{'churned' if labels.all() else 'active'}; both outcomes are needed to learn churn"
            )
        # Shuffled folds: shops number customers in order of sign-up, so folds cut in row order would train
        # on old customers and calibrate on new ones (and a feature only old customers have, such as the spend
        # trend, would have no value at all in some folds' training rows, which histogram binning refuses).
        folds = StratifiedKFold(
            max(2, min(CALIBRATION_FOLDS, int(labels.sum()), int((~labels).sum()))), shuffle=True, random_state=self.seed
        )
        self.model_ = CalibratedClassifierCV(estimator(self.algorithm, self.seed), method=self.calibration, cv=folds).fit(matrix, labels)
        self.classes_ = self.model_.classes_
        self.reference_ = matrix.median()
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.model_.predict_proba(self.feature_matrix(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.churn_probability(X) >= 0.5

    def churn_probability(self, X: pd.DataFrame) -> np.ndarray:
        """P(no purchase within the horizon), per row of `X`."""
        return self.predict_proba(X)[:, list(self.classes_).index(True)]

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per row and feature: churn probability minus that with the feature at the population median.

        The rows and their copies with one feature at the median are predicted together, up to
        CONTRIBUTION_BATCH_ROWS rows per call: the trees are walked once per batch instead of once per feature
        (predictions are per row, so the figures are the same as one call per feature, which paid the
        per-call cost of every tree of every calibration fold once per feature).
        """
        matrix = self.feature_matrix(X)
        copies = len(self.features) + 1
        step = max(1, CONTRIBUTION_BATCH_ROWS // copies)
        parts = []
        for start in range(0, len(matrix), step):
            rows = matrix.iloc[start : start + step]
            variants = [rows, *(rows.assign(**{feature: self.reference_[feature]}) for feature in self.features)]
            probability = self.model_.predict_proba(pd.concat(variants, ignore_index=True))[:, 1].reshape(copies, len(rows))
            parts.append(probability[0] - probability[1:])
        differences = np.concatenate(parts, axis=1) if parts else np.zeros((len(self.features), 0))
        return pd.DataFrame(dict(zip(self.features, differences)), index=X.index)

    def reasons(self, X: pd.DataFrame, top: int = REASONS) -> list[str]:
        """Per row: the `top` features that raise its churn probability most, in words ('; '-separated)."""
        contributions = self.contributions(X)
        values = self.feature_matrix(X)
        order = np.argsort(-contributions.to_numpy(), axis=1, kind="stable")[:, :top]
        names = np.asarray(self.features)
        texts = []
        for row, picks in enumerate(order):
            words = [
                _reason(name, values.iat[row, index], self.reference_[name])
                for index, name in zip(picks, names[picks])
                if contributions.iat[row, index] > 0
            ]
            texts.append("; ".join(words))
        return texts

    def feature_matrix(self, X: pd.DataFrame) -> pd.DataFrame:
        # A model trained before a feature was renamed (core.feature_schema.RENAMED) still names it the old way.
        X = X.rename(columns={RENAMED[name]: name for name in self.features if name in RENAMED and name not in X})
        missing = [name for name in self.features if name not in X.columns]
        if missing:
            raise ValueError(f"churn features missing from the input: {missing}; present: {list(X.columns)}")
        matrix = X[list(self.features)].astype("float64")
        held = getattr(self, "without_values_", [])
        return matrix.assign(**{name: 0.0 for name in held}) if held else matrix


def _reason(feature: str, value: float, typical: float) -> str:
    return f"{_WORDS.get(feature, feature)}: {_number(value)} (typical {_number(typical)})"


def _number(value: float) -> str:
    if value is None or np.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 10 or float(value).is_integer() else f"{value:.2f}"


def scores(is_churned, churn_probability) -> dict[str, float]:
    """ROC-AUC, PR-AUC (average precision), Brier score and expected calibration error (ECE, 10 equal-width
    bins) of churn probabilities against outcomes."""
    y = np.asarray(is_churned, dtype=bool)
    p = np.asarray(churn_probability, dtype=float)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
    }


def expected_calibration_error(is_churned, churn_probability, bins: int = CALIBRATION_BINS) -> float:
    """Mean over customers of |observed churn rate - mean predicted probability| of their bin of the
    reliability table (`calibration_table`: equal-width bins): 0 is perfectly calibrated (a probability)."""
    y = np.asarray(is_churned, dtype=float)
    return float(_binned_ece(y[None], np.asarray(churn_probability, dtype=float)[None], bins)[0])


def calibration_table(is_churned, churn_probability, bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """The reliability table: per probability bin of equal width (tenths; 1.0 falls in the last), the customers,
    their mean predicted churn probability and their observed churn rate. Empty bins have no row."""
    frame = pd.DataFrame({"y": np.asarray(is_churned, dtype=float), "p": np.asarray(churn_probability, dtype=float)})
    frame["band"] = np.minimum((frame["p"] * bins).astype(int), bins - 1)
    table = frame.groupby("band").agg(customers=("y", "size"), mean_predicted=("p", "mean"), observed=("y", "mean"))
    table.index = [f"{band / bins:.1f}-{(band + 1) / bins:.1f}" for band in table.index]
    return table.rename_axis("churn_probability").reset_index()


def _binned_ece(y: np.ndarray, p: np.ndarray, bins: int) -> np.ndarray:
    """The expected calibration error of each row of `y` and `p` (resamples x customers): per equal-width bin
    |churned - sum of probabilities|, summed and divided by the customers, which is the customer-weighted mean
    of |observed rate - mean predicted| of the reliability table (`calibration_table`)."""
    band = np.minimum((p * bins).astype(int), bins - 1)
    rows = np.arange(y.shape[0])[:, None]
    churned = np.zeros((y.shape[0], bins))
    predicted = np.zeros((y.shape[0], bins))
    np.add.at(churned, (rows, band), y)
    np.add.at(predicted, (rows, band), p)
    return np.abs(churned - predicted).sum(axis=1) / y.shape[1]


def ece_difference_interval(
    is_churned,
    classifier_probability,
    bg_nbd_probability,
    seed: int,
    resamples: int = ECE_BOOTSTRAP_RESAMPLES,
    level: float = ECE_INTERVAL_LEVEL,
    bins: int = CALIBRATION_BINS,
) -> tuple[float, float]:
    """The `level` interval of ECE(classifier) - ECE(BG/NBD) on a holdout, by a paired bootstrap of its
    customers (both probabilities of a drawn customer drawn together; fixed by `seed`). An interval holding 0
    says the holdout cannot tell which of the two is better calibrated."""
    y = np.asarray(is_churned, dtype=float)
    a = np.asarray(classifier_probability, dtype=float)
    b = np.asarray(bg_nbd_probability, dtype=float)
    rng = np.random.default_rng(seed)
    differences = []
    for start in range(0, resamples, 100):  # 100 resamples at a time bounds the memory
        drawn = rng.integers(0, len(y), size=(min(100, resamples - start), len(y)))
        differences.append(_binned_ece(y[drawn], a[drawn], bins) - _binned_ece(y[drawn], b[drawn], bins))
    low, high = np.quantile(np.concatenate(differences), [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def better_calibrated(classifier: dict[str, float], bg_nbd: dict[str, float], ece_difference: tuple[float, float] | None = None) -> str:
    """`CLASSIFIER` or `BG_NBD`: whose churn probability a night publishes, from their `scores` on the same
    holdout. The lower ECE wins when the two differ: when `ece_difference` (`ece_difference_interval`) lies
    wholly on one side of 0, or, without it, when the ECEs differ at `ECE_DECIMALS` decimals. Otherwise they
    are as well calibrated: the lower Brier; still equal: the classifier."""
    if ece_difference is None:
        difference = round(classifier["ece"], ECE_DECIMALS) - round(bg_nbd["ece"], ECE_DECIMALS)
        ece_difference = (difference, difference)
    low, high = ece_difference
    if low > 0:
        return BG_NBD
    if high < 0:
        return CLASSIFIER
    return BG_NBD if bg_nbd["brier"] < classifier["brier"] else CLASSIFIER


def publication_reason(
    published: str, classifier: str, figures: dict[str, dict[str, float]], holdout: str, ece_difference: tuple[float, float] | None = None
) -> str:
    """Why `published` (`CLASSIFIER` or `BG_NBD`) is published, with both figures: `figures` maps each to its
    `scores`; `ece_difference` the interval `better_calibrated` judged by."""
    winner, other = (BG_NBD, CLASSIFIER) if published == BG_NBD else (CLASSIFIER, BG_NBD)
    names = {CLASSIFIER: f"classifier {classifier}", BG_NBD: "BG/NBD's P(no purchase)"}
    first, second = figures[winner], figures[other]
    tied = ece_difference is not None and ece_difference[0] <= 0 <= ece_difference[1]
    verdict = f"as well calibrated as {names[other]} and a lower Brier score" if tied else f"better calibrated than {names[other]}"
    interval = (
        f" (ECE difference classifier - BG/NBD in [{ece_difference[0]:+.4f}, {ece_difference[1]:+.4f}], {ECE_INTERVAL_LEVEL:.0%} bootstrap)"
        if ece_difference is not None
        else ""
    )
    return (
        f"{names[winner]} {verdict} on the holdout {holdout}: "
        f"ECE {first['ece']:.4f} vs {second['ece']:.4f}{interval}, Brier {first['brier']:.4f} vs {second['brier']:.4f} "
        f"(ROC-AUC {first['roc_auc']:.4f} vs {second['roc_auc']:.4f})"
    )


def published_label(published: str, version_label: str) -> str:
    """`customer_scores.churn_model_version`: the champion's `<name>/<version>`, or `bg_nbd@<name>/<version>`
    when BG/NBD's probability is published in place of that champion's."""
    return f"{BG_NBD}@{version_label}" if published == BG_NBD else version_label


def judged_version(label: str) -> str:
    """The champion's `<name>/<version>` in a `published_label`."""
    return label.removeprefix(f"{BG_NBD}@")


def fit_purchase_model(history: pd.DataFrame) -> BetaGeoModel:
    """BG/NBD fitted on a purchase history (`features.purchases.HISTORY_COLUMNS` at one as_of, days); customers
    without a history (null rows) are left out. Raises `models.lifetime` errors when it cannot be fitted."""
    known = history.dropna(subset=list(PURCHASE_MODEL_INPUTS))
    return BetaGeoModel().fit(*(known[column].to_numpy() for column in PURCHASE_MODEL_INPUTS))


def purchase_model_inputs(beta_geo: BetaGeoModel, history: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
    """`BGNBD_INPUTS` per customer of `history` (same index): BG/NBD's probability of no purchase within
    `horizon_days` days and P(alive); null for a customer without a history. Point in time when `beta_geo`
    was fitted on `history` and `history` is the purchase history at the features' `as_of`."""
    known = history.dropna(subset=list(PURCHASE_MODEL_INPUTS))
    args = tuple(known[column].to_numpy() for column in PURCHASE_MODEL_INPUTS)
    inputs = pd.DataFrame(
        {
            "bgnbd_no_purchase_probability": beta_geo.probability_no_purchase(horizon_days, *args),
            "bgnbd_p_alive": beta_geo.probability_alive(*args),
        },
        index=known.index,
    )
    return inputs.reindex(history.index)


def beats(challenger: dict[str, float], champion: dict[str, float], metric: str, margin: float) -> bool:
    """True when the challenger's `metric` is better than the champion's by at least `margin`."""
    if HIGHER_IS_BETTER[metric]:
        return challenger[metric] >= champion[metric] + margin
    return challenger[metric] <= champion[metric] - margin


def risk_band(churn_probability: np.ndarray, medium: float, high: float) -> np.ndarray:
    """'high', 'medium' or 'low' churn risk by the configured thresholds."""
    p = np.asarray(churn_probability, dtype=float)
    return np.where(p >= high, "high", np.where(p >= medium, "medium", "low"))
