"""Alerts (`core.alerts`): a task that failed for good and a late night are POSTed to the configured webhook,
here a real HTTP server on a free local port; an unreachable webhook never fails the callback."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest

from core import alerts
from core.airflow_task import record_failure
from core.config import load_config
from tests.conftest import run_crm


class Webhook:
    """The alert webhook: a local HTTP server keeping every JSON body POSTed to it. Its URL carries a token in the
    path, as a chat's incoming webhook does, which no log may show."""

    TOKEN = "T0ken0in0the0path"

    def __init__(self):
        self.received: list[dict] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                """Quiet: the test's output is not the place for each request the webhook receives."""

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0/B0/{self.TOKEN}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(monkeypatch):
    """A local HTTP server that keeps every JSON body POSTed to it; its URL is the configured webhook."""
    hook = Webhook()
    monkeypatch.setenv("CRM__AIRFLOW__ALERT_WEBHOOK_URL", hook.url)
    yield hook.received
    hook.close()


def failed_task_context(error: Exception) -> dict:
    """What Airflow hands an on-failure callback: the run, the task instance (its last try) and the error."""
    ti = SimpleNamespace(task_id="clean", dag_id="crm_nightly", try_number=3)
    dag_run = SimpleNamespace(conf={"run_date": "2026-11-20"}, run_id="scheduled__2026-11-21T02:00:00+00:00")
    return {"run_id": dag_run.run_id, "ti": ti, "dag_run": dag_run, "exception": error}


def test_a_task_that_failed_for_good_is_posted_with_its_run_task_and_error(webhook):
    record_failure(failed_task_context(RuntimeError("silver.orders: MERGE failed")))

    assert webhook == [
        {
            "event": "task_failed",
            "dag_id": "crm_nightly",
            "run_id": "scheduled__2026-11-21T02:00:00+00:00",
            "run_date": "2026-11-20",
            "task_id": "clean",
            "try_number": 3,
            "error": "RuntimeError: silver.orders: MERGE failed",
        }
    ]


def test_a_late_night_is_posted_by_the_deadline_callback(webhook):
    # What Airflow 3.3's scheduler hands the triggerer for a missed deadline (airflow/models/deadline.py,
    # handle_miss): the run as the REST API shows it, and the deadline. Seen under `crm airflow`.
    context = {
        "dag_run": {
            "dag_run_id": "scheduled__2026-11-21T02:00:00+00:00",
            "dag_id": "crm_nightly",
            "logical_date": "2026-11-21T02:00:00Z",
            "run_type": "scheduled",
            "state": "running",
            "conf": {},
        },
        "deadline": {"id": "0198", "deadline_time": "2026-11-21 07:00:00+00:00"},
    }
    asyncio.run(alerts.late_night(context=context))

    assert webhook == [
        {
            "event": "night_late",
            "dag_id": "crm_nightly",
            "run_id": "scheduled__2026-11-21T02:00:00+00:00",
            "run_date": None,
            "logical_date": "2026-11-21T02:00:00Z",
            "deadline": "2026-11-21 07:00:00+00:00",
        }
    ]


#: A chat's incoming webhook: the token is in the path (and here in the query too).
TOKEN = "XyZ0secret0token"


def test_an_unreachable_webhook_is_logged_with_its_token_masked_and_the_callback_goes_on(monkeypatch, caplog):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CRM__AIRFLOW__ALERT_WEBHOOK_URL", f"http://hooks:{TOKEN}@127.0.0.1:{port}/services/T0/B0/{TOKEN}?token={TOKEN}")

    with caplog.at_level("INFO"):
        assert alerts.send(load_config(), {"event": "task_failed", "task_id": "clean"}) is False
        record_failure(failed_task_context(RuntimeError("silver.orders: MERGE failed")))
    logged = caplog.text
    assert f"alert webhook http://127.0.0.1:{port}/*** did not take the alert" in logged
    assert TOKEN not in logged


def test_the_webhook_token_is_kept_out_of_crm_config_and_of_configuration_errors():
    from core.config import ConfigError

    shown = run_crm("config", env={"CRM__AIRFLOW__ALERT_WEBHOOK_URL": f"https://hooks.example.com/services/T0/B0/{TOKEN}"}).stdout
    assert "https://hooks.example.com/***" in shown and TOKEN not in shown
    with pytest.raises(ConfigError) as error:
        load_config(environ={"CRM__AIRFLOW__ALERT_WEBHOOK_URL": f"hooks.example.com/services/{TOKEN}"})
    assert "airflow.alert_webhook_url: Value error, expected an http:// or https:// URL" in str(error.value)
    assert TOKEN not in str(error.value)
