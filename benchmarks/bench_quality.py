"""Quality per compute: FID against sampling FLOPs for the workbench's best recipe against the external diffusers
UNet baseline, all trained on Fashion-MNIST 32x32 for the same wall clock, one after another on the same cores.

    python -m benchmarks.bench_quality report [--minutes 15]      # the tables of the last race of that length
    python -m benchmarks.bench_quality grid --minutes 15 --runs ~/wb-runs/quality-15 [--gflops 6]   # its samples
    python -m benchmarks.bench_quality [--minutes 15] [--threads 2] [--steps 2,4,8,16,32] [--peer-steps 2,4,8,16]
                                       [--inception-steps 4,8,16] [--n 1000] [--runs ~/wb-runs/quality-15]
                                       [--models recipe,dit]
                                       [--out benchmarks/results/quality.jsonl]

Models (trained in this order, each alone on --threads, never two at once):
  recipe  fmnist-small with the recipe race's winner (bench_recipe's lr1e-3+flow+adaln: N=6, D=3, T=4, width 256,
          rectified flow, adaLN, LR 1e-3 with warmup-stable-decay, bf16, EMA 0.999), the preset's default;
  dit     the same recipe as a plain diffusion transformer (T=1, D=N=6);
  peer    diffusers UNet2DModel (2.7M parameters, DDPM epsilon objective, flat LR after 25 warm-up steps,
          benchmarks.peer_diffusers), trained for --minutes of wall clock.
A workbench model's LR decays toward a known last step, so its budget is a step count: the steps that fit --minutes
by a 60-step probe of that model run alone just before it (bench_recipe.probe); its wall time is recorded beside.
Scoring: EMA weights, S steps per block; the transformers with the sampler fmnist-small ships (DPM-Solver++ 2M), the
peer with both DDIM and DPM-Solver++ 2M, and every ratio is taken against the peer's better sampler at each S;
n images from seed 0; classifier FID at every S, Inception FID (TF-FID weights) at --inception-steps. Compute:
sampling FLOPs per image (workbench.core.compute for the transformers, FlopCounterMode for the UNet). Reports each
curve and, per extractor, the FID ratio of each workbench model to the peer at equal compute (interpolated in log
FLOPs, never extrapolated); writes an HTML figure beside --out. Resumable: a model with a finished summary is not
trained again (--skip-training scores what is there).

Rows before 2026-12-05 came from this script as of commit 75785de: the zoo's N=4 width-128 eps models and the
peer trained at the same time as three single-threaded processes, scored with DDIM and the classifier only.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import emit, load, machine, parse, parser

REPO = Path(__file__).resolve().parents[1]
WORKBENCH_MODELS = ("recipe", "dit")


def recipe_overrides(kind: str) -> dict:
    """The race's winner with the sampler fmnist-small ships (presets.CPU_RECIPE; the race itself sampled with flow
    Euler, bench_samplers measured DPM-Solver++ 2M better at S <= 16); `dit` as a plain DiT of the same size."""
    from benchmarks.bench_recipe import VARIANTS, WINNER
    from workbench.core.presets import CPU_RECIPE

    best = {**VARIANTS[WINNER], "sample.sampler": CPU_RECIPE["sample.sampler"]}
    return best if kind == "recipe" else {**best, "model.num_blocks": 1, "model.diffusion_depth": 6}


def train_workbench(kind: str, minutes: float, runs: Path, threads: int, probe_steps: int) -> dict:
    """Probe the model alone, then train the steps that fit `minutes`; resumes an interrupted run."""
    from benchmarks.bench_recipe import probe, run_worker, steps_that_fit

    plan_file = runs / kind / "plan.json"
    if plan_file.is_file():
        info = json.loads(plan_file.read_text())
    else:
        load_before = load()
        p = probe(kind, recipe_overrides(kind), runs, threads, probe_steps)
        info = {
            **p,
            "steps": steps_that_fit(minutes, p["first_step_seconds"], p["seconds_per_step"]),
            "minutes": minutes,
            "load_1min_before": load_before,
        }
        plan_file.parent.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(json.dumps(info, indent=1))
    print(f"{kind}: training {info['steps']} steps ({info['seconds_per_step']:.3f} s/step by its probe)", flush=True)
    s = run_worker(
        "_train",
        {
            "name": kind,
            "overrides": recipe_overrides(kind),
            "runs": str(runs),
            "steps": info["steps"],
            "minutes": 0.0,
            "out_dir": str(runs / kind),
            "resume": (runs / kind / "latest").is_file(),
        },
        threads,
    )
    if s.get("step") != info["steps"]:
        raise SystemExit(f"{kind}: stopped at step {s.get('step')} of {info['steps']}; run again to continue.")
    return s


def train_peer(minutes: float, runs: Path, threads: int) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.peer_diffusers",
            "--minutes",
            str(minutes),
            "--threads",
            str(threads),
            "--out",
            str(runs / "peer"),
        ],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        cwd=REPO,  # where the package `benchmarks` is
    )


def trained(runs: Path, kind: str) -> bool:
    if not (runs / kind / "summary.json").is_file():
        return False
    if kind == "peer":
        return True
    plan = json.loads((runs / kind / "plan.json").read_text()) if (runs / kind / "plan.json").is_file() else {}
    return json.loads((runs / kind / "summary.json").read_text()).get("step") == plan.get("steps")


def _point(s: int, fid, flops: float, seconds_per_image: float) -> dict:
    """One curve point from a workbench Score or a metrics FIDResult (the peer's)."""
    ci = (fid.fid_low, fid.fid_high) if hasattr(fid, "fid_low") else fid.fid_ci
    return {
        "steps": s,
        "fid": fid.fid,
        "fid_ci": ci,
        "fid_inf": fid.fid_inf,
        "reference": fid.reference,
        "extractor": fid.extractor,
        "seconds_per_image": seconds_per_image,
        "flops": flops,
    }


def scored_steps(steps: list[int], inception_steps: list[int]) -> list[tuple[int, tuple[str, ...]]]:
    """Each step count to sample once, with the extractors that score it: the classifier at `steps`, Inception at
    `inception_steps`."""
    return [
        (s, ("fmnist-classifier",) * (s in steps) + ("inception",) * (s in inception_steps))
        for s in sorted(set(steps) | set(inception_steps))
    ]


def curve_workbench(kind: str, runs: Path, steps: list[int], n: int, inception_steps: list[int]) -> tuple[dict, dict]:
    """{extractor: points} of a workbench model, sampled with its own sampler; the images of a step count are
    generated once and scored with every extractor."""
    from workbench.core.compute import sample_flops
    from workbench.evaluation.evaluate import ScoreSpec, default_reference, sample_images, score
    from workbench.training.checkpoint import load_for_inference

    model, cfg = load_for_inference(runs / kind)
    refs = {e: default_reference(cfg, e) for e in ("fmnist-classifier", "inception")}
    curves: dict[str, list[dict]] = {"fmnist-classifier": [], "inception": []}
    for s, extractors in scored_steps(steps, inception_steps):
        samples = sample_images(model, cfg, n, s, seed=0)
        flops = sum(sample_flops(cfg.model, s).values())
        for e in extractors:
            r = score(model, cfg, s, ScoreSpec(n=n, seed=0, extractor=e, reference=refs[e]), samples)
            curves[e].append(_point(s, r, flops, r.seconds_per_image))
            print(f"  {kind} S={s} {e}: FID {r.fid:.2f} [{r.fid_low:.2f}, {r.fid_high:.2f}]", flush=True)
    summary = json.loads((runs / kind / "summary.json").read_text())
    m = cfg.model
    return curves, {
        "N": m.depth,
        "D": m.diffusion_depth,
        "T": m.num_blocks,
        "width": m.width,
        "objective": cfg.diffusion.prediction,
        "sampler": cfg.sample.sampler,
        "conditioning": m.timestep_conditioning,
        "train_steps": summary.get("step"),
        "batch": cfg.train.batch_size,
        "train_seconds": summary.get("train_seconds"),
        "plan": json.loads((runs / kind / "plan.json").read_text()),
        "references": {e: r.card.get("name", "") for e, r in refs.items()},
    }


PEER_SAMPLERS = ("ddim", "dpm++2m")  # the peer is scored with both; the comparison takes its better one per S


def curve_peer(
    runs: Path, steps: list[int], n: int, inception_steps: list[int], samplers: tuple[str, ...] = PEER_SAMPLERS
) -> tuple[dict, dict]:
    """{sampler: {extractor: points}} of the UNet peer under each of `samplers` (same initial noise)."""
    from benchmarks.peer_diffusers import flops_per_image, load_peer, sample_peer
    from workbench.core.presets import preset
    from workbench.evaluation.evaluate import default_reference
    from workbench.evaluation.metrics import compute_fid

    unet = load_peer(runs / "peer")
    cfg = preset("fmnist-small")
    refs = {e: default_reference(cfg, e) for e in ("fmnist-classifier", "inception")}  # loaded once, as above
    curves: dict[str, dict[str, list[dict]]] = {}
    for sampler in samplers:
        curves[sampler] = {"fmnist-classifier": [], "inception": []}
        for s, extractors in scored_steps(steps, inception_steps):
            start = time.perf_counter()
            images = sample_peer(unet, n, s, sampler=sampler)
            seconds = time.perf_counter() - start
            for e in extractors:
                fid = compute_fid(images, refs[e], e, seed=0)
                curves[sampler][e].append(_point(s, fid, flops_per_image(unet, s), seconds / n))
                print(f"  peer {sampler} S={s} {e}: FID {fid.fid:.2f}", flush=True)
    summary = json.loads((runs / "peer" / "summary.json").read_text())
    return curves, {
        "samplers": list(samplers),
        "objective": "epsilon",
        "train_steps": summary["steps"],
        "train_seconds": summary["seconds"],
        "params": summary["params"],
    }


def best_of(curves: list[list[dict]]) -> list[dict]:
    """One curve from several over the same step counts: at each S the point with the lowest FID (the peer at its
    better sampler, so that a ratio against it is never flattered by the peer's weaker one)."""
    by_steps: dict[int, dict] = {}
    for curve in curves:
        for p in curve:
            if p["steps"] not in by_steps or p["fid"] < by_steps[p["steps"]]["fid"]:
                by_steps[p["steps"]] = p
    return [by_steps[s] for s in sorted(by_steps)]


EXTRACTORS = ("fmnist-classifier", "inception")


def race(workbench: dict[str, dict], peer: dict[str, dict]) -> tuple[dict, dict]:
    """(curves, ratios) of a race: every workbench curve, the peer's under each sampler ("peer-<sampler>") and at its
    better sampler per S ("peer"); each workbench model's FID ratio to that best peer at equal compute, per extractor
    ("<kind>_over_peer")."""
    curves = {
        **workbench,
        **{f"peer-{sampler}": by_e for sampler, by_e in peer.items()},
        "peer": {e: best_of([by_e[e] for by_e in peer.values()]) for e in EXTRACTORS},
    }
    ratios = {
        f"{kind}_over_peer": {e: ratio_at_equal_compute(curves[kind][e], curves["peer"][e]) for e in EXTRACTORS}
        for kind in workbench
    }
    return curves, ratios


def ratio_at_equal_compute(a: list[dict], b: list[dict]) -> dict | None:
    """FID(a)/FID(b) where both curves were measured: at every knot of either curve inside the common FLOP range,
    each FID interpolated linearly in log FLOPs. None when the ranges do not overlap (or a curve is empty)."""
    if not a or not b:
        return None
    xa, xb = (np.log([p["flops"] for p in c]) for c in (a, b))
    lo, hi = max(xa.min(), xb.min()), min(xa.max(), xb.max())
    if lo > hi:
        return None
    knots = np.unique(np.clip(np.concatenate([xa, xb]), lo, hi))
    fa = np.interp(knots, xa, [p["fid"] for p in a])
    fb = np.interp(knots, xb, [p["fid"] for p in b])
    ratios = fa / fb
    return {
        "flops": np.exp(knots).tolist(),
        "ratio": ratios.round(3).tolist(),
        "at_lowest_common_compute": round(float(ratios[0]), 3),
        "best": round(float(ratios.min()), 3),
        "median": round(float(np.median(ratios)), 3),
    }


def figure(curves: dict[str, dict[str, list[dict]]], path: Path) -> None:
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("classifier features", "Inception (TF-FID)"))
    for col, e in enumerate(("fmnist-classifier", "inception"), start=1):
        for name, by_extractor in curves.items():
            pts = by_extractor[e]
            fig.add_scatter(
                x=[p["flops"] for p in pts],
                y=[p["fid"] for p in pts],
                mode="lines+markers",
                name=f"{name} ({e})",
                text=[f"S={p['steps']}" for p in pts],
                row=1,
                col=col,
            )
        fig.update_xaxes(type="log", title_text="sampling FLOPs per image", row=1, col=col)
        fig.update_yaxes(title_text="FID", row=1, col=col)
    fig.update_layout(template="plotly_white", title="FID against sampling compute")
    fig.write_html(path, include_plotlyjs="cdn")


