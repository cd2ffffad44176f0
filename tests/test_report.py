"""The run report: built from gold, the quality summaries and MLflow without Spark, it renders in a real
browser (headless Chromium) with all eight sections and every plot decoded, shows the figures the data
imply, and says plainly what is missing."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from jobs import report, validate

RUN_DATE = date(2026, 11, 26)
PREVIOUS = date(2026, 10, 26)
CUSTOMERS = 300
SEGMENTS = ("Champions", "Loyal", "At Risk", "Lost", "Prospects")
MOVED_TO_AT_RISK = 17  # Champions on PREVIOUS who are At Risk on RUN_DATE
NEW_CUSTOMERS = 20  # customers 281-300 exist only on RUN_DATE
CLV_JUMP_CUSTOMER, CHURN_JUMP_CUSTOMER = 42, 77
SECTION_IDS = ["overview", "segments", "scores", "clv", "lifetime", "calibration", "quality", "changes"]
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium() -> str:
    """The Chromium binary; the test fails (it does not skip) without it."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    if found is None:
        pytest.fail("chromium is not installed: run `make system` (or `apt-get install chromium`) to test the report")
    return found


def segments_of(as_of: date) -> dict[int, str]:
    """Each customer's segment on `as_of`: customers 1-100 Champions on PREVIOUS, 17 of them At Risk now."""
    ids = range(1, CUSTOMERS + 1 - (NEW_CUSTOMERS if as_of == PREVIOUS else 0))
    segments = {}
    for customer in ids:
        segment = SEGMENTS[0] if customer <= 100 else SEGMENTS[1 + customer % 4]
        if as_of == RUN_DATE and customer <= MOVED_TO_AT_RISK:
            segment = "At Risk"
        segments[customer] = segment
    return segments


def write_gold(lake_dir: Path, as_of: date, rng: np.random.Generator) -> None:
    """The `as_of` partitions of gold customer_segments and customer_scores, typed as the pipeline writes them."""
    segments = segments_of(as_of)
    ids = np.array(sorted(segments), dtype=np.int64)
    frequency = np.where(np.array([segments[c] for c in ids]) == "Prospects", 0, rng.integers(1, 12, len(ids)))
    run_id = f"scheduled__{as_of}"
    write_deltalake(
        str(lake_dir / "gold" / "customer_segments"),
        pa.table(
            {
                "customer_id": ids,
                "frequency": frequency,
                "segment": [segments[c] for c in ids],
                "as_of": pa.array([as_of] * len(ids), pa.date32()),
                "run_id": [run_id] * len(ids),
            }
        ),
        mode="append",
        partition_by=["as_of"],
    )

    buyers = ids[frequency > 0]
    churn = rng.uniform(0.05, 0.6, len(buyers))
    clv = rng.gamma(2.0, 80.0, len(buyers)).round(2)
    if as_of == RUN_DATE:
        churn[buyers == CHURN_JUMP_CUSTOMER] = 0.99  # the largest churn change: at most 0.6 -> 0.99 ...
        clv[buyers == CLV_JUMP_CUSTOMER] = 25_000.0  # ... and the largest CLV change
    else:
        churn[buyers == CHURN_JUMP_CUSTOMER] = 0.01

    def money(values):
        return pa.array([f"{value:.2f}" for value in values]).cast(pa.decimal128(18, 2))

    write_deltalake(
        str(lake_dir / "gold" / "customer_scores"),
        pa.table(
            {
                "customer_id": buyers,
                "churn_probability": churn,
                "churn_risk": np.where(churn >= 0.7, "high", np.where(churn >= 0.4, "medium", "low")),
                "p_alive": rng.beta(4, 2, len(buyers)),
                "clv_12m": money(clv),
                "clv_12m_low": money(clv * 0.3),
                "clv_12m_high": money(clv * 1.8),
                "churn_model_version": ["crm_churn/1"] * len(buyers),
                "as_of": pa.array([as_of] * len(buyers), pa.date32()),
                "run_id": [run_id] * len(buyers),
            }
        ),
        mode="append",
        partition_by=["as_of"],
    )


