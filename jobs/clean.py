"""clean: the run date's bronze batch -> silver, the current state of each shop entity; bad rows -> quarantine.

Silver holds one row per `id`: the latest version by `updated_at`, columns cast to the canonical types.
An incremental batch is applied with one Delta MERGE per table (inserts, updates, deletes), so a night
touches only what changed; an older version never overwrites a newer one. A full batch (first run,
`crm run --full`) rebuilds the table. A key leaves silver when the shop deleted it (`_op = 'D'`), when its
newest version breaks a rule, or when its parent left silver (it follows its parent into quarantine).

A row that breaks a rule is never dropped silently: it goes to `silver/_quarantine/<table>` (partition
`run_date`) with the rule, a reason naming the column and value, the source row as JSON and the run id.
Rules on rows, first match wins:

- `wrong_type`: the source gave a value of a type the column cannot hold (`_unreadable`, set by the reader:
  e.g. a string in a document's key field, an amount that is not a number); the reason names the field, the
  value and what was expected (`orders.total_amount = 'abc': not a number`). A problem only in a personal
  text field is a field rule instead (below);
- `null_key`: `id` or a required reference (`order_items.order_id`, ...) is null (`orders.customer_id` is
  not required: a guest order has none, `shop_schema.OPTIONAL_REFERENCES`);
- `invalid_value`: a timestamp or date the source wrote that cannot be read as one;
- `non_positive_amount`: a unit price, a cart quantity or a product price that is not positive;
- `zero_quantity`: an order line of 0 units (a negative quantity is a returned unit and is kept, as is a
  negative order total: a credit note);
- `out_of_range`: a review rating outside 1-5;
- `future_timestamp`: `created_at` or `updated_at` after the end of the run date;
- `duplicate_key`: the batch holds two or more *different* rows with the same `id` (a batch reads each key
  once, so the source's key is not unique): every copy is quarantined, whatever else it breaks, and none is
  applied: silver keeps the version it had (a new key stays out, with its children as orphans). Identical
  copies are one row read twice and kept once;
- `duplicate`: only with `shop.repeated_lines: quarantine`, an order or cart line repeating an earlier
  line's order/cart and product (a double submit); by default (`sum`) such lines are kept and count
  together, as real shops repeat a product on several lines of one invoice on purpose;
- `orphan`: a reference to a row that is not in the parent's silver table (children of quarantined or
  deleted rows follow them). The batch's rows are checked every night; the table's other silver rows only
  when a parent may have lost a key since the version they were last checked against
  (`silver/_parents_checked`), so a night where no parent lost one reads no parent's whole table for them.

Rules on fields (`FIELD_COLUMNS`: customers' e-mail, names and phone, addresses, review and inquiry text):
the field is nulled, the row stays in silver (a customer keeps their orders, items and reviews, with
`has_email` false in the CRM), and the quarantine gets one record per field with `column` set (null for
a row rule) and a reason naming table, column, id and value. First match per field:

- `wrong_type`: the reader could not read the value (not valid UTF-8, a sub-document where text belongs);
- `invalid_email`: an e-mail address that is not one (`EMAIL_PATTERN`);
- `invalid_phone`: a phone number with other characters than digits, spaces, `()./-` and a leading `+`, or
  fewer than `PHONE_MIN_DIGITS` digits;
- `invalid_text`: control characters (line breaks and tabs are fine in `body`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from sqlalchemy import Date, DateTime, Table

from core import shop_schema
from core.config import Settings
from core.documents import UNREADABLE
from core.lake import ArrowLake, Lake, LakeLayout
from core.rundate import end_of
from core.spark import code_generation_for, for_each_table_after_parents, spark_session
from core.types import canonical_schema
from jobs.extract import BRONZE_COLUMNS, STATE_TABLE, later_night

log = logging.getLogger(__name__)

#: Columns whose value must be positive: table -> columns (amounts in shop currency, quantities in units).
#: Order totals and order-line quantities may be negative: credit notes and returns (`NONZERO_COLUMNS`).
POSITIVE_COLUMNS: dict[str, tuple[str, ...]] = {
    "order_items": ("unit_price",),
    "cart_items": ("quantity", "unit_price"),
    "products": ("price",),
}
#: Columns that may be negative (returned units) but not zero (a line of nothing).
NONZERO_COLUMNS: dict[str, tuple[str, ...]] = {"order_items": ("quantity",)}
#: With `shop.repeated_lines: quarantine`, a line repeating these columns of an earlier line (lower id) is a
#: duplicate (a double submit); by default (`sum`) repeated lines are kept and count together.
DUPLICATE_KEYS: dict[str, tuple[str, ...]] = {"order_items": ("order_id", "product_id"), "cart_items": ("cart_id", "product_id")}
RATING_RANGE = (1, 5)
#: What an e-mail address must look like: something, one @, a domain with a dot, no spaces.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s.]+$"
#: What a phone number may hold: digits, spaces, ( ) . / - and a leading +; at least PHONE_MIN_DIGITS digits.
PHONE_PATTERN = r"^\+?[0-9 ()./-]+$"
PHONE_MIN_DIGITS = 5
#: Personal text fields: a bad value is nulled and quarantined as a field (rule, column), the row stays, so a
#: customer and their orders, items and reviews are not lost for a cosmetic field. Table -> columns.
FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("email", "first_name", "last_name", "phone"),
    "addresses": ("line1", "city", "postal_code"),
    "reviews": ("title", "body"),
    "inquiries": ("subject", "body"),
}
#: Free text where line breaks and tabs are fine; in the other field columns no control character is.
MULTILINE_COLUMNS = frozenset({"body"})
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"
MULTILINE_CONTROL_CHARACTERS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
#: `_unreadable` as the readers write it: a document shop's label first, then problems joined by "; ", each
#: starting with `<table>.<column>` (a document's also ` (field <path>)`) and ` = <value>: <what was expected>`.
UNREADABLE_LABEL = r"^\S+ \(collection [^)]*\): "
UNREADABLE_COLUMN = r"^\S*?\.(\w+)(?: \(field [^)]*\))? = "
QUARANTINE_TABLE = "_quarantine/{table}"
APPLIED_TABLE = "_applied"
#: Per batch and table: the table's silver version before the batch was first applied (`silver_versions_before`).
APPLIED_SCHEMA = pa.schema([("table", pa.string()), ("batch_id", pa.string()), ("version_before", pa.int64()), ("run_id", pa.string())])
#: Per batch, table and parent: the parent's silver version the table's rows were last checked against for
#: orphans (`orphan_checks`); partitioned by `batch_id`, written with delta-rs (no Spark job).
PARENTS_CHECKED_TABLE = "_parents_checked"
PARENTS_CHECKED_SCHEMA = pa.schema(
    [
        ("table", pa.string()),
        ("parent", pa.string()),
        ("parent_version", pa.int64()),
        ("parent_committed_at_ms", pa.int64()),
        ("run_id", pa.string()),
        ("batch_id", pa.string()),
    ]
)
#: Delta operations that never take a key out of a table (a MERGE counts its deleted rows in its metrics).
KEY_KEEPING_OPERATIONS = frozenset({"SET TBLPROPERTIES", "ADD COLUMNS", "UNSET TBLPROPERTIES", "OPTIMIZE"})


@dataclass(frozen=True)
class Check:
    """One validity rule on a table: the rows matching `failed` are quarantined with `reason`."""

    rule: str
    failed: Column
    reason: Column


@dataclass(frozen=True)
class FieldCheck:
    """One validity rule on a field: where `failed`, the field is nulled and quarantined with `reason`."""

    column: str
    rule: str
    failed: Column
    reason: Column


def run(run_date: date, settings: Settings, run_id: str) -> dict[str, dict[str, object]]:
    """Apply the run date's bronze batch of every table to silver; returns per table what changed."""
    counts: dict[str, dict[str, object]] = {}
    with spark_session(settings, "clean") as spark:
        lake = Lake(spark, settings.lake_location)
        batch = batch_state(lake, run_date)
        if not batch:  # no batch to apply (a backfill behind the lake extracts none): silver stays as it is
            later = later_night(lake, run_date)
            log.warning(
                "no bronze batch for %s%s: silver left as it is", run_date, f" (the lake holds the later night of {later})" if later else ""
            )
            return {name: {"skipped": True, "later_night": later} for name in shop_schema.SHOP_TABLES}
        before = silver_versions_before(lake, run_date, run_id)
        checked_before = parents_checked_before(lake, run_date)
        checked: dict[str, dict[str, ParentVersion]] = {}
        duplicate_keys = DUPLICATE_KEYS if settings.shop.repeated_lines == "quarantine" else {}
        # Each table once its parents are done, several at once.
        with code_generation_for(spark, settings, input_rows(lake, batch)):
            results = for_each_table_after_parents(
                lambda name: clean_table(
                    lake,
                    name,
                    run_date,
                    run_id,
                    batch.get(name, {"mode": "full"})["mode"],
                    before.get(name),
                    duplicate_keys.get(name, ()),
                    checked_before.get(name),
                ),
                {name: [parent for _, parent in shop_schema.FOREIGN_KEYS.get(name, ())] for name in shop_schema.SHOP_TABLES},
                settings.spark.parallel_tables,
            )
        for name in shop_schema.SHOP_TABLES:
            table_counts = results[name]
            checked[name] = table_counts.pop("parents_checked")
            counts[name] = table_counts
            log.info("silver/%s: %s", name, table_counts)
        record_parents_checked(lake, run_date, run_id, checked)
    return counts


