"""Review sentiment, aspects, alerts (models/reviews.py) and inquiry triage, satisfaction (models/triage.py).

Small hand-made English and Chinese frames, and a sample of a real shop's reviews (tests/data/reviews/); no Spark.
"""

from __future__ import annotations

import random
from datetime import date
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from demo_shop import shop_text
from models.reviews import (
    ASPECTS,
    HoldoutError,
    KeywordTableError,
    customer_review_summary,
    distinct_reviews,
    evaluate_sentiment,
    fit_sentiment,
    load_aspects,
    mark_aspects,
    negative_review_alerts,
    predict_sentiment,
    product_review_summary,
    read_review_corpus,
    review_insights,
    review_text,
    sentiment_figures,
    sentiment_holdout,
)
from models.triage import (
    MIN_FILED_INQUIRIES,
    TOPICS,
    customer_satisfaction,
    evaluate_triage,
    fit_triage,
    inquiry_text_key,
    inquiry_times,
    inquiry_urgency,
    keyword_topics,
    load_triage_keywords,
    predict_topics,
    text_holdout,
    topic_labels,
    triage_inquiries,
)

CONF = Path(__file__).resolve().parent.parent / "conf"
#: 6,000 distinct reviews of a real clothing shop (CC0; tests/data/reviews/README.md).
REAL_REVIEWS = Path(__file__).resolve().parent / "data" / "reviews" / "womens-clothing-reviews-sample.tsv.gz"
#: Bars of the sentiment model on REAL_REVIEWS, with margin to what was measured there (binary macro-F1
#: 0.782, VADER 0.718; neutral rate on polar reviews 0.000; calibration error 0.032). The earlier class-
#: balanced 3-class model fails them (binary macro-F1 0.741, 11.9% of polar reviews called neutral).
BAR_BINARY_MACRO_F1 = 0.75
BAR_NEUTRAL_RATE_ON_POLAR = 0.05
BAR_CALIBRATION_ERROR = 0.08

POSITIVE = {
    "en": [
        "Great product, I love it",
        "Excellent quality, very happy",
        "Love it, great value",
        "Very happy, excellent and great",
        "Great, would buy again, love it",
    ],
    "zh": ["很好，非常喜欢", "质量很好，很满意", "非常满意，喜欢", "很喜欢，很好用", "满意，很好"],
}
NEUTRAL = {
    "en": ["It is okay, average", "Average, nothing special", "Okay product, average quality", "Fine, okay I guess", "Average and okay"],
    "zh": ["一般般，还行", "还行吧，一般", "东西一般，还可以", "还可以，一般", "一般，还行"],
}
NEGATIVE = {
    "en": [
        "Terrible, it broke, awful",
        "Awful quality, very disappointed",
        "Broken and terrible",
        "Disappointed, awful product",
        "Terrible, disappointed, broke",
    ],
    "zh": ["很差，非常失望", "质量太差，坏了", "失望，很差", "坏了，太差了", "非常失望，很差"],
}


def _reviews(copies: int = 1) -> pd.DataFrame:
    """Hand-made reviews: for each language, five texts per sentiment level, `copies` times."""
    rows = []
    for copy in range(copies):
        for language in ("en", "zh"):
            for rating, texts in ((5, POSITIVE), (3, NEUTRAL), (1, NEGATIVE)):
                for k, text in enumerate(texts[language]):
                    rows.append(
                        {"customer_id": 1 + k, "product_id": 10 + k % 2, "rating": rating, "title": "", "body": text, "language": language}
                    )
    frame = pd.DataFrame(rows)
    frame.insert(0, "id", np.arange(1, len(frame) + 1, dtype="int64"))
    frame["created_at"] = pd.Timestamp("2026-11-01", tz="UTC")
    return frame


def _texts(pairs: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": np.arange(1, len(pairs) + 1, dtype="int64"), "title": [title for title, _ in pairs], "body": [body for _, body in pairs]}
    )


# --------------------------------------------------------------------------------------------------------
# Sentiment
# --------------------------------------------------------------------------------------------------------


