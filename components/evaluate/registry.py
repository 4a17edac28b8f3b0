"""The MLflow Model Registry side of the gate: find the champion, register a new one.

Tracking defaults to a local SQLite store (`default_tracking_uri`); MLFLOW_TRACKING_URI overrides
it, e.g. a team's tracking server.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import mlflow
import tensorflow as tf
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components import dataset
from components.evaluate.gate import Champion

CHAMPION = "champion"


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else SQLite in the project-local state folder."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = Path(os.environ.get("TRICKFLOW_HOME", Path.cwd() / ".trickflow")) / "mlflow"
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def label_fingerprint(data_dir: str) -> str:
    """Identity of the label set: labels.txt's bytes (label, class id and name per line)."""
    text = dataset.read_text(dataset.join(data_dir, dataset.LABELS))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class _Servable(tf.Module):
    """Re-wraps a loaded SavedModel as a tf.Module, the type MLflow's TensorFlow flavor logs."""

    def __init__(self, loaded):
        super().__init__(name="servable")
        self.loaded = loaded
        self.labels = loaded.labels

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="jpeg_bytes")])
    def __call__(self, jpeg_bytes):
        return self.loaded(jpeg_bytes)


class Registry:
    def __init__(self, tracking_uri: str | None = None):
        self.tracking_uri = tracking_uri or default_tracking_uri()
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        self.client = MlflowClient(self.tracking_uri, self.tracking_uri)

    def champion(self, model_name: str):
        """The model version holding the champion alias, or None."""
        try:
            return self.client.get_model_version_by_alias(model_name, CHAMPION)
        except MlflowException:
            return None

    def load_version(self, model_name: str, version: str):
        """A registered version's servable, callable on JPEG bytes [N] -> probabilities [N, K]."""
        local = mlflow.artifacts.download_artifacts(
            f"models:/{model_name}/{version}", dst_path=tempfile.mkdtemp(prefix="champion-")
        )
        return tf.saved_model.load(str(Path(local) / "tf2model"))

    def champion_info(self, model_name: str, top1_on_this_data) -> Champion | None:
        """The champion, with its top-1 on this data by `top1_on_this_data` (None: no baseline)."""
        version = self.champion(model_name)
        if version is None:
            return None
        return Champion(
            str(version.version),
            version.tags.get("label_fingerprint", ""),
            top1_on_this_data(version),
        )

    def _artifact_root(self) -> str | None:
        """Beside a local SQLite store, not in whatever folder the process happens to run in."""
        if self.tracking_uri.startswith("sqlite:///"):
            db = Path(self.tracking_uri[len("sqlite:///") :])
            return (db.parent / "artifacts").resolve().as_uri()
        return None  # a tracking server decides

    def log_run(
        self, experiment: str, params: dict, metrics: dict, tags: dict, files: list[str]
    ) -> str:
        """Records an evaluation (gate passed or not) as an MLflow run; returns its id."""
        if self.client.get_experiment_by_name(experiment) is None:
            self.client.create_experiment(experiment, artifact_location=self._artifact_root())
        mlflow.set_experiment(experiment)
        with mlflow.start_run(tags=tags) as run:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            mlflow.log_metrics(metrics)
            for path in files:
                mlflow.log_artifact(path)
        return run.info.run_id

    def register(self, run_id: str, model_name: str, servable_path: str, tags: dict) -> str:
        """Logs the servable into `run_id`, registers it and moves the champion alias to it."""
        servable = _Servable(tf.saved_model.load(servable_path))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.tensorflow.log_model(
                servable,
                name="model",
                pip_requirements=[f"tensorflow=={tf.__version__}"],
            )
        version = mlflow.register_model(info.model_uri, model_name, tags=tags)
        self.client.set_registered_model_alias(model_name, CHAMPION, version.version)
        return str(version.version)