def write_quality(settings, run_date: date) -> None:
    """Gate summaries as `jobs/validate.py` writes them: bronze and gold pass, silver has one warning."""
    for layer, tables in (
        ("bronze", {"orders": []}),
        (
            "silver",
            {
                "orders": [],
                "customers": [
                    {
                        "expectation": "expect_column_values_to_match_regex",
                        "column": "email",
                        "unexpected_count": 3,
                        "rows": 300,
                        "examples": ["not-an-address"],
                    }
                ],
            },
        ),
        ("gold", {"customer_segments": []}),
    ):
        validate.write_summary(
            validate.summary_path(settings, run_date, layer),
            {
                "layer": layer,
                "run_date": run_date.isoformat(),
                "run_id": f"scheduled__{run_date}",
                "passed": True,
                "critical_failures": 0,
                "warnings": sum(len(warnings) for warnings in tables.values()),
                "seconds": 1.0,
                "data_docs": str(settings.data_dir / "quality" / "gx" / "index.html"),
                "not_in_lake": [],
                "tables": {
                    table: {"rows": 300, "expectations": 5, "critical_failures": [], "warnings": warnings, "seconds": 0.5, "data_docs": ""}
                    for table, warnings in tables.items()
                },
            },
        )
    write_deltalake(  # as written before field rules: no `column`
        str(settings.lake_dir / "silver" / "_quarantine" / "orders"),
        pa.table(
            {
                "id": pa.array([1, 2, 3], pa.int64()),
                "rule": ["negative_total"] * 3,
                "reason": ["total_amount < 0"] * 3,
                "run_id": ["x"] * 3,
                "run_date": pa.array([run_date, run_date, PREVIOUS], pa.date32()),
            }
        ),
        partition_by=["run_date"],
    )
    write_deltalake(
        str(settings.lake_dir / "silver" / "_quarantine" / "customers"),
        pa.table(
            {
                "id": pa.array([7, 8, 9, 9], pa.int64()),
                "rule": ["invalid_email", "invalid_email", "duplicate_key", "duplicate_key"],
                "reason": ["customers.email (id 7) = 'x': not an e-mail address", "...", "customers.id = 9: ...", "customers.id = 9: ..."],
                "run_id": ["x"] * 4,
                "run_date": pa.array([run_date] * 4, pa.date32()),
                "column": ["email", "email", None, None],
            }
        ),
        partition_by=["run_date"],
    )


def write_mlflow_store(settings) -> None:
    """A training run with the holdout calibration tables, registered as crm_churn version 1."""
    from mlflow import MlflowClient

    from models.churn import calibration_table

    uri = settings.mlflow.tracking_uri
    Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True)
    client = MlflowClient(uri, uri)
    experiment = client.create_experiment(settings.mlflow.experiment, artifact_location=Path(settings.mlflow.artifact_root).as_uri())
    run = client.create_run(experiment, tags={"kind": "churn-training"})
    rng = np.random.default_rng(3)
    for model in ("challenger", "logistic_baseline", "champion", "bgnbd_no_purchase"):
        p = rng.uniform(0, 1, 2_000)
        table = calibration_table(rng.uniform(0, 1, 2_000) < p, p)
        client.log_text(run.info.run_id, table.to_csv(index=False), f"calibration/{model}.csv")
    for name, value in {"champion_roc_auc": 0.9037, "champion_brier": 0.1204, "champion_ece": 0.0279}.items():
        client.log_metric(run.info.run_id, name, value)
    for name, value in {"bgnbd_no_purchase_roc_auc": 0.8687, "bgnbd_no_purchase_brier": 0.1399, "bgnbd_no_purchase_ece": 0.0258}.items():
        client.log_metric(run.info.run_id, name, value)
    client.log_param(run.info.run_id, "holdout_as_of", "2026-09-03")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(settings.mlflow.churn_model)
    version = client.create_model_version(settings.mlflow.churn_model, f"{run.info.artifact_uri}/churn_model", run_id=run.info.run_id)
    # The training run's choice of what nights publish (jobs/train.py), on the version.
    for key, value in {"published_churn": "bg_nbd", "published_churn_reason": "lower ECE", "published_churn_run": run.info.run_id}.items():
        client.set_model_version_tag(settings.mlflow.churn_model, version.version, key, value)


@pytest.fixture(scope="module")
def data_settings(settings, tmp_path_factory):
    """Settings on a data root with two run dates in gold, quality results and an MLflow store."""
    root = tmp_path_factory.mktemp("report-data")
    mlflow = settings.mlflow.model_copy(
        update={"tracking_uri": f"sqlite:///{root}/mlflow/mlflow.db", "artifact_root": str(root / "mlflow" / "artifacts")}
    )
    data = settings.model_copy(update={"data_dir": root, "mlflow": mlflow})
    rng = np.random.default_rng(7)
    for as_of in (PREVIOUS, RUN_DATE):
        write_gold(data.lake_dir, as_of, rng)
    write_quality(data, RUN_DATE)
    write_mlflow_store(data)
    return data


