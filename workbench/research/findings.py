"""The paper's five findings decided from the zoo's reports: each with the paper's numbers, ours with their
intervals, a verdict (reproduced / opposite / undecided, or a smaller effect in the paper's direction) and the
sentence that says why. docs/results.md's findings table is this module's markdown (`workbench zoo findings`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .comparison import compare
from .depth_study import effect_table, lowest, verdict
from .paper import (
    PAPER_ABLATIONS,
    PAPER_BEST_T,
    PAPER_CLAIM_BAND,
    PAPER_TABLE1,
    SAME,
    _t_verdict,
    ablation_table,
    markdown_table,
)
from .reports import Report, dedicated, inception_text

REPRODUCED, OPPOSITE, UNDECIDED, SMALLER = "reproduced", "opposite", "undecided", "same direction, smaller effect"
DECIDED = (REPRODUCED, OPPOSITE, SMALLER)


@dataclass(frozen=True)
class Finding:
    finding: str  # the paper's claim in words
    paper: str  # its numbers
    ours: str  # ours, with intervals and provenance in brief
    verdict: str  # one of REPRODUCED, OPPOSITE, UNDECIDED, SMALLER
    why: str  # the interval that decides it, or why ours differs
    seeds: int = 1  # training seeds behind ours (the fewest of the compared sides)

    @property
    def decided(self) -> bool:
        return self.verdict in DECIDED


def _fid(p) -> str:
    return f"{p.fid:.1f} [{p.fid_low:.1f}, {p.fid_high:.1f}]"


def _inception(rs: Sequence[Report]) -> str:
    """The second extractor's points where the reports carry them ("; Inception: D=1 41.0 [...] at S=16, ...")."""
    have = [r for r in rs if r.eval.get("inception")]
    return ("; Inception: " + "; ".join(f"{r.name} {inception_text(r)}" for r in have)) if have else ""


def _budget(rs: Sequence[Report]) -> str:
    """The training budget behind compared reports ("3,000 steps x 64"), or each one's when they differ."""
    each = sorted({(r.training.get("steps") or 0, r.training.get("batch") or 0) for r in rs})
    return " / ".join(f"{s:,} steps x {b}" for s, b in each)


def _one_seed(rs: Sequence[Report]) -> str:
    return f"trained {_budget(rs)}, one training seed each (intervals: sampling noise only)"


def _apart(a, b) -> int:
    """-1 when a's interval lies below b's, +1 above, 0 when they overlap."""
    return -1 if a.fid_high < b.fid_low else 1 if a.fid_low > b.fid_high else 0


def vertical_finding(reports: Mapping[str, Report]) -> Finding:
    """Table 1: with full sampling steps FID falls as D grows (all-diffusion D=N best, AR-heavy D=N/4 worst)."""
    fixed = sorted(dedicated(reports).values(), key=lambda r: r.D)
    ffhq = PAPER_TABLE1["FFHQ-1024"]
    paper = "FFHQ-1024 D=7/14/21/28: " + " / ".join(f"{v}" for v in ffhq.values())
    claim = "full steps: more diffusion depth is better (D=N best)"
    if len(fixed) < 2:
        return Finding(claim, paper, "fewer than two D trained", UNDECIDED, "needs the vertical family's reports")
    ar, ref = fixed[0], fixed[-1]
    ours = (
        f"{_one_seed(fixed)}; D={'/'.join(str(r.D) for r in fixed)} of {ref.N} at S={ref.final.steps}: "
        + "; ".join(_fid(r.final) for r in fixed)
        + _inception(fixed)
    )
    side = _apart(ref.final, ar.final)
    best = min(fixed, key=lambda r: r.final.fid)
    verdict = {-1: REPRODUCED, 1: OPPOSITE, 0: UNDECIDED}[side]
    why = (
        f"D={ref.D} {'below' if side < 0 else 'above' if side > 0 else 'overlaps'} D={ar.D} "
        f"({ref.final.fid:.1f} vs {ar.final.fid:.1f}); best D={best.D}"
    )
    if verdict == OPPOSITE:
        why += (
            "; at our N and budget the all-diffusion model has not caught up with the AR-heavy one at full "
            "steps (the paper's gap is 20%, reached after hundreds of millions of images)"
        )
    return Finding(claim, paper, ours, verdict, why)


