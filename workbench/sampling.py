"""Block-wise sampling as a generator of events (one per denoising step and one per finished block).

With the cache (default) each block runs the AR stage once and each step runs only the D diffusion layers on
the block's tokens. Without it every step recomputes the whole teacher-forced sequence (the test reference).
Notebooks, the app, the CLI and the benchmarks all consume `generate_events`; nothing here prints or plots.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Callable, Iterator

import torch

from .blocks import from_blocks, to_blocks
from .compute import block_cost, naive_cost
from .config import Config, ModelConfig
from .diffusion import Objective
from .model import MADFormer
from .objectives import build_objective


@dataclass
class Event:
    kind: str                 # "step" (after a denoising step) or "block" (a block is finished)
    block: int                # k: block being generated, 0..T-1
    step: int                 # denoising steps done in this block (S at a "block" event)
    num_blocks: int           # T
    steps: int                # S
    cost: dict                # block-layer evaluations per image so far, and seconds
    # the latents are assembled only when read: most consumers look at a few events, not every step
    _canvas: torch.Tensor = field(repr=False)  # (B, T, Lb, Cpp) the sampler's canvas; blocks < k are final
    _block_x_t: torch.Tensor = field(repr=False)  # (B, Lb, Cpp) block k at x_t
    _block_x0: Callable[[], torch.Tensor] = field(repr=False)  # -> (B, Lb, Cpp) block k's predicted x0
    _cfg: ModelConfig = field(repr=False)

    @property
    def done(self) -> bool:
        return self.kind == "block" and self.block == self.num_blocks - 1

    @cached_property
    def x_t(self) -> torch.Tensor:
        """(B, C, H, W) latents: finished blocks, block k at x_t, zeros after."""
        return _assemble(self._canvas, self.block, self._block_x_t, self._cfg)

    @cached_property
    def x0(self) -> torch.Tensor:
        """(B, C, H, W) latents: finished blocks, block k's predicted x0, zeros after."""
        return _assemble(self._canvas, self.block, self._block_x0(), self._cfg)


def default_labels(model: MADFormer, num_images: int, device) -> torch.Tensor | None:
    """Class labels cycling through the classes (None for unconditional models)."""
    n = model.cfg.num_classes
    return torch.arange(num_images, device=device) % n if n else None


