"""extract: what changed in the shop since the last night -> bronze, the shop's append-only change log.

Each run writes one batch per table (`_batch_id` = the run date) with the source columns under their
canonical names (see `core/mapping.py`) plus `_batch_id`, `_run_id`, `_extracted_at` and `_op` (`U`: the
row as it is now; `D`: the row is gone). The batch is written with `replaceWhere` on `_batch_id`, so a
rerun of the same date replaces its own batch and nothing else.

What a batch holds:
- **full** (the first run of a table, or `crm run --full`): every row of the shop table. A full batch is a
  snapshot: keys absent from it are deleted, and `clean` rebuilds silver from it.
- **incremental** (every other night): the rows whose `updated_at` is after the table's watermark minus
  `extract.overlap_minutes` (a transaction that committed late with an older `updated_at` is still caught;
  rows read twice are harmless, silver keeps the latest version). Soft-deleted rows (the mapping's
  `deleted_when`) come as `_op = 'D'`. Hard deletes leave nothing to read: every
  `extract.reconcile_every_days` the shop's keys are compared with silver and the missing ones are written
  as `_op = 'D'` rows carrying only `id`.

Watermarks live in the lake table `bronze/_watermarks`, one row per table and batch, written after every
bronze batch of the run has committed. A batch starts from the watermark of the latest *earlier* batch, so
rerunning a date reads at least what its first run read, and a run killed before the watermarks commit
simply reads the same rows again.

Tables are read into Arrow record batches (`core/source_reader.py`: ADBC for PostgreSQL, connectorx for
MySQL/MariaDB, sqlite3 for SQLite) in ranges of the integer key (`shop.rows_per_partition` rows each) and
streamed into bronze by delta-rs, so no table is ever held whole in memory and no JVM starts. Columns are
read as the canonical types, so bronze looks the same whatever the source database; dates, timestamps and
amounts are read as the source's text (SQLite has no such types) and typed, amounts here and the rest by
`clean`, which quarantines a value it cannot read. A value that does not fit its column's type at all (an
amount that is not a number, text that is not UTF-8) is nulled and named in `_unreadable`, and `clean`
quarantines its row as `wrong_type`, or, in a personal text field, only the field.

A document shop (`mongodb://`) is read by `core.documents.DocumentShop` instead of `RelationalShop`: the
same watermarks, overlap, reconcile and bronze batches, with one cursor per collection filtered on its
`updatedAt` field and each embedded array read as its child table.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from itertools import chain

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Date, DateTime, Numeric, text

from core import db, shop_schema
from core.config import Settings
from core.db import is_document_shop
from core.documents import UNREADABLE, DocumentShop
from core.lake import ArrowLake, LakeLayout
from core.mapping import CheckedTable, SourceMapping, absent_columns, check_source, load_mapping
from core.source_reader import SourceScope, read_batches
from core.spark import for_each_table
from core.types import bronze_arrow_type

log = logging.getLogger(__name__)

UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")  # Delta's (and Spark's) `timestamp`
#: What extraction adds to every bronze row; `_op` comes with the source row, the others with the batch.
#: `_unreadable` names the values a source could not read as their column's type (clean quarantines them).
BOOKKEEPING_FIELDS = (
    pa.field("_batch_id", pa.string()),
    pa.field("_run_id", pa.string()),
    pa.field("_extracted_at", UTC_TIMESTAMP),
    pa.field("_op", pa.string()),
    pa.field(UNREADABLE, pa.string()),
)
BRONZE_COLUMNS = tuple(field.name for field in BOOKKEEPING_FIELDS)
#: Added to the rows read: per batch, and `_unreadable` (null) when the reader did not set it.
BATCH_COLUMNS = tuple(name for name in BRONZE_COLUMNS if name != "_op")
STATE_TABLE = "_watermarks"
STATE_SCHEMA = pa.schema(
    [
        ("table", pa.string()),
        ("batch_id", pa.string()),
        ("mode", pa.string()),
        ("low_watermark", UTC_TIMESTAMP),
        ("high_watermark", UTC_TIMESTAMP),
        ("changed", pa.int64()),
        ("deleted", pa.int64()),
        ("reconciled", pa.bool_()),
        ("run_id", pa.string()),
        ("extracted_at", UTC_TIMESTAMP),
    ]
)
TIMESTAMP_LITERAL = "%Y-%m-%d %H:%M:%S.%f"


@dataclass(frozen=True)
class BatchState:
    """What one batch of one table read: a row of `bronze/_watermarks`."""

    table: str
    batch_id: str
    mode: str  # full or incremental
    low_watermark: datetime | None  # rows updated after this were read (None: all rows)
    high_watermark: datetime | None  # the latest updated_at seen, not in the future; the next night's start
    changed: int  # rows written with _op U
    deleted: int  # rows written with _op D
    reconciled: bool  # keys compared with the shop (always true for a full batch)
    run_id: str
    extracted_at: datetime


#: What `extract.mapping: auto` means, per kind of shop.
AUTO_MAPPING = {"documents": "mongodb", "relational": "canonical"}


def source_mapping(settings: Settings) -> SourceMapping:
    """The mapping `extract.mapping` names: `conf/mappings/<name>.yaml`, or a path to a .yaml file; `auto`:
    `mongodb` for a document shop, `canonical` for a SQL one."""
    name = settings.extract.mapping
    if name == "auto":
        name = AUTO_MAPPING["documents" if is_document_shop(settings.shop.url) else "relational"]
    path = settings.conf_dir / name if name.endswith((".yaml", ".yml")) else settings.conf_dir / "mappings" / f"{name}.yaml"
    return load_mapping(path)


def run(run_date: date, settings: Settings, run_id: str, full: bool = False) -> dict[str, dict[str, object]]:
    """Extract the run date's batch of every shop table; returns per table its mode and row counts."""
    extracted_at = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    shop = shop_reader(settings)
    mapping = source_mapping(settings)
    plan = shop.check(mapping)  # stops before anything is written
    for name, checked in plan.items():
        for column in absent_columns(checked.mapping):
            log.warning("%s.%s: the shop has no such column (mapping %s maps it to null): read as null", name, column, mapping.name)
    lake = ArrowLake(settings.lake_location)
    later = later_night(lake, run_date)
    if later is not None:
        log.warning(
            "bronze already holds the night of %s, later than %s: nothing extracted (the shop's state "
            "of %s cannot be read any more; the features of that date come from silver, point in time)",
            later,
            run_date,
            run_date,
        )
        return {
            name: {"mode": "skipped", "changed": 0, "deleted": 0, "reconciled": False, "later_night": later}
            for name in shop_schema.SHOP_TABLES
        }
    earlier = earlier_batches(lake, run_date)
    states = list(
        for_each_table(
            lambda name: extract_table(lake, settings, shop, plan[name], run_date, run_id, extracted_at, earlier.get(name, []), full),
            shop_schema.SHOP_TABLES,
            settings.spark.parallel_tables,
        ).values()
    )
    record_watermarks(lake, states)  # the watermarks advance only now, after every bronze batch has committed
    documents = getattr(shop, "documents_read", {})
    return {
        s.table: {
            "mode": s.mode,
            "changed": s.changed,
            "deleted": s.deleted,
            "reconciled": s.reconciled,
            **({"documents": documents[s.table]} if s.table in documents else {}),
        }
        for s in states
    }


