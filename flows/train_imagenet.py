"""Flow `train-imagenet`: ingest -> validate -> train -> evaluate -> gate and register.

Tasks only call components, pass paths between stages and publish artifacts. Every run writes
`<work_dir>/runs/<flow_run_id>/report.json` with the outcome of each stage, and config.json.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from components import atomic, dataset, events, settings
from components.evaluate import RegistryError, evaluate, gate_and_register
from components.evaluate.registry import Registry, default_tracking_uri, label_fingerprint
from components.evaluate.tracking import TrainingCurves, start_training_run
from components.ingest import IngestConfig, run_ingest
from components.train import TrainConfig, run_training
from components.train.loop import RESUMABLE_CHANGES
from components.validate import ValidateConfig, ValidationFailed, validate
from flows import artifacts
from flows.presets import PipelineConfig, PresetName, preset


class Overrides(BaseModel):
    """Per-run adjustments on top of the preset; empty fields keep the preset's value."""

    model_config = ConfigDict(extra="forbid")

    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    model_name: str | None = Field(None, description="registry name; default <model>-<data name>")
    min_top1: float | None = Field(None, ge=0, le=1, description="gate floor")
    max_regression: float | None = Field(None, ge=0, le=1, description="allowed drop vs champion")
    max_drop_from_best: float | None = Field(
        None, ge=0, le=1, description="allowed drop vs the best model ever registered"
    )
    allow_label_change: bool | None = Field(
        None, description="replace a champion trained on another label set"
    )
    mixup_alpha: float | None = Field(
        None, ge=0, description="mixup's Beta(α, α); the paper: 0.2, with 200 epochs; 0: off"
    )
    mixup_off_epochs: int | None = Field(
        None, ge=0, description="train the last N epochs without mixup"
    )
    distill_from: str | None = Field(
        None,
        pattern=r"^(([A-Za-z0-9_.\-]+[@/])?(champion|v?[0-9]+))?$",
        description='"champion" to distill from the current champion of this model (same label '
        'set), or one of its version numbers; "NAME@champion" or "NAME/3" for another '
        "registered model trained on the same labels; empty: no teacher",
    )
    resume_run: str | None = Field(
        None, description="flow run id of a killed run whose checkpoints this run continues"
    )
    beam_args: list[str] | None = Field(
        None,
        description="Beam runner options for ingestion and validation, e.g. "
        "['--runner=DaskRunner', '--dask_client_address=tcp://HOST:8786']",
    )

    def as_settings(self) -> dict:
        """The filled-in fields as dotted settings of the pipeline config."""
        return {
            path: getattr(self, name)
            for name, path in OVERRIDDEN.items()
            if getattr(self, name) is not None
        }


# Where each override lands in PipelineConfig (model_name, distill_from and resume_run are the
# flow's own: they pick the registry entry, the teacher and the folder, not a setting).
OVERRIDDEN = {
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "mixup_alpha": "train.mixup_alpha",
    "mixup_off_epochs": "train.mixup_off_epochs",
    "min_top1": "gate.min_top1",
    "max_regression": "gate.max_regression",
    "max_drop_from_best": "gate.max_drop_from_best",
    "allow_label_change": "gate.allow_label_change",
    "beam_args": "ingest.beam_args",
}


def resolve_config(preset_name: str, overrides: Overrides) -> PipelineConfig:
    """The preset with the overrides applied, validated again as a whole."""
    return settings.apply(preset(preset_name), overrides.as_settings())


def with_teacher(train: TrainConfig, teacher: str) -> TrainConfig:
    return settings.apply(train, {"teacher": teacher})


