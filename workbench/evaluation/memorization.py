"""Does a model copy its training images? Nearest training neighbours of its generations, in pixels and in
features, read against held-out real images, for datasets small enough to search exhaustively.

Each generation's distance to its nearest training image is compared with the same distance of every held-out
image (real images the model never saw). Two spaces: pixels (RGB averaged down to 64x64, where a copy stays a
near-duplicate and another image of the same style does not) and the extractor's features (what FID sees).

The copy rule (`COPY_RULE`): a generation is a near-copy when, in pixels, it lies nearer its nearest training
image than the median held-out image lies to its own. A model whose generations are as new as held-out images
would show about 50% under this rule (half the held-out images do, by construction: `held_out_share`), so the share
reads against 50%, and its Wilson interval says how sure the n generations make it. A stricter rule is reported
beside it: nearer than the 5th percentile of held-out images (5% of new real images are). The distance a codec
round trip puts between an image and itself (`codec_copy`) is reported as a third baseline; it is too strict a copy
line for a blurred generation, which never comes that close (see docs/evaluation.md for the grids behind the choice).

Beside it, FID against the held-out images only and against the training images only, with a note where the
held-out split has fewer images than the features have dimensions (its covariance is then rank deficient and
its FID mostly measures that: too small to be meaningful).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.config import Config
from ..data.codecs import build_codec
from ..data.images import save_grid
from .evaluate import reference_split, sample_images
from .features import extract_features, resolve_extractor
from .metrics import FeatureOptions, RealImages, ReferenceStats, fid_from_features, real_features
from .report import EvalRequest, load_for_eval

COPY_RULE = "pixel distance to the nearest training image below the median held-out image's"
MAX_TRAIN = 100_000  # training images searched at most: larger datasets are refused (the report says so)
Z_90 = 1.6449  # two-sided 90% normal quantile, for the Wilson interval


@dataclass(frozen=True)
class MemorizationSpec:
    """n generations from `seed` (S = the config's steps), features of `extractor`, pixels averaged to
    `pixel_size`, `copies` codec round trips for the codec baseline, a grid PNG of the first 16 generations over
    their nearest training images at `grid` (None: none), real-feature logs in `log_dir` (None: the default)."""

    n: int = 200
    seed: int = 0
    extractor: str = "inception"
    pixel_size: int = 64
    copies: int = 100
    grid: Path | None = None
    log_dir: Path | None = None


def wilson(k: int, n: int, z: float = Z_90) -> tuple[float, float]:
    """Wilson score interval of a share k / n (90% by default)."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)
    return (0.0 if k == 0 else low), (1.0 if k == n else high)  # exact at the ends (rounding would miss them)


def _quantiles(x: torch.Tensor) -> dict:
    q = torch.quantile(x.double(), torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)).tolist()
    return {"p05": q[0], "median": q[1], "p95": q[2], "n": len(x)}


def _share(hits: torch.Tensor) -> dict:
    k, n = int(hits.sum()), len(hits)
    low, high = wilson(k, n)
    return {"share": k / n, "low": low, "high": high, "count": k, "n": n, "level": 0.9}


