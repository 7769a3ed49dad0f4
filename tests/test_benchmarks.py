"""The CPU-runnable parts of the benchmarks: the GPU run's dry run, the races' and reports' logic, the harness."""

import json
import sys
from pathlib import Path

import pytest
import torch
from single_thread import one_thread  # noqa: F401

from benchmarks import gpu_bench


def test_gpu_bench_dry_run_goes_through_the_real_loop_sampler_and_scoring():
    """The prepared GPU run's code path, tiny on the CPU: the training loop ran (FlexAttention training is refused
    on CPUs, with its reason), both backends sampled cached and recomputing, and the Inception scoring finished."""
    result = gpu_bench.main(["--dry-run"])
    train = result["train"]
    assert set(train) == {"eager-sdpa", "eager-flex"}
    sdpa = train["eager-sdpa"]
    assert sdpa["status"] == "finished" and sdpa["steps"] == 3 and sdpa["mfu_vs_measured_gemm"] > 0
    assert "no backward pass on the CPU" in train["eager-flex"]["refused"]
    sample = result["sample"]
    assert sample["predicted_speedup_flops"] > sample["predicted_speedup_block_layers"] > 1
    for backend in ("sdpa", "flex"):
        assert sample[backend]["cached_s"] > 0 and sample[backend]["recompute_s"] > 0
    assert result["score"]["images"] == 4 and "error" not in result["score"]


def test_unknown_argument_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        gpu_bench.main(["--steps", "3"])
    assert exc.value.code == 2


def test_recipe_race_variants_build_and_combine():
    from benchmarks import bench_recipe

    for name, over in bench_recipe.VARIANTS.items():  # every variant is a valid config
        cfg = bench_recipe.config_for(name, over, Path("/tmp/unused"), 10, 1.0)
        assert cfg.name == f"recipe/{name}" and cfg.train.max_steps == 10 and cfg.train.sample_every == 0
    name, over = bench_recipe.parse_define("best=+flow,model.timestep_conditioning=adaln,train.lr=1e-3")
    assert name == "best" and over == {**bench_recipe.FLOW, "model.timestep_conditioning": "adaln", "train.lr": 0.001}
    # the race's baseline is the recipe before the race, whatever fmnist-small's default is now
    today = bench_recipe.config_for("today", {}, Path("/tmp/unused"), 10, 1.0)
    assert (today.diffusion.prediction, today.model.timestep_conditioning, today.train.lr, today.sample.sampler) == (
        "epsilon",
        "embed",
        3e-4,
        "ddim",
    )
    costly = [n for n, o in bench_recipe.VARIANTS.items() if any(k.startswith(bench_recipe.COST_KEYS) for k in o)]
    assert "flow" not in costly and "lr1e-3" not in costly and {"patch2", "compile", "fp32"} <= set(costly)


