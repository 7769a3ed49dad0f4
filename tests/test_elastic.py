"""Elastic depth: one checkpoint trained over a set of diffusion depths samples at any of them, with per-block
depth and step schedules and per-step depth schedules; every contract of the core holds for every D and every
schedule."""

import signal
import time

import pytest
import torch
from conftest import randomize_head
from test_train import cli_args, finish, launch

import workbench as wb
from workbench.core.blocks import from_blocks, to_blocks
from workbench.core.compute import at_depth, cached_cost, count_flops, paper_cost, sample_flops, schedule_costs
from workbench.core.model import SANDWICH, sample_depths
from workbench.core.objectives import build_objective
from workbench.sampling.sampler import block_plan, measure_sample_flops, sample_request
from workbench.training.checkpoint import load_checkpoint

FLOW = {"diffusion.prediction": "flow", "sample.sampler": "euler"}  # x0 = x - s v: no 1/sqrt(alpha-bar) blow-up,
# so an untrained model's samples stay O(1) and a 1e-4 tolerance means what it says


def make(N=4, T=4, depths=(1, 2, 3, 4), D=2, objective=None, **model):
    over = {
        "model.depth": N,
        "model.diffusion_depth": D,
        "model.num_blocks": T,
        **(objective or FLOW),
        "model.elastic_depths": list(depths),
        **{f"model.{k}": v for k, v in model.items()},
    }
    cfg = wb.preset("tiny", **over)
    m = wb.build_model(cfg).eval()
    randomize_head(m)
    if m.boundary_embed is not None:  # zero at init: give it weights so that D visibly matters
        with torch.no_grad():
            m.boundary_embed.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    return cfg, m


