"""The bundled demo dataset: scikit-learn's 1,797 handwritten digit scans as a Kaggle ImageNet tree.

    python -m components.demo_data --output DIR [--size 32] [--span I/K]

Real scans (8x8, 17 gray levels) upscaled to RGB JPEGs and laid out exactly like the Kaggle ImageNet
release: wnid-like class folders for train, a flat val folder labelled by
LOC_val_solution.csv (with each digit's ink box), and LOC_synset_mapping.txt. Every fifth image of
each class goes to validation (355 images), the rest to train (1,442).

With `--span I/K` only the I-th of K equal parts of the scans is written, as the span
`DIR/spans/0I/` (complete: with its `_SUCCESS` marker): the demo of data arriving over time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def wnid(digit: int) -> str:
    return f"n0000000{digit}"


def _render(pixels: np.ndarray, size: int) -> Image.Image:
    gray = Image.fromarray((pixels * (255.0 / 16.0)).astype(np.uint8), mode="L")
    return gray.resize((size, size), Image.BICUBIC).convert("RGB")


def _ink_box(pixels: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """Pixel box (xmin, ymin, xmax, ymax) of the inked cells, scaled to the output size."""
    ys, xs = np.nonzero(pixels)
    scale = size / pixels.shape[0]
    return (
        int(xs.min() * scale),
        int(ys.min() * scale),
        int((xs.max() + 1) * scale),
        int((ys.max() + 1) * scale),
    )


def is_validation(seen_of_digit: int) -> bool:
    """Every fifth image of each digit is held out (355 of 1,797)."""
    return seen_of_digit % 5 == 4


def write_digit_arrays(output: str | Path, size: int = 32) -> dict[str, int]:
    """The same images and split as arrays in one .npz (train_images uint8 [N, S, S, 3],
    train_labels, val_images, val_labels) for training where there is no TensorFlow to read
    TFRecords: the GPU check (bench/gpu_check.py). Returns the counts per split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    seen = [0] * 10
    splits = {"train": ([], []), "val": ([], [])}
    for pixels, target in zip(digits.images, digits.target, strict=True):
        digit = int(target)
        split = "val" if is_validation(seen[digit]) else "train"
        splits[split][0].append(np.asarray(_render(pixels, size)))
        splits[split][1].append(digit)
        seen[digit] += 1
    arrays = {}
    for split, (images, labels) in splits.items():
        arrays[f"{split}_images"] = np.stack(images).astype(np.uint8)
        arrays[f"{split}_labels"] = np.asarray(labels, np.int32)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, **arrays)
    return {split: len(labels) for split, (_, labels) in splits.items()}


def write_demo_dataset(
    output: str | Path, size: int = 32, span: tuple[int, int] | None = None
) -> dict[str, int]:
    """Writes the tree under `output` and returns the image counts per split; with `span`
    (I, K), only the I-th of K parts, as the complete span `output/spans/0I`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = Path(output)
    if span is not None:
        part, parts = span
        if not 1 <= part <= parts:
            raise ValueError(f"--span {part}/{parts}: expected 1 <= I <= K")
        root = root / "spans" / f"{part:02d}"
    base = root / "ILSVRC" / "Data" / "CLS-LOC"
    (base / "val").mkdir(parents=True, exist_ok=True)
    seen = [0] * 10
    solution = ["ImageId,PredictionString"]
    counts = {"train": 0, "validation": 0}
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        digit = int(target)
        seen_before = seen[digit]
        seen[digit] += 1
        if span is not None and index * span[1] // len(digits.images) != span[0] - 1:
            continue
        image = _render(pixels, size)
        if is_validation(seen_before):
            image_id = f"ILSVRC2012_val_{counts['validation'] + 1:08d}"
            image.save(base / "val" / f"{image_id}.JPEG", quality=90)
            box = " ".join(str(v) for v in _ink_box(pixels, size))
            solution.append(f"{image_id},{wnid(digit)} {box} ")
            counts["validation"] += 1
        else:
            folder = base / "train" / wnid(digit)
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{wnid(digit)}_{index}.JPEG", quality=90)
            counts["train"] += 1
    (root / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n")
    (root / "LOC_synset_mapping.txt").write_text(
        "".join(f"{wnid(d)} {NAMES[d]}, digit {d}\n" for d in range(10))
    )
    if span is not None:
        (root / "_SUCCESS").write_text("")  # last: the span is complete
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m components.demo_data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", required=True)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument(
        "--arrays", action="store_true", help="write one .npz of arrays (for bench/gpu_check.py)"
    )
    parser.add_argument(
        "--span", metavar="I/K", help="write only the I-th of K parts, as the span spans/0I"
    )
    args = parser.parse_args(argv)
    if args.arrays:
        counts = write_digit_arrays(args.output, args.size)
        print(
            f"wrote {counts['train']} train and {counts['val']} validation images to {args.output}"
        )
        return 0
    span = None
    if args.span:
        part, _, parts = args.span.partition("/")
        if not (part.isdigit() and parts.isdigit()):
            parser.error(f"--span {args.span}: expected I/K, e.g. 2/2")
        span = (int(part), int(parts))
    counts = write_demo_dataset(args.output, args.size, span)
    print(
        f"wrote {counts['train']} train and {counts['validation']} validation images "
        f"to {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
