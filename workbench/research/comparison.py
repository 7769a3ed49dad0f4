"""Models compared at equal inference compute: FID interpolated between measured points, crossovers, and the
paper's constrained-compute comparison (AR-heavy against all-diffusion) written out in words.

FID is interpolated linearly in log(compute) between measured points and never extrapolated, so a comparison at a
budget only exists where both curves were measured. Between two adjacent knots of the union of both grids the two
interpolants are straight lines in log(compute), so the crossover found there is exact.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .paper import PAPER_CLAIM_BAND
from .reports import Report


def fid_at(report: Report, budget: float, x: str = "paper_cost", y: str = "fid") -> float:
    """FID (or `y`) at inference compute `budget`: linear in log(compute) between measured points; NaN outside."""
    xs, ys = np.log(report.xs(x)), report.ys(y)
    b = math.log(budget)
    if b < xs[0] - 1e-12 or b > xs[-1] + 1e-12:
        return math.nan
    return float(np.interp(b, xs, ys))


def overlap(a: Report, b: Report, x: str = "paper_cost") -> tuple[float, float] | None:
    """The compute range both curves cover, or None."""
    lo, hi = max(a.xs(x)[0], b.xs(x)[0]), min(a.xs(x)[-1], b.xs(x)[-1])
    return (lo, hi) if lo <= hi else None


def common_budgets(a: Report, b: Report, x: str = "paper_cost") -> list[float]:
    """The measured computes of either curve inside the range both cover, with its two ends (empty if none)."""
    span = overlap(a, b, x)
    if span is None:
        return []
    lo, hi = span
    return sorted({lo, hi, *(float(c) for c in np.concatenate([a.xs(x), b.xs(x)]) if lo < c < hi)})


def equal_compute_table(reports: Mapping[str, Report], budgets: Sequence[float], x: str = "paper_cost") -> list[dict]:
    """One row per budget: the FID of every report there (NaN where that curve was not measured)."""
    return [{x: float(b), **{name: fid_at(r, b, x) for name, r in reports.items()}} for b in budgets]


def improvement(fid: float, reference: float) -> float:
    """Fraction by which `fid` is below `reference`: 0.6 means 60% lower FID ('beats by 60%')."""
    return (reference - fid) / reference


@dataclass(frozen=True)
class Crossing:
    cost: float  # compute at which the two curves meet
    fid: float  # the FID both have there
    better_below: str  # name of the model with the lower FID just below this compute
    better_above: str


def crossings(a: Report, b: Report, x: str = "paper_cost") -> list[Crossing]:
    """Computes where FID(a) - FID(b) changes sign within the range both curves cover (exact for the
    log-linear interpolants)."""
    knots = common_budgets(a, b, x)
    diffs = [fid_at(a, k, x) - fid_at(b, k, x) for k in knots]
    out, last = [], None  # last: index of the last knot with a non-zero difference
    for i, d in enumerate(diffs):
        if d == 0:
            continue
        if last is not None and (d > 0) != (diffs[last] > 0):
            if i == last + 1:  # strictly between two knots: both lines are straight in log(compute) here
                u = diffs[last] / (diffs[last] - d)
                cost = math.exp(math.log(knots[last]) + u * (math.log(knots[i]) - math.log(knots[last])))
            else:  # the curves touch at the zero knot(s) in between
                cost = knots[last + 1]
            below = a.name if diffs[last] < 0 else b.name
            out.append(Crossing(cost, fid_at(a, cost, x), below, b.name if below == a.name else a.name))
        last = i
    return out


@dataclass(frozen=True)
class Comparison:
    """Model `ar` (AR-heavy) against `ref` (all-diffusion) at the lowest and the highest common compute."""

    ar: str
    ref: str
    x: str
    low_cost: float
    low_fid: tuple[float, float]  # (ar, ref) FID at low_cost
    low_interval: tuple[tuple[float, float], tuple[float, float]]  # their bootstrap intervals there
    high_cost: float
    high_fid: tuple[float, float]
    final_fid: tuple[float, float]  # each at its own maximum S (the paper's Table 1 condition)
    equal_steps: int  # the fewest S both were evaluated at
    equal_steps_fid: tuple[float, float]
    crossings: tuple[Crossing, ...]

    @property
    def low_improvement(self) -> float:
        return improvement(*self.low_fid)

    @property
    def equal_steps_improvement(self) -> float:
        return improvement(*self.equal_steps_fid)

    @property
    def low_significant(self) -> bool | None:
        """Whether the intervals at low compute are disjoint (None when the reports have no intervals)."""
        (a_lo, a_hi), (r_lo, r_hi) = self.low_interval
        if not all(np.isfinite([a_lo, a_hi, r_lo, r_hi])):
            return None
        return a_hi < r_lo or r_hi < a_lo

    @property
    def verdict(self) -> str:
        lo, hi = PAPER_CLAIM_BAND
        g = self.low_improvement
        if g <= 0:
            return "not reproduced"
        if lo <= g <= hi:
            return "reproduced"
        return "same direction, " + ("smaller" if g < lo else "larger") + " gap than the paper's"


def compare(ar: Report, ref: Report, x: str = "paper_cost") -> Comparison:
    """The constrained-compute comparison of the paper: AR-heavy `ar` against all-diffusion `ref`."""
    span = overlap(ar, ref, x)
    if span is None:
        raise ValueError(
            f"compare: {ar.label} and {ref.label} share no compute range on {x}. Fix: evaluate more "
            "steps (the AR-heavy model needs more S to reach the all-diffusion model's compute)."
        )
    lo, hi = span
    steps = sorted({p.steps for p in ar.curve} & {p.steps for p in ref.curve})
    if not steps:
        raise ValueError(f"compare: {ar.label} and {ref.label} share no number of steps. Fix: use one S grid.")
    s = steps[0]
    at = {r.name: {p.steps: p.fid for p in r.curve} for r in (ar, ref)}
    return Comparison(
        ar.name,
        ref.name,
        x,
        lo,
        (fid_at(ar, lo, x), fid_at(ref, lo, x)),
        tuple((fid_at(r, lo, x, "fid_low"), fid_at(r, lo, x, "fid_high")) for r in (ar, ref)),
        hi,
        (fid_at(ar, hi, x), fid_at(ref, hi, x)),
        (ar.final.fid, ref.final.fid),
        s,
        (at[ar.name][s], at[ref.name][s]),
        tuple(crossings(ar, ref, x)),
    )


def _noise(significant: bool | None) -> str:
    return {
        True: "the bootstrap intervals do not overlap",
        False: "the bootstrap intervals overlap, so the gap is within noise",
        None: "the reports carry no intervals to judge the noise",
    }[significant]


def describe_comparison(c: Comparison) -> str:
    """One paragraph of markdown, written from the numbers."""
    lo, hi = PAPER_CLAIM_BAND
    text = (
        f"At the lowest compute both curves cover ({c.low_cost:.0f} block-layer evaluations per image), "
        f"**{c.ar}** reaches FID {c.low_fid[0]:.1f} and **{c.ref}** FID {c.low_fid[1]:.1f}: "
        f"{abs(c.low_improvement):.0%} {'lower' if c.low_improvement > 0 else 'higher'} for {c.ar} "
        f"(paper: {lo:.0%}-{hi:.0%} lower), so the claim is **{c.verdict}** here; "
        f"{_noise(c.low_significant)}. At equal steps (S={c.equal_steps}) {c.ar} has FID "
        f"{c.equal_steps_fid[0]:.1f} against {c.equal_steps_fid[1]:.1f} "
        f"({abs(c.equal_steps_improvement):.0%} {'lower' if c.equal_steps_improvement > 0 else 'higher'}). "
    )
    if c.crossings:
        k = c.crossings[0]
        text += (
            f"The curves cross at about {k.cost:.0f} evaluations (FID {k.fid:.1f}): below it {k.better_below} "
            f"is better, above it {k.better_above}. "
        )
    else:
        better = c.ar if c.high_fid[0] < c.high_fid[1] else c.ref
        text += (
            f"The curves do not cross in the measured range: {better} stays better up to {c.high_cost:.0f} "
            f"evaluations. "
        )
    ahead = c.final_fid[1] < c.final_fid[0]
    text += (
        f"With full sampling steps the FIDs are {c.final_fid[0]:.1f} ({c.ar}) and {c.final_fid[1]:.1f} "
        f"({c.ref}): the all-diffusion model is "
        f"{'ahead there, as in the paper' if ahead else 'behind there, unlike the paper, where it is ahead'}."
    )
    return text


# ---- frontiers: the best FID reachable at each compute, over a set of (compute, FID) points -------------------
def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The lower-left envelope of (compute, FID): each point kept is better than every cheaper one."""
    best, out = math.inf, []
    for c, f in sorted(points):
        if f < best:
            best = f
            out.append((c, f))
    return out


