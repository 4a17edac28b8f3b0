"""The train-imagenet flow with the smoke preset under a temporary Prefect server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.decisions import model_reference as teacher_reference
from flows.folders import train_dir
from flows.presets import PRESETS, PipelineConfig, preset
from flows.train_imagenet import (
    OVERRIDDEN,
    Overrides,
    StageFailed,
    default_model_name,
    resolve_config,
    train_imagenet,
)

pytestmark = pytest.mark.integration


def test_flow_runs_every_stage_and_writes_the_report(
    prefect_server, class_folders: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as `make demo` runs on 2 cores: shard processes forked from the flow run's process
    import os

    from components.ingest import pipeline

    monkeypatch.setenv("TRICKFLOW_INGEST_PROCESSES", "2")
    writers, write_shard = tmp_path / "writers", pipeline.write_shard

    def noted(*args, **kwargs):
        with open(writers, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return write_shard(*args, **kwargs)

    monkeypatch.setattr(pipeline, "write_shard", noted)
    work = tmp_path / "work"
    report = train_imagenet(data_dir=str(class_folders), work_dir=str(work), preset="smoke")
    assert str(os.getpid()) not in writers.read_text().split()
    saved = json.loads((work / "runs" / report["flow_run_id"] / "report.json").read_text())
    assert saved["ingest"]["records"] == {"train": 24, "validation": 9}
    assert saved["ingest"]["quarantined"] == 0
    assert saved["validate"]["passed"] is True and saved["validate"]["anomalies"] == []
    page = Path(saved["validate"]["statistics_html"])
    assert page.exists() and "Features" in page.read_text()
    assert (page.parent / "statistics-facets.html").exists()  # TFDV's page, where it loads
    assert 0 <= saved["evaluate"]["top1"] <= 1 and 0 <= saved["evaluate"]["top5"] <= 1
    assert saved["gate"]["passed"] is True and saved["gate"]["reason"]
    assert saved["registry"]["model_name"] == "darknet53-src-smoke"
    assert saved["registry"]["version"] == "1"
    config = json.loads((work / "runs" / report["flow_run_id"] / "config.json").read_text())
    assert config["preset"] == "smoke" and config["train"]["max_steps"] == 6

    # One MLflow run from the first step: settings, curves, then the gate and the version.
    from components.evaluate.registry import Registry

    registry = Registry()
    run = registry.client.get_run(saved["train"]["mlflow_run_id"])
    assert run.data.params["train.max_steps"] == "6" and run.data.params["git_commit"]
    assert run.data.params["data_fingerprint"] == saved["ingest"]["fingerprint"]
    # every measured distance, drift or not: one span, so its skew (val against train)
    skew = {r["feature"]: r["value"] for r in saved["drift"] if r["kind"] == "skew"}
    assert run.data.metrics["skew.src.label.L-infinity"] == pytest.approx(skew["label"])
    losses = registry.client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [2, 3]  # log_every=2, and the last step (24 // 8)
    assert [m.step for m in registry.client.get_metric_history(run.info.run_id, "val_top1")]
    assert run.data.metrics["top1"] == saved["evaluate"]["top1"]
    assert run.data.tags["gate_passed"] == "True" and run.info.status == "FINISHED"
    logged = [a.path for a in registry.client.list_artifacts(run.info.run_id, "data")]
    assert logged == ["data/statistics.html"]
    version = registry.client.get_model_version("darknet53-src-smoke", "1")
    assert version.run_id == run.info.run_id

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {
        "ingest-counts",
        "ingest-quarantine",
        "validation-anomalies",
        "training-progress",
        "training-history",
        "evaluation",
        "registered-model",
        "run-summary",
    } <= keys

    # Nothing new since that champion: the same run again trains nothing and says so.
    again = train_imagenet(data_dir=str(class_folders), work_dir=str(work), preset="smoke")
    assert again["decision"] == {
        "train": False,
        "reason": f"nothing new since champion v1 (spans {class_folders.name})",
        "champion": "1",
    }
    assert again["train"] is None and again["validate"] is None and again["ingest"]["reused"]
    assert not (work / "runs" / again["flow_run_id"] / "train").exists()
    assert json.loads(Path(again["report_path"]).read_text())["decision"]["train"] is False
    version = registry.client.get_model_version("darknet53-src-smoke", "1")
    assert version.tags["spans"].startswith(f"{class_folders.name}=")
    assert version.tags["code_version"] and version.tags["train_settings"]
    with get_client(sync_client=True) as client:
        summaries = [a for a in client.read_artifacts() if a.key == "run-summary"]
    assert any("nothing new since champion v1" in (a.description or "") for a in summaries)


def test_flow_distills_from_the_champion_of_the_same_label_set(
    prefect_server, class_folders: Path, tmp_path: Path
) -> None:
    """No champion yet: refused before training. Then a plain run, then one that distills from
    the champion it registered: the training's saved config names a teacher file that exists."""
    work = tmp_path / "work"
    distill = Overrides(distill_from="champion")
    with pytest.raises(StageFailed, match="teacher failed: RegistryError: .*has no champion"):
        train_imagenet(
            data_dir=str(class_folders), work_dir=str(work), preset="smoke", overrides=distill
        )
    (refused,) = (work / "runs").glob("*/report.json")
    report = json.loads(refused.read_text())
    assert "no champion" in report["teacher"]["error"] and report["train"] is None
    assert report["failed"]["stage"] == "teacher" and report["failed"]["hint"]

    first = train_imagenet(data_dir=str(class_folders), work_dir=str(work), preset="smoke")
    assert first["registry"]["version"] == "1" and first["teacher"] is None
    # distilled from the champion, and started from its weights (a warm start)
    warm = Overrides(distill_from="champion", init_from="champion")
    second = train_imagenet(
        data_dir=str(class_folders), work_dir=str(work), preset="smoke", overrides=warm
    )
    assert second["init_from"] == {"model_name": "darknet53-src-smoke", "version": "1",
                                   "reference": "champion"}  # fmt: skip
    assert second["train"]["init_from"] == "models:/darknet53-src-smoke/1"
    assert second["teacher"] == {
        "model_name": "darknet53-src-smoke",
        "version": "1",
        "reference": "champion",
    }
    assert second["train"]["teacher"] == "models:/darknet53-src-smoke/1"
    folder = Path(second["train"]["folder"])
    assert folder != Path(first["train"]["folder"])
    trained = json.loads((folder / "config.json").read_text())
    teacher = trained["teacher"]
    assert teacher == str(folder / "teacher-v1.keras") and Path(teacher).is_file()
    assert trained["init_weights"] == str(folder / "init-v1.keras")
    assert trained["base_lr"] == pytest.approx(0.1 * 0.1)  # the warm schedule's lower peak

    from components.evaluate.registry import Registry

    registry = Registry()
    version = registry.client.get_model_version(
        "darknet53-src-smoke", second["registry"]["version"]
    )
    assert version.tags["teacher"] == "models:/darknet53-src-smoke/1"
    assert version.tags["parent"] == "models:/darknet53-src-smoke/1"
    # The smoke preset's gate waives its margins: a second model is registered but moves no
    # champion (a test run cannot demote the model people use) unless told to, which is logged.
    assert second["registry"]["version"] == "2" and second["registry"]["alias"] is None
    assert (
        "without moving the champion: this gate waives max_regression 1"
        in (second["gate"]["reason"])
    )
    assert str(registry.champion("darknet53-src-smoke").version) == "1"
    forced = Overrides(promote_waived=True, retrain="always")
    third = train_imagenet(
        data_dir=str(class_folders), work_dir=str(work), preset="smoke", overrides=forced
    )
    assert third["registry"]["alias"] == "champion"
    assert str(registry.champion("darknet53-src-smoke").version) == third["registry"]["version"]


