"""Gold: what the run date's customer features and segments must satisfy before they are published.

Rows checked: the partition of the run date (`as_of` = the run date). Every check is critical: these rows
go to the CRM and the marketing exports as they are. Customers without a purchase have no recency and no
r/f/m scores (null), which the range checks allow.
"""
from __future__ import annotations

from datetime import date

import great_expectations.expectations as gxe
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from expectations.severity import CRITICAL
from jobs.crm_schema import columns_of
from jobs.score import COLUMNS as SEGMENT_COLUMNS
from models.campaigns import GROUPS, SUPPRESSION_REASONS
from models.rfm import SCORE_RANGE

TABLES: tuple[str, ...] = ("customer_features", "customer_segments", "customer_profile", "customer_scores",
                           "campaign_audiences")


def rows_to_check(table: DataFrame, run_date: date) -> DataFrame:
    """The run date's partition of a gold table."""
    return table.where(F.col("as_of") == F.lit(run_date))


def expectations(table: str) -> list[gxe.Expectation]:
    """Everything checked on gold/<table>."""
    rules: dict[str, list[gxe.Expectation]] = {
        "customer_features": [
            *_one_row_per_customer(),
            *[
                gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, severity=CRITICAL)
                for column in ("recency_days", "frequency", "monetary", "tenure_days")
            ],
        ],
        "customer_segments": [
            gxe.ExpectTableColumnsToMatchSet(column_set=list(SEGMENT_COLUMNS), exact_match=True, severity=CRITICAL,
                                             description="the columns `jobs/score.py` writes, no more"),
            *_one_row_per_customer(),
            *[
                gxe.ExpectColumnValuesToBeBetween(column=column, min_value=SCORE_RANGE[0], max_value=SCORE_RANGE[1],
                                                  severity=CRITICAL)
                for column in ("r_score", "f_score", "m_score")
            ],
            gxe.ExpectColumnValuesToNotBeNull(column="segment", severity=CRITICAL),
            gxe.ExpectColumnValuesToNotBeNull(column="changed_at", severity=CRITICAL),
        ],
        "customer_profile": [
            *_one_row_per_customer(),
            gxe.ExpectColumnValuesToNotBeNull(column="segment", severity=CRITICAL),
            gxe.ExpectColumnValuesToBeBetween(column="total_spent", min_value=0, severity=CRITICAL),
        ],
        "customer_scores": [
            gxe.ExpectTableColumnsToMatchSet(column_set=columns_of("customer_scores"), exact_match=True,
                                             severity=CRITICAL, description="the columns `jobs/predict.py` writes"),
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
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="clv_12m_high", column_B="clv_12m_low", or_equal=True,
                                                        severity=CRITICAL,
                                                        description="an interval's upper end is not below its lower end"),
        ],
        # A night with no enabled campaign writes an empty partition: no row-count rule here.
        "campaign_audiences": [
            gxe.ExpectTableColumnsToMatchSet(column_set=columns_of("campaign_audiences"), exact_match=True,
                                             severity=CRITICAL, description="the columns `jobs/campaigns.py` writes"),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["campaign", "customer_id"], severity=CRITICAL,
                                                description="a customer is in a campaign's audience once"),
            gxe.ExpectColumnValuesToBeInSet(column="audience_group", value_set=list(GROUPS), severity=CRITICAL),
            gxe.ExpectColumnValuesToBeInSet(column="suppression_reason", value_set=list(SUPPRESSION_REASONS),
                                            severity=CRITICAL),
            gxe.ExpectColumnValuesToBeBetween(column="audience_rank", min_value=1, severity=CRITICAL),
        ],
    }
    return rules[table]


def _one_row_per_customer() -> list[gxe.Expectation]:
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, severity=CRITICAL,
                                           description="the run date's partition is written and not empty"),
        gxe.ExpectColumnValuesToNotBeNull(column="customer_id", severity=CRITICAL),
        gxe.ExpectColumnValuesToBeUnique(column="customer_id", severity=CRITICAL),
    ]
