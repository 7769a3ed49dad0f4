"""Cost accounting: block-layer evaluations, analytic FLOPs, and FLOPs measured on a real run.

Block-layer evaluations (one decoder layer applied to one block's tokens):

paper_cost:  T * [(N - D) + D * S]            the paper's count (noisy slot only); under schedules
             sum_k [(N - min_i D_ki) + sum_i D_ki]  (block k's AR stage runs once, to its smallest boundary)
cached_cost: what the KV-cached sampler runs: per block the clean copy of block k-1 once through the layers
             the diffusion stage reads (N, or N-D when it reads no context), the noisy slot once through the
             N-D AR layers, and the noisy block through the D diffusion layers at each of the S steps.
naive_cost:  recomputing the whole training sequence through all N layers at every step (the no-cache
             reference): T * S * N * (2T - 1 + P/Lb).

FLOPs count matrix multiplies only (2 per multiply-add), as torch.utils.flop_counter does: the projections and
MLP of every token, plus attention as the dense kernel computes it (4 * queries * keys * W per layer, masked
entries included). Tokens whose last-layer output is never read (the context stream in the last layer, the last
layer of a clean pass) only get their keys and values projected there; block-layer evaluations still count such
a layer as a whole. Backward costs 2x the forward matmuls and 2.5x the forward attention (scores recomputed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from .config import ModelConfig
from .layers import swiglu_hidden
from .model import TIME_FEATURES, clean_pass_depth

STAGES = ("prefix", "clean", "ar", "diffusion")
# the denoising steps of one block: S (every step at the config's D), or the D of each of its steps
Steps = int | Sequence[int]
# what a sampling run does: S per block at the config's D, or per block the D of each step (sampling.block_plan)
Plan = int | Sequence[Sequence[int]]


@dataclass(frozen=True)
class Pass:
    """Decoder layers run on a group of tokens during cached sampling."""

    stage: str  # one of STAGES
    layers: int  # consecutive decoder layers the tokens go through
    queries: int  # tokens pushed through them
    keys: int  # tokens each query attends over in every one of those layers
    repeats: int  # times the pass runs (diffusion stage: the steps at its D; else 1)
    kv_last: bool  # the last of these layers only projects keys/values (its output is never read)


def at_depth(cfg: ModelConfig, depth: int) -> ModelConfig:
    """The model config as a dedicated model of diffusion depth `depth` (for counting what a D-sampling runs)."""
    return replace(cfg, diffusion_depth=depth, elastic_depths=())


def step_depths(cfg: ModelConfig, steps: Steps) -> tuple[int, ...]:
    """The D of each denoising step of a block: S steps at cfg's D, or the given per-step depths."""
    return (cfg.diffusion_depth,) * steps if isinstance(steps, int) else tuple(steps)


def block_passes(cfg: ModelConfig, block: int, steps: Steps) -> list[Pass]:
    """The layer passes of the cached sampler for block k (mirrors MADFormer.prefill/ar_states/denoise_step):
    the clean copy of block k-1 and the AR stage once, the AR stage to the smallest boundary N - min D_i of the
    block's steps, then each step through its own D_i diffusion layers."""
    depths = step_depths(cfg, steps)
    first = at_depth(cfg, min(depths, default=cfg.diffusion_depth))  # the deepest AR stage the block needs
    P, Lb, N = cfg.prefix_tokens, cfg.block_tokens, cfg.depth
    context = P + block * Lb  # prefix and the finished blocks 0..k-1, once block k-1 is committed
    passes = []
    if block == 0 and P:
        passes.append(Pass("prefix", N, P, P, 1, True))
    if block > 0 and cfg.clean_stream:
        passes.append(Pass("clean", clean_pass_depth(first), Lb, context, 1, True))
    if cfg.use_z_cond:
        passes.append(Pass("ar", first.ar_depth, Lb, context + Lb, 1, False))
    if cfg.denoiser_attention != "context":
        keys = Lb
    else:
        keys = (context if cfg.clean_stream else P) + Lb
    passes += [Pass("diffusion", D, Lb, keys, depths.count(D), False) for D in sorted(set(depths))]
    return [p for p in passes if p.layers > 0]


def as_plan(cfg: ModelConfig, plan: Plan) -> tuple[tuple[int, ...], ...]:
    """Per block the D of each step: S steps at cfg's D in every block, or the given plan."""
    return (
        tuple(step_depths(cfg, plan) for _ in range(cfg.num_blocks))
        if isinstance(plan, int)
        else tuple(tuple(p) for p in plan)
    )


def schedule_costs(cfg: ModelConfig, plan: Plan) -> tuple[float, float]:
    """(paper count, cached count) of a sampling run: block k's steps at depths plan[k] (sampling.block_plan)."""
    plan = as_plan(cfg, plan)
    paper = sum((cfg.depth - min(ds)) + sum(ds) for ds in plan)
    cached = sum(sum(block_cost(cfg, k, ds).values()) for k, ds in enumerate(plan))
    return float(paper), float(cached)


