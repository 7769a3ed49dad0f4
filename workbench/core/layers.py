"""Transformer building blocks: RMSNorm, axial 2-D RoPE, SwiGLU, joint two-stream attention with a KV cache.

A decoder layer holds one parameter set ("tower") per stream: index 0 for the clean stream (context blocks and
the class prefix), index 1 for the noisy stream (the slots that become z_cond and then denoise). With
`towers="shared"` both indices point at the same parameters. Attention is joint over both streams. A `Stream`
carries a stream's tokens with its tower, RoPE angles and (adaLN only) its conditioning vectors.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionMask

CLEAN, NOISY = 0, 1


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in float32 under autocast too: bf16 statistics of a wide vector lose too much precision
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


class Rope2D(nn.Module):
    """Axial 2-D rotary embedding: half of each head rotates with the row, half with the column.

    A true rotation (cos/sin pairs), so q.k depends only on the 2-D offset between tokens.
    """

    def __init__(self, head_dim: int, base: float):
        super().__init__()
        quarter = head_dim // 4
        inv_freq = base ** (-torch.arange(quarter, dtype=torch.float64) / quarter)  # (hd/4,)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)

    def angles(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pos: (L, 2) integer (row, col) -> cos, sin of shape (L, hd/2)."""
        rows = pos[:, :1].float() * self.inv_freq  # (L, hd/4)
        cols = pos[:, 1:].float() * self.inv_freq  # (L, hd/4)
        ang = torch.cat([rows, cols], dim=-1)  # (L, hd/2)
        return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, L, hd); cos/sin: (L, hd/2). Rotates pairs (x[2i], x[2i+1])."""
    if torch.compiler.is_compiling():  # inductor has no complex codegen; it fuses the real form into one kernel
        x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (B, H, L, hd/2) each
        out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
        return out.type_as(x)
    # eager: the pair (x[2i], x[2i+1]) as one complex number, so the rotation is one complex multiply (two
    # kernels, not seven; 5x faster forward and backward at the training shapes)
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (B, H, L, hd/2) complex
    return torch.view_as_real(pairs * torch.complex(cos.float(), sin.float())).flatten(-2).type_as(x)


def swiglu_hidden(dim: int, ratio: float) -> int:
    """SwiGLU hidden size: ratio * dim rounded up to a multiple of 8."""
    return int(math.ceil(dim * ratio / 8) * 8)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = swiglu_hidden(dim, ratio)
        self.w12 = nn.Linear(dim, 2 * hidden, bias=False)  # fused gate and value projections
        self.w3 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class Stream(NamedTuple):
    """One stream of tokens through a decoder layer."""

    x: torch.Tensor  # (B, L, W) tokens
    tower: int  # CLEAN or NOISY: whose parameters it uses
    rope: tuple[torch.Tensor, torch.Tensor] | None  # (cos, sin) of shape (L, hd/2), or None (no rotation)
    cond: torch.Tensor | None = None  # adaLN conditioning (1 or B, G, W): G consecutive groups of L/G tokens, each
    #                                   modulated by one vector (one per block); None without adaLN


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, L, W) * (1 + scale) + shift, with shift/scale (1 or B, G, W) shared by groups of L/G tokens."""
    g = shift.shape[1]
    return (x.unflatten(1, (g, -1)) * (1 + scale.unsqueeze(2)) + shift.unsqueeze(2)).flatten(1, 2)


