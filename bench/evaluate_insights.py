"""Evaluate the review sentiment and inquiry triage models on the demo shop or a real review corpus (by hand).

    .venv/bin/python bench/evaluate_insights.py --lake /work/main/data/lake --truth /work/main/data/truth
    .venv/bin/python bench/evaluate_insights.py --corpus ../shared/data/reviews/womens-clothing-reviews.tsv.gz

With `--corpus`: sentiment only, on a tab-separated file of rated reviews (models/reviews.read_review_corpus:
rating, title, body; optional id, product_id or clothing_id, language). Otherwise reads silver reviews and
inquiries with delta-rs (no Spark) and the generator's true inquiry topics. Both use the `insights` settings
of conf/base.yaml (CRM_ENV overlay applies). Prints:
- with `--cross-validate K` also: the sentiment model's candidate settings (polarity and neutrality
  regularisation, the neutral threshold) over K folds grouped by product, on the distinct reviews: mean
  binary and 3-class macro-F1, neutral rate on polar reviews and calibration error per candidate;
- sentiment: the model, VADER and the majority class on held-out reviews (deduplicated, split by product)
  against the star-rating labels, overall and per language: binary macro-F1 (1-2 vs 4-5 stars; a polar
  review called neutral is a miss), 3-class macro-F1 (where 3-star reviews exist), share of polar reviews
  called neutral, accuracy, reviews; and the seconds the evaluation took;
- triage: macro-F1, accuracy and per-topic F1 of the classifier and of the keyword rules alone against the
  true topics, on the held-out inquiries;
- counts and wall seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from deltalake import DeltaTable
from sklearn.model_selection import GroupKFold

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.config import load_config  # noqa: E402
from models.reviews import (  # noqa: E402
    SentimentModel,
    distinct_reviews,
    evaluate_sentiment,
    rating_sentiment,
    read_review_corpus,
    review_text,
    sentiment_features,
    sentiment_figures,
)
from models.triage import evaluate_triage, keyword_topics, load_triage_keywords  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, help="lake folder holding silver/reviews, silver/inquiries")
    parser.add_argument("--truth", type=Path, help="generator truth folder holding inquiries.parquet")
    parser.add_argument("--corpus", type=Path, help="tab-separated real review corpus (gzip allowed): sentiment only")
    parser.add_argument("--cross-validate", type=int, metavar="K", help="with --corpus: compare candidate settings over K folds")
    args = parser.parse_args(argv)
    if args.corpus is None and (args.lake is None or args.truth is None):
        parser.error("give --corpus, or both --lake and --truth")
    settings = load_config()
    insights = settings.insights
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    pd.set_option("display.float_format", "{:.3f}".format)
    print(f"settings: holdout_share={insights.holdout_share} max_training_rows={insights.max_training_rows} seed={insights.seed}")
    if args.corpus is not None:
        corpus = read_review_corpus(args.corpus)
        if args.cross_validate:
            print_cross_validation(corpus, args.cross_validate, insights.seed)
        print_sentiment(corpus, insights)
        return

    reviews = DeltaTable(str(args.lake / "silver" / "reviews")).to_pandas()
    inquiries = DeltaTable(str(args.lake / "silver" / "inquiries")).to_pandas()
    truth = pd.read_parquet(args.truth / "inquiries.parquet", columns=["inquiry_id", "topic"])
    keywords = load_triage_keywords(settings.conf_dir / insights.triage_file)
    print_sentiment(reviews, insights)

    rules = keyword_topics(inquiries, keywords)
    print(
        f"\ninquiries: {len(inquiries)} (true topics: {len(truth)}; {truth['topic'].value_counts().to_dict()}); "
        f"keywords label {int(rules['is_unambiguous'].sum())} unambiguously, "
        f"{int((rules['keyword_topic'].notna() & ~rules['is_unambiguous']).sum())} ambiguously, "
        f"{int(rules['keyword_topic'].isna().sum())} not at all; urgent keyword in "
        f"{int(rules['has_urgent_keyword'].sum())}"
    )
    started = time.perf_counter()
    triage = evaluate_triage(inquiries, truth, keywords, insights.holdout_share, insights.max_training_rows, insights.seed)
    print(f"triage on held-out inquiries vs true topics ({time.perf_counter() - started:.1f} s):")
    print(triage.to_string(index=False))


def print_sentiment(reviews: pd.DataFrame, insights) -> None:
    """Print the corpus's counts and the sentiment evaluation table with its wall seconds."""
    distinct = distinct_reviews(reviews)
    labels = rating_sentiment(distinct["rating"])
    print(
        f"\nreviews: {len(reviews)}, {len(distinct)} rated with distinct non-empty text "
        f"({distinct['language'].value_counts().to_dict()}); star labels {labels.value_counts().to_dict()}"
    )
    started = time.perf_counter()
    sentiment = evaluate_sentiment(reviews, insights.holdout_share, insights.max_training_rows, insights.seed)
    print(f"sentiment on held-out reviews vs star labels ({time.perf_counter() - started:.1f} s):")
    print(sentiment.to_string(index=False))


