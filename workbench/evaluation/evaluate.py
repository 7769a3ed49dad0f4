"""Scoring samples: one function, `score`, turns (model, sampler, steps) into a `Score` (FID with its bootstrap
interval, FID-infinity, KID, sampler health, cost per image, provenance). Every caller uses it: the eval CLI
(`evaluate_checkpoint`, which adds the checkpoint's provenance and measured FLOPs), the zoo and the notebooks
(`evaluate_curve`: one Score per S), the benchmarks and the app (reference statistics from `shipped_reference`).

    report = evaluate_checkpoint("data/checkpoints/vertical/D2.safetensors", num_samples=1000, steps=16)
    report["fid"], report["extractor"], report["reference"], report["cost"]["paper_cost"]

The extractor defaults to the Fashion-MNIST classifier for Fashion-MNIST models (fast, what the zoo reports) and
to Inception elsewhere. The reference defaults to the largest shipped statistics of the model's dataset, image
size, reference split and extractor in data/reference/, else to statistics computed once (`build_reference`, cached
there) from up to 10,000 images of that split: the training images, or every image (train and held out) of the
Fluent 3D sets, whose 3,391 images are few for 2048-d Inception statistics.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..core.compute import sample_flops, schedule_costs
from ..core.config import Config, DataConfig
from ..core.paths import REFERENCE_DIR, sha256_file
from ..data.datasets import build_dataset
from ..sampling.sampler import block_plan, generate_images_checked, measure_sample_flops
from ..training.checkpoint import load_for_inference, read_header, resolve, with_flow_shift
from .features import resolve_extractor
from .metrics import ReferenceStats, compute_fid, load_reference, reference_stats

EVAL_STEPS = (2, 4, 8, 16, 32)  # the S grid of every evaluation curve (the zoo's curves)

DEFAULT_REFERENCE_N = 10_000  # images behind computed (not shipped) reference statistics
REFERENCE_SPLITS = {"fluent": "all", "fluent-people": "all"}  # the split a dataset's references use; else "train"
POINT_FIELDS = (
    "steps",
    "fid",
    "fid_low",
    "fid_high",
    "kid_mean",
    "kid_std",
    "fid_inf",
    "paper_cost",
    "cached_cost",
    "seconds_per_image",
    "pixels_out_of_range",
    "pixels_beyond_1p5",
)  # a report's curve point


# ---- reference statistics ----------------------------------------------------------------------------------------
def default_extractor(config: Config) -> str:
    """The classifier for Fashion-MNIST models, Inception for anything else."""
    return "fmnist-classifier" if config.data.dataset == "fashion-mnist" else "inception"


def reference_split(data: DataConfig) -> str:
    """The split reference statistics of this data are computed on (REFERENCE_SPLITS, else "train")."""
    return REFERENCE_SPLITS.get(data.dataset, "train")


def shipped_reference(data: DataConfig, extractor: str, folder: Path | None = None) -> ReferenceStats | None:
    """The largest statistics of this data's reference split and extractor in `folder` (data/reference/), or None."""
    d, split = data, reference_split(data)
    label = f"folder-{Path(d.root).name}" if d.dataset == "folder" else d.dataset
    pattern = re.compile(rf"{re.escape(label)}-{d.image_size}px-{split}-{re.escape(extractor)}-(\d+)\.safetensors")
    found = Path(folder or REFERENCE_DIR).glob("*.safetensors")
    shipped = sorted((int(m[1]), p) for p in found if (m := pattern.fullmatch(p.name)))
    return load_reference(shipped[-1][1]) if shipped else None


def build_reference(data: DataConfig, extractor: str, progress=None, folder: Path | None = None) -> ReferenceStats:
    """Statistics of up to 10,000 images of the data's reference split (all of Fluent 3D, the training images
    elsewhere) under `extractor`, computed once and kept in `folder` (data/reference/) with their provenance card.
    scripts/build_reference.py runs it; `progress(done, n)` is called after every batch."""
    split = reference_split(data)
    n = min(DEFAULT_REFERENCE_N, len(build_dataset(data, split)))
    return reference_stats(
        data.dataset,
        split,
        extractor,
        n=n,
        image_size=data.image_size,
        channels=data.channels,
        root=data.root,
        cache_dir=Path(folder or REFERENCE_DIR),
        progress=progress,
    )


def default_reference(config: Config, extractor: str, progress=None) -> ReferenceStats:
    """The shipped statistics (shipped_reference), else those build_reference computes (and keeps)."""
    shipped = shipped_reference(config.data, extractor)
    return shipped if shipped is not None else build_reference(config.data, extractor, progress)


