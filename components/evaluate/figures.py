"""The evaluation as a picture: per-class accuracy, and where the worst classes' images went.

    draw_evaluation(labels [N], predictions [N], class_names, "evaluation.png")

Left, every class's accuracy sorted from worst to best (the spread a single top-1 hides).
Right, for the (up to) 15 worst classes, one bar each splitting its images into: predicted
right, each of the three classes that took most of the rest, and everything else, with those
classes named beside the bar. A confusion matrix cut down to the worst classes would be blank at
1,000 classes, where their images scatter over classes that are not among the worst.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

WORST = 15
DESTINATIONS = 3
COLOURS = ("tab:green", "tab:red", "tab:orange", "gold", "lightgray")  # right, 3 classes, rest


def where_they_went(
    labels: np.ndarray,
    predictions: np.ndarray,
    num_classes: int,
    worst: int = WORST,
    top: int = DESTINATIONS,
) -> list[dict]:
    """The worst classes, worst first, each with where its images went:

        {"label", "support", "accuracy", "destinations": [(label, share), ...], "rest": share}

    Classes tie at the bottom (a weak model at 1,000 classes has many at 0): among equals, the
    one whose errors gather most in a single class comes first, since that is a confusion to
    look at rather than noise. Shares are of the class's images and sum to 1 with `accuracy`.
    """
    support = np.bincount(labels, minlength=num_classes)
    present = np.flatnonzero(support)
    errors = labels != predictions
    # (true, predicted) pairs of the errors, counted: a sparse confusion matrix of the mistakes
    pairs, counts = np.unique(
        np.stack([labels[errors], predictions[errors]], axis=1), axis=0, return_counts=True
    )
    by_class: dict[int, list[tuple[int, int]]] = {}
    for (true, predicted), count in zip(pairs.tolist(), counts.tolist(), strict=True):
        by_class.setdefault(true, []).append((count, predicted))
    correct = np.bincount(labels[~errors], minlength=num_classes)
    accuracy = correct[present] / support[present]

    def concentration(c: int) -> float:
        taken = by_class.get(c)
        return max(taken)[0] / support[c] if taken else 0.0

    order = sorted(range(len(present)), key=lambda i: (accuracy[i], -concentration(present[i])))
    rows = []
    for i in order[:worst]:
        c = int(present[i])
        # most images first; among equal counts the lower label
        taken = sorted(by_class.get(c, []), key=lambda t: (-t[0], t[1]))[:top]
        destinations = [(int(p), n / support[c]) for n, p in taken]
        rest = 1.0 - float(accuracy[i]) - sum(share for _, share in destinations)
        rows.append(
            {
                "label": c,
                "support": int(support[c]),
                "accuracy": float(accuracy[i]),
                "destinations": destinations,
                "rest": max(rest, 0.0),
            }
        )
    return rows


def short_name(name: str, limit: int = 22) -> str:
    """A class's first synonym ("tench, Tinca tinca" -> "tench"), cut to `limit` characters."""
    first = name.split(",")[0].strip() or name
    return first if len(first) <= limit else first[: limit - 1] + "…"


def evaluation_figure(labels: np.ndarray, predictions: np.ndarray, class_names: list[str]):
    """The matplotlib figure of `draw_evaluation` (tests read its texts)."""
    k = len(class_names)
    support = np.bincount(labels, minlength=k)
    present = np.flatnonzero(support)
    accuracy = np.bincount(labels[labels == predictions], minlength=k)[present] / support[present]
    rows = where_they_went(labels, predictions, k)

    figure, (left, right) = plt.subplots(
        1, 2, figsize=(15, max(6.0, 0.42 * len(rows) + 1.5)), width_ratios=(1, 1.5)
    )
    left.bar(np.arange(len(present)), np.sort(accuracy), width=1.0, color="tab:blue")
    left.axhline(float(np.mean(labels == predictions)), color="tab:red", lw=1, label="top-1")
    left.set(
        title=f"Per-class accuracy, {len(present)} classes, worst to best",
        xlabel="classes (sorted)",
        ylabel="accuracy",
        ylim=(0, 1.02),
    )
    left.legend(loc="lower right")

    y = np.arange(len(rows))
    for i, row in enumerate(rows):
        shares = [row["accuracy"], *(s for _, s in row["destinations"]), row["rest"]]
        colours = [COLOURS[0], *COLOURS[1 : 1 + len(row["destinations"])], COLOURS[-1]]
        right.barh(i, shares, left=np.cumsum([0.0, *shares[:-1]]), color=colours, height=0.7)
        went = ", ".join(
            f"{short_name(class_names[c])} {share:.0%}" for c, share in row["destinations"]
        )
        right.text(1.02, i, f"→ {went}" if went else "", va="center", fontsize=7)
    right.set_yticks(
        y,
        [
            f"{short_name(class_names[r['label']])} ({r['accuracy']:.0%} of {r['support']})"
            for r in rows
        ],
        fontsize=7,
    )
    right.invert_yaxis()  # worst on top
    right.set_xlim(0, 1)
    right.set(
        title="Worst classes: where their images went (green: right; red, orange, gold: the "
        "classes that took most; gray: the rest)",
        xlabel="share of the class's validation images",
    )
    right.title.set_fontsize(9)
    figure.tight_layout()
    return figure


def draw_evaluation(
    labels: np.ndarray, predictions: np.ndarray, class_names: list[str], path: str
) -> str:
    """Writes the figure to `path` (PNG) and returns the path."""
    figure = evaluation_figure(np.asarray(labels), np.asarray(predictions), class_names)
    figure.savefig(path, dpi=110, bbox_inches="tight")  # the names right of the bars included
    plt.close(figure)
    return path
