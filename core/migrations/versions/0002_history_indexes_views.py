"""History for trend queries, indexes for the analysts' queries, and the analyst views.

- `segment_summary_history` and `segment_movement_history` keep every published run date;
  `customer_segment_history` keeps each customer's stays in a segment (SCD type 2). An upgraded database
  starts them from the rows published last.
- Indexes on the columns analysts filter by: segment, churn risk, e-mail, run start.
- Views `customer_overview` (one row per customer: contact, segment, scores) and `segment_trend`
  (segment sizes per run date with the change since the previous one).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CUSTOMER_OVERVIEW = """
CREATE VIEW {s}customer_overview AS
SELECT p.customer_id, p.email, p.first_name, p.last_name, p.language, p.country, p.accepts_marketing,
       g.segment, g.changed_at AS segment_since, g.previous_segment, g.rfm_code,
       g.recency_days, g.frequency, g.monetary, p.avg_order_value, p.open_cart_value,
       p.cluster_id, p.cluster_description, p.avg_rating, p.open_inquiries,
       s.churn_probability, s.churn_risk, s.churn_reasons, s.p_alive, s.expected_orders_90d,
       s.clv_12m, s.clv_12m_low, s.clv_12m_high, s.next_order_date, p.as_of
FROM {s}customer_profile p
LEFT JOIN {s}customer_segments g ON g.customer_id = p.customer_id
LEFT JOIN {s}customer_scores s ON s.customer_id = p.customer_id
"""

SEGMENT_TREND = """
CREATE VIEW {s}segment_trend AS
SELECT as_of, segment, customers, customer_share, revenue, revenue_share,
       LAG(as_of) OVER (PARTITION BY segment ORDER BY as_of) AS previous_as_of,
       customers - LAG(customers) OVER (PARTITION BY segment ORDER BY as_of) AS customers_change,
       revenue - LAG(revenue) OVER (PARTITION BY segment ORDER BY as_of) AS revenue_change
