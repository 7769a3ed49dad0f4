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

import csv
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from scipy.stats import spearmanr

from . import plots
from .checkpoint import load_for_inference
from .codecs import build_codec
from .compute import cached_cost, paper_cost, sample_flops
from .config import Config, preset
from .metrics import compute_fid, reference_stats
from .sampling import generate
from .train import train

REPO_ROOT = Path(__file__).resolve().parent.parent
ZOO_DIR = REPO_ROOT / "data" / "checkpoints"
FAMILIES = ("vertical", "blocks-fmnist", "blocks-emoji", "ablations")
COSTS = {"steps": "denoising steps per block, S",
         "paper_cost": "block-layer evaluations per image, T[(N-D)+D*S] (paper)",
         "cached_cost": "block-layer evaluations per image, cached sampler",
         "flops": "FLOPs per image (analytic, compute.sample_flops; fair across T)"}

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
        if x == "flops":  # a block-layer evaluation costs more for bigger blocks: compare T on FLOPs
            return np.array([sum(sample_flops(self.config.model, p.steps).values()) for p in self.curve])
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


def budget_table(reports: Mapping[str, Report]) -> list[dict]:
    """Provenance of each report: architecture, training budget and how its FID was measured."""
    return [{"member": r.label, "N": r.N, "D": r.D, "T": r.T, "train steps": r.training.get("steps"),
             "batch": r.training.get("batch"), "images seen": r.training.get("images_seen"),
             "train min": (r.training.get("seconds") or math.nan) / 60, "device": r.training.get("device"),
             "val loss": r.training.get("final_val_loss"), "FID extractor": r.eval.get("extractor"),
             "reference": r.eval.get("reference"), "n": r.eval.get("n"), "sampler": r.eval.get("sampler"),
             "S grid": ",".join(str(p.steps) for p in r.curve)} for r in reports.values()]


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
    cost: float          # compute at which the two curves meet
    fid: float           # the FID both have there
    better_below: str    # name of the model with the lower FID just below this compute
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


def _noise(significant: bool | None) -> str:
    return {True: "the bootstrap intervals do not overlap", False: "the bootstrap intervals overlap, so the gap is "
            "within noise", None: "the reports carry no intervals to judge the noise"}[significant]


def describe_comparison(c: Comparison) -> str:
    """One paragraph of markdown, written from the numbers."""
    lo, hi = PAPER_CLAIM_BAND
    text = (f"At the lowest compute both curves cover ({c.low_cost:.0f} block-layer evaluations per image), "
            f"**{c.ar}** reaches FID {c.low_fid[0]:.1f} and **{c.ref}** FID {c.low_fid[1]:.1f}: "
            f"{abs(c.low_improvement):.0%} {'lower' if c.low_improvement > 0 else 'higher'} for {c.ar} "
            f"(paper: {lo:.0%}-{hi:.0%} lower), so the claim is **{c.verdict}** here; "
            f"{_noise(c.low_significant)}. At equal steps (S={c.equal_steps}) {c.ar} has FID "
            f"{c.equal_steps_fid[0]:.1f} against {c.equal_steps_fid[1]:.1f} "
            f"({abs(c.equal_steps_improvement):.0%} {'lower' if c.equal_steps_improvement > 0 else 'higher'}). ")
    if c.crossings:
        k = c.crossings[0]
        text += (f"The curves cross at about {k.cost:.0f} evaluations (FID {k.fid:.1f}): below it {k.better_below} "
                 f"is better, above it {k.better_above}. ")
    else:
        better = c.ar if c.high_fid[0] < c.high_fid[1] else c.ref
        text += (f"The curves do not cross in the measured range: {better} stays better up to {c.high_cost:.0f} "
                 f"evaluations. ")
    ahead = c.final_fid[1] < c.final_fid[0]
    text += (f"With full sampling steps the FIDs are {c.final_fid[0]:.1f} ({c.ar}) and {c.final_fid[1]:.1f} "
             f"({c.ref}): the all-diffusion model is "
             f"{'ahead there, as in the paper' if ahead else 'behind there, unlike the paper, where it is ahead'}.")
    return text


