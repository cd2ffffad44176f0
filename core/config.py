"""Configuration: `conf/base.yaml`, then the overlay of `CRM_ENV`, then environment variables.

Every value is validated on load: an unknown key or a wrong type is an error that names the file (or the
environment variable) and the key. Defaults live in `conf/base.yaml`, documented there and in the
configuration reference, docs/configuration.md. Secrets never live in `conf/`: URLs with passwords come from the
environment (`CRM_SHOP_URL`, `CRM_DB_URL`); an Airflow task reads them from the Airflow connections named by
`airflow.shop_conn_id` and `airflow.crm_conn_id` instead when those exist (`core.airflow_task.task_settings`,
not this module: it never imports Airflow).

Environment variables: the short names below, or `CRM__<SECTION>__<KEY>` for any key
(`CRM__SPARK__DRIVER_MEMORY=4g`); values are read as YAML scalars, so `CRM__SPARK__SHUFFLE_PARTITIONS=8`
is an integer.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from core.db import masked_settings
from core.feature_schema import FEATURES, PURCHASE_MODEL_FEATURES
from core.lake_location import LakeLocation, LakeLocationError

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Short environment variables every deployment sets, and the key each one overrides.
SHORT_ENV_VARS: dict[str, tuple[str, ...]] = {
    "CRM_SHOP_URL": ("shop", "url"),
    "CRM_DB_URL": ("crm", "db_url"),
    "CRM_DATA_DIR": ("data_dir",),
}
ENV_PREFIX = "CRM__"
ENVIRONMENTS = ("demo", "test", "prod")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file or variable and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShopSettings(_Section):
    """The shop database the pipeline reads."""

    url: str = Field(
        description="URL of the shop database: sqlite:///, postgresql://, mysql:// or mariadb:// (plain or with a SQLAlchemy driver), or "
        "mongodb://host:port/<database> for a document shop; env CRM_SHOP_URL"
    )
    fetch_size: int = Field(
        gt=0,
        description="rows per Arrow batch when reading the shop (MySQL/MariaDB, SQLite; PostgreSQL streams); MongoDB: also documents "
        "per round trip",
    )
    rows_per_partition: int = Field(gt=0, description="rows per key range read from one table: what one read holds at most")
    repeated_lines: Literal["sum", "quarantine"] = Field(
        description="order and cart lines repeating a product of their order or cart: sum (kept, they count together, as a real "
        "invoice repeats a product on purpose) or quarantine (rule duplicate: the later lines are double submits)"
    )


class ExtractSettings(_Section):
    """How the shop is read into bronze each night."""

    mapping: str = Field(
        description="source mapping: <name> of conf/mappings/<name>.yaml, or a .yaml path (relative to conf/): the shop's table and "
        "column names; auto: canonical for a SQL shop, mongodb for a document shop"
    )
    overlap_minutes: int = Field(ge=0, description="a night re-reads rows updated this long before the last watermark (late commits)")
    reconcile_every_days: int = Field(ge=0, description="compare the shop's keys with silver every N days to find hard deletes (0: never)")


class CrmSettings(_Section):
    """The CRM database the results are published to."""

    db_url: str = Field(
        description="URL of the CRM database: sqlite:/// or postgresql:// (plain or with a SQLAlchemy driver); env CRM_DB_URL"
    )
    schema_name: str = Field(description="PostgreSQL schema of the CRM tables (ignored for SQLite)")


def _http_url_or_empty(value: str) -> str:
    """A setting that is an http(s) URL or empty (a store's endpoint, a webhook)."""
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL, or empty")
    return value


class SparkSettings(_Section):
    """The Spark session every job opens."""

    master: str = Field(description="Spark master URL; local[*] uses every core of this machine")
    driver_memory: str = Field(description="JVM heap of the driver, e.g. 2g (local mode: all of Spark)")
    shuffle_partitions: int = Field(gt=0, description="spark.sql.shuffle.partitions; 2-4 per core")
    packages: list[str] = Field(description="Maven coordinates of the JVM packages Spark loads (Delta Lake)")
    parallel_tables: int = Field(gt=0, description="tables a job reads or writes at once (they mostly wait on I/O)")
    java_options: str = Field(description="extra JVM options of the driver (local mode: of all of Spark)")
    jars_dir: str = Field(description="project-local Ivy cache for those packages, so later starts need no network")
    extra: dict[str, str] = Field(description="any other Spark settings, passed as they are")
    remote: str = Field(
        description="sc://host:port of a Spark Connect server you run (a cluster's, say): every task connects to it and no local Spark "
        "starts; empty: see night_server"
    )
    night_server: bool = Field(
        description="without `remote`: the night's tasks share one local Spark Connect server (this master, memory and packages), "
        "started by the DAG's spark_up task and stopped by spark_down, instead of a JVM per task"
    )
    server_idle_minutes: int = Field(
        gt=0,
        description="a night server with no Spark job and no task connecting for this long stops by itself (a night killed before its "
        "spark_down)",
    )
    code_generation: Literal["auto", "on", "off"] = Field(
        description="whether Spark compiles queries to JVM code: pays on big data, costs more than it saves on a small job's many small "
        "queries; auto: a job that knows its input's size (clean) compiles from code_generation_from_rows rows on, the others always"
    )
    code_generation_from_rows: int = Field(gt=0, description="with code_generation auto: the input rows from which a job compiles")

    @field_validator("code_generation", mode="before")
    @classmethod
    def _on_or_off(cls, value: object) -> object:
        # YAML reads a bare on/off as true/false
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("remote")
    @classmethod
    def _connect_url(cls, value: str) -> str:
        if value and not value.startswith("sc://"):
            raise ValueError(f"expected a Spark Connect URL sc://host:port, got {value!r}")
        return value


class LakeSettings(_Section):
    """Where the Delta tables live (core/lake_location.py, docs/scaling-out.md)."""

    uri: str = Field(
        description="the lake's root: a folder, or s3a://bucket/prefix for an S3 or S3-compatible object store (key pair from "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the Airflow connection airflow.lake_conn_id; never here); empty: "
        "<data_dir>/lake"
    )
    endpoint_url: str = Field(
        description="object store only: the endpoint of an S3-compatible store (http(s)://host:port); empty: AWS_ENDPOINT_URL, "
        "else Amazon S3"
    )
    region: str = Field(description="object store only: its region; empty: AWS_REGION, else us-east-1")
    path_style: bool = Field(
        description="object store only: path-style requests (host/bucket/key), as most S3-compatible stores want; false: "
        "virtual-hosted (bucket.host/key), as Amazon S3 prefers"
    )

    @field_validator("endpoint_url")
    @classmethod
    def _http_endpoint(cls, value: str) -> str:
        return _http_url_or_empty(value)


