"""The training objectives (epsilon, v, min-SNR weighting, rectified flow) and adaLN timestep conditioning keep
every contract of the core: causality, cache == recompute, determinism, the event stream; each one learns."""

import math

import pytest
import torch
from conftest import randomize_head

import workbench as wb
from workbench.core.blocks import from_blocks, to_blocks
from workbench.core.compute import cached_cost
from workbench.core.diffusion import Diffusion
from workbench.core.flow import Flow
from workbench.core.objectives import build_objective

OBJECTIVES = {
    "eps": {},
    "v": {"diffusion.prediction": "v_prediction"},
    "eps-minsnr": {"diffusion.loss_weighting": "min_snr"},
    "v-minsnr": {"diffusion.prediction": "v_prediction", "diffusion.loss_weighting": "min_snr"},
    "flow": {"diffusion.prediction": "flow", "sample.sampler": "euler"},
}
CONDITIONING = ["embed", "adaln"]


def make(objective="eps", conditioning="embed", N=4, D=2, T=4, **model):
    over = {
        "model.depth": N,
        "model.diffusion_depth": D,
        "model.num_blocks": T,
        "model.timestep_conditioning": conditioning,
        **OBJECTIVES[objective],
    }
    over.update({f"model.{k}": v for k, v in model.items()})
    cfg = wb.preset("tiny", **over)
    m = wb.build_model(cfg).eval()
    randomize_head(m)
    return cfg, m


def samplers(cfg):
    return wb.core.config.samplers_for(cfg.diffusion.prediction)


@pytest.mark.parametrize("conditioning", CONDITIONING)
@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("N,D,T", [(4, 2, 4), (4, 1, 16), (4, 4, 1)])
def test_cache_equals_recompute(objective, conditioning, N, D, T):
    cfg, m = make(objective, conditioning, N, D, T)
    for sampler in samplers(cfg):
        a = wb.generate(m, cfg, num_images=2, steps=3, sampler=sampler, seed=3, use_cache=True)
        b = wb.generate(m, cfg, num_images=2, steps=3, sampler=sampler, seed=3, use_cache=False)
        assert a.abs().max() > 0.1
        assert (a - b).abs().max() <= 1e-4, sampler


@pytest.mark.parametrize(
    "variant",
    [
        {"towers": "shared"},
        {"num_classes": 10},
        {"clean_stream": False},
        {"use_z_cond": False},
        {"denoiser_attention": "token"},
    ],
)
def test_adaln_cache_equals_recompute_variants(variant):
    cfg, m = make("flow", "adaln", **variant)
    a = wb.generate(m, cfg, num_images=2, steps=3, seed=1, use_cache=True)
    b = wb.generate(m, cfg, num_images=2, steps=3, seed=1, use_cache=False)
    assert (a - b).abs().max() <= 1e-4


@pytest.mark.parametrize("towers", ["separate", "shared"])
@pytest.mark.parametrize("N,D,T", [(4, 2, 4), (3, 3, 4), (4, 1, 16)])
def test_adaln_causality(N, D, T, towers):
    cfg, m = make("eps", "adaln", N, D, T, towers=towers)
    g = torch.Generator().manual_seed(0)
    x0, xt = torch.randn(2, 1, 32, 32, generator=g), torch.randn(2, 1, 32, 32, generator=g)
    t = torch.randint(0, 1000, (2, T), generator=g)
    base = to_blocks(m(x0, xt, t)[0], cfg.model)
    for j in range(T):
        blocks = to_blocks(x0, cfg.model).clone()
        blocks[:, j] += 1.0
        out = to_blocks(m(from_blocks(blocks, cfg.model), xt, t)[0], cfg.model)
        assert torch.equal(out[:, : j + 1], base[:, : j + 1]), f"block <= {j} saw clean block {j}"
        if j < T - 1:
            assert not torch.allclose(out[:, j + 1], base[:, j + 1])
    # a block's timestep reaches only its own block (adaLN conditions per block, not per sequence)
    t2 = t.clone()
    t2[:, 0] = (t2[:, 0] + 500) % 1000
    out = to_blocks(m(x0, xt, t2)[0], cfg.model)
    assert torch.equal(out[:, 1:], base[:, 1:]) and not torch.allclose(out[:, 0], base[:, 0])


