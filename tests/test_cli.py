"""One convention for every component's command line: --config/--set, where it reads and
writes, exit 0 / 1 (a check said no) / 2 (bad input, broken environment), one-line errors."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from unittest import mock

import pytest
from pydantic import ValidationError

from components import cli
from components.train.config import TrainConfig

COMMANDS = ["ingest", "validate", "train", "evaluate"]
PATHS = {
    "ingest": ["--source", "s", "--output", "o"],
    "validate": ["--data", "d", "--output", "o"],
    "train": ["--data", "d", "--output", "o"],
    "evaluate": ["--data", "d", "--servable", "s", "--output", "o"],
}


def command(name: str):
    return importlib.import_module(f"components.{name}.__main__")


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_takes_config_and_set_and_documents_exit_statuses(name, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        command(name).main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "--config FILE" in out and "--set KEY=VALUE" in out and "Exit status" in out


@pytest.mark.parametrize("name", COMMANDS)
def test_an_unknown_setting_is_exit_2_with_one_line(name, capsys) -> None:
    code = command(name).main([*PATHS[name], "--set", "no_such_setting=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: invalid settings: no_such_setting")


def test_config_file_then_set_with_dotted_keys(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"epochs": 3, "model": "resnet50d"}))
    args = cli.parser("x", "", TrainConfig).parse_args(
        ["--config", str(path), "--set", "epochs=5", "--set", "augment.flip=false"]
    )
    config = cli.load_config(TrainConfig, args)
    assert (config.epochs, config.model, config.augment.flip) == (5, "resnet50d", False)


def test_a_missing_config_file_names_it(tmp_path: Path, capsys) -> None:
    code = command("train").main([*PATHS["train"], "--config", str(tmp_path / "nope.json")])
    assert code == 2 and "nope.json" in capsys.readouterr().err


def test_anomalies_are_exit_1(capsys) -> None:
    from components.validate import ValidationFailed

    anomaly = {"split": "train", "feature": "height", "problem": "out of range", "detail": "x"}
    main = command("validate")
    with mock.patch.object(main, "validate", side_effect=ValidationFailed([anomaly])):
        code = main.main(PATHS["validate"])
    err = capsys.readouterr().err
    assert code == 1 and "check failed: 1 data anomalies" in err and "reading d; writing o" in err


def test_a_refused_gate_is_exit_1(capsys) -> None:
    main = command("evaluate")
    metrics = {"top1": 0.1, "top5": 0.5, "count": 10}
    refused = {"gate": {"passed": False, "reason": "top-1 0.1000 is below the floor 0.5000"}}
    with (
        mock.patch.object(main, "evaluate", return_value=metrics),
        mock.patch.object(main, "gate_and_register", return_value=refused),
    ):
        code = main.main([*PATHS["evaluate"], "--model-name", "m", "--set", "min_top1=0.5"])
    assert code == 1 and "the gate refused the model: top-1 0.1000" in capsys.readouterr().err


def test_settings_apply_dotted_keys_to_the_validated_model() -> None:
    from components import settings
    from components.train.config import TrainConfig

    changed = settings.apply(TrainConfig(), {"epochs": 3, "augment.flip": False})
    assert changed.epochs == 3 and changed.augment.flip is False
    assert TrainConfig().augment.flip is True  # the original is untouched
    with pytest.raises(ValidationError, match="epoch"):
        settings.apply(TrainConfig(), {"epoch": 3})  # a typo is refused by the model
    with pytest.raises(ValidationError, match="epochs"):
        settings.apply(TrainConfig(), {"epochs": 0})
    with pytest.raises(ValueError, match="epochs is a value, not a group"):
        settings.apply(TrainConfig(), {"epochs.x": 1})


def test_follow_exits_1_only_when_a_check_said_no() -> None:
    from flows.follow import exit_status, summary

    def report(**fields) -> dict:
        return {"failed": None, "gate": None, "validate": None, "report_path": "r", **fields}

    crash = {"stage": "validate", "reason": "RuntimeError: TFDV failed", "hint": ""}
    anomalies = {"passed": False, "anomalies": []}
    assert exit_status(True, report(failed=crash)) == 2  # a crash in the stage is no verdict
    assert exit_status(True, report(failed=crash, validate=anomalies)) == 1
    assert exit_status(True, report(gate={"passed": False, "reason": "x"})) == 1
    assert exit_status(True, report(gate={"passed": True, "reason": "x"})) == 0
    assert exit_status(True, None) == 2
    kept = report(registry={"model_name": "m", "version": "4", "alias": None})
    assert "registered: m v4 (not champion)" in summary(kept)
    skipped = report(decision={"train": False, "reason": "nothing new since champion v3"})
    assert exit_status(True, skipped) == 0  # nothing to judge is no refusal
    assert "skip: nothing new since champion v3" in " ".join(summary(skipped))
    drift = [{"span": "02", "kind": "drift", "against": "span 01", "feature": "label",
              "measure": "L-infinity", "threshold": 0.1, "value": 0.66,
              "drifted": True}]  # fmt: skip
    drifted = report(failed={"stage": "validate", "reason": "DriftDetected: 1", "hint": "h"},
                     validate=anomalies, drift=drift)  # fmt: skip
    assert exit_status(True, drifted) == 1
    assert any(line.split() == ["02", "label", "L-infinity", "0.1", "0.66"]
               for line in summary(drifted))  # fmt: skip


def test_the_summaries_link_the_pages_over_http_when_the_server_took_them() -> None:
    from unittest import mock

    from flows import artifacts
    from flows.follow import summary

    local = {"failed": None, "gate": None, "report_path": "/w/runs/r/report.json",
             "validate": {"passed": True, "anomalies": [],
                          "statistics_html": "/w/runs/r/validation/statistics.html"},
             "train": {"folder": "/w/runs/r/train", "steps": 3, "precision": "float32",
                       "resumed_from": 0}}  # fmt: skip
    lines = summary(local)
    assert "statistics: /w/runs/r/validation/statistics.html" in lines
    assert "curves:     make tensorboard LOGDIR=/w/runs/r/train/tensorboard" in lines
    run = "http://mlflow:5000/#/experiments/1/runs/R"
    links = {"run": run, "statistics": f"{run}/artifactPath/data/statistics.html",
             "evaluation": f"{run}/artifactPath/evaluation.png",
             "curves": f"{run}/model-metrics",
             "report": f"{run}/artifactPath/report.json"}  # fmt: skip
    lines = summary({**local, "links": links})
    for name in ("statistics:", "evaluation:", "curves:    ", "report:    "):
        (line,) = [line for line in lines if line.startswith(name)]
        assert line.split()[-1].startswith("http://mlflow:5000/#/experiments/1/runs/R"), line
    with mock.patch.object(artifacts, "create_markdown_artifact") as published:
        artifacts.publish_summary({**local, "links": links}, "http://mlflow:5000")
    text = published.call_args.args[0]
    assert "file://" not in text and f"[open]({links['statistics']})" in text
    assert f"Training curves: [open]({links['curves']})" in text


def test_follow_prints_each_line_once_even_when_one_arrives_late() -> None:
    """The worker's and the flow run's processes ship their log batches apart: a line stamped
    earlier can reach the server after later ones. It is printed once, none skipped; the
    training's subflow run's lines are followed too."""
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace
    from unittest import mock
    from uuid import uuid4

    from flows import follow as module

    start = datetime(2026, 12, 1, tzinfo=UTC)
    ids = {"parent": uuid4(), "child": uuid4()}

    def line(number: int, run: str):
        stamp = start + timedelta(seconds=number)
        return SimpleNamespace(id=f"{run}{number}", level=20, message=f"line {number} of {run}",
                               timestamp=stamp)  # fmt: skip

    server = {"parent": [line(1, "parent"), line(3, "parent")], "child": [line(2, "child")]}
    arriving = [[], [line(0, "parent")], [line(4, "child")]]  # one batch per poll
    polls = []

    class Client:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read_flow_run(self, flow_run_id):
            polls.append(1)
            for record in arriving.pop(0) if arriving else []:
                server["parent" if record.id.startswith("parent") else "child"].append(record)
            done = not arriving and len(polls) > 3
            state = SimpleNamespace(is_final=lambda: done, name="Completed")
            return SimpleNamespace(state=state)

        def read_flow_runs(self, flow_run_filter):
            return [SimpleNamespace(id=ids["child"])]

        def read_logs(self, log_filter, sort, offset):
            (run,) = log_filter.flow_run_id.any_
            records = sorted(server["parent" if run == ids["parent"] else "child"],
                             key=lambda r: r.timestamp)  # fmt: skip
            return records[offset:]

    out = []
    with mock.patch.object(module, "get_client", lambda sync_client: Client()):
        module.follow(ids["parent"], out=out.append, poll=0, settle=0, grace=0)
    texts = [text.split("  ", 1)[1] for text in out]
    lines = [(0, "parent"), (1, "parent"), (2, "child"), (3, "parent"), (4, "child")]
    expected = {f"line {n} of {r}" for n, r in lines}
    assert sorted(texts) == sorted(expected) and len(texts) == len(expected), texts


def test_two_runs_choosing_a_training_folder_take_turns(tmp_path: Path) -> None:
    import threading
    import time

    from flows.folders import choosing

    order = []

    def second() -> None:
        with choosing(tmp_path):
            order.append("second")

    with choosing(tmp_path):
        other = threading.Thread(target=second)
        other.start()
        time.sleep(0.3)
        order.append("first")
    other.join(timeout=10)
    assert order == ["first", "second"]


def test_failed_runs_are_posted_with_their_stage_and_reason() -> None:
    from uuid import uuid4

    from prefect.events.schemas.automations import Posture

    from flows.automations import failure_automation

    automation = failure_automation(uuid4())
    trigger = automation.trigger
    assert trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert trigger.posture == Posture.Reactive and trigger.threshold == 1
    assert trigger.match_related.root["prefect.resource.name"] == "train-imagenet"
    (action,) = automation.actions
    # "validate failed: ... (what to do)", rendered as the server renders it: what came from
    # data (a class folder named `<!channel>`, a link in Slack's format) stays text.
    from types import SimpleNamespace

    from prefect.server.utilities.user_templates import render_user_template_sync

    message = "validate failed: class <!channel> and <https://x.example|sign in> & more"
    run = SimpleNamespace(name="quiet-fox", id="r1",
                          state=SimpleNamespace(name="Failed", message=message))  # fmt: skip
    body = render_user_template_sync(
        action.body, {"flow_run": run, "deployment": SimpleNamespace(name="demo")}
    )
    assert body == (
        "quiet-fox (demo) ended Failed: validate failed: class &lt;!channel&gt; and "
        "&lt;https://x.example|sign in&gt; &amp; more\nflow run id: r1"
    )


def test_watch_announces_each_complete_span_once(tmp_path, monkeypatch) -> None:
    from components import spans
    from flows import watch

    sent = []
    monkeypatch.setattr(watch, "announce", lambda *args: sent.append(args))
    data = tmp_path / "data"
    state = tmp_path / "state.json"
    assert watch.look(str(data), "f/d", {}, state) == []  # no spans/ yet
    for name in ("2026-11-23", "2026-11-30", "2026-12-07"):
        (data / "spans" / name).mkdir(parents=True)
    for name in ("2026-11-23", "2026-11-30"):
        (data / "spans" / name / "_SUCCESS").write_text("")
    assert watch.look(str(data), "f/d", {"preset": "smoke"}, state) == ["2026-11-23", "2026-11-30"]
    assert sent == [(str(data), "f/d", ["2026-11-23", "2026-11-30"], {"preset": "smoke"})]
    assert watch.look(str(data), "f/d", {}, state) == []  # announced already; 12-07 incomplete
    (data / "spans" / "2026-12-07" / "_SUCCESS").write_text("")
    assert watch.look(str(data), "f/d", {}, state) == ["2026-12-07"] and len(sent) == 2
    # The marker copied first (rsync sorts _SUCCESS before the images): a file newer than the
    # marker keeps the span unannounced; marked again once whole, it is announced again (its
    # content changed), and not once more after that.
    import os

    late = data / "spans" / "2026-11-30" / "late.JPEG"
    late.write_bytes(b"x")
    marker = data / "spans" / "2026-11-30" / "_SUCCESS"
    os.utime(marker, ns=(late.stat().st_mtime_ns - 10**9,) * 2)
    assert watch.look(str(data), "f/d", {}, state) == []
    assert "newer than its _SUCCESS marker" in " ".join(spans.source_spans(str(data))[1])
    os.utime(marker, ns=(late.stat().st_mtime_ns + 10**9,) * 2)
    assert watch.look(str(data), "f/d", {}, state) == ["2026-11-30"] and len(sent) == 3
    assert watch.look(str(data), "f/d", {}, state) == []


def test_the_zombie_automation_crashes_a_run_silent_for_its_window() -> None:
    from prefect.client.schemas.objects import StateType
    from prefect.events.schemas.automations import Posture

    from flows.automations import zombie_automation

    automation = zombie_automation(90)
    trigger = automation.trigger
    assert trigger.posture == Posture.Proactive and trigger.within.total_seconds() == 90
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.Completed", "prefect.flow-run.Failed"} <= trigger.expect
    assert trigger.for_each == {"prefect.resource.id"}  # each run on its own
    (action,) = automation.actions
    assert action.state == StateType.CRASHED and "90 s" in action.message


def test_credentials_are_redacted_by_name_and_inside_values() -> None:
    from components.masking import redacted

    args = [
        "--runner=DaskRunner",
        "--s3_secret_access_key=S3SECRET",
        "--aws_access_key_id", "AKIAKEY",
        "--azure_connection_string=AccountName=a;AccountKey=AZKEY;Endpoint=x",
        "--dask_client_address=tcp://10.0.0.5:8786",
        "--x=https://bob:hunter2@host/path?sig=SIGVALUE&sv=1",
    ]  # fmt: skip
    config = {"ingest": {"beam_args": args, "max_side": None}, "api_token": "TOKEN", "epochs": 3}
    shown = str(redacted(config))
    for secret in ("S3SECRET", "AKIAKEY", "AZKEY", "hunter2", "SIGVALUE", "TOKEN"):
        assert secret not in shown
    assert "--runner=DaskRunner" in shown and "tcp://10.0.0.5:8786" in shown  # the rest stays
    assert "https://bob:***@host" in shown and "'epochs': 3" in shown
    assert args[1] == "--s3_secret_access_key=S3SECRET"  # the run itself keeps the real value


@pytest.mark.parametrize(
    ("spelled", "secret", "kept"),
    [
        (["--s3_secret_access_key", "-starts/with+dash"], "-starts/with+dash", "--s3_secret"),
        (['--environment_config={"env": {"AWS_SECRET_ACCESS_KEY": "JSONSECRET1"}}'],
         "JSONSECRET1", "AWS_SECRET_ACCESS_KEY"),
        (["--input=s3a://AKIAKEY:SEC/RET+1@bucket/train"], "SEC/RET+1", "@bucket/train"),
        (["https://u:pa55@word@host/x"], "pa55@word", "https://u:***@host/x"),
        (["https://b.s3.amazonaws.com/x?X-Amz-Security-Token=STS0TOKEN&a=1"], "STS0TOKEN", "a=1"),
        (["https://h.example/feed?token=QTOKEN42"], "QTOKEN42", "h.example/feed"),
    ],
)  # fmt: skip
def test_credentials_are_masked_however_they_are_spelled(
    spelled: list[str], secret: str, kept: str
) -> None:
    from components.masking import mask, redacted

    shown = " ".join(redacted(spelled))
    assert secret not in shown and kept in shown
    # Found once, masked wherever it shows up again (an error quoting it, another option).
    assert mask(f"connection refused for {secret}") == "connection refused for ***"


def test_log_records_and_reports_never_hold_a_registered_secret(monkeypatch) -> None:
    """The secrets of the process's environment (the registry key, the tracking password) and
    those found in settings are masked in every log record, its traceback and the report."""
    import io
    import logging

    from components import masking
    from flows.report import RunReport

    monkeypatch.setenv("TRICKFLOW_REGISTRY_KEY", "registry-key-0123456789")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")  # where a credential is: not one
    masking.install()
    stream = io.StringIO()
    logger = logging.getLogger("trickflow.test.masking")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        logger.warning("key %s; socket %s", "registry-key-0123456789", "/tmp/agent.sock")
        try:
            raise RuntimeError("postgresql://trickflow:pg-pass-42@127.0.0.1:5432/x failed")
        except RuntimeError:
            logger.exception("start failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "registry-key-0123456789" not in text and "pg-pass-42" not in text
    assert "key ***; socket /tmp/agent.sock" in text and "trickflow:***@127.0.0.1" in text
    report = RunReport(flow_run_id="r", preset="demo", report_path="/x/report.json",
                       data_dir="s3a://AKIA:DATA/SECRET9@bucket/data")  # fmt: skip
    report.failed = {"stage": "ingest", "reason": "cannot read DATA/SECRET9", "hint": ""}
    assert "DATA/SECRET9" not in str(report.as_dict())


def test_a_training_run_elsewhere_never_gets_a_credential_as_a_parameter() -> None:
    from components.train import TrainConfig
    from flows.train_imagenet import training_parameters

    tracking = {"experiment": "e", "params": {"epochs": 1}, "tags": {}, "metrics": {}}
    assert training_parameters("train-model/gpu", "/data", "/out", TrainConfig(), tracking)
    with pytest.raises(ValueError, match=r"\(data\) hold a credential.*Prefect parameters"):
        training_parameters(
            "train-model/gpu", "s3a://AKIA:TRAINSECRET@b/d", "/out", TrainConfig(), tracking
        )


def test_spans_completing_one_after_another_are_announced_once_settled() -> None:
    from flows.watch import settled

    pending, ready = settled({"a"}, None, 0.0, 60)  # a completes: wait
    assert not ready
    pending, ready = settled({"a", "b"}, pending, 30.0, 60)  # b too: the wait starts again
    assert not ready
    pending, ready = settled({"a", "b"}, pending, 80.0, 60)
    assert not ready
    pending, ready = settled({"a", "b"}, pending, 90.0, 60)  # 60 s unchanged: one announcement
    assert ready and pending is None
    assert settled(set(), None, 100.0, 60) == (None, False)


def test_follow_runs_the_deployment_as_deployed_and_finds_its_report(monkeypatch, capsys) -> None:
    """No `-p` is required: the deployment's own parameters run (the server merges `-p` over
    them), and a relative work_dir is read from where the deployment's pull step runs flows."""
    from types import SimpleNamespace

    from flows import follow as module

    started = {}
    flow_run = SimpleNamespace(
        id="abc", name="quiet-fox", deployment_id="d1",
        parameters={"data_dir": ".trickflow/demo-data", "work_dir": ".trickflow/work"},
    )  # fmt: skip

    def run_deployment(name, parameters, timeout):
        started.update(name=name, parameters=parameters)
        return flow_run

    steps = [{"prefect.deployments.steps.set_working_directory": {"directory": "/srv/repo"}}]

    class Client:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read_deployment_by_name(self, name):
            assert name == "train-imagenet/demo" and not started  # read before the run starts
            return SimpleNamespace(pull_steps=steps)

    final = SimpleNamespace(name="Completed", message=None, is_crashed=lambda: False,
                            is_completed=lambda: True)  # fmt: skip
    monkeypatch.setattr(module, "run_deployment", run_deployment)
    monkeypatch.setattr(module, "get_client", lambda sync_client: Client())
    monkeypatch.setattr(module, "follow", lambda run_id, out: final)
    assert module.main(["train-imagenet/demo"]) == 2  # no report there: said, not a usage error
    assert started == {"name": "train-imagenet/demo", "parameters": {}}
    assert "no report at /srv/repo/.trickflow/work/runs/abc/report.json" in capsys.readouterr().err
    flow_run.parameters["work_dir"] = "/their/work"
    assert module.report_path(flow_run, steps) == Path("/their/work/runs/abc/report.json")


