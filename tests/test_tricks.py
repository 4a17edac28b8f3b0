"""Label smoothing, distillation, the no-decay selection, LR schedules at known steps, precision
choice: the keras.ops pieces of the train step, checked on the TensorFlow backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from components.train.config import TrainConfig
from components.train.loop import build_optimizer, build_schedule
from components.train.models import create_model
from components.train.scaling import ScheduledLossScaleOptimizer
from components.train.schedules import (
    ORIGINAL_STEP_BOUNDARIES,
    ORIGINAL_STEP_VALUES,
    WarmupCosine,
    WarmupPiecewise,
    scaled_learning_rate,
)
from components.train.tricks import (
    decay_variables,
    distillation_loss,
    no_decay_variables,
    resolve_precision,
    smooth_labels,
    smoothed_cross_entropy,
    weight_decay_loss,
)


def test_label_smoothing_as_the_paper_defines_it() -> None:
    targets = np.asarray(smooth_labels(tf.constant([2, 0]), num_classes=5, epsilon=0.1))
    np.testing.assert_allclose(targets[0], [0.025, 0.025, 0.9, 0.025, 0.025], rtol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), [1, 1], rtol=1e-6)
    assert np.asarray(smooth_labels(tf.constant([1]), 3, 0.0)).tolist() == [[0, 1, 0]]


def test_smoothed_loss_is_float32_and_matches_by_hand() -> None:
    logits = tf.constant([[2.0, 0.0, -1.0]], tf.float16)
    loss = smoothed_cross_entropy(tf.constant([0]), logits, 0.2)
    log_p = tf.nn.log_softmax(tf.cast(logits, tf.float32)).numpy()[0]
    expected = -(0.8 * log_p[0] + 0.1 * log_p[1] + 0.1 * log_p[2])
    assert loss.dtype == tf.float32 and float(loss[0]) == pytest.approx(expected, rel=1e-3)


def test_distillation_at_temperature_matches_by_hand() -> None:
    targets = np.array([[0.9, 0.05, 0.05]], np.float32)
    logits = np.array([[2.0, 0.5, -1.0]], np.float32)
    teacher = np.array([[4.0, 1.0, 0.0]], np.float32)
    t, w = 20.0, 0.5

    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    hard = -(targets[0] * np.log(softmax(logits[0]))).sum()
    soft = -(softmax(teacher[0] / t) * np.log(softmax(logits[0] / t))).sum()
    loss = float(distillation_loss(targets, logits, teacher, t, w)[0])
    assert loss == pytest.approx(w * hard + (1 - w) * t**2 * soft, rel=1e-5)
    # The teacher's logits reach the loss: another teacher, another loss.
    other = float(distillation_loss(targets, logits, teacher[:, ::-1].copy(), t, w)[0])
    assert other != pytest.approx(loss, rel=1e-4)


def test_no_decay_selects_biases_and_batchnorm_only() -> None:
    model = create_model("darknet53-tiny", num_classes=10)
    skip = no_decay_variables(model)
    decay = decay_variables(model)
    assert len(skip) + len(decay) == len(model.trainable_variables)
    assert all(v.path.endswith(("gamma", "beta", "bias")) for v in skip)
    assert all(v.path.endswith("kernel") for v in decay)
    assert sum("logits_conv/bias" in v.path for v in skip) == 1


def test_weight_decay_is_a_coupled_l2_on_kernels_only() -> None:
    model = create_model("darknet53-tiny", num_classes=10)
    kernel, gamma = decay_variables(model)[0], model.get_layer("stem_bn").gamma
    with tf.GradientTape() as tape:
        loss = weight_decay_loss(decay_variables(model), 0.1)
    expected = 0.1 * sum(0.5 * np.sum(v.numpy() ** 2) for v in decay_variables(model))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    grad_kernel, grad_gamma = tape.gradient(loss, [kernel, gamma])
    np.testing.assert_allclose(grad_kernel.numpy(), 0.1 * kernel.numpy(), rtol=1e-5)
    assert grad_gamma is None  # biases and BatchNorm get no decay
    assert float(weight_decay_loss(decay_variables(model), 0.0)) == 0.0


def test_the_optimizer_itself_does_not_decay() -> None:
    model = create_model("darknet53-tiny", num_classes=10)
    optimizer = build_optimizer(TrainConfig(weight_decay=0.1), 0.5, "float32")
    optimizer.build(model.trainable_variables)
    kernel = decay_variables(model)[0]
    before = kernel.numpy().copy()
    optimizer.apply(
        [tf.zeros_like(v) for v in model.trainable_variables], model.trainable_variables
    )
    np.testing.assert_array_equal(kernel.numpy(), before)


def test_mixed_float16_wraps_the_optimizer_in_loss_scaling() -> None:
    optimizer = build_optimizer(TrainConfig(), 0.1, "mixed_float16")
    assert isinstance(optimizer, ScheduledLossScaleOptimizer)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


class Rising(keras.optimizers.schedules.LearningRateSchedule):
    def __call__(self, step):
        return 0.1 * (ops.cast(step, "float32") + 1)


def test_float16_skipped_steps_still_move_the_schedule_on() -> None:
    """Steps 0 and 2 overflow and are skipped; the updates of steps 1 and 3 use the learning
    rates of steps 1 and 3, as every batch counts (a reference by hand: plain SGD, lr(t) =
    0.1 · (t + 1), gradient 1 on each weight)."""
    weight = keras.Variable(np.zeros(2, np.float32))
    config = TrainConfig(momentum=0.0, nesterov=False)
    optimizer = build_optimizer(config, Rising(), "mixed_float16")
    optimizer.build([weight])
    expected = np.zeros(2)
    for step in range(4):
        overflow = step % 2 == 0
        scale = float(optimizer.dynamic_scale.numpy())
        gradient = np.full(2, np.inf if overflow else scale, np.float32)  # scaled, as in training
        optimizer.apply([gradient], [weight])
        if not overflow:
            expected -= 0.1 * (step + 1)
    np.testing.assert_allclose(weight.numpy(), expected, rtol=1e-6)  # -(0.2 + 0.4)
    assert int(optimizer.iterations.numpy()) == 4 and int(optimizer.skipped_steps.numpy()) == 2


def test_linear_scaling_rule() -> None:
    assert scaled_learning_rate(0.1, 256) == pytest.approx(0.1)
    assert scaled_learning_rate(0.1, 1024) == pytest.approx(0.4)
    assert scaled_learning_rate(0.1, 128) == pytest.approx(0.05)


def test_warmup_cosine_values() -> None:
    schedule = WarmupCosine(peak_lr=0.4, total_steps=1100, warmup_steps=100)
    assert float(schedule(0)) == 0.0
    assert float(schedule(50)) == pytest.approx(0.2)
    assert float(schedule(100)) == pytest.approx(0.4)
    assert float(schedule(600)) == pytest.approx(0.2)  # half way: ½(1 + cos(π/2))
    assert float(schedule(1100)) == pytest.approx(0.0, abs=1e-7)


def test_original_step_schedule_at_its_boundaries() -> None:
    schedule = WarmupPiecewise(list(ORIGINAL_STEP_BOUNDARIES), list(ORIGINAL_STEP_VALUES), 1000)
    assert float(schedule(500)) == pytest.approx(0.01)  # warming up to 0.02
    expected = {
        1000: 0.02,
        29_999: 0.02,
        30_000: 0.01,
        60_000: 0.005,
        90_000: 0.002,
        120_000: 0.001,
        150_000: 0.0005,
        170_000: 0.00025,
        190_000: 0.0001,
        220_000: 0.00005,
        260_000: 0.000025,
        275_000: 0.00001,
        400_000: 0.00001,
    }
    for step, lr in expected.items():
        assert float(schedule(step)) == pytest.approx(lr), step


def test_schedules_round_trip_their_config() -> None:
    schedule = WarmupCosine(0.1, 1000, 10)
    assert WarmupCosine.from_config(schedule.get_config()).get_config() == schedule.get_config()
    with pytest.raises(ValueError, match="one more value"):
        WarmupPiecewise([10, 20], [0.1, 0.01])


def test_build_schedule_uses_epochs_for_warmup_and_scales_lr() -> None:
    schedule = build_schedule(TrainConfig(batch_size=512, warmup_epochs=5), 100, 12_000)
    assert schedule.warmup_steps == 500 and schedule.peak_lr == pytest.approx(0.2)
    step = build_schedule(TrainConfig(schedule="step", warmup_steps=1000), 100, 300_000)
    assert float(step(30_000)) == pytest.approx(0.01)


def test_precision_by_device() -> None:
    assert resolve_precision("auto", gpu_capability=None) == "float32"  # CPU
    assert resolve_precision("auto", gpu_capability=7.0) == "mixed_float16"  # V100
    assert resolve_precision("auto", gpu_capability=8.0) == "mixed_bfloat16"  # A100
    assert resolve_precision("auto", gpu_capability=9.0) == "mixed_bfloat16"  # H100, H200
    assert resolve_precision("mixed_bfloat16", gpu_capability=None) == "mixed_bfloat16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", gpu_capability=9.0)


def test_config_is_strict() -> None:
    with pytest.raises(ValueError, match="extra"):
        TrainConfig(learning_rat=0.1)


@pytest.mark.parametrize("steps_per_epoch", [10_009, 300])  # ImageNet at batch 128; a small set
def test_a_warm_start_of_the_step_preset_starts_scaled_and_ends_at_the_champions_final_lr(
    steps_per_epoch: int,
) -> None:
    """The original-schedule preset warm-started: it warms up to lr_scale x its first LR, never
    goes above it, steps down through the preset's values compressed into its shorter run, and
    ends at the LR the champion's from-scratch training ended at (or at its peak, when that
    training never stepped down to it)."""
    from components import settings
    from flows.presets import WarmStart, imagenet_darknet53_original

    scratch = imagenet_darknet53_original().train
    warm_settings = WarmStart().applied(scratch, "init.keras")
    warm = settings.apply(scratch, warm_settings)
    assert warm.epochs == 20 and warm.step_peak == pytest.approx(0.002)
    scratch_total, warm_total = scratch.epochs * steps_per_epoch, warm.epochs * steps_per_epoch
    champion = build_schedule(scratch, steps_per_epoch, scratch_total)
    schedule = build_schedule(warm, steps_per_epoch, warm_total)
    warmup = round(0.5 * steps_per_epoch)
    lrs = np.array([float(schedule(s)) for s in range(warmup, warm_total, 97)])
    assert lrs[0] == pytest.approx(0.002) and lrs.max() == pytest.approx(0.002)
    final = float(champion(scratch_total - 1))
    assert np.all(np.diff(lrs) <= 0)  # down the steps, never up
    if steps_per_epoch == 10_009:  # the preset's steps below its peak, in order, to its end
        assert final == pytest.approx(1e-5) and len(np.unique(lrs)) == 8
        assert float(schedule(warm_total - 1)) == pytest.approx(final)
    else:  # a run too short to step down at all ended at 0.02: the warm one stays at its peak
        assert final == pytest.approx(0.02) and float(schedule(warm_total - 1)) == lrs[0]
