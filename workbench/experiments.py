"""Experiments: read the zoo's evaluation reports, compare models at equal inference compute, and line our numbers
up with the paper's tables. The notebooks narrate; this module computes (and is tested on synthetic reports).

A report (data/checkpoints/<family>/<name>.json) holds the member's config, its training budget and an FID curve:
one point per number of denoising steps S, with the FID, its bootstrap interval, KID, and the inference compute
per image both as the paper counts it, T[(N-D)+D*S], and as the cached sampler runs it.

Equal compute: FID is interpolated linearly in log(compute) between measured points and never extrapolated, so a
comparison at a budget only exists where both curves were measured. Between two adjacent knots of the union of
both grids the two interpolants are straight lines in log(compute), so the crossover found there is exact.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent
ZOO_DIR = REPO_ROOT / "data" / "checkpoints"
FAMILIES = ("vertical", "blocks-fmnist", "blocks-emoji", "ablations")
COSTS = {"steps": "denoising steps per block, S",
         "paper_cost": "block-layer evaluations per image, T[(N-D)+D*S] (paper)",
         "cached_cost": "block-layer evaluations per image, cached sampler"}

# ---- the paper's numbers (PAPER.md; secondary notes, approximate) ------------------------------------------------
PAPER_N = 28
PAPER_TABLE1 = {"FFHQ-1024": {7: 20.2, 14: 17.8, 21: 16.6, 28: 15.9},
                "ImageNet-256": {7: 34.0, 14: 30.0, 21: 28.1, 28: 27.4}}
PAPER_CLAIM_BAND = (0.60, 0.75)  # AR-heavy (D=N/4) FID below all-diffusion's by this fraction at low compute
PAPER_BEST_T = {"high": (16, "FFHQ-1024"), "low": (1, "ImageNet-256")}  # Table 2: best T per resolution
PAPER_ABLATIONS = {  # name in the zoo -> (description, FFHQ FID, ImageNet FID)
    "default": ("default (z_cond + clean stream, separate towers, hidden loss 0.1)", 17.8, 30.0),
    "no-zcond": ("clean blocks only (no z_cond)", 20.1, 31.9),
    "no-clean": ("z_cond only (no clean stream)", 19.7, 31.2),
    "shared": ("shared towers", 17.8, 30.4),
    "mlp-denoise": ("MLP denoising (diffusion layers see only their block)", 21.2, 96.5),
    "hidden0": ("hidden loss weight 0", 19.4, 30.2),
}
SAME = 0.03  # relative FID change the paper's ablations count as "about the same" (shared towers: +0% / +1.3%)


# ---- reports -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurvePoint:
    steps: int                 # S: denoising steps per block
    fid: float
    fid_low: float             # bootstrap interval of the FID (NaN when the report has none)
    fid_high: float
    kid_mean: float
    kid_std: float
    paper_cost: float          # T[(N-D)+D*S] block-layer evaluations per image
    cached_cost: float         # block-layer evaluations the cached sampler runs per image
    seconds_per_image: float


REQUIRED_POINT = ("steps", "fid", "paper_cost", "cached_cost")


@dataclass(frozen=True)
class Report:
    family: str
    name: str
    config: Config
    training: dict             # steps, batch, images_seen, seconds, device, final_val_loss
    eval: dict                 # extractor, reference, n, sampler, weights, seed (the curve is in `curve`)
    curve: tuple[CurvePoint, ...]  # sorted by steps
    path: Path | None = None

    @property
    def N(self) -> int:
        return self.config.model.depth

    @property
    def D(self) -> int:
        return self.config.model.diffusion_depth

    @property
    def T(self) -> int:
        return self.config.model.num_blocks

    @property
    def label(self) -> str:
        return f"{self.family}/{self.name}"

    @property
    def final(self) -> CurvePoint:
        """The point with the most denoising steps: the 'full sampling' condition of the paper's tables."""
        return self.curve[-1]

    def xs(self, x: str = "paper_cost") -> np.ndarray:
        if x not in COSTS:
            raise ValueError(f"x: unknown axis {x!r}. Fix: use one of {', '.join(COSTS)}.")
        return np.array([getattr(p, x) for p in self.curve], dtype=float)

    def ys(self, y: str = "fid") -> np.ndarray:
        return np.array([getattr(p, y) for p in self.curve], dtype=float)

    def points(self, x: str = "paper_cost") -> list[tuple[float, float]]:
        """(x, FID) pairs, the input of workbench.plots' curve figures."""
        return list(zip(self.xs(x).tolist(), self.ys().tolist()))

    def to_dict(self) -> dict:
        return {"family": self.family, "name": self.name, "config": self.config.to_dict(), "training": self.training,
                "eval": {**self.eval, "curve": [p.__dict__ for p in self.curve]}}


