"""Gold: what the run date's customer features and segments must satisfy before they are published.

Rows checked: the partition of the run date (`as_of` = the run date). Every check is critical: these rows
go to the CRM and the marketing exports as they are. Customers without a purchase have no recency and no
r/f/m scores (null), which the range checks allow.
"""

from __future__ import annotations

from datetime import date

import great_expectations.expectations as gxe

from core.crm_schema import columns_of
from expectations.severity import CRITICAL
from jobs.score import COLUMNS as SEGMENT_COLUMNS
from models.campaigns import GROUPS, SUPPRESSION_REASONS
from models.rfm import SCORE_RANGE
from models.triage import TOPICS, URGENCIES

TABLES: tuple[str, ...] = (
    "customer_features",
    "customer_segments",
    "customer_profile",
    "customer_scores",
    "review_insights",
    "review_alerts",
    "inquiry_triage",
    "customer_satisfaction",
    "coupon_offers",
    "category_propensity",
    "recommendations",
    "campaign_audiences",
    "customer_activity",
)


def rows_checked(run_date: date, name: str) -> dict[str, object]:
    """The rows of a gold table the gate checks, as column = value: the run date's partition."""
    return {"as_of": run_date}


def expectations(table: str) -> list[gxe.Expectation]:
    """Everything checked on gold/<table>."""
    rules: dict[str, list[gxe.Expectation]] = {
        "customer_features": [
            *_one_row_per_customer(),
            *[
                gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, severity=CRITICAL)
                # not total_spent: net of credit notes (rfm.monetary_value: net), it may be negative
                for column in ("recency_days", "purchase_count", "tenure_days")
            ],
        ],
        "customer_segments": [
            gxe.ExpectTableColumnsToMatchSet(
                column_set=list(SEGMENT_COLUMNS),
                exact_match=True,
                severity=CRITICAL,
                description="the columns `jobs/score.py` writes, no more",
            ),
            *_one_row_per_customer(),
            *[
                gxe.ExpectColumnValuesToBeBetween(column=column, min_value=SCORE_RANGE[0], max_value=SCORE_RANGE[1], severity=CRITICAL)
                for column in ("r_score", "f_score", "m_score")
            ],
            gxe.ExpectColumnValuesToNotBeNull(column="segment", severity=CRITICAL),
            gxe.ExpectColumnValuesToNotBeNull(column="changed_at", severity=CRITICAL),
        ],
        "customer_profile": [*_one_row_per_customer(), gxe.ExpectColumnValuesToNotBeNull(column="segment", severity=CRITICAL)],
        "customer_scores": [
            gxe.ExpectTableColumnsToMatchSet(
                column_set=columns_of("customer_scores"),
                exact_match=True,
                severity=CRITICAL,
                description="the columns `jobs/predict.py` writes",
            ),
            *_one_row_per_customer(),
            *[
                gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, max_value=1, severity=CRITICAL)
                for column in ("churn_probability", "p_alive")
            ],
            *[
                gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, severity=CRITICAL)
                for column in ("expected_orders_30d", "expected_orders_365d", "expected_order_value", "clv_12m_low")
            ],
            gxe.ExpectColumnValuesToBeInSet(column="churn_risk", value_set=["low", "medium", "high"], severity=CRITICAL),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="clv_12m_high",
                column_B="clv_12m_low",
                or_equal=True,
                severity=CRITICAL,
                description="an interval's upper end is not below its lower end",
            ),
        ],
        # The insight and targeting tables may be empty on a young shop (the job says why): no row-count rules.
        "review_insights": [
            *_columns_written("review_insights", "jobs/insights.py"),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["product_id", "aspect"], severity=CRITICAL),
            gxe.ExpectColumnValuesToBeBetween(column="avg_rating", min_value=1, max_value=5, severity=CRITICAL),
            *_between("sentiment_score", -1, 1),
            *_between("negative_share", 0, 1),
            gxe.ExpectColumnValuesToBeBetween(column="reviews", min_value=1, severity=CRITICAL),
        ],
        "review_alerts": [
            *_columns_written("review_alerts", "jobs/insights.py"),
            gxe.ExpectColumnValuesToBeUnique(column="review_id", severity=CRITICAL),
            *_between("sentiment_score", -1, 0, "an alert is a negative review"),
            gxe.ExpectColumnValuesToBeBetween(column="rating", min_value=1, max_value=5, severity=CRITICAL),
        ],
        "inquiry_triage": [
            *_columns_written("inquiry_triage", "jobs/insights.py"),
            gxe.ExpectColumnValuesToBeUnique(column="inquiry_id", severity=CRITICAL),
            gxe.ExpectColumnValuesToBeInSet(column="topic", value_set=list(TOPICS), severity=CRITICAL),
            gxe.ExpectColumnValuesToBeInSet(column="urgency", value_set=list(URGENCIES), severity=CRITICAL),
            *_between("topic_probability", 0, 1),
            gxe.ExpectColumnValuesToBeBetween(column="resolution_hours", min_value=0, severity=CRITICAL),
        ],
        "customer_satisfaction": [
            *_columns_written("customer_satisfaction", "jobs/insights.py"),
            gxe.ExpectColumnValuesToBeUnique(column="customer_id", severity=CRITICAL),
            *_between("satisfaction_score", -1, 1),
            gxe.ExpectColumnValuesToNotBeNull(column="satisfaction_score", severity=CRITICAL),
        ],
        "coupon_offers": [
            *_columns_written("coupon_offers", "jobs/offers.py"),
            gxe.ExpectColumnValuesToBeUnique(
                column="customer_id", severity=CRITICAL, description="at most one coupon per customer and night"
            ),
            *_between("expected_uplift", 0, 1),
            gxe.ExpectColumnValuesToBeBetween(column="expected_cost", min_value=0, severity=CRITICAL),
        ],
        "category_propensity": [
            *_columns_written("category_propensity", "jobs/recommend.py"),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["customer_id", "rank"], severity=CRITICAL),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["customer_id", "category"], severity=CRITICAL),
            *_between("probability", 0, 1),
        ],
        "recommendations": [
            *_columns_written("recommendations", "jobs/recommend.py"),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["customer_id", "rank"], severity=CRITICAL),
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=["customer_id", "product_id"], severity=CRITICAL, description="a product is recommended to a customer once"
            ),
            gxe.ExpectColumnValuesToBeInSet(column="reason", value_set=["similar_customers", "popular"], severity=CRITICAL),
            gxe.ExpectColumnValuesToBeBetween(column="rank", min_value=1, severity=CRITICAL),
        ],
        # A night with no enabled campaign writes an empty partition: no row-count rule here.
        "campaign_audiences": [
            gxe.ExpectTableColumnsToMatchSet(
                column_set=columns_of("campaign_audiences"),
                exact_match=True,
                severity=CRITICAL,
                description="the columns `jobs/campaigns.py` writes",
            ),
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=["campaign", "customer_id"], severity=CRITICAL, description="a customer is in a campaign's audience once"
            ),
            gxe.ExpectColumnValuesToBeInSet(column="audience_group", value_set=list(GROUPS), severity=CRITICAL),
            gxe.ExpectColumnValuesToBeInSet(column="suppression_reason", value_set=list(SUPPRESSION_REASONS), severity=CRITICAL),
            gxe.ExpectColumnValuesToBeBetween(column="audience_rank", min_value=1, severity=CRITICAL),
        ],
        "customer_activity": [
            *_columns_written("customer_activity", "jobs/features.py"),
            *_one_row_per_customer(),
            *[
                gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, severity=CRITICAL)
                for column in (
                    "views_7d",
                    "views_30d",
                    "visits_7d",
                    "visits_30d",
                    "visits_previous_30d",
                    "searches_30d",
                    "cart_adds_30d",
                    "days_since_last_visit",
                    "browse_abandoned_products",
                    "cart_abandoned_products",
                )
            ],
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="views_30d", column_B="views_7d", or_equal=True, severity=CRITICAL, description="7 days are within 30"
            ),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="browse_abandoned_products", column_B="cart_abandoned_products", or_equal=True, severity=CRITICAL
            ),
            *_between("view_to_purchase_30d", 0, 1),
        ],
    }
    return rules[table]


def _columns_written(table: str, job: str) -> list[gxe.Expectation]:
    return [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=columns_of(table), exact_match=True, severity=CRITICAL, description=f"the columns `{job}` writes"
        )
    ]


def _between(column: str, low: float, high: float, description: str | None = None) -> list[gxe.Expectation]:
    return [gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high, severity=CRITICAL, description=description)]


def _one_row_per_customer() -> list[gxe.Expectation]:
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, severity=CRITICAL, description="the run date's partition is written and not empty"),
        gxe.ExpectColumnValuesToNotBeNull(column="customer_id", severity=CRITICAL),
        gxe.ExpectColumnValuesToBeUnique(column="customer_id", severity=CRITICAL),
    ]
