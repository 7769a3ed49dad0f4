"""Block-wise sampling as a generator of events (one per denoising step and one per finished block).

With the cache (default) each block runs the AR stage once and each step runs only the D diffusion layers on
the block's tokens. Without it every step recomputes the whole teacher-forced sequence (the test reference).
D may change from block to block (`depth_schedule`) and from step to step (`depth_per_step`): a block's AR stage
then runs once to its smallest boundary N - min D_i and each step enters the diffusion stage at its own N - D_i.
Notebooks, the app, the CLI and the benchmarks all consume `generate_events`; nothing here prints or plots.
`frame` turns an event into the images a viewer shows while the later blocks are not generated yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from functools import cached_property, partial

import torch

from ..core.blocks import block_index_map, from_blocks, to_blocks
from ..core.compute import Cost, CostMeter, count_flops
from ..core.config import Config, ModelConfig, SampleConfig
from ..core.devices import resolve_device, set_tf32
from ..core.diffusion import Objective
from ..core.model import MADFormer
from ..core.objectives import build_objective
from ..data.codecs import Codec, build_codec
from .noise import Noise, default_labels
from .request import block_plan, check_request, sample_request


@dataclass
class Event:
    kind: str  # "step" (after a denoising step) or "block" (a block is finished)
    block: int  # k: block being generated, 0..T-1
    step: int  # denoising steps done in this block (S at a "block" event)
    num_blocks: int  # T
    steps: int  # S_k: the steps of block k
    cost: Cost  # block-layer evaluations per image so far, and seconds
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


PLACEHOLDER = (0.0, 0.3)  # values in [-1, 1] of the hatch over blocks not started yet: ground, stripes
HATCH_PERIOD = 8  # pixels between its diagonal stripes (each 2 pixels wide)


def placeholder(height: int, width: int) -> torch.Tensor:
    """(H, W) the hatch shown where no block is generated yet: mid grey with lighter diagonal stripes, so that it
    reads as "not yet" and never as a grey image."""
    i, j = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.where((i + j) % HATCH_PERIOD < 2, PLACEHOLDER[1], PLACEHOLDER[0])


def frame(codec: Codec, event: Event) -> torch.Tensor:
    """(B, C, H, W) images in [-1, 1] of what is known at `event`: the finished blocks and block k (final at a
    "block" event, its predicted x0 at a "step" event) decoded, the pixels of every later block painted with
    `placeholder`. Those blocks hold zero latents, which a VAE decodes into image-like texture: painted over, never
    shown. One decode of the whole canvas: for a latent codec that costs far more than a step, so call it at block
    events (a pixel codec's is free)."""
    images = codec.decode(event.x_t if event.kind == "block" else event.x0)  # (B, C, H, W)
    f = codec.downsample
    later = block_index_map(event._cfg) > event.block  # (h, w) latent pixels of the blocks not started
    later = later.repeat_interleave(f, 0).repeat_interleave(f, 1).to(images.device)  # (H, W)
    return torch.where(later, placeholder(*later.shape).to(images), images)


@dataclass
class _Run:
    """What every model evaluation of one sampling run shares."""

    model: MADFormer
    cache: object | None  # the KV cache, or None to recompute the prefix every step
    seen: torch.Tensor  # (B, T, Lb, Cpp) what later blocks read of the finished ones (noised copies under c > 0)
    labels: torch.Tensor | None  # (B,) class labels, (2B,) under guidance (the null class second)
    guided: bool  # classifier-free guidance: the batch runs twice
    scale: float  # the guidance scale w
    precision: Callable[[], AbstractContextManager]  # a fresh autocast context (or none) per model call


def _precision(device: torch.device, precision: str) -> Callable[[], AbstractContextManager]:
    if precision == "bf16":
        return partial(torch.autocast, device.type, dtype=torch.bfloat16)
    return nullcontext


def _check_labels(mcfg: ModelConfig, labels: torch.Tensor | None, sc: SampleConfig, device) -> torch.Tensor | None:
    n = mcfg.num_classes
    if labels is None:
        drawn = default_labels(n, sc)
        return None if drawn is None else drawn.to(device)
    if n == 0:
        raise ValueError("labels: this model is unconditional. Fix: pass labels=None.")
    if labels.shape != (sc.num_images,) or int(labels.min()) < 0 or int(labels.max()) >= n:
        raise ValueError(f"labels: need {sc.num_images} class indices in [0, {n}). Fix: pass a (B,) tensor.")
    return labels.to(device)


@torch.inference_mode()
def generate_events(
    model: MADFormer,
    config: Config,
    request: SampleConfig | None = None,
    labels: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> Iterator[Event]:
    """Yield an Event per denoising step and per finished block of `request` (default config.sample; build one
    from keywords with `sample_request`), with `labels` (B,) for a class-conditional model (default: drawn, see
    noise.default_labels), on `device` (default: the model's; an unknown or missing device is an error naming the
    fix). Every setting is checked once, before any work. Noise: image i of seed s draws from its own CPU generator
    (sample.noise_layout "per-image"), so it is the same at any batch size and on any device: workbench.sampling.noise
    documents how seeds map to images."""
    sc = request or config.sample
    mcfg = model.cfg
    plan = check_request(mcfg, config, sc)
    device = resolve_device(device) if device is not None else next(model.parameters()).device
    set_tf32(device, sc.tf32)
    dtype = next(model.parameters()).dtype
    B, T = sc.num_images, mcfg.num_blocks
    labels = _check_labels(mcfg, labels, sc, device)
    guided = labels is not None and sc.cfg_scale != 1.0
    if guided:  # classifier-free guidance: a second half of the batch with the null class
        labels = torch.cat([labels, torch.full_like(labels, mcfg.num_classes)])
    objective = build_objective(config.diffusion, mcfg)
    noise = Noise(sc)
    canvas = torch.zeros(B, T, mcfg.block_tokens, mcfg.token_dim, device=device, dtype=dtype)  # finished blocks
    seen = torch.zeros_like(canvas) if sc.context_noise > 0 else canvas  # what later blocks read of finished ones
    meter = CostMeter(mcfg, sc.use_cache, guided)
    was_training = model.training
    model.eval()
    cache = model.new_cache(2 * B if guided else B, device, dtype) if sc.use_cache else None
    run = _Run(model, cache, seen, labels, guided, sc.cfg_scale, _precision(device, sc.precision))
    if cache is not None:
        with run.precision():
            model.prefill(cache, labels)
    try:
        for k, depths in enumerate(plan):  # depths: D_i of each of block k's S steps
            S = len(depths)
            scheduler = objective.make_scheduler(sc.sampler, S, sc.x0_clip, sc.flow_shift)  # multistep state per block
            with run.precision():
                z_cond = _ar_step(model, cache, seen, k, guided, depths) if cache is not None else {}
            meter.block(k, depths)
            eps = noise.normal((mcfg.block_tokens, mcfg.token_dim)).to(device, dtype)  # (B, Lb, Cpp)
            x = eps * objective.init_sigma(scheduler)
            for i, (t, D) in enumerate(zip(scheduler.timesteps, depths, strict=True)):
                x_in = objective.scale_input(scheduler, x, t)
                out = _denoise(run, k, z_cond.get(D), x_in, t, D).to(dtype)
                meter.step(D)
                x0 = partial(_predicted_block, objective, out, x_in, t)
                x = scheduler.step(out, t, x, generator=noise.scheduler_generator).prev_sample.to(dtype)
                if i == len(scheduler.timesteps) - 1:
                    canvas[:, k] = x
                    if sc.context_noise > 0:
                        c, e = sc.context_noise, noise.context_normal(tuple(x.shape[1:])).to(device)
                        seen[:, k] = ((1 - c) * x.float() + c * e.float()).to(dtype)
                yield _event("step", k, i + 1, S, meter.cost(), (canvas, x, x0, mcfg))
            yield _event("block", k, S, S, meter.cost(), (canvas, x, partial(torch.clone, x), mcfg))
    finally:
        model.train(was_training)


def _event(kind: str, k: int, step: int, steps: int, cost: Cost, state: tuple) -> Event:
    canvas, x_t, x0, mcfg = state
    return Event(
        kind=kind,
        block=k,
        step=step,
        num_blocks=mcfg.num_blocks,
        steps=steps,
        cost=cost,
        _canvas=canvas,
        _block_x_t=x_t,
        _block_x0=x0,
        _cfg=mcfg,
    )


def _ar_step(
    model: MADFormer, cache, canvas: torch.Tensor, k: int, guided: bool, depths: tuple[int, ...]
) -> dict[int, torch.Tensor | None]:
    """The AR stage for block k once (caches the clean copy of block k-1): {D: z_cond} for every D its steps use,
    for the batch (twice under guidance)."""
    prev = canvas[:, k - 1] if k > 0 else None
    if prev is not None and guided:
        prev = torch.cat([prev, prev])
    return model.ar_states(cache, k, prev, depths)


def _denoise(run: _Run, k: int, z_cond, x_in: torch.Tensor, t, depth: int) -> torch.Tensor:
    """One model evaluation on block k at timestep t with diffusion depth `depth` (cached, or recomputing the
    prefix); guidance combined."""
    x_in2 = torch.cat([x_in, x_in]) if run.guided else x_in
    tt = torch.full((x_in2.shape[0],), float(t), device=x_in.device)
    with run.precision():
        out = (
            run.model.denoise_step(run.cache, k, z_cond, x_in2, tt, depth)
            if run.cache is not None
            else _recompute(run, x_in2, k, tt, depth)
        )
    if run.guided:
        cond, uncond = out.chunk(2)
        out = uncond + run.scale * (cond - uncond)
    return out


def _predicted_block(objective: Objective, out: torch.Tensor, x_in: torch.Tensor, t) -> torch.Tensor:
    return objective.predicted_x0(out.float(), x_in.float(), t).to(out.dtype)


def _assemble(canvas: torch.Tensor, k: int, block: torch.Tensor, mcfg: ModelConfig) -> torch.Tensor:
    """(B, C, H, W) latents: canvas blocks < k (final once block k started), `block` at k, zeros after."""
    view = torch.zeros_like(canvas)  # (B, T, Lb, Cpp)
    view[:, :k] = canvas[:, :k]
    view[:, k] = block
    return from_blocks(view, mcfg)


def _recompute(run: _Run, x_in: torch.Tensor, k: int, t: torch.Tensor, depth: int) -> torch.Tensor:
    """No-cache reference: the full teacher-forced pass with finished blocks as context; read slot k."""
    model = run.model
    ctx = torch.cat([run.seen, run.seen]) if run.guided else run.seen  # (nb, T, Lb, Cpp)
    noisy = torch.zeros_like(ctx)
    noisy[:, k] = x_in
    tt = t.view(-1, 1).expand(-1, model.cfg.num_blocks)
    per_sample = model.cfg.elastic_depths or depth != model.cfg.diffusion_depth
    depths = torch.full((ctx.shape[0],), depth, device=ctx.device) if per_sample else None
    pred, _ = model(from_blocks(ctx, model.cfg), from_blocks(noisy, model.cfg), tt, run.labels, depths)
    return to_blocks(pred, model.cfg)[:, k]


def generate(
    model: MADFormer,
    config: Config,
    request: SampleConfig | None = None,
    labels: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    **settings,
) -> torch.Tensor:
    """The final latents (B, C, H, W) of `request` (default config.sample) with any `settings` (fields of the
    request, e.g. num_images=4, steps=20, seed=0) replaced: sample_request builds the request, generate_events runs
    it."""
    last = None
    for last in generate_events(model, config, sample_request(config, request, **settings), labels, device):
        pass
    return last.x_t


# ---- many images at once: what evaluation, the zoo and the benchmarks score ---------------------------------------
OUT_OF_RANGE = (1.0, 1.5)  # pixel bounds whose exceedance eval reports (the codec's range, and well outside it)


def generate_images_checked(
    model, config: Config, n: int, request: SampleConfig | None = None, batch: int = 250, device=None
) -> tuple[torch.Tensor, dict]:
    """n decoded images (n, C, H, W) of `request` (default config.sample; its num_images is ignored) clamped to
    [-1, 1], sampled `batch` at a time on `device` (default the model's, the codec beside it), and the fractions of
    decoded pixel values that lay beyond +-1 and +-1.5 before the clamp ({"pixels_out_of_range": ...,
    "pixels_beyond_1p5": ...}). Per-image layout: image j is image first_image + j of the seed whatever the batch,
    so every S and every model sees the same initial noise (common random numbers make curves comparable with fewer
    images); "batch" layout: batch i uses seed + i, as before per-image seeds."""
    sc = request or config.sample
    device = resolve_device(device) if device is not None else next(model.parameters()).device
    codec = build_codec(config.data, device)
    out, beyond = [], torch.zeros(len(OUT_OF_RANGE), dtype=torch.float64)
    for i, start in enumerate(range(0, n, batch)):
        part = (
            replace(sc, num_images=min(batch, n - start), first_image=sc.first_image + start)
            if sc.noise_layout == "per-image"
            else replace(sc, num_images=min(batch, n - start), seed=sc.seed + i)
        )
        latents = generate(model, config, part, device=device)  # (b, C, h, w)
        with torch.no_grad():
            raw = codec.decode(latents, clamp=False).float()
        beyond += torch.tensor([float((raw.abs() > b).sum()) for b in OUT_OF_RANGE], dtype=torch.float64)
        out.append(raw.clamp(-1, 1))
    images = torch.cat(out)
    frac = (beyond / images.numel()).tolist()
    return images, {"pixels_out_of_range": frac[0], "pixels_beyond_1p5": frac[1]}


def generate_images(
    model, config: Config, n: int, request: SampleConfig | None = None, batch: int = 250, device=None
) -> torch.Tensor:
    """n decoded images (n, C, H, W) in [-1, 1] (see generate_images_checked)."""
    return generate_images_checked(model, config, n, request, batch, device)[0]


def measure_sample_flops(model, config: Config, request: SampleConfig | None = None) -> float:
    """FLOPs per image of a real sampling run of `request` (default config.sample), counted on the fly."""
    sc = request or config.sample
    return count_flops(lambda: generate(model, config, sc)) / sc.num_images


__all__ = [
    "Event",
    "generate_events",
    "generate",
    "frame",
    "placeholder",
    "sample_request",
    "block_plan",
    "generate_images",
    "generate_images_checked",
    "measure_sample_flops",
]
