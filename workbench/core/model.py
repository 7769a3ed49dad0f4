"""MADFormer: N decoder layers; the first N-D form the AR stage, the last D the diffusion stage.

Training (`forward`) runs all T blocks in one pass over [prefix | C_0..C_{T-2} | S_0..S_{T-1}] with the
skip-causal masks of blocks.py. Sampling uses `prefill`, `ar_step` (`ar_states` for steps at several D) and
`denoise_step` with a KVCache; the model never loops over timesteps (sampling.py does).

Paper symbol -> code: N = cfg.depth, D = cfg.diffusion_depth, T = cfg.num_blocks, B (tokens per block) =
cfg.block_tokens, z_cond = output of layer N-D-1 at the noisy slots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Masks
from .blocks import block_positions, from_blocks, to_blocks
from .config import Config, ModelConfig
from .layers import CLEAN, NOISY, DecoderLayer, KVCache, RMSNorm, Rope2D, Stream

TIME_FEATURES = 256  # sinusoidal features of a timestep, the input of its embedding MLP
SANDWICH = 0.25  # elastic training: this share of samples at the smallest D, as many at the largest


def sample_depths(cfg: ModelConfig, batch: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Elastic training: one diffusion depth D per sample (B,) long, drawn by the sandwich rule: a quarter at the
    smallest trained D, a quarter at the largest, the rest uniformly over the set."""
    depths = torch.tensor(cfg.depths, device=device)
    u = torch.rand(batch, device=device, generator=generator)
    pick = torch.randint(0, len(depths), (batch,), device=device, generator=generator)
    pick = torch.where(u < SANDWICH, 0, torch.where(u < 2 * SANDWICH, len(depths) - 1, pick))
    return depths[pick]


def clean_pass_depth(cfg: ModelConfig) -> int:
    """Layers the clean copy of a finished block runs through in cached sampling."""
    return cfg.depth if (cfg.denoiser_attention == "context" and cfg.clean_stream) else cfg.ar_depth