def best_at(front: list[tuple[float, float]], compute: float) -> float:
    """The best FID reachable at `compute` or less (inf below the frontier's cheapest point)."""
    return min((f for c, f in front if c <= compute * (1 + 1e-9)), default=math.inf)


def area_between(front_a: list[tuple[float, float]], front_b: list[tuple[float, float]]) -> tuple[float, tuple]:
    """Integral over log10(compute) of best_at(b) - best_at(a), over the range where both are defined (from the
    dearer of the two cheapest points to the dearer of the two dearest): > 0 when a is the better frontier."""
    lo = max(front_a[0][0], front_b[0][0])
    hi = max(front_a[-1][0], front_b[-1][0])
    cuts = sorted({c for c, _ in front_a + front_b if lo <= c <= hi} | {lo, hi})
    total = 0.0
    for left, right in zip(cuts, cuts[1:]):
        total += (best_at(front_b, left) - best_at(front_a, left)) * (math.log10(right) - math.log10(left))
    return total, (lo, hi)


# ---- elastic depth against dedicated models (rows of benchmarks/bench_elastic.py or experiments.live_elastic) ----
def _is_dedicated(member: str) -> bool:
    return re.fullmatch(r"D\d+", member) is not None


def grid_point(point: str) -> tuple[int, int]:
    """(D, S) of a fixed grid point named "D=2 S=4"."""
    d, s = point.split()  # "D=2 S=4"
    return int(d[2:]), int(s[2:])


