"""The Bag-of-Tricks pieces that are not the schedule or the augmentation: label smoothing,
distillation, weight decay on kernels only, and the choice of precision. `keras.ops` only, so
they run inside the train step on every backend."""

from __future__ import annotations

import keras
from keras import ops


def smooth_labels(labels, num_classes: int, epsilon: float):
    """int [B] -> float32 [B, K]: 1 - ε on the true class, ε / (K - 1) on each other (the paper).

    Note Keras' own `label_smoothing` gives 1 - ε + ε/K and ε/K instead.
    """
    one_hot = ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype="float32")
    if epsilon == 0 or num_classes < 2:
        return one_hot
    return one_hot * (1.0 - epsilon) + (1.0 - one_hot) * (epsilon / (num_classes - 1))


def soft_cross_entropy(targets, logits):
    """Per-example cross entropy [B] of logits [B, K] against target distributions [B, K],
    in float32 whatever the compute precision."""
    log_p = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    return -ops.sum(ops.cast(targets, "float32") * log_p, axis=-1)


def smoothed_cross_entropy(labels, logits, epsilon: float):
    """Per-example cross entropy [B] against the paper's smoothed targets."""
    return soft_cross_entropy(smooth_labels(labels, ops.shape(logits)[-1], epsilon), logits)


def distillation_loss(targets, logits, teacher_logits, temperature: float, hard_weight: float):
    """The paper's distillation objective, per example [B]:

        hard_weight · CE(targets, p) + (1 - hard_weight) · T² · CE(softmax(z_t / T), softmax(z / T))

    T² keeps the soft term's gradients on the scale of the hard one as T grows (Hinton et al.).
    The teacher's logits carry no gradient.
    """
    teacher = ops.softmax(ops.stop_gradient(ops.cast(teacher_logits, "float32")) / temperature)
    soft = soft_cross_entropy(teacher, ops.cast(logits, "float32") / temperature)
    hard = soft_cross_entropy(targets, logits)
    return hard_weight * hard + (1.0 - hard_weight) * temperature**2 * soft


def no_decay_variables(model: keras.Model) -> list:
    """Biases and BatchNorm γ/β: every 1-D trainable parameter. They get no weight decay."""
    return [v for v in model.trainable_variables if len(v.shape) <= 1]


def decay_variables(model: keras.Model) -> list:
    """Conv and dense kernels: the parameters weight decay applies to."""
    return [v for v in model.trainable_variables if len(v.shape) > 1]


def weight_decay_loss(variables: list, weight_decay: float):
    """wd/2 · Σ‖w‖²: its gradient adds wd · w to each variable's gradient (coupled L2 decay,
    as MXNet and the original's kernel regularizer apply it, inside the momentum)."""
    if not weight_decay or not variables:
        return ops.zeros(())
    squares = [ops.sum(ops.square(ops.cast(v, "float32"))) for v in variables]
    return 0.5 * weight_decay * ops.sum(ops.stack(squares))


PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def resolve_precision(precision: str, gpu_capability: float | None) -> str:
    """'auto' -> mixed_bfloat16 on GPUs that compute in bfloat16 (compute capability 8.0 on:
    A100, H100, H200...), mixed_float16 with loss scaling on older GPUs, float32 on CPUs.
    `gpu_capability` is None without a GPU. Explicit choices pass through."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if gpu_capability is None:
        return "float32"
    return "mixed_bfloat16" if gpu_capability >= 8.0 else "mixed_float16"
