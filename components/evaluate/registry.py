"""The MLflow Model Registry side of the gate: find the champion, register a new one.

Tracking defaults to a local SQLite store in the project's `.trickflow/` folder (not the working
directory's; `default_tracking_uri`); MLFLOW_TRACKING_URI overrides it, e.g. a team's tracking
server, and TRICKFLOW_HOME moves the project's state folder.

A registered version keeps, besides its servable, the classifier as a Keras file
(`keras/model.keras` in the version's run) so that a later training can load it as a teacher;
`teacher_file` fetches it for the same label set only.

Registry errors are never read as "no champion": only a registry that answers that the model or
its champion alias does not exist means there is none. Anything else (a server answering 503, a
broken database) raises `RegistryError` naming the registry and the call, before anything is
registered.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import tensorflow as tf
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components import dataset
from components.evaluate import seal
from components.evaluate.gate import Best, Champion

log = logging.getLogger(__name__)

CHAMPION = "champion"
# Version tags: the label set a version was trained on (set by `gate_and_register`), and where its
# run keeps the Keras file (absent on versions registered before Keras files were kept).
LABELS_TAG = "label_fingerprint"
KERAS_TAG = "keras_file"
KERAS_FOLDER = "keras"
# Set at registration: the latest version when the gate started (what `settle` compares after);
# set once the alias is settled. A passed version with the first and not the second was
# orphaned by a process that died in between; the next gate settles it (`reconcile`).
SETTLE_AFTER_TAG = "settle_after"
# "False" on a version whose gate waived a rule: registered, never moved to champion by settling.
PROMOTE_TAG = "promote"
# Every version the gate registers is sealed (components/evaluate/seal.py): its files and tags
# under an HMAC with TRICKFLOW_REGISTRY_KEY. Only sealed versions are loaded or acted on.
SOURCE_TAG = "source_sha256"  # the exported servable folder it was registered from
KEY_VARIABLE = seal.KEY_VARIABLE
SETTLED_TAG = "settled"
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


def _quoted(model_name: str) -> str:
    """The name as a string of MLflow's search filter, which quotes with ' or " and escapes
    neither: a name holding both cannot be searched for."""
    if "'" not in model_name:
        return f"'{model_name}'"
    if '"' not in model_name:
        return f'"{model_name}"'
    raise ValueError(
        f"model name {model_name!r} holds both ' and \": MLflow's registry search cannot find "
        "it; choose a name without one of them"
    )


def _local_digest(servable_path: str) -> str | None:
    return None if "://" in servable_path else servable_digest(Path(servable_path))


def servable_digest(folder: Path) -> str:
    """SHA-256 over every file under `folder`: relative paths in order, each with its bytes'
    own SHA-256, so that a file added, removed, renamed or changed changes the digest."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        digest.update(f"{relative}\0{seal.file_digest(path)}\n".encode())
    return digest.hexdigest()


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


def _scored_on(sealed: dict[str, str], tags: dict[str, str]) -> bool:
    """Whether a version's sealed tags record a top-1 on the data that `tags` identify."""
    return "top1" in sealed and all(sealed.get(k) == v for k, v in tags.items())


class _Servable(tf.Module):
    """Re-wraps a loaded SavedModel as a tf.Module, the type MLflow's TensorFlow flavor logs."""

    def __init__(self, loaded):
        super().__init__(name="servable")
        self.loaded = loaded
        self.labels = loaded.labels

    # No autograph (nothing here branches on tensors): it re-reads the source file when it
    # traces, so a checkout updated while a days-long run trained would be traced instead.
    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name="jpeg_bytes")], autograph=False
    )
    def __call__(self, jpeg_bytes):
        return self.loaded(jpeg_bytes)


# MLflow's own defaults retry a call 7 times with growing pauses, each try waiting up to 120 s:
# against a server that accepts connections and never answers, one call holds a stage for about
# 18 minutes. Bounded for the whole process (every MLflow call reads them as it is made), unless
# the environment sets them: three tries of 30 s, 1 s and 2 s apart. (The training curves have a
# tighter, non-blocking path of their own: tracking.py.)
BOUNDED_CALLS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


