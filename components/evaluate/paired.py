"""Two models compared on the same images: the difference in top-1 and how sure it is.

The champion and the challenger are scored on the same validation images, so each image is a
pair of outcomes. Images both models get right or both get wrong say nothing about which is
better; the evidence is in the discordant pairs: `b` images only the challenger gets right and
`c` only the champion does. The difference in top-1 is (b - c) / n.

Under "no difference" each discordant image is a fair coin (McNemar): b ~ Binomial(b + c, 1/2).
The test used here is McNemar's exact test (the binomial test on the discordant pairs), and the
interval for the difference is the exact (Clopper-Pearson) interval for b / (b + c), mapped to
(b + c) / n * (2p - 1). Why exact and not a paired bootstrap or the normal approximation: the
discordant counts that decide promotions are small (5 and 6 on 355 images is typical), where
the normal approximation is wrong and a bootstrap is coarse and random; the exact computation is
deterministic, costs nothing, and the interval excludes 0 exactly when the test rejects (both
invert the same binomial tails). The interval is conditional on the number of discordant pairs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import log

import numpy as np


def _log_pmf(m: int, p: float) -> np.ndarray:
    """log P(X = k) for k = 0..m, X ~ Binomial(m, p), from a table of log factorials."""
    k = np.arange(m + 1, dtype=np.float64)
    log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, m + 1)))])
    log_comb = log_factorial[m] - log_factorial - log_factorial[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = log_comb + k * (log(p) if p > 0 else -np.inf)
        return terms + (m - k) * (log(1 - p) if p < 1 else -np.inf)


def binomial_cdf(k: int, m: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(m, p)."""
    if k < 0:
        return 0.0
    if k >= m:
        return 1.0
    if p <= 0:
        return 1.0
    if p >= 1:
        return 0.0
    logs = _log_pmf(m, p)[: k + 1]
    top = logs.max()
    return float(min(1.0, np.exp(top) * np.exp(logs - top).sum()))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided p-value of McNemar's exact test: b ~ Binomial(b + c, 1/2) under no difference."""
    m = b + c
    if m == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf(min(b, c), m, 0.5))


def _solve(f, target: float, increasing: bool) -> float:
    """The p in [0, 1] where the monotone f(p) crosses `target` (bisection, to 1e-12)."""
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        if (f(mid) < target) == increasing:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def clopper_pearson(k: int, m: int, level: float) -> tuple[float, float]:
    """The exact two-sided interval at `level` for a binomial proportion, k of m."""
    if m == 0:
        return 0.0, 1.0
    alpha = 1 - level
    # lower: P(X >= k | p) = alpha/2, i.e. 1 - cdf(k - 1, p) rises with p
    low = 0.0 if k == 0 else _solve(lambda p: 1 - binomial_cdf(k - 1, m, p), alpha / 2, True)
    # upper: P(X <= k | p) = alpha/2, falling with p
    high = 1.0 if k == m else _solve(lambda p: binomial_cdf(k, m, p), alpha / 2, False)
    return low, high


def smallest_detectable(m: int, n: int, level: float) -> float | None:
    """The smallest |difference| in top-1 that McNemar's exact test calls real at `level`, with
    `m` of `n` images discordant (as observed); None when even m to 0 would not be. The p-value
    grows with the smaller count, so the edge is found by bisection."""
    alpha = 1 - level
    if m == 0 or mcnemar_exact(m, 0) >= alpha:
        return None
    low, high = 0, m // 2  # the largest smaller count that still rejects lies in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        if mcnemar_exact(m - middle, middle) < alpha:
            low = middle
        else:
            high = middle - 1
    return (m - 2 * low) / n


@dataclass(frozen=True)
class Paired:
    """The challenger against a baseline on the same n images."""

    n: int
    challenger_top1: float
    baseline_top1: float
    only_challenger: int  # b: images only the challenger got right
    only_baseline: int  # c: images only the baseline got right
    difference: float  # challenger minus baseline, in top-1 (a fraction)
    low: float  # the interval's bounds at `level`
    high: float
    p_value: float  # McNemar's exact test
    level: float
    detectable: float | None  # the smallest difference this set could call real

    @property
    def significant(self) -> bool:
        return self.p_value < 1 - self.level

    def interval_text(self) -> str:
        return f"{100 * self.level:g}% interval {_points(self.low)} to {_points(self.high)}"

    def describe(self, challenger: str = "challenger", baseline: str = "champion") -> str:
        """ "challenger 0.9831 vs champion 0.9803 on the same 355 images: +0.28 points, 95%
        interval -1.13 to +1.69; 6 images only the challenger got right, 5 only the champion:
        not distinguishable (the smallest difference these images can show: 3.10 points)"."""
        verdict = "not distinguishable" if not self.significant else (
            "better" if self.difference > 0 else "worse"
        )  # fmt: skip
        if self.significant:
            verdict = f"{challenger} significantly {verdict} (p = {self.p_value:.3g})"
        shown = (
            "no difference these images can show"
            if self.detectable is None
            else f"the smallest difference these images can show: {100 * self.detectable:.2f} "
            "points"
        )
        return (
            f"{challenger} {self.challenger_top1:.4f} vs {baseline} {self.baseline_top1:.4f} on "
            f"the same {self.n:,} images: {_points(self.difference)} points, "
            f"{self.interval_text()}; {_images(self.only_challenger)} only the {challenger} got "
            f"right, {self.only_baseline} only the {baseline}: {verdict} ({shown})"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def _images(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"


def _points(fraction: float) -> str:
    value = 100 * fraction
    return f"{value:+.2f}" if abs(value) >= 0.005 else "0.00"


def paired(challenger: np.ndarray, baseline: np.ndarray, level: float = 0.95) -> Paired:
    """The paired comparison of per-image correctness (booleans, the same images in the same
    order)."""
    challenger = np.asarray(challenger, dtype=bool)
    baseline = np.asarray(baseline, dtype=bool)
    if challenger.shape != baseline.shape or challenger.ndim != 1:
        raise ValueError(
            f"paired outcomes need the same images: {challenger.shape} vs {baseline.shape}"
        )
    n = len(challenger)
    if n == 0:
        raise ValueError("no images to compare on")
    b = int(np.sum(challenger & ~baseline))
    c = int(np.sum(~challenger & baseline))
    m = b + c
    p_low, p_high = clopper_pearson(b, m, level)
    scale = m / n
    return Paired(
        n=n,
        challenger_top1=float(challenger.mean()),
        baseline_top1=float(baseline.mean()),
        only_challenger=b,
        only_baseline=c,
        difference=(b - c) / n,
        low=scale * (2 * p_low - 1) if m else 0.0,
        high=scale * (2 * p_high - 1) if m else 0.0,
        p_value=mcnemar_exact(b, c),
        level=level,
        detectable=smallest_detectable(m, n, level),
    )
