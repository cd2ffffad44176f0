"""The CRM tables analysts query: names, columns and meaning in one place (docs/crm-tables.md documents them).

In PostgreSQL they live in schema `crm` (configurable); in the demo's SQLite file, unqualified. Each table
holds the latest published run date; every row carries `as_of` (that date) and the `run_id` that wrote it.
The gold table of the same name holds every run date (`as_of` partitions); for trend queries in SQL the
database also keeps `segment_summary_history` and `segment_movement_history` (every published run date) and
`customer_segment_history` (each customer's segments over time, one row per stay: SCD type 2).

The migrations in `core/migrations/` create and upgrade these tables (`crm db-upgrade`); what they build
equals `database_metadata()` (tested), so a change here needs a new migration.
"""

from __future__ import annotations

import functools

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    inspect,
    text,
)
from sqlalchemy.engine import make_url

from core.feature_schema import ACTIVITY_COLUMNS

MONEY = Numeric(18, 2)
#: Column info of personal data: exporting such a column needs an explicit `export.pii` policy.
PII = {"pii": True}

#: Published tables whose every run date is also kept, and the table that keeps them.
RUN_DATE_HISTORY = {
    "segment_summary": "segment_summary_history",
    "segment_movement": "segment_movement_history",
    "campaign_audiences": "campaign_audiences_history",
}
#: Each customer's segment over time (SCD type 2), kept from the published customer_segments.
SEGMENT_HISTORY = "customer_segment_history"
#: Views for analysts, created by the migrations (core/migrations/versions/).
VIEWS = ("customer_overview", "segment_trend")
#: The CRM columns whose name differs from the measure's name in the code and in gold/customer_features
#: (core.feature_schema), per table {measure: CRM column}. The CRM (and export) names are older and users rely
#: on them, so they stay; jobs/score.py renames once, when it writes a CRM table's gold copy. Changing a CRM
#: name instead needs a migration and an export contract version (docs/crm-tables.md, "Column names").
CRM_NAMES: dict[str, dict[str, str]] = {
    "customer_segments": {"purchase_count": "frequency", "total_spent": "monetary"},
    "customer_profile": {"purchase_count": "orders", "review_count": "reviews", "inquiry_count": "inquiries"},
    "segment_summary": {"mean_purchase_count": "mean_frequency", "mean_total_spent": "mean_monetary"},
    "customer_clusters": {"purchase_count": "frequency"},
}


def _run_columns() -> list[Column]:
    return [
        Column("as_of", Date, nullable=False, comment="the run date the row describes (end of that day, UTC)"),
        Column("run_id", String(250), nullable=False, comment="the pipeline run that produced the row"),
    ]


def _segment_summary_columns() -> list[Column]:
    return [
        Column("segment", String(60), primary_key=True, comment="named segment"),
        Column("customers", BigInteger, nullable=False, comment="customers in the segment"),
        Column("customer_share", Float, nullable=False, comment="share of all customers, 0-1"),
        Column("revenue", MONEY, nullable=False, comment="their total spend up to as_of, shop currency"),
        Column("revenue_share", Float, nullable=False, comment="share of all customers' spend, 0-1"),
        Column("mean_recency_days", Float, comment="mean days since the last purchase"),
        Column("mean_frequency", Float, nullable=False, comment="mean purchases"),
        Column("mean_monetary", MONEY, nullable=False, comment="mean spend, shop currency"),
    ]


def _campaign_audience_columns() -> list[Column]:
    return [
        Column("campaign", String(60), primary_key=True, comment="campaign name: its file conf/campaigns/<campaign>.yaml"),
        Column("customer_id", BigInteger, primary_key=True, autoincrement=False, comment="-> shop customers.id"),
        Column(
            "audience_group",
            String(10),
            nullable=False,
            comment="treatment (to contact), control (held out to measure the campaign) or suppressed",
        ),
        Column(
            "suppression_reason",
            String(20),
            comment="why a qualifying customer is not contacted: unsubscribed, no_email, open_inquiry, "
            "contacted_recently, other_campaign or audience_limit; null in treatment and control",
        ),
        Column("audience_rank", Integer, comment="position in the campaign's order_by among those not suppressed"),
        Column("channel", String(10), nullable=False, comment="email, sms, push or any"),
        Column("offer", String(100), comment="the campaign's offer (coupon code, message id); null: none"),
    ]


