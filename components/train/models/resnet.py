"""ResNet-50 as torchvision builds it ("v1b"), and the Bag-of-Tricks ResNet-D (timm's resnet50d).

Every conv is Conv (no bias, he-normal) -> BatchNorm, mostly followed by ReLU. Four stages of
bottleneck blocks (3, 4, 6, 3) of widths 64, 128, 256, 512: 1x1 to the width, 3x3, 1x1 up to four
times the width, add the shortcut, ReLU. The first block of each stage changes the channels (and,
in stages 2-4, halves H and W); its shortcut is a projection, the others are the identity.
Classifier: global average pool -> Dense with bias to the logits, both in float32.

- `resnet50` (ResNet-B, the "v1b" of GluonCV and torchvision): stem 7x7/2 conv 64 -> BN -> ReLU
  -> 3x3/2 max pool; a block downsamples on its 3x3 conv, not on the first 1x1 (a strided 1x1
  would ignore three quarters of its input); projection shortcut 1x1/s conv -> BN.
- `resnet50d` (ResNet-D, paper §4.1): ResNet-B with a deep stem of three 3x3 convs (32, 32, 64;
  the first stride 2), each -> BN -> ReLU, and a shortcut that averages 2x2 before its 1x1 conv
  (stride 1), so the shortcut too sees every input pixel. Stage 1 does not downsample: no pool.

Padding is torchvision's: symmetric, written as ZeroPadding2D then "valid" for the strided convs
and the max pool, so 224 -> 112 (stem) -> 56 (pool, stage 1) -> 28 -> 14 -> 7 (stages 2-4). Zero
padding before the max pool equals torch's -inf padding because its input follows a ReLU (>= 0).

With `zero_gamma` the BN closing each block's residual branch (`<block>_bn3`, after the 1x1
expansion) starts with γ = 0, so every block starts as the identity (paper §3.1).
`width` scales every channel count (at least 4) and `input_size` the input, so the same topology
fits a CPU; the `-tiny` variants are that, for tests.
"""

from __future__ import annotations

import keras
from keras import layers

from components.train.models import register

STAGE_WIDTHS = (64, 128, 256, 512)  # the bottleneck (3x3) width; a block outputs 4x that
STAGE_BLOCKS = (3, 4, 6, 3)
EXPANSION = 4
BN_MOMENTUM = 0.9  # MXNet/GluonCV default used by the paper
BN_EPSILON = 1e-5
TINY_WIDTH = 1 / 16  # the -tiny variants: stem 4 channels, blocks 16..128 wide


def _channels(filters: int, width: float) -> int:
    return max(4, int(round(filters * width)))


def conv_bn(
    x,
    filters: int,
    kernel: int,
    stride: int,
    name: str,
    data_format: str,
    relu: bool = True,
    zero_gamma: bool = False,
    index: str = "",
):
    """`{name}_conv{index}` -> `_bn{index}` (-> `_relu{index}`).

    Strided convs pad (kernel - 1) // 2 on every side, as torch does, then "valid": Keras' "same"
    would pad only bottom/right on even inputs and shift every feature map by half a pixel.
    """
    if stride > 1 and kernel > 1:
        pad = (kernel - 1) // 2
        x = layers.ZeroPadding2D(pad, data_format=data_format, name=f"{name}_pad{index}")(x)
    x = layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same" if stride == 1 else "valid",
        use_bias=False,
        kernel_initializer="he_normal",
        data_format=data_format,
        name=f"{name}_conv{index}",
    )(x)
    x = layers.BatchNormalization(
        axis=1 if data_format == "channels_first" else -1,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=f"{name}_bn{index}",
    )(x)
    if relu:
        x = layers.ReLU(name=f"{name}_relu{index}")(x)
    return x


def shortcut(x, filters: int, stride: int, name: str, data_format: str, avg_down: bool):
    """The projection of a stage's first block: 1x1/s conv -> BN, or (ResNet-D) 2x2 avg -> 1x1."""
    if avg_down and stride > 1:
        # "same" pads odd sizes bottom/right and leaves the padding out of the mean: timm's
        # ceil_mode=True, count_include_pad=False. On even sizes it is plain "valid".
        x = layers.AveragePooling2D(
            stride, stride, padding="same", data_format=data_format, name=f"{name}_down_pool"
        )(x)
        stride = 1
    return conv_bn(x, filters, 1, stride, f"{name}_down", data_format, relu=False)


