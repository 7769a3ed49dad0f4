"""Speed of the feature extractors and of LiveFID, and FID(train, test) of Fashion-MNIST under both extractors.

    python -m benchmarks.metrics_bench [--classifier-n 10000] [--inception-n 10000] [--live-n 1000] [--out F]

FID(train, test) compares the first n images of a seeded permutation of the train split with the first n of the
test split's. Statistics come from reference_stats: shipped ones from data/reference/, the others are computed
once into data/cache/reference/; the seconds reported are those their cards recorded. Inception runs at ~10
images/s on 2 cores, so n=10000 is a ~20 min job per split: run it under nohup. Prints one JSON object.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from benchmarks.harness import emit, load, machine, parse, parser
from workbench.core.paths import CACHE_DIR
from workbench.evaluation.features import extract_features
from workbench.evaluation.metrics import (
    REFERENCE_DIR,
    LiveFID,
    RealImages,
    ReferenceStats,
    frechet_distance,
    kid,
    reference_stats,
)

SHIPPED_N = {"fmnist-classifier": 60000, "inception": 10000}  # train statistics in data/reference/


def noise_images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1  # (n, 1, 32, 32)


def stats(name: str, split: str, n: int) -> ReferenceStats:
    shipped = split == "train" and n == SHIPPED_N[name]
    cache = REFERENCE_DIR if shipped else CACHE_DIR / "reference"
    return reference_stats(RealImages("fashion-mnist", split), name, n=n, cache_dir=cache)


def throughput(name: str, n: int, batch_size: int) -> float:
    x = noise_images(n, seed=0)
    extract_features(name, x[:batch_size], batch_size)  # warm-up: TorchScript profiles its first calls
    start = time.perf_counter()
    extract_features(name, x, batch_size)
    return round(n / (time.perf_counter() - start), 1)


def live_timings(name: str, n: int) -> dict:
    """Median seconds of LiveFID.update(16 images); seconds of the first compute() at n images and of one more
    after 16 further images (default options)."""
    live = LiveFID(stats(name, "train", SHIPPED_N[name]))
    updates = []
    for batch in noise_images(n, seed=1).split(16):
        start = time.perf_counter()
        live.update(batch)
        updates.append(time.perf_counter() - start)
    start = time.perf_counter()
    live.compute()  # the first compute also factors the reference covariance, once per LiveFID's reference
    first = time.perf_counter() - start
    live.update(noise_images(16, seed=2))
    start = time.perf_counter()
    result = live.compute()
    return {
        "n": n,
        "update_16_images_s": round(statistics.median(updates), 4),
        "first_compute_s": round(first, 3),
        "compute_s": round(time.perf_counter() - start, 3),
        "options": "bootstrap=50, inf_points=10, kid_subsets=20, kid_subset_size=min(n, 500)",
        "reference": result.reference,
    }


def fid_train_test(name: str, n: int) -> dict:
    train, test = stats(name, "train", n), stats(name, "test", n)
    kid_mean, kid_std, m = kid(test.kid_features, train.kid_features, generator=torch.Generator().manual_seed(0))
    return {
        "n": n,
        "fid": round(frechet_distance(test.mu, test.sigma, train.mu, train.sigma), 4),
        "kid_mean": round(kid_mean, 6),
        "kid_std": round(kid_std, 6),
        "kid_subset_size": m,
        "extractor": train.card["extractor_id"],
        "train": train.name,
        "test": test.name,
        "seconds_train_stats": train.card["seconds"],
        "seconds_test_stats": test.card["seconds"],
    }


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, threads=0)
    ap.add_argument("--classifier-n", type=int, default=10000)
    ap.add_argument("--inception-n", type=int, default=10000, help="0 skips Inception FID(train, test)")
    ap.add_argument("--live-n", type=int, default=1000, help="images in LiveFID for the classifier timing")
    ap.add_argument("--live-inception-n", type=int, default=64, help="images in LiveFID for the Inception timing")
    args = parse(ap, argv)
    start = time.time()
    result = {
        "benchmark": "metrics",
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_1min_before": load(),
        "images_per_s": {
            "inception_batch16": throughput("inception", 48, 16),
            "classifier_batch256": throughput("fmnist-classifier", 10240, 256),
            "classifier_batch16": throughput("fmnist-classifier", 1024, 16),
        },
        "live_fid": {
            "fmnist-classifier": live_timings("fmnist-classifier", args.live_n),
            "inception": live_timings("inception", args.live_inception_n),
        },
        "fid_train_test": {"fmnist-classifier": fid_train_test("fmnist-classifier", args.classifier_n)},
    }
    if args.inception_n:
        result["fid_train_test"]["inception"] = fid_train_test("inception", args.inception_n)
    result["load_average_1min_after"] = load()
    result["seconds"] = round(time.time() - start)
    result["machine"] = machine()
    emit(result, args.out)


if __name__ == "__main__":
    main()
