"""
### crm_nightly: the shop's database to CRM tables and export files, every night

Runs at 02:00 UTC (`airflow.nightly_schedule`) for the day before (the *run date*; a manual run may pass `{"run_date": "YYYY-MM-DD"}`
in its conf, which `crm run --date` does). Each task is one job of `jobs/`, reads and writes only the run
date's partition, and hands data to the next task through the Delta lake, so any task can be rerun alone.
The tasks share one Spark: `spark_up` starts the night's Spark Connect server and `spark_down` stops it
(a setup and teardown pair; `spark.remote` points them at a server you run instead).

`extract` (what changed in the shop -> bronze; conf `{"full": true}` reloads everything) →
`validate_bronze` → `clean` (bronze -> silver by MERGE, bad rows to quarantine) → `events` (browsing events
from the landing folder and/or the shop's events table -> bronze/events -> silver/events: each file once,
each event once, sessions stitched to the customer who logged in, visits) → `validate_silver` →
`features` (silver -> gold/customer_features and customer_activity, point in time) → `score` (RFM segments, movement,
behavioural clusters, customer profiles: gold/customer_segments, customer_clusters, customer_profile,
segment_summary, segment_movement) and, beside it, `predict` (churn probability with reasons from the
MLflow `champion` model, P(alive), expected orders, 12-month CLV with its interval, next order date:
gold/customer_scores), and after them `recommend` (ALS product recommendations and category propensity:
gold/recommendations, category_propensity), `insights` (review sentiment and aspects, alerts, inquiry
triage, satisfaction: gold/review_insights, review_alerts, inquiry_triage, customer_satisfaction), `offers`
(coupons by uplift within a budget: gold/coupon_offers), then `campaigns` (the audiences of
`conf/campaigns/*.yaml` over all of that: treatment, control and suppressed customers per campaign,
gold/campaign_audiences) →
`validate_gold` → `publish` (CRM tables, one transaction), `export` (files for marketing,
`exports/<run_date>/`) and `report` (the run report, `reports/<run_date>/index.html`: segments and their
movement, score distributions, CLV by segment, churn calibration, data quality, biggest changes).

The `validate_*` tasks are the quality gates: Great Expectations suites (`expectations/`) on the layer
just written. A failed critical expectation fails the task, so the CRM tables and exports keep the
previous run; warnings are only recorded. Results and Data Docs: `<data>/quality/`.

Configuration: `conf/` and `CRM_*` environment variables of the worker (see docs/configuration.md).

#### Assets: other DAGs can run on this one's data

Three tasks declare what they finish as Airflow assets (`core/assets.py`); each success records an asset
event per asset, whose extra says which night it is of: `{"run_date": "YYYY-MM-DD", "run_id": ...}`.

| task | assets | an event means |
|---|---|---|
| `validate_gold` | `shop-crm://gold/<table>`, one per gold table | the run date's gold partitions passed the gate |
| `publish` | `shop-crm://crm/<table>`, one per CRM table | published (one transaction), unless they hold a later date |
| `export` | `shop-crm://exports` | `exports/<run_date>/` is complete; `latest` moves to the newest date only |

A backfill of older dates records events too: compare their `run_date` before acting on them.

A downstream DAG schedules on them and takes its business date from the event (a run triggered by an
asset has no logical date; `core.rundate.business_date` reads it from the events). `crm_export_check`
(`dags/crm_export_check.py`) is one that ships: it checks each night's export folder against its manifest,
and is the one to copy. New DAGs start paused here (`AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION`), and
Airflow queues no run for a paused DAG: unpause it. `crm export` runs outside Airflow and records no event.

```python
from datetime import date
from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference, dag, task
from core import assets

SCORES = assets.crm_table("customer_scores")  # elsewhere: Asset("shop-crm://crm/customer_scores", group="crm")

@dag(schedule=[SCORES], start_date=..., catchup=False)  # or [assets.EXPORTS], or SCORES & assets.EXPORTS
def sync_scores_to_the_mailing_tool():
    @task
    def sync(**context):
        event = context["triggering_asset_events"][SCORES][-1]
        run_date = date.fromisoformat(event.extra["run_date"])
        ...
    sync()
```
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference, dag, task

from core import assets
from core.airflow_task import full_reload, record_failure, run_task, start_night_spark, stop_night_spark
from core.config import load_config
from core.rundate import DAG_START

#: A night not finished `airflow.night_deadline_minutes` after it was queued is late (the 02:00 UTC night, with the
#: default 300: at 07:00 UTC, before the CRM's users start work). Measured from when the run was queued, not from its
#: logical date: a backfill of an old date is late only if it is slow, not at once (time spent queued behind another
#: night counts: its results are late all the same).
#: The configuration (this and `airflow.nightly_schedule`) is read when the file is parsed: an invalid one is this
#: file's import error, shown in the UI with the file and key (`airflow dags list-import-errors`), and Airflow
#: schedules no run of a DAG with import errors, rather than a night with a deadline or schedule nobody configured.
SETTINGS = load_config().airflow
FINISH_WITHIN = timedelta(minutes=SETTINGS.night_deadline_minutes)


@dag(
    dag_id="crm_nightly",
    schedule=SETTINGS.nightly_schedule or None,  # airflow.nightly_schedule, 0 2 * * * (UTC) unless configured
    start_date=DAG_START,  # far back: `crm run --date` runs any past date (core/rundate.py)
    catchup=False,
    max_active_runs=1,
    tags=["crm", "nightly"],
    doc_md=__doc__,
    # Airflow's deadline alert: the triggerer calls core.alerts.late_night (log, webhook) when the night is late.
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=FINISH_WITHIN, callback=AsyncCallback("core.alerts.late_night")
    ),
    # A task that runs longer than execution_timeout is failed (and retried): a hung read or a stuck
    # Spark job must not hold the night. Every failure also lands in the run log (`crm status`). The delay
    # between tries is Airflow's own [core] default_task_retry_delay (300 s unless the deployment sets it).
    default_args={
        "retries": 2,
        "owner": "data-engineering",
        "execution_timeout": timedelta(hours=2),
        "on_failure_callback": record_failure,
    },
)
def crm_nightly():
    # Each task names its job's function, imported inside the task: the scheduler parses this file often, and
    # a job's imports (Spark, pandas, scikit-learn) belong to the task's own process.
    @task
    def spark_up(**context):
        """Start the night's Spark server (`core/spark_server.py`), unless `spark.remote` names one: every task connects to it."""
        return start_night_spark(context)

    @task
    def spark_down(**context):
        """Stop the night's Spark server; runs when the night ends, failed or not."""
        return stop_night_spark(context)

    @task
    def extract(**context):
        """Copy every shop table into bronze as the run date's batch (`lake/bronze/<table>`)."""
        from jobs.extract import run

        return run_task(run, context, full=full_reload(context))

    @task
    def validate_bronze(**context):
        """Quality gate on the run's bronze batch: columns, keys, operations (`expectations/bronze.py`)."""
        from jobs.validate import run

        return run_task(run, context, layer="bronze")

    @task
    def clean(**context):
        """Type and deduplicate bronze into silver (current state); bad rows to `silver/_quarantine/<table>`."""
        from jobs.clean import run

        return run_task(run, context)

    @task
    def events(**context):
        """Browsing events: landing files and/or the shop's events table -> bronze/events -> silver/events (deduplicated, stitched,
        sessionised)."""
        from jobs.events import run

        return run_task(run, context)

    @task
    def validate_silver(**context):
        """Quality gate on silver: unique keys, references, amounts, ranges, e-mails (`expectations/silver.py`)."""
        from jobs.validate import run

        return run_task(run, context, layer="silver")

    @task
    def features(**context):
        """Per-customer features as of the run date: RFM, trend, baskets, carts, reviews, inquiries, browsing
        (`gold/customer_features`, `customer_activity`)."""
        from jobs.features import run

        return run_task(run, context)

    @task
    def score(**context):
        """RFM scores, segments and movement, clusters, profiles (`gold/customer_*`, `segment_*`); returns customers per segment."""
        from jobs.score import run

        return run_task(run, context)

    @task
    def predict(**context):
        """Churn (MLflow champion; trained first if none), P(alive), expected orders, CLV with interval (`gold/customer_scores`)."""
        from jobs.predict import run

        return run_task(run, context)

    @task
    def recommend(**context):
        """ALS recommendations with a popularity fallback, category propensity (`gold/recommendations`, `category_propensity`)."""
        from jobs.recommend import run

        return run_task(run, context)

    @task
    def insights(**context):
        """Review sentiment, aspects and alerts; inquiry triage; satisfaction (`gold/review_*`, `inquiry_triage`,
        `customer_satisfaction`)."""
        from jobs.insights import run

        return run_task(run, context)

    @task
    def offers(**context):
        """Coupon offers by uplift from past randomised coupon campaigns, within the budget (`gold/coupon_offers`)."""
        from jobs.offers import run

        return run_task(run, context)

    @task
    def campaigns(**context):
        """Campaign audiences from conf/campaigns/*.yaml: treatment, control, suppressed with reason (`gold/campaign_audiences`)."""
        from jobs.campaigns import run

        return run_task(run, context)

    @task(outlets=assets.gold_tables(), pre_execute=assets.stamp_run_date)
    def validate_gold(**context):
        """Quality gate on the run date's gold partitions: one row per customer, scores 1-5 (`expectations/gold.py`)."""
        from jobs.validate import run

        return run_task(run, context, layer="gold")

    @task(outlets=assets.crm_tables(), pre_execute=assets.stamp_run_date)
    def publish(**context):
        """Replace every CRM table with the run date's results, all in one transaction."""
        from jobs.publish import run

        return run_task(run, context)

    @task(outlets=[assets.EXPORTS], pre_execute=assets.stamp_run_date)
    def export(**context):
        """Write `exports/<run_date>/` (CSV and Parquet per dataset, JSON Schemas, manifest.json), then move `exports/latest`."""
        from jobs.export import run

        return run_task(run, context)

    @task
    def report(**context):
        """Write the run report `<data>/reports/<run_date>/index.html` (static HTML with plots); returns its path."""
        from jobs.report import run

        return run_task(run, context)

    spark = spark_up()
    first = extract()
    spark >> first
    gold = first >> validate_bronze() >> clean() >> events() >> validate_silver() >> features()
    checked = validate_gold()
    scored, predicted, recommended, targeted = score(), predict(), recommend(), campaigns()
    gold >> [scored, predicted, recommended]
    # Insights and offers read tonight's CLV and scores; campaigns select on everything the night computed.
    valued = [insights(), offers()]
    predicted >> valued
    [scored, recommended, *valued] >> targeted >> checked
    checked >> [publish(), export(), report()] >> spark_down().as_teardown(setups=spark)


crm_nightly()
