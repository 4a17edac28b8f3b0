"""The shape a team runs, on this machine: Prefect and MLflow on PostgreSQL, a CPU pool for
ingestion, validation, evaluation and the gate and a GPU pool that only trains (its own
deployment, at most one training at a time here), three pipeline runs started at once, every
link of a run's summary opened by a headless browser over HTTP, as from another machine, and
both pools' machines killed mid-training, then resumed.

`make test-cluster` runs it (`.ci/run` too); it needs Debian's chromium (.ci/run installs it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, Browser
from tests.conftest import make_class_folders, reachable_folder
from tests.test_e2e import (
    _kill_flow_runs_once_one_checkpoints,
    _state_of,
    free_port,
    run,
    stack_credentials,
    stack_env,
)

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python")

# What the stack's server knows of each pipeline run and its training run.
_RUNS = """
import json, sys
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter, FlowRunFilterParentFlowRunId, TaskRunFilter, TaskRunFilterFlowRunId)
out = {}
with get_client(sync_client=True) as client:
    for parent_id in sys.argv[1:]:
        parent = client.read_flow_run(parent_id)
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])))
        tasks = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[parent.id])))
        summary = [a for a in client.read_artifacts(limit=50) if a.key == "run-summary"
                   and str(a.flow_run_id) == parent_id]
        out[parent_id] = {
            "state": parent.state.name, "final": parent.state.is_final(),
            "pool": parent.work_pool_name,
            "validated": max((str(t.end_time) for t in tasks
                              if t.name.startswith("validate") and t.end_time), default=None),
            "summary": summary[0].data if summary else None,
            "trainings": [{
                "id": str(c.id), "state": c.state.name, "pool": c.work_pool_name,
                "start": str(c.start_time), "end": str(c.end_time),
                "states": [s.name for s in client.read_flow_run_states(c.id)],
            } for c in children],
        }
