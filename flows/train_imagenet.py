"""Flow `train-imagenet`: ingest -> validate -> train -> evaluate -> gate and register.

Tasks only call components, pass paths between stages and publish artifacts. Every run writes
`<work_dir>/runs/<flow_run_id>/report.json` with the outcome of each stage, and config.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
from contextlib import ExitStack
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from components import atomic, dataset, events, masking, settings, spans
from components.evaluate import RegistryError, evaluate, gate_and_register
from components.evaluate.registry import (
    LABELS_TAG,
    Registry,
    default_tracking_uri,
    label_fingerprint,
)
from components.evaluate.tracking import TrainingCurves, start_training_run
from components.ingest import IngestConfig, run_ingest
from components.train import TrainConfig, run_training
from components.train.loop import RESUMABLE_CHANGES
from components.validate import ValidateConfig, ValidationFailed, validate
from flows import artifacts, decisions
from flows.decisions import model_reference
from flows.folders import (
    GATED,
    TRAINED,
    TRAINING_LOCK,
    choosing,
    finished_training,
    resume_key,
    train_dir,
    trained_elsewhere,
    training_lock,
)
from flows.pages import publish_pages
from flows.presets import PipelineConfig, PresetName, preset
from flows.report import RunReport


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
    promote_waived: bool | None = Field(
        None,
        description="move the champion even when a margin of 1 waives the comparison (logged)",
    )
    promote: Literal["non_inferior", "better"] | None = Field(
        None,
        description="non_inferior: promote a challenger shown no worse than the champion "
        "beyond the margin; better: only one shown significantly better",
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
    init_from: str | None = Field(
        None,
        pattern=r"^(([A-Za-z0-9_.\-]+[@/])?(champion|v?[0-9]+))?$",
        description='"champion" to start from the weights of this model\'s champion (a warm '
        "start with the preset's shorter `warm` schedule; with no champion yet, from scratch), "
        'or one of its version numbers; "NAME@champion" or "NAME/3" for another registered '
        "model of the same architecture and labels; empty: from scratch",
    )
    spans: str | None = Field(
        None,
        pattern=r"^(all|last [1-9][0-9]*)$",
        description="train and evaluate on 'all' spans of the data, or the 'last N'",
    )
    retrain: Literal["on_new_data", "always"] | None = Field(
        None,
        description="on_new_data (default): nothing new since the champion (same spans, "
        "settings and code) ends the run without training; always: train anyway",
    )
    accept_drift: bool = Field(
        False, description="go on when a new span drifts past the schema's thresholds"
    )
    accept_leaks: bool = Field(
        False,
        description="go on when more validation images than the schema allows copy training "
        "images (the gate leaves them out either way)",
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


# Where each override lands in PipelineConfig (model_name, distill_from, init_from, accept_drift,
# accept_leaks and resume_run are the flow's own: they pick the registry entry, the teacher, the
# starting weights, a verdict and the folder, not a setting).
OVERRIDDEN = {
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "mixup_alpha": "train.mixup_alpha",
    "mixup_off_epochs": "train.mixup_off_epochs",
    "min_top1": "gate.min_top1",
    "max_regression": "gate.max_regression",
    "max_drop_from_best": "gate.max_drop_from_best",
    "allow_label_change": "gate.allow_label_change",
    "promote_waived": "gate.promote_waived",
    "promote": "gate.promote",
    "beam_args": "ingest.beam_args",
    "spans": "spans",
    "retrain": "retrain",
}


def resolve_config(preset_name: str, overrides: Overrides) -> PipelineConfig:
    """The preset with the overrides applied, validated again as a whole."""
    return settings.apply(preset(preset_name), overrides.as_settings())


def with_teacher(train: TrainConfig, teacher: str) -> TrainConfig:
    return settings.apply(train, {"teacher": teacher})


def default_model_name(model: str, data_dir: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", Path(data_dir.rstrip("/")).name.lower()).strip("-")
    return f"{model}-{slug or 'data'}"


def _dataset_dir(work_dir: Path, data_dir: str) -> Path:
    """One ingestion folder per source, so unchanged sources are reused across runs."""
    source_id = hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:10]
    return work_dir / "datasets" / f"{Path(data_dir.rstrip('/')).name or 'data'}-{source_id}"


class StageFailed(RuntimeError):
    """A run's failure, naming the stage: what Prefect shows as the run's final message."""


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
def validate_task(
    data: str,
    output: str,
    beam_args: list[str],
    new_spans: list[str],
    accept_drift: bool,
    accept_leaks: bool = False,
) -> dict:
    """Check TFDV statistics of the TFRecords against the reviewed schema, and the new spans
    against the spans before them (never retried)."""
    config = ValidateConfig(
        data_dir=data, output=output, beam_args=beam_args, new_spans=new_spans,
        accept_drift=accept_drift, accept_leaks=accept_leaks,
    )  # fmt: skip
    try:
        report = validate(config, log_events())
    except ValidationFailed as err:
        page = Path(output) / "statistics.html"
        artifacts.publish_validation(
            {
                "passed": False,
                "anomalies": err.anomalies,
                "drift": err.drift,
                "statistics_html": str(page) if page.exists() else None,
            }
        )
        raise
    artifacts.publish_validation(report)
    return report


@task(name="champion", retries=2, retry_delay_seconds=10)
def champion_task(model_name: str) -> dict | None:
    """The champion's version and what it was trained on (the tags the gate sealed on it), or
    None. A champion whose seal does not verify stops the run here, before any training: the
    gate would refuse to compare with it, and nothing is skipped or started from on its word."""
    registry = Registry()
    version = registry.champion(model_name)
    if version is None:
        return None
    # An unsealed champion: the gate would refuse it after a whole training, so say so now.
    return {"version": str(version.version), "tags": registry.verified(version)["tags"]}


# No retries: no champion, another label set or an old version do not change by asking again.
@task(name="resolve-model")
def model_task(data: str, reference: str, model_name: str, destination: str, role: str) -> dict:
    """Fetch the registered version that `reference` names (to distill from, or to start from);
    refuse one of another label set."""
    name, which = model_reference(reference, model_name)
    purpose = "distill from" if role == "distilling from" else "start from"
    path, version = Registry().teacher_file(
        name, which, label_fingerprint(data), destination, purpose
    )
    get_run_logger().info("%s %s v%s (%s)", role, name, version, which)
    return {"model_name": name, "version": version, "reference": which, "path": path,
            "uri": f"models:/{name}/{version}"}  # fmt: skip


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


# What makes a model: the components, the flow module (how settings, teachers and warm starts
# are applied) and its presets, the schema and the locked dependencies; not the reporting,
# following, watching or notifications.
CODE = (
    "components/**/*.py",
    "flows/train_imagenet.py",
    "flows/presets.py",
    "schemas/*.pbtxt",
    "uv.lock",
)


def code_version() -> str:
    """A digest of the code that makes a model (`CODE`), as it is on disk (committed or not,
    with or without git). Documentation, tests, benchmarks and the flow's reporting are not
    part of it: a README fix retrains nothing."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    files = sorted({path for pattern in CODE for path in root.glob(pattern) if path.is_file()})
    for path in files:
        content = hashlib.sha256(path.read_bytes()).hexdigest()
        digest.update(f"{path.relative_to(root).as_posix()}\0{content}\n".encode())
    return f"code-{digest.hexdigest()[:16]}"


