"""FlexAttention (model.attention=flex) against SDPA with dense masks, the reference: the same numbers from the
training forward and from cached and uncached sampling, over (N, D, T), every ablation switch, elastic depths and
class labels; the block masks skip exactly the tiles nobody may attend to and are built once per shape."""

from pathlib import Path

import pytest
import torch
from conftest import randomize_head
from single_thread import one_thread  # noqa: F401
from torch.nn.attention import flex_attention as flex_module

import workbench as wb
from workbench.core.attention import Masks, block_mask_bytes
from workbench.core.blocks import training_masks
from workbench.core.config import Config
from workbench.core.model import use_attention
from workbench.training.checkpoint import CheckpointError, check_architecture, load_checkpoint, load_for_inference

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
TOL = 1e-5  # fp32
SHAPES = [(4, 2, 4), (3, 1, 16), (2, 2, 1)]  # (N, D, T)
VARIANTS = {
    "default": {},
    "no-zcond": {"use_z_cond": False},
    "no-clean": {"clean_stream": False},
    "shared": {"towers": "shared"},
    "block": {"denoiser_attention": "block"},
    "token": {"denoiser_attention": "token"},
    "token-no-clean": {"denoiser_attention": "token", "clean_stream": False},
    "adaln": {"timestep_conditioning": "adaln"},
    "classes": {"num_classes": 3},
}
# sampling compares final latents: rectified flow with Euler steps adds the model's outputs up, where an
# epsilon model's DDIM step divides by sqrt(alpha_bar) and magnifies any difference up to ~100x at t ~ T
FLOW = {"diffusion.prediction": "flow", "sample.sampler": "euler"}


def pair(N=4, D=2, T=4, sample=None, **model):
    """The same weights under both backends: (sdpa model, its config, flex model, its config)."""
    over = {"model.depth": N, "model.diffusion_depth": D, "model.num_blocks": T, "model.width": 32, **(sample or {})}
    cfg = wb.preset("tiny", **over, **{f"model.{k}": v for k, v in model.items()})
    torch.manual_seed(0)
    ref = wb.build_model(cfg).eval()
    randomize_head(ref)
    flex_cfg = cfg.override(**{"model.attention": "flex"})
    flex = wb.build_model(flex_cfg).eval()
    flex.load_state_dict(ref.state_dict())
    return ref, cfg, flex, flex_cfg