def test_sentiment_model_ranks_negative_text_below_positive_in_english_and_chinese():
    model = fit_sentiment(_reviews(), max_training_rows=1000, seed=17)
    unseen = _texts(
        [
            ("Love it", "Excellent, I am very happy with it"),
            ("Awful", "It broke after a day, terrible and disappointed"),
            ("非常喜欢", "很满意，质量很好"),
            ("非常失望", "太差了，一天就坏了"),
        ]
    )
    scored = predict_sentiment(model, unseen)
    assert scored["sentiment_score"].between(-1, 1).all()
    score = scored.set_index("review_id")["sentiment_score"]
    assert score[2] < 0 < score[1]
    assert score[4] < 0 < score[3]
    assert scored["sentiment"].tolist() == ["positive", "negative", "positive", "negative"]


def test_training_cap_keeps_a_fixed_sample_whatever_the_row_order():
    reviews = _reviews().assign(body=lambda f: f["body"] + " #" + f["id"].astype(str))  # 30 distinct texts
    first = fit_sentiment(reviews, max_training_rows=20, seed=3)
    shuffled = fit_sentiment(reviews.sample(frac=1.0, random_state=1), max_training_rows=20, seed=3)
    vocabulary = first.features_.get_feature_names_out()
    assert vocabulary.tolist() == shuffled.features_.get_feature_names_out().tolist()
    assert len(vocabulary) < len(fit_sentiment(reviews, 1000, 3).features_.get_feature_names_out())


