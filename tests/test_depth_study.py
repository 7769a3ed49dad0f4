"""The headline at depth: the effect of AR-heavy D=N/4 over all-diffusion D=N at the lowest common compute and its
multiples, per model and against N, with intervals from the FIDs' own, and the verdict that reads them."""

import math

import pytest
from test_experiments import make_report, write

from workbench.research import depth_study as ds
from workbench.research import findings as fd
from workbench.research import reports
from workbench.research.replicates import seeded_name


def elastic(root, n, fid_ar, fid_ref, seed=0, width=0.5, family="depth"):
    """Reports of an elastic N-layer model at D=N/4 and D=N with constant FIDs (the curves never cross)."""
    name = seeded_name(f"N{n}", seed) if family == "depth" else "elastic"
    for d, fid in ((n // 4, fid_ar), (n, fid_ref)):
        over = {"model.depth": n, "model.diffusion_depth": d, "model.elastic_depths": list(range(1, n + 1))}
        write(
            root, make_report(family, f"{name}-D{d}", lambda s, f=fid: f, width=width, **over, **{"train.seed": seed})
        )
    return reports.load_reports(family, root)


def dedicated(root, fid_ar, fid_ref, width=0.5):
    for d, fid in ((1, fid_ar), (4, fid_ref)):
        write(root, make_report("vertical", f"D{d}", lambda s, f=fid: f, width=width, **{"model.diffusion_depth": d}))
    return reports.load_reports("vertical", root)


@pytest.mark.parametrize("n", [4, 8, 12])
def test_the_effect_is_read_at_the_all_diffusion_models_cheapest_points(tmp_path, n):
    found = ds.effect_table({}, elastic(tmp_path, n, 10.0, 40.0))
    assert [e.cost for e in found] == [4 * n * s for s in (2, 4, 8)]  # T=4: D=N at S=2, 4, 8
    e = found[0]
    assert e.N == n and e.model == f"depth/N{n} (elastic)" and e.seed == 0
    assert e.effect == pytest.approx(0.75) and e.disjoint
    assert e.interval == pytest.approx((1 - 10.5 / 39.5, 1 - 9.5 / 40.5))  # from the ends of both intervals


def test_the_ar_heavy_side_is_interpolated_in_log_compute(tmp_path):
    over = {"model.depth": 8, "model.elastic_depths": list(range(1, 9))}
    write(tmp_path, make_report("depth", "N8-D2", lambda s: 100.0 / s, **over, **{"model.diffusion_depth": 2}))
    write(tmp_path, make_report("depth", "N8-D8", lambda s: 50.0, **over, **{"model.diffusion_depth": 8}))
    (e, *_) = ds.effect_table({}, reports.load_reports("depth", tmp_path))
    # D=2 of N=8 at T=4 costs 4 * (6 + 2 S): 64 evaluations lie between S=4 (56) and S=8 (88)
    u = math.log(64 / 56) / math.log(88 / 56)
    assert e.cost == 64 and e.ar[0] == pytest.approx(25.0 + u * (12.5 - 25.0))


def test_pairs_need_both_sides_and_read_the_seed_from_the_name(tmp_path_factory):
    depth = elastic(tmp_path_factory.mktemp("a"), 12, 10.0, 40.0, seed=1)
    assert [(m, s) for m, s, *_ in ds.pairs({}, depth)] == [("depth/N12-s1 (elastic)", 1)]
    lone = tmp_path_factory.mktemp("b")
    over = {"model.depth": 8, "model.diffusion_depth": 2, "model.elastic_depths": list(range(1, 9))}
    write(lone, make_report("depth", "N8-D2", lambda s: 10.0, **over))
    assert ds.pairs({}, reports.load_reports("depth", lone)) == []  # no D=N report: no pair
    vert = dedicated(tmp_path_factory.mktemp("c"), 20.0, 30.0)
    assert [m for m, *_ in ds.pairs(vert, {})] == ["vertical D1 vs D4 (dedicated)"]


def test_the_verdict_reads_every_seed_at_the_largest_n_against_n4(tmp_path_factory):
    def study(n4, n12_seeds, width=0.5):
        vert = dedicated(tmp_path_factory.mktemp("v"), *n4, width=width)
        root = tmp_path_factory.mktemp("d")
        for seed, (a, r) in enumerate(n12_seeds):
            depth = elastic(root, 12, a, r, seed=seed, width=width)
        return ds.verdict(ds.effect_table(vert, depth))

    said, why = study((20.0, 30.0), [(10.0, 40.0), (11.0, 40.0)])  # 33% at N=4, 75% and 72% at N=12
    assert said == "reproduced" and "grows with N" in why and why.startswith("N=12, 2 seed(s): 75%")
    said, why = study((20.0, 30.0), [(20.0, 30.0), (20.5, 30.0)])  # the same 33%: no growth
    assert said == "same direction, smaller effect" and "does not change with N beyond noise" in why
    # N=4 and seed 0 of N=12: [1 - 20.5/29.5, 1 - 19.5/30.5] = [31%, 36%]; seed 1: low end 1 - 21/29.5 = 29%
    low, high = (1 - 21.0 / 29.5) - (1 - 19.5 / 30.5), (1 - 19.5 / 30.5) - (1 - 20.5 / 29.5)
    assert f"(change from N=4: {100 * low:+.0f} to {100 * high:+.0f} points)" in why and round(100 * low) == -7
    said, why = study((10.0, 40.0), [(20.0, 30.0), (20.0, 30.0)])
    assert said == "same direction, smaller effect" and "shrinks with N" in why
    said, _ = study((20.0, 30.0), [(30.0, 20.0), (30.0, 21.0)])
    assert said == "opposite"
    said, why = study((20.0, 30.0), [(10.0, 40.0), (29.0, 30.0)], width=2.0)  # one seed's intervals overlap
    assert said == "undecided" and "overlap" in why


def test_the_findings_table_gets_the_depth_row_beside_the_crossover(tmp_path_factory):
    vert = dedicated(tmp_path_factory.mktemp("v"), 20.0, 30.0)
    depth = elastic(tmp_path_factory.mktemp("d"), 8, 10.0, 40.0)
    five, _ = fd.findings(vertical=vert, depth=depth)
    assert len(five) == 6 and five[1].finding.startswith("constrained compute: AR-heavy")
    row = five[2]
    assert (
        row.finding == "constrained compute at N=4, 8, 12: the AR-heavy gap reaches the paper's as N grows"
        and row.verdict == fd.REPRODUCED
    )
    assert row.ours.startswith("N=4 dedicated 33% [") and "N=8 elastic 75% [" in row.ours
    assert len(fd.findings(vertical=vert)[0]) == 5  # no depth reports: the paper's five alone
    assert fd.depth_finding(vert, {}).verdict == fd.UNDECIDED


def test_effect_by_n_is_the_curve_notebook_02_draws(tmp_path_factory):
    vert = dedicated(tmp_path_factory.mktemp("v"), 20.0, 30.0)
    root = tmp_path_factory.mktemp("d")
    elastic(root, 8, 10.0, 40.0)
    depth = elastic(root, 12, 12.0, 40.0)
    curve = ds.effect_by_n(ds.effect_table(vert, depth))
    assert list(curve) == ["dedicated", "elastic, seed 0"]
    assert [n for n, *_ in curve["elastic, seed 0"]] == [8, 12]
    assert curve["elastic, seed 0"][1][1] == pytest.approx(0.7)