def bottleneck(
    x,
    filters: int,
    stride: int,
    project: bool,
    name: str,
    data_format: str,
    zero_gamma: bool,
    avg_down: bool,
):
    """1x1 to `filters`, 3x3/stride, 1x1 to 4x `filters`, add, ReLU (ResNet-B: 3x3 strides)."""
    residual = x
    if project:
        residual = shortcut(x, filters * EXPANSION, stride, name, data_format, avg_down)
    x = conv_bn(x, filters, 1, 1, name, data_format, index="1")
    x = conv_bn(x, filters, 3, stride, name, data_format, index="2")  # (B, H/s, W/s, C)
    x = conv_bn(
        x,
        filters * EXPANSION,
        1,
        1,
        name,
        data_format,
        relu=False,
        zero_gamma=zero_gamma,
        index="3",
    )
    x = layers.Add(name=f"{name}_add")([residual, x])
    return layers.ReLU(name=f"{name}_out")(x)


def build_resnet(
    name: str,
    num_classes: int,
    width: float,
    input_size: int,
    data_format: str,
    zero_gamma: bool,
    *,
    deep_stem: bool = False,
    avg_down: bool = False,
) -> keras.Model:
    """A ResNet-50 (B); `deep_stem` and `avg_down` together make it a ResNet-D."""
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"data_format must be channels_last or channels_first, got {data_format}")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    if input_size < 32:
        raise ValueError(f"input_size must be at least 32 (five stride-2 steps), got {input_size}")
    inputs = keras.Input((input_size, input_size, 3), name="image")  # (B, H, W, 3)
    x = inputs
    if data_format == "channels_first":
        x = layers.Permute((3, 1, 2), name="to_channels_first")(x)  # (B, 3, H, W)
    if deep_stem:
        x = conv_bn(x, _channels(32, width), 3, 2, "stem", data_format, index="1")  # H/2
        x = conv_bn(x, _channels(32, width), 3, 1, "stem", data_format, index="2")
        x = conv_bn(x, _channels(64, width), 3, 1, "stem", data_format, index="3")
    else:
        x = conv_bn(x, _channels(64, width), 7, 2, "stem", data_format)  # H/2
    x = layers.ZeroPadding2D(1, data_format=data_format, name="stem_pool_pad")(x)
    x = layers.MaxPooling2D(3, 2, data_format=data_format, name="stem_pool")(x)  # H/4
    for stage, (filters, blocks) in enumerate(zip(STAGE_WIDTHS, STAGE_BLOCKS, strict=True)):
        filters = _channels(filters, width)
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1  # stages 2-4 halve H and W
            x = bottleneck(
                x,
                filters,
                stride,
                project=block == 0,
                name=f"stage{stage + 1}_block{block + 1}",
                data_format=data_format,
                zero_gamma=zero_gamma,
                avg_down=avg_down,
            )  # (B, H/4|8|16|32, W/.., 4 * filters)
    # The head runs in float32 under mixed precision: the mean over H*W and the logits.
    x = layers.GlobalAveragePooling2D(data_format=data_format, dtype="float32", name="pool")(x)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)  # (B, K)
    return keras.Model(inputs, logits, name=name)


@register("resnet50")
def resnet50(
    num_classes: int,
    width: float = 1.0,
    input_size: int = 224,
    data_format: str = "channels_last",
    zero_gamma: bool = True,
) -> keras.Model:
    """torchvision's ResNet-50 (v1b); inputs are NHWC float images whatever `data_format` says."""
    return build_resnet("resnet50", num_classes, width, input_size, data_format, zero_gamma)


@register("resnet50d")
def resnet50d(
    num_classes: int,
    width: float = 1.0,
    input_size: int = 224,
    data_format: str = "channels_last",
    zero_gamma: bool = True,
) -> keras.Model:
    """timm's ResNet-50-D: deep stem and average-pool shortcuts; NHWC float images in."""
    return build_resnet(
        "resnet50d",
        num_classes,
        width,
        input_size,
        data_format,
        zero_gamma,
        deep_stem=True,
        avg_down=True,
    )


@register("resnet50-tiny")
def resnet50_tiny(
    num_classes: int,
    width: float = 1.0,
    input_size: int = 32,
    data_format: str = "channels_last",
    zero_gamma: bool = True,
) -> keras.Model:
    """resnet50 at 1/16 of the width (`width` multiplies that), 32x32 inputs by default: tests."""
    tiny = width * TINY_WIDTH
    return build_resnet("resnet50_tiny", num_classes, tiny, input_size, data_format, zero_gamma)


@register("resnet50d-tiny")
def resnet50d_tiny(
    num_classes: int,
    width: float = 1.0,
    input_size: int = 32,
    data_format: str = "channels_last",
    zero_gamma: bool = True,
) -> keras.Model:
    """resnet50d at 1/16 of the width (`width` multiplies that), 32x32 inputs by default: tests."""
    tiny = width * TINY_WIDTH
    return build_resnet(
        "resnet50d_tiny",
        num_classes,
        tiny,
        input_size,
        data_format,
        zero_gamma,
        deep_stem=True,
        avg_down=True,
    )