print(json.dumps(out))
"""


def _tables(server: str, database: str) -> set[str]:
    import psycopg2

    with psycopg2.connect(f"{server}/{database}", connect_timeout=10) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT table_name FROM information_schema.tables "
                           "WHERE table_schema = 'public'")  # fmt: skip
            return {row[0] for row in cursor.fetchall()}


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_two_pools_on_postgres_queue_trainings_and_serve_every_page(tmp_path: Path) -> None:
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: apt-get install chromium"
    pg_port = free_port()
    state = tmp_path / "stack"
    reachable = reachable_folder()
    pg = reachable / "postgres"
    env = stack_env(state, TRICKFLOW_DB="postgres", TRICKFLOW_PG_PORT=str(pg_port),
                    TRICKFLOW_PG_DATA=str(pg), TRICKFLOW_GPU_WORKERS="1")  # fmt: skip
    cpu, gpu = env["TRICKFLOW_POOL"], env["TRICKFLOW_GPU_POOL"]
    mlflow_port = int(env["MLFLOW_PORT"])
    stack = str(REPO / "infra" / "stack.sh")
    prefect = str(REPO / ".venv" / "bin" / "prefect")
    try:
        run([stack, "start"], env, 300)
        assert "at most 1 training(s) at once" in run([stack, "deploy"], env, 240).stdout
        # Both servers keep their state in PostgreSQL.
        password = (pg / "password").read_text().strip()
        server = f"postgresql://trickflow:{password}@127.0.0.1:{pg_port}"
        assert {"flow_run", "deployment", "work_pool"} <= _tables(server, "trickflow_prefect")
        assert {"runs", "registered_models"} <= _tables(server, "trickflow_mlflow")
        assert "users" in _tables(server, "trickflow_mlflow_auth")
        # No stack process holds a secret in its arguments; the database server (started
        # through runuser, which passes the environment on) holds none of the clients'.
        from tests.test_e2e import _stack_keeps_its_secrets

        secrets = stack_credentials(state)
        _stack_keeps_its_secrets(state, secrets)
        import psutil

        database = [p for p in psutil.process_iter(["cmdline"])
                    if str(pg / "data") in " ".join(p.info["cmdline"] or [])]  # fmt: skip
        assert database
        for process in database:
            environ = process.environ()
            assert not {"TRICKFLOW_REGISTRY_KEY", "MLFLOW_TRACKING_PASSWORD"} & set(environ)
            assert password not in " ".join(process.cmdline())

        # Three datasets at once: each pipeline run ingests and validates on the CPU pool at
        # once; their trainings run on the GPU pool one after another.
        work = tmp_path / "work"
        launched = [
            subprocess.Popen(
                [prefect, "deployment", "run", "train-imagenet/demo", "-p", "preset=smoke",
                 "-p", f"data_dir={make_class_folders(tmp_path / name)}",
                 "-p", f"work_dir={work}"],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for name in ("alpha", "beta", "gamma")
        ]  # fmt: skip
        parents = []
        for process in launched:
            output = process.communicate(timeout=120)[0]
            assert process.returncode == 0, output
            parents += re.findall(r"UUID: ([0-9a-f-]{36})", output)
        assert len(parents) == 3
        deadline = time.monotonic() + 900
        while True:
            found = json.loads(run([PYTHON, "-c", _RUNS, *parents], env, 120).stdout)
            if all(r["final"] for r in found.values()):
                break
            assert time.monotonic() < deadline, found
            time.sleep(5)

        trainings = []
        for parent_id, parent in found.items():
            assert parent["state"] == "Completed" and parent["pool"] == cpu, parent
            (training,) = parent["trainings"]
            assert training["state"] == "Completed" and training["pool"] == gpu, training
            trainings.append({**training, "parent": parent_id})
        # Each process ran on its pool's worker: the GPU worker started the trainings only.
        gpu_log = (state / "logs" / "gpu-worker-1.log").read_text()
        cpu_log = (state / "logs" / "worker.log").read_text()
        for training in trainings:
            assert f"submitting flow run '{training['id']}'" in gpu_log
            assert training["id"] not in cpu_log
            assert f"submitting flow run '{training['parent']}'" in cpu_log
            assert training["parent"] not in gpu_log
        # One training at a time, the others queued on the limit ...
        trainings.sort(key=lambda t: _when(t["start"]))
        for before, after in zip(trainings, trainings[1:], strict=False):
            assert _when(before["end"]) <= _when(after["start"]), trainings
        assert any("AwaitingConcurrencySlot" in t["states"] for t in trainings), trainings
        # ... while the last one's pipeline run had validated its data before the first
        # training ended: the limit holds back trainings, not the stages before them.
        last = found[trainings[-1]["parent"]]
        assert _when(last["validated"]) < _when(trainings[0]["end"]), (last, trainings)

        reports = [json.loads(p.read_text()) for p in (work / "runs").glob("*/report.json")]
        assert sorted(r["registry"]["version"] for r in reports) == ["1", "1", "1"]
        assert not list(state.rglob("*.db")), list(state.rglob("*.db"))  # no SQLite anywhere

        # Every link of a run's summary opens in a browser that shares no disk with the stack.
        report = next(r for r in reports if r["flow_run_id"] == trainings[0]["parent"])
        summary = found[report["flow_run_id"]]["summary"]
        urls = re.findall(r"\]\((\S+?)\)", summary)
        mlflow = f"http://127.0.0.1:{mlflow_port}/"
        assert urls and all(url.startswith(mlflow) for url in urls), summary
        links = report["links"]
        assert {"statistics", "evaluation", "curves", "report"} <= set(links)
        assert set(links.values()) - {links["run"]} <= set(urls), (links, urls)
        run_id = report["train"]["mlflow_run_id"]
        credentials = stack_credentials(state)
        local = {  # what the run wrote, by file name
            "statistics.html": Path(report["validate"]["statistics_html"]),
            "evaluation.png": Path(report["evaluate"]["figure"]),
            "report.json": Path(report["report_path"]),
        }
        shots = tmp_path / "screenshots"
        shots.mkdir()
        with Browser(
            credentials["MLFLOW_TRACKING_USERNAME"], credentials["MLFLOW_TRACKING_PASSWORD"]
        ) as browser:
            for number, url in enumerate(urls):
                shot = shots / f"{number}.png"
                if "/artifactPath/" in url:
                    path = url.split("/artifactPath/", 1)[1]
                    # The run's file view, and the file itself as the page fetches it.
                    fetch = (
                        f"fetch('/get-artifact?path={path}&run_uuid={run_id}')"
                        ".then(r => r.arrayBuffer().then(b => r.status + ' ' + b.byteLength))"
                    )
                    shown = browser.open(url, path, screenshot=shot, then=fetch)
                    size = local[Path(path).name].stat().st_size
                    assert shown["then"] == f"200 {size}", (url, shown)
                elif url.endswith("/model-metrics"):
                    browser.open(url, "loss", screenshot=shot)  # the training's curves
                elif "/models/" in url:
                    browser.open(url, report["registry"]["model_name"], screenshot=shot)
                else:
                    browser.open(url, run_id, screenshot=shot)
        # Without credentials the same pages are refused.
        with Browser() as stranger:
            with pytest.raises(AssertionError, match="HTTP 401"):
                stranger.open(links["report"], "report.json", timeout=10)

        # A flow run SIGKILLed during training, its worker with it (the machine went down): the
        # run is marked Crashed within the heartbeat window; the same deployment run again
        # resumes it.
        params = [
            "-p", "preset=demo", "-p", f"data_dir={tmp_path / 'alpha'}", "-p", f"work_dir={work}",
            "-p", 'overrides={"epochs": 15, "batch_size": 8, "min_top1": 0.0, '
            '"max_regression": 1.0, "max_drop_from_best": 1.0}',
        ]  # fmt: skip
        prefect = str(REPO / ".venv" / "bin" / "prefect")
        done = {p.parent.name for p in (work / "runs").glob("*/report.json")}
        run([prefect, "deployment", "run", "train-imagenet/demo", *params], env, 120)
        killed = _kill_flow_runs_once_one_checkpoints(work, state, done)
        import signal

        for worker in ("worker", "gpu-worker-1"):  # both pools' machines went down
            record = json.loads((state / "run" / f"{worker}.pid").read_text())
            os.kill(record["pid"], signal.SIGKILL)
        killed_at, killed_wall = time.monotonic(), time.time()
        run([stack, "start"], env, 300)  # the machine is back: a new worker
        # The resumed run goes on meanwhile (the killed run's folder lock died with it).
        result = run([prefect, "deployment", "run", "train-imagenet/demo", *params, "--watch"],
                     env, 600)  # fmt: skip
        while (name := _state_of(killed, env))[0] == "Running":
            assert time.monotonic() - killed_at < 240, f"flow run {killed} still Running"
            time.sleep(5)
        assert name[0] == "Crashed", f"flow run {killed} is {name[0]}"
        # within the window after its last heartbeat (sent up to 30 s before the kill)
        assert name[1] - killed_wall <= 90 + 30, f"Crashed {name[1] - killed_wall:.0f} s on"
        assert "Completed" in result.stdout
        reports = [json.loads(p.read_text()) for p in (work / "runs").glob("*/report.json")]
        resumed = [
            r for r in reports if r["flow_run_id"] not in done | {killed} and not r["failed"]
        ]
        assert len(resumed) == 1, resumed
        train = resumed[0]["train"]
        assert train["resumed_from"] > 0 and "resuming the unfinished training" in train["why"]
        assert Path(train["folder"]).parent.name == killed
    finally:
        stopped = subprocess.run(
            [stack, "stop"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
        )
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped PostgreSQL" in stopped.stdout or not (pg / "data").exists()
        shutil.rmtree(reachable, ignore_errors=True)


def test_a_server_given_by_url_is_used_and_never_stopped(postgres_registry, tmp_path) -> None:
    """TRICKFLOW_DB=postgresql://USER:PASSWORD@HOST:PORT: the stack makes its databases on that
    server (the one the fixture started stands in for a team's), starts none of its own, and
    `stop` leaves the server alone."""
    import psycopg2

    server = postgres_registry.rsplit("/", 1)[0].replace("+psycopg2", "")
    env = {**os.environ, "TRICKFLOW_HOME": str(tmp_path / "other"), "TRICKFLOW_DB": server}
    stack = str(REPO / "infra" / "stack.sh")
    printed = run([stack, "db"], env, 120).stdout.strip().splitlines()[-1]
    assert printed == server.replace("postgresql:", "postgresql+psycopg2:") + "/trickflow_mlflow"
    assert not (tmp_path / "other" / "postgres").exists()  # no server of its own
    with psycopg2.connect(f"{server}/postgres", connect_timeout=10) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database")
            names = {row[0] for row in cursor.fetchall()}
    assert {"trickflow_prefect", "trickflow_mlflow", "trickflow_mlflow_auth"} <= names
    # The stack's own server gave its servers a role that is no superuser: its password is no
    # shell as the cluster's owner.
    with psycopg2.connect(f"{server}/postgres", connect_timeout=10) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = user")
            assert cursor.fetchone() == (False, False)
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cursor.execute("COPY (SELECT 1) TO PROGRAM 'true'")
    run([stack, "stop"], env, 120)
    psycopg2.connect(f"{server}/postgres", connect_timeout=10).close()  # still up
    # A server whose MLflow users another stack made: new credentials would lock them out.
    with psycopg2.connect(f"{server}/trickflow_mlflow_auth", connect_timeout=10) as connection:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE users (id integer)")
    third = {**env, "TRICKFLOW_HOME": str(tmp_path / "third")}
    refused = subprocess.run([stack, "db"], cwd=REPO, env=third, capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert refused.returncode != 0 and "has MLflow users already" in refused.stderr
    assert not (tmp_path / "third" / "credentials.env").exists()
    assert run([stack, "db"], env, 120).returncode == 0  # with the credentials that go with it
    broken = {**env, "TRICKFLOW_DB": "postgresql:///nohost"}
    refused = subprocess.run([stack, "db"], cwd=REPO, env=broken, capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert refused.returncode != 0 and "give postgresql://USER:PASSWORD@HOST:PORT" in refused.stderr


def test_a_failed_start_stops_the_postgresql_it_started(tmp_path: Path) -> None:
    """A start that fails after it started its own PostgreSQL (here: the Prefect port answers
    for another server) stops that PostgreSQL again: nothing it began runs on unwatched."""
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    squatter = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=squatter.serve_forever, daemon=True).start()
    reachable = reachable_folder()
    port = squatter.server_address[1]
    pg_port = free_port()
    env = stack_env(tmp_path / "stack", TRICKFLOW_DB="postgres", PREFECT_PORT=str(port),
                    PREFECT_API_URL=f"http://127.0.0.1:{port}/api", TRICKFLOW_PG_PORT=str(pg_port),
                    TRICKFLOW_PG_DATA=str(reachable / "pg"))  # fmt: skip
    stack = str(REPO / "infra" / "stack.sh")
    try:
        failed = subprocess.run([stack, "start"], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=300)  # fmt: skip
        assert failed.returncode != 0 and "not started by this stack" in failed.stderr
        assert "stopping the PostgreSQL it started" in failed.stderr
        assert "starting PostgreSQL" in failed.stdout
        with pytest.raises(OSError):  # stopped: nothing listens on its port
            socket.create_connection(("127.0.0.1", pg_port), 2).close()
    finally:
        squatter.shutdown()
        subprocess.run([stack, "stop"], cwd=REPO, env=env, capture_output=True, timeout=120)
        shutil.rmtree(reachable, ignore_errors=True)