def report_from_dict(d: dict, path: Path | None = None) -> Report:
    """A Report from the JSON schema above; a missing field is an error naming the file and the field."""
    where = str(path) if path else "report"
    for key in ("family", "name", "config", "training", "eval"):
        if key not in d:
            raise ValueError(f"{where}: missing field {key!r}. Fix: write reports with experiments/zoo.py eval "
                             "(schema: family, name, config, training, eval.curve).")
    curve = d["eval"].get("curve") or []
    if not curve:
        raise ValueError(f"{where}: eval.curve is empty. Fix: evaluate at least one number of steps.")
    points = []
    for i, p in enumerate(curve):
        missing = [k for k in REQUIRED_POINT if k not in p]
        if missing:
            raise ValueError(f"{where}: eval.curve[{i}] lacks {missing}. Fix: every point needs {REQUIRED_POINT}.")
        points.append(CurvePoint(int(p["steps"]), *(float(p.get(k, math.nan)) for k in (
            "fid", "fid_low", "fid_high", "kid_mean", "kid_std", "paper_cost", "cached_cost", "seconds_per_image"))))
    points.sort(key=lambda p: p.steps)
    if len({p.steps for p in points}) != len(points):
        raise ValueError(f"{where}: eval.curve repeats a number of steps. Fix: one point per S.")
    ev = {k: v for k, v in d["eval"].items() if k != "curve"}
    return Report(d["family"], d["name"], Config.from_dict(d["config"]), dict(d["training"]), ev, tuple(points), path)


def read_report(path: str | Path) -> Report:
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}). Fix: re-run experiments/zoo.py eval for it.") from None
    return report_from_dict(d, path)


def write_report(report: Report, root: str | Path = ZOO_DIR) -> Path:
    """Write <root>/<family>/<name>.json."""
    path = Path(root) / report.family / f"{report.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    return path


def _order(r: Report) -> tuple:
    ablations = list(PAPER_ABLATIONS)
    return (r.D if r.family == "vertical" else r.T if r.family.startswith("blocks") else
            ablations.index(r.name) if r.name in ablations else len(ablations), r.name)


