"""score: gold/customer_features -> the run date's segments, clusters, profiles and segment summaries.

Writes, each as the run date's `as_of` partition of a gold table (one Delta commit each):
- `customer_segments`: RFM scores, named segment, the previous run date's segment and since when the
  customer is in this one, and the behavioural cluster;
- `customer_clusters`: per cluster its description, size and centroid;
- `customer_profile`: the one-row-per-customer view analysts open first;
- `segment_summary` and `segment_movement`: per segment, and per (from, to) pair since the previous run.
"The previous run" is the latest earlier `as_of` in gold, so a rerun (or a backfill of an older date)
compares with the same run and writes the same rows.
"""

from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from core.config import Settings
from core.crm_schema import CRM_NAMES, columns_of
from core.feature_schema import NAMES as FEATURE_NAMES
from core.lake import Lake
from core.spark import spark_session
from models import clusters
from models.rfm import SegmentRules, with_rfm_scores, with_segment

log = logging.getLogger(__name__)

TABLE = "customer_segments"
OUTPUTS = ("customer_segments", "customer_clusters", "customer_profile", "segment_summary", "segment_movement")


COLUMNS = tuple(columns_of(TABLE))


def run(run_date: date, settings: Settings, run_id: str) -> dict[str, int]:
    """Score every customer as of `run_date`; returns customers per segment."""
    rules = SegmentRules.load(settings.conf_dir / settings.rfm.segments_file)
    with spark_session(settings, "score") as spark:
        lake = Lake(spark, settings.lake_location)
        features = lake.read("gold", "customer_features").where(F.col("as_of") == F.lit(run_date)).select(*FEATURE_NAMES).cache()

        model = fit_clusters(lake, features, run_date, settings)
        scored = (
            features.transform(with_rfm_scores)
            .transform(with_segment, rules)
            .withColumn("cluster_id", F.when(F.col("purchase_count") > 0, model.assignment()))
        )
        previous_date = previous_as_of(lake, TABLE, run_date)
        segments = with_previous_segment(scored, lake, previous_date, run_date)
        lake.write_gold(segments, TABLE, run_date, run_id)
        segments = as_measures(current(lake, TABLE, run_date), TABLE).cache()

        sizes = {row["cluster_id"]: row["count"] for row in segments.groupBy("cluster_id").count().collect()}
        rows = clusters.centroid_rows(model, sizes)
        centroids = spark.createDataFrame(rows.astype(object).where(rows.notna(), None).values.tolist(), clusters.CENTROID_SCHEMA)
        lake.write_gold(centroids, "customer_clusters", run_date, run_id)

        lake.write_gold(profiles(lake, features, segments, centroids), "customer_profile", run_date, run_id)
        lake.write_gold(segment_summary(segments), "segment_summary", run_date, run_id)
        movement = segment_movement(segments).withColumn("previous_as_of", F.lit(previous_date).cast("date"))
        lake.write_gold(movement, "segment_movement", run_date, run_id)

        counts = {row["segment"]: row["count"] for row in segments.groupBy("segment").count().collect()}
        segments.unpersist()
        features.unpersist()
    log.info("gold/%s as of %s: %s; %d clusters (silhouette %.3f)", TABLE, run_date, counts, len(model.ids), model.silhouette)
    return counts


def as_measures(frame: DataFrame, table: str) -> DataFrame:
    """A CRM table's gold copy with its measures under their own names again (`Lake.write_gold` gave them
    their CRM names, `CRM_NAMES`)."""
    return frame.withColumnsRenamed({crm: measure for measure, crm in CRM_NAMES.get(table, {}).items()})


def current(lake: Lake, table: str, run_date: date) -> DataFrame:
    return lake.read("gold", table).where(F.col("as_of") == F.lit(run_date))


def previous_as_of(lake: Lake, table: str, run_date: date) -> date | None:
    """The latest run date before `run_date` with rows in gold/<table>, or None."""
    if not lake.exists("gold", table):
        return None
    return lake.read("gold", table).where(F.col("as_of") < F.lit(run_date)).agg(F.max("as_of")).first()[0]