def test_elastic_benchmark_members_and_frontiers():
    from benchmarks import bench_elastic, bench_recipe
    from workbench.research import comparison

    spec = bench_elastic.members([1, 2, 3, 4], [2, 4])
    assert spec["elastic-4x"]["budgets"] == 4 and spec["elastic-1x"]["budgets"] == 1
    assert spec["held-out"]["trained"] == [1, 3, 5, 6] and spec["held-out"]["eval_depths"] == [1, 2, 3, 4, 5, 6]
    recipe = bench_recipe.VARIANTS[bench_recipe.WINNER]
    for name, m in spec.items():  # every member is a valid config on top of the recipe (flow and adaLN)
        cfg = bench_recipe.config_for(name, {**recipe, **m["overrides"]}, Path("/tmp/x"), 10, 1)
        assert cfg.model.depths == tuple(m["trained"]) and cfg.diffusion.prediction == "flow"
        assert cfg.model.timestep_conditioning == "adaln"
    for over in bench_elastic.SCHEDULES.values():  # every schedule is valid on the elastic member
        cfg = bench_recipe.config_for("e", spec["elastic-4x"]["overrides"], Path("/tmp/x"), 10, 1).override(**over)
        assert cfg.sample.steps_schedule or cfg.sample.depth_schedule or cfg.sample.depth_per_step
    front = comparison.frontier([(10, 50.0), (20, 60.0), (30, 40.0), (5, 70.0)])
    assert front == [(5, 70.0), (10, 50.0), (30, 40.0)]  # (20, 60) is worse than the cheaper (10, 50)
    assert comparison.best_at(front, 25) == 50.0 and comparison.best_at(front, 4) == float("inf")
    # a frontier 10 FID better everywhere over one decade of compute: area +10; swapped: -10
    a, b = [(10, 40.0), (100, 30.0)], [(10, 50.0), (100, 40.0)]
    area, span = comparison.area_between(a, b)
    assert span == (10, 100) and area == pytest.approx(10.0)
    assert comparison.area_between(b, a)[0] == pytest.approx(-10.0)
    # rows as the benchmark records them: the grid pairs each elastic point with the dedicated model at that D
    rows = [
        {"member": m, "point": f"D={d} S={s}", "paper_cost": 4 * ((4 - d) + d * s), "fid": f}
        for m, d, s, f in [
            ("D1", 1, 2, 50.0),
            ("D1", 1, 4, 40.0),
            ("D2", 2, 2, 45.0),
            ("D2", 2, 4, 35.0),
            ("elastic-2x", 1, 2, 48.0),
            ("elastic-2x", 1, 4, 41.0),
            ("elastic-2x", 2, 2, 44.0),
            ("elastic-2x", 2, 4, 30.0),
        ]
    ] + [{"member": "elastic-2x", "point": "S_k 4,2,2,2", "paper_cost": 30, "fid": 1.0}]
    grid = comparison.depth_grid(rows)
    assert [(g["D"], g["S"], g["dedicated"], g["elastic-2x"]) for g in grid] == [
        (1, 2, 50.0, 48.0),
        (1, 4, 40.0, 41.0),
        (2, 2, 45.0, 44.0),
        (2, 4, 35.0, 30.0),
    ]
    fronts = comparison.depth_frontiers(rows)  # schedules are not grid points
    assert fronts["dedicated"] == [(20, 50.0), (24, 45.0), (28, 40.0), (40, 35.0)]
    text = comparison.describe_elastic(rows)
    assert "at or below the dedicated model's at 3 of 4 (D, S) points, elastic / dedicated 0.86-1.02" in text


def test_elastic_report_pairs_each_member_with_its_comparison(tmp_path):
    """The report's tables from recorded rows and kept images: (a) and (b) against the dedicated model of each D,
    the held-out member against elastic-1x and the dedicated models with its untrained D flagged, the frontiers,
    and a schedule against the best fixed point at no more compute. Identical image sets differ by exactly 0."""
    import argparse

    from benchmarks import bench_elastic

    g = torch.Generator().manual_seed(0)
    sets = {}
    for name in ("a", "b"):
        sets[name] = tmp_path / f"{name}.pt"
        torch.save(torch.randint(0, 256, (32, 1, 32, 32), generator=g, dtype=torch.uint8), sets[name])
    rows = []
    for member, trained, d, s, fid, images in [
        ("D1", [1], 1, 2, 50.0, "a"),
        ("D2", [2], 2, 2, 45.0, "a"),
        ("elastic-1x", [1, 2], 1, 2, 52.0, "b"),
        ("elastic-1x", [1, 2], 2, 2, 46.0, "b"),
        ("elastic-2x", [1, 2], 1, 2, 48.0, "a"),
        ("elastic-2x", [1, 2], 2, 2, 44.0, "b"),
        ("held-out", [1], 1, 2, 51.0, "b"),
        ("held-out", [1], 2, 2, 60.0, "a"),
    ]:
        rows.append(
            {
                "member": member,
                "point": f"D={d} S={s}",
                "paper_cost": 4 * ((4 - d) + d * s),
                "fid": fid,
                "extractor": "fmnist-classifier-0123",
                "trained_depths": trained,
                "images": str(sets[images]),
            }
        )
    rows.append({**rows[-3], "point": "S_k 4,2,2,2 @D=2", "paper_cost": 40, "fid": 43.0})
    out = tmp_path / "rows.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = bench_elastic.report(argparse.Namespace(out=str(out), n=32))
    a, b = text.index("### (a)"), text.index("### (b) equal total compute: elastic-2x")
    assert "| 1 | 2 | 50.0 (D1) | 52.0 |" in text[a:b] and "| 2 | 2 | 45.0 (D2) | 46.0 |" in text[a:b]
    assert "| 1 | 2 | 50.0 (D1) | 48.0 | +0.0 [+0.0, +0.0] | 0.96 |" in text[b:]  # the same images: exactly 0
    assert "| 2 (held out) | 2 | 46.0 (elastic-1x) | 60.0 |" in text and "| 1 | 2 | 52.0 (elastic-1x) | 51.0 |" in text
    assert "| 2 (held out) | 2 | 45.0 (D2) | 60.0 | +0.0 [+0.0, +0.0] |" in text
    assert text.count("Frontier ") == 2 and "inception" not in text.split("Frontier")[0]  # no Inception rows here
    assert "| S_k 4,2,2,2 @D=2 | 40 | 43.0 | 44.0 (D=2 S=2) |" in text


