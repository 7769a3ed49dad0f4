"""Cost accounting for block-wise sampling, in block-layer evaluations (one layer applied to one block's tokens).

paper_cost:  T * [(N - D) + D * S]            the paper's count (noisy slot only)
cached_cost: what the KV-cached sampler runs: per block the clean copy of block k-1 once through the layers
             the diffusion stage reads (N, or N-D when it reads no context), the noisy slot once through the
             N-D AR layers, and the noisy block through the D diffusion layers at each of the S steps.
naive_cost:  recomputing the whole training sequence through all N layers at every step (the no-cache
             reference): T * S * N * (2T - 1 + P/Lb).
"""
from __future__ import annotations

from .config import ModelConfig


def paper_cost(cfg: ModelConfig, steps: int) -> float:
    N, D, T = cfg.depth, cfg.diffusion_depth, cfg.num_blocks
    return float(T * ((N - D) + D * steps))


def clean_pass_depth(cfg: ModelConfig) -> int:
    """Layers the clean copy of a finished block runs through in cached sampling."""
    return cfg.depth if (cfg.denoiser_attention == "context" and cfg.clean_stream) else cfg.ar_depth


def block_cost(cfg: ModelConfig, block: int, steps: int) -> dict[str, float]:
    """Block-layer evaluations of the cached sampler for one block, split by stage."""
    prefix = cfg.prefix_tokens * cfg.depth / cfg.block_tokens if block == 0 else 0.0
    clean = float(clean_pass_depth(cfg)) if (block > 0 and cfg.clean_stream) else 0.0
    ar = float(cfg.ar_depth) if cfg.use_z_cond else 0.0
    return {"prefix": prefix, "clean": clean, "ar": ar, "diffusion": float(cfg.diffusion_depth * steps)}


def cached_cost(cfg: ModelConfig, steps: int) -> float:
    return float(sum(sum(block_cost(cfg, k, steps).values()) for k in range(cfg.num_blocks)))


def sequence_blocks(cfg: ModelConfig) -> float:
    """Length of the training sequence in blocks: prefix + T-1 clean blocks + T noisy slots."""
    clean = cfg.num_blocks - 1 if cfg.clean_stream else 0
    return cfg.prefix_tokens / cfg.block_tokens + clean + cfg.num_blocks


def naive_cost(cfg: ModelConfig, steps: int) -> float:
    return float(cfg.num_blocks * steps * cfg.depth * sequence_blocks(cfg))
