"""Generate a demo shop with a known ground truth: the source behind `crm generate-shop`.

Customers follow a BG/NBD-like process (Fader, Hardie & Lee 2005, "Counting your customers the easy way:
an alternative to the Pareto/NBD model", Marketing Science 24(2), 275-284): while alive, a customer orders
as a Poisson process with rate lambda ~ Gamma(r, alpha) (orders per day) and drops out after each order
with probability p ~ Beta(a, b). Order values follow a Gamma-Gamma-like spend model (Fader, Hardie & Lee
2005, "RFM and CLV: using iso-value curves for customer base analysis", Journal of Marketing Research
42(4), 415-430): each customer has a mean order value drawn from a Gamma, and each order's target value
scatters around it. Past coupon campaigns were randomised (treatment or control, 50 % each), so uplift
models can be checked against the true effects. Small counted shares of bad rows exercise quarantine.
Optionally, browsing and click events of the last days of the history (`demo_shop.generate_events`): the visits
behind the orders and the browsing around them, into the shop table `events` or NDJSON files.

The truth (latent parameters, assignments, bad-row counts) goes to files in `truth_dir`, never into the
shop. Money is in CNY, generated as integer cents; times are whole seconds, UTC without a zone. The history
covers the three years up to and including `end_date`: every good row is dated before
`end_date + 1 day, 00:00:00`.

Determinism: randomness comes from `numpy.random.SeedSequence(seed)`: one child stream (spawn key (0,))
for the catalogue and public coupons, one (spawn key (1, block)) per block of `BLOCK_CUSTOMERS` customers,
one (spawn key (2, block)) for that block's events, so generating events changes no other row, and one
(spawn key (3, block)) for that block's review and inquiry text (`demo_shop.shop_text`), so the text
changes no other value. A chunk written in one transaction is a whole number of blocks, so the chunk size
does not change any row (nor any event, nor the order of an event file's lines). The same seed, end date,
customer count and numpy version (and Python's `random`, which draws the text) give the same rows in
SQLite, PostgreSQL and MySQL/MariaDB. Ids are sequential per table from 1 in generation order (customer by
customer); a deleted order leaves a gap (its items are the orphan items).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import random
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Boolean, Date, DateTime, Numeric, event, inspect, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.schema import Column, Table

from core import db
from core.config import conf_dir
from core.db import is_document_shop
from core.mapping import SourceMapping, load_mapping
from core.shop_schema import SHOP_TABLES, events_metadata, metadata
from demo_shop import generate_events, shop_text
from demo_shop.documents import DocumentWriter
from demo_shop.existing import refuse_filled_tables

#: 2: review and inquiry text of demo_shop/shop_text.py (its own random stream), inquiries.topic filed by support.
GENERATOR_VERSION = 2
#: Customers per random stream: the unit of determinism (part of the generator's version).
BLOCK_CUSTOMERS = 250
HISTORY_DAYS = 3 * 365
CURRENCY = "CNY"
#: Share of the affected table's rows planted per bad-row rule.
BAD_ROW_SHARE = 0.003
#: Rows per executemany call.
INSERT_BATCH_ROWS = 10_000
#: The shop table of browsing events (core.shop_schema.events, written with events="table").
_EVENTS_TABLE = "events"

DAY_S = 86_400
HOUR_S = 3_600
#: Marks a null in the int64 arrays that carry ids and times until they are written.
MISSING = np.iinfo(np.int64).min
_NEVER = np.iinfo(np.int64).max


# --------------------------------------------------------------------------------------------------------
# The generative process: customer types, campaigns, catalogue
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerType:
    """Parameters of one kind of customer. Rates are per day, probabilities in [0, 1], money in CNY."""

    name: str
    share: float  # probability that a new customer is of this type
    r: float  # purchase rate lambda ~ Gamma(shape r, scale 1/alpha), orders per day
    alpha: float
    a: float  # dropout probability p ~ Beta(a, b), drawn after each order
    b: float
    first_order_probability: float  # probability of an order within an hour of signup
    mean_order_value_cny: float  # population mean of the customers' mean order values
    spend_shape: float  # Gamma shape of the customers' mean order values (larger: more alike)
    satisfaction_mean: float  # mean of the latent satisfaction (about -2 unhappy .. +2 delighted)
    review_probability: float  # probability that a delivered order line gets a review
    coupon_effect: float  # increase in P(order in a campaign window) from a coupon, at strength 1
    markdown_probability: float  # share of order lines bought at a sale price
    cart_probability: float  # probability of an open or abandoned cart near the end, when alive


CUSTOMER_TYPES: tuple[CustomerType, ...] = (
    CustomerType("loyal", 0.15, 3.0, 90.0, 1.0, 30.0, 0.6, 420.0, 4.0, 1.0, 0.35, 0.00, 0.05, 0.25),
    CustomerType("regular", 0.35, 2.0, 120.0, 1.0, 12.0, 0.5, 300.0, 3.0, 0.5, 0.25, 0.10, 0.08, 0.20),
    CustomerType("bargain_hunter", 0.20, 1.5, 70.0, 2.0, 15.0, 0.5, 160.0, 3.0, 0.0, 0.20, 0.30, 0.30, 0.35),
    CustomerType("casual", 0.30, 0.8, 120.0, 2.0, 6.0, 0.3, 240.0, 2.0, 0.2, 0.12, 0.05, 0.08, 0.10),
)
_TYPE_NAMES = np.array([t.name for t in CUSTOMER_TYPES], dtype=object)


def _type_param(field: str) -> np.ndarray:
    return np.array([getattr(t, field) for t in CUSTOMER_TYPES], dtype=np.float64)


@dataclass(frozen=True)
class Campaign:
    """A past personal-coupon campaign with random assignment of eligible customers."""

    name: str
    code_prefix: str
    days_before_end: int  # valid_from = end_date - days_before_end
    window_days: int  # the coupon is valid for this many days
    discount_type: str  # "percent" or "fixed"
    discount_value: int  # percent points, or CNY off
    min_spend_cny: int  # line total an order needs for the coupon to apply
    strength: float  # multiplies each customer type's coupon_effect


CAMPAIGNS: tuple[Campaign, ...] = (
    Campaign("spring_sale_10pct", "SPR", 430, 21, "percent", 10, 0, 1.0),
    Campaign("winback_20cny", "WBK", 250, 14, "fixed", 20, 40, 0.8),
    Campaign("summer_15pct", "SUM", 120, 28, "percent", 15, 0, 1.2),
)
TREATMENT_SHARE = 0.5

WELCOME_COUPON_CODE = "WELCOME10"
WELCOME_DISCOUNT_PERCENT = 10
WELCOME_USE_PROBABILITY = 0.2  # share of first orders that use the welcome code
DOUBLE11_DISCOUNT_CNY = 50
DOUBLE11_MIN_SPEND_CNY = 300
DOUBLE11_USE_PROBABILITY = 0.45  # share of qualifying orders in the window that use the code

CANCEL_PROBABILITY = 0.03
RETURN_PROBABILITY = 0.03  # raised to UNHAPPY_RETURN_PROBABILITY for unhappy customers
UNHAPPY_RETURN_PROBABILITY = 0.10
UNHAPPY_SATISFACTION = -0.3

# (name, sku prefix, share of the catalogue, lowest and highest list price in CNY, product nouns)
CATEGORIES: tuple[tuple[str, str, float, float, float, tuple[str, ...]], ...] = (
    ("apparel", "APP", 0.16, 29, 699, ("T-Shirt", "Hoodie", "Jeans", "Dress", "Jacket", "Sweater", "Skirt", "Shirt")),
    ("shoes", "SHO", 0.08, 79, 1499, ("Sneakers", "Running Shoes", "Boots", "Sandals", "Loafers", "Slippers")),
    (
        "electronics",
        "ELE",
        0.12,
        39,
        8999,
        ("Headphones", "Bluetooth Speaker", "Power Bank", "Smartwatch", "Phone Case", "Keyboard", "Mouse", "Tablet"),
    ),
    ("home", "HOM", 0.14, 9, 2999, ("Mug", "Pillow", "Blanket", "Desk Lamp", "Towel Set", "Storage Box", "Frying Pan", "Knife Set")),
    ("beauty", "BEA", 0.10, 19, 999, ("Face Cream", "Lipstick", "Shampoo", "Serum", "Sunscreen", "Perfume", "Hand Cream")),
    ("sports", "SPO", 0.08, 19, 3999, ("Yoga Mat", "Dumbbells", "Water Bottle", "Tennis Racket", "Backpack", "Jump Rope")),
    ("toys", "TOY", 0.07, 9, 999, ("Building Blocks", "Puzzle", "Plush Bear", "Board Game", "RC Car", "Doll")),
    ("books", "BOO", 0.09, 9, 199, ("Novel", "Cookbook", "Travel Guide", "Notebook", "Comic", "Picture Book")),
    ("grocery", "GRO", 0.10, 5, 399, ("Green Tea", "Coffee Beans", "Dark Chocolate", "Honey", "Rice Noodles", "Olive Oil")),
    ("accessories", "ACC", 0.06, 19, 1999, ("Wallet", "Sunglasses", "Watch Strap", "Scarf", "Umbrella", "Belt", "Cap")),
)
_CATEGORY_SHARE = np.array([c[2] for c in CATEGORIES]) / sum(c[2] for c in CATEGORIES)
_FIT_CATEGORIES = np.array([c[0] in ("apparel", "shoes") for c in CATEGORIES])
PRODUCT_ADJECTIVES = (
    "Classic",
    "Premium",
    "Essential",
    "Deluxe",
    "Compact",
    "Organic",
    "Vintage",
    "Modern",
    "Lightweight",
    "Eco",
    "Ultra",
    "Everyday",
    "Pro",
    "Soft",
    "Smart",
)
PRODUCT_VARIANTS = ("Black", "White", "Navy", "Grey", "Red", "Green", "Beige", "Pink", "Blue")
MIN_PRODUCTS, MAX_PRODUCTS = 500, 2000
MIN_PRODUCTS_PER_CATEGORY = 20

MAX_LINES_PER_ORDER = 5  # distinct products; an order has 1 + Binomial(4, value / (value + half value)) lines
LINES_HALF_VALUE_CENTS = 60_000  # an order worth 600 CNY has on average 3 lines
QUANTITY_PROBABILITY = np.array([0.78, 0.16, 0.06])  # 1..3 units
PREFERRED_CATEGORY_PROBABILITY = 0.55  # share of lines from the customer's favourite category
ORDER_VALUE_SHAPE = 4.0  # Gamma shape of one order's target value around the customer's mean
_WINDOW_OFFSETS = np.arange(-4, 4)  # 4 products priced below the target unit price, 4 at or above it


def product_count(customers: int) -> int:
    """Catalogue size: grows with the customer base, 500 to 2000 products."""
    return int(min(MAX_PRODUCTS, max(MIN_PRODUCTS, MIN_PRODUCTS + customers // 100)))


# --------------------------------------------------------------------------------------------------------
# Text: names, places, reviews, inquiries
# --------------------------------------------------------------------------------------------------------

EN_FIRST_NAMES = (
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "William",
    "Elizabeth",
    "David",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Daniel",
    "Emily",
    "Matthew",
    "Olivia",
    "Anthony",
    "Sophie",
    "Mark",
    "Emma",
    "Oliver",
    "Grace",
    "Liam",
    "Chloe",
    "Noah",
    "Hannah",
    "Lucas",
    "Amelia",
    "Ethan",
    "Isla",
    "Jack",
    "Ava",
)
EN_LAST_NAMES = (
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Martin",
    "Jackson",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Walker",
    "Hall",
    "Young",
    "King",
    "Wright",
    "Scott",
    "Green",
    "Baker",
    "Adams",
    "Nelson",
    "Hill",
    "Campbell",
    "Mitchell",
    "Roberts",
    "Carter",
    "Phillips",
    "Evans",
    "Turner",
    "Parker",
    "Collins",
    "Edwards",
)
# (汉字, pinyin)
ZH_SURNAMES = (
    ("王", "wang"),
    ("李", "li"),
    ("张", "zhang"),
    ("刘", "liu"),
    ("陈", "chen"),
    ("杨", "yang"),
    ("黄", "huang"),
    ("赵", "zhao"),
    ("吴", "wu"),
    ("周", "zhou"),
    ("徐", "xu"),
    ("孙", "sun"),
    ("马", "ma"),
    ("朱", "zhu"),
    ("胡", "hu"),
    ("郭", "guo"),
    ("何", "he"),
    ("高", "gao"),
    ("林", "lin"),
    ("罗", "luo"),
    ("郑", "zheng"),
    ("梁", "liang"),
    ("谢", "xie"),
    ("宋", "song"),
    ("唐", "tang"),
    ("韩", "han"),
    ("冯", "feng"),
    ("邓", "deng"),
    ("曹", "cao"),
    ("彭", "peng"),
)
ZH_GIVEN_NAMES = (
    ("伟", "wei"),
    ("芳", "fang"),
    ("娜", "na"),
    ("秀英", "xiuying"),
    ("敏", "min"),
    ("静", "jing"),
    ("丽", "li"),
    ("强", "qiang"),
    ("磊", "lei"),
    ("军", "jun"),
    ("洋", "yang"),
    ("勇", "yong"),
    ("艳", "yan"),
    ("杰", "jie"),
    ("涛", "tao"),
    ("明", "ming"),
    ("超", "chao"),
    ("霞", "xia"),
    ("平", "ping"),
    ("建华", "jianhua"),
    ("晓明", "xiaoming"),
    ("思远", "siyuan"),
    ("子涵", "zihan"),
    ("欣怡", "xinyi"),
    ("浩然", "haoran"),
    ("雨桐", "yutong"),
    ("梓萱", "zixuan"),
    ("宇轩", "yuxuan"),
    ("一诺", "yinuo"),
    ("嘉怡", "jiayi"),
    ("俊杰", "junjie"),
    ("佳琪", "jiaqi"),
)
# Reserved example domains (RFC 2606 / RFC 6761): generated addresses can never reach a real mailbox.
EN_EMAIL_DOMAINS = ("example.com", "example.net", "example.org", "mail.example", "inbox.test")
ZH_EMAIL_DOMAINS = ("example.com", "qq.example", "163.example", "mail.example", "foxmail.test")
EN_COUNTRIES = (("US", 0.35), ("GB", 0.15), ("CA", 0.10), ("AU", 0.10), ("DE", 0.08), ("SG", 0.07), ("CN", 0.10), ("NZ", 0.05))
ZH_COUNTRIES = (("CN", 0.90), ("TW", 0.04), ("HK", 0.03), ("SG", 0.03))
ZH_SHARE = 0.5
ACCEPTS_MARKETING_PROBABILITY = 0.8
SECOND_ADDRESS_PROBABILITY = 0.3
# '#' is a digit, '@' an upper-case letter.
PHONE_PATTERNS = {
    "US": "+1 (###) 555-01##",
    "CA": "+1 (###) 555-01##",
    "GB": "+44 7700 900###",
    "AU": "+61 491 570 1##",
    "NZ": "+64 21 ### ####",
    "DE": "+49 151 ########",
    "SG": "+65 8### ####",
    "CN": "+86 13# #### ####",
    "TW": "+886 9## ### ###",
    "HK": "+852 9### ####",
}
# (language, country) -> ((city, postal code pattern, districts for Chinese addresses), ...)
CITIES: dict[tuple[str, str], tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    ("en", "US"): (
        ("New York", "100##", ()),
        ("Chicago", "606##", ()),
        ("Seattle", "981##", ()),
        ("Austin", "787##", ()),
        ("Boston", "021##", ()),
        ("San Francisco", "941##", ()),
    ),
    ("en", "GB"): (("London", "SW# #@@", ()), ("Manchester", "M# #@@", ()), ("Bristol", "BS# #@@", ())),
    ("en", "CA"): (("Toronto", "M#@ #@#", ()), ("Vancouver", "V#@ #@#", ())),
    ("en", "AU"): (("Sydney", "2###", ()), ("Melbourne", "3###", ())),
    ("en", "DE"): (("Berlin", "10###", ()), ("Munich", "80###", ())),
    ("en", "SG"): (("Singapore", "######", ()),),
    ("en", "CN"): (("Beijing", "100###", ()), ("Shanghai", "200###", ()), ("Shenzhen", "518###", ())),
    ("en", "NZ"): (("Auckland", "10##", ()), ("Wellington", "60##", ())),
    ("zh", "CN"): (
        ("北京", "100###", ("朝阳区", "海淀区", "东城区")),
        ("上海", "200###", ("浦东新区", "徐汇区", "静安区")),
        ("广州", "510###", ("天河区", "越秀区", "海珠区")),
        ("深圳", "518###", ("南山区", "福田区", "宝安区")),
        ("杭州", "310###", ("西湖区", "上城区", "滨江区")),
        ("成都", "610###", ("武侯区", "锦江区")),
        ("南京", "210###", ("鼓楼区", "玄武区")),
        ("武汉", "430###", ("武昌区", "江汉区")),
        ("西安", "710###", ("雁塔区", "碑林区")),
        ("重庆", "400###", ("渝中区", "江北区")),
    ),
    ("zh", "TW"): (("台北", "106##", ("大安区", "信义区")),),
    ("zh", "HK"): (("香港", "999077", ("中西区", "油尖旺区")),),
    ("zh", "SG"): (("新加坡", "######", ("牛车水", "武吉士")),),
}
EN_STREETS = (
    "Maple",
    "Oak",
    "Cedar",
    "Pine",
    "Elm",
    "Lake",
    "Hill",
    "Park",
    "Main",
    "Church",
    "Station",
    "Mill",
    "River",
    "King",
    "Queen",
    "Victoria",
    "George",
    "High",
)
EN_STREET_KINDS = ("Street", "Road", "Avenue", "Lane", "Drive", "Way")
ZH_ROADS = ("建国路", "中山路", "人民路", "解放路", "长安街", "南京路", "淮海路", "文化路", "新华路", "和平路", "学院路", "科技路")

INQUIRY_TOPICS = ("shipping", "return_refund", "product_question", "payment", "complaint")
_TOPIC_PROBABILITY = np.array([0.30, 0.20, 0.27, 0.13, 0.10])
_UNHAPPY_TOPIC_PROBABILITY = np.array([0.25, 0.20, 0.15, 0.10, 0.30])
_NO_ORDER_TOPIC_PROBABILITY = np.array([0.0, 0.0, 0.70, 0.20, 0.10])
INQUIRY_CHANNELS = ("email", "chat", "phone")
_CHANNEL_PROBABILITY = np.array([0.45, 0.40, 0.15])


# --------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------


def generate_shop(
    url: str,
    customers: int,
    seed: int,
    end_date: dt.date,
    truth_dir: pathlib.Path,
    replace: bool = False,
    chunk_customers: int = 5000,
    progress: Callable[[int], None] | None = None,
    mapping: SourceMapping | None = None,
    events: str = "none",
    events_days: int = 240,
    landing_dir: pathlib.Path | None = None,
) -> dict:
    """Write a realistic shop to the SQLAlchemy `url` (SQLite, PostgreSQL or MySQL/MariaDB) or to a MongoDB
    database (`mongodb://host:port/<database>`), and its truth.

    Args:
        url: SQLAlchemy database URL of the shop (SQLite, PostgreSQL, MySQL/MariaDB); MySQL connections use
            utf8mb4 unless the URL names a charset. Or a MongoDB URL naming the database: the same rows as
            documents (`demo_shop.documents.DocumentWriter`): order items, addresses and cart items embedded in
            their parents; an order item of a deleted order has no document to live in and is left out
            (counted in the summary's `not_written`).
        customers: number of customers to generate (>= 1).
        seed: seed of all randomness.
        end_date: the last day of the shop's history (UTC); nothing good is dated after it.
        truth_dir: folder for the ground truth (created): customers.parquet, coupon_assignments.parquet,
            inquiries.parquet and summary.json.
        replace: drop and recreate shop tables that already hold rows, instead of raising ShopExistsError.
        chunk_customers: customers written per transaction, rounded up to whole blocks of BLOCK_CUSTOMERS;
            it bounds memory and does not change the rows.
        progress: called with the number of customers done after each chunk.
        mapping: document shops: the collection and field names (default: conf/mappings/mongodb.yaml).
        events: browsing and click events (`demo_shop.generate_events`): "none", "table" (the shop table
            `events`, SQL shops only; dropped and recreated like the other tables) or "files" (one NDJSON
            file per day in `landing_dir`). Any choice leaves the other tables' rows as they are; "none"
            also leaves an events table or event files of an earlier run alone.
        events_days: events cover the last N days of the history (1 to HISTORY_DAYS).
        landing_dir: the folder of the event files (created); required with events="files".

    Returns:
        The summary also written to summary.json: seed, customers, end_date, rows per table, bad rows per
        table and rule, generator_version; with events, what was written where (`events`).
    """
    if isinstance(end_date, dt.datetime) or not isinstance(end_date, dt.date):
        raise TypeError(f"end_date: expected a datetime.date, got {type(end_date).__name__}")
    if customers < 1:
        raise ValueError(f"customers: expected at least 1, got {customers}")
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed}")
    if chunk_customers < 1:
        raise ValueError(f"chunk_customers: expected at least 1, got {chunk_customers}")
    if events not in generate_events.OUTPUTS:
        raise ValueError(f"events: expected one of {', '.join(generate_events.OUTPUTS)}, got {events!r}")
    if not 1 <= events_days <= HISTORY_DAYS:
        raise ValueError(f"events_days: expected 1 to {HISTORY_DAYS} (the history's days), got {events_days}")
    if events == "files" and landing_dir is None:
        raise ValueError("landing_dir: required with events='files' (the folder the event files go to)")
    if events == "table" and is_document_shop(url):
        raise ValueError(f"{db.masked(url)}: events of a document shop can only go to files (--events files), not to a table")
    truth_dir = pathlib.Path(truth_dir)
    event_options = {
        "events": events,
        "events_days": events_days,
        "landing_dir": None if landing_dir is None else pathlib.Path(landing_dir),
    }
    if is_document_shop(url):
        if mapping is None:
            mapping = load_mapping(conf_dir() / "mappings" / "mongodb.yaml")
        with db.document_database(url) as database:
            writer = DocumentWriter(url, database, mapping)
            writer.prepare(replace)
            summary = _write_shop(_DocumentSink(writer), customers, seed, end_date, truth_dir, chunk_customers, progress, **event_options)
        return summary
    db.kind(url)  # refuses unsupported database kinds with a clear message
    engine = _shop_engine(url)
    try:
        _prepare_tables(engine, url, replace, with_events=events == "table")
        with engine.connect() as connection:
            return _write_shop(_SqlSink(connection), customers, seed, end_date, truth_dir, chunk_customers, progress, **event_options)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------------------
# Database plumbing
# --------------------------------------------------------------------------------------------------------


def _shop_engine(url: str) -> Engine:
    """The shop's engine (utf8mb4 for MySQL/MariaDB, see core.db); SQLite gets bulk-load pragmas."""
    engine = db.engine(url)
    if engine.dialect.name == "sqlite":
        # The pragmas last for the generator's own connections only; a crash needs replace=True anyway.
        @event.listens_for(engine, "connect")
        def _fast_sqlite(dbapi_connection, _record):  # noqa: ANN001 - DBAPI callback
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.execute("PRAGMA cache_size=-65536")
            cursor.close()

    return engine


def _prepare_tables(engine: Engine, url: str, replace: bool, with_events: bool = False) -> None:
    """Create the shop tables (and the events table, `with_events`); refuse to touch tables holding rows
    unless `replace`."""
    shop_tables = [metadata.tables[name] for name in SHOP_TABLES]
    event_tables = [events_metadata.tables[_EVENTS_TABLE]] if with_events else []
    existing = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        filled = [
            t.name
            for t in shop_tables + event_tables
            if t.name in existing and conn.execute(select(t.primary_key.columns[0]).limit(1)).first() is not None
        ]
    refuse_filled_tables(url, filled, replace)
    # Existing tables are dropped even when empty, so every run starts from the canonical definition.
    metadata.drop_all(engine, tables=shop_tables, checkfirst=True)
    events_metadata.drop_all(engine, tables=event_tables, checkfirst=True)
    metadata.create_all(engine, tables=shop_tables)
    events_metadata.create_all(engine, tables=event_tables)
    if engine.dialect.name in ("mysql", "mariadb"):
        _ensure_utf8mb4(engine, shop_tables + event_tables)


def _ensure_utf8mb4(engine: Engine, tables: list[Table]) -> None:
    """Convert tables created in a non-utf8mb4 database default, so Chinese text round-trips."""
    with engine.begin() as conn:
        for table in tables:
            collation = conn.execute(
                text("SELECT TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :name"),
                {"name": table.name},
            ).scalar()
            if collation is None or not collation.startswith("utf8mb4"):
                conn.execute(text(f"ALTER TABLE `{table.name}` CONVERT TO CHARACTER SET utf8mb4"))


def _column_encoder(column: Column, t0: dt.datetime) -> Callable[[np.ndarray], list]:
    """How a generated column array becomes Python values for the driver, by the column's SQL type.

    Times are int64 seconds since t0, dates int64 days since t0's date, money int64 cents; MISSING is null.
    """
    sql_type = column.type
    if isinstance(sql_type, DateTime):
        base = np.datetime64(t0, "s")
        unit = "timedelta64[s]"
    elif isinstance(sql_type, Date):
        base = np.datetime64(t0.date(), "D")
        unit = "timedelta64[D]"
    elif isinstance(sql_type, Numeric):
        return lambda values: (values / 100).tolist()
    else:

        def plain(values: np.ndarray) -> list:
            if values.dtype == np.int64:
                missing = values == MISSING
                if missing.any():
                    return np.where(missing, None, values.astype(object)).tolist()
            return values.tolist()

        return plain if not isinstance(sql_type, Boolean) else (lambda values: values.astype(bool).tolist())

    def times(values: np.ndarray) -> list:
        missing = values == MISSING
        out = (base + np.where(missing, 0, values).astype(unit)).tolist()
        for i in np.flatnonzero(missing):
            out[i] = None
        return out

    return times


def _rows(table: Table, columns: dict[str, np.ndarray], t0: dt.datetime, start: int = 0, stop: int | None = None) -> list[dict]:
    """Generated rows `start:stop` of one table as dicts of column -> Python value."""
    names = [c.name for c in table.columns]
    if set(names) != set(columns):
        raise ValueError(f"{table.name}: generated columns {sorted(columns)} differ from the schema {sorted(names)}")
    values = [_column_encoder(column, t0)(columns[column.name][start:stop]) for column in table.columns]
    return [dict(zip(names, row)) for row in zip(*values)]


def _insert(conn: Connection, table: Table, columns: dict[str, np.ndarray], t0: dt.datetime) -> int:
    """Insert the generated rows of one table in batches; returns the number of rows."""
    n_rows = len(next(iter(columns.values())))
    for start in range(0, n_rows, INSERT_BATCH_ROWS):
        conn.execute(table.insert(), _rows(table, columns, t0, start, min(n_rows, start + INSERT_BATCH_ROWS)))
    return n_rows


class _SqlSink:
    """Writes each chunk's tables (the shop tables, and `events` when given) in one transaction of the shop's
    SQL connection."""

    TABLES: dict[str, Table] = {
        **{name: metadata.tables[name] for name in SHOP_TABLES},
        _EVENTS_TABLE: events_metadata.tables[_EVENTS_TABLE],
    }

    def __init__(self, connection: Connection):
        self.connection = connection

    def write(self, tables: dict[str, dict[str, np.ndarray]], t0: dt.datetime) -> dict[str, int]:
        with self.connection.begin():
            return {name: _insert(self.connection, table, tables[name], t0) for name, table in self.TABLES.items() if name in tables}


class _DocumentSink:
    """Writes each chunk's tables as documents (children embedded in their parents)."""

    def __init__(self, writer: "DocumentWriter"):
        self.writer = writer

    @property
    def not_written(self) -> dict[str, int]:
        return {name: count for name, count in self.writer.not_embedded.items() if count}

    def write(self, tables: dict[str, dict[str, np.ndarray]], t0: dt.datetime) -> dict[str, int]:
        before = dict(self.writer.not_embedded)
        self.writer.write({name: _rows(metadata.tables[name], columns, t0) for name, columns in tables.items()})
        return {
            name: len(columns["id"]) - (self.writer.not_embedded.get(name, 0) - before.get(name, 0)) for name, columns in tables.items()
        }


# --------------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CampaignWindow:
    campaign: Campaign
    start_s: int  # seconds since t0, inclusive
    stop_s: int  # exclusive
    valid_from: dt.date
    valid_to: dt.date  # inclusive


@dataclass(frozen=True)
class _Catalogue:
    """Products sorted by category, then price; index i is product id i + 1."""

    category: np.ndarray
    price_cents: np.ndarray
    popularity: np.ndarray
    search_key: np.ndarray  # category * 100 + ln(price_cents), ascending
    category_start: np.ndarray  # first product index of each category
    category_stop: np.ndarray  # one past the last
    popularity_cdf: np.ndarray


@dataclass(frozen=True)
class _Context:
    seed: int
    customers: int
    t0: dt.datetime  # start of the history: end_s seconds before the end
    end_s: int  # end of end_date, exclusive, in seconds since t0
    catalogue: _Catalogue
    campaigns: tuple[_CampaignWindow, ...]
    welcome_coupon_id: int
    double11: tuple[tuple[int, int, int], ...]  # (coupon id, start_s, stop_s)
    plant_at_least_one: bool  # each bad-row rule gets at least one row (in block 0)
    events: generate_events.EventWindow | None = None  # None: no events


_TRUTH_CUSTOMERS_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.int64()),
        pa.field("customer_type", pa.string()),
        pa.field("purchase_rate_per_day", pa.float64(), metadata={"unit": "orders per day, while alive"}),
        pa.field("dropout_probability", pa.float64(), metadata={"unit": "probability of dropping out after each order"}),
        pa.field("is_alive_at_end", pa.bool_()),
        pa.field("mean_order_value", pa.float64(), metadata={"unit": "CNY, before coupon discounts"}),
        pa.field("n_orders", pa.int64(), metadata={"unit": "good orders in the shop"}),
        pa.field("n_orders_not_cancelled", pa.int64()),
        pa.field("signup_at", pa.timestamp("s")),
        pa.field("last_order_at", pa.timestamp("s"), metadata={"unit": "latest good order, null if none"}),
    ]
)
_TRUTH_ASSIGNMENTS_SCHEMA = pa.schema(
    [
        pa.field("campaign", pa.string()),
        pa.field("customer_id", pa.int64()),
        pa.field("is_treated", pa.bool_()),
        pa.field(
            "treatment_effect", pa.float64(), metadata={"unit": "increase in P(order in the coupon window) if treated; also for controls"}
        ),
        pa.field("redeemed", pa.bool_()),
    ]
)
_TRUTH_INQUIRIES_SCHEMA = pa.schema(
    [pa.field("inquiry_id", pa.int64()), pa.field("customer_id", pa.int64()), pa.field("topic", pa.string())]
)
_BAD_RULES = {
    "orders": ("null_key", "non_positive_amount", "orphan", "future_timestamp"),
    "order_items": ("zero_quantity", "returned_lines", "orphan", "duplicate"),
}
#: Planted rows that `clean` keeps, as a real shop has them (truth `real_shop_rows`): orders without a
#: customer (guest orders), with a negative total (credit notes), lines with a negative quantity (returned
#: units) and lines repeating a product of their order (summed). The other planted rows are `bad_rows`.
_KEPT_AS = {
    "orders": {"null_key": "guest_orders", "non_positive_amount": "credit_notes"},
    "order_items": {"returned_lines": "returned_lines", "duplicate": "repeated_lines"},
}