def crossover_finding(reports: Mapping[str, Report], x: str = "paper_cost") -> Finding:
    """The headline: at the lowest compute, AR-heavy (D=N/4) has 60-75% lower FID than all-diffusion (D=N)."""
    lo, hi = PAPER_CLAIM_BAND
    claim, paper = "constrained compute: AR-heavy D=N/4 beats all-diffusion D=N", f"{lo:.0%}-{hi:.0%} lower FID"
    fixed = sorted(dedicated(reports).values(), key=lambda r: r.D)
    if len(fixed) < 2:
        return Finding(claim, paper, "fewer than two D trained", UNDECIDED, "needs the vertical family's reports")
    ar, ref = fixed[0], fixed[-1]
    c = compare(ar, ref, x)
    (a_lo, a_hi), (r_lo, r_hi) = c.low_interval
    ours = (
        f"{_one_seed([ar, ref])}; at {c.low_cost:.0f} block-layer evaluations per image: D={ar.D} "
        f"{c.low_fid[0]:.1f} [{a_lo:.1f}, "
        f"{a_hi:.1f}] vs D={ref.D} {c.low_fid[1]:.1f} [{r_lo:.1f}, {r_hi:.1f}]: "
        f"{abs(c.low_improvement):.0%} {'lower' if c.low_improvement > 0 else 'higher'} for D={ar.D}"
    )
    if not c.low_significant:
        return Finding(claim, paper, ours, UNDECIDED, "the two intervals overlap at the lowest compute")
    g = c.low_improvement
    verdict = OPPOSITE if g <= 0 else REPRODUCED if g >= lo else SMALLER
    why = "intervals disjoint" + (
        ""
        if verdict == REPRODUCED
        else f"; {g:.0%} lower, below the paper's {lo:.0%}"
        if verdict == SMALLER
        else "; all-diffusion is better even at the lowest compute"
    )
    if c.crossings:
        k = c.crossings[0]
        why += f"; the curves cross at about {k.cost:.0f} evaluations"
    return Finding(claim, paper, ours, verdict, why)


def depth_finding(vertical: Mapping[str, Report], depth: Mapping[str, Report]) -> Finding:
    """The headline at depth: the AR-heavy advantage at the lowest compute at N=4, 8 and 12 (workbench.research.
    depth_study), decided at the largest N across its seeds."""
    lo, hi = PAPER_CLAIM_BAND
    claim, paper = (
        "constrained compute at N=4, 8, 12: the AR-heavy gap reaches the paper's as N grows",
        f"{lo:.0%}-{hi:.0%} lower FID at N=28",
    )
    low = lowest(effect_table(vertical, depth))
    if not any(e.N > 4 for e in low.values()):
        return Finding(claim, paper, "no depth-family reports", UNDECIDED, "train and evaluate the depth family")
    ours = "; ".join(
        f"N={e.N} {'dedicated' if e.dedicated else 'elastic'}"
        f"{f' s{e.seed}' if e.seed else ''} {e.effect:.0%} [{e.interval[0]:.0%}, {e.interval[1]:.0%}]"
        for e in sorted(low.values(), key=lambda e: (e.N, e.seed, e.model))
    )
    said, why = verdict(list(low.values()))  # its verdicts are this module's words (SMALLER, ...)
    top = max(e.N for e in low.values())
    seeds = len({e.seed for e in low.values() if e.N == top})
    return Finding(claim, paper, ours + " lower FID for D=N/4 at the lowest common compute", said, why, seeds)