def bound_mlflow_calls() -> None:
    for name, value in BOUNDED_CALLS.items():
        os.environ.setdefault(name, value)


class Registry:
    def __init__(self, tracking_uri: str | None = None):
        bound_mlflow_calls()
        self._warned: set[tuple] = set()
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

    def sealed_tags(self, version) -> dict[str, str] | None:
        """The tags the gate sealed on `version` (the ones to act on), or None with a warning
        naming the version when it is not sealed or its seal does not verify."""
        body, why = seal.verify(version)
        if body is None:
            key = (version.name, str(version.version), why)
            if key not in self._warned:  # once per version, not at every look at the registry
                self._warned.add(key)
                log.warning(
                    "ignoring %s v%s in %s: %s", version.name, version.version,
                    self.tracking_uri, why,
                )  # fmt: skip
            return None
        return body["tags"]

    def verified(self, version) -> dict:
        """The manifest the gate sealed on `version` (its `tags` and `files`); RegistryError
        saying why when the seal does not verify: for what will be loaded or relied on."""
        body, why = seal.verify(version)
        if body is None:
            raise self.unsealed(version.name, str(version.version), why)
        return body

    def _sealed_versions(self, model_name: str) -> list[tuple]:
        """(version, its sealed tags) for every version of the name whose seal verifies."""
        found = []
        for version in self._versions(model_name):
            tags = self.sealed_tags(version)
            if tags is not None:
                found.append((version, tags))
        return found

    def _versions(self, model_name: str) -> list:
        _quoted(model_name)  # a name no filter can hold is bad input, not a registry fault
        try:
            return self.client.search_model_versions(f"name = {_quoted(model_name)}")
        except Exception as err:  # noqa: BLE001 - every failure is a fault, see _fault
            raise self._fault(f"search_model_versions(name={model_name!r})", err) from err

    def best(self, model_name: str, tags: dict[str, str]) -> Best | None:
        """The registered version with the highest recorded top-1 among those whose tags match
        `tags` (the same validation data and label set), or None."""
        scored = [
            Best(str(v.version), float(sealed["top1"]))
            for v, sealed in self._sealed_versions(model_name)
            if _scored_on(sealed, tags)
        ]
        return max(scored, key=lambda b: b.top1, default=None)

    @contextmanager
    def load_version(self, model_name: str, version: str) -> Iterator:
        """A registered version's servable (JPEG bytes [N] -> probabilities [N, K]); its
        downloaded copy is removed when the block ends."""
        with self._verified_model(model_name, version, "champion-") as local:
            yield tf.saved_model.load(str(local / "tf2model"))

    @contextmanager
    def _verified_model(self, model_name: str, version: str, prefix: str) -> Iterator[Path]:
        """The version's logged model folder, downloaded, once its seal and every file in it
        are the ones the gate sealed (loading a SavedModel runs its graph)."""
        with tempfile.TemporaryDirectory(prefix=prefix) as folder:
            try:
                found = self.client.get_model_version(model_name, version)
                local = mlflow.artifacts.download_artifacts(
                    f"models:/{model_name}/{version}", dst_path=folder
                )
            except Exception as err:  # noqa: BLE001 - every failure is a fault, see _fault
                raise self._fault(f"downloading {model_name!r} v{version}", err) from err
            body = self.verified(found)
            why = seal.check_files(body, seal.folder_digests(Path(local)), seal.MODEL_FOLDER)
            if why:
                raise self.unsealed(model_name, version, why)
            yield Path(local)

    def unsealed(self, model_name: str, version: str, why: str) -> RegistryError:
        return RegistryError(
            f"{model_name!r} v{version} in {self.tracking_uri} is not loaded: {why}. Loading a "
            "model runs its code: only versions this pipeline's gate sealed are loaded. If you "
            "know the version is yours, seal it as it is with `python -m "
            f"components.evaluate.trust --model-name {model_name} --version {version}` (with "
            f"the stack's {KEY_VARIABLE}); otherwise move the champion alias to a sealed "
            "version, or delete this one"
        )

    def load_pyfunc(self, model_name: str, reference: str = CHAMPION):
        """The version `reference` names ("champion" or a number) as an MLflow pyfunc model, for
        serving (JPEG bytes -> probabilities), loaded only once its seal and files verify:
        `mlflow.pyfunc.load_model("models:/...")` itself checks nothing."""
        import mlflow.pyfunc

        version = str(self._version(model_name, reference, "serve").version)
        with self._verified_model(model_name, version, "serve-") as local:
            return mlflow.pyfunc.load_model(str(local))

    def vouch(self, model_name: str, version: str) -> str:
        """Seals a version as the registry holds it now (its files and tags): a person vouching
        for a version registered before seals were kept, or by hand. Returns the seal."""
        with tempfile.TemporaryDirectory(prefix="trust-") as folder:
            try:
                found = self.client.get_model_version(model_name, version)
                local = mlflow.artifacts.download_artifacts(
                    f"models:/{model_name}/{version}", dst_path=folder
                )
                files = seal.folder_digests(Path(local))
                artifact = found.tags.get(KERAS_TAG)
                if artifact:
                    keras = mlflow.artifacts.download_artifacts(
                        run_id=found.run_id, artifact_path=artifact, dst_path=f"{folder}/keras"
                    )
                    files[artifact] = seal.file_digest(Path(keras))
                tags = seal.sealed_tags(
                    model_name, found.run_id, found.source, files, dict(found.tags)
                )
                for key, value in tags.items():
                    self.client.set_model_version_tag(model_name, version, key, value)
            except Exception as err:  # noqa: BLE001 - every failure is a fault, see _fault
                call = f"sealing {model_name!r} v{version}"
                raise self._fault(call, err) from err
        return tags[seal.SEAL_TAG]

    def champion_info(self, model_name: str, top1_on_this_data) -> Champion | None:
        """The champion, with its top-1 on this data by `top1_on_this_data(version, sealed
        tags)` (None: no baseline). A champion whose seal does not verify is refused."""
        version = self.champion(model_name)
        if version is None:
            return None
        sealed = self.verified(version)["tags"]
        return Champion(
            str(version.version),
            sealed.get(LABELS_TAG, ""),
            top1_on_this_data(version, sealed),
        )

    def _artifact_root(self) -> str | None:
        """Beside a local SQLite store, not in whatever folder the process happens to run in."""
        if self.tracking_uri.startswith("sqlite:///"):
            db = Path(self.tracking_uri[len("sqlite:///") :])
            return (db.parent / "artifacts").resolve().as_uri()
        return None  # a tracking server decides

    def experiment_id(self, experiment: str) -> str:
        """The experiment's id, made if missing. Runs of a new model name that start at once
        both find none and both create it: the loser reads the winner's."""
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        try:
            root = self._artifact_root()
            return self.client.create_experiment(experiment, artifact_location=root)
        except MlflowException:
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                raise
            return found.experiment_id

    def log_run(
        self,
        experiment: str,
        params: dict,
        metrics: dict,
        tags: dict,
        files: list[str],
        run_id: str | None = None,
    ) -> str:
        """Records an evaluation (gate passed or not) as an MLflow run, or into the training's
        run `run_id` when there is one; returns the run's id."""
        try:
            self.experiment_id(experiment)
            mlflow.set_experiment(experiment)
            logged = self.client.get_run(run_id).data.params if run_id else {}
            with mlflow.start_run(run_id=run_id, tags=None if run_id else tags) as run:
                if run_id:
                    mlflow.set_tags(tags)
                new = {k: str(v)[:500] for k, v in params.items() if k not in logged}
                mlflow.log_params(new)
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
                    (v, sealed)
                    for v, sealed in self._sealed_versions(model_name)
                    if int(v.version) > after
                    and sealed.get("gate_passed") == "True"
                    and sealed.get(PROMOTE_TAG, "True") == "True"
                    and _scored_on(sealed, same)
                ]
                if not racers:
                    return None if current is None else str(current.version)
                best = max(racers, key=lambda r: (float(r[1]["top1"]), int(r[0].version)))[0]
                if current is not None and int(current.version) > after:
                    if str(current.version) not in {str(v.version) for v, _ in racers}:
                        return str(current.version)  # promoted meanwhile on other data: stays
                if current is not None and str(current.version) == str(best.version):
                    return str(best.version)
                self.client.set_registered_model_alias(model_name, CHAMPION, best.version)
            return str(best.version)
        except RegistryError:
            raise
        except Exception as err:  # noqa: BLE001 - every failure is a fault, see _fault
            raise self._fault(f"settling the {CHAMPION} alias of {model_name!r}", err) from err

    def version_of_run(self, model_name: str, run_id: str, servable_path: str) -> str | None:
        """The version registered from the MLflow run `run_id` with exactly this servable, if
        any: a training resumed for more epochs keeps its run but is another model."""
        here = _local_digest(servable_path)
        found = [
            int(v.version)
            for v, sealed in self._sealed_versions(model_name)
            if v.run_id == run_id and here is not None and sealed.get(SOURCE_TAG) == here
        ]
        return str(max(found)) if found else None

    def mark_settled(self, model_name: str, version: str) -> None:
        """Records that the alias was settled after `version` was registered."""
        try:
            self.client.set_model_version_tag(model_name, version, SETTLED_TAG, "True")
        except Exception as err:  # noqa: BLE001 - every failure is a fault, see _fault
            raise self._fault(f"tagging {model_name!r} v{version} settled", err) from err

    def reconcile(self, model_name: str) -> list[str]:
        """Settles the alias for versions whose gate passed but whose process died between
        registering and settling (killed, or a registry fault then): done now exactly as that
        gate would have done it, so such a version neither stays out of the champion's place
        for good nor, through the drift floor, blocks every later model. Returns their numbers.
        Versions registered before settling was recorded carry no `settle_after` tag: settled.
        """
        orphans = [
            (v, sealed)
            for v, sealed in self._sealed_versions(model_name)
            if sealed.get("gate_passed") == "True"
            and SETTLE_AFTER_TAG in sealed
            and v.tags.get(SETTLED_TAG) != "True"
        ]
        for version, sealed in sorted(orphans, key=lambda o: int(o[0].version)):
            same = {k: sealed.get(k, "") for k in ("validation_fingerprint", LABELS_TAG)}
            champion = self.settle(model_name, int(sealed[SETTLE_AFTER_TAG]), same)
            self.mark_settled(model_name, str(version.version))
            log.warning(
                "%s v%s passed its gate but was never settled (its run died); settled now: "
                "v%s is champion", model_name, version.version, champion,
            )  # fmt: skip
        return [str(v.version) for v, _ in orphans]

    def register(
        self,
        run_id: str,
        model_name: str,
        servable_path: str,
        tags: dict,
        model_file: str | None = None,
    ) -> str:
        """Logs the servable (and `model_file`, the Keras classifier that teachers are loaded
        from, when given) into `run_id` and registers it; `settle` moves the alias."""
        servable = _Servable(tf.saved_model.load(servable_path))
        tags = dict(tags)
        source = _local_digest(servable_path)
        if source is not None:
            tags[SOURCE_TAG] = source
        try:
            with mlflow.start_run(run_id=run_id):
                info = mlflow.tensorflow.log_model(
                    servable,
                    name="model",
                    pip_requirements=[f"tensorflow=={tf.__version__}"],
                )
                files = {}
                if model_file is not None:
                    with _local_copy(model_file) as local:
                        mlflow.log_artifact(local, artifact_path=KERAS_FOLDER)
                        tags[KERAS_TAG] = f"{KERAS_FOLDER}/{Path(local).name}"
                        files[tags[KERAS_TAG]] = seal.file_digest(Path(local))
                with tempfile.TemporaryDirectory(prefix="logged-") as logged:  # as it was stored
                    copy = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=logged)
                    files.update(seal.folder_digests(Path(copy)))
                tags.update(seal.sealed_tags(model_name, run_id, info.model_uri, files, tags))
            version = mlflow.register_model(info.model_uri, model_name, tags=tags)
            if version.source != info.model_uri:  # what the seal names must be what MLflow keeps
                raise RuntimeError(
                    f"the registry recorded source {version.source!r} for {info.model_uri!r}: "
                    "the version's seal would not verify"
                )
        except Exception as err:  # noqa: BLE001 - every failure is a fault, see _fault
            raise self._fault(f"registering run {run_id} as {model_name!r}", err) from err
        return str(version.version)

    def _version(self, model_name: str, reference: str, purpose: str = "distill from"):
        """The version that `reference` ("champion", or a number such as "3" or "v3") names."""
        if reference == CHAMPION:
            version = self.champion(model_name)
            if version is None:
                first = "without a teacher" if purpose == "distill from" else "from scratch"
                raise RegistryError(
                    f"nothing to {purpose}: model {model_name!r} has no {CHAMPION} in "
                    f"{self.tracking_uri}; train {first} first"
                )
            return version
        match = re.fullmatch(r"v?(\d+)", reference.strip())
        if match is None:
            raise ValueError(
                f"teacher reference {reference!r}: use {CHAMPION!r} or a version number such as 3"
            )
        number = match.group(1)
        try:
            return self.client.get_model_version(model_name, number)
        except Exception as err:  # noqa: BLE001 - every failure but "no such version" is a fault
            if isinstance(err, MlflowException) and err.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise RegistryError(
                    f"nothing to {purpose}: model {model_name!r} has no version {number} in "
                    f"{self.tracking_uri}"
                ) from err
            raise self._fault(f"get_model_version({model_name!r}, {number!r})", err) from err

    def teacher_file(
        self,
        model_name: str,
        reference: str,
        labels_fingerprint: str,
        destination: str,
        purpose: str = "distill from",
    ) -> tuple[str, str]:
        """Downloads the Keras file of the version that `reference` names ("champion" or a
        version number) to the file path `destination`; returns (destination, version).

        Refuses a version trained on another label set than `labels_fingerprint`'s (its logits
        would mean other classes) and one registered before Keras files were kept.
        """
        version = self._version(model_name, reference, purpose)
        number = str(version.version)
        which = f"{CHAMPION} v{number}" if reference == CHAMPION else f"version {number}"
        body = self.verified(version)
        labels = body["tags"].get(LABELS_TAG)
        if labels != labels_fingerprint:
            trained_on = "another label set" if labels else "a label set it did not record"
            raise RegistryError(
                f"{which} of {model_name!r} was trained on {trained_on} (labels.txt fingerprint "
                f"{labels or 'missing'}, this data's: {labels_fingerprint}); a model to "
                f"{purpose} must mean the same classes: pick a version trained on these labels"
            )
        artifact = body["tags"].get(KERAS_TAG)
        if not artifact:
            raise RegistryError(
                f"{which} of {model_name!r} was registered before Keras files were kept, so it "
                f"cannot be loaded to {purpose}; pick a version registered since, or register "
                "a new one"
            )
        target = Path(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Downloaded beside the target and renamed: a killed download leaves no partial teacher.
        with tempfile.TemporaryDirectory(prefix=".teacher-", dir=target.parent) as folder:
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=version.run_id, artifact_path=artifact, dst_path=folder
                )
            except Exception as err:  # noqa: BLE001 - every failure is a fault, see _fault
                raise self._fault(
                    f"downloading {artifact} of {model_name!r} v{number}", err
                ) from err
            if seal.file_digest(Path(local)) != body["files"].get(artifact):
                why = f"its {artifact} differs from the one sealed at registration"
                raise self.unsealed(model_name, number, why)
            os.replace(local, target)
        log.info("teacher: %s v%s of %s -> %s", model_name, number, self.tracking_uri, target)
        return str(target), number


@contextmanager
def _local_copy(path: str) -> Iterator[str]:
    """`path` itself if it is local, else a temporary local copy (MLflow logs local files)."""
    if "://" not in path:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="keras-") as folder:
        local = str(Path(folder) / path.rstrip("/").rsplit("/", 1)[-1])
        tf.io.gfile.copy(path, local)
        yield local