def input_rows(lake: LakeLayout, batch: dict[str, dict[str, object]]) -> int:
    """The rows `clean` reads, from the logs (no Spark job): the batch's (`batch_state`: changed and deleted, as
    extract counted them) and the silver tables' (their files' row counts; counted from the files' footers
    where the log has none)."""
    rows = sum((state["changed"] or 0) + (state["deleted"] or 0) for state in batch.values())
    arrow = ArrowLake(lake.root)
    for name in shop_schema.SHOP_TABLES:
        if arrow.exists("silver", name):
            counted = arrow.latest_commit("silver", name)["rows_at_most"]
            rows += arrow.count_rows("silver", name) if counted is None else counted
    return rows


def silver_versions_before(lake: Lake, run_date: date, run_id: str) -> dict[str, int | None]:
    """The version of each silver table before the run date's batch was first applied (`silver/_applied`).

    Recorded by the first run of a date and reused by its reruns, so a rerun (after a failure halfway, or
    not) judges the batch against the same earlier state and reaches the same silver and quarantine.
    """
    arrow = ArrowLake(lake.root)  # read and written without a Spark job: the log and one small file
    if arrow.exists("silver", APPLIED_TABLE):
        rows = arrow.read("silver", APPLIED_TABLE, where=pc.field("batch_id") == run_date.isoformat()).to_pylist()
        if rows:
            return {row["table"]: row["version_before"] for row in rows}
    versions = {name: lake.version("silver", name) for name in shop_schema.SHOP_TABLES}
    recorded = pa.Table.from_pylist(
        [
            {"table": name, "batch_id": run_date.isoformat(), "version_before": version, "run_id": run_id}
            for name, version in versions.items()
        ],
        schema=APPLIED_SCHEMA,
    )
    arrow.upsert(recorded, "silver", APPLIED_TABLE, keys=["table", "batch_id"])
    return versions