@torch.no_grad()
def test_adaln_carries_the_timestep_into_every_diffusion_layer():
    """With the embedder's and the head's timestep paths cut, t still changes the output through adaLN; the AR
    stage (z_cond, read by the hidden head) never depends on t."""
    cfg, m = make("eps", "adaln")
    for mod in (m.embed.time, m.head.time):
        for p in mod.parameters():
            p.zero_()
    x0, xt = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    t1, t2 = torch.full((2, 4), 100), torch.full((2, 4), 900)
    (p1, h1), (p2, h2) = m(x0, xt, t1), m(x0, xt, t2)
    assert not torch.allclose(p1, p2) and torch.equal(h1, h2)
    cfg_e, m_e = make("eps", "embed")
    for mod in (m_e.embed.time, m_e.head.time):
        for p in mod.parameters():
            p.zero_()
    assert torch.equal(m_e(x0, xt, t1)[0], m_e(x0, xt, t2)[0])  # the control: no other path for t


def test_adaln_starts_as_identity_layers():
    cfg = wb.preset("tiny", **{"model.timestep_conditioning": "adaln"})
    m = wb.build_model(cfg)
    x = torch.randn(2, 16, cfg.model.width)
    layer = m.layers[0]
    stream = wb.core.layers.Stream(x, 1, None, m._cond(torch.full((2, 1), 3.0)))
    assert torch.equal(layer([stream])[0].x, x)  # adaLN-Zero: every residual branch gated to zero at init


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_determinism_and_events(objective):
    cfg, m = make(objective, "adaln")
    for sampler in samplers(cfg):
        a = wb.generate(m, cfg, num_images=2, steps=3, sampler=sampler, seed=5)
        b = wb.generate(m, cfg, num_images=2, steps=3, sampler=sampler, seed=5)
        c = wb.generate(m, cfg, num_images=2, steps=3, sampler=sampler, seed=6)
        assert torch.equal(a, b) and not torch.allclose(a, c)
    events = list(wb.generate_events(m, cfg, wb.sample_request(cfg, num_images=2, steps=3)))
    assert [(e.kind, e.step) for e in events[:4]] == [("step", 1), ("step", 2), ("step", 3), ("block", 3)]
    assert events[-1].done and events[-1].cost.block_layer_evals == cached_cost(cfg.model, 3)
    assert torch.isfinite(events[1].x0).all()


def test_flow_noising_target_and_x0_are_consistent():
    cfg = wb.preset("tiny", **OBJECTIVES["flow"])
    obj = build_objective(cfg.diffusion, cfg.model)
    assert isinstance(obj, Flow)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 1, 32, 32, generator=g), torch.randn(3, 1, 32, 32, generator=g)
    t = obj.sample_t(3, "cpu", g)
    assert t.shape == (3, 4) and t.dtype == torch.float32 and (t > 0).all() and (t < 1000).all()
    xt = obj.add_noise(x0, eps, t)
    v = obj.target(x0, eps, t)
    for k in range(4):  # x0 = x_s - s v, block by block at the block's own s
        blocks_xt, blocks_v, blocks_x0 = (to_blocks(a, cfg.model)[:, k] for a in (xt, v, x0))
        for i in range(3):
            rec = obj.predicted_x0(blocks_v[i], blocks_xt[i], t[i, k])
            assert torch.allclose(rec, blocks_x0[i], atol=1e-5)
    # logit-normal: s concentrates around 1/2 (std 1 in logit space); uniform when logit_std = 0
    s = obj.sample_t(20_000, "cpu", g) / 1000
    assert abs(s.mean().item() - 0.5) < 0.01 and s.std().item() < 0.25
    uni = build_objective(cfg.override(**{"diffusion.logit_std": 0.0}).diffusion, cfg.model)
    assert abs(uni.sample_t(20_000, "cpu", g).div(1000).std().item() - math.sqrt(1 / 12)) < 0.01


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_min_snr_weights(prediction):
    cfg = wb.preset("tiny", **{"diffusion.prediction": prediction, "diffusion.loss_weighting": "min_snr"})
    obj = build_objective(cfg.diffusion, cfg.model)
    assert isinstance(obj, Diffusion)
    t = torch.tensor([[0, 100, 500, 999]])
    ab = obj.alphas_cumprod[t[0]]
    snr = ab / (1 - ab)
    expect = snr.clamp(max=5.0) / (snr if prediction == "epsilon" else snr + 1)
    assert torch.allclose(obj.weight(t)[0], expect)
    assert obj.weight(t)[0, 0] < 0.01 and obj.weight(t)[0, -1] == pytest.approx(
        1.0 if prediction == "epsilon" else float(snr[-1] / (snr[-1] + 1))
    )
    plain = build_objective(cfg.override(**{"diffusion.loss_weighting": "none"}).diffusion, cfg.model)
    assert plain.weight(t) is None
    # the weighted loss is the weighted mean of the squared errors (same draws: same generator seed)
    m = wb.build_model(cfg)
    randomize_head(m)
    x0 = torch.randn(2, 1, 32, 32)
    lw = obj.loss(m, x0, generator=torch.Generator().manual_seed(0)).diffusion
    lp = plain.loss(m, x0, generator=torch.Generator().manual_seed(0)).diffusion
    assert 0 < lw < lp


