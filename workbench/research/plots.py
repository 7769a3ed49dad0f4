"""Plotly figure builders shared by the notebooks and the app: image grids, FID against compute, FID against steps,
and the figures of reports (curves with intervals, the crossover figure, bars beside the paper's, training loss).

Nothing here computes a metric: inputs are plain numbers, tensors, and reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..data.images import image_grid
from .comparison import crossings, fid_at, improvement, overlap
from .comparison import frontier as pareto_front
from .paper import PAPER_CLAIM_BAND
from .reports import COSTS, Report

Curve = Sequence[tuple[float, float]]  # (x, FID) pairs of one model, e.g. one per number of denoising steps
LAYOUT = dict(template="plotly_white", margin=dict(l=10, r=10, t=40, b=10), legend=dict(font=dict(size=11)))


def image_grid_figure(images: torch.Tensor, nrow: int | None = None, title: str | None = None) -> go.Figure:
    """(B, C, H, W) images in [-1, 1] tiled into one figure (grey images shown as RGB grey)."""
    grid = np.asarray(image_grid(images, nrow))  # (H, W) or (H, W, 3) uint8
    if grid.ndim == 2:
        grid = np.repeat(grid[..., None], 3, axis=-1)
    fig = go.Figure(go.Image(z=grid, hoverinfo="skip"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(**{**LAYOUT, "margin": dict(l=0, r=0, t=30 if title else 0, b=0)}, title=title)
    return fig


def rows_figure(rows: Mapping[str, torch.Tensor], row_height: int = 0) -> go.Figure:
    """One row of images per entry ({caption: (B, C, H, W) in [-1, 1]}), captions above: models side by side on
    the same seeds, so column j of every row starts from the same noise."""
    k = len(rows)  # at least one row
    fig = make_subplots(rows=k, cols=1, subplot_titles=list(rows), vertical_spacing=0.06 / (k - 1) if k > 1 else 0.0)
    for i, images in enumerate(rows.values()):
        for trace in image_grid_figure(images, nrow=len(images)).data:
            fig.add_trace(trace, row=i + 1, col=1)
        fig.update_yaxes(scaleanchor=f"x{i + 1 if i else ''}", row=i + 1, col=1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    if row_height <= 0:  # about the images' own size, at least 60 px a row
        row_height = max(60, min(256, next(iter(rows.values())).shape[-1])) + 30
    fig.update_layout(template="plotly_white", height=row_height * k + 20, margin=dict(l=0, r=0, t=30, b=0))
    return fig


@dataclass(frozen=True)
class Marker:
    """A highlighted run: its x (compute or steps) and, once measured, its FID with an optional interval."""

    x: float
    fid: float | None = None
    low: float | None = None
    high: float | None = None


MARKER_COLOURS = ("crimson", "darkorange", "purple", "teal")


def _curves(
    curves: Mapping[str, Curve],
    markers: Mapping[str, Marker],
    x_title: str,
    title: str,
    frontier: Sequence[tuple[float, float]] = (),
) -> go.Figure:
    fig = go.Figure()
    for name, pts in curves.items():
        pts = sorted(pts)
        fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name)
    front = pareto_front(frontier)
    if len(front) > 1:
        fig.add_scatter(
            x=[p[0] for p in front],
            y=[p[1] for p in front],
            mode="lines",
            name="frontier",
            line=dict(dash="dash", color="black", width=1),
        )
    for (name, m), colour in zip(markers.items(), MARKER_COLOURS * len(markers)):
        if m.fid is None:  # measured compute, no FID yet: a vertical line at that compute, named in the legend
            fig.add_vline(x=m.x, line=dict(color=colour, dash="dot"))
            fig.add_scatter(x=[None], y=[None], mode="lines", name=name, line=dict(color=colour, dash="dot"))
            continue
        error = (
            None
            if m.low is None
            else dict(type="data", symmetric=False, array=[m.high - m.fid], arrayminus=[m.fid - m.low], color=colour)
        )
        fig.add_scatter(
            x=[m.x],
            y=[m.fid],
            error_y=error,
            mode="markers",
            name=name,
            marker=dict(symbol="star", size=16, color=colour, line=dict(width=1, color="black")),
        )
    fig.update_xaxes(title=x_title, type="log")
    fig.update_yaxes(title="FID (lower is better)")
    fig.update_layout(**LAYOUT, title=title, showlegend=True)
    return fig


def fid_vs_compute_figure(
    curves: Mapping[str, Curve],
    markers: Mapping[str, Marker] = {},
    frontier: Sequence[tuple[float, float]] | None = None,
    x_title: str = "block-layer evaluations per image, T[(N-D)+D*S]",
    title: str = "FID against inference compute",
) -> go.Figure:
    """One line per model over its (compute, FID) points, the Pareto frontier of `frontier` (default: all curve
    points) dashed, and highlighted runs as stars (a run without an FID: a vertical line at its compute)."""
    if frontier is None:
        frontier = [p for pts in curves.values() for p in pts]
    return _curves(curves, markers, x_title, title, frontier)


def fid_vs_steps_figure(
    curves: Mapping[str, Curve], markers: Mapping[str, Marker] = {}, title: str = "FID against denoising steps"
) -> go.Figure:
    """One line per model over its (steps S, FID) points, and highlighted runs as stars."""
    return _curves(curves, markers, "denoising steps per block, S", title)


# ---- figures of reports (the notebooks) -------------------------------------------------------------------------
def curves_figure(reports: Mapping[str, Report], x: str = "paper_cost", title: str | None = None):
    """FID against steps or compute for each report, with its bootstrap interval as error bars."""
    curves = {name: r.points(x) for name, r in reports.items()}
    fig = (
        fid_vs_steps_figure(curves, title=title or "FID against denoising steps")
        if x == "steps"
        else fid_vs_compute_figure(curves, x_title=COSTS[x], title=title or "FID against inference compute")
    )
    for trace in fig.data:
        r = reports.get(trace.name)
        if r is not None:
            trace.error_y = dict(
                type="data",
                symmetric=False,
                array=r.ys("fid_high") - r.ys("fid"),
                arrayminus=r.ys("fid") - r.ys("fid_low"),
                thickness=1,
            )
    return fig


def crossover_figure(ar: Report, ref: Report, x: str = "paper_cost"):
    """Top: both FID curves on the compute they share, crossings marked. Bottom: how much lower AR-heavy's FID is
    at equal compute, against the paper's 60-75% band."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.6, 0.4], vertical_spacing=0.06)
    for r, color in ((ar, "#d62728"), (ref, "#1f77b4")):
        fig.add_trace(
            go.Scatter(
                x=r.xs(x),
                y=r.ys(),
                name=f"{r.name} (D={r.D})",
                mode="lines+markers",
                line=dict(color=color),
                text=[f"S={p.steps}" for p in r.curve],
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=r.ys("fid_high") - r.ys(),
                    arrayminus=r.ys() - r.ys("fid_low"),
                    thickness=1,
                ),
            ),
            row=1,
            col=1,
        )
    for k in crossings(ar, ref, x):
        fig.add_trace(
            go.Scatter(
                x=[k.cost],
                y=[k.fid],
                mode="markers",
                name=f"crossover ({k.cost:.0f})",
                marker=dict(symbol="x", size=14, color="black"),
            ),
            row=1,
            col=1,
        )
    span = overlap(ar, ref, x)
    if span:
        grid = np.geomspace(*span, 60) if span[1] > span[0] else np.array(span[:1])
        gain = [improvement(fid_at(ar, b, x), fid_at(ref, b, x)) for b in grid]
        fig.add_trace(
            go.Scatter(x=grid, y=gain, name=f"{ar.name} FID lower by", mode="lines", line=dict(color="black")),
            row=2,
            col=1,
        )
        fig.add_hrect(
            y0=PAPER_CLAIM_BAND[0],
            y1=PAPER_CLAIM_BAND[1],
            fillcolor="green",
            opacity=0.15,
            line_width=0,
            annotation_text="paper: 60-75%",
            annotation_position="top left",
            row=2,
            col=1,
        )
        fig.add_hline(y=0, line=dict(color="grey", width=1), row=2, col=1)
    fig.update_xaxes(type="log", row=1, col=1)
    fig.update_xaxes(type="log", title=COSTS[x], row=2, col=1)
    fig.update_yaxes(title="FID", row=1, col=1)
    fig.update_yaxes(title="FID lower by", tickformat=".0%", row=2, col=1)
    fig.update_layout(template="plotly_white", height=600, title=f"{ar.name} against {ref.name} at equal compute")
    return fig


