"""Replicates: one member trained with several seeds, and comparisons that count the seed spread.

A replicate's name carries its training seed as a suffix ("no-zcond-s2"); seed 0 keeps the bare name, so a zoo
with one seed reads as before. Two members are compared across seeds by the difference of their mean FIDs with a
Welch t-interval: the spread between training seeds (and the sampling noise inside each seed's FID) is what a
single run's bootstrap interval leaves out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from scipy import stats

R = TypeVar("R")
_SUFFIX = re.compile(r"^(?P<base>.+)-s(?P<seed>[0-9]+)$")


def seeded_name(name: str, seed: int) -> str:
    """The member name of `name` trained with `seed` (seed 0: the bare name)."""
    if seed < 0:
        raise ValueError(f"seed: {seed} is negative. Fix: use a seed >= 0.")
    return name if seed == 0 else f"{name}-s{seed}"


def split_seed(name: str) -> tuple[str, int]:
    """("no-zcond-s2") -> ("no-zcond", 2); a bare name is seed 0."""
    m = _SUFFIX.match(name)
    return (m["base"], int(m["seed"])) if m else (name, 0)


def group_by_seed(items: Mapping[str, R]) -> dict[str, dict[int, R]]:
    """{name: x} -> {base name: {seed: x}}, bases in the order of their first appearance, seeds sorted."""
    out: dict[str, dict[int, R]] = {}
    for name, x in items.items():
        base, seed = split_seed(name)
        out.setdefault(base, {})[seed] = x
    return {base: dict(sorted(by_seed.items())) for base, by_seed in out.items()}


@dataclass(frozen=True)
class Spread:
    """Values of one quantity over seeds: their mean, sample standard deviation (NaN for one seed) and count."""

    mean: float
    std: float
    n: int

    def interval(self, level: float = 0.9) -> tuple[float, float]:
        """Student-t interval of the mean over seeds (NaN for fewer than two seeds)."""
        if self.n < 2:
            return (math.nan, math.nan)
        half = stats.t.ppf(0.5 + level / 2, self.n - 1) * self.std / math.sqrt(self.n)
        return (self.mean - half, self.mean + half)


def spread(values: Sequence[float]) -> Spread:
    v = np.asarray(values, dtype=float)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"spread: needs finite values, got {list(values)}. Fix: drop the seeds without a score.")
    return Spread(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size))


def difference(a: Sequence[float], b: Sequence[float], level: float = 0.9) -> tuple[float, float, float]:
    """mean(a) - mean(b) over seeds and its Welch t-interval at `level` (NaN bounds unless both sides have at least
    two seeds). Equal values on both sides give a zero-width interval."""
    sa, sb = spread(a), spread(b)
    d = sa.mean - sb.mean
    if sa.n < 2 or sb.n < 2:
        return d, math.nan, math.nan
    va, vb = sa.std**2 / sa.n, sb.std**2 / sb.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        return d, d, d
    df = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))  # Welch-Satterthwaite
    half = stats.t.ppf(0.5 + level / 2, df) * se
    return d, d - half, d + half
