"""The CPU side of the image transforms, as pure functions over a feature dict.

Every op takes and returns a dict of tensors; keys, shapes and dtypes are in each docstring.
They run eagerly and inside `Dataset.map` alike (tests check both). The CPU does only what needs
the JPEG: train: decode_random_crop (box-guided, Inception's) or decode_resized_crop
(GluonCV's) (only the crop window is decoded) -> resize_crop (uint8);
eval: decode_center_crop (uint8). Flip, rotation, color, PCA lighting, normalization and mixup
run batched on the accelerator (`components.train.augment`).
"""

from __future__ import annotations

import tensorflow as tf

EVAL_CROP_FRACTION = 224 / 256
# One resize filter for training and evaluation (and so for serving): bilinear, widened when it
# shrinks so that every source pixel counts (antialiasing, as PIL and torchvision resize). The
# network learns the look of its training crops; evaluated images must have the same.
RESIZE = {"method": "bilinear", "antialias": True}


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


def decode_window(
    image: tf.Tensor, window: tf.Tensor, size: int | None = None, dct_scaling: bool = True
) -> tf.Tensor:
    """JPEG string [] and a window [top, left, height, width] in its pixels -> uint8 [h', w',
    3], the window decoded alone. With `dct_scaling` and a training `size`, libjpeg decodes it
    at the smallest of 1/8, 1/4 or 1/2 scale that keeps its shorter side at least `size` (the
    scaled inverse DCT: most of the decoder's work after the entropy decoding shrinks with the
    area), so the resize that follows has less to do; else, and when the window is under twice
    the size, at full scale."""
    if size is None or not dct_scaling:
        return tf.io.decode_and_crop_jpeg(image, window, channels=3)
    shorter = tf.minimum(window[2], window[3])
    # 0, 1, 2, 3 halvings: while the window, its edges moved in to multiples of the scale
    # (up to ratio - 1 pixels each), stays at least `size` on its shorter side
    ratios = tf.constant([2, 4, 8])
    halvings = tf.reduce_sum(tf.cast(shorter >= size * ratios + 2 * (ratios - 1), tf.int32))

    def at(ratio: int):
        def decode() -> tf.Tensor:
            # The window in the scaled image's pixels (libjpeg crops after scaling), its edges
            # moved in to multiples of `ratio` (fewer than `ratio` pixels: a random crop all
            # the same) so that its scaled pixels are exactly those of the window: a window
            # one pixel off would come out shifted by half a scaled pixel (PSNR ~30 dB against
            # full-scale decoding instead of ~44).
            top = (window[0] + ratio - 1) // ratio
            left = (window[1] + ratio - 1) // ratio
            height = tf.maximum((window[0] + window[2]) // ratio - top, 1)
            width = tf.maximum((window[1] + window[3]) // ratio - left, 1)
            scaled = tf.stack([top, left, height, width])
            return tf.io.decode_and_crop_jpeg(image, scaled, channels=3, ratio=ratio)

        return decode

    return tf.switch_case(halvings, [at(1), at(2), at(4), at(8)])


def decode_random_crop(
    features: dict,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
    size: int | None = None,
    dct_scaling: bool = True,
) -> dict:
    """image: JPEG string [] -> uint8 [h, w, 3], a random crop of the image.

    Samples the crop from the JPEG header alone and decodes only the crop window (the original
    decoded the whole image first), at a reduced scale when it is at least twice the training
    `size` (`decode_window`). Known boxes steer the crop to cover at least 10% of one.
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
    return {**features, "image": decode_window(image, window, size, dct_scaling)}


def decode_resized_crop(
    features: dict,
    size: int,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
    dct_scaling: bool = True,
) -> dict:
    """image: JPEG string [] -> uint8 [h, w, 3], a random crop as GluonCV's ImageNet recipe
    makes it (MXNet's `random_size_crop`): up to `attempts` draws of an area (a share of the
    image's, uniform) and an aspect ratio (log-uniform), the first that fits taken at a uniform
    place; when none fits, the central `size` x `size` pixels (fewer if the image is smaller),
    never the whole image stretched. Boxes play no part. Only the crop window is decoded, at a
    reduced scale when it is at least twice `size` (`decode_window`).
    """
    image = features["image"]
    shape = tf.cast(tf.io.extract_jpeg_shape(image)[:2], tf.float32)
    height, width = shape[0], shape[1]
    area = tf.random.uniform([attempts], *area_range) * height * width
    log_low, log_high = tf.math.log(aspect_range[0]), tf.math.log(aspect_range[1])
    ratio = tf.exp(tf.random.uniform([attempts], log_low, log_high))
    crop_w = tf.round(tf.sqrt(area * ratio))
    crop_h = tf.round(tf.sqrt(area / ratio))
    fits = (crop_w <= width) & (crop_h <= height) & (crop_w >= 1) & (crop_h >= 1)
    first = tf.argmax(tf.cast(fits, tf.int32))  # the first that fits (0 if none: not used)
    side = tf.minimum(tf.cast(size, tf.float32), tf.minimum(height, width))
    found = tf.reduce_any(fits)
    crop_h = tf.where(found, crop_h[first], side)
    crop_w = tf.where(found, crop_w[first], side)
    jitter = tf.random.uniform([2])
    top = tf.where(
        found, tf.floor(jitter[0] * (height - crop_h + 1)), tf.floor((height - side) / 2)
    )
    left = tf.where(found, tf.floor(jitter[1] * (width - crop_w + 1)), tf.floor((width - side) / 2))
    window = tf.cast(tf.stack([top, left, crop_h, crop_w]), tf.int32)
    return {**features, "image": decode_window(image, window, size, dct_scaling)}


def resize_crop(features: dict, size: int) -> dict:
    """image: uint8 [h, w, 3] -> uint8 [size, size, 3], resized as evaluation resizes (RESIZE),
    rounded.

    uint8 keeps the host-to-device copy at a quarter of float32's; the accelerator does the
    rest of the augmentation (`components.train.augment`).
    """
    image = tf.image.resize(features["image"], [size, size], **RESIZE)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    return {**features, "image": tf.reshape(image, [size, size, 3])}


def decode_center_crop(features: dict, size: int) -> dict:
    """image: JPEG string [] -> uint8 [size, size, 3].

    Resizes the shorter side to size / 0.875 (256 for 224) keeping the aspect ratio, then takes
    the central size x size crop.
    """
    image = tf.io.decode_jpeg(features["image"], channels=3)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / EVAL_CROP_FRACTION) / tf.reduce_min(shape)
    new_shape = tf.cast(tf.math.round(shape * scale), tf.int32)
    new_shape = tf.maximum(new_shape, size)
    resized = tf.image.resize(image, new_shape, **RESIZE)
    top = (new_shape[0] - size) // 2
    left = (new_shape[1] - size) // 2
    crop = resized[top : top + size, left : left + size]
    crop = tf.cast(tf.clip_by_value(tf.round(crop), 0.0, 255.0), tf.uint8)
    return {**features, "image": tf.reshape(crop, [size, size, 3])}