def flat(prefix: str, value) -> dict:
    """{"train": {"epochs": 3}} -> {"train.epochs": 3}: one MLflow parameter per setting."""
    if not isinstance(value, dict):
        return {prefix: value}
    items = {}
    for key, inner in value.items():
        items.update(flat(f"{prefix}.{key}" if prefix else key, inner))
    return items


def train_here(data: str, output: str, config: TrainConfig, tracking: dict) -> dict:
    """Train the model in `output`, resuming from its last checkpoint if there is one.

    `tracking` names the MLflow experiment, params and tags of the training's run, which is
    created before the first step (or continued, after a kill) and draws the curves meanwhile.
    What was trained is also written to `output`/trained.json, for a parent that started this
    training on another machine.
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
        tracking.get("metrics", {}),
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


@task(name="train", retries=1, retry_delay_seconds=5)
def train_task(data: str, output: str, config: TrainConfig, tracking: dict) -> dict:
    """Train in this flow run's process; a retry resumes from the last checkpoint."""
    return train_here(data, output, config, tracking)


@flow(name="train-model", retries=1, retry_delay_seconds=5, log_prints=True)
def train_model(
    data: str, output: str, config: dict, tracking: dict, held_by_caller: bool = False
) -> dict:
    """Training alone, for the machines with accelerators: the `train-imagenet` flow starts it
    as a run of its deployment on the GPU pool and waits for it. Reads the records and writes
    the training folder on storage both pools see; a retry resumes from the last checkpoint.
    `held_by_caller`: the run that started this one holds the dataset shared while it waits (so
    this run reads under that hold, and never queues behind a rewrite waiting for its caller)."""
    held = dataset.held_by_caller(data) if held_by_caller else contextlib.nullcontext()
    with held, training_lock(Path(output), TRAINING_LOCK):
        return train_here(data, output, TrainConfig.model_validate(config), tracking)


