"""events: browsing and click events -> bronze/events -> silver/events, deduplicated, stitched, sessionised.

Events are what customers view, click, search and put in the cart: append-only, many more rows than orders,
keyed by the tracker's text `event_id`. They come from files dropped in a landing folder, from a table of
the shop database, or both (`events.source`).

**Files** (`events.landing_dir`, default `<data>/landing/events/`, subfolders too): newline-delimited JSON
(`*.ndjson`, `*.jsonl`, `*.json`: one event object per line, `properties` a JSON object) or Parquet
(`*.parquet`, `properties` as JSON text or a struct). Each file is ingested once:
- the ledger `bronze/_landing_files` records every file ingested: name, size, SHA-256, modification time,
  the batch (run date) and its rows. A file whose checksum is in the ledger under an earlier batch is not
  read again, whatever its name now (a file dropped twice); a rerun of the same date reads its own files
  again and replaces its own batch;
- a file may still be being written when the night starts: one changed less than `events.settle_seconds`
  before, a Parquet file without its footer, or a JSON file whose last line is cut, waits for the next
  night (the run's summary lists it). Names starting with "." or "_", or ending in .tmp, .partial or
  .inprogress, are never read: write under such a name and rename when done;
- a file that grows after it was ingested is a new version (new checksum) and is read again: its events
  already in silver are dropped there as duplicates.

**Table** (`events.table` of the shop database, SQL shops): the rows that occurred from `events.late_days`
days before the run date on (every row on the first night), read as Arrow and staged as one Parquet file.

Spark reads the files and the staged table where its executors reach them (`staging_location`): with the lake on an
object store, copies under the lake's `_staging/events/<batch>/` prefix (on a cluster, executors cannot see the
landing folder of the machine the night runs on), removed once the batch is in bronze.

**Bronze** (`bronze/events`, partitioned by `event_date`, the UTC date of `occurred_at`) holds the events as
they came, every value as text, with `_source` (the file or table), `_batch_id` (the run date), `_run_id`,
`_extracted_at` and `_corrupt` (a line that is not a JSON object). A rerun replaces its own batch.

**Silver** (`silver/events`, partitioned by `event_date`) holds each event once:
- rows breaking a rule go to `silver/_quarantine/events` with the rule and a reason naming the field and
  value: `unreadable` (not a JSON object), `null_key` (no event_id or session_id), `wrong_type` (a
  customer_id or product_id that is not an integer), `invalid_value` (an occurred_at that is not a time,
  properties that are not a JSON object), `unknown_event_type`, `unknown_channel`, `too_late` (occurred more
  than `events.late_days` days before the run date; not on the first night with events, which takes the
  whole history as its backfill), `future_timestamp` (after the moment it was read);
- duplicates by `event_id` are dropped: within the batch and against silver (insert-only MERGE);
- **identity**: an anonymous event (no customer_id) takes the customer of the next event of its session
  that carries one (the visitor logged in), else of the latest earlier one (`identified_by`: `login` when
  the event carried the customer, `session` when it was stitched, null when the session never logged in).
  A login applies back to the session's earlier events within `events.late_days` + 1 days before the
  batch's earliest event;
- **visits**: a session's events split into visits after `events.session_gap_minutes` without an event
  (`visit_id` = session_id#n, `visit_started_at`).
The sessions of the batch are recomputed with their earlier events and written in the same MERGE as the new
events: one commit, so a killed run leaves silver as it was, and a rerun of the same date inserts nothing
and updates nothing. Batches whose silver step did not run (a night that failed after bronze) are applied by
the next run (`silver/_event_batches` records the batches applied).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import Window
from pyspark.sql import functions as F
from pyspark.sql.types import MapType, StringType, StructField, StructType, TimestampNTZType, TimestampType
from sqlalchemy import inspect

from core import db, shop_schema
from core.config import Settings
from core.lake import ArrowLake, Lake
from core.lake_location import LakeLocation
from core.source_reader import read_batches
from core.spark import spark_session

log = logging.getLogger(__name__)

TABLE = "events"
LEDGER_TABLE = "_landing_files"
#: The events table's rows of a night, staged for Spark (`staging_location`).
STAGED_TABLE = "table.parquet"
APPLIED_TABLE = "_event_batches"
#: Per batch (run date) applied to silver: the run that applied it last and when.
APPLIED_SCHEMA = pa.schema([("batch_id", pa.string()), ("run_id", pa.string()), ("applied_at", pa.timestamp("us", tz="UTC"))])
QUARANTINE_TABLE = "_quarantine/events"
JSON_SUFFIXES = (".ndjson", ".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
#: Names a writer uses while a file is not finished: never read.
UNFINISHED_SUFFIXES = (".tmp", ".partial", ".inprogress", ".crc")
#: The event's columns as they come; bronze keeps each as text.
SOURCE_COLUMNS = tuple(column.name for column in shop_schema.events.columns)
#: A clock difference between the tracker and this machine tolerated before an event is in the future.
CLOCK_SKEW = timedelta(minutes=10)
LEDGER_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("size", pa.int64()),
        ("sha256", pa.string()),
        ("modified_at", pa.timestamp("us", tz="UTC")),
        ("batch_id", pa.string()),
        ("rows", pa.int64()),
        ("run_id", pa.string()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class LandingFile:
    """A file in the landing folder, as it was when the night looked at it."""

    path: Path
    name: str  # relative to the landing folder
    size: int
    modified_at: datetime
    sha256: str = ""

    @property
    def is_parquet(self) -> bool:
        return self.path.suffix.lower() in PARQUET_SUFFIXES


@dataclass(frozen=True)
class LandingPlan:
    """What a night does with each file of the landing folder."""

    ingest: list[LandingFile]
    already: list[tuple[LandingFile, str]]  # read by an earlier batch: (file, that batch and file name)
    waiting: list[tuple[LandingFile, str]]  # maybe still being written: (file, why)


def run(run_date: date, settings: Settings, run_id: str) -> dict[str, object]:
    """Ingest the night's events into bronze, then apply every batch not yet applied to silver."""
    config = settings.events
    if config.source == "none":
        return {"source": "none"}
    started = datetime.now(timezone.utc).replace(microsecond=0)
    with spark_session(settings, "events") as spark:
        lake = Lake(spark, settings.lake_location)
        bronze = ingest(lake, settings, run_date, run_id, started)
        silver = apply_batches(lake, settings, run_date, run_id)
    return {"source": config.source, **bronze, **silver}


