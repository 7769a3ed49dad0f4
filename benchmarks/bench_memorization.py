"""Do the 256 px models copy their training images? Nearest training neighbours of generations, in two spaces,
read against two real-image baselines.

    python benchmarks/bench_memorization.py --checkpoint data/checkpoints/context-people256/cond-ctx-T16.safetensors
                                            [--n 500] [--steps 16] [--cfg-scale W] [--seed 0] [--threads 2]
                                            [--grid results/people256/nn-T16.png] [--out results/memorization.jsonl]

The people subset has 1,786 training images and its FID reference holds them and the 142 held-out ones, so a model
that reproduced its training images would score well. This measures how close each generated image lies to its
nearest training image, in two spaces: the 2,048 Inception pool features FID uses, and pixels (RGB averaged to
64x64), where a copy stays a near-duplicate while another emoji of the same style does not. Each is read against:

- copies: the codec's reconstructions of 100 training images against their originals, the distance a generation
  that reproduced a training latent exactly would have;
- novel real emoji: each held-out image against its nearest training image. Held-out images are other emoji (the
  five skin tones of an emoji fall on one side of the split), so this is how far a real, new emoji lies.

A generation nearer its training neighbour than the copies' 95th percentile counts as a copy; one nearer than the
5th percentile of the novel emoji lies closer to the training set than real new emoji do. The two counts mean
something only where the two baselines lie apart (Inception features put a held-out emoji about as near its
training neighbour as the codec puts a copy; pixels do not). The grid puts generations (top row of each pair)
over their nearest training images in pixels (bottom row). Features of the real images come from the reference's
feature log (metrics.real_features) when it was built here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from harness import emit, machine

from workbench.core.config import Config, DataConfig
from workbench.data.codecs import build_codec
from workbench.data.datasets import build_dataset
from workbench.data.images import save_grid
from workbench.evaluation.evaluate import reference_split, sample_images
from workbench.evaluation.features import extract_features, resolve_extractor
from workbench.evaluation.metrics import real_features
from workbench.training.checkpoint import load_for_inference

COPIES = 100  # training images reconstructed through the codec for the copy baseline
PIXEL_SIZE = 64  # side the pixel-space distance averages images down to (a copy stays a near-duplicate)


def _quantiles(x: torch.Tensor) -> dict:
    q = torch.quantile(x.double(), torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)).tolist()
    return {"p05": q[0], "median": q[1], "p95": q[2], "n": len(x)}


def _space(
    gen: torch.Tensor, train: torch.Tensor, held: torch.Tensor, copies: torch.Tensor
) -> tuple[dict, torch.Tensor]:
    """The distance figures of one space (vectors (k, F) of generations, training, held-out images; copy distances),
    and the index of each generation's nearest training image."""
    nearest, which = torch.cdist(gen.double(), train.double()).min(1)
    novel = torch.cdist(held.double(), train.double()).min(1).values
    copy_line, novel_line = float(torch.quantile(copies, 0.95)), float(torch.quantile(novel, 0.05))
    return {
        "generated_to_train": _quantiles(nearest),
        "copies": _quantiles(copies),
        "novel_to_train": _quantiles(novel),
        "share_copies": float((nearest < copy_line).double().mean()),
        "share_closer_than_novel_p05": float((nearest < novel_line).double().mean()),
        "distinct_neighbours": int(which.unique().numel()),
    }, which


def _pixels(images: torch.Tensor) -> torch.Tensor:
    """Images (k, C, H, W) as vectors at PIXEL_SIZE (area average), the space where a copy is a near-duplicate."""
    return F.adaptive_avg_pool2d(images.float(), PIXEL_SIZE).flatten(1)