def paper_cost(cfg: ModelConfig, steps: int) -> float:
    N, D, T = cfg.depth, cfg.diffusion_depth, cfg.num_blocks
    return float(T * ((N - D) + D * steps))


def iso_cost(N: int, reference: int, steps: int) -> int:
    """Iso-compute's budget: the block-layer evaluations C = (N - D_ref) + D_ref * S of one block sampled at the
    reference depth D_ref with S steps (the AR stage once, the diffusion stage S times)."""
    return (N - reference) + reference * steps


def iso_table(N: int, reference: int, steps: int) -> list[tuple[int, int]]:
    """(D, S(D)) for every D in 1..N at the cost of the reference (D_ref, S): see iso_steps."""
    cost = iso_cost(N, reference, steps)
    return [(D, iso_steps(N, D, cost)) for D in range(1, N + 1)]


def iso_steps(N: int, depth: int, cost: float) -> int:
    """Iso-compute: the S at which a block sampled with diffusion depth D costs `cost` block-layer evaluations,
    S(D) = (C - (N - D)) / D, rounded half up, at least 1 (C = (N - D_ref) + D_ref * S_ref keeps the cost of a
    reference (D_ref, S_ref))."""
    return max(1, math.floor((cost - (N - depth)) / depth + 0.5))


def block_cost(cfg: ModelConfig, block: int, steps: Steps) -> dict[str, float]:
    """Block-layer evaluations of the cached sampler for one block, split by stage."""
    cost = dict.fromkeys(STAGES, 0.0)
    for p in block_passes(cfg, block, steps):
        cost[p.stage] += p.layers * p.queries * p.repeats / cfg.block_tokens
    return cost


def cached_cost(cfg: ModelConfig, steps: int) -> float:
    return float(sum(sum(block_cost(cfg, k, steps).values()) for k in range(cfg.num_blocks)))


def attention_cost(cfg: ModelConfig, steps: int) -> float:
    """Attention of the cached sampler in block-pair units: sum over layer evaluations of queries*keys / Lb^2."""
    Lb = cfg.block_tokens
    return float(
        sum(
            p.layers * p.queries * p.keys * p.repeats / Lb**2
            for k in range(cfg.num_blocks)
            for p in block_passes(cfg, k, steps)
        )
    )


def sequence_blocks(cfg: ModelConfig) -> float:
    """Length of the training sequence in blocks: prefix + T-1 clean blocks + T noisy slots."""
    clean = cfg.num_blocks - 1 if cfg.clean_stream else 0
    return cfg.prefix_tokens / cfg.block_tokens + clean + cfg.num_blocks


def naive_cost(cfg: ModelConfig, steps: int) -> float:
    return float(cfg.num_blocks * steps * cfg.depth * sequence_blocks(cfg))


# ---- the meter of a sampling run -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cost:
    """What a sampling run has spent so far, per image. Under classifier-free guidance every evaluation runs on
    the image and on its unconditional twin, so both counts are doubled (`guidance` = 2)."""

    block_layer_evals: float  # decoder layers applied to one block's tokens, as the sampler ran them
    paper_block_layer_evals: float  # the paper's count so far: T[(N-D)+D*S] when done (see paper_cost)
    seconds: float  # wall time since the run started
    guidance: int = 1  # model evaluations per image and step (2 with classifier-free guidance)


class CostMeter:
    """Counts a sampling run as it goes: `block(k, depths)` when block k starts (its steps run at diffusion depths
    `depths`, D_1..D_S), `step(D)` after each of its denoising steps."""

    def __init__(self, cfg: ModelConfig, use_cache: bool, guided: bool):
        self.cfg, self.use_cache = cfg, use_cache
        self.guidance = 2 if guided else 1
        self.evals = self.paper = 0.0
        self.start = time.perf_counter()

    def block(self, k: int, depths: Sequence[int]) -> None:
        self.paper += self.cfg.depth - min(depths)  # the AR stage runs once, to the smallest boundary
        if self.use_cache:  # the clean copy of block k-1 and the AR pass of block k's slot, once
            cost = block_cost(self.cfg, k, depths)
            self.evals += cost["prefix"] + cost["clean"] + cost["ar"]

    def step(self, depth: int) -> None:
        self.paper += depth
        self.evals += depth if self.use_cache else naive_cost(self.cfg, 1) / self.cfg.num_blocks

    def cost(self) -> Cost:
        g = self.guidance
        return Cost(self.evals * g, self.paper * g, time.perf_counter() - self.start, g)


# ---- analytic FLOPs ----------------------------------------------------------------------------------------------
def layer_flops(cfg: ModelConfig, queries: int, keys: int, kv_tokens: int = 0) -> dict[str, float]:
    """One decoder layer: `queries` tokens attend over `keys` tokens; `kv_tokens` more only project keys/values.

    Returns {"linear", "attention"} FLOPs.
    """
    W = cfg.width
    per_token = W * (4 * W + 3 * swiglu_hidden(W, cfg.mlp_ratio))  # QKV 3W^2 + out W^2 + SwiGLU 3Wh
    return {"linear": 2.0 * (queries * per_token + kv_tokens * 2 * W * W), "attention": 4.0 * queries * keys * W}