def test_quality_race_models_are_the_recipe_and_its_plain_dit(tmp_path):
    from benchmarks import bench_quality, bench_recipe
    from workbench.core.presets import preset

    recipe = bench_recipe.config_for("recipe", bench_quality.recipe_overrides("recipe"), tmp_path, 10, 0.0)
    dit = bench_recipe.config_for("dit", bench_quality.recipe_overrides("dit"), tmp_path, 10, 0.0)
    assert (recipe.diffusion.prediction, recipe.model.timestep_conditioning, recipe.train.lr) == ("flow", "adaln", 1e-3)
    assert recipe.sample.sampler == dit.sample.sampler == preset("fmnist-small").sample.sampler  # what ships
    assert (recipe.model.num_blocks, recipe.model.diffusion_depth) == (4, 3)
    assert (dit.model.num_blocks, dit.model.diffusion_depth, dit.model.depth) == (1, 6, 6)  # T=1, D=N
    assert dit.to_dict()["train"] == recipe.to_dict()["train"] | {"out_dir": dit.train.out_dir}
    # a workbench model counts as trained only when its run reached the steps its probe planned
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "plan.json").write_text('{"steps": 40}')
    (tmp_path / "recipe" / "summary.json").write_text('{"step": 30}')
    assert not bench_quality.trained(tmp_path, "recipe") and not bench_quality.trained(tmp_path, "dit")
    (tmp_path / "recipe" / "summary.json").write_text('{"step": 40}')
    assert bench_quality.trained(tmp_path, "recipe")


def test_quality_peer_is_compared_at_its_better_sampler_and_each_sampler_reaches_its_images():
    from benchmarks import bench_quality, peer_diffusers

    ddim = [{"steps": 2, "fid": 80.0}, {"steps": 4, "fid": 60.0}]
    dpm = [{"steps": 2, "fid": 70.0}, {"steps": 4, "fid": 65.0}]
    assert bench_quality.best_of([ddim, dpm]) == [dpm[0], ddim[1]]
    unet = peer_diffusers.build_unet()
    images = {s: peer_diffusers.sample_peer(unet, 2, 3, sampler=s, batch=2) for s in bench_quality.PEER_SAMPLERS}
    assert all(x.shape == (2, 1, 32, 32) and x.abs().max() <= 1 for x in images.values())
    assert not torch.allclose(images["ddim"], images["dpm++2m"])  # same noise, a different sampler


def test_quality_ratio_at_equal_compute_interpolates_in_log_flops_and_never_extrapolates():
    from benchmarks import bench_quality

    a = [{"flops": 1.0, "fid": 40.0}, {"flops": 100.0, "fid": 20.0}]
    b = [{"flops": 10.0, "fid": 60.0}, {"flops": 1000.0, "fid": 30.0}]
    r = bench_quality.ratio_at_equal_compute(a, b)
    assert r["flops"] == pytest.approx([10.0, 100.0])  # only where both curves were measured
    assert r["ratio"] == pytest.approx([30.0 / 60.0, 20.0 / 45.0], abs=1e-3)  # a at 10 FLOPs: halfway in log
    assert r["at_lowest_common_compute"] == pytest.approx(0.5) and r["best"] == pytest.approx(0.444, abs=1e-3)
    assert bench_quality.ratio_at_equal_compute(a, [{"flops": 1e4, "fid": 1.0}, {"flops": 1e5, "fid": 1.0}]) is None