def paper_figure(rows: Sequence[dict], label: str, series: Mapping[str, str], title: str):
    """Grouped bars: for each row (x = row[label]) one bar per series {legend name: row key}."""
    fig = go.Figure(
        [go.Bar(name=name, x=[str(r[label]) for r in rows], y=[r[key] for r in rows]) for name, key in series.items()]
    )
    fig.update_layout(template="plotly_white", barmode="group", title=title, xaxis_title=label)
    return fig


def effect_figure(curves: Mapping[str, Sequence[tuple[int, float, float, float]]]):
    """The AR-heavy advantage against the number of layers N: for each kind of model ({name: [(N, effect, low,
    high)]}, depth_study.effect_by_n) the relative FID reduction of D=N/4 over D=N with its interval, and the paper's
    band at N=28."""
    fig = go.Figure()
    lo, hi = PAPER_CLAIM_BAND
    fig.add_hrect(
        y0=100 * lo, y1=100 * hi, fillcolor="green", opacity=0.12, line_width=0, annotation_text="paper, N=28"
    )
    for i, (name, pts) in enumerate(curves.items()):
        ns, eff, low, high = (np.array(v, dtype=float) for v in zip(*pts))
        fig.add_trace(
            go.Scatter(
                x=ns + 0.15 * i,  # a small offset so that kinds at the same N do not hide each other
                y=100 * eff,
                error_y=dict(type="data", symmetric=False, array=100 * (high - eff), arrayminus=100 * (eff - low)),
                mode="lines+markers",
                name=name,
                hovertemplate="N=%{x:.0f}: %{y:.0f}% lower FID<extra>" + name + "</extra>",
            )
        )
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(
        **LAYOUT,
        title="AR-heavy D=N/4 against all-diffusion D=N at the lowest common compute",
        xaxis_title="layers N",
        yaxis_title="% lower FID for D=N/4",
        height=360,
    )
    return fig


def loss_figure(log: Mapping[str, Sequence[float]], title: str = "training loss"):
    """Training loss against optimizer steps, from read_training_log."""
    fig = go.Figure(go.Scatter(x=log["step"], y=log["train/loss"], mode="lines+markers", name="train/loss"))
    fig.update_layout(
        template="plotly_white",
        title=title,
        xaxis_title="optimizer step",
        yaxis_title="loss",
        yaxis_type="log",
        height=320,
    )
    return fig


def frames_figure(frames: Sequence[torch.Tensor], titles: Sequence[str], nrow: int | None = None):
    """One panel per frame (each a batch of images (B, C, H, W) in [-1, 1]) side by side: e.g. the canvas after
    each finished block."""
    fig = make_subplots(rows=1, cols=len(frames), subplot_titles=list(titles), horizontal_spacing=0.01)
    for i, frame in enumerate(frames):
        for trace in image_grid_figure(frame, nrow).data:
            fig.add_trace(trace, row=1, col=i + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    for i in range(len(frames)):
        fig.update_yaxes(scaleanchor=f"x{i + 1 if i else ''}", row=1, col=i + 1)
    fig.update_layout(template="plotly_white", height=260, margin=dict(l=0, r=0, t=30, b=0))
    return fig