class Page(HTMLParser):
    """Sections with their headings, plots with their attributes, and the page's text."""

    def __init__(self, markup: str):
        super().__init__()
        self.sections: dict[str, str] = {}
        self.plots: list[dict[str, str]] = []
        self.text: list[str] = []
        self._section: str | None = None
        self._in_h2 = False
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "section":
            self._section = attributes.get("id")
            self.sections[self._section] = ""
        elif tag == "h2":
            self._in_h2 = True
        elif tag == "img" and "data-plot" in attributes:
            self.plots.append(attributes)

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_h2 and self._section:
            self.sections[self._section] += data


def section_text(markup: str, key: str) -> str:
    """The text of one section, tags removed, whitespace collapsed."""
    body = re.search(rf'<section id="{key}">(.*?)</section>', markup, re.S).group(1)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def run_chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments], capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, f"chromium exited {result.returncode}: {result.stderr[-3000:]}"
    return result


def test_report_renders_every_section_and_plot_in_headless_chromium(data_settings, tmp_path):
    path = report.build(data_settings, RUN_DATE)

    assert path == data_settings.data_dir / "reports" / "2026-11-26" / "index.html"
    assert [entry.name for entry in path.parent.iterdir()] == ["index.html"]  # no temporary file left
    markup = path.read_text(encoding="utf-8")
    assert "http://" not in markup and "https://" not in markup  # self-contained: nothing to fetch

    dom = run_chromium("--virtual-time-budget=5000", "--dump-dom", path.as_uri(), profile=tmp_path / "profile").stdout
    page = Page(dom)
    assert list(page.sections) == SECTION_IDS
    assert all(page.sections[key].strip() == report.SECTIONS[key] != "" for key in SECTION_IDS)
    assert {plot["data-plot"] for plot in page.plots} == {"segments", "churn_probability", "p_alive", "clv_by_segment", "calibration"}
    not_rendered = [plot["data-plot"] for plot in page.plots if plot.get("data-rendered") != "true"]
    assert not_rendered == [], f"plots the browser did not decode: {not_rendered}"
    assert all(plot.get("alt") and plot["src"].startswith("data:image/png;base64,") for plot in page.plots)

    screenshot = tmp_path / "report.png"
    run_chromium(
        "--virtual-time-budget=5000", f"--screenshot={screenshot}", "--window-size=1280,2400", path.as_uri(), profile=tmp_path / "profile"
    )
    from PIL import Image

    with Image.open(screenshot) as image:
        assert image.size == (1280, 2400)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert screenshot.stat().st_size > 50_000 and len(colours) > 200, "the screenshot looks blank"


def test_report_shows_the_figures_of_the_data(data_settings):
    markup = report.build(data_settings, RUN_DATE).read_text(encoding="utf-8")

    overview = section_text(markup, "overview")
    assert f"customers {CUSTOMERS:,}" in overview and "previous run date in gold 2026-10-26" in overview
    assert "run id scheduled__2026-11-26" in overview

    # Movement, counted from the two partitions: the only moves are Champions -> At Risk, plus new customers.
    segments = section_text(markup, "segments")
    assert f"{MOVED_TO_AT_RISK:,} customers changed segment" in segments
    assert f"{NEW_CUSTOMERS:,} are new" in segments

    scores = section_text(markup, "scores")
    assert "high 1 " in scores  # only the planted 0.99: every other churn probability is below 0.6

    quality = section_text(markup, "quality")
    assert "silver passed 2 9 1 0 1 6" in quality  # 2 tables, 9 of 10 expectations, 1 warning, 6 quarantined
    # Counted per table, rule and field (a field nulled, or the whole row), the run date's records only.
    assert "customers duplicate_key whole row 2 customers invalid_email email 2 orders negative_total whole row 2" in quality
    assert "expect_column_values_to_match_regex on column email: 3 of 300 rows unexpected" in quality

    calibration = section_text(markup, "calibration")
    assert "crm_churn/1, MLflow run" in calibration and "0.9-1.0" in calibration
    # Which probability was published and why, the champion's and BG/NBD's figures side by side.
    assert "Published churn probability: BG/NBD" in calibration and "no purchase in the horizon. lower ECE." in calibration
    assert "champion 0.9037 0.1204 0.0279 bgnbd_no_purchase 0.8687 0.1399 0.0258" in calibration

    changes = section_text(markup, "changes")
    clv_top = re.search(r"12-month CLV: top 10 changes .*? change (\d+) ", changes).group(1)
    churn_top = re.search(r"Churn probability: top 10 changes .*? change (\d+) ", changes).group(1)
    assert (int(clv_top), int(churn_top)) == (CLV_JUMP_CUSTOMER, CHURN_JUMP_CUSTOMER)
    assert "+0.980" in changes