def test_sampler_benchmark_scores_every_fitting_sampler_at_every_trained_depth(tmp_path, capsys):
    """One line per (D, sampler) of an elastic flow checkpoint, each over the whole S grid from the same seed; the
    sampler and D reach the samples (at S=2 DPM-Solver++ takes a second-order step where flow Euler does not)."""
    import workbench as wb
    from benchmarks import bench_samplers
    from workbench.training.checkpoint import Checkpoint, save_checkpoint

    cfg = wb.preset("tiny").override(
        **{
            "diffusion.prediction": "flow",
            "sample.sampler": "euler",
            "model.diffusion_depth": 2,
            "model.elastic_depths": [1, 2],
        }
    )
    torch.manual_seed(0)
    model = wb.build_model(cfg)
    with torch.no_grad():  # the head starts at zero: make the samples depend on the sampler
        for p in model.head.parameters():
            p.normal_(0, 0.05)
    state = model.state_dict()
    save_checkpoint(Checkpoint(cfg, step=1, model=state, ema=state, data={"samples_seen": 1}), tmp_path / "run")
    out = tmp_path / "samplers.jsonl"
    bench_samplers.main([str(tmp_path / "run"), "--steps", "1,2", "--n", "64", "--threads", "1", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["D"], r["sampler"]) for r in rows] == [(1, "euler"), (1, "dpm++2m"), (2, "euler"), (2, "dpm++2m")]
    assert all([p["steps"] for p in r["scores"]] == [1, 2] and r["config_sampler"] == "euler" for r in rows)
    fid = {(r["D"], r["sampler"], p["steps"]): p["fid"] for r in rows for p in r["scores"]}
    for D in (1, 2):
        assert fid[D, "euler", 2] != pytest.approx(fid[D, "dpm++2m", 2], rel=1e-5)
    assert fid[1, "euler", 2] != fid[2, "euler", 2]  # D reached the sampler
    assert "| run | 2 | dpm++2m |" in capsys.readouterr().out


def test_recipe_rescoring_emits_one_curve_per_setting_from_the_same_seed(tmp_path):
    """bench_recipe's sampler rescoring of a finished race run: one line per sampler that fits the objective, each
    with the whole S grid; the two samplers' points differ (the setting reached the samples)."""
    import argparse

    import workbench as wb
    from benchmarks import bench_recipe
    from workbench.training.checkpoint import Checkpoint, save_checkpoint

    cfg = wb.preset("tiny").override(**{"diffusion.prediction": "flow", "sample.sampler": "euler"})
    torch.manual_seed(0)
    model = wb.build_model(cfg)
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0, 0.05)
    state = model.state_dict()
    save_checkpoint(
        Checkpoint(cfg, step=1, model=state, ema=state, data={"samples_seen": 1}),
        tmp_path / "runs" / "final-1min" / "v",
    )
    args = argparse.Namespace(
        runs=str(tmp_path / "runs"),
        stage="final",
        minutes=1.0,
        variants="v",
        steps="1,2",
        n=64,
        threads=1,
        out=str(tmp_path / "recipe.jsonl"),
    )
    bench_recipe.samplers(args)
    rows = [json.loads(line) for line in (tmp_path / "recipe_samplers.jsonl").read_text().splitlines()]
    assert [(r["variant"], r["sampler"]) for r in rows] == [("v", "euler"), ("v", "dpm++2m")]
    assert all([p["steps"] for p in r["scores"]] == [1, 2] and {p["seed"] for p in r["scores"]} == {0} for r in rows)
    assert rows[0]["scores"][1]["fid"] != rows[1]["scores"][1]["fid"]


def test_quality_report_tables_every_curve_and_the_ratios_against_the_peers_better_sampler():
    from benchmarks import bench_quality

    def curve(fids, gflop):
        return {
            "fmnist-classifier": [
                {"steps": s, "fid": f, "fid_ci": [f - 1, f + 1], "flops": gflop * s * 1e9} for s, f in fids.items()
            ],
            "inception": [],
        }

    curves, ratios = bench_quality.race(
        {"recipe": curve({2: 40.0, 4: 20.0}, 1.0), "dit": curve({2: 50.0, 4: 30.0}, 1.0)},
        {"ddim": curve({2: 80.0, 4: 60.0}, 1.0), "dpm++2m": curve({2: 70.0, 4: 40.0}, 1.0)},
    )
    assert [p["fid"] for p in curves["peer"]["fmnist-classifier"]] == [70.0, 40.0]  # the better sampler per S
    assert ratios["recipe_over_peer"]["inception"] is None  # no Inception points: no ratio
    text = bench_quality.report({"curves": curves, **ratios})
    assert "| 2 | 40.0 [39.0, 41.0] (2.00) | 50.0 [49.0, 51.0] (2.00) | 80.0 [79.0, 81.0] (2.00) |" in text
    assert "| recipe / peer | fmnist-classifier | 2.0-4.0 | 0.57, 0.50 | **0.54** |" in text  # 40/70, 20/40
    assert "| dit / peer | fmnist-classifier | 2.0-4.0 | 0.71, 0.75 | **0.73** |" in text


