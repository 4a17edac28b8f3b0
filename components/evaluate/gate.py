"""The registration gate: the challenger against the champion on the same images, pair by pair.

Both models are scored on the same validation images, so the gate decides with the pairs
(components/evaluate/paired.py: McNemar's exact test and its interval), not with two top-1
numbers and a fixed margin: on 355 images one image is 0.28 points, and a difference of a few
images is noise. The rules, in order:

1. **Floor**: top-1 at least `min_top1`.
2. **Best ever**: no worse than the best version ever registered under the name on the same
   validation data and labels, paired on the same images: the interval's lower bound above
   `-max_drop_from_best`. Ten retrains each a little worse than the last would otherwise walk
   the champion down.
3. **Labels**: a champion trained on another label set is no baseline (`allow_label_change`).
4. **Champion**: `promote: non_inferior` (the default) passes when the interval's lower bound
   is above `-max_regression` (no worse, beyond doubt, than the margin allows);
   `promote: better` only when the challenger is significantly better.
5. **Classes**: no class with at least `min_class_support` images loses more than
   `max_class_drop` of its top-1 where its own pairs show the loss is no chance (the class's
   interval lies below 0; the classes are judged together, Bonferroni-corrected, so that 1,000
   of them do not make a chance fall certain). An average that rises while one class
   collapses is refused; a fall of a few images in a class of 50 cannot be told from chance.
6. **Spans**: the same for every span's validation images with `max_span_drop`: a warm start on
   the newest span may not forget an older one.

`decide` is a pure function of the per-image outcomes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from components.evaluate.paired import Paired, paired


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_top1: float = Field(0.0, ge=0, le=1, description="the challenger's top-1 floor")
    max_regression: float = Field(
        0.005,
        ge=0,
        le=1,
        description="how far below the champion's top-1 the interval's lower bound may reach",
    )
    max_drop_from_best: float = Field(
        0.01,
        ge=0,
        le=1,
        description="the same against the best version ever registered on the same data",
    )
    promote: Literal["non_inferior", "better"] = Field(
        "non_inferior",
        description="non_inferior: promote a challenger no worse than the champion beyond the "
        "margin; better: only one significantly better",
    )
    level: float = Field(
        0.95, gt=0.5, lt=1, description="the confidence level of every interval and test"
    )
    max_class_drop: float = Field(
        0.10, ge=0, le=1, description="the most a class may lose, where the loss is no chance"
    )
    min_class_support: int = Field(
        20, ge=1, description="classes with fewer validation images are not judged alone"
    )
    max_span_drop: float = Field(
        0.02, ge=0, le=1, description="the most a span's images may lose, where no chance"
    )
    allow_label_change: bool = Field(
        False, description="replace a champion trained on a different label set"
    )
    promote_waived: bool = Field(
        False,
        description="move the champion alias even when a margin of 1 waives the comparison "
        "(logged); otherwise such a run registers its model without moving the alias",
    )

    @property
    def waived(self) -> str | None:
        """The rule a margin of 1 switches off (any challenger passes it), or None: a gate
        like that is for trying the code path, and must not replace a champion."""
        for name in ("max_regression", "max_drop_from_best", "max_class_drop", "max_span_drop"):
            if getattr(self, name) >= 1.0:
                return f"{name} {getattr(self, name):g}"
        return None


@dataclass(frozen=True)
class Outcomes:
    """One model on the validation images, in record order: whether each image's top-1 was
    right, its true label, the span it came from ("" outside spans), and whether ingestion
    found it to copy a training image."""

    correct: np.ndarray
    labels: np.ndarray
    spans: np.ndarray | None = None
    leaked: np.ndarray | None = None

    @property
    def top1(self) -> float:
        return float(np.mean(self.correct))

    def without(self, drop: np.ndarray) -> Outcomes:
        keep = ~drop
        return Outcomes(
            self.correct[keep],
            self.labels[keep],
            None if self.spans is None else self.spans[keep],
            None,
        )


@dataclass(frozen=True)
class Champion:
    version: str
    label_fingerprint: str
    outcomes: Outcomes | None  # on the challenger's images; None when not comparable


@dataclass(frozen=True)
class Best:
    """The best version ever registered under the model name on the same validation data, with
    its outcomes on these images (None: not scored here)."""

    version: str
    top1: float  # as recorded when it was registered
    outcomes: Outcomes | None = None


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    champion_version: str | None = None
    champion_top1: float | None = None
    comparison: dict | None = None  # the paired comparison with the champion
    classes: list[dict] = field(default_factory=list)  # classes that lost, worst first
    spans: list[dict] = field(default_factory=list)  # every span's comparison
    left_out: int = 0  # validation images left out as copies of training images

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    challenger: Outcomes,
    label_fingerprint: str,
    champion: Champion | None,
    config: GateConfig,
    best: Best | None = None,
    class_names: list[str] | None = None,
) -> GateDecision:
    """Whether the challenger may become champion, and why, in words a person can act on: the
    rule that decided, the difference, its interval and the counts. Validation images that
    copy a training image are left out of every rule (a model that memorised them would look
    better than it is), and the reason says how many and top-1 with and without them."""
    leaked = challenger.leaked
    if leaked is not None and leaked.all():
        return GateDecision(
            False,
            f"all {len(leaked)} validation images copy training images: nothing to judge on",
            left_out=int(leaked.sum()),
        )
    if leaked is not None and leaked.any():
        with_them = challenger.top1
        challenger = challenger.without(leaked)
        if champion is not None and champion.outcomes is not None:
            champion = Champion(
                champion.version, champion.label_fingerprint, champion.outcomes.without(leaked)
            )
        if best is not None and best.outcomes is not None:
            best = Best(best.version, best.top1, best.outcomes.without(leaked))
        decision = decide(challenger, label_fingerprint, champion, config, best, class_names)
        note = (
            f"left out {int(leaked.sum())} validation images that copy training images (top-1 "
            f"{with_them:.4f} with them, {challenger.top1:.4f} without); "
        )
        return replace(decision, reason=note + decision.reason, left_out=int(leaked.sum()))
    top1 = challenger.top1
    if top1 < config.min_top1:
        return GateDecision(False, f"top-1 {top1:.4f} is below the floor {config.min_top1:.4f}")
    kept = (champion.version, None) if champion else (None, None)
    if best is not None and best.outcomes is not None:
        against_best = _paired(challenger, best.outcomes, config)
        if against_best.low < -config.max_drop_from_best:
            return GateDecision(
                False,
                f"best-ever floor: {against_best.describe(baseline=f'best v{best.version}')}; "
                f"the interval reaches below -{100 * config.max_drop_from_best:.2f} points",
                *kept,
                comparison=against_best.to_dict(),
            )
    if champion is None:
        return GateDecision(
            True,
            f"first model: top-1 {top1:.4f} meets the floor {config.min_top1:.4f} and there is "
            "no champion yet",
        )
    if champion.label_fingerprint != label_fingerprint:
        if config.allow_label_change:
            return GateDecision(
                True,
                f"champion v{champion.version} was trained on a different label set, so it is "
                "no baseline; replacing it as allowed",
                champion.version,
            )
        return GateDecision(
            False,
            f"champion v{champion.version} was trained on a different label set, so it is "
            "no valid baseline; register under another model name or allow the label change",
            champion.version,
        )
    if champion.outcomes is None:
        raise ValueError("the champion's outcomes on this validation data are needed")
    result = _paired(challenger, champion.outcomes, config)
    said = result.describe(baseline=f"champion v{champion.version}")
    base = {
        "champion_version": champion.version,
        "champion_top1": result.baseline_top1,
        "comparison": result.to_dict(),
    }
    classes = _groups(challenger, champion.outcomes, challenger.labels, config,
                      config.max_class_drop, config.min_class_support)  # fmt: skip
    for row in classes:
        row["name"] = class_names[row["group"]] if class_names else str(row["group"])
    spans = (
        _groups(challenger, champion.outcomes, challenger.spans, config, config.max_span_drop, 1)
        if challenger.spans is not None and len(set(challenger.spans.tolist())) > 1
        else []
    )
    base["classes"] = [c for c in classes if c["difference"] < 0][:10]
    base["spans"] = spans
    margin = f"margin {100 * config.max_regression:.2f} points"
    if config.promote == "better":
        if not (result.significant and result.difference > 0):
            return GateDecision(False, f"not shown better: {said}; promote: better", **base)
    elif result.low < -config.max_regression:
        return GateDecision(
            False,
            f"not shown to be no worse: {said}; the interval reaches below "
            f"-{100 * config.max_regression:.2f} points (non-inferiority, {margin})",
            **base,
        )
    fallen = [c for c in classes if c["fell"]]
    if fallen:
        names = "; ".join(
            f"class {c['name']} {_pts(c['difference'])} points on its {c['n']} images "
            f"({c['only_baseline']} only the champion got right, {c['only_challenger']} only "
            f"the challenger)"
            for c in fallen[:5]
        )
        return GateDecision(
            False,
            f"a class fell by more than {100 * config.max_class_drop:.0f} points: {names}; "
            f"overall {said}",
            **base,
        )
    forgotten = [s for s in spans if s["fell"]]
    if forgotten:
        names = "; ".join(
            f"span {s['group']} {_pts(s['difference'])} points on its {s['n']} images "
            f"({100 * s['level']:.4g}% interval {_pts(s['low'])} to {_pts(s['high'])})"
            for s in forgotten
        )
        return GateDecision(
            False,
            f"an older span fell by more than {100 * config.max_span_drop:.0f} points: {names}; "
            f"overall {said}",
            **base,
        )
    rule = "promote: better" if config.promote == "better" else f"non-inferiority, {margin}"
    return GateDecision(True, f"{said}; promoted under {rule}", **base)


def _paired(challenger: Outcomes, baseline: Outcomes, config: GateConfig) -> Paired:
    if not np.array_equal(challenger.labels, baseline.labels):
        raise ValueError("the two models were not scored on the same images in the same order")
    return paired(challenger.correct, baseline.correct, config.level)


def _groups(
    challenger: Outcomes,
    baseline: Outcomes,
    keys: np.ndarray,
    config: GateConfig,
    budget: float,
    min_support: int,
) -> list[dict]:
    """Each group's (class's, span's) paired comparison, worst first; `fell`: it lost more than
    `budget` and its own interval lies below 0. The groups are judged together (Bonferroni:
    each at level 1 - (1 - level) / groups): with 1,000 classes judged at 95% each, two equally
    good models would see some class "fall" by chance in nearly every comparison."""
    judged = [key for key in sorted(set(keys.tolist())) if int(np.sum(keys == key)) >= min_support]
    level = 1 - (1 - config.level) / max(len(judged), 1)
    rows = []
    for key in judged:
        where = keys == key
        result = paired(challenger.correct[where], baseline.correct[where], level)
        row = {"group": key, **result.to_dict()}
        row["fell"] = bool(result.difference < -budget and result.high < 0)
        rows.append(row)
    return sorted(rows, key=lambda r: r["difference"])


def _pts(fraction: float) -> str:
    return f"{100 * fraction:+.2f}"
