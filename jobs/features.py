"""features: silver -> gold/customer_features and gold/customer_activity, the partitions of the run date (`as_of`)."""

from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import functions as F

from core.config import Settings
from core.lake import Lake
from core.spark import spark_session
from features.activity import customer_activity
from features.customer import customer_features, known_at, purchased_lines, silver_tables

log = logging.getLogger(__name__)

TABLE = "customer_features"
ACTIVITY_TABLE = "customer_activity"


def run(run_date: date, settings: Settings, run_id: str) -> int:
    """Compute the customer features and browsing activity as of `run_date`; returns the number of customers."""
    with spark_session(settings, "features") as spark:
        lake = Lake(spark, settings.lake_location)
        silver = silver_tables(lake)
        features = customer_features(silver, run_date, settings.rfm.scored_statuses, settings.rfm.monetary_value)
        customers = lake.write_gold(features, TABLE, run_date, run_id)
        registered = known_at(silver["customers"], run_date).select(F.col("id").alias("customer_id"))
        activity = customer_activity(
            silver.get("events"),
            registered,
            purchased_lines(silver, run_date, settings.rfm.scored_statuses),
            run_date,
            settings.events.browse_abandonment_days,
            settings.events.top_categories,
        )
        lake.write_gold(activity, ACTIVITY_TABLE, run_date, run_id)
    log.info("gold/%s and gold/%s: %d customers as of %s (run %s)", TABLE, ACTIVITY_TABLE, customers, run_date, run_id)
    return customers
