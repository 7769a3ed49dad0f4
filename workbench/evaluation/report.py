"""The eval report of a checkpoint: `evaluate_checkpoint` loads it, generates and scores in this process (the
`score_features` path of evaluate.py) and returns the Score's fields with the provenance of the checkpoint, of the
reference file (name and sha256) and of the machine, and the cost per image. workbench.evaluation.sharded runs the
same steps (load_for_eval, eval_reference, score_features, checkpoint_report, data_figures) over processes and
resumably.

`data_figures` adds what depends on the training data: FID against the held-out split beside the FID against the
reference (which holds the training images), and the copy share (memorization.py) of every model trained on fewer
than 100,000 distinct images, with the reason it is there or not (`memorization_policy`).

    report = evaluate_checkpoint("data/checkpoints/vertical/D2.safetensors", EvalRequest(num_samples=1000, steps=16))
    report["fid"], report["fid_held_out"]["fid"], report["memorization"]["copy_share"], report["cost"]["paper_cost"]
"""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..core.compute import sample_flops
from ..core.config import Config
from ..core.paths import sha256_file
from ..sampling.sampler import block_plan, measure_sample_flops
from ..training.checkpoint import load_for_inference, read_header, resolve, with_flow_shift
from .evaluate import (
    HELD_OUT_SPLIT,
    Score,
    ScoreSpec,
    default_extractor,
    default_reference,
    held_out_fid,
    sample_images,
    score_features,
)
from .features import extract_features, resolve_extractor
from .memorization import AUTO_BELOW, MemorizationSpec, copy_share_plan, memorization, training_images
from .metrics import ReferenceStats
from .npz import load_any_reference, save_npz


# ---- a checkpoint, with provenance -------------------------------------------------------------------------------
def _weights(header: dict, use_ema: bool) -> str:
    """Which weights were scored: an export holds one set (the EMA weights when its source had them; the
    training loop always keeps EMA), a training checkpoint both."""
    if header["kind"] == "export":
        return header.get("meta", {}).get("weights", "ema")
    return "ema" if use_ema and header.get("ema") is not None else "raw"


@dataclass(frozen=True)
class EvalRequest:
    """What `eval` scores: `num_samples` images at S=`steps` per block with `sampler` and `x0_clip` (None: the
    config's; `sample` holds further sample-section overrides such as {"diffusion_depth": 2}, `flow_shift` the time
    shift of a flow model's schedule), from `seed`, on `device`, with the EMA weights unless not `use_ema`; scored
    by `extractor` (None: default_extractor) against `reference` (a .safetensors or .npz file, or ReferenceStats;
    None: default_reference) with `bootstrap` resamples; `measure_flops` adds a counted sampling run.
    `memorization`: generations searched for the copy share (None: memorization.copy_share_plan's rule, 200 for
    a model trained on fewer than 100,000 distinct images; 0: none), its grid PNG at `memorization_grid`."""

    num_samples: int = 1000
    steps: int | None = None
    sampler: str | None = None
    seed: int = 0
    extractor: str | None = None
    reference: str | Path | ReferenceStats | None = None
    use_ema: bool = True
    bootstrap: int = 50
    measure_flops: bool = True
    x0_clip: str | None = None
    device: str = "cpu"
    sample: dict = field(default_factory=dict)
    flow_shift: float | None = None
    save_reference: Path | None = None  # also write the reference used as .npz here (npz.save_npz)
    attention: str | None = None  # model.attention to sample under, "sdpa" or "flex" (None: the checkpoint's)
    memorization: int | None = None  # generations for the copy share (None: automatic below 100k images; 0: off)
    memorization_grid: Path | None = None  # the copy share's nearest-neighbour grid PNG (None: none)


@dataclass(frozen=True)
class Loaded:
    """A checkpoint loaded for evaluation: the model, its config with the request's sample settings, its header
    and resolved path."""

    model: torch.nn.Module
    config: Config
    header: dict
    path: Path


