"""Training: Darknet53 and ResNet-50 with the Bag-of-Tricks recipe on the ingested TFRecords.

python -m components.train --data DATA_DIR --output OUT_DIR [--config FILE] [--set key=value]

`config`, `models`, `augment`, `tricks`, `schedules`, `trainer`, `checkpoints` and `loop` are
backend-agnostic Keras (no TensorFlow import); `task`, `data`, `preprocessing` and `export` are
the TensorFlow side (tf.data, SavedModel). `run_training` is imported on first use so that the
Keras-only modules load where TensorFlow is absent.
"""

from components.train.config import AugmentConfig, TrainConfig

__all__ = ["AugmentConfig", "TrainConfig", "run_training"]


def __getattr__(name: str):
    if name == "run_training":
        from components.train.task import run_training

        return run_training
    raise AttributeError(name)