class RelationalShop:
    """A SQL shop (SQLite, PostgreSQL, MySQL/MariaDB) read by key ranges into Arrow batches."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.url = settings.shop.url

    def check(self, mapping: SourceMapping) -> dict[str, CheckedTable]:
        return check_source(self.url, mapping)

    def scope(self, source: CheckedTable, low: datetime | None, now: datetime) -> SourceScope:
        return source_scope(self.url, source, low, now)

    def rows(self, source: CheckedTable, low: datetime | None, scope: SourceScope, read_schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        return read_rows(self.settings, source, low, scope, read_schema)

    def high_watermark(self, source: CheckedTable, scope: SourceScope) -> datetime | None:
        return scope.latest_update

    def keys(self, source: CheckedTable) -> pa.Array:
        """Every key of the shop table now."""
        url = self.url
        key = _quoted(url, source.mapping.source_column("id"))
        query = f"SELECT {key} AS {_quoted(url, 'id')} FROM {_quoted(url, source.mapping.source)} WHERE {key} IS NOT NULL"
        keys = read_batches(url, query, pa.schema([("id", pa.int64())]), source.mapping.source, self.settings.shop.fetch_size)
        return pa.chunked_array([batch.column(0) for batch in keys], pa.int64()).combine_chunks()


def shop_reader(settings: Settings) -> "RelationalShop | DocumentShop":
    """The reader of the configured shop: documents (mongodb://) or SQL."""
    if is_document_shop(settings.shop.url):
        return DocumentShop(settings.shop.url, settings.shop.fetch_size)
    return RelationalShop(settings)


def extract_table(
    lake: ArrowLake,
    settings: Settings,
    shop: "RelationalShop | DocumentShop",
    source: CheckedTable,
    run_date: date,
    run_id: str,
    extracted_at: datetime,
    earlier: list[BatchState],
    full: bool,
) -> BatchState:
    """Read one table's changes (or all of it) and write them as its bronze batch; returns the batch state."""
    name = source.mapping.name
    last = max(earlier, key=lambda state: state.batch_id, default=None)
    incremental = not full and last is not None and lake.exists("silver", name)
    low = None
    if incremental and last.high_watermark is not None:
        low = last.high_watermark - timedelta(minutes=settings.extract.overlap_minutes)
    scope = shop.scope(source, low, extracted_at)
    schema = bronze_schema(source)
    read_schema = pa.schema([field for field in schema if field.name not in BATCH_COLUMNS])
    changes = shop.rows(source, low, scope, read_schema)
    reconciled = not incremental
    gone = pa.array([], pa.int64())
    if incremental and reconcile_due(earlier, run_date, settings.extract.reconcile_every_days):
        gone = keys_gone(lake, shop, source)
        reconciled = True
    written = {"U": 0, "D": 0}
    stream = pa.RecordBatchReader.from_batches(
        schema,
        counted(
            with_batch_columns(chain(changes, deleted_rows(gone, read_schema)), schema, run_date.isoformat(), run_id, extracted_at), written
        ),
    )
    # Evolving: a carried column the mapping adds becomes a new bronze column.
    lake.replace_partition(stream, "bronze", name, {"_batch_id": run_date.isoformat()}, evolve=True)
    high = shop.high_watermark(source, scope)  # known once the rows are read (documents: from them)
    if incremental and last.high_watermark is not None:
        high = max(filter(None, (high, last.high_watermark)))
    state = BatchState(
        name,
        run_date.isoformat(),
        "incremental" if incremental else "full",
        low,
        high,
        written["U"],
        written["D"],
        reconciled,
        run_id,
        extracted_at,
    )
    log.info(
        "bronze/%s: %s batch %s, %d changed and %d deleted rows (updated after %s)",
        name,
        state.mode,
        state.batch_id,
        state.changed,
        state.deleted,
        low or "the beginning",
    )
    return state


def bronze_schema(source: CheckedTable) -> pa.Schema:
    """A bronze table's columns: the canonical ones, carried source columns (text), then the bookkeeping."""
    return pa.schema(
        [(column.name, bronze_arrow_type(column.type)) for column in source.mapping.canonical.columns]
        + [(column, pa.string()) for column in source.carried]
        + list(BOOKKEEPING_FIELDS)
    )


def later_night(lake: LakeLayout, run_date: date) -> str | None:
    """The latest batch (night) in bronze when it is later than `run_date`, else None.

    Bronze and silver only move forward: silver is the shop's current state, so a backfill of an older
    date must neither extract (the shop no longer looks as it did then) nor apply anything to silver.
    Its features are computed from silver point in time instead.
    """
    if not lake.exists("bronze", STATE_TABLE):
        return None
    batches = ArrowLake(lake.root).read("bronze", STATE_TABLE, columns=["batch_id"]).column("batch_id")
    latest = pc.max(batches).as_py()
    return latest if latest is not None and latest > run_date.isoformat() else None


def earlier_batches(lake: ArrowLake, run_date: date) -> dict[str, list[BatchState]]:
    """The watermark rows of the batches before `run_date`, per table."""
    if not lake.exists("bronze", STATE_TABLE):
        return {}
    found: dict[str, list[BatchState]] = {}
    for row in lake.read("bronze", STATE_TABLE, where=pc.field("batch_id") < run_date.isoformat()).to_pylist():
        row = {key: value.replace(tzinfo=None) if isinstance(value, datetime) else value for key, value in row.items()}
        found.setdefault(row["table"], []).append(BatchState(**row))
    return found


def record_watermarks(lake: ArrowLake, states: list[BatchState]) -> None:
    """Write the batches' states into `bronze/_watermarks` (replacing a rerun's earlier row) in one commit."""
    rows = [
        {key: value.replace(tzinfo=timezone.utc) if isinstance(value, datetime) else value for key, value in asdict(state).items()}
        for state in states
    ]
    new = pa.Table.from_pylist(rows, schema=STATE_SCHEMA)
    if lake.exists("bronze", STATE_TABLE):
        kept = lake.read("bronze", STATE_TABLE).cast(STATE_SCHEMA)
        replaced = pc.is_in(
            pc.binary_join_element_wise(kept["table"], kept["batch_id"], "/"),
            value_set=pc.binary_join_element_wise(new["table"], new["batch_id"], "/"),
        )
        new = pa.concat_tables([kept.filter(pc.invert(replaced)), new])
    lake.overwrite(new.sort_by([("batch_id", "ascending"), ("table", "ascending")]), "bronze", STATE_TABLE)


def reconcile_due(earlier: list[BatchState], run_date: date, every_days: int) -> bool:
    """Whether this night compares keys: `every_days` after the last batch that did (0: never)."""
    if every_days <= 0:
        return False
    done = [date.fromisoformat(state.batch_id) for state in earlier if state.reconciled]
    return not done or (run_date - max(done)).days >= every_days


def with_batch_columns(batches, schema: pa.Schema, batch_id: str, run_id: str, extracted_at: datetime) -> Iterator[pa.RecordBatch]:
    """The source rows (with their `_op`) and the other bronze bookkeeping columns, as `schema`."""
    stamp = extracted_at.replace(tzinfo=timezone.utc)
    for batch in batches:
        rows = batch.num_rows
        constants = {
            "_batch_id": pa.repeat(pa.scalar(batch_id, pa.string()), rows),
            "_run_id": pa.repeat(pa.scalar(run_id, pa.string()), rows),
            "_extracted_at": pa.repeat(pa.scalar(stamp, UTC_TIMESTAMP), rows),
        }
        if UNREADABLE not in batch.schema.names:
            constants[UNREADABLE] = pa.nulls(rows, pa.string())
        yield pa.RecordBatch.from_arrays(
            [constants[field.name] if field.name in constants else batch.column(field.name) for field in schema], schema=schema
        )


def counted(batches, written: dict[str, int]) -> Iterator[pa.RecordBatch]:
    """Pass the batches on, counting their rows by `_op` into `written`."""
    for batch in batches:
        deleted = pc.sum(pc.equal(batch.column("_op"), "D")).as_py() or 0
        written["D"] += deleted
        written["U"] += batch.num_rows - deleted
        yield batch


def deleted_rows(keys: pa.Array, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """`_op = 'D'` rows of `schema` (the columns read) for the given keys: `id` set, every other column null."""
    if len(keys) == 0:
        return
    yield pa.RecordBatch.from_arrays(
        [
            keys
            if field.name == "id"
            else pa.repeat(pa.scalar("D", pa.string()), len(keys))
            if field.name == "_op"
            else pa.nulls(len(keys), field.type)
            for field in schema
        ],
        schema=schema,
    )


def source_scope(url: str, source: CheckedTable, low: datetime | None, now: datetime) -> SourceScope:
    """Key range, row count and latest past `updated_at` of the rows updated after `low` (all when None)."""
    key, updated = (_quoted(url, source.mapping.source_column(c)) for c in ("id", "updated_at"))
    where = f" WHERE {updated} > '{low.strftime(TIMESTAMP_LITERAL)}'" if low else ""
    sql = (
        f"SELECT min({key}), max({key}), count(*), "
        f"max(CASE WHEN {updated} <= '{now.strftime(TIMESTAMP_LITERAL)}' THEN {updated} END) "
        f"FROM {_quoted(url, source.mapping.source)}{where}"
    )
    with db.engine(url).connect() as connection:
        lowest, highest, rows, latest = connection.execute(text(sql)).one()
    return SourceScope(int(lowest or 0), int(highest or 0), int(rows), _as_datetime(latest))


def read_rows(
    settings: Settings, source: CheckedTable, low: datetime | None, scope: SourceScope, read_schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """The shop rows updated after `low` (all when None) as canonical bronze columns and `_op`, key range by
    key range."""
    url = settings.shop.url
    mapping = source.mapping
    selected = [f"{_as_read(url, mapping.source_column(c.name), c.type)} AS {_quoted(url, c.name)}" for c in mapping.canonical.columns]
    selected += [f"{_as_read(url, column, None)} AS {_quoted(url, column)}" for column in source.carried]
    deleted_when = f"CASE WHEN ({mapping.deleted_when}) THEN 'D' ELSE 'U' END" if mapping.deleted_when else "'U'"
    selected.append(f"{deleted_when} AS {_quoted(url, '_op')}")
    conditions = []
    if low is not None:
        conditions.append(f"{_quoted(url, mapping.source_column('updated_at'))} > '{low.strftime(TIMESTAMP_LITERAL)}'")
    key = _quoted(url, mapping.source_column("id"))
    for key_range in key_ranges(key, scope, settings.shop.rows_per_partition):
        where = " AND ".join(conditions + [key_range] if key_range else conditions)
        query = f"SELECT {', '.join(selected)} FROM {_quoted(url, mapping.source)}" + (f" WHERE {where}" if where else "")
        yield from read_batches(url, query, read_schema, mapping.source, settings.shop.fetch_size)


def key_ranges(key: str, scope: SourceScope, rows_per_range: int) -> list[str | None]:
    """SQL conditions splitting the keys into ranges of about `rows_per_range` rows (None: one range, all rows).

    The first range also takes null keys, so a bad row with no key is read too (and quarantined by clean).
    """
    count = max(1, math.ceil(scope.rows / max(1, rows_per_range)))
    if count == 1:
        return [None]
    step = max(1, math.ceil((scope.highest_id + 1 - scope.lowest_id) / count))
    bounds = [scope.lowest_id + step * index for index in range(1, count)]
    ranges = [f"({key} < {bounds[0]} OR {key} IS NULL)"]
    ranges += [f"{key} >= {start} AND {key} < {end}" for start, end in zip(bounds, bounds[1:])]
    ranges.append(f"{key} >= {bounds[-1]}")
    return ranges


def keys_gone(lake: ArrowLake, shop: "RelationalShop | DocumentShop", source: CheckedTable) -> pa.Array:
    """The keys silver has that the shop table no longer has (hard deletes; for documents, also elements
    taken out of an embedded array)."""
    silver = lake.read("silver", source.mapping.name, columns=["id"])["id"]
    return silver.filter(pc.invert(pc.is_in(silver, value_set=shop.keys(source)))).combine_chunks()


def _as_read(url: str, column: str | None, sql_type) -> str:
    """How a source column is selected: dates, timestamps and amounts (and carried columns) as text; a
    column the shop does not have (mapped to null) as NULL."""
    if column is None:
        return "NULL"
    quoted = _quoted(url, column)
    kind = db.kind(url)
    as_text = "CHAR" if kind == "mysql" else "TEXT"
    if sql_type is None or isinstance(sql_type, (Date, DateTime)):
        return f"CAST({quoted} AS {as_text})"
    if isinstance(sql_type, Numeric):
        if kind == "sqlite":
            # SQLite keeps amounts as binary floats: round to the column's scale before they become text. Only
            # numbers: ROUND('abc') is 0.0, and text must reach the cast as it is, to be named "not a number".
            rounded = f"CAST(ROUND({quoted}, {sql_type.scale or 0}) AS TEXT)"
            return f"CASE WHEN typeof({quoted}) IN ('integer', 'real') THEN {rounded} ELSE CAST({quoted} AS TEXT) END"
        return f"CAST({quoted} AS {as_text})"
    return quoted


def _as_datetime(value) -> datetime | None:
    """A timestamp as the database returned it (SQLite: text) as a naive UTC datetime."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _quoted(url: str, identifier: str) -> str:
    return f"`{identifier}`" if db.kind(url) == "mysql" else f'"{identifier}"'
