"""Alerts a data engineer expects from the nightly: a task that failed, and a night not finished in time.

Both are logged as warnings and, when `airflow.alert_webhook_url` is set, posted there as one JSON object
(a chat's incoming webhook, an incident tool, a small relay to e-mail):

    {"event": "task_failed", "dag_id": "crm_nightly", "run_id": "scheduled__2026-11-27T02:00:00+00:00",
     "run_date": "2026-11-26", "task_id": "clean", "try_number": 3, "error": "..."}
    {"event": "night_late", "dag_id": "crm_nightly", "run_id": "scheduled__2026-11-27T02:00:00+00:00",
     "run_date": null, "logical_date": "2026-11-27T02:00:00Z", "deadline": "2026-11-27 07:00:00+00:00"}

`task_failed` comes from the DAGs' on-failure callback (`core.airflow_task.record_failure`): a task failed
and has no retry left (a try that Airflow retries alerts nobody; the run log records it). `night_late` comes
from the nightly's Airflow deadline alert (`late_night`, run by the triggerer). A webhook that cannot be
reached is logged, never raised: an alert must not fail the night. The webhook's URL is a secret (a chat's
incoming webhook carries its token in the path): a log line shows its scheme and host only.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

from core.config import Settings
from core.db import masked_destination

#: Seconds a webhook may take to accept an alert.
WEBHOOK_TIMEOUT_S = 10

log = logging.getLogger(__name__)


def send(settings: Settings, alert: dict[str, Any]) -> bool:
    """Log `alert` as a warning and POST it to `airflow.alert_webhook_url` when one is set; True when the
    webhook accepted it (a 2xx answer)."""
    log.warning("alert: %s", json.dumps(alert, default=str))
    url = settings.airflow.alert_webhook_url
    if not url:
        return False
    request = urllib.request.Request(
        url, data=json.dumps(alert, default=str).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as answer:
            return 200 <= answer.status < 300
    except OSError as error:  # URLError and HTTPError are OSErrors
        log.warning("alert webhook %s did not take the alert: %s", masked_destination(url), error)
        return False


async def late_night(context: dict[str, Any] | None = None, **_: Any) -> None:
    """The nightly's deadline alert (Airflow's `DeadlineAlert`, run in the triggerer): the night has not
    finished by its deadline; say which run and when it was due."""
    import asyncio

    from core.config import load_config

    # Airflow 3.3 hands the triggerer {"dag_run": <the REST API's DAGRunResponse as JSON>, "deadline": {...}}.
    context = context or {}
    dag_run = context.get("dag_run") or {}
    alert = {
        "event": "night_late",
        "dag_id": dag_run.get("dag_id"),
        "run_id": dag_run.get("dag_run_id"),
        "run_date": (dag_run.get("conf") or {}).get("run_date"),
        "logical_date": dag_run.get("logical_date"),
        "deadline": str((context.get("deadline") or {}).get("deadline_time")),
    }
    await asyncio.to_thread(send, load_config(), alert)
