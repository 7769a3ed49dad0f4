"""Plotly figure builders shared by the notebooks and the app: image grids, FID against compute, FID against steps.

Inputs are plain numbers and tensors, so any notebook, report or UI can draw them; nothing here computes a metric.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from .images import image_grid

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


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (compute, FID) points no other point beats on both axes, by increasing compute."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


@dataclass(frozen=True)
class Marker:
    """A highlighted run: its x (compute or steps) and, once measured, its FID with an optional interval."""
    x: float
    fid: float | None = None
    low: float | None = None
    high: float | None = None


MARKER_COLOURS = ("crimson", "darkorange", "purple", "teal")


def _curves(curves: Mapping[str, Curve], markers: Mapping[str, Marker], x_title: str, title: str,
            frontier: Sequence[tuple[float, float]] = ()) -> go.Figure:
    fig = go.Figure()
    for name, pts in curves.items():
        pts = sorted(pts)
        fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name)
    front = pareto_front(frontier)
    if len(front) > 1:
        fig.add_scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines", name="frontier",
                        line=dict(dash="dash", color="black", width=1))
    for (name, m), colour in zip(markers.items(), MARKER_COLOURS * len(markers)):
        if m.fid is None:  # measured compute, no FID yet: a vertical line at that compute, named in the legend
            fig.add_vline(x=m.x, line=dict(color=colour, dash="dot"))
            fig.add_scatter(x=[None], y=[None], mode="lines", name=name, line=dict(color=colour, dash="dot"))
            continue
        error = None if m.low is None else dict(type="data", symmetric=False, array=[m.high - m.fid],
                                                 arrayminus=[m.fid - m.low], color=colour)
        fig.add_scatter(x=[m.x], y=[m.fid], error_y=error, mode="markers", name=name,
                        marker=dict(symbol="star", size=16, color=colour, line=dict(width=1, color="black")))
    fig.update_xaxes(title=x_title, type="log")
    fig.update_yaxes(title="FID (lower is better)")
    fig.update_layout(**LAYOUT, title=title, showlegend=True)
    return fig


def fid_vs_compute_figure(curves: Mapping[str, Curve], markers: Mapping[str, Marker] = {},
                          frontier: Sequence[tuple[float, float]] | None = None,
                          x_title: str = "block-layer evaluations per image, T[(N-D)+D*S]",
                          title: str = "FID against inference compute") -> go.Figure:
    """One line per model over its (compute, FID) points, the Pareto frontier of `frontier` (default: all curve
    points) dashed, and highlighted runs as stars (a run without an FID: a vertical line at its compute)."""
    if frontier is None:
        frontier = [p for pts in curves.values() for p in pts]
    return _curves(curves, markers, x_title, title, frontier)


def fid_vs_steps_figure(curves: Mapping[str, Curve], markers: Mapping[str, Marker] = {},
                        title: str = "FID against denoising steps") -> go.Figure:
    """One line per model over its (steps S, FID) points, and highlighted runs as stars."""
    return _curves(curves, markers, "denoising steps per block, S", title)
