"""Browsing activity per customer (issue 10): views, visits, searches, carts, browse abandonment.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    op.create_table(
        "customer_activity",
        sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False, comment="-> shop customers.id"),
        sa.Column("views_7d", sa.BigInteger(), nullable=False, comment="product views in the last 7 days"),
        sa.Column("views_30d", sa.BigInteger(), nullable=False, comment="product views in the last 30 days"),
        sa.Column(
            "visits_7d",
            sa.BigInteger(),
            nullable=False,
            comment="visits (sessions split after events.session_gap_minutes idle) in the last 7 days",
        ),
        sa.Column("visits_30d", sa.BigInteger(), nullable=False, comment="visits in the last 30 days"),
        sa.Column("visits_previous_30d", sa.BigInteger(), nullable=False, comment="visits in the 30 days before those"),
        sa.Column("searches_30d", sa.BigInteger(), nullable=False, comment="searches in the last 30 days"),
        sa.Column("cart_adds_30d", sa.BigInteger(), nullable=False, comment="products put in the cart in the last 30 days"),
        sa.Column("last_visit_at", sa.DateTime(), nullable=True, comment="time of the latest event (UTC); null without events"),
        sa.Column("days_since_last_visit", sa.Integer(), nullable=True, comment="days from the last visit to as_of; null without events"),
        sa.Column(
            "view_to_purchase_30d",
            sa.Float(),
            nullable=True,
            comment="share of the distinct products viewed in the last 30 days that the customer bought in those 30 days; null without views",
        ),
        sa.Column(
            "top_categories",
            sa.String(length=400),
            nullable=True,
            comment="the categories viewed most in the last 30 days, most first, comma-separated (events.top_categories of them)",
        ),
        sa.Column(
            "browse_abandoned_products",
            sa.BigInteger(),
            nullable=False,
            comment="distinct products viewed or put in the cart in the last events.browse_abandonment_days days and not bought since",
        ),
        sa.Column(
            "browse_abandoned_product_ids",
            sa.String(length=400),
            nullable=True,
            comment="up to 5 of those products' ids, the most recently viewed first, comma-separated",
        ),
        sa.Column(
            "cart_abandoned_products",
            sa.BigInteger(),
            nullable=False,
            comment="of those, the products that were put in the cart (and not bought since)",
        ),
        sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
        sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
        sa.PrimaryKeyConstraint("customer_id"),
        schema=schema,
        comment="one row per customer: browsing activity (views, visits, searches, carts) as of the run date, from the browsing events; counts 0 without events",
    )
    op.create_index("ix_customer_activity_abandoned", "customer_activity", ["browse_abandoned_products"], unique=False, schema=schema)


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_index("ix_customer_activity_abandoned", table_name="customer_activity", schema=schema)
    op.drop_table("customer_activity", schema=schema)
