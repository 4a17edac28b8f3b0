"""Training steps per second with a round trip to the host after every step, and after every
N steps (`steps_per_execution`), on the CPU, side by side in one run.

    .venv/bin/python bench/sync_bench.py [--steps 600] [--repeats 3] [--every 1 10 50]
        [--models small darknet53-tiny]

The product's loop (`fit_classifier`) trains a small stand-in model (the tests' conv-BN-residual
classifier, about a millisecond a step: what a fast GPU step looks like next to the host's
overhead) and a tiny Darknet53 (darknet53-tiny) at 32 px, batch 16, float32, on batches held in
memory (a tf.data pipeline over one array: no decoding, so what is
measured is the step and what happens between steps). With steps_per_execution 1, every step
returns to Python: Keras turns its logs into numbers and runs the callbacks, and the next call
into the compiled step waits for that; with N, the compiled function runs N steps per call.
Steps per second come from the times of the log lines (every 50 steps) after the first one
(compilation excluded); variants alternate, the best of `repeats` counts. A GPU step does far
more work per call, so this shows the overhead per call, not a GPU's gain.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def one_run(model: str, every: int, steps: int) -> float:
    import numpy as np
    import tensorflow as tf

    from components.train import loop
    from components.train.config import TrainConfig
    from components.train.loop import TrainData, fit_classifier
    from components.train.models import create_model

    if model == "small":
        from tests.conftest import small_classifier

        loop.create_model = small_classifier
    else:
        loop.create_model = create_model

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (256, 32, 32, 3)).astype(np.uint8)
    labels = (np.arange(256) % 10).astype(np.int32)

    def train(epoch: int, skip: int) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(16)
        return ds.prefetch(tf.data.AUTOTUNE)

    data = TrainData(train, lambda: iter([(images[:16], labels[:16])]), steps, 10)
    config = TrainConfig(
        model="darknet53-tiny" if model == "small" else model, image_size=32, batch_size=16,
        epochs=1, warmup_steps=10,
        log_every=50, checkpoint_every=steps, eval_every_epochs=0, steps_per_execution=every,
        jit_compile=False, precision="float32",
    )  # fmt: skip
    times = []

    def on_event(event: dict) -> None:
        if event.get("type") == "log":
            times.append((event["step"], time.perf_counter()))

    with tempfile.TemporaryDirectory() as out:
        fit_classifier(config, data, out, on_event)
    (first, start), (last, end) = times[0], times[-1]
    return (last - first) / (end - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=int, nargs="*", default=[1, 10, 50])
    parser.add_argument("--models", nargs="*", default=["small", "darknet53-tiny"])
    args = parser.parse_args()
    rates = {(m, every): [] for m in args.models for every in args.every}
    for _ in range(args.repeats):
        for model, every in rates:
            rates[model, every].append(one_run(model, every, args.steps))
    print(f"32 px, batch 16, float32, {os.cpu_count()} CPU cores, {args.steps} steps, "
          f"best of {args.repeats}")  # fmt: skip
    for (model, every), found in rates.items():
        best, base = max(found), max(rates[model, args.every[0]])
        print(f"  {model:15s} steps_per_execution {every:3d}: {best:7.1f} steps/s "
              f"({best / base:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