def _add(total: dict[str, float], flops: dict[str, float], times: float = 1.0) -> None:
    for kind, v in flops.items():
        total[kind] += times * v


def _io_flops(cfg: ModelConfig, embedded: int, predicted: int, hidden: int) -> float:
    """Block embedder, output head and hidden head, each counted in blocks (one image, one timestep each)."""
    W, Lb, C = cfg.width, cfg.block_tokens, cfg.token_dim
    time_mlp = 2.0 * (TIME_FEATURES * W + W * W)
    embed = 2.0 * Lb * C * W + time_mlp
    head = time_mlp + 2.0 * W * 2 * W + 2.0 * Lb * W * C
    return embedded * embed + predicted * head + hidden * 2.0 * Lb * W * C


def _adaln_flops(cfg: ModelConfig, ada_rows: float, time_rows: float) -> float:
    """adaLN: `ada_rows` conditioning vectors mapped to 6 modulations in some layer, `time_rows` timestep MLPs."""
    if cfg.timestep_conditioning != "adaln":
        return 0.0
    W = cfg.width
    return ada_rows * 2.0 * W * 6 * W + time_rows * 2.0 * (TIME_FEATURES * W + W * W)


def forward_flops(cfg: ModelConfig) -> dict[str, float]:
    """Teacher-forced forward pass (MADFormer.forward) of one image: {"linear", "attention"} FLOPs.

    adaLN's conditioning of clean tokens is one vector per batch; it is counted once, as for a batch of one."""
    T, Lb = cfg.num_blocks, cfg.block_tokens
    L = round(sequence_blocks(cfg) * Lb)  # tokens of the training sequence
    slots = T * Lb  # the last layer: only the noisy slots have queries, the context gives keys/values
    hidden = T if (cfg.use_z_cond and cfg.ar_depth > 0) else 0
    context = cfg.clean_stream or cfg.num_classes > 0
    ada_rows = cfg.depth * int(context) + cfg.ar_depth + T * cfg.diffusion_depth
    out = {"linear": _io_flops(cfg, 2 * T - 1, T, hidden) + _adaln_flops(cfg, ada_rows, 1 + T), "attention": 0.0}
    _add(out, layer_flops(cfg, L, L), cfg.depth - 1)
    _add(out, layer_flops(cfg, slots, L, L - slots))
    return out


def train_flops(cfg: ModelConfig, batch: int) -> float:
    """FLOPs of one training step (forward + backward) on `batch` images."""
    f = forward_flops(cfg)
    # the first matmul of the block embedder and of each timestep MLP reads data: no gradient to its input
    T, W = cfg.num_blocks, cfg.width
    no_input_grad = (2 * T - 1) * 2.0 * (
        cfg.block_tokens * cfg.token_dim * W + TIME_FEATURES * W
    ) + T * 2.0 * TIME_FEATURES * W
    return batch * (3.0 * f["linear"] - no_input_grad + 3.5 * f["attention"])


def sample_flops(cfg: ModelConfig, steps: Plan, use_cache: bool = True) -> dict[str, float]:
    """FLOPs to sample one image (no guidance) with S=`steps` per block, or with a plan (per block the D of each
    step, sampling.block_plan): {"linear", "attention"}."""
    T, plan = cfg.num_blocks, as_plan(cfg, steps)
    evals = sum(map(len, plan))  # model evaluations: steps over all blocks
    if not use_cache:  # the whole sequence at every step, through that step's boundary
        out = dict.fromkeys(("linear", "attention"), 0.0)
        for D in (D for ds in plan for D in ds):
            _add(out, forward_flops(at_depth(cfg, D)))
        return out
    out = {"linear": _io_flops(cfg, (T - 1) + evals, evals, 0), "attention": 0.0}
    for k in range(T):
        for p in block_passes(cfg, k, plan[k]):
            # adaLN: each call conditions its layers with one vector per image (the diffusion stage's t) or per
            # batch (t = 0: counted as for a batch of one)
            out["linear"] += _adaln_flops(cfg, p.layers * p.repeats, p.repeats)
            full = p.layers - p.kv_last
            _add(out, layer_flops(cfg, p.queries, p.keys), full * p.repeats)
            _add(out, layer_flops(cfg, 0, 0, p.queries), p.kv_last * p.repeats)
    return out


# ---- measured FLOPs ----------------------------------------------------------------------------------------------
def _cpu_attention(q, k, v, *args, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


def _cpu_attention_backward(grad_out, q, k, v, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, q, k, v)


# FlopCounterMode has no formula for the CPU flash-attention kernels; without these it counts their FLOPs as 0
_CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


def count_flops(fn: Callable[[], Any]) -> int:
    """Matmul FLOPs that fn() executes, counted by torch.utils.flop_counter.FlopCounterMode."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        fn()
    return counter.get_total_flops()
