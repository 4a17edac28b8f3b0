"""The user's way, end to end: a real Prefect server, worker and MLflow server from infra/stack.sh,
`prefect deployment run train-imagenet/demo`, and a registered champion. Separate homes and free
ports, so a stack the user has running is never touched."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def test_deployment_run_registers_a_champion(class_folders: Path, tmp_path: Path) -> None:
    prefect_port, mlflow_port = free_port(), free_port()
    state = tmp_path / "stack"
    env = {
        **os.environ,
        "TRICKFLOW_HOME": str(state),
        "PREFECT_PORT": str(prefect_port),
        "MLFLOW_PORT": str(mlflow_port),
        "TRICKFLOW_POOL": f"e2e-{prefect_port}",
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_HOME": str(state / "prefect"),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    stack = str(REPO / "infra" / "stack.sh")
    try:
        run([stack, "start"], env, 300)
        run([stack, "deploy"], env, 180)
        work = tmp_path / "work"
        result = run(
            [
                str(REPO / ".venv" / "bin" / "prefect"),
                "deployment",
                "run",
                "train-imagenet/demo",
                "-p",
                "preset=smoke",
                "-p",
                f"data_dir={class_folders}",
                "-p",
                f"work_dir={work}",
                "--watch",
            ],
            env,
            600,
        )
        assert "Completed" in result.stdout
        (report_path,) = (work / "runs").glob("*/report.json")
        report = json.loads(report_path.read_text())
        assert report["registry"]["version"] == "1" and report["gate"]["passed"]
        assert report["registry"]["tracking_uri"] == f"http://127.0.0.1:{mlflow_port}"

        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"http://127.0.0.1:{mlflow_port}")
        champion = client.get_model_version_by_alias(report["registry"]["model_name"], "champion")
        assert str(champion.version) == "1"
        assert champion.tags["flow_run_id"] == report["flow_run_id"]
    finally:
        pids = [int(p.read_text()) for p in (state / "run").glob("*.pid")]
        stopped = subprocess.run(
            [stack, "stop"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert stopped.returncode == 0, stopped.stderr
        for pid in pids:  # stopping must leave nothing behind (a zombie awaiting init is gone)
            status = subprocess.run(
                ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True
            ).stdout.strip()
            assert status in ("",) or status.startswith("Z"), f"pid {pid} still running"
