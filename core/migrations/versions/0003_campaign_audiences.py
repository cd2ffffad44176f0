"""Campaign audiences: the night's treatment, control and suppressed customers per campaign, and their
history by run date (who was contacted or held out, when).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    op.create_table(
        "campaign_audiences",
        sa.Column("campaign", sa.String(length=60), nullable=False, comment="campaign name: its file conf/campaigns/<campaign>.yaml"),
        sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False, comment="-> shop customers.id"),
        sa.Column(
            "audience_group",
            sa.String(length=10),
            nullable=False,
            comment="treatment (to contact), control (held out to measure the campaign) or suppressed",
        ),
        sa.Column(
            "suppression_reason",
            sa.String(length=20),
            nullable=True,
            comment="why a qualifying customer is not contacted: unsubscribed, no_email, open_inquiry, contacted_recently, other_campaign or audience_limit; null in treatment and control",
        ),
        sa.Column("audience_rank", sa.Integer(), nullable=True, comment="position in the campaign's order_by among those not suppressed"),
        sa.Column("channel", sa.String(length=10), nullable=False, comment="email, sms, push or any"),
        sa.Column("offer", sa.String(length=100), nullable=True, comment="the campaign's offer (coupon code, message id); null: none"),
        sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
        sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
        sa.PrimaryKeyConstraint("campaign", "customer_id"),
        schema=schema,
        comment="one row per campaign and qualifying customer as of the run date: treatment, control or suppressed with the reason",
    )
    op.create_index("ix_campaign_audiences_group", "campaign_audiences", ["campaign", "audience_group"], unique=False, schema=schema)
    op.create_table(
        "campaign_audiences_history",
        sa.Column("as_of", sa.Date(), nullable=False, comment="the run date the row describes (end of that day, UTC)"),
        sa.Column("campaign", sa.String(length=60), nullable=False, comment="campaign name: its file conf/campaigns/<campaign>.yaml"),
        sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False, comment="-> shop customers.id"),
        sa.Column(
            "audience_group",
            sa.String(length=10),
            nullable=False,
            comment="treatment (to contact), control (held out to measure the campaign) or suppressed",
        ),
        sa.Column(
            "suppression_reason",
            sa.String(length=20),
            nullable=True,
            comment="why a qualifying customer is not contacted: unsubscribed, no_email, open_inquiry, contacted_recently, other_campaign or audience_limit; null in treatment and control",
        ),
        sa.Column("audience_rank", sa.Integer(), nullable=True, comment="position in the campaign's order_by among those not suppressed"),
        sa.Column("channel", sa.String(length=10), nullable=False, comment="email, sms, push or any"),
        sa.Column("offer", sa.String(length=100), nullable=True, comment="the campaign's offer (coupon code, message id); null: none"),
        sa.Column("run_id", sa.String(length=250), nullable=False, comment="the pipeline run that produced the row"),
        sa.PrimaryKeyConstraint("as_of", "campaign", "customer_id"),
        schema=schema,
        comment="campaign_audiences of every published run date: who was contacted or held out, when (a rerun or backfill replaces its date's rows)",
    )


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_table("campaign_audiences_history", schema=schema)
    op.drop_index("ix_campaign_audiences_group", table_name="campaign_audiences", schema=schema)
    op.drop_table("campaign_audiences", schema=schema)