# --------------------------------------------------------------------------------------------------------
# Landing files
# --------------------------------------------------------------------------------------------------------


def landing_files(folder: Path) -> list[LandingFile]:
    """The event files in the landing folder and its subfolders, by name; unfinished names left out."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith((".", "_")) for part in relative.parts):
            continue
        if path.name.lower().endswith(UNFINISHED_SUFFIXES) or path.suffix.lower() not in JSON_SUFFIXES + PARQUET_SUFFIXES:
            continue
        stat = path.stat()
        found.append(LandingFile(path, relative.as_posix(), stat.st_size, datetime.fromtimestamp(stat.st_mtime, timezone.utc)))
    return found


@dataclass(frozen=True)
class Ledger:
    """What earlier nights read: by checksum, and by file as it was then (name, size, modification time)."""

    by_checksum: dict[str, tuple[str, str]]  # sha256 -> (batch, file name) of its first ingestion
    by_file: dict[tuple[str, int, datetime], tuple[str, str]]  # (name, size, modified_at) -> (batch, sha256)


def plan_landing(files: list[LandingFile], ledger: Ledger, run_date: date, now: datetime, settle_seconds: int) -> LandingPlan:
    """Which files to read tonight: settled, complete, and not read by an earlier batch (by checksum).

    A file whose name, size and modification time are in the ledger is not read again to be hashed: it is
    the file the ledger's checksum was taken of.
    """
    ingest, already, waiting = [], [], []
    for file in files:
        age = (now - file.modified_at).total_seconds()
        if age < settle_seconds:
            waiting.append((file, f"changed {max(age, 0):.0f} s before the night started (events.settle_seconds: {settle_seconds})"))
            continue
        known = ledger.by_file.get((file.name, file.size, file.modified_at))
        if known is None:
            incomplete = unfinished(file)
            if incomplete:
                waiting.append((file, incomplete))
                continue
        checksum = known[1] if known is not None else sha256_of(file.path)
        file = LandingFile(file.path, file.name, file.size, file.modified_at, checksum)
        first = ledger.by_checksum.get(file.sha256)
        if first is not None and first[0] != run_date.isoformat():
            already.append((file, f"read on {first[0]} as {first[1]}"))
        else:
            ingest.append(file)
    return LandingPlan(ingest, already, waiting)


def unfinished(file: LandingFile) -> str | None:
    """Why the file looks cut short (still being written), or None when it looks whole."""
    if file.size == 0:
        return "empty"
    with file.path.open("rb") as handle:
        if file.is_parquet:
            if file.size < 12:
                return "shorter than a Parquet file"
            handle.seek(-4, os.SEEK_END)
            return None if handle.read(4) == b"PAR1" else "no Parquet footer yet"
        handle.seek(max(0, file.size - 65536))
        tail = handle.read()
    if tail.endswith(b"\n"):
        return None
    last = tail.rsplit(b"\n", 1)[-1].strip()
    try:  # a file may end without a newline: its last line must then be a whole JSON object
        json.loads(last)
    except ValueError:
        return "its last line is cut (no newline, not a whole JSON object)"
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_ledger(lake: "Lake | ArrowLake") -> Ledger:
    """The files earlier nights (and earlier runs of this one) read, from `bronze/_landing_files`."""
    arrow = ArrowLake(lake.root)
    if not arrow.exists("bronze", LEDGER_TABLE):
        return Ledger({}, {})
    rows = arrow.read("bronze", LEDGER_TABLE, ["file", "size", "modified_at", "sha256", "batch_id"]).to_pylist()
    by_checksum: dict[str, tuple[str, str]] = {}
    by_file: dict[tuple[str, int, datetime], tuple[str, str]] = {}
    for row in sorted(rows, key=lambda row: row["batch_id"]):
        by_checksum.setdefault(row["sha256"], (row["batch_id"], row["file"]))
        by_file.setdefault((row["file"], row["size"], row["modified_at"]), (row["batch_id"], row["sha256"]))
    return Ledger(by_checksum, by_file)


def landing_report(settings: Settings, run_date: date) -> list[str]:
    """What the landing folder holds and what the night of `run_date` would do with each file (`crm landing`)."""
    config = settings.events
    folder = Path(config.landing_dir)
    lines = [f"landing folder {folder} (events.source: {config.source}; events.settle_seconds: {config.settle_seconds})"]
    if config.source not in ("files", "both"):
        lines.append("  not read: events.source does not include files")
    files = landing_files(folder)
    if not files:
        return lines + [f"  no event file{'' if folder.is_dir() else ' (the folder does not exist)'}"]
    lake = ArrowLake(settings.lake_location)
    plan = plan_landing(files, read_ledger(lake), run_date, datetime.now(timezone.utc), config.settle_seconds)
    rows = {}
    if lake.exists("bronze", LEDGER_TABLE):
        rows = {
            (row["sha256"], row["batch_id"]): row["rows"]
            for row in lake.read("bronze", LEDGER_TABLE, ["sha256", "batch_id", "rows"]).to_pylist()
        }
    states = {file.name: f"already {why}" for file, why in plan.already}
    states |= {file.name: f"waiting: {why}" for file, why in plan.waiting}
    for file in plan.ingest:
        read = rows.get((file.sha256, run_date.isoformat()))
        states[file.name] = (
            f"read by the night of {run_date} ({read:,} events); a rerun reads it again"
            if read is not None
            else f"new: the night of {run_date} reads it"
        )
    width = max(len(file.name) for file in files)
    lines += [f"  {file.name:<{width}} {file.size / 2**20:>9.1f} MB  {states[file.name]}" for file in files]
    return lines


# --------------------------------------------------------------------------------------------------------
# Bronze
# --------------------------------------------------------------------------------------------------------


def ingest(lake: Lake, settings: Settings, run_date: date, run_id: str, started: datetime) -> dict[str, object]:
    """Write the run date's bronze batch (replacing a previous run's) and record its files in the ledger."""
    config = settings.events
    batch_id = run_date.isoformat()
    frames, summary = [], {}
    plan = LandingPlan([], [], [])
    staging = staging_location(settings, batch_id)
    try:
        if config.source in ("files", "both"):
            folder = Path(config.landing_dir)
            if not folder.is_dir():
                log.warning("events: the landing folder %s does not exist: no event files tonight", folder)
            plan = plan_landing(landing_files(folder), read_ledger(lake), run_date, started, config.settle_seconds)
            for file, why in plan.waiting:
                log.warning("events: %s waits for the next night: %s", file.name, why)
            for file, why in plan.already:
                log.info("events: %s already ingested (%s): skipped", file.name, why)
            frames += _file_frames(lake.spark, _readable_by_spark(plan.ingest, staging))
        if config.source in ("table", "both"):
            backfill = not any(batch < batch_id for batch in applied_batches(lake))  # as in apply_batches
            table_rows = _stage_table(settings, run_date, staging, first_night=backfill)
            summary["table_rows_read"] = table_rows
            if table_rows:
                frames.append(_as_bronze_text(lake.spark.read.parquet(staging.spark_uri(STAGED_TABLE)), f"table:{config.table}"))
        rows = 0
        if frames:
            batch = frames[0]
            for frame in frames[1:]:
                batch = batch.unionByName(frame)
            batch = batch.select(
                *SOURCE_COLUMNS,
                "_corrupt",
                "_source",
                F.lit(batch_id).alias("_batch_id"),
                F.lit(run_id).alias("_run_id"),
                F.lit(started.replace(tzinfo=None)).cast("timestamp").alias("_extracted_at"),
                F.to_date(F.expr("try_cast(occurred_at AS timestamp)")).alias("event_date"),
            )
            lake.replace_partition(batch, "bronze", TABLE, {"_batch_id": batch_id}, partition_by=("event_date",))
            rows = lake.rows_written("bronze", TABLE)
        elif lake.exists("bronze", TABLE) and lake.has_rows("bronze", TABLE, {"_batch_id": batch_id}):
            # A rerun that finds nothing new: its earlier batch stays (its files are in the ledger).
            rows = ArrowLake(lake.root).read("bronze", TABLE, ["_batch_id"], where=_batch_filter(batch_id)).num_rows
    finally:
        staging.remove()
    if plan.ingest:
        _record_files(lake, plan.ingest, batch_id, run_id, started)
    summary.update(
        {
            "bronze_rows": rows,
            "files_ingested": len(plan.ingest),
            "files_already_ingested": len(plan.already),
            "files_waiting": [f"{file.name}: {why}" for file, why in plan.waiting],
        }
    )
    return summary


def staging_location(settings: Settings, batch_id: str) -> LakeLocation:
    """Where a night stages what Spark reads that is not in the lake: the events table's rows and, with the lake on
    an object store, copies of the landing files. Spark's executors read it, and those of a cluster cannot see the
    disk of the machine the night runs on: with the lake on an object store it is the lake's own
    `_staging/events/<batch>` prefix (beside the layers: no reader takes it for a table), else a folder under the
    data root. Removed once the batch is in bronze."""
    if settings.lake_location.is_local:
        return LakeLocation(folder=settings.data_dir / "_staging" / "events" / batch_id)
    return settings.lake_location.child("_staging", "events", batch_id)


def _readable_by_spark(files: list[LandingFile], staging: LakeLocation) -> list[tuple[LandingFile, str]]:
    """Each landing file with the path Spark reads it from: the file itself while the lake is local, else its copy
    in `staging` on the object store."""
    if staging.is_local:
        return [(file, str(file.path)) for file in files]
    from pyarrow import fs

    store, local = staging.arrow_filesystem(), fs.LocalFileSystem()
    readable = []
    for file in files:
        fs.copy_files(str(file.path), staging.arrow_path("files", file.name), source_filesystem=local, destination_filesystem=store)
        readable.append((file, staging.spark_uri("files", file.name)))
    return readable


def _batch_filter(batch_id: str):
    return pc.field("_batch_id") == batch_id


def _file_frames(spark, files: list[tuple[LandingFile, str]]) -> list:
    """The files' events as bronze text columns (`_corrupt`: a JSON line that is not an event object); each file
    read from the path given with it (`_readable_by_spark`)."""
    frames = []
    json_files = [(file, path) for file, path in files if not file.is_parquet]
    parquet_files = [(file, path) for file, path in files if file.is_parquet]
    if json_files:
        # Every field as text: Spark gives a JSON object's raw text for a string field (properties), and
        # typing happens in silver, where a bad value is quarantined with its reason.
        schema = StructType([StructField(name, StringType()) for name in SOURCE_COLUMNS] + [StructField("_corrupt", StringType())])
        frame = (
            spark.read.schema(schema)
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", "_corrupt")
            .json([path for _, path in json_files])
        )
        # Each row's file, by its landing name (Spark names it by URI: a small lookup, broadcast).
        names = spark.createDataFrame(
            [(uri, file.name) for file, path in json_files for uri in _uris(path)], "_path string, _source string"
        )
        frame = frame.withColumn("_path", F.col("_metadata.file_path"))
        frames.append(frame.join(F.broadcast(names), "_path", "left").drop("_path"))
    for file, path in parquet_files:  # one at a time: trackers' Parquet files need not share a schema
        frame = spark.read.parquet(path)
        frames.append(_as_bronze_text(frame, file.name))
    return frames


def _uris(path: str) -> set[str]:
    """The ways Spark may name a file it read in `_metadata.file_path`: a local path or an object's URI."""
    if "://" in path:
        return {path, quote(path, safe=":/")}
    local = Path(path)
    return {local.as_uri(), f"file:{local}", str(local)}


