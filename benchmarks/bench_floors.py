"""The FID floors of the 256 px families: what a perfect generator would score at the zoo's n against the zoo's own
reference statistics, with and without the codec in the way.

    python -m benchmarks.bench_floors [--presets emoji256-T16 people256-T16] [--n 1000] [--threads 2]
                                      [--out results/floors.jsonl]

For each preset's data (dataset, size, codec) and the Inception reference its reports are scored against
(all images of the dataset: evaluation.REFERENCE_SPLITS), n real images are drawn as the reference itself draws
them (the first n of its seed-0 permutation, so they are inside the reference, which flatters both rows alike)
and scored three ways, each with its bootstrap interval:

- real: the n images themselves against the reference. The floor from finite n alone: a generator that
  reproduced the dataset exactly would score about this at n.
- through the codec: the same images encoded and decoded by the preset's codec, against the reference. The floor
  of a latent model that generated the codec's latents of real images exactly: the codec's blur and lost details
  are in it.
- codec, paired: the reconstructions against statistics of the same n originals (the codec card's measure, here on
  the reference's images).

A generated FID can be read against the middle row: the part of it above that floor is the generator's.
Features of the real images come from the reference's feature log when the reference was built on this machine
(metrics.real_features), so the first row is then free.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

import workbench as wb
from benchmarks.harness import emit, machine, parse, parser
from workbench.core.config import Config, DataConfig
from workbench.data.codecs import build_codec
from workbench.data.datasets import build_dataset
from workbench.evaluation.evaluate import default_reference, reference_split
from workbench.evaluation.features import extract_features, resolve_extractor
from workbench.evaluation.metrics import (
    FeatureOptions,
    RealImages,
    ReferenceStats,
    bootstrap_fid,
    fid_from_features,
    real_features,
)


def floors(
    cfg: Config,
    n: int,
    seed: int = 0,
    extractor: str = "inception",
    reference: ReferenceStats | None = None,
    log_dir: Path | None = None,
    batch: int = 8,
) -> dict:
    """The three FIDs of one config's data at n (module docstring), with 90% bootstrap intervals and timings;
    `reference` defaults to the one its reports are scored against (evaluation.default_reference)."""
    d = cfg.data
    net = resolve_extractor(extractor)
    reference = reference if reference is not None else default_reference(cfg, extractor)
    split = reference_split(d)
    ds = build_dataset(DataConfig(dataset=d.dataset, root=d.root, image_size=d.image_size, channels=d.channels), split)
    if not 2 <= n <= len(ds):
        raise ValueError(
            f"bench_floors: n={n} but {d.dataset}/{split} has {len(ds)} images. Fix: use 2 <= --n <= {len(ds)}."
        )
    t0 = time.perf_counter()
    real_images = RealImages(d.dataset, split, d.image_size, d.channels, d.root)
    real, order, _ = real_features(ds, real_images, net, n, FeatureOptions(seed=seed, log_dir=log_dir))
    real_seconds = time.perf_counter() - t0
    codec, recon, t0 = build_codec(d), [], time.perf_counter()
    for i in range(0, n, batch):
        images = torch.stack([ds[j][0] for j in order[i : i + batch]])
        recon.append(extract_features(net, codec.decode(codec.encode(images)), batch))
    fake = torch.cat(recon)
    recon_seconds = time.perf_counter() - t0
    g = torch.Generator().manual_seed(seed)

    def row(features: torch.Tensor, against: ReferenceStats) -> dict:
        low, high = bootstrap_fid(features, against, generator=g)
        return {"fid": fid_from_features(features, against), "fid_low": low, "fid_high": high}

    originals = ReferenceStats.from_features(real, {"name": "the same originals", "extractor": extractor})
    return {
        "name": cfg.name,
        "dataset": d.dataset,
        "image_size": d.image_size,
        "codec": d.vae_path,
        "n": n,
        "images": f"first {n} of torch.randperm({len(ds)}) seeded {seed} of {d.dataset}/{split}",
        "reference": reference.card.get("name"),
        "reference_count": reference.card.get("count"),
        "extractor": net.id,
        "real": row(real, reference),
        "through_codec": row(fake, reference),
        "codec_paired": row(fake, originals),
        "seconds": {"real_features": round(real_seconds, 1), "codec_and_features": round(recon_seconds, 1)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, threads=2)
    ap.add_argument(
        "--presets",
        nargs="+",
        default=["emoji256-T16", "people256-T16"],
        help="presets whose data (dataset, codec, reference) to measure; one row each",
    )
    ap.add_argument("--n", type=int, default=1000, help="images per row (the zoo scores n=1,000)")
    ap.add_argument("--seed", type=int, default=0)
    args = parse(ap, argv)
    for preset in args.presets:
        emit({**floors(wb.preset(preset), args.n, args.seed), "machine": machine()}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
