"""Analytic cost accounting against what a real run executes (FLOPs counted by FlopCounterMode)."""

import pytest
import torch
from single_thread import one_thread  # noqa: F401  (FLOP counts do not depend on threads)

import workbench as wb
from workbench.core.compute import (
    attention_cost,
    block_cost,
    cached_cost,
    count_flops,
    naive_cost,
    paper_cost,
    sample_flops,
    train_flops,
)
from workbench.core.diffusion import Diffusion
from workbench.sampling.sampler import measure_sample_flops

CASES = [
    (4, 2, 4, 3, {}),
    (4, 1, 16, 1, {}),
    (4, 4, 1, 3, {}),
    (3, 3, 4, 2, {}),
    (6, 2, 4, 1, {}),
    (4, 2, 4, 2, {"num_classes": 10}),
    (4, 2, 4, 2, {"clean_stream": False}),
    (4, 2, 4, 2, {"use_z_cond": False}),
    (4, 2, 4, 2, {"denoiser_attention": "block"}),
    (4, 2, 4, 2, {"towers": "shared"}),
]  # (N, D, T, S, model overrides)
NAIVE = [CASES[i] for i in (0, 2, 5, 6)]


def make(N, D, T, **model):
    over = {"model.depth": N, "model.diffusion_depth": D, "model.num_blocks": T}
    over.update({f"model.{k}": v for k, v in model.items()})
    cfg = wb.preset("tiny", **over)
    return cfg, wb.build_model(cfg)


def total(flops: dict) -> float:
    return flops["linear"] + flops["attention"]


@pytest.mark.parametrize("N,D,T,S,model,use_cache", [c + (True,) for c in CASES] + [c + (False,) for c in NAIVE])
def test_sample_flops_match_a_real_run(N, D, T, S, model, use_cache):
    cfg, m = make(N, D, T, **model)
    measured = measure_sample_flops(m, cfg, wb.sample_request(cfg, steps=S, num_images=1, use_cache=use_cache))
    assert measured == pytest.approx(total(sample_flops(cfg.model, S, use_cache)), rel=0.10)


@pytest.mark.parametrize("N,D,T,S,model", CASES)
def test_train_flops_match_a_real_step(N, D, T, S, model):
    cfg, m = make(N, D, T, **model)
    diffusion = Diffusion(cfg.diffusion, cfg.model)
    x0 = torch.randn(2, 1, 32, 32)
    labels = torch.tensor([1, 2]) if cfg.model.num_classes else None
    measured = count_flops(lambda: diffusion.loss(m, x0, labels).total.backward())
    assert measured == pytest.approx(train_flops(cfg.model, 2), rel=0.10)


@pytest.mark.parametrize("N,D,T,S,model", CASES)
def test_block_layer_counts(N, D, T, S, model):
    cfg = make(N, D, T, **model)[0].model
    assert cached_cost(cfg, S) == sum(sum(block_cost(cfg, k, S).values()) for k in range(T))
    if cfg.use_z_cond and not cfg.num_classes:  # the paper's count plus one clean pass per finished block
        extra = (T - 1) * block_cost(cfg, 1, S)["clean"]
        assert cached_cost(cfg, S) == paper_cost(cfg, S) + extra
    assert naive_cost(cfg, S) >= cached_cost(cfg, S)  # equal only for T=1, D=N
    assert attention_cost(cfg, S) >= cached_cost(cfg, S)  # every query sees at least its own block