def blocks_finding(reports: Mapping[str, Report], side: str) -> Finding:
    """Table 2: the best number of blocks T, low resolution ("low": ImageNet-256, T=1) or high ("high":
    FFHQ-1024, T=16); decided only where the best T's interval is apart from every other T's."""
    paper_t, dataset = PAPER_BEST_T[side]
    claim = f"block partitioning, {side} resolution: T={paper_t} best"
    paper = f"T={paper_t} ({dataset})"
    ranked = sorted(reports.values(), key=lambda r: r.final.fid)
    if len(ranked) < 2:
        return Finding(claim, paper, "fewer than two T trained", UNDECIDED, "needs the blocks family's reports")
    best = ranked[0]
    d = best.config.data
    ours = (
        f"{d.dataset} {d.image_size}px, {_one_seed(ranked)}, S={best.final.steps}, n={best.eval['n']:,}: "
        + "; ".join(f"T={r.T} {_fid(r.final)}" for r in sorted(ranked, key=lambda r: r.T))
        + _inception(sorted(ranked, key=lambda r: r.T))
    )
    close, _ = _t_verdict(best.T, best.final.fid_high, [(r.T, r.final.fid_low) for r in ranked[1:]], side)
    if close:
        return Finding(
            claim, paper, ours, UNDECIDED, f"T={best.T} is lowest but its interval overlaps " + ", ".join(close)
        )
    verdict = REPRODUCED if best.T == paper_t else OPPOSITE
    why = f"T={best.T} apart from every other T"
    if verdict == OPPOSITE:
        m = best.config.model
        tokens = (m.latent_size // m.patch_size) ** 2
        why += (
            f"; our images have {tokens} tokens, so a block of T={best.T} is {tokens // best.T} tokens: the "
            f"paper's contrast is between 256 and 4,096 tokens"
        )
    return Finding(claim, paper, ours, verdict, why)


def with_second_arm(main: Finding, arm: Finding, label: str) -> Finding:
    """`main` with a second dataset's verdict on the same claim beside it ("people subset: ..."); the verdict stays
    the main arm's, and the sentence says whether the second arm agrees."""
    agrees = "agrees" if arm.verdict == main.verdict else f"is {arm.verdict}"
    return Finding(
        main.finding,
        main.paper,
        f"{main.ours}; {label}: {arm.ours}",
        main.verdict,
        f"{main.why}; the {label} {agrees} ({arm.why})",
        main.seeds,
    )


def ablation_findings(reports: Mapping[str, Report], level: float = 0.9) -> list[Finding]:
    """Tables 3-6, one finding per ablation. A harm the paper reports is reproduced when the interval of the
    difference from the default (Welch across seeds, or the bootstrap intervals with one seed) lies above zero,
    opposite when below; the paper's 'about the same' (shared towers) is reproduced only when that interval lies
    within +-SAME of the default's FID (an equivalence, not a failure to find a difference). With one seed the
    difference's interval is the widest the two bootstrap intervals allow (their far ends)."""
    rows = {r["ablation"]: r for r in ablation_table(reports, level)}
    base = rows["default"]["FID"]
    out = []
    for name, (desc, ffhq, inet) in PAPER_ABLATIONS.items():
        if name == "default" or name not in rows:
            continue
        r = rows[name]
        lo, hi = r["difference interval"]
        if not (math.isfinite(lo) and math.isfinite(hi)):  # one seed on a side: the bootstrap intervals' far ends
            (a_lo, a_hi), (b_lo, b_hi) = r["FID interval"], rows["default"]["FID interval"]
            lo, hi = a_lo - b_hi, a_hi - b_lo
        paper = (
            f"FFHQ {ffhq} / ImageNet {inet} (default {PAPER_ABLATIONS['default'][1]} / {PAPER_ABLATIONS['default'][2]})"
        )
        spread = f"seed spread {r['seed spread']:.1f}" if r["seeds"] > 1 else "no seed spread"
        ours = (
            f"trained {_budget(list(reports.values()))}; "
            f"{r['FID']:.1f} vs default {base:.1f}, difference {r['difference']:+.1f} [{lo:+.1f}, {hi:+.1f}] "
            f"({r['decided by']}; {spread})"
        )
        if r["paper"] == "≈":
            band = SAME * base
            inside = -band <= lo and hi <= band
            verdict = REPRODUCED if inside else (UNDECIDED if lo <= 0 <= hi else OPPOSITE)
            why = (
                f"the difference lies within +-{band:.1f} ({SAME:.0%} of the default)"
                if inside
                else f"the interval reaches beyond +-{band:.1f}"
                if verdict == UNDECIDED
                else f"a change the paper does not see ({'worse' if lo > 0 else 'better'})"
            )
        else:  # the paper's ablations that hurt
            verdict = REPRODUCED if lo > 0 else OPPOSITE if hi < 0 else UNDECIDED
            why = (
                "the interval lies above zero"
                if verdict == REPRODUCED
                else "the interval includes zero"
                if verdict == UNDECIDED
                else "removing it helps here: the interval lies below zero"
            )
        seeds = min(r["seeds"], rows["default"]["seeds"])
        out.append(Finding(f"ablation: {desc}", paper, ours, verdict, why, seeds))
    return out


def ablations_summary(found: Sequence[Finding]) -> Finding:
    """Tables 3-6 as one finding: reproduced when every ablation is decided the paper's way and at least 3 are
    decided; opposite when most decided ones go the other way; otherwise undecided, with the counts. Effects this
    small are decided across training seeds only: with one seed on any row the finding stays undecided."""
    n = {v: sum(f.verdict == v for f in found) for v in (REPRODUCED, OPPOSITE, UNDECIDED)}
    decided, seeds, most = n[REPRODUCED] + n[OPPOSITE], min(f.seeds for f in found), max(f.seeds for f in found)
    spread = (
        f"{seeds} training seed{'s' if seeds > 1 else ''} each"
        if seeds == most
        else f"{seeds} to {most} training seeds per row"
    )
    ours = f"{n[REPRODUCED]} reproduced, {n[OPPOSITE]} opposite, {n[UNDECIDED]} undecided of {len(found)}, {spread}"
    claim = "ablations (Tables 3-6): four parts help, shared towers about equal"
    if seeds < 2:
        single = [f.finding.removeprefix("ablation: ") for f in found if f.seeds < 2]
        return Finding(
            claim,
            "see the rows below",
            ours,
            UNDECIDED,
            f"one training seed on {'; '.join(single)}: "
            "its interval holds sampling noise, not the training noise these small effects must clear",
            seeds,
        )
    verdict = (
        REPRODUCED
        if n[OPPOSITE] == 0 and n[REPRODUCED] >= 3
        else OPPOSITE
        if decided >= 3 and n[OPPOSITE] > n[REPRODUCED]
        else UNDECIDED
    )
    return Finding(claim, "see the rows below", ours, verdict, "per ablation below", seeds)


def findings(
    vertical: Mapping[str, Report] | None = None,
    blocks_low: Mapping[str, Report] | None = None,
    blocks_high: Mapping[str, Report] | None = None,
    ablations: Mapping[str, Report] | None = None,
    blocks_faces: Mapping[str, Report] | None = None,
    depth: Mapping[str, Report] | None = None,
) -> tuple[list[Finding], list[Finding]]:
    """(the five findings, the per-ablation rows); a family without reports gives an undecided row naming it.
    `blocks_faces`, a second high-resolution T sweep on faces (the paper's FFHQ analogue), joins the high-resolution
    row as a second arm when at least two of its T are scored."""

    def missing(claim: str, family: str) -> Finding:
        return Finding(claim, "-", "no reports", UNDECIDED, f"train and evaluate the {family} family")

    five = [
        vertical_finding(vertical) if vertical else missing("Table 1 D sweep", "vertical"),
        crossover_finding(vertical) if vertical else missing("constrained compute", "vertical"),
        blocks_finding(blocks_low, "low") if blocks_low else missing("T sweep, low resolution", "blocks"),
        blocks_finding(blocks_high, "high") if blocks_high else missing("T sweep, high resolution", "blocks"),
    ]
    if blocks_high and blocks_faces and len(blocks_faces) >= 2:
        five[3] = with_second_arm(five[3], blocks_finding(blocks_faces, "high"), "people subset")
    per = ablation_findings(ablations) if ablations else []
    five.append(ablations_summary(per) if per else missing("ablations", "ablations"))
    if vertical and depth:  # the headline at depth, beside the crossover row it extends
        five.insert(2, depth_finding(vertical, depth))
    return five, per


def findings_markdown(five: Sequence[Finding], per: Sequence[Finding] = ()) -> str:
    """The Results table: the five findings, then one row per ablation, and a line counting the decided ones."""
    rows = [
        {"finding (paper)": f.finding, "paper": f.paper, "ours": f.ours, "verdict": f.verdict, "why": f.why}
        for f in [*five, *per]
    ]
    decided = sum(f.decided for f in five)
    return (
        markdown_table(rows, ["finding (paper)", "paper", "ours", "verdict", "why"])
        + f"\n\n{decided} of {len(five)} findings decided (an interval apart from the other side).\n"
    )
