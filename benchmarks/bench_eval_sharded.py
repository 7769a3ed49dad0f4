"""Speed-up of the sharded evaluation: the same `python -m workbench eval` run with 1 process and with 2 processes
(Lightning Fabric, CPU gloo), side by side in one run, each process on one thread, alternating the order over
`--repeats`; wall time per command (process start, model load, generation, features, scoring) and the generation
seconds the report records. The generated features must agree to 1e-5 (the benchmark checks it), so the ratio
compares equal work.

    python -m benchmarks.bench_eval_sharded [--preset fmnist-small] [--n 200] [--steps 8] [--repeats 2]
                                            [--out benchmarks/results/eval_sharded.jsonl]

The model is the preset's architecture with untrained weights (the work per image is what matters here).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import workbench as wb
from benchmarks.harness import emit, machine, parse, parser
from workbench.training.checkpoint import Checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_eval(checkpoint: Path, devices: int, folder: Path, args) -> tuple[float, dict, torch.Tensor]:
    """(wall seconds, report, features in chunk order) of one eval with `devices` processes on one thread each."""
    out, shards = folder / f"report-{devices}.json", folder / f"shards-{devices}-{time.time_ns()}"
    cmd = [sys.executable, "-m", "workbench", "eval", "--checkpoint", str(checkpoint), "--num-samples", str(args.n)]
    cmd += ["--steps", str(args.steps), "--no-flop-count", "--devices", str(devices), "--chunk", str(args.chunk)]
    cmd += ["--shard-dir", str(shards), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(_port()), "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    (sub,) = [p for p in shards.iterdir() if p.is_dir()]
    feats = torch.cat([load_file(str(p))["features"] for p in sorted(sub.glob("chunk-*.safetensors"))])
    return seconds, json.loads(out.read_text()), feats


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, threads=1)  # the parent's; every eval process runs on one thread
    ap.add_argument("--preset", default="fmnist-small")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=2)
    args = parse(ap, argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg = wb.preset(args.preset)
        model = wb.build_model(cfg)
        save_checkpoint(Checkpoint(cfg, 0, model.state_dict(), model.state_dict()), folder / "run")
        times: dict[int, list[float]] = {1: [], 2: []}
        gen: dict[int, list[float]] = {1: [], 2: []}
        feats, fids = {}, {}
        for r in range(args.repeats):
            for devices in (1, 2) if r % 2 == 0 else (2, 1):
                seconds, report, f = run_eval(folder / "run", devices, folder, args)
                times[devices].append(seconds)
                gen[devices].append(report["cost"]["seconds_generate"])
                feats[devices], fids[devices] = f, report["fid"]
        max_diff = float((feats[1] - feats[2]).abs().max())
        if max_diff > 1e-5:
            raise SystemExit(f"features differ by {max_diff:.2g} between 1 and 2 processes")
        wall = {d: statistics.median(t) for d, t in times.items()}
        emit(
            {
                "benchmark": "eval-sharded",
                "preset": args.preset,
                "n": args.n,
                "steps": args.steps,
                "chunk": args.chunk,
                "repeats": args.repeats,
                "wall_seconds": {str(d): [round(x, 2) for x in t] for d, t in times.items()},
                "generate_process_seconds": {str(d): [round(x, 2) for x in t] for d, t in gen.items()},
                "speedup_2_over_1": round(wall[1] / wall[2], 3),
                "features_max_abs_difference": max_diff,
                "fid": fids,
                "machine": machine(),
            },
            args.out,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
