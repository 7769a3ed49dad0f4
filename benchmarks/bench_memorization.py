"""Do the 256 px models copy their training images? A thin driver of workbench.evaluation.memorization (the
analysis, its copy rule and its baselines are documented there and in docs/evaluation.md); the same figures come
with an eval report from `python -m workbench eval --checkpoint ... --memorization 200`.

    python -m benchmarks.bench_memorization --checkpoint data/checkpoints/context-people256/cond-ctx-T16.safetensors
                                            [--n 200] [--seed 0] [--threads 2] [--grid docs/images/nn.png]
                                            [--out benchmarks/results/memorization.jsonl]

The model is sampled with its own sample section (an export carries its sampling pick: EMA weights, guidance,
flow shift, S).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.harness import emit, machine, parse, parser
from workbench.evaluation.memorization import MemorizationSpec, memorization
from workbench.training.checkpoint import load_for_inference


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, threads=2)
    ap.add_argument("--checkpoint", required=True, help="a checkpoint or export of a model of a small dataset")
    ap.add_argument("--n", type=int, default=200, help="generated images")
    ap.add_argument("--steps", type=int, default=None, help="S per block (default: the config's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid", type=Path, default=None, help="PNG: generations over their nearest training images")
    args = parse(ap, argv)
    model, config = load_for_inference(args.checkpoint)
    if args.steps is not None:
        config = config.override(**{"sample.steps": args.steps})
    result = memorization(model, config, MemorizationSpec(n=args.n, seed=args.seed, grid=args.grid))
    emit({"benchmark": "memorization", "checkpoint": args.checkpoint, **result, "machine": machine()}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
