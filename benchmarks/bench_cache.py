"""Cached vs naive (recompute the whole prefix every step) block-wise sampling, side by side in one run.

    python -m benchmarks.bench_cache [--preset fmnist-small] [--blocks 16] [--patch 2] [--steps 50] [--images 4]
                                     [--naive-blocks 0] [--rounds 2] [--threads 0] [--clock wall|cpu]
                                     [--out results.jsonl]

Prints the measured speed-up next to the two predictions of the cost model: block-layer evaluations
(naive_cost / cached_cost) and FLOPs (sample_flops, which adds attention over the context). `--naive-blocks n`
times only the first n blocks of the naive sampler and scales by T/n: every naive step runs the same full
sequence, so its cost does not depend on the block (the per-block times are printed to check this).
`--compile` also times the cached sampler with its denoising step under torch.compile (dynamic shapes: the
context grows block by block); the compilation is done in the warm-up and reported, not timed.
"""

from __future__ import annotations

import time

import torch

import workbench as wb
from benchmarks.harness import CLOCKS, best_times, emit, machine, parse, parser
from workbench.core.compute import cached_cost, naive_cost, sample_flops


def naive_block_times(model, cfg, blocks: int, **run) -> list[float]:
    """Seconds of each of the first `blocks` blocks of the naive sampler."""
    times, start = [], time.perf_counter()
    for event in wb.generate_events(model, cfg, wb.sample_request(cfg, use_cache=False, **run)):
        if event.kind == "block":
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
            if len(times) == blocks:
                break
    return times


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, threads=0)
    ap.add_argument("--preset", default="fmnist-small")
    ap.add_argument("--blocks", type=int, default=16, help="T")
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50, help="S")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--naive-blocks", type=int, default=0, help="time the first n naive blocks (0: all T)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time a torch.compile'd denoising step")
    ap.add_argument("--clock", choices=CLOCKS, default="wall", help="wall clock, or process CPU time (1 thread)")
    args = parse(ap, argv)
    torch.manual_seed(0)
    cfg = wb.preset(args.preset, **{"model.num_blocks": args.blocks, "model.patch_size": args.patch})
    model = wb.build_model(cfg)
    m, S, T = cfg.model, args.steps, cfg.model.num_blocks
    run = dict(num_images=args.images, steps=S, sampler="ddim", seed=0)
    nb = args.naive_blocks or T
    wb.generate(model, cfg, **{**run, "steps": 2})  # warm-up
    per_block: list[float] = []

    def naive() -> None:
        per_block[:] = naive_block_times(model, cfg, nb, **run)

    fns = {"cached": lambda: wb.generate(model, cfg, use_cache=True, **run), "naive": naive}
    compile_s = None
    if args.compile:
        compiled = wb.build_model(cfg)
        compiled.load_state_dict(model.state_dict())
        compiled.denoise_step = torch.compile(compiled.denoise_step, dynamic=True)
        start = time.perf_counter()
        wb.generate(compiled, cfg, **run)  # compiles (and recompiles as shapes first change)
        compile_s = round(time.perf_counter() - start, 1)
        fns["cached_compiled"] = lambda: wb.generate(compiled, cfg, use_cache=True, **run)
    t = best_times(fns, rounds=args.rounds, clock=args.clock)
    t_naive = t["naive"] * T / nb
    flops_c, flops_n = (sum(sample_flops(m, S, c).values()) for c in (True, False))
    emit(
        {
            "benchmark": "cache",
            "preset": args.preset,
            "N": m.depth,
            "D": m.diffusion_depth,
            "T": T,
            "S": S,
            "patch": m.patch_size,
            "tokens_per_block": m.block_tokens,
            "width": m.width,
            "images": args.images,
            "naive_blocks_timed": nb,
            "clock": args.clock,
            "naive_block_seconds_last_round": [round(x, 3) for x in per_block],
            "seconds_cached": round(t["cached"], 3),
            "seconds_naive": round(t_naive, 3),
            "measured_speedup": round(t_naive / t["cached"], 2),
            "predicted_speedup_block_layers": round(naive_cost(m, S) / cached_cost(m, S), 2),
            "predicted_speedup_flops": round(flops_n / flops_c, 2),
            "gflops_per_s_cached": round(flops_c * args.images / t["cached"] / 1e9, 1),
            "gflops_per_s_naive": round(flops_n * args.images / t_naive / 1e9, 1),
            **(
                {
                    "seconds_cached_compiled": round(t["cached_compiled"], 3),
                    "compile_warmup_s": compile_s,
                    "compiled_speedup_over_eager": round(t["cached"] / t["cached_compiled"], 3),
                }
                if args.compile
                else {}
            ),
            "machine": machine(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
