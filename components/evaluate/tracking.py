"""Training curves in MLflow from the first step: one run per training, kept across resumes.

    run_id = start_training_run(registry, experiment, params, tags, folder)
    curves = TrainingCurves(registry, run_id)   # on_event consumer of the training loop

The run is created when training starts, with every resolved parameter, so the MLflow UI shows a
30-hour ImageNet training while it goes: loss, learning rate and images/s at each logged step,
validation top-1/top-5 at each evaluated epoch. Its id is kept in the training folder, so a
resumed training adds to the same run, and the gate and registration later land on it too.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from mlflow.entities import Metric, Param

from components import atomic
from components.evaluate.registry import Registry

log = logging.getLogger(__name__)
RUN_ID_FILE = "mlflow_run_id"


def start_training_run(
    registry: Registry,
    experiment: str,
    params: dict,
    tags: dict,
    folder: Path,
    files: list[str] = (),
) -> str:
    """The MLflow run of the training in `folder`: the one a killed attempt started, or a new one
    holding `params`, `tags` and `files` (e.g. the data's statistics page, under `data/`).
    Registry faults raise RegistryError."""
    marker = folder / RUN_ID_FILE
    if marker.exists():
        run_id = marker.read_text().strip()
        try:
            registry.client.get_run(run_id)
            return run_id
        except Exception:  # noqa: BLE001 - gone (another tracking store): start a new one
            log.warning("MLflow run %s of %s is gone; starting a new run", run_id, folder)
    try:
        found = registry.client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found
            else registry.client.create_experiment(
                experiment, artifact_location=registry._artifact_root()
            )
        )
        run = registry.client.create_run(experiment_id, tags=tags, run_name=folder.name)
        registry.client.log_batch(
            run.info.run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()]
        )
        for path in files:
            registry.client.log_artifact(run.info.run_id, path, artifact_path="data")
    except Exception as err:  # noqa: BLE001 - every failure is a fault
        raise registry._fault(f"starting the training run in {experiment!r}", err) from err
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(marker, run.info.run_id)
    return run.info.run_id


class TrainingCurves:
    """Logs the training loop's events to the run as they come.

    A tracking server that fails in the middle must not end a long training: each failure is
    a warning and the curve has a gap; the gate, which needs the registry, reports faults.
    """

    def __init__(self, registry: Registry, run_id: str):
        self.client, self.run_id, self.failures = registry.client, run_id, 0

    def __call__(self, event: dict) -> None:
        now = int(time.time() * 1000)
        if event["type"] == "log":
            values = {
                "loss": event["loss"],
                "learning_rate": event["lr"],
                "images_per_second": event["images_per_second"],
            }
        elif event["type"] == "epoch" and "top1" in event:
            values = {"val_top1": event["top1"], "val_top5": event["top5"]}
        else:
            return
        metrics = [Metric(k, float(v), now, event["step"]) for k, v in values.items()]
        try:
            self.client.log_batch(self.run_id, metrics=metrics)
        except Exception as err:  # noqa: BLE001 - see the class docstring
            self.failures += 1
            log.warning("MLflow: step %s not logged (%s)", event["step"], err)

    def finish(self, status: str) -> None:
        """Marks the run ended (FAILED when the training raised); best effort, as above."""
        try:
            self.client.set_terminated(self.run_id, status)
        except Exception as err:  # noqa: BLE001
            log.warning("MLflow: run %s not marked %s (%s)", self.run_id, status, err)
