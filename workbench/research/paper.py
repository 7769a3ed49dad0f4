"""The paper's numbers (MADFormer, arXiv 2506.07999, as read from notes on it: approximate) and our tables beside
them (Table 1 D sweep, Table 2 T sweep, Tables 3-6 ablations), each with a sentence computed from the numbers;
markdown rendering."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy.stats import spearmanr

from .replicates import difference, group_by_seed, spread
from .reports import Report

PAPER_N = 28
PAPER_TABLE1 = {
    "FFHQ-1024": {7: 20.2, 14: 17.8, 21: 16.6, 28: 15.9},
    "ImageNet-256": {7: 34.0, 14: 30.0, 21: 28.1, 28: 27.4},
}
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
        row = {
            "D": r.D,
            "N": r.N,
            "D/N": r.D / r.N,
            "paper D": paper_d,
            "S": r.final.steps,
            "FID": r.final.fid,
            "FID interval": (r.final.fid_low, r.final.fid_high),
            "FID / FID(D=N)": r.final.fid / ref.final.fid if ref else math.nan,
        }
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
    shape = (
        "the same shape as the paper (more diffusion depth, lower FID)"
        if ours < -0.5
        else "the opposite shape to the paper's (the paper's FID falls with D)"
        if ours > 0.5
        else "no clear trend with D, unlike the paper's steady fall"
    )
    return (
        f"With full sampling steps our best member is D={best['D']} (FID {best['FID']:.1f}); the rank "
        f"correlation of FID with D is {ours:+.2f} (paper: {paper:+.2f}): {shape}."
    )


def best_t(reports: Mapping[str, Report]) -> int | None:
    return min(reports.values(), key=lambda r: r.final.fid).T if reports else None


def blocks_table(arms: Mapping[str, Mapping[str, Report]]) -> list[dict]:
    """Table 2 at our scale: FID with full steps per T in each resolution arm ({"low": reports, "high": ...,
    "256px": ...}); columns "FID <arm>", "interval <arm>" and "resolution <arm>", NaN where an arm lacks that T."""
    ts = sorted({r.T for reps in arms.values() for r in reps.values()})
    by_t = {arm: {r.T: r for r in reps.values()} for arm, reps in arms.items()}
    rows = []
    for t in ts:
        row = {"T": t}
        for arm in arms:
            r = by_t[arm].get(t)
            row[f"FID {arm}"] = r.final.fid if r else math.nan
            row[f"interval {arm}"] = (r.final.fid_low, r.final.fid_high) if r else (math.nan, math.nan)
            row[f"resolution {arm}"] = _resolution(r) if r else ""
        rows.append(row)
    return rows


# The token geometry of the paper's two resolutions (it uses SD-VAE f8 latents with 4 channels; FFHQ-1024 as 16
# blocks of 256 tokens, so patch 2 on its 128x128 latents; ImageNet-256 patched the same way has 256 tokens)
PAPER_GEOMETRY = {"FFHQ-1024": ("128x128x4 latents", 4096), "ImageNet-256": ("32x32x4 latents", 256)}


def geometry_table(arms: Mapping[str, Mapping[str, Report]]) -> list[dict]:
    """Tokens per image and per block (at each arm's largest T) of our arms beside the paper's two resolutions:
    the paper's contrast is one of token counts, which ours reach only in part."""
    rows = []
    for arm, reps in arms.items():
        if not reps:
            continue
        r = max(reps.values(), key=lambda r: r.T)
        m = r.config.model
        tokens = (m.latent_size // m.patch_size) ** 2
        grid = f"{m.latent_size}x{m.latent_size}x{m.latent_channels} " + (
            "latents" if r.config.data.codec != "pixel" else "pixels"
        )
        rows.append(
            {
                "arm": arm,
                "images": _resolution(r),
                "grid": grid,
                "patch": m.patch_size,
                "tokens": tokens,
                "T": r.T,
                "tokens per block": tokens // r.T,
            }
        )
    for name, (grid, tokens) in PAPER_GEOMETRY.items():
        rows.append(
            {
                "arm": f"paper {name}",
                "images": name,
                "grid": grid,
                "patch": 2,
                "tokens": tokens,
                "T": 16,
                "tokens per block": tokens // 16,
            }
        )
    return rows


def _resolution(r: Report) -> str:
    d = r.config.data
    return f"{d.dataset} {d.image_size}px" + (" (latents)" if d.codec != "pixel" else "")


def _t_verdict(best_t: int, best_high: float, others: Sequence[tuple[int, float]], side: str) -> tuple[list[str], str]:
    """The Ts (of `others`: (T, FID low)) whose intervals reach the best T's upper end, and the comparison with the
    paper's best T on `side`: a verdict (same / different) only where the best T's interval is apart from all."""
    paper_t, dataset = PAPER_BEST_T[side]
    close = [f"T={t}" for t, low in others if low <= best_high]
    verdict = "undecided, the intervals overlap" if close else "same" if best_t == paper_t else "different"
    return close, f"the paper's best at {dataset} is T={paper_t}: {verdict}"


def describe_blocks(arms: Mapping[str, Mapping[str, Report]], paper_side: Mapping[str, str] | None = None) -> str:
    """Per arm: the best T, the Ts whose intervals overlap it, and the paper's best T at the side of its
    resolution contrast given by paper_side[arm] ("low": ImageNet-256, "high": FFHQ-1024; by default an arm named
    "low" is compared with the low side, any other with the high one), with a verdict (same / different) only
    where the best T's interval is apart from every other T's."""
    parts, paper_side = [], paper_side or {}
    for arm, reps in arms.items():
        if not reps:
            parts.append(f"No {arm} reports yet.")
            continue
        ranked = sorted(reps.values(), key=lambda r: r.final.fid)
        if len(ranked) == 1:
            only = ranked[0]
            parts.append(
                f"At {_resolution(only)} only T={only.T} has a report (FID {only.final.fid:.1f}): no "
                "comparison of T yet."
            )
            continue
        best = ranked[0]
        close, paper = _t_verdict(
            best.T,
            best.final.fid_high,
            [(r.T, r.final.fid_low) for r in ranked[1:]],
            paper_side.get(arm, "low" if arm == "low" else "high"),
        )
        parts.append(
            f"At {_resolution(best)} T={best.T} is best (FID {best.final.fid:.1f}"
            + (f"; its interval overlaps {', '.join(close)}" if close else "")
            + f"); {paper}."
        )
    return " ".join(parts)


def describe_t_rows(rows: Sequence[Mapping], side: str = "high") -> str:
    """The lowest-FID T among eval rows of one setting (reports.eval_rows), whether its interval is apart from every
    other T's, and the paper's best T on `side` ("high": FFHQ-1024, "low": ImageNet-256) with a verdict only then."""
    if len(rows) < 2:
        return "One T scored: no comparison of T." if rows else "No scores."
    settings = {(r["S"], r["n"], r["sampler"], r["weights"], r["seed"], r["extractor"], r["reference"]) for r in rows}
    if len(settings) > 1:
        raise ValueError(
            f"describe_t_rows: the rows were scored at {len(settings)} different settings. Fix: pass "
            "rows of one S, n, sampler, weights, seed, extractor and reference."
        )
    ranked = sorted(rows, key=lambda r: r["FID"])
    best = ranked[0]
    close, paper = _t_verdict(best["T"], best["FID high"], [(r["T"], r["FID low"]) for r in ranked[1:]], side)
    others = "; ".join(f"T={r['T']} {r['FID']:.1f} [{r['FID low']:.1f}, {r['FID high']:.1f}]" for r in ranked[1:])
    return (
        f"At S={best['S']}, n={best['n']:,}: T={best['T']} has the lowest FID, {best['FID']:.1f} "
        f"[{best['FID low']:.1f}, {best['FID high']:.1f}] (others: {others})"
        + (f"; its interval overlaps {', '.join(close)}" if close else ", apart from every other T")
        + f". {paper[0].upper()}{paper[1:]}."
    )


def _direction(change: float) -> str:
    return "≈" if abs(change) < SAME else ("worse" if change > 0 else "better")


def ablation_table(reports: Mapping[str, Report], level: float = 0.9) -> list[dict]:
    """Tables 3-6 at our scale: each ablation's FID with full steps against the default's, beside the paper's
    relative changes. With several training seeds (replicates: "no-zcond", "no-zcond-s1", ...) an ablation's FID
    is its mean over seeds and its change counts only when the Welch t-interval of the difference from the
    default's mean excludes zero; with one seed, only when the two bootstrap intervals do not overlap."""
    groups = group_by_seed(reports)
    if "default" not in groups:
        raise ValueError("ablation_table: no 'default' report. Fix: evaluate the ablations family's default member.")
    base = [r.final.fid for r in groups["default"].values()]
    base_mean, d0 = spread(base).mean, groups["default"][min(groups["default"])].final
    rows = []
    for name, by_seed in groups.items():
        desc, ffhq, inet = PAPER_ABLATIONS.get(name, (name, math.nan, math.nan))
        fids = [r.final.fid for r in by_seed.values()]
        s = spread(fids)
        diff, lo, hi = difference(fids, base, level)
        if s.n > 1 and len(base) > 1:
            interval, apart = s.interval(level), lo > 0 or hi < 0
            rule = f"{s.n} vs {len(base)} seeds, Welch t {level:.0%}"
        else:  # one seed on a side: the bootstrap intervals of the first seed of each
            p = by_seed[min(by_seed)].final
            interval, apart = (p.fid_low, p.fid_high), p.fid_low > d0.fid_high or p.fid_high < d0.fid_low
            rule = "1 seed, bootstrap intervals"
        change = s.mean / base_mean - 1
        ours = _direction(change) if (apart or name == "default") else "≈"
        paper_ffhq, paper_inet = ffhq / PAPER_ABLATIONS["default"][1] - 1, inet / PAPER_ABLATIONS["default"][2] - 1
        paper = _direction((paper_ffhq + paper_inet) / 2)
        rows.append(
            {
                "ablation": name,
                "description": desc,
                "seeds": s.n,
                "FID": s.mean,
                "FID interval": interval,
                "seed spread": s.std,
                "difference": diff,
                "difference interval": (lo, hi),
                "decided by": rule,
                "change": change,
                "ours": ours,
                "FFHQ": ffhq,
                "FFHQ change": paper_ffhq,
                "ImageNet": inet,
                "ImageNet change": paper_inet,
                "paper": paper,
                "agrees": ours == paper if name in PAPER_ABLATIONS and name != "default" else None,
            }
        )
    return rows


def describe_ablations(rows: Sequence[dict]) -> str:
    judged = [r for r in rows if r["agrees"] is not None]
    agree = [r["ablation"] for r in judged if r["agrees"]]
    differ = [f"{r['ablation']} (ours {r['ours']}, paper {r['paper']})" for r in judged if not r["agrees"]]
    worst = max(judged, key=lambda r: r["change"]) if judged else None
    seeds = sorted({r["seeds"] for r in rows})
    text = f"{len(agree)} of {len(judged)} ablations move FID the way the paper's do"
    text += f" ({', '.join(agree)})" if agree else ""
    text += f"; these differ: {', '.join(differ)}." if differ else "."
    if worst:
        text += f" The largest harm here is {worst['ablation']} ({worst['change']:+.0%} FID)."
    if seeds == [1]:
        text += " One training seed per ablation: the intervals hold sampling noise only, not the seed spread."
    else:
        text += (
            f" Training seeds per ablation: {', '.join(map(str, seeds))}; a change counts when the interval "
            f"of its difference across seeds excludes zero."
        )
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
        if not np.isfinite(v):
            return "-"
        return f"{v:.3g}" if abs(v) < 1 else (f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}")  # KID: 0.087, not 0.09
    return "-" if v is None else str(v)


def markdown_table(rows: Sequence[dict], columns: Iterable[str] | None = None) -> str:
    """A markdown table of `rows` (dicts), in `columns` order (default: the first row's keys)."""
    if not rows:
        return "_(no rows)_"
    cols = list(columns or rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c), c) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
