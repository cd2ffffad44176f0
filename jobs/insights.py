"""insights: what customers write -> review insights and alerts, inquiry triage, customer satisfaction.

Reviews: a sentiment model (TF-IDF of words and character n-grams + logistic regressions, star ratings as
weak labels; English and Chinese alike, `models/reviews.py`) is fitted tonight on the distinct review texts
known at the run date (a fixed hash sample of at most `insights.max_training_rows`) and reads every review;
aspects come from the keyword table `conf/aspects.yaml`. Inquiries: a topic classifier trained on the topics
support filed (`inquiries.topic`) or, without enough of them, on the keyword labels of `conf/triage.yaml`;
urgency and resolution time (`models/triage.py`). Before fitting for the night, each model is evaluated on
held-out rows against its baselines (VADER and the majority class for sentiment, on deduplicated reviews
split by product; the keyword rules for triage, on inquiries deduplicated by text), logged to MLflow and
listed in the run summary: when due, i.e. when no night of the last `mlflow.evaluate_every_days` days
evaluated the model with the same parameters; other nights report that evaluation with its date.

Written, each in the run date's `as_of` partition with the CRM table's columns:
- `gold/review_insights`: per product and aspect ('all' for the whole product);
- `gold/review_alerts`: negative reviews of the last `insights.alert_days` days by customers in the top CLV
  band (`insights.alert_clv_quantile` of tonight's `customer_scores`);
- `gold/inquiry_triage`: per inquiry, as of the run date (one resolved later is still open here);
- `gold/customer_satisfaction`: per customer with a review or an inquiry.
Only rows created by the end of the run date are read, so a rerun of a date gives the same tables.
A shop without reviews (or inquiries) to learn from writes empty partitions and says why (`degraded`). Texts
too few or too alike to hold any out (a contact form with four fixed subjects) are scored all the same, without
a held-out figure: `degraded` says so (`review_sentiment_evaluation`, `inquiry_triage_evaluation`).
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from core.config import Settings
from core.lake import Lake
from core.rundate import end_of
from core.spark import spark_session
from features.customer import known_at
from models import reviews as review_model
from models import tracking, triage

log = logging.getLogger(__name__)

TABLES = ("review_insights", "review_alerts", "inquiry_triage", "customer_satisfaction")
REVIEW_COLUMNS = ("id", "customer_id", "product_id", "rating", "title", "body", "language", "created_at")
INQUIRY_COLUMNS = ("id", "customer_id", "channel", "subject", "body", "status", "resolved_at", "created_at", "topic")
#: A model needs at least this many labelled rows (and two classes) to be fitted and evaluated.
MIN_TRAINING_ROWS = 20
#: The sentiment figures logged per method and language (models/reviews.sentiment_figures).
SENTIMENT_METRICS = ("binary_macro_f1", "macro_f1_3class", "neutral_rate_on_polar", "accuracy", "calibration_error")


def run(run_date: date, settings: Settings, run_id: str) -> dict:
    """Write the run date's insight tables; returns rows per table, the holdout figures and `degraded`."""
    conf = settings.insights
    aspects = review_model.load_aspects(settings.conf_dir / conf.aspects_file)
    keywords = triage.load_triage_keywords(settings.conf_dir / conf.triage_file)
    tracking.connect(settings.mlflow)
    degraded: dict[str, str] = {}
    figures: dict[str, float] = {}
    with spark_session(settings, "insights") as spark:
        lake = Lake(spark, settings.lake_location)
        reviews = known_at(lake.read("silver", "reviews"), run_date).select(*REVIEW_COLUMNS)
        inquiries = known_at(lake.read("silver", "inquiries"), run_date)
        # A silver table cleaned before the shop model had inquiries.topic has no such column: all unfiled.
        inquiries = inquiries.select(*[column for column in INQUIRY_COLUMNS if column in inquiries.columns])

        sample = training_sample(reviews, conf.max_training_rows, conf.seed)
        levels = set(review_model.rating_sentiment(sample["rating"].dropna()))
        if not {"negative", "positive"} <= levels or len(sample) < MIN_TRAINING_ROWS:
            degraded["reviews"] = (
                f"{len(sample)} reviews ({', '.join(sorted(levels)) or 'none rated'}) up to {run_date}: "
                "too few to learn sentiment from (1-2 and 4-5 star reviews are both needed)"
            )
            scored = None
        else:
            try:
                judged, _ = tracking.evaluate_when_due(
                    "review_sentiment",
                    run_date,
                    run_id,
                    sentiment_params(settings),
                    settings.mlflow.evaluate_every_days,
                    lambda: evaluate_sentiment(sample, settings, run_date, run_id),
                )
                figures.update(judged)
            except review_model.HoldoutError as error:  # scored all the same, without a held-out figure
                degraded["review_sentiment_evaluation"] = str(error)
            model = review_model.fit_sentiment(sample, conf.max_training_rows, conf.seed)
            scored = reviews.mapInPandas(_review_scorer(model, aspects), review_schema(aspects)).cache()

        sample = training_sample(inquiries, conf.max_training_rows, conf.seed)
        labels = triage.topic_labels(sample, keywords)
        labelled = labels.topic.dropna()
        if labels.unknown_filed:
            log.warning("inquiries.topic: %d filed topics are none of %s: left out", labels.unknown_filed, ", ".join(triage.TOPICS))
        if labelled.nunique() < 2 or len(labelled) < MIN_TRAINING_ROWS:
            degraded["inquiries"] = (
                f"{len(labelled)} inquiries up to {run_date} labelled by {triage.LABEL_SOURCES[labels.source]} "
                f"(conf/{conf.triage_file}) in {labelled.nunique()} topics: too few to learn triage from"
            )
            triaged = None
        else:
            try:
                judged, _ = tracking.evaluate_when_due(
                    "inquiry_triage",
                    run_date,
                    run_id,
                    triage_params(settings, keywords, labels.source),
                    settings.mlflow.evaluate_every_days,
                    lambda: evaluate_triage(sample, keywords, settings, run_date, run_id, labels.source),
                )
                figures.update(judged)
            except review_model.HoldoutError as error:  # triaged all the same, without a held-out figure
                degraded["inquiry_triage_evaluation"] = str(error)
            model = triage.fit_triage(sample, keywords, conf.max_training_rows, conf.seed)
            triaged = (
                inquiries.mapInPandas(_inquiry_triager(model, keywords, run_date, conf.stale_inquiry_hours), TRIAGE_SCHEMA)
                .join(inquiries.select(F.col("id").alias("inquiry_id"), "channel", "resolved_at"), "inquiry_id")
                .cache()
            )

        tables = {
            "review_insights": product_insights(scored, lake.read("silver", "products"), aspects) if scored is not None else None,
            "review_alerts": review_alerts(scored, lake, run_date, settings) if scored is not None else None,
            "inquiry_triage": inquiry_rows(triaged) if triaged is not None else None,
            "customer_satisfaction": satisfaction(spark, scored, triaged),
        }
        counts = {table: lake.write_gold(rows, table, run_date, run_id) for table, rows in tables.items()}
    for reason in degraded.values():
        log.warning("insights for %s: %s", run_date, reason)
    log.info("insights for %s: %s; %s", run_date, counts, figures)
    return {"rows": counts, "figures": figures, "degraded": degraded}


