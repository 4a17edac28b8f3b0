"""The user's way, end to end: a real Prefect server, worker and MLflow server from infra/stack.sh,
`python -m flows.follow train-imagenet/demo` (and `prefect deployment run`), a registered
champion; a missing folder, a refused model and anomalous data, each saying why; and a stop
that ends what the workers started. Separate homes and free ports, so a stack the user has
running is never touched. (The same stack on PostgreSQL, runs at once, a killed machine and
the pages in a browser: tests/test_cluster.py.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from components.ingest.images import to_stored_image
from components.ingest.records import make_example, tfrecord_frame
from tests.conftest import jpeg_bytes, make_class_folders, pattern_image

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_env(state: Path, **settings: str) -> dict:
    """The environment of a stack of its own in `state` on free ports (TRICKFLOW_* and other
    `settings` added), without the caller's tracking or Prefect credentials."""
    prefect_port, mlflow_port = free_port(), free_port()
    env = {
        **os.environ,
        "TRICKFLOW_HOME": str(state),
        "PREFECT_PORT": str(prefect_port),
        "MLFLOW_PORT": str(mlflow_port),
        "TRICKFLOW_POOL": f"cpu-{prefect_port}",
        "TRICKFLOW_GPU_POOL": f"gpu-{prefect_port}",
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_PROFILES_PATH": str(state / "prefect" / "profiles.toml"),
        "TRICKFLOW_HEARTBEAT_WINDOW": "90",  # heartbeats every 30 s
        **settings,
    }
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "PREFECT_API_AUTH_STRING"):  # fmt: skip
        env.pop(name, None)
    return env


def stack_credentials(state: Path) -> dict:
    """The client credentials the stack in `state` made (its credentials.env)."""
    return dict(line.split("=", 1) for line in (state / "credentials.env").read_text().splitlines())


