"""Cached vs naive (recompute the prefix every step) block-wise sampling, side by side in one run.

    python benchmarks/bench_cache.py [--preset fmnist-small] [--blocks 16] [--steps 50] [--images 4]

Prints the measured speed-up next to the one the cost model predicts (naive_cost / cached_cost).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import workbench as wb
from workbench.compute import cached_cost, naive_cost


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="fmnist-small")
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = wb.preset(args.preset, **{"model.num_blocks": args.blocks, "model.patch_size": args.patch})
    model = wb.build_model(cfg)
    run = dict(num_images=args.images, steps=args.steps, sampler="ddim", seed=0)
    wb.generate(model, cfg, **{**run, "steps": 2})  # warm-up
    t_cache = timed(lambda: wb.generate(model, cfg, use_cache=True, **run), args.repeats)
    t_naive = timed(lambda: wb.generate(model, cfg, use_cache=False, **run), args.repeats)
    m = cfg.model
    result = {
        "preset": args.preset, "N": m.depth, "D": m.diffusion_depth, "T": m.num_blocks, "S": args.steps,
        "tokens_per_block": m.block_tokens, "width": m.width, "images": args.images,
        "threads": torch.get_num_threads(),
        "seconds_cached": round(t_cache, 3), "seconds_naive": round(t_naive, 3),
        "measured_speedup": round(t_naive / t_cache, 2),
        "predicted_speedup": round(naive_cost(m, args.steps) / cached_cost(m, args.steps), 2),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