def training_parameters(
    deployment: str, data: str, output: str, config: TrainConfig, tracking: dict
) -> dict:
    """The parameters of a `train-model` run. Refused when they would hold a credential: every
    user of the Prefect server can read a run's parameters."""
    parameters = {
        "data": data,
        "output": output,
        "config": json.loads(config.model_dump_json()),
        "tracking": tracking,
        "held_by_caller": True,  # the pipeline run holds the dataset shared while it waits
    }
    if (shown := masking.redacted(parameters)) != parameters:
        changed = [k for k in parameters if shown[k] != parameters[k]]
        raise ValueError(
            f"the training settings ({', '.join(changed)}) hold a credential, and a run of "
            f"{deployment} gets them as Prefect parameters, which every user of the Prefect "
            "server can read: give the credential to that pool's workers in their environment "
            "(AWS_SECRET_ACCESS_KEY, a credentials file, ...) instead of in a setting or a URL"
        )
    return parameters


def train_there(
    deployment: str, data: str, output: str, config: TrainConfig, tracking: dict
) -> tuple[dict, dict]:
    """Runs `train-model` as a run of `deployment` (a subflow run of this one, shown under it in
    the UI), waits for it, through the training limit's queue, and returns what it trained and
    which flow run did it."""
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    parameters = training_parameters(deployment, data, output, config, tracking)
    logger.info("training as a run of %s (queued while the training limit is full)", deployment)
    child = run_deployment(
        deployment,
        parameters=parameters,
        timeout=None,
        as_subflow=True,
    )
    state = child.state
    ran = {"flow_run_id": str(child.id), "name": child.name, "work_pool": child.work_pool_name}
    if state is None or not state.is_completed():
        name = state.name if state else "unknown"
        message = (state.message or "") if state else ""
        raise RuntimeError(
            f"training run {child.name} ({child.id}) of {deployment} ended {name}: {message}"
        )
    logger.info("training run %s on pool %s: %s", child.name, child.work_pool_name, state.name)
    return json.loads((Path(output) / TRAINED).read_text()), ran


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


def training_identity(config: PipelineConfig, overrides: Overrides) -> str:
    """What shapes the trained model besides the data: the training settings (not how they are
    logged), the teacher and the starting weights asked for, and the warm schedule."""
    warm = config.warm.model_dump_json() if overrides.init_from else ""
    return decisions.settings_identity(
        config.train.model_dump_json(exclude=RESUMABLE_CHANGES),
        overrides.distill_from or "",
        overrides.init_from or "",
        warm,
    )