class GeneratorSettings(_Section):
    """Defaults of `crm generate-shop` for the demo shop."""

    customers: int = Field(gt=0, description="number of customers of the demo shop")
    seed: int = Field(description="random seed: the same seed gives the same shop")
    events: Literal["none", "table", "files"] = Field(
        description="where generate-shop writes browsing events: the shop table `events`, NDJSON files in events.landing_dir (one per "
        "day), or none"
    )
    events_days: int = Field(gt=0, description="generate-shop writes events for the last N days of the history")


class EventSettings(_Section):
    """Browsing and click events (jobs/events.py): where they come from and how they are sessionised."""

    source: Literal["files", "table", "both", "none"] = Field(
        description="files: NDJSON/Parquet files dropped in landing_dir; table: the shop table `table`; both; none: no events"
    )
    landing_dir: str = Field(
        description="folder where event files (*.ndjson, *.jsonl, *.json, *.parquet) are dropped; each file is ingested once (name, "
        "size, SHA-256)"
    )
    table: str = Field(description="the shop table of events (source table or both)")
    settle_seconds: int = Field(
        ge=0,
        description="a file changed less than this long before the night starts may still be being written: it waits for the next night",
    )
    late_days: int = Field(
        ge=0, description="events that occurred up to N days before the run date still land; older ones go to quarantine (too_late)"
    )
    session_gap_minutes: int = Field(gt=0, description="a visit ends after this long without an event of its session")
    browse_abandonment_days: int = Field(gt=0, description="a product viewed or carted and not bought within N days is browse-abandoned")
    top_categories: int = Field(gt=0, description="categories listed in customer_activity.top_categories")


