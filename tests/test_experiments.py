"""Analysis functions of workbench.research.live on synthetic zoo reports written to a tmp dir; the shipped zoo's
exports
agree with their reports."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import workbench as wb
from workbench import __main__ as cli
from workbench.core.compute import cached_cost, paper_cost
from workbench.evaluation import evaluate as evaluation
from workbench.research import comparison, families, paper, plots, reports
from workbench.research import live as ex
from workbench.research import zoo as driver
from workbench.research.families import MEMBERS

STEPS = (2, 4, 8, 16, 32)


def make_report(family, name, fid_of_steps, steps=STEPS, width=0.5, **over):
    """A report of the zoo's schema for the tiny preset with `over` applied; FID(S) from `fid_of_steps`."""
    cfg = wb.preset("tiny", **over)
    curve = [
        {
            "steps": s,
            "fid": fid_of_steps(s),
            "fid_low": fid_of_steps(s) - width,
            "fid_high": fid_of_steps(s) + width,
            "kid_mean": 0.01,
            "kid_std": 0.001,
            "paper_cost": paper_cost(cfg.model, s),
            "cached_cost": cached_cost(cfg.model, s),
            "seconds_per_image": 0.01 * s,
        }
        for s in steps
    ]
    return {
        "family": family,
        "name": name,
        "config": cfg.to_dict(),
        "training": {
            "steps": 600,
            "batch": 64,
            "images_seen": 38400,
            "seconds": 900.0,
            "device": "cpu (2 cores)",
            "final_val_loss": 0.05,
        },
        "eval": {
            "extractor": "fmnist-classifier-0123456789ab",
            "reference": "fashion-mnist-32px-test",
            "n": 1000,
            "sampler": "ddim",
            "weights": "ema",
            "seed": 0,
            "curve": curve,
        },
    }


def vertical_fid(d):
    """AR-heavy (small D) converges fast to a high floor; all-diffusion slowly to a low floor (the paper's shape)."""
    floor, amp = {1: (30.0, 20.0), 2: (26.0, 40.0), 3: (23.0, 50.0), 4: (20.0, 60.0)}[d]
    return lambda s: floor + amp / s


@pytest.fixture
def zoo(tmp_path):
    for d in (1, 2, 3, 4):
        write(tmp_path, make_report("vertical", f"D{d}", vertical_fid(d), **{"model.diffusion_depth": d}))
    for t, fid in ((1, 40.0), (4, 35.0), (16, 45.0)):
        write(tmp_path, make_report("blocks-fmnist", f"T{t}", lambda s, f=fid: f + 10 / s, **{"model.num_blocks": t}))
    for t, fid in ((1, 90.0), (4, 80.0), (16, 70.0)):
        write(tmp_path, make_report("blocks-emoji", f"T{t}", lambda s, f=fid: f + 10 / s, **{"model.num_blocks": t}))
    abl = {
        "default": ({}, 30.0),
        "no-zcond": ({"model.use_z_cond": False}, 35.0),
        "no-clean": ({"model.clean_stream": False}, 34.0),
        "mlp-denoise": ({"model.denoiser_attention": "block"}, 60.0),
        "hidden0": ({"diffusion.hidden_loss_weight": 0.0}, 30.3),
        "shared": ({"model.towers": "shared"}, 30.2),
    }
    for name, (over, fid) in abl.items():
        write(tmp_path, make_report("ablations", name, lambda s, f=fid: f + 1 / s, **over))
    return tmp_path


def write(root, d):
    path = root / d["family"] / f"{d['name']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d))


def test_load_reports_orders_members_and_round_trips(zoo, tmp_path_factory):
    vertical = reports.load_reports("vertical", zoo)
    assert list(vertical) == ["D1", "D2", "D3", "D4"]
    assert [r.D for r in vertical.values()] == [1, 2, 3, 4] and all(r.N == 4 and r.T == 4 for r in vertical.values())
    assert list(reports.load_reports("ablations", zoo)) == [
        "default",
        "no-zcond",
        "no-clean",
        "shared",
        "mlp-denoise",
        "hidden0",
    ]
    assert list(reports.load_reports("blocks-emoji", zoo)) == ["T1", "T4", "T16"]
    assert reports.load_reports("vertical", zoo / "nothing") == {}
    assert reports.zoo_status(zoo) == {
        "vertical": 4,
        "blocks-fmnist": 3,
        "blocks-emoji": 3,
        "blocks-emoji256": 0,
        "blocks-people256": 0,
        "context-people256": 0,
        "ablations": 6,
        "depth": 0,
    }
    r = vertical["D1"]
    again = reports.read_report(reports.write_report(r, tmp_path_factory.mktemp("out")))
    assert again.to_dict() == r.to_dict()
    assert r.final.steps == 32 and r.xs("steps").tolist() == list(STEPS)


