"""The Bag-of-Tricks pieces that are not the schedule: loss, weight decay, zero-γ, precision."""

from __future__ import annotations

import keras
import tensorflow as tf


def smooth_labels(labels: tf.Tensor, num_classes: int, epsilon: float) -> tf.Tensor:
    """int [B] -> float32 [B, K]: 1 - ε on the true class, ε / (K - 1) on each other (the paper).

    Note Keras' own `label_smoothing` gives 1 - ε + ε/K and ε/K instead.
    """
    one_hot = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
    if epsilon == 0 or num_classes < 2:
        return one_hot
    return one_hot * (1.0 - epsilon) + (1.0 - one_hot) * (epsilon / (num_classes - 1))


def smoothed_cross_entropy(labels: tf.Tensor, logits: tf.Tensor, epsilon: float) -> tf.Tensor:
    """Per-example cross entropy [B] against smoothed targets, computed in float32."""
    logits = tf.cast(logits, tf.float32)
    targets = smooth_labels(labels, logits.shape[-1], epsilon)
    return tf.nn.softmax_cross_entropy_with_logits(targets, logits)


def no_decay_variables(model: keras.Model) -> list:
    """Biases and BatchNorm γ/β: every 1-D trainable parameter. They get no weight decay."""
    return [v for v in model.trainable_variables if len(v.shape) <= 1]


def decay_variables(model: keras.Model) -> list:
    """Conv and dense kernels: the parameters weight decay applies to."""
    return [v for v in model.trainable_variables if len(v.shape) > 1]


def weight_decay_loss(variables: list, weight_decay: float) -> tf.Tensor:
    """wd/2 · Σ‖w‖²: its gradient adds wd · w to each variable's gradient (coupled L2 decay)."""
    if not weight_decay or not variables:
        return tf.constant(0.0)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in variables])


def zero_gamma_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The BatchNorm closing each residual block (its γ starts at 0 with zero-γ)."""
    return [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        and "_block" in layer.name
        and layer.name.endswith("_b_bn")
    ]


def resolve_precision(precision: str, gpus: int) -> str:
    """'auto' -> mixed_float16 (with loss scaling) on GPUs, float32 on CPUs; others pass through."""
    allowed = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
    if precision not in allowed:
        raise ValueError(f"precision must be one of {allowed}, got {precision!r}")
    if precision == "auto":
        return "mixed_float16" if gpus else "float32"
    return precision
