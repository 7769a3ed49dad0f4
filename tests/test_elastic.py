"""Elastic depth: one checkpoint trained over a set of diffusion depths samples at any of them, with per-block
depth and step schedules; every contract of the core holds for every D and every schedule."""
import signal
import time

import pytest
import torch

import workbench as wb
from workbench.blocks import from_blocks, to_blocks
from workbench.checkpoint import load_checkpoint
from workbench.compute import at_depth, cached_cost, count_flops, paper_cost, schedule_costs
from workbench.model import SANDWICH, sample_depths
from workbench.objectives import build_objective

from conftest import randomize_head
from test_train import cli_args, finish, launch


FLOW = {"diffusion.prediction": "flow", "sample.sampler": "euler"}  # x0 = x - s v: no 1/sqrt(alpha-bar) blow-up,
# so an untrained model's samples stay O(1) and a 1e-4 tolerance means what it says


def make(N=4, T=4, depths=(1, 2, 3, 4), D=2, objective=None, **model):
    over = {"model.depth": N, "model.diffusion_depth": D, "model.num_blocks": T, **(objective or FLOW),
            "model.elastic_depths": list(depths), **{f"model.{k}": v for k, v in model.items()}}
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
        p1, h1 = m(x0[b:b + 1], xt[b:b + 1], t[b:b + 1], depth=depth[b:b + 1])
        assert torch.allclose(pred[b:b + 1], p1, atol=1e-5) and torch.allclose(hidden[b:b + 1], h1, atol=1e-5)
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
        assert torch.equal(out[:, :j + 1], base[:, :j + 1]), f"block <= {j} saw clean block {j}"
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
    events = list(wb.generate_events(m, cfg, num_images=2, seed=1, **sched))
    steps = [e.steps for e in events if e.kind == "block"]
    assert steps == [5, 3, 2, 1] and [e.step for e in events if e.kind == "step" and e.block == 0] == [1, 2, 3, 4, 5]
    paper, cached = schedule_costs(cfg.model, (4, 3, 2, 1), (5, 3, 2, 1))
    assert events[-1].cost.paper_block_layer_evals == paper == sum((4 - d) + d * s for d, s in
                                                                    zip((4, 3, 2, 1), (5, 3, 2, 1)))
    assert events[-1].cost.block_layer_evals == cached
    fixed = list(wb.generate_events(m, cfg, num_images=2, steps=3, diffusion_depth=3))[-1].cost
    assert fixed.block_layer_evals == cached_cost(at_depth(cfg.model, 3), 3)
    assert fixed.paper_block_layer_evals == paper_cost(at_depth(cfg.model, 3), 3)


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
        wb.generate(wb.build_model(dedicated), dedicated, num_images=1, steps=2, diffusion_depth=1,
                    allow_untrained_depth=True)


@pytest.mark.parametrize("over,fix", [
    ({"model.elastic_depths": [2, 1]}, "write e.g. [1, 2, 3, 4]"),
    ({"model.elastic_depths": [1, 5]}, "write e.g. [1, 2, 3, 4]"),
    ({"model.elastic_depths": [1, 3]}, "include model.diffusion_depth"),
    ({"model.elastic_depths": [1, 2], "model.denoiser_attention": "block"}, "use denoiser_attention='context'"),
    ({"model.elastic_depths": "1,x"}, "expected a list of integers"),
])
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
    assert share[1] == pytest.approx(SANDWICH + middle, abs=0.01) and share[4] == pytest.approx(SANDWICH + middle,
                                                                                              abs=0.01)
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
        flops[name] = count_flops(lambda: obj.loss(model, x0, generator=torch.Generator().manual_seed(0))
                                  .total.backward())
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
