"""Evaluate the review sentiment and inquiry triage models on the demo shop (run by hand, never in tests).

    .venv/bin/python bench/evaluate_insights.py --lake /work/main/data/lake --truth /work/main/data/truth

Reads silver reviews and inquiries with delta-rs (no Spark) and the generator's true inquiry topics, with
the `insights` settings of conf/base.yaml (CRM_ENV overlay applies). Prints:
- sentiment: macro-F1 and accuracy of the model and of VADER against the star-rating labels, on the held-out
  reviews, overall and per language;
- triage: macro-F1, accuracy and per-topic F1 of the classifier and of the keyword rules alone against the
  true topics, on the held-out inquiries;
- counts and wall seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
from deltalake import DeltaTable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.config import load_config  # noqa: E402
from models.reviews import evaluate_sentiment, rating_sentiment  # noqa: E402
from models.triage import evaluate_triage, keyword_topics, load_triage_keywords  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, required=True, help="lake folder holding silver/reviews, silver/inquiries")
    parser.add_argument("--truth", type=Path, required=True, help="generator truth folder holding inquiries.parquet")
    args = parser.parse_args(argv)
    settings = load_config()
    insights = settings.insights
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    pd.set_option("display.float_format", "{:.3f}".format)

    reviews = DeltaTable(str(args.lake / "silver" / "reviews")).to_pandas()
    inquiries = DeltaTable(str(args.lake / "silver" / "inquiries")).to_pandas()
    truth = pd.read_parquet(args.truth / "inquiries.parquet", columns=["inquiry_id", "topic"])
    keywords = load_triage_keywords(settings.conf_dir / insights.triage_file)
    print(f"settings: holdout_share={insights.holdout_share} max_training_rows={insights.max_training_rows} seed={insights.seed}")

    labels = rating_sentiment(reviews["rating"])
    print(f"\nreviews: {len(reviews)} ({reviews['language'].value_counts().to_dict()}); star labels {labels.value_counts().to_dict()}")
    started = time.perf_counter()
    sentiment = evaluate_sentiment(reviews, insights.holdout_share, insights.max_training_rows, insights.seed)
    print(f"sentiment on held-out reviews vs star labels ({time.perf_counter() - started:.1f} s):")
    print(sentiment.to_string(index=False))

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


if __name__ == "__main__":
    main()