class RfmSettings(_Section):
    """RFM scoring."""

    segments_file: str = Field(description="rule table of named segments, relative to conf/")
    scored_statuses: list[str] = Field(description="order statuses that count as a purchase")
    monetary_value: Literal["net", "gross"] = Field(
        description="a customer's money figures (total_spent, the spend trend, the order values of the CLV models): net (sales minus "
        "credit notes, orders with a negative total) or gross (sales alone, credit notes left out)"
    )


class ClusterSettings(_Section):
    """Behavioural clusters (k-means on scaled purchase features)."""

    k_min: int = Field(ge=2, description="fewest clusters tried")
    k_max: int = Field(ge=2, description="most clusters tried; the k with the best silhouette wins")
    sample_customers: int = Field(gt=0, description="buyers the model is fitted on (a fixed hash sample); all are assigned")
    silhouette_customers: int = Field(gt=0, description="buyers the silhouette of each k is measured on")
    seed: int = Field(description="random seed of the sample and of k-means: the same data gives the same clusters")

    @model_validator(mode="after")
    def _range(self):
        if self.k_max < self.k_min:
            raise ValueError(f"k_max ({self.k_max}) must be at least k_min ({self.k_min})")
        return self


class ClvSettings(_Section):
    """Repeat purchases and spend (BG/NBD + Gamma-Gamma): P(alive), expected orders, 12-month CLV with its interval."""

    purchase_model: Literal["bgnbd", "mbgnbd"] = Field(
        "bgnbd",
        description="repeat-purchase model: bgnbd (BG/NBD) or mbgnbd (MBG/NBD: customers may also leave right after their first purchase)",
    )
    margin: float = Field(gt=0, le=1, description="share of order value that is profit: CLV = margin x expected spend")
    annual_discount_rate: float = Field(ge=0, lt=1, description="discount rate per year of future profit (0.1 = 10%)")
    interval_level: float = Field(gt=0, lt=1, description="coverage of the CLV interval (clv_12m_low .. clv_12m_high)")
    interval_draws: int = Field(ge=20, description="posterior predictive draws per customer for that interval")
    seed: int = Field(description="random seed of those draws: a rerun gives the same interval")

    @property
    def monthly_discount_rate(self) -> float:
        return (1 + self.annual_discount_rate) ** (1 / 12) - 1