def _as_bronze_text(frame, source: str):
    """A frame of events with every source column as text (missing ones null), `_corrupt` null and `_source`."""
    columns = []
    types = dict((field.name, field.dataType) for field in frame.schema.fields)
    for name in SOURCE_COLUMNS:
        kind = types.get(name)
        if kind is None:
            columns.append(F.lit(None).cast("string").alias(name))
        elif isinstance(kind, (StructType, MapType)):
            columns.append(F.to_json(F.col(name)).alias(name))
        elif isinstance(kind, (TimestampType, TimestampNTZType)):
            columns.append(F.date_format(F.col(name), "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'").alias(name))
        else:
            columns.append(F.col(name).cast("string").alias(name))
    return frame.select(*columns, F.lit(None).cast("string").alias("_corrupt"), F.lit(source).alias("_source"))


def _stage_table(settings: Settings, run_date: date, staging: LakeLocation, first_night: bool) -> int:
    """Read the shop's events table (from late_days before the run date; all on the first night) into the Parquet
    file `STAGED_TABLE` in `staging`; returns the rows read."""
    config = settings.events
    url = settings.shop.url
    if db.is_document_shop(url):
        raise ValueError(
            f"events.source {config.source!r}: a document shop has no events table; "
            f"use events.source: files (event files in {config.landing_dir})"
        )
    engine = db.engine(url)
    try:
        names = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if config.table not in names:
        raise ValueError(
            f"events.source {config.source!r}: the shop {db.masked(url)} has no table "
            f"{config.table!r} (events.table); expected columns {', '.join(SOURCE_COLUMNS)}"
        )
    quote = "`" if db.kind(url) == "mysql" else '"'
    columns = ", ".join(f"{quote}{name}{quote}" for name in SOURCE_COLUMNS)
    query = f"SELECT {columns} FROM {quote}{config.table}{quote}"
    if not first_night:
        low = datetime.combine(run_date - timedelta(days=config.late_days), datetime.min.time())
        query += f" WHERE {quote}occurred_at{quote} >= '{low:%Y-%m-%d %H:%M:%S}'"
    schema = pa.schema([(name, pa.string()) for name in SOURCE_COLUMNS])
    staging.remove()
    filesystem = staging.arrow_filesystem()
    filesystem.create_dir(staging.arrow_path())
    rows = 0
    with filesystem.open_output_stream(staging.arrow_path(STAGED_TABLE)) as sink, pq.ParquetWriter(sink, schema) as writer:
        for batch in read_batches(url, query, schema, config.table, settings.shop.fetch_size):
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def _record_files(lake: Lake, files: list[LandingFile], batch_id: str, run_id: str, started: datetime) -> None:
    """Replace the batch's rows of the ledger with the files it read (after bronze committed)."""
    arrow = ArrowLake(lake.root)
    rows_by_file = {}
    if arrow.exists("bronze", TABLE):
        counted = arrow.read("bronze", TABLE, ["_source"], where=_batch_filter(batch_id)).column("_source")
        rows_by_file = {row["values"]: row["counts"] for row in pc.value_counts(counted).to_pylist()}
    ledger = pa.table(
        {
            "file": [file.name for file in files],
            "size": [file.size for file in files],
            "sha256": [file.sha256 for file in files],
            "modified_at": [file.modified_at for file in files],
            "batch_id": [batch_id] * len(files),
            "rows": [int(rows_by_file.get(file.name, 0)) for file in files],
            "run_id": [run_id] * len(files),
            "ingested_at": [started] * len(files),
        },
        schema=LEDGER_SCHEMA,
    )
    arrow.replace_partition(ledger, "bronze", LEDGER_TABLE, {"batch_id": batch_id})