#: Candidate settings of the sentiment model: polarity C, neutrality C, least P(neutral) to call a review neutral.
POLARITY_CS = (4.0, 16.0, 64.0)
NEUTRALITY_CS = (1.0, 4.0)
NEUTRAL_MIN_PROBABILITIES = (0.4, 0.5, 0.6, 0.65, 0.7, np.inf)


def print_cross_validation(reviews: pd.DataFrame, folds: int, seed: int) -> None:
    """Print each candidate's mean figures over `folds` folds of the distinct reviews, grouped by product
    (by text where the product is unknown), features fitted once per fold."""
    distinct = distinct_reviews(reviews)
    groups = distinct["product_id"].fillna("text " + review_text(distinct)) if "product_id" in distinct else review_text(distinct)
    truth = rating_sentiment(distinct["rating"]).to_numpy()
    text = review_text(distinct)
    rows, started = [], time.perf_counter()
    for fold, (train, test) in enumerate(GroupKFold(n_splits=folds).split(distinct, truth, groups.astype(str))):
        features = sentiment_features()
        train_features = features.fit_transform(text.iloc[train])
        test_text = text.iloc[test]
        for polarity_c in POLARITY_CS:
            for neutrality_c in NEUTRALITY_CS:
                model = SentimentModel(seed, polarity_c, neutrality_c).fit_regressions(
                    features, train_features, distinct["rating"].iloc[train]
                )
                probability = model.predict_proba(test_text)
                for threshold in NEUTRAL_MIN_PROBABILITIES:
                    model.neutral_min_probability = threshold
                    figures = sentiment_figures(
                        truth[test], model.decide(probability), probability[:, 2] / (probability[:, 0] + probability[:, 2])
                    )
                    rows.append(
                        {"fold": fold, "polarity_c": polarity_c, "neutrality_c": neutrality_c, "neutral_min_p": threshold} | figures
                    )
        print(f"fold {fold + 1} of {folds}: {len(train)} training, {len(test)} held-out reviews ({time.perf_counter() - started:.0f} s)")
    table = pd.DataFrame(rows).groupby(["polarity_c", "neutrality_c", "neutral_min_p"])
    metrics = ["binary_macro_f1", "macro_f1_3class", "neutral_rate_on_polar", "calibration_error"]
    summary = table[metrics].mean().join(table["binary_macro_f1"].std().rename("binary_sd")).reset_index()
    print(f"cross-validation over {folds} folds grouped by product, {len(distinct)} distinct reviews (neutral_min_p inf: never neutral):")
    print(summary.sort_values(["polarity_c", "neutrality_c", "neutral_min_p"]).to_string(index=False))


if __name__ == "__main__":
    main()