def reference_for(config: Config, n: int | None = None) -> ReferenceStats:
    """Reference statistics for live evaluation: the Fashion-MNIST classifier's features of the config's dataset's
    training images (all of them by default, as the zoo's Fashion-MNIST reports use; for emoji a grey proxy, less
    faithful than Inception), computed once and cached by workbench.evaluation.metrics."""
    d = config.data
    return reference_stats(d.dataset, "train", "fmnist-classifier", n=n, image_size=d.image_size, channels=d.channels)


# ---- one point -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Score:
    """One (model, sampler, steps) point scored on n generated images."""

    steps: int  # S: denoising steps per block
    depths: tuple  # D_k each block was sampled with (all equal without a depth schedule); under a
    #                               per-step schedule the smallest D of its steps (its AR stage ran N - D_k layers)
    steps_per_block: tuple  # S_k of each block (all S without a steps schedule)
    depth_per_step: tuple  # sample.depth_per_step: D_i spread over each block's steps (() = one D a block)
    untrained_depth: bool  # some D lies outside the depths the model was trained at
    sampler: str
    x0_clip: str
    n: int  # generated images scored
    seed: int  # seed of the initial noise (batch i uses seed + i) and of the bootstrap
    weights: str  # "ema" or "raw"
    extractor: str  # extractor id: name + weights hash prefix
    extractor_preprocess: str
    reference: str  # reference statistics name
    reference_count: int  # real images behind them
    fid: float
    fid_low: float  # bootstrap interval (ci_level) of the FID; NaN when disabled
    fid_high: float
    ci_level: float
    fid_inf: float | None  # FID-infinity (extrapolated to infinitely many images)
    kid_mean: float
    kid_std: float
    kid_subset_size: int
    paper_cost: float  # block-layer evaluations per image, T[(N-D)+D*S]
    cached_cost: float  # block-layer evaluations per image the cached sampler runs
    seconds_per_image: float  # generation wall time (decode included, scoring not)
    seconds_score: float
    pixels_out_of_range: float  # fraction of decoded values beyond +-1 before the clamp
    pixels_beyond_1p5: float  # ... beyond +-1.5

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def point(self) -> dict:
        """The fields of a report's curve point."""
        return {k: getattr(self, k) for k in POINT_FIELDS}


Samples = tuple[torch.Tensor, dict, float]  # (images in [-1, 1], sampler health, generation seconds)


def sample_images(model, config: Config, n: int, steps: int, sampler: str | None = None, seed: int = 0) -> Samples:
    """n decoded images for `score` (reusable: score them with several extractors)."""
    start = time.perf_counter()
    images, health = generate_images_checked(model, config, n, steps, sampler or config.sample.sampler, seed)
    return images, health, time.perf_counter() - start


def score(
    model,
    config: Config,
    steps: int,
    sampler: str | None = None,
    n: int = 1000,
    seed: int = 0,
    extractor=None,
    reference: ReferenceStats | torch.Tensor | None = None,
    weights: str = "ema",
    bootstrap: int = 50,
    samples: Samples | None = None,
) -> Score:
    """Generate n images with S=`steps` (the config's sampler and x0 treatment unless `sampler` is given) and
    score them with `extractor` (name or module; default as default_extractor) against `reference` (statistics
    or real images; default as default_reference). `samples` (from sample_images) reuses generated images."""
    sampler = sampler or config.sample.sampler
    ext = resolve_extractor(extractor or default_extractor(config))
    ref = reference if reference is not None else default_reference(config, ext.name)
    images, health, seconds = samples or sample_images(model, config, n, steps, sampler, seed)
    r = compute_fid(images, ref, ext, bootstrap=bootstrap, seed=seed)
    low, high = r.fid_ci or (math.nan, math.nan)
    m = config.model
    plan = block_plan(m, replace(config.sample, steps=int(steps)))
    paper, cached = schedule_costs(m, plan)
    return Score(
        int(steps),
        tuple(map(min, plan)),
        tuple(map(len, plan)),
        tuple(config.sample.depth_per_step),
        any(d not in m.depths for ds in plan for d in ds),
        sampler,
        config.sample.x0_clip,
        len(images),
        seed,
        weights,
        r.extractor,
        getattr(ext, "preprocess", ""),
        r.reference,
        r.reference_count,
        r.fid,
        low,
        high,
        r.ci_level,
        r.fid_inf,
        r.kid_mean,
        r.kid_std,
        r.kid_subset_size,
        paper,
        cached,
        seconds / len(images),
        r.seconds,
        health["pixels_out_of_range"],
        health["pixels_beyond_1p5"],
    )


