"""Inquiry triage: topic and urgency of support inquiries, their resolution times, and customer satisfaction.

Topic: a TF-IDF character n-gram + logistic regression classifier (the one of models/reviews.py) learns
from labelled inquiries and predicts a topic and its probability for every inquiry. The labels are the
topics support filed inquiries under (the shop's `inquiries.topic`, mapped like any column) when the shop
has at least MIN_FILED_INQUIRIES of them in two topics or more; otherwise weak labels from the keyword
table (`conf/triage.yaml`): an inquiry whose subject and body hit the keywords of exactly one topic. The
keyword rule alone (the topic with most keyword hits) is the baseline the evaluation compares with, on
the same held-out inquiries, deduplicated by normalised text. Without filed topics there is no truth to
score against: the figure is then the model's agreement with the keyword labels, and says so.

Times: the shop stores created_at and resolved_at only, no first-response timestamp, so response time is
not available; resolution time is resolved_at - created_at (hours), and unresolved inquiries get their
age at the end of the run date instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import Pipeline

from core.rundate import end_of
from models.reviews import (
    HoldoutError,
    capped_sample,
    is_holdout,
    keyword_hits,
    keyword_pattern,
    normalised_text,
    read_keyword_table,
    require_columns,
    text_classifier,
)

TOPICS = ("shipping", "return_refund", "product_question", "payment", "complaint")
#: Filed topics (the shop's inquiries.topic) needed to learn from them rather than from keyword labels: fewer
#: give a held-out set of a handful per topic, too few to tell the model from the rules.
MIN_FILED_INQUIRIES = 100
LABEL_SOURCES = {"filed": "the shop's filed topics (inquiries.topic)", "keywords": "the keyword labels of the keyword table"}
URGENCIES = ("high", "normal", "low")
INQUIRY_COLUMNS = ("id", "customer_id", "subject", "body", "status", "resolved_at", "created_at")
_HOUR = pd.Timedelta(hours=1)


@dataclass(frozen=True)
class TriageKeywords:
    """The keyword table: each topic's keywords, and the words that make any inquiry urgent."""

    topics: dict[str, tuple[str, ...]]
    urgent: tuple[str, ...]


def load_triage_keywords(path: Path | str) -> TriageKeywords:
    """Read conf/triage.yaml: a keyword list for each of TOPICS and `urgent` (KeywordTableError if invalid)."""
    table = read_keyword_table(path, (*TOPICS, "urgent"))
    return TriageKeywords(topics={topic: table[topic] for topic in TOPICS}, urgent=table["urgent"])


def inquiry_text(inquiries: pd.DataFrame) -> pd.Series:
    """Subject and body of each inquiry, one text (a missing part is empty)."""
    return inquiries["subject"].fillna("").astype(str) + "\n" + inquiries["body"].fillna("").astype(str)


def run_end(run_date: date) -> pd.Timestamp:
    """The moment the run date ends: midnight UTC after `run_date`; "as of the run date" means before it."""
    return pd.Timestamp(end_of(run_date))


# --------------------------------------------------------------------------------------------------------
# Topic: keyword rules and classifier
# --------------------------------------------------------------------------------------------------------


def keyword_topics(inquiries: pd.DataFrame, keywords: TriageKeywords) -> pd.DataFrame:
    """The keyword rules per inquiry: inquiry_id; keyword_topic (the topic with most keyword hits, ties to
    the earlier topic of TOPICS; None without any hit); is_unambiguous (exactly one topic hit);
    has_urgent_keyword."""
    require_columns(inquiries, ("id", "subject", "body"), "inquiries")
    text = inquiry_text(inquiries)
    hits = keyword_hits(text, keywords.topics)[list(TOPICS)].to_numpy()
    best = np.asarray(TOPICS, dtype=object)[hits.argmax(axis=1)]
    return pd.DataFrame(
        {
            "inquiry_id": inquiries["id"].to_numpy(dtype="int64"),
            "keyword_topic": np.where(hits.max(axis=1) > 0, best, None),
            "is_unambiguous": (hits > 0).sum(axis=1) == 1,
            "has_urgent_keyword": text.str.contains(keyword_pattern(keywords.urgent)).to_numpy(),
        }
    )


@dataclass(frozen=True)
class TopicLabels:
    """The topic labels triage learns from: one per inquiry (None: unlabelled), and where they come from."""

    topic: pd.Series  # same index as the inquiries; one of TOPICS or None
    source: str  # "filed": the shop's inquiries.topic; "keywords": weak labels of the keyword table
    unknown_filed: int  # filed topics that are none of TOPICS (left out)


