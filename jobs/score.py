"""score: gold/customer_features -> gold/customer_segments (RFM scores and named segments) for the run date."""
from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import functions as F

from jobs.config import Settings
from jobs.lake import Lake
from jobs.spark import spark_session
from models.rfm import SegmentRules, with_rfm_scores, with_segment

log = logging.getLogger(__name__)

TABLE = "customer_segments"
COLUMNS = ("as_of", "customer_id", "recency_days", "frequency", "monetary", "r_score", "f_score", "m_score",
           "rfm_code", "segment", "run_id")


def run(run_date: date, settings: Settings, run_id: str) -> dict[str, int]:
    """Score every customer as of `run_date`; returns customers per segment."""
    rules = SegmentRules.load(settings.conf_dir / settings.rfm.segments_file)
    with spark_session(settings, "score") as spark:
        lake = Lake(spark, settings.lake_dir)
        features = lake.read("gold", "customer_features").where(F.col("as_of") == F.lit(run_date))
        segments = (
            features.transform(with_rfm_scores)
            .transform(with_segment, rules)
            .withColumn("run_id", F.lit(run_id))
            .select(*COLUMNS)
        )
        lake.replace_partition(segments, "gold", TABLE, {"as_of": run_date})
        sizes = {
            row["segment"]: row["customers"]
            for row in lake.read("gold", TABLE).where(F.col("as_of") == F.lit(run_date))
            .groupBy("segment").agg(F.count("*").alias("customers")).collect()
        }
    log.info("gold/%s as of %s: %s", TABLE, run_date, sizes)
    return sizes
