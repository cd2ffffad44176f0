"""CDNOW's purchase log as a shop (`demo_shop/cdnow.py`): the shop holds the log's customers, purchases, CDs
and dollars, in the layout the `retail` mapping reads, and nothing after `through`."""

from __future__ import annotations

import sqlite3
from datetime import date

import pandas as pd
import pytest
from lifetimes.datasets import load_dataset

from core.config import conf_dir
from core.mapping import check_source, load_mapping
from demo_shop.cdnow import PurchaseLogError, default_log_path, read_purchase_log, write_cdnow_shop
from demo_shop.existing import ShopExistsError

#: CDNOW's usual calibration period ends here (Fader, Hardie & Lee 2005).
CALIBRATION_END = date(1997, 9, 30)
SLICE_LINES = 2000


@pytest.fixture(scope="module")
def cdnow_slice(tmp_path_factory):
    """The first SLICE_LINES purchases of CDNOW_master.txt (header kept), as the file lifetimes ships."""
    path = tmp_path_factory.mktemp("cdnow") / "CDNOW_slice.txt"
    path.write_text("".join(default_log_path().read_text().splitlines(keepends=True)[: SLICE_LINES + 1]))
    return path


@pytest.fixture(scope="module")
def source(cdnow_slice) -> pd.DataFrame:
    """The slice as lifetimes reads it, independently of the converter."""
    frame = pd.read_csv(cdnow_slice, sep=r"\s+")
    frame["date"] = pd.to_datetime(frame["date"].astype(str), format="%Y%m%d")
    return frame


def shop(path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute(sql).fetchall()


def test_the_shop_holds_the_logs_customers_purchases_cds_and_dollars(tmp_path, cdnow_slice, source):
    url = f"sqlite:///{tmp_path}/shop.sqlite"
    written = write_cdnow_shop(url, cdnow_slice)

    assert written == {"customers": source["customer_id"].nunique(), "products": 1, "orders": len(source), "order_items": len(source)}
    db = tmp_path / "shop.sqlite"
    assert shop(db, "SELECT id FROM customers ORDER BY id") == [(int(i),) for i in sorted(source["customer_id"].unique())]
    (total_cents,) = shop(db, "SELECT sum(CAST(round(total_amount * 100) AS INTEGER)) FROM orders")[0]
    assert total_cents == round(source["dollar_value"].sum() * 100)
    assert shop(db, "SELECT sum(quantity) FROM order_items")[0][0] == source["number_of_cds"].sum()
    # Each order's line is its CDs at the value per CD: within half a cent per CD of the order total.
    worst = shop(
        db, "SELECT max(abs(i.quantity * i.unit_price - o.total_amount) / i.quantity) FROM orders o JOIN order_items i ON i.order_id = o.id"
    )
    assert worst[0][0] <= 0.005 + 1e-9
    # Per customer: purchases and dollars equal the log's.
    per_customer = shop(
        db, "SELECT customer_id, count(*), CAST(round(sum(total_amount) * 100) AS INTEGER) FROM orders GROUP BY 1 ORDER BY 1"
    )
    expected = source.groupby("customer_id")["dollar_value"].agg(["count", "sum"])
    assert per_customer == [(int(c), int(row["count"]), round(row["sum"] * 100)) for c, row in expected.iterrows()]
    # A customer exists from their first purchase on.
    first = dict(shop(db, "SELECT id, created_at FROM customers"))
    assert {c: first[c][:10] for c in first} == {
        int(c): d.date().isoformat() for c, d in source.groupby("customer_id")["date"].min().items()
    }


def test_the_shop_has_the_retail_layout_and_empty_tables_for_what_cdnow_lacks(tmp_path, cdnow_slice):
    url = f"sqlite:///{tmp_path}/shop.sqlite"
    write_cdnow_shop(url, cdnow_slice)

    plan = check_source(url, load_mapping(conf_dir() / "mappings" / "retail.yaml"))  # what extract checks first
    assert set(plan) >= {"customers", "orders", "order_items", "reviews", "inquiries", "coupons"}
    db = tmp_path / "shop.sqlite"
    for table in ("addresses", "coupons", "carts", "cart_items", "reviews", "inquiries", "coupon_redemptions"):
        assert shop(db, f"SELECT count(*) FROM {table}") == [(0,)], table
    assert "category" not in {row[1] for row in shop(db, "PRAGMA table_info(products)")}
    assert "accepts_marketing" not in {row[1] for row in shop(db, "PRAGMA table_info(customers)")}
    with pytest.raises(ShopExistsError, match="--replace"):
        write_cdnow_shop(url, cdnow_slice)
    assert write_cdnow_shop(url, cdnow_slice, replace=True)["products"] == 1


def test_through_leaves_out_every_purchase_and_customer_after_it(tmp_path, cdnow_slice, source):
    url = f"sqlite:///{tmp_path}/shop.sqlite"
    through = date(1997, 1, 5)
    written = write_cdnow_shop(url, cdnow_slice, through=through)

    kept = source[source["date"].dt.date <= through]
    assert 0 < len(kept) < len(source)
    assert written["orders"] == len(kept) and written["customers"] == kept["customer_id"].nunique()
    assert shop(tmp_path / "shop.sqlite", "SELECT max(created_at) FROM orders")[0][0][:10] == through.isoformat()


def test_the_sample_file_keeps_the_master_customer_ids():
    sample = read_purchase_log(default_log_path().with_name("CDNOW_sample.txt"))
    reference = load_dataset("CDNOW_sample.txt", header=None, sep=r"\s+")
    assert sample["customer_id"].tolist() == reference[0].tolist()
    assert sample["value_cents"].sum() == round(reference[4].sum() * 100)
    assert (sample["value_cents"] == 0).sum() == (reference[4] == 0).sum()


def test_a_bad_line_is_named_with_what_was_expected(tmp_path):
    log = tmp_path / "bad.txt"
    log.write_text(" customer_id  date number_of_cds  dollar_value\n 00001 19970101  1   11.77\n 00002 1997-01-12  1   12.00\n")
    with pytest.raises(PurchaseLogError, match=r"bad.txt: line 3: date .*expected a date yyyymmdd"):
        read_purchase_log(log)


def test_the_full_log_is_the_published_cdnow_data_set():
    log = read_purchase_log(default_log_path())
    # Counted with awk on CDNOW_master.txt: 69,659 purchases, $2,500,315.63, 49,086 of them by 1997-09-30.
    assert (len(log), log["customer_id"].nunique(), int(log["value_cents"].sum())) == (69_659, 23_570, 250_031_563)
    assert (log["purchased_on"].min(), log["purchased_on"].max()) == (date(1997, 1, 1), date(1998, 6, 30))
    assert len(log[log["purchased_on"] <= CALIBRATION_END]) == 49_086
