"""The whole train step under XLA on the CPU, as a single TensorFlow GPU runs it (XLA is on by
default there): augmentation with every colour op, mixup, distillation, label smoothing, weight
decay and, in float16, loss scaling, in both mixed precisions. An op without an XLA kernel fails
here instead of at the first step of a GPU run.

The classifier is a small stand-in (conv, BatchNorm, residual add, pools, dense head) so that
each precision compiles in seconds: the risk lies in what the step adds around the model; the
model families' own layers compile in tests/test_models.py, and a real family trains under XLA
through the command line in tests/test_training.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from components.train.config import AugmentConfig, TrainConfig
from components.train.devices import Devices
from components.train.loop import TrainData, fit_classifier
from tests.conftest import small_classifier

IMAGES = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3)).astype(np.uint8)
LABELS = (np.arange(64) % 4).astype(np.int32)


def endless(epoch: int, skip: int):
    while True:
        for start in range(0, 64, 8):
            yield IMAGES[start : start + 8], LABELS[start : start + 8]


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_every_trick_compiles_and_trains_under_xla(small_model, precision: str, tmp_path) -> None:
    teacher = small_classifier("teacher", 4)
    teacher.save(tmp_path / "teacher.keras")
    config = TrainConfig(
        model="small",
        image_size=32,
        batch_size=8,
        epochs=1,
        warmup_steps=1,
        max_steps=4,
        precision=precision,
        jit_compile=True,
        mixup_alpha=0.2,
        label_smoothing=0.1,
        weight_decay=1e-4,
        teacher=str(tmp_path / "teacher.keras"),
        augment=AugmentConfig(hue=0.1),  # every colour op, hue too
        log_every=1,
        eval_every_epochs=0,
    )
    data = TrainData(endless, lambda: iter([(IMAGES[:8], LABELS[:8])]), 8, 4)
    events = []
    summary = fit_classifier(config, data, str(tmp_path / "run"), events.append, Devices("cpu"))
    assert summary["jit_compile"] is True and summary["precision"] == precision
    assert summary["steps"] == 4
    losses = [e["loss"] for e in events if e["type"] == "log"]
    assert len(losses) == 4 and np.all(np.isfinite(losses))
    if precision == "mixed_float16":
        assert isinstance(summary["skipped_steps"], int)  # the loss-scaling step compiled


def test_the_tier_catches_an_op_without_an_xla_kernel() -> None:
    """What mixup's λ used to be: Keras' Beta draws Gamma variates, which XLA cannot compile on
    TensorFlow; the step above would fail the same way."""
    seed = keras.random.SeedGenerator(0)
    draw = tf.function(lambda: keras.random.beta((), 0.2, 0.2, seed=seed), jit_compile=True)
    with pytest.raises(Exception, match="StatelessRandomGamma"):
        draw()
