"""Does a model copy its training images? Nearest training neighbours of its generations, in pixels and in
features, read against held-out real images, for datasets small enough to search exhaustively.

Each generation's distance to its nearest training image is compared with the same distance of held-out images
(real images the model never saw; at most `MemorizationSpec.held_out` of them, a seeded sample). Two spaces: pixels
(RGB averaged down to 64x64, where a copy stays a near-duplicate and another image of the same style does not) and
the extractor's features (what FID sees).

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

Every eval report of a model trained on fewer than `AUTO_BELOW` distinct images carries these figures without
being asked (`copy_share_plan`; the count comes from the checkpoint, `training_images`). Real features and pixel
vectors go through the same resumable feature log as reference statistics, so only the first evaluation of a
dataset on a machine pays for them; the generations' features are the ones FID already computed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import Config
from ..data.codecs import build_codec
from ..data.datasets import SpacedSubset
from ..data.images import save_grid
from .evaluate import HELD_OUT_SPLIT, reference_split, sample_images, small_split_note
from .features import extract_features, resolve_extractor
from .metrics import FeatureOptions, RealImages, ReferenceStats, fid_from_features, real_features

COPY_RULE = "pixel distance to the nearest training image below the median held-out image's"
MAX_TRAIN = 100_000  # training images searched at most: larger datasets are refused (the report says so)
AUTO_BELOW = 100_000  # models trained on fewer distinct images get the figures in every eval report
DEFAULT_N = 200  # generations searched when nobody says how many
Z_90 = 1.6449  # two-sided 90% normal quantile, for the Wilson interval
ROWS = 256  # query rows per distance block: ROWS x (training images) float64 distances in memory at once


@dataclass(frozen=True)
class MemorizationSpec:
    """n generations from `seed` (S = the config's steps), features of `extractor` (name or module), pixels
    averaged to `pixel_size`, at most `held_out` held-out images (a seeded sample) for the baseline, `copies`
    codec round trips for the codec baseline, a grid PNG of the first 16 generations over their nearest training
    images at `grid` (None: none), real-feature logs in `log_dir` (None: the default)."""

    n: int = DEFAULT_N
    seed: int = 0
    extractor: str | nn.Module = "inception"
    pixel_size: int = 64
    copies: int = 100
    grid: Path | None = None
    log_dir: Path | None = None
    held_out: int = 1000


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


def _nearest(queries: torch.Tensor, train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance (k,) from each query vector (k, F) to its nearest training vector (N, F), and that vector's row;
    in blocks of ROWS queries, so that 60,000 training images never need a (k, N) matrix at once. In float32: half
    the time of float64, and within 1e-5 of it at distances of a few units (Fashion-MNIST's 1,024 pixels)."""
    train = train.float()
    found = [torch.cdist(q.float(), train).min(1) for q in queries.split(ROWS)]
    return torch.cat([f.values for f in found]).double(), torch.cat([f.indices for f in found])


def _space(gen: torch.Tensor, train: torch.Tensor, held: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Distance figures of one space (vectors (k, F) of generations, training and held-out images), each
    generation's nearest training row and distance."""
    nearest, which = _nearest(gen, train)  # (n,), (n,)
    novel, _ = _nearest(held, train)  # (h,)
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


class PixelVectors(nn.Module):
    """`pixels` as a feature extractor, so that real images' pixel vectors are logged and reused like features."""

    preprocess = "RGB or grey in [-1, 1], averaged (adaptive average pool) to at most size x size"

    def __init__(self, size: int, side: int, channels: int):
        super().__init__()
        self.size, self.num_features = size, channels * min(size, side) ** 2
        self.name = self.id = f"pixels{min(size, side)}"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return pixels(images, self.size)


def _real(images: RealImages, ds, spec: MemorizationSpec, net, n: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """(dataset indices, features (n, F), pixel vectors (n, P)) of the first n images of a seeded permutation of
    the built split `ds` (`images` names it; the permutation of reference statistics, seed 0), both read from or
    added to the feature log."""
    options = FeatureOptions(log_dir=spec.log_dir)
    feats, order, _ = real_features(ds, images, net, n, options)
    channels = images.channels or (1 if images.dataset == "fashion-mnist" else 3)
    vectors = PixelVectors(spec.pixel_size, images.image_size, channels)
    pix, _, _ = real_features(ds, images, vectors, n, options)
    return order, feats, pix


def _codec_copies(config: Config, ds, order: list[int], real: tuple, spec: MemorizationSpec, net) -> dict:
    """Distances between training images and their codec round trips: how near an exact copy of a latent lies.
    `real` holds the (features, pixels) rows of `order`'s dataset indices."""
    feats, pix = real
    codec = build_codec(config.data)
    row_of = torch.empty(len(order), dtype=torch.long)
    row_of[torch.tensor(order)] = torch.arange(len(order))  # dataset index -> row of feats and pix
    picks = torch.randperm(len(ds), generator=torch.Generator().manual_seed(spec.seed))[: spec.copies]
    f, p = [], []
    for i in range(0, len(picks), 8):
        batch = torch.stack([ds[int(j)][0] for j in picks[i : i + 8]])  # (b, C, H, W)
        with torch.no_grad():
            recon = codec.decode(codec.encode(batch)).clamp(-1, 1)
        f.append(extract_features(net, recon))
        p.append(pixels(recon, spec.pixel_size))
    rows = row_of[picks]
    return {
        "features": _quantiles((torch.cat(f).double() - feats[rows].double()).norm(dim=1)),
        "pixels": _quantiles((torch.cat(p).double() - pix[rows].double()).norm(dim=1)),
    }


def _fid_against(gen: torch.Tensor, real: torch.Tensor, name: str, held_out: bool = False) -> dict:
    """FID of generated features against the statistics of `real` features; a held-out split with fewer images
    than feature dimensions gets the note that it is too small to be meaningful."""
    ref = ReferenceStats.from_features(real, {"name": name})
    note = small_split_note(len(real), real.shape[1]) if held_out else None
    return {"fid": fid_from_features(gen, ref), "images": len(real), "note": note}


def _generations(model, config: Config, spec: MemorizationSpec, net, generated) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (n, C, H, W), their features (n, F)): the first n of `generated` (images or None, features or None,
    both of images 0.. of the seed) where it holds n, else sampled (images 0..n-1 of the seed: the ones an
    evaluation of that seed makes first) and featurised."""
    images, feats = generated if generated is not None else (None, None)
    if images is None or len(images) < spec.n:
        images, _, _ = sample_images(model, config, spec.n, config.sample.steps, seed=spec.seed)
    images = images[: spec.n].cpu()
    if feats is None or len(feats) < spec.n:
        return images, extract_features(net, images)
    return images, feats[: spec.n].float().cpu()


def memorization(model, config: Config, spec: MemorizationSpec = MemorizationSpec(), generated=None) -> dict:
    """The figures of the module docstring for a model and its config (sample section included). `generated`:
    (images, features or None) of the evaluation's first generations, reused where they hold spec.n images
    (features of spec.extractor; None: generated here)."""
    d, t0 = config.data, time.perf_counter()
    net = resolve_extractor(spec.extractor)
    train, held = RealImages.of(d, "train"), RealImages.of(d, HELD_OUT_SPLIT)
    train_ds = train.build()
    train_ds = SpacedSubset(train_ds, d.max_images) if d.max_images else train_ds  # the images it trained on
    if len(train_ds) > MAX_TRAIN:
        raise ValueError(
            f"memorization: {d.dataset} has more than {MAX_TRAIN} training images, too many to search "
            "exhaustively. Fix: leave out --memorization for this model."
        )
    held_ds = held.build()
    order, train_feats, train_pix = _real(train, train_ds, spec, net, len(train_ds))
    _, held_feats, held_pix = _real(held, held_ds, spec, net, min(spec.held_out, len(held_ds)))
    copies = _codec_copies(config, train_ds, order, (train_feats, train_pix), spec, net)
    real_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    images, gen_feats = _generations(model, config, spec, net, generated)  # (n, C, H, W), (n, F)
    feature_space, _, _ = _space(gen_feats, train_feats, held_feats)
    pixel_space, rows, nearest = _space(pixels(images, spec.pixel_size), train_pix, held_pix)
    which = [order[int(r)] for r in rows]  # dataset index of each generation's nearest training image
    if spec.grid is not None:
        cols = min(8, spec.n)  # rows of generations, each over a row of their nearest training images in pixels
        grid = []
        for r in range(0, min(16, spec.n) // cols * cols, cols):
            grid += [images[r : r + cols], torch.stack([train_ds[j][0] for j in which[r : r + cols]])]
        save_grid(torch.cat(grid), spec.grid, nrow=cols)
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
        "held_out_split_images": len(held_ds),
        "reference_split": reference_split(d),
        "pixels": {
            "distance": f"euclidean, pixels in [-1, 1] averaged to {min(spec.pixel_size, images.shape[-1])}px",
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


# ---- when an eval report carries the figures ----------------------------------------------------------------------
def training_images(header: dict, config: Config) -> dict:
    """How many distinct images the model was trained on, and where that is recorded: the checkpoint's data
    state (data.dataset_size, written by training with every checkpoint), else the config's data.max_images (an
    upper bound), else unknown (count None), never a guess from the dataset as it is today."""
    size = (header.get("data") or {}).get("dataset_size")
    if size:
        return {"count": int(size), "source": "the checkpoint's data.dataset_size"}
    if config.data.max_images:
        return {"count": config.data.max_images, "source": "the config's data.max_images, an upper bound"}
    return {"count": None, "source": "neither the checkpoint (data.dataset_size) nor the config (data.max_images)"}


def copy_share_plan(asked: int | None, trained_on: dict, generated: int) -> tuple[int, str]:
    """(generations to search, 0 for none; why) for an eval report of `generated` images: `asked` N generations
    (0: switched off; None: the automatic rule: the first DEFAULT_N of the evaluation's own, or all of them where
    it made fewer, for a model trained on fewer than AUTO_BELOW distinct images, `trained_on` as training_images
    says)."""
    count, source = trained_on["count"], trained_on["source"]
    if asked == 0:
        return 0, "not computed: switched off (--no-memorization)"
    if asked:
        return asked, f"computed as asked (--memorization {asked})"
    if count is None:
        return 0, (
            f"not computed: the number of training images is unknown ({source} records it), and the copy share is "
            f"automatic only below {AUTO_BELOW:,}. Fix: pass --memorization to compute it anyway"
        )
    if count >= AUTO_BELOW:
        return 0, (
            f"not computed: {count:,} training images ({source}), not fewer than {AUTO_BELOW:,}; "
            "ask with --memorization N"
        )
    return min(DEFAULT_N, generated), (
        f"computed automatically: {count:,} training images ({source}), fewer than {AUTO_BELOW:,}; a model of a "
        "dataset this small can reproduce what it saw"
    )
