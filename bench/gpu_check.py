"""The GPU check: the product's own training function on in-memory data, on any Keras backend.

    KERAS_BACKEND=jax python bench/gpu_check.py [--quick] [--digits bench/data/digits.npz]

It calls `components.train.loop.fit_classifier`, the function the train task runs on TensorFlow;
the only differences are arrays instead of tf.data, and the backend. Two parts:

1. throughput: Darknet53 and ResNet-50-D at 224 px, batch 256 (halved until it fits), on
   synthetic uint8 images with the on-device augmentation inside the step, in float32, mixed
   bfloat16 and mixed float16, one step per call into the compiled step, and bfloat16 again
   with --per-call steps per call (steps_per_execution): images/s after warm-up and the model
   FLOPs utilisation (3 x the forward FLOPs per image, against --peak-tflops);
2. convergence: the demo digits (`make gpu-data` writes them to bench/data/digits.npz) trained
   with the full recipe (warmup, cosine, label smoothing, mixup, rotation and color on the
   device) in mixed precision; top-1 on the held-out fifth.

`--quick` runs both at toy sizes (tiny variants, 32 px, a few steps) so that a CPU finishes in
minutes: `make gpu-check-cpu` does that in a Keras + JAX environment without TensorFlow. Goals on
the H200: Darknet53 224 mixed >= 2,500 img/s, mixed >= 2x float32, digits >= 0.97 top-1. Exits
1 when a goal of the chosen mode is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402

from components.train.config import AugmentConfig, TrainConfig  # noqa: E402
from components.train.devices import detect  # noqa: E402
from components.train.loop import TrainData, fit_classifier  # noqa: E402
from components.train.models import create_model  # noqa: E402

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def batches(images: np.ndarray, labels: np.ndarray, batch: int, epoch: int, skip: int = 0):
    """Endless (images, labels) batches of the arrays: epoch `epoch`'s own order from its batch
    `skip` on (TrainData.train), then further passes, each reshuffled."""
    rng = np.random.default_rng([epoch])
    while True:
        order = rng.permutation(len(labels))
        for start in range(skip * batch, len(order) - batch + 1, batch):
            take = order[start : start + batch]
            yield images[take], labels[take]
        skip = 0


def one_pass(images: np.ndarray, labels: np.ndarray, batch: int):
    for start in range(0, len(labels), batch):
        yield images[start : start + batch], labels[start : start + batch]


def array_data(train, val, batch: int, num_classes: int) -> TrainData:
    (train_images, train_labels), (val_images, val_labels) = train, val
    return TrainData(
        train=lambda epoch, skip: batches(train_images, train_labels, batch, epoch, skip),
        validation=lambda: one_pass(val_images, val_labels, batch),
        steps_per_epoch=len(train_labels) // batch,
        num_classes=num_classes,
    )


def forward_flops(model: keras.Model) -> float:
    """Multiply-adds x 2 of the convolutions and dense layers for one image."""
    flops = 0.0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            out = layer.output.shape  # (1?, H, W, C) or channels first
            spatial = np.prod(out[1:3] if layer.data_format == "channels_last" else out[2:4])
            kernel = np.prod(layer.kernel.shape)  # kh * kw * cin * cout
            flops += 2.0 * float(spatial) * float(kernel)
        elif isinstance(layer, keras.layers.Dense):
            flops += 2.0 * float(np.prod(layer.kernel.shape))
    return flops


def measure(
    name: str, precision: str, size: int, batch: int, steps: int, window: int, per_call: int = 1
) -> dict:
    """images/s of fit_classifier's steps after the first (compiling) window, `per_call` steps
    per call into the compiled step."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch * 4, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 1000, batch * 4).astype(np.int32)
    config = TrainConfig(
        model=name,
        image_size=size,
        batch_size=batch,
        epochs=1,
        warmup_steps=1,
        precision=precision,
        log_every=window,
        checkpoint_every=per_call * 10**8,
        eval_every_epochs=0,
        max_steps=steps,
        augment=AugmentConfig(),
        steps_per_execution=per_call,
    )
    data = TrainData(
        train=lambda epoch, skip: batches(images, labels, batch, epoch, skip),
        validation=lambda: one_pass(images[:batch], labels[:batch], batch),
        steps_per_epoch=steps,
        num_classes=1000,
    )
    logs = []
    with tempfile.TemporaryDirectory() as out:
        fit_classifier(config, data, out, lambda e: logs.append(e) if e["type"] == "log" else None)
    rates = [e["images_per_second"] for e in logs[1:]] or [logs[-1]["images_per_second"]]
    return {"images_per_second": statistics.median(rates), "windows": len(rates)}


