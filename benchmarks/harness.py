"""Measurement helpers shared by the benchmark scripts.

The reference machine is shared: absolute timings drift with the load of other processes, so every figure is a
ratio of measurements taken side by side in one run (alternating, best of k), and every result carries the
machine, its load and the thread count it was measured with. With one thread, `clock="cpu"` times the process's
CPU time instead of the wall clock: time spent descheduled by other processes does not count, which makes
single-threaded ratios far steadier on a loaded machine (contention for caches and memory still does).
"""

from __future__ import annotations

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
    if hasattr(os, "getloadavg"):
        info["load_1min"] = round(os.getloadavg()[0], 2)
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
    result = {**result, "command": result.get("command") or "python " + " ".join(sys.argv)}
    text = json.dumps(result, default=str)
    print(json.dumps(result, indent=1, default=str))
    if out:
        with open(out, "a") as f:
            f.write(text + "\n")


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
