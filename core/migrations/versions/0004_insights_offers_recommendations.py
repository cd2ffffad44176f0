"""Insight and targeting tables: review insights and alerts, inquiry triage, customer satisfaction, coupon
offers by uplift, category propensity and product recommendations (issue 7).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    op.create_table(
        "category_propensity",
        sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False, comment="-> shop customers.id"),
        sa.Column("rank", sa.SmallInteger(), autoincrement=False, nullable=False, comment="1 = most likely category"),
        sa.Column("category", sa.String(length=60), nullable=False, comment="product category"),
        sa.Column(
            "probability",
            sa.Float(),
            nullable=False,
            comment="probability of buying from the category within the next recommend.holdout_days days, 0-1",
        ),
        sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
        sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
        sa.PrimaryKeyConstraint("customer_id", "rank"),
        schema=schema,
        comment="one row per customer and likely category (recommend.top_categories per customer): what they need next",
    )
    op.create_table(
        "coupon_offers",
        sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False, comment="-> shop customers.id"),
        sa.Column("coupon", sa.String(length=60), nullable=False, comment="the past coupon campaign whose terms to offer"),
        sa.Column(
            "expected_uplift",
            sa.Float(),
            nullable=False,
            comment="increase in P(order in the coupon window) the coupon is expected to cause, 0-1",
        ),
        sa.Column(
            "expected_incremental_revenue",
            sa.Numeric(precision=18, scale=2),
            nullable=False,
            comment="revenue the coupon is expected to add, net of the discount, shop currency",
        ),
        sa.Column("expected_cost", sa.Numeric(precision=18, scale=2), nullable=False, comment="expected discount given, shop currency"),
        sa.Column("uplift_model_run", sa.String(length=64), nullable=False, comment="MLflow run of the uplift models"),
        sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
        sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
        sa.PrimaryKeyConstraint("customer_id"),
        schema=schema,
        comment="one row per customer offered a coupon: the coupon with the best expected incremental revenue, within the night's budget (uplift.budget)",
    )
    op.create_table(
        "customer_satisfaction",
        sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False, comment="-> shop customers.id"),
        sa.Column(
            "satisfaction_score",
            sa.Float(),
            nullable=False,
            comment="-1 (unhappy) to 1 (happy): review sentiment and inquiry signals combined (README)",
        ),
        sa.Column("review_sentiment", sa.Float(), nullable=True, comment="mean sentiment_score of the customer's reviews; null: none"),
        sa.Column("reviews", sa.Integer(), nullable=False, comment="reviews written up to as_of"),
        sa.Column("inquiries", sa.Integer(), nullable=False, comment="inquiries opened up to as_of"),
        sa.Column("complaints", sa.Integer(), nullable=False, comment="of those, triaged as complaint"),
        sa.Column("open_inquiries", sa.Integer(), nullable=False, comment="inquiries not resolved at as_of"),
        sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
        sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
        sa.PrimaryKeyConstraint("customer_id"),
        schema=schema,
        comment="one row per customer with a review or an inquiry: how satisfied they seem, as of the run date",
    )
    op.create_table(
        "inquiry_triage",
        sa.Column("inquiry_id", sa.BigInteger(), autoincrement=False, nullable=False, comment="-> shop inquiries.id"),
        sa.Column("customer_id", sa.BigInteger(), nullable=True, comment="-> shop customers.id"),
        sa.Column("channel", sa.String(length=20), nullable=True, comment="email, chat or phone"),
        sa.Column("status", sa.String(length=20), nullable=True, comment="open, pending or resolved"),
        sa.Column(
            "topic",
            sa.String(length=20),
            nullable=False,
            comment="shipping, return_refund, product_question, payment or complaint (the triage model)",
        ),
        sa.Column("topic_probability", sa.Float(), nullable=False, comment="the model's probability of that topic, 0-1"),
        sa.Column("urgency", sa.String(length=10), nullable=False, comment="high, normal or low"),
        sa.Column("created_at", sa.DateTime(), nullable=True, comment="when the inquiry was opened (UTC)"),
        sa.Column("resolved_at", sa.DateTime(), nullable=True, comment="when it was resolved (UTC); null while open"),
        sa.Column("resolution_hours", sa.Float(), nullable=True, comment="hours from opened to resolved; null while open"),
        sa.Column("age_hours", sa.Float(), nullable=True, comment="hours open at the end of as_of; null once resolved"),
        sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
        sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
        sa.PrimaryKeyConstraint("inquiry_id"),
        schema=schema,
        comment="one row per support inquiry up to as_of: topic, urgency and resolution time",
    )
    op.create_index("ix_inquiry_triage_open", "inquiry_triage", ["status", "urgency"], unique=False, schema=schema)
    op.create_table(
        "recommendations",
        sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False, comment="-> shop customers.id"),
        sa.Column("rank", sa.SmallInteger(), autoincrement=False, nullable=False, comment="1 = best"),
        sa.Column("product_id", sa.BigInteger(), nullable=False, comment="-> shop products.id"),
        sa.Column(
            "score",
            sa.Float(),
            nullable=False,
            comment="ALS preference score (reason similar_customers) or popularity share (reason popular)",
        ),
        sa.Column(
            "reason",
            sa.String(length=20),
            nullable=False,
            comment="similar_customers (ALS on what customers bought) or popular (no purchase history yet)",
        ),
        sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
        sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
        sa.PrimaryKeyConstraint("customer_id", "rank"),
        schema=schema,
        comment="one row per customer and recommended product (recommend.top_n per customer)",
    )
    op.create_table(
        "review_alerts",
        sa.Column("review_id", sa.BigInteger(), autoincrement=False, nullable=False, comment="-> shop reviews.id"),
        sa.Column("customer_id", sa.BigInteger(), nullable=False, comment="-> shop customers.id"),
        sa.Column("product_id", sa.BigInteger(), nullable=False, comment="-> shop products.id"),
        sa.Column("reviewed_at", sa.DateTime(), nullable=False, comment="when the review was written (UTC)"),
        sa.Column("rating", sa.SmallInteger(), nullable=False, comment="stars, 1-5"),
        sa.Column("sentiment_score", sa.Float(), nullable=False, comment="P(positive) - P(negative), -1 to 1"),
        sa.Column("aspects", sa.String(length=200), nullable=True, comment="aspects the review mentions, comma-separated; null: none"),
        sa.Column(
            "clv_12m",
            sa.Numeric(precision=18, scale=2),
            nullable=False,
            comment="the customer's 12-month CLV (customer_scores), shop currency",
        ),
        sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
        sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
        sa.PrimaryKeyConstraint("review_id"),
        schema=schema,
        comment="one row per negative review of the last insights.alert_days days by a customer in the top CLV band (insights.alert_clv_quantile): whom to call back first",
    )
    op.create_index("ix_review_alerts_customer", "review_alerts", ["customer_id"], unique=False, schema=schema)
    op.create_table(
        "review_insights",
        sa.Column("product_id", sa.BigInteger(), autoincrement=False, nullable=False, comment="-> shop products.id"),
        sa.Column(
            "aspect",
            sa.String(length=20),
            nullable=False,
            comment="'all' for the product's reviews as a whole, else an aspect of conf/aspects.yaml (delivery, quality, price, size_fit, service) and the reviews that mention it",
        ),
        sa.Column("category", sa.String(length=60), nullable=True, comment="the product's category"),
        sa.Column("reviews", sa.Integer(), nullable=False, comment="reviews up to as_of (that mention the aspect)"),
        sa.Column("avg_rating", sa.Float(), nullable=False, comment="mean stars of those reviews, 1-5"),
        sa.Column(
            "sentiment_score", sa.Float(), nullable=False, comment="mean of P(positive) - P(negative) by the sentiment model, -1 to 1"
        ),
        sa.Column("negative_share", sa.Float(), nullable=False, comment="share of those reviews the model reads as negative, 0-1"),
        sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
        sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
        sa.PrimaryKeyConstraint("product_id", "aspect"),
        schema=schema,
        comment="one row per reviewed product and aspect: what customers say about it, as of the run date",
    )


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_table("review_insights", schema=schema)
    op.drop_index("ix_review_alerts_customer", table_name="review_alerts", schema=schema)
    op.drop_table("review_alerts", schema=schema)
    op.drop_table("recommendations", schema=schema)
    op.drop_index("ix_inquiry_triage_open", table_name="inquiry_triage", schema=schema)
    op.drop_table("inquiry_triage", schema=schema)
    op.drop_table("customer_satisfaction", schema=schema)
    op.drop_table("coupon_offers", schema=schema)
    op.drop_table("category_propensity", schema=schema)