def test_polar_reviews_called_neutral_miss_their_class_and_figures_cover_only_the_classes_present():
    truth = np.array(["negative", "positive", "positive", "positive"])
    two_class = sentiment_figures(truth, truth.copy())
    # Two-class data: binary macro-F1 1.0 (not capped at 2/3 by an absent neutral class), no 3-class figure.
    assert two_class["binary_macro_f1"] == 1.0 and np.isnan(two_class["macro_f1_3class"])
    called_neutral = sentiment_figures(truth, np.array(["neutral", "positive", "positive", "neutral"]))
    # negative: recall 0 -> F1 0; positive: precision 1, recall 2/3 -> F1 0.8.
    assert called_neutral["binary_macro_f1"] == pytest.approx(0.4)
    assert called_neutral["neutral_rate_on_polar"] == 0.5 and called_neutral["accuracy"] == 0.5
    with_neutral = sentiment_figures(np.array(["negative", "neutral", "positive"]), np.array(["negative", "neutral", "neutral"]))
    assert with_neutral["macro_f1_3class"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert with_neutral["polar_reviews"] == 2 and with_neutral["neutral_rate_on_polar"] == 0.5


def test_evaluate_sentiment_reports_model_vader_and_majority_overall_and_per_language():
    reviews = _reviews().assign(product_id=lambda f: f["id"])  # one product per review: a fine-grained split
    figures = evaluate_sentiment(reviews, holdout_share=0.4, max_training_rows=1000, seed=17)
    assert set(zip(figures["method"], figures["language"])) == {
        (method, language) for method in ("model", "vader", "majority") for language in ("all", "en", "zh")
    }
    by = figures.set_index(["method", "language"])
    assert by.loc[("model", "all"), "reviews"] == by.loc[("model", "en"), "reviews"] + by.loc[("model", "zh"), "reviews"]
    assert by.loc[("model", "all"), "reviews"] + by.loc[("model", "all"), "training_reviews"] == len(reviews)
    # VADER has no Chinese lexicon: it calls every Chinese review neutral, so it gets no polar one right.
    assert by.loc[("vader", "zh"), "neutral_rate_on_polar"] == 1.0 and by.loc[("vader", "zh"), "binary_macro_f1"] == 0.0
    assert by.loc[("majority", "all"), "neutral_rate_on_polar"] == 0.0
    assert by.loc[("model", "zh"), "binary_macro_f1"] > by.loc[("vader", "zh"), "binary_macro_f1"]
    assert by["macro_f1_3class"].notna().all()  # 3-star reviews are there


def test_duplicate_texts_and_products_never_sit_on_both_sides_of_the_split():
    base = _reviews().assign(product_id=lambda f: f["id"] % 7)
    # Each text four times, in other case and spacing, under other ids, products and ratings.
    copies = pd.concat(
        [
            base.assign(
                id=base["id"] + 100 * k,
                body=base["body"].str.upper() if k % 2 else base["body"] + "  " * k,
                product_id=base["product_id"] + 10 * k,
                rating=base["rating"] if k == 0 else 6 - base["rating"],
            )
            for k in range(4)
        ],
        ignore_index=True,
    ).sample(frac=1.0, random_state=2)
    distinct = distinct_reviews(copies)
    assert sorted(distinct["id"]) == sorted(base["id"])  # the first of each text is kept, with its own stars
    held = sentiment_holdout(distinct, 0.5, seed=5)
    texts = review_text(distinct).str.lower()
    assert held.any() and not held.all()
    assert not set(texts[held]) & set(texts[~held])
    assert not set(distinct["product_id"][held]) & set(distinct["product_id"][~held])
    figures = evaluate_sentiment(copies, holdout_share=0.5, max_training_rows=1000, seed=5).set_index(["method", "language"])
    assert figures.loc[("model", "all"), "reviews"] == held.sum()
    assert figures.loc[("model", "all"), "training_reviews"] == (~held).sum()


def test_evaluate_sentiment_leaves_out_reviews_without_text_or_stars():
    reviews = _reviews().assign(product_id=lambda f: f["id"])
    extra = reviews.iloc[:4].assign(id=[901, 902, 903, 904], title="", body=["", "  ", "Great, love it", "很好"], rating=[5, 1, None, None])
    figures = evaluate_sentiment(pd.concat([reviews, extra], ignore_index=True), 0.4, 1000, 17).set_index(["method", "language"])
    assert figures.loc[("model", "all"), "reviews"] + figures.loc[("model", "all"), "training_reviews"] == len(reviews)


def test_sentiment_on_real_reviews_beats_vader_and_rarely_calls_polar_reviews_neutral():
    """On 6,000 distinct real reviews, 20% of products held out; bars set below what was measured (docs/marketing.md)."""
    corpus = read_review_corpus(REAL_REVIEWS)
    assert len(distinct_reviews(corpus)) == len(corpus) == 6000
    by = evaluate_sentiment(corpus, holdout_share=0.2, max_training_rows=200_000, seed=17).set_index(["method", "language"])
    model, vader, majority = by.loc[("model", "all")], by.loc[("vader", "all")], by.loc[("majority", "all")]
    assert model["reviews"] > 400
    assert model["binary_macro_f1"] >= BAR_BINARY_MACRO_F1
    assert model["neutral_rate_on_polar"] < BAR_NEUTRAL_RATE_ON_POLAR
    assert model["binary_macro_f1"] >= vader["binary_macro_f1"] + 0.04
    assert model["binary_macro_f1"] >= majority["binary_macro_f1"] + 0.2
    assert model["calibration_error"] < BAR_CALIBRATION_ERROR  # sentiment_score's P(positive | polar) is a frequency


# --------------------------------------------------------------------------------------------------------
# Keyword tables and aspects
# --------------------------------------------------------------------------------------------------------


def test_shipped_keyword_tables_load():
    assert set(load_aspects(CONF / "aspects.yaml")) == set(ASPECTS)
    keywords = load_triage_keywords(CONF / "triage.yaml")
    assert keywords.urgent and all(keywords.topics.values())


@pytest.mark.parametrize(
    "text, field",
    [
        ("delivery: [parcel]\nquality: [broke]\nprice: [cheap]\nsize_fit: [size]\nservice: [support]\ncolour: [red]\n", "colour"),
        ("delivery: [parcel]\nquality: [broke]\nprice: []\nsize_fit: [size]\nservice: [support]\n", "price"),
        ("delivery: parcel\nquality: [broke]\nprice: [cheap]\nsize_fit: [size]\nservice: [support]\n", "delivery"),
        ("delivery: [parcel]\nquality: [broke]\nprice: [cheap]\nsize_fit: [size]\n", "service"),
        ("- delivery\n- quality\n", "mapping"),
    ],
)
def test_bad_aspects_file_raises_naming_file_and_field(tmp_path, text, field):
    path = tmp_path / "aspects.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(KeywordTableError) as error:
        load_aspects(path)
    assert str(path) in str(error.value) and field in str(error.value)


def test_aspects_are_marked_in_both_languages_and_latin_keywords_match_at_word_start():
    aspects = load_aspects(CONF / "aspects.yaml")
    reviews = _texts(
        [
            ("", "The parcel arrived two days late"),
            ("", "物流很快，但是太贵了"),
            ("", "A warm relationship with my kettle"),
            ("尺码偏小", ""),
        ]
    )
    marks = mark_aspects(reviews, aspects).set_index("review_id")
    assert marks.loc[1, "mentions_delivery"] and not marks.loc[1, "mentions_price"]
    assert marks.loc[2, "mentions_delivery"] and marks.loc[2, "mentions_price"]
    assert not marks.loc[3].any()  # "relationship" does not mention shipping
    assert marks.loc[4, "mentions_size_fit"] and marks.loc[4].sum() == 1


def test_product_and_customer_summaries_aggregate_sentiment_and_aspects():
    insights = pd.DataFrame(
        {
            "review_id": [1, 2, 3],
            "customer_id": [7, 7, 8],
            "product_id": [5, 5, 6],
            "rating": [1, 5, 4],
            "reviewed_at": pd.to_datetime(["2026-01-02", "2026-03-04", "2026-02-01"], utc=True),
            "sentiment_score": [-0.8, 0.6, 0.4],
            "sentiment": ["negative", "positive", "positive"],
            **{f"mentions_{aspect}": [aspect == "delivery", aspect in ("delivery", "price"), False] for aspect in ASPECTS},
        }
    )
    product = product_review_summary(insights).set_index("product_id")
    assert product.loc[5, "review_count"] == 2 and product.loc[5, "avg_rating"] == 3.0
    assert product.loc[5, "negative_share"] == 0.5
    assert product.loc[5, "delivery_mention_count"] == 2
    assert product.loc[5, "delivery_sentiment_score"] == pytest.approx(-0.1)
    assert product.loc[5, "price_sentiment_score"] == pytest.approx(0.6)
    assert np.isnan(product.loc[6, "delivery_sentiment_score"])
    customer = customer_review_summary(insights).set_index("customer_id")
    assert customer.loc[7, "mean_sentiment_score"] == pytest.approx(-0.1)
    assert customer.loc[7, "last_negative_review_at"] == pd.Timestamp("2026-01-02", tz="UTC")
    assert pd.isna(customer.loc[8, "last_negative_review_at"])


def test_review_insights_join_sentiment_and_aspects_per_review():
    reviews = _reviews()
    insights = review_insights(reviews, fit_sentiment(reviews, 1000, 1), load_aspects(CONF / "aspects.yaml"))
    assert insights["review_id"].tolist() == reviews["id"].tolist()
    quality = insights.set_index("review_id").loc[reviews["id"][reviews["body"].str.contains("质量")]]
    assert quality["mentions_quality"].all() and quality["aspects"].str.contains("quality").all()


# --------------------------------------------------------------------------------------------------------
# Alerts
# --------------------------------------------------------------------------------------------------------


def test_alert_lists_only_valuable_customers_with_a_negative_review_inside_the_window():
    run_date = date(2026, 11, 26)  # alert_days=30: reviews on 2026-10-28 .. 2026-11-26 (UTC) count
    clv = pd.DataFrame({"customer_id": range(1, 11), "clv_12m": [Decimal(str(v)) for v in range(10, 110, 10)]})
    # clv 10..100; the 0.8 quantile is 82, so customers 9 (90) and 10 (100) are valuable.
    reviews = pd.DataFrame(
        [
            (1, 10, "2026-10-28 00:00:00", "negative"),  # first day of the window
            (2, 10, "2026-10-27 23:59:59", "negative"),  # a second too early
            (3, 9, "2026-11-26 23:59:59", "negative"),  # last second of the run date
            (4, 9, "2026-11-27 00:00:00", "negative"),  # after the run date
            (5, 8, "2026-11-20 12:00:00", "negative"),  # not valuable enough
            (6, 10, "2026-11-20 12:00:00", "positive"),  # not negative
        ],
        columns=["review_id", "customer_id", "reviewed_at", "sentiment"],
    )
    insights = reviews.assign(
        product_id=3, sentiment_score=-0.9, aspects="delivery", reviewed_at=pd.to_datetime(reviews["reviewed_at"], utc=True)
    )
    alerts = negative_review_alerts(insights, clv, run_date, alert_days=30, alert_clv_quantile=0.8)
    assert alerts["review_id"].tolist() == [1, 3]  # most valuable customer first
    assert alerts["clv_12m"].tolist() == [100.0, 90.0]
    assert list(alerts.columns) == ["customer_id", "review_id", "product_id", "reviewed_at", "sentiment_score", "clv_12m", "aspects"]
    assert negative_review_alerts(insights, clv, run_date, alert_days=29, alert_clv_quantile=0.8)["review_id"].tolist() == [3]


# --------------------------------------------------------------------------------------------------------
# Triage
# --------------------------------------------------------------------------------------------------------

INQUIRIES = {
    "shipping": [
        ("Where is my parcel?", "My order has not arrived, the tracking has not changed."),
        ("Delivery", "When will my package be delivered?"),
        ("Courier", "The courier never came."),
        ("物流查询", "快递还没送到，物流一直不更新。"),
        ("发货", "什么时候发货？"),
        ("包裹", "包裹还没到货。"),
    ],
    "return_refund": [
        ("Return", "I want to return this item, how do I send it back?"),
        ("Refund", "Still waiting for my refund."),
        ("Exchange", "Can I exchange it for another one?"),
        ("退货", "我想退货。"),
        ("退款", "退款还没到账。"),
        ("换货", "请帮我换货。"),
    ],
    "product_question": [
        ("Question", "Is this available in another colour?"),
        ("Stock", "Is it in stock?"),
        ("Size", "Which size should I choose?"),
        ("商品咨询", "有别的颜色吗？"),
        ("有货吗", "这个什么时候补货？"),
        ("尺码", "我该选哪个尺码？"),
    ],
    "payment": [
        ("Payment failed", "My payment failed at checkout."),
        ("Card", "My card was charged but no order."),
        ("Coupon", "The coupon does not work."),
        ("支付失败", "一直支付失败。"),
        ("扣款", "扣款了但是没有订单。"),
        ("优惠券", "优惠券用不了。"),
    ],
    "complaint": [
        ("Complaint", "Terrible service, I am very unhappy."),
        ("Unacceptable", "This is unacceptable."),
        ("Disappointed", "Very disappointed, nobody answers."),
        ("投诉", "服务太差了，我要投诉。"),
        ("不满", "非常不满。"),
        ("失望", "太失望了。"),
    ],
}


def _inquiries() -> pd.DataFrame:
    rows = [(topic, subject, body) for topic, texts in INQUIRIES.items() for subject, body in texts]
    frame = pd.DataFrame(rows, columns=["true_topic", "subject", "body"])
    frame.insert(0, "id", np.arange(1, len(frame) + 1, dtype="int64"))
    return frame.assign(
        customer_id=1, status="resolved", created_at=pd.Timestamp("2026-11-01", tz="UTC"), resolved_at=pd.Timestamp("2026-11-02", tz="UTC")
    )


def test_triage_predicts_the_topic_of_clear_texts_in_english_and_chinese():
    keywords = load_triage_keywords(CONF / "triage.yaml")
    model = fit_triage(_inquiries(), keywords, max_training_rows=1000, seed=17)
    unseen = pd.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "subject": ["", "", "", "", "", ""],
            "body": [
                "My parcel still has not arrived, where is my delivery?",
                "我的快递到哪里了？物流好几天没更新。",
                "I would like a refund, I sent the item back.",
                "我要退货退款。",
                "I was charged twice, the payment went through two times.",
                "付款失败，支付不了。",
            ],
        }
    )
    assert predict_topics(model, unseen)["topic"].tolist() == [
        "shipping",
        "shipping",
        "return_refund",
        "return_refund",
        "payment",
        "payment",
    ]