# --------------------------------------------------------------------------------------------------------
# Silver
# --------------------------------------------------------------------------------------------------------


def apply_batches(lake: Lake, settings: Settings, run_date: date, run_id: str) -> dict[str, object]:
    """Apply to silver the run date's bronze batch and any earlier batch not applied yet."""
    if not lake.exists("bronze", TABLE):
        return {"silver_inserted": 0, "silver_restitched": 0, "duplicates": 0, "quarantined": 0}
    batch_id = run_date.isoformat()
    written = {row["_batch_id"] for row in lake.read("bronze", TABLE).select("_batch_id").distinct().collect()}
    applied = applied_batches(lake)
    batches = sorted(b for b in written if b == batch_id or (b < batch_id and b not in applied))
    if not batches:
        return {"silver_inserted": 0, "silver_restitched": 0, "duplicates": 0, "quarantined": 0}
    bronze = lake.read("bronze", TABLE).where(F.col("_batch_id").isin(batches))
    # The first batches with events take their whole history (a backfill), whichever run applies them,
    # so a rerun of the first night judges its events as the first run did; later ones the late window.
    backfill = not any(batch < batches[0] for batch in applied)
    counts = apply_events(lake, bronze, settings, run_date, run_id, None if backfill else settings.events.late_days)
    applied_at = datetime.now(timezone.utc)
    recorded = pa.Table.from_pylist([{"batch_id": b, "run_id": run_id, "applied_at": applied_at} for b in batches], schema=APPLIED_SCHEMA)
    ArrowLake(lake.root).upsert(recorded, "silver", APPLIED_TABLE, keys=["batch_id"])  # no Spark job
    return {"batches_applied": batches, **counts}