def run(cmd: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def _kill_flow_runs_once_one_checkpoints(
    work: Path, home: Path, done_runs: set[str], timeout: float = 400
) -> str:
    """Waits for a training checkpoint of a flow run not in `done_runs`, then SIGKILLs every
    flow-run process of the stack in `home` (as a machine going down would: the pipeline's run
    on the CPU pool and its training on the GPU pool), and returns the pipeline run's id."""
    import signal
    import time

    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for marker in (work / "runs").glob("*/train/checkpoints/ckpt-*.npz"):
            run_id = marker.parent.parent.parent.name
            if run_id in done_runs:
                continue
            processes = _flow_run_processes(home)
            ids = {p.environ().get("PREFECT__FLOW_RUN_ID") for p in processes}
            assert run_id in ids and len(ids) == 2, ids  # the pipeline and its training run
            tree = [m for p in processes for m in [p, *p.children(recursive=True)]]
            for member in tree:
                member.send_signal(signal.SIGKILL)
            _, alive = psutil.wait_procs(tree, timeout=30)
            assert not alive, alive
            return run_id
        time.sleep(0.2)
    raise AssertionError("the flow run never checkpointed")


def _state_of(flow_run_id: str, env: dict) -> tuple[str, float]:
    """The flow run's state name and when it was entered (epoch seconds), asked of the stack's
    server with its credentials."""
    code = (
        "import sys; from prefect import get_client\n"
        "with get_client(sync_client=True) as c:\n"
        "    s = c.read_flow_run(sys.argv[1]).state\n"
        "    print(s.name, s.timestamp.timestamp())"
    )
    python = str(REPO / ".venv" / "bin" / "python")
    name, stamp = run([python, "-c", code, flow_run_id], env, 60).stdout.split()[-2:]
    return name, float(stamp)


def _refused_without_credentials(url: str, method: str = "GET") -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=b"{}" if method == "POST" else None, method=method,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        return urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as err:
        return err.code


class _Webhook:
    """A local stand-in for a Slack incoming webhook: keeps the JSON bodies posted to it."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, text: str, timeout: float = 90) -> str:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.received:
                if text in message.get("text", ""):
                    return message["text"]
            time.sleep(1)
        raise AssertionError(f"no notification with {text!r}; received {self.received}")


def _runs_of(deployment: str, env: dict) -> list[str]:
    """Ids of the flow runs of `deployment` (FLOW/NAME) on the stack's server."""
    code = (
        "import sys; from prefect import get_client\n"
        "from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId\n"
        "with get_client(sync_client=True) as c:\n"
        "    d = c.read_deployment_by_name(sys.argv[1])\n"
        "    runs = c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId("
        "any_=[d.id])))\n"
        "    print(' '.join(str(r.id) for r in runs))"
    )
    python = str(REPO / ".venv" / "bin" / "python")
    return run([python, "-c", code, deployment], env, 60).stdout.split()


def _flow_run_processes(home: Path) -> list:
    """Processes of flow runs that the stack in `home` started."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            environ = process.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        ours = environ.get("TRICKFLOW_HOME") == os.path.realpath(home)  # as stack.sh names it
        if environ.get("PREFECT__FLOW_RUN_ID") and ours:
            found.append(process)
    return found


def _checkout_of(state: Path, prefect_port: int) -> Path:
    """A folder laid out as the checkout is for its own stack: the repository's prefect.toml
    (its port changed to this stack's) and `.trickflow/prefect/profiles.toml` where the stack
    in `state` wrote its profile."""
    checkout = state.parent / "checkout"
    (checkout / ".trickflow").mkdir(parents=True)
    text = (REPO / "prefect.toml").read_text()
    assert "127.0.0.1:4200" in text and "port = 4200" in text
    text = text.replace("127.0.0.1:4200", f"127.0.0.1:{prefect_port}")
    (checkout / "prefect.toml").write_text(text.replace("port = 4200", f"port = {prefect_port}"))
    (checkout / ".trickflow" / "prefect").symlink_to(state / "prefect")
    return checkout


def _stack_keeps_its_secrets(state: Path, secrets: dict) -> None:
    """Every file and folder under the stack's home is its owner's alone; no process of the
    stack holds a secret in its arguments (which every local user can read), and the servers'
    environments do not hold the registry key, which only the clients that seal models need."""
    import psutil

    opened = [
        f"{path} {oct(path.stat().st_mode & 0o777)}"
        for path in [state, *state.rglob("*")]
        if not path.is_symlink() and path.stat().st_mode & 0o077
    ]
    assert not opened, opened
    values = {v for k, v in secrets.items() if "PASSWORD" in k or "KEY" in k or "AUTH" in k}
    ours = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("TRICKFLOW_HOME") == os.path.realpath(state):
                ours.append((process.cmdline(), process.environ()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    assert len(ours) >= 4, ours  # two servers, two workers (and their children)
    for cmdline, environ in ours:
        argv = " ".join(cmdline)
        assert not [v for v in values if v in argv], f"a secret in the arguments of {argv}"
        if " server " in f" {argv} ":
            assert "TRICKFLOW_REGISTRY_KEY" not in environ, argv


def test_deployment_run_registers_a_champion(
    class_folders: Path, tmp_path: Path, monkeypatch
) -> None:
    state = tmp_path / "stack"
    webhook = _Webhook()
    env = stack_env(state, TRICKFLOW_NOTIFY_URL=webhook.url)  # failures are posted there
    prefect_port, mlflow_port = int(env["PREFECT_PORT"]), int(env["MLFLOW_PORT"])
    stack = str(REPO / "infra" / "stack.sh")
    python = str(REPO / ".venv" / "bin" / "python")
    try:
        run([stack, "start"], env, 300)
        run([stack, "deploy"], env, 180)
        # Locks on the doors: credentials made on first start, 0600; both servers refuse a
        # request without them; a second stack never adopts servers it did not start.
        credentials = state / "credentials.env"
        assert credentials.stat().st_mode & 0o777 == 0o600
        secrets = stack_credentials(state)
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            monkeypatch.setenv(name, secrets[name])  # this test's own MLflow client
        prefect_api, mlflow_api = (
            f"http://127.0.0.1:{prefect_port}/api",
            f"http://127.0.0.1:{mlflow_port}",
        )
        assert _refused_without_credentials(f"{prefect_api}/flows/filter", "POST") == 401
        assert (
            _refused_without_credentials(
                f"{mlflow_api}/api/2.0/mlflow/experiments/search?max_results=1"
            )
            == 401
        )
        other = tmp_path / "other"
        intruder = {**env, "TRICKFLOW_HOME": str(other), "PREFECT_HOME": str(other / "prefect"),
                    "PREFECT_PROFILES_PATH": str(other / "prefect" / "profiles.toml")}  # fmt: skip
        adopted = subprocess.run(
            [stack, "start"], cwd=REPO, env=intruder, capture_output=True, text=True, timeout=120
        )
        assert adopted.returncode != 0 and "was not started by this stack" in adopted.stderr
        _stack_keeps_its_secrets(state, secrets)
        work = tmp_path / "work"
        follow = [python, "-m", "flows.follow", "train-imagenet/demo", "-p", f"work_dir={work}"]
        # As a user types it: from a checkout's root with nothing exported (no PREFECT_* or
        # MLFLOW_* at all), the CLI and flows.follow find the stack's credentials in the
        # profile that prefect.toml names.
        checkout = _checkout_of(state, prefect_port)
        bare = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
        prefect = str(REPO / ".venv" / "bin" / "prefect")
        listed = subprocess.run([prefect, "deployment", "ls"], cwd=checkout, env=bare,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert listed.returncode == 0 and "train-imagenet/demo" in listed.stdout, (
            listed.stdout[-2000:] + listed.stderr[-2000:]
        )
        result = subprocess.run(
            [*follow, "-p", "preset=smoke", "-p", f"data_dir={class_folders}"],
            cwd=checkout, env=bare, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        # What a person reads: the work's own lines and the summary, no raw event stream.
        assert "Steps:2, LR:" in result.stdout and "flow run ended: Completed" in result.stdout
        assert "gate_and_register passed" in " ".join(result.stdout.split())
        # the task's own line, which reaches the server after the run's final state
        assert "gate passed: first model" in result.stdout
        assert "registered: darknet53-src-smoke v1 (@champion)" in result.stdout
        assert "prefect.task-run" not in result.stdout and "prefect.flow-run" not in result.stdout
        (report_path,) = (work / "runs").glob("*/report.json")
        report = json.loads(report_path.read_text())
        assert report["registry"]["version"] == "1" and report["gate"]["passed"]
        assert report["registry"]["tracking_uri"] == f"http://127.0.0.1:{mlflow_port}"

        from mlflow.tracking import MlflowClient

        uri = f"http://127.0.0.1:{mlflow_port}"
        client = MlflowClient(uri, registry_uri=uri)  # not a registry an earlier test set
        champion = client.get_model_version_by_alias(report["registry"]["model_name"], "champion")
        assert str(champion.version) == "1"
        assert champion.tags["flow_run_id"] == report["flow_run_id"]

        # A run that cannot start its work says where and why, and still writes its report.
        failed = subprocess.run(
            [*follow, "-p", f"data_dir={tmp_path / 'nowhere'}"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert failed.returncode == 2, failed.stdout[-3000:] + failed.stderr[-3000:]
        assert "FAILED at data_dir: ValueError: data_dir" in failed.stdout
        assert "what to do:" in failed.stdout
        assert len(list((work / "runs").glob("*/report.json"))) == 2
        # ... and the failure is posted to the webhook the stack was deployed with.
        posted = webhook.wait_for("data_dir failed")
        assert (
            "(demo) ended Failed:" in posted and "data_dir failed: ValueError: data_dir" in posted
        )

        # Data that arrives starts a run: a complete span is announced by flows.watch, the
        # deployment's trigger runs it (once); a half-copied span (no _SUCCESS) is not read.
        # The span brings a fourth class under the same model name: the gate refuses it.
        import time

        relabelled = tmp_path / "relabelled" / "src"
        make_class_folders(relabelled / "spans" / "01", classes=4)
        (relabelled / "spans" / "01" / "_SUCCESS").write_text("")
        make_class_folders(relabelled / "spans" / "02", classes=4)  # still being copied
        before = set(_runs_of("train-imagenet/demo", env))
        watch = [python, "-m", "flows.watch", str(relabelled), "--deployment",
                 "train-imagenet/demo", "-p", f"work_dir={work}", "-p", "preset=smoke",
                 "--once"]  # fmt: skip
        assert "announced 01" in run(watch, env, 120).stdout
        assert "nothing new" in run(watch, env, 120).stdout  # announced once
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            reports = [json.loads(p.read_text()) for p in (work / "runs").glob("*/report.json")]
            triggered = [r for r in reports if r["data_dir"] == str(relabelled)]
            if triggered:
                break
            time.sleep(2)
        (refused_report,) = triggered
        assert set(_runs_of("train-imagenet/demo", env)) - before == {refused_report["flow_run_id"]}
        assert refused_report["spans"] == ["01"] and refused_report["preset"] == "smoke"
        assert (
            "champion v1 was trained on a different label set" in refused_report["gate"]["reason"]
        )
        assert refused_report["gate"]["passed"] is False and refused_report["failed"] is None
        assert refused_report["registry"]["version"] is None

        # Data that fails validation: a record with a label outside the label set got into the
        # ingested shards; ingestion reuses them (its inputs did not change), validation stops it.
        # (The same spans, settings and code were refused just now: train again anyway.)
        shard = sorted(Path(refused_report["ingest"]["output"]).glob("train-*-of-*"))[0]
        stray = make_example(to_stored_image(jpeg_bytes(pattern_image(0, 0))), 9, "x", "x", [])
        with shard.open("ab") as handle:
            handle.write(tfrecord_frame(stray))
        anomalous = subprocess.run(
            [*follow, "-p", "preset=smoke", "-p", f"data_dir={relabelled}",
             "-p", 'overrides={"retrain": "always"}'],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert anomalous.returncode == 1, anomalous.stdout[-3000:] + anomalous.stderr[-3000:]
        assert "FAILED at validate: ValidationFailed:" in anomalous.stdout
        assert "what to do: the anomaly table says which feature" in anomalous.stdout
        assert "train      label" in anomalous.stdout  # the table's row
        reports = [json.loads(p.read_text()) for p in (work / "runs").glob("*/report.json")]
        (stopped,) = [r for r in reports if (r["failed"] or {}).get("stage") == "validate"]
        assert any(a["feature"] == "label" for a in stopped["validate"]["anomalies"])
        assert stopped["ingest"]["reused"] and stopped["train"] is None
        assert "validate failed: ValidationFailed" in webhook.wait_for("validate failed")

        # (A killed machine's runs, and their resumption: tests/test_cluster.py.)
        import time

        prefect = str(REPO / ".venv" / "bin" / "prefect")
        params = [
            "-p", "preset=demo", "-p", f"data_dir={class_folders}", "-p", f"work_dir={work}",
            "-p", 'overrides={"epochs": 15, "batch_size": 8, "min_top1": 0.0, '
            '"max_regression": 1.0, "max_drop_from_best": 1.0}',
        ]  # fmt: skip
        # `stop` ends the flow runs its workers started, which live in sessions of their own.
        run([prefect, "deployment", "run", "train-imagenet/demo", *params], env, 120)
        deadline = time.monotonic() + 120
        while not _flow_run_processes(state) and time.monotonic() < deadline:
            time.sleep(1)
        in_flight = _flow_run_processes(state)
        assert in_flight, "the flow run never started"
        run([stack, "stop"], env, 120)
        assert not [p for p in in_flight if p.is_running() and p.status() != "zombie"]
    finally:
        pids = [json.loads(p.read_text())["pid"] for p in (state / "run").glob("*.pid")]
        stopped = subprocess.run(
            [stack, "stop"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert stopped.returncode == 0, stopped.stderr
        for pid in pids:  # stopping must leave nothing behind (a zombie awaiting init is gone)
            status = subprocess.run(
                ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True
            ).stdout.strip()
            assert status in ("",) or status.startswith("Z"), f"pid {pid} still running"