@dataclass(frozen=True)
class ParentVersion:
    """A version of a parent's silver table: its number and commit time (ms since the epoch), which tells a
    table dropped and written again (its versions start at 0 again) from the one that was checked."""

    version: int
    committed_at_ms: int


def parents_checked_before(lake: LakeLayout, run_date: date) -> dict[str, dict[str, ParentVersion]]:
    """Per table and parent, the parent's silver version the table was last checked against for orphans by
    an earlier batch than the run date's (`silver/_parents_checked`); a table without a record is missing.

    An earlier batch, not this one: a rerun of the date decides as its first run did, and reaches the
    same quarantine."""
    if not lake.exists("silver", PARENTS_CHECKED_TABLE):
        return {}
    rows = ArrowLake(lake.root).read("silver", PARENTS_CHECKED_TABLE, where=pc.field("batch_id") < run_date.isoformat())
    latest: dict[str, dict[str, tuple[str, ParentVersion]]] = {}
    for row in rows.to_pylist():
        found = latest.setdefault(row["table"], {}).get(row["parent"])
        if found is None or row["batch_id"] > found[0]:
            latest[row["table"]][row["parent"]] = (row["batch_id"], ParentVersion(row["parent_version"], row["parent_committed_at_ms"]))
    return {table: {parent: version for parent, (_, version) in parents.items()} for table, parents in latest.items()}


def record_parents_checked(lake: LakeLayout, run_date: date, run_id: str, checked: dict[str, dict[str, ParentVersion]]) -> None:
    """Record the parents' versions each table was checked against tonight (one delta-rs commit, replacing
    a first run's record of the date)."""
    rows = [
        {
            "table": name,
            "parent": parent,
            "parent_version": version.version,
            "parent_committed_at_ms": version.committed_at_ms,
            "run_id": run_id,
            "batch_id": run_date.isoformat(),
        }
        for name, parents in checked.items()
        for parent, version in parents.items()
    ]
    table = pa.Table.from_pylist(rows, schema=PARENTS_CHECKED_SCHEMA)
    ArrowLake(lake.root).replace_partition(table, "silver", PARENTS_CHECKED_TABLE, {"batch_id": run_date.isoformat()})


def parents_now(
    lake: LakeLayout, name: str, checked_before: dict[str, ParentVersion] | None
) -> tuple[dict[str, ParentVersion], list[tuple[str, str]]]:
    """Per parent of the table, its current silver version (the state the orphan check reads), and the
    (column, parent) pairs whose parent may have lost a key since the version `checked_before` names; one
    read of each parent's log."""
    current: dict[str, ParentVersion] = {}
    losing: list[tuple[str, str]] = []
    for column, parent in shop_schema.FOREIGN_KEYS.get(name, ()):
        log = lake.delta_table("silver", parent)
        version = log.version()
        checked = (checked_before or {}).get(parent)
        depth = 1 if checked is None or checked.version > version else version - checked.version + 1
        commits = {int(commit["version"]): commit for commit in log.history(depth)}
        current[parent] = ParentVersion(version, int(commits[version]["timestamp"]))
        if lost_keys_since(commits, checked):
            losing.append((column, parent))
    return current, losing


