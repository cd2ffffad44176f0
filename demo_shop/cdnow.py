"""CDNOW's purchase log as a shop the nightly pipeline reads: a real shop's orders beside the generated demo.

CDNOW (an online CD retailer) is the data set of the BG/NBD and Gamma-Gamma papers (Fader, Hardie & Lee 2005):
every purchase from 1997-01-01 to 1998-06-30 of the 23,570 customers who first bought in 1997's first
quarter, one line per customer and day with the number of CDs and their dollar value. The `lifetimes` package
ships it (`CDNOW_master.txt`, and `CDNOW_sample.txt`: 2,357 of those customers, with an extra sample id).

What the shop holds, under the `retail` mapping's layout (`conf/mappings/retail.yaml`: no
`products.category`, no `customers.accepts_marketing` column):
- `customers`: one per CDNOW customer id (the same ids), created at their first purchase; no name, e-mail,
  phone, language or country (CDNOW has none);
- `products`: one product, `CD` (list price: the median price per CD);
- `orders`: one per line of the log (id in order of date, customer, line), status `delivered`, `total_amount`
  = the dollar value (USD), created and updated at 00:00 UTC of the purchase day;
- `order_items`: one per order (the same id): `quantity` = the CDs, `unit_price` = the value / the CDs
  rounded to the cent (so quantity x unit_price can differ from the order total by a few cents; the order
  total is the log's value);
- the other shop tables (addresses, coupons, carts, reviews, inquiries, redemptions) empty, and no browsing
  events: read with `events.source: none`.

The log has 80 purchases of $0.00 (free CDs): their order has total 0 and its line a unit price of 0, which
`clean` quarantines (`non_positive_amount`) while the order stays.

    python -m demo_shop.cdnow --url sqlite:////tmp/cdnow/shop.sqlite --through 1997-09-30 --replace
"""

from __future__ import annotations

import argparse
import datetime as dt
import pathlib
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd

from core import db, shop_schema
from core.config import conf_dir
from core.mapping import load_mapping
from demo_shop.generate_shop import _prepare_tables, _shop_engine
from demo_shop.mapped import clear_renamed_tables, rename_shop

#: The log as the lifetimes package ships it (CDNOW_master.txt: 69,659 purchases of 23,570 customers).
MASTER_FILE = "CDNOW_master.txt"
#: The shop layout written: canonical names, no product categories, no marketing-consent column.
MAPPING = "retail"
PRODUCT_ID = 1
CURRENCY = "USD"
STATUS = "delivered"
#: Rows inserted per statement.
INSERT_ROWS = 10_000
CENT = Decimal("0.01")


class PurchaseLogError(ValueError):
    """A CDNOW log that cannot be read; the message names the file, the line and what was expected."""


def default_log_path() -> pathlib.Path:
    """CDNOW_master.txt as the lifetimes package ships it."""
    from lifetimes import datasets

    return pathlib.Path(datasets.__file__).parent / MASTER_FILE


def read_purchase_log(path: pathlib.Path) -> pd.DataFrame:
    """The log as one row per purchase: `customer_id`, `purchased_on` (date), `cds` (units), `value_cents`
    (USD cents), in the file's order.

    Reads both shapes lifetimes ships: CDNOW_master.txt (a header, then customer id, yyyymmdd, CDs, dollars)
    and CDNOW_sample.txt (no header; master customer id, sample id, yyyymmdd, CDs, dollars: the master id is
    kept, so a sample customer has the same id as in the master log).
    """
    path = pathlib.Path(path)
    try:
        raw = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, comment=None)
    except FileNotFoundError:
        raise PurchaseLogError(f"{path}: no such file (CDNOW_master.txt ships with the lifetimes package)") from None
    if len(raw) and not raw.iloc[0, 0].isdigit():  # CDNOW_master.txt's header line
        raw = raw.iloc[1:]
    columns = {4: ["customer_id", "date", "cds", "dollars"], 5: ["customer_id", "sample_id", "date", "cds", "dollars"]}
    if raw.shape[1] not in columns:
        raise PurchaseLogError(
            f"{path}: {raw.shape[1]} columns per line; expected 4 (customer id, yyyymmdd, CDs, dollars) or 5 (with the sample id)"
        )
    raw.columns = columns[raw.shape[1]]
    customer_id = pd.to_numeric(raw["customer_id"], errors="coerce")
    purchased_on = pd.to_datetime(raw["date"], format="%Y%m%d", errors="coerce")
    cds = pd.to_numeric(raw["cds"], errors="coerce")
    dollars = pd.to_numeric(raw["dollars"], errors="coerce")
    for name, values, expected in (
        ("customer id", customer_id, "a positive integer"),
        ("date", purchased_on, "a date yyyymmdd"),
        ("number of CDs", cds.where(cds > 0), "a positive integer"),
        ("dollar value", dollars.where(dollars >= 0), "an amount >= 0"),
    ):
        bad = values.isna()
        if bad.any():
            line = int(bad.to_numpy().argmax())
            raise PurchaseLogError(
                f"{path}: line {raw.index[line] + 1}: {name} {raw.iloc[line].to_dict()}: expected {expected} "
                f"({int(bad.sum())} such line(s))"
            )
    return pd.DataFrame(
        {
            "customer_id": customer_id.astype("int64").to_numpy(),
            "purchased_on": purchased_on.dt.date.to_numpy(),
            "cds": cds.astype("int64").to_numpy(),
            "value_cents": (dollars * 100).round().astype("int64").to_numpy(),
        }
    )


