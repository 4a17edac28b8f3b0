"""The servable model: encoded JPEG bytes in, class probabilities out.

A `tf.Module` whose `__call__` takes a string tensor [N] of JPEG bytes, applies the evaluation
preprocessing and returns float32 probabilities [N, K]; MLflow's TensorFlow flavor logs and serves
it as is. The label table travels inside as `labels`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from components.train.augment import normalize
from components.train.data import eval_transform
from components.train.models import to_channels_last


class ImageClassifier(tf.Module):
    def __init__(self, model: keras.Model, image_size: int, labels: list[str]):
        super().__init__(name="image_classifier")
        self.model = model
        self.image_size = image_size
        self.labels = tf.Variable(labels, trainable=False, dtype=tf.string, name="labels")

    # No autograph (nothing here branches on tensors): it re-reads the source file when it
    # traces, so a checkout updated while a days-long run trained would be traced instead.
    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name="jpeg_bytes")], autograph=False
    )
    def __call__(self, jpeg_bytes: tf.Tensor) -> tf.Tensor:
        images = tf.map_fn(
            lambda b: eval_transform({"image": b}, self.image_size)["image"],
            jpeg_bytes,
            fn_output_signature=tf.TensorSpec([self.image_size, self.image_size, 3], tf.uint8),
        )  # (N, S, S, 3), the crops evaluation saw during training
        logits = self.model(normalize(images), training=False)
        return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)  # (N, K)


def export_servable(model: keras.Model, image_size: int, labels: list[str], path: str) -> str:
    """Saves the servable SavedModel to `path` (a directory) and returns it.

    Always channels_last, whatever layout the model trained in: the graph is fixed when it is
    saved, and a channels_first one would not run on the CPU machines that evaluate and serve
    (TensorFlow's CPU convolutions are NHWC-only without oneDNN); on a GPU TensorFlow converts
    the layout itself.
    """
    module = ImageClassifier(to_channels_last(model), image_size, labels)
    tf.saved_model.save(module, path)
    return path