def test_flow_stops_on_anomalies_and_still_reports(
    prefect_server, class_folders: Path, tmp_path: Path, monkeypatch
) -> None:
    from components import schema

    bad = schema.reviewed_schema().__class__()
    bad.CopyFrom(schema.reviewed_schema())
    next(f for f in bad.feature if f.name == "height").int_domain.min = 1000  # all images fail
    monkeypatch.setattr("components.validate.reviewed_schema", lambda: bad)
    work = tmp_path / "work"
    with pytest.raises(StageFailed, match=r"validate failed: ValidationFailed: .*height"):
        train_imagenet(data_dir=str(class_folders), work_dir=str(work), preset="smoke")
    (report_path,) = (work / "runs").glob("*/report.json")
    report = json.loads(report_path.read_text())
    assert report["validate"]["passed"] is False
    assert any(a["feature"] == "height" for a in report["validate"]["anomalies"])
    assert report["train"] is None and report["registry"]["version"] is None
    assert report["failed"]["stage"] == "validate" and "schema" in report["failed"]["hint"]


def test_a_missing_data_folder_fails_naming_the_stage_and_still_reports(
    prefect_server, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    with pytest.raises(StageFailed, match="data_dir failed: ValueError: data_dir .* is not a"):
        train_imagenet(data_dir=str(tmp_path / "nowhere"), work_dir=str(work), preset="smoke")
    (report_path,) = (work / "runs").glob("*/report.json")
    report = json.loads(report_path.read_text())
    assert report["failed"]["stage"] == "data_dir" and report["ingest"] is None


def test_overrides_apply_on_top_of_the_preset() -> None:
    config = resolve_config("demo", Overrides(epochs=3, min_top1=0.5, promote="better"))
    assert config.train.epochs == 3 and config.gate.min_top1 == 0.5
    assert config.gate.promote == "better" and preset("demo").gate.promote == "non_inferior"
    assert config.train.width == preset("demo").train.width
    assert config.ingest.beam_args == []  # the local runner
    mixed = resolve_config("smoke", Overrides(mixup_alpha=0.2, mixup_off_epochs=1)).train
    assert (mixed.mixup_alpha, mixed.mixup_off_epochs) == (0.2, 1)
    assert (
        resolve_config("imagenet-resnet50d-mixup", Overrides(mixup_alpha=0)).train.mixup_alpha == 0
    )
    assert Overrides(distill_from="").distill_from == ""  # the form's empty field: no teacher
    assert Overrides(distill_from="v3").distill_from == "v3"
    assert Overrides(distill_from="resnet152d-imagenet@champion").distill_from
    with pytest.raises(ValueError, match="distill_from"):
        Overrides(distill_from="latest")
    with pytest.raises(ValueError, match="distill_from"):
        Overrides(distill_from="other@latest")
    assert teacher_reference("champion", "mine") == ("mine", "champion")
    assert teacher_reference("v3", "mine") == ("mine", "v3")
    assert teacher_reference("resnet152d-imagenet@champion", "mine") == (
        "resnet152d-imagenet",
        "champion",
    )
    assert teacher_reference("resnet152d-imagenet/7", "mine") == ("resnet152d-imagenet", "7")
    with pytest.raises(ValueError, match="mixup_alpha"):
        Overrides(mixup_alpha=-0.1)
    dask = ["--runner=DaskRunner", "--dask_client_address=tcp://dask-scheduler:8786"]
    assert resolve_config("demo", Overrides(beam_args=dask)).ingest.beam_args == dask
    assert resolve_config("demo", Overrides(allow_label_change=True)).gate.allow_label_change
    # Every override field is either a pipeline setting or one of the flow's own.
    own = {"model_name", "distill_from", "init_from", "accept_drift", "accept_leaks", "resume_run"}
    assert set(Overrides.model_fields) == set(OVERRIDDEN) | own
    for path in OVERRIDDEN.values():
        group, _, name = path.rpartition(".")
        owner = type(getattr(PipelineConfig(), group)) if group else PipelineConfig
        assert name in owner.model_fields, path
    assert resolve_config("demo", Overrides(spans="last 2", retrain="always")).spans == "last 2"
    with pytest.raises(ValueError, match="spans"):
        Overrides(spans="last 0")


def test_a_preset_s_ingest_settings_complete_the_component_s_config() -> None:
    from components.ingest import IngestConfig

    settings = preset("imagenet-darknet53").ingest
    config = IngestConfig(**settings.model_dump(), source="/data/imagenet", output="/work/ds")
    assert config.train_shards == 1024 and config.validation_shards == 128
    assert set(IngestConfig.model_fields) - set(type(settings).model_fields) == {"source", "output"}


def test_every_preset_is_valid_and_documented() -> None:
    for name, build in PRESETS.items():
        assert build().train.epochs >= 1
        assert "Run:" in build.__doc__, name
    real = preset("imagenet-darknet53").train
    assert (real.width, real.image_size, real.batch_size) == (1.0, 224, 128)
    original = preset("imagenet-darknet53-original").train
    assert original.schedule == "step" and original.warmup_steps == 1000
    resnet = preset("imagenet-resnet50d").train
    assert (resnet.model, resnet.image_size, resnet.batch_size, resnet.epochs) == (
        "resnet50d",
        224,
        256,
        120,
    )
    assert (resnet.warmup_epochs, resnet.schedule, resnet.label_smoothing) == (5, "cosine", 0.1)
    assert resnet.no_bias_decay and resnet.zero_gamma and resnet.weight_decay == 1e-4
    assert resnet.mixup_alpha == 0 and resnet.teacher is None
    mixup = preset("imagenet-resnet50d-mixup").train
    assert (mixup.model, mixup.epochs, mixup.mixup_alpha, mixup.mixup_off_epochs) == (
        "resnet50d",
        200,
        0.2,
        10,
    )
    assert mixup.model_dump(exclude={"epochs", "mixup_alpha", "mixup_off_epochs"}) == (
        resnet.model_dump(exclude={"epochs", "mixup_alpha", "mixup_off_epochs"})
    )


def test_the_flow_form_offers_mixup_and_distillation() -> None:
    """The parameters the Prefect UI renders as a form include both tricks."""
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(train_imagenet.fn).model_dump()
    fields = schema["definitions"]["Overrides"]["properties"]
    assert {"mixup_alpha", "mixup_off_epochs", "distill_from"} <= fields.keys()
    assert "0.2" in fields["mixup_alpha"]["description"]
    assert "champion" in fields["distill_from"]["description"]
    presets = schema["properties"]["preset"]["enum"]
    assert {"imagenet-resnet50d", "imagenet-resnet50d-mixup"} <= set(presets)


def test_default_model_name_is_per_dataset() -> None:
    assert default_model_name("darknet53", "/data/My ImageNet/") == "darknet53-my-imagenet"


def test_a_killed_run_is_resumed_from_its_checkpoints_when_asked(tmp_path: Path) -> None:
    assert train_dir(tmp_path, "new", None, "K")[0] == tmp_path / "runs" / "new" / "train"
    with pytest.raises(ValueError, match="no checkpoints"):
        train_dir(tmp_path, "new", "killed", "K")
    (tmp_path / "runs" / "killed" / "train" / "checkpoints").mkdir(parents=True)
    folder, why = train_dir(tmp_path, "new", "killed", "K")
    assert folder == tmp_path / "runs" / "killed" / "train" and "as asked" in why


def _unfinished(work: Path, run: str, key: str, finished: bool = False) -> Path:
    folder = work / "runs" / run / "train"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "resume_key").write_text(key)
    if finished:
        (folder / "summary.json").write_text("{}")
    return folder


