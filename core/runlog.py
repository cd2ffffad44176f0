"""The run log: one row per task attempt of every DAG run, in the CRM database (`pipeline_runs`).

`core.airflow_task.run_task` writes a task's row when its job starts (`running`) and when it ends
(`success` with the job's summary, or `failed` with the error); the DAGs' on-failure callback marks a task
`failed` that never reached or never left its job (a timeout, a killed worker). `crm status` reads it, and
so can an operator in SQL. Unlike the published CRM tables, which each night replaces, it only grows.

Writing it never fails a task: when the CRM database cannot be reached the job still runs, and the log
says that its run-log row is missing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from alembic.util import CommandError
from sqlalchemy import Table, delete, func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from core import db, migrate
from core.config import Settings
from core.crm_schema import run_log_table, schema_of

log = logging.getLogger(__name__)

#: Longest error text kept (the first line is the message; the task log has the traceback).
ERROR_CHARS = 2000


@dataclass(frozen=True)
class Attempt:
    """Which task attempt a row describes."""

    run_id: str
    stage: str
    try_number: int
    dag_id: str
    run_date: date


def record(
    settings: Settings,
    attempt: Attempt,
    state: str,
    started_at: datetime,
    finished_at: datetime | None = None,
    summary: Any = None,
    error: str | None = None,
) -> None:
    """Write (or overwrite) the attempt's row; a database error is logged, never raised."""
    table = run_log_table(schema_of(settings.crm.db_url, settings.crm.schema_name))
    row = {
        "run_id": attempt.run_id,
        "stage": attempt.stage,
        "try_number": attempt.try_number,
        "dag_id": attempt.dag_id,
        "run_date": attempt.run_date,
        "state": state,
        "started_at": _naive_utc(started_at),
        "finished_at": _naive_utc(finished_at),
        "seconds": (finished_at - started_at).total_seconds() if finished_at else None,
        "summary": json.dumps(summary, default=str) if summary is not None else None,
        "error": error[:ERROR_CHARS] if error else None,
    }
    try:
        migrate.ensure_current(settings.crm.db_url, table.schema)
        with db.engine(settings.crm.db_url).begin() as connection:
            connection.execute(
                delete(table).where(
                    (table.c.run_id == attempt.run_id) & (table.c.stage == attempt.stage) & (table.c.try_number == attempt.try_number)
                )
            )
            connection.execute(table.insert(), [row])
    except (SQLAlchemyError, CommandError, RuntimeError) as error:
        log.warning(
            "run log: could not write %s/%s (try %d) to %s: %s",
            attempt.run_id,
            attempt.stage,
            attempt.try_number,
            db.masked(settings.crm.db_url),
            error,
        )


def record_failure_if_open(settings: Settings, attempt: Attempt, error: str) -> None:
    """Mark the attempt failed unless its job already wrote its outcome (the on-failure callback)."""
    table = run_log_table(schema_of(settings.crm.db_url, settings.crm.schema_name))
    now = datetime.now(timezone.utc)
    try:
        with db.engine(settings.crm.db_url).connect() as connection:
            if not db_has_table(connection, table):
                existing = None
            else:
                existing = connection.execute(
                    select(table.c.state, table.c.started_at).where(
                        (table.c.run_id == attempt.run_id) & (table.c.stage == attempt.stage) & (table.c.try_number == attempt.try_number)
                    )
                ).first()
    except SQLAlchemyError as db_error:
        log.warning("run log: could not read %s: %s", db.masked(settings.crm.db_url), db_error)
        return
    if existing is not None and existing.state == "failed":
        return
    started = existing.started_at.replace(tzinfo=timezone.utc) if existing is not None else now
    record(settings, attempt, "failed", started, now, error=error)


def db_has_table(connection, table: Table) -> bool:
    return inspect(connection).has_table(table.name, schema=table.schema)


def stage_succeeded(settings: Settings, run_id: str, stage: str) -> bool:
    """Whether the run log records a successful attempt of `stage` in run `run_id`."""
    table = run_log_table(schema_of(settings.crm.db_url, settings.crm.schema_name))
    with db.engine(settings.crm.db_url).connect() as connection:
        if not db_has_table(connection, table):
            return False
        found = connection.execute(
            select(table.c.try_number).where((table.c.run_id == run_id) & (table.c.stage == stage) & (table.c.state == "success")).limit(1)
        )
        return found.first() is not None


