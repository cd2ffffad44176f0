"""Baseline: the CRM tables and the run log as shop-crm created them before it had migrations.

A database that such a version wrote has these tables but no version table. A table whose columns (names
and nullability) are these is adopted with its rows; a published table that differs (an even older layout)
is dropped and created anew: it holds only the latest run, which the next publish writes again. A
`pipeline_runs` that differs is an error, since it holds the only copy of the run history.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

#: table -> (comment, its columns and key). Written out in full: what this revision creates never changes.
TABLES = {
    "customer_clusters": (
        "one row per behavioural cluster: description, size and centroid (in the features' own units)",
        lambda: [
            sa.Column("cluster_id", sa.Integer(), autoincrement=False, nullable=False, comment="stable across runs"),
            sa.Column("description", sa.String(length=120), nullable=False, comment="the centroid in words"),
            sa.Column("customers", sa.BigInteger(), nullable=False, comment="customers in the cluster"),
            sa.Column("silhouette", sa.Float(), nullable=False, comment="silhouette of the chosen k on the fit sample (-1 to 1)"),
            sa.Column("recency_days", sa.Float(), nullable=False, comment="centroid: days since the last purchase"),
            sa.Column("frequency", sa.Float(), nullable=False, comment="centroid: purchases"),
            sa.Column("avg_order_value", sa.Float(), nullable=False, comment="centroid: average order value, shop currency"),
            sa.Column("avg_basket_units", sa.Float(), nullable=False, comment="centroid: units per purchase"),
            sa.Column("coupon_order_share", sa.Float(), nullable=False, comment="centroid: share of purchases with a coupon"),
            sa.Column("categories_bought", sa.Float(), nullable=False, comment="centroid: distinct categories bought"),
            sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
            sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
            sa.PrimaryKeyConstraint("cluster_id"),
        ],
    ),
    "customer_profile": (
        "one row per customer: contact, default address, purchases, carts, reviews, inquiries, segment",
        lambda: [
            sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False, comment="-> shop customers.id"),
            sa.Column("email", sa.String(length=255), nullable=True, comment="e-mail address (PII)"),
            sa.Column("first_name", sa.String(length=100), nullable=True, comment="given name (PII)"),
            sa.Column("last_name", sa.String(length=100), nullable=True, comment="family name (PII)"),
            sa.Column("phone", sa.String(length=40), nullable=True, comment="phone number (PII)"),
            sa.Column("language", sa.String(length=8), nullable=True, comment="preferred language"),
            sa.Column("accepts_marketing", sa.Boolean(), nullable=True, comment="opted in to marketing messages"),
            sa.Column("address_line1", sa.String(length=255), nullable=True, comment="default address: street and number (PII)"),
            sa.Column("city", sa.String(length=100), nullable=True, comment="default address: city"),
            sa.Column("postal_code", sa.String(length=20), nullable=True, comment="default address: postal code"),
            sa.Column("country", sa.String(length=2), nullable=True, comment="default address's country, else the customer's"),
            sa.Column("registered_at", sa.DateTime(), nullable=True, comment="when the customer registered (UTC)"),
            sa.Column("first_order_at", sa.DateTime(), nullable=True, comment="first purchase (UTC)"),
            sa.Column("last_order_at", sa.DateTime(), nullable=True, comment="last purchase (UTC)"),
            sa.Column("orders", sa.BigInteger(), nullable=False, comment="purchases up to as_of"),
            sa.Column("total_spent", sa.Numeric(precision=18, scale=2), nullable=False, comment="spent on those purchases, shop currency"),
            sa.Column(
                "avg_order_value", sa.Numeric(precision=18, scale=2), nullable=True, comment="total_spent / orders; null without purchases"
            ),
            sa.Column(
                "open_cart_value", sa.Numeric(precision=18, scale=2), nullable=False, comment="value of the open carts, shop currency"
            ),
            sa.Column("reviews", sa.Integer(), nullable=False, comment="product reviews written"),
            sa.Column("avg_rating", sa.Float(), nullable=True, comment="mean stars of those reviews"),
            sa.Column("inquiries", sa.Integer(), nullable=False, comment="support inquiries opened"),
            sa.Column("open_inquiries", sa.Integer(), nullable=False, comment="inquiries not resolved at as_of"),
            sa.Column("segment", sa.String(length=60), nullable=False, comment="RFM segment (customer_segments)"),
            sa.Column("cluster_id", sa.Integer(), nullable=True, comment="behavioural cluster; null without purchases"),
            sa.Column("cluster_description", sa.String(length=120), nullable=True, comment="the cluster in words"),
            sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
            sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
            sa.PrimaryKeyConstraint("customer_id"),
        ],
    ),
    "customer_scores": (
        "one row per customer with a purchase: churn, activity and lifetime value scores as of the run date",
        lambda: [
            sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False, comment="-> shop customers.id"),
            sa.Column(
                "churn_probability",
                sa.Float(),
                nullable=True,
                comment="probability of no purchase within churn.horizon_days (90) after as_of, calibrated; null until the shop has the history to train a churn model (2 x churn.horizon_days)",
            ),
            sa.Column(
                "churn_risk",
                sa.String(length=6),
                nullable=True,
                comment="low, medium or high (churn.medium_risk, churn.high_risk); null as above",
            ),
            sa.Column(
                "churn_reasons",
                sa.String(length=1000),
                nullable=True,
                comment="up to three features that raise this customer's churn risk most, in words",
            ),
            sa.Column(
                "p_alive",
                sa.Float(),
                nullable=True,
                comment="BG/NBD probability that the customer is still active; this and the value columns are null while the shop has no repeat buyer to fit the value models on",
            ),
            sa.Column("expected_orders_30d", sa.Float(), nullable=True, comment="expected purchase days in the next 30 days"),
            sa.Column("expected_orders_90d", sa.Float(), nullable=True, comment="expected purchase days in the next 90 days"),
            sa.Column("expected_orders_365d", sa.Float(), nullable=True, comment="expected purchase days in the next 365 days"),
            sa.Column(
                "expected_order_value",
                sa.Numeric(precision=18, scale=2),
                nullable=True,
                comment="Gamma-Gamma expected value per purchase day, shop currency",
            ),
            sa.Column(
                "clv_12m",
                sa.Numeric(precision=18, scale=2),
                nullable=True,
                comment="expected profit of the next 12 months (clv.margin x spend, discounted), shop currency",
            ),
            sa.Column(
                "clv_12m_low",
                sa.Numeric(precision=18, scale=2),
                nullable=True,
                comment="lower end of its interval (clv.interval_level, 80%)",
            ),
            sa.Column("clv_12m_high", sa.Numeric(precision=18, scale=2), nullable=True, comment="upper end of that interval"),
            sa.Column(
                "next_order_date",
                sa.Date(),
                nullable=True,
                comment="date by which the next purchase is 50% likely; null if not within 2 years",
            ),
            sa.Column(
                "churn_model_version",
                sa.String(length=120),
                nullable=True,
                comment="MLflow registered churn model, <name>/<version>; null as churn_probability",
            ),
            sa.Column(
                "clv_model_run",
                sa.String(length=64),
                nullable=True,
                comment="MLflow run holding the night's BG/NBD and Gamma-Gamma fit; null as p_alive",
            ),
            sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
            sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
            sa.PrimaryKeyConstraint("customer_id"),
        ],
    ),
    "customer_segments": (
        "one row per customer: RFM scores, segment and cluster as of the latest published run date",
        lambda: [
            sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False, comment="-> shop customers.id"),
            sa.Column("recency_days", sa.Integer(), nullable=True, comment="days since the last purchase; null without purchases"),
            sa.Column("frequency", sa.BigInteger(), nullable=False, comment="purchases (orders) up to as_of"),
            sa.Column("monetary", sa.Numeric(precision=18, scale=2), nullable=False, comment="total spent up to as_of, shop currency"),
            sa.Column("r_score", sa.SmallInteger(), nullable=True, comment="recency quintile score, 1 (longest ago) to 5 (most recent)"),
            sa.Column("f_score", sa.SmallInteger(), nullable=True, comment="frequency quintile score, 1 (fewest) to 5 (most)"),
            sa.Column("m_score", sa.SmallInteger(), nullable=True, comment="monetary quintile score, 1 (least) to 5 (most)"),
            sa.Column("rfm_code", sa.String(length=3), nullable=True, comment="r, f and m scores as one code, e.g. 545"),
            sa.Column("segment", sa.String(length=60), nullable=False, comment="named segment from conf/segments.yaml"),
            sa.Column(
                "previous_segment", sa.String(length=60), nullable=True, comment="segment at the previous run date; null for a new customer"
            ),
            sa.Column("changed_at", sa.Date(), nullable=False, comment="run date since which the customer is in this segment"),
            sa.Column("cluster_id", sa.Integer(), nullable=True, comment="behavioural cluster (customer_clusters); null without purchases"),
            sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
            sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
            sa.PrimaryKeyConstraint("customer_id"),
        ],
    ),
    "pipeline_runs": (
        "one row per task attempt of every pipeline run: timing, outcome and what it did",
        lambda: [
            sa.Column("run_id", sa.String(length=250), nullable=False, comment="Airflow run id (crm run prints it)"),
            sa.Column("stage", sa.String(length=100), nullable=False, comment="task id: extract, validate_bronze, clean, ..."),
            sa.Column("try_number", sa.Integer(), autoincrement=False, nullable=False, comment="Airflow's attempt number, from 1"),
            sa.Column("dag_id", sa.String(length=250), nullable=False, comment="crm_nightly or crm_training"),
            sa.Column("run_date", sa.Date(), nullable=False, comment="the business date the run processes"),
            sa.Column("state", sa.String(length=10), nullable=False, comment="running, success or failed"),
            sa.Column("started_at", sa.DateTime(), nullable=False, comment="UTC"),
            sa.Column("finished_at", sa.DateTime(), nullable=True, comment="UTC; null while running"),
            sa.Column("seconds", sa.Float(), nullable=True, comment="wall time of the job"),
            sa.Column("summary", sa.Text(), nullable=True, comment="the job's result as JSON: rows per table, quality outcome, scores"),
            sa.Column("error", sa.Text(), nullable=True, comment="why it failed (first lines); the task log has the traceback"),
            sa.PrimaryKeyConstraint("run_id", "stage", "try_number"),
        ],
    ),
    "segment_movement": (
        "one row per (from, to) pair of segments between the previous run date and as_of",
        lambda: [
            sa.Column(
                "from_segment", sa.String(length=60), nullable=True, comment="segment at the previous run date; null: not a customer then"
            ),
            sa.Column("to_segment", sa.String(length=60), nullable=False, comment="segment at as_of"),
            sa.Column("customers", sa.BigInteger(), nullable=False, comment="customers who moved (or stayed, when equal)"),
            sa.Column("previous_as_of", sa.Date(), nullable=True, comment="the previous run date compared with; null on the first run"),
            sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
            sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
        ],
    ),
    "segment_summary": (
        "one row per segment: size, revenue and mean R, F and M",
        lambda: [
            sa.Column("segment", sa.String(length=60), nullable=False, comment="named segment"),
            sa.Column("customers", sa.BigInteger(), nullable=False, comment="customers in the segment"),
            sa.Column("customer_share", sa.Float(), nullable=False, comment="share of all customers, 0-1"),
            sa.Column("revenue", sa.Numeric(precision=18, scale=2), nullable=False, comment="their total spend up to as_of, shop currency"),
            sa.Column("revenue_share", sa.Float(), nullable=False, comment="share of all customers' spend, 0-1"),
            sa.Column("mean_recency_days", sa.Float(), nullable=True, comment="mean days since the last purchase"),
            sa.Column("mean_frequency", sa.Float(), nullable=False, comment="mean purchases"),
            sa.Column("mean_monetary", sa.Numeric(precision=18, scale=2), nullable=False, comment="mean spend, shop currency"),
            sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
            sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
            sa.PrimaryKeyConstraint("segment"),
        ],
    ),
}


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    for name, (comment, elements) in TABLES.items():
        if not _adopted(schema, name, elements()):
            op.create_table(name, *elements(), schema=schema, comment=comment)


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    for name in reversed(list(TABLES)):
        op.drop_table(name, schema=schema)


def _adopted(schema: str | None, name: str, elements: list) -> bool:
    """True when an unversioned database already has table `name` with these columns (kept as it is)."""
    if op.get_context().as_sql:  # printing the SQL (crm db-upgrade --sql): for an empty database
        return False
    found = sa.inspect(op.get_bind())
    if not found.has_table(name, schema=schema):
        return False
    have = [(column["name"], bool(column["nullable"])) for column in found.get_columns(name, schema=schema)]
    want = [(element.name, bool(element.nullable)) for element in elements if isinstance(element, sa.Column)]
    if have == want:
        log.info("%s: adopted the table an unversioned shop-crm created", name)
        return True
    if name == "pipeline_runs":
        raise RuntimeError(
            f"table {name} in schema {schema}: columns (name, nullable) {have}; expected {want}. "
            "It holds the run history: rename it, run `crm db-upgrade`, then copy the rows over"
        )
    log.warning("%s: columns (name, nullable) %s, expected %s: dropped and created anew (the next publish fills it)", name, have, want)
    op.drop_table(name, schema=schema)
    return False