def inputs(cfg, B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0, xt = (torch.randn(B, 1, 32, 32, generator=g) for _ in range(2))
    return x0, xt, torch.randint(0, 1000, (B, cfg.model.num_blocks), generator=g)


SHAPES = [(4, 4), (4, 16), (3, 4), (4, 1)]  # (N, T)


@pytest.mark.parametrize("towers", ["separate", "shared"])
@pytest.mark.parametrize("N,T", SHAPES)
def test_mixed_depths_in_one_batch_equal_each_depth_alone(N, T, towers):
    """Per-sample boundaries in one forward pass: every sample gets what a batch of its own D gives it."""
    cfg, m = make(N, T, tuple(range(1, N + 1)), D=1, towers=towers)
    x0, xt, t = inputs(cfg, B=N)
    depth = torch.arange(1, N + 1)
    pred, hidden = m(x0, xt, t, depth=depth)
    for b in range(N):
        p1, h1 = m(x0[b : b + 1], xt[b : b + 1], t[b : b + 1], depth=depth[b : b + 1])
        assert torch.allclose(pred[b : b + 1], p1, atol=1e-5) and torch.allclose(hidden[b : b + 1], h1, atol=1e-5)
    other, _ = m(x0, xt, t, depth=torch.full((N,), N))
    assert not torch.allclose(pred[:1], other[:1])  # the boundary matters (the test is not vacuous)


@pytest.mark.parametrize("towers", ["separate", "shared"])
@pytest.mark.parametrize("N,T", [(4, 4), (4, 16), (3, 4)])
def test_causality_at_every_depth(N, T, towers):
    cfg, m = make(N, T, tuple(range(1, N + 1)), D=1, towers=towers)
    x0, xt, t = inputs(cfg, B=N)
    depth = torch.arange(1, N + 1)
    base = to_blocks(m(x0, xt, t, depth=depth)[0], cfg.model)
    for j in range(T):
        blocks = to_blocks(x0, cfg.model).clone()
        blocks[:, j] += 1.0
        out = to_blocks(m(from_blocks(blocks, cfg.model), xt, t, depth=depth)[0], cfg.model)
        assert torch.equal(out[:, : j + 1], base[:, : j + 1]), f"block <= {j} saw clean block {j}"
        if j < T - 1:
            assert not torch.allclose(out[:, j + 1], base[:, j + 1])


@pytest.mark.parametrize("conditioning", ["embed", "adaln"])
@pytest.mark.parametrize("towers", ["separate", "shared"])
@pytest.mark.parametrize("N,T", [(4, 4), (4, 16), (3, 1)])
def test_cache_equals_recompute_at_every_depth(N, T, towers, conditioning):
    cfg, m = make(N, T, tuple(range(1, N + 1)), D=1, towers=towers, timestep_conditioning=conditioning)
    outs = []
    for D in range(1, N + 1):
        a = wb.generate(m, cfg, num_images=2, steps=3, seed=3, use_cache=True, diffusion_depth=D)
        b = wb.generate(m, cfg, num_images=2, steps=3, seed=3, use_cache=False, diffusion_depth=D)
        assert a.abs().max() > 0.1 and (a - b).abs().max() <= 1e-4, D
        outs.append(a)
    assert not torch.allclose(outs[0], outs[-1])


@pytest.mark.parametrize("sampler", ["euler", "dpm++2m"])
def test_cache_equals_recompute_under_schedules(sampler):
    cfg, m = make(4, 4)
    sched = dict(depth_schedule=(4, 3, 2, 1), steps_schedule=(5, 3, 2, 1))
    a = wb.generate(m, cfg, num_images=2, seed=1, sampler=sampler, use_cache=True, **sched)
    b = wb.generate(m, cfg, num_images=2, seed=1, sampler=sampler, use_cache=False, **sched)
    assert (a - b).abs().max() <= 1e-4
    events = list(wb.generate_events(m, cfg, wb.sample_request(cfg, num_images=2, seed=1, **sched)))
    steps = [e.steps for e in events if e.kind == "block"]
    assert steps == [5, 3, 2, 1] and [e.step for e in events if e.kind == "step" and e.block == 0] == [1, 2, 3, 4, 5]
    paper, cached = schedule_costs(cfg.model, [(d,) * s for d, s in zip((4, 3, 2, 1), (5, 3, 2, 1))])
    assert (
        events[-1].cost.paper_block_layer_evals
        == paper
        == sum((4 - d) + d * s for d, s in zip((4, 3, 2, 1), (5, 3, 2, 1)))
    )
    assert events[-1].cost.block_layer_evals == cached
    fixed = list(wb.generate_events(m, cfg, wb.sample_request(cfg, num_images=2, steps=3, diffusion_depth=3)))[-1].cost
    assert fixed.block_layer_evals == cached_cost(at_depth(cfg.model, 3), 3)
    assert fixed.paper_block_layer_evals == paper_cost(at_depth(cfg.model, 3), 3)


# ---- per-step depth schedules: D_i over the denoising steps of each block --------------------------------------
PER_STEP = {4: (1, 2, 4), 3: (1, 3, 2)}  # N -> depth_per_step (small D at high noise; one out of order)


def test_per_step_values_spread_over_each_blocks_steps():
    cfg = make(4, 4)[0]
    plan = block_plan(cfg.model, sample_request(cfg, depth_per_step=(1, 2, 4), steps_schedule=(6, 4, 3, 5)))
    assert plan == ((1, 1, 2, 2, 4, 4), (1, 1, 2, 4), (1, 2, 4), (1, 1, 2, 2, 4))  # step i of S: value i*P//S
    assert block_plan(cfg.model, sample_request(cfg, steps=2, diffusion_depth=3)) == ((3, 3),) * 4
    assert block_plan(cfg.model, sample_request(cfg, steps=2, depth_schedule=(4, 3, 2, 1))) == (
        (4, 4),
        (3, 3),
        (2, 2),
        (1, 1),
    )


@pytest.mark.parametrize("conditioning", ["embed", "adaln"])
@pytest.mark.parametrize("towers", ["separate", "shared"])
@pytest.mark.parametrize("N,T", SHAPES)
def test_cache_equals_recompute_under_per_step_depths(N, T, towers, conditioning):
    """Each step enters the diffusion stage at its own N - D_i from one AR pass per block, exactly as the full
    forward at that step's depth does."""
    cfg, m = make(N, T, tuple(range(1, N + 1)), D=1, towers=towers, timestep_conditioning=conditioning)
    sched = dict(depth_per_step=PER_STEP[N], steps_schedule=(4, 3) * (T // 2) if T > 1 else (4,))
    a = wb.generate(m, cfg, num_images=2, seed=3, use_cache=True, **sched)
    b = wb.generate(m, cfg, num_images=2, seed=3, use_cache=False, **sched)
    error = (a - b).abs().max()
    assert a.abs().max() > 0.1 and error <= 1e-4
    for D in set(PER_STEP[N]):  # not vacuous: the schedule is none of its depths alone, by far more than the error
        alone = wb.generate(m, cfg, num_images=2, seed=3, diffusion_depth=D, steps_schedule=sched["steps_schedule"])
        gap = (a - alone).abs().max()  # near-zero-init adaLN gates make D matter little: ~1e-4 against ~1e-7
        assert gap > 1e-5 and gap > 100 * error, (D, gap, error)
    one = wb.generate(m, cfg, num_images=2, seed=3, depth_per_step=(2,), steps_schedule=sched["steps_schedule"])
    assert torch.equal(
        one, wb.generate(m, cfg, num_images=2, seed=3, diffusion_depth=2, steps_schedule=sched["steps_schedule"])
    )


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("towers", ["separate", "shared"])
def test_per_step_sampling_is_causal(towers, use_cache):
    """What later blocks are given (their steps, hence their depths) never changes an earlier block."""
    cfg, m = make(4, 4, towers=towers)
    runs = [
        wb.generate_events(
            m,
            cfg,
            wb.sample_request(
                cfg, num_images=2, seed=5, use_cache=use_cache, depth_per_step=(1, 2, 4), steps_schedule=(3, 4) + later
            ),
        )
        for later in ((3, 3), (4, 5))
    ]
    finished = [[e.x_t.clone() for e in r if e.kind == "block"] for r in runs]
    side = cfg.model.block_side * cfg.model.patch_size
    for k in range(2):  # blocks 0 and 1 (the top row) are the same in both runs, bit for bit
        assert torch.equal(finished[0][k], finished[1][k])
    assert not torch.allclose(finished[0][3][..., side:, :], finished[1][3][..., side:, :])


@pytest.mark.parametrize(
    "N,T,model", [(4, 4, {}), (4, 16, {}), (3, 4, {"timestep_conditioning": "adaln"}), (4, 4, {"num_classes": 10})]
)
def test_per_step_costs_count_what_ran(N, T, model):
    cfg, m = make(N, T, tuple(range(1, N + 1)), D=1, **model)
    sched = {
        "sample.depth_per_step": list(PER_STEP[N]),
        "sample.steps_schedule": [3] * (T - 1) + [5],
        "sample.cfg_scale": 1.0,
    }
    c = cfg.override(**sched)
    plan = block_plan(c.model, c.sample)
    paper, cached = schedule_costs(c.model, plan)
    assert paper == sum((N - min(ds)) + sum(ds) for ds in plan)
    last = list(wb.generate_events(m, c, wb.sample_request(c, num_images=1, seed=0)))[-1].cost
    assert (last.paper_block_layer_evals, last.block_layer_evals) == (paper, cached)
    for use_cache in (True, False):
        measured = measure_sample_flops(m, c, sample_request(c, num_images=1, use_cache=use_cache))
        analytic = sum(sample_flops(c.model, plan, use_cache).values())
        assert measured == pytest.approx(analytic, rel=1e-3 if use_cache else 0.01), use_cache  # cached: exact
    deep = c.override(**{"sample.depth_per_step": [], "sample.diffusion_depth": N})
    deepest = measure_sample_flops(m, deep, sample_request(deep, num_images=1))
    assert measure_sample_flops(m, c, sample_request(c, num_images=1)) < deepest  # small D at high noise saves compute


@pytest.mark.parametrize(
    "given,match",
    [
        (
            {"depth_per_step": (1, 2, 4), "steps": 2},
            r"sample.depth_per_step: \[1, 2, 4\] has 3 values for a block of "
            r"S_k=2 steps.*Fix: give at most 2 values",
        ),
        ({"depth_per_step": (1, 2), "steps_schedule": (4, 4, 1, 4)}, r"S_k=1 steps.*at most 1 value"),
        ({"depth_per_step": (1, 5), "steps": 4}, r"sample.depth_per_step: D=5 exceeds the model's N=4.*1..4"),
        (
            {"depth_per_step": (1, 4), "steps": 4},
            r"sample.depth_per_step: D=4 is not a depth this model was trained "
            r"at \(1, 2\).*allow_untrained_depth",
        ),
        ({"depth_per_step": (1, 0), "steps": 4}, r"sample.depth_per_step: got \[1, 0\].*Fix: use depths D >= 1"),
        (
            {"depth_per_step": (1, 2), "depth_schedule": (1, 2, 1, 2)},
            r"sample.depth_per_step: set together with "
            r"sample.depth_schedule.*Fix: give one D per block",
        ),
    ],
)
def test_bad_per_step_schedules_name_the_field_and_the_fix(given, match):
    cfg, m = make(4, 4, depths=(1, 2), D=2)
    with pytest.raises(ValueError, match=match):
        wb.generate(m, cfg, num_images=1, **given)


def test_held_out_per_step_depth_samples_when_allowed_and_round_trips():
    cfg, m = make(4, 4, depths=(1, 2), D=2)
    x = wb.generate(m, cfg, num_images=1, steps=4, depth_per_step=(1, 4), allow_untrained_depth=True)
    assert torch.isfinite(x).all()
    c = cfg.override(**{"sample.depth_per_step": "1,2"})
    assert c.sample.depth_per_step == (1, 2) and wb.Config.from_yaml(c.to_yaml()) == c
    dedicated = wb.preset("tiny", **{"model.denoiser_attention": "block"})
    with pytest.raises(ValueError, match="depth_per_step: D=1 differs.*fixes the boundary"):
        wb.generate(
            wb.build_model(dedicated),
            dedicated,
            num_images=1,
            steps=2,
            depth_per_step=(1, 2),
            allow_untrained_depth=True,
        )


def test_depth_outside_the_set_names_the_set():
    cfg, m = make(4, 4, depths=(1, 2), D=2)
    with pytest.raises(ValueError, match=r"D=4 is not a depth this model was trained at \(1, 2\).*allow_untrained"):
        wb.generate(m, cfg, num_images=1, steps=2, diffusion_depth=4)
    x = wb.generate(m, cfg, num_images=1, steps=2, diffusion_depth=4, allow_untrained_depth=True)
    assert torch.isfinite(x).all()
    with pytest.raises(ValueError, match="depth_schedule.*3 entries for T=4"):
        wb.generate(m, cfg, num_images=1, steps=2, depth_schedule=(1, 2, 1))
    dedicated = wb.preset("tiny", **{"model.denoiser_attention": "block"})
    with pytest.raises(ValueError, match="ablated architecture fixes the boundary"):
        wb.generate(
            wb.build_model(dedicated), dedicated, num_images=1, steps=2, diffusion_depth=1, allow_untrained_depth=True
        )


@pytest.mark.parametrize(
    "over,fix",
    [
        ({"model.elastic_depths": [2, 1]}, "write e.g. [1, 2, 3, 4]"),
        ({"model.elastic_depths": [1, 5]}, "write e.g. [1, 2, 3, 4]"),
        ({"model.elastic_depths": [1, 3]}, "include model.diffusion_depth"),
        ({"model.elastic_depths": [1, 2], "model.denoiser_attention": "block"}, "use denoiser_attention='context'"),
        ({"model.elastic_depths": "1,x"}, "expected a list of integers"),
    ],
)
def test_bad_elastic_configs_name_the_fix(over, fix):
    with pytest.raises(ValueError, match="model.elastic_depths") as e:
        wb.preset("tiny", **over)
    assert fix in str(e.value)


def test_elastic_config_round_trips_through_yaml_and_the_command_line():
    cfg = wb.preset("tiny", **{"model.elastic_depths": "1,2,3"})
    assert cfg.model.elastic_depths == (1, 2, 3) and cfg.model.depths == (1, 2, 3)
    assert wb.Config.from_yaml(cfg.to_yaml()) == cfg and "- 1" in cfg.to_yaml()


def test_sandwich_draws_a_quarter_at_each_end():
    cfg = make(4, 4)[0].model
    d = sample_depths(cfg, 40_000, "cpu", torch.Generator().manual_seed(0))
    share = {D: (d == D).float().mean().item() for D in (1, 2, 3, 4)}
    middle = (1 - 2 * SANDWICH) / 4  # uniform over the set for the rest
    assert share[1] == pytest.approx(SANDWICH + middle, abs=0.01) and share[4] == pytest.approx(
        SANDWICH + middle, abs=0.01
    )
    assert share[2] == pytest.approx(middle, abs=0.01) and share[3] == pytest.approx(middle, abs=0.01)


@pytest.mark.parametrize("conditioning", ["embed", "adaln"])
def test_elastic_training_costs_the_flops_of_fixed_depth_training(conditioning):
    cfg, m = make(4, 4, timestep_conditioning=conditioning)
    fixed_cfg = wb.preset("tiny", **{"model.timestep_conditioning": conditioning})
    fixed = wb.build_model(fixed_cfg)
    x0 = torch.randn(4, 1, 32, 32)
    flops = {}
    for name, (c, model) in {"elastic": (cfg, m.train()), "fixed": (fixed_cfg, fixed.train())}.items():
        obj = build_objective(c.diffusion, c.model)
        flops[name] = count_flops(
            lambda: obj.loss(model, x0, generator=torch.Generator().manual_seed(0)).total.backward()
        )
    assert flops["elastic"] == pytest.approx(flops["fixed"], rel=0.05)


@pytest.mark.slow
def test_elastic_checkpoint_resumes_bitwise(tmp_path):
    run = {"train.max_steps": 8, "train.ckpt_every": 4, "train.keep_last": 5, "model.elastic_depths": "1,2"}
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    with open(tmp_path / "w.log", "w") as lw, open(tmp_path / "c.log", "w") as lc:
        uninterrupted, killed = launch(cli_args(whole, **run), lw), launch(cli_args(cut, **run), lc)
        deadline = time.time() + 240
        while not (cut / "ckpt-0000004.safetensors").exists():
            assert killed.poll() is None and time.time() < deadline, (tmp_path / "c.log").read_text()
            time.sleep(0.02)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        finish(uninterrupted, tmp_path / "w.log")
    assert load_checkpoint(cut).step < 8
    with open(tmp_path / "r.log", "w") as lr_:
        finish(launch(cli_args(cut, **run) + ["--resume"], lr_), tmp_path / "r.log")
    a, b = load_checkpoint(whole), load_checkpoint(cut)
    assert a.step == b.step == 8 and a.config.model.elastic_depths == (1, 2)
    for part in ("model", "ema"):
        for k in getattr(a, part):
            assert torch.equal(getattr(a, part)[k], getattr(b, part)[k]), f"{part}.{k}"
    assert "boundary_embed.weight" in a.model