def fit_clusters(lake: Lake, features: DataFrame, run_date: date, settings: Settings) -> clusters.ClusterModel:
    """Fit the clusters on a sample of buyers; ids matched to the previous run's centroids."""
    buyers = features.where(F.col("purchase_count") > 0)
    frame = clusters.sample(buyers, settings.clusters, buyers.count())
    earlier = previous_as_of(lake, "customer_clusters", run_date)
    previous = as_measures(current(lake, "customer_clusters", earlier), "customer_clusters").toPandas() if earlier is not None else None
    return clusters.fit(frame, settings.clusters, previous)


def with_previous_segment(scored: DataFrame, lake: Lake, previous_date: date | None, run_date: date) -> DataFrame:
    """Add `previous_segment` and `changed_at` (the run date since which the customer is in its segment)."""
    if previous_date is None:
        return scored.withColumns({"previous_segment": F.lit(None).cast("string"), "changed_at": F.lit(run_date)})
    before = current(lake, TABLE, previous_date).select(
        "customer_id", F.col("segment").alias("previous_segment"), F.col("changed_at").alias("_since")
    )
    stayed = F.col("segment") == F.col("previous_segment")
    return (
        scored.join(before, "customer_id", "left")
        .withColumn("changed_at", F.when(stayed, F.col("_since")).otherwise(F.lit(run_date)))
        .drop("_since")
    )


def profiles(lake: Lake, features: DataFrame, segments: DataFrame, centroids: DataFrame) -> DataFrame:
    """One row per customer: contact, default address, purchases, carts, reviews, inquiries, segment, cluster."""
    default_address = (
        lake.read("silver", "addresses")
        .where(F.col("is_default"))
        .withColumn("_pick", F.row_number().over(Window.partitionBy("customer_id").orderBy(F.desc("updated_at"), F.desc("id"))))
        .where(F.col("_pick") == 1)
        .select("customer_id", F.col("line1").alias("address_line1"), "city", "postal_code", F.col("country").alias("address_country"))
    )
    contacts = lake.read("silver", "customers").select(
        F.col("id").alias("customer_id"),
        "email",
        "first_name",
        "last_name",
        "phone",
        "language",
        "accepts_marketing",
        F.col("country").alias("customer_country"),
        F.col("created_at").alias("registered_at"),
    )
    return (
        features.select(
            "customer_id",
            "first_order_at",
            "last_order_at",
            "purchase_count",
            "total_spent",
            "avg_order_value",
            "open_cart_value",
            "review_count",
            "avg_rating",
            "inquiry_count",
            "open_inquiries",
        )
        .join(contacts, "customer_id", "left")
        .join(default_address, "customer_id", "left")
        .join(segments.select("customer_id", "segment", "cluster_id"), "customer_id")
        .join(F.broadcast(centroids.select("cluster_id", F.col("description").alias("cluster_description"))), "cluster_id", "left")
        .withColumn("country", F.coalesce("address_country", "customer_country"))
    )


def segment_summary(segments: DataFrame) -> DataFrame:
    """Per segment: customers and revenue with their shares, and mean recency, purchase count and total spent."""
    everyone = Window.partitionBy()
    return (
        segments.groupBy("segment")
        .agg(
            F.count("*").alias("customers"),
            F.sum("total_spent").alias("revenue"),
            F.round(F.avg("recency_days"), 2).alias("mean_recency_days"),
            F.round(F.avg("purchase_count"), 2).alias("mean_purchase_count"),
            F.avg("total_spent").cast("decimal(18,2)").alias("mean_total_spent"),
        )
        .withColumn("customer_share", F.round(F.col("customers") / F.sum("customers").over(everyone), 4))
        .withColumn(
            "revenue_share",
            F.round(F.coalesce(F.col("revenue") / F.nullif(F.sum("revenue").over(everyone), F.lit(0)), F.lit(0)), 4).cast("double"),
        )
        .withColumn("revenue", F.col("revenue").cast("decimal(18,2)"))
    )


def segment_movement(segments: DataFrame) -> DataFrame:
    """Customers per (previous segment, segment): who moved where since the previous run, and who stayed."""
    return segments.groupBy(F.col("previous_segment").alias("from_segment"), F.col("segment").alias("to_segment")).agg(
        F.count("*").alias("customers")
    )
