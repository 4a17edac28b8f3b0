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
import threading
import time
import urllib.error
import urllib.request
from collections import deque
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
    metrics: dict[str, float] | None = None,
) -> str:
    """The MLflow run of the training in `folder`: the one a killed attempt started, or a new one
    holding `params`, `tags`, `metrics` (e.g. the data's drift distances) and `files` (e.g. the
    data's statistics page, under `data/`).
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
        experiment_id = registry.experiment_id(experiment)
        run = registry.client.create_run(experiment_id, tags=tags, run_name=folder.name)
        stamp = int(time.time() * 1000)
        registry.client.log_batch(
            run.info.run_id,
            params=[Param(k, str(v)[:500]) for k, v in params.items()],
            metrics=[Metric(k, float(v), stamp, 0) for k, v in (metrics or {}).items()],
        )
        for path in files:
            registry.client.log_artifact(run.info.run_id, path, artifact_path="data")
    except Exception as err:  # noqa: BLE001 - every failure is a fault
        raise registry._fault(f"starting the training run in {experiment!r}", err) from err
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(marker, run.info.run_id)
    return run.info.run_id


def reachable(tracking_uri: str, timeout: float = 2.0) -> bool:
    """Whether the tracking server answers at all, asked with a short timeout (local stores
    always do): MLflow's own client would retry a dead server for minutes. Any HTTP answer
    counts: a server that asks for credentials is up."""
    if not tracking_uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


class TrainingCurves:
    """Logs the training loop's events to the run without ever making the training wait.

    Each event's metrics go into a bounded queue and return at once; a background thread sends
    them in batches. A tracking server that refuses connections or accepts and never answers
    (MLflow's own client waits up to 120 s per try and tries 7 times) only delays the curves:
    the sender first asks the server's /health with a short timeout, waits with a growing pause
    while it is away, and sends everything it kept when it returns. Past `capacity` metrics the
    oldest are dropped and counted. A failure never ends a long training; the gate, which needs
    the registry, reports faults.
    """

    BATCH = 1000  # MLflow's limit of metrics per log_batch
    PROBE_SECONDS = 2.0
    MAX_PAUSE = 30.0

    def __init__(self, registry: Registry, run_id: str, capacity: int = 200_000):
        self.client, self.run_id = registry.client, run_id
        self.tracking_uri = registry.tracking_uri
        self.capacity, self.failures, self.dropped, self.sent = capacity, 0, 0, 0
        self._pending: deque[Metric] = deque()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._sender = threading.Thread(target=self._send_all, name="mlflow-curves", daemon=True)
        self._sender.start()

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
        with self._lock:
            self._pending.extend(metrics)
            over = len(self._pending) - self.capacity
            for _ in range(max(0, over)):
                self._pending.popleft()
            self.dropped += max(0, over)
            self._idle.clear()
        self._wake.set()

    def backlog(self) -> int:
        """Metrics not logged yet, the batch being sent included."""
        with self._lock:
            return len(self._pending) + self._in_flight

    def reachable(self) -> bool:
        return reachable(self.tracking_uri, self.PROBE_SECONDS)

    def _send_all(self) -> None:
        pause = 0.5
        while not self._stop.is_set():
            with self._lock:  # taken out while it is sent; put back in front if that fails
                batch = [
                    self._pending.popleft() for _ in range(min(self.BATCH, len(self._pending)))
                ]
                self._in_flight = len(batch)
                if not batch:
                    self._idle.set()
            if not batch:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                if not self.reachable():
                    raise ConnectionError(f"{self.tracking_uri} does not answer")
                self.client.log_batch(self.run_id, metrics=batch)
            except Exception as err:  # noqa: BLE001 - see the class docstring
                with self._lock:
                    self._pending.extendleft(reversed(batch))
                    over = len(self._pending) - self.capacity  # the oldest go, as in __call__
                    for _ in range(max(0, over)):
                        self._pending.popleft()
                    self.dropped += max(0, over)
                    self._in_flight = 0
                self.failures += 1
                if self.failures == 1 or self.failures % 20 == 0:
                    log.warning(
                        "MLflow: %d metrics waiting, not logged yet (%s); retrying in %.1f s",
                        self.backlog(), err, pause,
                    )  # fmt: skip
                self._stop.wait(pause)
                pause = min(pause * 2, self.MAX_PAUSE)
                continue
            pause = 0.5
            with self._lock:
                self.sent += len(batch)
                self._in_flight = 0

    def close(self, timeout: float = 30.0) -> int:
        """Waits up to `timeout` s for the backlog to be sent, then stops the sender; returns
        (and warns of) the number of metrics that could not be logged."""
        self._idle.wait(timeout)
        self._stop.set()
        self._wake.set()
        self._sender.join(timeout=self.PROBE_SECONDS + 1)
        lost = self.backlog() + self.dropped
        if lost:
            log.warning("MLflow: %d metrics of run %s were not logged", lost, self.run_id)
        return lost

    def finish(self, status: str, timeout: float = 30.0) -> None:
        """Sends what is left, then marks the run ended (FAILED when the training raised); best
        effort, as above, and never longer than about `timeout` seconds."""
        self.close(timeout)
        if not self.reachable():
            log.warning("MLflow: run %s not marked %s (server unreachable)", self.run_id, status)
            return

        def terminate() -> None:
            try:
                self.client.set_terminated(self.run_id, status)
            except Exception as err:  # noqa: BLE001
                log.warning("MLflow: run %s not marked %s (%s)", self.run_id, status, err)

        marker = threading.Thread(target=terminate, name="mlflow-terminate", daemon=True)
        marker.start()
        marker.join(self.PROBE_SECONDS * 5)  # a server that answers /health but hangs here