def test_keyword_rules_flag_ambiguity_and_urgent_words():
    keywords = load_triage_keywords(CONF / "triage.yaml")
    inquiries = _texts(
        [
            ("Refund", "I want a refund for my order."),
            ("Charged twice", "I was charged twice, please refund the extra payment."),
            ("你好", "今天必须给我回复。"),
        ]
    ).rename(columns={"title": "subject"})
    rules = keyword_topics(inquiries, keywords)
    assert rules["keyword_topic"].tolist() == ["return_refund", "payment", None]
    assert rules["is_unambiguous"].tolist() == [True, False, False]
    assert rules["has_urgent_keyword"].tolist() == [False, True, True]


def test_evaluate_triage_reports_classifier_and_keyword_rules_against_true_topics():
    inquiries = pd.concat([_inquiries(), _inquiries().assign(id=lambda f: f["id"] + 100)], ignore_index=True)
    truth = pd.DataFrame({"inquiry_id": inquiries["id"], "topic": inquiries["true_topic"]})
    figures = evaluate_triage(inquiries, truth, load_triage_keywords(CONF / "triage.yaml"), 0.3, 1000, 17)
    assert figures["method"].tolist() == ["model", "keywords"]
    assert set(figures["reference"]) == {"true topics"}
    assert {f"f1_{topic}" for topic in INQUIRIES} <= set(figures.columns)
    assert figures["macro_f1"].between(0, 1).all()
    assert figures.loc[0, "training_inquiries"] > 0 and pd.isna(figures.loc[1, "training_inquiries"])
    # Each held-out text is scored once: the copies of the 30 texts count once.
    assert figures.loc[0, "inquiries"] < 30


