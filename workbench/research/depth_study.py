"""The headline at depth: how much lower the FID of AR-heavy D=N/4 is than that of all-diffusion D=N when inference
compute is scarce, as the number of layers N grows (N=4 from the vertical family, N=8 and N=12 from the depth family).

Each model is compared at three computes: the lowest both curves cover (all-diffusion at S=2: T*N*2 block-layer
evaluations per image) and twice and four times that (all-diffusion at S=4 and S=8); the AR-heavy side is interpolated
there in log(compute), as in workbench.research.comparison. The effect is the relative FID reduction
1 - FID(N/4) / FID(N). Its interval is taken from the ends of the two FIDs' bootstrap intervals (the lower end from
the AR-heavy high end over the all-diffusion low end), which covers at least what each interval covers: sampling
noise only; training noise shows as the spread between seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .comparison import crossings, fid_at, overlap
from .paper import PAPER_CLAIM_BAND
from .replicates import split_seed
from .reports import Report, dedicated

MULTIPLES = (1, 2, 4)  # the computes compared: the lowest common one and these multiples of it


@dataclass(frozen=True)
class Effect:
    """AR-heavy `ar` against all-diffusion `ref` of one model (or dedicated pair) at one inference compute."""

    model: str  # "vertical D1 vs D4", "depth/N12", "depth/N12-s1", ...
    N: int
    seed: int
    cost: float  # block-layer evaluations per image, T[(N-D)+D*S]
    ar: tuple[float, float, float]  # FID of D=N/4 and its interval (low, high)
    ref: tuple[float, float, float]  # FID of D=N and its interval

    @property
    def effect(self) -> float:
        """1 - FID(N/4) / FID(N): 0.6 means 60% lower FID for the AR-heavy side."""
        return 1.0 - self.ar[0] / self.ref[0]

    @property
    def interval(self) -> tuple[float, float]:
        return 1.0 - self.ar[2] / self.ref[1], 1.0 - self.ar[1] / self.ref[2]

    @property
    def dedicated(self) -> bool:
        """A pair of dedicated models (one file per D), not one elastic model sampled at two D."""
        return self.model.endswith("(dedicated)")

    @property
    def disjoint(self) -> bool:
        """The two FID intervals do not overlap (NaN intervals: False)."""
        return self.ar[2] < self.ref[1] or self.ref[2] < self.ar[1]


def _at(r: Report, cost: float) -> tuple[float, float, float]:
    return tuple(fid_at(r, cost, y=y) for y in ("fid", "fid_low", "fid_high"))


def effects(ar: Report, ref: Report, model: str, seed: int = 0) -> list[Effect]:
    """The effect at each of MULTIPLES of the lowest compute both curves cover (those inside the common range)."""
    span = overlap(ar, ref)
    if span is None:
        raise ValueError(
            f"depth study: {ar.label} and {ref.label} share no compute range. Fix: evaluate D=N/4 up to more "
            "steps (S=32 reaches all-diffusion's S=8 at every N)."
        )
    lo, hi = span
    costs = [lo * k for k in MULTIPLES if lo * k <= hi * (1 + 1e-9)]
    return [Effect(model, ref.N, seed, c, _at(ar, c), _at(ref, c)) for c in costs]


def pairs(vertical: Mapping[str, Report], depth: Mapping[str, Report]) -> list[tuple[str, int, Report, Report]]:
    """(model, seed, D=N/4 report, D=N report) for the vertical family's dedicated models, its elastic model, and
    every depth-family model with both of its reports; models lacking either side are left out."""
    out = []
    fixed = {r.D: r for r in dedicated(vertical).values()}
    if fixed:
        n = next(iter(fixed.values())).N
        if n // 4 in fixed and n in fixed:
            out.append((f"vertical D{n // 4} vs D{n} (dedicated)", 0, fixed[n // 4], fixed[n]))
    members: dict[str, dict[int, Report]] = {}
    for r in [*vertical.values(), *depth.values()]:
        if r.elastic:
            members.setdefault(f"{r.family}/{r.member}", {})[r.D] = r
    for model, by_d in members.items():
        n = next(iter(by_d.values())).N  # the model's layers, whichever of its D were scored
        if n // 4 in by_d and n in by_d:
            out.append((f"{model} (elastic)", split_seed(model)[1], by_d[n // 4], by_d[n]))
    return out


def effect_table(vertical: Mapping[str, Report], depth: Mapping[str, Report]) -> list[Effect]:
    """Every pair's effects, by N then model."""
    rows = [e for model, seed, ar, ref in pairs(vertical, depth) for e in effects(ar, ref, model, seed)]
    return sorted(rows, key=lambda e: (e.N, e.model, e.cost))


