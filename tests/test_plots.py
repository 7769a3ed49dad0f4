"""workbench.research.plots: the figures the notebooks and the app share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data.images import image_grid
from workbench.research.comparison import frontier
from workbench.research.plots import Marker, fid_vs_compute_figure, fid_vs_steps_figure, image_grid_figure


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid_figure_shows_the_grid_pixels(channels):
    images = torch.rand(5, channels, 8, 8) * 2 - 1
    fig = image_grid_figure(images, nrow=3, title="t")
    z = np.asarray(fig.data[0].z)
    grid = np.asarray(image_grid(images, 3))
    assert z.shape == (*grid.shape[:2], 3)
    assert np.array_equal(z[..., 0], grid if channels == 1 else grid[..., 0])
    assert fig.layout.title.text == "t"


def test_pareto_front_keeps_only_unbeaten_points():
    pts = [(4, 4), (1, 5), (2, 6), (3, 4), (5, 1), (5, 3)]
    assert frontier(pts) == [(1, 5), (3, 4), (5, 1)]
    assert frontier([]) == []


def test_fid_vs_compute_figure_curves_frontier_and_markers():
    curves = {"D1": [(20, 50.0), (10, 60.0)], "D4": [(40, 30.0), (80, 20.0)]}
    fig = fid_vs_compute_figure(curves, {"run": Marker(30, 40.0, 35.0, 47.0), "pending": Marker(25)})
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["D1"].x) == [10, 20]  # sorted by compute
    assert list(by_name["frontier"].x) == [10, 20, 40, 80]
    assert list(by_name["run"].error_y.array) == [7.0] and list(by_name["run"].error_y.arrayminus) == [5.0]
    assert "pending" in by_name and fig.layout.shapes[0].x0 == 25  # no FID yet: a line at its compute
    assert fig.layout.xaxis.type == "log"
    only = fid_vs_compute_figure(curves, frontier=[(1, 1.0), (2, 0.5)])
    assert list(next(t for t in only.data if t.name == "frontier").x) == [1, 2]


def test_fid_vs_steps_figure():
    fig = fid_vs_steps_figure({"a": [(8, 10.0), (2, 30.0)]}, {"run": Marker(4, 20.0)}, title="x")
    assert [t.name for t in fig.data] == ["a", "run"] and list(fig.data[0].x) == [2, 8]
    assert fig.layout.xaxis.title.text == "denoising steps per block, S"


def test_effect_figure_draws_percent_with_asymmetric_intervals_and_the_papers_band():
    from workbench.research.plots import effect_figure

    fig = effect_figure(
        {"dedicated": [(4, 0.43, 0.40, 0.47)], "elastic, seed 0": [(8, 0.5, 0.4, 0.55), (12, 0.6, 0.5, 0.7)]}
    )
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["dedicated"].y) == pytest.approx([43.0]) and list(by_name["dedicated"].x) == [4.0]
    e = by_name["elastic, seed 0"]
    assert list(e.y) == pytest.approx([50.0, 60.0]) and list(e.error_y.array) == pytest.approx([5.0, 10.0])
    assert list(e.error_y.arrayminus) == pytest.approx([10.0, 10.0]) and list(e.x) == pytest.approx([8.15, 12.15])
    band = fig.layout.shapes[0]
    assert (band.y0, band.y1) == (60.0, 75.0)