# ---- tables beside the paper's -----------------------------------------------------------------------------------
def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties averaged); NaN with fewer than 2 finite pairs or a constant side."""
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
        ranked = sorted(reps.values(), key=lambda r: r.final.fid)
        best, (paper_t, dataset) = ranked[0], PAPER_BEST_T[side]
        close = [f"T={r.T}" for r in ranked[1:] if r.final.fid_low <= best.final.fid_high]
        d = best.config.data
        parts.append(f"At the {side} resolution ({d.dataset} {d.image_size}px) T={best.T} is best (FID "
                     f"{best.final.fid:.1f}" + (f"; its interval overlaps {', '.join(close)}" if close else "") +
                     f"); the paper's best at {side} resolution ({dataset}) is T={paper_t}: "
                     f"{'same' if best.T == paper_t else 'different'}.")
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
                     "agrees": ours == paper if name in PAPER_ABLATIONS and name != "default" else None})
    return rows


def describe_ablations(rows: Sequence[dict]) -> str:
    judged = [r for r in rows if r["agrees"] is not None]
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


# ---- live evaluation (the zoo's eval, and FAST mode without a zoo) -----------------------------------------------
EVAL_STEPS = (2, 4, 8, 16, 32)  # the S grid of the zoo's curves
MEMBERS = {  # family -> (member name, config overrides); the zoo's families, shared with experiments/zoo.py
    "vertical": [(f"D{d}", {"model.diffusion_depth": d}) for d in (1, 2, 3, 4)],
    "blocks-fmnist": [(f"T{t}", {"model.num_blocks": t}) for t in (1, 4, 16)],
    "blocks-emoji": [(f"T{t}", {"model.num_blocks": t}) for t in (1, 4, 16)],
    "ablations": [("default", {}), ("no-zcond", {"model.use_z_cond": False}),
                  ("no-clean", {"model.clean_stream": False}), ("mlp-denoise", {"model.denoiser_attention": "block"}),
                  ("hidden0", {"diffusion.hidden_loss_weight": 0.0}), ("shared", {"model.towers": "shared"})],
}


OUT_OF_RANGE = (1.0, 1.5)  # pixel bounds whose exceedance eval reports (the codec's range, and well outside it)


def generate_images_checked(model, config: Config, n: int, steps: int, sampler: str = "ddim", seed: int = 0,
                            batch: int = 250) -> tuple[torch.Tensor, dict]:
    """n decoded images (n, C, H, W) clamped to [-1, 1], and the fractions of decoded pixel values that lay beyond
    +-1 and +-1.5 before the clamp ({"pixels_out_of_range": ..., "pixels_beyond_1.5": ...}). Batch i uses
    seed + i, so every S and every model sees the same initial noise (common random numbers make curves
    comparable with fewer images)."""
    codec = build_codec(config.data)
    out, beyond = [], torch.zeros(len(OUT_OF_RANGE), dtype=torch.float64)
    for i, start in enumerate(range(0, n, batch)):
        latents = generate(model, config, num_images=min(batch, n - start), steps=steps, sampler=sampler,
                           seed=seed + i)  # (b, C, h, w)
        with torch.no_grad():
            raw = codec.decode(latents, clamp=False).float()
        beyond += torch.tensor([float((raw.abs() > b).sum()) for b in OUT_OF_RANGE], dtype=torch.float64)
        out.append(raw.clamp(-1, 1))
    images = torch.cat(out)
    frac = (beyond / images.numel()).tolist()
    return images, {"pixels_out_of_range": frac[0], "pixels_beyond_1.5": frac[1]}


def generate_images(model, config: Config, n: int, steps: int, sampler: str = "ddim", seed: int = 0,
                    batch: int = 250) -> torch.Tensor:
    """n decoded images (n, C, H, W) in [-1, 1] (see generate_images_checked)."""
    return generate_images_checked(model, config, n, steps, sampler, seed, batch)[0]


def evaluate_curve(model, config: Config, reference, extractor=None, steps: Sequence[int] = EVAL_STEPS,
                   n: int = 1000, sampler: str = "ddim", seed: int = 0, weights: str = "ema",
                   progress=None) -> dict:
    """The `eval` section of a report: FID (with bootstrap interval), KID and compute for each S in `steps`.

    `reference`: metrics.ReferenceStats (or real images); `extractor`: name or module (default: the reference's).
    `progress(S, point)` is called after each point."""
    curve, result = [], None
    for s in steps:
        start = time.perf_counter()
        images, health = generate_images_checked(model, config, n, s, sampler, seed)
        seconds = (time.perf_counter() - start) / n
        result = compute_fid(images, reference, extractor, seed=seed)
        low, high = result.fid_ci or (math.nan, math.nan)
        curve.append({"steps": int(s), "fid": result.fid, "fid_low": low, "fid_high": high,
                      "kid_mean": result.kid_mean, "kid_std": result.kid_std, "fid_inf": result.fid_inf,
                      "paper_cost": paper_cost(config.model, s), "cached_cost": cached_cost(config.model, s),
                      "seconds_per_image": seconds, **health})
        if progress:
            progress(s, curve[-1])
    return {"extractor": result.extractor, "reference": result.reference, "reference_count": result.reference_count,
            "n": n, "sampler": sampler, "weights": weights, "seed": seed, "curve": curve}


def live_config(family: str, name: str, train_steps: int, out_dir: str | Path) -> Config:
    """A tiny member of `family` for FAST mode (seconds to train): the family's overrides on a 4-layer width-32
    model, Fashion-MNIST 32px or emoji 64px (patch 8), float32 on one CPU process."""
    over = dict(MEMBERS[family])[name]
    base = {"model.width": 32, "model.heads": 2, "model.depth": 4, "model.diffusion_depth": 2, "model.num_blocks": 4,
            "train.max_steps": train_steps, "train.batch_size": 16, "train.lr": 2e-3, "train.warmup_frac": 0.05,
            "train.ema_decay": 0.9, "train.val_batches": 1, "train.ckpt_every": train_steps, "train.log_every": 10,
            "train.sample_every": 0, "train.precision": "32-true", "train.accelerator": "cpu",
            "train.out_dir": str(Path(out_dir) / family / name), "name": f"{family}/{name}"}
    if family == "blocks-emoji":
        base.update({"data.dataset": "emoji", "data.image_size": 64, "data.channels": 3, "model.latent_size": 64,
                     "model.latent_channels": 3, "model.patch_size": 8})
    return preset("tiny").override(**{**base, **over})


def reference_for(config: Config, n: int | None = None):
    """Reference statistics for live evaluation: the Fashion-MNIST classifier's features of the config's dataset's
    training images (all of them by default, as the zoo's Fashion-MNIST reports use; for emoji a grey proxy, less
    faithful than Inception), computed once and cached by workbench.metrics."""
    d = config.data
    return reference_stats(d.dataset, "train", "fmnist-classifier", n=n, image_size=d.image_size, channels=d.channels)


def reevaluate(report: Report, steps: int | None = None, n: int | None = None) -> dict:
    """One curve point of a shipped report computed again from its checkpoint (<name>.safetensors beside the
    report) with the report's sampler, seed and reference statistics; S defaults to the fewest steps, n to the
    report's."""
    ckpt = report.path.with_suffix(".safetensors") if report.path else None
    if ckpt is None or not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: no checkpoint beside the report of {report.label}. Fix: ship it with "
                                "python experiments/zoo.py export (ablation weights may be left out for space).")
    model, config = load_for_inference(ckpt)
    d, ev = config.data, report.eval
    reference = reference_stats(d.dataset, "train", ev["extractor"].rsplit("-", 1)[0], n=ev.get("reference_count"),
                                image_size=d.image_size, channels=d.channels)  # cached: loaded, not recomputed
    if reference.name != ev["reference"]:
        raise ValueError(f"{report.path}: its reference {ev['reference']!r} is not {reference.name!r}. Fix: "
                         "re-evaluate the report with the current workbench.metrics.")
    ev = evaluate_curve(model, config, reference, steps=[steps or report.curve[0].steps], n=n or report.eval["n"],
                        sampler=report.eval["sampler"], seed=report.eval["seed"])
    return ev["curve"][0]


