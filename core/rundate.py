"""The business date of a DAG run, decided once.

A nightly run processes the day before it starts: the run triggered at 2026-11-27 02:00 UTC covers
2026-11-26 (all data up to the end of that day, UTC). `crm run --date D` and manual triggers pass
`{"run_date": "YYYY-MM-DD"}` in the run's conf, which wins. A run triggered by the nightly's assets has
neither conf nor logical date: its date is the newest `run_date` its asset events carry (`core.assets`).
Every job receives this plain `date`.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any

#: The DAGs' start_date: Airflow runs no task of a run whose logical date is before it (and reports such a run
#: as a success), so it lies before any shop's history (CDNOW's log starts in 1997) and `crm run --date` can
#: run any past date; the DAGs' catchup=False keeps the scheduler from running all those nights by itself.
DAG_START = datetime(1970, 1, 1, tzinfo=timezone.utc)


class RunDateError(ValueError):
    """The run's conf names a run date that is not a date."""


def business_date(context: dict[str, Any]) -> date:
    """The run date of an Airflow task's context: conf `run_date`, else the day before the run's start."""
    dag_run = context.get("dag_run")
    conf = run_conf(context)
    if conf.get("run_date"):
        return parse_run_date(str(conf["run_date"]), "dag_run.conf.run_date")
    if event_dates := asset_event_dates(context):
        return max(event_dates)
    moment = context.get("logical_date") or getattr(dag_run, "run_after", None)
    if moment is None:
        raise RunDateError("the DAG run has neither conf run_date, logical_date nor run_after")
    return (moment.astimezone(timezone.utc) - timedelta(days=1)).date()


def asset_event_dates(context: dict[str, Any]) -> list[date]:
    """The run dates named by the asset events that triggered the run (each event's extra `run_date`); [] for a
    run no asset triggered. Several nights (a backfill too) may have finished since the consumer last ran."""
    events = context.get("triggering_asset_events") or {}
    return sorted(
        {
            parse_run_date(str(event.extra["run_date"]), "asset event extra run_date")
            for per_asset in events.values()
            for event in per_asset
            if (event.extra or {}).get("run_date")
        }
    )


def run_conf(context: dict[str, Any]) -> dict[str, Any]:
    """The conf a DAG run was triggered with (`crm run` passes run_date and full); {} when it has none."""
    return getattr(context.get("dag_run"), "conf", None) or {}


def parse_run_date(text: str, what: str = "run date") -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise RunDateError(f"{what}: {text!r} is not a date; expected YYYY-MM-DD") from None


def end_of(day: date) -> datetime:
    """The first instant after `day` (UTC): whatever happened before it happened by the end of `day`."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=timezone.utc)


def yesterday(now: datetime | None = None) -> date:
    """The latest complete day in UTC (the default run date of `crm run` and `make demo`)."""
    return ((now or datetime.now(timezone.utc)) - timedelta(days=1)).date()
