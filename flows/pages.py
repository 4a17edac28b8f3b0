"""The pages a run produces, where a browser on any machine opens them: the MLflow run's
artifacts, which the tracking server serves over HTTP (`mlflow server --serve-artifacts`).

A run that trained has its MLflow run already (the curves are its metrics); a run that stopped
before training gets a run of its own in the same experiment, so that the statistics of data
that failed validation open too. The files go under `pages/<flow run id>/`: a later flow run
that continues the same MLflow run (a resumed or reused training) adds its own beside them. The
links go to MLflow's run page, which shows each file (HTML in a frame, pictures, JSON).
"""

from __future__ import annotations

import logging
from pathlib import Path

from components.evaluate.registry import Registry
from components.evaluate.tracking import reachable

log = logging.getLogger(__name__)

NO_TRAINING_RUN = "trickflow.pages_only"  # tag of a run made only to hold a run's pages


def _pages(run_dir: Path) -> dict[str, Path]:
    """name -> local file, of the pages the run wrote."""
    found = {
        "statistics": run_dir / "validation" / "statistics.html",
        "drift": run_dir / "validation" / "drift.html",
        "evaluation": run_dir / "evaluation" / "evaluation.png",
    }
    return {name: path for name, path in found.items() if path.is_file()}


def folder_of(flow_run_id: str) -> str:
    return f"pages/{flow_run_id}"


def links(ui: str, experiment_id: str, run_id: str, flow_run_id: str, pages: dict,
          trained: bool) -> dict:  # fmt: skip
    """The URLs of the run's pages in the MLflow UI at `ui`."""
    run = f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    folder = f"{run}/artifactPath/{folder_of(flow_run_id)}"
    found = {"run": run}
    for name, path in pages.items():
        found[name] = f"{folder}/{path.name}"
    if trained:
        found["curves"] = f"{run}/model-metrics"
    found["report"] = f"{folder}/report.json"
    return found


def publish_pages(
    report, run_dir: Path, model_name: str, ui: str | None, registry: Registry | None = None
) -> dict:
    """Uploads the run's pages and report.json to its MLflow run and records their links in the
    report (saved); returns the links ({} without an MLflow UI, or when the tracking server
    cannot take them: the files stay where they are, and the report says where)."""
    train = report.train or {}
    pages = _pages(run_dir)
    if ui is None or not (train.get("mlflow_run_id") or pages):
        return {}
    try:
        registry = registry or Registry()
        if not reachable(registry.tracking_uri):
            raise ConnectionError(f"{registry.tracking_uri} does not answer its health check")
        client = registry.client
        run_id, experiment_id = train.get("mlflow_run_id"), train.get("mlflow_experiment_id")
        if run_id is None:
            experiment = f"trickflow-{model_name}"
            experiment_id = registry.experiment_id(experiment)
            tags = {"flow_run_id": report.flow_run_id, NO_TRAINING_RUN: "true"}
            made = client.create_run(experiment_id, tags=tags, run_name=f"{report.flow_run_id}")
            run_id = made.info.run_id
            client.set_terminated(run_id, "FAILED" if report.failed else "FINISHED")
        trained = bool(train.get("mlflow_run_id"))
        found_links = links(ui, experiment_id, run_id, report.flow_run_id, pages, trained)
        report.links = found_links
        report.save()
        folder = folder_of(report.flow_run_id)
        for path in [*pages.values(), Path(report.report_path)]:
            client.log_artifact(run_id, str(path), artifact_path=folder)
        return found_links
    except Exception as err:  # noqa: BLE001 - the run's outcome stands without its links
        log.warning("the run's pages could not be published to %s: %s", ui, err)
        report.links = None
        report.save()
        return {}