def recheck_row(report: Report, point: dict) -> dict:
    """A re-evaluated point (from reevaluate) beside the report's point at the same S."""
    shipped = next(p for p in report.curve if p.steps == point["steps"])
    return {"member": report.label, "S": point["steps"], "report FID": shipped.fid, "recomputed FID": point["fid"],
            "difference": point["fid"] - shipped.fid, "interval width": shipped.fid_high - shipped.fid_low}


def describe_recheck(rows: Sequence[dict]) -> str:
    if not rows:
        return ""
    worst, width = max(abs(r["difference"]) for r in rows), min(r["interval width"] for r in rows)
    return (f" Re-sampling the compared models from the shipped half-precision weights gives FIDs within "
            f"{worst:.2f} of their reports (measured before export, in float32): "
            f"{'well inside' if worst < width / 2 else 'not inside'} the reports' {width:.1f}-wide intervals.")


def live_family(family: str, root: str | Path, train_steps: int = 20, steps: Sequence[int] = (1, 2, 4),
                n: int = 48, seed: int = 0) -> dict[str, Report]:
    """Train and evaluate tiny members of `family` now and write their reports under `root` (the FAST fallback
    when the zoo has not shipped: it exercises the whole pipeline, it reproduces nothing)."""
    for name, _ in MEMBERS[family]:
        cfg = live_config(family, name, train_steps, Path(root) / "runs")
        reference = reference_for(cfg)
        summary = train(cfg)
        model, cfg = load_for_inference(summary["checkpoint"])
        tc = cfg.train
        training = {"steps": summary["step"], "batch": tc.batch_size, "images_seen": summary["images_seen"],
                    "seconds": round(summary["train_seconds"], 1), "device": "cpu (live, FAST mode)",
                    "final_val_loss": summary["val_loss"]}
        ev = evaluate_curve(model, cfg, reference, steps=steps, n=n, seed=seed)
        write_report(report_from_dict({"family": family, "name": name, "config": cfg.to_dict(),
                                       "training": training, "eval": ev}), root)
    return load_reports(family, root)