def ingest_stage(
    report: RunReport, config: PipelineConfig, data_dir: str, work: Path, held: ExitStack
) -> tuple[str, dict]:
    """Ingests (or reuses) the source and holds the dataset's reader lock until the run ends;
    returns the folder of the spans this run uses and the dataset's metadata."""
    with report.stage("data_dir"):
        if "://" not in data_dir and not Path(data_dir).is_dir():
            raise ValueError(f"data_dir {data_dir} is not a folder")
    root = str(_dataset_dir(work, data_dir))
    with report.stage("ingest"):
        metadata = ingest_task(data_dir, root, config)
        # From here on no ingestion rewrites the dataset under this run; one that did in the
        # moment between is caught by its fingerprint.
        held.enter_context(dataset.locked(root, False, get_run_logger().info))
        now = (dataset.read_metadata(root) or {}).get("fingerprint")
        if now != metadata["fingerprint"]:
            raise RuntimeError(
                f"{root} was rewritten by another ingestion while this run started "
                f"(fingerprint {now}, not {metadata['fingerprint']}); run it again"
            )
        data = spans.view(root, spans.parse_window(config.spans))
    report.ingest = {
        "records": metadata["records"],
        "quarantined": sum(metadata["quarantined"].values()),
        "fingerprint": metadata["fingerprint"],
        "reused": metadata["reused"],
        "converted_spans": metadata.get("converted_spans"),
        "output": root,
        "data": data,
    }
    return data, metadata


def lineage_keys() -> set[str]:
    return {decisions.SPANS_TAG, decisions.SPANS_ID_TAG, decisions.SETTINGS_TAG, decisions.CODE_TAG}


def lineage(window: list[dict], config: PipelineConfig, overrides: Overrides) -> dict:
    """What a training is made of: the spans, the settings, the code (tags of its version)."""
    return {
        decisions.SPANS_TAG: decisions.spans_tag(window),
        decisions.SPANS_ID_TAG: spans.identity(window),
        decisions.SETTINGS_TAG: training_identity(config, overrides),
        decisions.CODE_TAG: code_version(),
    }


def judged_as(made_of: dict, model_name: str, config: PipelineConfig, champion: str | None):
    """What makes a gate's verdict on a training: its lineage, and the model name, gate
    settings and champion it was judged under. The same again gets the same verdict."""
    return {**made_of, "model_name": model_name, "gate": config.gate.model_dump_json(),
            "champion": champion}  # fmt: skip


def refused_before(work: Path, judged_now: dict) -> str | None:
    """A training that a gate refused under exactly these circumstances (`judged_as`), as
    "run X's training of the same, refused by the gate (why)"; None if there is none. Another
    model name, gate setting (allow_label_change, a margin) or champion is judged anew."""
    keys = sorted(judged_now)
    for gated in sorted((work / "runs").glob(f"*/train/{GATED}")):
        try:
            judged = json.loads(gated.read_text())
        except (OSError, ValueError):
            continue
        then = judged.get("judged_as") or {}
        same = bool(then) and all(then.get(k) == judged_now[k] for k in keys)
        if same and not (judged.get("gate") or {}).get("passed", True):
            why = judged["gate"].get("reason", "")
            run = judged.get("flow_run_id")
            return f"run {run}'s training of the same, refused by the gate ({why})"
    return None


def decide_stage(
    report: RunReport,
    config: PipelineConfig,
    overrides: Overrides,
    model_name: str,
    window: list[dict],
    work: Path,
) -> tuple[decisions.Verdict, dict | None]:
    """Asks the registry what the champion learned from; decides whether to train. Returns
    the verdict and the champion (version and tags), if any."""
    with report.stage("champion"):
        found = champion_task(model_name)
    champion = (
        None if found is None else decisions.Learned.from_tags(found["version"], found["tags"])
    )
    made_of = lineage(window, config, overrides)
    now = judged_as(made_of, model_name, config, found and found["version"])
    verdict = decisions.whether_to_train(
        config.retrain,
        window,
        made_of[decisions.SPANS_ID_TAG],
        made_of[decisions.SETTINGS_TAG],
        made_of[decisions.CODE_TAG],
        champion,
        refused_before(work, now),
    )
    report.spans = [s["name"] for s in window]
    report.new_spans = decisions.new_spans(window, champion)
    report.decision = {
        "train": verdict.train,
        "reason": verdict.reason,
        "champion": None if champion is None else champion.version,
    }
    get_run_logger().info("%s: %s", "training" if verdict.train else "not training", verdict.reason)
    return verdict, found


