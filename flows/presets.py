"""Named whole-pipeline configurations. Each docstring: how to run it, how long, what it reaches.

A preset returns a `PipelineConfig`; the flow's `Overrides` adjust a few fields on top of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from components import settings
from components.evaluate.gate import GateConfig
from components.ingest import IngestSettings
from components.train.config import AugmentConfig, TrainConfig


class WarmStart(BaseModel):
    """The schedule of a training that starts from a registered model's weights (`init_from`):
    shorter, with a short warmup to a lower peak, so that it refines rather than relearns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int | None = Field(
        None, ge=1, description="None: a quarter of the preset's epochs (at least 1)"
    )
    lr_scale: float = Field(0.1, gt=0, le=1, description="peak LR as a fraction of the preset's")
    warmup_epochs: float = Field(0.5, ge=0, description="linear warmup to that peak")

    def applied(self, train: TrainConfig, weights: str) -> dict:
        """The training settings a warm start changes, as dotted settings of TrainConfig. The
        cosine schedule peaks at `lr_scale` of the preset's LR; the step schedule (absolute LRs)
        starts there too and follows the preset's steps from where they fall to it, compressed
        into the warm start's epochs, to end at the LR the from-scratch run ended at."""
        epochs = self.epochs or max(1, train.epochs // 4)
        applied = {
            "init_weights": weights,
            "epochs": epochs,
            "base_lr": train.base_lr * self.lr_scale,
            "warmup_epochs": self.warmup_epochs,
            "warmup_steps": None,
            "mixup_off_epochs": min(train.mixup_off_epochs, epochs),
        }
        if train.schedule == "step":
            applied["step_peak"] = train.step_values[0] * self.lr_scale
            applied["step_from_epochs"] = train.epochs
        return applied


class PipelineConfig(BaseModel):
    """Every stage's settings; saved as config.json in each run's folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ingest: IngestSettings = IngestSettings()
    train: TrainConfig = TrainConfig()
    gate: GateConfig = GateConfig()
    eval_batch_size: int = Field(64, ge=1, description="images per servable call in evaluation")
    spans: str = Field(
        "all",
        pattern=r"^(all|last [1-9][0-9]*)$",
        description="which spans of the data to train and evaluate on: 'all' or 'last N'",
    )
    retrain: Literal["on_new_data", "always"] = Field(
        "on_new_data",
        description="on_new_data: a run whose spans, training settings and code are the "
        "champion's ends without training; always: train anyway (a new recipe, a manual rerun)",
    )
    warm: WarmStart = WarmStart()
    model_name_suffix: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_.\-]*$",
        description="added to the default registry name (<model>-<data name>): a preset for "
        "tests registers apart from the models people use",
    )


def demo() -> PipelineConfig:
    """The bundled handwritten digits (1,442 train / 355 val JPEGs, 32 px), a 1/4-width Darknet53.

    Run: `make demo` (or `prefect deployment run train-imagenet/demo --watch` once the stack is
    up). About 2 minutes of training on 2 CPU cores; reaches about 0.98 top-1 (gate floor 0.90).
    Digits are not mirror-symmetric, so flips are off, and crops keep at least 25% of the image.
    """
    return PipelineConfig(
        train=TrainConfig(
            width=0.25,
            image_size=32,
            epochs=30,
            batch_size=64,
            warmup_epochs=2,
            augment=AugmentConfig(crop_area=(0.25, 1.0), flip=False),
            log_every=50,
            eval_every_epochs=5,
            shuffle_buffer=2048,
        ),
        gate=GateConfig(min_top1=0.90, max_regression=0.02, max_drop_from_best=0.02),
    )


def smoke() -> PipelineConfig:
    """The demo's code path in seconds: a 1/8-width Darknet53 for 6 steps. For tests.

    Run: `prefect deployment run train-imagenet/demo -p preset=smoke`. Reaches nothing useful
    (top-1 near chance); the gate's floor is 0 and its margins 1 so that the registration path
    runs, so it registers under its own name (`<model>-<data>-smoke`) and never moves a
    champion it did not make (a gate that waives its margins moves none).
    """
    return PipelineConfig(
        model_name_suffix="-smoke",
        train=TrainConfig(
            width=0.125,
            image_size=32,
            epochs=1,
            batch_size=8,
            warmup_steps=2,
            max_steps=6,
            augment=AugmentConfig(crop_area=(0.25, 1.0), flip=False),
            log_every=2,
            checkpoint_every=3,
            shuffle_buffer=256,
        ),
        gate=GateConfig(
            min_top1=0.0,
            max_regression=1.0,
            max_drop_from_best=1.0,
            max_class_drop=1.0,
            max_span_drop=1.0,
        ),
    )


def imagenet_darknet53() -> PipelineConfig:
    """ILSVRC2012 with the full Bag-of-Tricks recipe on Darknet53: 224 px, batch 128, 120 epochs.

    Run: `prefect deployment run train-imagenet/imagenet -p data_dir=/data/imagenet`. Needs GPUs:
    mixed float16 with XLA; days on one GPU. The YOLOv3 paper reports 77.2% top-1 for Darknet-53
    (at 256 px); the gate floor here is 0.70.
    """
    return PipelineConfig(
        ingest=IngestSettings(train_shards=1024, validation_shards=128),
        train=TrainConfig(
            epochs=120,
            batch_size=128,
            log_every=100,
            checkpoint_every=2000,
            steps_per_execution=50,  # one round trip to the host per 50 steps
        ),
        gate=GateConfig(min_top1=0.70, max_regression=0.005),
        eval_batch_size=256,
    )


def imagenet_darknet53_original() -> PipelineConfig:
    """The original design's schedule: lr 0.02 at batch 128, 1000 warmup steps, step decay.

    Run: `prefect deployment run train-imagenet/imagenet -p preset=imagenet-darknet53-original`.
    80 epochs with L2 5e-4 on kernels (as decoupled decay), no label smoothing.
    """
    return settings.apply(
        imagenet_darknet53(),
        {
            "train.schedule": "step",
            "train.warmup_steps": 1000,
            "train.epochs": 80,
            "train.weight_decay": 5e-4,
            "train.label_smoothing": 0.0,
        },
    )


def imagenet_resnet50d() -> PipelineConfig:
    """ResNet-50-D on ILSVRC2012 with the paper's recipe except mixup: 120 epochs at 224 px.

    Batch 256 at lr 0.1, 5 warmup epochs then cosine decay, label smoothing 0.1, no bias decay,
    zero-γ, weight decay 1e-4 (spelled out here although most are the defaults: this is the recipe),
    and GluonCV's augmentation: its random crop (the central pixels when 10 draws fail; boxes
    unused), flips, color jitter 0.4, PCA lighting 0.1, no rotation.

    Run: `prefect deployment run train-imagenet/imagenet -p preset=imagenet-resnet50d`. Needs GPUs;
    the paper reports 4.4 minutes an epoch on 8 V100s in float16 at batch 1024 (about 9 hours for
    120 epochs), so expect days on one GPU. The paper reports 78.31% top-1 for this recipe (Table
    6, "+ label smoothing"); the gate floor here is 0.75. Add `-p overrides='{"distill_from":
    "champion"}'` to distill from the registered champion of the same label set (the paper's
    78.67% used a ResNet-152-D teacher).
    """
    return PipelineConfig(
        ingest=IngestSettings(train_shards=1024, validation_shards=128),
        train=TrainConfig(
            model="resnet50d",
            image_size=224,
            epochs=120,
            batch_size=256,
            warmup_epochs=5,
            schedule="cosine",
            label_smoothing=0.1,
            no_bias_decay=True,
            zero_gamma=True,
            weight_decay=1e-4,
            # GluonCV's augmentation, which the paper's numbers come from: its random crop
            # (center crop as fallback, boxes unused), flip, color jitter 0.4, PCA lighting 0.1,
            # and no rotation (the ±7° is the Darknet original's)
            augment=AugmentConfig(crop="gluoncv", rotation_degrees=0.0),
            log_every=100,
            checkpoint_every=2000,
            steps_per_execution=50,  # one round trip to the host per 50 steps
        ),
        gate=GateConfig(min_top1=0.75, max_regression=0.005),
        eval_batch_size=256,
    )


def imagenet_resnet50d_mixup() -> PipelineConfig:
    """`imagenet-resnet50d` plus mixup (α = 0.2), which needs 200 epochs instead of 120.

    Run: `prefect deployment run train-imagenet/imagenet -p preset=imagenet-resnet50d-mixup`.
    5/3 of `imagenet-resnet50d`'s time. The last 10 epochs train on unmixed images (GluonCV's
    habit), so that the model ends on the images it will see. The paper reports 79.15% top-1
    with mixup and 79.29% with mixup and distillation from a ResNet-152-D teacher (Table 6); the
    gate floor here is 0.76.
    """
    return settings.apply(
        imagenet_resnet50d(),
        {
            "train.epochs": 200,
            "train.mixup_alpha": 0.2,
            "train.mixup_off_epochs": 10,
            "gate.min_top1": 0.76,
        },
    )


PresetName = Literal[
    "demo",
    "smoke",
    "imagenet-darknet53",
    "imagenet-darknet53-original",
    "imagenet-resnet50d",
    "imagenet-resnet50d-mixup",
]
PRESETS: dict[str, Callable[[], PipelineConfig]] = {
    "demo": demo,
    "smoke": smoke,
    "imagenet-darknet53": imagenet_darknet53,
    "imagenet-darknet53-original": imagenet_darknet53_original,
    "imagenet-resnet50d": imagenet_resnet50d,
    "imagenet-resnet50d-mixup": imagenet_resnet50d_mixup,
}


def preset(name: str) -> PipelineConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]()
