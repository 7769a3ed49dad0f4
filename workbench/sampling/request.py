"""Building and checking a sampling request (a `SampleConfig`): the one path by which settings reach the sampler.

`sample_request(config, request, **given)` is the only place keywords become settings: it starts from `request`
(default `config.sample`), replaces the given fields and returns a validated request. `check_request` runs the
checks that need the model and its objective, once per sampling call, and returns the depth plan of every step.
`batch_key` says which requests may share a batch (batched generation): the one rule of compatibility.
"""

from __future__ import annotations

from dataclasses import fields, replace

from ..core.config import Config, ModelConfig, SampleConfig
from ..core.configio import coerce
from ..core.devices import resolve_device

_FIELDS = {f.name: f for f in fields(SampleConfig)}


def sample_request(config: Config, request: SampleConfig | None = None, **given) -> SampleConfig:
    """`request` (default config.sample) with the given, not-None fields replaced: a validated request. An unknown
    setting, a value out of range or a sampler that does not fit the objective is an error naming the field and the
    fix (steps=0 is an error, not the default)."""
    unknown = sorted(set(given) - set(_FIELDS))
    if unknown:
        raise ValueError(
            f"sample: unknown setting(s) {unknown}. Fix: use fields of the sampling request "
            f"({', '.join(sorted(_FIELDS))})."
        )
    # text and lists become the field types ("3,2,1" -> (3, 2, 1)); a bad value names the field
    changes = {k: coerce(v, _FIELDS[k], f"sample.{k}") for k, v in given.items() if v is not None}
    sc = replace(request or config.sample, **changes)
    sc.check_objective(config.diffusion.prediction)
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


def check_request(mcfg: ModelConfig, config: Config, sc: SampleConfig) -> tuple[tuple[int, ...], ...]:
    """Every check of `sc` against the model (`mcfg`) and its config, once: the config describes the model, the
    sampler fits the objective, guidance has classes to guide; returns block_plan's depth of every step."""
    if mcfg != config.model:
        raise ValueError("config.model does not describe this model. Fix: pass the config the model was built from.")
    sc.check_objective(config.diffusion.prediction)
    if sc.cfg_scale != 1.0 and not mcfg.num_classes:
        raise ValueError(
            f"sample.cfg_scale={sc.cfg_scale:g}: classifier-free guidance needs a class-conditional model, and "
            "this one is unconditional. Fix: use cfg_scale=1 (no guidance)."
        )
    return block_plan(mcfg, sc)


# what may differ between requests that share a batch: which images they are (their rows) and nothing else
ROW_FIELDS = ("seed", "first_image", "num_images")


def batch_key(model, config: Config, request: SampleConfig, device=None) -> tuple | None:
    """What must be equal for requests to share one batch (one model evaluation per step for all their images):
    the same model object (checkpoint and weights) on the same device, the same objective, and every setting of
    the request but its rows (seed, first_image, num_images; labels are per row too): depth plan, steps, sampler,
    guidance, flow shift, x0 clipping, context noise, class proportions, precision, cache. Requests with equal keys
    may be batched; None for a request that never shares (the batch noise layout draws a whole batch at once).
    Every image of a shared batch draws exactly the noise it would alone (workbench.sampling.noise)."""
    if request.noise_layout != "per-image":
        return None
    where = resolve_device(device) if device is not None else next(model.parameters()).device
    settings = replace(request, **{f: _FIELDS[f].default for f in ROW_FIELDS})
    return (model, str(where), config.diffusion, settings)


__all__ = ["sample_request", "block_plan", "check_request", "batch_key", "ROW_FIELDS"]
