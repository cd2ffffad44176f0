"""
### crm_export_check: a consumer of the nightly's exports, run by Airflow when a night has exported

Scheduled on the asset `shop-crm://exports` (`core.assets.EXPORTS`): each time `crm_nightly`'s `export` task
succeeds, Airflow records an asset event and queues a run of this DAG. A run triggered by an asset has no
logical date; its run date is the newest `run_date` in the extras of the events that triggered it
(`core.rundate.business_date`), so it checks the folder of the night that exported, not "the latest".

`check_export` reads `exports/<run_date>/` as a marketing tool should (docs/export-contract.md): only when
`_SUCCESS` is there, every file's size and SHA-256 as `manifest.json` states them; it returns the export's run
id and the rows per dataset (the task's XCom, and `crm status`). It reads files only: it runs beside the next
night and takes no lock.

Copy this file for your own sync (a mailing tool, a CDP): keep the schedule and the run date, and call your
upload after the check. Like every new DAG here it starts paused: unpause it (UI, or
`PATCH /api/v2/dags/crm_export_check {"is_paused": false}`) before the nights whose exports it should see.
A manual trigger checks the date in its conf: `{"run_date": "YYYY-MM-DD"}`.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from core import assets
from core.airflow_task import record_failure, run_task
from core.rundate import DAG_START


@dag(
    dag_id="crm_export_check",
    schedule=[assets.EXPORTS],
    start_date=DAG_START,
    catchup=False,
    max_active_runs=1,
    tags=["crm", "exports", "consumer"],
    doc_md=__doc__,
    default_args={"retries": 1, "owner": "marketing-ops", "on_failure_callback": record_failure},
)
def crm_export_check():
    @task
    def check_export(**context):
        """Check `exports/<run_date>/` against its manifest (`_SUCCESS`, version, sizes, SHA-256): `jobs/check_export.py`."""
        from jobs.check_export import run  # deferred: the scheduler parses this file often

        return run_task(run, context, night=False, holds_root=False)

    check_export()


crm_export_check()
