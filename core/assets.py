"""The pipeline's data products as Airflow assets: what other DAGs can be scheduled on.

The nightly DAG lists them as the `outlets` of the tasks that finish them. Each time such a task succeeds,
Airflow records an asset event per outlet, and a DAG with `schedule=[asset]` runs after it:
- `shop-crm://gold/<table>`: the run date's gold partition, once it passed the quality gate (`validate_gold`);
- `shop-crm://crm/<table>`: the CRM table, published with the others in one transaction, unless they hold
  a later date already (`publish`);
- `shop-crm://exports`: `exports/<run_date>/` complete; `exports/latest` moves only to the newest date (`export`).

Every event carries what it is about in its extra, `{"run_date": "YYYY-MM-DD", "run_id": ...}`: a run
triggered by an asset has no logical date, so a consumer takes the business date from there (and the
run id is the one the gold and CRM rows carry). The URIs name the product, not where it lies: the data
root is only known from the configuration at run time. Each asset is given by its URI alone (its name), so
`Asset("shop-crm://crm/customer_scores")` written in another project is the same asset.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset

from core.crm_schema import crm_metadata
from core.rundate import business_date

SCHEME = "shop-crm"
#: The gold table of customer features; every other gold table has the name and columns of a CRM table.
FEATURES_TABLE = "customer_features"


def gold_table(table: str) -> Asset:
    """The gold table `table` (Delta, `lake/gold/<table>`, one partition per run date)."""
    return Asset(f"{SCHEME}://gold/{table}", group="gold")


def crm_table(table: str) -> Asset:
    """The published CRM table `table` (schema `crm.schema_name` of `crm.db_url`)."""
    return Asset(f"{SCHEME}://crm/{table}", group="crm")


#: The export folders for marketing tools (`exports/<run_date>/`, `exports/latest`).
EXPORTS = Asset(f"{SCHEME}://exports", group="exports")


def gold_tables() -> list[Asset]:
    """Every gold table a night writes for its run date: the customer features and one per CRM table."""
    return [gold_table(name) for name in (FEATURES_TABLE, *crm_metadata(None).tables)]


def crm_tables() -> list[Asset]:
    """Every CRM table `publish` replaces."""
    return [crm_table(name) for name in crm_metadata(None).tables]


def stamp_run_date(context: dict[str, Any]) -> None:
    """A producing task's `pre_execute` hook: its asset events will say which run date and run they are of.

    Airflow sends the events only when the task succeeds, so setting their extra before the job runs is safe.
    """
    about = {"run_date": business_date(context).isoformat(), "run_id": str(context["run_id"])}
    for outlet in context["task"].outlets:
        context["outlet_events"][outlet].extra.update(about)
