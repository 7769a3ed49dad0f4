"""Scoring samples: one function, `score`, turns (model, sampler, steps) into a `Score` (FID with its bootstrap
interval, FID-infinity, KID, precision/recall, IS where the extractor has logits, sampler health, cost per image,
provenance). Every caller uses it: the eval CLI (report.evaluate_checkpoint and sharded.evaluate_sharded, which add
the checkpoint's provenance and measured FLOPs), the zoo and the notebooks (`evaluate_curve`: one Score per S), the
benchmarks and the app (reference statistics from `shipped_reference`).

    s = score(model, config, 16, ScoreSpec(n=1000, seed=0, extractor="inception"))
    s.fid, (s.fid_low, s.fid_high), s.precision, s.recall

The extractor defaults to the Fashion-MNIST classifier for Fashion-MNIST models (fast, what the zoo reports) and
to Inception elsewhere. The reference defaults to the largest shipped statistics of the model's dataset, image
size, reference split and extractor in data/reference/, else to statistics computed once (`build_reference`, cached
there) from up to 10,000 images of that split: the training images, or every image (train and held out) of the
Fluent 3D sets, whose 3,391 images are few for 2048-d Inception statistics. Beside it, reports of the eval CLI
give FID against the held-out split (`held_out_fid`: statistics of up to 10,000 held-out images, shipped or
computed once and cached the same way), with a note where the split is too small for its features' covariance.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..core.compute import schedule_costs
from ..core.config import Config, DataConfig
from ..core.paths import REFERENCE_DIR
from ..data.datasets import build_dataset
from ..sampling.sampler import block_plan, generate_images_checked
from .features import resolve_extractor
from .metrics import (
    FeatureOptions,
    FIDResult,
    LiveFID,
    LiveOptions,
    RealImages,
    ReferenceStats,
    bootstrap_fid,
    compute_fid,
    fid_from_features,
    load_reference,
    reference_stats,
)

EVAL_STEPS = (2, 4, 8, 16, 32)  # the S grid of every evaluation curve (the zoo's curves)

DEFAULT_REFERENCE_N = 10_000  # images behind computed (not shipped) reference statistics
REFERENCE_SPLITS = {"fluent": "all", "fluent-people": "all"}  # the split a dataset's references use; else "train"
HELD_OUT_SPLIT = "val"  # the images no model trains on (Fashion-MNIST: its test set; elsewhere a hashed share)
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
    "precision",
    "recall",
    "inception_score",
)  # a report's curve point


# ---- reference statistics ----------------------------------------------------------------------------------------
def default_extractor(config: Config) -> str:
    """The classifier for Fashion-MNIST models, Inception for anything else."""
    return "fmnist-classifier" if config.data.dataset == "fashion-mnist" else "inception"


def reference_split(data: DataConfig) -> str:
    """The split reference statistics of this data are computed on (REFERENCE_SPLITS, else "train")."""
    return REFERENCE_SPLITS.get(data.dataset, "train")


def shipped_reference(
    data: DataConfig, extractor: str, folder: Path | None = None, split: str | None = None
) -> ReferenceStats | None:
    """The largest statistics of this data's `split` (None: its reference split) and extractor in `folder`
    (data/reference/), or None."""
    d, split = data, split or reference_split(data)
    label = f"folder-{Path(d.root).name}" if d.dataset == "folder" else d.dataset
    pattern = re.compile(rf"{re.escape(label)}-{d.image_size}px-{split}-{re.escape(extractor)}-(\d+)\.safetensors")
    found = Path(folder or REFERENCE_DIR).glob("*.safetensors")
    shipped = sorted((int(m[1]), p) for p in found if (m := pattern.fullmatch(p.name)))
    return load_reference(shipped[-1][1]) if shipped else None


def build_reference(
    data: DataConfig, extractor: str, progress=None, folder: Path | None = None, split: str | None = None
) -> ReferenceStats:
    """Statistics of up to 10,000 images of the data's `split` (None: its reference split: all of Fluent 3D, the
    training images elsewhere) under `extractor`, computed once and kept in `folder` (data/reference/) with their
    provenance card. scripts/build_reference.py runs it; `progress(done, n)` is called after every batch."""
    split = split or reference_split(data)
    n = min(DEFAULT_REFERENCE_N, len(build_dataset(data, split)))
    options = FeatureOptions(progress=progress)
    return reference_stats(
        RealImages.of(data, split), extractor, n, cache_dir=Path(folder or REFERENCE_DIR), options=options
    )


def default_reference(config: Config, extractor: str, progress=None) -> ReferenceStats:
    """The shipped statistics (shipped_reference), else those build_reference computes (and keeps)."""
    shipped = shipped_reference(config.data, extractor)
    return shipped if shipped is not None else build_reference(config.data, extractor, progress)


def small_split_note(images: int, dims: int) -> str | None:
    """Why FID against `images` real images of `dims`-d features is not meaningful (None when it is): fewer images
    than dimensions leave the covariance rank deficient, and the FID then mostly measures that."""
    if images >= dims:
        return None
    return (
        f"{images} held-out images for {dims}-d features: a rank-deficient covariance whose FID is mostly "
        "small-sample bias; too small to be meaningful beside the FID against all images"
    )


def held_out_fid(config: Config, spec: ScoreSpec, features: torch.Tensor, progress=None) -> dict:
    """FID of generated features (n, F) of `spec.extractor` against the held-out split's statistics (shipped in
    data/reference/, else computed from up to 10,000 held-out images once and cached there), with a bootstrap
    interval of spec.bootstrap resamples (90%), the reference's size and provenance, and small_split_note's note.
    A dataset without held-out images gets {"fid": None, "note": why}."""
    ext = resolve_extractor(spec.extractor)
    try:
        ref = shipped_reference(config.data, ext.name, split=HELD_OUT_SPLIT) or build_reference(
            config.data, ext.name, progress, split=HELD_OUT_SPLIT
        )
    except (ValueError, FileNotFoundError) as err:  # no held-out images (or one), or the data is not here
        return {"fid": None, "split": HELD_OUT_SPLIT, "note": f"no FID against held-out images: {err}"}
    g = torch.Generator().manual_seed(spec.seed)
    low, high = bootstrap_fid(features, ref, spec.bootstrap, 0.9, g) if spec.bootstrap else (math.nan, math.nan)
    return {
        "fid": fid_from_features(features, ref),
        "fid_low": low,
        "fid_high": high,
        "ci_level": 0.9,
        "n": len(features),
        "split": HELD_OUT_SPLIT,
        "reference": ref.name,
        "reference_count": ref.count,
        "reference_file": ref.source.get("file"),
        "reference_sha256": ref.source.get("sha256"),
        "reference_card": {k: ref.card.get(k) for k in ("dataset", "split", "subset", "image_size", "created")},
        "note": small_split_note(ref.count, ref.mu.shape[0]),
    }


def reference_for(config: Config, n: int | None = None) -> ReferenceStats:
    """Reference statistics for live evaluation: the Fashion-MNIST classifier's features of the config's dataset's
    training images (all of them by default, as the zoo's Fashion-MNIST reports use; for emoji a grey proxy, less
    faithful than Inception), computed once and cached by workbench.evaluation.metrics."""
    d = config.data
    return reference_stats(RealImages(d.dataset, "train", d.image_size, d.channels), "fmnist-classifier", n)


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
    precision: float | None = None  # improved precision, k=3 (None: the reference holds no real features)
    recall: float | None = None  # improved recall, k=3
    pr_counts: tuple = (0, 0)  # (real, generated) features behind precision and recall
    inception_score: float | None = None  # IS of the extractor's class logits (None: the extractor has none)
    inception_score_std: float | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def point(self) -> dict:
        """The fields of a report's curve point."""
        return {k: getattr(self, k) for k in POINT_FIELDS}