@torch.inference_mode()
def generate_events(model: MADFormer, config: Config, num_images: int | None = None, steps: int | None = None,
                    sampler: str | None = None, seed: int | None = None, use_cache: bool | None = None,
                    labels: torch.Tensor | None = None, cfg_scale: float | None = None,
                    device: torch.device | str | None = None) -> Iterator[Event]:
    """Yield an Event per denoising step and per finished block; arguments left None come from config.sample."""
    sc = config.sample
    num_images = num_images or sc.num_images
    steps = steps or sc.steps
    sampler = sampler or sc.sampler
    seed = sc.seed if seed is None else seed
    use_cache = sc.use_cache if use_cache is None else use_cache
    cfg_scale = sc.cfg_scale if cfg_scale is None else cfg_scale
    mcfg = model.cfg
    if mcfg != config.model:
        raise ValueError("config.model does not describe this model. Fix: pass the config the model was built from.")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    B, T, Lb, Cpp = num_images, mcfg.num_blocks, mcfg.block_tokens, mcfg.token_dim
    if labels is None:
        labels = default_labels(model, B, device)
    elif mcfg.num_classes == 0:
        raise ValueError("labels: this model is unconditional. Fix: pass labels=None.")
    elif labels.shape != (B,) or int(labels.min()) < 0 or int(labels.max()) >= mcfg.num_classes:
        raise ValueError(f"labels: need {B} class indices in [0, {mcfg.num_classes}). Fix: pass a (B,) tensor.")
    objective = build_objective(config.diffusion, mcfg)
    x0_clip = sc.x0_clip
    objective.check_sampler(sampler, x0_clip)  # before any work: a flow model refuses VP samplers, naming its own
    guided = labels is not None and cfg_scale != 1.0
    if guided:  # classifier-free guidance: a second half of the batch with the null class
        labels = torch.cat([labels, torch.full_like(labels, mcfg.num_classes)])
    nb = 2 * B if guided else B

    gen = torch.Generator(device="cpu").manual_seed(seed)
    canvas = torch.zeros(B, T, Lb, Cpp, device=device, dtype=dtype)  # finished blocks (clean)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    evals = 0.0
    cache = None
    if use_cache:
        cache = model.new_cache(nb, device, dtype)
        model.prefill(cache, labels)
    try:
        z_cond = None
        for k in range(T):
            scheduler = objective.make_scheduler(sampler, steps, x0_clip)  # multistep state is per block
            if use_cache:
                prev = canvas[:, k - 1] if k > 0 else None
                if prev is not None and guided:
                    prev = torch.cat([prev, prev])
                z_cond = model.ar_step(cache, k, prev)
                cost = block_cost(mcfg, k, steps)
                evals += cost["prefix"] + cost["clean"] + cost["ar"]
            x = torch.randn(B, Lb, Cpp, generator=gen).to(device, dtype) * objective.init_sigma(scheduler)
            for i, t in enumerate(scheduler.timesteps):
                x_in = objective.scale_input(scheduler, x, t)
                x_in2 = torch.cat([x_in, x_in]) if guided else x_in
                tt = torch.full((nb,), float(t), device=device)
                if use_cache:
                    out = model.denoise_step(cache, k, z_cond, x_in2, tt)
                    evals += mcfg.diffusion_depth
                else:
                    out = _recompute(model, canvas, x_in2, k, tt, labels, guided)
                    evals += naive_cost(mcfg, 1) / T
                if guided:
                    cond, uncond = out.chunk(2)
                    out = uncond + cfg_scale * (cond - uncond)
                x0 = partial(_predicted_block, objective, out, x_in, t)
                x = scheduler.step(out, t, x, generator=gen).prev_sample.to(dtype)
                paper = (k + 1) * mcfg.ar_depth + (k * steps + i + 1) * mcfg.diffusion_depth  # T[(N-D)+D*S] so far
                cost = {"block_layer_evals": evals * (2 if guided else 1), "paper_block_layer_evals": float(paper),
                        "seconds": time.perf_counter() - start}
                last = i == len(scheduler.timesteps) - 1
                if last:
                    canvas[:, k] = x
                yield Event("step", k, i + 1, T, steps, cost, canvas, x, x0, mcfg)
            yield Event("block", k, steps, T, steps, cost, canvas, x, partial(torch.clone, x), mcfg)
    finally:
        model.train(was_training)


def _predicted_block(objective: Objective, out: torch.Tensor, x_in: torch.Tensor, t) -> torch.Tensor:
    return objective.predicted_x0(out.float(), x_in.float(), t).to(out.dtype)


def _assemble(canvas: torch.Tensor, k: int, block: torch.Tensor, mcfg: ModelConfig) -> torch.Tensor:
    """(B, C, H, W) latents: canvas blocks < k (final once block k started), `block` at k, zeros after."""
    view = torch.zeros_like(canvas)  # (B, T, Lb, Cpp)
    view[:, :k] = canvas[:, :k]
    view[:, k] = block
    return from_blocks(view, mcfg)


def _recompute(model: MADFormer, canvas: torch.Tensor, x_in: torch.Tensor, k: int, t: torch.Tensor,
               labels: torch.Tensor | None, guided: bool) -> torch.Tensor:
    """No-cache reference: the full teacher-forced pass with finished blocks as context; read slot k."""
    ctx = torch.cat([canvas, canvas]) if guided else canvas  # (nb, T, Lb, Cpp)
    noisy = torch.zeros_like(ctx)
    noisy[:, k] = x_in
    tt = t.view(-1, 1).expand(-1, model.cfg.num_blocks)
    pred, _ = model(from_blocks(ctx, model.cfg), from_blocks(noisy, model.cfg), tt, labels)
    return to_blocks(pred, model.cfg)[:, k]


def generate(model: MADFormer, config: Config, num_images: int | None = None, steps: int | None = None,
             sampler: str | None = None, seed: int | None = None, use_cache: bool | None = None,
             **kwargs) -> torch.Tensor:
    """Drain generate_events and return the final latents (B, C, H, W)."""
    last = None
    for last in generate_events(model, config, num_images, steps, sampler, seed, use_cache, **kwargs):
        pass
    return last.x_t
