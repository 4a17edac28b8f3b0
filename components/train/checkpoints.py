"""Checkpoints that any Keras backend writes and reads: one .npz per checkpoint.

A checkpoint holds every variable training needs to continue exactly where it stopped: the
model's weights (BatchNorm statistics included), the optimizer's (step counter, momentum, loss
scale) and the random generators' states, each group in its fixed order, with the variables'
paths and shapes kept beside them so that restoring into a different model is an error, not a
silent mismatch. The file is written under a temporary name and renamed, so a kill mid-write
leaves the previous checkpoint intact; the newest `keep` are kept.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from components import atomic

NAME = re.compile(r"^ckpt-(\d+)\.npz$")


COUNTER = re.compile(r"_\d+(?=/|$)")


def _layout(variables: list) -> list:
    """[path, shape] of each variable; Keras numbers repeated auto-names (`sgd_1`,
    `seed_generator_3`) by creation order in the process, so those counters are left out."""
    return [[COUNTER.sub("", v.path), list(v.shape)] for v in variables]


def _arrays(groups: dict[str, list]) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    arrays, layout = {}, {}
    for group, variables in groups.items():
        layout[group] = _layout(variables)
        for i, variable in enumerate(variables):
            arrays[f"{group}/{i:05d}"] = np.asarray(variable.numpy())
    return arrays, layout


def save(folder: Path, step: int, groups: dict[str, list], meta: dict, keep: int = 2) -> Path:
    """Writes `ckpt-<step>.npz` holding each group's variables, and `meta` (JSON-able)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays, layout = _arrays(groups)
    header = json.dumps({"step": step, "layout": layout, **meta})
    path = folder / f"ckpt-{step}.npz"
    atomic.sweep(folder)  # what killed writers left
    with atomic.replacing(path) as temp, temp.open("wb") as handle:  # a failed write leaves none
        np.savez(handle, __meta__=np.frombuffer(header.encode(), np.uint8), **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    for old in sorted(steps(folder))[:-keep]:
        (folder / f"ckpt-{old}.npz").unlink(missing_ok=True)
    return path


def steps(folder: Path) -> list[int]:
    """Steps of the checkpoints in `folder`, ascending."""
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := NAME.match(p.name)))


def latest(folder: Path) -> Path | None:
    found = steps(folder)
    return folder / f"ckpt-{found[-1]}.npz" if found else None


def restore(path: Path, groups: dict[str, list]) -> dict:
    """Assigns the saved values to each group's variables; returns the saved meta (with `step`).

    Raises ValueError naming the checkpoint when a group's variables differ in number, path
    or shape from what was saved.
    """
    with np.load(path) as saved:
        meta = json.loads(bytes(saved["__meta__"]).decode())
        for group, variables in groups.items():
            expected = meta["layout"].get(group)
            found = _layout(variables)
            if expected != found:
                raise ValueError(
                    f"{path}: the {group!r} variables do not match this model "
                    f"({len(expected or [])} saved, {len(found)} here; first difference: "
                    f"{_first_difference(expected or [], found)}); train into a new folder"
                )
            for i, variable in enumerate(variables):
                variable.assign(saved[f"{group}/{i:05d}"])
    return meta


def _first_difference(saved: list, here: list) -> str:
    for a, b in zip(saved, here, strict=False):
        if a != b:
            return f"{a} saved, {b} here"
    return "a different number of variables"
