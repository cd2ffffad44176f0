"""The feature tables' columns: every column of `gold/customer_features` (the feature registry), what it means, its
type and unit; and the columns of `gold/customer_activity` (`ACTIVITY_COLUMNS`), which the CRM table of that name
also has.

The feature table in docs/crm-tables.md is generated from this list (`python -m cli.docs`), and a test checks that
`features.customer.customer_features` writes exactly these columns with these types, so the two cannot
drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Products listed in `browse_abandoned_product_ids`, most recent interaction first.
ABANDONED_IDS_LISTED = 5
#: The columns of gold/customer_activity after `as_of` and `customer_id`: (name, Spark type, meaning).
ACTIVITY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("views_7d", "bigint", "product views in the last 7 days"),
    ("views_30d", "bigint", "product views in the last 30 days"),
    ("visits_7d", "bigint", "visits (sessions split after events.session_gap_minutes idle) in the last 7 days"),
    ("visits_30d", "bigint", "visits in the last 30 days"),
    ("visits_previous_30d", "bigint", "visits in the 30 days before those"),
    ("searches_30d", "bigint", "searches in the last 30 days"),
    ("cart_adds_30d", "bigint", "products put in the cart in the last 30 days"),
    ("last_visit_at", "timestamp", "time of the latest event (UTC); null without events"),
    ("days_since_last_visit", "int", "days from the last visit to as_of; null without events"),
    (
        "view_to_purchase_30d",
        "double",
        "share of the distinct products viewed in the last 30 days that the customer bought in those 30 days; null without views",
    ),
    (
        "top_categories",
        "string",
        "the categories viewed most in the last 30 days, most first, comma-separated (events.top_categories of them)",
    ),
    (
        "browse_abandoned_products",
        "bigint",
        "distinct products viewed or put in the cart in the last events.browse_abandonment_days days and not bought since",
    ),
    (
        "browse_abandoned_product_ids",
        "string",
        f"up to {ABANDONED_IDS_LISTED} of those products' ids, the most recently viewed first, comma-separated",
    ),
    ("cart_abandoned_products", "bigint", "of those, the products that were put in the cart (and not bought since)"),
)


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    type: str  # Spark SQL type, as `DataFrame.dtypes` names it
    unit: str = ""
    pii: bool = False
    label: str = ""  # a few plain words for reason texts ("days since the last purchase"); default: the name

    @property
    def words(self) -> str:
        return self.label or self.name.replace("_", " ")


FEATURES: tuple[Feature, ...] = (
    Feature("as_of", "the date the features describe: everything up to the end of that day (UTC)", "date"),
    Feature("customer_id", "the shop's customer id (customers.id)", "bigint"),
    Feature(
        "recency_days", "days from the last purchase to as_of; null without purchases", "int", "days", label="days since the last purchase"
    ),
    Feature(
        "purchase_count",
        "purchases: orders not cancelled or returned by as_of (credit notes, negative totals, are none)",
        "bigint",
        "orders",
        label="purchases so far",
    ),
    Feature(
        "total_spent",
        "total spent on those purchases (order totals), net of credit notes (rfm.monetary_value: net; may be negative) or gross",
        "decimal(18,2)",
        "currency",
        label="total spent",
    ),
    Feature(
        "avg_order_value", "total_spent / purchase_count; null without purchases", "decimal(18,2)", "currency", label="average order value"
    ),
    Feature("first_order_at", "time of the first purchase", "timestamp", "UTC"),
    Feature("last_order_at", "time of the last purchase", "timestamp", "UTC"),
    Feature("tenure_days", "days from registration to as_of", "int", "days", label="days since registration"),
    Feature(
        "mean_days_between_orders",
        "mean time between consecutive purchases; null with fewer than 2",
        "double",
        "days",
        label="average days between purchases",
    ),
    Feature(
        "std_days_between_orders",
        "sample standard deviation of that time; null with fewer than 3 purchases",
        "double",
        "days",
        label="irregularity of purchases (std of days between)",
    ),
    Feature(
        "spend_last_90d",
        "spent in the 90 days up to as_of (net or gross, as total_spent)",
        "decimal(18,2)",
        "currency",
        label="spent in the last 90 days",
    ),
    Feature("spend_previous_90d", "spent in the 90 days before those", "decimal(18,2)", "currency", label="spent in the 90 days before"),
    Feature(
        "spend_trend",
        "spend_last_90d / spend_previous_90d; null when the earlier period has no spend",
        "double",
        "ratio",
        label="spend trend (last 90 days / the 90 before)",
    ),
    Feature("avg_basket_units", "units per purchase (order lines' quantities)", "double", "units", label="units per order"),
    Feature("favourite_category", "product category with the most spend (ties: first by name)", "string"),
    Feature("categories_bought", "distinct product categories bought", "int", "categories", label="categories bought"),
    Feature(
        "coupon_order_share",
        "share of purchases that used a coupon; null without purchases",
        "double",
        "ratio",
        label="share of orders with a coupon",
    ),
    Feature("open_cart_value", "value of the carts open at as_of", "decimal(18,2)", "currency", label="value of open carts"),
    Feature("abandoned_cart_value", "value of the carts abandoned by as_of", "decimal(18,2)", "currency", label="value of abandoned carts"),
    Feature("cancelled_orders", "orders cancelled by as_of", "int", "orders", label="cancelled orders"),
    Feature("returned_orders", "orders returned by as_of", "int", "orders", label="returned orders"),
    Feature("review_count", "product reviews written", "int", "reviews", label="reviews written"),
    Feature(
        "avg_rating", "mean star rating of those reviews; null without reviews", "double", "stars (1-5)", label="average review rating"
    ),
    Feature("inquiry_count", "support inquiries opened", "int", "inquiries", label="support inquiries"),
    Feature("open_inquiries", "inquiries not resolved at as_of", "int", "inquiries", label="open support inquiries"),
    Feature(
        "satisfaction_score",
        "how satisfied the customer seems, -1 to 1: the mean of (avg_rating - 3) / 2 and minus the share of "
        "their inquiries still open, of the parts they have; null with neither reviews nor inquiries "
        "(the star-rating form of customer_satisfaction, which reads the texts)",
        "double",
        "score (-1 to 1)",
        label="satisfaction",
    ),
    Feature(
        "views_30d",
        "product views in the last 30 days (browsing events; 0 without events)",
        "bigint",
        "views",
        label="product views in the last 30 days",
    ),
    Feature(
        "visits_30d",
        "visits in the last 30 days: sessions split after events.session_gap_minutes idle",
        "bigint",
        "visits",
        label="visits in the last 30 days",
    ),
    Feature("visits_previous_30d", "visits in the 30 days before those", "bigint", "visits", label="visits in the 30 days before"),
    Feature(
        "cart_adds_30d",
        "products put in the cart in the last 30 days",
        "bigint",
        "events",
        label="products put in the cart in the last 30 days",
    ),
    Feature(
        "days_since_last_visit",
        "days from the latest browsing event to as_of; null without events",
        "int",
        "days",
        label="days since the last visit",
    ),
)

NAMES: tuple[str, ...] = tuple(feature.name for feature in FEATURES)
#: Churn classifier inputs that are no column of gold/customer_features: BG/NBD (Fader, Hardie & Lee 2005) fitted
#: on the purchase history at the same as_of as the other features (`models.churn.with_purchase_model_inputs`),
#: so they are point in time too. `churn.features` may list them beside the gold features.
PURCHASE_MODEL_FEATURES: tuple[Feature, ...] = (
    Feature(
        "bgnbd_no_purchase_probability",
        "BG/NBD's probability of no purchase within churn.horizon_days after as_of",
        "double",
        "probability",
        label="BG/NBD probability of no purchase in the horizon",
    ),
    Feature(
        "bgnbd_p_alive",
        "BG/NBD's probability that the customer is still active at as_of",
        "double",
        "probability",
        label="BG/NBD probability of being active",
    ),
)
#: Former feature names and the feature each is now. The CRM table customer_segments and the campaign
#: customer view still offer them (users write them); churn models trained under them keep working.
RENAMED: dict[str, str] = {"frequency": "purchase_count", "monetary": "total_spent"}


def markdown() -> str:
    """The feature table of docs/crm-tables.md."""
    lines = ["| feature | meaning | type | unit | PII |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| `{f.name}` | {f.description} | {f.type} | {f.unit} | {'yes' if f.pii else 'no'} |" for f in FEATURES]
    return "\n".join(lines)