def test_the_webhook_url_is_a_secret_of_its_block(prefect_server) -> None:
    """A Slack webhook URL is the credential to post to the channel: the block keeps it as a
    secret (what the API shows every user is masked), and the post still goes to it."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    from flows.automations import NOTIFY_BLOCK, ensure_notifications

    url = "https://hooks.slack.example/services/T000/B000/WEBHOOKSECRET"
    ensure_notifications(url)
    with get_client(sync_client=True) as client:
        shown = client.read_block_document_by_name(
            NOTIFY_BLOCK, "custom-webhook", include_secrets=False
        )
    assert "WEBHOOKSECRET" not in json.dumps(shown.data, default=str)
    block = CustomWebhookNotificationBlock.load(NOTIFY_BLOCK)
    assert block._build_request_args("body", "subject")["url"] == url


def test_ordinary_words_after_a_credential_like_name_do_not_vanish_from_every_log() -> None:
    """A setting named like a credential masks its own value there, but a plain word is not
    registered: `filename` and `serving_default` still read as themselves elsewhere; names
    that only contain the letters (keyframes, monkey, author) mask nothing. Printed argument
    lists and dicts are masked too."""
    from components.masking import mask, redacted

    assert mask("sort_key=filename") == "sort_key=***"
    assert (
        mask("wrote the filename and serving_default") == "wrote the filename and serving_default"
    )
    for text in ("spans keyframes-01=abc123def456", "monkey=bananas1", "author=JohnSmith"):
        assert mask(text) == text
    assert mask("--s3_secret_access_key SECRETx9 --runner=Direct") == (
        "--s3_secret_access_key *** --runner=Direct"
    )
    assert mask("{'aws_secret_access_key': 'Xyz12345'}") == "{'aws_secret_access_key': '***'}"
    assert redacted(['--environment_config={"a":1}']) == ['--environment_config={"a":1}']