def gate(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """x (B, L, W) scaled by per-group gates g (1 or B, G, W)."""
    return (x.unflatten(1, (g.shape[1], -1)) * g.unsqueeze(2)).flatten(1, 2)


class Tower(nn.Module):
    """The per-stream parameters of one layer: norms, fused QKV, output projection, MLP, QK-norm, and with adaLN
    the map from the conditioning vector to shift/scale/gate of both sublayers (zero at init, as DiT's)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: bool, eps: float, adaln: bool = False):
        super().__init__()
        hd = dim // heads
        self.norm1 = RMSNorm(dim, eps)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = RMSNorm(hd, eps) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(hd, eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=False)
        self.norm2 = RMSNorm(dim, eps)
        self.mlp = SwiGLU(dim, mlp_ratio)
        self.ada = nn.Linear(dim, 6 * dim) if adaln else None

    def zero_init(self) -> None:
        if self.ada is not None:
            nn.init.zeros_(self.ada.weight), nn.init.zeros_(self.ada.bias)

    def modulation(self, cond: torch.Tensor | None) -> tuple[torch.Tensor, ...] | None:
        """(shift1, scale1, gate1, shift2, scale2, gate2), each (1 or B, G, W); None without adaLN."""
        if self.ada is None:
            return None
        if cond is None:
            raise ValueError("adaLN layer called without a conditioning vector: every stream needs Stream.cond")
        return self.ada(F.silu(cond)).chunk(6, dim=-1)


class KVCache:
    """Per-layer keys/values of the context tokens, preallocated so a step writes in place.

    Layout per layer: (B, H, capacity, hd). `length[layer]` tokens are context; a query block appends its own
    K/V temporarily at [length, length + L) without committing them, so the cache never grows inside a step.
    """

    def __init__(self, layers: int, batch: int, heads: int, head_dim: int, capacity: int, device, dtype):
        shape = (batch, heads, capacity, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.length = [0] * layers

    def keys_values(self, layer: int, k: torch.Tensor, v: torch.Tensor, commit: bool):
        """Write k/v (B, H, L, hd) after the context of `layer`; return all keys/values up to them."""
        n, L = self.length[layer], k.shape[2]
        if n + L > self.k[layer].shape[2]:
            raise RuntimeError(f"KV cache overflow at layer {layer}: {n}+{L} > {self.k[layer].shape[2]} tokens")
        self.k[layer][:, :, n : n + L] = k
        self.v[layer][:, :, n : n + L] = v
        if commit:
            self.length[layer] = n + L
        return self.k[layer][:, :, : n + L], self.v[layer][:, :, : n + L]


class DecoderLayer(nn.Module):
    """Pre-norm transformer layer over one or two streams with joint attention.

    `forward` takes a list of Streams and an AttentionMask (attention.py: the backend and who may attend to whom;
    None = SDPA without a mask) whose query rows are those of the streams with queries, or a KV cache. The first
    `kv_only` streams only give keys and values (where their output is never read, e.g. the clean stream in the
    last layer): they get no queries and no output, so the returned list holds the other streams, with their
    tokens replaced by the layer's output.
    """

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float, towers: str, qk_norm: bool, eps: float, adaln: bool = False
    ):
        super().__init__()
        self.heads, self.width = heads, dim
        tower = Tower(dim, heads, mlp_ratio, qk_norm, eps, adaln)
        self.towers = nn.ModuleList(
            [tower, tower if towers == "shared" else Tower(dim, heads, mlp_ratio, qk_norm, eps, adaln)]
        )

    def forward(
        self,
        streams: list[Stream],
        mask: AttentionMask | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        commit: bool = False,
        kv_only: int = 0,
    ) -> list[Stream]:
        qs, ks, vs, mods = [], [], [], []
        for j, s in enumerate(streams):
            t = self.towers[s.tower]
            mod = t.modulation(s.cond)
            mods.append(mod)
            h = t.norm1(s.x)
            if mod is not None:
                h = modulate(h, mod[0], mod[1])
            if j < kv_only:  # the key/value rows of the fused projection only
                k, v = (
                    F.linear(h, t.qkv.weight[self.width :]).unflatten(-1, (2, self.heads, -1)).permute(2, 0, 3, 1, 4)
                )  # (B, H, L, hd)
            else:
                q, k, v = t.qkv(h).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)  # (B, H, L, hd)
                q = t.q_norm(q)
                qs.append(apply_rope(q, *s.rope) if s.rope is not None else q)
            k = t.k_norm(k)
            ks.append(apply_rope(k, *s.rope) if s.rope is not None else k)
            vs.append(v)
        k, v = (torch.cat(a, dim=2) if len(a) > 1 else a[0] for a in (ks, vs))  # (B, H, L, hd)
        if cache is not None:
            k, v = cache.keys_values(layer, k, v, commit)
        if not qs:
            return []
        q = torch.cat(qs, dim=2) if len(qs) > 1 else qs[0]  # (B, H, Lq, hd)
        attn = mask.attend(q, k, v) if mask is not None else F.scaled_dot_product_attention(q, k, v)  # (B, H, Lq, hd)
        attn = attn.transpose(1, 2).flatten(2)  # (B, Lq, W)
        out, start = [], 0
        for s, mod in zip(streams[kv_only:], mods[kv_only:]):
            t, L = self.towers[s.tower], s.x.shape[1]
            a = t.proj(attn[:, start : start + L])
            if mod is None:
                h = s.x + a
                x = h + t.mlp(t.norm2(h))
            else:
                h = s.x + gate(a, mod[2])
                x = h + gate(t.mlp(modulate(t.norm2(h), mod[3], mod[4])), mod[5])
            out.append(s._replace(x=x))
            start += L
        return out