def validate_stage(
    report: RunReport, data: str, run_dir: Path, config: PipelineConfig, overrides: Overrides
) -> dict:
    try:
        with report.stage("validate"):
            validation = validate_task(
                data,
                str(run_dir / "validation"),
                config.ingest.beam_args,
                report.new_spans or [],
                overrides.accept_drift,
                overrides.accept_leaks,
            )
    except ValidationFailed as err:
        report.validate_ = {"passed": False, "anomalies": err.anomalies}
        report.drift = err.drift
        raise
    report.validate_ = {
        "passed": True,
        "anomalies": [],
        "drift_accepted": validation.get("drift_accepted", []),
        "leaks_accepted": validation.get("leaks_accepted", []),
        "duplicates": validation.get("duplicates"),
        "statistics_html": validation["statistics_html"],
    }
    report.drift = validation.get("drift", [])
    return validation


def resolve_stage(
    report: RunReport,
    data: str,
    model_name: str,
    overrides: Overrides,
    run_dir: Path,
    champion: dict | None,
) -> tuple[dict | None, dict | None]:
    """The registered versions to distill from and to start from, fetched; either may be
    None. A missing or mismatched one fails the run before any training; `init_from:
    champion` with no champion yet, or one of another label set (a span brought a class),
    trains from scratch."""
    teacher = start = None
    if overrides.distill_from:
        teacher = fetch_model(report, "teacher", overrides.distill_from, data, model_name,
                              run_dir / "teacher.keras", "distilling from")  # fmt: skip
    if overrides.init_from:
        note = None
        if overrides.init_from == "champion" and champion is None:
            note = "no champion yet: from scratch"
        elif overrides.init_from == "champion":
            labels = champion["tags"].get(LABELS_TAG)
            if labels is None:
                note = (
                    f"champion v{champion['version']} does not record its label set: from scratch"
                )
            elif labels != label_fingerprint(data):
                note = (
                    f"champion v{champion['version']} was trained on another label set "
                    f"({labels}, this data's {label_fingerprint(data)}): from scratch"
                )
        if note:
            get_run_logger().info("init_from champion: %s", note)
            report.init_from = {"reference": "champion", "note": note}
            return teacher, None
        start = fetch_model(report, "init_from", overrides.init_from, data, model_name,
                            run_dir / "init.keras", "starting from")  # fmt: skip
    return teacher, start


def fetch_model(
    report: RunReport,
    stage: str,
    reference: str,
    data: str,
    model_name: str,
    destination: Path,
    role: str,
) -> dict:
    """The registered version `reference` names, fetched as the run's `stage` ("teacher" or
    "init_from"), which is also the report's field for what was found, or the error."""
    try:
        with report.stage(stage):
            found = model_task(data, reference, model_name, str(destination), role)
    except RegistryError as err:
        setattr(report, stage, {"reference": reference, "error": str(err)})
        raise
    setattr(report, stage, {k: found[k] for k in ("model_name", "version", "reference")})
    return found


