"""The harness every benchmark shares: its command line (--threads, --out, --dry-run), the torch thread count, the
machine and its load recorded beside each result, results appended to JSON-lines files, and timings taken side
by side.

The reference machine is shared: absolute timings drift with the load of other processes, so every figure is a
ratio of measurements taken side by side in one run (alternating, best of k), and every result carries the
machine, its load and the thread count it was measured with. With one thread, `clock="cpu"` times the process's
CPU time instead of the wall clock: time spent descheduled by other processes does not count, which makes
single-threaded ratios far steadier on a loaded machine (contention for caches and memory still does).

A benchmark is a module run as `python -m benchmarks.NAME` from the repository root:

    ap = harness.parser(__doc__, out="benchmarks/results/NAME.jsonl")   # --threads, --out (and --dry-run)
    ap.add_argument(...)                                                 # its own options
    args = harness.parse(ap, argv)                                       # parsed; torch threads set
    harness.emit({"benchmark": "NAME", ..., "machine": harness.machine()}, args.out)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def parser(doc: str | None, out: str | None = None, threads: int = 2, dry_run: bool = False) -> argparse.ArgumentParser:
    """The command line every benchmark starts from: its docstring as the description, --threads (torch threads,
    default `threads`; 0 keeps torch's default), --out (the JSON-lines file results are appended to, default `out`;
    none: printed only) and, with `dry_run`, --dry-run (the same code path, tiny, in seconds)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--threads", type=int, default=threads, help=f"torch threads (0: torch's default; default {threads})"
    )
    ap.add_argument("--out", default=out, help=f"append the results to this JSON-lines file (default {out})")
    if dry_run:
        ap.add_argument("--dry-run", action="store_true", help="the same code path, tiny, in seconds")
    return ap


def parse(ap: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse `argv` (default sys.argv[1:]) and set torch's thread count from --threads before any work starts."""
    args = ap.parse_args(argv)
    set_threads(args.threads)
    return args


def set_threads(threads: int) -> int:
    """Set torch's intra-op thread count (0 or less: leave torch's default); returns the count in effect."""
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def load() -> float | None:
    """The machine's 1-minute load average (None where the OS does not report one)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def command_line() -> str:
    """The command running, as a reader would type it again: `python -m benchmarks.NAME ARGS` for a benchmark."""
    script = Path(sys.argv[0])
    if script.suffix == ".py" and script.parent.name == "benchmarks":
        return " ".join([f"python -m benchmarks.{script.stem}", *sys.argv[1:]])
    return "python " + " ".join(sys.argv)


def append_jsonl(row: dict[str, Any], path: str | Path) -> None:
    """Append `row` to the JSON-lines file `path` as one line, in one write (concurrent writers do not interleave
    lines; a killed run leaves whole lines), creating its folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(row, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def machine() -> dict[str, Any]:
    """Date, CPU or GPU, threads, library versions and the current load."""
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        text = cpuinfo.read_text()
        names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
        info["cpu"] = names[0] if names else platform.processor()
        flags = set(text.split())
        info["cpu_bf16"] = sorted(f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags)
    if load() is not None:
        info["load_1min"] = load()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def best_times(
    fns: dict[str, Callable[[], Any]],
    rounds: int = 5,
    sync: Callable[[], Any] | None = None,
    min_seconds: float = 0.05,
    clock: str = "wall",
) -> dict[str, float]:
    """Seconds per call of each function: they alternate for `rounds` rounds and each keeps its best round.

    A round repeats a function until `min_seconds` have passed (at least once), so tiny calls are timed in bulk.
    `clock`: "wall" or "cpu" (process CPU time; meaningful with one thread).
    """
    now = CLOCKS[clock]
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            calls, start = 0, now()
            while True:
                fn()
                calls += 1
                if sync is not None:
                    sync()
                elapsed = now() - start
                if elapsed >= min_seconds:
                    break
            best[name] = min(best[name], elapsed / calls)
    return best


MATMUL_SHAPES = ((1024, 256, 768), (4096, 256, 688), (2048, 2048, 2048))  # model-sized GEMMs and a square one


def matmul_probes(
    dtype: torch.dtype, device: str = "cpu", shapes=MATMUL_SHAPES
) -> dict[str, tuple[Callable[[], Any], float]]:
    """One probe per GEMM shape: name -> (function, FLOPs per call), to time alongside a workload."""
    probes = {}
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        probes[f"matmul_{str(dtype).split('.')[-1]}_{m}x{k}x{n}"] = (lambda a=a, b=b: torch.mm(a, b), 2.0 * m * k * n)
    return probes


def peak_rate(times: dict[str, float], probes: dict[str, tuple[Callable, float]]) -> float:
    """Best FLOP/s over the probes, from their timings."""
    return max(flops / times[name] for name, (_, flops) in probes.items())


def emit(result: dict[str, Any], out: str | None) -> None:
    """Print a result as JSON and append it to a JSON-lines file (if given), with the command that made it."""
    result = {**result, "command": result.get("command") or command_line()}
    print(json.dumps(result, indent=1, default=str))
    if out:
        append_jsonl(result, out)


def score_steps(
    model, cfg, steps: list[int], sampler: str | None, *, label: str, n: int, seed: int, extractor: str, reference
) -> list[dict]:
    """evaluation.score of one model and config at every S of `steps` from the same seed: the curve points (as
    dicts) a sampler or x0 comparison emits, each printed as `label` S=..: FID [interval] as it lands."""
    from workbench.evaluation.evaluate import ScoreSpec, score

    points = []
    for S in steps:
        sc = score(model, cfg, S, ScoreSpec(n=n, seed=seed, sampler=sampler, extractor=extractor, reference=reference))
        points.append(sc.as_dict())
        print(
            f"  {label} S={S}: FID {sc.fid:.2f} [{sc.fid_low:.2f}, {sc.fid_high:.2f}], "
            f"{sc.pixels_out_of_range:.2%} out of range",
            flush=True,
        )
    return points
