"""clean: bronze batch -> typed silver tables; rows that break a rule -> quarantine, with the reason.

Silver holds the current state of each shop entity: one row per `id` (the latest version by `updated_at`),
columns cast to the canonical types. A row that breaks a rule is never dropped silently: it goes to
`silver/_quarantine/<table>` with the rule, a reason naming the column and value, the source row as JSON
and the run id. Rules, first match wins:

- `null_key`: `id` or a required reference (`orders.customer_id`, ...) is null;
- `invalid_value`: a timestamp or date the source wrote that cannot be read as one;
- `non_positive_amount`: an order total, a quantity or a unit price that is not positive;
- `out_of_range`: a review rating outside 1-5;
- `future_timestamp`: `created_at` or `updated_at` after the end of the run date;
- `duplicate`: an order or cart line repeating an earlier line's order/cart and product (a double submit);
- `orphan`: a reference to a row that is not in the parent's silver table (children of quarantined rows
  follow them).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from sqlalchemy import Date, DateTime, Table

from jobs import shop_schema
from jobs.config import Settings
from jobs.lake import Lake
from jobs.spark import spark_session
from jobs.types import canonical_schema

log = logging.getLogger(__name__)

#: Columns whose value must be positive: table -> columns (amounts in shop currency, quantities in units).
POSITIVE_COLUMNS: dict[str, tuple[str, ...]] = {
    "orders": ("total_amount",),
    "order_items": ("quantity", "unit_price"),
    "cart_items": ("quantity", "unit_price"),
    "products": ("price",),
}
#: A line repeating these columns of an earlier line (lower id) is a duplicate.
DUPLICATE_KEYS: dict[str, tuple[str, ...]] = {
    "order_items": ("order_id", "product_id"),
    "cart_items": ("cart_id", "product_id"),
}
RATING_RANGE = (1, 5)
QUARANTINE_TABLE = "_quarantine/{table}"


@dataclass(frozen=True)
class Check:
    """One validity rule on a table: the rows matching `failed` are quarantined with `reason`."""

    rule: str
    failed: Column
    reason: Column


def run(run_date: date, settings: Settings, run_id: str) -> dict[str, dict[str, int]]:
    """Clean the run date's bronze batch of every table; returns silver and quarantined rows per table."""
    counts: dict[str, dict[str, int]] = {}
    with spark_session(settings, "clean") as spark:
        lake = Lake(spark, settings.lake_dir)
        for name in shop_schema.SHOP_TABLES:
            table = shop_schema.metadata.tables[name]
            batch = lake.read("bronze", name).where(F.col("_batch_id") == run_date.isoformat())
            parents = {
                column: lake.read("silver", parent).select("id")
                for column, parent in shop_schema.FOREIGN_KEYS.get(name, ())
            }
            flagged = flag_invalid_rows(batch, table, run_date, parents)
            # Used three times below (silver, quarantine, counts): keep the rows rather than recompute them.
            flagged = flagged.persist()
            lake.overwrite(current_state(flagged.where(F.col("_rule").isNull()), table), "silver", name)
            lake.replace_partition(
                quarantined(flagged.where(F.col("_rule").isNotNull()), run_date, run_id),
                "silver", QUARANTINE_TABLE.format(table=name), {"run_date": run_date},
            )
            counts[name] = row_counts(flagged)
            flagged.unpersist()
            log.info("silver/%s: %d rows, %d quarantined", name, counts[name]["silver"], counts[name]["quarantined"])
    return counts


def row_counts(flagged: DataFrame) -> dict[str, int]:
    """Rows kept in silver (distinct valid ids) and rows quarantined, in one pass over the flagged rows."""
    row = flagged.agg(
        F.count_distinct(F.when(F.col("_rule").isNull(), F.col("id"))).alias("silver"),
        F.count(F.col("_rule")).alias("quarantined"),
    ).first()
    return {"silver": int(row["silver"]), "quarantined": int(row["quarantined"])}


def flag_invalid_rows(batch: DataFrame, table: Table, run_date: date,
                      parents: dict[str, DataFrame]) -> DataFrame:
    """Typed rows of one table with `_rule` and `_reason` set where a rule fails (null when valid).

    `parents` maps each reference column to the parent's valid keys (a DataFrame with column `id`).
    """
    typed = with_canonical_types(batch, table)
    checks = row_checks(table, run_date)
    flagged = typed.withColumns({"_rule": _first(checks, "rule"), "_reason": _first(checks, "reason")})
    flagged = flagged.transform(with_duplicate_rule, table.name)
    for column, parent_keys in parents.items():
        flagged = flagged.transform(with_orphan_rule, column, parent_keys, _parent_of(table.name, column))
    return flagged


def with_canonical_types(batch: DataFrame, table: Table) -> DataFrame:
    """Cast bronze columns to the canonical types; keep raw date/time text and the source row as JSON."""
    schema = canonical_schema(table)
    temporal = [column.name for column in table.columns if isinstance(column.type, (DateTime, Date))]
    return batch.select(
        *[F.col(field.name).try_cast(field.dataType).alias(field.name) for field in schema.fields],
        *[F.col(name).alias(f"_raw_{name}") for name in temporal],
        F.to_json(F.struct(*[F.col(column.name) for column in table.columns])).alias("_source_row"),
    )


