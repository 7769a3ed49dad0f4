"""Latent grid <-> token blocks, 2-D token positions, and the training attention masks.

Blocks are square and in raster order; tokens are raster-ordered inside a block. The training sequence is

    [ prefix (P) | C_0 .. C_{T-2} | S_0 .. S_{T-1} ]

C_{T-1} is left out: no noisy slot may see it, so it cannot change any output (the causality tests check this).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange

from .config import ModelConfig


def to_blocks(x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """(B, C, H, W) latents -> (B, T, Lb, C*p*p) block tokens."""
    g, s, p = cfg.block_grid, cfg.block_side, cfg.patch_size
    return rearrange(x, "b c (bi s1 p1) (bj s2 p2) -> b (bi bj) (s1 s2) (c p1 p2)", bi=g, bj=g, s1=s, s2=s, p1=p, p2=p)


def from_blocks(x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """(B, T, Lb, C*p*p) block tokens -> (B, C, H, W) latents."""
    g, s, p = cfg.block_grid, cfg.block_side, cfg.patch_size
    return rearrange(x, "b (bi bj) (s1 s2) (c p1 p2) -> b c (bi s1 p1) (bj s2 p2)", bi=g, bj=g, s1=s, s2=s, p1=p, p2=p)


def block_positions(cfg: ModelConfig) -> torch.Tensor:
    """(T, Lb, 2) integer (row, col) of every token on the token grid, block by block."""
    ij = torch.stack(torch.meshgrid(torch.arange(cfg.grid), torch.arange(cfg.grid), indexing="ij"))  # (2, g, g)
    return rearrange(ij, "c (bi s1) (bj s2) -> (bi bj) (s1 s2) c", s1=cfg.block_side, s2=cfg.block_side)


def block_index_map(cfg: ModelConfig) -> torch.Tensor:
    """(H, W) long: the block index of every latent pixel (used to give each block its own timestep)."""
    g, n = cfg.block_grid, cfg.latent_size // cfg.block_grid
    ids = torch.arange(cfg.num_blocks).view(g, g)  # (g, g)
    return ids.repeat_interleave(n, 0).repeat_interleave(n, 1)  # (H, W)


def token_layout(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Kind (0 prefix, 1 clean, 2 noisy) and block index of every token of the training sequence."""
    P, T, Lb = cfg.prefix_tokens, cfg.num_blocks, cfg.block_tokens
    clean_blocks = T - 1 if cfg.clean_stream else 0
    kind = torch.cat([torch.zeros(P), torch.ones(clean_blocks * Lb), torch.full((T * Lb,), 2.0)]).long()
    block = torch.cat(
        [torch.full((P,), -1), torch.arange(clean_blocks).repeat_interleave(Lb), torch.arange(T).repeat_interleave(Lb)]
    ).long()
    return kind, block


STAGES = ("ar", "diffusion")  # the two rules of the training sequence: AR layers, diffusion layers


def attention_rule(cfg: ModelConfig, stage: str, device=None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training sequence's attention rule of the AR layers (stage "ar") or the diffusion layers ("diffusion"):
    a function of integer query and key positions (broadcastable tensors) -> bool, True = may attend.

    prefix  -> prefix
    clean i -> prefix, clean j <= i (bidirectional inside a block)
    slot k  -> AR layers: prefix, clean j < k, itself (no clean stream: slots j <= k, which hold clean data)
               diffusion layers, by `denoiser_attention`:
                 context: as in the AR layers (no clean stream: prefix and itself; other slots are noisy now)
                 block:   itself only ("MLP denoising")
                 token:   each token only itself
    Noisy slots are never seen by anything else once they hold noise. One rule serves both attention backends:
    evaluated on a grid it is SDPA's dense mask, evaluated per (query, key) pair it is FlexAttention's mask_mod.
    """
    kind, block = (a.to(device) for a in token_layout(cfg))
    ar = stage == "ar"

    def allowed(q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        qk, kk, qb, kb = kind[q], kind[kv], block[q], block[kv]
        see_prefix = kk == 0
        common = ((qk == 0) & see_prefix) | ((qk == 1) & (see_prefix | ((kk == 1) & (kb <= qb))))
        same_slot = (kk == 2) & (kb == qb)
        if ar or cfg.denoiser_attention == "context":
            if cfg.clean_stream:
                slot = see_prefix | ((kk == 1) & (kb < qb)) | same_slot
            elif ar:
                slot = see_prefix | ((kk == 2) & (kb <= qb))
            else:
                slot = see_prefix | same_slot
        elif cfg.denoiser_attention == "block":
            slot = same_slot
        else:  # token
            slot = q == kv
        return common | ((qk == 2) & slot)

    return allowed


def training_masks(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (L, L) masks (True = may attend) of the AR layers and of the diffusion layers (see attention_rule)."""
    idx = torch.arange(token_layout(cfg)[0].numel())
    return tuple(attention_rule(cfg, stage)(idx.view(-1, 1), idx.view(1, -1)) for stage in STAGES)
