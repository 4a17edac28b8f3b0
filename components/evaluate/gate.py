"""The registration gate: a floor on top-1, no worse than the champion by a margin, and never far
below the best model ever registered under the name on the same validation data.

The last rule stops a drift by margins: ten retrains, each a little worse than the champion it
replaces, would otherwise walk the champion down ten margins. `decide` is a pure function.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pydantic import BaseModel, ConfigDict, Field


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_top1: float = Field(0.0, ge=0, le=1, description="the challenger's top-1 floor")
    max_regression: float = Field(
        0.005, ge=0, le=1, description="how far below the champion's top-1 may it be"
    )
    max_drop_from_best: float = Field(
        0.01,
        ge=0,
        le=1,
        description="how far below the best top-1 ever registered on the same validation data",
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
        for name in ("max_regression", "max_drop_from_best"):
            if getattr(self, name) >= 1.0:
                return f"{name} {getattr(self, name):g}"
        return None


@dataclass(frozen=True)
class Champion:
    version: str
    label_fingerprint: str
    top1: float | None  # on the challenger's validation data; None when not comparable


@dataclass(frozen=True)
class Best:
    """The best top-1 ever registered under the model name, on the same validation data."""

    version: str
    top1: float


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    champion_version: str | None = None
    champion_top1: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    top1: float,
    label_fingerprint: str,
    champion: Champion | None,
    config: GateConfig,
    best: Best | None = None,
) -> GateDecision:
    """Whether the challenger may become champion, and why, in words a person can act on.

    The rules in order: the floor; the best-ever floor (`best`, on the same validation data and
    label set); the label set of the champion; the margin against the champion.
    """
    if top1 < config.min_top1:
        return GateDecision(False, f"top-1 {top1:.4f} is below the floor {config.min_top1:.4f}")
    if best is not None and top1 < best.top1 - config.max_drop_from_best:
        return GateDecision(
            False,
            f"drift floor: top-1 {top1:.4f} is more than {config.max_drop_from_best:.4f} below "
            f"the best ever registered, v{best.version} at {best.top1:.4f} on the same "
            "validation data",
            champion.version if champion else None,
            champion.top1 if champion else None,
        )
    if champion is None:
        return GateDecision(
            True,
            f"first model: top-1 {top1:.4f} meets the floor "
            f"{config.min_top1:.4f} and there is no champion yet",
        )
    if champion.label_fingerprint != label_fingerprint:
        if config.allow_label_change:
            return GateDecision(
                True,
                f"champion v{champion.version} was trained on a different "
                "label set, so it is no baseline; replacing it as allowed",
                champion.version,
            )
        return GateDecision(
            False,
            f"champion v{champion.version} was trained on a different label set, so it is "
            "no valid baseline; register under another model name or allow the label change",
            champion.version,
        )
    if champion.top1 is None:
        raise ValueError("the champion's top-1 on this validation data is needed")
    floor = champion.top1 - config.max_regression
    verdict = (
        f"top-1 {top1:.4f} vs champion v{champion.version} at {champion.top1:.4f} on the "
        f"same validation data (allowed margin {config.max_regression:.4f})"
    )
    if top1 < floor:
        return GateDecision(
            False, "worse than the champion: " + verdict, champion.version, champion.top1
        )
    return GateDecision(
        True, "no worse than the champion: " + verdict, champion.version, champion.top1
    )