def load_for_eval(checkpoint: str | Path, request: EvalRequest) -> Loaded:
    """The model and its config with the request's sample overrides (validated: errors name the fix)."""
    if request.num_samples < 10:
        raise ValueError(
            f"eval: --num-samples {request.num_samples} is too few for FID-infinity and a bootstrap interval. "
            "Fix: use at least 10 (1,000 or more for figures you report)."
        )
    r, path = request, resolve(checkpoint)
    model, config = load_for_inference(path, use_ema=r.use_ema, device=r.device, attention=r.attention)  # checksummed
    config = with_flow_shift(config, r.flow_shift).override(
        **{
            "sample.steps": config.sample.steps if r.steps is None else r.steps,
            "sample.sampler": r.sampler or config.sample.sampler,
            "sample.x0_clip": r.x0_clip or config.sample.x0_clip,
            **{f"sample.{k}": v for k, v in (r.sample or {}).items()},
        }
    )
    return Loaded(model, config, read_header(path), path)


def eval_reference(config: Config, extractor, reference, say=lambda message: None) -> ReferenceStats:
    """The reference a request names (a file of either kind, or ReferenceStats), else default_reference."""
    ext = resolve_extractor(extractor)
    if reference is None:
        say(f"reference statistics for {config.data.dataset} with {ext.id}")
        return default_reference(config, ext.name, progress=lambda done, n: say(f"reference features {done}/{n}"))
    if isinstance(reference, ReferenceStats):
        return reference
    say(f"reading reference {reference}")
    return load_any_reference(reference, ext, progress=lambda done, n: say(f"reference features {done}/{n}"))


def score_spec(loaded: Loaded, request: EvalRequest, reference: ReferenceStats | None) -> ScoreSpec:
    """The ScoreSpec of a request for a loaded checkpoint."""
    c, r = loaded.config, request
    return ScoreSpec(
        n=r.num_samples,
        seed=r.seed,
        sampler=c.sample.sampler,
        extractor=resolve_extractor(r.extractor or default_extractor(c)).to(next(loaded.model.parameters()).device),
        reference=reference,
        weights=_weights(loaded.header, r.use_ema),
        bootstrap=r.bootstrap,
    )


def evaluate_checkpoint(checkpoint: str | Path, request: EvalRequest = EvalRequest(), progress=None) -> dict:
    """Score `request.num_samples` images of `checkpoint` in this process as `request` says; returns the report:
    the Score's fields, the checkpoint's and the reference's provenance, and the cost. (workbench.evaluation.
    sharded runs the same over processes, resumably.)"""
    say = progress or (lambda message: None)
    loaded = load_for_eval(checkpoint, request)
    spec = score_spec(loaded, request, None)
    spec = replace(spec, reference=eval_reference(loaded.config, spec.extractor, request.reference, say))
    steps, sampler = loaded.config.sample.steps, spec.sampler
    say(f"generating {spec.n} images, {sampler} S={steps}")
    samples = sample_images(loaded.model, loaded.config, spec.n, steps, sampler, spec.seed)
    say(f"scoring with {spec.extractor.id} against {spec.reference.name}")
    images, health, seconds = samples
    features = extract_features(spec.extractor, images)  # (n, F), once: FID, held-out FID and copies read them
    s = score_features(loaded.config, steps, spec, features, {**health, "seconds_per_image": seconds / len(images)})
    report = checkpoint_report(loaded, request, s, spec.reference, seconds)
    save_reference_copy(request, spec.reference, report)
    report.update(data_figures(loaded, request, spec, (features, images), say))
    return report


def data_figures(loaded: Loaded, request: EvalRequest, spec: ScoreSpec, generated: tuple, say=None) -> dict:
    """The report's sections that read the training data: `fid_held_out` (evaluate.held_out_fid, beside the
    dataset's own reference; with --reference a note says why not), `memorization_policy` (how many images the
    model was trained on, the threshold, whether and why the copy share is computed) and, where it is,
    `memorization`. `generated`: (features (n, F) of spec.extractor, the images or None: regenerated for the
    pixel distances, the same images by their per-image seeds)."""
    say = say or (lambda message: None)
    features, images = generated
    config = loaded.config
    if request.reference is None:
        say(f"FID against the held-out split ({HELD_OUT_SPLIT})")
        held = held_out_fid(config, spec, features, lambda done, n: say(f"held-out features {done}/{n}"))
    else:
        held = {
            "fid": None,
            "split": HELD_OUT_SPLIT,
            "note": "not computed: the FID is against the file --reference names, not against this dataset's "
            "images; leave --reference out for FID against the training and the held-out images side by side",
        }
    trained_on = training_images(loaded.header, config)
    n, why = copy_share_plan(request.memorization, trained_on, len(features))
    policy = {"training_images": trained_on["count"], "source": trained_on["source"], "threshold": AUTO_BELOW}
    out = {"fid_held_out": held, "memorization_policy": {**policy, "generations": n, "why": why}}
    if not n:
        return out
    say(f"memorisation: {n} generations against every training image ({why})")
    mspec = MemorizationSpec(n=n, seed=spec.seed, extractor=spec.extractor, grid=request.memorization_grid)
    same_images = images is not None or config.sample.noise_layout == "per-image"  # features of images 0..n-1
    try:
        out["memorization"] = memorization(loaded.model, config, mspec, (images, features if same_images else None))
    except (FileNotFoundError, ValueError) as err:
        if request.memorization:  # asked for: the error names the fix
            raise
        out["memorization_policy"].update(generations=0, why=f"not computed: {err}")
    return out