def throughput(args) -> list[dict]:
    models = ("darknet53-tiny", "resnet50d-tiny") if args.quick else ("darknet53", "resnet50d")
    size = 32 if args.quick else 224
    rows = []
    for name in models:
        flops = 3 * forward_flops(create_model(name, 1000, input_size=size))
        # every precision one step per call, and bfloat16 also args.per_call steps per call
        runs = [(p, 1) for p in PRECISIONS] + [("mixed_bfloat16", args.per_call)]
        for precision, per_call in runs:
            batch = args.batch
            while True:
                try:
                    result = measure(
                        name, precision, size, batch, args.steps, args.window, per_call
                    )
                    break
                except Exception as error:  # out of device memory: halve the batch
                    if "RESOURCE_EXHAUSTED" not in str(error) or batch <= 8:
                        raise
                    batch //= 2
            rate = result["images_per_second"]
            row = {
                "model": name,
                "precision": precision,
                "steps_per_execution": per_call,
                "size": size,
                "batch": batch,
                "images_per_second": round(rate, 1),
                "train_gflops_per_image": round(flops / 1e9, 3),
            }
            if args.peak_tflops:
                row["mfu"] = round(rate * flops / (args.peak_tflops * 1e12), 4)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def convergence(args) -> dict:
    with np.load(args.digits) as arrays:
        train = (arrays["train_images"], arrays["train_labels"])
        val = (arrays["val_images"], arrays["val_labels"])
    config = TrainConfig(
        model="darknet53-tiny" if args.quick else "darknet53",
        width=1.0 if args.quick else 0.25,
        image_size=train[0].shape[1],
        epochs=3 if args.quick else 30,
        batch_size=64 if args.quick else 128,
        warmup_epochs=1 if args.quick else 2,
        mixup_alpha=0.2,
        mixup_off_epochs=1 if args.quick else 5,
        augment=AugmentConfig(flip=False),  # digits are not mirror-symmetric
        precision="mixed_bfloat16",
        log_every=10**9,
        eval_every_epochs=0,
    )
    data = array_data(train, val, config.batch_size, num_classes=10)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        summary = fit_classifier(config, data, out)
    result = {
        "digits_top1": round(summary["final"]["top1"], 4),
        "epochs": config.epochs,
        "steps": summary["steps"],
        "precision": summary["precision"],
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes, for a CPU")
    parser.add_argument("--digits", default="bench/data/digits.npz")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--steps", type=int, help="steps per throughput run")
    parser.add_argument("--window", type=int, help="steps per timing window")
    parser.add_argument(
        "--per-call",
        type=int,
        help="steps per call of the extra bfloat16 run (steps_per_execution)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, help="the chip's dense bf16 peak (H200: 989); MFU against it"
    )
    args = parser.parse_args()
    args.batch = args.batch or (16 if args.quick else 256)
    args.steps = args.steps or (6 if args.quick else 60)
    args.window = args.window or (2 if args.quick else 10)
    args.per_call = args.per_call or (2 if args.quick else 10)
    args.window = math.lcm(args.window, args.per_call)  # logs come at whole calls
    if not Path(args.digits).exists():
        parser.error(f"{args.digits} is missing: write it with `make gpu-data`")
    found = detect()
    print(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "keras": keras.__version__,
                "device": found.kind,
                "names": list(found.names),
                "capability": found.capability,
            }
        ),
        flush=True,
    )
    rows = throughput(args)
    digits = convergence(args)

    failures = []
    if args.quick:  # the code path ran; results only need to be sane on a CPU
        if not all(np.isfinite(r["images_per_second"]) for r in rows):
            failures.append("a throughput run gave no rate")
        if not digits["digits_top1"] > 0.2:  # chance is 0.1
            failures.append(f"digits top-1 {digits['digits_top1']} is at chance")
    else:
        rate = {
            (r["model"], r["precision"]): r["images_per_second"]
            for r in rows
            if r["steps_per_execution"] == 1
        }
        mixed = max(rate[("darknet53", "mixed_bfloat16")], rate[("darknet53", "mixed_float16")])
        if mixed < 2500:
            failures.append(f"Darknet53 224 mixed {mixed:.0f} img/s < 2,500")
        if mixed < 2 * rate[("darknet53", "float32")]:
            failures.append(f"Darknet53 mixed {mixed:.0f} img/s < 2x float32")
        if digits["digits_top1"] < 0.97:
            failures.append(f"digits top-1 {digits['digits_top1']} < 0.97")
    for failure in failures:
        print(f"GOAL MISSED: {failure}", flush=True)
    print("gpu check: " + ("passed" if not failures else "failed"), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