def applied_batches(lake: Lake) -> set[str]:
    """The batches (run dates) already applied to silver (`silver/_event_batches`)."""
    if not ArrowLake(lake.root).exists("silver", APPLIED_TABLE):
        return set()
    return set(ArrowLake(lake.root).read("silver", APPLIED_TABLE, ["batch_id"]).column("batch_id").to_pylist())


def apply_events(lake: Lake, bronze, settings: Settings, run_date: date, run_id: str, late_days: int | None) -> dict[str, int]:
    """Type, check and deduplicate bronze rows, then stitch and sessionise their sessions into silver (one
    MERGE); `late_days` None: no event is too late (a backfill)."""
    config = settings.events
    flagged = flag_invalid_events(bronze, run_date, late_days).localCheckpoint(eager=True)
    rejected = flagged.where(F.col("_rule").isNotNull())
    valid = flagged.where(F.col("_rule").isNull())
    first = Window.partitionBy("event_id").orderBy("occurred_at", "_extracted_at", "_source")
    unique = valid.withColumn("_n", F.row_number().over(first)).where(F.col("_n") == 1).drop("_n")
    earliest = unique.agg(F.min("event_date")).first()[0]
    duplicates_in_batch = valid.count() - unique.count()
    inserted = restitched = duplicates_in_silver = 0
    if earliest is not None:
        exists = lake.exists("silver", TABLE)
        incoming = unique.select(*EVENT_COLUMNS_IN)
        if exists:
            window_start = earliest - timedelta(days=config.late_days + 1)
            silver = lake.read("silver", TABLE).where(F.col("event_date") >= F.lit(window_start))
            known = silver.join(incoming.select("event_id"), "event_id", "left_semi")
            duplicates_in_silver = known.count()
            new = incoming.join(silver.select("event_id"), "event_id", "left_anti")
            sessions = new.select("session_id").distinct()
            related = silver.join(sessions, "session_id", "left_semi").select(*EVENT_COLUMNS_IN)
            combined = related.unionByName(new)
        else:
            combined = incoming
        rows = sessionised(stitched(combined), config.session_gap_minutes).localCheckpoint(eager=True)
        if exists:
            result = lake.merge(
                rows,
                "silver",
                TABLE,
                keys=["event_id"],
                target_condition=f"t.event_date >= '{(earliest - timedelta(days=config.late_days + 1)).isoformat()}'",
                update_when="NOT (t.customer_id <=> s.customer_id AND t.identified_by <=> s.identified_by "
                "AND t.visit_id <=> s.visit_id AND t.visit_started_at <=> s.visit_started_at)",
            )
        else:
            lake.overwrite(rows, "silver", TABLE, partition_by=("event_date",))
            result = {"inserted": lake.rows_written("silver", TABLE), "updated": 0}
        inserted, restitched = result["inserted"], result["updated"]
    quarantine = rejected.select(
        "event_id",
        F.col("_rule").alias("rule"),
        F.col("_reason").alias("reason"),
        F.col("_source_row").alias("source_row"),
        F.lit(run_id).alias("run_id"),
        F.lit(run_date).alias("run_date"),
    ).localCheckpoint(eager=True)
    bad = quarantine.count()
    if bad or not lake.exists("silver", QUARANTINE_TABLE) or lake.has_rows("silver", QUARANTINE_TABLE, {"run_date": run_date}):
        lake.replace_partition(quarantine, "silver", QUARANTINE_TABLE, {"run_date": run_date})
    return {
        "silver_inserted": inserted,
        "silver_restitched": restitched,
        "duplicates": duplicates_in_batch + duplicates_in_silver,
        "quarantined": bad,
    }


