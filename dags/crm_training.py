"""
### crm_training: the churn model, retrained every week and on demand

Runs on Sundays at 04:00 UTC (after that night's `crm_nightly`) for the day before, or when triggered by
hand (`crm train --date YYYY-MM-DD`, or *Trigger DAG* in the UI with `{"run_date": "YYYY-MM-DD"}`).

`train_churn` builds two point-in-time snapshots from silver (features at the run date minus twice
`churn.horizon_days`, and minus once, each labelled by whether the customer bought in the horizon after
it), trains a calibrated challenger and the logistic baseline on the first, and judges them, with BG/NBD's
`1 - P(alive)`, on the second. Parameters, metrics, calibration tables, plots and the model with its
signature go to MLflow (`mlflow.tracking_uri`, experiment `mlflow.experiment`). The challenger becomes
the `champion` that nightly scoring loads only if it beats the current champion on the same holdout by
`churn.promote_margin`; otherwise the champion stays and the new version is tagged with the reason.

Reads the lake only (silver); writes only to MLflow, so it may run beside a nightly run.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from core.airflow_task import record_failure, run_task
from core.rundate import DAG_START


@dag(
    dag_id="crm_training",
    schedule="0 4 * * 0",
    start_date=DAG_START,  # far back: `crm train --date` trains as of any past date (core/rundate.py)
    catchup=False,
    max_active_runs=1,
    tags=["crm", "training", "mlflow"],
    doc_md=__doc__,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10), "owner": "data-science", "on_failure_callback": record_failure},
)
def crm_training():
    @task(execution_timeout=timedelta(hours=3))
    def train_churn(**context):
        """Snapshots, challenger and baselines, MLflow logging, and the champion decision (`jobs/train.py`)."""
        from jobs.train import run  # deferred: the scheduler parses this file often; the job's imports are the task's

        return run_task(run, context, night=False)

    train_churn()


crm_training()
