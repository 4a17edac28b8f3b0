"""The model Keras' trainer fits: augmentation, mixup, the classifier and its loss in one step.

    fit((images uint8 [B, S, S, 3], labels int [B]))
    TrainingModel(backbone, ...)(images, training=True) -> {"logits": [B, K], "mix": [], ...}

`model.fit` runs `call` then `compute_loss` inside one compiled step on every backend (a
`tf.function` under tf.distribute on TensorFlow, `jax.jit` on JAX), with loss scaling for
float16. So the augmentation, mixup, the teacher's forward pass, label smoothing, distillation
and weight decay all run on the accelerator, batched, and none of it is backend code.

Batches are (images, labels) pairs rather than a dict: Keras' TensorFlow trainer cannot build a
model whose inputs are a dict under tf.distribute (keras-team/keras#20329). So `call` sees the
images only and returns mixup's weight with the logits; `compute_loss` mixes the labels with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops
from keras.src.losses.loss import scale_loss_for_distribution  # not exported by keras

from components.train import randomness, tricks
from components.train.augment import DeviceAugment, mixup_images, mixup_targets, normalize
from components.train.config import TrainConfig
from components.train.randomness import no_replica


class TrainingModel(keras.Model):
    """Wraps a classifier (normalized float images -> float32 logits) for training.

    The wrapped `backbone` is what gets exported; this model only adds what training needs.
    `mixup_on` is a variable, so the last epochs can switch mixup off without recompiling.
    """

    def __init__(
        self,
        backbone: keras.Model,
        config: TrainConfig,
        num_classes: int,
        teacher: keras.Model | None = None,
        replica_id: Callable[[], Any] = no_replica,
    ):
        super().__init__(name="training_model", dtype="float32")
        self.backbone = backbone
        self.num_classes = num_classes
        self.config = config
        augment = config.augment
        self.augment = DeviceAugment(
            flip=augment.flip,
            rotation_degrees=augment.rotation_degrees,
            color_jitter=augment.color_jitter,
            hue=augment.hue,
            pca_lighting=augment.pca_lighting,
            seed=config.seed,
            replica_id=replica_id,  # each replica augments its slice with its own draws
            name="augment",
        )
        # One λ for the global batch: the same state on every replica, nothing folded in.
        self.mixup_seed = keras.random.SeedGenerator(config.seed + 1)
        self.mixup_on = self.add_weight(
            shape=(), initializer="zeros", trainable=False, dtype="float32", name="mixup_on"
        )
        self.teacher = teacher
        if teacher is not None:
            teacher.trainable = False
        self.decayed = (
            tricks.decay_variables(backbone)
            if config.no_bias_decay
            else list(backbone.trainable_variables)
        )
        self.built = True  # every weight exists: the backbone is built, the rest has none

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Nothing to build. Keras' TensorFlow trainer would otherwise average the first batch
        across replicas to trace the model, which fails for every batch under
        MultiWorkerMirroredStrategy (keras-team/keras#20329); the JAX trainer never calls this."""
        if not self.built:
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def get_metrics_result(self) -> dict:
        """Logs as shape [1]: under MultiWorkerMirroredStrategy Keras' TensorFlow trainer averages
        each log across workers along axis 0, which a scalar does not have (Keras 3.15)."""
        return {
            name: ops.reshape(value, (1,)) for name, value in super().get_metrics_result().items()
        }

    def call(self, images, training: bool = False) -> dict:
        images = self.augment(images, training=training)  # (B, S, S, 3) float32
        lam = ops.ones(())  # mixup's weight of each example against its partner; 1: no mixing
        if training and self.config.mixup_alpha > 0:
            alpha = self.config.mixup_alpha
            lam = randomness.beta(alpha, self.mixup_seed)  # XLA compiles it on every backend
            lam = ops.where(self.mixup_on > 0, lam, 1.0)
            images = mixup_images(images, lam)
        outputs = {"logits": self.backbone(images, training=training), "mix": lam}
        if self.teacher is not None:
            outputs["teacher_logits"] = ops.stop_gradient(self.teacher(images, training=False))
        return outputs

    def targets(self, labels, lam):
        """int [B] -> float32 [B, K]: the paper's smoothed labels, mixed as the images were."""
        targets = tricks.smooth_labels(labels, self.num_classes, self.config.label_smoothing)
        return mixup_targets(targets, lam)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean over the batch of the (distilled) smoothed cross entropy, plus weight decay."""
        logits = y_pred["logits"]
        targets = self.targets(y, y_pred["mix"])
        if "teacher_logits" in y_pred:
            per_example = tricks.distillation_loss(
                targets,
                logits,
                y_pred["teacher_logits"],
                self.config.distill_temperature,
                self.config.distill_hard_weight,
            )
        else:
            per_example = tricks.soft_cross_entropy(targets, logits)
        loss = ops.mean(per_example)
        if training:
            loss = loss + tricks.weight_decay_loss(self.decayed, self.config.weight_decay)
        # Under tf.distribute each replica's gradients are summed, and Keras' trainer multiplies
        # the loss back for its log: like Keras' own losses, divide by the replicas (a no-op on
        # one device and on JAX). Without it N replicas trained at N times the learning rate.
        return scale_loss_for_distribution(loss)


def evaluation_model(backbone: keras.Model) -> keras.Model:
    """uint8 center crops [B, S, S, 3] -> logits: the backbone behind the same normalization."""
    inputs = keras.Input(backbone.input_shape[1:], dtype="uint8", name="image")
    return keras.Model(inputs, backbone(normalize(inputs), training=False), name="evaluation")
