"""Review insights: sentiment, the aspects a review talks about, product and customer summaries, alerts.

Sentiment (`SentimentModel`) reads TF-IDF of word 1-2-grams and of character n-grams (`char_wb`, 1-4
characters) of title and body. Chinese needs no word segmentation: each CJK character is a word token and
character n-grams span phrases, so one model reads English and Chinese alike. There are no hand-labelled
reviews: the star rating is the weak label (1-2 negative, 3 neutral, 4-5 positive). One logistic regression
learns polarity from 1-2 against 4-5 star reviews, a second one 3-star reviews against the rest; a review is
called neutral only when that one is sure (P(neutral) >= NEUTRAL_MIN_PROBABILITY), since 3-star reviews
mostly read like mild praise or mild complaint. `sentiment_score = P(positive) - P(negative)`, in [-1, 1].
The features, the regularisation and the neutral rule were chosen by cross-validation on a real clothing
shop's reviews (grouped by product, deduplicated; docs/marketing.md), not on the demo generator's text.
Every evaluation deduplicates texts first and splits by product, so no text and no product is on both sides.

The lexicon baseline is VADER (Hutto, C.J. & Gilbert, E., 2014. VADER: A Parsimonious Rule-based Model for
Sentiment Analysis of Social Media Text. Proc. ICWSM-14), with its published thresholds: compound >= 0.05
positive, <= -0.05 negative, neutral between. VADER has an English lexicon only; Chinese text scores 0
(neutral) under it, and the evaluation reports each language separately for that reason.

Aspects (delivery, quality, price, size_fit, service) come from a keyword table, `conf/aspects.yaml`.

Holdout split and training cap are deterministic: each row's id (for sentiment: each product, or each
distinct text where the product is unknown) is hashed with the seed (splitmix64) to a number in [0, 1); rows
below `holdout_share` are held out, and the training rows with the smallest hash (of a second, salted hash)
are kept up to `max_training_rows`. The same id always lands on the same side.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import FeatureUnion, Pipeline
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from core.rundate import end_of

SENTIMENTS = ("negative", "neutral", "positive")
ASPECTS = ("delivery", "quality", "price", "size_fit", "service")
LANGUAGES = ("en", "zh")
#: Character n-gram lengths of the text models: 1-grams carry single Chinese characters (好, 差, 慢).
NGRAM_RANGE = (1, 3)
#: VADER's published thresholds on its compound score (its README, "about the scoring").
VADER_POSITIVE = 0.05
VADER_NEGATIVE = -0.05
REVIEW_COLUMNS = ("id", "customer_id", "product_id", "rating", "title", "body", "language", "created_at")
#: CJK ideographs: each one is a word token of its own, so Chinese needs no word segmentation.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
#: Word tokens of the sentiment features: one CJK character, a run of two or more other letters, or a number.
WORD_TOKEN_PATTERN = rf"[{_CJK}]|[^\W\d_{_CJK}]{{2,}}|\d+"
#: Sentiment features and regularisation, chosen by grouped cross-validation on a real review corpus
#: (docs/marketing.md, "How the sentiment model was chosen").
SENTIMENT_WORD_NGRAMS = (1, 2)
SENTIMENT_CHAR_NGRAMS = (1, 4)
POLARITY_C = 16.0
NEUTRALITY_C = 1.0
NEUTRAL_MIN_PROBABILITY = 0.65
_HOLDOUT_SALT = 0
_SAMPLE_SALT = 1


class KeywordTableError(ValueError):
    """A keyword table (conf/aspects.yaml, conf/triage.yaml) is invalid; the message names file and field."""


class HoldoutError(ValueError):
    """The texts are too few, or too alike, to hold any out for an evaluation (split by text or product): no
    held-out figure can be computed. A shop whose inquiries come from a form with a handful of fixed subjects
    has many inquiries and few distinct texts."""


# --------------------------------------------------------------------------------------------------------
# Keyword tables
# --------------------------------------------------------------------------------------------------------


def read_keyword_table(path: Path | str, fields: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Read a flat YAML mapping `field: [keyword, ...]` holding exactly `fields`, each with non-empty strings.

    Raises KeywordTableError naming the file and the field: not a mapping, unknown or missing field, a field
    that is not a list, an empty list, or a keyword that is not a non-empty string.
    """
    where = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeywordTableError(f"{where}: file not found") from None
    except yaml.YAMLError as error:
        raise KeywordTableError(f"{where}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise KeywordTableError(f"{where}: expected a mapping of {', '.join(fields)} to keyword lists, got {type(data).__name__}")
    unknown = sorted(str(key) for key in data if key not in fields)
    if unknown:
        raise KeywordTableError(f"{where}: unknown field(s) {', '.join(unknown)}; expected {', '.join(fields)}")
    missing = [field for field in fields if field not in data]
    if missing:
        raise KeywordTableError(f"{where}: missing field(s) {', '.join(missing)}")
    table = {}
    for field in fields:
        keywords = data[field]
        if not isinstance(keywords, list):
            raise KeywordTableError(f"{where}: {field}: expected a list of keywords, got {type(keywords).__name__}")
        if not keywords:
            raise KeywordTableError(f"{where}: {field}: the keyword list is empty")
        bad = [keyword for keyword in keywords if not isinstance(keyword, str) or not keyword.strip()]
        if bad:
            raise KeywordTableError(f"{where}: {field}: keywords must be non-empty strings, got {bad[0]!r}")
        table[field] = tuple(keyword.strip().lower() for keyword in keywords)
    return table


def load_aspects(path: Path | str) -> dict[str, tuple[str, ...]]:
    """The aspect keyword table (conf/aspects.yaml): each of ASPECTS to its English and Chinese keywords."""
    return read_keyword_table(path, ASPECTS)


def keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern:
    """One case-insensitive regex matching any keyword: Latin-script ones at a word start, others anywhere."""
    parts = [(r"\b" if re.match(r"[a-z0-9]", keyword) else "") + re.escape(keyword) for keyword in sorted(keywords, key=len, reverse=True)]
    return re.compile("|".join(parts), re.IGNORECASE)


def keyword_hits(text: pd.Series, table: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    """Number of keyword occurrences of each field of `table` in each text (same index as `text`)."""
    return pd.DataFrame(
        {field: text.str.count(keyword_pattern(keywords)).astype("int64") for field, keywords in table.items()}, index=text.index
    )


# --------------------------------------------------------------------------------------------------------
# Splits and the text classifier (shared with models/triage.py)
# --------------------------------------------------------------------------------------------------------


def unit_hash(ids: pd.Series | np.ndarray, seed: int, salt: int = 0) -> np.ndarray:
    """A number in [0, 1) per integer id, fixed by (id, seed, salt): splitmix64 of the mixed id."""
    x = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64((seed * 0x9E3779B97F4A7C15 + salt * 0xD1B54A32D192ED03) % 2**64)
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def is_holdout(ids: pd.Series, holdout_share: float, seed: int) -> np.ndarray:
    """True for the rows held out for evaluation: about `holdout_share` (a fraction) of ids, fixed per id."""
    if not 0 < holdout_share < 1:
        raise ValueError(f"holdout_share: expected a fraction in (0, 1), got {holdout_share}")
    return unit_hash(ids, seed, _HOLDOUT_SALT) < holdout_share


def capped_sample(frame: pd.DataFrame, id_column: str, max_rows: int, seed: int) -> pd.DataFrame:
    """At most `max_rows` rows of `frame`: all of them if fewer, else a fixed hash sample of the ids."""
    if max_rows < 1:
        raise ValueError(f"max_training_rows: expected at least 1, got {max_rows}")
    if len(frame) <= max_rows:
        return frame
    order = np.argsort(unit_hash(frame[id_column], seed, _SAMPLE_SALT), kind="stable")
    return frame.iloc[np.sort(order[:max_rows])]


def text_classifier(seed: int, min_df: int = 1) -> Pipeline:
    """TF-IDF of character n-grams (within word boundaries) + multinomial logistic regression, class-balanced."""
    return Pipeline(
        [
            ("tfidf", TfidfVectorizer(analyzer="char_wb", ngram_range=NGRAM_RANGE, lowercase=True, sublinear_tf=True, min_df=min_df)),
            ("logreg", LogisticRegression(C=4.0, max_iter=2000, class_weight="balanced", random_state=seed)),
        ]
    )


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    """Raise ValueError naming the missing and the present columns of `name`."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)}; present: {', '.join(map(str, frame.columns))}")


# --------------------------------------------------------------------------------------------------------
# Sentiment
# --------------------------------------------------------------------------------------------------------


def review_text(reviews: pd.DataFrame) -> pd.Series:
    """Title and body of each review, one text (a missing part is empty)."""
    return reviews["title"].fillna("").astype(str) + "\n" + reviews["body"].fillna("").astype(str)


def normalised_text(text: pd.Series) -> pd.Series:
    """Lower-case text with every run of whitespace made one space, ends stripped: equal for duplicate reviews."""
    return text.fillna("").astype(str).str.lower().str.split().str.join(" ")


def text_language(text: pd.Series) -> pd.Series:
    """'zh' for a text holding a CJK character, else 'en': the language of a corpus that does not say it."""
    return pd.Series(np.where(text.fillna("").astype(str).str.contains(f"[{_CJK}]"), "zh", "en"), index=text.index, name="language")


def rating_sentiment(rating: pd.Series) -> pd.Series:
    """Weak sentiment label of a star rating (1-5): 1-2 negative, 3 neutral, 4-5 positive."""
    stars = pd.to_numeric(rating, errors="raise")
    if ((stars < 1) | (stars > 5)).any():
        raise ValueError(f"reviews.rating: expected stars 1-5, got {stars[(stars < 1) | (stars > 5)].iloc[0]}")
    return pd.Series(np.select([stars <= 2, stars == 3], ["negative", "neutral"], "positive"), index=rating.index, name="sentiment")


def read_review_corpus(path: Path | str) -> pd.DataFrame:
    """A corpus of rated reviews from a tab-separated file (gzip allowed): id, product_id, rating, title, body,
    language.

    Expected columns: rating (stars 1-5), title, body; optional: id (or row; else the line number),
    product_id (or clothing_id; else unknown), language (else `text_language`). Raises ValueError naming the
    file and the missing columns.
    """
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    frame = frame.rename(columns={"row": "id", "clothing_id": "product_id"})
    require_columns(frame, ("rating", "title", "body"), str(path))
    stars = pd.to_numeric(frame["rating"], errors="coerce")
    if stars.isna().any():
        raise ValueError(f"{path}: rating: expected stars 1-5, got {frame['rating'][stars.isna()].iloc[0]!r}")
    corpus = pd.DataFrame(
        {
            "id": pd.to_numeric(frame["id"]).astype("int64") if "id" in frame.columns else np.arange(len(frame), dtype="int64"),
            "product_id": frame["product_id"].replace("", None) if "product_id" in frame.columns else None,
            "rating": stars.astype("int64"),
            "title": frame["title"],
            "body": frame["body"],
        }
    )
    return corpus.assign(language=frame["language"] if "language" in frame.columns else text_language(review_text(corpus)))


def distinct_reviews(reviews: pd.DataFrame) -> pd.DataFrame:
    """The rated reviews with text, each normalised text once (the review with the smallest id keeps it).

    Reviews without stars or with neither title nor body are left out: they carry no label or no text.
    """
    rated = reviews[reviews["rating"].notna()]
    rated = rated.iloc[np.argsort(rated["id"].to_numpy(dtype="int64"), kind="stable")]
    key = normalised_text(review_text(rated))
    return rated[key.ne("") & ~key.duplicated()]


def sentiment_holdout(reviews: pd.DataFrame, holdout_share: float, seed: int) -> np.ndarray:
    """True for held-out reviews: about `holdout_share` (a fraction) of the groups, fixed per group.

    A group is a product (`product_id`, where the frame has it and it is known), else a normalised text, so
    the same product, and the same text, never sits on both sides of the split.
    """
    text_key = "text " + normalised_text(review_text(reviews))
    if "product_id" in reviews.columns:
        product = reviews["product_id"]
        text_key = text_key.where(product.isna(), "product " + product.astype(str))
    groups = pd.util.hash_pandas_object(text_key, index=False).to_numpy().view(np.int64)
    return is_holdout(pd.Series(groups, index=reviews.index), holdout_share, seed)


def sentiment_features() -> FeatureUnion:
    """TF-IDF of word 1-2-grams (CJK characters are words of their own) beside TF-IDF of character n-grams
    within word boundaries: words carry negation and phrases ("not worth"), characters carry typos and
    Chinese, which needs no segmentation either way."""
    return FeatureUnion(
        [
            ("words", TfidfVectorizer(token_pattern=WORD_TOKEN_PATTERN, ngram_range=SENTIMENT_WORD_NGRAMS, sublinear_tf=True, min_df=2)),
            ("characters", TfidfVectorizer(analyzer="char_wb", ngram_range=SENTIMENT_CHAR_NGRAMS, sublinear_tf=True, min_df=2)),
        ]
    )


class SentimentModel:
    """Sentiment of review text from two logistic regressions on shared word and character TF-IDF features.

    Polarity is learned from 1-2 against 4-5 star reviews only; neutrality from 3-star reviews against the
    rest. P(neutral) is the neutrality model's, P(positive) = (1 - P(neutral)) * P(positive | polar) and
    P(negative) likewise, so `sentiment_score` = P(positive) - P(negative) lies in [-1, 1]. A review is called
    neutral only when P(neutral) >= `neutral_min_probability`; otherwise it is positive or negative by the
    polarity model. Without 3-star reviews to learn from, no review is called neutral. Neither regression is
    class-balanced: balancing makes the rare class cheap to predict and its probabilities no longer frequencies.
    """

    def __init__(
        self,
        seed: int,
        polarity_c: float = POLARITY_C,
        neutrality_c: float = NEUTRALITY_C,
        neutral_min_probability: float = NEUTRAL_MIN_PROBABILITY,
    ):
        self.seed = seed
        self.polarity_c = polarity_c
        self.neutrality_c = neutrality_c
        self.neutral_min_probability = neutral_min_probability

    def fit(self, text: pd.Series, rating: pd.Series) -> SentimentModel:
        """Fit on review texts and their star ratings (1-5); needs 1-2 and 4-5 star reviews both."""
        self.features_ = sentiment_features()
        return self.fit_regressions(self.features_, self.features_.fit_transform(text), rating)

    def fit_regressions(self, fitted_features: FeatureUnion, features, rating: pd.Series) -> SentimentModel:
        """Fit the two regressions on features already computed by `fitted_features` (so that models with
        other regularisation can share them in a cross-validation); returns self."""
        labels = rating_sentiment(rating).to_numpy()
        polar = labels != "neutral"
        if len(set(labels[polar])) < 2:
            raise ValueError(
                f"reviews: the {len(labels)} training reviews hold {', '.join(sorted(set(labels)))} only; "
                "both 1-2 and 4-5 star reviews are needed to learn sentiment"
            )
        self.features_ = fitted_features
        self.polarity_ = self._regression(self.polarity_c).fit(features[polar], labels[polar] == "positive")
        self.neutrality_ = self._regression(self.neutrality_c).fit(features, ~polar) if not polar.all() else None
        return self

    def predict_proba(self, text: pd.Series) -> np.ndarray:
        """P(negative), P(neutral), P(positive) per text: one row each, columns in SENTIMENTS order."""
        features = self.features_.transform(text)
        positive_if_polar = self.polarity_.predict_proba(features)[:, 1]
        neutral = self.neutrality_.predict_proba(features)[:, 1] if self.neutrality_ is not None else np.zeros(features.shape[0])
        return np.column_stack([(1 - neutral) * (1 - positive_if_polar), neutral, (1 - neutral) * positive_if_polar])

    def decide(self, probability: np.ndarray) -> np.ndarray:
        """The sentiment of each row of `predict_proba`: neutral at P(neutral) >= neutral_min_probability,
        else the more probable of negative and positive."""
        polar = np.where(probability[:, 2] >= probability[:, 0], "positive", "negative")
        return np.where(probability[:, 1] >= self.neutral_min_probability, "neutral", polar).astype(object)

    def _regression(self, c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=3000, random_state=self.seed)


def fit_sentiment(reviews: pd.DataFrame, max_training_rows: int, seed: int) -> SentimentModel:
    """Fit the sentiment model on `reviews` (id, rating, title, body), star ratings as labels.

    Each distinct text once (`distinct_reviews`), at most `max_training_rows` of them, a fixed hash sample of
    their ids.
    """
    require_columns(reviews, ("id", "rating", "title", "body"), "reviews")
    sample = capped_sample(distinct_reviews(reviews), "id", max_training_rows, seed)
    return SentimentModel(seed).fit(review_text(sample), sample["rating"])


def predict_sentiment(model: SentimentModel, reviews: pd.DataFrame) -> pd.DataFrame:
    """Sentiment of each review: review_id, sentiment_score (P(positive) - P(negative), in [-1, 1]), sentiment."""
    require_columns(reviews, ("id", "title", "body"), "reviews")
    probability = model.predict_proba(review_text(reviews))
    return pd.DataFrame(
        {
            "review_id": reviews["id"].to_numpy(dtype="int64"),
            "sentiment_score": probability[:, 2] - probability[:, 0],
            "sentiment": model.decide(probability),
        }
    )


def lexicon_sentiment(reviews: pd.DataFrame) -> pd.DataFrame:
    """VADER baseline per review: review_id, sentiment_score (VADER compound, in [-1, 1]), sentiment.

    English lexicon only: text without English words (Chinese) scores 0, i.e. neutral.
    """
    analyzer = SentimentIntensityAnalyzer()
    compound = np.array([analyzer.polarity_scores(text)["compound"] for text in review_text(reviews)], dtype=float)
    return pd.DataFrame(
        {
            "review_id": reviews["id"].to_numpy(dtype="int64"),
            "sentiment_score": compound,
            "sentiment": np.select([compound >= VADER_POSITIVE, compound <= VADER_NEGATIVE], ["positive", "negative"], "neutral").astype(
                object
            ),
        }
    )


def sentiment_figures(truth: np.ndarray, predicted: np.ndarray, positive_if_polar: np.ndarray | None = None) -> dict[str, float]:
    """How well `predicted` sentiments match the star labels `truth`, over the classes present in `truth`.

    binary_macro_f1: on the polar reviews (1-2 and 4-5 stars) only, F1 averaged over negative and positive
    (those present); a polar review called neutral is a miss of its class. macro_f1_3class: F1 averaged over
    the classes present, NaN without 3-star reviews. neutral_rate_on_polar: share of polar reviews called
    neutral. accuracy: over all reviews. calibration_error: expected calibration error of
    `positive_if_polar` (a model's P(positive | polar) per review) on the polar reviews, over ten equal-width
    bins; NaN without it. Fractions in [0, 1]; NaN where there is nothing to average over.
    """
    polar = truth != "neutral"
    present = [level for level in SENTIMENTS if level in set(truth)]
    polar_present = [level for level in present if level != "neutral"]
    return {
        "reviews": int(len(truth)),
        "polar_reviews": int(polar.sum()),
        "binary_macro_f1": f1_score(truth[polar], predicted[polar], labels=polar_present, average="macro", zero_division=0)
        if polar.any()
        else np.nan,
        "macro_f1_3class": f1_score(truth, predicted, labels=present, average="macro", zero_division=0) if "neutral" in present else np.nan,
        "neutral_rate_on_polar": float(np.mean(predicted[polar] == "neutral")) if polar.any() else np.nan,
        "accuracy": accuracy_score(truth, predicted) if len(truth) else np.nan,
        "calibration_error": calibration_error(positive_if_polar[polar], truth[polar] == "positive")
        if positive_if_polar is not None and polar.any()
        else np.nan,
    }


def calibration_error(probability: np.ndarray, outcome: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the mean over equal-width probability bins, weighted by their rows, of
    |mean probability - share of true outcomes| (a fraction in [0, 1])."""
    which = np.minimum((probability * bins).astype(int), bins - 1)
    return float(sum(np.mean(which == b) * abs(probability[which == b].mean() - outcome[which == b].mean()) for b in np.unique(which)))


def evaluate_sentiment(reviews: pd.DataFrame, holdout_share: float, max_training_rows: int, seed: int) -> pd.DataFrame:
    """The model, VADER and the majority class on held-out reviews, against the star-rating labels.

    Reviews are deduplicated by normalised text first (`distinct_reviews`: no text on both sides, rows without
    text or stars left out), then split by product where known (`sentiment_holdout`); the model is fitted on
    the training side (`fit_sentiment`), the majority baseline answers the training side's most frequent
    label. One row per method ('model', 'vader', 'majority') and language ('all', then each language
    present; from the `language` column, else 'zh' for text with CJK characters): method, language,
    `sentiment_figures`, training_reviews.
    """
    require_columns(reviews, ("id", "rating", "title", "body"), "reviews")
    distinct = distinct_reviews(reviews)
    held = sentiment_holdout(distinct, holdout_share, seed)
    train, test = distinct[~held], distinct[held]
    if test.empty or train.empty:
        raise HoldoutError(
            f"reviews: holdout_share {holdout_share} leaves {len(train)} training and {len(test)} held-out distinct reviews; "
            "both must be non-empty"
        )
    truth = rating_sentiment(test["rating"]).to_numpy()
    training_labels = rating_sentiment(train["rating"])
    model = fit_sentiment(train, max_training_rows, seed)
    probability = model.predict_proba(review_text(test))
    predicted = {
        "model": (model.decide(probability), probability[:, 2] / (probability[:, 0] + probability[:, 2])),
        "vader": (lexicon_sentiment(test)["sentiment"].to_numpy(), None),
        "majority": (np.full(len(test), training_labels.value_counts().idxmax(), dtype=object), None),
    }
    language = (test["language"] if "language" in test.columns else text_language(review_text(test))).to_numpy()
    rows = []
    for method, (labels, positive_if_polar) in predicted.items():
        for name in ("all", *sorted(set(language))):
            mask = np.ones(len(test), dtype=bool) if name == "all" else language == name
            calibration = positive_if_polar[mask] if positive_if_polar is not None else None
            rows.append({"method": method, "language": name, **sentiment_figures(truth[mask], labels[mask], calibration)})
    return pd.DataFrame(rows).assign(training_reviews=min(len(train), max_training_rows))


# --------------------------------------------------------------------------------------------------------
# Aspects and per-review insights
# --------------------------------------------------------------------------------------------------------


def mark_aspects(reviews: pd.DataFrame, aspects: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    """Which aspects each review mentions: review_id and a bool `mentions_<aspect>` per aspect of the table."""
    require_columns(reviews, ("id", "title", "body"), "reviews")
    hits = keyword_hits(review_text(reviews), aspects)
    marks = pd.DataFrame({"review_id": reviews["id"].to_numpy(dtype="int64")})
    for aspect in aspects:
        marks[f"mentions_{aspect}"] = hits[aspect].to_numpy() > 0
    return marks


def review_insights(reviews: pd.DataFrame, model: Pipeline, aspects: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    """One row per review: review_id, customer_id, product_id, rating, language, reviewed_at (UTC, the
    review's created_at), sentiment_score, sentiment, `mentions_<aspect>` flags and `aspects` (the mentioned
    aspects, comma-separated, '' when none)."""
    require_columns(reviews, REVIEW_COLUMNS, "reviews")
    base = pd.DataFrame(
        {
            "review_id": reviews["id"].to_numpy(dtype="int64"),
            "customer_id": reviews["customer_id"].to_numpy(dtype="int64"),
            "product_id": reviews["product_id"].to_numpy(dtype="int64"),
            "rating": reviews["rating"].to_numpy(),
            "language": reviews["language"].to_numpy(),
            "reviewed_at": pd.to_datetime(reviews["created_at"], utc=True).reset_index(drop=True),
        }
    )
    sentiment = predict_sentiment(model, reviews).drop(columns="review_id")
    marks = mark_aspects(reviews, aspects).drop(columns="review_id")
    names = np.asarray(list(aspects), dtype=object)
    flags = marks[[f"mentions_{aspect}" for aspect in aspects]].to_numpy()
    mentioned = pd.Series([",".join(names[row]) for row in flags], dtype=object)
    return pd.concat([base, sentiment, marks], axis=1).assign(aspects=mentioned)


def product_review_summary(insights: pd.DataFrame, aspects: tuple[str, ...] = ASPECTS) -> pd.DataFrame:
    """One row per product with reviews: product_id, review_count, avg_rating (stars), mean_sentiment_score
    ([-1, 1]), negative_share (fraction of reviews classed negative), and per aspect `<aspect>_mention_count`
    and `<aspect>_sentiment_score` (mean sentiment_score of the reviews mentioning it; NaN when none)."""
    require_columns(
        insights,
        ("product_id", "review_id", "rating", "sentiment_score", "sentiment", *(f"mentions_{aspect}" for aspect in aspects)),
        "review insights",
    )
    frame = insights.assign(is_negative=insights["sentiment"].eq("negative"))
    columns = {
        "review_count": ("review_id", "size"),
        "avg_rating": ("rating", "mean"),
        "mean_sentiment_score": ("sentiment_score", "mean"),
        "negative_share": ("is_negative", "mean"),
    }
    for aspect in aspects:
        frame[f"_{aspect}_score"] = frame["sentiment_score"].where(frame[f"mentions_{aspect}"])
        columns[f"{aspect}_mention_count"] = (f"mentions_{aspect}", "sum")
        columns[f"{aspect}_sentiment_score"] = (f"_{aspect}_score", "mean")
    summary = frame.groupby("product_id", sort=True).agg(**columns).reset_index()
    return summary.astype({f"{aspect}_mention_count": "int64" for aspect in aspects} | {"review_count": "int64"})


def customer_review_summary(insights: pd.DataFrame) -> pd.DataFrame:
    """One row per customer with reviews: customer_id, review_count, mean_sentiment_score ([-1, 1]),
    last_negative_review_at (UTC timestamp of the latest review classed negative; NaT when none)."""
    require_columns(insights, ("customer_id", "review_id", "sentiment_score", "sentiment", "reviewed_at"), "review insights")
    frame = insights.assign(negative_at=insights["reviewed_at"].where(insights["sentiment"].eq("negative")))
    summary = frame.groupby("customer_id", sort=True).agg(
        review_count=("review_id", "size"), mean_sentiment_score=("sentiment_score", "mean"), last_negative_review_at=("negative_at", "max")
    )
    return summary.reset_index().astype({"review_count": "int64"})


# --------------------------------------------------------------------------------------------------------
# Alerts
# --------------------------------------------------------------------------------------------------------


def negative_review_alerts(
    insights: pd.DataFrame, customer_clv: pd.DataFrame, run_date: date, alert_days: int, alert_clv_quantile: float
) -> pd.DataFrame:
    """Valuable customers with a recent negative review: one row per such review, most valuable first.

    Valuable: clv_12m (shop currency) at or above its `alert_clv_quantile` quantile over `customer_clv`
    (one row per customer: customer_id, clv_12m; the caller picks the scores of the run). Recent: reviewed
    on one of the `alert_days` UTC days ending with `run_date` (run_date - alert_days < day <= run_date);
    later reviews are ignored, so a rerun of a past date gives the same list.
    Columns: customer_id, review_id, product_id, reviewed_at (UTC), sentiment_score, clv_12m (float, shop
    currency), aspects (comma-separated).
    """
    require_columns(
        insights, ("customer_id", "review_id", "product_id", "reviewed_at", "sentiment_score", "sentiment", "aspects"), "review insights"
    )
    require_columns(customer_clv, ("customer_id", "clv_12m"), "customer scores")
    if alert_days < 1:
        raise ValueError(f"alert_days: expected at least 1 day, got {alert_days}")
    if not 0 < alert_clv_quantile < 1:
        raise ValueError(f"alert_clv_quantile: expected a fraction in (0, 1), got {alert_clv_quantile}")
    if customer_clv["customer_id"].duplicated().any():
        raise ValueError("customer scores: customer_id is not unique; pass the scores of one as_of date")
    clv = pd.DataFrame(
        {"customer_id": customer_clv["customer_id"].astype("int64"), "clv_12m": pd.to_numeric(customer_clv["clv_12m"].astype(float))}
    )
    threshold = clv["clv_12m"].quantile(alert_clv_quantile)
    valuable = clv[clv["clv_12m"] >= threshold]
    end = end_of(run_date)
    start = end - timedelta(days=alert_days)
    reviewed_at = pd.to_datetime(insights["reviewed_at"], utc=True)
    recent = insights[insights["sentiment"].eq("negative") & (reviewed_at >= start) & (reviewed_at < end)]
    alerts = recent.merge(valuable, on="customer_id", how="inner")
    columns = ["customer_id", "review_id", "product_id", "reviewed_at", "sentiment_score", "clv_12m", "aspects"]
    return alerts[columns].sort_values(["clv_12m", "reviewed_at", "review_id"], ascending=[False, False, True]).reset_index(drop=True)
