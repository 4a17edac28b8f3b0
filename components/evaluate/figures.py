"""The evaluation as a picture: per-class accuracy, and the confusions of the worst classes.

    draw_evaluation(labels [N], predictions [N], class_names, "evaluation.png")

Left, every class's accuracy sorted from worst to best (the spread a single top-1 hides).
Right, the confusion matrix restricted to the worst classes and what they are mistaken for:
with 1,000 classes the whole matrix is unreadable, so it shows the rows of the (up to) 15 worst
classes and the columns of the classes that take most of their images.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

WORST = 15


def draw_evaluation(
    labels: np.ndarray, predictions: np.ndarray, class_names: list[str], path: str
) -> str:
    """Writes the figure to `path` (PNG) and returns the path."""
    k = len(class_names)
    matrix = np.zeros((k, k), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    support = matrix.sum(axis=1)
    present = np.flatnonzero(support)
    accuracy = np.diag(matrix)[present] / support[present]
    order = np.argsort(accuracy, kind="stable")

    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 6), width_ratios=(1, 1.2))
    left.bar(np.arange(len(order)), accuracy[order], width=1.0, color="tab:blue")
    left.axhline(float(np.mean(labels == predictions)), color="tab:red", lw=1, label="top-1")
    left.set(
        title=f"Per-class accuracy, {len(present)} classes, worst to best",
        xlabel="classes (sorted)",
        ylabel="accuracy",
        ylim=(0, 1.02),
    )
    left.legend(loc="lower right")

    rows = present[order[:WORST]]  # the worst classes
    off = matrix[rows].copy()
    off[np.arange(len(rows)), rows] = 0
    taken = np.argsort(-off.sum(axis=0), kind="stable")
    columns = list(rows) + [c for c in taken if c not in set(rows) and off[:, c].sum() > 0]
    columns = columns[: max(WORST, len(rows))]
    share = matrix[np.ix_(rows, columns)] / np.maximum(support[rows, None], 1)
    image = right.imshow(share, cmap="Blues", vmin=0, vmax=1)
    names = [_short(class_names[c]) for c in columns]
    right.set_xticks(range(len(columns)), names, rotation=60, ha="right", fontsize=7)
    right.set_yticks(range(len(rows)), [_short(class_names[c]) for c in rows], fontsize=7)
    right.set(title="Worst classes: share of their images predicted as", xlabel="predicted")
    for i in range(len(rows)):
        for j in range(len(columns)):
            if share[i, j] >= 0.05:
                colour = "white" if share[i, j] > 0.5 else "black"
                right.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=6,
                           color=colour)  # fmt: skip
    figure.colorbar(image, ax=right, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _short(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
