"""The MLflow store of a data root: created (folders, database schema, the experiment) before anything is
logged to it. `models.tracking.connect` opens it for a job; the night's first task (`spark_up`) creates it
once, so that the night's parallel tasks do not race to create the same SQLite database."""

from __future__ import annotations

from pathlib import Path

from core.config import MlflowSettings


def open_store(settings: MlflowSettings):
    """Point this process's MLflow at the configured store and experiment, creating both when missing;
    returns an `MlflowClient` for the registry. MLflow (seconds to import) is imported here, when called."""
    import mlflow
    from mlflow import MlflowClient

    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)
    if client.get_experiment_by_name(settings.experiment) is None:
        location = settings.artifact_root
        if "://" not in location:
            Path(location).mkdir(parents=True, exist_ok=True)
            location = Path(location).resolve().as_uri()
        client.create_experiment(settings.experiment, artifact_location=location)
    mlflow.set_experiment(settings.experiment)
    return client