#: Silver's columns before stitching and sessionising.
EVENT_COLUMNS_IN = (
    "event_id",
    "customer_id",
    "source_customer_id",
    "session_id",
    "event_type",
    "product_id",
    "category",
    "channel",
    "occurred_at",
    "event_date",
    "properties",
    "source",
    "batch_id",
    "ingested_at",
)


#: silver/events, in order: column -> (type, meaning). The table in docs/events.md is generated from it.
SILVER_EVENT_COLUMNS: dict[str, tuple[str, str]] = {
    "event_id": ("string", "the tracker's id of the event; each once (key)"),
    "customer_id": ("bigint", "the customer: the event's own, else the one its session logged in as; null if it never did"),
    "identified_by": ("string", "login (the event carried the customer), session (stitched from the session's login) or null"),
    "source_customer_id": ("bigint", "customer_id as the source sent it (null while anonymous)"),
    "session_id": ("string", "the tracker's session (device and browser)"),
    "visit_id": ("string", "session_id#n: the session's n-th visit, split after events.session_gap_minutes idle"),
    "visit_started_at": ("timestamp", "the first event of the visit (UTC)"),
    "event_type": ("string", "view, click, search, add_to_cart, remove_from_cart or checkout"),
    "product_id": ("bigint", "-> products.id, for product events"),
    "category": ("string", "the product's category, or the category searched"),
    "channel": ("string", "web, app, mini-program, social, or null"),
    "occurred_at": ("timestamp", "when it happened (UTC)"),
    "event_date": ("date", "the UTC date of occurred_at (the partition)"),
    "properties": ("string", "JSON object as sent: page, referrer, search query, ..."),
    "source": ("string", "the landing file (its path in the landing folder) or table:<events.table>"),
    "batch_id": ("string", "the run date of the night that ingested it"),
    "ingested_at": ("timestamp", "when that night read it (UTC)"),
}
SILVER_COLUMNS = tuple(SILVER_EVENT_COLUMNS)


