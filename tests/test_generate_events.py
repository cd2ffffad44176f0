"""The demo shop's browsing events: deterministic, beside an unchanged shop, browsing before every order,
less browsing before churn, identical rows in the table and the files, counted defects."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import re
from collections import Counter, defaultdict

import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine, func, inspect, select
from sqlalchemy.engine import Engine
from test_generate_shop import _table_hashes

from core.shop_schema import EVENT_CHANNELS, EVENT_TYPES, events, metadata
from demo_shop.generate_shop import generate_shop

CUSTOMERS = 400
SEED = 20240630
END_DATE = dt.date(2024, 6, 30)
END_AT = dt.datetime(2024, 7, 1)
DAYS = 45
WINDOW_START = END_AT - dt.timedelta(days=DAYS)
COLUMNS = tuple(column.name for column in events.columns)

T = metadata.tables


def _generate(folder: pathlib.Path, name: str, customers: int = CUSTOMERS, **options) -> tuple[Engine, pathlib.Path, dict]:
    url = f"sqlite:///{folder / name}.db"
    truth_dir = folder / f"{name}_truth"
    summary = generate_shop(url, customers, SEED, END_DATE, truth_dir, **{"events_days": DAYS, **options})
    return create_engine(url), truth_dir, summary


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("events")


@pytest.fixture(scope="module")
def table_shop(folder):
    """The shop with its events in the table `events`."""
    engine, truth_dir, summary = _generate(folder, "table", events="table")
    yield engine, truth_dir, summary
    engine.dispose()


@pytest.fixture(scope="module")
def file_shop(folder):
    """The same shop with its events in NDJSON files."""
    landing = folder / "landing"
    engine, truth_dir, summary = _generate(folder, "files", events="files", landing_dir=landing)
    yield engine, truth_dir, summary, landing
    engine.dispose()


def _event_rows(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(events).order_by(events.c.event_id))]


def _sessions(truth_dir: pathlib.Path) -> dict[str, dict]:
    return {row["session_id"]: row for row in pq.read_table(truth_dir / "event_sessions.parquet").to_pylist()}


def _file_rows(landing: pathlib.Path) -> list[tuple[str, dict]]:
    """(file name, event) for every line of every event file."""
    return [(path.name, json.loads(line)) for path in sorted(landing.iterdir()) for line in path.read_text(encoding="utf-8").splitlines()]


def test_same_seed_gives_identical_events_whatever_the_chunk_size(table_shop, folder):
    engine, truth_dir, summary = table_shop
    again, again_truth, summary_again = _generate(folder, "again", events="table", chunk_customers=250)
    assert _event_rows(again) == _event_rows(engine)
    sessions = pq.read_table(truth_dir / "event_sessions.parquet")
    assert pq.read_table(again_truth / "event_sessions.parquet").equals(sessions)
    assert summary_again == summary
    again.dispose()


def test_events_leave_every_other_table_and_the_truth_as_without_them(table_shop, file_shop, folder):
    plain, plain_truth, plain_summary = _generate(folder, "plain")
    expected = _table_hashes(plain)
    assert _table_hashes(table_shop[0]) == expected
    assert _table_hashes(file_shop[0]) == expected
    assert "events" not in inspect(plain).get_table_names() and "events" not in inspect(file_shop[0]).get_table_names()
    assert "events" not in plain_summary and not (plain_truth / "event_sessions.parquet").exists()
    assert {key: value for key, value in table_shop[2].items() if key != "events"} == plain_summary
    for name in ("customers", "coupon_assignments", "inquiries"):
        assert pq.read_table(table_shop[1] / f"{name}.parquet").equals(pq.read_table(plain_truth / f"{name}.parquet"))
    plain.dispose()


def test_customers_make_about_fifty_events_per_active_month_loyal_ones_more(table_shop):
    engine, truth_dir, _ = table_shop
    owner = {session_id: row["customer_id"] for session_id, row in _sessions(truth_dir).items()}
    per_customer = Counter(owner[row["session_id"]] for row in _event_rows(engine))
    customers = pq.read_table(truth_dir / "customers.parquet").to_pylist()
    months, events_by_type, months_by_type = 0.0, Counter(), Counter()
    for customer in customers:
        # Active: signed up and not dropped out (a dropped-out customer's last order is when it dropped out).
        stop = END_AT if customer["is_alive_at_end"] else min(END_AT, customer["last_order_at"])
        active_months = max(0.0, (stop - max(customer["signup_at"], WINDOW_START)).total_seconds()) / 86_400 / 30
        months += active_months
        months_by_type[customer["customer_type"]] += active_months
        events_by_type[customer["customer_type"]] += per_customer[customer["customer_id"]]
    customer_events = sum(count for customer_id, count in per_customer.items() if customer_id is not None)
    assert 30 <= customer_events / months <= 80
    assert events_by_type["loyal"] / months_by_type["loyal"] > 1.5 * events_by_type["casual"] / months_by_type["casual"]
    # Visitors who are not customers make about a tenth of all events.
    assert 0.06 <= per_customer[None] / sum(per_customer.values()) <= 0.14


def test_every_order_in_the_window_is_preceded_by_views_of_its_products_by_its_customer(table_shop):
    engine, truth_dir, _ = table_shop
    owner = {session_id: row["customer_id"] for session_id, row in _sessions(truth_dir).items()}
    views = defaultdict(list)  # (customer, product) -> view times, anonymous views stitched through the truth
    checkouts = set()
    for row in _event_rows(engine):
        if row["event_type"] == "view":
            views[owner[row["session_id"]], row["product_id"]].append(row["occurred_at"])
        elif row["event_type"] == "checkout":
            checkouts.add((row["customer_id"], row["occurred_at"]))
    o, i, c = T["orders"], T["order_items"], T["customers"]
    with engine.connect() as conn:
        lines = conn.execute(
            select(o.c.id, o.c.customer_id, o.c.created_at, i.c.product_id)
            .join(c, c.c.id == o.c.customer_id)
            .join(i, i.c.order_id == o.c.id)
            .where(o.c.total_amount > 0, o.c.created_at >= WINDOW_START, o.c.created_at < END_AT, i.c.quantity > 0)
        ).all()
    assert len({line.id for line in lines}) > 100
    researched = set()
    for line in lines:
        seen = views[line.customer_id, line.product_id]
        assert any(line.created_at - dt.timedelta(hours=24) <= at <= line.created_at for at in seen), line
        assert (line.customer_id, line.created_at) in checkouts, line
        if any(line.created_at - dt.timedelta(days=14) <= at <= line.created_at - dt.timedelta(days=1) for at in seen):
            researched.add(line.id)
    # A research visit 1-14 days before comes with about 60 % of orders (some are cut by the window's start).
    assert 0.4 <= len(researched) / len({line.id for line in lines}) <= 0.8


def test_dropped_out_customers_visit_less_in_the_month_before_they_stop(folder):
    engine, truth_dir, _ = _generate(folder, "churn", customers=600, events="table", events_days=180)
    owner = {session_id: row["customer_id"] for session_id, row in _sessions(truth_dir).items()}
    with engine.connect() as conn:
        starts = conn.execute(select(events.c.session_id, func.min(events.c.occurred_at)).group_by(events.c.session_id)).all()
    engine.dispose()
    visits = defaultdict(list)
    for session_id, started_at in starts:
        visits[owner[session_id]].append(started_at)
    first = END_AT - dt.timedelta(days=180)
    recent = earlier = after_stop = 0
    dropped = [customer for customer in pq.read_table(truth_dir / "customers.parquet").to_pylist() if not customer["is_alive_at_end"]]
    for customer in dropped:
        dropped_at = customer["last_order_at"]
        for started_at in visits[customer["customer_id"]]:
            days_before = (dropped_at - started_at).total_seconds() / 86_400
            after_stop += days_before < -90.01  # a visit may last beyond its start by minutes
            if dropped_at - dt.timedelta(days=90) >= max(first, customer["signup_at"]):
                recent += 0 <= days_before < 30
                earlier += 60 <= days_before < 90
    assert earlier > 100
    assert recent < 0.8 * earlier
    assert after_stop == 0


def test_event_files_are_one_valid_ndjson_file_per_day_with_the_rows_of_the_table(table_shop, file_shop):
    _, _, summary, landing = file_shop
    names = sorted(path.name for path in landing.iterdir())
    days = [WINDOW_START.date() + dt.timedelta(days=k) for k in range(DAYS)]
    assert names == [f"events-{day.isoformat()}.ndjson" for day in days]  # nothing hidden left behind
    rows = _file_rows(landing)
    assert len(rows) == summary["events"]["written"] and summary["events"]["files"] == DAYS
    by_id: dict[str, dict] = {}
    resent = 0
    for name, row in rows:
        assert tuple(row) == COLUMNS and isinstance(row["properties"], dict)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["occurred_at"])
        file_day = name[len("events-") : -len(".ndjson")]
        if row["event_id"] in by_id:
            assert by_id[row["event_id"]] == row  # a re-sent copy is the same event, in a file of its day or later
            assert row["occurred_at"][:10] <= file_day
            resent += 1
        else:
            assert row["occurred_at"][:10] == file_day
            by_id[row["event_id"]] = row
    assert resent == summary["events"]["duplicates"] >= 1

    def as_table_row(row: dict) -> dict:
        occurred_at = dt.datetime.strptime(row["occurred_at"], "%Y-%m-%dT%H:%M:%SZ")
        return {**row, "occurred_at": occurred_at, "properties": row["properties"]}

    table_rows = [{**row, "properties": json.loads(row["properties"])} for row in _event_rows(table_shop[0])]
    assert [as_table_row(by_id[event_id]) for event_id in sorted(by_id)] == table_rows
    assert table_shop[2]["events"]["duplicates"] == 0  # the table's primary key refuses a re-sent event


def test_summary_counts_equal_the_events_found_and_anonymous_events_precede_the_login(table_shop):
    engine, truth_dir, summary = table_shop
    sessions = _sessions(truth_dir)
    rows = _event_rows(engine)
    counted = summary["events"]
    assert counted["output"] == "table" and counted["days"] == DAYS and counted["written"] == len(rows)
    assert (counted["first_day"], counted["last_day"]) == (WINDOW_START.date().isoformat(), END_DATE.isoformat())
    unknown = [row for row in rows if row["event_type"] not in EVENT_TYPES]
    assert counted["bad"]["unknown_event_type"] == len(unknown) >= 1
    assert {row["channel"] for row in rows} == set(EVENT_CHANNELS)
    assert all(WINDOW_START <= row["occurred_at"] < END_AT for row in rows)

    found = Counter()
    by_session = defaultdict(list)
    for row in rows:
        by_session[row["session_id"]].append(row)
    assert set(by_session) == set(sessions)
    for session_id, session_rows in by_session.items():
        truth = sessions[session_id]
        anonymous = [row for row in session_rows if row["customer_id"] is None]
        identified = [row for row in session_rows if row["customer_id"] is not None]
        assert truth["events"] == len(session_rows) and truth["anonymous_events"] == len(anonymous)
        assert truth["logged_in"] == bool(identified)
        assert all(row["customer_id"] == truth["customer_id"] for row in identified)
        if truth["customer_id"] is None:
            found["visitor_events"] += len(session_rows)
        elif truth["logged_in"]:
            found["anonymous_before_login"] += len(anonymous)
            assert all(row["occurred_at"] <= min(r["occurred_at"] for r in identified) for row in anonymous)
        else:
            found["never_identified"] += len(session_rows)
    assert {key: counted[key] for key in found} == dict(found)
    customer_sessions = [s for s in sessions.values() if s["customer_id"] is not None]
    starts_anonymous = sum(s["logged_in"] and s["anonymous_events"] > 0 for s in customer_sessions)
    assert 0.15 <= starts_anonymous / len(customer_sessions) <= 0.45
    assert 0.02 <= sum(not s["logged_in"] for s in customer_sessions) / len(customer_sessions) <= 0.15


def test_events_of_a_document_shop_go_to_files_only(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"mongodb://127\.0\.0\.1:9/shop: events of a document shop can only go "
        r"to files \(--events files\)",
    ):
        generate_shop("mongodb://127.0.0.1:9/shop", 10, 1, END_DATE, tmp_path / "truth", events="table")
    with pytest.raises(ValueError, match="landing_dir: required with events='files'"):
        generate_shop(f"sqlite:///{tmp_path / 'shop.db'}", 10, 1, END_DATE, tmp_path / "truth", events="files")
    assert not (tmp_path / "truth").exists()
