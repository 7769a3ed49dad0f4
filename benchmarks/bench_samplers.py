"""Samplers on shipped checkpoints: every sampler that fits a checkpoint's objective, at each S of a grid and (for an
elastic checkpoint) at each trained D, scored with one extractor at n images from one seed, so that the rows of a
checkpoint differ only in the sampler. The measurement behind the sampler a zoo member's config names.

    python -m benchmarks.bench_samplers data/checkpoints/vertical/elastic.safetensors
    data/checkpoints/vertical/D*.safetensors

One JSON line per (checkpoint, D, sampler) into benchmarks/results/samplers.jsonl, and a table on stdout.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.harness import emit, machine, parse, parser, score_steps


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, out="benchmarks/results/samplers.jsonl", threads=2)
    p.add_argument("checkpoints", nargs="+", help="export files or run folders")
    p.add_argument("--steps", default="8,16,32", help="S grid, comma separated")
    p.add_argument("--n", type=int, default=1000, help="images per point")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--extractor",
        default=None,
        help="default: evaluation.default_extractor (the classifier for Fashion-MNIST, else Inception)",
    )
    args = parse(p, argv)

    from workbench.core.config import samplers_for
    from workbench.evaluation.evaluate import default_extractor, default_reference
    from workbench.training.checkpoint import load_for_inference

    steps = [int(s) for s in args.steps.split(",")]
    table = []
    for path in args.checkpoints:
        model, cfg = load_for_inference(path)
        extractor = args.extractor or default_extractor(cfg)
        ref = default_reference(cfg, extractor)
        for D in cfg.model.depths:  # every trained D of an elastic checkpoint, else its own
            c = cfg.override(**{"sample.diffusion_depth": D}) if cfg.model.elastic_depths else cfg
            for sampler in samplers_for(cfg.diffusion.prediction):
                points = score_steps(
                    model,
                    c,
                    steps,
                    sampler,
                    label=f"{Path(path).stem} D={D} {sampler}",
                    n=args.n,
                    seed=args.seed,
                    extractor=extractor,
                    reference=ref,
                )
                emit(
                    {
                        "benchmark": "samplers",
                        "checkpoint": Path(path).as_posix(),
                        "D": D,
                        "sampler": sampler,
                        "config_sampler": cfg.sample.sampler,
                        "scores": points,
                        "machine": machine(),
                    },
                    args.out,
                )
                table.append((Path(path).stem, D, sampler, points))
    print("\n| checkpoint | D | sampler | " + " | ".join(f"S={S}" for S in steps) + " |")
    print("|---|---|---|" + "---|" * len(steps))
    for name, D, sampler, points in table:
        cells = " | ".join(f"{q['fid']:.1f} [{q['fid_low']:.1f}, {q['fid_high']:.1f}]" for q in points)
        print(f"| {name} | {D} | {sampler} | {cells} |")


if __name__ == "__main__":
    main()