def test_unfinished_training_of_the_same_data_and_settings_resumes_by_itself(
    tmp_path: Path,
) -> None:
    import os

    _unfinished(tmp_path, "done", "K", finished=True)
    older = _unfinished(tmp_path, "older", "K")
    newer = _unfinished(tmp_path, "newer", "K")
    _unfinished(tmp_path, "other-settings", "OTHER")
    os.utime(older / "checkpoints", (1, 1))
    folder, why = train_dir(tmp_path, "next", None, "K")
    assert folder == newer and "resuming the unfinished training" in why
    fresh, why = train_dir(tmp_path, "next", None, "NEW")
    assert fresh == tmp_path / "runs" / "next" / "train" and "starting fresh" in why
    assert (fresh / "resume_key").read_text() == "NEW"


def test_resume_key_follows_what_is_trained_not_how_it_is_logged() -> None:
    from components.train import TrainConfig
    from flows.folders import resume_key

    base = resume_key("data", TrainConfig())
    assert resume_key("data", TrainConfig(log_every=7, checkpoint_every=9)) == base
    assert resume_key("data", TrainConfig(batch_size=64)) != base
    assert resume_key("other data", TrainConfig()) != base


def test_a_folder_a_live_run_trains_in_is_not_resumed_by_another(tmp_path: Path) -> None:
    from flows.folders import training_lock

    live = _unfinished(tmp_path, "live", "K")
    with training_lock(live):
        folder, why = train_dir(tmp_path, "next", None, "K")
        assert folder != live and "starting fresh" in why
        with pytest.raises(RuntimeError, match="another run"):
            with training_lock(live):
                pass
    assert train_dir(tmp_path, "later", None, "K")[0] == live  # released: resumable again


