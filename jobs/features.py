"""features: silver -> gold/customer_features, the partition of the run date (`as_of`)."""
from __future__ import annotations

import logging
from datetime import date

from features.customer import INPUT_TABLES, customer_features
from jobs.config import Settings
from jobs.lake import Lake
from jobs.spark import spark_session

log = logging.getLogger(__name__)

TABLE = "customer_features"


def run(run_date: date, settings: Settings, run_id: str) -> int:
    """Compute the customer features as of `run_date`; returns the number of customers."""
    with spark_session(settings, "features") as spark:
        lake = Lake(spark, settings.lake_dir)
        silver = {table: lake.read("silver", table) for table in INPUT_TABLES}
        features = customer_features(silver, run_date, settings.rfm.scored_statuses)
        lake.replace_partition(features, "gold", TABLE, {"as_of": run_date}, evolve=True)
        customers = lake.rows_written("gold", TABLE)
    log.info("gold/%s: %d customers as of %s (run %s)", TABLE, customers, run_date, run_id)
    return customers