def lost_keys_since(commits: dict[int, dict], checked: ParentVersion | None) -> bool:
    """Whether a parent's silver may have lost a key since the version a child was checked against, from its
    commits (version -> history entry) back to that version: a commit since then that deleted rows (a MERGE's
    `numTargetRowsDeleted`), or any other operation than one that keeps every key (an overwrite, a delete, a
    restore); True when that version is not in the table's history any more (never checked, dropped and
    written again, or its log cleaned up)."""
    if checked is None:
        return True
    since = commits.get(checked.version)
    if since is None or int(since["timestamp"]) != checked.committed_at_ms:
        return True
    for version, commit in commits.items():
        if version <= checked.version or commit["operation"] in KEY_KEEPING_OPERATIONS:
            continue
        deleted = (commit.get("operationMetrics") or {}).get("numTargetRowsDeleted")
        if commit["operation"] != "MERGE" or deleted is None or int(deleted) > 0:
            return True
    return False


def batch_state(lake: LakeLayout, run_date: date) -> dict[str, dict[str, object]]:
    """Per table, extract's record of the run date's bronze batch: `mode` (a full snapshot or incremental
    changes) and its `changed` and `deleted` rows; empty when there is no batch."""
    if not lake.exists("bronze", STATE_TABLE):
        return {}
    columns = ["table", "mode", "changed", "deleted"]
    rows = ArrowLake(lake.root).read("bronze", STATE_TABLE, columns, where=pc.field("batch_id") == run_date.isoformat())
    return {row.pop("table"): row for row in rows.to_pylist()}


def clean_table(
    lake: Lake,
    name: str,
    run_date: date,
    run_id: str,
    mode: str,
    version_before: int | None,
    duplicate_keys: tuple[str, ...] = (),
    checked_before: dict[str, ParentVersion] | None = None,
) -> dict[str, object]:
    """Apply one table's batch to silver (MERGE, or a rebuild from a full batch) and quarantine its bad rows;
    returns what changed, and in `parents_checked` the parents' versions its silver now holds no orphan of.

    The batch is judged against silver as it was before the batch (`version_before`, Delta time travel)
    and applied to silver as it is now, so applying it twice changes nothing the second time.
    `duplicate_keys`: quarantine lines repeating an earlier line's values of these columns (opt-in).
    `checked_before`: per parent, the version an earlier batch checked this table's silver against
    (`parents_checked_before`; none: never). Silver rows outside the batch are checked for orphans only
    against a parent that may have lost a key since; an empty batch with no such parent changes nothing
    and writes nothing.
    """
    table = shop_schema.metadata.tables[name]
    rebuild = mode == "full" or version_before is None
    parents_checked, losing = parents_now(lake, name, checked_before)
    target = QUARANTINE_TABLE.format(table=name)
    if (
        not rebuild
        and not losing
        and not lake.has_rows("bronze", name, {"_batch_id": run_date.isoformat()})
        and lake.exists("silver", target)
        and not lake.has_rows("silver", target, {"run_date": run_date})
    ):
        return {"mode": "incremental", "inserted": 0, "updated": 0, "deleted": 0, "quarantined": 0, "parents_checked": parents_checked}
    batch = lake.read("bronze", name).where(F.col("_batch_id") == run_date.isoformat())
    carried = [c for c in batch.columns if c not in {col.name for col in table.columns} and c not in BRONZE_COLUMNS]
    parents = {column: lake.read("silver", parent).select("id") for column, parent in shop_schema.FOREIGN_KEYS.get(name, ())}
    existing = None if rebuild else lake.read("silver", name, version=version_before)
    # Silver written by an older version may lack a column the shop model has gained: the write adds it.
    grown = version_before is not None and not {column.name for column in table.columns} <= set(
        (existing if existing is not None else lake.read("silver", name, version=version_before)).columns
    )
    evolve = bool(carried) or grown
    # Checkpointed: silver changes below, and these rows must not be recomputed against the new silver.
    flagged = flag_invalid_rows(
        batch.where(F.col("_op") == "U"), table, run_date, parents, existing, carried, duplicate_keys
    ).localCheckpoint(eager=True)
    deletes = batch.where(F.col("_op") == "D").select("id").distinct()
    valid = current_state(flagged.where(F.col("_rule").isNull()), table, carried)
    rejected = flagged.where(F.col("_rule").isNotNull())
    fields = quarantined_fields(flagged.where(F.col("_rule").isNull()), run_date, run_id)
    if rebuild:
        rows = valid.join(deletes, "id", "left_anti")
        if version_before is not None:  # a full reload: an ambiguous key keeps the version silver had
            ambiguous = rejected.where(F.col("_rule") == "duplicate_key").select("id").distinct()
            earlier = lake.read("silver", name, version=version_before).join(ambiguous, "id", "left_semi")
            rows = rows.unionByName(earlier, allowMissingColumns=True).select(*rows.columns)
        lake.overwrite(rows, "silver", name, evolve=evolve)
        applied = {"inserted": lake.rows_written("silver", name), "updated": 0, "deleted": 0}
        quarantine = quarantined(rejected, run_date, run_id).unionByName(fields)
    else:
        in_silver = existing.select("id", F.col("updated_at").alias("_silver_updated_at"))
        # Rows the batch decides (a valid version, checked above; a rejected one, taken out; a delete) are not
        # checked again; the others can be orphaned, and only by a parent that lost a key since they were last
        # checked (they were valid then). An ambiguous key (`duplicate_key`) keeps silver's version: checked too,
        # or a parent's loss on this night would leave it orphaned until the parent lost another key.
        decided = (
            flagged.where((F.col("_rule").isNull()) | (F.col("_rule") != "duplicate_key"))
            .select("id")
            .unionByName(deletes)
            .where(F.col("id").isNotNull())
        )
        orphaned = orphaned_by_parents(existing, name, {column: parents[column] for column, _ in losing}, decided)
        # A key leaves silver when it is deleted, when its newest version is rejected, or when it is orphaned;
        # an ambiguous key (`duplicate_key`) keeps the version silver had: nothing of the batch is applied.
        rejected_newest = (
            rejected.where(F.col("_rule") != "duplicate_key")
            .join(valid.select("id"), "id", "left_anti")
            .join(in_silver, "id", "left_semi")
            .select("id", "updated_at")
        )
        shop_deletes = deletes.join(rejected_newest, "id", "left_anti").join(in_silver, "id", "left_semi")
        changes = (
            # Rows read again (the overlap) whose version silver already has change nothing.
            valid.join(in_silver, (valid["id"] == in_silver["id"]) & (valid["updated_at"] == F.col("_silver_updated_at")), "left_anti")
            .withColumn("_action", F.lit("upsert"))
            .unionByName(_removals(rejected_newest, "remove", valid))
            .unionByName(_removals(shop_deletes.withColumn("updated_at", F.lit(None).cast("timestamp")), "delete", valid))
            .unionByName(_removals(orphaned.select("id", F.lit(None).cast("timestamp").alias("updated_at")), "delete", valid))
        ).localCheckpoint(eager=True)
        applied = {"inserted": 0, "updated": 0, "deleted": 0}
        if not changes.isEmpty():
            applied = lake.merge(
                changes,
                "silver",
                name,
                keys=["id"],
                delete_when="s._action = 'delete' OR (s._action = 'remove' AND (s.updated_at IS NULL OR s.updated_at >= t.updated_at))",
                update_when="s._action = 'upsert' AND s.updated_at >= t.updated_at",
                insert_when="s._action = 'upsert'",
                control_columns=["_action"],
                evolve=evolve,
            )
        quarantine = quarantined(rejected, run_date, run_id).unionByName(quarantined(orphaned, run_date, run_id)).unionByName(fields)
    # Not checkpointed: its rows come from checkpointed ones, so counting and writing them twice is cheap.
    bad_rows = quarantine.count()
    # A night without bad rows writes nothing, unless a first run of this date had some (a rerun replaces
    # them); the (empty) table exists from the first night on, for analysts' queries.
    if bad_rows or not lake.exists("silver", target) or lake.has_rows("silver", target, {"run_date": run_date}):
        # Evolving: a lake from before field-level quarantine gains the `column` column.
        lake.replace_partition(quarantine, "silver", target, {"run_date": run_date}, evolve=True)
    counts = {"mode": "full" if rebuild else "incremental", **applied, "quarantined": bad_rows, "parents_checked": parents_checked}
    return counts