def row_checks(table: Table, run_date: date) -> list[Check]:
    """The rules that look at one row at a time, in order of precedence."""
    name = table.name
    end_of_day = datetime.combine(run_date + timedelta(days=1), time.min)
    checks = [Check("null_key", F.col("id").isNull(), F.lit(f"{name}.id is null"))]
    for column, parent in shop_schema.FOREIGN_KEYS.get(name, ()):
        checks.append(Check("null_key", F.col(column).isNull(),
                            F.lit(f"{name}.{column} is null: every {name} row needs its {parent} row")))
    for column in table.columns:
        if isinstance(column.type, (DateTime, Date)):
            raw = F.col(f"_raw_{column.name}")
            checks.append(Check(
                "invalid_value", raw.isNotNull() & F.col(column.name).isNull(),
                F.format_string(f"{name}.{column.name} = '%s': not a valid {'timestamp' if isinstance(column.type, DateTime) else 'date'}", raw),
            ))
    for column in POSITIVE_COLUMNS.get(name, ()):
        checks.append(Check("non_positive_amount", F.col(column) <= 0,
                            F.format_string(f"{name}.{column} = %s: must be > 0", F.col(column).cast("string"))))
    if name == "reviews":
        low, high = RATING_RANGE
        checks.append(Check("out_of_range", ~F.col("rating").between(low, high),
                            F.format_string(f"reviews.rating = %s: must be {low} to {high}", F.col("rating").cast("string"))))
    for column in ("created_at", "updated_at"):
        checks.append(Check(
            "future_timestamp", F.col(column) >= F.lit(end_of_day),
            F.format_string(f"{name}.{column} = %s: after the run date {run_date.isoformat()}", F.col(column).cast("string")),
        ))
    return checks


def with_duplicate_rule(flagged: DataFrame, table_name: str) -> DataFrame:
    """Flag a line that repeats an earlier valid line's key columns (the earliest `id` is kept)."""
    keys = DUPLICATE_KEYS.get(table_name)
    if not keys:
        return flagged
    earliest = F.min(F.when(F.col("_rule").isNull(), F.col("id"))).over(Window.partitionBy(*keys))
    is_duplicate = F.col("_rule").isNull() & (F.col("id") != earliest)
    reason = F.format_string(
        f"{table_name}: repeats line id %s ({', '.join(keys)} equal)", earliest.cast("string")
    )
    return flagged.withColumns({
        "_reason": F.when(is_duplicate, reason).otherwise(F.col("_reason")),
        "_rule": F.when(is_duplicate, F.lit("duplicate")).otherwise(F.col("_rule")),
    })


def with_orphan_rule(flagged: DataFrame, column: str, parent_keys: DataFrame, parent: str) -> DataFrame:
    """Flag rows whose `column` names no row of the parent's silver table."""
    marker = f"_has_{column}"
    keys = parent_keys.select(F.col("id").alias(f"_parent_{column}"), F.lit(True).alias(marker)).distinct()
    joined = flagged.join(keys, flagged[column] == keys[f"_parent_{column}"], "left")
    is_orphan = F.col("_rule").isNull() & F.col(marker).isNull()
    reason = F.format_string(f"{column} = %s: no such {parent}.id (or it is quarantined)", F.col(column).cast("string"))
    return joined.withColumns({
        "_reason": F.when(is_orphan, reason).otherwise(F.col("_reason")),
        "_rule": F.when(is_orphan, F.lit("orphan")).otherwise(F.col("_rule")),
    }).drop(marker, f"_parent_{column}")


def current_state(valid: DataFrame, table: Table) -> DataFrame:
    """One row per id, its latest version by `updated_at` (ties: the highest id wins, deterministically)."""
    latest = Window.partitionBy("id").orderBy(F.col("updated_at").desc(), F.col("_source_row").desc())
    return (
        valid.withColumn("_version", F.row_number().over(latest))
        .where(F.col("_version") == 1)
        .select(*[column.name for column in table.columns])
    )


def quarantined(rejected: DataFrame, run_date: date, run_id: str) -> DataFrame:
    """The quarantine rows: which row, which rule, why, the source row, and which run."""
    return rejected.select(
        F.col("id"),
        F.col("_rule").alias("rule"),
        F.col("_reason").alias("reason"),
        F.col("_source_row").alias("source_row"),
        F.lit(run_id).alias("run_id"),
        F.lit(run_date).alias("run_date"),
    )


def _first(checks: list[Check], attribute: str) -> Column:
    """The attribute of the first failing check, or null when every check passes."""
    expression = None
    for check in checks:
        value = F.lit(check.rule) if attribute == "rule" else check.reason
        expression = F.when(check.failed, value) if expression is None else expression.when(check.failed, value)
    return expression.otherwise(F.lit(None).cast("string"))


def _parent_of(table_name: str, column: str) -> str:
    return dict(shop_schema.FOREIGN_KEYS[table_name])[column]