def _segment_movement_columns() -> list[Column]:
    return [
        Column("from_segment", String(60), comment="segment at the previous run date; null: not a customer then"),
        Column("to_segment", String(60), nullable=False, comment="segment at as_of"),
        Column("customers", BigInteger, nullable=False, comment="customers who moved (or stayed, when equal)"),
        Column("previous_as_of", Date, comment="the previous run date compared with; null on the first run"),
    ]


def crm_metadata(schema: str | None) -> MetaData:
    """The CRM tables, in `schema` (None for SQLite)."""
    metadata = MetaData(schema=schema)
    Table(
        "customer_segments",
        metadata,
        Column("customer_id", BigInteger, primary_key=True, autoincrement=False, comment="-> shop customers.id"),
        Column("recency_days", Integer, comment="days since the last purchase; null without purchases"),
        Column("frequency", BigInteger, nullable=False, comment="purchases (orders) up to as_of"),
        Column("monetary", MONEY, nullable=False, comment="total spent up to as_of, shop currency"),
        Column("r_score", SmallInteger, comment="recency quintile score, 1 (longest ago) to 5 (most recent)"),
        Column("f_score", SmallInteger, comment="frequency quintile score, 1 (fewest) to 5 (most)"),
        Column("m_score", SmallInteger, comment="monetary quintile score, 1 (least) to 5 (most)"),
        Column("rfm_code", String(3), comment="r, f and m scores as one code, e.g. 545"),
        Column("segment", String(60), nullable=False, comment="named segment from conf/segments.yaml"),
        Column("previous_segment", String(60), comment="segment at the previous run date; null for a new customer"),
        Column("changed_at", Date, nullable=False, comment="run date since which the customer is in this segment"),
        Column("cluster_id", Integer, comment="behavioural cluster (customer_clusters); null without purchases"),
        *_run_columns(),
        Index("ix_customer_segments_segment", "segment"),
        comment="one row per customer: RFM scores, segment and cluster as of the latest published run date",
    )
    Table(
        "customer_profile",
        metadata,
        Column("customer_id", BigInteger, primary_key=True, autoincrement=False, comment="-> shop customers.id"),
        Column("email", String(255), comment="e-mail address (PII)", info=PII),
        Column("first_name", String(100), comment="given name (PII)", info=PII),
        Column("last_name", String(100), comment="family name (PII)", info=PII),
        Column("phone", String(40), comment="phone number (PII)", info=PII),
        Column("language", String(8), comment="preferred language"),
        Column("accepts_marketing", Boolean, comment="opted in to marketing messages"),
        Column("address_line1", String(255), comment="default address: street and number (PII)", info=PII),
        Column("city", String(100), comment="default address: city"),
        Column("postal_code", String(20), comment="default address: postal code"),
        Column("country", String(2), comment="default address's country, else the customer's"),
        Column("registered_at", DateTime, comment="when the customer registered (UTC)"),
        Column("first_order_at", DateTime, comment="first purchase (UTC)"),
        Column("last_order_at", DateTime, comment="last purchase (UTC)"),
        Column("orders", BigInteger, nullable=False, comment="purchases up to as_of"),
        Column("total_spent", MONEY, nullable=False, comment="spent on those purchases, shop currency"),
        Column("avg_order_value", MONEY, comment="total_spent / orders; null without purchases"),
        Column("open_cart_value", MONEY, nullable=False, comment="value of the open carts, shop currency"),
        Column("reviews", Integer, nullable=False, comment="product reviews written"),
        Column("avg_rating", Float, comment="mean stars of those reviews"),
        Column("inquiries", Integer, nullable=False, comment="support inquiries opened"),
        Column("open_inquiries", Integer, nullable=False, comment="inquiries not resolved at as_of"),
        Column("segment", String(60), nullable=False, comment="RFM segment (customer_segments)"),
        Column("cluster_id", Integer, comment="behavioural cluster; null without purchases"),
        Column("cluster_description", String(120), comment="the cluster in words"),
        *_run_columns(),
        Index("ix_customer_profile_segment", "segment"),
        Index("ix_customer_profile_email", "email"),
        comment="one row per customer: contact, default address, purchases, carts, reviews, inquiries, segment",
    )
    Table(
        "segment_summary",
        metadata,
        *_segment_summary_columns(),
        *_run_columns(),
        comment="one row per segment: size, revenue and mean R, F and M",
    )
    Table(
        "segment_movement",
        metadata,
        *_segment_movement_columns(),
        *_run_columns(),
        comment="one row per (from, to) pair of segments between the previous run date and as_of",
    )
    Table(
        "customer_clusters",
        metadata,
        Column("cluster_id", Integer, primary_key=True, autoincrement=False, comment="stable across runs"),
        Column("description", String(120), nullable=False, comment="the centroid in words"),
        Column("customers", BigInteger, nullable=False, comment="customers in the cluster"),
        Column("silhouette", Float, nullable=False, comment="silhouette of the chosen k on the fit sample (-1 to 1)"),
        Column("recency_days", Float, nullable=False, comment="centroid: days since the last purchase"),
        Column("frequency", Float, nullable=False, comment="centroid: purchases"),
        Column("avg_order_value", Float, nullable=False, comment="centroid: average order value, shop currency"),
        Column("avg_basket_units", Float, nullable=False, comment="centroid: units per purchase"),
        Column("coupon_order_share", Float, nullable=False, comment="centroid: share of purchases with a coupon"),
        Column("categories_bought", Float, nullable=False, comment="centroid: distinct categories bought"),
        *_run_columns(),
        comment="one row per behavioural cluster: description, size and centroid (in the features' own units)",
    )
    Table(
        "customer_scores",
        metadata,
        Column("customer_id", BigInteger, primary_key=True, autoincrement=False, comment="-> shop customers.id"),
        Column(
            "churn_probability",
            Float,
            comment="probability of no purchase within churn.horizon_days (90) after as_of, calibrated; "
            "null until the shop has the history to train a churn model (2 x churn.horizon_days)",
        ),
        Column("churn_risk", String(6), comment="low, medium or high (churn.medium_risk, churn.high_risk); null as above"),
        Column("churn_reasons", String(1000), comment="up to three features that raise this customer's churn risk most, in words"),
        Column(
            "p_alive",
            Float,
            comment="BG/NBD probability that the customer is still active; this and the value columns are null "
            "while the shop has no repeat buyer to fit the value models on",
        ),
        Column("expected_orders_30d", Float, comment="expected purchase days in the next 30 days"),
        Column("expected_orders_90d", Float, comment="expected purchase days in the next 90 days"),
        Column("expected_orders_365d", Float, comment="expected purchase days in the next 365 days"),
        Column("expected_order_value", MONEY, comment="Gamma-Gamma expected value per purchase day, shop currency"),
        Column("clv_12m", MONEY, comment="expected profit of the next 12 months (clv.margin x spend, discounted), shop currency"),
        Column("clv_12m_low", MONEY, comment="lower end of its interval (clv.interval_level, 80%)"),
        Column("clv_12m_high", MONEY, comment="upper end of that interval"),
        Column("next_order_date", Date, comment="date by which the next purchase is 50% likely; null if not within 2 years"),
        Column("churn_model_version", String(120), comment="MLflow registered churn model, <name>/<version>; null as churn_probability"),
        Column("clv_model_run", String(64), comment="MLflow run holding the night's BG/NBD and Gamma-Gamma fit; null as p_alive"),
        *_run_columns(),
        Index("ix_customer_scores_churn_risk", "churn_risk"),
        comment="one row per customer with a purchase: churn, activity and lifetime value scores as of the run date",
    )
    Table(
        "campaign_audiences",
        metadata,
        *_campaign_audience_columns(),
        *_run_columns(),
        Index("ix_campaign_audiences_group", "campaign", "audience_group"),
        comment="one row per campaign and qualifying customer as of the run date: treatment, control or suppressed with the reason",
    )
    Table(
        "review_insights",
        metadata,
        Column("product_id", BigInteger, primary_key=True, autoincrement=False, comment="-> shop products.id"),
        Column(
            "aspect",
            String(20),
            primary_key=True,
            comment="'all' for the product's reviews as a whole, else an aspect of conf/aspects.yaml "
            "(delivery, quality, price, size_fit, service) and the reviews that mention it",
        ),
        Column("category", String(60), comment="the product's category"),
        Column("reviews", Integer, nullable=False, comment="reviews up to as_of (that mention the aspect)"),
        Column("avg_rating", Float, nullable=False, comment="mean stars of those reviews, 1-5"),
        Column("sentiment_score", Float, nullable=False, comment="mean of P(positive) - P(negative) by the sentiment model, -1 to 1"),
        Column("negative_share", Float, nullable=False, comment="share of those reviews the model reads as negative, 0-1"),
        *_run_columns(),
        comment="one row per reviewed product and aspect: what customers say about it, as of the run date",
    )
    Table(
        "review_alerts",
        metadata,
        Column("review_id", BigInteger, primary_key=True, autoincrement=False, comment="-> shop reviews.id"),
        Column("customer_id", BigInteger, nullable=False, comment="-> shop customers.id"),
        Column("product_id", BigInteger, nullable=False, comment="-> shop products.id"),
        Column("reviewed_at", DateTime, nullable=False, comment="when the review was written (UTC)"),
        Column("rating", SmallInteger, nullable=False, comment="stars, 1-5"),
        Column("sentiment_score", Float, nullable=False, comment="P(positive) - P(negative), -1 to 1"),
        Column("aspects", String(200), comment="aspects the review mentions, comma-separated; null: none"),
        Column("clv_12m", MONEY, nullable=False, comment="the customer's 12-month CLV (customer_scores), shop currency"),
        *_run_columns(),
        Index("ix_review_alerts_customer", "customer_id"),
        comment="one row per negative review of the last insights.alert_days days by a customer in the top "
        "CLV band (insights.alert_clv_quantile): whom to call back first",
    )
    Table(
        "inquiry_triage",
        metadata,
        Column("inquiry_id", BigInteger, primary_key=True, autoincrement=False, comment="-> shop inquiries.id"),
        Column("customer_id", BigInteger, comment="-> shop customers.id"),
        Column("channel", String(20), comment="email, chat or phone"),
        Column("status", String(20), comment="open, pending or resolved"),
        Column(
            "topic",
            String(20),
            nullable=False,
            comment="shipping, return_refund, product_question, payment or complaint (the triage model)",
        ),
        Column("topic_probability", Float, nullable=False, comment="the model's probability of that topic, 0-1"),
        Column("urgency", String(10), nullable=False, comment="high, normal or low"),
        Column("created_at", DateTime, comment="when the inquiry was opened (UTC)"),
        Column("resolved_at", DateTime, comment="when it was resolved (UTC); null while open"),
        Column("resolution_hours", Float, comment="hours from opened to resolved; null while open"),
        Column("age_hours", Float, comment="hours open at the end of as_of; null once resolved"),
        *_run_columns(),
        Index("ix_inquiry_triage_open", "status", "urgency"),
        comment="one row per support inquiry up to as_of: topic, urgency and resolution time",
    )
    Table(
        "customer_satisfaction",
        metadata,
        Column("customer_id", BigInteger, primary_key=True, autoincrement=False, comment="-> shop customers.id"),
        Column(
            "satisfaction_score",
            Float,
            nullable=False,
            comment="-1 (unhappy) to 1 (happy): review sentiment and inquiry signals combined (README)",
        ),
        Column("review_sentiment", Float, comment="mean sentiment_score of the customer's reviews; null: none"),
        Column("reviews", Integer, nullable=False, comment="reviews written up to as_of"),
        Column("inquiries", Integer, nullable=False, comment="inquiries opened up to as_of"),
        Column("complaints", Integer, nullable=False, comment="of those, triaged as complaint"),
        Column("open_inquiries", Integer, nullable=False, comment="inquiries not resolved at as_of"),
        *_run_columns(),
        comment="one row per customer with a review or an inquiry: how satisfied they seem, as of the run date",
    )
    Table(
        "coupon_offers",
        metadata,
        Column("customer_id", BigInteger, primary_key=True, autoincrement=False, comment="-> shop customers.id"),
        Column("coupon", String(60), nullable=False, comment="the past coupon campaign whose terms to offer"),
        Column(
            "expected_uplift",
            Float,
            nullable=False,
            comment="increase in P(order in the coupon window) the coupon is expected to cause, 0-1",
        ),
        Column(
            "expected_incremental_revenue",
            MONEY,
            nullable=False,
            comment="revenue the coupon is expected to add, net of the discount, shop currency",
        ),
        Column("expected_cost", MONEY, nullable=False, comment="expected discount given, shop currency"),
        Column("uplift_model_run", String(64), nullable=False, comment="MLflow run of the uplift models"),
        *_run_columns(),
        comment="one row per customer offered a coupon: the coupon with the best expected incremental revenue, "
        "within the night's budget (uplift.budget)",
    )
    Table(
        "category_propensity",
        metadata,
        Column("customer_id", BigInteger, primary_key=True, autoincrement=False, comment="-> shop customers.id"),
        Column("rank", SmallInteger, primary_key=True, autoincrement=False, comment="1 = most likely category"),
        Column("category", String(60), nullable=False, comment="product category"),
        Column(
            "probability",
            Float,
            nullable=False,
            comment="probability of buying from the category within the next recommend.holdout_days days, 0-1",
        ),
        *_run_columns(),
        comment="one row per customer and likely category (recommend.top_categories per customer): what they need next",
    )
    Table(
        "recommendations",
        metadata,
        Column("customer_id", BigInteger, primary_key=True, autoincrement=False, comment="-> shop customers.id"),
        Column("rank", SmallInteger, primary_key=True, autoincrement=False, comment="1 = best"),
        Column("product_id", BigInteger, nullable=False, comment="-> shop products.id"),
        Column(
            "score", Float, nullable=False, comment="ALS preference score (reason similar_customers) or popularity share (reason popular)"
        ),
        Column(
            "reason",
            String(20),
            nullable=False,
            comment="similar_customers (ALS on what customers bought) or popular (no purchase history yet)",
        ),
        *_run_columns(),
        comment="one row per customer and recommended product (recommend.top_n per customer)",
    )
    Table(
        "customer_activity",
        metadata,
        Column("customer_id", BigInteger, primary_key=True, autoincrement=False, comment="-> shop customers.id"),
        *_activity_columns(),
        *_run_columns(),
        Index("ix_customer_activity_abandoned", "browse_abandoned_products"),
        comment="one row per customer: browsing activity (views, visits, searches, carts) as of the run date, "
        "from the browsing events; counts 0 without events",
    )
    return metadata