def _removals(keys: DataFrame, action: str, like: DataFrame) -> DataFrame:
    """Rows of `like`'s columns for keys to take out of silver: `id`, `updated_at`, `_action`, the rest null."""
    return keys.select(
        *[
            F.col(field.name) if field.name in ("id", "updated_at") else F.lit(None).cast(field.dataType).alias(field.name)
            for field in like.schema.fields
        ],
        F.lit(action).alias("_action"),
    )


def orphaned_by_parents(existing: DataFrame, name: str, parents: dict[str, DataFrame], in_batch: DataFrame) -> DataFrame:
    """Silver rows (not in this batch) whose parent is no longer in the parent's silver, flagged as orphans."""
    table = shop_schema.metadata.tables[name]
    rows = None
    for column, parent_keys in parents.items():
        keys = parent_keys.select(F.col("id").alias("_parent"))
        children = existing.where(F.col(column).isNotNull()).join(keys, existing[column] == F.col("_parent"), "left_anti")
        flagged = children.select(
            *existing.columns,
            F.lit("orphan").alias("_rule"),
            F.format_string(
                f"{column} = %s: {_parent_of(name, column)}.id %s left silver (deleted or quarantined)",
                F.col(column).cast("string"),
                F.col(column).cast("string"),
            ).alias("_reason"),
        )
        rows = flagged if rows is None else rows.unionByName(flagged)
    if rows is None:
        return existing.limit(0).withColumns(
            {"_rule": F.lit(None).cast("string"), "_reason": F.lit(None).cast("string"), "_source_row": F.lit(None).cast("string")}
        )
    rows = rows.dropDuplicates(["id"]).join(in_batch, "id", "left_anti")
    source_row = F.to_json(F.struct(*[F.col(c.name).cast("string") for c in table.columns]))
    return rows.withColumn("_source_row", source_row).localCheckpoint(eager=True)