def timestep_frequencies(dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Frequencies (dim/2,) of the sinusoidal timestep features."""
    half = dim // 2
    return torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)


class TimestepEmbedder(nn.Module):
    def __init__(self, width: int, freq_dim: int = TIME_FEATURES):
        super().__init__()
        self.register_buffer("freqs", timestep_frequencies(freq_dim), persistent=False)  # built once, not per step
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(Possibly fractional) timesteps (...,) -> (..., width)."""
        ang = t.float().unsqueeze(-1) * self.freqs.float()  # (..., freq_dim/2)
        return self.mlp(torch.cat([ang.cos(), ang.sin()], dim=-1))


class BlockEmbedder(nn.Module):
    """Tokens of a block and their timestep -> width. Clean context is embedded with t=0."""

    def __init__(self, token_dim: int, width: int):
        super().__init__()
        self.proj = nn.Linear(token_dim, width)
        self.time = TimestepEmbedder(width)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (B, n, Lb, Cpp), t: (B, n) -> (B, n, Lb, W)."""
        return self.proj(x) + self.time(t).unsqueeze(-2)


class OutputHead(nn.Module):
    """Final norm modulated by the timestep (its only other entry point), then a linear map to token values."""

    def __init__(self, width: int, token_dim: int, eps: float):
        super().__init__()
        self.norm = RMSNorm(width, eps)
        self.time = TimestepEmbedder(width)
        self.modulation = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, token_dim)

    def zero_init(self) -> None:
        """Start as "predict zero, no modulation", as DiT does."""
        for lin in (self.modulation, self.out):
            nn.init.zeros_(lin.weight), nn.init.zeros_(lin.bias)

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """h: (B, n, Lb, W), t: (B, n) -> (B, n, Lb, Cpp)."""
        shift, scale = self.modulation(F.silu(self.time(t))).unsqueeze(-2).chunk(2, dim=-1)
        return self.out(self.norm(h) * (1 + scale) + shift)


class MADFormer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        W = cfg.width
        self.embed = BlockEmbedder(cfg.token_dim, W)
        self.boi = nn.Parameter(torch.randn(cfg.block_tokens, W) * 0.02)  # learned begin-of-image block
        self.class_embed = nn.Embedding(cfg.num_classes + 1, W) if cfg.num_classes else None  # last = null class
        adaln = cfg.timestep_conditioning == "adaln"
        self.layers = nn.ModuleList(
            [
                DecoderLayer(W, cfg.heads, cfg.mlp_ratio, cfg.towers, cfg.qk_norm, cfg.norm_eps, adaln)
                for _ in range(cfg.depth)
            ]
        )
        # adaLN: one timestep embedding conditions every layer (t = 0 for clean tokens and the AR stage)
        self.cond_time = TimestepEmbedder(W) if adaln else None
        # elastic depth: which D a sample's diffusion stage has, added with its noisy input (zero at init)
        self.boundary_embed = nn.Embedding(cfg.depth + 1, W) if cfg.elastic_depths and cfg.boundary_embedding else None
        self.head = OutputHead(W, cfg.token_dim, cfg.norm_eps)
        # decodes z_cond toward the clean block: a head of its own, with no path to the noisy target
        self.hidden_head = nn.Sequential(RMSNorm(W, cfg.norm_eps), nn.Linear(W, cfg.token_dim))
        self.rope = Rope2D(W // cfg.heads, cfg.rope_base)
        cos, sin = self.rope.angles(block_positions(cfg).flatten(0, 1))  # (T*Lb, hd/2): RoPE of every block, once
        self.register_buffer("rope_cos", cos.view(cfg.num_blocks, cfg.block_tokens, -1), persistent=False)
        self.register_buffer("rope_sin", sin.view(cfg.num_blocks, cfg.block_tokens, -1), persistent=False)
        self.masks = Masks(cfg)  # attention masks for cfg.attention, built per shape and device on first use
        self.apply(self._init)
        self.head.zero_init()
        if self.boundary_embed is not None:
            nn.init.zeros_(self.boundary_embed.weight)
        for layer in self.layers:
            for tower in layer.towers:
                tower.zero_init()

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # ---- helpers -------------------------------------------------------------------------------------------
    @property
    def has_hidden_loss(self) -> bool:
        return self.cfg.use_z_cond and self.cfg.ar_depth > 0

    def _cond(self, t: torch.Tensor | None = None) -> torch.Tensor | None:
        """adaLN conditioning: (B, n, W) for timesteps t (B, n); (1, 1, W) for clean tokens (t = None); None when
        the model has no adaLN."""
        if self.cond_time is None:
            return None
        if t is None:
            t = torch.zeros(1, 1, device=self.boi.device)
        return self.cond_time(t)

    def _rope(self, first: int, count: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE cos/sin (count*Lb, hd/2) of the tokens of blocks first..first+count-1 (views of the tables)."""
        end = first + count
        return self.rope_cos[first:end].flatten(0, 1), self.rope_sin[first:end].flatten(0, 1)

    def _prefix(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if self.class_embed is None:
            return None
        if labels is None:
            raise ValueError(
                "labels: this model is class-conditional. Fix: pass labels (use num_classes for "
                "the unconditional/null class)."
            )
        return self.class_embed(labels).unsqueeze(1)  # (B, 1, W)

    def _clean_rope(self, n_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE of the context stream: the prefix tokens (identity rotation), then blocks 0..n_blocks-1."""
        cos, sin = self._rope(0, n_blocks)
        P = self.cfg.prefix_tokens
        if P:
            ones = cos.new_ones(P, cos.shape[1])
            cos, sin = torch.cat([ones, cos]), torch.cat([torch.zeros_like(ones), sin])
        return cos, sin

    def drop_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Training-time label dropout to the null class (enables classifier-free guidance)."""
        drop = torch.rand(labels.shape, device=labels.device) < self.cfg.label_dropout
        return torch.where(drop, torch.full_like(labels, self.cfg.num_classes), labels)

    # ---- training ------------------------------------------------------------------------------------------
    def forward(
        self,
        x0: torch.Tensor,
        xt: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None = None,
        depth: torch.Tensor | None = None,
    ):
        """Teacher-forced pass over all blocks.

        x0: clean latents (B, C, H, W); xt: noisy latents (B, C, H, W), block k noised to t[:, k]; t: (B, T);
        depth: (B,) each sample's diffusion depth D (elastic models; None: model.diffusion_depth for all).
        Returns (prediction (B, C, H, W) of the diffusion target, hidden prediction of x0 (B, C, H, W) or None).
        """
        cfg = self.cfg
        B, T, Lb, W = x0.shape[0], cfg.num_blocks, cfg.block_tokens, cfg.width
        # first: under torch.compile fetching the masks is the one graph break
        ar_mask, diff_mask, last_mask = self.training_attention_masks(x0.device)
        if labels is not None and self.class_embed is not None and self.training and cfg.label_dropout > 0:
            labels = self.drop_labels(labels)
        clean_tok = to_blocks(x0, cfg)  # (B, T, Lb, Cpp)
        clean_emb = self.embed(clean_tok[:, : T - 1], torch.zeros(B, T - 1, device=x0.device))  # (B, T-1, Lb, W)
        # noisy stream in the AR layers: BOI, then clean block k-1 at block k's positions
        slot = torch.cat([self.boi.expand(B, 1, Lb, W), clean_emb], dim=1).flatten(1, 2)  # (B, T*Lb, W)
        clean_cond = self._cond()
        streams = [Stream(slot, NOISY, self._rope(0, T), clean_cond)]
        context = [p for p in (self._prefix(labels, B),) if p is not None]
        if cfg.clean_stream:
            context.append(clean_emb.flatten(1, 2))  # (B, (T-1)*Lb, W)
        if context and sum(c.shape[1] for c in context):
            streams.insert(
                0,
                Stream(
                    torch.cat(context, dim=1), CLEAN, self._clean_rope(T - 1 if cfg.clean_stream else 0), clean_cond
                ),
            )
        z_cond = None
        boundary = None if depth is None else cfg.depth - depth  # (B,) the first diffusion layer of each sample
        if boundary is not None:  # every sample's noisy input and its adaLN conditioning, for its boundary layer
            entering = self._noisy_input(xt, t, depth), self._cond(t)
        for i, layer in enumerate(self.layers):
            if boundary is None and i == cfg.ar_depth:
                z_cond = streams[-1].x
                noisy = self.embed(to_blocks(xt, cfg), t).flatten(1, 2)  # (B, T*Lb, W)
                streams[-1] = streams[-1]._replace(x=z_cond + noisy if cfg.use_z_cond else noisy, cond=self._cond(t))
            elif boundary is not None:
                streams[-1], z_cond = self._enter_diffusion(streams[-1], z_cond, i, boundary, *entering)
            mask = ar_mask if i < cfg.ar_depth else diff_mask
            # the last layer's context stream is never read: it only gives keys and values
            kv_only = len(streams) - 1 if i == cfg.depth - 1 else 0
            streams = layer(streams, mask=last_mask if kv_only else mask, kv_only=kv_only)
        pred = self.head(streams[-1].x.view(B, T, Lb, W), t)  # (B, T, Lb, Cpp)
        hidden = self.hidden_head(z_cond.view(B, T, Lb, W)) if self.has_hidden_loss else None
        return from_blocks(pred, cfg), (from_blocks(hidden, cfg) if hidden is not None else None)

    def training_attention_masks(self, device) -> tuple:
        """The AR and diffusion layers' masks over the training sequence, and the last layer's (the diffusion rule
        for the noisy slots' queries only: the context stream before them gives keys and values only)."""
        cfg = self.cfg
        L = cfg.prefix_tokens + ((cfg.num_blocks - 1) if cfg.clean_stream else 0) * cfg.block_tokens
        slots = cfg.num_blocks * cfg.block_tokens
        ar, diff = (self.masks.get(rule, L + slots, L + slots, device) for rule in ("ar", "diffusion"))
        return ar, diff, self.masks.get("diffusion", slots, L + slots, device)

    def _noisy_input(self, xt: torch.Tensor, t: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Elastic training: the embedded noisy blocks (B, T*Lb, W), with each sample's boundary embedding."""
        noisy = self.embed(to_blocks(xt, self.cfg), t).flatten(1, 2)
        return noisy + self.boundary_embed(depth).unsqueeze(1) if self.boundary_embed is not None else noisy

    def _enter_diffusion(
        self, slot: Stream, z_cond, i: int, boundary: torch.Tensor, noisy: torch.Tensor, cond_t: torch.Tensor | None
    ):
        """Elastic training at layer i: the samples whose boundary is i keep their slot as z_cond and take their
        noisy input there (the AR and diffusion masks coincide for the architectures elastic depth allows)."""
        switch = boundary == i  # (B,)
        if not bool(switch.any()):
            return slot, z_cond
        sw = switch.view(-1, 1, 1)
        z_cond = torch.where(sw, slot.x, slot.x if z_cond is None else z_cond)
        x = torch.where(sw, slot.x + noisy, slot.x)
        cond = slot.cond
        if cond is not None:  # adaLN: t for the samples in their diffusion stage, t = 0 for the others
            cond = torch.where((boundary <= i).view(-1, 1, 1), cond_t, cond.expand_as(cond_t))
        return slot._replace(x=x, cond=cond), z_cond

    # ---- cached sampling -----------------------------------------------------------------------------------
    def new_cache(self, batch: int, device=None, dtype=None) -> KVCache:
        cfg = self.cfg
        p = next(self.parameters())
        capacity = cfg.prefix_tokens + cfg.num_blocks * cfg.block_tokens
        return KVCache(
            cfg.depth, batch, cfg.heads, cfg.width // cfg.heads, capacity, device or p.device, dtype or p.dtype
        )

    def prefill(self, cache: KVCache, labels: torch.Tensor | None) -> None:
        """Put the class prefix (if any) into the cache of every layer."""
        prefix = self._prefix(labels, cache.k[0].shape[0])
        if prefix is None:
            return
        one = torch.ones(1, self.rope.inv_freq.numel() * 2, device=prefix.device)
        x, last = [Stream(prefix, CLEAN, (one, torch.zeros_like(one)), self._cond())], len(self.layers) - 1
        for i, layer in enumerate(self.layers):  # the last layer only caches keys/values
            x = layer(x, mask=self.masks.full, cache=cache, layer=i, commit=True, kv_only=int(i == last))

    def ar_step(
        self, cache: KVCache, k: int, prev_block: torch.Tensor | None, depth: int | None = None
    ) -> torch.Tensor | None:
        """AR stage for block k: cache the clean copy of block k-1, then compute z_cond for block k.

        prev_block: (B, Lb, Cpp) finished block k-1 (None for k=0); depth: the D to sample block k with (default
        model.diffusion_depth). Returns z_cond (B, Lb, W), or None when the model does not use z_cond.
        """
        D = depth or self.cfg.diffusion_depth
        return self.ar_states(cache, k, prev_block, (D,))[D]

    def ar_states(
        self, cache: KVCache, k: int, prev_block: torch.Tensor | None, depths: Sequence[int]
    ) -> dict[int, torch.Tensor | None]:
        """AR stage for block k once, for denoising steps at several diffusion depths (a per-step schedule).

        Caches the clean copy of block k-1 (prev_block (B, Lb, Cpp), None for k=0), runs the slot through the
        first N - min(depths) layers, and keeps its state at every boundary N - D: the AR stage does not depend
        on x_t, so the z_cond of a step at depth D is exactly what a pass stopping at layer N - D gives. Returns
        {D: z_cond (B, Lb, W)} ({D: None} when the model does not use z_cond).
        """
        cfg = self.cfg
        B, Lb, W = cache.k[0].shape[0], cfg.block_tokens, cfg.width
        dev = cache.k[0].device
        if prev_block is not None:
            emb = self.embed(prev_block.unsqueeze(1), torch.zeros(B, 1, device=dev))[:, 0]  # (B, Lb, W)
            if cfg.clean_stream:
                x, layers = [Stream(emb, CLEAN, self._rope(k - 1), self._cond())], clean_pass_depth(cfg)
                for i in range(layers):  # the last layer only caches keys/values: its output is never read
                    x = self.layers[i](
                        x, mask=self.masks.full, cache=cache, layer=i, commit=True, kv_only=int(i == layers - 1)
                    )
        else:
            # a copy: a view of a parameter still requires grad under no_grad (FlopCounterMode rejects that)
            emb = self.boi.expand(B, Lb, W).clone()
        if not cfg.use_z_cond:
            return dict.fromkeys(depths)
        x, z_cond, last = [Stream(emb, NOISY, self._rope(k), self._cond())], {}, cfg.depth - min(depths)
        for i in range(last + 1):
            if cfg.depth - i in depths:  # after i AR layers the slot is z_cond for D = N - i
                z_cond[cfg.depth - i] = x[0].x
            if i < last:
                # without a clean stream the slot is the context: its AR-layer keys/values stay for later blocks
                x = self.layers[i](x, mask=self.masks.full, cache=cache, layer=i, commit=not cfg.clean_stream)
        return z_cond

    def denoise_step(
        self,
        cache: KVCache,
        k: int,
        z_cond: torch.Tensor | None,
        xt: torch.Tensor,
        t: torch.Tensor,
        depth: int | None = None,
    ) -> torch.Tensor:
        """Diffusion stage (the last `depth` layers, default model.diffusion_depth) on block k: xt (B, Lb, Cpp) at
        timestep t (B,) -> prediction (B, Lb, Cpp)."""
        cfg = self.cfg
        D = depth or cfg.diffusion_depth
        h = self.embed(xt.unsqueeze(1), t.view(-1, 1))[:, 0]  # (B, Lb, W)
        if z_cond is not None:
            h = h + z_cond
        if self.boundary_embed is not None:
            h = h + self.boundary_embed.weight[D]
        use_context = cfg.denoiser_attention == "context"
        Lb = cfg.block_tokens
        token = cfg.denoiser_attention == "token"
        mask = self.masks.get("token", Lb, Lb, h.device) if token else self.masks.full
        x = [Stream(h, NOISY, self._rope(k), self._cond(t.view(-1, 1)))]
        for i in range(cfg.depth - D, cfg.depth):
            x = self.layers[i](x, mask=mask, cache=cache if use_context else None, layer=i)
        return self.head(x[0].x.unsqueeze(1), t.view(-1, 1))[:, 0]


def build_model(config: Config | ModelConfig) -> MADFormer:
    """Build a MADFormer from a full Config or a ModelConfig."""
    return MADFormer(config.model if isinstance(config, Config) else config)


def use_attention(model: MADFormer, config: Config, backend: str) -> Config:
    """Switch `model` (in place) to another attention backend ("sdpa" or "flex") and return `config` saying so.

    The backend holds no weights, so any checkpoint samples under either; pass the returned config to the sampler
    (it checks that the config describes the model)."""
    config = config.override(**{"model.attention": backend})  # validates the name
    model.cfg, model.masks = config.model, Masks(config.model)
    return config