def training_sample(rows: DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most `max_rows` rows, a fixed hash sample by id (the same rows on a rerun), as pandas."""
    return rows.orderBy(F.xxhash64(F.col("id"), F.lit(seed)), "id").limit(max_rows).toPandas()


def sentiment_params(settings: Settings) -> dict:
    """What the sentiment evaluation depends on (MLflow params; a change makes the next night evaluate)."""
    conf = settings.insights
    return {"holdout_share": conf.holdout_share, "max_training_rows": conf.max_training_rows, "seed": conf.seed}


def triage_params(settings: Settings, keywords, label_source: str) -> dict:
    """What the triage evaluation depends on: the split, the labels' source and the keyword table."""
    conf = settings.insights
    return {
        "holdout_share": conf.holdout_share,
        "max_training_rows": conf.max_training_rows,
        "seed": conf.seed,
        "labels": triage.LABEL_SOURCES[label_source],
        "keywords": tracking.config_digest("triage_keywords", {"topics": keywords.topics, "urgent": keywords.urgent}),
    }


def evaluate_sentiment(sample: pd.DataFrame, settings: Settings, run_date: date, run_id: str) -> tuple[dict[str, float], str]:
    """Sentiment against VADER and the majority class on held-out reviews (deduplicated, split by product):
    binary macro-F1 on 1-2 vs 4-5 stars, with the 3-class figures and the share of polar reviews called
    neutral; returns the night's figures and the MLflow run."""
    conf = settings.insights
    table = review_model.evaluate_sentiment(sample, conf.holdout_share, conf.max_training_rows, conf.seed)
    figure = {(row.method, row.language): row for row in table.itertuples()}
    model = figure["model", "all"]
    night_figures = {
        "sentiment_binary_macro_f1": model.binary_macro_f1,
        "vader_binary_macro_f1": figure["vader", "all"].binary_macro_f1,
        "sentiment_neutral_rate_on_polar": model.neutral_rate_on_polar,
    }
    mlflow_run = tracking.log_evaluation(
        "review_sentiment",
        run_date,
        run_id,
        "held-out reviews, deduplicated, split by product; 1-2 vs 4-5 stars",
        "binary_macro_f1",
        model.binary_macro_f1,
        {"VADER lexicon": figure["vader", "all"].binary_macro_f1, "majority class": figure["majority", "all"].binary_macro_f1},
        params=sentiment_params(settings),
        metrics={
            f"{method}_{metric}_{language}": getattr(row, metric)
            for (method, language), row in figure.items()
            for metric in SENTIMENT_METRICS
        }
        | {"holdout_reviews": model.reviews, "training_reviews": model.training_reviews},
        night_figures=night_figures,
    )
    return night_figures, mlflow_run


def evaluate_triage(
    sample: pd.DataFrame, keywords, settings: Settings, run_date: date, run_id: str, label_source: str
) -> tuple[dict[str, float], str]:
    """Triage against the keyword rules on the same held-out inquiries (deduplicated by normalised text):
    macro-F1 against the shop's filed topics, or, without them, agreement with the keyword labels; returns
    the night's figures and the MLflow run."""
    conf = settings.insights
    table = triage.evaluate_triage(sample, None, keywords, conf.holdout_share, conf.max_training_rows, conf.seed)
    figure = table.set_index("method")
    model, rules = figure.loc["model"], figure.loc["keywords"]
    filed = model["reference"] == "filed topics"
    metric = "macro_f1" if filed else "keyword_agreement_macro_f1"
    holdout = (
        "held-out inquiries with a filed topic (inquiries.topic), deduplicated by text"
        if filed
        else "held-out inquiries, deduplicated by text; no filed topics: agreement with the keyword labels of "
        f"conf/{conf.triage_file}, not accuracy (the rules agree with themselves by construction)"
    )
    if filed:
        night_figures = {"triage_macro_f1": float(model["macro_f1"]), "triage_keyword_rules_macro_f1": float(rules["macro_f1"])}
    else:  # the rules' own agreement with their labels (1.000) says nothing
        night_figures = {"triage_keyword_agreement_macro_f1": float(model["macro_f1"])}
    mlflow_run = tracking.log_evaluation(
        "inquiry_triage",
        run_date,
        run_id,
        holdout,
        metric,
        model["macro_f1"],
        {"keyword rules": rules["macro_f1"]},
        params=triage_params(settings, keywords, label_source),
        metrics={
            "accuracy": model["accuracy"],
            "keyword_rules_accuracy": rules["accuracy"],
            "holdout_inquiries": model["inquiries"],
            "training_inquiries": model["training_inquiries"],
            **{name: model[name] for name in table.columns if name.startswith("f1_")},
        },
        night_figures=night_figures,
    )
    return night_figures, mlflow_run


def review_schema(aspects: dict) -> str:
    """The columns `_review_scorer` yields (Spark DDL)."""
    flags = "".join(f", mentions_{aspect} boolean" for aspect in aspects)
    return (
        "review_id long, customer_id long, product_id long, rating int, reviewed_at timestamp, "
        f"sentiment_score double, sentiment string, aspects string{flags}"
    )


def _review_scorer(model, aspects: dict):
    columns = [name.split(" ")[0] for name in review_schema(aspects).split(", ")]

    def score(batches):
        for batch in batches:
            scored = review_model.review_insights(batch, model, aspects)
            yield scored.assign(aspects=scored["aspects"].replace("", None))[columns]

    return score


TRIAGE_SCHEMA = (
    "inquiry_id long, customer_id long, created_at timestamp, status string, topic string, "
    "topic_probability double, has_urgent_keyword boolean, urgency string, is_open boolean, "
    "resolution_hours double, age_hours double"
)


def _inquiry_triager(model, keywords, run_date: date, stale_hours: float):
    columns = [name.split(" ")[0] for name in TRIAGE_SCHEMA.split(", ")]

    def triage_batch(batches):
        for batch in batches:
            yield triage.triage_inquiries(model, batch, keywords, run_date, stale_hours)[columns]

    return triage_batch


def product_insights(scored: DataFrame, products: DataFrame, aspects: dict) -> DataFrame:
    """One row per reviewed product and aspect ('all': every review of the product)."""

    def summary(rows: DataFrame, aspect: str) -> DataFrame:
        return (
            rows.groupBy("product_id")
            .agg(
                F.count("*").alias("reviews"),
                F.avg("rating").alias("avg_rating"),
                F.avg("sentiment_score").alias("sentiment_score"),
                F.avg((F.col("sentiment") == "negative").cast("double")).alias("negative_share"),
            )
            .withColumn("aspect", F.lit(aspect))
        )

    parts = [summary(scored, "all"), *(summary(scored.where(F.col(f"mentions_{aspect}")), aspect) for aspect in aspects)]
    united = parts[0]
    for part in parts[1:]:
        united = united.unionByName(part)
    return united.join(products.select(F.col("id").alias("product_id"), "category"), "product_id", "left")


def review_alerts(scored: DataFrame, lake: Lake, run_date: date, settings: Settings) -> DataFrame | None:
    """Recent negative reviews by the most valuable customers (models/reviews.negative_review_alerts)."""
    conf = settings.insights
    start = end_of(run_date) - timedelta(days=conf.alert_days)
    recent = scored.where((F.col("sentiment") == "negative") & (F.col("reviewed_at") >= F.lit(start))).toPandas()
    clv = (
        lake.read("gold", "customer_scores")
        .where((F.col("as_of") == F.lit(run_date)) & F.col("clv_12m").isNotNull())
        .select("customer_id", "clv_12m")
        .toPandas()
    )
    if recent.empty or clv.empty:
        return None
    alerts = review_model.negative_review_alerts(recent, clv, run_date, conf.alert_days, conf.alert_clv_quantile)
    alerts = alerts.merge(recent[["review_id", "rating"]], on="review_id")
    alerts["aspects"] = alerts["aspects"].where(alerts["aspects"].notna() & (alerts["aspects"] != ""), None)
    return lake.spark.createDataFrame(
        alerts,
        schema="customer_id long, review_id long, product_id long, "
        "reviewed_at timestamp, sentiment_score double, clv_12m double, "
        "aspects string, rating int",
    )


def inquiry_rows(triaged: DataFrame) -> DataFrame:
    """inquiry_triage as of the run date: an inquiry resolved later is shown open, without its resolution."""
    return triaged.withColumns(
        {
            "status": F.when(F.col("is_open") & (F.col("status") == "resolved"), F.lit("open")).otherwise(F.col("status")),
            "resolved_at": F.when(F.col("is_open"), F.lit(None)).otherwise(F.col("resolved_at")),
        }
    )


def satisfaction(spark, scored: DataFrame | None, triaged: DataFrame | None) -> DataFrame | None:
    """Per customer with a review or an inquiry: models/triage.customer_satisfaction on both."""
    review_part = (
        scored.select("customer_id", "sentiment_score").toPandas()
        if scored is not None
        else pd.DataFrame({"customer_id": pd.Series(dtype="int64"), "sentiment_score": pd.Series(dtype=float)})
    )
    inquiry_part = (
        triaged.select("customer_id", "topic", "is_open").toPandas()
        if triaged is not None
        else pd.DataFrame({"customer_id": pd.Series(dtype="int64"), "topic": pd.Series(dtype=object), "is_open": pd.Series(dtype=bool)})
    )
    customers = pd.concat([review_part["customer_id"], inquiry_part["customer_id"]]).dropna()
    if customers.empty:
        return None
    frame = triage.customer_satisfaction(customers, review_part, inquiry_part)
    inquiries = frame["inquiry_count"]
    rows = pd.DataFrame(
        {
            "customer_id": frame["customer_id"].astype("int64"),
            "satisfaction_score": frame["satisfaction_score"].astype(float),
            "review_sentiment": frame["mean_sentiment_score"].astype(float),
            "reviews": frame["review_count"].astype("int64"),
            "inquiries": inquiries.astype("int64"),
            "complaints": (frame["complaint_share"].fillna(0) * inquiries).round().astype("int64"),
            "open_inquiries": (frame["open_share"].fillna(0) * inquiries).round().astype("int64"),
        }
    )
    return spark.createDataFrame(
        rows,
        schema="customer_id long, satisfaction_score double, review_sentiment double, "
        "reviews long, inquiries long, complaints long, open_inquiries long",
    )