def _activity_columns() -> list[Column]:
    """customer_activity's columns from `core.feature_schema.ACTIVITY_COLUMNS` (the one place they are defined)."""
    kinds = {
        "bigint": (BigInteger, False),
        "int": (Integer, True),
        "double": (Float, True),
        "timestamp": (DateTime, True),
        "string": (String(400), True),
    }
    columns = []
    for name, kind, meaning in ACTIVITY_COLUMNS:
        sql_type, nullable = kinds[kind]
        columns.append(Column(name, sql_type, nullable=nullable, comment=meaning))
    return columns


def database_metadata(schema: str | None) -> MetaData:
    """Every table of the CRM schema: the published tables (`crm_metadata`), their history and the run log.
    The migrations build exactly this."""
    metadata = crm_metadata(schema)
    Table(
        "segment_summary_history",
        metadata,
        Column("as_of", Date, primary_key=True, comment="the run date the row describes (end of that day, UTC)"),
        *_segment_summary_columns(),
        Column("run_id", String(250), nullable=False, comment="the pipeline run that produced the row"),
        comment="segment_summary of every published run date (a rerun or backfill replaces its date's rows)",
    )
    Table(
        "segment_movement_history",
        metadata,
        *_segment_movement_columns(),
        *_run_columns(),
        Index("ix_segment_movement_history_as_of", "as_of"),
        comment="segment_movement of every published run date (a rerun or backfill replaces its date's rows)",
    )
    Table(
        "campaign_audiences_history",
        metadata,
        Column("as_of", Date, primary_key=True, comment="the run date the row describes (end of that day, UTC)"),
        *_campaign_audience_columns(),
        Column("run_id", String(250), nullable=False, comment="the pipeline run that produced the row"),
        comment="campaign_audiences of every published run date: who was contacted or held out, when "
        "(a rerun or backfill replaces its date's rows)",
    )
    Table(
        SEGMENT_HISTORY,
        metadata,
        Column("customer_id", BigInteger, primary_key=True, autoincrement=False, comment="-> shop customers.id"),
        Column("valid_from", Date, primary_key=True, comment="first run date the customer was in the segment"),
        Column("valid_to", Date, comment="run date the customer left it (excluded); null: still in it"),
        Column("segment", String(60), nullable=False, comment="named segment"),
        Column("run_id", String(250), nullable=False, comment="the pipeline run that opened the row"),
        Index(f"ix_{SEGMENT_HISTORY}_segment", "segment", "valid_from"),
        comment="each customer's segments over time: one row per stay in a segment (SCD type 2), kept from "
        "every newest published run; rows with valid_to null are the current segments",
    )
    run_log_table(schema, metadata)
    return metadata