def default_model_name(model: str, data_dir: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", Path(data_dir.rstrip("/")).name.lower()).strip("-")
    return f"{model}-{slug or 'data'}"


RESUME_KEY = "resume_key"
TRAINED = "trained.json"  # what the train task returned: the servable, steps, the MLflow run
GATED = "gated.json"  # the gate's decision on this training (a later run trains anew)


def resume_key(data_fingerprint: str, train: TrainConfig) -> str:
    """Identity of a training: the data and every setting that changes what is trained."""
    settings = train.model_dump_json(exclude=RESUMABLE_CHANGES)
    return hashlib.sha256(f"{data_fingerprint}\0{settings}".encode()).hexdigest()[:16]


def _in_use(folder: Path) -> bool:
    """Whether a live run holds the folder's training lock (see `training_lock`)."""
    try:
        with open(folder / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True


@contextmanager
def training_lock(folder: Path):
    """Held while this run trains in `folder`; the OS releases it when the process dies, which
    is what makes a killed run's folder resumable and a live run's folder not."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise RuntimeError(f"{folder} is being trained by another run right now") from err
        yield


def finished_training(folder: Path, key: str) -> dict | None:
    """What a finished training of `key` (data and settings) in `folder` produced, if no gate has
    judged it yet: a run that failed in evaluation or at the gate (a registry blip, a kill) left
    it, and a rerun goes straight to evaluation instead of training again (GPU-days at ImageNet
    scale). Delete its trained.json to train again instead."""
    if (folder / GATED).exists() or not (folder / TRAINED).exists():
        return None
    try:
        if (folder / RESUME_KEY).read_text().strip() != key:
            return None  # other data or settings (a resume_run that changed them)
    except OSError:
        return None
    try:
        trained = json.loads((folder / TRAINED).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return trained if Path(trained.get("servable", "")).is_dir() else None


def train_dir(work_dir: Path, run_id: str, resume_run: str | None, key: str) -> tuple[Path, str]:
    """The folder to train into, and why: `resume_run`'s if asked; else a finished training of
    the same data and configuration that no gate has judged yet (its run failed after training;
    `finished_training`); else the newest unfinished training (checkpoints, no summary.json),
    whichever run started it (a worker killed, a reboot, a cancelled run re-run); else a fresh
    one."""
    if resume_run is not None:
        folder = work_dir / "runs" / resume_run / "train"
        if not (folder / "checkpoints").is_dir():
            raise ValueError(f"resume_run {resume_run}: no checkpoints in {folder}")
        return folder, f"resuming run {resume_run}'s checkpoints, as asked"
    same = [m.parent for m in (work_dir / "runs").glob(f"*/train/{RESUME_KEY}")
            if m.read_text().strip() == key and not _in_use(m.parent)]  # fmt: skip
    done = [folder for folder in same if finished_training(folder, key)]
    if done:
        newest = max(done, key=lambda f: (f / TRAINED).stat().st_mtime)
        return newest, (
            f"reusing the finished training in {newest}, which no gate has judged yet (its run "
            "failed after training); going straight to evaluation"
        )
    unfinished = [
        folder
        for folder in same
        if (folder / "checkpoints").is_dir() and not (folder / "summary.json").exists()
    ]
    if unfinished:
        newest = max(unfinished, key=lambda f: (f / "checkpoints").stat().st_mtime)
        return newest, f"resuming the unfinished training in {newest} (same data and settings)"
    folder = work_dir / "runs" / run_id / "train"
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder / RESUME_KEY, key)
    return folder, "starting fresh: no unfinished training of this data and configuration"


def _dataset_dir(work_dir: Path, data_dir: str) -> Path:
    """One ingestion folder per source, so unchanged sources are reused across runs."""
    source_id = hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:10]
    return work_dir / "datasets" / f"{Path(data_dir.rstrip('/')).name or 'data'}-{source_id}"


HINTS = {
    "data_dir": "pass the folder that holds train/ and val/ (or the ILSVRC or Kaggle tree), "
    "as the worker sees it",
    "ingest": "the error names the file or folder; quarantine.jsonl lists rejected images",
    "validate": "the anomaly table says which feature breaks the reviewed schema "
    "(schemas/image_examples.pbtxt): fix the data, or review the schema if the data is right",
    "teacher": "distill from a version trained on the same labels, or leave distill_from empty",
    "train": "run the same deployment again to resume from the last checkpoint once the cause "
    "is fixed",
    "evaluate": "the servable could not be evaluated; the error names the file",
    "gate_and_register": "the error says what the MLflow registry answered or refused; once that "
    "is fixed, run the same deployment again: it reuses this finished training and goes "
    "straight to evaluation",
}


def reason(err: Exception) -> str:
    """One line saying why: the anomalies in brief, or the error's first line."""
    anomalies = getattr(err, "anomalies", None)
    if anomalies:
        listed = "; ".join(f"{a['split']} {a['feature']}: {a['problem']}" for a in anomalies[:5])
        more = f"; and {len(anomalies) - 5} more" if len(anomalies) > 5 else ""
        return f"{type(err).__name__}: {len(anomalies)} data anomalies: {listed}{more}"
    return f"{type(err).__name__}: {err}".splitlines()[0][:1000]


class StageFailed(RuntimeError):
    """A run's failure, naming the stage: what Prefect shows as the run's final message."""


@contextmanager
def _timed(report: dict, stage: str):
    """Records the stage's wall time in report["seconds"] and, when it fails, the stage, the
    reason and what to do in report["failed"]."""
    start = time.perf_counter()
    try:
        yield
    except Exception as err:
        report.setdefault("failed", None)
        if report["failed"] is None:
            report["failed"] = {"stage": stage, "reason": reason(err), "hint": HINTS.get(stage, "")}
        raise
    finally:
        report["seconds"][stage] = round(time.perf_counter() - start, 1)


def log_events(*consumers: events.OnEvent) -> events.OnEvent:
    """A component's progress events as the task's log lines (at their level), and to
    `consumers` (progress artifacts, MLflow curves)."""
    log = events.log_to(get_run_logger())

    def on_event(event: events.Event) -> None:
        log(event)
        for consumer in consumers:
            consumer(event)

    return on_event


@task(name="ingest", retries=1, retry_delay_seconds=10)
def ingest_task(data_dir: str, output: str, config: PipelineConfig) -> dict:
    """Ingest the source images into sharded TFRecords with Beam."""
    ingest = IngestConfig(**config.ingest.model_dump(), source=data_dir, output=output)
    metadata = run_ingest(ingest, log_events())
    artifacts.publish_ingest(metadata, dataset.read_quarantine(output))
    return metadata


@task(name="validate")
def validate_task(data: str, output: str, beam_args: list[str]) -> dict:
    """Check TFDV statistics of the TFRecords against the reviewed schema (never retried)."""
    try:
        report = validate(
            ValidateConfig(data_dir=data, output=output, beam_args=beam_args), log_events()
        )
    except ValidationFailed as err:
        page = Path(output) / "statistics.html"
        artifacts.publish_validation(
            {"anomalies": err.anomalies, "statistics_html": str(page) if page.exists() else None}
        )
        raise
    artifacts.publish_validation(report)
    return report


def teacher_reference(distill_from: str, model_name: str) -> tuple[str, str]:
    """(registered model, "champion" or version) that `distill_from` names: "champion" and
    "3" mean this run's model, "NAME@champion" and "NAME/3" another one."""
    for separator in ("@", "/"):
        name, found, reference = distill_from.rpartition(separator)
        if found:
            return name, reference
    return model_name, distill_from


# No retries: no champion, another label set or an old version do not change by asking again.
@task(name="resolve-teacher")
def teacher_task(data: str, model_name: str, distill_from: str, destination: str) -> dict:
    """Fetch the registered version to distill from; refuse one of another label set."""
    model_name, reference = teacher_reference(distill_from, model_name)
    path, version = Registry().teacher_file(
        model_name, reference, label_fingerprint(data), destination
    )
    get_run_logger().info("distilling from %s v%s (%s)", model_name, version, reference)
    return {"model_name": model_name, "version": version, "reference": reference, "path": path}


def source_version() -> str:
    """The git commit of this checkout ("+changes" when the tree differs), or "unknown"."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}+changes" if dirty else commit


def flat(prefix: str, value) -> dict:
    """{"train": {"epochs": 3}} -> {"train.epochs": 3}: one MLflow parameter per setting."""
    if not isinstance(value, dict):
        return {prefix: value}
    items = {}
    for key, inner in value.items():
        items.update(flat(f"{prefix}.{key}" if prefix else key, inner))
    return items


@task(name="train", retries=1, retry_delay_seconds=5)
def train_task(data: str, output: str, config: TrainConfig, tracking: dict) -> dict:
    """Train the model; a retry resumes from the last checkpoint in the same folder.

    `tracking` names the MLflow experiment, params and tags of the training's run, which is
    created before the first step (or continued, after a kill) and draws the curves meanwhile.
    """
    logger = get_run_logger()
    registry = Registry()
    run_id = start_training_run(
        registry,
        tracking["experiment"],
        tracking["params"],
        tracking["tags"],
        Path(output),
        tracking.get("files", []),
    )
    logger.info("MLflow run %s in %s", run_id, registry.tracking_uri)
    # Asked now, while the server answers: after the training nothing may depend on it.
    experiment_id = registry.client.get_run(run_id).info.experiment_id
    curves = TrainingCurves(registry, run_id)
    on_event = log_events(artifacts.TrainingProgress(), curves)
    try:
        trained = run_training(config, data, output, on_event=on_event)
    except BaseException:
        curves.finish("FAILED")  # a resumed attempt continues the same run
        raise
    curves.close()  # the curves' backlog, if the server was away; never fails the training
    result = {**trained, "mlflow_run_id": run_id, "mlflow_experiment_id": experiment_id}
    atomic.write_json(Path(output) / TRAINED, result, default=str)
    return result


def mlflow_ui(tracking_uri: str) -> str | None:
    """The MLflow UI to link to: TRICKFLOW_MLFLOW_UI, or the tracking server itself."""
    return os.environ.get("TRICKFLOW_MLFLOW_UI") or (
        tracking_uri if tracking_uri.startswith("http") else None
    )


@task(name="evaluate")
def evaluate_task(data: str, servable: str, output: str, batch_size: int) -> dict:
    """Center-crop top-1/top-5 of the servable, exactly as it will be served."""
    return evaluate(data, servable, output, log_events(), batch_size=batch_size)


# No retries: a retry after a successful registration would compare the model with itself.
@task(name="gate-and-register")
def register_task(
    data: str,
    servable: str,
    output: str,
    metrics: dict,
    model_name: str,
    config: PipelineConfig,
    tags: dict,
    run_id: str,
) -> dict:
    """Compare with the champion on the same data; register as champion only if the gate passes.
    The decision lands on the training's MLflow run, which holds every setting already."""
    result = gate_and_register(
        data, servable, output, metrics, model_name, config.gate, tags=tags, run_id=run_id
    )
    get_run_logger().info(
        "gate %s: %s", "passed" if result["gate"]["passed"] else "failed", result["gate"]["reason"]
    )
    artifacts.publish_evaluation(metrics, result["gate"])
    artifacts.publish_registration(result, mlflow_ui(result["tracking_uri"]))
    return result


@flow(name="train-imagenet", log_prints=True)
def train_imagenet(
    data_dir: str,
    work_dir: str,
    preset: PresetName = "demo",
    overrides: Overrides = Overrides(),  # noqa: B008 - pydantic model renders as a UI form
) -> dict:
    """Ingest, validate, train, evaluate and (if the gate passes) register an image classifier."""
    config = resolve_config(preset, overrides)
    data_dir = data_dir if "://" in data_dir else os.path.abspath(data_dir)
    work = Path(work_dir).resolve()
    run_id = str(flow_run.id or "local")
    run_dir = work / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(
        run_dir / "config.json",
        json.dumps(
            settings.redacted({"preset": preset, "data_dir": data_dir, **config.model_dump()}),
            indent=2,
        ),
    )
    model_name = overrides.model_name or default_model_name(config.train.model, data_dir)
    report: dict = {
        "flow_run_id": run_id,
        "preset": preset,
        "data_dir": data_dir,
        "ingest": None,
        "validate": None,
        "teacher": None,
        "train": None,
        "evaluate": None,
        "gate": None,
        "registry": {"model_name": model_name, "version": None},
        "seconds": {},
        "failed": None,
        "report_path": str(run_dir / "report.json"),
    }
    held = ExitStack()  # the dataset's reader lock, from after ingestion to the end of the run
    try:
        with _timed(report, "data_dir"):
            if "://" not in data_dir and not Path(data_dir).is_dir():
                raise ValueError(f"data_dir {data_dir} is not a folder")
        data = str(_dataset_dir(work, data_dir))
        with _timed(report, "ingest"):
            metadata = ingest_task(data_dir, data, config)
            # From here on no ingestion rewrites the dataset under this run; one that did in the
            # moment between is caught by its fingerprint.
            held.enter_context(dataset.locked(data, False, get_run_logger().info))
            now = (dataset.read_metadata(data) or {}).get("fingerprint")
            if now != metadata["fingerprint"]:
                raise RuntimeError(
                    f"{data} was rewritten by another ingestion while this run started "
                    f"(fingerprint {now}, not {metadata['fingerprint']}); run it again"
                )
        report["ingest"] = {
            "records": metadata["records"],
            "quarantined": sum(metadata["quarantined"].values()),
            "fingerprint": metadata["fingerprint"],
            "reused": metadata["reused"],
            "output": data,
        }
        try:
            with _timed(report, "validate"):
                validation = validate_task(
                    data, str(run_dir / "validation"), config.ingest.beam_args
                )
        except ValidationFailed as err:
            report["validate"] = {"passed": False, "anomalies": err.anomalies}
            raise
        report["validate"] = {
            "passed": True,
            "anomalies": [],
            "statistics_html": validation["statistics_html"],
        }
        teacher = teacher_uri = None
        if overrides.distill_from:
            try:
                with _timed(report, "teacher"):
                    teacher = teacher_task(
                        data, model_name, overrides.distill_from, str(run_dir / "teacher.keras")
                    )
            except RegistryError as err:  # fails the run before any training
                report["teacher"] = {"reference": overrides.distill_from, "error": str(err)}
                raise
            teacher_uri = f"models:/{teacher['model_name']}/{teacher['version']}"
            report["teacher"] = {k: teacher[k] for k in ("model_name", "version", "reference")}
        with _timed(report, "train"):
            # The teacher's registry version, not its local path, is part of what is trained:
            # a killed distillation resumes by itself only under the same teacher version.
            identity = config.train if teacher is None else with_teacher(config.train, teacher_uri)
            key = resume_key(metadata["fingerprint"], identity)
            folder, why = train_dir(work, run_id, overrides.resume_run, key)
            get_run_logger().info("training: %s", why)
            with training_lock(folder):
                train_config = config.train
                if teacher is not None:
                    # In the training folder, named by version: a resumed run finds the same
                    # path, and one asked to resume with another teacher version is refused.
                    path = folder / f"teacher-v{teacher['version']}.keras"
                    os.replace(teacher["path"], path)
                    train_config = with_teacher(config.train, str(path))
                tracking = {
                    "experiment": f"trickflow-{model_name}",
                    "params": {
                        **flat("", settings.redacted(json.loads(config.model_dump_json()))),
                        "preset": preset,
                        "data_dir": data_dir,
                        "data_fingerprint": metadata["fingerprint"],
                        "teacher": teacher_uri,
                        "git_commit": source_version(),
                    },
                    "tags": {"flow_run_id": run_id, "preset": preset},
                    "files": [validation["statistics_html"]]
                    if validation["statistics_html"]
                    else [],
                }
                trained = finished_training(folder, key) or train_task(
                    data, str(folder), train_config, tracking
                )
        report["train"] = {
            "steps": trained["steps"],
            "resumed_from": trained["resumed_from"],
            "precision": trained["precision"],
            "servable": trained["servable"],
            "folder": str(folder),
            "why": why,
            "teacher": teacher_uri,
            "mlflow_run_id": trained["mlflow_run_id"],
            "mlflow_experiment_id": trained["mlflow_experiment_id"],
        }
        with _timed(report, "evaluate"):
            metrics = evaluate_task(
                data, trained["servable"], str(run_dir / "evaluation"), config.eval_batch_size
            )
        report["evaluate"] = {
            "top1": metrics["top1"],
            "top5": metrics["top5"],
            "count": metrics["count"],
        }
        tags = {
            "flow_run_id": run_id,
            "data_span": metadata["fingerprint"],
            "data_dir": data_dir,
            "preset": preset,
        }
        if teacher_uri:
            tags["teacher"] = teacher_uri
        with _timed(report, "gate_and_register"):
            try:
                result = register_task(
                    data,
                    trained["servable"],
                    str(run_dir / "evaluation"),
                    metrics,
                    model_name,
                    config,
                    tags,
                    trained["mlflow_run_id"],
                )
            except RegistryError as err:  # no decision was possible: say so, register nothing
                report["gate"] = {"passed": False, "reason": f"registry fault: {err}"}
                report["registry"] = {"model_name": model_name, "version": err.version}
                if err.version is not None:  # registered; the next gate settles the alias
                    atomic.write_json(
                        folder / GATED, {"flow_run_id": run_id, "version": err.version}
                    )
                raise
        # Judged: a later run trains anew rather than reusing this training.
        atomic.write_json(folder / GATED, {"flow_run_id": run_id, **result}, default=str)
        report["gate"] = {"passed": result["gate"]["passed"], "reason": result["gate"]["reason"]}
        report["registry"] = {
            "model_name": model_name,
            "version": result["version"],
            "alias": result["alias"],
            "run_id": result["run_id"],
            "tracking_uri": result["tracking_uri"],
        }
    except Exception as err:
        failed = report["failed"] or {"stage": "flow", "reason": str(err), "hint": ""}
        report["failed"] = failed
        message = f"{failed['stage']} failed: {failed['reason']}"
        hint = f" (what to do: {failed['hint']})" if failed["hint"] else ""
        raise StageFailed(message + hint) from err
    finally:
        held.close()
        atomic.write_json(run_dir / "report.json", report, default=str)
        ui = mlflow_ui((report.get("registry") or {}).get("tracking_uri") or default_tracking_uri())
        artifacts.publish_summary(report, ui)
    print(
        f"top-1 {report['evaluate']['top1']:.4f}; gate "
        f"{'passed' if report['gate']['passed'] else 'failed'}: {report['gate']['reason']}; "
        f"registered version: {report['registry']['version']}; report: {run_dir}/report.json"
    )
    return report
