"""Block-wise sampling as a generator of events (one per denoising step and one per finished block).

With the cache (default) each block runs the AR stage once and each step runs only the D diffusion layers on
the block's tokens. Without it every step recomputes the whole teacher-forced sequence (the test reference).
D may change from block to block (`depth_schedule`) and from step to step (`depth_per_step`): a block's AR stage
then runs once to its smallest boundary N - min D_i and each step enters the diffusion stage at its own N - D_i.
Notebooks, the app, the CLI and the benchmarks all consume `generate_events`; nothing here prints or plots.
`frame` turns an event into the images a viewer shows while the later blocks are not generated yet.

Batched generation: `generate_events(..., rows=[Rows(...), ...])` samples the images of several compatible
requests (request.batch_key) in one batch, each row with its own noise; `Event.part(g)` is row group g's share of
an event, and sending group indices into the generator takes those groups out of the batch at the next block.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache, partial

import torch

from ..core.blocks import block_index_map, from_blocks, to_blocks
from ..core.compute import Cost, CostMeter, count_flops
from ..core.config import Config, ModelConfig, SampleConfig
from ..core.devices import resolve_device, set_tf32
from ..core.diffusion import Objective
from ..core.model import MADFormer
from ..core.objectives import build_objective
from ..data.codecs import Codec, build_codec
from .noise import Noise, Rows, default_labels, rows_of
from .request import batch_key, block_plan, check_request, sample_request


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
    _spans: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)  # row group -> its rows [a, b)

    @property
    def groups(self) -> tuple[int, ...]:
        """The row groups (indices into generate_events' `rows`) still in the batch at this event."""
        return tuple(self._spans)

    def part(self, group: int) -> Event:
        """This event with row group `group` only: its images, as a request of them alone sees them. A group
        that has left the batch is a ValueError."""
        if group not in self._spans:
            raise ValueError(
                f"rows: group {group} is not in this batch (it left, or never was). Fix: read {self.groups}."
            )
        a, b = self._spans[group]
        full = self._block_x0
        return replace(
            self,
            _canvas=self._canvas[a:b],
            _block_x_t=self._block_x_t[a:b],
            _block_x0=lambda: full()[a:b],
            _spans={group: (0, b - a)},
        )

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


def _rows(sc: SampleConfig, labels: torch.Tensor | None, rows: Sequence[Rows] | None) -> tuple[Rows, ...]:
    if rows is None:
        return rows_of(sc, labels)
    if labels is not None:
        raise ValueError("labels: given beside rows. Fix: give each Rows its labels, and labels=None.")
    if not rows or not all(isinstance(r, Rows) for r in rows):
        raise ValueError("rows: need a non-empty sequence of Rows. Fix: pass [Rows(seed, first_image, n), ...].")
    return tuple(rows)


def _check_labels(mcfg: ModelConfig, rows: tuple[Rows, ...], sc: SampleConfig, device) -> torch.Tensor | None:
    """(B,) the labels of every row, in order: given, or drawn as each group's request alone draws them."""
    n, out = mcfg.num_classes, []
    for r in rows:
        if r.labels is None:
            out.append(default_labels(n, r.request(sc)))
            continue
        if n == 0:
            raise ValueError("labels: this model is unconditional. Fix: pass labels=None.")
        if r.labels.shape != (r.num_images,) or int(r.labels.min()) < 0 or int(r.labels.max()) >= n:
            raise ValueError(f"labels: need {r.num_images} class indices in [0, {n}). Fix: pass a (B,) tensor.")
        out.append(r.labels.cpu())
    return None if n == 0 else torch.cat(out).to(device)


def _spans(rows: Sequence[Rows], groups: Sequence[int]) -> dict[int, tuple[int, int]]:
    """{group: (first row, end row)} of the groups in the batch, in their order."""
    ends = torch.tensor([rows[g].num_images for g in groups]).cumsum(0).tolist()
    return {g: (end - rows[g].num_images, end) for g, end in zip(groups, ends)}


@torch.inference_mode()
def generate_events(
    model: MADFormer,
    config: Config,
    request: SampleConfig | None = None,
    labels: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    rows: Sequence[Rows] | None = None,
) -> Generator[Event, Collection[int] | None, None]:
    """Yield an Event per denoising step and per finished block of `request` (default config.sample; build one
    from keywords with `sample_request`), with `labels` (B,) for a class-conditional model (default: drawn, see
    noise.default_labels), on `device` (default: the model's; an unknown or missing device is an error naming the
    fix). Every setting is checked once, before any work. Noise: image i of seed s draws from its own CPU generator
    (sample.noise_layout "per-image"), so it is the same at any batch size and on any device: workbench.sampling.noise
    documents how seeds map to images.

    `rows` (several `Rows`, each with its labels or None) replace the request's seed, first_image, num_images and
    `labels`: one batch holds the images of several requests that request.batch_key allows to share it, each row
    with the noise and labels it would have alone, so group g's images (`Event.part(g)`) are those of its request
    sampled alone, up to the last bits a matmul's rounding changes with the batch size. `generator.send(groups)`
    (at any event) takes those row groups out of the batch at the next block boundary: no later model evaluation
    computes their rows, the others go on as before; the generator ends when no group is left."""
    sc = request or config.sample
    mcfg = model.cfg
    plan = check_request(mcfg, config, sc)
    rows = _rows(sc, labels, rows)
    device = resolve_device(device) if device is not None else next(model.parameters()).device
    set_tf32(device, sc.tf32)
    dtype = next(model.parameters()).dtype
    noise = Noise(sc, rows)
    B, T, spans = noise.num_images, mcfg.num_blocks, _spans(rows, range(len(rows)))
    labels = _check_labels(mcfg, rows, sc, device)
    guided = labels is not None and sc.cfg_scale != 1.0
    if guided:  # classifier-free guidance: a second half of the batch with the null class
        labels = torch.cat([labels, torch.full_like(labels, mcfg.num_classes)])
    objective = build_objective(config.diffusion, mcfg)
    canvas = torch.zeros(B, T, mcfg.block_tokens, mcfg.token_dim, device=device, dtype=dtype)  # finished blocks
    seen = torch.zeros_like(canvas) if sc.context_noise > 0 else canvas  # what later blocks read of finished ones
    meter = CostMeter(mcfg, sc.use_cache, guided)
    was_training = model.training
    model.eval()
    cache = model.new_cache(2 * B if guided else B, device, dtype) if sc.use_cache else None
    run = _Run(model, cache, seen, labels, guided, sc.cfg_scale, _precision(device, sc.precision))
    leaving: set[int] = set()  # row groups sent to leave at the next block boundary
    if cache is not None:
        with run.precision():
            model.prefill(cache, labels)
    try:
        for k, depths in enumerate(plan):  # depths: D_i of each of block k's S steps
            if leaving & set(spans):
                keep = [g for g in spans if g not in leaving]
                if not keep:
                    return
                run, canvas = _keep_rows(run, canvas, spans, keep, noise)
                spans = _spans(rows, keep)
            S = len(depths)
            scheduler = objective.make_scheduler(sc.sampler, S, sc.x0_clip, sc.flow_shift)  # multistep state per block
            with run.precision():
                z_cond = _ar_step(model, run.cache, run.seen, k, guided, depths) if run.cache is not None else {}
            meter.block(k, depths)
            eps = noise.normal((mcfg.block_tokens, mcfg.token_dim)).to(device, dtype)  # (B, Lb, Cpp)
            x = eps * objective.init_sigma(scheduler)
            for i, (t, D) in enumerate(zip(scheduler.timesteps, depths, strict=True)):
                x_in = objective.scale_input(scheduler, x, t)
                out = _denoise(run, k, z_cond.get(D), x_in, t, D).to(dtype)
                meter.step(D)
                x0 = lru_cache(1)(partial(_predicted_block, objective, out, x_in, t))  # once for all groups
                x = scheduler.step(out, t, x, generator=noise.scheduler_generator).prev_sample.to(dtype)
                if i == len(scheduler.timesteps) - 1:
                    canvas[:, k] = x
                    if sc.context_noise > 0:
                        c, e = sc.context_noise, noise.context_normal(tuple(x.shape[1:])).to(device)
                        run.seen[:, k] = ((1 - c) * x.float() + c * e.float()).to(dtype)
                leaving |= _sent((yield _event("step", k, i + 1, S, meter.cost(), (canvas, x, x0, mcfg, spans))), rows)
            block = _event("block", k, S, S, meter.cost(), (canvas, x, partial(torch.clone, x), mcfg, spans))
            leaving |= _sent((yield block), rows)
    finally:
        model.train(was_training)


def _sent(groups: Collection[int] | None, rows: tuple[Rows, ...]) -> set[int]:
    """The row groups a consumer sent to leave the batch (None: nothing sent)."""
    if groups is None:
        return set()
    bad = [g for g in groups if not (isinstance(g, int) and 0 <= g < len(rows))]
    if bad:
        raise ValueError(f"rows: cannot drop group(s) {bad}: the batch has groups 0..{len(rows) - 1}. Fix: send those.")
    return set(groups)


def _keep_rows(
    run: _Run, canvas: torch.Tensor, spans: dict[int, tuple[int, int]], keep: list[int], noise: Noise
) -> tuple[_Run, torch.Tensor]:
    """The run and canvas with the rows of the groups in `keep` only (the others left the batch): cache, labels,
    context copies and noise generators alike (both halves under guidance)."""
    index = [r for g in keep for r in range(*spans[g])]
    noise.keep(index)
    rows = torch.tensor(index, device=canvas.device)
    both = torch.cat([rows, rows + canvas.shape[0]]) if run.guided else rows
    if run.cache is not None:
        run.cache.k = [t[both] for t in run.cache.k]
        run.cache.v = [t[both] for t in run.cache.v]
    kept = canvas[rows]
    seen = kept if run.seen is canvas else run.seen[rows]
    labels = None if run.labels is None else run.labels[both]
    return replace(run, seen=seen, labels=labels), kept


def _event(kind: str, k: int, step: int, steps: int, cost: Cost, state: tuple) -> Event:
    canvas, x_t, x0, mcfg, spans = state
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
        _spans=spans,
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
    "Rows",
    "batch_key",
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