@pytest.mark.parametrize("models", ["unet", "", "recipe,peer"])
def test_quality_race_refuses_an_unknown_model_before_training_anything(tmp_path, monkeypatch, models):
    from benchmarks import bench_quality

    monkeypatch.setattr(sys, "argv", ["bench_quality.py", "--models", models, "--runs", str(tmp_path / "runs")])
    with pytest.raises(SystemExit, match="Fix: name one or more of recipe, dit"):
        bench_quality.main()
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


def test_quality_report_lists_only_the_models_the_race_ran():
    from benchmarks import bench_quality

    pts = {e: [{"steps": 4, "fid": 30.0, "fid_ci": [29.0, 31.0], "flops": 2e9}] for e in bench_quality.EXTRACTORS}
    ratio = {"flops": [2e9], "ratio": [0.5], "at_lowest_common_compute": 0.5, "best": 0.5, "median": 0.5}
    row = {
        "curves": {"recipe": pts, "peer-ddim": pts, "peer": pts},
        "recipe_over_peer": {e: ratio for e in bench_quality.EXTRACTORS},
    }
    text = bench_quality.report(row)
    assert "| recipe / peer | fmnist-classifier | 2.0-2.0 | 0.50 | **0.50** |" in text and "dit" not in text


def test_elastic_seeds_table_sets_replicates_beside_seed_zero_with_the_seed_spread():
    """(a) across training seeds: seed 0 from the base rows, replicates "<name>-sK" from theirs, only rows scored
    with the replicates' sampler; a point without a replicate is left out; the Welch interval is the hand-computed
    one (means 31.2 and 28.0, variances 1.12 and 1.0, 3 seeds a side: df 3.99, t 2.13)."""
    from benchmarks import bench_elastic

    def row(member, point, fid, sampler="dpm++2m"):
        return {"member": member, "point": point, "fid": fid, "sampler": sampler, "extractor": "fmnist-classifier-0123"}

    base = [
        row("D3", "D=3 S=16", 28.0),
        row("elastic-1x", "D=3 S=16", 31.6),
        row("D3", "D=3 S=16", 99.0, sampler="euler"),  # another sampler's seed 0: not paired
        row("D3", "D=3 S=8", 30.0),
        row("elastic-1x", "D=3 S=8", 29.0),  # no replicate: left out
        row("elastic-1x", "S_k 4,4,2,2 @D=2", 20.0),
    ]  # a schedule: not a grid point
    seeds = [
        row("D3-s1", "D=3 S=16", 27.0),
        row("D3-s2", "D=3 S=16", 29.0),
        row("elastic-1x-s1", "D=3 S=16", 30.0),
        row("elastic-1x-s2", "D=3 S=16", 32.0),
    ]
    text = bench_elastic.seeds_table(base, seeds)
    assert (
        "| 3 | 16 | 28.0, 27.0, 29.0 (seeds [0, 1, 2]) | 31.6, 30.0, 32.0 (seeds [0, 1, 2]) | +3.2 [+1.4, +5.0] "
        "| 1.11 |" in text
    )
    assert "| 3 | 8 |" not in text and "S_k" not in text
    with pytest.raises(SystemExit, match="several samplers"):
        bench_elastic.seeds_table(base, seeds + [row("D3-s3", "D=3 S=16", 27.0, sampler="euler")])
    with pytest.raises(SystemExit, match="no \\(D, S\\) point has a replicate"):
        bench_elastic.seeds_table(base, [])