def test_flow_model_refuses_vp_samplers_naming_its_own():
    cfg = wb.preset("tiny", **OBJECTIVES["flow"])
    with pytest.raises(ValueError, match=r"sample.sampler: 'ddim' does not fit .*flow.*use one of euler, dpm\+\+2m"):
        cfg.override(**{"sample.sampler": "ddim"})
    m = wb.build_model(cfg)
    with pytest.raises(ValueError, match=r"use one of euler, dpm\+\+2m"):
        wb.generate(m, cfg, num_images=1, steps=2, sampler="ddpm")


@pytest.mark.parametrize(
    "over,field,fix",
    [
        ({"diffusion.prediction": "x0"}, "diffusion.prediction", "use 'epsilon'"),
        (
            {"diffusion.prediction": "flow", "diffusion.loss_weighting": "min_snr", "sample.sampler": "euler"},
            "diffusion.loss_weighting",
            "use loss_weighting='none' with prediction='flow'",
        ),
        ({"diffusion.loss_weighting": "p2"}, "diffusion.loss_weighting", "use 'none' or 'min_snr'"),
        ({"model.timestep_conditioning": "film"}, "model.timestep_conditioning", "use 'embed'"),
        ({"sample.x0_clip": "clip", "sample.sampler": "euler"}, "sample.x0_clip", "use x0_clip='none' or one of ddpm"),
        ({"sample.x0_clip": "tanh"}, "sample.x0_clip", "use 'none', 'clip' or 'dynamic'"),
    ],
)
def test_bad_objective_configs_name_the_field_and_fix(over, field, fix):
    with pytest.raises(ValueError) as e:
        wb.preset("tiny", **over)
    assert str(e.value).startswith(field) and fix in str(e.value)


@pytest.mark.parametrize("clip,sampler", [("clip", "ddim"), ("dynamic", "ddim"), ("dynamic", "dpm++2m")])
def test_x0_clipping_keeps_samples_in_range(clip, sampler):
    cfg, m = make("eps")
    with torch.no_grad():  # a head that predicts far out of range
        m.head.out.weight.mul_(200)
    raw = wb.generate(m, cfg, num_images=4, steps=8, sampler=sampler, seed=0)
    clipped = wb.generate(m, cfg.override(**{"sample.x0_clip": clip}), num_images=4, steps=8, sampler=sampler, seed=0)
    out_raw, out_clip = ((x.abs() > 1.05).float().mean().item() for x in (raw, clipped))
    assert out_raw > 0.2 and out_clip < out_raw / 4, (out_raw, out_clip)


def test_dynamic_thresholding_is_not_clipping():
    """Dynamic thresholding divides x0 by a per-image percentile s in [1, 1.5]; with the scheduler's default bound of
    1 it would equal clipping (which the first x0 measurement found: identical FIDs), so the two must differ."""
    cfg, m = make("eps")
    with torch.no_grad():
        m.head.out.weight.mul_(200)
    clip, dyn = (
        wb.generate(m, cfg.override(**{"sample.x0_clip": c}), num_images=4, steps=8, sampler="ddim", seed=0)
        for c in ("clip", "dynamic")
    )
    assert (clip - dyn).abs().max() > 0.05
