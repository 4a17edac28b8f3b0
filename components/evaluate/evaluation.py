"""Center-crop evaluation of a servable: top-1, top-5, per-class accuracy, worst confusions.

The servable is evaluated exactly as it will be served: stored JPEG bytes in, probabilities out,
so the number that gates registration is the number of the registered artifact.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from components import dataset
from components.evaluate.gate import Outcomes
from components.ingest.similarity import DUPLICATES
from components.train.data import jpeg_dataset


def load_servable(path: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """A saved servable (components.train.export) as a callable: JPEG bytes [N] -> probs [N, K]."""
    if not Path(path).exists():
        raise ValueError(f"no servable at {path}")
    return tf.saved_model.load(path)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """[K, K] counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def summarize(
    labels: np.ndarray, probabilities: np.ndarray, class_names: list[str], worst: int = 5
) -> dict:
    """Metrics from true labels [N] and probabilities [N, K]."""
    num_classes = probabilities.shape[1]
    if len(class_names) != num_classes:
        raise ValueError(
            f"the model predicts {num_classes} classes but labels.txt has {len(class_names)}"
        )
    k = min(5, num_classes)
    top = np.argsort(-probabilities, axis=1)[:, :k]  # (N, k)
    predictions = top[:, 0]
    top1 = float(np.mean(predictions == labels))
    top5 = float(np.mean(np.any(top == labels[:, None], axis=1)))
    matrix = confusion_matrix(labels, predictions, num_classes)
    support = matrix.sum(axis=1)
    per_class = np.divide(np.diag(matrix), support, out=np.zeros(num_classes), where=support > 0)
    present = [c for c in range(num_classes) if support[c] > 0]
    worst_classes = []
    for c in sorted(present, key=lambda c: (per_class[c], c))[:worst]:
        row = matrix[c].copy()
        row[c] = 0
        confused = [
            {"label": int(j), "name": class_names[j], "count": int(row[j])}
            for j in np.argsort(-row)[:3]
            if row[j] > 0
        ]
        worst_classes.append(
            {
                "label": c,
                "name": class_names[c],
                "accuracy": float(per_class[c]),
                "support": int(support[c]),
                "confused_with": confused,
            }
        )
    return {
        "top1": top1,
        "top5": top5,
        "top5_k": k,
        "count": int(len(labels)),
        "per_class_accuracy": {class_names[c]: float(per_class[c]) for c in present},
        "worst_classes": worst_classes,
    }


def predict_records(
    servable, data_dir: str, batch_size: int = 64, on_batch: Callable[[int], None] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs the servable over every validation record, in the same order on every call:
    (labels [N], probabilities [N, K], the span of each record [N] ("" outside spans), and
    whether ingestion found it to copy a training image [N])."""
    pattern = dataset.shard_pattern(data_dir, dataset.VALIDATION)
    labels, probabilities, sources = [], [], []
    for jpegs, batch_labels, batch_sources in jpeg_dataset(pattern, batch_size):
        probabilities.append(servable(jpegs).numpy())
        labels.append(batch_labels.numpy())
        sources.extend(s.decode() for s in batch_sources.numpy())
        if on_batch:
            on_batch(sum(len(b) for b in labels))
    if not labels:
        raise ValueError(f"no validation records in {data_dir}")
    spans_of = {path: span_of(path) for path in set(sources)}
    return (
        np.concatenate(labels),
        np.concatenate(probabilities),
        np.array([spans_of[p] for p in sources], dtype=object),
        leaked_records(sources),
    )


def leaked_records(sources: list[str]) -> np.ndarray:
    """For records read in this order from these shards (each shard's records in its own
    order), whether ingestion listed each as a copy of a training image: in the
    `leaked_records` of duplicates.json beside the shard as it was named (a dataset's, or a
    view's over spans, which also holds the copies between spans), or beside the file it links
    to (a span's own)."""
    listed: dict[str, set[str]] = {}
    seen: dict[str, int] = {}
    out = np.zeros(len(sources), bool)

    def records_in(folder: str) -> set[str]:
        if folder not in listed:
            path = dataset.join(folder, DUPLICATES)
            found = json.loads(dataset.read_text(path)) if dataset.exists(path) else {}
            listed[folder] = set(found.get("leaked_records", []))
        return listed[folder]

    for position, source in enumerate(sources):
        index = seen.get(source, 0)
        seen[source] = index + 1
        for path in {source, source if "://" in source else os.path.realpath(source)}:
            folder, name = path.rsplit("/", 1)
            out[position] |= f"{name}#{index}" in records_in(folder)
    return out


SPAN_SHARD = re.compile(r"(?:^|/)spans/([^/]+)/[^/]+$")


def span_of(shard: str) -> str:
    """The span a shard belongs to (a dataset's view links its shards into spans/<span>/), or
    "" for a dataset without spans."""
    real = shard if "://" in shard else os.path.realpath(shard)
    found = SPAN_SHARD.search(real)
    return found.group(1) if found else ""


def outcomes(
    labels: np.ndarray, probabilities: np.ndarray, spans: np.ndarray, leaked: np.ndarray
) -> Outcomes:
    """Each image's top-1 correctness, with its label, span and whether it copies a training
    image: what the gate pairs."""
    return Outcomes(probabilities.argmax(axis=1) == labels, labels, spans, leaked)


def save_outcomes(path: str | Path, found: Outcomes) -> None:
    with open(path, "wb") as handle:
        np.savez_compressed(
            handle, correct=found.correct, labels=found.labels, spans=found.spans.astype(str),
            leaked=found.leaked,
        )  # fmt: skip


def load_outcomes(path: str | Path) -> Outcomes:
    with np.load(path, allow_pickle=False) as held:
        return Outcomes(
            held["correct"], held["labels"], held["spans"].astype(object), held["leaked"]
        )


def evaluate_servable(
    servable,
    data_dir: str,
    class_names: list[str],
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    labels, probabilities, spans, leaked = predict_records(servable, data_dir, batch_size, on_batch)
    return {
        **summarize(labels, probabilities, class_names),
        "outcomes": outcomes(labels, probabilities, spans, leaked),
    }