@pytest.mark.parametrize(
    "argv, problem",
    [
        (["--only", "D7"], "--only: no member D7"),
        (["--train-seed", "1", "--only", "D3"], "holds seed-0 rows"),
        (["--train-seed", "-1"], "must be >= 0"),
        (["--budget-steps", "-5"], "must be >= 0"),
    ],
)
def test_elastic_replicates_are_refused_before_training_when_they_could_mix_into_seed_zero(tmp_path, argv, problem):
    from benchmarks import bench_elastic

    out = tmp_path / "rows.jsonl"
    out.write_text(json.dumps({"member": "D3", "point": "D=3 S=16"}) + "\n")
    with pytest.raises(SystemExit, match=problem):
        bench_elastic.main([*argv, "--out", str(out), "--runs", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()


def test_elastic_replicate_trains_the_named_members_with_their_seed():
    from benchmarks import bench_elastic, bench_recipe

    spec = bench_elastic.members([1, 2, 3, 4], [2, 4])
    assert bench_elastic.replicate(spec, 0, []) == {
        n: {**m, "overrides": {**m["overrides"], "train.seed": 0}} for n, m in spec.items()
    }
    reps = bench_elastic.replicate(spec, 2, ["D3", "elastic-1x"])
    assert list(reps) == ["D3-s2", "elastic-1x-s2"]
    recipe = bench_recipe.VARIANTS[bench_recipe.WINNER]
    cfgs = {n: bench_recipe.config_for(n, {**recipe, **m["overrides"]}, Path("/tmp/x"), 10, 1) for n, m in reps.items()}
    assert cfgs["D3-s2"].train.seed == 2 and cfgs["D3-s2"].model.diffusion_depth == 3
    assert cfgs["elastic-1x-s2"].train.seed == 2 and cfgs["elastic-1x-s2"].model.depths == (1, 2, 3, 4, 5, 6)


def test_quality_grid_takes_each_model_near_the_asked_compute_and_the_peer_at_its_better_sampler(tmp_path, monkeypatch):
    from PIL import Image

    from benchmarks import bench_quality, peer_diffusers
    from workbench.evaluation import evaluate as evaluation
    from workbench.training import checkpoint

    def curve(*points):
        return {"fmnist-classifier": [{"steps": s, "flops": f * 1e9, "fid": fid} for s, f, fid in points]}

    row = {
        "curves": {
            "recipe": curve((4, 2.0, 35.3), (16, 6.0, 17.6), (32, 11.2, 16.7)),
            "peer-ddim": curve((4, 3.0, 44.5), (8, 6.1, 26.6)),
            "peer-dpm++2m": curve((4, 3.0, 35.3), (8, 6.1, 17.5)),
            "peer": curve((8, 6.1, 17.5)),
        }
    }
    asked = []
    monkeypatch.setattr(checkpoint, "load_for_inference", lambda path: (path.name, None))
    monkeypatch.setattr(
        evaluation,
        "sample_images",
        lambda model, cfg, n, steps, seed: (
            asked.append((model, steps)) or torch.full((n, 1, 32, 32), -1.0),
            None,
            0.0,
        ),
    )
    monkeypatch.setattr(peer_diffusers, "load_peer", lambda path: "unet")
    monkeypatch.setattr(
        peer_diffusers,
        "sample_peer",
        lambda unet, n, steps, seed, sampler: (asked.append((f"{unet} {sampler}", steps)) or torch.ones(n, 1, 32, 32)),
    )
    labels = bench_quality.grid(row, tmp_path, 6.0, tmp_path / "grid.png", n=4)
    assert asked == [("recipe", 16), ("unet dpm++2m", 8)]
    assert labels == ["recipe S=16 (6.0 GFLOP, FID 17.6)", "peer dpm++2m S=8 (6.1 GFLOP, FID 17.5)"]
    image = Image.open(tmp_path / "grid.png")
    assert image.width > 4 * 32 and 2 * 32 <= image.height < 3 * 32  # one row per model, four images each


def test_floors_score_the_references_own_images_at_zero_and_reuse_its_feature_log(tmp_path, monkeypatch, one_thread):
    """bench_floors on a stand-in Fluent set and an untrained codec: the real row, at n = every image of the
    reference, is the reference itself (FID ~0); the untrained codec's reconstructions are far from it; the real
    features come from the feature log the reference left, so the extractor then only sees reconstructions."""
    from fluent_fixture import write_fluent, write_tiny_codec

    import workbench as wb
    from benchmarks import bench_floors
    from workbench.core.config import DataConfig
    from workbench.data.datasets import build_dataset
    from workbench.evaluation import features, metrics

    fluent, codec = write_fluent(tmp_path / "fluent"), write_tiny_codec(tmp_path / "codec")
    cfg = wb.preset("people256-T16", **{"data.root": str(fluent), "data.vae_path": str(codec)})
    n = len(build_dataset(DataConfig(dataset="fluent-people", root=str(fluent), image_size=256, channels=3), "all"))
    ref = metrics.reference_stats(
        metrics.RealImages("fluent-people", "all", 256, 3, str(fluent)),
        "fmnist-classifier",
        cache_dir=tmp_path / "ref",
        options=metrics.FeatureOptions(log_dir=tmp_path / "log"),
    )
    seen, real_extract = [], features.extract_features
    monkeypatch.setattr(
        bench_floors, "extract_features", lambda net, x, b: seen.append(len(x)) or real_extract(net, x, b)
    )
    monkeypatch.setattr(metrics, "extract_features", lambda net, x, b: seen.append(-len(x)) or real_extract(net, x, b))
    out = bench_floors.floors(cfg, n, extractor="fmnist-classifier", reference=ref, log_dir=tmp_path / "log", batch=4)
    assert sum(seen) == n and all(s > 0 for s in seen)  # reconstructions only: the originals came from the log
    assert out["real"]["fid"] == pytest.approx(0, abs=1e-6) and out["n"] == n == ref.count
    assert out["through_codec"]["fid"] > 1 and out["codec_paired"]["fid"] == pytest.approx(out["through_codec"]["fid"])
    low, high = out["through_codec"]["fid_low"], out["through_codec"]["fid_high"]
    assert low <= out["through_codec"]["fid"] <= high or high - low < 1e-9
    with pytest.raises(ValueError, match="Fix: use 2 <= --n"):
        bench_floors.floors(cfg, n + 1, extractor="fmnist-classifier", reference=ref, log_dir=tmp_path / "log")


def test_generalization_finds_a_fit_through_the_context_and_not_in_block_zero(monkeypatch, one_thread):
    """bench_generalization on a stand-in model that recognises a training latent from its earlier blocks (block 0
    of the context) and then predicts every later block's flow target exactly, while it knows nothing about block 0:
    the training split's later blocks score zero, the held-out split's do not, and block 0 scores the same on both
    splits (its loss is the data's, which the splits share here). The rows cover every block and noise level."""
    import workbench as wb
    from benchmarks import bench_generalization as bg
    from workbench.core.blocks import block_index_map

    cfg = wb.preset("tiny", **{"diffusion.prediction": "flow", "sample.sampler": "euler", "model.num_blocks": 4})
    g = torch.Generator().manual_seed(0)
    shape = (cfg.model.latent_channels, cfg.model.latent_size, cfg.model.latent_size)
    train, held = torch.randn(40, *shape, generator=g), torch.randn(40, *shape, generator=g)
    first = block_index_map(cfg.model) == 0  # (H, W): the latent pixels of block 0

    class Lookup(torch.nn.Module):
        def forward(self, x0, xt, t, labels=None):
            s = (t.float() / cfg.diffusion.train_steps)[:, block_index_map(cfg.model)].unsqueeze(1)  # (B, 1, H, W)
            near = torch.cdist(x0[..., first].flatten(1), train[..., first].flatten(1)).argmin(1)
            x0_guess = train[near]
            pred = (xt - x0_guess) / s.clamp_min(1e-3)  # eps - x0 of the recognised image
            return torch.where(first, torch.zeros_like(pred), pred), None

    monkeypatch.setattr(
        bg,
        "split_latents",
        lambda config, split, n, seed: ((train if split == "train" else held)[:n], torch.zeros(n, dtype=torch.long)),
    )
    out = bg.generalization(Lookup(), cfg, images=32, seed=0)
    rows = {r["block"]: r for r in out["per_block"]}
    assert out["images"] == 32 and sorted(rows) == [0, 1, 2, 3]
    for k in (1, 2, 3):
        assert rows[k]["train"] < 1e-6 < 0.5 < rows[k]["val"]
    assert rows[0]["train"] == pytest.approx(rows[0]["val"], rel=0.25) and rows[0]["train"] > 1.0
    assert sum(r["count"] for r in out["per_level"]) == 32 * 4
    assert out["val"] > out["train"]


# ---- the package and its harness --------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem not in ("__init__", "harness"))


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_is_a_module_whose_docstring_and_help_name_its_command(name, capsys):
    """Each benchmark imports as `benchmarks.NAME` (no path set up first), its docstring shows how to run it as
    `python -m benchmarks.NAME`, and main(argv) parses a command line: --help prints the docstring and exits 0."""
    import importlib

    module = importlib.import_module(f"benchmarks.{name}")
    assert f"python -m benchmarks.{name}" in module.__doc__
    assert f"benchmarks/{name}.py" not in module.__doc__  # no old spelling left beside the new one
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0 and f"python -m benchmarks.{name}" in capsys.readouterr().out


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", python_files("benchmarks", "scripts", "tests"), ids=lambda p: p.stem)
def test_no_path_edits_and_no_private_imports_across_folders(path):
    """benchmarks/, scripts/ and tests/ import the repository's packages as packages (pytest and `python -m` put
    the root on the path): no sys.path edits; and benchmarks and scripts import no `_private` name from another
    folder (what they share lives in the library, public). Tests may still reach into a module they test."""
    import ast

    tree = ast.parse(path.read_text(), str(path))
    here = path.relative_to(ROOT).parts[0]
    local = {p.stem for p in path.parent.glob("*.py")}  # modules of the same folder (tests' helpers)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
            raise AssertionError(f"{path.name}:{node.lineno}: edits or reads sys.path. Fix: import the package.")
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            top = node.module.split(".")[0]
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            assert not private or here == "tests" or top == here or node.module in local, (
                f"{path.name}:{node.lineno}: imports {private} from {node.module}. Fix: make it public in the library."
            )


def test_the_harness_parses_sets_threads_and_appends_whole_lines(tmp_path, monkeypatch):
    from benchmarks import harness

    ap = harness.parser("doc", out=str(tmp_path / "r.jsonl"), threads=1, dry_run=True)
    args = harness.parse(ap, ["--threads", "1", "--dry-run"])
    assert (args.threads, args.dry_run, args.out) == (1, True, str(tmp_path / "r.jsonl"))
    assert torch.get_num_threads() == 1 and harness.set_threads(0) == 1  # 0 keeps what is set
    with pytest.raises(SystemExit):
        harness.parse(harness.parser("doc"), ["--dry-run"])  # only where the benchmark offers it
    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / "bench_cache.py"), "--steps", "4"])
    out = tmp_path / "sub" / "r.jsonl"
    harness.emit({"benchmark": "x", "value": 1.5}, str(out))
    harness.emit({"benchmark": "x", "value": 2.5}, str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["value"] for r in rows] == [1.5, 2.5]
    assert rows[0]["command"] == "python -m benchmarks.bench_cache --steps 4"  # as a reader would type it again
    load = harness.machine().get("load_1min")
    assert load is None or load >= 0