FROM {s}segment_summary_history
"""

#: The history tables started from what is published now (nothing on a new database).
SEED = (
    "INSERT INTO {s}segment_summary_history (as_of, segment, customers, customer_share, revenue, revenue_share, "
    "mean_recency_days, mean_frequency, mean_monetary, run_id) SELECT as_of, segment, customers, customer_share, "
    "revenue, revenue_share, mean_recency_days, mean_frequency, mean_monetary, run_id FROM {s}segment_summary",
    "INSERT INTO {s}segment_movement_history (from_segment, to_segment, customers, previous_as_of, as_of, run_id) "
    "SELECT from_segment, to_segment, customers, previous_as_of, as_of, run_id FROM {s}segment_movement",
    "INSERT INTO {s}customer_segment_history (customer_id, valid_from, valid_to, segment, run_id) "
    "SELECT customer_id, changed_at, NULL, segment, run_id FROM {s}customer_segments",
)


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    prefix = f'"{schema}".' if schema else ""
    op.create_table(
        "customer_segment_history",
        sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False, comment="-> shop customers.id"),
        sa.Column("valid_from", sa.Date(), nullable=False, comment="first run date the customer was in the segment"),
        sa.Column("valid_to", sa.Date(), nullable=True, comment="run date the customer left it (excluded); null: still in it"),
        sa.Column("segment", sa.String(length=60), nullable=False, comment="named segment"),
        sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that opened the row"),
        sa.PrimaryKeyConstraint("customer_id", "valid_from"),
        schema=schema,
        comment="each customer's segments over time: one row per stay in a segment (SCD type 2), kept from every newest published run; rows with valid_to null are the current segments",
    )
    op.create_index(
        "ix_customer_segment_history_segment", "customer_segment_history", ["segment", "valid_from"], unique=False, schema=schema
    )
    op.create_table(
        "segment_movement_history",
        sa.Column(
            "from_segment", sa.String(length=60), nullable=True, comment="segment at the previous run date; null: not a customer then"
        ),
        sa.Column("to_segment", sa.String(length=60), nullable=False, comment="segment at as_of"),
        sa.Column("customers", sa.BigInteger(), nullable=False, comment="customers who moved (or stayed, when equal)"),
        sa.Column("previous_as_of", sa.Date(), nullable=True, comment="the previous run date compared with; null on the first run"),
        sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
        sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
        schema=schema,
        comment="segment_movement of every published run date (a rerun or backfill replaces its date's rows)",
    )
    op.create_index("ix_segment_movement_history_as_of", "segment_movement_history", ["as_of"], unique=False, schema=schema)
    op.create_table(
        "segment_summary_history",
        sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
        sa.Column("segment", sa.String(length=60), nullable=False, comment="named segment"),
        sa.Column("customers", sa.BigInteger(), nullable=False, comment="customers in the segment"),
        sa.Column("customer_share", sa.Float(), nullable=False, comment="share of all customers, 0-1"),
        sa.Column("revenue", sa.Numeric(precision=18, scale=2), nullable=False, comment="their total spend up to as_of, shop currency"),
        sa.Column("revenue_share", sa.Float(), nullable=False, comment="share of all customers' spend, 0-1"),
        sa.Column("mean_recency_days", sa.Float(), nullable=True, comment="mean days since the last purchase"),
        sa.Column("mean_frequency", sa.Float(), nullable=False, comment="mean purchases"),
        sa.Column("mean_monetary", sa.Numeric(precision=18, scale=2), nullable=False, comment="mean spend, shop currency"),
        sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
        sa.PrimaryKeyConstraint("as_of", "segment"),
        schema=schema,
        comment="segment_summary of every published run date (a rerun or backfill replaces its date's rows)",
    )
    op.create_index("ix_customer_profile_email", "customer_profile", ["email"], unique=False, schema=schema)
    op.create_index("ix_customer_profile_segment", "customer_profile", ["segment"], unique=False, schema=schema)
    op.create_index("ix_customer_scores_churn_risk", "customer_scores", ["churn_risk"], unique=False, schema=schema)
    op.create_index("ix_customer_segments_segment", "customer_segments", ["segment"], unique=False, schema=schema)
    op.create_index("ix_pipeline_runs_started_at", "pipeline_runs", ["started_at"], unique=False, schema=schema)
    for statement in SEED:
        op.execute(statement.format(s=prefix))
    op.execute(CUSTOMER_OVERVIEW.format(s=prefix))
    op.execute(SEGMENT_TREND.format(s=prefix))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"COMMENT ON VIEW {prefix}customer_overview IS 'one row per customer: contact, segment and "
            "scores of the latest published run (customer_profile, customer_segments, customer_scores)'"
        )
        op.execute(
            f"COMMENT ON VIEW {prefix}segment_trend IS 'segment size and revenue per published run date, "
            "with the change since the segment''s previous run date'"
        )


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    prefix = f'"{schema}".' if schema else ""
    op.execute(f"DROP VIEW {prefix}segment_trend")
    op.execute(f"DROP VIEW {prefix}customer_overview")
    op.drop_index("ix_pipeline_runs_started_at", table_name="pipeline_runs", schema=schema)
    op.drop_index("ix_customer_segments_segment", table_name="customer_segments", schema=schema)
    op.drop_index("ix_customer_scores_churn_risk", table_name="customer_scores", schema=schema)
    op.drop_index("ix_customer_profile_segment", table_name="customer_profile", schema=schema)
    op.drop_index("ix_customer_profile_email", table_name="customer_profile", schema=schema)
    op.drop_table("segment_summary_history", schema=schema)
    op.drop_index("ix_segment_movement_history_as_of", table_name="segment_movement_history", schema=schema)
    op.drop_table("segment_movement_history", schema=schema)
    op.drop_index("ix_customer_segment_history_segment", table_name="customer_segment_history", schema=schema)
    op.drop_table("customer_segment_history", schema=schema)
