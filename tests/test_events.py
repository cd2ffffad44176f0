"""Browsing events from landing files and a shop table into silver: each file once, each event once,
sessions stitched to the customer who logged in, visits split after the gap, bad events quarantined."""

from __future__ import annotations

import json
import os
import time
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.lake import ArrowLake
from jobs import events

NIGHT_1 = date(2026, 11, 24)
NIGHT_2 = date(2026, 11, 25)
NIGHT_3 = date(2026, 11, 26)
OLD = time.time() - 3600  # a file last changed an hour ago has settled


def event(event_id, at, session="s1", customer=None, kind="view", product=7, channel="web", **extra):
    return {
        "event_id": event_id,
        "customer_id": customer,
        "session_id": session,
        "event_type": kind,
        "product_id": product,
        "category": "shoes" if product else None,
        "channel": channel,
        "occurred_at": at,
        "properties": {"page": f"/p/{product}"},
        **extra,
    }


def drop(folder: Path, name: str, rows: list[dict], settled: bool = True, newline: bool = True) -> Path:
    """Write an NDJSON file into the landing folder, as a tracker would; `settled`: last changed an hour ago."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(row) for row in rows) + ("\n" if newline else ""), encoding="utf-8")
    if settled:
        os.utime(path, (OLD, OLD))
    return path


@pytest.fixture()
def lake_settings(settings, tmp_path):
    """Settings with their own data folder (lake, landing folder) and the files source."""
    data = tmp_path / "data"
    return settings.model_copy(
        update={
            "data_dir": data,
            "events": settings.events.model_copy(
                update={"landing_dir": str(data / "landing" / "events"), "source": "files", "settle_seconds": 60}
            ),
        }
    )


def night(settings, run_date: date, run_id: str | None = None) -> dict:
    return events.run(run_date, settings, run_id or f"test-{run_date}")


def silver(settings) -> list[dict]:
    rows = ArrowLake(settings.lake_dir).read("silver", "events").to_pylist()
    return sorted(rows, key=lambda row: row["event_id"])


def quarantine(settings) -> list[dict]:
    return ArrowLake(settings.lake_dir).read("silver", "_quarantine/events").to_pylist()


def test_a_file_dropped_twice_is_counted_once(spark, lake_settings):
    landing = Path(lake_settings.events.landing_dir)
    rows = [event(f"e{i}", f"2026-11-24T10:0{i}:00Z", customer=1) for i in range(5)]
    drop(landing, "2026-11-24.ndjson", rows)
    first = night(lake_settings, NIGHT_1)
    assert first["files_ingested"] == 1 and first["silver_inserted"] == 5

    drop(landing, "resent/2026-11-24-copy.ndjson", rows)  # the same bytes under another name
    os.utime(landing / "2026-11-24.ndjson", (OLD + 60, OLD + 60))  # touched: same content
    second = night(lake_settings, NIGHT_2)
    assert second["files_ingested"] == 0 and second["files_already_ingested"] == 2
    assert [row["event_id"] for row in silver(lake_settings)] == [f"e{i}" for i in range(5)]
    ledger = ArrowLake(lake_settings.lake_dir).read("bronze", "_landing_files").to_pylist()
    assert [(row["file"], row["batch_id"], row["rows"]) for row in ledger] == [("2026-11-24.ndjson", "2026-11-24", 5)]
    drop(landing, "fresh.ndjson", [event("f1", "2026-11-25T10:00:00Z")], settled=False)
    report = "\n".join(events.landing_report(lake_settings, NIGHT_3))  # what `crm landing` prints
    assert "2026-11-24.ndjson" in report and "already read on 2026-11-24 as 2026-11-24.ndjson" in report
    assert "resent/2026-11-24-copy.ndjson" in report and "fresh.ndjson" in report and "waiting: changed" in report


def test_a_file_still_being_written_waits_and_then_counts_once(spark, lake_settings):
    landing = Path(lake_settings.events.landing_dir)
    rows = [event(f"w{i}", f"2026-11-24T11:{i:02d}:00Z", customer=2) for i in range(6)]
    # Night 1 starts while the tracker writes: three lines and half of the fourth, no newline at the end.
    path = landing / "stream.ndjson"
    landing.mkdir(parents=True)
    text = "".join(json.dumps(row) + "\n" for row in rows[:3]) + json.dumps(rows[3])[:20]
    path.write_text(text, encoding="utf-8")
    os.utime(path, (OLD, OLD))
    fresh = drop(landing, "fresh.ndjson", [event("f1", "2026-11-24T12:00:00Z")], settled=False)  # just now
    first = night(lake_settings, NIGHT_1)
    waiting = "\n".join(first["files_waiting"])
    assert "stream.ndjson: its last line is cut" in waiting and "fresh.ndjson: changed" in waiting
    assert first["files_ingested"] == 0 and not ArrowLake(lake_settings.lake_dir).exists("silver", "events")

    drop(landing, "stream.ndjson", rows)  # the writer finished
    os.utime(fresh, (OLD, OLD))
    second = night(lake_settings, NIGHT_2)
    assert second["files_ingested"] == 2 and second["silver_inserted"] == 7
    # The file grows again (a writer that appends): its new version is read, its old events are not doubled.
    drop(landing, "stream.ndjson", rows + [event("w6", "2026-11-25T09:00:00Z", customer=2)])
    third = night(lake_settings, NIGHT_3)
    assert third["files_ingested"] == 1 and third["silver_inserted"] == 1 and third["duplicates"] == 6
    assert len(silver(lake_settings)) == 8


def test_a_late_file_lands_once_and_events_beyond_the_late_window_go_to_quarantine(spark, lake_settings):
    landing = Path(lake_settings.events.landing_dir)
    drop(landing, "day-24.ndjson", [event("a1", "2026-11-24T08:00:00Z", customer=3)])
    night(lake_settings, NIGHT_1)
    # Night 3 receives a file of events from three days before (a phone that was offline) and one 12 days old.
    drop(landing, "late.ndjson", [event("l1", "2026-11-23T20:00:00Z", customer=3), event("l2", "2026-11-14T20:00:00Z", customer=3)])
    third = night(lake_settings, NIGHT_3)
    assert third["silver_inserted"] == 1 and third["quarantined"] == 1
    assert {row["event_id"] for row in silver(lake_settings)} == {"a1", "l1"}
    [bad] = quarantine(lake_settings)
    assert bad["event_id"] == "l2" and bad["rule"] == "too_late"
    assert "more than 7 day(s) before the run date 2026-11-26 (events.late_days)" in bad["reason"]

    before = silver(lake_settings)
    rerun = night(lake_settings, NIGHT_3, run_id="rerun")
    assert rerun["files_ingested"] == 1 and rerun["silver_inserted"] == 0 and rerun["silver_restitched"] == 0
    assert silver(lake_settings) == before
    assert len(quarantine(lake_settings)) == 1
    bronze = ArrowLake(lake_settings.lake_dir).read("bronze", "events").to_pylist()
    assert sorted(row["event_id"] for row in bronze) == ["a1", "l1", "l2"]  # the rerun replaced its batch


def test_the_first_night_takes_the_whole_history_and_later_nights_only_the_late_window(spark, lake_settings):
    landing = Path(lake_settings.events.landing_dir)
    drop(landing, "history.ndjson", [event("h1", "2026-03-01T08:00:00Z", customer=3), event("h2", "2026-11-20T08:00:00Z", customer=3)])
    first = night(lake_settings, NIGHT_1)
    assert first["silver_inserted"] == 2 and first["quarantined"] == 0
    rerun = night(lake_settings, NIGHT_1, run_id="rerun")  # judged as the first run was
    assert rerun["silver_inserted"] == 0 and rerun["quarantined"] == 0 and rerun["duplicates"] == 2
    drop(landing, "old.ndjson", [event("h3", "2026-03-02T08:00:00Z", customer=3)])
    second = night(lake_settings, NIGHT_2)
    assert second["silver_inserted"] == 0 and second["quarantined"] == 1


def test_events_of_a_session_before_login_are_attributed_to_the_customer(spark, lake_settings):
    landing = Path(lake_settings.events.landing_dir)
    drop(
        landing,
        "night-1.ndjson",
        [
            event("a", "2026-11-24T10:00:00Z", session="s1"),  # anonymous ...
            event("b", "2026-11-24T10:01:00Z", session="s1"),
            event("c", "2026-11-24T10:02:00Z", session="s1", customer=42),  # ... logs in
            event("d", "2026-11-24T10:03:00Z", session="s1"),  # after login, the tracker lost the id
            event("x", "2026-11-24T10:00:00Z", session="s2"),  # never logs in (tonight)
            event("y", "2026-11-24T10:05:00Z", session="s2", kind="search", product=None),
        ],
    )
    night(lake_settings, NIGHT_1)
    rows = {row["event_id"]: row for row in silver(lake_settings)}
    assert {key: (rows[key]["customer_id"], rows[key]["identified_by"]) for key in "abcd"} == {
        "a": (42, "session"),
        "b": (42, "session"),
        "c": (42, "login"),
        "d": (42, "session"),
    }
    assert rows["a"]["source_customer_id"] is None
    assert rows["x"]["customer_id"] is None and rows["x"]["identified_by"] is None

    # Session s2 logs in the next day: the login applies back to its events of the night before.
    drop(landing, "night-2.ndjson", [event("z", "2026-11-24T10:20:00Z", session="s2", customer=77, kind="checkout", product=None)])
    second = night(lake_settings, NIGHT_2)
    assert second["silver_inserted"] == 1 and second["silver_restitched"] == 2
    rows = {row["event_id"]: row for row in silver(lake_settings)}
    assert [(rows[key]["customer_id"], rows[key]["identified_by"]) for key in "xyz"] == [(77, "session"), (77, "session"), (77, "login")]


def test_a_session_splits_into_visits_after_the_gap(spark, lake_settings):
    landing = Path(lake_settings.events.landing_dir)
    drop(
        landing,
        "visits.ndjson",
        [
            event("v1", "2026-11-24T10:00:00Z", customer=5),
            event("v2", "2026-11-24T10:29:00Z", customer=5),  # 29 min: same visit
            event("v3", "2026-11-24T11:00:00Z", customer=5),  # 31 min: a new visit
        ],
    )
    night(lake_settings, NIGHT_1)
    rows = silver(lake_settings)
    assert [row["visit_id"] for row in rows] == ["s1#1", "s1#1", "s1#2"]
    assert rows[2]["visit_started_at"] == rows[2]["occurred_at"]
    assert json.loads(rows[0]["properties"]) == {"page": "/p/7"}  # a JSON object, kept as its text
    assert rows[0]["event_date"] == date(2026, 11, 24) and rows[0]["source"] == "visits.ndjson"
    written = spark.read.format("delta").load(str(lake_settings.lake_dir / "silver" / "events")).dtypes
    assert written == [(name, kind) for name, (kind, _) in events.SILVER_EVENT_COLUMNS.items()]


def test_bad_events_go_to_quarantine_with_a_reason_naming_the_field(spark, lake_settings):
    landing = Path(lake_settings.events.landing_dir)
    landing.mkdir(parents=True)
    lines = [
        json.dumps(event("ok", "2026-11-24T10:00:00Z", customer=1)),
        "{this is not json",
        json.dumps(event("hover", "2026-11-24T10:00:00Z", kind="hover")),
        json.dumps(event("cust", "2026-11-24T10:00:00Z", customer="C-0042")),
        json.dumps(event("when", "last tuesday")),
        json.dumps(event("tv", "2026-11-24T10:00:00Z", channel="tv")),
        json.dumps(event("", "2026-11-24T10:00:00Z")),
        json.dumps(event("future", "2030-01-01T00:00:00Z")),
        json.dumps(event("ok", "2026-11-24T10:00:00Z", customer=1)),  # re-sent: a duplicate, dropped
    ]
    path = landing / "mixed.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.utime(path, (OLD, OLD))
    result = night(lake_settings, NIGHT_1)
    assert result["silver_inserted"] == 1 and result["duplicates"] == 1 and result["quarantined"] == 7
    reasons = {row["rule"]: row["reason"] for row in quarantine(lake_settings)}
    assert reasons["unreadable"].startswith("events (mixed.ndjson): the line is not a JSON event object: {this is")
    assert reasons["unknown_event_type"].startswith("events.event_type = 'hover': expected one of view, click")
    assert reasons["wrong_type"] == "events.customer_id = 'C-0042': expected an integer customer id or null"
    assert reasons["invalid_value"] == "events.occurred_at = 'last tuesday': expected a time (ISO 8601, UTC)"
    assert reasons["unknown_channel"].startswith("events.channel = 'tv'")
    assert reasons["null_key"].startswith("events.event_id is '': expected")
    assert "is after the moment it was read" in reasons["future_timestamp"]


def test_parquet_files_and_the_shop_table_are_read_too(spark, lake_settings, tmp_path):
    from sqlalchemy import create_engine

    from core import shop_schema

    landing = Path(lake_settings.events.landing_dir)
    landing.mkdir(parents=True)
    table = pa.table(
        {
            "event_id": ["p1", "p2"],
            "customer_id": pa.array([8, None], pa.int64()),
            "session_id": ["q", "q"],
            "event_type": ["view", "add_to_cart"],
            "product_id": pa.array([3, 3], pa.int64()),
            "category": ["toys", "toys"],
            "channel": ["app", "app"],
            "occurred_at": pa.array([datetime(2026, 11, 24, 9), datetime(2026, 11, 24, 9, 5)], pa.timestamp("us", tz="UTC")),
            "properties": ['{"page": "/p/3"}', None],
        }
    )
    pq.write_table(table, landing / "app.parquet")
    os.utime(landing / "app.parquet", (OLD, OLD))
    shop = tmp_path / "shop.sqlite"
    engine = create_engine(f"sqlite:///{shop}")
    shop_schema.events_metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            shop_schema.events.insert(),
            [
                {
                    "event_id": "t1",
                    "customer_id": 9,
                    "session_id": "r",
                    "event_type": "view",
                    "product_id": 4,
                    "category": "books",
                    "channel": "web",
                    "occurred_at": datetime(2026, 11, 24, 7),
                    "properties": "{}",
                },
                {
                    "event_id": "p1",
                    "customer_id": 8,
                    "session_id": "q",
                    "event_type": "view",
                    "product_id": 3,
                    "category": "toys",
                    "channel": "app",
                    "occurred_at": datetime(2026, 11, 24, 9),
                    "properties": None,
                },
            ],
        )
    engine.dispose()
    both = lake_settings.model_copy(
        update={
            "shop": lake_settings.shop.model_copy(update={"url": f"sqlite:///{shop}"}),
            "events": lake_settings.events.model_copy(update={"source": "both"}),
        }
    )
    result = night(both, NIGHT_1)
    assert result["table_rows_read"] == 2 and result["files_ingested"] == 1
    rows = {row["event_id"]: row for row in silver(both)}
    assert sorted(rows) == ["p1", "p2", "t1"] and result["duplicates"] == 1  # p1 came twice
    assert rows["p2"]["customer_id"] == 8 and rows["p2"]["identified_by"] == "session"
    assert rows["t1"]["occurred_at"] == datetime(2026, 11, 24, 7, tzinfo=rows["t1"]["occurred_at"].tzinfo)


def test_a_missing_events_table_is_a_clear_error(spark, lake_settings, tmp_path):
    from sqlalchemy import create_engine

    shop = tmp_path / "empty.sqlite"
    create_engine(f"sqlite:///{shop}").dispose()
    table_source = lake_settings.model_copy(
        update={
            "shop": lake_settings.shop.model_copy(update={"url": f"sqlite:///{shop}"}),
            "events": lake_settings.events.model_copy(update={"source": "table"}),
        }
    )
    with pytest.raises(ValueError, match=r"has no table 'events' \(events.table\); expected columns event_id"):
        night(table_source, NIGHT_1)


def test_the_silver_quality_gate_checks_the_nights_events(spark, lake_settings):
    from jobs import validate

    landing = Path(lake_settings.events.landing_dir)
    drop(landing, "gate.ndjson", [event("g1", "2026-11-24T10:00:00Z", customer=1), event("g2", "2026-11-24T10:05:00Z", kind="add_to_cart")])
    night(lake_settings, NIGHT_1)
    summary = validate.run(NIGHT_1, lake_settings, "gate-test", "silver", tables_to_check=["events"])
    assert summary["passed"] and summary["tables"]["events"]["rows"] == 2
    assert summary["tables"]["events"]["expectations"] >= 10


def test_a_night_that_stopped_after_bronze_is_applied_by_the_next_one(spark, lake_settings):
    from datetime import timezone

    from core.lake import Lake

    landing = Path(lake_settings.events.landing_dir)
    drop(landing, "day-24.ndjson", [event("k1", "2026-11-24T10:00:00Z", customer=1)])
    # Night 1 is killed after its bronze batch and ledger committed, before silver.
    events.ingest(Lake(spark, lake_settings.lake_dir), lake_settings, NIGHT_1, "killed", datetime.now(timezone.utc).replace(microsecond=0))
    assert not ArrowLake(lake_settings.lake_dir).exists("silver", "events")
    drop(landing, "day-25.ndjson", [event("k2", "2026-11-25T10:00:00Z", customer=1)])
    second = night(lake_settings, NIGHT_2)
    assert second["batches_applied"] == ["2026-11-24", "2026-11-25"] and second["silver_inserted"] == 2
    assert [row["event_id"] for row in silver(lake_settings)] == ["k1", "k2"]
