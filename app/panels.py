"""What the app draws: the image grid with its progress bar, the compute meter, the FID panel and the zoo charts.

A `RunView` owns the placeholders of one side, so a generation redraws them in place as events arrive and a
rerun redraws them from session_state.
"""

from __future__ import annotations

import streamlit as st
import torch
from PIL import Image

from workbench.data.images import image_grid
from workbench.evaluation.metrics import FIDResult
from workbench.research.groups import Family
from workbench.research.plots import Marker, fid_vs_compute_figure, fid_vs_steps_figure
from workbench.research.reports import Report

from .runs import Difference, PageRun

GRID_WIDTH = 440  # pixels a grid of small images is upscaled to (nearest neighbour keeps 32 px images crisp)
# a run's live FID is drawn among the shipped curves only from this share of their n on: FID is biased upward at
# small n (the default model: 52.1 at n=16 against 11.7 at n=1,000), so a star at n=16 reads as a far worse model
COMPARABLE_SHARE = 0.5
NATIVE_SIDE = 128  # images at least this large are shown one by one at their true resolution, never resized


def grid_picture(images: torch.Tensor) -> Image.Image:
    """(B, C, H, W) images in [-1, 1] -> one grid picture, upscaled to about GRID_WIDTH."""
    grid = image_grid(images)
    scale = max(1, round(GRID_WIDTH / grid.width))
    return grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)


def pictures(images: torch.Tensor) -> list[Image.Image]:
    """What the page shows of (B, C, H, W) images in [-1, 1]: small images as one upscaled grid; images of
    NATIVE_SIDE pixels or more as one picture each at its own size (the page wraps them into rows, where a grid
    wider than the column would be scaled down)."""
    if images.shape[-1] >= NATIVE_SIDE:
        return [image_grid(x[None], pad=0) for x in images]
    return [grid_picture(images)]


class RunView:
    """Placeholders of one side: title, progress bar, image grid, compute meter, FID panel. `wide`: the grid
    and the numbers side by side (one run), else stacked (compare mode's columns)."""

    def __init__(self, title: str, wide: bool):
        st.markdown(f"##### {title}")
        self.progress = st.empty()
        left, right = st.columns([1, 1], gap="large") if wide else (st.container(), st.container())
        self.image = left.empty()
        self.meter = right.empty()
        self.fid = right.empty()
        self.extras = st.container()  # below the run: its downloads and command line once it finished
        self._waiting = None

    def show_waiting(self, place: int, running: int, waiting: int, slots: int) -> None:
        """The place in line of a run that has not started (redrawn only when it changed)."""
        text = (
            f"waiting in line: place {place} of {waiting} · {running} of {slots} generation slots busy"
            if place
            else "starting…"
        )
        if text != self._waiting:
            self._waiting = text
            self.progress.progress(0.0, text=text)

    def show_stopped(self, run: PageRun) -> None:
        """What a stopped run had finished: its blocks so far."""
        if run.images is None:
            self.progress.progress(0.0, text="stopped before the first block")
            return
        self.show_images(
            run.images,
            run.blocks / run.num_blocks,
            f"stopped after block {run.blocks}/{run.num_blocks} · {run.num_images} images from seed {run.seed}",
        )

    def show_progress(self, done: float, text: str) -> None:
        self.progress.progress(min(1.0, done), text=text)

    def show_images(self, images: torch.Tensor, done: float, text: str) -> None:
        self.show_progress(done, text)
        self.image.image(pictures(images), width="content", output_format="PNG")  # lossless: pixels as generated

    def show_meter(self, run: PageRun) -> None:
        with self.meter.container():
            a, b, c = st.columns(3)
            a.metric(
                "layer evals / image",
                f"{run.cost.paper_block_layer_evals:,.0f}",
                help="The paper's count T[(N-D)+D*S]: noisy slot only. What the KV-cached sampler ran: "
                f"{run.cost.block_layer_evals:,.0f} per image (with clean copies of finished blocks "
                "and guidance).",
            )
            b.metric(
                "wall time",
                f"{run.cost.seconds:.2f} s",
                help="Seconds spent sampling these images (drawing, and in compare mode the other side, excluded).",
            )
            c.metric("images / s", f"{run.num_images / max(run.cost.seconds, 1e-9):.1f}")
            st.caption(f"First block on screen {run.first_block_s:.2f} s after the click.")
            plan = run.plan
            if plan and plan.elastic:
                trained = ", ".join(map(str, plan.trained))
                st.caption(
                    f"Elastic checkpoint (trained at D in {{{trained}}}): blocks sampled at D_k "
                    f"{', '.join(map(str, plan.depths))} with S_k {', '.join(map(str, plan.steps))}."
                    + (
                        f" Held out of training: D={', '.join(map(str, plan.held_out))}, sampled with "
                        "allow_untrained_depth; expect it to be worse than the trained depths."
                        if plan.held_out
                        else ""
                    )
                )

    def show_fid(self, result: FIDResult | None, problem: str | None) -> None:
        with self.fid.container():
            if problem:
                st.info(f"Live FID unavailable: {problem}")
                return
            if result is None:
                st.caption("Live FID: computing the features of the images…")
                return
            a, b, c = st.columns(3)
            ci = (
                f"{result.ci_level:.0%} interval {result.fid_ci[0]:.1f}–{result.fid_ci[1]:.1f}"
                if result.fid_ci
                else None
            )
            a.metric(f"FID@{result.n}", f"{result.fid:.1f}", help=ci)
            b.metric(
                "KID",
                f"{result.kid_mean:.3g}",
                help=f"± {result.kid_std:.2g} (std over subsets of {result.kid_subset_size} images)",
            )
            c.metric("samples", f"{result.n:,}")
            inf = f"; FID∞ ≈ {result.fid_inf:.1f}" if result.fid_inf is not None else ""
            st.caption(
                f"{ci or 'no interval'}{inf}. Features: `{result.extractor}`; reference: "
                f"`{result.reference}` ({result.reference_count:,} real images). Few samples bias FID "
                "upward: add samples and watch it settle."
            )


