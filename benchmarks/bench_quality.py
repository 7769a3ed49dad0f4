"""Quality per compute: FID against sampling FLOPs for (a) a plain diffusion transformer (T=1, D=N), (b) a hybrid
MADFormer and (c) the external diffusers UNet baseline, all trained on Fashion-MNIST 32x32 for the same wall clock.

    python benchmarks/bench_quality.py [--minutes 5] [--hybrid-D 2] [--hybrid-T 4] [--steps 2,4,8,16,32,64]
                                       [--peer-steps 2,4,8,16] [--n 1000] [--eval-threads 0] [--runs runs/quality]
                                       [--out benchmarks/results/quality.jsonl]

The three trainings run at the same time as three single-threaded processes, so on a shared machine they see the
same outside load during their equal wall-clock budgets. The workbench models are the zoo's Fashion-MNIST base
(width 128, 2 heads, N=4, batch 48, lr 1e-3, bf16, EMA 0.995) trained with workbench.train; the learning rate
warms up for 25 steps and then stays flat (a time budget has no known end to decay toward), as the peer's does.
FID: workbench.metrics with the Fashion-MNIST classifier features against the training set (as the zoo reports),
n images per point, DDIM with S steps per block. Compute: sampling FLOPs per image (workbench.compute for the
transformers, FlopCounterMode for the UNet). Reports each curve, the FID ratio hybrid/peer (and DiT/peer) at
equal compute (interpolated in log FLOPs, never extrapolated), and writes an HTML figure beside --out.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from harness import emit, machine

REPO = Path(__file__).resolve().parents[1]
ZOO_BASE = {"model.width": 128, "model.heads": 2, "model.depth": 4, "train.batch_size": 48, "train.lr": 1e-3,
            "train.ema_decay": 0.995, "train.max_steps": 100_000, "train.warmup_frac": 25 / 100_000,
            "train.decay_start_frac": 1.0, "train.ckpt_every": 100_000, "train.sample_every": 0,
            "train.eval_every": 0, "train.log_every": 50, "train.precision": "bf16-mixed", "train.accelerator": "cpu"}


def workbench_config(name: str, D: int, T: int, minutes: float, runs: Path):
    import workbench as wb
    return wb.preset("fmnist-small", **{**ZOO_BASE, "model.diffusion_depth": D, "model.num_blocks": T,
                                        "train.max_minutes": minutes, "train.out_dir": str(runs / name)}
                     ).override(name=f"quality/{name}")


def train_one(kind: str, minutes: float, runs: Path, D: int, T: int) -> None:
    """Worker: train one model single-threaded and write <runs>/<kind>/summary.json."""
    torch.set_num_threads(1)
    if kind == "peer":
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "peer_diffusers.py"), "--minutes", str(minutes),
                        "--threads", "1", "--out", str(runs / "peer")], check=True)
        return
    from workbench.train import train
    summary = train(workbench_config(kind, D, T, minutes, runs))
    (runs / kind / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


def curve_workbench(kind: str, runs: Path, steps: list[int], n: int) -> tuple[list[dict], dict]:
    from workbench.checkpoint import load_for_inference
    from workbench.compute import sample_flops
    from workbench.evaluation import reference_for, score
    model, cfg = load_for_inference(runs / kind)
    reference = reference_for(cfg)
    points = []
    for s in steps:
        fid = score(model, cfg, s, "ddim", n, 0, reference=reference)  # the one evaluation path
        points.append({"steps": s, "fid": fid.fid, "fid_ci": (fid.fid_low, fid.fid_high),
                       "seconds_per_image": fid.seconds_per_image, "flops": sum(sample_flops(cfg.model, s).values())})
    summary = json.loads((runs / kind / "summary.json").read_text())
    m = cfg.model
    return points, {"N": m.depth, "D": m.diffusion_depth, "T": m.num_blocks, "train_steps": summary.get("step"),
                    "train_seconds": summary.get("train_seconds"), "reference": fid.reference,
                    "extractor": fid.extractor}


def curve_peer(runs: Path, steps: list[int], n: int) -> tuple[list[dict], dict]:
    from peer_diffusers import flops_per_image, load_peer, sample_peer
    from workbench.presets import preset
    from workbench.evaluation import reference_for
    from workbench.metrics import compute_fid
    unet = load_peer(runs / "peer")
    reference = reference_for(preset("fmnist-small"))
    points = []
    for s in steps:
        start = time.perf_counter()
        images = sample_peer(unet, n, s)
        seconds = time.perf_counter() - start
        fid = compute_fid(images, reference, seed=0)
        points.append({"steps": s, "fid": fid.fid, "fid_ci": fid.fid_ci, "seconds_per_image": seconds / n,
                       "flops": flops_per_image(unet, s)})
    summary = json.loads((runs / "peer" / "summary.json").read_text())
    return points, {"train_steps": summary["steps"], "train_seconds": summary["seconds"],
                    "params": summary["params"], "reference": fid.reference, "extractor": fid.extractor}


def ratio_at_equal_compute(a: list[dict], b: list[dict]) -> dict | None:
    """FID(a)/FID(b) where both curves were measured: at every knot of either curve inside the common FLOP range,
    each FID interpolated linearly in log FLOPs. None when the ranges do not overlap."""
    xa, xb = (np.log([p["flops"] for p in c]) for c in (a, b))
    lo, hi = max(xa.min(), xb.min()), min(xa.max(), xb.max())
    if lo > hi:
        return None
    knots = np.unique(np.clip(np.concatenate([xa, xb]), lo, hi))
    fa = np.interp(knots, xa, [p["fid"] for p in a])
    fb = np.interp(knots, xb, [p["fid"] for p in b])
    ratios = fa / fb
    return {"flops": np.exp(knots).tolist(), "ratio": ratios.round(3).tolist(),
            "at_lowest_common_compute": round(float(ratios[0]), 3), "best": round(float(ratios.min()), 3),
            "median": round(float(np.median(ratios)), 3)}


def figure(curves: dict[str, list[dict]], path: Path) -> None:
    import plotly.graph_objects as go
    fig = go.Figure()
    for name, pts in curves.items():
        fig.add_scatter(x=[p["flops"] for p in pts], y=[p["fid"] for p in pts], mode="lines+markers", name=name,
                        text=[f"S={p['steps']}" for p in pts])
    fig.update_layout(template="plotly_white", xaxis_type="log", xaxis_title="sampling FLOPs per image",
                      yaxis_title="FID (Fashion-MNIST classifier features)", title="FID against sampling compute")
    fig.write_html(path, include_plotlyjs="cdn")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--hybrid-D", type=int, default=2, help="D of the hybrid (N=4; the zoo's best: D2)")
    ap.add_argument("--hybrid-T", type=int, default=4, help="T of the hybrid")
    ap.add_argument("--steps", default="2,4,8,16,32,64", help="S per block for the two transformers")
    ap.add_argument("--peer-steps", default="2,4,8,16", help="S for the UNet (a UNet step costs 7x a DiT step here, 7-14x a hybrid step)")
    ap.add_argument("--eval-threads", type=int, default=0, help="torch threads for sampling (0: torch's default)")
    ap.add_argument("--n", type=int, default=1000, help="images per FID point")
    ap.add_argument("--runs", default="runs/quality")
    ap.add_argument("--skip-training", action="store_true", help="evaluate the models already in --runs")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="benchmarks/results/quality.jsonl")
    args = ap.parse_args()
    runs = Path(args.runs)
    kinds = {"dit": (4, 1), "hybrid": (args.hybrid_D, args.hybrid_T)}
    if args.worker:
        D, T = kinds.get(args.worker, (0, 0))
        train_one(args.worker, args.minutes, runs, D, T)
        return
    if not args.skip_training:
        runs.mkdir(parents=True, exist_ok=True)
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", k, "--minutes", str(args.minutes),
                                   "--runs", str(runs), "--hybrid-D", str(args.hybrid_D),
                                   "--hybrid-T", str(args.hybrid_T)]) for k in ("dit", "hybrid", "peer")]
        if any(p.wait() for p in procs):
            raise SystemExit("bench_quality.py: a training worker failed (see its output above)")
    if args.eval_threads:
        torch.set_num_threads(args.eval_threads)
    steps = [int(s) for s in args.steps.split(",")]
    peer_steps = [int(s) for s in args.peer_steps.split(",")]
    curves, info = {}, {}
    for kind in kinds:
        curves[kind], info[kind] = curve_workbench(kind, runs, steps, args.n)
    curves["peer"], info["peer"] = curve_peer(runs, peer_steps, args.n)
    out = Path(args.out)
    figure(curves, out.with_suffix(".html"))
    emit({"benchmark": "quality", "minutes": args.minutes, "n": args.n, "models": info, "curves": curves,
          "hybrid_over_peer": ratio_at_equal_compute(curves["hybrid"], curves["peer"]),
          "dit_over_peer": ratio_at_equal_compute(curves["dit"], curves["peer"]),
          "hybrid_over_dit": ratio_at_equal_compute(curves["hybrid"], curves["dit"]), "machine": machine()},
         str(out))


if __name__ == "__main__":
    main()
