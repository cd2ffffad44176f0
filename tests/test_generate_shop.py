"""The demo shop generator: determinism, counted bad rows, a truth that matches the shop, safe reruns."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pathlib
import random
from collections import Counter
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from core.shop_schema import SHOP_TABLES, metadata
from demo_shop import shop_text
from demo_shop.existing import ShopExistsError
from demo_shop.generate_shop import generate_shop
from models.triage import TOPICS, keyword_topics, load_triage_keywords

CUSTOMERS = 500
SEED = 20240630
END_DATE = dt.date(2024, 6, 30)
END_AT = dt.datetime(2024, 7, 1)  # the history covers end_date itself

T = metadata.tables


def _generate(tmp_path: pathlib.Path, name: str, seed: int = SEED, **kwargs) -> tuple[Engine, pathlib.Path, dict]:
    url = f"sqlite:///{tmp_path / name}.db"
    truth_dir = tmp_path / f"{name}_truth"
    summary = generate_shop(url, CUSTOMERS, seed, END_DATE, truth_dir, **kwargs)
    return create_engine(url), truth_dir, summary


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, pathlib.Path, dict]:
    """One 500-customer shop shared by the read-only tests."""
    engine, truth_dir, summary = _generate(tmp_path_factory.mktemp("shop"), "shop")
    yield engine, truth_dir, summary
    engine.dispose()


def _table_hashes(engine: Engine) -> dict[str, str]:
    hashes = {}
    with engine.connect() as conn:
        for name in SHOP_TABLES:
            digest = hashlib.sha256()
            for row in conn.execute(select(T[name]).order_by(T[name].c.id)):
                digest.update(repr(tuple(row)).encode())
            hashes[name] = digest.hexdigest()
    return hashes


def _count(conn, query) -> int:
    return conn.execute(query).scalar_one()


def _good_orders():
    """Orders without any planted defect: known customer, positive total, not after the end."""
    o, c = T["orders"], T["customers"]
    return select(o).join(c, c.c.id == o.c.customer_id).where(o.c.total_amount > 0, o.c.created_at < END_AT).subquery()


def test_same_seed_and_end_date_give_identical_tables_whatever_the_chunk_size(shop, tmp_path):
    engine, truth_dir, summary = shop
    again, again_truth, summary_again = _generate(tmp_path, "again")
    small_chunks, small_chunks_truth, _ = _generate(tmp_path, "small_chunks", chunk_customers=250)
    expected = _table_hashes(engine)
    assert _table_hashes(again) == expected
    assert _table_hashes(small_chunks) == expected
    assert summary_again == summary
    for name in ("customers", "coupon_assignments", "inquiries"):
        truth = pq.read_table(truth_dir / f"{name}.parquet")
        assert pq.read_table(again_truth / f"{name}.parquet").equals(truth), name
        assert pq.read_table(small_chunks_truth / f"{name}.parquet").equals(truth), name


def test_different_seed_gives_different_tables(shop, tmp_path):
    engine, _, _ = shop
    other, _, _ = _generate(tmp_path, "other", seed=SEED + 1)
    expected, got = _table_hashes(engine), _table_hashes(other)
    assert [name for name in SHOP_TABLES if got[name] == expected[name]] == []


def test_summary_counts_rows_of_every_table(shop):
    engine, truth_dir, summary = shop
    assert json.loads((truth_dir / "summary.json").read_text()) == summary
    assert summary["generator_version"] == 2 and summary["end_date"] == "2024-06-30"
    with engine.connect() as conn:
        counts = {name: _count(conn, select(func.count()).select_from(T[name])) for name in SHOP_TABLES}
    assert counts == summary["rows"]
    orders_per_customer = summary["rows"]["orders"] / CUSTOMERS
    assert 3 <= orders_per_customer <= 10


def test_bad_row_counts_in_summary_equal_counts_found_in_the_shop(shop):
    engine, _, summary = shop
    o, i, c = T["orders"], T["order_items"], T["customers"]
    with engine.connect() as conn:
        duplicate_groups = (
            select((func.count() - 1).label("extra"))
            .select_from(i)
            .group_by(i.c.order_id, i.c.product_id, i.c.quantity, i.c.unit_price, i.c.created_at, i.c.updated_at)
            .having(func.count() > 1)
            .subquery()
        )
        found = {
            "orders": {
                "orphan": _count(
                    conn,
                    select(func.count())
                    .select_from(o.outerjoin(c, c.c.id == o.c.customer_id))
                    .where(o.c.customer_id.is_not(None), c.c.id.is_(None)),
                ),
                "future_timestamp": _count(conn, select(func.count()).select_from(o).where(o.c.created_at >= END_AT)),
            },
            "order_items": {
                "zero_quantity": _count(conn, select(func.count()).select_from(i).where(i.c.quantity == 0)),
                "orphan": _count(conn, select(func.count()).select_from(i.outerjoin(o, o.c.id == i.c.order_id)).where(o.c.id.is_(None))),
            },
        }
        kept = {
            "orders": {
                "guest_orders": _count(conn, select(func.count()).select_from(o).where(o.c.customer_id.is_(None))),
                "credit_notes": _count(conn, select(func.count()).select_from(o).where(o.c.total_amount < 0)),
            },
            "order_items": {
                "returned_lines": _count(conn, select(func.count()).select_from(i).where(i.c.quantity < 0)),
                "repeated_lines": _count(conn, select(func.coalesce(func.sum(duplicate_groups.c.extra), 0))),
            },
        }
    assert found == summary["bad_rows"]
    assert kept == summary["real_shop_rows"]
    lines = found["order_items"]["zero_quantity"] + kept["order_items"]["returned_lines"]  # planted together, split by chance
    assert lines >= 1 and all(count >= 1 for rules in found.values() for rule, count in rules.items() if rule != "zero_quantity")
    # Small shares: each rule stays well under 1 % of its table.
    for table, rules in found.items():
        assert all(count < 0.01 * summary["rows"][table] for count in rules.values()), (table, rules)


def test_truth_has_one_row_per_customer_and_counts_their_good_orders(shop):
    engine, truth_dir, _ = shop
    truth = pq.read_table(truth_dir / "customers.parquet").to_pylist()
    assert sorted(row["customer_id"] for row in truth) == list(range(1, CUSTOMERS + 1))
    good = _good_orders()
    with engine.connect() as conn:
        per_customer = dict(conn.execute(select(good.c.customer_id, func.count()).group_by(good.c.customer_id)).all())
        not_cancelled = dict(
            conn.execute(select(good.c.customer_id, func.count()).where(good.c.status != "cancelled").group_by(good.c.customer_id)).all()
        )
        last_order = dict(conn.execute(select(good.c.customer_id, func.max(good.c.created_at)).group_by(good.c.customer_id)).all())
    assert {r["customer_id"]: r["n_orders"] for r in truth if r["n_orders"]} == per_customer
    assert {r["customer_id"]: r["n_orders_not_cancelled"] for r in truth if r["n_orders_not_cancelled"]} == not_cancelled
    assert {r["customer_id"]: r["last_order_at"] for r in truth if r["last_order_at"]} == last_order
    types = Counter(r["customer_type"] for r in truth)
    assert set(types) == {"loyal", "regular", "bargain_hunter", "casual"}
    assert 0 < sum(r["n_orders"] == 0 for r in truth) < 0.3 * CUSTOMERS  # some customers never order
    assert all(0 <= r["dropout_probability"] <= 1 and r["purchase_rate_per_day"] > 0 for r in truth)


def test_no_row_changes_before_it_was_created_and_good_rows_end_with_the_history(shop):
    engine, _, summary = shop
    with engine.connect() as conn:
        for name in SHOP_TABLES:
            table = T[name]
            assert _count(conn, select(func.count()).select_from(table).where(table.c.updated_at < table.c.created_at)) == 0, name
            late = _count(conn, select(func.count()).select_from(table).where(table.c.updated_at >= END_AT))
            # Only the planted future orders are dated after end_date.
            assert late == (summary["bad_rows"]["orders"]["future_timestamp"] if name == "orders" else 0), name


def test_good_order_totals_equal_their_lines_minus_the_coupon_discount(shop):
    engine, _, _ = shop
    good, i, cp = _good_orders(), T["order_items"], T["coupons"]
    with engine.connect() as conn:
        coupons = {row.id: row for row in conn.execute(select(cp))}
        # Planted lines (quantity <= 0, double submits) are not part of the order's total.
        lines = select(i.c.order_id, i.c.product_id, i.c.quantity, i.c.unit_price).distinct().where(i.c.quantity > 0).subquery()
        subtotal = dict(
            conn.execute(select(lines.c.order_id, func.sum(lines.c.quantity * lines.c.unit_price)).group_by(lines.c.order_id)).all()
        )
        orders = conn.execute(select(good.c.id, good.c.total_amount, good.c.coupon_id)).all()
    assert orders
    used_coupon = 0
    for order_id, total, coupon_id in orders:
        lines_total = Decimal(str(subtotal[order_id]))
        expected = lines_total
        if coupon_id is not None:
            used_coupon += 1
            coupon = coupons[coupon_id]
            off = Decimal(str(coupon.discount_value))
            expected = lines_total - (lines_total * off / 100 if coupon.discount_type == "percent" else off)
        assert abs(Decimal(str(total)) - expected) <= Decimal("0.01"), order_id
        assert total > 0
    assert used_coupon > 0


def test_each_order_has_one_to_five_distinct_products_with_one_to_three_units(shop):
    engine, _, _ = shop
    good, i = _good_orders(), T["order_items"]
    with engine.connect() as conn:
        rows = conn.execute(
            select(i.c.order_id, func.count(), func.count(i.c.product_id.distinct()), func.min(i.c.quantity), func.max(i.c.quantity))
            .join(good, good.c.id == i.c.order_id)
            .where(i.c.quantity > 0)
            .group_by(i.c.order_id)
        ).all()
    assert rows
    # Double submits repeat a line; apart from them each product appears once per order.
    assert all(1 <= distinct <= 5 and 1 <= low <= high <= 3 for _, _, distinct, low, high in rows)


def test_every_customer_has_exactly_one_default_address_and_unique_lowercase_email(shop):
    engine, _, _ = shop
    a, c = T["addresses"], T["customers"]
    with engine.connect() as conn:
        defaults = conn.execute(select(a.c.customer_id, func.sum(a.c.is_default), func.count()).group_by(a.c.customer_id)).all()
        emails = conn.scalars(select(c.c.email)).all()
        languages = Counter(conn.scalars(select(c.c.language)).all())
        zh_names = conn.scalars(select(c.c.last_name).where(c.c.language == "zh")).all()
    assert len(defaults) == CUSTOMERS
    assert all(n_default == 1 and 1 <= n <= 2 for _, n_default, n in defaults)
    assert len(set(emails)) == CUSTOMERS and all(e == e.lower() and "@" in e for e in emails)
    assert 0.35 * CUSTOMERS < languages["zh"] < 0.65 * CUSTOMERS
    assert all("\u4e00" <= name[0] <= "\u9fff" for name in zh_names)


def _frame(engine: Engine, table: str) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(select(T[table]).order_by(T[table].c.id)).mappings().all())


def _held_out_macro_f1(text: pd.Series, label: pd.Series, seed: int) -> float:
    """Macro-F1 of a plain TF-IDF + logistic regression on a 30 % split of the distinct normalised texts."""
    frame = pd.DataFrame({"text": text.str.lower().str.replace(r"[\W\d_]+", " ", regex=True).str.strip(), "label": label})
    frame = frame.drop_duplicates("text")
    test = np.random.default_rng(seed).random(len(frame)) < 0.3
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=2000, class_weight="balanced")
    )
    model.fit(frame["text"][~test], frame["label"][~test])
    return f1_score(frame["label"][test], model.predict(frame["text"][test]), average="macro")


def test_review_text_follows_the_stars_without_being_trivially_separable(shop):
    engine, _, _ = shop
    reviews = _frame(engine, "reviews")
    level = pd.Series(np.select([reviews["rating"] <= 2, reviews["rating"] == 3], ["negative", "neutral"], "positive"))
    text = reviews["title"].fillna("") + " " + reviews["body"].fillna("")
    # A fixed sentence per star level gave 1.000; realistic text leaves a text model well short of it, far above
    # chance (one class: about 0.3).
    figures = [_held_out_macro_f1(text, level, seed) for seed in range(3)]
    assert all(0.55 < figure < 0.92 for figure in figures), figures
    assert {"en", "zh"} == set(reviews["language"])
    assert reviews["body"].str.len().lt(4).mean() > 0.02  # "ok", "好", "."
    assert reviews["title"].eq("").mean() > 0.2


def test_review_words_disagree_with_the_stars_in_a_few_percent():
    draw = random.Random(5)
    n = 4000
    tones = [shop_text.review_tone(2, draw) for _ in range(n)]
    assert 0.015 < tones.count(0) / n < 0.05  # a 4-5 star review that reads negative
    assert 0.04 < tones.count(1) / n < 0.10
    mixed = [shop_text.review_text(1, "en", True, draw)[1] for _ in range(200)]
    assert sum(any(word in body for word in (" but ", "though", "however", "Only thing", "That said")) for body in mixed) > 100


def test_inquiry_text_names_its_topic_loosely_and_support_filed_a_share(shop):
    engine, truth_dir, _ = shop
    inquiries = _frame(engine, "inquiries")
    truth = pq.read_table(truth_dir / "inquiries.parquet").to_pandas().set_index("inquiry_id")["topic"]
    true_topic = inquiries["id"].map(truth)
    rules = keyword_topics(inquiries, load_triage_keywords(pathlib.Path(__file__).resolve().parent.parent / "conf" / "triage.yaml"))
    # The keyword rules miss or mistake a fair share: no keyword, two topics, a misleading subject.
    agree = (rules["keyword_topic"].to_numpy() == true_topic.to_numpy()).mean()
    assert 0.4 < agree < 0.85, agree
    assert 0.15 < rules["keyword_topic"].isna().mean() < 0.5
    filed = inquiries["topic"].notna()
    assert not filed[inquiries["status"] != "resolved"].any()
    assert 0.45 < filed[inquiries["status"] == "resolved"].mean() < 0.75
    assert set(inquiries.loc[filed, "topic"]) == set(TOPICS)
    assert 0.9 < (inquiries.loc[filed, "topic"] == true_topic[filed]).mean() < 1.0  # support misfiles a few
    text = inquiries["subject"].fillna("") + " " + inquiries["body"].fillna("")
    assert 0.5 < _held_out_macro_f1(text, true_topic, 0) < 0.99


def test_text_has_its_own_random_stream_so_other_values_do_not_change(tmp_path, monkeypatch):
    engine, _, _ = _generate(tmp_path, "plain")
    monkeypatch.setitem(shop_text.REVIEW_RATES, "very_short", 0.9)
    monkeypatch.setitem(shop_text.INQUIRY_RATES, "vague", 0.9)
    other, _, _ = _generate(tmp_path, "short_texts")
    for table, text_columns in (("reviews", ["title", "body"]), ("inquiries", ["subject", "body", "topic"])):
        plain, changed = _frame(engine, table), _frame(other, table)
        assert not plain[text_columns].equals(changed[text_columns]), table
        pd.testing.assert_frame_equal(plain.drop(columns=text_columns), changed.drop(columns=text_columns))
    assert _table_hashes(engine) | {"reviews": "", "inquiries": ""} == _table_hashes(other) | {"reviews": "", "inquiries": ""}


def test_coupons_go_to_treated_customers_only_and_redemptions_match_the_truth(shop):
    engine, truth_dir, _ = shop
    cp, red = T["coupons"], T["coupon_redemptions"]
    assignments = pq.read_table(truth_dir / "coupon_assignments.parquet").to_pylist()
    with engine.connect() as conn:
        personal = set(conn.execute(select(cp.c.campaign, cp.c.customer_id).where(cp.c.customer_id.is_not(None))).all())
        redeemed = set(
            conn.execute(
                select(cp.c.campaign, red.c.customer_id).join(cp, cp.c.id == red.c.coupon_id).where(cp.c.customer_id.is_not(None))
            ).all()
        )
    assert {(a["campaign"], a["customer_id"]) for a in assignments if a["is_treated"]} == personal
    assert {(a["campaign"], a["customer_id"]) for a in assignments if a["redeemed"]} == redeemed
    treated_share = sum(a["is_treated"] for a in assignments) / len(assignments)
    assert 0.4 < treated_share < 0.6
    assert all(0.0 <= a["treatment_effect"] <= 1.0 for a in assignments)
    by_type_effect = {}
    truth = {r["customer_id"]: r["customer_type"] for r in pq.read_table(truth_dir / "customers.parquet").to_pylist()}
    for a in assignments:
        by_type_effect.setdefault(truth[a["customer_id"]], []).append(a["treatment_effect"])
    assert max(by_type_effect["loyal"]) == 0.0
    assert sum(by_type_effect["bargain_hunter"]) / len(by_type_effect["bargain_hunter"]) > sum(by_type_effect["casual"]) / len(
        by_type_effect["casual"]
    )


def test_progress_reports_customers_done_after_each_chunk(tmp_path):
    done: list[int] = []
    generate_shop(f"sqlite:///{tmp_path / 'p.db'}", 600, 1, END_DATE, tmp_path / "truth", chunk_customers=250, progress=done.append)
    assert done == [250, 500, 600]


def test_second_generation_without_replace_raises_and_replace_regenerates(tmp_path):
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    generate_shop(url, 40, 1, END_DATE, tmp_path / "truth")
    with pytest.raises(ShopExistsError, match=r"shop\.db.*replace=True"):
        generate_shop(url, 60, 2, END_DATE, tmp_path / "truth")
    assert issubclass(ShopExistsError, ValueError)
    summary = generate_shop(url, 60, 2, END_DATE, tmp_path / "truth", replace=True)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert _count(conn, select(func.count()).select_from(T["customers"])) == 60
        assert _count(conn, select(func.count()).select_from(T["orders"])) == summary["rows"]["orders"]
    engine.dispose()
    assert json.loads((tmp_path / "truth" / "summary.json").read_text())["customers"] == 60
