"""What bf16 sampling (sample.precision: bf16, autocast around every model call) costs in FID, on the CPU.

    python -m benchmarks.bench_precision [--checkpoint data/checkpoints/vertical/D1.safetensors] [--n 500]

One shipped model samples the same n images twice, image i from the same per-image seed both times, in fp32 and
in bf16; both sets are scored against the shipped reference with the model's default extractor, and the paired
FID difference FID(bf16) - FID(fp32) comes with a 90% bootstrap interval over the images (resampled together, so the
noise both sides share cancels). Also the largest pixel difference and the sampling time of each. Prints one JSON
object; --out FILE appends it (the recorded figure: --out benchmarks/results/precision.jsonl).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

import workbench as wb
from benchmarks.harness import append_jsonl, parse, parser
from workbench.evaluation.evaluate import default_extractor, shipped_reference
from workbench.evaluation.features import extract_features
from workbench.evaluation.metrics import fid_from_features, paired_fid_difference
from workbench.sampling.sampler import generate_images

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)  # --threads (default 2) and --out
    ap.add_argument("--checkpoint", type=Path, default=REPO / "data/checkpoints/vertical/D1.safetensors")
    ap.add_argument("--n", type=int, default=500, help="images per precision")
    ap.add_argument("--steps", type=int, default=16, help="S per block")
    ap.add_argument("--seed", type=int, default=0)
    args = parse(ap, argv)
    model, cfg = wb.load_for_inference(args.checkpoint)
    extractor = default_extractor(cfg)
    reference = shipped_reference(cfg.data, extractor)
    if reference is None:
        raise SystemExit(f"no shipped reference statistics for {cfg.data.dataset} and {extractor}")
    images, seconds = {}, {}
    for precision in ("fp32", "bf16"):
        request = wb.sample_request(cfg, steps=args.steps, seed=args.seed, precision=precision)
        start = time.perf_counter()
        images[precision] = generate_images(model, cfg, args.n, request, batch=100)  # (n, C, H, W) in [-1, 1]
        seconds[precision] = time.perf_counter() - start
    feats = {p: extract_features(extractor, x) for p, x in images.items()}
    diff, low, high = paired_fid_difference(
        feats["bf16"], feats["fp32"], reference, generator=torch.Generator().manual_seed(0)
    )
    result = {
        "benchmark": "precision",
        "checkpoint": str(args.checkpoint.relative_to(REPO) if args.checkpoint.is_absolute() else args.checkpoint),
        "n": args.n,
        "steps": args.steps,
        "sampler": cfg.sample.sampler,
        "extractor": extractor,
        "fid_fp32": round(fid_from_features(feats["fp32"], reference), 3),
        "fid_bf16": round(fid_from_features(feats["bf16"], reference), 3),
        "fid_bf16_minus_fp32": round(diff, 3),
        "interval_90": [round(low, 3), round(high, 3)],
        "max_abs_pixel_difference": round(float((images["bf16"] - images["fp32"]).abs().max()), 4),
        "mean_abs_pixel_difference": round(float((images["bf16"] - images["fp32"]).abs().mean()), 5),
        "seconds_fp32": round(seconds["fp32"], 1),
        "seconds_bf16": round(seconds["bf16"], 1),
        "threads": args.threads,
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    if args.out:
        append_jsonl(result, args.out)


if __name__ == "__main__":
    main()