def evaluate_curve(
    model,
    config: Config,
    reference,
    extractor=None,
    steps: Sequence[int] = EVAL_STEPS,
    n: int = 1000,
    sampler: str | None = None,
    seed: int = 0,
    weights: str = "ema",
    progress: Callable[[int, dict], None] | None = None,
) -> dict:
    """The `eval` section of a report: one score per S in `steps` (their curve points) and what they share.

    `reference`: metrics.ReferenceStats (or real images); `extractor`: name or module (default: the reference's).
    `progress(S, point)` is called after each point."""
    curve, last = [], None
    for s in steps:
        last = score(model, config, s, sampler, n, seed, extractor or _extractor_of(reference), reference, weights)
        curve.append(last.point())
        if progress:
            progress(s, curve[-1])
    return {
        "extractor": last.extractor,
        "reference": last.reference,
        "reference_count": last.reference_count,
        "n": n,
        "sampler": last.sampler,
        "weights": weights,
        "seed": seed,
        "curve": curve,
    }


def _extractor_of(reference) -> str | None:
    """The extractor reference statistics were computed with (None for real images)."""
    return reference.card["extractor"] if isinstance(reference, ReferenceStats) else None


# ---- a checkpoint, with provenance -------------------------------------------------------------------------------
def _weights(header: dict, use_ema: bool) -> str:
    """Which weights were scored: an export holds one set (the EMA weights when its source had them; the
    training loop always keeps EMA), a training checkpoint both."""
    if header["kind"] == "export":
        return header.get("meta", {}).get("weights", "ema")
    return "ema" if use_ema and header.get("ema") is not None else "raw"


def evaluate_checkpoint(
    checkpoint: str | Path,
    num_samples: int = 1000,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int = 0,
    extractor: str | None = None,
    reference: str | Path | ReferenceStats | None = None,
    use_ema: bool = True,
    bootstrap: int = 50,
    measure_flops: bool = True,
    x0_clip: str | None = None,
    device: str = "cpu",
    progress=None,
    sample: dict | None = None,
    flow_shift: float | None = None,
) -> dict:
    """Score `num_samples` images of `checkpoint` (S=`steps` per block with `sampler`; the config's sample section
    when None, with `sample` overrides such as {"diffusion_depth": 2, "steps_schedule": (8, 4, 2, 2)}) on `device`;
    and `flow_shift` the time shift of a flow model's schedule (None: the config's); returns the report: the Score's
    fields, the checkpoint's provenance, and the cost."""
    say = progress or (lambda message: None)
    if num_samples < 10:
        raise ValueError(
            f"eval: --num-samples {num_samples} is too few for FID-infinity and a bootstrap interval. "
            "Fix: use at least 10 (1,000 or more for figures you report)."
        )
    path = resolve(checkpoint)
    model, config = load_for_inference(path, use_ema=use_ema, device=device)  # checksum verified here
    header = read_header(path)
    config = with_flow_shift(config, flow_shift)
    config = config.override(
        **{
            "sample.steps": config.sample.steps if steps is None else steps,
            "sample.sampler": sampler or config.sample.sampler,
            "sample.x0_clip": x0_clip or config.sample.x0_clip,
            **{f"sample.{k}": v for k, v in (sample or {}).items()},
        }
    )  # validated, with the fix
    steps, sampler = config.sample.steps, config.sample.sampler
    ext = resolve_extractor(extractor or default_extractor(config))
    if reference is None:
        say(f"reference statistics for {config.data.dataset} with {ext.id}")
        ref = default_reference(config, ext.name, progress=lambda done, n: say(f"reference features {done}/{n}"))
    else:
        ref = reference if isinstance(reference, ReferenceStats) else load_reference(reference)
    say(f"generating {num_samples} images, {sampler} S={steps}")
    samples = sample_images(model, config, num_samples, steps, sampler, seed)
    say(f"scoring with {ext.id} against {ref.name}")
    s = score(model, config, steps, sampler, num_samples, seed, ext, ref, _weights(header, use_ema), bootstrap, samples)
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
    if measure_flops:
        measured = measure_sample_flops(model, config, steps)
        cost.update(flops_measured=measured, flops_measured_over_analytic=round(measured / cost["flops_analytic"], 4))
    cost.update(
        seconds_generate=round(samples[2], 3),
        seconds_per_image=round(s.seconds_per_image, 5),
        images_per_s=round(num_samples / samples[2], 2),
        seconds_score=round(s.seconds_score, 3),
    )
    return {
        **{
            k: v
            for k, v in s.as_dict().items()
            if k not in ("paper_cost", "cached_cost", "seconds_per_image", "seconds_score")
        },
        "prediction": config.diffusion.prediction,
        "flow_shift": config.diffusion.flow_shift if config.diffusion.prediction == "flow" else None,
        "context_noise": config.sample.context_noise,
        "reference_card": {
            k: ref.card.get(k) for k in ("dataset", "split", "subset", "image_size", "dataset_transform", "created")
        },
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