class ChurnSettings(_Section):
    """The churn classifier: label, features, model, calibration, and when a challenger replaces the champion."""

    horizon_days: int = Field(gt=0, description="churned = no purchase within this many days after as_of")
    features: list[str] = Field(
        min_length=1,
        description="gold/customer_features columns the classifier uses, and BG/NBD's point-in-time "
        "bgnbd_no_purchase_probability and bgnbd_p_alive",
    )
    model: Literal["hist_gradient_boosting", "logistic_regression"] = Field(
        description="the challenger's algorithm (logistic regression is also always fitted as the baseline)"
    )
    calibration: Literal["isotonic", "sigmoid"] = Field(description="probability calibration (cross-validated)")
    promote_metric: Literal["roc_auc", "pr_auc", "brier"] = Field(
        description="backtest metric that decides between challenger and champion (brier: lower is better)"
    )
    promote_margin: float = Field(ge=0, description="the challenger must beat the champion by at least this much")
    high_risk: float = Field(gt=0, lt=1, description="churn_probability from which churn_risk is 'high'")
    medium_risk: float = Field(gt=0, lt=1, description="churn_probability from which churn_risk is 'medium'")
    seed: int = Field(description="random seed of the model fit")

    @field_validator("features")
    @classmethod
    def _current_names(cls, names: list[str]) -> list[str]:
        """A configuration written before a feature was renamed keeps working (`core.feature_schema.RENAMED`)."""
        from core.feature_schema import RENAMED

        return [RENAMED.get(name, name) for name in names]

    @model_validator(mode="after")
    def _known_features(self):
        numeric = {f.name for f in FEATURES if f.type not in ("date", "timestamp", "string")} - {"customer_id"}
        numeric |= {f.name for f in PURCHASE_MODEL_FEATURES}
        unknown = [name for name in self.features if name not in numeric]
        if unknown:
            raise ValueError(f"unknown or non-numeric feature(s) {unknown}; expected some of {sorted(numeric)}")
        if self.medium_risk >= self.high_risk:
            raise ValueError(f"medium_risk ({self.medium_risk}) must be below high_risk ({self.high_risk})")
        return self


class MlflowSettings(_Section):
    """Where models and their runs are tracked."""

    tracking_uri: str = Field(
        description="MLflow tracking store: sqlite:///... (default, under the data root), a database URL (postgresql://, mysql://) "
        "or a server's http(s) URL (not read from MLFLOW_TRACKING_URI, which MLflow itself sets in-process)"
    )
    artifact_root: str = Field(description="where run artifacts (models, plots) go for a new experiment")
    experiment: str = Field(description="MLflow experiment of the training and scoring runs")
    churn_model: str = Field(
        description="registered model name of the churn classifier; its alias 'champion' is what nightly scoring loads"
    )
    evaluate_every_days: int = Field(
        ge=0,
        description="a nightly model's holdout evaluation (recommendations, category propensity, sentiment, triage) runs "
        "when no night of the last N days evaluated it with the same parameters; the other nights report that evaluation "
        "(MLflow tags reused_from, evaluated_on). 0: every night evaluates",
    )

    @field_validator("tracking_uri")
    @classmethod
    def _with_driver(cls, value: str) -> str:
        """A plain postgresql:// or mysql:// store gets the installed driver, as every database URL does."""
        from core.db import with_driver  # deferred: core.db loads SQLAlchemy, which `crm --help` need not

        return with_driver(value)


#: What `export.pii` may do with a column: keep it, replace it by the hex SHA-256 of its trimmed, lower-cased
#: value (how ad platforms match e-mail addresses), or leave it out.
PII_POLICIES = ("plain", "sha256", "drop")


