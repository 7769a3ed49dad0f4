"""Batch-size scaling of cached sampling: images/s and achieved FLOP/s per batch size, in one run.

    python -m benchmarks.bench_batch [--preset fmnist-small] [--blocks 16] [--patch 2] [--steps 20]
                                     [--batches 1,2,4,8,16,32,64] [--rounds 2] [--threads 0] [--clock wall|cpu]
                                     [--out results.jsonl]

Small batches leave the D diffusion layers with (batch x tokens-per-block)-row matrix products, too small to
reach the machine's matmul rate; the matmul rate at the preset's sizes is timed alongside for reference.
"""

from __future__ import annotations

import torch

import workbench as wb
from benchmarks.harness import CLOCKS, best_times, emit, machine, matmul_probes, parse, parser, peak_rate
from workbench.core.compute import sample_flops


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, threads=0)
    ap.add_argument("--preset", default="fmnist-small")
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batches", default="1,2,4,8,16,32,64")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clock", choices=CLOCKS, default="wall", help="wall clock, or process CPU time (1 thread)")
    args = parse(ap, argv)
    cfg = wb.preset(args.preset, **{"model.num_blocks": args.blocks, "model.patch_size": args.patch})
    torch.manual_seed(0)
    model = wb.build_model(cfg).to(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    runs = {f"batch{b}": (lambda b=b: wb.generate(model, cfg, num_images=b, steps=args.steps, seed=0)) for b in batches}
    probes = matmul_probes(torch.float32, args.device)
    wb.generate(model, cfg, num_images=2, steps=2)  # warm-up
    sync = torch.cuda.synchronize if args.device == "cuda" else None
    times = best_times(
        {**runs, **{k: f for k, (f, _) in probes.items()}},
        rounds=args.rounds,
        sync=sync,
        min_seconds=0.0,
        clock=args.clock,
    )
    flops = sum(sample_flops(cfg.model, args.steps).values())
    peak = peak_rate(times, probes)
    emit(
        {
            "benchmark": "batch",
            "preset": args.preset,
            "T": args.blocks,
            "S": args.steps,
            "patch": args.patch,
            "clock": args.clock,
            "tokens_per_block": cfg.model.block_tokens,
            "matmul_peak_gflops": round(peak / 1e9, 1),
            "scaling": [
                {
                    "batch": b,
                    "images_per_s": round(b / times[f"batch{b}"], 3),
                    "gflops_per_s": round(b * flops / times[f"batch{b}"] / 1e9, 1),
                    "fraction_of_matmul_peak": round(b * flops / times[f"batch{b}"] / peak, 3),
                }
                for b in batches
            ],
            "machine": machine(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
