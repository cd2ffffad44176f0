"""Review insights: sentiment, the aspects a review talks about, product and customer summaries, alerts.

Sentiment is a TF-IDF of character n-grams (`char_wb`, 1-3 characters) of title and body, fed to a
multinomial logistic regression. Character n-grams need no word segmentation, so one model reads English
and Chinese alike. There are no hand-labelled reviews: the star rating is the weak label (1-2 negative,
3 neutral, 4-5 positive), so the model learns which wording goes with which stars and can score text
whose rating is missing or disagrees with it. `sentiment_score = P(positive) - P(negative)`, in [-1, 1].

The lexicon baseline is VADER (Hutto, C.J. & Gilbert, E., 2014. VADER: A Parsimonious Rule-based Model for
Sentiment Analysis of Social Media Text. Proc. ICWSM-14), with its published thresholds: compound >= 0.05
positive, <= -0.05 negative, neutral between. VADER has an English lexicon only; Chinese text scores 0
(neutral) under it, and the evaluation reports each language separately for that reason.

Aspects (delivery, quality, price, size_fit, service) come from a keyword table, `conf/aspects.yaml`.

Holdout split and training cap are deterministic: each row's id is hashed with the seed (splitmix64) to a
number in [0, 1); rows below `holdout_share` are held out, and the training rows with the smallest hash (of
a second, salted hash) are kept up to `max_training_rows`. The same id always lands on the same side.
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
from sklearn.pipeline import Pipeline
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
_HOLDOUT_SALT = 0
_SAMPLE_SALT = 1


class KeywordTableError(ValueError):
    """A keyword table (conf/aspects.yaml, conf/triage.yaml) is invalid; the message names file and field."""


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


def rating_sentiment(rating: pd.Series) -> pd.Series:
    """Weak sentiment label of a star rating (1-5): 1-2 negative, 3 neutral, 4-5 positive."""
    stars = pd.to_numeric(rating, errors="raise")
    if ((stars < 1) | (stars > 5)).any():
        raise ValueError(f"reviews.rating: expected stars 1-5, got {stars[(stars < 1) | (stars > 5)].iloc[0]}")
    return pd.Series(np.select([stars <= 2, stars == 3], ["negative", "neutral"], "positive"), index=rating.index, name="sentiment")


def fit_sentiment(reviews: pd.DataFrame, max_training_rows: int, seed: int) -> Pipeline:
    """Fit the sentiment classifier on `reviews` (id, rating, title, body), star ratings as labels.

    At most `max_training_rows` reviews, a fixed hash sample of their ids. Returns a fitted scikit-learn
    Pipeline (classes negative, neutral, positive) for `predict_sentiment`.
    """
    require_columns(reviews, ("id", "rating", "title", "body"), "reviews")
    rated = reviews[reviews["rating"].notna()]
    sample = capped_sample(rated, "id", max_training_rows, seed)
    labels = rating_sentiment(sample["rating"])
    if labels.nunique() < 2:
        raise ValueError(f"reviews: all {len(labels)} training reviews are {labels.iloc[0]!r}; at least two sentiment levels are needed")
    return text_classifier(seed).fit(review_text(sample), labels)


def predict_sentiment(model: Pipeline, reviews: pd.DataFrame) -> pd.DataFrame:
    """Sentiment of each review: review_id, sentiment_score (P(positive) - P(negative), in [-1, 1]), sentiment."""
    require_columns(reviews, ("id", "title", "body"), "reviews")
    probability = model.predict_proba(review_text(reviews))
    classes = list(model.classes_)
    p = {level: probability[:, classes.index(level)] if level in classes else np.zeros(len(reviews)) for level in SENTIMENTS}
    return pd.DataFrame(
        {
            "review_id": reviews["id"].to_numpy(dtype="int64"),
            "sentiment_score": p["positive"] - p["negative"],
            "sentiment": np.asarray(classes, dtype=object)[probability.argmax(axis=1)],
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


def evaluate_sentiment(reviews: pd.DataFrame, holdout_share: float, max_training_rows: int, seed: int) -> pd.DataFrame:
    """Macro-F1 and accuracy of the model and of VADER on held-out reviews, against the star-rating labels.

    The model is fitted on the other reviews (`fit_sentiment`). One row per method ('model', 'vader') and
    language ('all', then each language present): method, language, reviews (count), macro_f1, accuracy
    (fractions in [0, 1]; macro-F1 averages the F1 of negative, neutral and positive).
    """
    require_columns(reviews, ("id", "rating", "title", "body", "language"), "reviews")
    rated = reviews[reviews["rating"].notna()]
    held = is_holdout(rated["id"], holdout_share, seed)
    train, test = rated[~held], rated[held]
    if test.empty or train.empty:
        raise ValueError(
            f"reviews: holdout_share {holdout_share} leaves {len(train)} training and {len(test)} held-out reviews; both must be non-empty"
        )
    truth = rating_sentiment(test["rating"]).to_numpy()
    predicted = {
        "model": predict_sentiment(fit_sentiment(train, max_training_rows, seed), test)["sentiment"],
        "vader": lexicon_sentiment(test)["sentiment"],
    }
    language = test["language"].to_numpy()
    rows = []
    for method, labels in predicted.items():
        labels = labels.to_numpy()
        for name in ("all", *sorted(set(language))):
            mask = np.ones(len(test), dtype=bool) if name == "all" else language == name
            rows.append(
                {
                    "method": method,
                    "language": name,
                    "reviews": int(mask.sum()),
                    "macro_f1": f1_score(truth[mask], labels[mask], labels=list(SENTIMENTS), average="macro", zero_division=0),
                    "accuracy": accuracy_score(truth[mask], labels[mask]),
                }
            )
    return pd.DataFrame(rows)


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