CLICK_FILES = {  # a page, its panels, a sampler and a check in project folders; a relay outside them (a library)
    "app/main.py": """
import threading

def main(m):
    m["panels"].sidebar()
    _generate(m)
    m["late"].after()

def _generate(m):
    events = []
    worker = threading.Thread(target=m["sampler"].work, args=(m, events), name="worker")
    worker.start()
    worker.join()
    for event in events:
        image = m["relay"].relay(m["sampler"].frame, event)
        m["panels"].show_images(image)
        if event.kind == "step":
            m["progress"].tick()
""",
    "app/panels.py": "def sidebar():\n    return 1\n\ndef show_images(image):\n    return image\n",
    "app/progress.py": "def tick():\n    return 1\n",
    "app/late.py": "def after():\n    return 1\n",
    "workbench/sampler.py": """
class Event:
    def __init__(self, kind):
        self.kind = kind

def work(m, events):
    for kind in ("step", "block", "block"):
        events.append(m["relay"].relay(m["checks"].checked, Event(kind)))

def frame(event):
    return event.kind
""",
    "workbench/checks.py": "def checked(x):\n    return x\n",
    "lib/relay.py": "def relay(fn, *args):\n    return fn(*args)\n",
}


def test_click_trace_counts_project_files_and_edges_across_library_frames_and_threads_up_to_the_first_block(tmp_path):
    """The call tracer of benchmarks/click_trace.py on a toy page: a call through a library frame is an edge
    between the project files on either side; the page thread outside _generate is the rebuild, inside it and the
    worker thread the click; a step's picture does not end the trace, the first finished block's does, and what
    runs after it (app/late.py) is not counted."""
    import importlib.util
    import threading

    from benchmarks.click_trace import CallTrace

    root = tmp_path.resolve()
    modules = {}
    for rel, text in CLICK_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        spec = importlib.util.spec_from_file_location(f"click_toy_{path.parent.name}_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[path.stem] = module
    tracer = CallTrace(root)
    tracer.install()
    try:
        tracer.begin("click", until_first_block=True)
        page = threading.Thread(target=modules["main"].main, args=(modules,), name="page")
        page.start()
        page.join()
    finally:
        tracer.close()
    assert tracer.saw_click and tracer.reached_first_block
    rebuild, click = tracer.summary(("rebuild",)), tracer.summary(("click",))
    assert rebuild["file_list"] == ["app/main.py", "app/panels.py"] and rebuild["edges"] == 1
    assert click["file_list"] == ["app/main.py", "app/panels.py", "app/progress.py", "workbench/checks.py"] + [
        "workbench/sampler.py"
    ]
    assert sorted(e.split("  (")[0] for e in click["edge_list"]) == [
        "app/main.py -> app/panels.py",
        "app/main.py -> app/progress.py",
        "app/main.py -> workbench/sampler.py",  # through lib/relay.py, which is not a project file
        "workbench/sampler.py -> workbench/checks.py",  # in the worker thread
    ]
    assert click["threads"] == ["page", "worker"] and click["cross_file_calls"] > click["edges"]
    assert "app/late.py" not in tracer.summary()["file_list"]
