"""Reconstruction quality of codecs side by side: each codec encodes and decodes the same n training images (the
seeded sample scripts/train_codec.py scores), and the Inception FID of its reconstructions against those originals
is reported with a bootstrap interval, beside PSNR; every codec after the first also gets its paired FID difference
to the first (the rows are the same images, so what the two share cancels), with its interval.

    python -m benchmarks.codec_fid data/codecs/fluent3d-tiny ~/runs/codecs/other [--n 1000] [--seed 0]
                                   [--threads 2] [--out results/codec_fid.jsonl]

The originals' features, and each codec's reconstruction features (keyed by the sha256 of its files), are kept in
--cache, so comparing a new codec against old ones costs one pass over its own reconstructions.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from benchmarks.harness import emit, machine, parse, parser
from workbench.core.config import DataConfig
from workbench.core.paths import CODECS_DIR, REPO_ROOT
from workbench.data.codec_training import SIZE, codec_folder, fid_sample, image_batches
from workbench.data.codecs import VAECodec, measure_reconstruction, verify_codec
from workbench.data.datasets import build_dataset
from workbench.evaluation.features import feature_extractor
from workbench.evaluation.metrics import ReferenceStats, bootstrap_fid, fid_from_features, paired_fid_difference


def cached(path: Path, make):
    """torch.load(path) (tensors and plain data only) if it exists, else make() saved there atomically."""
    if path.is_file():
        return torch.load(path, weights_only=True)
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(value, tmp)
    tmp.replace(path)
    return value


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, threads=2)
    ap.add_argument("codecs", nargs="+", help="codec folders (or names under data/codecs); the first is the baseline")
    ap.add_argument("--dataset", default="fluent")
    ap.add_argument("--n", type=int, default=1000, help="training images scored")
    ap.add_argument("--seed", type=int, default=0, help="seed of the image sample and of the bootstraps")
    ap.add_argument("--resamples", type=int, default=100)
    ap.add_argument("--cache", type=Path, default=REPO_ROOT / "data" / "cache" / "codec_fid")
    args = parse(ap, argv)
    folders = [codec_folder(c, CODECS_DIR) for c in args.codecs]
    train_set = build_dataset(DataConfig(dataset=args.dataset, image_size=SIZE, channels=3), "train")
    order = fid_sample(train_set, args.n, args.seed)
    inception = feature_extractor("inception")
    key = hashlib.sha256(json.dumps([train_set.identity, order, inception.id]).encode()).hexdigest()[:16]

    def originals() -> torch.Tensor:
        return torch.cat([inception(images) for images in image_batches(train_set, order, 8)])

    real = cached(args.cache / f"originals-{key}.pt", originals)
    ref = ReferenceStats.from_features(real, {"name": "originals", "extractor": "inception"})
    rows, feats = [], []
    for folder in folders:
        files = verify_codec(folder)
        codec_key = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]

        def reconstructions() -> dict:
            codec, fake, t0 = VAECodec(folder, latent_scale=0.0, batch_size=8), [], time.perf_counter()
            stats = measure_reconstruction(
                codec, image_batches(train_set, order, 8), lambda images, recon: fake.append(inception(recon))
            )
            return {"features": torch.cat(fake), "psnr": stats["psnr"], "seconds": time.perf_counter() - t0}

        got = cached(args.cache / f"recon-{key}-{codec_key}.pt", reconstructions)
        g = torch.Generator().manual_seed(args.seed)
        fid = fid_from_features(got["features"], ref)
        lo, hi = bootstrap_fid(got["features"], ref, args.resamples, generator=g)
        shown = folder.resolve().relative_to(REPO_ROOT) if folder.resolve().is_relative_to(REPO_ROOT) else folder.name
        row = {
            "codec": str(shown),
            "files": codec_key,
            "fid": round(fid, 3),
            "fid_interval_90": [round(lo, 3), round(hi, 3)],
            "psnr": round(got["psnr"], 3),
            "seconds": round(got["seconds"], 1),
        }
        if feats:
            d, dlo, dhi = paired_fid_difference(got["features"], feats[0], ref, args.resamples, generator=g)
            row["minus_first"] = {"fid": round(d, 3), "interval_90": [round(dlo, 3), round(dhi, 3)]}
        feats.append(got["features"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    emit(
        {
            "benchmark": "codec_fid",
            "n": args.n,
            "seed": args.seed,
            "dataset": train_set.identity,
            "extractor": inception.id,
            "of": "reconstructions vs the same originals (train split, seeded sample)",
            "resamples": args.resamples,
            "codecs": rows,
            "machine": machine(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
