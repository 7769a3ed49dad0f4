"""Before/after: time the same workloads on two revisions of the package, alternating, in one run.

    python -m benchmarks.compare_revisions BASE [HEAD] [--workloads sample,naive,train] [--rounds 3] [--threads 1]
                                           [--clock cpu|wall]

BASE and HEAD are git revisions (HEAD defaults to the working tree). Each revision's `workbench/` is exported
with `git archive` to a temporary folder; each workload then runs in a fresh subprocess per revision and round
(alternating BASE, HEAD), using only the public API that both revisions have, and the best time per revision
is kept. Prints seconds per revision and the speed-up HEAD/BASE per workload.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from benchmarks.harness import emit, machine, parse, parser

REPO = Path(__file__).resolve().parents[1]

# Each workload prints {"seconds": best seconds per call}; {preset} and {threads} are filled in.
WORKLOADS = {
    # cached sampling, T=16 blocks of 16 tokens, S=50, 4 images (the cache benchmark's setting)
    "sample": """
cfg = wb.preset("{preset}", **{{"model.num_blocks": 16, "model.patch_size": 2}})
model = wb.build_model(cfg)
fn = lambda: wb.generate(model, cfg, num_images=4, steps=50, sampler="ddim", seed=0, use_cache=True)
""",
    # one block of the naive sampler (recompute everything every step), S=10
    "naive": """
cfg = wb.preset("{preset}", **{{"model.num_blocks": 16, "model.patch_size": 2}})
model = wb.build_model(cfg)
def fn():
    kw = dict(num_images=4, steps=10, sampler="ddim", seed=0, use_cache=False)
    new = hasattr(wb, "sample_request")  # revisions before the sampling request took the settings as keywords
    run = lambda: wb.generate_events(model, cfg, wb.sample_request(cfg, **kw))
    events = run() if new else wb.generate_events(model, cfg, **kw)
    for e in events:
        if e.kind == "block":
            break
""",
    # one training step (forward, backward, AdamW) at the preset's batch size, float32
    "train": """
from workbench.core.diffusion import Diffusion
cfg = wb.preset("{preset}")
model = wb.build_model(cfg)
diffusion = Diffusion(cfg.diffusion, cfg.model)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x0 = torch.randn(cfg.train.batch_size, cfg.model.latent_channels, cfg.model.latent_size, cfg.model.latent_size)
def fn():
    loss = diffusion.loss(model, x0).total
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
""",
}

RUNNER = """
import json, sys, time, torch
torch.set_num_threads({threads})
torch.manual_seed(0)
import workbench as wb
{setup}
fn()
best = float("inf")
for _ in range({repeats}):
    start = time.{clock}()
    fn()
    best = min(best, time.{clock}() - start)
print(json.dumps({{"seconds": best, "package": wb.__file__}}))
"""


def export(rev: str, dest: Path) -> Path:
    """The package of a git revision under dest (HEAD's working tree is used as it is)."""
    if rev == "WORKTREE":
        return REPO
    dest.mkdir(parents=True)
    archive = dest / "src.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(REPO), "archive", rev, "workbench"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def run_once(root: Path, code: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=root)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["package"].startswith(str(root)):
        raise RuntimeError(f"imported {result['package']}, expected the copy under {root}")
    return result["seconds"]


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, threads=1)
    ap.add_argument("base")
    ap.add_argument("head", nargs="?", default="WORKTREE")
    ap.add_argument("--workloads", default="sample,naive,train")
    ap.add_argument("--preset", default="fmnist-small")
    ap.add_argument("--rounds", type=int, default=3, help="alternating subprocess runs per revision")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per subprocess (best kept)")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="cpu",
        help="wall clock, or process CPU time (steady on a loaded machine with one thread)",
    )
    args = parse(ap, argv)
    result = {
        "benchmark": "revisions",
        "base": args.base,
        "head": args.head,
        "preset": args.preset,
        "clock": args.clock,
    }
    with tempfile.TemporaryDirectory() as tmp:
        roots = {rev: export(rev, Path(tmp) / f"rev{i}") for i, rev in enumerate((args.base, args.head))}
        for name in args.workloads.split(","):
            clock = "perf_counter" if args.clock == "wall" else "process_time"
            code = RUNNER.format(
                threads=args.threads,
                repeats=args.repeats,
                clock=clock,
                setup=WORKLOADS[name].format(preset=args.preset),
            )
            best = dict.fromkeys(roots, float("inf"))
            for _ in range(args.rounds):
                for rev, root in roots.items():
                    best[rev] = min(best[rev], run_once(root, code))
            result[name] = {
                "seconds_base": round(best[args.base], 4),
                "seconds_head": round(best[args.head], 4),
                "speedup": round(best[args.base] / best[args.head], 3),
            }
    result["machine"] = machine() | {"threads": args.threads}
    emit(result, args.out)


if __name__ == "__main__":
    main()