def save_reference_copy(request: EvalRequest, reference: ReferenceStats, report: dict) -> None:
    """Write the reference as .npz where the request asks (--save-reference), and note the file in the report."""
    if request.save_reference is not None:
        digest = save_npz(reference, request.save_reference)
        report["saved_reference"] = {"file": str(request.save_reference), "sha256": digest, "layout": "npz mu/sigma"}


def checkpoint_report(
    loaded: Loaded, request: EvalRequest, s: Score, ref: ReferenceStats, seconds_generate: float
) -> dict:
    """The eval report: the Score's fields, provenance (checkpoint, reference file, machine) and the cost."""
    model, config, header, path = loaded.model, loaded.config, loaded.header, loaded.path
    num_samples = s.n
    m = config.model
    analytic = sample_flops(m, block_plan(m, config.sample))  # the schedules of config.sample counted
    cost = {
        "unit_note": "block-layer evaluations per image; FLOPs per image (matmuls, no guidance; the measured "
        "count includes the second batch half of guidance, when guided)",
        "paper_cost": s.paper_cost,
        "cached_cost": s.cached_cost,
        "flops_analytic": sum(analytic.values()),
        "flops_attention_analytic": analytic["attention"],
    }
    if request.measure_flops:
        measured = measure_sample_flops(model, config, replace(config.sample, num_images=1, use_cache=True))
        cost.update(flops_measured=measured, flops_measured_over_analytic=round(measured / cost["flops_analytic"], 4))
    cost.update(
        seconds_generate=round(seconds_generate, 3),
        seconds_per_image=round(s.seconds_per_image, 5),
        images_per_s=round(num_samples / seconds_generate, 2) if seconds_generate else None,
        seconds_score=round(s.seconds_score, 3),
    )
    return {
        **{
            k: v
            for k, v in s.as_dict().items()
            if k not in ("paper_cost", "cached_cost", "seconds_per_image", "seconds_score")
        },
        "prediction": config.diffusion.prediction,
        "flow_shift": config.sample.flow_shift if config.diffusion.prediction == "flow" else None,
        "context_noise": config.sample.context_noise,
        "noise_layout": config.sample.noise_layout,  # "per-image" seeds; reports without the field used "batch"
        "reference_card": {
            k: ref.card.get(k)
            for k in ("dataset", "split", "subset", "image_size", "dataset_transform", "created", "layout")
            if k in ref.card
        },
        "reference_file": ref.source.get("file"),
        "reference_sha256": ref.source.get("sha256"),
        "checkpoint": str(path),
        "checkpoint_sha256": sha256_file(path),
        "checkpoint_step": header["step"],
        "checkpoint_kind": header["kind"],
        "checkpoint_dtype": header.get("meta", {}).get("dtype", "float32"),
        "name": config.name,
        "model": {
            "N": m.depth,
            "D": m.diffusion_depth,
            "T": m.num_blocks,
            "width": m.width,
            "patch": m.patch_size,
            "towers": m.towers,
            "timestep_conditioning": m.timestep_conditioning,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "data": {"dataset": config.data.dataset, "image_size": config.data.image_size},
        "guidance": {
            "cfg_scale": config.sample.cfg_scale,
            "labels": (
                "drawn in the training set's class proportions"
                if config.sample.class_counts
                else "cycling through the classes"
            ),
        }
        if m.num_classes
        else None,
        "cost": cost,
        "machine": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "device": str(next(model.parameters()).device),
        },
    }
