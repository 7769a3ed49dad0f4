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
from dataclasses import dataclass, field
from functools import cached_property, partial

import torch

from ..core.blocks import block_index_map, from_blocks, to_blocks
from ..core.compute import Cost, CostMeter, count_flops
from ..core.config import Config, ModelConfig, SampleConfig, check_sampler, replace
from ..core.diffusion import Objective
from ..core.model import MADFormer
from ..core.objectives import build_objective
from ..data.codecs import Codec, build_codec


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


LABEL_SEED_OFFSET = 7919  # the label draw's generator: seed + this, apart from the noise's generator (seed)
CONTEXT_SEED = 104729  # sample.context_noise's generator: seed + this, apart from the blocks' initial noise


def default_labels(model: MADFormer, num_images: int, device, counts: tuple = (), seed: int = 0) -> torch.Tensor | None:
    """Class labels for samples not given any (None for unconditional models): cycling through the classes, or,
    with `counts` (sample.class_counts: the training set's images per class), drawn in those proportions from a
    generator of `seed`, so that grids and FID see the classes as often as the data does (classes without images
    are never drawn)."""
    n = model.cfg.num_classes
    if not n:
        return None
    if not counts:
        return torch.arange(num_images, device=device) % n
    gen = torch.Generator(device="cpu").manual_seed(seed + LABEL_SEED_OFFSET)
    weights = torch.tensor(counts, dtype=torch.float64)
    return torch.multinomial(weights, num_images, replacement=True, generator=gen).to(device)


def sample_settings(config: Config, **given) -> SampleConfig:
    """config.sample with the given (not None) fields replaced, validated (steps=0 is an error, not the default),
    and checked against the objective (a flow model takes flow samplers)."""
    sc = replace(config.sample, **{k: v for k, v in given.items() if v is not None})
    check_sampler(config.diffusion.prediction, sc.sampler, sc.x0_clip)
    return sc