def test_report_schema_errors_name_file_and_field(tmp_path):
    d = make_report("vertical", "D1", vertical_fid(1))
    del d["eval"]["curve"][2]["paper_cost"]
    write(tmp_path, d)
    with pytest.raises(ValueError, match=r"D1\.json: eval\.curve\[2\] lacks \['paper_cost'\]"):
        reports.load_reports("vertical", tmp_path)
    (tmp_path / "vertical" / "D1.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        reports.load_reports("vertical", tmp_path)
    with pytest.raises(ValueError, match="missing field 'training'"):
        reports.report_from_dict({k: v for k, v in d.items() if k != "training"})


def line_report(name, costs, fids):
    """A report whose paper_cost points are given directly (steps 1..n)."""
    r = reports.report_from_dict(make_report("vertical", name, lambda s: 0.0, steps=tuple(range(1, len(costs) + 1))))
    pts = tuple(reports.CurvePoint(p.steps, f, f - 1, f + 1, 0, 0, c, c, 0) for p, c, f in zip(r.curve, costs, fids))
    return reports.Report(r.family, name, r.config, r.training, r.eval, pts)


def test_fid_at_is_log_linear_and_never_extrapolates():
    r = line_report("a", [10.0, 100.0, 1000.0], [30.0, 20.0, 15.0])
    assert comparison.fid_at(r, 10.0) == 30.0 and comparison.fid_at(r, 1000.0) == 15.0
    assert comparison.fid_at(r, math.sqrt(10 * 100)) == pytest.approx(25.0)  # halfway in log(compute)
    assert comparison.fid_at(r, 100.0, y="fid_high") == pytest.approx(21.0)
    assert math.isnan(comparison.fid_at(r, 9.99)) and math.isnan(comparison.fid_at(r, 1000.1))
    table = comparison.equal_compute_table({"a": r, "b": line_report("b", [50.0, 500.0], [10.0, 5.0])}, [10.0, 50.0])
    assert (
        math.isnan(table[0]["b"])
        and table[1]["b"] == 10.0
        and table[1]["a"] == pytest.approx(30 - 10 * math.log(5) / math.log(10))
    )


def test_crossing_is_exact_for_known_lines():
    a = line_report("a", [10.0, 100.0], [10.0, 20.0])
    b = line_report("b", [10.0, 100.0], [20.0, 10.0])
    (c,) = comparison.crossings(a, b)
    assert c.cost == pytest.approx(math.sqrt(10 * 100)) and c.fid == pytest.approx(15.0)
    assert (c.better_below, c.better_above) == ("a", "b")
    assert comparison.crossings(a, line_report("c", [200.0, 300.0], [1.0, 2.0])) == []  # no common range
    assert comparison.crossings(a, line_report("d", [10.0, 100.0], [5.0, 6.0])) == []  # d always better
    touch = line_report("e", [10.0, 31.0, 100.0], [20.0, 10.0 + 10 * math.log(3.1) / math.log(10), 10.0])
    assert len(comparison.crossings(a, touch)) == 1


def test_compare_on_the_papers_shape(zoo):
    v = reports.load_reports("vertical", zoo)
    c = comparison.compare(v["D1"], v["D4"])
    # lowest common compute: D4 at S=2 costs 4*4*2 = 32; D1 reaches 32 at S=5, i.e. between S=4 (28) and S=8 (44)
    assert c.low_cost == 32.0
    u = math.log(32 / 28) / math.log(44 / 28)
    assert c.low_fid[0] == pytest.approx((30 + 20 / 4) + u * ((30 + 20 / 8) - (30 + 20 / 4)))
    assert c.low_fid[1] == pytest.approx(20 + 60 / 2)
    assert c.low_improvement == pytest.approx(1 - c.low_fid[0] / c.low_fid[1])
    assert c.low_significant and c.equal_steps == 2
    assert c.equal_steps_improvement == pytest.approx(1 - 40 / 50)
    assert c.final_fid == (30 + 20 / 32, 20 + 60 / 32)
    (k,) = c.crossings
    assert (k.better_below, k.better_above) == ("D1", "D4")
    assert comparison.fid_at(v["D1"], k.cost) == pytest.approx(comparison.fid_at(v["D4"], k.cost))
    assert c.verdict == "same direction, smaller gap than the paper's"
    text = comparison.describe_comparison(c)
    assert f"{c.low_fid[0]:.1f}" in text and f"{k.cost:.0f}" in text and "D1" in text


@pytest.mark.parametrize(
    "ar,ref,verdict",
    [
        (30.0, 100.0, "reproduced"),
        (90.0, 100.0, "same direction, smaller gap than the paper's"),
        (10.0, 100.0, "same direction, larger gap than the paper's"),
        (110.0, 100.0, "not reproduced"),
    ],
)
def test_verdict_against_the_papers_band(ar, ref, verdict):
    a = line_report("a", [10.0, 100.0], [ar, ar])
    b = line_report("b", [10.0, 100.0], [ref, ref])
    c = comparison.compare(a, b)
    assert c.low_improvement == pytest.approx(comparison.improvement(ar, ref)) and c.verdict == verdict
    assert comparison.improvement(25.0, 100.0) == 0.75


def test_vertical_table_aligns_d_with_the_papers(zoo):
    rows = paper.vertical_table(reports.load_reports("vertical", zoo))
    assert [r["paper D"] for r in rows] == [7, 14, 21, 28]
    assert [r["FFHQ-1024"] for r in rows] == [20.2, 17.8, 16.6, 15.9]
    assert [r["ImageNet-256"] for r in rows] == [34.0, 30.0, 28.1, 27.4]
    assert rows[-1]["FID / FID(D=N)"] == 1.0 and rows[-1]["FFHQ-1024 / FID(D=N)"] == 1.0
    assert rows[0]["FID"] == pytest.approx(30 + 20 / 32)
    assert "rank correlation of FID with D is -1.00 (paper: -1.00)" in paper.describe_vertical(rows)
    md = paper.markdown_table(rows, ["D", "paper D", "FID", "FID interval", "FFHQ-1024"])
    assert md.splitlines()[0] == "| D | paper D | FID | FID interval | FFHQ-1024 |" and "[30.1, 31.1]" in md


def write_arm(root, fids: dict[int, float]):
    for t, fid in fids.items():
        write(root, make_report("blocks-emoji", f"T{t}", lambda s, f=fid: f + 10 / s, **{"model.num_blocks": t}))
    return root


def test_blocks_table_and_best_t(zoo, tmp_path_factory):
    low, high = reports.load_reports("blocks-fmnist", zoo), reports.load_reports("blocks-emoji", zoo)
    rows = paper.blocks_table({"low": low, "high": high})
    assert [r["T"] for r in rows] == [1, 4, 16]
    assert rows[0]["resolution low"] == "fashion-mnist 32px" and rows[0]["FID high"] == high["T1"].final.fid
    assert paper.best_t(low) == 4 and paper.best_t(high) == 16
    text = paper.describe_blocks({"low": low, "high": high, "256px": {}})
    assert "T=4 is best" in text and "ImageNet-256 is T=1: different" in text and "FFHQ-1024 is T=16: same" in text
    assert text.endswith("No 256px reports yet.")
    # an arm missing a T has NaN there; a third arm is compared with the paper's high resolution
    rows = paper.blocks_table({"low": low, "high": {}, "256px": {"T16": high["T16"]}})
    assert math.isnan(rows[0]["FID high"]) and math.isnan(rows[0]["FID 256px"]) and rows[2]["FID 256px"] > 0
    assert "the paper's best at FFHQ-1024 is T=16: same" in paper.describe_blocks({"256px": high})
    one = paper.describe_blocks({"256px": {"T16": high["T16"]}})  # one T is no comparison: no verdict on the paper's
    assert "only T=16 has a report" in one and "no comparison of T yet" in one and "paper" not in one
    geometry = {r["arm"]: r for r in paper.geometry_table({"low": low, "high": high, "256px": {}})}
    assert list(geometry) == ["low", "high", "paper FFHQ-1024", "paper ImageNet-256"]
    m = high["T16"].config.model
    assert geometry["high"]["tokens"] == (m.latent_size // m.patch_size) ** 2 and geometry["high"]["T"] == 16
    assert geometry["paper FFHQ-1024"]["tokens per block"] == 256 and geometry["paper ImageNet-256"]["tokens"] == 256
    assert "the paper's best at ImageNet-256 is T=1: different" in paper.describe_blocks(
        {"256px": high}, paper_side={"256px": "low"}
    )
    # overlapping intervals decide nothing: the best T is named, the verdict is withheld
    near = reports.load_reports(
        "blocks-emoji", write_arm(tmp_path_factory.mktemp("near"), {1: 90.0, 4: 70.4, 16: 70.0})
    )
    text = paper.describe_blocks({"256px": near})
    assert "T=16 is best" in text and "overlaps T=4" in text and "T=16: undecided, the intervals overlap" in text
    assert "same" not in text


def test_ablation_table_uses_intervals_and_paper_directions(zoo):
    rows = {r["ablation"]: r for r in paper.ablation_table(reports.load_reports("ablations", zoo))}
    assert rows["default"]["change"] == 0.0 and rows["default"]["agrees"] is None
    assert rows["mlp-denoise"]["ours"] == "worse" and rows["mlp-denoise"]["agrees"]
    assert rows["hidden0"]["ours"] == "≈" and rows["hidden0"]["paper"] == "worse" and not rows["hidden0"]["agrees"]
    assert rows["shared"]["paper"] == "≈" and rows["shared"]["agrees"]  # +0% / +1.3% in the paper
    assert rows["no-zcond"]["FFHQ change"] == pytest.approx(20.1 / 17.8 - 1)
    text = paper.describe_ablations(list(rows.values()))
    assert text.startswith("4 of 5 ablations") and "hidden0 (ours ≈, paper worse)" in text
    md = paper.markdown_table(list(rows.values()), ["ablation", "change", "FFHQ change"])
    assert "| mlp-denoise | +100% | +19% |" in md
    with pytest.raises(ValueError, match="no 'default' report"):
        paper.ablation_table({k: v for k, v in reports.load_reports("ablations", zoo).items() if k != "default"})


def test_rank_correlation_edge_cases():
    assert paper.rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(paper.rank_correlation([1, 2], [5, 5]))
    assert math.isnan(paper.rank_correlation([1, 2, 3], [np.nan, np.nan, 1.0]))


@pytest.fixture
def one_thread():
    """Tiny models train fastest on one thread, above all when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class PixelStats(torch.nn.Module):
    """A stand-in feature extractor: 8 pooled pixel statistics (no shipped weights needed)."""

    name, id, num_features = "pixel-stats", "pixel-stats-test", 8

    def forward(self, images):
        x = torch.nn.functional.adaptive_avg_pool2d(images.float().mean(1, keepdim=True), 2).flatten(1)  # (B, 4)
        return torch.cat([x, x.square()], dim=1)


def test_evaluate_curve_writes_the_report_schema_deterministically(one_thread):
    cfg = wb.preset("tiny", **{"model.width": 32, "model.diffusion_depth": 1})
    model = wb.build_model(cfg)
    real = torch.rand(16, 1, 32, 32) * 2 - 1
    spec = evaluation.ScoreSpec(n=6, seed=3, extractor=PixelStats(), reference=real)
    ev = evaluation.evaluate_curve(model, cfg, spec, steps=(1, 2))
    assert ev["n"] == 6 and ev["extractor"] == "pixel-stats-test" and ev["seed"] == 3
    assert [p["steps"] for p in ev["curve"]] == [1, 2]
    assert [p["paper_cost"] for p in ev["curve"]] == [4 * (3 + 1), 4 * (3 + 2)]
    assert all(p["fid_low"] <= p["fid_high"] and p["seconds_per_image"] > 0 for p in ev["curve"])
    again = evaluation.evaluate_curve(model, cfg, spec, steps=(1, 2))
    assert [p["fid"] for p in again["curve"]] == [p["fid"] for p in ev["curve"]]
    r = reports.report_from_dict(
        {"family": "vertical", "name": "D1", "config": cfg.to_dict(), "training": {}, "eval": ev}
    )
    assert r.final.steps == 2 and r.D == 1


def test_live_configs_follow_the_zoo_families(tmp_path):
    for family, members in MEMBERS.items():
        cfgs = [ex.live_config(family, name, 5, tmp_path) for name, _ in members]
        assert len({c.train.out_dir for c in cfgs}) == len(cfgs)
    depths = [ex.live_config("vertical", f"D{d}", 5, tmp_path).model.diffusion_depth for d in (1, 2, 3, 4)]
    assert depths == [1, 2, 3, 4]
    emoji = ex.live_config("blocks-emoji", "T16", 5, tmp_path)
    assert (emoji.data.dataset, emoji.model.latent_size, emoji.model.num_blocks) == ("emoji", 64, 16)
    fluent = ex.live_config("blocks-emoji256", "T4", 5, tmp_path)
    assert (
        fluent.data.dataset,
        fluent.data.image_size,
        fluent.data.codec,
        fluent.model.latent_size,
        fluent.model.num_blocks,
    ) == ("fluent", 256, "vae", 32, 4)
    people = ex.live_config("blocks-people256", "T16", 5, tmp_path)
    assert (people.data.dataset, people.data.image_size, people.model.num_blocks) == ("fluent-people", 256, 16)
    assert not ex.live_config("ablations", "no-zcond", 5, tmp_path).model.use_z_cond
    both = ex.live_config("context-people256", "cond-ctx-T16", 5, tmp_path)  # the preset's labels and context noise
    assert (both.model.num_classes, both.data.labels, both.diffusion.train_context_noise, both.model.num_blocks) == (
        48,
        "group-tone",
        0.5,
        16,
    ) and both.sample.class_counts == wb.preset("people256-cond-T16").sample.class_counts
    plain = ex.live_config("context-people256", "T16", 5, tmp_path)
    assert (plain.model.num_classes, plain.diffusion.train_context_noise) == (0, 0.0)


def test_family_reports_prefers_the_zoo_and_full_mode_needs_it(zoo, tmp_path):
    reports, source = ex.family_reports("vertical", fast=False, root=zoo)
    assert list(reports) == ["D1", "D2", "D3", "D4"] and "shipped zoo reports (4" in source
    with pytest.raises(FileNotFoundError, match="python -m workbench zoo all"):
        ex.family_reports("vertical", fast=False, root=tmp_path / "empty")


def test_figures_build(zoo):
    v = reports.load_reports("vertical", zoo)
    fig = plots.curves_figure(v, "paper_cost")
    assert {t.name for t in fig.data} >= set(v) and fig.data[0].error_y.array is not None
    assert plots.curves_figure(v, "steps").layout.xaxis.title.text.startswith("denoising steps")
    cross = plots.crossover_figure(v["D1"], v["D4"])
    assert any(t.name.startswith("crossover") for t in cross.data)
    bars = plots.paper_figure(
        paper.vertical_table(v), "D", {"ours": "FID / FID(D=N)", "FFHQ": "FFHQ-1024 / FID(D=N)"}, "t"
    )
    assert len(bars.data) == 2 and len(bars.data[0].x) == 4
    frames = plots.frames_figure([torch.zeros(4, 1, 8, 8), torch.ones(4, 3, 8, 8)], ["a", "b"])
    assert len(frames.data) == 2


@pytest.mark.slow
def test_fast_mode_without_a_zoo_trains_and_evaluates_live_members(tmp_path, monkeypatch, one_thread):
    from workbench.data.datasets import build_dataset
    from workbench.evaluation import features
    from workbench.evaluation.metrics import ReferenceStats

    stats = PixelStats()
    monkeypatch.setitem(features.FEATURE_EXTRACTORS, stats.name, lambda: stats)

    def reference_for(cfg, n=None):
        data = build_dataset(cfg.data, "train")
        real = torch.stack([data[i][0] for i in range(64)])
        return ReferenceStats.from_features(
            features.extract_features(stats, real), {"name": "stub", "extractor": stats.name, "extractor_id": stats.id}
        )

    monkeypatch.setattr(ex, "reference_for", reference_for)
    monkeypatch.setitem(MEMBERS, "vertical", MEMBERS["vertical"][::3])  # D1 and D4
    reports, source = ex.family_reports(
        "vertical", fast=True, root=tmp_path / "no-zoo", live_root=tmp_path / "live", train_steps=2, steps=(1, 2), n=6
    )
    assert list(reports) == ["D1", "D4"] and source.startswith("NO ZOO REPORTS FOUND")
    assert all(r.training["steps"] == 2 and r.eval["n"] == 6 and len(r.curve) == 2 for r in reports.values())
    assert (tmp_path / "live" / "vertical" / "D4.json").is_file()
    comparison.compare(reports["D1"], reports["D4"])  # the notebooks' analysis runs on live reports as on the zoo's


def test_comparison_without_intervals_says_so():
    a, b = line_report("a", [10.0, 100.0], [30.0, 30.0]), line_report("b", [10.0, 100.0], [40.0, 40.0])
    strip = [
        reports.Report(
            r.family,
            r.name,
            r.config,
            r.training,
            r.eval,
            tuple(
                reports.CurvePoint(p.steps, p.fid, math.nan, math.nan, 0, 0, p.paper_cost, p.cached_cost, 0)
                for p in r.curve
            ),
        )
        for r in (a, b)
    ]
    c = comparison.compare(*strip)
    assert c.low_significant is None and "no intervals" in comparison.describe_comparison(c)
    assert comparison.compare(a, b).low_significant is True


def test_common_budgets_are_the_knots_inside_the_shared_range():
    a = line_report("a", [10.0, 20.0, 100.0], [3.0, 2.0, 1.0])
    b = line_report("b", [15.0, 50.0, 200.0], [3.0, 2.0, 1.0])
    assert comparison.common_budgets(a, b) == [15.0, 20.0, 50.0, 100.0]
    assert comparison.common_budgets(a, line_report("c", [300.0, 400.0], [1.0, 1.0])) == []


def test_recheck_rows_compare_against_the_reports_interval(zoo):
    r = reports.load_reports("vertical", zoo)["D1"]
    row = ex.recheck_row(r, {"steps": 2, "fid": r.curve[0].fid + 0.2})
    assert row["difference"] == pytest.approx(0.2) and row["interval width"] == pytest.approx(1.0)
    text = ex.describe_recheck([row])
    assert "within 0.20" in text and "well inside the reports' 1.0-wide" in text
    assert "not inside" in ex.describe_recheck([ex.recheck_row(r, {"steps": 2, "fid": r.curve[0].fid + 2})])
    assert ex.describe_recheck([]) == ""


@pytest.mark.parametrize("gpu", [False, True])
@pytest.mark.parametrize("family_name,prefix", [("blocks-emoji256", "emoji256"), ("blocks-people256", "people256")])
def test_the_256px_zoo_families_are_their_presets_with_their_budgets(gpu, family_name, prefix):
    from workbench.core.presets import GPU_BUDGETS

    family = [m for m in families.members(gpu) if m.family == family_name]
    assert [m.name for m in family] == ["T1", "T4", "T16"]
    for m in family:
        want = wb.preset(f"{prefix}-{m.name}", gpu=gpu).to_dict()
        got = m.config.to_dict()
        assert (
            got["model"] == want["model"]
            and got["data"] == want["data"]
            and m.config.model.num_blocks == int(m.name[1:])
        )
        assert {k: v for k, v in got["train"].items() if k != "out_dir"} == {
            k: v for k, v in want["train"].items() if k != "out_dir"
        }
        budget = GPU_BUDGETS[f"{prefix}-{m.name}"]
        assert (
            m.config.train.batch_size
            == (budget["train.batch_size"] if gpu else wb.preset("emoji256-T1").train.batch_size)
            and (m.config.train.accelerator == "cuda") == gpu
        )


def test_the_context_family_is_its_presets_shares_the_plain_run_and_ships_the_best_model_alone():
    """context-people256: the plain people model (the run of blocks-people256/T16), context noise, labels, both; of
    the people models only the one with both ships weights (one 30 MB file per 256 px dataset)."""
    from workbench.research.families import ships_weights

    ms = families.members()
    family = {m.name: m for m in ms if m.family == "context-people256"}
    assert list(family) == ["T16", "ctx-T16", "cond-T16", "cond-ctx-T16"]
    plain = next(m for m in ms if (m.family, m.name) == ("blocks-people256", "T16"))
    assert family["T16"].key == plain.key and len({m.key for m in family.values()}) == 4
    for name, m in family.items():
        want = wb.preset(f"people256-{name}")
        assert m.config.override(**{"name": want.name, "train.out_dir": want.train.out_dir}) == want
    assert [n for n in family if ships_weights("context-people256", n)] == ["cond-ctx-T16"]
    from workbench.research.families import (  # picks name zoo members whose schedule has a shift
        SAMPLING_PICKS,
        sampling_pick,
    )

    assert sampling_pick("context-people256", "ctx-T16") == (False, 2.0, {}) and sampling_pick("vertical", "D2") == (
        True,
        None,
        {},
    )
    assert sampling_pick("context-people256", "cond-ctx-T16") == (False, 2.0, {"cfg_scale": 2.0})
    assert all(m.config.model.num_classes for m in ms if "cfg_scale" in SAMPLING_PICKS.get((m.family, m.name), {}))
    assert all(m.config.diffusion.prediction == "flow" for m in ms if (m.family, m.name) in SAMPLING_PICKS)
    assert set(SAMPLING_PICKS) <= {(m.family, m.name) for m in ms}
    assert not any(ships_weights("blocks-people256", n) for n in ("T1", "T4", "T16"))


def test_the_256px_zoo_family_without_its_codec_stops_with_the_fix_not_a_traceback(
    tmp_path, monkeypatch, capsys, one_thread
):
    """Its members train once the codec exists; before, `python -m workbench zoo train` names the command that trains
    the codec for each of them (one line, no traceback), trains nothing and exits 1."""
    from workbench.data import codecs

    monkeypatch.setattr(families, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(codecs, "CODECS_DIR", tmp_path / "codecs")  # an empty data/codecs/, wherever the repo is
    real = driver.members

    def members(gpu=False):
        return [
            families.Member(
                m.family,
                m.name,
                m.config.override(
                    **{
                        "data.vae_path": str(tmp_path / "codecs" / "fluent3d-tiny"),
                        "data.root": str(tmp_path / "no-fluent"),
                        "train.out_dir": str(tmp_path / "runs" / m.key),
                    }
                ),
            )
            for m in real(gpu)
        ]

    monkeypatch.setattr(driver, "members", members)
    assert cli.main(["zoo", "train", "--only", "blocks-emoji256"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and not list((tmp_path / "runs").rglob("DONE"))
    for t in (1, 4, 16):
        assert f"blocks-emoji256/T{t}: not trained: codec {tmp_path / 'codecs' / 'fluent3d-tiny'} not found" in err
    assert err.count("Fix: python scripts/train_codec.py --name fluent3d-tiny") == 6  # as it fails, and at the end


def write_eval(root, T, fid, half=2.0, S=16, n=1000):
    """A `workbench eval --out` JSON with the fields reports.eval_rows reads."""
    path = root / f"eval-T{T}-S{S}.json"
    path.write_text(
        json.dumps(
            {
                "model": {"N": 6, "D": 3, "T": T},
                "steps": S,
                "n": n,
                "sampler": "euler",
                "weights": "ema",
                "seed": 0,
                "fid": fid,
                "fid_low": fid - half,
                "fid_high": fid + half,
                "fid_inf": fid - 5,
                "kid_mean": 0.08,
                "cost": {"flops_analytic": 6.8e9},
                "extractor": "inception-7ff4a85c3a63",
                "reference": "fluent-256px-all-inception-3391",
                "name": f"blocks-emoji256/T{T}",
            }
        )
    )
    return path


def test_eval_rows_and_the_t_verdict_from_scores_at_one_setting(tmp_path):
    paths = [write_eval(tmp_path, 16, 136.7), write_eval(tmp_path, 4, 146.3), write_eval(tmp_path, 1, 150.0)]
    rows = reports.eval_rows(paths)
    assert [r["T"] for r in rows] == [1, 4, 16] and rows[2]["FID low"] == pytest.approx(134.7)
    assert rows[0]["GFLOP/image"] == pytest.approx(6.8) and rows[0]["model"] == "blocks-emoji256/T1"
    text = paper.describe_t_rows(rows)
    assert "T=16 has the lowest FID, 136.7 [134.7, 138.7]" in text and "apart from every other T" in text
    assert text.endswith("The paper's best at FFHQ-1024 is T=16: same.")
    assert paper.describe_t_rows(rows, side="low").endswith("ImageNet-256 is T=1: different.")
    near = reports.eval_rows([write_eval(tmp_path, 16, 136.7), write_eval(tmp_path, 4, 139.0)])
    assert paper.describe_t_rows(near).endswith("T=16: undecided, the intervals overlap.")
    assert paper.describe_t_rows(rows[:1]) == "One T scored: no comparison of T."
    mixed = reports.eval_rows([write_eval(tmp_path, 16, 136.7), write_eval(tmp_path, 4, 146.3, S=8)])
    with pytest.raises(ValueError, match="2 different settings.*Fix: pass rows of one S"):
        paper.describe_t_rows(mixed)


def test_the_zoo_elastic_member_trains_four_budgets_and_reports_every_depth():
    ms = {(m.family, m.name): m for m in families.members()}
    el, d2 = ms["vertical", "elastic"], ms["vertical", "D2"]
    assert tuple(el.config.model.elastic_depths) == (1, 2, 3, 4) and el.key != d2.key
    assert el.config.train.max_steps == 4 * d2.config.train.max_steps  # equal total compute with the four D models
    assert list(families.report_names(el).items()) == [
        ("elastic-D2", 2),
        ("elastic-D1", 1),
        ("elastic-D3", 3),
        ("elastic-D4", 4),
    ]  # the default D first: it ships with the weights
    assert families.report_names(d2) == {"D2": None}


def test_the_depth_family_spends_the_elastic_models_compute_at_more_layers():
    """N=8 and N=12 elastic members: every D in 1..N trained, opening at D = N/4, steps x N equal to one dedicated
    vertical model's (3,000 x 4), two seeds at each N with distinct runs."""
    ms = {(m.family, m.name): m for m in families.members()}
    el, d1 = ms["vertical", "elastic"], ms["vertical", "D1"]
    depth = {name: m for (family, name), m in ms.items() if family == "depth"}
    assert list(depth) == ["N8", "N8-s1", "N12", "N12-s1"]
    for m in depth.values():
        n = m.config.model.depth
        assert (
            tuple(m.config.model.elastic_depths) == tuple(range(1, n + 1)) and m.config.model.diffusion_depth == n // 4
        )
        assert m.config.train.max_steps * n == d1.config.train.max_steps * d1.config.model.depth
        assert m.config.train.precision == d1.config.train.precision
        assert m.config.model.width == el.config.model.width and m.config.data == el.config.data
    assert depth["N12-s1"].config.train.seed == 1 and depth["N12-s1"].key != depth["N12"].key
    assert depth["N8-s1"].config.train.seed == 1 and depth["N8-s1"].key != depth["N8"].key
    assert list(families.report_names(depth["N8"]))[:2] == ["N8-D2", "N8-D1"]
    assert len(families.report_names(depth["N12"])) == 12  # seed 0: every D
    assert list(families.report_names(depth["N12-s1"])) == ["N12-s1-D3", "N12-s1-D12"]  # a replicate: N/4 and N
    assert list(families.report_names(depth["N8-s1"])) == ["N8-s1-D2", "N8-s1-D8"]
    full = [d for d in range(1, 13) if families.headline_depth(depth["N12"], d)]
    assert full == [3, 12] and families.headline_depth(el, 1) and families.headline_depth(depth["N8"], None)
    grids = driver.grid_paths(depth["N12"], Path("depth/N12.safetensors"))  # drawn where the finding reads
    assert {p.name: d for p, d in grids.items()} == {"N12.png": None, "N12-D12.png": 12}
    assert len(driver.grid_paths(el, Path("vertical/elastic.safetensors"))) == 4  # every other family: every D


def test_zoo_elastic_reports_compare_with_the_dedicated_models(zoo):
    for d in (1, 2, 3, 4):  # the elastic model: better than the dedicated one at D=1..3, worse at D=4
        shift = -2.0 if d < 4 else 3.0
        write(
            zoo,
            make_report(
                "vertical",
                f"elastic-D{d}",
                lambda s, d=d, k=shift: vertical_fid(d)(s) + k,
                **{"model.diffusion_depth": d, "model.elastic_depths": [1, 2, 3, 4]},
            ),
        )
    vertical = reports.load_reports("vertical", zoo)
    assert list(vertical)[:4] == ["D1", "elastic-D1", "D2", "elastic-D2"]
    assert list(reports.dedicated(vertical)) == ["D1", "D2", "D3", "D4"]
    rows = comparison.depth_rows(vertical)
    assert {r["member"] for r in rows} == {"D1", "D2", "D3", "D4", "elastic"} and len(rows) == 8 * len(STEPS)
    grid = comparison.depth_grid(rows)
    assert len(grid) == 4 * len(STEPS)
    assert all(g["elastic"] == pytest.approx(g["dedicated"] + (-2.0 if g["D"] < 4 else 3.0)) for g in grid)
    text = comparison.describe_elastic(rows)
    assert text.startswith(f"elastic: FID at or below the dedicated model's at {3 * len(STEPS)} of {4 * len(STEPS)}")


def ship(folder, name, cfg, seed=0):
    """A zoo-style export <folder>/<name>.safetensors of a freshly initialised model of `cfg`."""
    from workbench.training.checkpoint import Checkpoint, export_for_inference, save_checkpoint

    torch.manual_seed(seed)
    model = wb.build_model(cfg)
    with torch.no_grad():  # the head and the embedding of D start at zero: make the samples depend on both
        for p in [*model.head.parameters(), *(model.boundary_embed.parameters() if model.boundary_embed else [])]:
            p.normal_(0, 0.05)
    state = model.state_dict()
    run = save_checkpoint(
        Checkpoint(cfg, step=1, model=state, ema=state, data={"samples_seen": 1}), folder / f"run-{name}"
    )
    return export_for_inference(run, folder / f"{name}.safetensors")


@pytest.mark.parametrize("width", [32, 48])
def test_same_seed_samples_find_each_reports_weights_and_share_the_noise(tmp_path, one_thread, width):
    over = {"model.width": width, "model.depth": 4, "model.diffusion_depth": 2, "model.num_blocks": 4}
    elastic = {**over, "model.elastic_depths": [1, 2, 3, 4]}
    for name, d in (("elastic-D2", 2), ("elastic-D4", 4)):
        write(tmp_path, make_report("vertical", name, vertical_fid(d), **{**elastic, "model.diffusion_depth": d}))
    write(tmp_path, make_report("vertical", "D3", vertical_fid(3), **{**over, "model.diffusion_depth": 3}))
    write(tmp_path, make_report("vertical", "D1", vertical_fid(1), **{**over, "model.diffusion_depth": 1}))
    folder = tmp_path / "vertical"
    ship(folder, "elastic", wb.preset("tiny", **elastic))
    ship(folder, "D1", wb.preset("tiny", **{**over, "model.diffusion_depth": 1}), seed=1)
    t4 = make_report("blocks-fmnist", "T4", vertical_fid(1), **{**over, "model.diffusion_depth": 1})
    write(tmp_path, {**t4, "training": {**t4["training"], "weights": "vertical/D1.safetensors"}})  # the same run
    assert reports.weights_path(reports.load_reports("blocks-fmnist", tmp_path)["T4"]) == folder / "D1.safetensors"
    v = reports.load_reports("vertical", tmp_path)
    assert reports.weights_path(v["elastic-D4"]) == folder / "elastic.safetensors"  # one file for every D
    assert reports.weights_path(v["D1"]) == folder / "D1.safetensors" and reports.weights_path(v["D3"]) is None
    rows, missing = ex.same_seed_samples(v, n=3, seed=5, steps=2)
    assert missing == ["vertical/D3"] and len(rows) == 3
    assert all(x.shape == (3, 1, 32, 32) and x.abs().max() <= 1 for x in rows.values())
    first = {k.split(" ")[0]: x for k, x in rows.items()}
    assert not torch.equal(first["elastic-D2"], first["elastic-D4"])  # the report's D is the one sampled
    again, _ = ex.same_seed_samples({"D1": v["D1"]}, n=3, seed=5, steps=2)
    assert torch.equal(next(iter(again.values())), first["D1"])  # same seed, same images
    other, _ = ex.same_seed_samples({"D1": v["D1"]}, n=3, seed=6, steps=2)
    assert not torch.equal(next(iter(other.values())), first["D1"])
    assert "FID" in next(k for k in rows if k.startswith("D1"))  # S=2 is on the report's curve
    fig = plots.rows_figure(rows)
    assert len(fig.data) == 3 and [a.text for a in fig.layout.annotations] == list(rows)


def test_zoo_export_ships_one_file_per_run_with_reports_and_grids(tmp_path, monkeypatch, one_thread):
    from workbench.training.checkpoint import Checkpoint, save_checkpoint

    cfg = wb.preset("tiny", **{"model.width": 32, "train.max_steps": 1})
    d2, t4 = families.Member("vertical", "D2", cfg), families.Member("blocks-fmnist", "T4", cfg)  # one run trains both
    assert d2.key == t4.key
    monkeypatch.setattr(families, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(driver, "SHIP", tmp_path / "ship")
    run = tmp_path / "runs" / d2.key
    state = wb.build_model(cfg).state_dict()
    save_checkpoint(Checkpoint(cfg, step=1, model=state, ema=state, data={"samples_seen": 16}), run)
    (run / "DONE").write_text("{}")
    for m in (d2, t4):
        (run / f"eval-{m.family}-{m.name}.json").write_text(json.dumps(make_report(m.family, m.name, vertical_fid(2))))
    driver.cmd_export([t4], [d2, t4])  # T4 alone still names the file of D2, the run's first member
    ship = tmp_path / "ship"
    assert not (ship / "blocks-fmnist" / "T4.safetensors").exists() and (ship / "blocks-fmnist" / "T4.png").is_file()
    assert (
        json.loads((ship / "blocks-fmnist" / "T4.json").read_text())["training"]["weights"] == "vertical/D2.safetensors"
    )
    driver.cmd_export([d2, t4], [d2, t4])
    assert sorted(p.relative_to(ship).as_posix() for p in ship.rglob("*.safetensors")) == ["vertical/D2.safetensors"]
    t4_report = reports.load_reports("blocks-fmnist", ship)["T4"]
    assert reports.weights_path(t4_report) == ship / "vertical" / "D2.safetensors"
    from PIL import Image

    assert Image.open(ship / "vertical" / "D2.png").size == (2 * (8 * 34 + 2),) * 2  # 64 of 32 px, padded, x2
    manifest = (ship / "README.md").read_text()  # written at each export, its table replaced, not appended
    assert manifest.count(driver.MANIFEST_HEAD) == 1 and manifest.count("| vertical/D2.safetensors |") == 1
    from workbench.core.paths import sha256_file

    assert sha256_file(ship / "vertical" / "D2.safetensors")[:16] in manifest


def test_a_members_sampling_pick_is_what_the_zoo_loads_scores_and_ships(tmp_path, monkeypatch, one_thread):
    """workbench.research.families.SAMPLING_PICKS: the member is loaded from its run with the trained weights and the
    time shift
    it names, and its export carries both; the other members keep EMA weights and their own schedule."""
    from workbench.research import families as zoo_def
    from workbench.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

    monkeypatch.setattr(families, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(driver, "SHIP", tmp_path / "ship")
    monkeypatch.setitem(
        zoo_def.SAMPLING_PICKS, ("vertical", "D2"), {"weights": "raw", "flow_shift": 2.0, "cfg_scale": 3.0}
    )
    cfg = wb.preset(
        "tiny",
        **{
            "model.width": 32,
            "train.max_steps": 1,
            "diffusion.prediction": "flow",
            "sample.sampler": "euler",
            "model.num_classes": 10,
        },
    )
    picked, plain = families.Member("vertical", "D2", cfg), families.Member("vertical", "D3", cfg)
    run = tmp_path / "runs" / picked.key
    trained = wb.build_model(cfg).state_dict()
    ema = {k: v + 0.5 for k, v in trained.items()}
    save_checkpoint(Checkpoint(cfg, step=1, model=trained, ema=ema, data={"samples_seen": 16}), run)
    (run / "DONE").write_text("{}")
    for m, want_weights, want_shift, want_w in ((picked, trained, 2.0, 3.0), (plain, ema, 1.0, 1.0)):
        model, sample_cfg = driver.load_member(m)
        assert (sample_cfg.sample.flow_shift, sample_cfg.sample.cfg_scale) == (want_shift, want_w)
        assert all(torch.equal(v, want_weights[k]) for k, v in model.state_dict().items())
    (run / "eval-vertical-D2.json").write_text(json.dumps(make_report("vertical", "D2", vertical_fid(2))))
    driver.cmd_export([picked], [picked])
    shipped = load_checkpoint(tmp_path / "ship" / "vertical" / "D2.safetensors")
    assert shipped.meta["weights"] == "raw" and shipped.config.sample.flow_shift == 2.0
    assert shipped.config.sample.cfg_scale == 3.0
    assert all(torch.equal(v.float(), trained[k].half().float()) for k, v in shipped.model.items())


def test_zoo_ships_a_grid_per_depth_of_an_elastic_member_and_redraws_them_from_the_shipped_file(
    tmp_path, monkeypatch, one_thread
):
    """An elastic member's export: one weights file, its report and grid at its own D, and a report and a grid at
    every other trained D; `grids` redraws them all from the shipped file alone (a zoo whose runs are gone) and
    names a member with no shipped weights, with the fix."""
    from PIL import Image

    from workbench.training.checkpoint import Checkpoint, save_checkpoint

    monkeypatch.setattr(families, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(driver, "SHIP", tmp_path / "ship")
    cfg = wb.preset(
        "tiny",
        **{
            "model.width": 32,
            "model.depth": 4,
            "model.diffusion_depth": 2,
            "model.elastic_depths": [1, 2, 3, 4],
            "train.max_steps": 1,
        },
    )
    m = families.Member("vertical", "elastic", cfg)
    run = tmp_path / "runs" / m.key
    state = wb.build_model(cfg).state_dict()
    save_checkpoint(Checkpoint(cfg, step=1, model=state, ema=state, data={"samples_seen": 16}), run)
    (run / "DONE").write_text("{}")
    for name, d in families.report_names(m).items():
        rep = make_report(
            "vertical", name, vertical_fid(d), **{"model.diffusion_depth": d, "model.elastic_depths": [1, 2, 3, 4]}
        )
        (run / f"eval-vertical-{name}.json").write_text(json.dumps(rep))
    driver.cmd_export([m], [m])
    folder = tmp_path / "ship" / "vertical"
    grids = ["elastic-D1.png", "elastic-D3.png", "elastic-D4.png", "elastic.png"]
    assert sorted(p.name for p in folder.glob("*.png")) == grids
    assert sorted(p.name for p in folder.glob("*.safetensors")) == ["elastic.safetensors"]
    for grid in grids:
        (folder / grid).unlink()
    assert driver.cmd_grids([m]) == []
    assert sorted(p.name for p in folder.glob("*.png")) == grids
    assert all(Image.open(folder / g).size == (2 * (8 * 34 + 2),) * 2 for g in grids)
    problems = driver.cmd_grids([families.Member("vertical", "D1", cfg)])
    assert len(problems) == 1 and "vertical/D1: no shipped weights" in problems[0] and "Fix:" in problems[0]


def test_zoo_evaluates_an_elastic_member_at_each_depth(tmp_path, monkeypatch, one_thread):
    """An elastic member's report at D samples its one model at D (sample.diffusion_depth; the model keeps its own
    config) and says D in its config, with the costs of D."""
    from workbench.evaluation import features
    from workbench.evaluation.metrics import ReferenceStats
    from workbench.training.checkpoint import Checkpoint, save_checkpoint

    stats = PixelStats()
    monkeypatch.setitem(features.FEATURE_EXTRACTORS, stats.name, lambda: stats)
    real = torch.rand(16, 1, 32, 32) * 2 - 1
    ref = ReferenceStats.from_features(
        features.extract_features(stats, real), {"name": "stub", "extractor": stats.name, "extractor_id": stats.id}
    )
    monkeypatch.setattr(driver, "reference", lambda cfg, extractor: ref)
    monkeypatch.setattr(driver, "eval_plan", lambda m: (stats.name, 6, (1, 2)))
    monkeypatch.setattr(families, "RUNS", tmp_path)
    cfg = wb.preset(
        "tiny",
        **{"model.width": 32, "model.depth": 4, "model.diffusion_depth": 2, "model.elastic_depths": [1, 2, 3, 4]},
    )
    m = families.Member("vertical", "elastic", cfg)
    torch.manual_seed(0)
    state = wb.build_model(cfg).state_dict()
    save_checkpoint(Checkpoint(cfg, step=1, model=state, ema=state, data={"samples_seen": 16}), tmp_path / m.key)
    (tmp_path / m.key / "DONE").write_text(json.dumps({"step": 1, "images_seen": 16, "val_loss": 1.0}))
    at = {d: driver.evaluate(m, depth=d) for d in (1, 4)}
    for d, rep in at.items():
        r = reports.report_from_dict(rep)
        assert r.name == f"elastic-D{d}" and r.D == d and r.elastic
        assert [p.paper_cost for p in r.curve] == [paper_cost(r.config.model, s) for s in (1, 2)]  # the costs of D
    assert at[1]["eval"]["curve"][1]["paper_cost"] != at[4]["eval"]["curve"][1]["paper_cost"]


SHIPPED = sorted((Path(__file__).resolve().parents[1] / "data" / "checkpoints").rglob("*.safetensors"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_shipped_model_samples_with_the_sampler_its_report_measured(path):
    """What the app and `sample` use by default (the export's config) is what the shipped figures measured: the
    embedded report, the .json beside the weights and the config name one sampler, and the report's config matches
    the export's model."""
    from workbench.training.checkpoint import read_header

    header = read_header(path)
    report = header["meta"]["eval_report"]
    beside = json.loads(path.with_suffix(".json").read_text())  # `zoo memorization` adds its sections there only
    added = ("headline_point", "fid_held_out", "memorization_policy", "memorization", "memorization_earlier")
    assert {**beside, "eval": {k: v for k, v in beside["eval"].items() if k not in added}} == {
        **report,
        "eval": {k: v for k, v in report["eval"].items() if k not in added},
    }
    assert header["config"]["sample"]["sampler"] == report["eval"]["sampler"]
    assert {k: v for k, v in report["config"]["model"].items() if k != "diffusion_depth"} == {
        k: v for k, v in header["config"]["model"].items() if k != "diffusion_depth"
    }


def test_zoo_list_says_what_is_shipped_and_totals_training_time_per_family(tmp_path, monkeypatch, capsys):
    """`python -m workbench zoo list` on a machine without the runs still knows the shipped members and their
    training time (from the shipped reports); a run shared by two families counts in each, and once in the total."""
    monkeypatch.setattr(families, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(driver, "SHIP", tmp_path / "ship")
    ms = {f"{m.family}/{m.name}": m for m in families.members() if m.family in ("vertical", "blocks-fmnist")}
    d2 = ms["vertical/D2"]
    assert d2.key == ms["blocks-fmnist/T4"].key  # the shared run
    (tmp_path / "ship" / "vertical").mkdir(parents=True)
    (tmp_path / "ship" / "vertical" / "D2.json").write_text(json.dumps({"training": {"seconds": 600.0}}))
    (tmp_path / "ship" / "vertical" / "D3.json").write_text("{not json")  # unreadable: listed, not counted
    (tmp_path / "runs" / ms["blocks-fmnist/T1"].key).mkdir(parents=True)
    (tmp_path / "runs" / ms["blocks-fmnist/T1"].key / "DONE").write_text(json.dumps({"train_seconds": 300.0}))
    assert cli.main(["zoo", "list", "--only", "vertical,blocks-fmnist"]) == 0
    out = capsys.readouterr().out
    line = {ln.split()[0] + "/" + ln.split()[1]: ln for ln in out.splitlines() if "run=" in ln}
    assert line["vertical/D2"].endswith("shipped   10.0 min") and line["vertical/D3"].endswith("shipped")
    assert line["blocks-fmnist/T1"].endswith("trained    5.0 min") and line["vertical/D1"].endswith("pending")
    assert line["blocks-fmnist/T4"].endswith("shipped   10.0 min")  # shipped as vertical/D2: the same run
    assert "vertical           5 runs    10.0 min (4 not trained or not recorded)" in out
    assert "blocks-fmnist      3 runs    15.0 min (1 not trained or not recorded)" in out
    assert "all                7 runs    15.0 min = 0.2 h (5 not trained or not recorded)" in out


def test_zoo_run_keys_leave_out_fields_added_at_their_defaults():
    """Config fields added after the zoo's runs were keyed (data.labels, diffusion.context_noise) keep the runs'
    folders at their defaults and give a new run when set: the key at the defaults is the key of the config without
    the fields."""
    import hashlib

    cfg = wb.preset("tiny", **{"model.width": 32})
    fluent = cfg.override(**{"data.dataset": "fluent-people", "data.channels": 3, "model.latent_channels": 3})
    d = fluent.to_dict()
    del d["data"]["labels"], d["diffusion"]["train_context_noise"]
    d["diffusion"]["flow_shift"] = 1.0  # keyed where it sat (at 1) before it moved to sample.flow_shift
    blob = json.dumps(
        {
            "model": d["model"],
            "diffusion": d["diffusion"],
            "data": d["data"],
            "train": {k: v for k, v in d["train"].items() if k != "out_dir"},
        },
        sort_keys=True,
    )
    assert families.Member("f", "T4", fluent).key == hashlib.sha256(blob.encode()).hexdigest()[:10]
    for changed in ({"data.labels": "tone"}, {"diffusion.train_context_noise": 0.25}):
        assert families.Member("f", "T4", fluent.override(**changed)).key != families.Member("f", "T4", fluent).key


def test_the_zoo_has_one_driver_whose_actions_the_cli_offers(capsys):
    """`python -m workbench zoo ACTION` offers exactly the driver's actions; an unknown one is a usage error
    (exit 2, one line naming the choices) from the CLI, and a one-line error naming the fix from the library."""
    assert cli.ZOO_ACTIONS == driver.ACTIONS
    with pytest.raises(SystemExit) as exc:
        cli.main(["zoo", "retrain"])
    assert exc.value.code == 2 and "invalid choice: 'retrain'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="zoo: no action 'retrain'. Fix: use one of list, train"):
        driver.run("retrain")


def test_zoo_findings_rewrites_a_readme_whose_marker_names_an_older_command(tmp_path, monkeypatch):
    """The start marker is found by its "<!-- findings" prefix, whatever command it names, and rewritten to name
    the current one; the text outside the markers stays."""
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- findings: python old/zoo.py findings --readme -->\nold\n<!-- /findings -->\nend\n")
    table = driver.cmd_findings(tmp_path, readme)
    assert readme.read_text() == f"intro\n{driver.FINDINGS_START}\n{table}{driver.FINDINGS_END}\nend\n"


# ---- held-out FID and copy share in the zoo's reports (workbench.research.headline) --------------------------------
@pytest.fixture
def small_member(tmp_path, monkeypatch, one_thread):
    """A finished run of a tiny member of a 16 px stand-in Fluent people set (11 training images, 3 held out) whose
    checkpoint says it trained on those 11, with weights that half precision holds exactly (its export samples the
    images its run does); scored with the classifier at n=12 on S in (1, 2). Runs, ship folder, references and
    feature logs in tmp_path. Returns a function (noise layout of the run) -> the member."""
    from conftest import randomize_head
    from fluent_fixture import write_fluent

    from workbench.evaluation import references
    from workbench.training.checkpoint import Checkpoint, save_checkpoint

    fluent = write_fluent(tmp_path / "fluent", size=32)
    monkeypatch.setattr(evaluation, "REFERENCE_DIR", tmp_path / "reference")  # instead of data/reference/
    monkeypatch.setattr(references, "FEATURE_LOG_DIR", tmp_path / "features")
    monkeypatch.setattr(families, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(driver, "SHIP", tmp_path / "ship")
    monkeypatch.setattr(driver, "eval_plan", lambda m: ("fmnist-classifier", 12, (1, 2)))
    small = {"model.width": 32, "model.heads": 2, "model.depth": 2, "model.diffusion_depth": 1, "train.max_steps": 1}
    data = {"data.dataset": "fluent-people", "data.root": str(fluent), "data.image_size": 16, "data.channels": 3}
    cfg = wb.preset("tiny", **small, **data, **{"model.latent_size": 16, "model.latent_channels": 3})

    def make(layout: str = "per-image") -> families.Member:
        m = families.Member("vertical", "D1", cfg.override(**{"sample.noise_layout": layout}))
        model = wb.build_model(m.config)
        randomize_head(model, std=0.2)
        state = {k: v.half().float() for k, v in model.state_dict().items()}
        ckpt = Checkpoint(m.config, 1, state, state, data={"samples_seen": 16, "dataset_size": 11})
        save_checkpoint(ckpt, m.run)
        (m.run / "DONE").write_text(json.dumps({"step": 1, "images_seen": 16, "val_loss": 1.0}))
        return m

    return make


def test_a_zoo_report_of_a_small_data_member_carries_held_out_fid_and_copy_share(small_member, monkeypatch):
    """`zoo eval` puts evaluation.report.data_figures' sections into the member's report at its headline point
    (the largest S here), from the images of that point: their FID against the curve's reference is the curve's."""
    from workbench.research import headline

    m = small_member()
    driver.cmd_eval([m])
    report = json.loads((m.run / "eval-vertical-D1.json").read_text())
    ev = report["eval"]
    at = ev["headline_point"]
    assert (at["steps"], at["n"], at["seed"], at["noise_layout"], at["weights"]) == (2, 12, 0, "per-image", "ema")
    assert at["fid"] == pytest.approx(ev["curve"][1]["fid"], rel=1e-6) == at["curve_fid"]  # the same 12 images
    assert at["reference_count"] == 14 and at["fid_low"] <= at["fid"] <= at["fid_high"]  # every image, train + held out
    policy = ev["memorization_policy"]
    assert (policy["training_images"], policy["threshold"], policy["generations"]) == (11, 100_000, 12)
    assert policy["source"] == "the checkpoint's data.dataset_size" and policy["why"].startswith("computed auto")
    copies = ev["memorization"]
    assert (copies["n"], copies["steps"], copies["train_images"], copies["held_out_images"]) == (12, 2, 11, 3)
    assert copies["copy_share_interval"][0] <= copies["copy_share"] <= copies["copy_share_interval"][1]
    held = ev["fid_held_out"]
    assert (held["split"], held["reference_count"], held["n"]) == ("val", 3, 12) and "too small" in held["note"]
    assert held["fid_low"] <= held["fid"] <= held["fid_high"] and held["fid"] != at["fid"]
    r = reports.report_from_dict(report)
    assert reports.copy_share_text(r).endswith(f"of 12, new images {copies['copy_share_if_novel']:.0%}")
    assert reports.held_out_text(r).endswith("(reference) at S=2 (too few held-out images)")
    monkeypatch.setattr(headline, "sample_images", lambda *a, **k: pytest.fail("scored again"))
    driver.cmd_eval([m])  # resumable: a report that has them is left as it is


def test_zoo_memorization_fills_in_a_shipped_report_and_leaves_its_curve(small_member, monkeypatch, tmp_path):
    """`zoo memorization` on a report written before per-image seeds, shipped beside its export with no run here:
    the figures come from the shipped weights at the report's own noise layout (its FID comes out as the curve's),
    everything the report held stays byte for byte, the weights file is not rewritten (its embedded report stays as
    exported; the app reads the .json first); a second call changes nothing; a report with no weights is named
    with the fix."""
    import shutil

    from app import catalog
    from workbench.core.paths import sha256_file
    from workbench.research import headline
    from workbench.training.checkpoint import export_for_inference, load_checkpoint, read_header

    m = small_member("batch")
    old = driver.evaluate(m)
    del old["config"]["sample"]["noise_layout"]  # as the shipped reports written before the field
    folder = tmp_path / "ship" / "vertical"
    weights = export_for_inference(m.run, folder / "D1.safetensors", eval_report=old)
    (folder / "D1.json").write_text(json.dumps(old, indent=1))
    (folder / "D3.json").write_text(json.dumps({**old, "name": "D3"}, indent=1))  # a report shipped alone
    shutil.rmtree(m.run)
    tensors, digest = load_checkpoint(weights).model, sha256_file(weights)
    problems = driver.cmd_memorization([m, families.Member("vertical", "D3", m.config)])
    assert (
        len(problems) == 1
        and problems[0].startswith("vertical/D3: not filled in: no weights")
        and "Fix:" in problems[0]
    )
    new = json.loads((folder / "D1.json").read_text())
    added = {"headline_point", "fid_held_out", "memorization_policy", "memorization"}
    assert set(new["eval"]) == set(old["eval"]) | added
    assert json.dumps({**new, "eval": {k: v for k, v in new["eval"].items() if k not in added}}) == json.dumps(old)
    at = new["eval"]["headline_point"]
    assert (at["noise_layout"], at["weights_dtype"], at["steps"]) == ("batch", "float16", 2)
    assert at["weights_file"].endswith("ship/vertical/D1.safetensors")
    assert at["fid"] == pytest.approx(old["eval"]["curve"][1]["fid"], rel=1e-6)  # the report's own images again
    assert new["eval"]["memorization"]["n"] == 12 and new["eval"]["fid_held_out"]["reference_count"] == 3
    assert read_header(weights)["meta"]["eval_report"] == old and sha256_file(weights) == digest  # untouched
    assert all(torch.equal(v, tensors[k]) for k, v in load_checkpoint(weights).model.items())  # checksum checked
    assert catalog.load_entry(weights, "zoo").report.eval["memorization"] == new["eval"]["memorization"]
    assert reports.read_report(folder / "D1.json").curve == reports.report_from_dict(old).curve
    before = (folder / "D1.json").read_text()
    monkeypatch.setattr(headline, "sample_images", lambda *a, **k: pytest.fail("generated again"))
    assert driver.cmd_memorization([m]) == [] and (folder / "D1.json").read_text() == before


def test_reports_with_and_without_the_data_figures_load_and_round_trip(tmp_path):
    """Old reports (every shipped one, and the schema without the sections) load and show "-"; the sections survive
    write_report; an earlier hand-written copy share is kept beside the new one."""
    from workbench.core.paths import ZOO_DIR
    from workbench.research.headline import with_figures

    shipped = {r.label: r for r in map(reports.read_report, sorted(ZOO_DIR.rglob("*.json")))}
    rows = reports.budget_table(shipped)
    assert len(rows) == len(shipped) >= 13 and all({"held-out FID", "copy share"} <= set(row) for row in rows)
    old = reports.report_from_dict(make_report("vertical", "D2", vertical_fid(2)))
    assert (reports.held_out_text(old), reports.copy_share_text(old)) == ("-", "-")
    point = {"steps": 16, "fid": 17.1, "fid_low": 16.3, "fid_high": 17.8}
    held = {"fid": 17.0, "fid_low": 16.1, "fid_high": 17.9, "note": None}
    copies = {"copy_share": 0.11, "copy_share_interval": [0.079, 0.152], "n": 200, "copy_share_if_novel": 0.499}
    earlier = {"copy_share": 0.775, "copy_share_interval": [0.72, 0.82], "n": 200}
    figures = {"headline_point": point, "fid_held_out": held, "memorization_policy": {}, "memorization": copies}
    d = make_report("vertical", "D2", vertical_fid(2))
    ev = with_figures({**d["eval"], "memorization": earlier}, figures)
    assert ev["memorization_earlier"] == earlier and ev["memorization"] == copies and ev["curve"] == d["eval"]["curve"]
    again = reports.read_report(reports.write_report(reports.report_from_dict({**d, "eval": ev}), tmp_path))
    assert again.eval["fid_held_out"] == held and again.eval["headline_point"] == point
    assert reports.held_out_text(again) == "17.0 [16.1, 17.9] vs 17.1 [16.3, 17.8] (reference) at S=16"
    assert reports.copy_share_text(again) == "11% [8%, 15%] of 200, new images 50%"


# ---- FID during training in the zoo: `zoo train --fid-every K --fid-samples N` -------------------------------------
def test_zoo_train_passes_fid_during_training_to_train_and_keeps_the_run_key(tmp_path, monkeypatch):
    """--fid-every/--fid-samples reach `train` as train.eval_every/fid_samples with the FID evaluate_fn, the member's
    run key stays the one its shipped reports were trained under, and bad combinations are refused before any
    training starts, naming the fix."""
    monkeypatch.setattr(families, "RUNS", tmp_path)
    (m,) = [m for m in families.members() if (m.family, m.name) == ("vertical", "D1")]
    seen = []
    monkeypatch.setattr(driver, "train", lambda cfg, resume, evaluate_fn: seen.append((cfg, evaluate_fn)) or {})
    assert driver.run("train", only="vertical/D1", fid=(250, 500)) == 0
    (cfg, evaluate_fn), key = seen[-1], m.key
    assert (cfg.train.eval_every, cfg.train.fid_samples) == (250, 500) and evaluate_fn is not None
    assert m.config.train.fid_samples == 0 and [x.key for x in families.members() if x.name == "D1"] == [key]
    assert driver.run("train", only="vertical/D1") == 0 and seen[-1][1] is None  # no flags: no FID, as before
    assert driver.fid_overrides(100, 0) == {"train.eval_every": 100, "train.fid_samples": driver.FID_SAMPLES}
    cases = [((0, 500), "train", "--fid-every K > 0"), ((-1, 0), "train", "--fid-every K > 0")]
    cases += [((100, 0), "eval", "applies to training, not to eval")]
    for fid, action, message in cases:
        with pytest.raises(ValueError, match=message):
            driver.run(action, only="vertical/D1", fid=fid)
    with pytest.raises(ValueError, match="train.fid_samples.*Fix"):  # fewer than 10 images: the config's own check
        driver.run("train", only="vertical/D1", fid=(100, 5))
    assert len(seen) == 2  # no refused call reached train


@pytest.mark.slow
def test_fid_during_training_leaves_the_trained_weights_bitwise_equal(tmp_path):
    """Why the zoo keys a member trained with FID during training like one without: training draws its noise and
    data order from its own generators, validation and the FID sample a copy of the EMA weights inside
    torch.random.fork_rng, so weights, EMA and optimizer state come out bitwise equal."""
    from workbench.evaluation.during_training import training_fid
    from workbench.training.checkpoint import load_checkpoint
    from workbench.training.train import train

    over = {"model.width": 32, "model.heads": 2, "model.depth": 2, "model.diffusion_depth": 1}
    over |= {"train.batch_size": 8, "train.val_batches": 1, "train.max_steps": 4, "train.sample_every": 0}
    plain = wb.preset("tiny", **over, **{"train.out_dir": str(tmp_path / "plain"), "train.ckpt_every": 4})
    fid = plain.override(**{"train.out_dir": str(tmp_path / "fid"), **driver.fid_overrides(2, 10)})
    fid = fid.override(**{"train.fid_steps": 1})
    for cfg in (plain, fid):
        assert train(cfg, evaluate_fn=training_fid(cfg))["status"] == "finished"
    assert (tmp_path / "fid" / "eval" / "fid-step0000002.json").is_file()  # the FID did run
    a, b = (load_checkpoint(tmp_path / d / "ckpt-0000004.safetensors") for d in ("plain", "fid"))
    for part in ("model", "ema"):
        for k, v in getattr(a, part).items():
            assert torch.equal(v, getattr(b, part)[k]), f"{part}.{k}"
    for i, state in a.optimizer["state"].items():
        for k, v in state.items():
            assert torch.equal(v, b.optimizer["state"][i][k]), f"optimizer {i}.{k}"