def shop_rows(log: pd.DataFrame, through: dt.date | None = None) -> dict[str, list[dict]]:
    """The rows of the shop tables that hold data (customers, products, orders, order_items) for the
    purchases of `log` up to and including `through` (default: all), under the canonical column names."""
    if through is not None:
        log = log[log["purchased_on"] <= through]
    if log.empty:
        raise PurchaseLogError(f"no purchase on or before {through}: the shop would be empty")
    log = log.reset_index(drop=True).sort_values(["purchased_on", "customer_id"], kind="stable")
    at = [dt.datetime.combine(day, dt.time()) for day in log["purchased_on"]]
    order_ids = range(1, len(log) + 1)
    total = [Decimal(int(cents)) / 100 for cents in log["value_cents"]]
    unit_price = [
        (Decimal(int(cents)) / 100 / int(units)).quantize(CENT, ROUND_HALF_UP) for cents, units in zip(log["value_cents"], log["cds"])
    ]
    first_purchase = log.groupby("customer_id", sort=True)["purchased_on"].min()
    customers = [
        {"id": int(customer), "created_at": dt.datetime.combine(day, dt.time()), "updated_at": dt.datetime.combine(day, dt.time())}
        for customer, day in first_purchase.items()
    ]
    median_price = sorted(unit_price)[len(unit_price) // 2]
    start = dt.datetime.combine(log["purchased_on"].min(), dt.time())
    products = [{"id": PRODUCT_ID, "sku": "CD", "name": "CD", "price": median_price, "created_at": start, "updated_at": start}]
    orders = [
        {
            "id": order_id,
            "customer_id": int(customer),
            "status": STATUS,
            "total_amount": amount,
            "currency": CURRENCY,
            "created_at": when,
            "updated_at": when,
        }
        for order_id, customer, amount, when in zip(order_ids, log["customer_id"], total, at)
    ]
    order_items = [
        {
            "id": order_id,
            "order_id": order_id,
            "product_id": PRODUCT_ID,
            "quantity": int(units),
            "unit_price": price,
            "created_at": when,
            "updated_at": when,
        }
        for order_id, units, price, when in zip(order_ids, log["cds"], unit_price, at)
    ]
    return {"customers": customers, "products": products, "orders": orders, "order_items": order_items}


def write_cdnow_shop(
    url: str, log_path: pathlib.Path | None = None, through: dt.date | None = None, replace: bool = False
) -> dict[str, int]:
    """Write CDNOW's purchases up to `through` (default: all) as a shop at the SQLAlchemy `url`, in the
    `retail` mapping's layout (read it with `extract.mapping: retail`, `events.source: none`).

    Every shop table is created; the ones CDNOW has no data for stay empty. Tables holding rows are only
    dropped with `replace` (otherwise `ShopExistsError`). Returns the rows written per table.
    """
    rows = shop_rows(read_purchase_log(log_path or default_log_path()), through)
    mapping = load_mapping(conf_dir() / "mappings" / f"{MAPPING}.yaml")
    db.kind(url)  # refuses unsupported database kinds with a clear message
    if db.kind(url) == "sqlite":
        from sqlalchemy.engine import make_url

        pathlib.Path(make_url(url).database).parent.mkdir(parents=True, exist_ok=True)
    clear_renamed_tables(url, mapping, replace)
    engine = _shop_engine(url)
    try:
        _prepare_tables(engine, url, replace)
        with engine.begin() as connection:
            for name, table_rows in rows.items():
                table = shop_schema.metadata.tables[name]
                for start in range(0, len(table_rows), INSERT_ROWS):
                    connection.execute(table.insert(), table_rows[start : start + INSERT_ROWS])
    finally:
        engine.dispose()
    rename_shop(url, mapping)
    return {name: len(table_rows) for name, table_rows in rows.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of the shop database to write, e.g. sqlite:////tmp/cdnow/shop.sqlite")
    parser.add_argument("--log", type=pathlib.Path, default=None, help=f"the purchase log (default: lifetimes' {MASTER_FILE})")
    parser.add_argument("--through", type=dt.date.fromisoformat, default=None, help="last purchase day written, YYYY-MM-DD (default: all)")
    parser.add_argument("--replace", action="store_true", help="drop and recreate shop tables that hold rows")
    args = parser.parse_args(argv)
    written = write_cdnow_shop(args.url, args.log, args.through, args.replace)
    print(
        f"shop written to {db.masked(args.url)} (mapping {MAPPING}): " + ", ".join(f"{name} {count:,}" for name, count in written.items())
    )


if __name__ == "__main__":
    main()