def _shop_inquiries(count: int, filed_share: float, seed: int) -> pd.DataFrame:
    """Inquiries written as the demo shop writes them (demo_shop.shop_text), a share filed by support."""
    draw = random.Random(seed)
    rows = []
    for k in range(count):
        topic = draw.randrange(len(TOPICS))
        subject, body = shop_text.inquiry_text(topic, draw.choice(("en", "zh")), f"order #{1000 + k}", draw)
        filed = TOPICS[topic] if draw.random() < filed_share else None
        rows.append({"id": k + 1, "subject": subject, "body": body, "topic": filed, "true_topic": TOPICS[topic]})
    return pd.DataFrame(rows)


def test_triage_learned_from_filed_topics_beats_the_keyword_rules():
    keywords = load_triage_keywords(CONF / "triage.yaml")
    inquiries = _shop_inquiries(1500, filed_share=0.6, seed=3)
    assert topic_labels(inquiries, keywords).source == "filed"
    figures = evaluate_triage(inquiries, None, keywords, 0.3, 5000, 17).set_index("method")
    assert set(figures["reference"]) == {"filed topics"}
    assert figures.loc["model", "macro_f1"] > figures.loc["keywords", "macro_f1"] + 0.1, figures
    assert figures.loc["model", "macro_f1"] < 0.99
    truth = inquiries[["id", "true_topic"]].set_axis(["inquiry_id", "topic"], axis=1)
    against_truth = evaluate_triage(inquiries, truth, keywords, 0.3, 5000, 17).set_index("method")
    assert against_truth.loc["model", "macro_f1"] > against_truth.loc["keywords", "macro_f1"] + 0.1