def recent_runs(settings: Settings, runs: int = 5) -> list[dict[str, Any]]:
    """The latest `runs` runs (newest first), each with its stages' latest attempts in start order."""
    table = run_log_table(schema_of(settings.crm.db_url, settings.crm.schema_name))
    if db.kind(settings.crm.db_url) == "sqlite" and not Path(make_url(settings.crm.db_url).database or "").exists():
        return []  # no night has written it yet (connecting would create the file)
    with db.engine(settings.crm.db_url).connect() as connection:
        if not db_has_table(connection, table):
            return []
        latest = (
            connection.execute(select(table.c.run_id).group_by(table.c.run_id).order_by(func.max(table.c.started_at).desc()).limit(runs))
            .scalars()
            .all()
        )
        rows = (
            connection.execute(select(table).where(table.c.run_id.in_(latest)).order_by(table.c.started_at, table.c.try_number))
            .mappings()
            .all()
        )
    by_run: dict[str, dict[str, dict]] = {run_id: {} for run_id in latest}
    for row in rows:
        by_run[row["run_id"]][row["stage"]] = dict(row)  # a later try replaces an earlier one
    return [{"run_id": run_id, "stages": list(stages.values())} for run_id, stages in by_run.items()]


def _naive_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def render_status(runs: list[dict[str, Any]], live_run_id: str | None = None, seen: tuple[str, datetime] | None = None) -> str:
    """The runs as `crm status` prints them: one block per run, one line per stage.

    `live_run_id`: the run that holds the data root now (`core.nightlock`). A task marked running in any
    other run is not running: its night was killed (or its machine stopped), so it shows as interrupted,
    with the last time that night was heard of: the run log's latest time of it, or `seen` (run id, UTC),
    the lock's last heartbeat, when later.
    """
    if not runs:
        return "no pipeline runs recorded yet (the run log fills as DAG tasks run: `crm run`)"
    blocks = []
    for run in runs:
        stages = [
            {**stage, "state": INTERRUPTED} if stage["state"] == "running" and run["run_id"] != live_run_id else stage
            for stage in run["stages"]
        ]
        first = stages[0]
        states = {stage["state"] for stage in stages}
        state = next((state for state in ("failed", INTERRUPTED, "running") if state in states), "success")
        recorded = {stage["stage"] for stage in stages}
        if state == "success" and NIGHT_FIRST_STAGE in recorded and NIGHT_LAST_STAGE not in recorded:
            # Every task so far succeeded, but the night's teardown has not run: not finished, whatever the
            # tasks say (between two tasks, or a night whose later tasks could not write the run log).
            state = "running" if run["run_id"] == live_run_id else UNFINISHED
        ends = [stage["finished_at"] for stage in stages if stage["finished_at"] is not None]
        took = f", {(max(ends) - first['started_at']).total_seconds():.0f} s" if ends and state != INTERRUPTED else ""
        started = f"started {first['started_at']:%Y-%m-%d %H:%M} UTC"
        if state == INTERRUPTED:
            where = ", ".join(stage["stage"] for stage in stages if stage["state"] == INTERRUPTED)
            last_seen = max(stage["finished_at"] or stage["started_at"] for stage in stages)
            if seen is not None and seen[0] == run["run_id"]:
                last_seen = max(last_seen, _naive_utc(seen[1]))
            state, started = f"{INTERRUPTED} in {where}", f"{started}, last seen {last_seen:%Y-%m-%d %H:%M:%S} UTC; rerun the date"
        blocks.append(f"{first['dag_id']} {run['run_id']} for {first['run_date']}: {state}{took} ({started})")
        for stage in stages:
            seconds = f"{stage['seconds']:7.1f} s" if stage["seconds"] is not None else "        -"
            tries = f" (try {stage['try_number']})" if stage["try_number"] > 1 else ""
            blocks.append(f"  {stage['stage']:<16} {stage['state']:<8}{seconds}  {_outcome(stage)}{tries}")
    return "\n".join(blocks)


def render_degraded(stages: list[dict[str, Any]]) -> list[str]:
    """What the night's tasks could not do, one line per reason (`degraded` in their summaries): e.g. what a
    shop without reviews, coupons or product categories does not get, and why."""
    lines = []
    for stage in stages:
        summary = json.loads(stage["summary"]) if stage.get("summary") else None
        if isinstance(summary, dict) and isinstance(summary.get("degraded"), dict):
            lines += [f"  {stage['stage']:<10} {what}: {reason}" for what, reason in summary["degraded"].items()]
    return lines


#: How `crm status` shows a task that the run log has as running but whose night no longer holds the data root.
INTERRUPTED = "interrupted"
#: The nightly's setup and teardown tasks (`dags/crm_nightly.py`): a night that recorded the first is finished
#: only when the last is recorded (it runs whether the night failed or not).
NIGHT_FIRST_STAGE, NIGHT_LAST_STAGE = "spark_up", "spark_down"
UNFINISHED = (
    f"not finished: no record of {NIGHT_LAST_STAGE}, which ends every night (see Airflow's task logs: a task that "
    "failed before it could write the run log, e.g. on an invalid configuration, or a night still waiting to be scheduled)"
)


#: The groups of a campaigns stage's summary (campaign -> group -> customers).
CAMPAIGN_GROUPS = {"treatment", "control", "suppressed"}