def pii_columns(table: str) -> list[str]:
    """The columns of a CRM table that hold personal data (e-mail, names, phone, street)."""
    return [column.name for column in crm_metadata(None).tables[table].columns if column.info.get("pii")]


def columns_of(table: str) -> list[str]:
    """A CRM table's columns in order: the gold table of the same name and its export file have exactly these."""
    return list(_column_names()[table])


@functools.cache
def _column_names() -> dict[str, tuple[str, ...]]:
    """Every CRM table's column names, built once per process: making the metadata takes ~30 ms, and the gold
    gate's suites ask for a table's columns a dozen times."""
    return {name: tuple(column.name for column in table.columns) for name, table in crm_metadata(None).tables.items()}


def schema_of(db_url: str, schema_name: str) -> str | None:
    """The schema the CRM tables live in: `crm.schema_name`, or none for SQLite (which has no schemas).
    (`core.db.kind` rejects an unsupported URL when the engine is made; a schema module imports no platform code.)"""
    return None if make_url(db_url).get_backend_name() == "sqlite" else schema_name


def crm_table(settings, name: str) -> Table:
    """The CRM table `name` in the configured database's schema (`settings`: core.config.Settings)."""
    metadata = crm_metadata(schema_of(settings.crm.db_url, settings.crm.schema_name))
    return table_in(metadata, name)