def topic_labels(inquiries: pd.DataFrame, keywords: TriageKeywords) -> TopicLabels:
    """The shop's filed topics when it has at least MIN_FILED_INQUIRIES of them in two topics or more,
    else the keyword table's unambiguous labels (an inquiry without a `topic` column counts as unfiled)."""
    require_columns(inquiries, ("id", "subject", "body"), "inquiries")
    filed = inquiries["topic"] if "topic" in inquiries.columns else pd.Series(None, index=inquiries.index, dtype=object)
    known = filed.where(filed.isin(TOPICS))
    unknown = int((filed.notna() & known.isna()).sum())
    if known.notna().sum() >= MIN_FILED_INQUIRIES and known.nunique() >= 2:
        return TopicLabels(known.astype(object).where(known.notna(), None), "filed", unknown)
    rules = keyword_topics(inquiries, keywords)
    weak = np.where(rules["is_unambiguous"].to_numpy(), rules["keyword_topic"].to_numpy(), None)
    return TopicLabels(pd.Series(weak, index=inquiries.index, dtype=object), "keywords", unknown)


def fit_triage(inquiries: pd.DataFrame, keywords: TriageKeywords, max_training_rows: int, seed: int) -> Pipeline:
    """Fit the topic classifier on the labelled inquiries (`topic_labels`: filed topics, else keyword labels).

    At most `max_training_rows` of them, a fixed hash sample of their ids. Returns a fitted scikit-learn
    Pipeline for `predict_topics`; raises ValueError when fewer than two topics have examples.
    """
    labels = topic_labels(inquiries, keywords)
    return _fit_on_labels(inquiries, labels.topic, LABEL_SOURCES[labels.source], max_training_rows, seed)


def _fit_on_labels(inquiries: pd.DataFrame, topic: pd.Series, source: str, max_training_rows: int, seed: int) -> Pipeline:
    labelled = inquiries.assign(_topic=topic.to_numpy())[topic.notna().to_numpy()]
    sample = capped_sample(labelled, "id", max_training_rows, seed)
    if sample["_topic"].nunique() < 2:
        raise ValueError(
            f"inquiries: {len(sample)} inquiries labelled by {source}, with topics "
            f"{sorted(sample['_topic'].unique())}; at least two topics are needed to train triage"
        )
    return text_classifier(seed).fit(inquiry_text(sample), sample["_topic"])


def predict_topics(model: Pipeline, inquiries: pd.DataFrame) -> pd.DataFrame:
    """Topic of each inquiry: inquiry_id, topic (one of the trained topics), topic_probability (in [0, 1])."""
    require_columns(inquiries, ("id", "subject", "body"), "inquiries")
    probability = model.predict_proba(inquiry_text(inquiries))
    return pd.DataFrame(
        {
            "inquiry_id": inquiries["id"].to_numpy(dtype="int64"),
            "topic": np.asarray(model.classes_, dtype=object)[probability.argmax(axis=1)],
            "topic_probability": probability.max(axis=1),
        }
    )


# --------------------------------------------------------------------------------------------------------
# Times and urgency
# --------------------------------------------------------------------------------------------------------


def inquiry_times(inquiries: pd.DataFrame, run_date: date) -> pd.DataFrame:
    """Point-in-time state of each inquiry at the end of `run_date` (UTC).

    Response time is not available: the shop stores no first-response timestamp. Columns: inquiry_id;
    is_open (not resolved by then: status open or pending, or resolved later); resolution_hours
    (resolved_at - created_at, hours, for inquiries resolved by then, else NaN); age_hours (end of run date
    - created_at, hours, for open ones, else NaN). Inquiries created after the run date get is_open False
    and NaN for both.
    """
    require_columns(inquiries, ("id", "status", "resolved_at", "created_at"), "inquiries")
    end = run_end(run_date)
    created = pd.to_datetime(inquiries["created_at"], utc=True)
    resolved_at = pd.to_datetime(inquiries["resolved_at"], utc=True)
    exists = (created < end).to_numpy()
    resolved = (inquiries["status"].eq("resolved") & resolved_at.notna() & (resolved_at < end)).to_numpy() & exists
    is_open = exists & ~resolved
    return pd.DataFrame(
        {
            "inquiry_id": inquiries["id"].to_numpy(dtype="int64"),
            "is_open": is_open,
            "resolution_hours": np.where(resolved, ((resolved_at - created) / _HOUR).to_numpy(dtype=float), np.nan),
            "age_hours": np.where(is_open, ((end - created) / _HOUR).to_numpy(dtype=float), np.nan),
        }
    )