def block_plan(mcfg: ModelConfig, sc: SampleConfig) -> tuple[tuple[int, ...], ...]:
    """The diffusion depth D of every step i of every block k (block k has S_k = len(plan[k]) steps): per-step
    depths spread over each block's steps (sc.depth_per_step), else per-block depths (sc.depth_schedule), else one
    D (sc.diffusion_depth, default the model's); S_k from sc.steps_schedule, else sc.steps. A depth the model was
    not trained at is an error naming its set, unless sc.allow_untrained_depth."""
    T = mcfg.num_blocks
    steps = tuple(sc.steps_schedule) or (sc.steps,) * T
    depths = tuple(sc.depth_schedule) or (sc.diffusion_depth or mcfg.diffusion_depth,) * T
    for name, values in (("sample.depth_schedule", depths), ("sample.steps_schedule", steps)):
        if len(values) != T:
            raise ValueError(
                f"{name}: {list(values)} has {len(values)} entries for T={T} blocks. Fix: give one per "
                "block, or leave it empty."
            )
    source = (
        "sample.depth_per_step"
        if sc.depth_per_step
        else "sample.depth_schedule"
        if sc.depth_schedule
        else "sample.diffusion_depth"
    )
    if sc.depth_per_step:
        P = len(sc.depth_per_step)
        if P > min(steps):
            raise ValueError(
                f"{source}: {list(sc.depth_per_step)} has {P} values for a block of S_k={min(steps)} "
                f"steps, so some would never run. Fix: give at most {min(steps)} values (one per step "
                "at most), or sample with more steps per block."
            )
        plan = tuple(tuple(sc.depth_per_step[i * P // S] for i in range(S)) for S in steps)
    else:
        plan = tuple((d,) * S for d, S in zip(depths, steps))
    used = sorted({d for ds in plan for d in ds})
    if used[-1] > mcfg.depth:
        raise ValueError(
            f"{source}: D={used[-1]} exceeds the model's N={mcfg.depth} layers. Fix: use depths in 1..{mcfg.depth}."
        )
    bad = [d for d in used if d not in mcfg.depths]
    if bad and not mcfg.movable_boundary:
        raise ValueError(
            f"{source}: D={bad[0]} differs from this model's D={mcfg.diffusion_depth}, and its ablated "
            "architecture fixes the boundary. Fix: sample at its own D."
        )
    if bad and not sc.allow_untrained_depth:
        raise ValueError(
            f"{source}: D={', '.join(map(str, bad))} is not a depth this model was trained at "
            f"({', '.join(map(str, mcfg.depths))}). Fix: pick one of them (an elastic checkpoint "
            "trains a set), or set sample.allow_untrained_depth=true to sample anyway (D <= N="
            f"{mcfg.depth}; reports label it untrained)."
        )
    return plan


def _check_labels(
    model: MADFormer, labels: torch.Tensor | None, num_images: int, device, counts: tuple = (), seed: int = 0
) -> torch.Tensor | None:
    n = model.cfg.num_classes
    if labels is None:
        return default_labels(model, num_images, device, counts, seed)
    if n == 0:
        raise ValueError("labels: this model is unconditional. Fix: pass labels=None.")
    if labels.shape != (num_images,) or int(labels.min()) < 0 or int(labels.max()) >= n:
        raise ValueError(f"labels: need {num_images} class indices in [0, {n}). Fix: pass a (B,) tensor.")
    return labels


@torch.inference_mode()
def generate_events(
    model: MADFormer,
    config: Config,
    num_images: int | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int | None = None,
    use_cache: bool | None = None,
    labels: torch.Tensor | None = None,
    cfg_scale: float | None = None,
    device: torch.device | str | None = None,
    **schedule,
) -> Iterator[Event]:
    """Yield an Event per denoising step and per finished block; arguments left None come from config.sample
    (`diffusion_depth`, the per-block schedules and `depth_per_step` included: see block_plan)."""
    sc = sample_settings(
        config,
        num_images=num_images,
        steps=steps,
        sampler=sampler,
        seed=seed,
        use_cache=use_cache,
        cfg_scale=cfg_scale,
        **schedule,
    )
    mcfg = model.cfg
    if mcfg != config.model:
        raise ValueError("config.model does not describe this model. Fix: pass the config the model was built from.")
    plan = block_plan(mcfg, sc)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    B, T = sc.num_images, mcfg.num_blocks
    if sc.cfg_scale != 1.0 and not mcfg.num_classes:
        raise ValueError(
            f"cfg_scale={sc.cfg_scale:g}: classifier-free guidance needs a class-conditional model, and "
            "this one is unconditional. Fix: use cfg_scale=1 (no guidance)."
        )
    labels = _check_labels(model, labels, B, device, sc.class_counts, sc.seed)
    guided = labels is not None and sc.cfg_scale != 1.0
    if guided:  # classifier-free guidance: a second half of the batch with the null class
        labels = torch.cat([labels, torch.full_like(labels, mcfg.num_classes)])
    objective = build_objective(config.diffusion, mcfg)
    gen = torch.Generator(device="cpu").manual_seed(sc.seed)
    canvas = torch.zeros(B, T, mcfg.block_tokens, mcfg.token_dim, device=device, dtype=dtype)  # finished blocks
    seen, noise_gen = canvas, None  # what later blocks read of the finished ones: the blocks, or noised copies
    if sc.context_noise > 0:  # a generator of its own: the blocks' initial noise is the clean sampler's
        seen, noise_gen = torch.zeros_like(canvas), torch.Generator(device="cpu").manual_seed(sc.seed + CONTEXT_SEED)
    meter = CostMeter(mcfg, sc.use_cache, guided)
    was_training = model.training
    model.eval()
    cache = model.new_cache(2 * B if guided else B, device, dtype) if sc.use_cache else None
    if cache is not None:
        model.prefill(cache, labels)
    try:
        for k, depths in enumerate(plan):  # depths: D_i of each of block k's S steps
            S = len(depths)
            scheduler = objective.make_scheduler(sc.sampler, S, sc.x0_clip)  # multistep state is per block
            z_cond = _ar_step(model, cache, seen, k, guided, depths) if cache is not None else {}
            meter.block(k, depths)
            x = torch.randn(B, mcfg.block_tokens, mcfg.token_dim, generator=gen).to(
                device, dtype
            ) * objective.init_sigma(scheduler)
            for i, (t, D) in enumerate(zip(scheduler.timesteps, depths, strict=True)):
                x_in = objective.scale_input(scheduler, x, t)
                out = _denoise(model, cache, seen, k, z_cond.get(D), x_in, t, labels, guided, sc.cfg_scale, D)
                meter.step(D)
                x0 = partial(_predicted_block, objective, out, x_in, t)
                x = scheduler.step(out, t, x, generator=gen).prev_sample.to(dtype)
                if i == len(scheduler.timesteps) - 1:
                    canvas[:, k] = x
                    if noise_gen is not None:
                        c, eps = sc.context_noise, torch.randn(x.shape, generator=noise_gen).to(device)
                        seen[:, k] = ((1 - c) * x.float() + c * eps.float()).to(dtype)
                yield Event("step", k, i + 1, T, S, meter.cost(), canvas, x, x0, mcfg)
            yield Event("block", k, S, T, S, meter.cost(), canvas, x, partial(torch.clone, x), mcfg)
    finally:
        model.train(was_training)


def _ar_step(
    model: MADFormer, cache, canvas: torch.Tensor, k: int, guided: bool, depths: tuple[int, ...]
) -> dict[int, torch.Tensor | None]:
    """The AR stage for block k once (caches the clean copy of block k-1): {D: z_cond} for every D its steps use,
    for the batch (twice under guidance)."""
    prev = canvas[:, k - 1] if k > 0 else None
    if prev is not None and guided:
        prev = torch.cat([prev, prev])
    return model.ar_states(cache, k, prev, depths)


def _denoise(
    model: MADFormer,
    cache,
    canvas: torch.Tensor,
    k: int,
    z_cond,
    x_in: torch.Tensor,
    t,
    labels: torch.Tensor | None,
    guided: bool,
    scale: float,
    depth: int,
) -> torch.Tensor:
    """One model evaluation on block k at timestep t with diffusion depth `depth` (cached, or recomputing the
    prefix); guidance combined."""
    x_in2 = torch.cat([x_in, x_in]) if guided else x_in
    tt = torch.full((x_in2.shape[0],), float(t), device=x_in.device)
    out = (
        model.denoise_step(cache, k, z_cond, x_in2, tt, depth)
        if cache is not None
        else _recompute(model, canvas, x_in2, k, tt, labels, guided, depth)
    )
    if guided:
        cond, uncond = out.chunk(2)
        out = uncond + scale * (cond - uncond)
    return out


def _predicted_block(objective: Objective, out: torch.Tensor, x_in: torch.Tensor, t) -> torch.Tensor:
    return objective.predicted_x0(out.float(), x_in.float(), t).to(out.dtype)


def _assemble(canvas: torch.Tensor, k: int, block: torch.Tensor, mcfg: ModelConfig) -> torch.Tensor:
    """(B, C, H, W) latents: canvas blocks < k (final once block k started), `block` at k, zeros after."""
    view = torch.zeros_like(canvas)  # (B, T, Lb, Cpp)
    view[:, :k] = canvas[:, :k]
    view[:, k] = block
    return from_blocks(view, mcfg)


def _recompute(
    model: MADFormer,
    canvas: torch.Tensor,
    x_in: torch.Tensor,
    k: int,
    t: torch.Tensor,
    labels: torch.Tensor | None,
    guided: bool,
    depth: int,
) -> torch.Tensor:
    """No-cache reference: the full teacher-forced pass with finished blocks as context; read slot k."""
    ctx = torch.cat([canvas, canvas]) if guided else canvas  # (nb, T, Lb, Cpp)
    noisy = torch.zeros_like(ctx)
    noisy[:, k] = x_in
    tt = t.view(-1, 1).expand(-1, model.cfg.num_blocks)
    per_sample = model.cfg.elastic_depths or depth != model.cfg.diffusion_depth
    depths = torch.full((ctx.shape[0],), depth, device=ctx.device) if per_sample else None
    pred, _ = model(from_blocks(ctx, model.cfg), from_blocks(noisy, model.cfg), tt, labels, depths)
    return to_blocks(pred, model.cfg)[:, k]


def generate(
    model: MADFormer,
    config: Config,
    num_images: int | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int | None = None,
    use_cache: bool | None = None,
    **kwargs,
) -> torch.Tensor:
    """Drain generate_events and return the final latents (B, C, H, W)."""
    last = None
    for last in generate_events(model, config, num_images, steps, sampler, seed, use_cache, **kwargs):
        pass
    return last.x_t


# ---- many images at once: what evaluation, the zoo and the benchmarks score ---------------------------------------
OUT_OF_RANGE = (1.0, 1.5)  # pixel bounds whose exceedance eval reports (the codec's range, and well outside it)


def generate_images_checked(
    model, config: Config, n: int, steps: int, sampler: str = "ddim", seed: int = 0, batch: int = 250
) -> tuple[torch.Tensor, dict]:
    """n decoded images (n, C, H, W) clamped to [-1, 1], and the fractions of decoded pixel values that lay beyond
    +-1 and +-1.5 before the clamp ({"pixels_out_of_range": ..., "pixels_beyond_1p5": ...}). Batch i uses
    seed + i, so every S and every model sees the same initial noise (common random numbers make curves
    comparable with fewer images)."""
    codec = build_codec(config.data)
    out, beyond = [], torch.zeros(len(OUT_OF_RANGE), dtype=torch.float64)
    for i, start in enumerate(range(0, n, batch)):
        latents = generate(
            model, config, num_images=min(batch, n - start), steps=steps, sampler=sampler, seed=seed + i
        )  # (b, C, h, w)
        with torch.no_grad():
            raw = codec.decode(latents, clamp=False).float()
        beyond += torch.tensor([float((raw.abs() > b).sum()) for b in OUT_OF_RANGE], dtype=torch.float64)
        out.append(raw.clamp(-1, 1))
    images = torch.cat(out)
    frac = (beyond / images.numel()).tolist()
    return images, {"pixels_out_of_range": frac[0], "pixels_beyond_1p5": frac[1]}


def generate_images(
    model, config: Config, n: int, steps: int, sampler: str = "ddim", seed: int = 0, batch: int = 250
) -> torch.Tensor:
    """n decoded images (n, C, H, W) in [-1, 1] (see generate_images_checked)."""
    return generate_images_checked(model, config, n, steps, sampler, seed, batch)[0]


def measure_sample_flops(model, config, steps: int, num_images: int = 1, use_cache: bool = True) -> float:
    """FLOPs per image of a real sampling run (generate with the config's sampler), counted on the fly."""
    return (
        count_flops(lambda: generate(model, config, num_images=num_images, steps=steps, use_cache=use_cache))
        / num_images
    )