def _figure(value: float | None) -> str:
    """A holdout figure to three decimals; n/a for one the job could not compute (null: `run_task` turns NaN
    into null, e.g. a recall without a customer to judge it on)."""
    return "n/a" if value is None else f"{value:.3f}"


def _outcome(stage: dict[str, Any]) -> str:
    """What a stage did, in a few words, from its summary (or why it failed)."""
    if stage["state"] == INTERRUPTED:
        return f"started {stage['started_at']:%H:%M:%S} UTC; its night stopped (killed?) while it ran"
    if stage["state"] == "failed":
        return (stage["error"] or "").splitlines()[0][:160] if stage["error"] else "failed"
    if not stage["summary"]:
        return ""
    summary = json.loads(stage["summary"])
    if isinstance(summary, dict) and "passed" in summary:  # a quality gate
        return f"quality {'passed' if summary['passed'] else 'FAILED'}: {summary.get('critical_failures', 0)} critical failure(s)"
    if isinstance(summary, dict) and "source" in summary:  # the events stage
        if summary["source"] == "none":
            return "no events (events.source: none)"
        waiting = len(summary.get("files_waiting") or [])
        parts = [
            f"{summary.get('files_ingested', 0):,} files read"
            + (f" ({summary['files_already_ingested']:,} already read" if summary.get("files_already_ingested") else "")
            + (f"{', ' if summary.get('files_already_ingested') else ' ('}{waiting:,} waiting" if waiting else "")
            + (")" if summary.get("files_already_ingested") or waiting else ""),
            f"{summary['table_rows_read']:,} table rows read" if "table_rows_read" in summary else "",
            f"{summary.get('silver_inserted', 0):,} new events",
            f"{summary['duplicates']:,} duplicates dropped" if summary.get("duplicates") else "",
            f"{summary['silver_restitched']:,} stitched to a login" if summary.get("silver_restitched") else "",
            f"{summary['quarantined']:,} quarantined" if summary.get("quarantined") else "",
        ]
        return ", ".join(part for part in parts if part)[:200]
    if isinstance(summary, dict) and "figures" in summary:  # a model job: rows written, holdout figures
        parts = [
            ", ".join(f"{table} {rows:,}" for table, rows in summary.get("rows", {}).items()),
            f"{sum(summary['offers'].values()):,} offers" if "offers" in summary else "",
            ", ".join(f"{name} {_figure(value)}" for name, value in summary["figures"].items()),
            "degraded: " + ", ".join(summary["degraded"]) if summary.get("degraded") else "",
        ]
        return "; ".join(part for part in parts if part)[:200]
    if (
        isinstance(summary, dict)
        and summary
        and all(isinstance(groups, dict) and set(groups) <= CAMPAIGN_GROUPS for groups in summary.values())
    ):
        return f"{len(summary)} campaigns, to contact: " + ", ".join(
            f"{campaign} {groups.get('treatment', 0):,}" for campaign, groups in summary.items()
        )
    if isinstance(summary, dict) and summary and all(isinstance(value, dict) for value in summary.values()):
        # per table: extract's changed/deleted (and documents read, from a document shop), clean's
        # inserted/updated/deleted/quarantined
        counts: dict[str, int] = {}
        for table in summary.values():
            for key in ("documents", "changed", "inserted", "updated", "deleted", "quarantined"):
                if key in table:
                    counts[key] = counts.get(key, 0) + int(table[key] or 0)
        modes = sorted({str(table["mode"]) for table in summary.values() if table.get("mode")})
        shown = (
            ", ".join(f"{count:,} {'documents read' if key == 'documents' else key}" for key, count in counts.items() if count)
            or "no changes"
        )
        return f"{len(summary)} tables{' (' + '/'.join(modes) + ')' if modes else ''}: {shown}"
    if isinstance(summary, int):
        return f"{summary:,} customers"
    if isinstance(summary, dict) and summary and all(isinstance(value, int) for value in summary.values()):
        shown = ", ".join(f"{key} {value:,}" for key, value in list(summary.items())[:4])
        return shown + (f", ... ({len(summary)} in all)" if len(summary) > 4 else "")
    if isinstance(summary, dict) and "files_checked" in summary:  # crm_export_check: an export as a reader receives it
        rows = ", ".join(f"{dataset} {count:,}" for dataset, count in list(summary.get("rows", {}).items())[:3])
        return f"exports/{summary['run_date']} of {summary['export_run_id']}: {summary['files_checked']} files as listed; {rows}"[:200]
    if isinstance(summary, dict) and "customers" in summary:
        return f"{summary['customers']:,} customers scored, churn model {summary.get('churn_model') or 'none yet'}" + (
            "; degraded: " + ", ".join(summary["degraded"]) if summary.get("degraded") else ""
        )
    return str(summary)[:160]
