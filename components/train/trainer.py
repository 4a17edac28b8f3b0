"""The model Keras' trainer fits: augmentation, mixup, the classifier and its loss in one step.

    batch = {"image": uint8 [B, S, S, 3], "label": int [B]}
    TrainingModel(backbone, ...)(batch, training=True) -> {"logits": [B, K], "targets": [B, K], ...}

`model.fit` runs `call` then `compute_loss` inside one compiled step on every backend (a
`tf.function` under tf.distribute on TensorFlow, `jax.jit` on JAX), with loss scaling for
float16. So the augmentation, mixup, the teacher's forward pass, label smoothing, distillation
and weight decay all run on the accelerator, batched, and none of it is backend code.
"""

from __future__ import annotations

import keras
from keras import ops

from components.train import tricks
from components.train.augment import DeviceAugment, mixup, normalize
from components.train.config import TrainConfig


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
    ):
        super().__init__(name="training_model", dtype="float32")
        self.backbone = backbone
        self.num_classes = num_classes
        self.config = config
        augment = config.augment
        self.augment = DeviceAugment(
            augment.flip,
            augment.rotation_degrees,
            augment.color_jitter,
            augment.pca_lighting,
            seed=config.seed,
            name="augment",
        )
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

    def call(self, batch: dict, training: bool = False) -> dict:
        images = self.augment(batch["image"], training=training)  # (B, S, S, 3) float32
        targets = tricks.smooth_labels(
            batch["label"], self.num_classes, self.config.label_smoothing
        )  # (B, K)
        if training and self.config.mixup_alpha > 0:
            lam = keras.random.beta(
                (), self.config.mixup_alpha, self.config.mixup_alpha, seed=self.mixup_seed
            )
            lam = ops.where(self.mixup_on > 0, lam, 1.0)  # 1: no mixing
            images, targets = mixup(images, targets, lam)
        outputs = {"logits": self.backbone(images, training=training), "targets": targets}
        if self.teacher is not None:
            outputs["teacher_logits"] = ops.stop_gradient(self.teacher(images, training=False))
        return outputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean over the batch of the (distilled) smoothed cross entropy, plus weight decay."""
        logits, targets = y_pred["logits"], y_pred["targets"]
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
        return loss


def evaluation_model(backbone: keras.Model) -> keras.Model:
    """uint8 center crops [B, S, S, 3] -> logits: the backbone behind the same normalization."""
    inputs = keras.Input(backbone.input_shape[1:], dtype="uint8", name="image")
    return keras.Model(inputs, backbone(normalize(inputs), training=False), name="evaluation")