def table_in(metadata: MetaData, name: str) -> Table:
    """Table `name` of `metadata`, whose tables are keyed `<schema>.<name>` when it has a schema."""
    return metadata.tables[f"{metadata.schema}.{name}" if metadata.schema else name]


def ensure_schema(connection, schema: str | None) -> None:
    """Create `schema` when it is missing (nothing for SQLite's None). Only then: PostgreSQL checks the right to
    create schemas (CREATE on the database) before it sees that one exists, and the writer role of
    `crm db-roles` has no such right."""
    if schema is not None and schema not in inspect(connection).get_schema_names():
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))


#: The run log (`core/runlog.py`): one row per task attempt.
RUN_LOG_TABLE = "pipeline_runs"


def run_log_table(schema: str | None, metadata: MetaData | None = None) -> Table:
    """The `pipeline_runs` table in `schema` (none for SQLite), in `metadata` when given."""
    return Table(
        RUN_LOG_TABLE,
        metadata if metadata is not None else MetaData(schema=schema),
        Column("run_id", String(250), primary_key=True, comment="Airflow run id (crm run prints it)"),
        Column("stage", String(100), primary_key=True, comment="task id: extract, validate_bronze, clean, ..."),
        Column("try_number", Integer, primary_key=True, autoincrement=False, comment="Airflow's attempt number, from 1"),
        Column("dag_id", String(250), nullable=False, comment="crm_nightly or crm_training"),
        Column("run_date", Date, nullable=False, comment="the business date the run processes"),
        Column("state", String(10), nullable=False, comment="running, success or failed"),
        Column("started_at", DateTime, nullable=False, comment="UTC"),
        Column("finished_at", DateTime, comment="UTC; null while running"),
        Column("seconds", Float, comment="wall time of the job"),
        Column("summary", Text, comment="the job's result as JSON: rows per table, quality outcome, scores"),
        Column("error", Text, comment="why it failed (first lines); the task log has the traceback"),
        Index("ix_pipeline_runs_started_at", "started_at"),
        comment="one row per task attempt of every pipeline run: timing, outcome and what it did",
    )