def depth_grid(rows: Sequence[dict]) -> list[dict]:
    """One row per (D, S) of the fixed grid: D, S, compute (block-layer evaluations per image), the dedicated
    model's FID at its own D ("dedicated") and each elastic member's (NaN where a member was not scored)."""
    fixed = [r for r in rows if r["point"].startswith("D=")]
    cols = ["dedicated"] + list(dict.fromkeys(r["member"] for r in fixed if not _is_dedicated(r["member"])))
    cells: dict[tuple[int, int], dict] = {}
    for r in fixed:
        d, steps = grid_point(r["point"])
        cell = cells.setdefault((d, steps), {"D": d, "S": steps, "compute": r["paper_cost"]})
        cell["dedicated" if _is_dedicated(r["member"]) else r["member"]] = r["fid"]
    return [
        {"D": k[0], "S": k[1], "compute": cells[k]["compute"], **{c: math.nan for c in cols}, **cells[k]}
        for k in sorted(cells)
    ]


def depth_frontiers(rows: Sequence[dict]) -> dict[str, list[tuple[float, float]]]:
    """The FID-vs-compute frontier of the dedicated models together ("dedicated") and of each elastic member over
    the fixed (D, S) grid."""
    points: dict[str, list] = {}
    for r in rows:
        if r["point"].startswith("D="):
            points.setdefault("dedicated" if _is_dedicated(r["member"]) else r["member"], []).append(
                (r["paper_cost"], r["fid"])
            )
    return {name: frontier(p) for name, p in points.items()}


def depth_rows(reports: Mapping[str, Report]) -> list[dict]:
    """Zoo reports as rows of the comparison above: a dedicated model's points under "D<d>", an elastic model's
    reports at each depth ("elastic-D3") under the elastic member's name ("elastic"), one row per curve point."""
    rows = []
    for r in reports.values():
        member = r.member if r.elastic else f"D{r.D}"
        rows += [
            {
                "member": member,
                "point": f"D={r.D} S={p.steps}",
                "paper_cost": p.paper_cost,
                "fid": p.fid,
                "fid_low": p.fid_low,
                "fid_high": p.fid_high,
            }
            for p in r.curve
        ]
    return rows


def describe_elastic(rows: Sequence[dict]) -> str:
    """Per elastic member: at how many grid points it is at or below the dedicated model, its worst ratio, and the
    area between the two frontiers (FID x decades of compute; > 0: the elastic frontier is lower)."""
    grid, fronts = depth_grid(rows), depth_frontiers(rows)
    dedicated = fronts.pop("dedicated", None)
    parts = []
    for member, front in fronts.items():
        pairs = [(g[member], g["dedicated"]) for g in grid if np.isfinite(g[member]) and np.isfinite(g["dedicated"])]
        if not pairs or not dedicated:
            continue
        ratios = [e / d for e, d in pairs]
        area, (lo, hi) = area_between(front, dedicated)
        parts.append(
            f"{member}: FID at or below the dedicated model's at {sum(r <= 1 for r in ratios)} of "
            f"{len(pairs)} (D, S) points, elastic / dedicated {min(ratios):.2f}-{max(ratios):.2f}; its "
            f"frontier lies {'below' if area > 0 else 'above'} the dedicated models' by {abs(area):.1f} FID "
            f"x decades of compute over {lo:.0f}-{hi:.0f} block-layer evaluations."
        )
    return " ".join(parts) or "No elastic member shares grid points with the dedicated models."
