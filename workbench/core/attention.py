"""Attention under two backends: SDPA with dense boolean masks (the reference) or FlexAttention with block masks.

Both evaluate the same rules (blocks.attention_rule for the training sequence, "each token alone" for the token
denoiser in cached sampling, or no mask at all): SDPA gets the rule evaluated on the (Lq, Lkv) grid, FlexAttention
a BlockMask built from the rule as its mask_mod, which skips the 128 x 128 tiles nobody may attend to and never
stores an (L, L) mask. In every call the queries are the last Lq positions of the Lkv keys (the key-only streams
and the cached context come first), so one rule serves the full pass, its last layer and cached sampling.

FlexAttention runs compiled on CUDA (its fused kernel) and eagerly elsewhere: eagerly it materialises the scores,
so it is a correctness path on CPUs, not a fast one, and PyTorch has no FlexAttention backward on CPUs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from .blocks import STAGES, attention_rule, token_layout
from .config import ModelConfig

BACKENDS = ("sdpa", "flex")
COMPILED_DEVICES = ("cuda",)  # device types whose FlexAttention runs as a compiled, fused kernel
RULES = (*STAGES, "token")  # the training sequence's two rules, and "each query sees only its own token"
# eager FlexAttention on a CPU is the deliberate choice there (compiling it has no backward and no speed-up on CPUs)
warnings.filterwarnings("ignore", message="flex_attention called without torch.compile", category=UserWarning)

_compiled_flex = None  # torch.compile(flex_attention), built on first use on a COMPILED_DEVICES device


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask | None) -> torch.Tensor:
    """FlexAttention of q (B, H, Lq, hd) over k, v (B, H, Lkv, hd): compiled on COMPILED_DEVICES, eager elsewhere."""
    global _compiled_flex
    if q.device.type == "cpu" and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        raise ValueError(
            "model.attention=flex: PyTorch's FlexAttention has no backward pass on the CPU. Fix: train on the CPU "
            "with model.attention=sdpa (the weights sample under either backend), or train on a GPU."
        )
    if k.dtype != q.dtype:  # autocast: queries in bf16, a KV cache kept in the weights' dtype (SDPA casts itself)
        k, v = k.to(q.dtype), v.to(q.dtype)
    if torch.compiler.is_compiling() or q.device.type not in COMPILED_DEVICES:
        return flex_attention(q, k, v, block_mask=block_mask)  # inside torch.compile: traced into the model's graph
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention)
    return _compiled_flex(q, k, v, block_mask=block_mask)


@dataclass(frozen=True)
class AttentionMask:
    """Who may attend to whom in one attention call, in the form its backend takes."""

    backend: str  # "sdpa" or "flex"
    dense: torch.Tensor | None = None  # sdpa: (Lq, Lkv) bool, True = may attend; None = no mask
    block: BlockMask | None = None  # flex: the same rule as a BlockMask; None = no mask

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, H, Lq, hd), k/v (B, H, Lkv, hd) -> (B, H, Lq, hd)."""
        if self.backend == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.dense)
        return flex(q, k, v, self.block)


def block_mask_bytes(block_mask: BlockMask) -> int:
    """Bytes of every tensor a BlockMask holds (block counts and indices, both directions)."""
    return sum(t.numel() * t.element_size() for t in block_mask.as_tuple() if isinstance(t, torch.Tensor))


def dense_mask_bytes(q_len: int, kv_len: int) -> int:
    """Bytes of a dense (Lq, Lkv) boolean mask."""
    return q_len * kv_len


class Masks:
    """One model's attention masks for its backend, each built once per (rule, Lq, Lkv, device) and reused.

    The model's config is fixed, so these four values are the whole key. `full` is "no mask"."""

    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg
        self.backend = cfg.attention
        self.full = AttentionMask(self.backend)
        self.built: dict[tuple, AttentionMask] = {}
        self._dense: dict[tuple, torch.Tensor] = {}

    @torch.compiler.disable  # plain Python caching: under torch.compile a BlockMask enters the graph as an input
    def get(self, rule: str, q_len: int, kv_len: int, device: torch.device | str) -> AttentionMask:
        """The mask of `rule` for Lq queries (the last Lq positions) over Lkv keys, on `device`."""
        if rule not in RULES:
            raise ValueError(f"attention rule {rule!r}: unknown. Fix: use one of {', '.join(RULES)}.")
        if not 0 < q_len <= kv_len:
            raise ValueError(f"attention mask: need 0 < Lq <= Lkv, got Lq={q_len}, Lkv={kv_len}.")
        device = torch.device(device)
        key = (rule, q_len, kv_len, device)
        if key not in self.built:
            self.built[key] = self._build(rule, q_len, kv_len, device)
        return self.built[key]

    def _build(self, rule: str, q_len: int, kv_len: int, device: torch.device) -> AttentionMask:
        offset = kv_len - q_len  # query i sits at position offset + i of the key sequence
        if rule in STAGES and kv_len != token_layout(self.cfg)[0].numel():
            raise ValueError(f"attention rule {rule!r} covers the training sequence; got {kv_len} keys.")
        allowed = attention_rule(self.cfg, rule, device) if rule in STAGES else _own_token
        if self.backend == "sdpa":
            full = self._dense.get((rule, kv_len, device))
            if full is None:
                idx = torch.arange(kv_len, device=device)
                full = self._dense[(rule, kv_len, device)] = allowed(idx.view(-1, 1), idx.view(1, -1))  # (Lkv, Lkv)
            return AttentionMask(self.backend, dense=full[offset:])  # (Lq, Lkv): the query rows

        def mask_mod(b, h, q_idx, kv_idx):
            return allowed(q_idx + offset, kv_idx)

        block = create_block_mask(mask_mod, None, None, q_len, kv_len, device=device)
        return AttentionMask(self.backend, block=block)


def _own_token(q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    return q == kv
