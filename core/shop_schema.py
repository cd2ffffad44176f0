"""The canonical shop model: the tables and columns every source is read as.

One SQLAlchemy `MetaData` describes the shop database that `crm generate-shop` writes and that `extract`
reads. The same definition gives the typed Spark schema of each silver table, so the shop, the lake and
the docs cannot drift apart. Foreign keys are documented, not enforced: real shops have orphans, and the
pipeline must see them (they go to quarantine) rather than the database refusing them at write time.
Money is `NUMERIC(12, 2)` in the shop's currency; timestamps are UTC without a zone.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Date, DateTime, Integer, MetaData, Numeric, String, Table, Text

metadata = MetaData()

MONEY = Numeric(12, 2)


def _table(name: str, comment: str, *columns: Column) -> Table:
    """A canonical table: integer key `id`, the given columns, then `created_at` and `updated_at`."""
    return Table(
        name,
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=False, comment="surrogate key"),
        *columns,
        Column("created_at", DateTime, nullable=False, comment="when the row was created (UTC)"),
        Column("updated_at", DateTime, nullable=False, comment="last change of the row (UTC)"),
        comment=comment,
    )


customers = _table(
    "customers",
    "one row per registered customer",
    Column("email", String(255), comment="login e-mail address (PII)"),
    Column("first_name", String(100), comment="given name (PII)"),
    Column("last_name", String(100), comment="family name (PII)"),
    Column("phone", String(40), comment="phone number (PII)"),
    Column("language", String(8), comment="preferred language: en or zh"),
    Column("country", String(2), comment="ISO 3166-1 alpha-2 country code"),
    Column("accepts_marketing", Boolean, comment="opted in to marketing messages"),
)

addresses = _table(
    "addresses",
    "one row per customer address",
    Column("customer_id", BigInteger, comment="-> customers.id"),
    Column("line1", String(255), comment="street and number (PII)"),
    Column("city", String(100)),
    Column("postal_code", String(20)),
    Column("country", String(2), comment="ISO 3166-1 alpha-2 country code"),
    Column("is_default", Boolean, comment="the customer's default shipping address"),
)

products = _table(
    "products",
    "one row per product in the catalogue",
    Column("sku", String(40), comment="stock keeping unit"),
    Column("name", String(255)),
    Column("category", String(60)),
    Column("price", MONEY, comment="list price, shop currency"),
)

orders = _table(
    "orders",
    "one row per order",
    Column("customer_id", BigInteger, comment="-> customers.id; null for a guest order (no customer account)"),
    Column("status", String(20), comment="placed, paid, shipped, delivered, cancelled or returned"),
    Column("total_amount", MONEY, comment="order total after discounts, shop currency; negative for a credit note (a refund)"),
    Column("currency", String(3), comment="ISO 4217 code"),
    Column("coupon_id", BigInteger, comment="-> coupons.id when a coupon was used"),
)

order_items = _table(
    "order_items",
    "one row per order line",
    Column("order_id", BigInteger, comment="-> orders.id"),
    Column("product_id", BigInteger, comment="-> products.id"),
    Column("quantity", Integer, comment="units ordered; negative for units returned (a credit note's lines)"),
    Column("unit_price", MONEY, comment="price per unit paid, shop currency"),
)

carts = _table(
    "carts",
    "one row per shopping cart",
    Column("customer_id", BigInteger, comment="-> customers.id"),
    Column("status", String(20), comment="open, abandoned or converted"),
)

cart_items = _table(
    "cart_items",
    "one row per product in a cart",
    Column("cart_id", BigInteger, comment="-> carts.id"),
    Column("product_id", BigInteger, comment="-> products.id"),
    Column("quantity", Integer, comment="units in the cart"),
    Column("unit_price", MONEY, comment="price per unit when added, shop currency"),
)

reviews = _table(
    "reviews",
    "one row per product review",
    Column("customer_id", BigInteger, comment="-> customers.id"),
    Column("product_id", BigInteger, comment="-> products.id"),
    Column("rating", Integer, comment="stars, 1 to 5"),
    Column("title", String(255)),
    Column("body", Text),
    Column("language", String(8), comment="en or zh"),
)

inquiries = _table(
    "inquiries",
    "one row per customer support inquiry",
    Column("customer_id", BigInteger, comment="-> customers.id"),
    Column("channel", String(20), comment="email, chat or phone"),
    Column("subject", String(255)),
    Column("body", Text),
    Column("status", String(20), comment="open, pending or resolved"),
    Column("resolved_at", DateTime, comment="when the inquiry was resolved (UTC)"),
    Column(
        "topic",
        String(20),
        comment="the topic support filed it under: shipping, return_refund, product_question, payment or complaint; "
        "null if not filed (many shops have no such column: map it to null)",
    ),
)

coupons = _table(
    "coupons",
    "one row per coupon code",
    Column("code", String(40)),
    Column("campaign", String(60), comment="the campaign that issued the coupon"),
    Column("customer_id", BigInteger, comment="-> customers.id for a personal coupon, else null"),
    Column("discount_type", String(10), comment="percent or fixed"),
    Column("discount_value", MONEY, comment="percent points, or an amount in shop currency"),
    Column("valid_from", Date),
    Column("valid_to", Date),
)

coupon_redemptions = _table(
    "coupon_redemptions",
    "one row per use of a coupon in an order",
    Column("coupon_id", BigInteger, comment="-> coupons.id"),
    Column("customer_id", BigInteger, comment="-> customers.id"),
    Column("order_id", BigInteger, comment="-> orders.id"),
)

#: Tables in load order: parents before children.
SHOP_TABLES: tuple[str, ...] = (
    "customers",
    "addresses",
    "products",
    "coupons",
    "orders",
    "order_items",
    "carts",
    "cart_items",
    "reviews",
    "inquiries",
    "coupon_redemptions",
)

#: Foreign keys checked for orphans by `clean`: table -> ((column, parent table), ...).
FOREIGN_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "addresses": (("customer_id", "customers"),),
    "orders": (("customer_id", "customers"),),
    "order_items": (("order_id", "orders"), ("product_id", "products")),
    "carts": (("customer_id", "customers"),),
    "cart_items": (("cart_id", "carts"), ("product_id", "products")),
    "reviews": (("customer_id", "customers"), ("product_id", "products")),
    "inquiries": (("customer_id", "customers"),),
    "coupon_redemptions": (("coupon_id", "coupons"), ("customer_id", "customers"), ("order_id", "orders")),
}

#: References that may be null: the row then has no parent, and that is no error. A guest order (checkout
#: without an account) belongs to no customer: it counts for products (popularity, recommendations), for no
#: customer's figures.
OPTIONAL_REFERENCES: dict[str, tuple[str, ...]] = {"orders": ("customer_id",)}

#: Columns many shops do not have: a shop without one whose mapping leaves it under its canonical name
#: reads it as null (extract says so), as if the mapping set it to null. Table -> columns.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {"inquiries": ("topic",)}

assert set(SHOP_TABLES) == set(metadata.tables), "SHOP_TABLES must list every canonical table"

#: Browsing and click events: append-only and keyed by a text `event_id`, so they are not a canonical table
#: (no integer id, no updated_at) and have their own metadata. They come from this table in the shop
#: database or from files in the landing folder (`jobs/events.py`).
events_metadata = MetaData()

EVENT_TYPES: tuple[str, ...] = ("view", "click", "search", "add_to_cart", "remove_from_cart", "checkout")
EVENT_CHANNELS: tuple[str, ...] = ("web", "app", "mini-program", "social")

events = Table(
    "events",
    events_metadata,
    Column("event_id", String(64), primary_key=True, comment="unique id of the event, set by the tracker"),
    Column("customer_id", BigInteger, comment="-> customers.id; null while the visitor is not logged in"),
    Column("session_id", String(64), nullable=False, comment="the tracker's session (device and browser)"),
    Column("event_type", String(20), nullable=False, comment=", ".join(EVENT_TYPES)),
    Column("product_id", BigInteger, comment="-> products.id, for product events"),
    Column("category", String(60), comment="product category viewed or searched"),
    Column("channel", String(20), comment=", ".join(EVENT_CHANNELS)),
    Column("occurred_at", DateTime, nullable=False, comment="when it happened (UTC)"),
    Column("properties", Text, comment="JSON object: page, referrer, search query, ..."),
    comment="one row per browsing or click event",
)