def flag_invalid_events(bronze, run_date: date, late_days: int | None):
    """Bronze rows typed, with `_rule` and `_reason` of the first rule each breaks (null when valid);
    `late_days` None: no event is too late."""

    def try_cast(column: str, kind: str):
        return F.expr(f"try_cast(`{column}` AS {kind})")

    occurred = try_cast("occurred_at", "timestamp")
    customer, product = try_cast("customer_id", "bigint"), try_cast("product_id", "bigint")
    earliest = datetime.combine(run_date - timedelta(days=late_days or 0), datetime.min.time())
    properties_ok = F.col("properties").isNull() | F.from_json(F.col("properties"), "map<string,string>").isNotNull()
    types = F.array(*[F.lit(kind) for kind in shop_schema.EVENT_TYPES])
    channels = F.array(*[F.lit(kind) for kind in shop_schema.EVENT_CHANNELS])

    def value(column: str):
        return F.coalesce(F.concat(F.lit("'"), F.col(column), F.lit("'")), F.lit("null"))

    rules = [
        (
            "unreadable",
            F.col("_corrupt").isNotNull(),
            F.concat(
                F.lit("events ("),
                F.col("_source"),
                F.lit("): the line is not a JSON event object: "),
                F.substring(F.col("_corrupt"), 1, 200),
            ),
        ),
        (
            "null_key",
            F.col("event_id").isNull() | (F.trim(F.col("event_id")) == ""),
            F.concat(F.lit("events.event_id is "), value("event_id"), F.lit(": expected the tracker's event id")),
        ),
        (
            "null_key",
            F.col("session_id").isNull() | (F.trim(F.col("session_id")) == ""),
            F.concat(F.lit("events.session_id is "), value("session_id"), F.lit(": expected the tracker's session id")),
        ),
        (
            "wrong_type",
            F.col("customer_id").isNotNull() & customer.isNull(),
            F.concat(F.lit("events.customer_id = "), value("customer_id"), F.lit(": expected an integer customer id or null")),
        ),
        (
            "wrong_type",
            F.col("product_id").isNotNull() & product.isNull(),
            F.concat(F.lit("events.product_id = "), value("product_id"), F.lit(": expected an integer product id or null")),
        ),
        (
            "invalid_value",
            occurred.isNull(),
            F.concat(F.lit("events.occurred_at = "), value("occurred_at"), F.lit(": expected a time (ISO 8601, UTC)")),
        ),
        (
            "invalid_value",
            ~properties_ok,
            F.concat(F.lit("events.properties = "), F.substring(value("properties"), 1, 200), F.lit(": expected a JSON object")),
        ),
        (
            "unknown_event_type",
            F.col("event_type").isNull() | ~F.array_contains(types, F.col("event_type")),
            F.concat(F.lit("events.event_type = "), value("event_type"), F.lit(f": expected one of {', '.join(shop_schema.EVENT_TYPES)}")),
        ),
        (
            "unknown_channel",
            F.col("channel").isNotNull() & ~F.array_contains(channels, F.col("channel")),
            F.concat(
                F.lit("events.channel = "), value("channel"), F.lit(f": expected one of {', '.join(shop_schema.EVENT_CHANNELS)} or null")
            ),
        ),
        (
            "too_late",
            F.lit(late_days is not None) & (occurred < F.lit(earliest)),
            F.concat(
                F.lit("events.occurred_at = "),
                value("occurred_at"),
                F.lit(f": more than {late_days} day(s) before the run date {run_date} (events.late_days)"),
            ),
        ),
        (
            "future_timestamp",
            occurred > F.col("_extracted_at") + F.expr(f"INTERVAL {int(CLOCK_SKEW.total_seconds())} SECONDS"),
            F.concat(
                F.lit("events.occurred_at = "),
                value("occurred_at"),
                F.lit(" is after the moment it was read, "),
                F.col("_extracted_at").cast("string"),
            ),
        ),
    ]
    rule = reason = None
    for name, failed, why in rules:
        rule = F.when(failed, F.lit(name)) if rule is None else rule.when(failed, F.lit(name))
        reason = F.when(failed, why) if reason is None else reason.when(failed, why)
    source_row = F.to_json(F.struct(*[F.col(name) for name in SOURCE_COLUMNS], F.col("_source")))
    return bronze.select(
        F.col("event_id"),
        customer.alias("customer_id"),
        customer.alias("source_customer_id"),
        F.col("session_id"),
        F.col("event_type"),
        product.alias("product_id"),
        F.col("category"),
        F.col("channel"),
        occurred.alias("occurred_at"),
        F.to_date(occurred).alias("event_date"),
        F.col("properties"),
        F.col("_source").alias("source"),
        F.col("_batch_id").alias("batch_id"),
        F.col("_extracted_at").alias("ingested_at"),
        F.col("_extracted_at"),
        F.col("_source"),
        rule.otherwise(F.lit(None).cast("string")).alias("_rule"),
        reason.otherwise(F.lit(None).cast("string")).alias("_reason"),
        source_row.alias("_source_row"),
    )


