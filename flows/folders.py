"""Training folders on disk: which one a run trains in, and the locks and markers that say so.

A training folder (`<work_dir>/runs/<flow_run_id>/train`) holds `resume_key` (the identity of
what it trains: data and settings), checkpoints, `trained.json` once training finished (the
servable, the steps, the MLflow run) and `gated.json` once a gate judged it. The choice among
them is `flows.decisions.choose_folder`; this module gathers the facts it needs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

from components import atomic
from components.train import TrainConfig
from components.train.loop import RESUMABLE_CHANGES
from flows.decisions import Folder, choose_folder

RESUME_KEY = "resume_key"
TRAINED = "trained.json"  # what the train task returned: the servable, steps, the MLflow run
GATED = "gated.json"  # the gate's decision on this training (a later run trains anew)


def resume_key(data_fingerprint: str, train: TrainConfig) -> str:
    """Identity of a training: the data and every setting that changes what is trained."""
    settings = train.model_dump_json(exclude=RESUMABLE_CHANGES)
    return hashlib.sha256(f"{data_fingerprint}\0{settings}".encode()).hexdigest()[:16]


# The run that chose the folder holds LOCK; a training run of the GPU pool's deployment holds
# TRAINING_LOCK while it trains (it outlives a parent killed meanwhile).
LOCK, TRAINING_LOCK = ".lock", ".training.lock"


def _in_use(folder: Path) -> bool:
    """Whether a live run holds one of the folder's locks (see `training_lock`)."""
    for name in (LOCK, TRAINING_LOCK):
        try:
            with open(folder / name, "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle, fcntl.LOCK_UN)
        except BlockingIOError:
            return True
    return False


@contextmanager
def training_lock(folder: Path, name: str = LOCK):
    """Held while this run trains in `folder`; the OS releases it when the process dies, which
    is what makes a killed run's folder resumable and a live run's folder not."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise RuntimeError(f"{folder} is being trained by another run right now") from err
        yield


@contextmanager
def choosing(work_dir: Path):
    """Held while a run looks for a training of its data and takes the folder's lock: two runs
    that arrive together take turns, so the second sees the first's folder taken instead of
    both starting a fresh one. Held for milliseconds; waits, unlike `training_lock`."""
    (work_dir / "runs").mkdir(parents=True, exist_ok=True)
    with open(work_dir / "runs" / ".choosing.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def trained_elsewhere(work_dir: Path, key: str) -> Path | None:
    """The folder of a training of `key` (data and settings) that a live run holds right now,
    if there is one: a second run of the same data would only train it twice."""
    for marker in sorted((work_dir / "runs").glob(f"*/train/{RESUME_KEY}")):
        try:
            same = marker.read_text().strip() == key
        except OSError:
            continue
        if same and _in_use(marker.parent):
            return marker.parent
    return None


def finished_training(folder: Path, key: str) -> dict | None:
    """What a finished training of `key` (data and settings) in `folder` produced, if no gate has
    judged it yet: a run that failed in evaluation or at the gate (a registry blip, a kill) left
    it, and a rerun goes straight to evaluation instead of training again (GPU-days at ImageNet
    scale). Delete its trained.json to train again instead."""
    if (folder / GATED).exists() or not (folder / TRAINED).exists():
        return None
    try:
        if (folder / RESUME_KEY).read_text().strip() != key:
            return None  # other data or settings (a resume_run that changed them)
        trained = json.loads((folder / TRAINED).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return trained if Path(trained.get("servable", "")).is_dir() else None


def _found(folder: Path, key: str) -> Folder:
    finished = finished_training(folder, key) is not None
    marker = folder / (TRAINED if finished else "checkpoints")
    return Folder(
        folder,
        finished,
        (folder / "checkpoints").is_dir(),
        (folder / "summary.json").exists(),
        marker.stat().st_mtime if marker.exists() else 0.0,
    )


def train_dir(work_dir: Path, run_id: str, resume_run: str | None, key: str) -> tuple[Path, str]:
    """The folder to train into, and why (`flows.decisions.choose_folder`); a fresh one is made
    with its resume key."""
    asked = None
    if resume_run is not None:
        asked = work_dir / "runs" / resume_run / "train"
        if not (asked / "checkpoints").is_dir():
            raise ValueError(f"resume_run {resume_run}: no checkpoints in {asked}")
    same = [
        _found(marker.parent, key)
        for marker in (work_dir / "runs").glob(f"*/train/{RESUME_KEY}")
        if marker.read_text().strip() == key and not _in_use(marker.parent)
    ]
    fresh = work_dir / "runs" / run_id / "train"
    folder, why = choose_folder(asked, same, fresh)
    if folder == fresh:
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_text(folder / RESUME_KEY, key)
    return folder, why