Samples = tuple[torch.Tensor, dict, float]  # (images in [-1, 1], sampler health, generation seconds)


def sample_images(model, config: Config, n: int, steps: int, sampler: str | None = None, seed: int = 0) -> Samples:
    """n decoded images for `score` (reusable: score them with several extractors): images 0..n-1 of `seed` with
    the config's sample section at S=`steps` (per-image seeds: the same images at any batch size)."""
    start = time.perf_counter()
    request = replace(config.sample, steps=int(steps), sampler=sampler or config.sample.sampler, seed=seed)
    images, health = generate_images_checked(model, config, n, request)
    return images, health, time.perf_counter() - start


@dataclass(frozen=True)
class ScoreSpec:
    """How `score` generates and scores: n images from seed `seed` (batch i of 250 uses seed + i) with `sampler`
    (None: the config's), features of `extractor` (name or module; None: the reference's, else default_extractor)
    against `reference` (ReferenceStats or real images; None: default_reference), a bootstrap interval of
    `bootstrap` resamples; `weights` names the weights scored ("ema" or "raw") in the report."""

    n: int = 1000
    seed: int = 0
    sampler: str | None = None
    extractor: str | torch.nn.Module | None = None
    reference: ReferenceStats | torch.Tensor | None = None
    weights: str = "ema"
    bootstrap: int = 50