def family_reports(family: str, fast: bool, root: str | Path = ZOO_DIR, live_root: str | Path | None = None,
                   **live) -> tuple[dict[str, Report], str]:
    """(reports, provenance): the zoo's reports when shipped; in FAST mode without them, tiny live members
    (`live_family(**live)` under `live_root`, default a temporary folder); in full mode without them, an error."""
    reports = load_reports(family, root)
    if reports:
        return reports, f"shipped zoo reports ({len(reports)} in {Path(root) / family})"
    if not fast:
        raise FileNotFoundError(f"{Path(root) / family}: no reports. Fix: train and evaluate the zoo "
                                "(python experiments/zoo.py all), or run with WORKBENCH_FAST=1 for a live demo.")
    live_root = Path(live_root or tempfile.mkdtemp(prefix="workbench-live-"))
    reports = live_family(family, live_root, **live)
    r = next(iter(reports.values()))
    return reports, (f"NO ZOO REPORTS FOUND: tiny live models ({r.training['steps']} training steps, n={r.eval['n']} "
                     f"images per FID); the numbers only show the pipeline works, they reproduce nothing")


def read_training_log(log_dir: str | Path) -> dict[str, list[float]]:
    """The CSV log of a training run (<log_dir>/metrics.csv) as {column: values} over the rows that logged a
    training loss, with "step" first."""
    with open(Path(log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    return {k: [float(r[k]) if r[k] else math.nan for r in rows] for k in (rows[0] if rows else {})}


# ---- figures of the notebooks (shared curve figures come from workbench.plots) -----------------------------------
def curves_figure(reports: Mapping[str, Report], x: str = "paper_cost", title: str | None = None):
    """FID against steps or compute for each report, with its bootstrap interval as error bars."""
    curves = {name: r.points(x) for name, r in reports.items()}
    fig = (plots.fid_vs_steps_figure(curves, title=title or "FID against denoising steps") if x == "steps" else
           plots.fid_vs_compute_figure(curves, x_title=COSTS[x], title=title or "FID against inference compute"))
    for trace in fig.data:
        r = reports.get(trace.name)
        if r is not None:
            trace.error_y = dict(type="data", symmetric=False, array=r.ys("fid_high") - r.ys("fid"),
                                 arrayminus=r.ys("fid") - r.ys("fid_low"), thickness=1)
    return fig


def crossover_figure(ar: Report, ref: Report, x: str = "paper_cost"):
    """Top: both FID curves on the compute they share, crossings marked. Bottom: how much lower AR-heavy's FID is
    at equal compute, against the paper's 60-75% band."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.6, 0.4], vertical_spacing=0.06)
    for r, color in ((ar, "#d62728"), (ref, "#1f77b4")):
        fig.add_trace(go.Scatter(x=r.xs(x), y=r.ys(), name=f"{r.name} (D={r.D})", mode="lines+markers",
                                 line=dict(color=color), text=[f"S={p.steps}" for p in r.curve],
                                 error_y=dict(type="data", symmetric=False, array=r.ys("fid_high") - r.ys(),
                                              arrayminus=r.ys() - r.ys("fid_low"), thickness=1)), row=1, col=1)
    for k in crossings(ar, ref, x):
        fig.add_trace(go.Scatter(x=[k.cost], y=[k.fid], mode="markers", name=f"crossover ({k.cost:.0f})",
                                 marker=dict(symbol="x", size=14, color="black")), row=1, col=1)
    span = overlap(ar, ref, x)
    if span:
        grid = np.geomspace(*span, 60) if span[1] > span[0] else np.array(span[:1])
        gain = [improvement(fid_at(ar, b, x), fid_at(ref, b, x)) for b in grid]
        fig.add_trace(go.Scatter(x=grid, y=gain, name=f"{ar.name} FID lower by", mode="lines",
                                 line=dict(color="black")), row=2, col=1)
        fig.add_hrect(y0=PAPER_CLAIM_BAND[0], y1=PAPER_CLAIM_BAND[1], fillcolor="green", opacity=0.15, line_width=0,
                      annotation_text="paper: 60-75%", annotation_position="top left", row=2, col=1)
        fig.add_hline(y=0, line=dict(color="grey", width=1), row=2, col=1)
    fig.update_xaxes(type="log", row=1, col=1)
    fig.update_xaxes(type="log", title=COSTS[x], row=2, col=1)
    fig.update_yaxes(title="FID", row=1, col=1)
    fig.update_yaxes(title="FID lower by", tickformat=".0%", row=2, col=1)
    fig.update_layout(template="plotly_white", height=600, title=f"{ar.name} against {ref.name} at equal compute")
    return fig


def paper_figure(rows: Sequence[dict], label: str, series: Mapping[str, str], title: str):
    """Grouped bars: for each row (x = row[label]) one bar per series {legend name: row key}."""
    fig = go.Figure([go.Bar(name=name, x=[str(r[label]) for r in rows], y=[r[key] for r in rows])
                     for name, key in series.items()])
    fig.update_layout(template="plotly_white", barmode="group", title=title, xaxis_title=label)
    return fig


def loss_figure(log: Mapping[str, Sequence[float]], title: str = "training loss"):
    """Training loss against optimizer steps, from read_training_log."""
    fig = go.Figure(go.Scatter(x=log["step"], y=log["train/loss"], mode="lines+markers", name="train/loss"))
    fig.update_layout(template="plotly_white", title=title, xaxis_title="optimizer step", yaxis_title="loss",
                      yaxis_type="log", height=320)
    return fig


def frames_figure(frames: Sequence[torch.Tensor], titles: Sequence[str], nrow: int | None = None):
    """One panel per frame (each a batch of images (B, C, H, W) in [-1, 1]) side by side: e.g. the canvas after
    each finished block."""
    fig = make_subplots(rows=1, cols=len(frames), subplot_titles=list(titles), horizontal_spacing=0.01)
    for i, frame in enumerate(frames):
        for trace in plots.image_grid_figure(frame, nrow).data:
            fig.add_trace(trace, row=1, col=i + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    for i in range(len(frames)):
        fig.update_yaxes(scaleanchor=f"x{i + 1 if i else ''}", row=1, col=i + 1)
    fig.update_layout(template="plotly_white", height=260, margin=dict(l=0, r=0, t=30, b=0))
    return fig
