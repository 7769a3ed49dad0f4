"""Compute FID reference statistics with their provenance card into data/reference/, as `eval` and the app find them
(workbench.evaluation.evaluate.build_reference: the dataset's reference split, up to 10,000 images).

    python scripts/build_reference.py                        # Fluent 3D at 256 px, Inception, all 3,391 images
    python scripts/build_reference.py --dataset fluent-people
    python scripts/build_reference.py --dataset emoji --image-size 64 --extractor inception

The Fluent 3D statistics use every image, train and held out (evaluation.REFERENCE_SPLITS): about 6 minutes on
2 idle cores (Inception runs at ~10 images/s there; --threads sets torch's threads). Features are logged while
they are computed (metrics.reference_stats), so a killed run resumes. Prints the card and the row of
data/reference/README.md's table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from workbench.core.config import DataConfig
from workbench.core.paths import REFERENCE_DIR
from workbench.evaluation.evaluate import build_reference, reference_split


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fluent", help="a workbench dataset (default fluent)")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--root", default="", help="data.root (default: where the dataset is installed)")
    ap.add_argument("--extractor", choices=("inception", "fmnist-classifier"), default="inception")
    ap.add_argument("--out", type=Path, default=REFERENCE_DIR, help="folder of the statistics (default data/reference)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        data = DataConfig(dataset=args.dataset, image_size=args.image_size, channels=args.channels, root=args.root)
    except ValueError as err:
        print(f"build_reference: {err}", file=sys.stderr)
        return 2
    start, shown = time.perf_counter(), [0.0]

    def progress(done: int, n: int) -> None:
        if time.perf_counter() - shown[0] > 30 or done == n:  # a line every 30 s
            shown[0] = time.perf_counter()
            print(f"features {done}/{n} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)

    print(
        f"{args.dataset} {args.image_size}px, split {reference_split(data)!r}, {args.extractor} -> {args.out}",
        file=sys.stderr,
    )
    try:
        stats = build_reference(data, args.extractor, progress, args.out)
    except (FileNotFoundError, ValueError) as err:  # a missing dataset or a stale cache: the message names the fix
        print(f"build_reference: {err}", file=sys.stderr)
        return 1
    card = json.loads((Path(args.out) / f"{stats.name}.json").read_text())
    print(json.dumps(card, indent=1))
    split = "all: train and held out" if card["split"] == "all" else card["split"]
    print(
        f"| `{stats.name}` | {card['extractor_id']} | {card['count']} ({split}) | `{card['sha256']}` | "
        f"{card['seconds']:.0f} s |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