def score(model, config: Config, steps: int, spec: ScoreSpec = ScoreSpec(), samples: Samples | None = None) -> Score:
    """Generate spec.n images with S=`steps` (the config's x0 treatment) and score them as `spec` says. `samples`
    (from sample_images) reuses generated images."""
    sampler = spec.sampler or config.sample.sampler
    ext = resolve_extractor(spec.extractor or _extractor_of(spec.reference) or default_extractor(config))
    ref = spec.reference if spec.reference is not None else default_reference(config, ext.name)
    images, health, seconds = samples or sample_images(model, config, spec.n, steps, sampler, spec.seed)
    result = compute_fid(images, ref, ext, bootstrap=spec.bootstrap, seed=spec.seed)
    spec = replace(spec, sampler=sampler, extractor=ext, reference=ref)
    return score_of(config, steps, spec, result, (health, seconds / len(images)))


def score_features(config: Config, steps: int, spec: ScoreSpec, features: torch.Tensor, health: dict) -> Score:
    """The Score of already extracted features (n, F) of generated images (sharded evaluation), against
    spec.reference (ReferenceStats); `health` holds the pixel fractions and "seconds_per_image"."""
    ext = resolve_extractor(spec.extractor or _extractor_of(spec.reference))
    live = LiveFID(spec.reference, ext, LiveOptions(bootstrap=spec.bootstrap, seed=spec.seed))
    live.add_features(features)
    spec = replace(spec, extractor=ext)
    return score_of(config, steps, spec, live.compute(), (health, health["seconds_per_image"]))


def score_of(config: Config, steps: int, spec: ScoreSpec, r: FIDResult, health: tuple[dict, float]) -> Score:
    """A Score from an FIDResult, the sampling settings and (sampler health, generation seconds per image)."""
    pixels, seconds_per_image = health
    low, high = r.fid_ci or (math.nan, math.nan)
    m = config.model
    plan = block_plan(m, replace(config.sample, steps=int(steps)))
    paper, cached = schedule_costs(m, plan)
    ext = resolve_extractor(spec.extractor) if spec.extractor is not None else None
    return Score(
        steps=int(steps),
        depths=tuple(map(min, plan)),
        steps_per_block=tuple(map(len, plan)),
        depth_per_step=tuple(config.sample.depth_per_step),
        untrained_depth=any(d not in m.depths for ds in plan for d in ds),
        sampler=spec.sampler or config.sample.sampler,
        x0_clip=config.sample.x0_clip,
        n=r.n,
        seed=spec.seed,
        weights=spec.weights,
        extractor=r.extractor,
        extractor_preprocess=getattr(ext, "preprocess", ""),
        reference=r.reference,
        reference_count=r.reference_count,
        fid=r.fid,
        fid_low=low,
        fid_high=high,
        ci_level=r.ci_level,
        fid_inf=r.fid_inf,
        kid_mean=r.kid_mean,
        kid_std=r.kid_std,
        kid_subset_size=r.kid_subset_size,
        paper_cost=paper,
        cached_cost=cached,
        seconds_per_image=seconds_per_image,
        seconds_score=r.seconds,
        pixels_out_of_range=pixels["pixels_out_of_range"],
        pixels_beyond_1p5=pixels["pixels_beyond_1p5"],
        precision=r.precision,
        recall=r.recall,
        pr_counts=r.pr_counts,
        inception_score=r.inception_score,
        inception_score_std=r.inception_score_std,
    )


def evaluate_curve(
    model,
    config: Config,
    spec: ScoreSpec,
    steps: Sequence[int] = EVAL_STEPS,
    progress: Callable[[int, dict], None] | None = None,
) -> dict:
    """The `eval` section of a report: one score per S in `steps` (their curve points) and what they share.

    `spec.reference`: metrics.ReferenceStats (or real images); `spec.extractor`: name or module (default: the
    reference's). `progress(S, point)` is called after each point."""
    curve, last = [], None
    for s in steps:
        last = score(model, config, s, spec)
        curve.append(last.point())
        if progress:
            progress(s, curve[-1])
    return {
        "extractor": last.extractor,
        "reference": last.reference,
        "reference_count": last.reference_count,
        "n": spec.n,
        "sampler": last.sampler,
        "weights": spec.weights,
        "seed": spec.seed,
        "curve": curve,
    }


def _extractor_of(reference) -> str | None:
    """The extractor reference statistics were computed with (None for real images or no reference)."""
    return reference.card.get("extractor") if isinstance(reference, ReferenceStats) else None
