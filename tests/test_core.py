"""Core properties of the model, masks and sampler, parametrized over (N, D, T) and the ablation switches."""

import pytest
import torch
from conftest import randomize_head

import workbench as wb
from workbench.core.blocks import block_index_map, from_blocks, to_blocks, training_masks
from workbench.core.compute import cached_cost, paper_cost
from workbench.core.config import SampleConfig, replace
from workbench.core.diffusion import Diffusion
from workbench.core.layers import Rope2D, apply_rope

SHAPES = [(4, 2, 4), (4, 1, 16), (4, 4, 1), (3, 3, 4), (4, 3, 16)]  # (N, D, T)


def make(N=4, D=2, T=4, **model):
    over = {"model.depth": N, "model.diffusion_depth": D, "model.num_blocks": T}
    over.update({f"model.{k}": v for k, v in model.items()})
    cfg = wb.preset("tiny", **over)
    m = wb.build_model(cfg).eval()
    randomize_head(m)
    return cfg, m


def forward_blocks(m, x0, xt, t, labels=None):
    pred, hidden = m(x0, xt, t, labels)
    return to_blocks(pred, m.cfg), (to_blocks(hidden, m.cfg) if hidden is not None else None)


def inputs(cfg, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, c = cfg.model.latent_size, cfg.model.latent_channels
    x0 = torch.randn(B, c, s, s, generator=g)
    xt = torch.randn(B, c, s, s, generator=g)
    t = torch.randint(0, 1000, (B, cfg.model.num_blocks), generator=g)
    return x0, xt, t


@pytest.mark.parametrize("towers", ["separate", "shared"])
@pytest.mark.parametrize("N,D,T", SHAPES)
def test_causality_clean_blocks(N, D, T, towers):
    cfg, m = make(N, D, T, towers=towers)
    x0, xt, t = inputs(cfg)
    base, base_h = forward_blocks(m, x0, xt, t)
    for j in range(T):
        blocks = to_blocks(x0, cfg.model).clone()
        blocks[:, j] += torch.randn_like(blocks[:, j])
        out, out_h = forward_blocks(m, from_blocks(blocks, cfg.model), xt, t)
        assert torch.equal(out[:, : j + 1], base[:, : j + 1]), f"block <= {j} saw clean block {j}"
        if base_h is not None:
            assert torch.equal(out_h[:, : j + 1], base_h[:, : j + 1])
        if j < T - 1:  # and the next block does depend on it (the test is not vacuous)
            assert not torch.allclose(out[:, j + 1], base[:, j + 1])


@pytest.mark.parametrize("N,D,T", SHAPES)
def test_noisy_slots_are_isolated(N, D, T):
    cfg, m = make(N, D, T)
    x0, xt, t = inputs(cfg)
    base, _ = forward_blocks(m, x0, xt, t)
    j = T // 2
    blocks = to_blocks(xt, cfg.model).clone()
    blocks[:, j] += 1.0
    out, _ = forward_blocks(m, x0, from_blocks(blocks, cfg.model), t)
    others = [k for k in range(T) if k != j]
    assert torch.equal(out[:, others], base[:, others])
    assert not torch.allclose(out[:, j], base[:, j])


CACHE_CASES = [(4, D, T) for T in (1, 4, 16) for D in (1, 2, 4)]


@pytest.mark.parametrize("N,D,T", CACHE_CASES)
def test_cache_equals_recompute(N, D, T):
    cfg, m = make(N, D, T)
    a = wb.generate(m, cfg, num_images=2, steps=4, sampler="ddim", seed=3, use_cache=True)
    b = wb.generate(m, cfg, num_images=2, steps=4, sampler="ddim", seed=3, use_cache=False)
    assert a.abs().max() > 0.1
    assert (a - b).abs().max() <= 1e-4


@pytest.mark.parametrize(
    "variant",
    [
        {"towers": "shared"},
        {"use_z_cond": False},
        {"clean_stream": False},
        {"denoiser_attention": "block"},
        {"denoiser_attention": "token"},
        {"num_classes": 10},
    ],
)
@pytest.mark.parametrize("sampler", ["dpm++2m", "ddpm"])
def test_cache_equals_recompute_variants(variant, sampler):
    cfg, m = make(4, 2, 4, **variant)
    a = wb.generate(m, cfg, num_images=2, steps=3, sampler=sampler, seed=1, use_cache=True)
    b = wb.generate(m, cfg, num_images=2, steps=3, sampler=sampler, seed=1, use_cache=False)
    assert (a - b).abs().max() <= 1e-4


def test_cache_equals_recompute_with_guidance():
    cfg, m = make(4, 2, 4, num_classes=10)
    labels = torch.tensor([3, 7])
    a = wb.generate(m, cfg, num_images=2, steps=3, seed=1, labels=labels, cfg_scale=3.0, use_cache=True)
    b = wb.generate(m, cfg, num_images=2, steps=3, seed=1, labels=labels, cfg_scale=3.0, use_cache=False)
    c = wb.generate(m, cfg, num_images=2, steps=3, seed=1, labels=labels, cfg_scale=1.0)
    assert (a - b).abs().max() <= 1e-4
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("N,D,T", [(4, 2, 4), (4, 1, 16)])
def test_sampling_context_noise_reads_noised_blocks_and_keeps_the_cache_exact(N, D, T):
    """sample.context_noise: block 0 is the clean sampler's (same initial noise, no context), later blocks change,
    the images are deterministic, and the cache still equals the recompute (both read the same noised copies)."""
    cfg, m = make(N, D, T)
    kw = dict(num_images=2, steps=3, sampler="ddim", seed=3)
    clean = wb.generate(m, cfg, **kw)
    noised_cfg = cfg.override(**{"sample.context_noise": 0.3})
    a = wb.generate(m, noised_cfg, **kw, use_cache=True)
    b = wb.generate(m, noised_cfg, **kw, use_cache=False)
    assert (a - b).abs().max() <= 1e-4 and torch.equal(a, wb.generate(m, noised_cfg, **kw, use_cache=True))
    ca, cn = to_blocks(clean, cfg.model), to_blocks(a, cfg.model)
    assert torch.equal(ca[:, 0], cn[:, 0]) and not torch.allclose(ca[:, 1:], cn[:, 1:], atol=1e-3)
    assert torch.equal(clean, wb.generate(m, cfg.override(**{"sample.context_noise": 0.0}), **kw))
    with pytest.raises(ValueError, match="sample.context_noise: got 1.0. Fix"):
        cfg.override(**{"sample.context_noise": 1.0})


def test_sample_labels_follow_the_class_counts_and_the_seed():
    """Labels not given are drawn in sample.class_counts' proportions (a class without images never), from the
    sample seed; without counts they cycle through the classes. A guided sample with the drawn labels is the sample
    with those labels passed explicitly."""
    from workbench.sampling.noise import default_labels

    cfg, m = make(4, 2, 4, num_classes=4)
    counts = (0, 3, 1, 0)
    for layout in ("per-image", "batch"):
        request = SampleConfig(num_images=4000, class_counts=counts, noise_layout=layout)
        drawn = default_labels(4, request)
        share = torch.bincount(drawn, minlength=4).double() / 4000
        assert share[0] == share[3] == 0 and abs(float(share[1]) - 0.75) < 0.03
        assert torch.equal(drawn, default_labels(4, request))
        assert not torch.equal(drawn, default_labels(4, replace(request, seed=1)))
    assert default_labels(4, SampleConfig(num_images=6)).tolist() == [0, 1, 2, 3, 0, 1]
    assert default_labels(4, SampleConfig(num_images=3, first_image=2)).tolist() == [2, 3, 0]  # image i: class i % n
    cfg = cfg.override(**{"sample.class_counts": counts, "sample.cfg_scale": 2.0})
    labels = default_labels(4, replace(cfg.sample, num_images=3, seed=5))
    a = wb.generate(m, cfg, num_images=3, steps=2, seed=5)
    b = wb.generate(m, cfg, num_images=3, steps=2, seed=5, labels=labels)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="sample.class_counts.*3 counts.*num_classes=4.*Fix"):
        cfg.override(**{"sample.class_counts": (1, 2, 3)})
    with pytest.raises(ValueError, match="sample.class_counts.*Fix"):
        cfg.override(**{"sample.class_counts": (0, 0, 0, 0)})