def train_stage(
    report: RunReport,
    config: PipelineConfig,
    data: str,
    metadata: dict,
    work: Path,
    overrides: Overrides,
    models: tuple[dict | None, dict | None],
    tracking: dict,
    train_deployment: str | None,
    held: ExitStack,
) -> dict | None:
    """Trains in the folder `train_dir` chooses (resuming or reusing a training of the same data
    and settings), or reuses a finished one; returns what it trained, or None when another live
    run is training the same data and settings right now (that run will judge them).

    With `train_deployment`, the training runs as a run of that deployment (the GPU pool's);
    otherwise in this process."""
    teacher, start = models
    run_id = report.flow_run_id
    with report.stage("train"):
        # The teacher's and the starting point's registry versions, not their local paths, are
        # part of what is trained: a killed run resumes by itself only under the same versions.
        identity = config.train
        if teacher is not None:
            identity = with_teacher(identity, teacher["uri"])
        if start is not None:
            identity = settings.apply(identity, config.warm.applied(identity, start["uri"]))
        window = (
            "" if data == report.ingest["output"] else f"/{spans.identity(spans.manifest(data))}"
        )
        key = resume_key(metadata["fingerprint"] + window, identity)
        with choosing(work):  # a run arriving at the same moment waits for this choice
            busy = trained_elsewhere(work, key)
            if busy is None or overrides.resume_run is not None:
                folder, why = train_dir(work, run_id, overrides.resume_run, key)
                # Held to the end of the run, through evaluation and the gate: a second run of
                # the same data and settings meanwhile finds it taken (`trained_elsewhere`) and
                # does not judge this training a second time.
                held.enter_context(training_lock(folder))
        if busy and overrides.resume_run is None:
            reason = (
                f"a live run holds the training of the same data and settings in {busy}: it "
                "evaluates and judges it (or, if it dies, the next run does)"
            )
            get_run_logger().info("not training: %s", reason)
            report.decision = {**report.decision, "train": False, "reason": reason}
            return None
        get_run_logger().info("training: %s", why)
        train_config = config.train
        # In the training folder, named by version: a resumed run finds the same path, and
        # one asked to resume with another version is refused.
        if teacher is not None:
            path = folder / f"teacher-v{teacher['version']}.keras"
            os.replace(teacher["path"], path)
            train_config = with_teacher(train_config, str(path))
        if start is not None:
            path = folder / f"init-v{start['version']}.keras"
            os.replace(start["path"], path)
            train_config = settings.apply(
                train_config, config.warm.applied(train_config, str(path))
            )
        trained, ran = finished_training(folder, key), None
        if trained is None and train_deployment:
            trained, ran = train_there(train_deployment, data, str(folder), train_config, tracking)
        elif trained is None:
            with training_lock(folder, TRAINING_LOCK):  # as a training run of the GPU pool holds it
                trained = train_task(data, str(folder), train_config, tracking)
    report.train = {
        "steps": trained["steps"],
        "epochs": train_config.epochs,
        "resumed_from": trained["resumed_from"],
        "precision": trained["precision"],
        "servable": trained["servable"],
        "folder": str(folder),
        "why": why,
        "teacher": teacher and teacher["uri"],
        "init_from": start and start["uri"],
        "mlflow_run_id": trained["mlflow_run_id"],
        "mlflow_experiment_id": trained["mlflow_experiment_id"],
        "flow_run": ran,
    }
    return trained


def gate_stage(
    report: RunReport,
    data: str,
    trained: dict,
    run_dir: Path,
    metrics: dict,
    model_name: str,
    config: PipelineConfig,
    tags: dict,
) -> None:
    folder = Path(report.train["folder"])
    with report.stage("gate_and_register"):
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
            report.gate = {"passed": False, "reason": f"registry fault: {err}"}
            report.registry = {"model_name": model_name, "version": err.version}
            if err.version is not None:  # registered; the next gate settles the alias
                atomic.write_json(
                    folder / GATED, {"flow_run_id": report.flow_run_id, "version": err.version}
                )
            raise
    # Judged: a later run trains anew rather than reusing this training, and a refused one of
    # the same lineage is not trained again (`refused_before`).
    made_of = {k: v for k, v in tags.items() if k in lineage_keys()}
    judged = judged_as(made_of, model_name, config, report.decision["champion"])
    atomic.write_json(
        folder / GATED,
        {"flow_run_id": report.flow_run_id, **result, "judged_as": judged},
        default=str,
    )
    report.gate = {
        k: result["gate"].get(k)
        for k in ("passed", "reason", "comparison", "classes", "spans", "left_out")
    }
    report.registry = {
        "model_name": model_name,
        "version": result["version"],
        "alias": result["alias"],
        "run_id": result["run_id"],
        "tracking_uri": result["tracking_uri"],
    }


def lineage_tags(
    report: RunReport, window: list[dict], config: PipelineConfig, overrides: Overrides
) -> dict:
    """What the training's MLflow run and the registered version record of where they came
    from: the flow run, the spans, the settings, the code, the teacher and the parent."""
    tags = {
        "flow_run_id": report.flow_run_id,
        "preset": report.preset,
        "data_dir": masking.mask(report.data_dir),
        "data_span": report.ingest["fingerprint"],
        **lineage(window, config, overrides),
    }
    if report.teacher and report.teacher.get("version"):
        tags["teacher"] = f"models:/{report.teacher['model_name']}/{report.teacher['version']}"
    if report.init_from and report.init_from.get("version"):
        tags[decisions.PARENT_TAG] = (
            f"models:/{report.init_from['model_name']}/{report.init_from['version']}"
        )
    return tags


