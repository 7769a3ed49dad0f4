"""Cached sampling time per image across a grid of (N, D, T, S), fitted against the cost model.

    python -m benchmarks.bench_grid [--preset fmnist-small] [--patch 2] [--depths 4,6,8] [--blocks 1,4,16]
                                    [--steps 4,16] [--images 4] [--rounds 2] [--threads 0] [--clock wall|cpu]
                                    [--out results.jsonl]
    python -m benchmarks.bench_grid --refit results.jsonl     # the fits again, from the last stored timings

D runs over {1, N/2, N}. Least squares without intercept of seconds per image on regressors from
workbench.core.compute; reports R^2 and the mean relative error of each fit:
  per T          cached_cost (T*[N + (N-D) + D*S]: block-layer evaluations, all of one size at fixed T), and
                 paper_cost (T*[(N-D) + D*S])
  across T       blocks of different T differ in size, so a block-layer evaluation is no longer one unit of work:
    block_layers   cached_cost                  cost of a layer call (small matrices run below the matmul rate)
    token_layers   Lb * cached_cost             work: token-layer evaluations
    attention      Lb^2 * attention_cost        query-key pairs over the growing context
    steps          T * S                        fixed per-step work (scheduler, embedder, head, Python)
    flops          sample_flops                 analytic FLOPs
"""

from __future__ import annotations

import numpy as np
import torch

import workbench as wb
from benchmarks.harness import CLOCKS, best_times, emit, machine, parse, parser
from workbench.core.compute import attention_cost, cached_cost, paper_cost, sample_flops


def fit(columns: dict[str, np.ndarray], y: np.ndarray) -> dict:
    """Least squares y ~ X (no intercept): coefficients, R^2 and mean relative error."""
    X = np.stack(list(columns.values()), axis=1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    pred = X @ coef
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return {
        "coef": dict(zip(columns, (float(c) for c in coef))),
        "r2": round(float(r2), 4),
        "mean_rel_err": round(float(np.mean(np.abs(pred - y) / y)), 3),
    }


def fits(grid: list[tuple[str, object, int]], y: np.ndarray) -> dict:
    """All the fits of the docstring for grid points (name, ModelConfig, S) with seconds per image y."""
    cols = {
        "block_layers": np.array([cached_cost(m, S) for _, m, S in grid]),
        "token_layers": np.array([m.block_tokens * cached_cost(m, S) for _, m, S in grid]),
        "attention": np.array([m.block_tokens**2 * attention_cost(m, S) for _, m, S in grid]),
        "steps": np.array([float(m.num_blocks * S) for _, m, S in grid]),
        "flops": np.array([sum(sample_flops(m, S).values()) for _, m, S in grid]),
    }
    out = {"per_T": {}}
    for T in sorted({m.num_blocks for _, m, _ in grid}):
        idx = [i for i, (_, m, _) in enumerate(grid) if m.num_blocks == T]
        out["per_T"][T] = {
            "cached_cost": fit({"block_layers": cols["block_layers"][idx]}, y[idx]),
            "paper_cost": fit({"paper": np.array([paper_cost(grid[i][1], grid[i][2]) for i in idx])}, y[idx]),
        }
    for name in (
        "block_layers",
        "token_layers",
        "flops",
        "block_layers+token_layers",
        "block_layers+token_layers+attention",
        "block_layers+token_layers+attention+steps",
        "flops+block_layers",
    ):
        out[name] = fit({k: cols[k] for k in name.split("+")}, y)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, threads=0)
    ap.add_argument("--preset", default="fmnist-small")
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--depths", default="4,6,8", help="N values")
    ap.add_argument("--blocks", default="1,4,16", help="T values")
    ap.add_argument("--steps", default="4,16", help="S values")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--refit", default=None, help="fit the last stored result of this JSON-lines file again")
    ap.add_argument("--clock", choices=CLOCKS, default="wall", help="wall clock, or process CPU time (1 thread)")
    args = parse(ap, argv)
    if args.refit:
        refit(args.refit)
        return
    grid, runs = [], {}
    for N in map(int, args.depths.split(",")):
        for D in sorted({1, N // 2, N}):
            for T in map(int, args.blocks.split(",")):
                cfg = wb.preset(
                    args.preset,
                    **{
                        "model.depth": N,
                        "model.diffusion_depth": D,
                        "model.num_blocks": T,
                        "model.patch_size": args.patch,
                    },
                )
                torch.manual_seed(0)
                model = wb.build_model(cfg)
                for S in map(int, args.steps.split(",")):
                    name = f"N{N}-D{D}-T{T}-S{S}"
                    grid.append((name, cfg.model, S))
                    runs[name] = lambda model=model, cfg=cfg, S=S: wb.generate(
                        model, cfg, num_images=args.images, steps=S, sampler="ddim", seed=0
                    )
    wb.generate(model, cfg, num_images=args.images, steps=2)  # warm-up
    seconds = best_times(runs, rounds=args.rounds, min_seconds=0.0, clock=args.clock)
    y = np.array([seconds[name] / args.images for name, _, _ in grid])  # seconds per image
    emit(
        {
            "benchmark": "grid",
            "preset": args.preset,
            "patch": args.patch,
            "images": args.images,
            "clock": args.clock,
            "fits": fits(grid, y),
            "points": [
                {
                    "config": name,
                    "seconds_per_image": round(float(t), 5),
                    "paper_cost": paper_cost(m, S),
                    "cached_cost": cached_cost(m, S),
                    "tokens_per_block": m.block_tokens,
                }
                for (name, m, S), t in zip(grid, y)
            ],
            "machine": machine(),
        },
        args.out,
    )


def refit(path: str) -> None:
    """Print the fits of the last grid result stored in `path` (grid points rebuilt from their names)."""
    import json

    result = [json.loads(line) for line in open(path) if '"grid"' in line][-1]
    grid, y = [], []
    for p in result["points"]:
        N, D, T, S = (int(part[1:]) for part in p["config"].split("-"))
        cfg = wb.preset(
            result["preset"],
            **{
                "model.depth": N,
                "model.diffusion_depth": D,
                "model.num_blocks": T,
                "model.patch_size": result["patch"],
            },
        )
        grid.append((p["config"], cfg.model, S))
        y.append(p["seconds_per_image"])
    print(json.dumps({"refit_of": result["machine"]["date"], "fits": fits(grid, np.array(y))}, indent=1))


if __name__ == "__main__":
    main()