@pytest.mark.parametrize("filed", ["no column", "too few"])
def test_triage_falls_back_to_keyword_labels_and_calls_its_figure_agreement(filed):
    keywords = load_triage_keywords(CONF / "triage.yaml")
    inquiries = _shop_inquiries(800, filed_share=0.0, seed=4)
    if filed == "no column":
        inquiries = inquiries.drop(columns="topic")
    else:
        inquiries.loc[: MIN_FILED_INQUIRIES - 2, "topic"] = inquiries.loc[: MIN_FILED_INQUIRIES - 2, "true_topic"]
    labels = topic_labels(inquiries, keywords)
    rules = keyword_topics(inquiries, keywords)
    assert labels.source == "keywords"
    assert labels.topic.notna().tolist() == rules["is_unambiguous"].tolist()
    figures = evaluate_triage(inquiries, None, keywords, 0.3, 5000, 17).set_index("method")
    assert set(figures["reference"]) == {"keyword labels"}
    assert figures.loc["keywords", "macro_f1"] == 1.0  # the rules agree with their own labels by construction
    assert 0.5 < figures.loc["model", "macro_f1"] < 1.0
    # The model trained on keyword labels still reads inquiries the keywords leave unlabelled.
    truth = inquiries[["id", "true_topic"]].set_axis(["inquiry_id", "topic"], axis=1)
    against_truth = evaluate_triage(inquiries, truth, keywords, 0.3, 5000, 17).set_index("method")
    assert against_truth.loc["model", "macro_f1"] > against_truth.loc["keywords", "macro_f1"]


