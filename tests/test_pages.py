"""A run's pages go to its MLflow run, and the links it records open them over HTTP (the
browser check is in tests/test_cluster.py); without a tracking server they stay files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.evaluate.registry import Registry
from flows.pages import NO_TRAINING_RUN, publish_pages
from flows.report import RunReport

UI = "http://mlflow.example:5000"


def _run_dir(tmp_path: Path, evaluated: bool = True) -> Path:
    run_dir = tmp_path / "runs" / "abc"
    (run_dir / "validation").mkdir(parents=True)
    (run_dir / "validation" / "statistics.html").write_text("<html>stats</html>")
    if evaluated:
        (run_dir / "evaluation").mkdir()
        (run_dir / "evaluation" / "evaluation.png").write_bytes(b"\x89PNG\r\n")
    return run_dir


def _report(run_dir: Path, **fields) -> RunReport:
    return RunReport(
        flow_run_id="abc",
        preset="smoke",
        data_dir="/data",
        report_path=str(run_dir / "report.json"),
        **fields,
    )


def _artifacts(registry: Registry, run_id: str, folder: str | None = None) -> set[str]:
    found = set()
    for entry in registry.client.list_artifacts(run_id, folder):
        found |= _artifacts(registry, run_id, entry.path) if entry.is_dir else {entry.path}
    return found


def test_a_trained_run_links_its_pages_curves_and_report_in_its_mlflow_run(
    tmp_path: Path,
) -> None:
    registry = Registry()
    experiment = registry.client.create_experiment("e", artifact_location=registry._artifact_root())
    run_id = registry.client.create_run(experiment).info.run_id
    run_dir = _run_dir(tmp_path)
    report = _report(run_dir, train={"mlflow_run_id": run_id, "mlflow_experiment_id": experiment})
    links = publish_pages(report, run_dir, "m", UI, registry)
    page = f"{UI}/#/experiments/{experiment}/runs/{run_id}"
    assert links == {
        "run": page,
        "statistics": f"{page}/artifactPath/pages/abc/statistics.html",
        "evaluation": f"{page}/artifactPath/pages/abc/evaluation.png",
        "curves": f"{page}/model-metrics",
        "report": f"{page}/artifactPath/pages/abc/report.json",
    }
    files = {"pages/abc/statistics.html", "pages/abc/evaluation.png", "pages/abc/report.json"}
    assert _artifacts(registry, run_id) == files
    saved = json.loads((run_dir / "report.json").read_text())
    assert saved["links"] == links  # the uploaded report carries them too
    downloaded = registry.client.download_artifacts(run_id, "pages/abc/report.json", str(tmp_path))
    assert json.loads(Path(downloaded).read_text())["links"] == links
    # A later flow run continuing the same MLflow run (a resumed training) keeps its own pages.
    later = _report(run_dir, train=report.train)
    later.flow_run_id = "def"
    assert publish_pages(later, run_dir, "m", UI, registry)["report"].endswith(
        "pages/def/report.json"
    )
    assert files < _artifacts(registry, run_id)


def test_a_run_stopped_before_training_gets_a_run_for_its_pages(tmp_path: Path) -> None:
    registry = Registry()
    run_dir = _run_dir(tmp_path, evaluated=False)
    report = _report(run_dir, failed={"stage": "validate", "reason": "anomalies", "hint": ""})
    links = publish_pages(report, run_dir, "m", UI, registry)
    assert set(links) == {"run", "statistics", "report"}  # no curves, no evaluation
    (experiment,) = [e for e in registry.client.search_experiments() if e.name == "trickflow-m"]
    (run,) = registry.client.search_runs([experiment.experiment_id])
    assert run.data.tags[NO_TRAINING_RUN] == "true" and run.data.tags["flow_run_id"] == "abc"
    assert run.info.status == "FAILED"
    page = f"/runs/{run.info.run_id}/artifactPath/pages/abc/statistics.html"
    assert links["statistics"].endswith(page)
    assert _artifacts(registry, run.info.run_id) == {
        "pages/abc/statistics.html",
        "pages/abc/report.json",
    }


def test_without_a_server_or_when_it_fails_the_pages_stay_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = _run_dir(tmp_path)
    report = _report(run_dir)
    assert publish_pages(report, run_dir, "m", None) == {} and report.links is None

    class Down:
        client = None

        def __getattr__(self, name):
            raise ConnectionError("tracking server unreachable")

    broken = Registry()
    broken.client = Down()
    assert publish_pages(report, run_dir, "m", UI, broken) == {}
    assert report.links is None and "could not be published" in caplog.text
    assert json.loads((run_dir / "report.json").read_text())["links"] is None
    # A tracking server that does not answer is not asked (MLflow's client would retry for
    # minutes): the health check says so at once.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = Registry(f"http://127.0.0.1:{port}")
    assert publish_pages(report, run_dir, "m", UI, dead) == {}
    assert "does not answer its health check" in caplog.text