def _space(gen: torch.Tensor, train: torch.Tensor, held: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Distance figures of one space (vectors (k, F) of generations, training and held-out images), each
    generation's nearest training index and distance."""
    nearest, which = torch.cdist(gen.double(), train.double()).min(1)  # (n,), (n,)
    novel = torch.cdist(held.double(), train.double()).min(1).values  # (h,)
    median, p05 = float(novel.median()), float(torch.quantile(novel, 0.05))
    figures = {
        "generated_to_train": _quantiles(nearest),
        "held_out_to_train": _quantiles(novel),
        "nearer_than_held_out_median": _share(nearest < median),
        "nearer_than_held_out_p05": _share(nearest < p05),
        "held_out_share": {"median": float((novel < median).double().mean()), "p05": 0.05},
        "distinct_neighbours": int(which.unique().numel()),
    }
    return figures, which, nearest


def pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images (k, C, H, W) as vectors averaged to size x size (at most their own side)."""
    return F.adaptive_avg_pool2d(images.float(), min(size, images.shape[-1])).flatten(1)  # (k, C * size^2)


def _real(images: RealImages, spec: MemorizationSpec, net) -> tuple:
    """(dataset, features (N, F), pixels (N, P)) of every image of a split, in dataset order."""
    ds = images.build()
    feats, order, _ = real_features(ds, images, net, len(ds), FeatureOptions(log_dir=spec.log_dir))
    feats = feats[torch.argsort(torch.tensor(order))]  # back to dataset order
    vectors = [
        pixels(torch.stack([ds[j][0] for j in range(i, min(i + 64, len(ds)))]), spec.pixel_size)
        for i in range(0, len(ds), 64)
    ]
    return ds, feats, torch.cat(vectors)


def _codec_copies(config: Config, ds, feats, pix, spec: MemorizationSpec, net) -> dict:
    """Distances between training images and their codec round trips: how near an exact copy of a latent lies."""
    codec = build_codec(config.data)
    picks = torch.randperm(len(ds), generator=torch.Generator().manual_seed(spec.seed))[: spec.copies]
    f, p = [], []
    for i in range(0, len(picks), 8):
        batch = torch.stack([ds[int(j)][0] for j in picks[i : i + 8]])  # (b, C, H, W)
        with torch.no_grad():
            recon = codec.decode(codec.encode(batch)).clamp(-1, 1)
        f.append(extract_features(net, recon))
        p.append(pixels(recon, spec.pixel_size))
    return {
        "features": _quantiles((torch.cat(f).double() - feats[picks].double()).norm(dim=1)),
        "pixels": _quantiles((torch.cat(p).double() - pix[picks].double()).norm(dim=1)),
    }


def _fid_against(gen: torch.Tensor, real: torch.Tensor, name: str, held_out: bool = False) -> dict:
    """FID of generated features against the statistics of `real` features; a held-out split with fewer images
    than feature dimensions gets the note that it is too small to be meaningful."""
    ref = ReferenceStats.from_features(real, {"name": name})
    note = None
    if held_out and len(real) < real.shape[1]:
        note = (
            f"{len(real)} held-out images for {real.shape[1]}-d features: a rank-deficient covariance whose FID is "
            "mostly small-sample bias; too small to be meaningful beside the FID against all images"
        )
    return {"fid": fid_from_features(gen, ref), "images": len(real), "note": note}


def memorization(model, config: Config, spec: MemorizationSpec = MemorizationSpec()) -> dict:
    """The figures of the module docstring for a model and its config (sample section included)."""
    d, t0 = config.data, time.perf_counter()
    net = resolve_extractor(spec.extractor)
    train, held = RealImages.of(d, "train"), RealImages.of(d, "val")
    if len(train.build()) > MAX_TRAIN:
        raise ValueError(
            f"memorization: {d.dataset} has more than {MAX_TRAIN} training images, too many to search "
            "exhaustively. Fix: leave out --memorization for this model."
        )
    train_ds, train_feats, train_pix = _real(train, spec, net)
    _, held_feats, held_pix = _real(held, spec, net)
    copies = _codec_copies(config, train_ds, train_feats, train_pix, spec, net)
    real_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    images, _, _ = sample_images(model, config, spec.n, config.sample.steps, seed=spec.seed)  # (n, C, H, W)
    gen_feats = extract_features(net, images)
    feature_space, _, _ = _space(gen_feats, train_feats, held_feats)
    pixel_space, which, nearest = _space(pixels(images, spec.pixel_size), train_pix, held_pix)
    if spec.grid is not None:
        cols = min(8, spec.n)  # rows of generations, each over a row of their nearest training images in pixels
        rows = []
        for r in range(0, min(16, spec.n) // cols * cols, cols):
            rows += [images[r : r + cols], torch.stack([train_ds[int(j)][0] for j in which[r : r + cols]])]
        save_grid(torch.cat(rows), spec.grid, nrow=cols)
    headline = pixel_space["nearer_than_held_out_median"]
    return {
        "copy_rule": COPY_RULE,
        "copy_share": headline["share"],
        "copy_share_interval": [headline["low"], headline["high"]],
        "copy_share_if_novel": pixel_space["held_out_share"]["median"],
        "n": spec.n,
        "seed": spec.seed,
        "steps": config.sample.steps,
        "sampler": config.sample.sampler,
        "cfg_scale": config.sample.cfg_scale if config.model.num_classes else None,
        "train_images": len(train_feats),
        "held_out_images": len(held_feats),
        "reference_split": reference_split(d),
        "pixels": {
            "distance": f"euclidean, RGB in [-1, 1] averaged to {spec.pixel_size}px",
            **pixel_space,
            "codec_copy": copies["pixels"],
        },
        "features": {"extractor": net.id, "distance": "euclidean", **feature_space, "codec_copy": copies["features"]},
        "fid_held_out": _fid_against(gen_feats, held_feats, f"{d.dataset}-val", held_out=True),
        "fid_train": _fid_against(gen_feats, train_feats, f"{d.dataset}-train"),
        "fid_all": _fid_against(gen_feats, torch.cat([train_feats, held_feats]), f"{d.dataset}-train+val"),
        "nearest_pixel_distance_first16": [round(float(x), 2) for x in nearest[:16]],
        "grid": str(spec.grid) if spec.grid is not None else None,
        "seconds": {"real": round(real_seconds, 1), "generate_and_search": round(time.perf_counter() - t0, 1)},
    }


def checkpoint_memorization(checkpoint, request: EvalRequest, n: int, grid: Path | None) -> dict:
    """memorization() of a checkpoint loaded as an eval request loads it (sample settings, weights, device), with
    the request's extractor (default Inception) and seed."""
    loaded = load_for_eval(checkpoint, request)
    spec = MemorizationSpec(n=n, seed=request.seed, extractor=request.extractor or "inception", grid=grid)
    return memorization(loaded.model, loaded.config, spec)