def test_triage_holdout_counts_each_text_once_whatever_its_copies():
    keywords = load_triage_keywords(CONF / "triage.yaml")
    inquiries = _shop_inquiries(600, filed_share=0.7, seed=5)
    copies = inquiries.assign(id=inquiries["id"] + 10_000, body=inquiries["body"].str.replace("order #1", "order #7", regex=False))
    once = evaluate_triage(inquiries, None, keywords, 0.3, 5000, 17)
    twice = evaluate_triage(pd.concat([inquiries, copies], ignore_index=True), None, keywords, 0.3, 5000, 17)
    assert twice["inquiries"].tolist() == once["inquiries"].tolist()
    assert twice["macro_f1"].tolist() == pytest.approx(once["macro_f1"].tolist(), abs=0.05)


#: A contact form's fixed subjects, one topic each by conf/triage.yaml's keywords.
FORM_SUBJECTS = {
    "Where is my parcel?": "shipping",
    "Refund please": "return_refund",
    "Is this in stock?": "product_question",
    "Payment problem": "payment",
    "Tracking number": "shipping",
    "I want to send it back": "return_refund",
    "Question about sizing": "product_question",
    "Invoice needed": "payment",
    "Delivery is late": "shipping",
    "Wrong item received": "return_refund",
}


def form_inquiries(count: int, holdout_share: float, seed: int) -> pd.DataFrame:
    """`count` inquiries from a contact form, as bench/nightly.py's shop has them: four fixed subjects, a body
    that differs only in the order reference, so four distinct texts, chosen (as `evaluate_triage` splits, by
    text) so that the holdout keeps none of them."""
    candidates = pd.DataFrame(
        {"subject": list(FORM_SUBJECTS), "body": [f"{subject}: please help, order reference 1" for subject in FORM_SUBJECTS]}
    )
    subjects = candidates["subject"][~text_holdout(inquiry_text_key(candidates), holdout_share, seed)].tolist()[:4]
    assert len({FORM_SUBJECTS[subject] for subject in subjects}) >= 2, "the form needs two topics at least"
    ids = np.arange(1, count + 1, dtype="int64")
    subject = [subjects[i % len(subjects)] for i in range(count)]
    return pd.DataFrame(
        {
            "id": ids,
            "subject": subject,
            "body": [f"{text}: please help, order reference {i}" for text, i in zip(subject, ids)],
            "customer_id": ids % 50 + 1,
            "status": "resolved",
            "created_at": pd.Timestamp("2026-11-01", tz="UTC"),
            "resolved_at": pd.Timestamp("2026-11-02", tz="UTC"),
        }
    )


def test_triage_is_not_judged_on_texts_too_few_to_hold_any_out_but_still_learns_from_them():
    """Four distinct texts, none held out by the split by text: no held-out figure can be computed, and the
    evaluation says so (HoldoutError, which the night reports as degraded); the model still fits and triages."""
    keywords = load_triage_keywords(CONF / "triage.yaml")
    inquiries = form_inquiries(400, 0.2, 17)
    assert inquiry_text_key(inquiries).nunique() == 4
    with pytest.raises(HoldoutError, match=r"leaves \d+ labelled training and 0 held-out texts of 4 distinct texts with keyword labels"):
        evaluate_triage(inquiries, None, keywords, 0.2, 5000, 17)
    topics = predict_topics(fit_triage(inquiries, keywords, 5000, 17), inquiries)
    assert (topics["topic"].to_numpy() == inquiries["subject"].map(FORM_SUBJECTS).to_numpy()).all()


