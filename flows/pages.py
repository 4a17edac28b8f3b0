"""The pages a run produces, where a browser on any machine opens them: the MLflow run's
artifacts, which the tracking server serves over HTTP (`mlflow server --serve-artifacts`).

A run that trained has its MLflow run already (the curves are its metrics; the gate put the
evaluation picture there); a run that stopped before training gets a run of its own in the same
experiment, so that the statistics of data that failed validation open too. The links go to
MLflow's run page, which shows each file (HTML in a frame, pictures, JSON) beside the others.
"""

from __future__ import annotations

import logging
from pathlib import Path

from components.evaluate.registry import Registry

log = logging.getLogger(__name__)

NO_TRAINING_RUN = "trickflow.pages_only"  # tag of a run made only to hold a run's pages


def _pages(run_dir: Path) -> dict[str, tuple[Path, str]]:
    """name -> (local file, artifact folder) of what the run wrote, those that exist."""
    found = {
        "statistics": (run_dir / "validation" / "statistics.html", "data"),
        "drift": (run_dir / "validation" / "drift.html", "data"),
        "evaluation": (run_dir / "evaluation" / "evaluation.png", ""),
    }
    return {name: entry for name, entry in found.items() if entry[0].is_file()}


def _artifact(folder: str, path: Path) -> str:
    return f"{folder}/{path.name}" if folder else path.name


def links(ui: str, experiment_id: str, run_id: str, pages: dict, trained: bool) -> dict:
    """The URLs of the run's pages in the MLflow UI at `ui`."""
    run = f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    found = {"run": run}
    for name, (path, folder) in pages.items():
        found[name] = f"{run}/artifactPath/{_artifact(folder, path)}"
    if trained:
        found["curves"] = f"{run}/model-metrics"
    found["report"] = f"{run}/artifactPath/report.json"
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
        client = registry.client
        run_id, experiment_id = train.get("mlflow_run_id"), train.get("mlflow_experiment_id")
        if run_id is None:
            experiment = f"trickflow-{model_name}"
            found = client.get_experiment_by_name(experiment)
            experiment_id = (
                found.experiment_id
                if found
                else client.create_experiment(
                    experiment, artifact_location=registry._artifact_root()
                )
            )
            tags = {"flow_run_id": report.flow_run_id, NO_TRAINING_RUN: "true"}
            made = client.create_run(experiment_id, tags=tags, run_name=f"{report.flow_run_id}")
            run_id = made.info.run_id
            client.set_terminated(run_id, "FAILED" if report.failed else "FINISHED")
        found_links = links(ui, experiment_id, run_id, pages, bool(train.get("mlflow_run_id")))
        report.links = found_links
        report.save()
        for path, folder in pages.values():
            client.log_artifact(run_id, str(path), artifact_path=folder or None)
        client.log_artifact(run_id, report.report_path)
        return found_links
    except Exception as err:  # noqa: BLE001 - the run's outcome stands without its links
        log.warning("the run's pages could not be published to %s: %s", ui, err)
        report.links = None
        report.save()
        return {}