def _denoise_with_context(m, context_blocks, k, z_cond=None):
    """Cache the given finished blocks, then run one denoising step of block k (optionally forcing z_cond)."""
    cache = m.new_cache(1)
    m.prefill(cache, None)
    z = None
    for j in range(k + 1):
        z = m.ar_step(cache, j, context_blocks[:, j - 1] if j > 0 else None)
    g = torch.Generator().manual_seed(0)
    xt = torch.randn(1, m.cfg.block_tokens, m.cfg.token_dim, generator=g)
    return m.denoise_step(cache, k, z if z_cond is None else z_cond, xt, torch.tensor([500.0])), z


@pytest.mark.parametrize("attention,reaches", [("context", True), ("block", False), ("token", False)])
@torch.no_grad()
def test_mlp_denoising_cuts_context_from_diffusion_layers(attention, reaches):
    cfg, m = make(4, 2, 4, denoiser_attention=attention)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 4, cfg.model.block_tokens, cfg.model.token_dim, generator=g)
    b = a.clone()
    b[:, 0] += 1.0  # an earlier clean block differs
    out_a, z = _denoise_with_context(m, a, 2)
    out_b, _ = _denoise_with_context(m, b, 2, z_cond=z)  # same z_cond: only the diffusion layers could differ
    assert (not torch.allclose(out_a, out_b)) == reaches