def inquiry_urgency(
    topic: pd.Series, has_urgent_keyword: pd.Series, is_open: pd.Series, age_hours: pd.Series, stale_after_hours: float
) -> pd.Series:
    """Urgency of each inquiry (same index as `topic`): 'high', 'normal' or 'low'.

    high: a complaint, an urgent keyword, or still open for more than `stale_after_hours` hours;
    low: a product question (pre-sales, no order or money at stake) that is not high;
    normal: the rest. Urgency describes the inquiry; a work queue filters on is_open itself.
    """
    if stale_after_hours <= 0:
        raise ValueError(f"stale_after_hours: expected a positive number of hours, got {stale_after_hours}")
    stale = is_open.astype(bool) & (age_hours.fillna(0.0) > stale_after_hours)
    high = topic.eq("complaint") | has_urgent_keyword.astype(bool) | stale
    urgency = np.where(high, "high", np.where(topic.eq("product_question"), "low", "normal"))
    return pd.Series(urgency, index=topic.index, dtype=object, name="urgency")


def triage_inquiries(
    model: Pipeline, inquiries: pd.DataFrame, keywords: TriageKeywords, run_date: date, stale_after_hours: float
) -> pd.DataFrame:
    """One row per inquiry created by the end of `run_date`: inquiry_id, customer_id, created_at (UTC),
    status (as stored), topic, topic_probability, has_urgent_keyword, urgency, is_open, resolution_hours,
    age_hours (see `inquiry_times`, `inquiry_urgency`)."""
    require_columns(inquiries, INQUIRY_COLUMNS, "inquiries")
    current = inquiries[(pd.to_datetime(inquiries["created_at"], utc=True) < run_end(run_date)).to_numpy()]
    base = pd.DataFrame(
        {
            "inquiry_id": current["id"].to_numpy(dtype="int64"),
            "customer_id": current["customer_id"].to_numpy(dtype="int64"),
            "created_at": pd.to_datetime(current["created_at"], utc=True).reset_index(drop=True),
            "status": current["status"].to_numpy(),
        }
    )
    topics = predict_topics(model, current).drop(columns="inquiry_id")
    urgent = keyword_topics(current, keywords)["has_urgent_keyword"]
    times = inquiry_times(current, run_date).drop(columns="inquiry_id")
    frame = pd.concat([base, topics, urgent, times], axis=1)
    urgency = inquiry_urgency(frame["topic"], frame["has_urgent_keyword"], frame["is_open"], frame["age_hours"], stale_after_hours)
    columns = [
        "inquiry_id",
        "customer_id",
        "created_at",
        "status",
        "topic",
        "topic_probability",
        "has_urgent_keyword",
        "urgency",
        "is_open",
        "resolution_hours",
        "age_hours",
    ]
    return frame.assign(urgency=urgency)[columns]


# --------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------


def inquiry_text_key(inquiries: pd.DataFrame) -> pd.Series:
    """Subject and body as `models.reviews.normalised_text` makes them, with digits as 0 and punctuation as one
    space: texts that differ only in an order number or a comma are one text for deduplication."""
    text = inquiry_text(inquiries).str.replace(r"\d+", "0", regex=True).str.replace(r"[\W_]+", " ", regex=True)
    return normalised_text(text)


def text_holdout(text: pd.Series, holdout_share: float, seed: int) -> np.ndarray:
    """True for the inquiries `evaluate_triage` holds out: about `holdout_share` of the distinct texts
    (`inquiry_text_key`), every copy of a text on the same side."""
    text_id = pd.util.hash_pandas_object(text, index=False).to_numpy().view(np.int64)
    return is_holdout(pd.Series(text_id), holdout_share, seed)


