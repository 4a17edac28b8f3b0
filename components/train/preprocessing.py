"""Image transforms of SPEC §6 as pure functions over a feature dict.

Every op takes and returns a dict of tensors; keys, shapes and dtypes are in each docstring.
They run eagerly and inside `Dataset.map` alike (tests check both). Train:
decode_random_crop -> random_geometry (resize, flip, rotation in one resampling) ->
random_color (brightness, saturation, hue, PCA lighting as one 3x3 matrix) -> normalize.
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
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> dict:
    """image: JPEG string [] -> uint8 [h, w, 3], a random crop of the image.

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
    return {**features, "image": tf.io.decode_and_crop_jpeg(image, window, channels=3)}


def geometry_transform(
    in_height: tf.Tensor, in_width: tf.Tensor, size: int, radians: tf.Tensor, mirror: tf.Tensor
) -> tf.Tensor:
    """The [8] projective transform that resizes to size x size, rotates, then mirrors.

    ImageProjectiveTransform maps each output pixel (x, y) to the input point
    (a0 x + a1 y + a2, b0 x + b1 y + b2); centers follow tf.image.resize (half-pixel).
    """
    sx = tf.cast(in_width, tf.float32) / size
    sy = tf.cast(in_height, tf.float32) / size
    f = tf.where(mirror, -1.0, 1.0)
    cos, sin = tf.cos(radians), tf.sin(radians)
    c = size / 2 - 0.5
    return tf.stack([
        sx * cos * f, -sx * sin, sx * c * (sin - f * cos) + sx * size / 2 - 0.5,
        sy * sin * f, sy * cos, -sy * c * (f * sin + cos) + sy * size / 2 - 0.5,
        0.0, 0.0,
    ])  # fmt: skip


def random_geometry(features: dict, size: int, flip: bool = True, max_degrees: float = 7.0) -> dict:
    """image: uint8 [h, w, 3] -> float32 [size, size, 3] in 0..255.

    Resize, a random rotation within +-max_degrees and a random horizontal flip (the original
    adds +-7 degrees) in one bilinear resampling instead of three; corners are reflected.
    """
    image = features["image"]
    limit = max_degrees * math.pi / 180
    radians = tf.random.uniform([], -limit, limit) if limit > 0 else tf.constant(0.0)
    mirror = tf.random.uniform([]) < 0.5 if flip else tf.constant(False)
    shape = tf.shape(image)
    transform = geometry_transform(shape[0], shape[1], size, radians, mirror)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[tf.newaxis],  # its float kernel is ~2x the uint8 one
        transforms=transform[tf.newaxis],
        output_shape=tf.constant([size, size]),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )  # (1, size, size, 3)
    return {**features, "image": tf.reshape(out[0], [size, size, 3])}


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


# YIQ: luma and two chroma axes; a hue change is a rotation in the chroma plane (as GluonCV).
RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.321), (0.211, -0.523, 0.311))
YIQ_TO_RGB = ((1.0, 0.956, 0.621), (1.0, -0.272, -0.647), (1.0, -1.107, 1.705))
LUMA = (0.299, 0.587, 0.114)


def color_matrix(
    brightness: tf.Tensor, saturation: tf.Tensor, hue_radians: tf.Tensor, hue_first: tf.Tensor
) -> tf.Tensor:
    """[3, 3] matrix M with rgb_out = M @ rgb_in for the three jitters composed.

    Brightness scales, saturation blends with the gray (luma) value, hue rotates the chroma plane;
    all three are linear, so one matrix applies them together. Brightness commutes with both
    others; `hue_first` picks the order of hue and saturation.
    """
    eye = tf.eye(3)
    gray = tf.ones([3, 1]) * tf.constant([LUMA])  # each row: the luma weights
    sat = saturation * eye + (1.0 - saturation) * gray
    cos, sin = tf.cos(hue_radians), tf.sin(hue_radians)
    rotate = tf.stack([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
    hue = tf.constant(YIQ_TO_RGB) @ rotate @ tf.constant(RGB_TO_YIQ)
    mixed = tf.where(hue_first, sat @ hue, hue @ sat)
    return brightness * mixed


def random_color(features: dict, jitter: float = 0.4, pca_std: float = 0.1) -> dict:
    """image: float32 [H, W, 3] in 0..255 -> same, color-jittered and PCA-lit, in 0..255.

    Brightness and saturation coefficients are uniform in [1 - jitter, 1 + jitter] (the paper's
    [0.6, 1.4]; the original added +-0.3 to 0..255 pixels, a no-op), the hue turns by up to
    jitter x pi, in random order; then AlexNet PCA noise with alpha ~ N(0, pca_std). One
    3x3 matrix product and one offset per pixel.
    """
    image = features["image"]
    matrix = tf.eye(3)
    if jitter > 0:
        low, high = 1.0 - jitter, 1.0 + jitter
        matrix = color_matrix(
            tf.random.uniform([], low, high),
            tf.random.uniform([], low, high),
            tf.random.uniform([], -jitter, jitter) * math.pi,
            tf.random.uniform([]) < 0.5,
        )
    offset = tf.zeros([3])
    if pca_std > 0:
        alpha = tf.random.normal([3], stddev=pca_std)
        offset = tf.linalg.matvec(tf.constant(PCA_EIGVEC), alpha * tf.constant(PCA_EIGVAL))
    pixels = tf.reshape(image, [-1, 3]) @ tf.transpose(matrix) + offset  # (H*W, 3)
    image = tf.reshape(tf.clip_by_value(pixels, 0.0, 255.0), tf.shape(image))
    return {**features, "image": image}


def normalize(features: dict) -> dict:
    """image: float32 [H, W, 3] in 0..255 -> per-channel (x - mean) / std."""
    image = (features["image"] - tf.constant(MEAN_RGB)) / tf.constant(STD_RGB)
    return {**features, "image": image}