@torch.no_grad()
def test_token_denoising_keeps_tokens_apart():
    cfg, m = make(4, 2, 4, denoiser_attention="token")
    x0, xt, t = inputs(cfg)
    base, _ = forward_blocks(m, x0, xt, t)
    blocks = to_blocks(xt, cfg.model).clone()
    blocks[:, 1, 0] += 1.0  # one token of block 1
    out, _ = forward_blocks(m, x0, from_blocks(blocks, cfg.model), t)
    assert torch.equal(out[:, 1, 1:], base[:, 1, 1:])
    assert not torch.allclose(out[:, 1, 0], base[:, 1, 0])


@torch.no_grad()
def test_without_z_cond_the_ar_slot_is_unused():
    cfg, m = make(4, 2, 4, use_z_cond=False)
    x0, xt, t = inputs(cfg)
    base, hidden = forward_blocks(m, x0, xt, t)
    m.boi.add_(1.0)
    for p in m.layers[0].towers[1].parameters():
        p.add_(0.5)
    out, _ = forward_blocks(m, x0, xt, t)
    assert hidden is None and torch.equal(out, base)


@torch.no_grad()
def test_without_clean_stream_context_flows_only_through_z_cond():
    cfg, m = make(4, 2, 4, clean_stream=False)
    ar, diff = training_masks(cfg.model)
    assert ar.shape[0] == cfg.model.num_blocks * cfg.model.block_tokens  # no clean copy in the sequence
    Lb = cfg.model.block_tokens
    assert not diff[Lb : 2 * Lb, :Lb].any()  # diffusion layers: slot 1 does not read slot 0
    assert ar[Lb : 2 * Lb, :Lb].all()  # AR layers: slot 1 reads slot 0 (which holds clean data there)
    x0, xt, t = inputs(cfg)
    base, _ = forward_blocks(m, x0, xt, t)
    blocks = to_blocks(x0, cfg.model).clone()
    blocks[:, 0] += 1.0
    out, _ = forward_blocks(m, from_blocks(blocks, cfg.model), xt, t)
    assert torch.equal(out[:, 0], base[:, 0]) and not torch.allclose(out[:, 2], base[:, 2])