def flag_invalid_rows(
    batch: DataFrame,
    table: Table,
    run_date: date,
    parents: dict[str, DataFrame],
    existing: DataFrame | None = None,
    carried: list[str] | tuple[str, ...] = (),
    duplicate_keys: tuple[str, ...] = (),
) -> DataFrame:
    """Typed rows of one table with `_rule` and `_reason` set where a rule fails (null when valid), and
    `_fields`: the field rules a valid row broke (column, rule, reason), those fields nulled.

    `parents` maps each reference column to the parent's valid keys (a DataFrame with column `id`);
    `existing` is the table's silver rows (an incremental batch's lines can repeat lines already there);
    `carried` are extra source columns kept as they are; `duplicate_keys` (opt-in, `DUPLICATE_KEYS`): a
    line repeating an earlier line's values of these columns is a duplicate.
    """
    typed = with_canonical_types(batch, table, carried)
    checks = row_checks(table, run_date)
    flagged = typed.withColumns({"_rule": _first(checks, "rule"), "_reason": _first(checks, "reason")})
    flagged = flagged.transform(with_duplicate_key_rule, table.name)
    flagged = flagged.transform(with_duplicate_rule, table.name, existing, duplicate_keys)
    for column, parent_keys in parents.items():
        flagged = flagged.transform(with_orphan_rule, column, parent_keys, _parent_of(table.name, column))
    return flagged.transform(with_field_rules, table.name)


def with_canonical_types(batch: DataFrame, table: Table, carried: list[str] | tuple[str, ...] = ()) -> DataFrame:
    """Cast bronze columns to the canonical types; keep raw date/time text and the source row as JSON."""
    schema = canonical_schema(table)
    temporal = [column.name for column in table.columns if isinstance(column.type, (DateTime, Date))]
    return batch.select(
        *[F.col(field.name).try_cast(field.dataType).alias(field.name) for field in schema.fields],
        *[F.col(name).cast("string").alias(name) for name in carried],
        *[F.col(name).alias(f"_raw_{name}") for name in temporal],
        F.col(UNREADABLE),
        F.to_json(F.struct(*[F.col(column.name) for column in table.columns])).alias("_source_row"),
    )


def row_checks(table: Table, run_date: date) -> list[Check]:
    """The rules that look at one row at a time, in order of precedence."""
    name = table.name
    end_of_day = end_of(run_date)
    checks = [
        Check("wrong_type", F.col(UNREADABLE).isNotNull() & ~_unreadable_only_in(FIELD_COLUMNS.get(name, ())), F.col(UNREADABLE)),
        Check("null_key", F.col("id").isNull(), F.lit(f"{name}.id is null")),
    ]
    for column, parent in shop_schema.FOREIGN_KEYS.get(name, ()):
        if column in shop_schema.OPTIONAL_REFERENCES.get(name, ()):
            continue
        checks.append(Check("null_key", F.col(column).isNull(), F.lit(f"{name}.{column} is null: every {name} row needs its {parent} row")))
    for column in table.columns:
        if isinstance(column.type, (DateTime, Date)):
            raw = F.col(f"_raw_{column.name}")
            checks.append(
                Check(
                    "invalid_value",
                    raw.isNotNull() & F.col(column.name).isNull(),
                    F.format_string(
                        f"{name}.{column.name} = '%s': not a valid {'timestamp' if isinstance(column.type, DateTime) else 'date'}", raw
                    ),
                )
            )
    for column in POSITIVE_COLUMNS.get(name, ()):
        checks.append(
            Check(
                "non_positive_amount",
                F.col(column) <= 0,
                F.format_string(f"{name}.{column} = %s: must be > 0", F.col(column).cast("string")),
            )
        )
    for column in NONZERO_COLUMNS.get(name, ()):
        checks.append(
            Check("zero_quantity", F.col(column) == 0, F.lit(f"{name}.{column} = 0: a line orders units (> 0) or returns them (< 0)"))
        )
    if name == "reviews":
        low, high = RATING_RANGE
        checks.append(
            Check(
                "out_of_range",
                ~F.col("rating").between(low, high),
                F.format_string(f"reviews.rating = %s: must be {low} to {high}", F.col("rating").cast("string")),
            )
        )
    for column in ("created_at", "updated_at"):
        checks.append(
            Check(
                "future_timestamp",
                F.col(column) >= F.lit(end_of_day),
                F.format_string(f"{name}.{column} = %s: after the run date {run_date.isoformat()}", F.col(column).cast("string")),
            )
        )
    return checks