def test_a_training_held_by_a_live_run_or_its_gpu_training_is_found(tmp_path: Path) -> None:
    """A second run of the same data and settings learns that a live run trains them: by the
    pipeline run's lock, or by the training run's own (which outlives a killed parent)."""
    from flows.folders import TRAINING_LOCK, trained_elsewhere, training_lock

    live = _unfinished(tmp_path, "live", "K")
    assert trained_elsewhere(tmp_path, "K") is None
    with training_lock(live):
        assert trained_elsewhere(tmp_path, "K") == live
        assert trained_elsewhere(tmp_path, "OTHER") is None
    with training_lock(live, TRAINING_LOCK):
        assert trained_elsewhere(tmp_path, "K") == live
        assert train_dir(tmp_path, "next", None, "K")[0] != live  # not resumed meanwhile
    assert trained_elsewhere(tmp_path, "K") is None


def test_a_gate_failure_retrains_nothing_and_credentials_stay_out_of_the_records(
    prefect_server, class_folders: Path, tmp_path: Path, monkeypatch
) -> None:
    """A registry fault at the gate fails the run after training; the next run of the same data
    and settings goes straight to evaluation with the finished training. A credential given in
    beam_args reaches Beam but not config.json, the MLflow parameters or the logs."""
    import logging

    import flows.train_imagenet as flow_module
    from components.evaluate import RegistryError
    from components.evaluate.registry import Registry

    trainings = []
    real_training = flow_module.run_training

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        trainings.append(args[2])
        return real_training(*args, **kwargs)

    monkeypatch.setattr(flow_module, "run_training", counted)
    real_gate = flow_module.gate_and_register
    faults = iter([RegistryError("registry http://x: a blip")])

    def flaky_gate(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        fault = next(faults, None)
        if fault is not None:
            raise fault
        return real_gate(*args, **kwargs)

    monkeypatch.setattr(flow_module, "gate_and_register", flaky_gate)
    work = tmp_path / "work"
    secret = "--s3_secret_access_key=TOPSECRET"
    overrides = Overrides(beam_args=[secret])
    logged: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    collect = Collect()
    watched = [logging.getLogger(), logging.getLogger("prefect")]  # Prefect's do not propagate
    for logger in watched:
        logger.addHandler(collect)
    try:
        with pytest.raises(StageFailed, match="a blip"):
            train_imagenet(
                data_dir=str(class_folders), work_dir=str(work), preset="smoke",
                overrides=overrides,
            )  # fmt: skip
        second = train_imagenet(
            data_dir=str(class_folders), work_dir=str(work), preset="smoke", overrides=overrides
        )
    finally:
        for logger in watched:
            logger.removeHandler(collect)
    assert len(trainings) == 1  # trained once, by the first run
    assert (
        second["train"]["folder"] == trainings[0]
        and "reusing the finished" in (second["train"]["why"])
    )
    assert second["registry"]["version"] == "1"
    assert (Path(trainings[0]) / "gated.json").exists()  # judged: a third run trains anew

    for report in (work / "runs").glob("*/config.json"):
        text = report.read_text()
        assert "TOPSECRET" not in text and "--s3_secret_access_key=***" in text
    run = Registry().client.get_run(second["train"]["mlflow_run_id"])
    assert "TOPSECRET" not in json.dumps(run.data.params)
    assert not [line for line in logged if "TOPSECRET" in line]
    assert [line for line in logged if "--s3_secret_access_key=***" in line]  # it was logged


def test_a_drifted_span_stops_the_run_unless_accepted(prefect_server, tmp_path: Path) -> None:
    """Span 02 holds one class of three: the run stops at validation with the drift rows in
    report.json and the drift hint; with accept_drift the same data goes through."""
    import shutil

    from tests.conftest import make_class_folders

    source = tmp_path / "src"
    for name, classes in (("01", 3), ("02", 1)):
        span = make_class_folders(source / "spans" / name)
        for label in range(classes, 3):
            for split in ("train", "val"):
                shutil.rmtree(span / split / f"n0{label:07d}")
        (span / "_SUCCESS").write_text("")
    work = tmp_path / "work"
    with pytest.raises(StageFailed, match=r"validate failed: DriftDetected: 1 distances past"):
        train_imagenet(data_dir=str(source), work_dir=str(work), preset="smoke")
    (stopped,) = [json.loads(p.read_text()) for p in (work / "runs").glob("*/report.json")]
    assert stopped["spans"] == ["01", "02"] and stopped["validate"]["passed"] is False
    past = [row for row in stopped["drift"] if row["drifted"]]
    assert [(r["span"], r["feature"], r["against"]) for r in past] == [("02", "label", "span 01")]
    assert "accept_drift" in stopped["failed"]["hint"] and stopped["train"] is None

    # (with accept_drift the same validation passes: tests/test_validate.py; the distances
    # reach the training's MLflow run: the first test of this file)


def test_a_refused_training_is_skipped_only_under_the_same_judgement(tmp_path: Path) -> None:
    """Another model name, gate setting or champion is judged anew."""
    from flows.train_imagenet import judged_as, refused_before

    config = preset("smoke")
    made_of = {"spans_identity": "I", "train_settings": "S", "code_version": "C"}
    then = judged_as(made_of, "m", config, "3")
    folder = tmp_path / "runs" / "r1" / "train"
    folder.mkdir(parents=True)
    gate = {"passed": False, "reason": "worse than champion v3"}
    (folder / "gated.json").write_text(
        json.dumps({"flow_run_id": "r1", "gate": gate, "judged_as": then})
    )
    assert "run r1's training of the same" in refused_before(tmp_path, then)
    assert refused_before(tmp_path, judged_as(made_of, "other", config, "3")) is None
    assert refused_before(tmp_path, judged_as(made_of, "m", config, "4")) is None
    allowed = resolve_config("smoke", Overrides(allow_label_change=True))
    assert refused_before(tmp_path, judged_as(made_of, "m", allowed, "3")) is None
    assert refused_before(tmp_path, judged_as({**made_of, "code_version": "D"}, "m", config,
                                              "3")) is None  # fmt: skip
