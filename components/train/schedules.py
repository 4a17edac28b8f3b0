"""Learning-rate schedules: linear warmup, then cosine decay or the original design's steps.

Written in `keras.ops`, so the optimizer evaluates them inside the compiled step on any backend.
"""

from __future__ import annotations

import math

import keras
from keras import ops

# The original design's step decay (batch 128): boundaries in steps, and the LR from each one on.
ORIGINAL_STEP_BOUNDARIES = (
    30_000,
    60_000,
    90_000,
    120_000,
    150_000,
    170_000,
    190_000,
    220_000,
    260_000,
    275_000,
)
ORIGINAL_STEP_VALUES = (
    0.02,
    0.01,
    0.005,
    0.002,
    0.001,
    0.0005,
    0.00025,
    0.0001,
    0.00005,
    0.000025,
    0.00001,
)


def scaled_learning_rate(base_lr: float, batch_size: int, reference_batch: int = 256) -> float:
    """Linear scaling rule: lr = base_lr x batch / 256 (0.1 x batch / 256 by default)."""
    return base_lr * batch_size / reference_batch


def refining_steps(
    boundaries: tuple[int, ...],
    values: tuple[float, ...],
    peak: float,
    scratch_steps: int,
    total_steps: int,
) -> tuple[list[int], list[float]]:
    """The step schedule of a warm start that refines a model trained from scratch on
    (`boundaries`, `values`) for `scratch_steps`: that schedule from where its LR first falls
    to `peak` or below, compressed into `total_steps`, so that it starts at `peak` and ends at
    the LR the from-scratch run ended at (a warm start at the from-scratch LRs would undo the
    model it starts from; one that stops above its final LR ends less converged). When the
    from-scratch run never came down to `peak`, the warm start stays at `peak` throughout.

    The part of the from-scratch run kept is [start, scratch_steps], where `start` is the
    boundary after which the LR is at most `peak` (0 if the first value already is); its
    boundaries are mapped linearly onto [0, total_steps]; its first value is `peak`."""
    if total_steps < 1 or scratch_steps < 1:
        raise ValueError(f"need steps to schedule: {total_steps} (from {scratch_steps})")
    reached = [b for b in boundaries if b < scratch_steps]
    first = next((i for i, v in enumerate(values[: len(reached) + 1]) if v <= peak), None)
    if first is None:  # the from-scratch run never came down to `peak`: refine at its end
        first = len(reached)
    start = reached[first - 1] if first else 0
    scale = total_steps / (scratch_steps - start)
    kept = [max(1, round((b - start) * scale)) for b in reached[first:]]
    return kept, [peak] + list(values[first + 1 : len(reached) + 1])


@keras.saving.register_keras_serializable("trickflow")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """0 -> peak linearly over `warmup_steps`, then ½(1 + cos(π t / T)) · peak down to 0 at T.

    t and T count from the end of warmup, so the cosine spans the rest of training.
    """

    def __init__(self, peak_lr: float, total_steps: int, warmup_steps: int = 0):
        if total_steps <= warmup_steps:
            raise ValueError(f"total_steps ({total_steps}) must exceed warmup ({warmup_steps})")
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = float(self.warmup_steps)
        progress = (step - warm) / float(self.total_steps - self.warmup_steps)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * ops.clip(progress, 0.0, 1.0)))
        warmup = step / max(warm, 1.0)
        return self.peak_lr * ops.where(step < warm, warmup, cosine)

    def get_config(self) -> dict:
        return {
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }


@keras.saving.register_keras_serializable("trickflow")
class WarmupPiecewise(keras.optimizers.schedules.LearningRateSchedule):
    """0 -> values[0] linearly over `warmup_steps`, then values[i] from boundaries[i-1] on."""

    def __init__(self, boundaries: list[int], values: list[float], warmup_steps: int = 0):
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                f"need one more value than boundaries: {len(values)} values, "
                f"{len(boundaries)} boundaries"
            )
        if list(boundaries) != sorted(boundaries):
            raise ValueError(f"step boundaries must increase: {boundaries}")
        self.boundaries = [int(b) for b in boundaries]
        self.values = [float(v) for v in values]
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        passed = ops.cast(step >= ops.array(self.boundaries, "float32"), "int32")
        piecewise = ops.take(ops.array(self.values, "float32"), ops.sum(passed))
        warm = float(self.warmup_steps)
        warmup = self.values[0] * step / max(warm, 1.0)
        return ops.where(step < warm, warmup, piecewise)

    def get_config(self) -> dict:
        return {
            "boundaries": self.boundaries,
            "values": self.values,
            "warmup_steps": self.warmup_steps,
        }