def with_duplicate_key_rule(flagged: DataFrame, table_name: str) -> DataFrame:
    """Flag every copy of an `id` that the batch holds in different versions (`duplicate_key`): a batch reads
    each key once, so two different rows with one key are ambiguous, and none is chosen. Identical copies
    (every canonical column equal) are one row read twice, kept once by `current_state`."""
    copies = (
        flagged.where(F.col("id").isNotNull())
        .groupBy("id")
        .agg(F.countDistinct("_source_row").alias("_versions"), F.count(F.lit(1)).alias("_copies"))
        .where(F.col("_versions") > 1)
    )
    joined = flagged.join(copies, "id", "left")
    is_duplicate = F.col("_versions").isNotNull()
    reason = F.format_string(
        f"{table_name}.id = %s: %s different rows with this key in the batch (every copy quarantined; silver keeps "
        "the version it had, if any)",
        F.col("id").cast("string"),
        F.col("_versions").cast("string"),
    )
    return joined.withColumns(
        {
            "_reason": F.when(is_duplicate, reason).otherwise(F.col("_reason")),
            "_rule": F.when(is_duplicate, F.lit("duplicate_key")).otherwise(F.col("_rule")),
        }
    ).select(*flagged.columns)


def with_duplicate_rule(flagged: DataFrame, table_name: str, existing: DataFrame | None = None, keys: tuple[str, ...] = ()) -> DataFrame:
    """Flag a line that repeats an earlier valid line's `keys` columns (the earliest `id` is kept); no
    `keys` (the default, `shop.repeated_lines: sum`): nothing is flagged.

    Lines already in silver (`existing`, other than those this batch changes) count as earlier lines too.
    """
    if not keys:
        return flagged
    lines = flagged.where(F.col("_rule").isNull()).select("id", *keys)
    if existing is not None:
        lines = lines.unionByName(existing.join(flagged.select("id"), "id", "left_anti").select("id", *keys))
    earliest = lines.groupBy(*keys).agg(F.min("id").alias("_earliest"))
    joined = flagged.join(earliest, list(keys), "left")
    is_duplicate = F.col("_rule").isNull() & (F.col("id") != F.col("_earliest"))
    reason = F.format_string(f"{table_name}: repeats line id %s ({', '.join(keys)} equal)", F.col("_earliest").cast("string"))
    return (
        joined.withColumns(
            {
                "_reason": F.when(is_duplicate, reason).otherwise(F.col("_reason")),
                "_rule": F.when(is_duplicate, F.lit("duplicate")).otherwise(F.col("_rule")),
            }
        )
        .drop("_earliest")
        .select(*flagged.columns)
    )


def with_orphan_rule(flagged: DataFrame, column: str, parent_keys: DataFrame, parent: str) -> DataFrame:
    """Flag rows whose `column` names no row of the parent's silver table."""
    marker = f"_has_{column}"
    keys = parent_keys.select(F.col("id").alias(f"_parent_{column}"), F.lit(True).alias(marker)).distinct()
    joined = flagged.join(keys, flagged[column] == keys[f"_parent_{column}"], "left")
    # A null reference is no orphan: a required one was flagged null_key already, an optional one has no parent.
    is_orphan = F.col("_rule").isNull() & F.col(column).isNotNull() & F.col(marker).isNull()
    reason = F.format_string(f"{column} = %s: no such {parent}.id (or it is quarantined)", F.col(column).cast("string"))
    return joined.withColumns(
        {
            "_reason": F.when(is_orphan, reason).otherwise(F.col("_reason")),
            "_rule": F.when(is_orphan, F.lit("orphan")).otherwise(F.col("_rule")),
        }
    ).drop(marker, f"_parent_{column}")


def field_checks(table_name: str) -> list[FieldCheck]:
    """The rules on the table's personal text fields (`FIELD_COLUMNS`), per column in order of precedence."""
    checks = []
    for column in FIELD_COLUMNS.get(table_name, ()):
        value = F.col(column)
        named = f"{table_name}.{column} (id %s)"
        problem = _unreadable_problem(column)
        checks.append(
            FieldCheck(column, "wrong_type", problem.isNotNull(), F.format_string(f"{named} = %s", F.col("id").cast("string"), problem))
        )
        if column == "email":
            checks.append(
                FieldCheck(
                    column,
                    "invalid_email",
                    ~value.rlike(EMAIL_PATTERN),
                    F.format_string(f"{named} = '%s': not an e-mail address", F.col("id").cast("string"), value),
                )
            )
        if column == "phone":
            digits = F.length(F.regexp_replace(value, "[^0-9]", ""))
            checks.append(
                FieldCheck(
                    column,
                    "invalid_phone",
                    ~value.rlike(PHONE_PATTERN) | (digits < PHONE_MIN_DIGITS),
                    F.format_string(
                        f"{named} = '%s': not a phone number (digits, spaces, ()./- and a leading +; at least {PHONE_MIN_DIGITS} digits)",
                        F.col("id").cast("string"),
                        value,
                    ),
                )
            )
        control = MULTILINE_CONTROL_CHARACTERS if column in MULTILINE_COLUMNS else CONTROL_CHARACTERS
        checks.append(
            FieldCheck(
                column,
                "invalid_text",
                value.rlike(control),
                F.format_string(f"{named} = %s: holds control characters", F.col("id").cast("string"), _escaped(value)),
            )
        )
    return checks


