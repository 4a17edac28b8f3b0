"""The training configuration: one strict, frozen model of every knob, with the paper's defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.train.schedules import ORIGINAL_STEP_BOUNDARIES, ORIGINAL_STEP_VALUES


class AugmentConfig(BaseModel):
    """Train-time preprocessing; defaults are the paper's and GluonCV's ImageNet recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop: Literal["inception", "gluoncv"] = Field(
        "inception",
        description="inception: the crop steered by known boxes, the whole image after 10 "
        "failed draws (the original's); gluoncv: boxes ignored, the central pixels after 10 "
        "failed draws (the paper's ResNet recipe)",
    )
    crop_area: tuple[float, float] = (0.08, 1.0)
    dct_scaling: bool = Field(
        True,
        description="decode a crop window at least twice the training size at 1/2, 1/4 or "
        "1/8 scale (libjpeg's scaled inverse DCT), then resize: far less decoding work",
    )
    crop_aspect: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    rotation_degrees: float = Field(7.0, ge=0, description="the original adds ±7°")
    color_jitter: float = Field(
        0.4, ge=0, lt=1, description="brightness, contrast, saturation in [1-s, 1+s] (GluonCV)"
    )
    hue: float = Field(0.0, ge=0, le=0.5, description="hue turned by up to hue·π; GluonCV: off")
    pca_lighting: float = Field(0.1, ge=0, description="std of the PCA noise α")


class TrainConfig(BaseModel):
    """Everything that shapes a training run; saved as config.json next to its checkpoints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "darknet53"
    width: float = Field(1.0, gt=0, description="channel multiplier (small runs)")
    image_size: int = Field(224, ge=32)
    data_format: Literal["channels_last", "channels_first"] = "channels_last"

    epochs: int = Field(120, ge=1, description="the paper: 120 (the original: 80)")
    batch_size: int = Field(128, ge=1, description="global batch, all devices together")
    base_lr: float = Field(0.1, gt=0, description="lr at batch 256; scaled linearly")
    schedule: Literal["cosine", "step"] = "cosine"
    warmup_epochs: float = Field(5.0, ge=0, description="the paper: 5 epochs")
    warmup_steps: int | None = Field(
        None, ge=0, description="overrides warmup_epochs (original: 1000)"
    )
    step_boundaries: tuple[int, ...] = ORIGINAL_STEP_BOUNDARIES
    step_values: tuple[float, ...] = ORIGINAL_STEP_VALUES
    step_peak: float | None = Field(
        None,
        gt=0,
        description="a warm start on the step schedule: the LR it starts at, from where the "
        "from-scratch schedule falls to it on, compressed into this run (None: from scratch)",
    )
    step_from_epochs: int | None = Field(
        None, ge=1, description="with step_peak: the epochs of the from-scratch run it refines"
    )

    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = Field(1e-4, ge=0)
    no_bias_decay: bool = True
    zero_gamma: bool = True
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    augment: AugmentConfig = AugmentConfig()
    mixup_alpha: float = Field(
        0.0, ge=0, description="mixup's Beta(α, α); the paper: 0.2 (with longer training); 0: off"
    )
    mixup_off_epochs: int = Field(0, ge=0, description="train the last N epochs without mixup")
    teacher: str | None = Field(
        None, description="a Keras model file to distill from (same classes and image size)"
    )
    init_weights: str | None = Field(
        None,
        description="a Keras model file of the same architecture whose weights start the "
        "training (a warm start); checkpoints, when there are any, come first",
    )
    distill_temperature: float = Field(20.0, gt=0, description="the paper: T = 20")
    distill_hard_weight: float = Field(
        0.5, ge=0, le=1, description="weight of the true-label loss against the teacher's"
    )

    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "auto", description="auto: bfloat16 on GPUs that have it, float16 on older, float32 on CPU"
    )
    jit_compile: bool | None = Field(
        None, description="XLA; None: on GPUs (and always on JAX), never around tf.distribute"
    )
    max_skipped_steps: int = Field(
        200, ge=1, description="float16: stop when this many steps in a row update nothing"
    )
    shuffle_buffer: int = Field(10_000, ge=1)
    seed: int = 0
    log_every: int = Field(100, ge=1, description="steps between log lines")
    checkpoint_every: int = Field(1000, ge=1, description="steps between checkpoints")
    eval_every_epochs: int = Field(1, ge=0, description="0: validate only at the end")
    max_steps: int | None = Field(None, ge=1, description="stop early (smoke runs)")
    steps_per_execution: int = Field(
        1,
        ge=1,
        description="train steps per call into the compiled step (one round trip to the host "
        "each): epochs, logs, checkpoints and the non-finite-loss check come at multiples of "
        "it (an epoch drops its last batches short of one); 50 or so on GPUs, 1 on CPUs",
    )

    @model_validator(mode="after")
    def _whole_executions(self) -> TrainConfig:
        for name in ("log_every", "checkpoint_every"):
            if getattr(self, name) % self.steps_per_execution:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be a multiple of steps_per_execution "
                    f"({self.steps_per_execution}): the host sees the steps only that often"
                )
        return self