def crossover(vertical: Mapping[str, Report], depth: Mapping[str, Report]) -> dict[str, float | None]:
    """{model: the compute where the D=N/4 and D=N curves cross (None: they do not within the common range)}."""
    out = {}
    for model, _, ar, ref in pairs(vertical, depth):
        found = crossings(ar, ref)
        out[model] = found[0].cost if found else None
    return out


def table_rows(found: Sequence[Effect], cross: Mapping[str, float | None]) -> list[dict]:
    """The table a reader sees: one row per model and compute."""
    return [
        {
            "N": e.N,
            "model": e.model,
            "compute": f"{e.cost:.0f}",
            "FID D=N/4": f"{e.ar[0]:.1f} [{e.ar[1]:.1f}, {e.ar[2]:.1f}]",
            "FID D=N": f"{e.ref[0]:.1f} [{e.ref[1]:.1f}, {e.ref[2]:.1f}]",
            "lower for N/4": f"{e.effect:.0%} [{e.interval[0]:.0%}, {e.interval[1]:.0%}]",
            "curves cross at": "-" if cross.get(e.model) is None else f"{cross[e.model]:.0f}",
        }
        for e in found
    ]


def lowest(found: Sequence[Effect]) -> dict[str, Effect]:
    """{model: its effect at the lowest common compute}."""
    out: dict[str, Effect] = {}
    for e in sorted(found, key=lambda e: e.cost):
        out.setdefault(e.model, e)
    return out


def verdict(found: Sequence[Effect]) -> tuple[str, str]:
    """(verdict, why) on the question: does the AR-heavy advantage at the lowest compute reach the paper's band at
    the largest N, and does it grow with N? Reads the depth family's models at the largest N (every seed) against
    the N=4 models; "grows" / "shrinks" only where every seed's interval lies above / below every N=4 interval."""
    low = lowest(found)
    if not low:
        return "undecided", "no model has both D=N/4 and D=N scored"
    top, bottom = max(e.N for e in low.values()), min(e.N for e in low.values())
    big = [e for e in low.values() if e.N == top]
    small = [e for e in low.values() if e.N == bottom]
    band = PAPER_CLAIM_BAND[0]
    reached = all(e.disjoint and e.effect >= band for e in big)
    seeds = len({e.seed for e in big})
    head = f"N={top}, {seeds} seed(s): " + ", ".join(
        f"{e.effect:.0%} [{e.interval[0]:.0%}, {e.interval[1]:.0%}]" for e in big
    )
    if top == bottom:
        return ("reproduced" if reached else "undecided"), head + "; one N only, no trend"
    above = all(b.interval[0] > s.interval[1] for b in big for s in small)
    below = all(b.interval[1] < s.interval[0] for b in big for s in small)
    trend = "grows with N" if above else "shrinks with N" if below else "does not change with N beyond noise"
    ref = ", ".join(f"{s.effect:.0%} [{s.interval[0]:.0%}, {s.interval[1]:.0%}]" for s in small)
    change = (  # the change from N=4 that every pair of intervals allows, in percentage points
        min(b.interval[0] - s.interval[1] for b in big for s in small),
        max(b.interval[1] - s.interval[0] for b in big for s in small),
    )
    why = (
        f"{head}; N={bottom}: {ref}: the effect {trend} (change from N={bottom}: "
        f"{100 * change[0]:+.0f} to {100 * change[1]:+.0f} points)"
    )
    if reached:
        return "reproduced", why
    if all(e.effect > 0 and e.disjoint for e in big):
        return "same direction, smaller effect", why + f" (below the paper's {band:.0%})"
    if all(e.effect < 0 and e.disjoint for e in big):
        return "opposite", why
    return "undecided", why + "; intervals overlap at the largest N"


def effect_by_n(found: Sequence[Effect]) -> dict[str, list[tuple[int, float, float, float]]]:
    """{model kind (dedicated / elastic seed s): [(N, effect, low, high)]} at the lowest compute: the curve of the
    effect against N that notebook 02 draws."""
    out: dict[str, list] = {}
    for e in lowest(found).values():
        kind = "dedicated" if e.dedicated else f"elastic, seed {e.seed}"
        out.setdefault(kind, []).append((e.N, e.effect, *e.interval))
    return {k: sorted(v) for k, v in out.items()}
