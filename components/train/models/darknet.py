"""Darknet53, the YOLOv3 backbone, as an ImageNet classifier.

Every conv is Conv (no bias, he-normal) -> BatchNorm -> LeakyReLU(0.1). Stem 32 3x3, then five
stages: a stride-2 3x3 conv (64, 128, 256, 512, 1024) followed by 1, 2, 8, 8, 4 residual blocks
(1x1 to half the channels, 3x3 back, add). The outputs of the 256-, 512- and 1024-channel stages
are the layers `route1`, `route2`, `route3` for a YOLOv3 head (`backbone_routes`). Classifier:
global average pool -> 1x1 conv with bias to the logits, in float32.

`width` scales every channel count and `input_size` the input, so the same topology fits a CPU;
`darknet53-tiny` is that, for tests.
"""

from __future__ import annotations

import keras
from keras import layers

from components.train.models import register

STAGE_FILTERS = (64, 128, 256, 512, 1024)
STAGE_BLOCKS = (1, 2, 8, 8, 4)
ROUTE_STAGES = {2: "route1", 3: "route2", 4: "route3"}  # stage index -> exposed layer name
BN_MOMENTUM = 0.9  # MXNet/GluonCV default used by the paper
BN_EPSILON = 1e-5
TINY_WIDTH = 1 / 16  # darknet53-tiny: stages 4..64 channels wide


def _channels(filters: int, width: float) -> int:
    return max(4, int(round(filters * width)))


def conv_bn_leaky(
    x, filters: int, kernel: int, stride: int, name: str, data_format: str, zero_gamma: bool = False
):
    """Conv -> BN -> LeakyReLU(0.1). Stride-2 convs pad top-left, as Darknet does, then "valid"."""
    if stride == 2:
        pad = ((1, 0), (1, 0))
        x = layers.ZeroPadding2D(pad, data_format=data_format, name=f"{name}_pad")(x)
    x = layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same" if stride == 1 else "valid",
        use_bias=False,
        kernel_initializer="he_normal",
        data_format=data_format,
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(
        axis=1 if data_format == "channels_first" else -1,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=f"{name}_bn",
    )(x)
    return layers.LeakyReLU(negative_slope=0.1, name=f"{name}_leaky")(x)


def residual_block(x, filters: int, name: str, data_format: str, zero_gamma: bool):
    """1x1 to half the channels, 3x3 back to full, add. Zero-gamma starts the block as identity."""
    shortcut = x
    x = conv_bn_leaky(x, filters // 2, 1, 1, f"{name}_a", data_format)
    x = conv_bn_leaky(x, filters, 3, 1, f"{name}_b", data_format, zero_gamma=zero_gamma)
    return layers.Add(name=f"{name}_add")([shortcut, x])


def build_darknet53(
    name: str,
    num_classes: int,
    width: float,
    input_size: int,
    data_format: str,
    zero_gamma: bool,
) -> keras.Model:
    """Darknet53 classifier; inputs are NHWC float images whatever `data_format` says."""
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"data_format must be channels_last or channels_first, got {data_format}")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    if input_size < 32:
        raise ValueError(f"input_size must be at least 32 (five stride-2 stages), got {input_size}")
    inputs = keras.Input((input_size, input_size, 3), name="image")  # (B, H, W, 3)
    x = inputs
    if data_format == "channels_first":
        x = layers.Permute((3, 1, 2), name="to_channels_first")(x)  # (B, 3, H, W)
    x = conv_bn_leaky(x, _channels(32, width), 3, 1, "stem", data_format)
    for stage, (filters, blocks) in enumerate(zip(STAGE_FILTERS, STAGE_BLOCKS, strict=True)):
        filters = _channels(filters, width)
        x = conv_bn_leaky(x, filters, 3, 2, f"stage{stage + 1}_down", data_format)  # H/2, W/2
        for block in range(blocks):
            x = residual_block(
                x, filters, f"stage{stage + 1}_block{block + 1}", data_format, zero_gamma
            )
        if stage in ROUTE_STAGES:
            x = layers.Identity(name=ROUTE_STAGES[stage])(x)  # (B, H/8|16|32, W/.., C)
    x = layers.GlobalAveragePooling2D(data_format=data_format, keepdims=True, name="pool")(x)
    x = layers.Conv2D(
        num_classes, 1, use_bias=True, data_format=data_format, dtype="float32", name="logits_conv"
    )(x)  # (B, 1, 1, K): the head stays float32
    logits = layers.Flatten(name="logits", dtype="float32")(x)  # (B, K)
    return keras.Model(inputs, logits, name=name)


@register("darknet53")
def darknet53(
    num_classes: int,
    width: float = 1.0,
    input_size: int = 224,
    data_format: str = "channels_last",
    zero_gamma: bool = True,
) -> keras.Model:
    """The YOLOv3 backbone as an ImageNet classifier."""
    return build_darknet53("darknet53", num_classes, width, input_size, data_format, zero_gamma)


@register("darknet53-tiny")
def darknet53_tiny(
    num_classes: int,
    width: float = 1.0,
    input_size: int = 32,
    data_format: str = "channels_last",
    zero_gamma: bool = True,
) -> keras.Model:
    """darknet53 at 1/16 of the width (`width` multiplies that), 32x32 inputs by default: tests."""
    tiny = width * TINY_WIDTH
    return build_darknet53("darknet53_tiny", num_classes, tiny, input_size, data_format, zero_gamma)


def backbone_routes(model: keras.Model) -> keras.Model:
    """The feature extractor a YOLOv3 detector builds on: image -> (route1, route2, route3)."""
    outputs = [model.get_layer(name).output for name in ROUTE_STAGES.values()]
    return keras.Model(model.input, outputs, name=f"{model.name}_backbone")