def raced(row: dict) -> list[str]:
    """The workbench models a race (a version-3 line of --out) ran against the peer, in WORKBENCH_MODELS' order."""
    return [k for k in WORKBENCH_MODELS if k in row["curves"]]


def report(row: dict) -> str:
    """Markdown tables of one race (a version-3 line of --out): each curve's FID per S with its sampling GFLOP, then
    each workbench model's FID ratio to the peer at equal compute."""
    lines = []
    for e, title in (("fmnist-classifier", "classifier features"), ("inception", "Inception (TF-FID)")):
        names = [k for k in row["curves"] if k != "peer"]
        steps = sorted({p["steps"] for k in names for p in row["curves"][k][e]})
        lines += [
            f"FID, {title} (90% bootstrap interval, then sampling GFLOP per image in parentheses):",
            "",
            "| S | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for S in steps:
            cells = []
            for k in names:
                p = next((p for p in row["curves"][k][e] if p["steps"] == S), None)
                ci = p and p.get("fid_ci") and p["fid_ci"][0] == p["fid_ci"][0]  # NaN-free interval
                cells.append(
                    ""
                    if p is None
                    else f"{p['fid']:.1f}"
                    + (f" [{p['fid_ci'][0]:.1f}, {p['fid_ci'][1]:.1f}]" if ci else "")
                    + f" ({p['flops'] / 1e9:.2f})"
                )
            lines.append(f"| {S} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "FID ratio to the peer at its better sampler, at equal sampling compute (log-FLOP interpolation, only "
        "where both curves were measured):",
        "",
        "| ratio | extractor | GFLOP range | at each knot | median |",
        "|---|---|---|---|---|",
    ]
    for kind in raced(row):
        for e, r in row[f"{kind}_over_peer"].items():
            if r:
                lines.append(
                    f"| {kind} / peer | {e} | {r['flops'][0] / 1e9:.1f}-{r['flops'][-1] / 1e9:.1f} | "
                    + ", ".join(f"{x:.2f}" for x in r["ratio"])
                    + f" | **{r['median']:.2f}** |"
                )
    return "\n".join(lines)


def nearest(points: list[dict], gflops: float) -> dict:
    """The point of a curve whose sampling FLOPs per image are nearest to `gflops` (in log FLOPs)."""
    return min(points, key=lambda p: abs(math.log(p["flops"] / (gflops * 1e9))))


def grid(row: dict, runs: Path, gflops: float, path: Path, n: int = 16) -> list[str]:
    """One row of `n` images (seed 0) per model of a race at about `gflops` of sampling per image: each workbench
    model at its scored S nearest to it, the peer at its nearest S with the sampler that scored better there
    (classifier FID). Returns each row's label."""
    from benchmarks.peer_diffusers import load_peer, sample_peer
    from workbench.data.images import save_grid
    from workbench.evaluation.evaluate import sample_images
    from workbench.training.checkpoint import load_for_inference

    rows, labels = [], []
    for kind in raced(row):
        p = nearest(row["curves"][kind]["fmnist-classifier"], gflops)
        model, cfg = load_for_inference(runs / kind)
        rows.append(sample_images(model, cfg, n, p["steps"], seed=0)[0].clamp(-1, 1))
        labels.append(f"{kind} S={p['steps']} ({p['flops'] / 1e9:.1f} GFLOP, FID {p['fid']:.1f})")
    options = [
        (sampler, nearest(row["curves"][f"peer-{sampler}"]["fmnist-classifier"], gflops))
        for sampler in PEER_SAMPLERS
        if f"peer-{sampler}" in row["curves"]
    ]
    sampler, p = min(options, key=lambda o: o[1]["fid"])
    rows.append(sample_peer(load_peer(runs / "peer"), n, p["steps"], seed=0, sampler=sampler))
    labels.append(f"peer {sampler} S={p['steps']} ({p['flops'] / 1e9:.1f} GFLOP, FID {p['fid']:.1f})")
    save_grid(torch.cat(rows), path, nrow=n)
    return labels


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, out="benchmarks/results/quality.jsonl", threads=2)
    ap.add_argument(
        "mode",
        nargs="?",
        default="run",
        choices=("run", "report", "grid"),
        help="report: print the tables of the last --minutes race in --out; grid: a row of 16 images "
        "per model of that race at about --gflops of sampling per image, from its --runs",
    )
    ap.add_argument("--gflops", type=float, default=6.0, help="grid: sampling GFLOP per image to match")
    ap.add_argument(
        "--grid-out",
        default="",
        help="grid: the PNG (default: benchmarks/results/quality/<minutes>min-<models>-peer.png)",
    )
    ap.add_argument("--minutes", type=float, default=15.0, help="each model's training wall clock")
    ap.add_argument("--steps", default="2,4,8,16,32", help="S per block for the transformers (classifier FID)")
    ap.add_argument(
        "--peer-steps", default="2,4,8,16", help="S for the UNet (a UNet step costs several transformer steps)"
    )
    ap.add_argument("--inception-steps", default="4,8,16", help="S at which Inception FID is measured (every model)")
    ap.add_argument("--n", type=int, default=1000, help="images per FID point")
    ap.add_argument(
        "--probe-steps",
        type=int,
        default=60,
        help="steps of each workbench model's budget probe "
        "(bench_recipe.PROBE_STEPS: shorter probes overstate the steps a budget holds)",
    )
    ap.add_argument(
        "--models",
        default=",".join(WORKBENCH_MODELS),
        help="workbench models to train and score against the peer (a subset of "
        f"{','.join(WORKBENCH_MODELS)}; the peer always runs)",
    )
    ap.add_argument("--runs", default="~/wb-runs/quality")
    ap.add_argument("--skip-training", action="store_true", help="score the models already in --runs")
    args = parse(ap, argv)
    runs = Path(args.runs).expanduser()
    if args.mode in ("report", "grid"):
        out = Path(args.out)
        races = [json.loads(x) for x in out.read_text().splitlines() if x.strip()] if out.is_file() else []
        races = [r for r in races if r.get("version") == 3 and r["minutes"] == args.minutes]
        if not races:
            raise SystemExit(
                f"{args.mode}: no {args.minutes:g}-minute race in {out}. Fix: run "
                f"python -m benchmarks.bench_quality --minutes {args.minutes:g} first."
            )
        if args.mode == "report":
            print(report(races[-1]))
            return
        names = "-".join([*raced(races[-1]), "peer"])
        path = Path(args.grid_out or REPO / "benchmarks" / "results" / "quality" / f"{args.minutes:g}min-{names}.png")
        print(f"{path}: rows " + "; ".join(grid(races[-1], runs, args.gflops, path)))
        return
    steps, peer_steps, inception_steps = (
        _int_list(args.steps),
        _int_list(args.peer_steps),
        _int_list(args.inception_steps),
    )
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in WORKBENCH_MODELS]
    if unknown or not models:
        raise SystemExit(
            f"--models {args.models!r}: unknown or empty ({', '.join(unknown) or 'no model named'}). "
            f"Fix: name one or more of {', '.join(WORKBENCH_MODELS)}, separated by commas."
        )
    loads = {}
    if not args.skip_training:
        runs.mkdir(parents=True, exist_ok=True)
        for kind in (*models, "peer"):
            if trained(runs, kind):
                continue
            loads[kind] = load()
            train_workbench(kind, args.minutes, runs, args.threads, args.probe_steps) if kind != "peer" else train_peer(
                args.minutes, runs, args.threads
            )
    curves, info = {}, {}
    for kind in models:
        curves[kind], info[kind] = curve_workbench(kind, runs, steps, args.n, inception_steps)
    peer_curves, info["peer"] = curve_peer(runs, peer_steps, args.n, inception_steps)
    curves, ratios = race(curves, peer_curves)
    out = Path(args.out)
    figure(curves, out.with_name(f"{out.stem}-{args.minutes:g}min.html"))
    emit(
        {
            "benchmark": "quality",
            "version": 3,
            "minutes": args.minutes,
            "threads": args.threads,
            "n": args.n,
            "seed": 0,
            "weights": "ema",
            "training": "one model at a time",
            "load_1min_before_training": loads,
            "models": info,
            "curves": curves,
            **ratios,
            "machine": machine(),
        },
        str(out),
    )
    for name, by_e in ratios.items():
        for e, r in by_e.items():
            print(
                f"{name} ({e}): "
                + (
                    "no common compute range"
                    if r is None
                    else f"median {r['median']}, at the lowest common compute {r['at_lowest_common_compute']}"
                )
            )


if __name__ == "__main__":
    main()