@flow(name="train-imagenet", log_prints=True)
def train_imagenet(
    data_dir: str,
    work_dir: str,
    preset: PresetName = "demo",
    overrides: Overrides = Overrides(),  # noqa: B008 - pydantic model renders as a UI form
    train_deployment: str | None = None,
) -> dict:
    """Ingest, validate, train, evaluate and (if the gate passes) register an image classifier;
    a run with nothing new since the champion ends after ingestion's listing.

    `train_deployment` ("train-model/gpu"): train as a run of that deployment, on its pool's
    machines, the rest of the run staying on this one; by default, train in this process."""
    config = resolve_config(preset, overrides)
    data_dir = data_dir if "://" in data_dir else os.path.abspath(data_dir)
    work = Path(work_dir).resolve()
    run_id = str(flow_run.id or "local")
    run_dir = work / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(
        run_dir / "config.json",
        masking.redacted({"preset": preset, "data_dir": data_dir, **config.model_dump()}),
    )
    model_name = overrides.model_name or (
        default_model_name(config.train.model, data_dir) + config.model_name_suffix
    )
    report = RunReport(
        flow_run_id=run_id,
        preset=preset,
        data_dir=data_dir,
        report_path=str(run_dir / "report.json"),
        registry={"model_name": model_name, "version": None},
    )
    held = ExitStack()  # the dataset's reader lock, from after ingestion to the end of the run
    try:
        data, metadata = ingest_stage(report, config, data_dir, work, held)
        window = spans.manifest(data)
        verdict, champion = decide_stage(report, config, overrides, model_name, window, work)
        if verdict.train:
            validation = validate_stage(report, data, run_dir, config, overrides)
            models = resolve_stage(report, data, model_name, overrides, run_dir, champion)
            tags = lineage_tags(report, window, config, overrides)
            tracking = training_run(report, config, model_name, validation, tags)
            trained = train_stage(
                report,
                config,
                data,
                metadata,
                work,
                overrides,
                models,
                tracking,
                train_deployment,
                held,
            )
        if verdict.train and trained is not None:
            with report.stage("evaluate"):
                metrics = evaluate_task(
                    data, trained["servable"], str(run_dir / "evaluation"), config.eval_batch_size
                )
            report.evaluate = {k: metrics.get(k) for k in ("top1", "top5", "count", "figure")}
            gate_stage(report, data, trained, run_dir, metrics, model_name, config, tags)
    except Exception as err:
        failed = report.failed or {"stage": "flow", "reason": str(err), "hint": ""}
        report.failed = failed
        message = f"{failed['stage']} failed: {failed['reason']}"
        hint = f" (what to do: {failed['hint']})" if failed["hint"] else ""
        raise StageFailed(masking.mask(message + hint)) from err
    finally:
        held.close()
        report.save()
        ui = mlflow_ui(report.registry.get("tracking_uri") or default_tracking_uri())
        publish_pages(report, run_dir, model_name, ui)
        artifacts.publish_summary(report.as_dict(), ui)
    print(artifacts.summary_line(report.as_dict()) + f"; report: {report.report_path}")
    return report.as_dict()


def training_run(
    report: RunReport, config: PipelineConfig, model_name: str, validation: dict, tags: dict
) -> dict:
    """The MLflow experiment, parameters, tags and files of the training's run."""
    page = validation["statistics_html"]
    return {
        "experiment": f"trickflow-{model_name}",
        "params": {
            **flat("", masking.redacted(json.loads(config.model_dump_json()))),
            "preset": report.preset,
            "data_dir": masking.mask(report.data_dir),
            "data_fingerprint": report.ingest["fingerprint"],
            "teacher": tags.get("teacher"),
            "init_from": tags.get(decisions.PARENT_TAG),
            "git_commit": source_version(),
            "code_version": tags[decisions.CODE_TAG],
        },
        "tags": tags,
        "metrics": {
            re.sub(r"[^A-Za-z0-9_.\- /]", "_", f"{row['kind']}.{row['span']}.{row['feature']}.")
            + row["measure"]: row["value"]
            for row in report.drift or []
        },
        "files": [page] if page else [],
    }
