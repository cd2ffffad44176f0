"""Holdout evaluations on a cadence (`models.tracking.evaluate_when_due`, `mlflow.evaluate_every_days`): a night
evaluates a model when no night of the last N days evaluated it with the same parameters, and otherwise reports
that evaluation, recorded in MLflow as reused, with its date, in the run summary too."""

from __future__ import annotations

from datetime import date, timedelta

import mlflow
import pytest

from cli.summary import evaluation_lines
from models import tracking

FIRST_NIGHT = date(2026, 11, 2)
PARAMS = {"rank": 16, "holdout_days": 90}


@pytest.fixture
def night_settings(settings, tmp_path):
    store = settings.mlflow.model_copy(
        update={"tracking_uri": f"sqlite:///{tmp_path}/mlflow/mlflow.db", "artifact_root": str(tmp_path / "mlflow" / "artifacts")}
    )
    night = settings.model_copy(update={"data_dir": tmp_path, "mlflow": store})
    tracking.connect(night.mlflow)
    return night


def night(run_date: date, params: dict = PARAMS, every_days: int = 7) -> tuple[dict, str | None]:
    """One night's evaluation of a model whose figure depends on the run date (so a reused figure is visible)."""

    def evaluate():
        figure = run_date.day / 100
        night_figures = {"als_recall_at_10": figure}
        run = tracking.log_evaluation(
            "product_recommendations",
            run_date,
            f"night-{run_date}",
            f"purchases up to {run_date}",
            "recall_at_10",
            figure,
            {"popularity": 0.1},
            params=params,
            night_figures=night_figures,
        )
        return night_figures, run

    return tracking.evaluate_when_due("product_recommendations", run_date, f"night-{run_date}", params, every_days, evaluate)


def evaluated_on(pipeline_run_id: str, settings) -> list[str]:
    return [found["evaluated_on"] for found in tracking.evaluations(settings.mlflow, pipeline_run_id)]


def fresh_evaluations() -> int:
    """Evaluations that were computed (not reused) in the store."""
    runs = mlflow.search_runs(filter_string=f"tags.kind = '{tracking.EVALUATION_KIND}'", output_format="list", search_all_experiments=True)
    return sum(tracking.REUSED_FROM not in run.data.tags for run in runs)


def test_a_night_within_the_cadence_reports_the_last_evaluation_with_its_date(night_settings):
    first, first_run = night(FIRST_NIGHT)
    later = FIRST_NIGHT + timedelta(days=3)
    figures, reused_run = night(later)

    assert figures == first == {"als_recall_at_10": 0.02}
    assert fresh_evaluations() == 1
    reused = mlflow.get_run(reused_run)
    assert reused.data.tags[tracking.REUSED_FROM] == first_run
    assert reused.data.tags["run_date"] == str(later)
    assert reused.data.metrics["model_recall_at_10"] == 0.02
    assert evaluated_on(f"night-{later}", night_settings) == [str(FIRST_NIGHT)]
    lines = evaluation_lines(night_settings, f"night-{later}", later)
    assert "recall_at_10 0.020 against popularity 0.100" in lines[1]
    assert f"evaluated on {FIRST_NIGHT}, mlflow.evaluate_every_days" in lines[1]
    first_lines = evaluation_lines(night_settings, f"night-{FIRST_NIGHT}", FIRST_NIGHT)
    assert "evaluated on" not in first_lines[1]


def test_the_evaluation_is_due_again_after_the_cadence_when_parameters_change_and_before_it(night_settings):
    night(FIRST_NIGHT)
    figures, _ = night(FIRST_NIGHT + timedelta(days=7))  # the evaluation of 7 days ago is too old
    assert figures == {"als_recall_at_10": 0.09}
    changed, _ = night(FIRST_NIGHT + timedelta(days=8), params={**PARAMS, "rank": 32})
    assert changed == {"als_recall_at_10": 0.1}
    backfill, _ = night(FIRST_NIGHT - timedelta(days=1))  # a backfill of an earlier date does not use a later evaluation
    assert backfill == {"als_recall_at_10": 0.01}
    assert fresh_evaluations() == 4


def test_every_night_evaluates_when_the_cadence_is_zero_and_a_rerun_reuses_its_own(night_settings):
    night(FIRST_NIGHT, every_days=0)
    night(FIRST_NIGHT + timedelta(days=1), every_days=0)
    assert fresh_evaluations() == 2
    again, _ = night(FIRST_NIGHT + timedelta(days=1), every_days=1)  # a rerun of the date
    assert again == {"als_recall_at_10": 0.03}
    assert fresh_evaluations() == 2