def stitched(events):
    """Each event attributed to a customer: its own, else the next one its session logged in as, else the
    latest earlier one; `identified_by` says which (login, session, or null: never logged in)."""
    order = Window.partitionBy("session_id").orderBy("occurred_at", "event_id")
    later = order.rowsBetween(Window.currentRow, Window.unboundedFollowing)
    earlier = order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    attributed = F.coalesce(
        F.col("source_customer_id"),
        F.first("source_customer_id", ignorenulls=True).over(later),
        F.last("source_customer_id", ignorenulls=True).over(earlier),
    )
    return events.withColumn("customer_id", attributed).withColumn(
        "identified_by",
        F.when(F.col("source_customer_id").isNotNull(), F.lit("login"))
        .when(F.col("customer_id").isNotNull(), F.lit("session"))
        .otherwise(F.lit(None).cast("string")),
    )


def sessionised(events, gap_minutes: int):
    """Visits: a session's events split where `gap_minutes` pass without an event (`visit_id` = session#n)."""
    order = Window.partitionBy("session_id").orderBy("occurred_at", "event_id")
    gap = F.col("occurred_at").cast("long") - F.lag(F.col("occurred_at").cast("long")).over(order)
    starts = F.when(gap.isNull() | (gap > gap_minutes * 60), 1).otherwise(0)
    numbered = events.withColumn("_starts", starts).withColumn(
        "_visit", F.sum("_starts").over(order.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    )
    visit = Window.partitionBy("session_id", "_visit")
    return numbered.withColumns(
        {
            "visit_id": F.concat(F.col("session_id"), F.lit("#"), F.col("_visit").cast("string")),
            "visit_started_at": F.min("occurred_at").over(visit),
        }
    ).select(*SILVER_COLUMNS)