class ExportSettings(_Section):
    """Files for marketing tools (`exports/<run_date>/`, the export contract in docs/export-contract.md)."""

    datasets: list[str] = Field(description="gold tables exported per run, each as CSV and Parquet with the CRM table's columns")
    pii: dict[str, dict[str, str]] = Field(
        description="PII policy per dataset, column -> plain, sha256 (hex SHA-256 of the trimmed, lower-cased value) "
        "or drop; a column that holds personal data (e-mail, names, phone, street) needs one, others not listed "
        "are exported plain"
    )
    keep_runs: int = Field(
        ge=1,
        description="dated export folders kept; older ones are removed after a successful export (never the one exports/latest points at)",
    )

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, datasets: list[str]) -> list[str]:
        from core.crm_schema import crm_metadata  # deferred: the schemas load SQLAlchemy, which `crm --help` need not

        tables = crm_metadata(None).tables
        unknown = [name for name in datasets if name not in tables]
        if unknown:
            raise ValueError(f"unknown dataset(s) {unknown}; expected CRM tables: {', '.join(sorted(tables))}")
        return datasets

    @field_validator("pii")
    @classmethod
    def _known_policies(cls, pii: dict[str, dict[str, str]], info: ValidationInfo) -> dict[str, dict[str, str]]:
        from core.crm_schema import crm_metadata, pii_columns  # deferred: SQLAlchemy, as above

        if "datasets" not in info.data:  # invalid: its own error says why
            return pii
        tables, exported = crm_metadata(None).tables, info.data["datasets"]
        problems = []
        for dataset, policy in pii.items():
            key = f"export.pii.{dataset}"
            if dataset not in exported:
                problems.append(f"{key}: unknown dataset (not in export.datasets); expected one of {', '.join(exported)}")
                continue
            columns = {column.name: column for column in tables[dataset].columns}
            for name, rule in policy.items():
                if name not in columns:
                    hint = difflib.get_close_matches(name, columns, n=1)
                    problems.append(
                        f"{key}.{name}: unknown column"
                        + (f" (did you mean {hint[0]!r}?)" if hint else "")
                        + f"; expected a column of {dataset}: {', '.join(columns)}"
                    )
                elif rule not in PII_POLICIES:
                    problems.append(f"{key}.{name}: unknown policy {rule!r}; expected {', '.join(PII_POLICIES[:-1])} or {PII_POLICIES[-1]}")
                elif rule == "sha256" and columns[name].type.python_type is not str:
                    problems.append(f"{key}.{name}: sha256 hashes text, but {name} is {columns[name].type}; expected plain or drop")
        for dataset in exported:
            undecided = [name for name in pii_columns(dataset) if name not in pii.get(dataset, {})]
            if undecided:
                problems.append(
                    f"export.pii.{dataset}: {dataset} is exported with personal data in "
                    f"{', '.join(undecided)}; expected a policy for each (plain, sha256 or drop), e.g. "
                    + "{"
                    + ", ".join(f"{name}: {'sha256' if name == 'email' else 'drop'}" for name in undecided)
                    + "}"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return pii


class CampaignSettings(_Section):
    """Campaign audiences (conf/campaigns/*.yaml, docs/campaigns.md)."""

    folder: str = Field(description="folder of the campaign files, under conf/")
    cooldown_days: int = Field(
        ge=0, description="a customer in any campaign's treatment group is left out of every campaign for this many days after (0: never)"
    )
    consent_when_missing: Literal["unknown", "granted", "denied"] = Field(
        description="a customer whose marketing consent the shop does not say (customers.accepts_marketing null, or no such column): "
        "unknown (suppressed as consent_unknown, the night warns), granted (contacted) or denied (suppressed as unsubscribed)"
    )


class InsightSettings(_Section):
    """Review sentiment and aspects, inquiry triage, satisfaction (models/reviews.py, models/triage.py)."""

    aspects_file: str = Field(description="keyword table of review aspects (en and zh), relative to conf/")
    triage_file: str = Field(description="keyword table of inquiry topics and urgency (en and zh), relative to conf/")
    holdout_share: float = Field(gt=0, lt=1, description="share of reviews (and inquiries) held out to evaluate the text models")
    max_training_rows: int = Field(gt=0, description="most rows a text model is fitted on (a fixed hash sample beyond that)")
    alert_days: int = Field(gt=0, description="a negative review this recent (days before the run date) can raise an alert")
    alert_clv_quantile: float = Field(gt=0, lt=1, description="alerts are for customers at or above this quantile of clv_12m")
    stale_inquiry_hours: float = Field(gt=0, description="an inquiry open longer than this is urgent, whatever its topic")
    seed: int = Field(description="random seed of the holdout split and the model fits")


class UpliftSettings(_Section):
    """Coupon targeting by uplift from the shop's past randomised coupon campaigns (models/uplift.py)."""

    method: Literal["two_model", "class_transformation"] = Field(
        description="uplift model: two classifiers (treated, control) or one on the transformed class"
    )
    algorithm: Literal["logistic_regression", "hist_gradient_boosting"] = Field(
        description="classifier inside the uplift model (gradient boosting overfits the few thousand customers of a small shop)"
    )
    budget: float = Field(ge=0, description="most expected discount cost of the offers of one run, shop currency")
    min_expected_uplift: float = Field(
        ge=0, le=1, description="a customer is offered a coupon only above this increase in P(order in the coupon window)"
    )
    holdout_share: float = Field(gt=0, lt=1, description="share of past campaign customers held out for the Qini evaluation")
    seed: int = Field(description="random seed of the holdout split and the model fits")


class RecommendSettings(_Section):
    """Product recommendations (Spark MLlib ALS, implicit feedback) and category propensity (models/recommend.py,
    models/propensity.py)."""

    top_n: int = Field(gt=0, description="recommendations per customer")
    rank: int = Field(gt=0, description="ALS latent factors")
    max_iter: int = Field(gt=0, description="ALS iterations")
    reg_param: float = Field(ge=0, description="ALS regularisation")
    alpha: float = Field(gt=0, description="ALS implicit-feedback confidence scale")
    exclude_bought: bool = Field(description="leave out products the customer already bought")
    event_weights: dict[str, float] = Field(
        description="browsing events in ALS: what one event of each type adds to a (customer, product) observation, beside 1 per "
        "purchase order; {} or 0: purchases only"
    )
    event_days: int = Field(gt=0, description="ALS counts the browsing events of the last N days")

    @field_validator("event_weights")
    @classmethod
    def _known_event_types(cls, weights: dict[str, float]) -> dict[str, float]:
        from core.shop_schema import EVENT_TYPES  # deferred: SQLAlchemy, as above

        unknown = [kind for kind in weights if kind not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event type(s) {unknown}; expected: {', '.join(EVENT_TYPES)}")
        negative = {kind: weight for kind, weight in weights.items() if weight < 0}
        if negative:
            raise ValueError(f"weights must be >= 0; got {negative}")
        return weights

    popularity_days: int = Field(gt=0, description="the popularity fallback ranks products by their order lines in the last N days")
    holdout_days: int = Field(gt=0, description="time-split evaluation: the last N days before the run date are the holdout")
    top_categories: int = Field(gt=0, description="categories per customer in category_propensity")
    seed: int = Field(description="random seed of ALS and the propensity model")


class AirflowSettings(_Section):
    """How `crm run` drives Airflow."""

    home: str = Field(description="AIRFLOW_HOME used by `crm run` and `crm airflow` (`make airflow`)")
    dag_id: str = Field(description="the nightly DAG")
    training_dag_id: str = Field(description="the training DAG (churn model, weekly and on demand)")
    api_port: int = Field(gt=0, lt=65536, description="port of the API server (UI, REST API) that `crm airflow` starts, on 127.0.0.1")
    metadata_port: int = Field(
        gt=0,
        lt=65536,
        description="port of the metadata PostgreSQL that `crm airflow` runs under <data>/airflow-postgres when "
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN names no server",
    )
    alert_webhook_url: str = Field(
        description="URL that alerts are POSTed to as JSON: a task failed with no retry left, the night missed its deadline "
        "(core/alerts.py); empty: alerts are only logged. Logged as its scheme and host only (its path or query may hold a token)"
    )
    nightly_schedule: str = Field(
        description="cron expression (UTC) of the nightly's scheduled runs; empty: no scheduled runs, only triggered ones (`crm run`, "
        "the API, the UI). With catchup off, unpausing the DAG runs the latest missed time at once. Read when the DAG file is parsed"
    )
    night_deadline_minutes: int = Field(
        gt=0,
        description="a nightly run not finished this many minutes after it was queued is late: the `night_late` alert (Airflow's "
        "deadline alert; the scheduled 02:00 UTC night with 300 is late at 07:00 UTC). Read when the DAG file is parsed",
    )
    shop_conn_id: str = Field(
        description="Airflow connection holding the shop's URL: when it exists, a task reads the shop through it instead of shop.url "
        "(CRM_SHOP_URL); empty: never looked up"
    )
    crm_conn_id: str = Field(
        description="Airflow connection holding the CRM database's URL: when it exists, a task publishes through it instead of "
        "crm.db_url (CRM_DB_URL); empty: never looked up"
    )
    lake_conn_id: str = Field(
        description="Airflow connection (type aws: login = access key id, password = secret, extra endpoint_url, region_name) "
        "holding the key pair of the lake's object store: when it exists, a task uses it instead of AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY; empty: never looked up"
    )

    @field_validator("nightly_schedule", mode="before")
    @classmethod
    def _none_is_no_schedule(cls, value: Any) -> Any:
        return "" if value is None else value  # `nightly_schedule:` in YAML, CRM__AIRFLOW__NIGHTLY_SCHEDULE= in the environment

    @field_validator("alert_webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _http_url_or_empty(value)


class Settings(_Section):
    """The whole configuration of one environment."""

    env: Literal["demo", "test", "prod"] = Field(description="the overlay in use (env CRM_ENV)")
    data_dir: Path = Field(description="data root: lake, CRM SQLite, exports, logs; env CRM_DATA_DIR")
    shop: ShopSettings
    extract: ExtractSettings
    crm: CrmSettings
    lake: LakeSettings
    spark: SparkSettings
    generator: GeneratorSettings
    rfm: RfmSettings
    clusters: ClusterSettings
    clv: ClvSettings
    churn: ChurnSettings
    mlflow: MlflowSettings
    export: ExportSettings
    campaigns: CampaignSettings
    insights: InsightSettings
    uplift: UpliftSettings
    recommend: RecommendSettings
    events: EventSettings
    airflow: AirflowSettings

    @property
    def lake_location(self) -> LakeLocation:
        """The lake's root and how Spark, delta-rs and pyarrow reach it (`lake.uri`; credentials from the environment)."""
        uri = self.lake.uri or self.data_dir / "lake"
        return LakeLocation.parse(uri, self.lake.endpoint_url, self.lake.region, self.lake.path_style)

    @property
    def lake_dir(self) -> Path:
        """The lake's folder; an error naming `lake.uri` when the lake is on an object store."""
        location = self.lake_location
        if not location.is_local:
            raise LakeLocationError(f"lake.uri is {location}, not a folder")
        return location.folder

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def conf_dir(self) -> Path:
        return conf_dir()


def conf_dir() -> Path:
    """The folder holding base.yaml and the overlays (`CRM_CONF_DIR` overrides, for tests)."""
    return Path(os.environ.get("CRM_CONF_DIR", REPO_ROOT / "conf")).resolve()


def load_config(env: str | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Load and validate base.yaml, the overlay of `env` (default `CRM_ENV`, else demo) and the environment."""
    environ = dict(os.environ if environ is None else environ)
    env = env or environ.get("CRM_ENV") or "demo"
    folder = conf_dir()
    if env not in ENVIRONMENTS:
        raise ConfigError(f"CRM_ENV: unknown environment {env!r}; expected one of {', '.join(ENVIRONMENTS)}")

    merged: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    base = folder / "base.yaml"
    _merge(merged, sources, _read_yaml(base), _display(base))
    overlay = folder / f"{env}.yaml"
    if overlay.exists():
        _merge(merged, sources, _read_yaml(overlay), _display(overlay))
    elif env != "prod":
        raise ConfigError(f"{_display(overlay)}: missing; CRM_ENV={env} needs this overlay file")
    _merge(merged, sources, _environment_overrides(environ), None)
    merged["env"] = env
    sources[("env",)] = "CRM_ENV"

    try:
        settings = Settings.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(_describe(error, sources)) from None
    return _resolved(settings)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{_display(path)}: file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{_display(path)}: not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{_display(path)}: expected a mapping of keys at the top, got {type(data).__name__}")
    return data


def _merge(target: dict, sources: dict, layer: dict, origin: str | None, prefix: tuple[str, ...] = ()) -> None:
    """Deep-merge `layer` into `target`, remembering which file or variable set each key."""
    for key, value in layer.items():
        path = prefix + (str(key),)
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], sources, value, origin, path)
            continue
        if isinstance(value, tuple):  # an environment variable: (name, value)
            sources[path] = value[0]
            value = value[1]
        else:
            sources[path] = origin or "?"
            if isinstance(value, dict):
                _record(sources, value, origin or "?", path)
        target[key] = value


def _record(sources: dict, mapping: dict, origin: str, prefix: tuple[str, ...]) -> None:
    for key, value in mapping.items():
        sources[prefix + (str(key),)] = origin
        if isinstance(value, dict):
            _record(sources, value, origin, prefix + (str(key),))


def _environment_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """Nested overrides from the environment; each leaf is (variable name, parsed value)."""
    overrides: dict[str, Any] = {}
    for name, value in sorted(environ.items()):
        if name in SHORT_ENV_VARS:
            path = SHORT_ENV_VARS[name]
        elif name.startswith(ENV_PREFIX):
            path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        else:
            continue
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = (name, _scalar(value) if name.startswith(ENV_PREFIX) else value)
    return overrides


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _describe(error: ValidationError, sources: dict[tuple[str, ...], str]) -> str:
    lines = ["invalid configuration:"]
    for item in error.errors():
        path = tuple(str(part) for part in item["loc"])
        key = ".".join(path)
        origin = _origin(path, sources)
        if item["type"] == "extra_forbidden":
            known = _known_keys(path[:-1])
            hint = difflib.get_close_matches(path[-1], known, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else f"; known keys: {', '.join(known)}"
            lines.append(f"  {origin}: unknown key {key!r}{suggestion}")
        elif item["type"] == "missing":
            lines.append(f"  {origin}: missing key {key!r}")
        else:
            shown = masked_settings({path[-1]: item.get("input")})[path[-1]]  # a URL's secrets stay out of the message
            lines.append(f"  {origin}: {key}: {item['msg']} (got {shown!r})")
    return "\n".join(lines)


def _origin(path: tuple[str, ...], sources: dict[tuple[str, ...], str]) -> str:
    for length in range(len(path), 0, -1):
        if path[:length] in sources:
            return sources[path[:length]]
    return _display(conf_dir() / "base.yaml")


def _known_keys(path: tuple[str, ...]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in path:
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _resolved(settings: Settings) -> Settings:
    """Make data_dir absolute (relative to the repo) and expand `{data_dir}` and `{repo}` in string values."""
    data_dir = settings.data_dir if settings.data_dir.is_absolute() else REPO_ROOT / settings.data_dir
    values = {"data_dir": str(data_dir.resolve()), "repo": str(REPO_ROOT)}

    def expand(value: Any) -> Any:
        if isinstance(value, str):
            return value.format(**values) if "{" in value else value
        if isinstance(value, list):
            return [expand(item) for item in value]
        if isinstance(value, dict):
            return {key: expand(item) for key, item in value.items()}
        return value

    data = {key: expand(value) for key, value in settings.model_dump().items()}
    data["data_dir"] = Path(values["data_dir"])
    return Settings.model_validate(data)


def settings_reference() -> str:
    """The configuration reference as a Markdown table, generated from the models (for docs/configuration.md)."""
    rows = ["| key | type | meaning |", "| --- | --- | --- |"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
                continue
            kind = getattr(annotation, "__name__", str(annotation)).replace("typing.", "")
            rows.append(f"| `{prefix}{name}` | {kind} | {field.description or ''} |")

    walk(Settings, "")
    return "\n".join(rows)