def show_difference(diff: Difference | None, problem: str | None) -> None:
    """Compare mode: FID(A) - FID(B) over the shared seeds, with its paired interval and what it decides."""
    if problem:
        st.info(f"A − B: no paired difference: {problem}")
        return
    a, b = st.columns([1, 3])
    a.metric(
        f"FID A − B @{diff.n}",
        f"{diff.fid:+.1f}",
        help=f"{diff.level:.0%} paired bootstrap interval {diff.low:+.1f} to {diff.high:+.1f}",
    )
    b.markdown(
        f"**{diff.verdict}.**  \n{diff.level:.0%} interval {diff.low:+.1f} to {diff.high:+.1f}: the same "
        f"{diff.n} seeds on both sides, resampled together ({diff.resamples} paired bootstrap draws), so the "
        f"noise the sides share cancels. Features `{diff.extractor}`, reference `{diff.reference}`."
    )


def zoo_charts(family: Family, zoo: list[Report], runs: list[PageRun]) -> None:
    """FID against compute: this family's curves and the frontier of every report on the same data; FID
    against steps for this family; the current runs placed on both (by their live FID when it is comparable:
    the same feature extractor as the zoo's reports)."""
    data = family.entries[0].config.data
    peers = [r for r in zoo if (r.config.data.dataset, r.config.data.image_size) == (data.dataset, data.image_size)]
    one = family.elastic  # an elastic file: its curve at every D it ships a report for
    mine = (
        {f"{r.family}/{r.name}": r for r in sorted(one.depth_reports, key=lambda r: r.D)}
        if one
        else {e.name: e.report for e in family.entries if e.report}
    )
    extractors = {r.eval.get("extractor") for r in peers}
    compute, steps = {}, {}
    shipped_n = min((r.eval.get("n") or 0 for r in peers), default=0)
    held_back = []  # runs whose FID is not drawn: too few samples to sit among curves measured at shipped_n
    for run in runs:
        fid = run.fid if run.fid and (not peers or run.fid.extractor in extractors) else None
        if fid and fid.n < COMPARABLE_SHARE * shipped_n:
            held_back.append(f"{run.name or 'run'}: FID@{fid.n} {fid.fid:.1f}")
            fid = None
        low, high = fid.fid_ci if fid and fid.fid_ci else (None, None)
        name = f"{run.name or 'run'}: FID@{fid.n}" if fid else f"{run.name or 'run'}: compute"
        compute[name] = Marker(run.cost.paper_block_layer_evals, fid and fid.fid, low, high)
        steps[name] = Marker(run.mean_steps, fid and fid.fid, low, high)
    if not peers and not any(m.fid is not None for m in compute.values()):
        st.caption(
            "No eval report for this data in the zoo and no live FID: nothing to place on the FID charts "
            "yet (the compute per image is in the meter above)."
        )
        return
    left, right = st.columns(2, gap="large")
    with left:
        st.plotly_chart(
            fid_vs_compute_figure(
                {n: r.points("paper_cost") for n, r in mine.items()},
                compute,
                frontier=[p for r in peers for p in r.points("paper_cost")],
                title="FID against inference compute (dashed: zoo frontier)",
            )
        )
    with right:
        st.plotly_chart(
            fid_vs_steps_figure(
                {n: r.points("steps") for n, r in mine.items()},
                steps,
                title=f"FID against steps: {family.entries[0].family}",
            )
        )
    if peers:
        ev = peers[0].eval
        st.caption(
            f"Zoo: {ev.get('n')} images per FID, features `{ev.get('extractor')}`, reference "
            f"`{ev.get('reference')}`, sampler {ev.get('sampler')}. Runs are placed by their live FID only "
            "with the same features. FID falls as n grows: compare at similar n."
        )
    if held_back:
        st.caption(
            f"Your run sits at its compute only: {'; '.join(held_back)} is measured on far fewer images than the "
            f"curves' n={shipped_n:,}, and FID reads higher the fewer the images (the same model scores worse "
            f"at n=16 than at n=1,000). Add samples (up to n={int(COMPARABLE_SHARE * shipped_n):,}) to place it."
        )
    else:
        st.caption("No eval report for this data in the zoo yet: the charts show your runs only.")