def test_hidden_loss_weight_and_no_leak():
    cfg, m = make(4, 2, 4)
    m.train()
    x0, _, _ = inputs(cfg)
    losses = Diffusion(cfg.diffusion, cfg.model).loss(m, x0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(losses.total, losses.diffusion + 0.1 * losses.hidden)
    # the hidden head reads z_cond only: the noisy input of a block cannot reach its hidden prediction
    _, xt, t = inputs(cfg)
    _, h1 = forward_blocks(m.eval(), x0, xt, t)
    _, h2 = forward_blocks(m, x0, xt + 1.0, t)
    assert torch.equal(h1, h2)
    cfg0 = cfg.override(**{"diffusion.hidden_loss_weight": 0.0})
    l0 = Diffusion(cfg0.diffusion, cfg0.model).loss(m.train(), x0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(l0.total, l0.diffusion)


@pytest.mark.parametrize("N,D,T", [(4, 2, 4), (4, 1, 16), (4, 4, 1)])
def test_context_noise_reaches_only_the_context(N, D, T):
    """diffusion.train_context_noise noises what the teacher-forced pass reads of earlier blocks and nothing else: at
    0 the loss is bit-identical to the clean pass and draws nothing extra; above 0 block 0 (no context) keeps its
    prediction while later blocks change; a one-block model is untouched."""
    cfg, m = make(N, D, T)
    x0, _, _ = inputs(cfg)
    plain = Diffusion(cfg.diffusion, cfg.model)
    g = torch.Generator().manual_seed(3)
    assert plain.noisy_context(x0, g) is x0 and torch.equal(g.get_state(), torch.Generator().manual_seed(3).get_state())
    noised_cfg = cfg.override(**{"diffusion.train_context_noise": 0.5})
    noised = Diffusion(noised_cfg.diffusion, noised_cfg.model)
    ctx = noised.noisy_context(x0, torch.Generator().manual_seed(3))
    if T == 1:
        assert ctx is x0
        return
    mix = (ctx - x0).flatten(1).norm(dim=1) / x0.flatten(1).norm(dim=1)
    assert (mix > 0).all() and (mix < 1.5).all()  # c <= 0.5: each image moved, none replaced by noise
    _, xt, t = inputs(cfg, seed=1)
    clean_pred, _ = forward_blocks(m, x0, xt, t)
    noisy_pred, _ = forward_blocks(m, ctx, xt, t)
    assert torch.allclose(clean_pred[:, 0], noisy_pred[:, 0], atol=1e-6)  # block 0 reads no context
    assert not torch.allclose(clean_pred[:, 1:], noisy_pred[:, 1:], atol=1e-4)
    same = [
        Diffusion(c.diffusion, c.model).loss(m, x0, generator=torch.Generator().manual_seed(0)).total
        for c in (cfg, cfg.override(**{"diffusion.train_context_noise": 0.0}))
    ]
    assert torch.equal(*same)
    assert not torch.equal(same[0], noised.loss(m, x0, generator=torch.Generator().manual_seed(0)).total)


def test_plain_dit_special_case():
    cfg, m = make(4, 4, 1)
    ar, diff = training_masks(cfg.model)
    assert diff.all() and diff.shape == (cfg.model.block_tokens,) * 2  # one block, full bidirectional attention
    assert cached_cost(cfg.model, 10) == paper_cost(cfg.model, 10) == 4 * 10


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++2m", "euler"])
def test_determinism(sampler):
    cfg, m = make(4, 2, 4)
    a = wb.generate(m, cfg, num_images=2, steps=3, sampler=sampler, seed=5)
    b = wb.generate(m, cfg, num_images=2, steps=3, sampler=sampler, seed=5)
    c = wb.generate(m, cfg, num_images=2, steps=3, sampler=sampler, seed=6)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_event_stream():
    cfg, m = make(4, 2, 4)
    events = list(wb.generate_events(m, cfg, wb.sample_request(cfg, num_images=2, steps=3)))
    kinds = [(e.kind, e.block, e.step) for e in events]
    expect = [(kind, k, s) for k in range(4) for kind, s in [("step", 1), ("step", 2), ("step", 3), ("block", 3)]]
    assert kinds == expect
    assert events[-1].done and events[-1].x0.shape == (2, 1, 32, 32)
    blocks = to_blocks(events[3].x_t, cfg.model)  # after block 0: later blocks still empty
    assert blocks[:, 1:].abs().sum() == 0 and blocks[:, 0].abs().sum() > 0
    costs = [e.cost.block_layer_evals for e in events]
    assert costs == sorted(costs) and events[-1].cost.paper_block_layer_evals == paper_cost(cfg.model, 3)
    assert events[-1].cost.block_layer_evals == cached_cost(cfg.model, 3)


def test_blocks_round_trip_and_maps():
    cfg = wb.preset("tiny", **{"model.num_blocks": 16}).model
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(from_blocks(to_blocks(x, cfg), cfg), x)
    ids = to_blocks(block_index_map(cfg).float().view(1, 1, 32, 32), cfg)  # (1, T, Lb, Cpp)
    assert torch.equal(ids[0, :, :, 0], torch.arange(16).float().view(16, 1).expand(16, cfg.block_tokens))


def test_rope_is_relative():
    rope = Rope2D(16, 100.0)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)

    def dot(pq, pk):
        cq, sq = rope.angles(torch.tensor([pq]))
        ck, sk = rope.angles(torch.tensor([pk]))
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum()

    assert torch.allclose(dot((1, 2), (3, 5)), dot((4, 7), (6, 10)), atol=1e-5)
    assert not torch.allclose(dot((1, 2), (3, 5)), dot((1, 2), (5, 3)), atol=1e-3)
    cq, sq = rope.angles(torch.tensor([(3, 4)]))
    assert torch.allclose(apply_rope(q, cq, sq).norm(), q.norm())  # a rotation keeps the norm
