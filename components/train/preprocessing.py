"""Image transforms of SPEC §6 as pure functions over a feature dict.

Every op takes and returns a dict of tensors; keys, shapes and dtypes are in each docstring.
They run eagerly and inside `Dataset.map` alike (tests check both). Train order:
decode_random_crop -> random_flip -> random_rotate -> color_jitter -> pca_lighting -> normalize.
Eval: decode_center_crop -> normalize.
"""

from __future__ import annotations

import math

import tensorflow as tf

MEAN_RGB = (123.68, 116.779, 103.939)  # the text's mean (the original code has 109.939 for blue)
STD_RGB = (58.393, 57.12, 57.375)
PCA_EIGVAL = (55.46, 4.794, 1.148)
PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
EVAL_CROP_FRACTION = 224 / 256


def boxes_tensor(features: dict) -> tf.Tensor:
    """The example's relative boxes as (1, N, 4) [ymin, xmin, ymax, xmax] (N may be 0)."""

    def dense(name: str) -> tf.Tensor:
        value = features[name]
        if isinstance(value, tf.SparseTensor):
            value = tf.sparse.to_dense(value)
        return tf.reshape(tf.cast(value, tf.float32), [-1])

    boxes = tf.stack(
        [dense("bbox_ymin"), dense("bbox_xmin"), dense("bbox_ymax"), dense("bbox_xmax")], axis=-1
    )
    return boxes[tf.newaxis]


def decode_random_crop(
    features: dict,
    size: int,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> dict:
    """image: JPEG string [] -> float32 [size, size, 3] in 0..255.

    Samples the crop from the JPEG header alone and decodes only the crop window (the original
    decoded the whole image first). Known boxes steer the crop to cover at least 10% of one.
    """
    image = features["image"]
    shape = tf.io.extract_jpeg_shape(image)
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        shape,
        bounding_boxes=boxes_tensor(features),
        min_object_covered=0.1,
        aspect_ratio_range=aspect_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    offset_y, offset_x, _ = tf.unstack(begin)
    height, width, _ = tf.unstack(crop_size)
    window = tf.stack([offset_y, offset_x, height, width])
    crop = tf.io.decode_and_crop_jpeg(image, window, channels=3)
    resized = tf.image.resize(crop, [size, size], method="bilinear", antialias=False)
    return {**features, "image": tf.reshape(resized, [size, size, 3])}


def decode_center_crop(features: dict, size: int) -> dict:
    """image: JPEG string [] -> float32 [size, size, 3] in 0..255.

    Resizes the shorter side to size / 0.875 (256 for 224) keeping the aspect ratio, then takes
    the central size x size crop.
    """
    image = tf.io.decode_jpeg(features["image"], channels=3)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / EVAL_CROP_FRACTION) / tf.reduce_min(shape)
    new_shape = tf.cast(tf.math.round(shape * scale), tf.int32)
    new_shape = tf.maximum(new_shape, size)
    resized = tf.image.resize(image, new_shape, method="bilinear", antialias=True)
    top = (new_shape[0] - size) // 2
    left = (new_shape[1] - size) // 2
    crop = resized[top : top + size, left : left + size]
    return {**features, "image": tf.reshape(crop, [size, size, 3])}


def random_flip(features: dict) -> dict:
    """image: float32 [H, W, 3] -> same, mirrored left-right with probability 1/2."""
    return {**features, "image": tf.image.random_flip_left_right(features["image"])}


def rotate(image: tf.Tensor, radians: tf.Tensor) -> tf.Tensor:
    """Rotates float32 [H, W, 3] about its center; corners are filled by reflection."""
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(radians), tf.sin(radians)
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2): inverse rotation.
    cx, cy = (width - 1) / 2, (height - 1) / 2
    transform = tf.stack(
        [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0]
    )
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transform[tf.newaxis],
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
    return tf.reshape(out[0], tf.shape(image))


def random_rotate(features: dict, max_degrees: float = 7.0) -> dict:
    """image: float32 [H, W, 3] -> same, rotated by an angle uniform in +-max_degrees."""
    if max_degrees <= 0:
        return features
    limit = max_degrees * math.pi / 180
    angle = tf.random.uniform([], -limit, limit)
    return {**features, "image": rotate(features["image"], angle)}


def color_jitter(features: dict, strength: float = 0.4) -> dict:
    """image: float32 [H, W, 3] in 0..255 -> same, in 0..255.

    Brightness and saturation are scaled by coefficients uniform in [1 - s, 1 + s] (the paper's
    [0.6, 1.4]; the original added +-0.3 to 0..255 pixels, a no-op). Hue is rotated by up to
    s/2 of the color circle (GluonCV's +-0.4*pi), applied in random order.
    """
    if strength <= 0:
        return features
    image = features["image"] / 255.0
    ops = [
        lambda x: x * tf.random.uniform([], 1 - strength, 1 + strength),
        lambda x: tf.image.adjust_saturation(x, tf.random.uniform([], 1 - strength, 1 + strength)),
        lambda x: tf.image.adjust_hue(x, tf.random.uniform([], -strength / 2, strength / 2)),
    ]
    order = tf.random.shuffle(tf.range(3))
    for position in range(3):
        image = tf.switch_case(order[position], [lambda f=f, x=image: f(x) for f in ops])
        image = tf.clip_by_value(image, 0.0, 1.0)
    return {**features, "image": image * 255.0}


def pca_lighting(features: dict, alpha_std: float = 0.1) -> dict:
    """image: float32 [H, W, 3] in 0..255 -> same plus AlexNet PCA noise, alpha ~ N(0, std)."""
    if alpha_std <= 0:
        return features
    alpha = tf.random.normal([3], stddev=alpha_std)
    rgb = tf.linalg.matvec(tf.constant(PCA_EIGVEC), alpha * tf.constant(PCA_EIGVAL))  # (3,)
    return {**features, "image": tf.clip_by_value(features["image"] + rgb, 0.0, 255.0)}


def normalize(features: dict) -> dict:
    """image: float32 [H, W, 3] in 0..255 -> per-channel (x - mean) / std."""
    image = (features["image"] - tf.constant(MEAN_RGB)) / tf.constant(STD_RGB)
    return {**features, "image": image}