def test_resolution_hours_and_age_are_taken_at_the_end_of_the_run_date():
    run_date = date(2026, 11, 26)
    inquiries = pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "status": ["resolved", "open", "resolved", "open"],
            "created_at": pd.to_datetime(["2026-11-25 10:00", "2026-11-26 12:00", "2026-11-26 20:00", "2026-11-27 01:00"], utc=True),
            "resolved_at": pd.to_datetime(["2026-11-26 16:30", None, "2026-11-27 08:00", None], utc=True),
        }
    )
    times = inquiry_times(inquiries, run_date).set_index("inquiry_id")
    assert times.loc[1, "resolution_hours"] == pytest.approx(30.5) and np.isnan(times.loc[1, "age_hours"])
    assert times.loc[2, "age_hours"] == pytest.approx(12.0) and times.loc[2, "is_open"]
    # Resolved only after the run date: still open as of the run date, 4 hours old.
    assert times.loc[3, "is_open"] and times.loc[3, "age_hours"] == pytest.approx(4.0)
    assert np.isnan(times.loc[3, "resolution_hours"])
    assert not times.loc[4, "is_open"] and times.loc[4, ["resolution_hours", "age_hours"]].isna().all()


def test_urgency_is_high_for_complaints_urgent_words_and_stale_open_inquiries():
    urgency = inquiry_urgency(
        topic=pd.Series(["complaint", "shipping", "shipping", "shipping", "product_question", "product_question"]),
        has_urgent_keyword=pd.Series([False, True, False, False, False, False]),
        is_open=pd.Series([False, False, True, True, False, True]),
        age_hours=pd.Series([np.nan, np.nan, 49.0, 47.0, np.nan, 50.0]),
        stale_after_hours=48,
    )
    assert urgency.tolist() == ["high", "high", "high", "normal", "low", "high"]


def test_triage_inquiries_leaves_out_inquiries_created_after_the_run_date():
    inquiries = _inquiries()
    inquiries.loc[0, "created_at"] = pd.Timestamp("2026-12-01", tz="UTC")
    keywords = load_triage_keywords(CONF / "triage.yaml")
    triaged = triage_inquiries(fit_triage(inquiries, keywords, 1000, 17), inquiries, keywords, date(2026, 11, 26), stale_after_hours=48)
    assert triaged["inquiry_id"].tolist() == inquiries["id"].tolist()[1:]
    assert (triaged.loc[triaged["topic"].eq("complaint"), "urgency"] == "high").all()


def test_satisfaction_combines_review_sentiment_and_problem_inquiries():
    insights = pd.DataFrame({"customer_id": [1, 1, 2], "sentiment_score": [0.8, 0.2, -0.6]})
    triaged = pd.DataFrame(
        {
            "customer_id": [1, 1, 3, 3, 3, 3],
            "topic": ["complaint", "shipping", "payment", "shipping", "shipping", "complaint"],
            "is_open": [False, False, True, False, False, False],
        }
    )
    result = customer_satisfaction(pd.Series([1, 2, 3, 4]), insights, triaged).set_index("customer_id")
    # 1: reviews 0.5, inquiries -(1 of 2 a problem) = -0.5 -> 0.0; 2: reviews only; 3: -(2 of 4) = -0.5.
    assert result["satisfaction_score"].iloc[:3].tolist() == pytest.approx([0.0, -0.6, -0.5])
    assert np.isnan(result.loc[4, "satisfaction_score"])
    assert result.loc[3, "complaint_share"] == 0.25 and result.loc[3, "open_share"] == 0.25
    assert result.loc[4, "review_count"] == 0 and result.loc[4, "inquiry_count"] == 0