def load_reports(family: str, root: str | Path = ZOO_DIR) -> dict[str, Report]:
    """The reports of one family, keyed by member name, ordered by D (vertical), T (blocks) or the paper's
    ablation order; empty when the family has none yet."""
    folder = Path(root) / family
    reports = [read_report(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return {r.name: r for r in sorted(reports, key=_order)}


def zoo_status(root: str | Path = ZOO_DIR) -> dict[str, int]:
    """Reports found per family."""
    return {f: len(list((Path(root) / f).glob("*.json"))) for f in FAMILIES}


# ---- equal compute -----------------------------------------------------------------------------------------------
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


def equal_compute_table(reports: Mapping[str, Report], budgets: Sequence[float], x: str = "paper_cost") -> list[dict]:
    """One row per budget: the FID of every report there (NaN where that curve was not measured)."""
    return [{x: float(b), **{name: fid_at(r, b, x) for name, r in reports.items()}} for b in budgets]


def improvement(fid: float, reference: float) -> float:
    """Fraction by which `fid` is below `reference`: 0.6 means 60% lower FID ('beats by 60%')."""
    return (reference - fid) / reference


@dataclass(frozen=True)
class Crossing:
    cost: float          # compute at which the two curves meet
    fid: float           # the FID both have there
    better_below: str    # name of the model with the lower FID just below this compute
    better_above: str


def crossings(a: Report, b: Report, x: str = "paper_cost") -> list[Crossing]:
    """Computes where FID(a) - FID(b) changes sign within the range both curves cover (exact for the
    log-linear interpolants)."""
    span = overlap(a, b, x)
    if span is None:
        return []
    lo, hi = span
    knots = sorted({lo, hi, *(c for c in np.concatenate([a.xs(x), b.xs(x)]) if lo < c < hi)})
    diffs = [fid_at(a, k, x) - fid_at(b, k, x) for k in knots]
    out, last = [], None  # last: index of the last knot with a non-zero difference
    for i, d in enumerate(diffs):
        if d == 0:
            continue
        if last is not None and (d > 0) != (diffs[last] > 0):
            if i == last + 1:  # strictly between two knots: both lines are straight in log(compute) here
                u = diffs[last] / (diffs[last] - d)
                cost = math.exp(math.log(knots[last]) + u * (math.log(knots[i]) - math.log(knots[last])))
            else:              # the curves touch at the zero knot(s) in between
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
    low_fid: tuple[float, float]       # (ar, ref) FID at low_cost
    low_interval: tuple[tuple[float, float], tuple[float, float]]  # their bootstrap intervals there
    high_cost: float
    high_fid: tuple[float, float]
    final_fid: tuple[float, float]     # each at its own maximum S (the paper's Table 1 condition)
    equal_steps: int                   # the fewest S both were evaluated at
    equal_steps_fid: tuple[float, float]
    crossings: tuple[Crossing, ...]

    @property
    def low_improvement(self) -> float:
        return improvement(*self.low_fid)

    @property
    def equal_steps_improvement(self) -> float:
        return improvement(*self.equal_steps_fid)

    @property
    def low_significant(self) -> bool:
        """The intervals at low compute do not overlap."""
        (a_lo, a_hi), (r_lo, r_hi) = self.low_interval
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
        raise ValueError(f"compare: {ar.label} and {ref.label} share no compute range on {x}. Fix: evaluate more "
                         "steps (the AR-heavy model needs more S to reach the all-diffusion model's compute).")
    lo, hi = span
    steps = sorted({p.steps for p in ar.curve} & {p.steps for p in ref.curve})
    if not steps:
        raise ValueError(f"compare: {ar.label} and {ref.label} share no number of steps. Fix: use one S grid.")
    s = steps[0]
    at = {r.name: {p.steps: p.fid for p in r.curve} for r in (ar, ref)}
    return Comparison(
        ar.name, ref.name, x, lo, (fid_at(ar, lo, x), fid_at(ref, lo, x)),
        tuple((fid_at(r, lo, x, "fid_low"), fid_at(r, lo, x, "fid_high")) for r in (ar, ref)),
        hi, (fid_at(ar, hi, x), fid_at(ref, hi, x)), (ar.final.fid, ref.final.fid),
        s, (at[ar.name][s], at[ref.name][s]), tuple(crossings(ar, ref, x)))


def describe_comparison(c: Comparison) -> str:
    """One paragraph of markdown, written from the numbers."""
    lo, hi = PAPER_CLAIM_BAND
    text = (f"At the lowest compute both curves cover ({c.low_cost:.0f} block-layer evaluations per image), "
            f"**{c.ar}** reaches FID {c.low_fid[0]:.1f} and **{c.ref}** FID {c.low_fid[1]:.1f}: "
            f"{abs(c.low_improvement):.0%} {'lower' if c.low_improvement > 0 else 'higher'} for {c.ar} "
            f"(paper: {lo:.0%}-{hi:.0%} lower), so the claim is **{c.verdict}** here; the bootstrap intervals "
            f"{'do not overlap' if c.low_significant else 'overlap, so the gap is within noise'}. "
            f"At equal steps (S={c.equal_steps}) the gap is {c.equal_steps_improvement:+.0%}. ")
    if c.crossings:
        k = c.crossings[0]
        text += (f"The curves cross at about {k.cost:.0f} evaluations (FID {k.fid:.1f}): below it {k.better_below} "
                 f"is better, above it {k.better_above}. ")
    else:
        better = c.ar if c.high_fid[0] < c.high_fid[1] else c.ref
        text += f"The curves do not cross in the measured range: {better} stays better up to {c.high_cost:.0f}. "
    text += (f"With full sampling steps the FIDs are {c.final_fid[0]:.1f} ({c.ar}) and {c.final_fid[1]:.1f} "
             f"({c.ref}); the paper has the all-diffusion model ahead there.")
    return text


# ---- tables beside the paper's -----------------------------------------------------------------------------------
def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties averaged); NaN with fewer than 2 finite pairs or a constant side."""
    from scipy.stats import spearmanr

    pairs = [(u, v) for u, v in zip(a, b) if np.isfinite(u) and np.isfinite(v)]
    if len(pairs) < 2 or len({u for u, _ in pairs}) < 2 or len({v for _, v in pairs}) < 2:
        return math.nan
    return float(spearmanr(*zip(*pairs)).statistic)


def vertical_table(reports: Mapping[str, Report]) -> list[dict]:
    """Table 1 at our scale: each D mapped to the paper's D at the same fraction D/N of N=28, our FID with full
    steps beside the paper's, and both relative to the all-diffusion member (D=N)."""
    rows = []
    ref = next((r for r in reports.values() if r.D == r.N), None)
    for r in reports.values():
        paper_d = round(PAPER_N * r.D / r.N)
        row = {"D": r.D, "N": r.N, "D/N": r.D / r.N, "paper D": paper_d, "S": r.final.steps, "FID": r.final.fid,
               "FID interval": (r.final.fid_low, r.final.fid_high),
               "FID / FID(D=N)": r.final.fid / ref.final.fid if ref else math.nan}
        for dataset, table in PAPER_TABLE1.items():
            row[dataset] = table.get(paper_d, math.nan)
            row[f"{dataset} / FID(D=N)"] = table.get(paper_d, math.nan) / table[PAPER_N]
        rows.append(row)
    return rows


def describe_vertical(rows: Sequence[dict]) -> str:
    ds = [r["D"] for r in rows]
    ours = rank_correlation(ds, [r["FID"] for r in rows])
    paper = rank_correlation(ds, [r["FFHQ-1024"] for r in rows])
    best = min(rows, key=lambda r: r["FID"])
    shape = ("the same shape as the paper (more diffusion depth, lower FID)" if ours < -0.5 else
             "the opposite shape to the paper's (the paper's FID falls with D)" if ours > 0.5 else
             "no clear trend with D, unlike the paper's steady fall")
    return (f"With full sampling steps our best member is D={best['D']} (FID {best['FID']:.1f}); the rank "
            f"correlation of FID with D is {ours:+.2f} (paper: {paper:+.2f}): {shape}.")


def best_t(reports: Mapping[str, Report]) -> int | None:
    return min(reports.values(), key=lambda r: r.final.fid).T if reports else None


def blocks_table(low: Mapping[str, Report], high: Mapping[str, Report]) -> list[dict]:
    """Table 2 at our scale: FID with full steps per T at the low and the high resolution."""
    ts = sorted({r.T for r in (*low.values(), *high.values())})
    by_t = {side: {r.T: r for r in reps.values()} for side, reps in (("low", low), ("high", high))}
    rows = []
    for t in ts:
        row = {"T": t}
        for side in ("low", "high"):
            r = by_t[side].get(t)
            row[f"FID {side}"] = r.final.fid if r else math.nan
            row[f"interval {side}"] = (r.final.fid_low, r.final.fid_high) if r else (math.nan, math.nan)
            row[f"resolution {side}"] = f"{r.config.data.dataset} {r.config.data.image_size}px" if r else ""
        rows.append(row)
    return rows


def describe_blocks(low: Mapping[str, Report], high: Mapping[str, Report]) -> str:
    parts = []
    for side, reps in (("low", low), ("high", high)):
        if not reps:
            parts.append(f"No {side}-resolution reports yet.")
            continue
        t, (paper_t, dataset) = best_t(reps), PAPER_BEST_T[side]
        r = next(iter(reps.values()))
        parts.append(f"At the {side} resolution ({r.config.data.dataset} {r.config.data.image_size}px) T={t} is best; "
                     f"the paper's best at {side} resolution ({dataset}) is T={paper_t}: "
                     f"{'same' if t == paper_t else 'different'}.")
    return " ".join(parts)


def _direction(change: float) -> str:
    return "≈" if abs(change) < SAME else ("worse" if change > 0 else "better")


def ablation_table(reports: Mapping[str, Report]) -> list[dict]:
    """Tables 3-6 at our scale: each ablation's FID with full steps against the default's, beside the paper's
    relative changes. Ours counts as changed only when the bootstrap intervals do not overlap."""
    if "default" not in reports:
        raise ValueError("ablation_table: no 'default' report. Fix: evaluate the ablations family's default member.")
    d = reports["default"].final
    rows = []
    for name, r in reports.items():
        desc, ffhq, inet = PAPER_ABLATIONS.get(name, (name, math.nan, math.nan))
        p = r.final
        change = p.fid / d.fid - 1
        apart = p.fid_low > d.fid_high or p.fid_high < d.fid_low
        ours = _direction(change) if (apart or name == "default") else "≈"
        paper_ffhq, paper_inet = ffhq / PAPER_ABLATIONS["default"][1] - 1, inet / PAPER_ABLATIONS["default"][2] - 1
        paper = _direction((paper_ffhq + paper_inet) / 2)
        rows.append({"ablation": name, "description": desc, "FID": p.fid, "FID interval": (p.fid_low, p.fid_high),
                     "change": change, "ours": ours, "FFHQ": ffhq, "FFHQ change": paper_ffhq, "ImageNet": inet,
                     "ImageNet change": paper_inet, "paper": paper,
                     "agrees": ours == paper if name in PAPER_ABLATIONS else None})
    return rows


def describe_ablations(rows: Sequence[dict]) -> str:
    judged = [r for r in rows if r["ablation"] != "default" and r["agrees"] is not None]
    agree = [r["ablation"] for r in judged if r["agrees"]]
    differ = [f"{r['ablation']} (ours {r['ours']}, paper {r['paper']})" for r in judged if not r["agrees"]]
    worst = max(judged, key=lambda r: r["change"]) if judged else None
    text = f"{len(agree)} of {len(judged)} ablations move FID the way the paper's do"
    text += f" ({', '.join(agree)})" if agree else ""
    text += f"; these differ: {', '.join(differ)}." if differ else "."
    if worst:
        text += f" The largest harm here is {worst['ablation']} ({worst['change']:+.0%} FID)."
    return text


# ---- presentation ------------------------------------------------------------------------------------------------
def _cell(v, column: str = "") -> str:
    if isinstance(v, float) and "change" in column and np.isfinite(v):
        return f"{v:+.0%}"
    if isinstance(v, tuple):
        return "-" if any(not np.isfinite(x) for x in v) else f"[{v[0]:.1f}, {v[1]:.1f}]"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "-" if not np.isfinite(v) else (f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}")
    return "-" if v is None else str(v)


def markdown_table(rows: Sequence[dict], columns: Iterable[str] | None = None) -> str:
    """A markdown table of `rows` (dicts), in `columns` order (default: the first row's keys)."""
    if not rows:
        return "_(no rows)_"
    cols = list(columns or rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c), c) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