_TRUTH_SCHEMAS = {
    "customers": _TRUTH_CUSTOMERS_SCHEMA,
    "coupon_assignments": _TRUTH_ASSIGNMENTS_SCHEMA,
    "inquiries": _TRUTH_INQUIRIES_SCHEMA,
}


def _write_shop(
    sink: "_SqlSink | _DocumentSink",
    customers: int,
    seed: int,
    end_date: dt.date,
    truth_dir: pathlib.Path,
    chunk_customers: int,
    progress: Callable[[int], None] | None,
    events: str = "none",
    events_days: int = 240,
    landing_dir: pathlib.Path | None = None,
) -> dict:
    """Insert the catalogue and public coupons, then the customers chunk by chunk (with their events, unless
    `events` is "none": into the sink's `events` table or files in `landing_dir`); write the truth beside.

    The truth's parquet files and the event files are written under temporary names and renamed at the end;
    summary.json comes last, so its presence says the truth is complete.
    """
    end_at = dt.datetime.combine(end_date + dt.timedelta(days=1), dt.time())
    t0 = end_at - dt.timedelta(days=HISTORY_DAYS)
    end_s = HISTORY_DAYS * DAY_S
    upfront_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    catalogue, product_rows = _make_catalogue(upfront_rng, product_count(customers), end_s)
    coupon_rows, welcome_id, double11 = _public_coupons(t0, end_date)
    event_window = (
        None
        if events == "none"
        else generate_events.event_window(
            t0,
            end_s,
            events_days,
            catalogue,
            tuple(c[0] for c in CATEGORIES),
            tuple(tuple(noun.lower() for noun in c[5]) for c in CATEGORIES),
        )
    )
    ctx = _Context(
        seed,
        customers,
        t0,
        end_s,
        catalogue,
        _campaign_windows(end_date, t0),
        welcome_id,
        double11,
        plant_at_least_one=customers >= 200,
        events=event_window,
    )
    truth_schemas = dict(_TRUTH_SCHEMAS)
    if event_window is not None:
        truth_schemas["event_sessions"] = generate_events.EVENT_SESSIONS_SCHEMA

    rows = {name: 0 for name in SHOP_TABLES}
    bad = {table: {rule: 0 for rule in rules} for table, rules in _BAD_RULES.items()}
    next_id = {name: 1 for name in SHOP_TABLES}
    next_id["products"] += len(product_rows["id"])
    next_id["coupons"] += len(coupon_rows["id"])
    blocks_per_chunk = -(-chunk_customers // BLOCK_CUSTOMERS)
    n_blocks = -(-customers // BLOCK_CUSTOMERS)

    truth_dir.mkdir(parents=True, exist_ok=True)
    (truth_dir / "summary.json").unlink(missing_ok=True)
    partial = {name: truth_dir / f"{name}.parquet.partial" for name in truth_schemas}
    writers = {name: pq.ParquetWriter(partial[name], schema) for name, schema in truth_schemas.items()}
    event_files = generate_events.EventFiles(landing_dir, event_window) if events == "files" else None
    events_written, event_duplicates, event_counts = 0, 0, Counter()
    try:
        for name, count in sink.write({"products": product_rows, "coupons": coupon_rows}, t0).items():
            rows[name] += count
        for first_block in range(0, n_blocks, blocks_per_chunk):
            blocks = []
            for block in range(first_block, min(n_blocks, first_block + blocks_per_chunk)):
                generated = _generate_block(ctx, block, min(BLOCK_CUSTOMERS, customers - block * BLOCK_CUSTOMERS), next_id)
                for table, count in generated.rows_added.items():
                    next_id[table] += count
                blocks.append(generated)
            chunk = {name: _concat(parts) for name in SHOP_TABLES if (parts := [b.tables[name] for b in blocks if name in b.tables])}
            browsing = [b.events for b in blocks if b.events is not None]
            if events == "table":
                chunk[_EVENTS_TABLE] = generate_events.table_columns(browsing, event_window)
            elif events == "files":
                events_written += event_files.append(browsing)
                event_duplicates += sum(b.resent.size for b in browsing)
            for b in browsing:
                event_counts.update(b.counts)
            written = sink.write(chunk, t0)
            events_written += written.pop(_EVENTS_TABLE, 0)
            for name, count in written.items():
                rows[name] += count
            for name, writer in writers.items():
                writer.write_table(pa.concat_tables([b.truth[name] for b in blocks]))
            for b in blocks:
                for table, rules in b.bad.items():
                    for rule, count in rules.items():
                        bad[table][rule] += count
            if progress is not None:
                progress(min(customers, (first_block + len(blocks)) * BLOCK_CUSTOMERS))
    except BaseException:
        for name, writer in writers.items():
            writer.close()
            partial[name].unlink(missing_ok=True)
        if event_files is not None:
            event_files.discard()
        raise
    event_file_count = event_files.publish() if event_files is not None else 0
    for name, writer in writers.items():
        writer.close()
        os.replace(partial[name], truth_dir / f"{name}.parquet")

    summary = {
        "seed": seed,
        "customers": customers,
        "end_date": end_date.isoformat(),
        "rows": rows,
        "bad_rows": {table: {rule: n for rule, n in rules.items() if rule not in _KEPT_AS[table]} for table, rules in bad.items()},
        "real_shop_rows": {table: {kept: bad[table][planted] for planted, kept in kinds.items()} for table, kinds in _KEPT_AS.items()},
        "generator_version": GENERATOR_VERSION,
    }
    if isinstance(sink, _DocumentSink):  # rows that have no parent document to be embedded in
        summary["not_written"] = sink.not_written
    if event_window is not None:
        summary["events"] = generate_events.events_summary(
            events, event_window, events_written, event_duplicates, dict(event_counts), event_file_count
        )
    (truth_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _campaign_windows(end_date: dt.date, t0: dt.datetime) -> tuple[_CampaignWindow, ...]:
    windows = []
    for campaign in CAMPAIGNS:
        valid_from = end_date - dt.timedelta(days=campaign.days_before_end)
        valid_to = valid_from + dt.timedelta(days=campaign.window_days - 1)
        start_s = int((dt.datetime.combine(valid_from, dt.time()) - t0).total_seconds())
        windows.append(_CampaignWindow(campaign, start_s, start_s + campaign.window_days * DAY_S, valid_from, valid_to))
    return tuple(windows)


def _public_coupons(t0: dt.datetime, end_date: dt.date) -> tuple[dict[str, np.ndarray], int, tuple]:
    """The non-personal coupons: a welcome code for first orders and one Double 11 code per year."""
    start_date = t0.date()
    codes, campaigns, types, values, valid_from, valid_to, created = [], [], [], [], [], [], []
    codes.append(WELCOME_COUPON_CODE)
    campaigns.append("welcome")
    types.append("percent")
    values.append(WELCOME_DISCOUNT_PERCENT * 100)
    valid_from.append(0)
    valid_to.append((end_date - start_date).days + 365)
    created.append(-30 * DAY_S)
    double11 = []
    for year in range(start_date.year, end_date.year + 1):
        first, last = dt.date(year, 11, 1), dt.date(year, 11, 11)
        if first < start_date or last >= end_date:
            continue
        coupon_id = len(codes) + 1
        first_day = (first - start_date).days
        double11.append((coupon_id, first_day * DAY_S, (first_day + 11) * DAY_S))
        codes.append(f"D11-{year}")
        campaigns.append(f"double11_{year}")
        types.append("fixed")
        values.append(DOUBLE11_DISCOUNT_CNY * 100)
        valid_from.append(first_day)
        valid_to.append(first_day + 10)
        created.append((first_day - 7) * DAY_S + 9 * HOUR_S)
    n = len(codes)
    rows = {
        "id": np.arange(1, n + 1, dtype=np.int64),
        "code": np.array(codes, dtype=object),
        "campaign": np.array(campaigns, dtype=object),
        "customer_id": np.full(n, MISSING, dtype=np.int64),
        "discount_type": np.array(types, dtype=object),
        "discount_value": np.array(values, dtype=np.int64),
        "valid_from": np.array(valid_from, dtype=np.int64),
        "valid_to": np.array(valid_to, dtype=np.int64),
        "created_at": np.array(created, dtype=np.int64),
        "updated_at": np.array(created, dtype=np.int64),
    }
    return rows, 1, tuple(double11)


def _make_catalogue(rng: np.random.Generator, n_products: int, end_s: int) -> tuple[_Catalogue, dict]:
    """The product catalogue: list prices log-uniform within each category's range, CNY cents."""
    counts = np.maximum(MIN_PRODUCTS_PER_CATEGORY, np.floor(_CATEGORY_SHARE * n_products)).astype(np.int64)
    counts[0] += n_products - counts.sum()
    category = np.repeat(np.arange(len(CATEGORIES)), counts)
    low = np.array([c[3] for c in CATEGORIES], dtype=np.float64)[category]
    high = np.array([c[4] for c in CATEGORIES], dtype=np.float64)[category]
    yuan = np.rint(np.exp(rng.uniform(np.log(low), np.log(high)))).astype(np.int64)
    ending = rng.choice(np.array([0, 1, 10]), size=n_products, p=[0.4, 0.4, 0.2])  # 99.00, 98.99, 98.90
    price_cents = yuan * 100 - ending
    order = np.lexsort((price_cents, category))
    category, price_cents = category[order], price_cents[order]
    popularity = rng.lognormal(0.0, 1.0, n_products)
    stop = np.cumsum(counts)
    catalogue = _Catalogue(
        category=category,
        price_cents=price_cents,
        popularity=popularity,
        search_key=category * 100.0 + np.log(price_cents),
        category_start=stop - counts,
        category_stop=stop,
        popularity_cdf=np.cumsum(popularity) / popularity.sum(),
    )
    adjective = rng.integers(0, len(PRODUCT_ADJECTIVES), n_products)
    variant = rng.integers(0, len(PRODUCT_VARIANTS), n_products)
    noun_draw = rng.random(n_products)
    ids = np.arange(1, n_products + 1, dtype=np.int64)
    names, skus = [], []
    for i in range(n_products):
        cat = CATEGORIES[category[i]]
        nouns = cat[5]
        names.append(f"{PRODUCT_ADJECTIVES[adjective[i]]} {nouns[int(noun_draw[i] * len(nouns))]} - {PRODUCT_VARIANTS[variant[i]]}")
        skus.append(f"{cat[1]}-{ids[i]:06d}")
    created = -_uniform_int(rng, np.full(n_products, 30 * DAY_S), np.full(n_products, 700 * DAY_S))
    updated = np.where(rng.random(n_products) < 0.4, _uniform_int(rng, np.zeros(n_products, np.int64), np.full(n_products, end_s)), created)
    rows = {
        "id": ids,
        "sku": np.array(skus, dtype=object),
        "name": np.array(names, dtype=object),
        "category": np.array([CATEGORIES[c][0] for c in category], dtype=object),
        "price": price_cents,
        "created_at": created,
        "updated_at": updated,
    }
    return catalogue, rows


# --------------------------------------------------------------------------------------------------------
# One block of customers
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Block:
    tables: dict[str, dict[str, np.ndarray]]
    rows_added: dict[str, int]  # ids consumed per table (deleted orders consume ids too)
    truth: dict[str, pa.Table]
    bad: dict[str, dict[str, int]]
    events: generate_events.BlockEvents | None = None  # browsing events, when the shop has them


def _uniform_int(rng: np.random.Generator, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Integers uniform in [low, high); `low` where high <= low."""
    span = np.maximum(np.asarray(high) - np.asarray(low), 0)
    return np.asarray(low) + np.floor(rng.random(np.shape(span)) * span).astype(np.int64)


def _group_rank(group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows sorted by group: rank within the group, the group sizes and each group's first row."""
    counts = np.bincount(group, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    return np.arange(group.size) - starts[group], counts, starts


def _bad_count(rng: np.random.Generator, n_rows: int, at_least_one: bool) -> int:
    count = int(rng.binomial(n_rows, BAD_ROW_SHARE)) if n_rows > 0 else 0
    return max(count, 1) if at_least_one and n_rows > 0 else count


@dataclass(frozen=True)
class _Customers:
    """Latent parameters of one block's customers (arrays indexed by position in the block)."""

    ids: np.ndarray
    ctype: np.ndarray  # index into CUSTOMER_TYPES
    signup: np.ndarray  # seconds since t0
    rate: np.ndarray  # orders per day while alive
    dropout: np.ndarray  # probability of dropping out after each order
    mean_order_cents: np.ndarray
    satisfaction: np.ndarray
    preferred_category: np.ndarray
    is_zh: np.ndarray

    def param(self, field: str) -> np.ndarray:
        """A CustomerType field for each customer."""
        return _type_param(field)[self.ctype]

    @property
    def unhappy(self) -> np.ndarray:
        return self.satisfaction < UNHAPPY_SATISFACTION


@dataclass(frozen=True)
class _Assignment:
    """One campaign's random assignment in a block, and the orders its coupons brought."""

    window: _CampaignWindow
    eligible: np.ndarray  # signed up before the coupon window
    treated: np.ndarray
    effect: np.ndarray  # increase in P(order in the window) if treated (probability)
    induced_customer: np.ndarray  # customers with an extra order because of the coupon
    induced_time: np.ndarray


def _draw_customers(rng: np.random.Generator, n: int, end_s: int, first_id: int) -> _Customers:
    """Type, signup and the BG/NBD and spend parameters of n new customers."""
    ctype = rng.choice(len(CUSTOMER_TYPES), size=n, p=_type_param("share"))
    signup = rng.integers(0, end_s, n)
    rate = np.minimum(rng.gamma(_type_param("r")[ctype], 1.0 / _type_param("alpha")[ctype]), 1.0)
    dropout = rng.beta(_type_param("a")[ctype], _type_param("b")[ctype])
    spend_shape = _type_param("spend_shape")[ctype]
    mean_order_cents = np.maximum(2000.0, rng.gamma(spend_shape, _type_param("mean_order_value_cny")[ctype] * 100 / spend_shape))
    satisfaction = rng.normal(_type_param("satisfaction_mean")[ctype], 0.8)
    preferred_category = rng.choice(len(CATEGORIES), size=n, p=_CATEGORY_SHARE)
    is_zh = rng.random(n) < ZH_SHARE
    return _Customers(
        first_id + np.arange(n, dtype=np.int64), ctype, signup, rate, dropout, mean_order_cents, satisfaction, preferred_category, is_zh
    )


def _natural_orders(rng: np.random.Generator, cust: _Customers, end_s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Orders of the BG/NBD-like process: Poisson(rate) from signup, dropout with probability p after each.

    Some customers also order within an hour of signup. Returns each order's customer and time (sorted by
    customer, then time), whether each customer is alive at the end, and when each dropped out (the time of
    the order after which it did; _NEVER if alive).
    """
    n = cust.ids.size
    first_at = cust.signup + rng.integers(60, HOUR_S, n)
    has_first = (rng.random(n) < cust.param("first_order_probability")) & (first_at < end_s)
    n_poisson = rng.poisson(cust.rate * (end_s - cust.signup) / DAY_S)
    orders_until_dropout = rng.geometric(np.maximum(cust.dropout, 1e-12))
    poisson_customer = np.repeat(np.arange(n), n_poisson)
    poisson_time = (
        cust.signup[poisson_customer]
        + 1
        + _uniform_int(rng, np.zeros(poisson_customer.size, np.int64), (end_s - 1 - cust.signup)[poisson_customer])
    )
    customer = np.concatenate([np.flatnonzero(has_first), poisson_customer])
    time = np.concatenate([first_at[has_first], poisson_time])
    order = np.lexsort((time, customer))
    customer, time = customer[order], time[order]
    rank, n_events, starts = _group_rank(customer, n)
    is_alive_at_end = orders_until_dropout > n_events
    dropped_at = np.full(n, _NEVER, dtype=np.int64)
    dead = ~is_alive_at_end
    dropped_at[dead] = time[starts[dead] + orders_until_dropout[dead] - 1]
    kept = rank < orders_until_dropout[customer]
    return customer[kept], time[kept], is_alive_at_end, dropped_at


def _assign_campaigns(
    rng: np.random.Generator, ctx: _Context, cust: _Customers, order_customer: np.ndarray, order_time: np.ndarray, dropped_at: np.ndarray
) -> list[_Assignment]:
    """Randomise eligible customers into treatment and control, and add the orders the coupons bring.

    A customer alive at the window's start orders in it anyway with P0 = 1 - exp(-rate * window days);
    treated, it orders with P0 + effect: an extra order comes with probability effect / (1 - P0) when
    there is no natural one. The effect depends on the customer type and is 0 for dropped-out customers.
    """
    n = cust.ids.size
    assignments = []
    for window in ctx.campaigns:
        eligible = cust.signup < window.start_s
        window_days = (window.stop_s - window.start_s) / DAY_S
        p_natural = 1.0 - np.exp(-cust.rate * window_days)
        alive = dropped_at >= window.start_s
        effect = cust.param("coupon_effect") * window.campaign.strength * rng.uniform(0.5, 1.5, n)
        effect = np.where(eligible & alive, np.minimum(effect, 1.0 - p_natural), 0.0)
        treated = eligible & (rng.random(n) < TREATMENT_SHARE)
        in_window = (order_time >= window.start_s) & (order_time < window.stop_s)
        has_natural = np.bincount(order_customer[in_window], minlength=n) > 0
        induce_probability = np.divide(effect, 1.0 - p_natural, out=np.zeros(n), where=p_natural < 1.0)
        induced = treated & ~has_natural & (rng.random(n) < induce_probability)
        when = _uniform_int(rng, np.full(n, window.start_s), np.full(n, window.stop_s))
        assignments.append(_Assignment(window, eligible, treated, effect, np.flatnonzero(induced), when[induced]))
    return assignments


def _apply_coupons(
    rng: np.random.Generator,
    ctx: _Context,
    assignments: list[_Assignment],
    personal_coupon_id: list[np.ndarray],
    order_customer: np.ndarray,
    order_time: np.ndarray,
    order_rank: np.ndarray,
    subtotal: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Coupon id and discount (cents) per order, and per campaign which customers redeemed.

    A treated customer's first order in the window that reaches the minimum spend uses the personal coupon;
    otherwise a share of first orders use the welcome code, and of Double 11 orders the Double 11 code.
    """
    n_orders = order_customer.size
    coupon_id = np.full(n_orders, MISSING, dtype=np.int64)
    discount = np.zeros(n_orders, dtype=np.int64)
    redeemed_by_campaign = []
    for assignment, coupon_of_customer in zip(assignments, personal_coupon_id):
        window, c = assignment.window, assignment.window.campaign
        candidate = (
            assignment.treated[order_customer]
            & (order_time >= window.start_s)
            & (order_time < window.stop_s)
            & (subtotal >= c.min_spend_cny * 100)
            & (coupon_id == MISSING)
        )
        idx = np.flatnonzero(candidate)
        _, first = np.unique(order_customer[idx], return_index=True)
        use = idx[first]
        coupon_id[use] = coupon_of_customer[order_customer[use]]
        discount[use] = _discount_cents(subtotal[use], c.discount_type, c.discount_value)
        redeemed = np.zeros(n, dtype=bool)
        redeemed[order_customer[use]] = True
        redeemed_by_campaign.append(redeemed)
    welcome = (order_rank == 0) & (coupon_id == MISSING) & (rng.random(n_orders) < WELCOME_USE_PROBABILITY)
    coupon_id[welcome] = ctx.welcome_coupon_id
    discount[welcome] = _discount_cents(subtotal[welcome], "percent", WELCOME_DISCOUNT_PERCENT)
    double11_draw = rng.random(n_orders)
    for d11_id, start_s, stop_s in ctx.double11:
        use = (
            (order_time >= start_s)
            & (order_time < stop_s)
            & (coupon_id == MISSING)
            & (subtotal >= DOUBLE11_MIN_SPEND_CNY * 100)
            & (double11_draw < DOUBLE11_USE_PROBABILITY)
        )
        coupon_id[use] = d11_id
        discount[use] = DOUBLE11_DISCOUNT_CNY * 100
    return coupon_id, discount, redeemed_by_campaign


def _generate_block(ctx: _Context, block: int, n: int, next_id: dict[str, int]) -> _Block:
    """All rows and truth of customers block*BLOCK_CUSTOMERS .. +n, from the block's own random stream."""
    rng = np.random.default_rng(np.random.SeedSequence(ctx.seed, spawn_key=(1, block)))
    text_draw = shop_text.text_stream(ctx.seed, block)
    end_s = ctx.end_s
    plant = ctx.plant_at_least_one and block == 0
    cust = _draw_customers(rng, n, end_s, next_id["customers"])
    customer_table, address_table, language = _customer_rows(rng, cust.ids, cust.is_zh, cust.signup, end_s, next_id)
    natural_customer, natural_time, is_alive_at_end, dropped_at = _natural_orders(rng, cust, end_s)
    assignments = _assign_campaigns(rng, ctx, cust, natural_customer, natural_time, dropped_at)

    # Good orders, sorted by customer then time.
    order_customer = np.concatenate([natural_customer, *(a.induced_customer for a in assignments)])
    order_time = np.concatenate([natural_time, *(a.induced_time for a in assignments)])
    induced_by = np.concatenate(
        [np.full(natural_customer.size, -1)] + [np.full(a.induced_customer.size, j) for j, a in enumerate(assignments)]
    )
    order = np.lexsort((order_time, order_customer))
    order_customer, order_time, induced_by = order_customer[order], order_time[order], induced_by[order]
    n_orders = order_customer.size
    order_rank, orders_per_customer, order_starts = _group_rank(order_customer, n)

    coupon_table, personal_coupon_id = _personal_coupons(
        rng, ctx, [a.treated for a in assignments], cust.ids, cust.signup, next_id["coupons"]
    )

    # Lines: a target value around the customer's mean; a coupon-induced basket aims above the minimum spend.
    target_cents = rng.gamma(ORDER_VALUE_SHAPE, cust.mean_order_cents[order_customer] / ORDER_VALUE_SHAPE)
    for j, a in enumerate(assignments):
        boost = induced_by == j
        target_cents[boost] = np.maximum(target_cents[boost], 1.5 * a.window.campaign.min_spend_cny * 100)
    lines = _order_lines(
        rng, ctx.catalogue, cust.preferred_category[order_customer], target_cents, cust.param("markdown_probability")[order_customer]
    )
    subtotal = np.bincount(lines["order"], weights=lines["quantity"] * lines["unit_price"], minlength=n_orders).astype(np.int64)
    coupon_id, discount, redeemed_by_campaign = _apply_coupons(
        rng, ctx, assignments, personal_coupon_id, order_customer, order_time, order_rank, subtotal, n
    )
    return_probability = np.where(cust.unhappy, UNHAPPY_RETURN_PROBABILITY, RETURN_PROBABILITY)[order_customer]
    status, updated, delivered = _order_progress(rng, order_time, end_s, return_probability)

    # Bad orders and deleted orders (whose items remain) take random places among the good ones in id order.
    n_bad = {rule: _bad_count(rng, n_orders, plant) for rule in _BAD_RULES["orders"]}
    n_deleted = max(int(rng.binomial(n_orders, BAD_ROW_SHARE / 2)), 1 if plant and n_orders > 0 else 0)
    bad_orders = _bad_orders(rng, ctx, n_bad, cust.ids, cust.signup)
    n_planted = len(bad_orders["kind"])
    n_slots = n_orders + n_planted + n_deleted
    nongood_slot = np.sort(rng.choice(n_slots, size=n_planted + n_deleted, replace=False))
    nongood_slot = nongood_slot[rng.permutation(nongood_slot.size)]
    is_good_slot = np.ones(n_slots, dtype=bool)
    is_good_slot[nongood_slot] = False
    slot_id = next_id["orders"] + np.arange(n_slots, dtype=np.int64)
    good_order_id = slot_id[is_good_slot]

    orders_table = _orders_table(
        good_order_id,
        cust.ids[order_customer],
        status,
        subtotal - discount,
        coupon_id,
        order_time,
        updated,
        bad_orders,
        slot_id[nongood_slot[:n_planted]],
    )
    items_table, item_bad = _items_table(
        rng, ctx, lines, good_order_id, order_time, slot_id[nongood_slot[n_planted:]], plant, next_id["order_items"]
    )
    reviews_table = _reviews(
        rng, text_draw, ctx, lines, order_customer, delivered, status, cust.satisfaction, cust.ctype, language, cust.ids, next_id["reviews"]
    )
    inquiries_table, inquiry_topics = _inquiries(
        rng,
        text_draw,
        end_s,
        n,
        orders_per_customer,
        order_starts,
        good_order_id,
        order_time,
        cust.signup,
        cust.unhappy,
        language,
        cust.ids,
        next_id["inquiries"],
    )
    carts_table, cart_items_table = _carts(
        rng,
        ctx,
        lines,
        order_customer,
        order_time,
        status,
        cust.signup,
        is_alive_at_end,
        cust.preferred_category,
        cust.mean_order_cents,
        cust.ctype,
        cust.ids,
        next_id["carts"],
        next_id["cart_items"],
    )
    used = np.flatnonzero(coupon_id != MISSING)
    redemptions_table = {
        "id": next_id["coupon_redemptions"] + np.arange(used.size, dtype=np.int64),
        "coupon_id": coupon_id[used],
        "customer_id": cust.ids[order_customer[used]],
        "order_id": good_order_id[used],
        "created_at": order_time[used],
        "updated_at": order_time[used],
    }

    tables = {
        "customers": customer_table,
        "addresses": address_table,
        "coupons": coupon_table,
        "orders": orders_table,
        "order_items": items_table,
        "carts": carts_table,
        "cart_items": cart_items_table,
        "reviews": reviews_table,
        "inquiries": inquiries_table,
        "coupon_redemptions": redemptions_table,
    }
    rows_added = {name: len(t["id"]) for name, t in tables.items()}
    rows_added["orders"] = n_slots
    last_order = np.full(n, MISSING, dtype=np.int64)
    has_orders = orders_per_customer > 0
    last_order[has_orders] = order_time[order_starts[has_orders] + orders_per_customer[has_orders] - 1]
    truth = {
        "customers": pa.table(
            {
                "customer_id": cust.ids,
                "customer_type": _TYPE_NAMES[cust.ctype].astype(str),
                "purchase_rate_per_day": cust.rate,
                "dropout_probability": cust.dropout,
                "is_alive_at_end": is_alive_at_end,
                "mean_order_value": cust.mean_order_cents / 100,
                "n_orders": orders_per_customer.astype(np.int64),
                "n_orders_not_cancelled": np.bincount(order_customer[status != "cancelled"], minlength=n).astype(np.int64),
                "signup_at": _truth_times(ctx.t0, cust.signup),
                "last_order_at": _truth_times(ctx.t0, last_order),
            },
            schema=_TRUTH_CUSTOMERS_SCHEMA,
        ),
        "coupon_assignments": pa.concat_tables(
            [
                pa.table(
                    {
                        "campaign": np.full(a.eligible.sum(), a.window.campaign.name, dtype=object),
                        "customer_id": cust.ids[a.eligible],
                        "is_treated": a.treated[a.eligible],
                        "treatment_effect": a.effect[a.eligible],
                        "redeemed": redeemed[a.eligible],
                    },
                    schema=_TRUTH_ASSIGNMENTS_SCHEMA,
                )
                for a, redeemed in zip(assignments, redeemed_by_campaign)
            ]
        ),
        "inquiries": pa.table(
            {"inquiry_id": inquiries_table["id"], "customer_id": inquiries_table["customer_id"], "topic": inquiry_topics},
            schema=_TRUTH_INQUIRIES_SCHEMA,
        ),
    }
    browsing = None
    if ctx.events is not None:
        history = generate_events.CustomerHistory(
            customer_ids=cust.ids,
            customer_type=_TYPE_NAMES[cust.ctype],
            signup_s=cust.signup,
            dropped_at_s=dropped_at,
            preferred_category=cust.preferred_category,
            order_customer=order_customer,
            order_time_s=order_time,
            line_order=lines["order"],
            line_product=lines["product"],
            line_quantity=lines["quantity"],
        )
        browsing = generate_events.block_events(
            np.random.default_rng(np.random.SeedSequence(ctx.seed, spawn_key=(2, block))), ctx.events, history, plant_at_least_one=plant
        )
        truth["event_sessions"] = browsing.sessions
    return _Block(tables=tables, rows_added=rows_added, truth=truth, bad={"orders": n_bad, "order_items": item_bad}, events=browsing)


def _truth_times(t0: dt.datetime, seconds: np.ndarray) -> pa.Array:
    missing = seconds == MISSING
    epoch_s = int((t0 - dt.datetime(1970, 1, 1)).total_seconds())
    return pa.array(np.where(missing, 0, seconds + epoch_s), type=pa.timestamp("s"), mask=missing)


def _discount_cents(subtotal_cents: np.ndarray, discount_type: str, value: int) -> np.ndarray:
    """Coupon discount in cents: percent points of the subtotal (rounded half up) or a fixed CNY amount."""
    if discount_type == "percent":
        return (subtotal_cents * value + 50) // 100
    return np.full(np.shape(subtotal_cents), value * 100, dtype=np.int64)


def _fill_pattern(pattern: str, draws: np.ndarray) -> str:
    """Replace '#' by a digit and '@' by a letter, from one row of random integers."""
    out, k = [], 0
    for ch in pattern:
        if ch == "#":
            out.append(chr(48 + draws[k] % 10))
            k += 1
        elif ch == "@":
            out.append(chr(65 + draws[k] % 26))
            k += 1
        else:
            out.append(ch)
    return "".join(out)


def _customer_rows(
    rng: np.random.Generator, customer_ids: np.ndarray, is_zh: np.ndarray, signup: np.ndarray, end_s: int, next_id: dict[str, int]
) -> tuple[dict, dict, np.ndarray]:
    """Customer and address rows (PII) for one block; also each customer's language."""
    n = customer_ids.size
    en_countries, en_p = zip(*EN_COUNTRIES)
    zh_countries, zh_p = zip(*ZH_COUNTRIES)
    country = np.where(
        is_zh,
        np.array(zh_countries, dtype=object)[rng.choice(len(zh_p), n, p=zh_p)],
        np.array(en_countries, dtype=object)[rng.choice(len(en_p), n, p=en_p)],
    )
    first_draw, last_draw = rng.random(n), rng.random(n)
    email_style, domain_draw = rng.integers(0, 4, n), rng.random(n)
    digits = rng.integers(0, 1 << 30, (n, 12))
    n_addresses = 1 + (rng.random(n) < SECOND_ADDRESS_PROBABILITY)
    address_draws = rng.integers(0, 1 << 30, (n_addresses.sum(), 16))
    accepts_marketing = rng.random(n) < ACCEPTS_MARKETING_PROBABILITY
    updated = np.where(rng.random(n) < 0.3, _uniform_int(rng, signup, np.full(n, end_s)), signup)
    second_created = _uniform_int(rng, signup, np.full(n, end_s))

    first_names, last_names, emails, phones, languages = [], [], [], [], []
    for i in range(n):
        cid = int(customer_ids[i])
        if is_zh[i]:
            surname, surname_latin = ZH_SURNAMES[int(last_draw[i] * len(ZH_SURNAMES))]
            given, given_latin = ZH_GIVEN_NAMES[int(first_draw[i] * len(ZH_GIVEN_NAMES))]
            first, last, domains = given, surname, ZH_EMAIL_DOMAINS
            first_latin, last_latin = given_latin, surname_latin
            languages.append("zh")
        else:
            first = EN_FIRST_NAMES[int(first_draw[i] * len(EN_FIRST_NAMES))]
            last = EN_LAST_NAMES[int(last_draw[i] * len(EN_LAST_NAMES))]
            first_latin, last_latin, domains = first.lower(), last.lower(), EN_EMAIL_DOMAINS
            languages.append("en")
        local = (
            f"{first_latin}.{last_latin}.{cid}",
            f"{first_latin}{last_latin}{cid}",
            f"{first_latin[0]}.{last_latin}{cid}",
            f"{last_latin}_{first_latin}{cid}",
        )[email_style[i]]
        emails.append(f"{local}@{domains[int(domain_draw[i] * len(domains))]}".lower())
        first_names.append(first)
        last_names.append(last)
        phones.append(_fill_pattern(PHONE_PATTERNS[country[i]], digits[i]))

    language = np.array(languages, dtype=object)
    customers = {
        "id": customer_ids,
        "email": np.array(emails, dtype=object),
        "first_name": np.array(first_names, dtype=object),
        "last_name": np.array(last_names, dtype=object),
        "phone": np.array(phones, dtype=object),
        "language": language,
        "country": country,
        "accepts_marketing": accepts_marketing,
        "created_at": signup,
        "updated_at": updated,
    }

    owner = np.repeat(np.arange(n), n_addresses)
    is_default = np.concatenate([[True], owner[1:] != owner[:-1]]) if owner.size else np.zeros(0, bool)
    lines1, cities, postal_codes = [], [], []
    for k, i in enumerate(owner):
        draws = address_draws[k]
        lang = "zh" if is_zh[i] else "en"
        options = CITIES[(lang, country[i])]
        city, postal_pattern, districts = options[draws[0] % len(options)]
        if lang == "zh":
            line1 = f"{districts[draws[1] % len(districts)]}{ZH_ROADS[draws[2] % len(ZH_ROADS)]}{1 + draws[3] % 300}号"
            if draws[4] % 2:
                line1 += f"{1 + draws[5] % 30}栋{101 + draws[6] % 2500}室"
        else:
            street = f"{EN_STREETS[draws[1] % len(EN_STREETS)]} {EN_STREET_KINDS[draws[2] % len(EN_STREET_KINDS)]}"
            line1 = f"{1 + draws[3] % 999} {street}"
            if draws[4] % 3 == 0:
                line1 += f", Apt {1 + draws[5] % 40}{'ABCD'[draws[6] % 4]}"
        lines1.append(line1)
        cities.append(city)
        postal_codes.append(_fill_pattern(postal_pattern, draws[7:]))
    address_created = np.where(is_default, signup[owner], second_created[owner])
    addresses = {
        "id": next_id["addresses"] + np.arange(owner.size, dtype=np.int64),
        "customer_id": customer_ids[owner],
        "line1": np.array(lines1, dtype=object),
        "city": np.array(cities, dtype=object),
        "postal_code": np.array(postal_codes, dtype=object),
        "country": country[owner],
        "is_default": is_default,
        "created_at": address_created,
        "updated_at": address_created,
    }
    return customers, addresses, language


def _coupon_code(prefix: str, coupon_id: np.ndarray) -> list[str]:
    """Unique, random-looking codes: a bijective scramble of the coupon id, in base 32."""
    alphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    scrambled = (coupon_id.astype(np.uint64) * np.uint64(0x9E3779B1)) & np.uint64((1 << 40) - 1)
    codes = []
    for value in scrambled.tolist():
        chars = []
        for _ in range(8):
            chars.append(alphabet[value & 31])
            value >>= 5
        codes.append(f"{prefix}-{''.join(chars)}")
    return codes


def _personal_coupons(
    rng: np.random.Generator,
    ctx: _Context,
    treated_by_campaign: list[np.ndarray],
    customer_ids: np.ndarray,
    signup: np.ndarray,
    first_id: int,
) -> tuple[dict, list[np.ndarray]]:
    """One coupon per treated customer and campaign; also, per campaign, the coupon id of each customer."""
    parts, coupon_of_customer, next_coupon = [], [], first_id
    for window, treated in zip(ctx.campaigns, treated_by_campaign):
        c = window.campaign
        who = np.flatnonzero(treated)
        ids = next_coupon + np.arange(who.size, dtype=np.int64)
        next_coupon += who.size
        lookup = np.full(treated.size, MISSING, dtype=np.int64)
        lookup[who] = ids
        coupon_of_customer.append(lookup)
        issued = np.maximum(signup[who], window.start_s - 15 * HOUR_S)
        parts.append(
            {
                "id": ids,
                "code": np.array(_coupon_code(c.code_prefix, ids), dtype=object),
                "campaign": np.full(who.size, c.name, dtype=object),
                "customer_id": customer_ids[who],
                "discount_type": np.full(who.size, c.discount_type, dtype=object),
                "discount_value": np.full(who.size, c.discount_value * 100, dtype=np.int64),
                "valid_from": np.full(who.size, window.start_s // DAY_S, dtype=np.int64),
                "valid_to": np.full(who.size, window.stop_s // DAY_S - 1, dtype=np.int64),
                "created_at": issued,
                "updated_at": issued,
            }
        )
    return _concat(parts), coupon_of_customer


def _duplicate_positions(group: np.ndarray, product: np.ndarray, n_products: int) -> np.ndarray:
    """Positions whose (group, product) already occurred at an earlier position."""
    key = group.astype(np.int64) * n_products + product
    order = np.argsort(key, kind="stable")
    repeated = key[order][1:] == key[order][:-1]
    return order[1:][repeated]


def _pick_products(
    rng: np.random.Generator, catalogue: _Catalogue, category: np.ndarray, target_unit_cents: np.ndarray, group: np.ndarray
) -> np.ndarray:
    """Product index per line: near the target unit price within the category, weighted by popularity,
    distinct within each group (an order or a cart)."""
    start, stop = catalogue.category_start[category], catalogue.category_stop[category]
    position = np.searchsorted(catalogue.search_key, category * 100.0 + np.log(np.maximum(target_unit_cents, 1.0)))
    position = np.clip(position, start, stop - 1)
    candidates = np.clip(position[:, None] + _WINDOW_OFFSETS, start[:, None], (stop - 1)[:, None])
    cumulative = catalogue.popularity[candidates].cumsum(axis=1)
    draw = rng.random(category.size) * cumulative[:, -1]
    chosen = np.minimum((cumulative <= draw[:, None]).sum(axis=1), _WINDOW_OFFSETS.size - 1)
    product = candidates[np.arange(category.size), chosen]
    n_products = catalogue.price_cents.size
    for _ in range(100):
        repeated = _duplicate_positions(group, product, n_products)
        if repeated.size == 0:
            return product
        span = stop[repeated] - start[repeated]
        product[repeated] = start[repeated] + np.floor(rng.random(repeated.size) * span).astype(np.int64)
    raise RuntimeError("could not draw distinct products for every order; is the catalogue too small?")


def _line_categories(rng: np.random.Generator, catalogue: _Catalogue, preferred: np.ndarray, unit_target_cents: np.ndarray) -> np.ndarray:
    """Category per line: the customer's favourite when its price range holds the target unit price (with
    PREFERRED_CATEGORY_PROBABILITY), else a category by catalogue share, penalised outside its price range."""
    low = catalogue.price_cents[catalogue.category_start]
    high = catalogue.price_cents[catalogue.category_stop - 1]
    log_target = np.log(np.maximum(unit_target_cents, 1.0))[:, None]
    outside = np.maximum(np.log(low) - log_target, 0.0) + np.maximum(log_target - np.log(high), 0.0)
    cumulative = np.cumsum(_CATEGORY_SHARE * np.exp(-4.0 * outside), axis=1)
    draw = rng.random(preferred.size) * cumulative[:, -1]
    by_share = np.minimum((cumulative <= draw[:, None]).sum(axis=1), len(CATEGORIES) - 1)
    keep_preferred = (rng.random(preferred.size) < PREFERRED_CATEGORY_PROBABILITY) & (outside[np.arange(preferred.size), preferred] == 0.0)
    return np.where(keep_preferred, preferred, by_share)


def _order_lines(
    rng: np.random.Generator,
    catalogue: _Catalogue,
    preferred_category: np.ndarray,
    target_cents: np.ndarray,
    markdown_probability: np.ndarray,
) -> dict[str, np.ndarray]:
    """Lines of the given orders: 1-5 distinct products, 1-3 units, list price or a markdown of 10-30 %."""
    n_orders = target_cents.size
    n_lines = 1 + rng.binomial(MAX_LINES_PER_ORDER - 1, target_cents / (target_cents + LINES_HALF_VALUE_CENTS))
    line_order = np.repeat(np.arange(n_orders), n_lines)
    position = np.arange(line_order.size) - (np.cumsum(n_lines) - n_lines)[line_order]
    quantity = 1 + rng.choice(QUANTITY_PROBABILITY.size, size=line_order.size, p=QUANTITY_PROBABILITY)
    share = rng.gamma(2.0, 1.0, line_order.size)
    share /= np.bincount(line_order, weights=share, minlength=n_orders)[line_order]
    unit_target = target_cents[line_order] * share / quantity
    category = _line_categories(rng, catalogue, preferred_category[line_order], unit_target)
    product = _pick_products(rng, catalogue, category, unit_target, line_order)
    list_price = catalogue.price_cents[product]
    marked_down = rng.random(line_order.size) < markdown_probability[line_order]
    markdown_percent = rng.choice(np.array([10, 15, 20, 30]), size=line_order.size)
    unit_price = np.where(marked_down, (list_price * (100 - markdown_percent) + 50) // 100, list_price)
    return {
        "order": line_order,
        "position": position,
        "product": product,
        "quantity": quantity,
        "unit_price": unit_price,
        "list_price": list_price,
    }


def _order_progress(
    rng: np.random.Generator, created: np.ndarray, end_s: int, return_probability: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Status, last change and delivery time (MISSING if not delivered) of orders at the end of the history.

    An order is paid minutes (sometimes hours) after it is placed, ships within two days, arrives 1-5
    days later and may be returned 3-20 days after that; a few are cancelled before shipping.
    """
    n = created.size
    quick = rng.random(n) < 0.85
    paid = created + np.where(quick, rng.integers(60, 1800, n), rng.integers(HOUR_S, DAY_S, n))
    shipped = paid + rng.integers(8 * HOUR_S, 2 * DAY_S, n)
    delivered = shipped + rng.integers(DAY_S, 5 * DAY_S, n)
    returned = np.where(rng.random(n) < return_probability, delivered + rng.integers(3 * DAY_S, 20 * DAY_S, n), _NEVER)
    is_cancelled = rng.random(n) < CANCEL_PROBABILITY
    cancelled = np.minimum(created + rng.integers(600, 12 * HOUR_S, n), shipped - 1)
    paid = np.where(is_cancelled & (paid >= cancelled), _NEVER, paid)
    shipped, delivered, returned = (np.where(is_cancelled, _NEVER, t) for t in (shipped, delivered, returned))
    status = np.full(n, "placed", dtype=object)
    updated = created.copy()
    for moment, name in ((paid, "paid"), (shipped, "shipped"), (delivered, "delivered"), (returned, "returned")):
        reached = moment < end_s
        status[reached] = name
        updated[reached] = moment[reached]
    stopped = is_cancelled & (cancelled < end_s)
    status[stopped] = "cancelled"
    updated[stopped] = cancelled[stopped]
    delivered_at = np.where(delivered < end_s, delivered, MISSING)
    return status, updated, delivered_at


def _bad_orders(
    rng: np.random.Generator, ctx: _Context, n_bad: dict[str, int], customer_ids: np.ndarray, signup: np.ndarray
) -> dict[str, np.ndarray]:
    """Orders with exactly one defect each, counted per rule; they have no items."""
    end_s = ctx.end_s
    kinds, customer, created, total = [], [], [], []
    for rule, count in n_bad.items():
        who = rng.integers(0, customer_ids.size, count)
        when = _uniform_int(rng, signup[who], np.full(count, end_s))
        amount = rng.integers(1_000, 100_000, count)
        if rule == "null_key":
            cid = np.full(count, MISSING, dtype=np.int64)
        elif rule == "orphan":
            cid = ctx.customers + rng.integers(1, ctx.customers + 1, count)
        else:
            cid = customer_ids[who]
        if rule == "non_positive_amount":
            amount = -rng.integers(100, 50_000, count)
        if rule == "future_timestamp":
            when = end_s + rng.integers(30 * DAY_S, 400 * DAY_S, count)
        kinds += [rule] * count
        customer.append(cid)
        created.append(when)
        total.append(amount)
    created_all = np.concatenate(created)
    status, updated, _ = _order_progress(rng, created_all, end_s, np.full(created_all.size, RETURN_PROBABILITY))
    future = created_all >= end_s
    updated[future] = created_all[future]
    return {
        "kind": np.array(kinds, dtype=object),
        "customer_id": np.concatenate(customer),
        "created_at": created_all,
        "updated_at": updated,
        "status": status,
        "total": np.concatenate(total),
    }


def _orders_table(good_id, customer_id, status, total, coupon_id, created, updated, bad, bad_id) -> dict:
    order = np.argsort(np.concatenate([good_id, bad_id]), kind="stable")
    n_bad = bad_id.size
    return {
        "id": np.concatenate([good_id, bad_id])[order],
        "customer_id": np.concatenate([customer_id, bad["customer_id"]])[order],
        "status": np.concatenate([status, bad["status"]])[order],
        "total_amount": np.concatenate([total, bad["total"]])[order],
        "currency": np.full(order.size, CURRENCY, dtype=object),
        "coupon_id": np.concatenate([coupon_id, np.full(n_bad, MISSING, dtype=np.int64)])[order],
        "created_at": np.concatenate([created, bad["created_at"]])[order],
        "updated_at": np.concatenate([updated, bad["updated_at"]])[order],
    }


def _items_table(
    rng: np.random.Generator,
    ctx: _Context,
    lines: dict,
    good_order_id: np.ndarray,
    order_time: np.ndarray,
    deleted_order_id: np.ndarray,
    plant: bool,
    first_id: int,
) -> tuple[dict, dict[str, int]]:
    """Order items: the good lines, plus lines with quantity <= 0, double submits and items of deleted orders."""
    n_good_lines = lines["order"].size
    order_id = [good_order_id[lines["order"]]]
    sequence = [lines["position"].astype(np.float64)]
    product = [lines["product"]]
    quantity = [lines["quantity"]]
    unit_price = [lines["unit_price"]]
    created = [order_time[lines["order"]]]

    n_non_positive = min(_bad_count(rng, n_good_lines, plant), good_order_id.size)
    on_order = rng.choice(good_order_id.size, size=n_non_positive, replace=False)
    stray_product = np.searchsorted(ctx.catalogue.popularity_cdf, rng.random(n_non_positive), side="right")
    stray_product = np.minimum(stray_product, ctx.catalogue.price_cents.size - 1)
    order_id.append(good_order_id[on_order])
    sequence.append(np.full(n_non_positive, 9.0))
    product.append(stray_product)
    returned = -rng.integers(0, 3, n_non_positive)  # 0: a bad line; below: units returned within the order
    quantity.append(returned)
    unit_price.append(ctx.catalogue.price_cents[stray_product])
    created.append(order_time[on_order])

    n_duplicates = min(_bad_count(rng, n_good_lines, plant), n_good_lines)
    copied = rng.choice(n_good_lines, size=n_duplicates, replace=False)
    order_id.append(order_id[0][copied])
    sequence.append(sequence[0][copied] + 0.5)
    product.append(lines["product"][copied])
    quantity.append(lines["quantity"][copied])
    unit_price.append(lines["unit_price"][copied])
    created.append(created[0][copied])

    # A deleted order's lines look like any order's lines; only the order row is gone.
    n_deleted = deleted_order_id.size
    deleted_time = rng.integers(0, ctx.end_s, n_deleted)
    deleted_lines = _order_lines(
        rng,
        ctx.catalogue,
        rng.choice(len(CATEGORIES), size=n_deleted, p=_CATEGORY_SHARE),
        rng.gamma(ORDER_VALUE_SHAPE, 25_000 / ORDER_VALUE_SHAPE, n_deleted),
        np.full(n_deleted, 0.08),
    )
    order_id.append(deleted_order_id[deleted_lines["order"]])
    sequence.append(deleted_lines["position"].astype(np.float64))
    product.append(deleted_lines["product"])
    quantity.append(deleted_lines["quantity"])
    unit_price.append(deleted_lines["unit_price"])
    created.append(deleted_time[deleted_lines["order"]])

    order_id, sequence = np.concatenate(order_id), np.concatenate(sequence)
    order = np.lexsort((sequence, order_id))
    created_all = np.concatenate(created)[order]
    table = {
        "id": first_id + np.arange(order.size, dtype=np.int64),
        "order_id": order_id[order],
        "product_id": np.concatenate(product)[order] + 1,
        "quantity": np.concatenate(quantity)[order].astype(np.int64),
        "unit_price": np.concatenate(unit_price)[order],
        "created_at": created_all,
        "updated_at": created_all,
    }
    n_zero = int((returned == 0).sum())
    bad = {
        "zero_quantity": n_zero,
        "returned_lines": n_non_positive - n_zero,
        "orphan": int(deleted_lines["order"].size),
        "duplicate": n_duplicates,
    }
    return table, bad


def _rating_level(rating: np.ndarray) -> np.ndarray:
    return np.where(rating <= 2, 0, np.where(rating == 3, 1, 2))


def _reviews(
    rng: np.random.Generator,
    text_draw: random.Random,
    ctx: _Context,
    lines: dict,
    order_customer: np.ndarray,
    delivered: np.ndarray,
    status: np.ndarray,
    satisfaction: np.ndarray,
    ctype: np.ndarray,
    language: np.ndarray,
    customer_ids: np.ndarray,
    first_id: int,
) -> dict:
    """Reviews of a share of delivered (or returned) lines; the rating follows the customer's satisfaction,
    the words mostly follow the rating (`shop_text.review_text`)."""
    line_customer = order_customer[lines["order"]]
    line_delivered = delivered[lines["order"]]
    review_time = line_delivered + rng.integers(DAY_S, 21 * DAY_S, line_customer.size)
    wants = rng.random(line_customer.size) < _type_param("review_probability")[ctype][line_customer]
    chosen = np.flatnonzero(wants & (line_delivered != MISSING) & (review_time < ctx.end_s))
    returned = status[lines["order"][chosen]] == "returned"
    customer = line_customer[chosen]
    rating = np.clip(np.rint(3.7 + satisfaction[customer] + rng.normal(0.0, 0.9, chosen.size) - 2.2 * returned), 1, 5).astype(np.int64)
    level = _rating_level(rating)
    product = lines["product"][chosen]
    fits = _FIT_CATEGORIES[ctx.catalogue.category[product]]
    rng.integers(0, 1 << 30, (chosen.size, 6))  # the text's draws of generator version 1: kept, so later draws stay put
    edited = rng.random(chosen.size) < 0.1
    updated = np.where(
        edited, np.minimum(review_time[chosen] + rng.integers(HOUR_S, 5 * DAY_S, chosen.size), ctx.end_s - 1), review_time[chosen]
    )
    titles, bodies = [], []
    for k in range(chosen.size):
        title, body = shop_text.review_text(int(level[k]), language[customer[k]], bool(fits[k]), text_draw)
        titles.append(title)
        bodies.append(body)
    return {
        "id": first_id + np.arange(chosen.size, dtype=np.int64),
        "customer_id": customer_ids[customer],
        "product_id": product + 1,
        "rating": rating,
        "title": np.array(titles, dtype=object),
        "body": np.array(bodies, dtype=object),
        "language": language[customer],
        "created_at": review_time[chosen],
        "updated_at": updated,
    }


def _inquiries(
    rng: np.random.Generator,
    text_draw: random.Random,
    end_s: int,
    n: int,
    orders_per_customer: np.ndarray,
    order_starts: np.ndarray,
    good_order_id: np.ndarray,
    order_time: np.ndarray,
    signup: np.ndarray,
    unhappy: np.ndarray,
    language: np.ndarray,
    customer_ids: np.ndarray,
    first_id: int,
) -> tuple[dict, np.ndarray]:
    """Support inquiries: more for customers with many orders, and more complaints from unhappy ones; the
    text says the true topic (`shop_text.inquiry_text`), support filed a share of the resolved ones."""
    expected = (0.08 + 0.06 * orders_per_customer) * np.where(unhappy, 1.6, 1.0)
    per_customer = rng.poisson(expected)
    customer = np.repeat(np.arange(n), per_customer)
    m = customer.size
    has_order = orders_per_customer[customer] > 0
    pick = order_starts[customer] + np.floor(rng.random(m) * orders_per_customer[customer]).astype(np.int64)
    pick = np.where(has_order, pick, 0)
    anchor = np.where(has_order, order_time[pick] if order_time.size else 0, signup[customer])
    # Within ten days of the order (or any time after signup without one), before the end.
    horizon = np.where(has_order, np.minimum(10 * DAY_S, end_s - anchor), end_s - anchor)
    created = anchor + np.floor(rng.random(m) * horizon).astype(np.int64)
    topic_draw = rng.random(m)
    topic_cdf = np.where(
        ~has_order[:, None],
        np.cumsum(_NO_ORDER_TOPIC_PROBABILITY),
        np.where(unhappy[customer][:, None], np.cumsum(_UNHAPPY_TOPIC_PROBABILITY), np.cumsum(_TOPIC_PROBABILITY)),
    )
    topic = np.minimum((topic_cdf <= topic_draw[:, None]).sum(axis=1), len(INQUIRY_TOPICS) - 1)
    channel = rng.choice(len(INQUIRY_CHANNELS), size=m, p=_CHANNEL_PROBABILITY)
    resolved_at = created + 1800 + np.floor(rng.exponential(1.5 * DAY_S, m)).astype(np.int64)
    is_resolved = resolved_at < end_s
    pending = ~is_resolved & (end_s - created > 4 * HOUR_S) & (rng.random(m) < 0.6)
    status = np.where(is_resolved, "resolved", np.where(pending, "pending", "open")).astype(object)
    updated = np.where(is_resolved, resolved_at, np.where(pending, _uniform_int(rng, created, np.full(m, end_s)), created))
    rng.integers(0, 1 << 30, (m, 2))  # the text's draws of generator version 1: kept, so later draws stay put
    subjects, bodies, filed_topics = [], [], []
    for k in range(m):
        lang = language[customer[k]]
        if has_order[k]:
            reference = f"order #{good_order_id[pick[k]]}" if lang == "en" else f"订单#{good_order_id[pick[k]]}"
        else:
            reference = "my order" if lang == "en" else "我的订单"
        subject, body = shop_text.inquiry_text(int(topic[k]), lang, reference, text_draw)
        subjects.append(subject)
        bodies.append(body)
        filed_topics.append(shop_text.filed_topic(int(topic[k]), bool(is_resolved[k]), text_draw))
    table = {
        "id": first_id + np.arange(m, dtype=np.int64),
        "customer_id": customer_ids[customer],
        "channel": np.array(INQUIRY_CHANNELS, dtype=object)[channel],
        "subject": np.array(subjects, dtype=object),
        "body": np.array(bodies, dtype=object),
        "status": status,
        "resolved_at": np.where(is_resolved, resolved_at, MISSING),
        "topic": np.array(filed_topics, dtype=object),
        "created_at": created,
        "updated_at": updated,
    }
    return table, np.array(INQUIRY_TOPICS, dtype=object)[topic].astype(str)


def _carts(
    rng: np.random.Generator,
    ctx: _Context,
    lines: dict,
    order_customer: np.ndarray,
    order_time: np.ndarray,
    status: np.ndarray,
    signup: np.ndarray,
    is_alive_at_end: np.ndarray,
    preferred_category: np.ndarray,
    mean_order_cents: np.ndarray,
    ctype: np.ndarray,
    customer_ids: np.ndarray,
    first_cart_id: int,
    first_item_id: int,
) -> tuple[dict, dict]:
    """Carts: converted ones behind a quarter of the orders, and open or abandoned ones near the end."""
    end_s, n = ctx.end_s, signup.size
    # Converted: the order's lines were in a cart minutes to two days before the order.
    converted = np.flatnonzero((status != "cancelled") & (rng.random(order_time.size) < 0.25))
    converted_created = np.maximum(signup[order_customer[converted]], order_time[converted] - rng.integers(120, 2 * DAY_S, converted.size))
    # Open (touched in the last week) and abandoned (untouched for 8-90 days) carts.
    cart_probability = _type_param("cart_probability")[ctype]
    draw = rng.random(n)
    is_open = is_alive_at_end & (draw < 0.4 * cart_probability)
    is_abandoned = ~is_open & (draw < np.where(is_alive_at_end, cart_probability, 0.03)) & (signup < end_s - 8 * DAY_S)
    open_created = _uniform_int(rng, np.maximum(signup, end_s - 7 * DAY_S), np.full(n, end_s))
    open_updated = _uniform_int(rng, open_created, np.full(n, end_s))
    abandoned_created = _uniform_int(rng, np.maximum(signup, end_s - 90 * DAY_S), np.full(n, end_s - 8 * DAY_S))
    abandoned_updated = abandoned_created + rng.integers(0, 3 * HOUR_S, n)
    idle = np.flatnonzero(is_open | is_abandoned)
    idle_open = is_open[idle]

    cart_customer = np.concatenate([order_customer[converted], idle])
    cart_created = np.concatenate([converted_created, np.where(idle_open, open_created[idle], abandoned_created[idle])])
    cart_updated = np.concatenate([order_time[converted], np.where(idle_open, open_updated[idle], abandoned_updated[idle])])
    cart_status = np.concatenate(
        [np.full(converted.size, "converted", dtype=object), np.where(idle_open, "open", "abandoned").astype(object)]
    )

    # Items of idle carts: 1-4 distinct products, list price.
    n_idle_items = 1 + rng.choice(4, size=idle.size, p=[0.45, 0.3, 0.15, 0.1])
    idle_item_cart = np.repeat(np.arange(idle.size), n_idle_items)
    category = np.where(
        rng.random(idle_item_cart.size) < PREFERRED_CATEGORY_PROBABILITY,
        preferred_category[idle][idle_item_cart],
        rng.choice(len(CATEGORIES), size=idle_item_cart.size, p=_CATEGORY_SHARE),
    )
    target = rng.gamma(2.0, mean_order_cents[idle][idle_item_cart] / 4.0)
    idle_product = _pick_products(rng, ctx.catalogue, category, target, idle_item_cart)
    idle_quantity = 1 + (rng.random(idle_item_cart.size) < 0.2)

    line_cart = np.full(order_time.size, -1, dtype=np.int64)
    line_cart[converted] = np.arange(converted.size)
    in_converted = line_cart[lines["order"]] >= 0
    item_cart = np.concatenate([line_cart[lines["order"]][in_converted], converted.size + idle_item_cart])
    item_product = np.concatenate([lines["product"][in_converted], idle_product])
    item_quantity = np.concatenate([lines["quantity"][in_converted], idle_quantity])
    item_price = np.concatenate([lines["unit_price"][in_converted], ctx.catalogue.price_cents[idle_product]])
    item_sequence = np.concatenate([lines["position"][in_converted], np.arange(idle_item_cart.size)])

    cart_order = np.lexsort((cart_created, cart_customer))
    cart_rank = np.empty_like(cart_order)
    cart_rank[cart_order] = np.arange(cart_order.size)
    cart_id = first_cart_id + cart_rank
    item_order = np.lexsort((item_sequence, cart_rank[item_cart]))
    item_created = cart_created[item_cart][item_order]
    carts = {
        "id": cart_id[cart_order],
        "customer_id": customer_ids[cart_customer][cart_order],
        "status": cart_status[cart_order],
        "created_at": cart_created[cart_order],
        "updated_at": cart_updated[cart_order],
    }
    cart_items = {
        "id": first_item_id + np.arange(item_order.size, dtype=np.int64),
        "cart_id": cart_id[item_cart][item_order],
        "product_id": item_product[item_order] + 1,
        "quantity": item_quantity[item_order].astype(np.int64),
        "unit_price": item_price[item_order],
        "created_at": item_created,
        "updated_at": item_created,
    }
    return carts, cart_items
