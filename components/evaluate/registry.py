"""The MLflow Model Registry side of the gate: find the champion, register a new one.

Tracking defaults to a local SQLite store in the project's `.trickflow/` folder (not the working
directory's; `default_tracking_uri`); MLFLOW_TRACKING_URI overrides it, e.g. a team's tracking
server, and TRICKFLOW_HOME moves the project's state folder.

Registry errors are never read as "no champion": only a registry that answers that the model or
its champion alias does not exist means there is none. Anything else (a server answering 503, a
broken database) raises `RegistryError` naming the registry and the call, before anything is
registered.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import tensorflow as tf
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components import dataset
from components.evaluate.gate import Best, Champion

CHAMPION = "champion"
PROJECT_STATE = Path(__file__).resolve().parents[2] / ".trickflow"


class RegistryError(RuntimeError):
    """The registry failed to answer. `version` is the version registered before the failure
    (None: nothing was registered)."""

    def __init__(self, message: str, version: str | None = None):
        super().__init__(message)
        self.version = version


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else SQLite in the project's state folder (wherever the
    command runs from, so that a CLI started elsewhere finds the same registry)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = Path(os.environ.get("TRICKFLOW_HOME", PROJECT_STATE)) / "mlflow"
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def no_such_model_or_alias(err: MlflowException) -> bool:
    """The registry's own answer that the model, or its alias, does not exist (SQLite stores and
    tracking servers answer alike): the only error that means "no champion"."""
    message = str(err)
    if err.error_code == "RESOURCE_DOES_NOT_EXIST" and "Registered Model" in message:
        return True
    return (
        err.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")
        and "alias" in message
        and "not found" in message
    )


def validation_fingerprint(data_dir: str) -> str:
    """Identity of the validation data: its shards' bytes (records, labels and all) and the
    label set. Reads the split once; evaluation reads it anyway."""
    from apache_beam.io.filesystems import FileSystems

    digest = hashlib.sha256(label_fingerprint(data_dir).encode())
    for path in dataset.shard_files(data_dir, dataset.VALIDATION):
        digest.update(path.rsplit("/", 1)[-1].encode() + b"\0")
        with FileSystems.open(path) as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def label_fingerprint(data_dir: str) -> str:
    """Identity of the label set: labels.txt's bytes (label, class id and name per line)."""
    text = dataset.read_text(dataset.join(data_dir, dataset.LABELS))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _scored_on(version, tags: dict[str, str]) -> bool:
    """Whether a version has a recorded top-1 on the data that `tags` identify."""
    return "top1" in version.tags and all(version.tags.get(k) == v for k, v in tags.items())


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

    def _fault(self, call: str, err: Exception) -> RegistryError:
        return RegistryError(f"registry {self.tracking_uri}: {call} failed: {err}")

    def champion(self, model_name: str):
        """The model version holding the champion alias, or None when there is none."""
        call = f"get_model_version_by_alias({model_name!r}, {CHAMPION!r})"
        try:
            return self.client.get_model_version_by_alias(model_name, CHAMPION)
        except Exception as err:  # a 503, a refused connection, a broken database: no answer
            if isinstance(err, MlflowException) and no_such_model_or_alias(err):
                return None
            raise self._fault(call, err) from err

    def champion_version(self, model_name: str) -> str | None:
        version = self.champion(model_name)
        return None if version is None else str(version.version)

    def _versions(self, model_name: str) -> list:
        try:
            return self.client.search_model_versions(f"name = '{model_name}'")
        except Exception as err:  # noqa: BLE001 - every failure is a fault, see _fault
            raise self._fault(f"search_model_versions(name={model_name!r})", err) from err

    def best(self, model_name: str, tags: dict[str, str]) -> Best | None:
        """The registered version with the highest recorded top-1 among those whose tags match
        `tags` (the same validation data and label set), or None."""
        scored = [
            Best(str(v.version), float(v.tags["top1"]))
            for v in self._versions(model_name)
            if _scored_on(v, tags)
        ]
        return max(scored, key=lambda b: b.top1, default=None)

    @contextmanager
    def load_version(self, model_name: str, version: str) -> Iterator:
        """A registered version's servable (JPEG bytes [N] -> probabilities [N, K]); its
        downloaded copy is removed when the block ends."""
        with tempfile.TemporaryDirectory(prefix="champion-") as folder:
            try:
                local = mlflow.artifacts.download_artifacts(
                    f"models:/{model_name}/{version}", dst_path=folder
                )
            except Exception as err:  # noqa: BLE001 - every failure is a fault, see _fault
                raise self._fault(f"downloading {model_name!r} v{version}", err) from err
            yield tf.saved_model.load(str(Path(local) / "tf2model"))

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
        try:
            if self.client.get_experiment_by_name(experiment) is None:
                self.client.create_experiment(experiment, artifact_location=self._artifact_root())
            mlflow.set_experiment(experiment)
            with mlflow.start_run(tags=tags) as run:
                mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
                mlflow.log_metrics(metrics)
                for path in files:
                    mlflow.log_artifact(path)
        except Exception as err:  # noqa: BLE001 - every failure is a fault, see _fault
            raise self._fault(f"logging the evaluation run in {experiment!r}", err) from err
        return run.info.run_id

    def latest_version(self, model_name: str) -> int:
        """The highest version number registered under the name (0: none yet)."""
        return max((int(v.version) for v in self._versions(model_name)), default=0)

    def settle(self, model_name: str, after: int, same: dict[str, str]) -> str | None:
        """Gives the champion alias to the best of the versions that passed a gate after version
        `after` on the same data (`same` tags), and returns the champion's version afterwards.

        MLflow cannot move an alias on a condition, so every overlapping gate settles after
        registering: the alias only ever moves to the best racer, never below a racer that holds
        it, and never off a champion of other data promoted meanwhile (that one stays, and the
        caller reports it). The state is read again after each move until it is stable.
        """
        try:
            for _ in range(5):
                current = self.champion(model_name)
                racers = [
                    v
                    for v in self._versions(model_name)
                    if int(v.version) > after
                    and v.tags.get("gate_passed") == "True"
                    and _scored_on(v, same)
                ]
                if not racers:
                    return None if current is None else str(current.version)
                best = max(racers, key=lambda v: (float(v.tags["top1"]), int(v.version)))
                if current is not None and int(current.version) > after:
                    if str(current.version) not in {str(v.version) for v in racers}:
                        return str(current.version)  # promoted meanwhile on other data: stays
                if current is not None and str(current.version) == str(best.version):
                    return str(best.version)
                self.client.set_registered_model_alias(model_name, CHAMPION, best.version)
            return str(best.version)
        except RegistryError:
            raise
        except Exception as err:  # noqa: BLE001 - every failure is a fault, see _fault
            raise self._fault(f"settling the {CHAMPION} alias of {model_name!r}", err) from err

    def register(self, run_id: str, model_name: str, servable_path: str, tags: dict) -> str:
        """Logs the servable into `run_id` and registers it; `settle` moves the alias."""
        servable = _Servable(tf.saved_model.load(servable_path))
        try:
            with mlflow.start_run(run_id=run_id):
                info = mlflow.tensorflow.log_model(
                    servable,
                    name="model",
                    pip_requirements=[f"tensorflow=={tf.__version__}"],
                )
            version = mlflow.register_model(info.model_uri, model_name, tags=tags)
        except Exception as err:  # noqa: BLE001 - every failure is a fault, see _fault
            raise self._fault(f"registering run {run_id} as {model_name!r}", err) from err
        return str(version.version)