def test_report_says_what_is_missing_on_a_first_run(data_settings, tmp_path):
    """The first run date in gold: no previous run, no gate results, no MLflow store; still a full page."""
    mlflow = data_settings.mlflow.model_copy(update={"tracking_uri": f"sqlite:///{tmp_path}/none/mlflow.db"})
    first = data_settings.model_copy(update={"data_dir": tmp_path, "mlflow": mlflow})
    shutil.copytree(data_settings.lake_dir / "gold", first.lake_dir / "gold")
    markup = report.build(first, PREVIOUS).read_text(encoding="utf-8")
    page = Page(markup)

    assert list(page.sections) == SECTION_IDS
    assert "none: this is the first run date in gold" in section_text(markup, "overview")
    assert "No previous run date in gold/customer_segments" in section_text(markup, "segments")
    assert "not available: no MLflow store at" in section_text(markup, "calibration")
    assert not (tmp_path / "none").exists()  # the report never creates an MLflow store
    assert "No quality gate results for 2026-10-26" in section_text(markup, "quality")
    assert "No previous run date in gold: nothing to compare with" in section_text(markup, "changes")
    assert report.build(first, date(2026, 12, 1)).read_text(encoding="utf-8").count('class="missing"') >= 6


def test_the_lifetime_section_shows_the_fit_and_why_p_alive_is_not_published(settings, tmp_path):
    """A night whose purchase log shows no dropout (the real `value_scores` on steady Poisson buyers): the
    report shows the fits' diagnostics, says P(alive) is not published and why, and points to the churn
    probability instead; the scores section says the same where the P(alive) histogram would be."""
    import pandas as pd
    import purchase_logs

    from jobs import predict
    from models import tracking

    mlflow = settings.mlflow.model_copy(
        update={"tracking_uri": f"sqlite:///{tmp_path}/mlflow/mlflow.db", "artifact_root": str(tmp_path / "mlflow" / "artifacts")}
    )
    night = settings.model_copy(update={"data_dir": tmp_path, "mlflow": mlflow})
    tracking.connect(night.mlflow)
    log = purchase_logs.purchase_log(np.random.default_rng(7), 400, 730, rate=(2.0, 60.0), dropout=None)
    history = purchase_logs.histories(log, 729).rename_axis("customer_id")
    history["mean_repeat_order_value"] = np.where(
        history["repeat_purchase_days"] > 0, np.random.default_rng(1).gamma(4, 12.5, len(history)), 0
    )
    value, clv_run, _ = predict.value_scores(history, night.clv, RUN_DATE, "steady-night", {})
    churn = np.random.default_rng(2).uniform(0, 1, len(value))
    scores = pd.DataFrame(
        {
            "customer_id": value.index.to_numpy(dtype=np.int64),
            "churn_probability": churn,
            "churn_risk": np.where(churn >= 0.7, "high", "low"),
            "p_alive": value["p_alive"].to_numpy(),
            "churn_model_version": "crm_churn/3",
            "clv_model_run": clv_run,
            "as_of": RUN_DATE,
            "run_id": "steady-night",
        }
    )
    write_deltalake(
        str(night.lake_dir / "gold" / "customer_scores"), pa.Table.from_pandas(scores, preserve_index=False), partition_by=["as_of"]
    )

    markup = report.build(night, RUN_DATE).read_text(encoding="utf-8")

    lifetime = section_text(markup, "lifetime")
    assert f"MLflow run {clv_run}" in lifetime and "BetaGeoModel" in lifetime and "GammaGamma" in lifetime.replace("-", "")
    assert "a/(a+b): mean dropout probability per repeat purchase" in lifetime and "converged after" in lifetime
    assert "P(alive) is not published tonight (null in customer_scores)" in lifetime
    assert (
        "does not show customers leaving" in lifetime
        and "Rank customers at risk by churn_probability (the churn model crm_churn/3)" in lifetime
    )
    assert "expected_orders_* come from the purchase model: no holdout given" in lifetime
    assert "No P(alive) tonight" in section_text(markup, "scores")