def memorization(
    model,
    config: Config,
    n: int = 500,
    steps: int = 16,
    seed: int = 0,
    grid: str | Path | None = None,
    extractor: str = "inception",
    log_dir: Path | None = None,
    batch: int = 8,
) -> dict:
    """The distances of the module docstring for one model and its config (sample section included), in both
    spaces, with the generation settings that made them."""
    d = config.data
    plain = DataConfig(dataset=d.dataset, root=d.root, image_size=d.image_size, channels=d.channels)
    split = reference_split(d)
    if split != "all":
        raise ValueError(
            f"bench_memorization: {d.dataset}'s reference is its {split!r} split, not all images, so "
            "its feature log holds no held-out images. Fix: use a checkpoint of the Fluent sets."
        )
    everything = build_dataset(plain, split)
    train_paths = {p for p, _ in build_dataset(plain, "train").samples}
    net = resolve_extractor(extractor)
    t0 = time.perf_counter()
    feats, order, _ = real_features(everything, d.dataset, split, d.image_size, net, len(everything), log_dir=log_dir)
    is_train = torch.tensor([everything.samples[i][0] in train_paths for i in order])
    index = torch.tensor(order)
    pixels = torch.cat(
        [_pixels(torch.stack([everything[int(j)][0] for j in index[i : i + 64]])) for i in range(0, len(index), 64)]
    )  # (N, 3 * PIXEL_SIZE**2), in `order`
    train_index = index[is_train]
    codec = build_codec(d)
    picks = torch.randperm(len(train_index), generator=torch.Generator().manual_seed(seed))[:COPIES]
    recon_feats, recon_pixels = [], []
    for i in range(0, len(picks), batch):
        images = torch.stack([everything[int(train_index[j])][0] for j in picks[i : i + batch]])
        recon = codec.decode(codec.encode(images)).clamp(-1, 1)
        recon_feats.append(extract_features(net, recon, batch))
        recon_pixels.append(_pixels(recon))
    train_feats, train_pixels = feats[is_train], pixels[is_train]
    copies = {
        "inception": (torch.cat(recon_feats).double() - train_feats[picks].double()).norm(dim=1),
        "pixels": (torch.cat(recon_pixels).double() - train_pixels[picks].double()).norm(dim=1),
    }
    real_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    images, _, _ = sample_images(model, config, n, steps, seed=seed)  # (n, C, H, W) in [-1, 1]
    inception, _ = _space(extract_features(net, images, batch), train_feats, feats[~is_train], copies["inception"])
    pixel, which = _space(_pixels(images), train_pixels, pixels[~is_train], copies["pixels"])
    gen_seconds = time.perf_counter() - t0
    if grid is not None:
        cols = min(8, n)  # rows of `cols` generations, each over a row of their nearest training images in pixels
        pairs = []
        for row in range(0, min(16, n) // cols * cols, cols):
            pairs += [
                images[row : row + cols],
                torch.stack([everything[int(train_index[j])][0] for j in which[row : row + cols]]),
            ]
        save_grid(torch.cat(pairs), grid, nrow=cols)
    sc = config.sample
    return {
        "name": config.name,
        "dataset": d.dataset,
        "n": n,
        "steps": steps,
        "sampler": sc.sampler,
        "cfg_scale": sc.cfg_scale if config.model.num_classes else None,
        "seed": seed,
        "train_images": int(is_train.sum()),
        "held_out_images": int((~is_train).sum()),
        "inception": {"extractor": net.id, "distance": "euclidean, pool features", **inception},
        "pixels": {"distance": f"euclidean, RGB in [-1, 1] averaged to {PIXEL_SIZE}x{PIXEL_SIZE}", **pixel},
        "grid": str(grid) if grid is not None else None,
        "seconds": {"real": round(real_seconds, 1), "generate_and_features": round(gen_seconds, 1)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a checkpoint or export of a Fluent 256 px model")
    ap.add_argument("--n", type=int, default=500, help="generated images")
    ap.add_argument("--steps", type=int, default=16, help="S per block")
    ap.add_argument("--cfg-scale", type=float, default=None, help="guidance scale (default: the config's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grid", default=None, help="PNG: generations over their nearest training images")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, config = load_for_inference(args.checkpoint)
    if args.cfg_scale is not None:
        config = config.override(**{"sample.cfg_scale": args.cfg_scale})
    result = memorization(model, config, args.n, args.steps, args.seed, args.grid)
    emit({"checkpoint": args.checkpoint, "weights": "ema", **result, "machine": machine()}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
