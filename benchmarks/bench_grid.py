"""Cached sampling time per image across a grid of (N, D, T, S), fitted against the cost model.

    python benchmarks/bench_grid.py [--preset fmnist-small] [--patch 2] [--depths 4,6,8] [--blocks 1,4,16]
                                    [--steps 4,16] [--images 4] [--rounds 2] [--threads 0] [--clock wall|cpu]
                                    [--out results.jsonl]

D runs over {1, N/2, N}. Regressors per image, all from workbench.compute:
  layer   Lb * cached_cost      token-layer evaluations: T*[N + (N-D) + D*S] block-layer evaluations times the
                                tokens per block (blocks of different T differ in size, so the unit is a token)
  attn    Lb^2 * attention_cost query-key pairs over the growing context
  steps   T * S                 denoising steps (a fixed per-step overhead: scheduler, embedder, head, Python)
Least squares without intercept; reports R^2 (and the mean relative error) for layer, layer+attn (the cost
model), and layer+attn+steps (what remains as per-step overhead), and for FLOPs (sample_flops) as a check.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import workbench as wb
from harness import CLOCKS, best_times, emit, machine
from workbench.compute import attention_cost, cached_cost, paper_cost, sample_flops


def fit(columns: dict[str, np.ndarray], y: np.ndarray) -> dict:
    """Least squares y ~ X (no intercept): coefficients, R^2 and mean relative error."""
    X = np.stack(list(columns.values()), axis=1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    pred = X @ coef
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return {"coef": dict(zip(columns, (float(c) for c in coef))), "r2": round(float(r2), 4),
            "mean_rel_err": round(float(np.mean(np.abs(pred - y) / y)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="fmnist-small")
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--depths", default="4,6,8", help="N values")
    ap.add_argument("--blocks", default="1,4,16", help="T values")
    ap.add_argument("--steps", default="4,16", help="S values")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--clock", choices=CLOCKS, default="wall", help="wall clock, or process CPU time (1 thread)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    grid, runs = [], {}
    for N in map(int, args.depths.split(",")):
        for D in sorted({1, N // 2, N}):
            for T in map(int, args.blocks.split(",")):
                cfg = wb.preset(args.preset, **{"model.depth": N, "model.diffusion_depth": D, "model.num_blocks": T,
                                                "model.patch_size": args.patch})
                torch.manual_seed(0)
                model = wb.build_model(cfg)
                for S in map(int, args.steps.split(",")):
                    name = f"N{N}-D{D}-T{T}-S{S}"
                    grid.append((name, cfg.model, S))
                    runs[name] = (lambda model=model, cfg=cfg, S=S:
                                  wb.generate(model, cfg, num_images=args.images, steps=S, sampler="ddim", seed=0))
    wb.generate(model, cfg, num_images=args.images, steps=2)  # warm-up
    seconds = best_times(runs, rounds=args.rounds, min_seconds=0.0, clock=args.clock)
    y = np.array([seconds[name] / args.images for name, _, _ in grid])  # seconds per image
    cols = {
        "layer": np.array([m.block_tokens * cached_cost(m, S) for _, m, S in grid]),
        "attn": np.array([m.block_tokens ** 2 * attention_cost(m, S) for _, m, S in grid]),
        "steps": np.array([float(m.num_blocks * S) for _, m, S in grid]),
    }
    flops = [sample_flops(m, S) for _, m, S in grid]
    emit({
        "benchmark": "grid", "preset": args.preset, "patch": args.patch, "images": args.images, "clock": args.clock,
        "fit_layer": fit({"layer": cols["layer"]}, y),
        "fit_layer_attn": fit({k: cols[k] for k in ("layer", "attn")}, y),
        "fit_layer_attn_steps": fit(cols, y),
        "fit_flops": fit({"linear": np.array([f["linear"] for f in flops]),
                          "attention": np.array([f["attention"] for f in flops])}, y),
        "points": [{"config": name, "seconds_per_image": round(float(t), 5), "paper_cost": paper_cost(m, S),
                    "cached_cost": cached_cost(m, S), "tokens_per_block": m.block_tokens}
                   for (name, m, S), t in zip(grid, y)],
        "machine": machine(),
    }, args.out)


if __name__ == "__main__":
    main()