def with_field_rules(flagged: DataFrame, table_name: str) -> DataFrame:
    """Add `_fields` (column, rule, reason of each field rule a valid row breaks, first rule per column) and
    null those fields; rows already rejected by a row rule keep their fields and get none."""
    checks = field_checks(table_name)
    columns = list(dict.fromkeys(check.column for check in checks))
    failures = []
    for column in columns:
        failure = None
        for check in (check for check in checks if check.column == column):
            found = F.struct(F.lit(column).alias("column"), F.lit(check.rule).alias("rule"), check.reason.alias("reason"))
            failure = F.when(check.failed, found) if failure is None else failure.when(check.failed, found)
        failures.append(failure)
    empty = F.array().cast("array<struct<column:string,rule:string,reason:string>>")
    if not failures:
        return flagged.withColumn("_fields", empty)
    found = F.filter(F.array(*failures), lambda failure: failure.isNotNull())
    with_fields = flagged.withColumn("_fields", F.when(F.col("_rule").isNull(), found).otherwise(empty))
    return with_fields.withColumns(
        {
            column: F.when(F.exists(F.col("_fields"), lambda failure: failure["column"] == column), F.lit(None).cast("string")).otherwise(
                F.col(column)
            )
            for column in columns
        }
    )


def current_state(valid: DataFrame, table: Table, carried: list[str] | tuple[str, ...] = ()) -> DataFrame:
    """One row per id, its latest version by `updated_at` (ties broken by the row's content, deterministically)."""
    latest = Window.partitionBy("id").orderBy(F.col("updated_at").desc(), F.col("_source_row").desc())
    return (
        valid.withColumn("_version", F.row_number().over(latest))
        .where(F.col("_version") == 1)
        .select(*[column.name for column in table.columns], *carried)
    )


def quarantined(rejected: DataFrame, run_date: date, run_id: str) -> DataFrame:
    """The quarantine rows: which row, which rule, why, the source row, which run; `column` null (the whole
    row is out of silver)."""
    return rejected.select(*_record(F.col("_rule"), F.col("_reason"), F.lit(None).cast("string"), run_date, run_id))


def quarantined_fields(valid: DataFrame, run_date: date, run_id: str) -> DataFrame:
    """The quarantine records of nulled fields of valid rows: the row stays in silver, `column` names the field.

    A key read twice identically gives one record per field."""
    return (
        valid.select("id", "_source_row", F.explode("_fields").alias("_field"))
        .select(*_record(F.col("_field.rule"), F.col("_field.reason"), F.col("_field.column"), run_date, run_id))
        .dropDuplicates(["id", "column", "rule", "reason", "source_row"])
    )


def _record(rule: Column, reason: Column, column: Column, run_date: date, run_id: str) -> list[Column]:
    """The columns of a quarantine record, in the table's order: id, rule, reason, source_row, run_id, run_date, column."""
    return [
        F.col("id"),
        rule.alias("rule"),
        reason.alias("reason"),
        F.col("_source_row").alias("source_row"),
        F.lit(run_id).alias("run_id"),
        F.lit(run_date).alias("run_date"),
        column.alias("column"),
    ]


def _first(checks: list[Check], attribute: str) -> Column:
    """The attribute of the first failing check, or null when every check passes."""
    expression = None
    for check in checks:
        value = F.lit(check.rule) if attribute == "rule" else check.reason
        expression = F.when(check.failed, value) if expression is None else expression.when(check.failed, value)
    return expression.otherwise(F.lit(None).cast("string"))


def _unreadable_problems() -> Column:
    """The problems `_unreadable` names, one per element (the document label dropped)."""
    return F.split(F.regexp_replace(F.col(UNREADABLE), UNREADABLE_LABEL, ""), "; ")


def _unreadable_only_in(columns: tuple[str, ...]) -> Column:
    """Whether every problem `_unreadable` names is about one of `columns` (then no row rule applies)."""
    if not columns:
        return F.lit(False)
    return F.forall(_unreadable_problems(), lambda problem: F.regexp_extract(problem, UNREADABLE_COLUMN, 1).isin(*columns))


def _unreadable_problem(column: str) -> Column:
    """What `_unreadable` says about `column` (the value and what was expected), or null."""
    about = F.filter(_unreadable_problems(), lambda problem: F.regexp_extract(problem, UNREADABLE_COLUMN, 1) == column)
    return F.when(F.size(about) > 0, F.regexp_extract(about[0], " = (.*)$", 1))


def _escaped(value: Column) -> Column:
    """Text as a JSON string (quoted, control characters escaped), to quote it in a reason."""
    return F.regexp_extract(F.to_json(F.array(value)), r"^\[(.*)\]$", 1)


def _parent_of(table_name: str, column: str) -> str:
    return dict(shop_schema.FOREIGN_KEYS[table_name])[column]