def inputs(cfg, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, c = cfg.model.latent_size, cfg.model.latent_channels
    x0, xt = torch.randn(2, B, c, s, s, generator=g)
    labels = torch.randint(0, cfg.model.num_classes, (B,), generator=g) if cfg.model.num_classes else None
    return x0, xt, torch.randint(0, 1000, (B, cfg.model.num_blocks), generator=g), labels


def assert_close(a, b, scale=1.0):
    assert a.shape == b.shape and float((a - b).abs().max()) <= TOL * scale, float((a - b).abs().max())


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("N,D,T", SHAPES)
@torch.no_grad()
def test_training_forward_matches_sdpa(N, D, T, variant):
    ref, cfg, flex, _ = pair(N, D, T, **VARIANTS[variant])
    x0, xt, t, labels = inputs(cfg)
    (p1, h1), (p2, h2) = ref(x0, xt, t, labels), flex(x0, xt, t, labels)
    assert p1.abs().max() > 1e-3  # the comparison is not between zeros
    assert_close(p1, p2)
    assert (h1 is None) == (h2 is None)
    if h1 is not None:
        assert_close(h1, h2)


@pytest.mark.parametrize("use_cache", [True, False], ids=["cached", "uncached"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sampling_matches_sdpa(variant, use_cache):
    ref, cfg, flex, flex_cfg = pair(sample=FLOW, **VARIANTS[variant])
    kw = dict(num_images=2, steps=2 if use_cache else 1, seed=1, use_cache=use_cache)  # the cache lives across steps
    if cfg.model.num_classes:
        kw.update(labels=torch.tensor([0, 2]), cfg_scale=2.0)  # guidance: the null class in the same batch
    a, b = wb.generate(ref, cfg, **kw), wb.generate(flex, flex_cfg, **kw)
    assert a.abs().max() > 0.1
    assert_close(a, b)


@pytest.mark.parametrize("N,D,T", SHAPES)
@pytest.mark.parametrize("use_cache", [True, False], ids=["cached", "uncached"])
def test_sampling_matches_sdpa_over_shapes_with_ddim(N, D, T, use_cache):
    """DDIM on an epsilon model: the latents reach hundreds, so the bound is relative to their size."""
    ref, cfg, flex, flex_cfg = pair(N, D, T)
    kw = dict(num_images=2, steps=2, sampler="ddim", seed=2, use_cache=use_cache)
    a, b = wb.generate(ref, cfg, **kw), wb.generate(flex, flex_cfg, **kw)
    assert_close(a, b, scale=max(1.0, float(a.abs().max())))


@torch.no_grad()
def test_elastic_per_sample_boundaries_match_sdpa():
    ref, cfg, flex, flex_cfg = pair(4, 2, 4, sample=FLOW, elastic_depths=(1, 2, 3))
    x0, xt, t, _ = inputs(cfg, B=3)
    depth = torch.tensor([1, 3, 2])  # every sample enters the diffusion stage at its own layer
    (p1, h1), (p2, h2) = ref(x0, xt, t, depth=depth), flex(x0, xt, t, depth=depth)
    assert_close(p1, p2), assert_close(h1, h2)
    for kw in ({"diffusion_depth": 3}, {"depth_per_step": (3, 1)}):
        for use_cache in (True, False):
            a = wb.generate(ref, cfg, num_images=2, steps=2, seed=0, use_cache=use_cache, **kw)
            b = wb.generate(flex, flex_cfg, num_images=2, steps=2, seed=0, use_cache=use_cache, **kw)
            assert_close(a, b)


@pytest.mark.parametrize("variant", ["default", "no-clean", "block", "token", "classes"])
def test_block_mask_keeps_exactly_the_tiles_the_dense_mask_uses(variant):
    """Each 128 x 128 tile is computed iff some query in it may see some key in it, for both training rules and
    the last layer's query rows; the measured BlockMask is far smaller than the dense mask."""
    _, cfg, _, flex_cfg = pair(4, 2, 16, **VARIANTS[variant], **{"patch_size": 1})  # 1,024 noisy tokens
    dense = dict(zip(("ar", "diffusion"), training_masks(cfg.model)))
    masks = Masks(flex_cfg.model)
    L = dense["ar"].shape[0]
    slots = cfg.model.num_blocks * cfg.model.block_tokens
    for rule, q_len in (("ar", L), ("diffusion", L), ("diffusion", slots)):
        want = dense[rule][L - q_len :]
        block = masks.get(rule, q_len, L, "cpu").block
        n = block.BLOCK_SIZE[0]
        pad = torch.zeros(-(-q_len // n) * n, -(-L // n) * n, dtype=torch.bool)
        pad[:q_len, :L] = want
        tiles = pad.unflatten(0, (-1, n)).unflatten(2, (-1, n)).any(3).any(1)  # (Lq/128, L/128)
        assert torch.equal(block.to_dense()[0, 0].bool(), tiles), rule
        assert block_mask_bytes(block) * 20 < want.numel()


def test_masks_are_built_once_per_shape_and_reused(monkeypatch):
    _, cfg, flex, flex_cfg = pair(4, 2, 4, sample=FLOW)
    calls = []
    real = flex_module.create_block_mask
    monkeypatch.setattr("workbench.core.attention.create_block_mask", lambda *a, **k: calls.append(a) or real(*a, **k))
    x0, xt, t, _ = inputs(cfg)
    with torch.no_grad():
        flex(x0, xt, t)
        assert len(calls) == 3  # the AR rule, the diffusion rule, and the diffusion rule's last-layer rows
        flex(x0, xt, t)
        wb.generate(flex, flex_cfg, num_images=2, steps=2, use_cache=False)
    assert len(calls) == 3
    token = pair(4, 2, 4, denoiser_attention="token", sample=FLOW)
    wb.generate(token[2], token[3], num_images=2, steps=3)
    assert len(calls) == 4  # cached sampling of the token denoiser: one (Lb, Lb) diagonal, reused by every step
    m = Masks(flex_cfg.model)
    assert m.get("ar", 112, 112, "cpu") is m.get("ar", 112, 112, torch.device("cpu"))
    assert m.get("diffusion", 64, 112, "cpu") is not m.get("diffusion", 112, 112, "cpu")


def test_old_headers_mean_sdpa_and_bad_values_are_refused():
    d = wb.preset("tiny").to_dict()
    del d["model"]["attention"]  # a checkpoint header written before the field existed
    assert Config.from_dict(d).model.attention == "sdpa"
    with pytest.raises(ValueError, match=r"model.attention: unknown backend 'flash'.*Fix: use 'sdpa'"):
        wb.preset("tiny", **{"model.attention": "flash"})


def test_flex_training_on_cpu_is_refused_with_the_fix():
    _, cfg, flex, _ = pair()
    x0, xt, t, _ = inputs(cfg)
    with pytest.raises(
        ValueError, match="no backward pass on the CPU. Fix: train on the CPU with model.attention=sdpa"
    ):
        flex.train()(x0, xt, t)


SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "checkpoints"


@pytest.mark.parametrize("path", sorted(SHIPPED_DIR.rglob("*.safetensors")), ids=lambda p: p.stem)
def test_shipped_checkpoints_sample_alike_under_both_backends(path):
    model, cfg = load_for_inference(path)
    assert cfg.model.attention == "sdpa"  # their headers predate the field
    labels = torch.tensor([0]) if cfg.model.num_classes else None
    kw = dict(num_images=1, steps=1, seed=0, labels=labels)
    a = wb.generate(model, cfg, **kw)
    flex_cfg = use_attention(model, cfg, "flex")
    b = wb.generate(model, flex_cfg, **kw)
    assert model.masks.backend == "flex" and {key[0] for key in model.masks.built} <= {"token"}  # cached: no mask
    assert_close(a, b, scale=max(1.0, float(a.abs().max())))
    x0, xt, t, labels = inputs(cfg, B=1)  # the training forward: every rule of the training masks
    with torch.no_grad():
        p2, _ = model(x0, xt, t, labels)
        use_attention(model, cfg, "sdpa")
        p1, _ = model(x0, xt, t, labels)
    assert_close(p1, p2)


def test_a_run_resumes_under_the_other_backend_but_not_another_architecture():
    ckpt = load_checkpoint(SHIPPED_DIR / "blocks-fmnist" / "T16.safetensors")
    check_architecture(ckpt, ckpt.config.override(**{"model.attention": "flex"}))  # no weights differ
    with pytest.raises(CheckpointError, match="another architecture"):
        check_architecture(ckpt, ckpt.config.override(**{"model.attention": "flex", "model.width": 64}))


def test_bf16_cached_sampling_under_flex_tracks_sdpa():
    """Under autocast the queries are bf16 while the KV cache keeps the weights' dtype: flex casts like SDPA does."""
    ref, cfg, flex, flex_cfg = pair(sample=FLOW)
    kw = dict(num_images=2, steps=2, seed=0, precision="bf16")
    a, b = wb.generate(ref, cfg, **kw), wb.generate(flex, flex_cfg, **kw)
    assert float((a - b).abs().max()) <= 0.02 * float(a.abs().max())