def evaluate_triage(
    inquiries: pd.DataFrame,
    true_topics: pd.DataFrame | None,
    keywords: TriageKeywords,
    holdout_share: float,
    max_training_rows: int,
    seed: int,
) -> pd.DataFrame:
    """Topic macro-F1 of the classifier and of the keyword rules on the same held-out inquiries.

    Held out: about `holdout_share` of the distinct normalised texts (`inquiry_text_key`), so no held-out
    text (nor a copy of it) is trained on; each is scored once. The classifier learns from the labels of
    the other inquiries (`topic_labels`). Scored against `true_topics` (inquiry_id, topic; e.g. the
    generator's truth) when given, else against those labels: the filed topics, or, without them, the
    keyword labels, where the figure is agreement with the keyword rules (1.000 for the rules by
    construction), not accuracy. An inquiry the keywords leave unlabelled counts as wrong for the rules.
    Macro-F1 averages the topics present in the held-out reference. One row per method ('model',
    'keywords'): method, reference ('true topics', 'filed topics' or 'keyword labels'), inquiries
    (held-out distinct texts), training_inquiries (labelled inquiries the model was fitted on; null for the
    rules), macro_f1, accuracy and `f1_<topic>` per topic of TOPICS (fractions; NaN for a topic absent).
    """
    require_columns(inquiries, ("id", "subject", "body"), "inquiries")
    labels = topic_labels(inquiries, keywords)
    if true_topics is not None:
        require_columns(true_topics, ("inquiry_id", "topic"), "true topics")
        truth = true_topics.set_index("inquiry_id")["topic"]
        reference = pd.Series(inquiries["id"].map(truth).to_numpy(), index=inquiries.index, dtype=object)
        reference_name = "true topics"
    else:
        reference = labels.topic
        reference_name = "filed topics" if labels.source == "filed" else "keyword labels"
    text = inquiry_text_key(inquiries)
    held = text_holdout(text, holdout_share, seed)
    train = inquiries[~held]
    # One row per held-out text with a reference topic: the earliest inquiry of that text.
    scored = inquiries.assign(_text=text.to_numpy(), _reference=reference.to_numpy())[held & reference.notna().to_numpy()]
    test = scored.sort_values("id").drop_duplicates("_text")
    # The labels of the whole frame, so the training part learns from the same kind of label it is scored on.
    train_topic = labels.topic[~held]
    if test.empty or train_topic.notna().sum() == 0:
        training_texts = text[~held & labels.topic.notna().to_numpy()].nunique()
        raise HoldoutError(
            f"inquiries: holdout_share {holdout_share} leaves {training_texts} labelled training and {len(test)} held-out "
            f"texts of {text.nunique()} distinct texts with {reference_name}; both must be non-empty"
        )
    model = _fit_on_labels(train, train_topic, LABEL_SOURCES[labels.source], max_training_rows, seed)
    trained_on = min(int(train_topic.notna().sum()), max_training_rows)
    actual = test["_reference"].to_numpy()
    present = [topic for topic in TOPICS if topic in set(actual)]
    predicted = {
        "model": predict_topics(model, test)["topic"].to_numpy(),
        "keywords": keyword_topics(test, keywords)["keyword_topic"].fillna("unlabelled").to_numpy(),
    }
    rows = []
    for method, answer in predicted.items():
        per_topic = dict(zip(present, f1_score(actual, answer, labels=present, average=None, zero_division=0)))
        rows.append(
            {
                "method": method,
                "reference": reference_name,
                "inquiries": len(test),
                "training_inquiries": trained_on if method == "model" else np.nan,
                "macro_f1": float(np.mean(list(per_topic.values()))),
                "accuracy": accuracy_score(actual, answer),
                **{f"f1_{topic}": float(per_topic.get(topic, np.nan)) for topic in TOPICS},
            }
        )
    return pd.DataFrame(rows).astype({"training_inquiries": "Int64"})


# --------------------------------------------------------------------------------------------------------
# Satisfaction
# --------------------------------------------------------------------------------------------------------


def customer_satisfaction(customer_ids: pd.Series, review_insights: pd.DataFrame, triaged: pd.DataFrame) -> pd.DataFrame:
    """A satisfaction score per customer in [-1, 1] from reviews and inquiries; NaN for customers with neither.

    review_component = mean sentiment_score of the customer's reviews (in [-1, 1]);
    inquiry_component = -(share of the customer's inquiries that are complaints or still open) (in [-1, 0]:
        contacting support is no sign of happiness, an unresolved or angry contact is a sign of the opposite);
    satisfaction_score = mean of the components the customer has (one or both).
    Columns: customer_id, review_count, mean_sentiment_score, inquiry_count, complaint_share, open_share
    (fractions of inquiries), satisfaction_score.
    """
    require_columns(review_insights, ("customer_id", "sentiment_score"), "review insights")
    require_columns(triaged, ("customer_id", "topic", "is_open"), "triaged inquiries")
    reviews = review_insights.groupby("customer_id").agg(
        review_count=("sentiment_score", "size"), mean_sentiment_score=("sentiment_score", "mean")
    )
    flags = pd.DataFrame(
        {
            "customer_id": triaged["customer_id"].to_numpy(),
            "is_complaint": triaged["topic"].eq("complaint").to_numpy(),
            "is_open": triaged["is_open"].astype(bool).to_numpy(),
        }
    )
    flags["is_problem"] = flags["is_complaint"] | flags["is_open"]
    contacts = flags.groupby("customer_id").agg(
        inquiry_count=("is_problem", "size"),
        complaint_share=("is_complaint", "mean"),
        open_share=("is_open", "mean"),
        problem_share=("is_problem", "mean"),
    )
    ids = pd.Index(pd.unique(customer_ids.astype("int64")), name="customer_id")
    frame = reviews.reindex(ids).join(contacts.reindex(ids))
    components = pd.concat([frame["mean_sentiment_score"], -frame["problem_share"]], axis=1)
    frame["satisfaction_score"] = components.mean(axis=1, skipna=True)
    frame[["review_count", "inquiry_count"]] = frame[["review_count", "inquiry_count"]].fillna(0).astype("int64")
    return frame.drop(columns="problem_share").reset_index()
