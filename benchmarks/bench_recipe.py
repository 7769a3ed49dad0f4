"""Training recipe race: variants of `fmnist-small` trained for the same wall-clock budget, one after another, each
scored at n images with both extractors over a step grid.

    python -m benchmarks.bench_recipe [--minutes 10] [--variants today,lr1e-3,...] [--define NAME=KEY=VAL,KEY=VAL]
                                      [--steps 8,16] [--inception-steps 16] [--n 1000] [--threads 2]
                                      [--stage screen] [--runs ~/wb-runs/recipe] [--out benchmarks/results/recipe.jsonl]

Equal budget: a time budget has no known end for the LR schedule to decay toward, so every variant first runs a
short probe (its own config, same threads) that measures seconds per optimizer step on this machine; the run is
then given the number of steps that fits the budget (first step, where torch.compile compiles, included), so
warmup-stable-decay reaches its end. The wall time each run really took, the probe's rate and the load are
recorded: the budget is equal as measured by the probes, and a run slowed by other work still trains the same
steps. Trainings run one at a time in a fresh process with `--threads` torch threads; never two at once.

Scoring: the EMA weights (as the app samples them), the config's sampler (DDIM for VP models, flow Euler for flow
models), S steps per block for S in --steps, n images with seed 0 (the same initial noise for every variant); FID
with the Fashion-MNIST classifier features at every S and with Inception (TF-FID weights) at --inception-steps,
each against the shipped train statistics; a 90% bootstrap interval; the fraction of pixels the sampler leaves
outside [-1, 1]. A 64-image grid of each variant (S=16) is written beside --out for a person to look at.

Resumable: a variant already in --out for this stage and budget is skipped; an interrupted training continues from
its last checkpoint (`--resume`) with the planned step count kept in its probe.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import emit, load, machine, parse, parser, score_steps

REPO = Path(__file__).resolve().parents[1]
BASE = "fmnist-small"
# what every run shares: no sample grids or FID during training (the race scores afterwards), frequent checkpoints
COMMON = {
    "train.sample_every": 0,
    "train.eval_every": 0,
    "train.ckpt_every": 100,
    "train.log_every": 25,
    "train.keep_last": 2,
    "train.accelerator": "cpu",
}
# the recipe of fmnist-small before the race, pinned here so that the race compares the same variants after the
# preset's default changes to the race's winner: eps objective, timestep through the block embedder only, DDIM
TODAY = {
    "train.lr": 3e-4,
    "diffusion.prediction": "epsilon",
    "diffusion.loss_weighting": "none",
    "model.timestep_conditioning": "embed",
    "sample.sampler": "ddim",
    "sample.x0_clip": "none",
    "train.batch_size": 64,
    "train.ema_decay": 0.999,
    "train.precision": "bf16-mixed",
    "model.patch_size": 4,
    "model.depth": 6,
    "model.diffusion_depth": 3,
    "model.width": 256,
    "model.heads": 4,
    "model.num_blocks": 4,
}
FLOW = {"diffusion.prediction": "flow", "sample.sampler": "euler"}
VARIANTS: dict[str, dict] = {
    "today": {},  # fmnist-small as shipped before the race
    "lr1e-3": {"train.lr": 1e-3},
    "lr1e-3-b128": {"train.lr": 1e-3, "train.batch_size": 128},
    "min-snr": {"diffusion.loss_weighting": "min_snr"},
    "v": {"diffusion.prediction": "v_prediction"},
    "flow": FLOW,
    "adaln": {"model.timestep_conditioning": "adaln"},
    "patch2": {"model.patch_size": 2},
    "deep-narrow": {"model.depth": 8, "model.diffusion_depth": 4, "model.width": 192, "model.heads": 4},
    "wide-shallow": {"model.depth": 4, "model.diffusion_depth": 2, "model.width": 384, "model.heads": 6},
    "fp32": {"train.precision": "32-true"},
    "compile": {"train.compile": True},
    "ema0.9995": {"train.ema_decay": 0.9995},
    "ema0.995": {"train.ema_decay": 0.995},
}
# Round two: the first screen found the learning rate dominant (lr1e-3 halved both FIDs of today's recipe), so each
# remaining ingredient is screened again on top of it (coordinate ascent: one change at a time from the best so far)
ON_LR = (
    "adaln",
    "flow",
    "v",
    "min-snr",
    "patch2",
    "ema0.995",
    "ema0.9995",
    "wide-shallow",
    "deep-narrow",
    "fp32",
    "compile",
)
VARIANTS.update({f"lr1e-3+{k}": {**VARIANTS["lr1e-3"], **VARIANTS[k]} for k in ON_LR})
# combined winners of round two (flow and adaLN each beat lr1e-3 alone)
VARIANTS["lr1e-3+flow+adaln"] = {**VARIANTS["lr1e-3+flow"], **VARIANTS["adaln"]}
WINNER = "lr1e-3+flow+adaln"  # the race's winner: fmnist-small's default, the recipe other benchmarks train on
# Round three: the ingredients that change a step's cost (patch, shape, precision, compile), screened on top of the
# combined winner rather than of lr1e-3, since the winner is what they would join
ON_BEST = ("patch2", "wide-shallow", "deep-narrow", "fp32", "compile")
VARIANTS.update({f"{WINNER}+{k}": {**VARIANTS[WINNER], **VARIANTS[k]} for k in ON_BEST})
# Steps per probe. The rate falls over the first tens of steps of a run on this machine (measured with 2 threads,
# lr1e-3+flow+adaln: 1.79 s/step over a 12-step probe, 2.04 over 60, 2.13 over a whole 395-step run), so a short
# probe overstates the steps a budget holds; 60 steps come within ~5% of a whole run. The first screen used 12.
PROBE_STEPS = 60


def parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_define(text: str) -> tuple[str, dict]:
    """'NAME=KEY=VAL,KEY=VAL' (or NAME=+OTHER,KEY=VAL to start from another variant) -> (NAME, overrides)."""
    name, _, body = text.partition("=")
    over: dict = {}
    for item in filter(None, body.split(",")):
        if item.startswith("+"):
            over.update(VARIANTS[item[1:]])
            continue
        key, _, value = item.partition("=")
        over[key] = parse_value(value)
    return name, over


def config_for(name: str, overrides: dict, runs: Path, steps: int, minutes: float, out_dir: Path | None = None):
    import workbench as wb

    over = {
        **TODAY,
        **COMMON,
        **overrides,
        "train.max_steps": steps,
        "train.max_minutes": minutes,
        "train.out_dir": str(out_dir or runs / name),
    }
    return wb.preset(BASE, **over).override(name=f"recipe/{name}")


# ---- worker modes (one fresh process each) -----------------------------------------------------------------------
def worker_train(args) -> None:
    from workbench.training.train import train

    spec = json.loads(args.spec)
    cfg = config_for(
        spec["name"], spec["overrides"], Path(spec["runs"]), spec["steps"], spec["minutes"], Path(spec["out_dir"])
    )
    summary = train(cfg, resume=spec["resume"])
    Path(spec["out_dir"], "summary.json").write_text(json.dumps(summary, indent=1, default=str))


def run_worker(mode: str, spec: dict, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_recipe", mode, "--spec", json.dumps(spec), "--threads", str(threads)],
        check=True,
        env=env,
        cwd=REPO,
    )
    return json.loads(Path(spec["out_dir"], "summary.json").read_text())


# ---- one variant -------------------------------------------------------------------------------------------------
COST_KEYS = ("model.", "train.batch_size", "train.grad_accum", "train.precision", "train.compile")


def probe(name: str, overrides: dict, runs: Path, threads: int, probe_steps: int = PROBE_STEPS) -> dict:
    """Seconds per step (after the first) and of the first step of a short run of the variant."""
    probe_dir = runs / "probes" / f"{name}-{time.time_ns()}"
    s = run_worker(
        "_train",
        {
            "name": name,
            "overrides": overrides,
            "runs": str(runs),
            "steps": probe_steps,
            "minutes": 0.0,
            "out_dir": str(probe_dir),
            "resume": False,
        },
        threads,
    )
    shutil.rmtree(probe_dir, ignore_errors=True)
    return {
        "seconds_per_step": s["seconds_per_step_after_first"],
        "first_step_seconds": s["first_step_seconds"],
        "probe_steps": probe_steps,
    }


def steps_that_fit(minutes: float, first_step_seconds: float, seconds_per_step: float) -> int:
    """Optimizer steps a budget of `minutes` holds at a probed step rate (at least 10)."""
    return max(10, math.floor((60 * minutes - first_step_seconds) / seconds_per_step))


def plan(name: str, overrides: dict, runs: Path, minutes: float, threads: int) -> dict:
    """The steps that fit `minutes` (kept in runs/probes/<name>.json).

    The baseline (`today`) is probed alone, once. A variant whose step costs the same by construction (it changes
    no model, batch, precision or compile setting: LR, objective, weighting, EMA) trains the baseline's steps. Any
    other variant is probed back to back with the baseline, and its steps are the baseline's scaled by the ratio of
    the two step times: a ratio measured side by side holds under whatever load the machine has then."""
    path = runs / "probes" / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    load_before = load()
    if name == "today":
        p = probe(name, overrides, runs, threads)
        info = {
            **p,
            "steps": steps_that_fit(minutes, p["first_step_seconds"], p["seconds_per_step"]),
            "basis": "probed alone",
        }
    else:
        base = plan("today", VARIANTS["today"], runs, minutes, threads)
        if not any(k.startswith(COST_KEYS) for k in overrides):
            info = {k: base[k] for k in ("seconds_per_step", "first_step_seconds", "steps")}
            info["basis"] = "same step cost as today by construction"
        else:
            a, b = probe("today", VARIANTS["today"], runs, threads), probe(name, overrides, runs, threads)
            ratio = b["seconds_per_step"] / a["seconds_per_step"]
            per_step = base["seconds_per_step"] * ratio  # on the machine as the baseline's probe found it
            first = b["first_step_seconds"] * base["seconds_per_step"] / a["seconds_per_step"]
            info = {
                "seconds_per_step": per_step,
                "first_step_seconds": first,
                "steps": steps_that_fit(minutes, first, per_step),
                "basis": f"probed beside today: step time ratio {ratio:.3f}",
                "ratio_to_today": ratio,
            }
    info.update(minutes=minutes, load_1min_before=load_before)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=1))
    return info


def score(run_dir: Path, steps: list[int], inception_steps: list[int], n: int, grid: Path) -> list[dict]:
    from workbench.data.images import save_grid
    from workbench.evaluation.evaluate import ScoreSpec, default_reference, sample_images, score
    from workbench.training.checkpoint import load_for_inference

    model, cfg = load_for_inference(run_dir)
    sampler = cfg.sample.sampler
    save_grid(sample_images(model, cfg, 64, 16, sampler, 0)[0], grid)
    refs = {e: default_reference(cfg, e) for e in ["fmnist-classifier"] + (["inception"] if inception_steps else [])}
    points = []
    for S in steps:
        samples = sample_images(model, cfg, n, S, sampler, seed=0)  # scored by both extractors
        for ext_name in ["fmnist-classifier"] + (["inception"] if S in inception_steps else []):
            spec = ScoreSpec(n=n, seed=0, sampler=sampler, extractor=ext_name, reference=refs[ext_name])
            s = score(model, cfg, S, spec, samples)
            points.append(s.as_dict())
            print(f"  S={S} {ext_name}: FID {s.fid:.2f} [{s.fid_low:.2f}, {s.fid_high:.2f}]", flush=True)
    return points


def rescore(args, benchmark: str, field: str, settings) -> None:
    """Score finished runs of --variants at every --steps with the classifier, same seed and n as the race, under
    each setting `settings(name, cfg)` yields as (value of `field`, config, sampler); one line per (variant,
    setting) into <benchmark with "-" as "_">.jsonl beside --out."""
    from workbench.evaluation.evaluate import default_reference
    from workbench.training.checkpoint import load_for_inference

    runs = Path(args.runs).expanduser() / f"{args.stage}-{args.minutes:g}min"
    out = Path(args.out).with_name(benchmark.replace("-", "_") + ".jsonl")
    for name in args.variants.split(","):
        model, cfg = load_for_inference(runs / name)
        ref = default_reference(cfg, "fmnist-classifier")
        for value, c, sampler in settings(name, cfg):
            points = score_steps(
                model,
                c,
                [int(x) for x in args.steps.split(",")],
                sampler,
                label=f"{name} {field}={value}",
                n=args.n,
                seed=0,
                extractor="fmnist-classifier",
                reference=ref,
            )
            emit(
                {
                    "benchmark": benchmark,
                    "stage": args.stage,
                    "variant": name,
                    "minutes": args.minutes,
                    field: value,
                    "scores": points,
                    "machine": machine(),
                },
                str(out),
            )


def x0_treatments(args) -> None:
    """Each x0 treatment the config's sampler offers (--x0: none, clip, dynamic): the measurement behind
    sample.x0_clip (recipe_x0.jsonl)."""
    from workbench.core.config import samplers_for

    def settings(name, cfg):
        for clip in args.x0.split(","):
            if cfg.sample.sampler not in samplers_for(cfg.diffusion.prediction, clip):
                print(f"{name}: {cfg.sample.sampler} offers no x0 treatment {clip!r}; skipped")
                continue
            yield clip, cfg.override(**{"sample.x0_clip": clip}), None

    rescore(args, "recipe-x0", "x0_clip", settings)


def samplers(args) -> None:
    """Every sampler that fits the objective (config.samplers_for) (recipe_samplers.jsonl)."""
    from workbench.core.config import samplers_for

    rescore(
        args,
        "recipe-samplers",
        "sampler",
        lambda name, cfg: ((s, cfg, s) for s in samplers_for(cfg.diffusion.prediction)),
    )


def done_variants(out: Path, stage: str, minutes: float) -> set[str]:
    if not out.is_file():
        return set()
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {r["variant"] for r in rows if r.get("stage") == stage and r.get("minutes") == minutes}


def race(args) -> None:
    runs = Path(args.runs).expanduser()
    variants = dict(VARIANTS)
    for text in args.define:
        name, over = parse_define(text)
        variants[name] = over
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    unknown = [v for v in names if v not in variants]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}. Fix: use {', '.join(variants)} or --define NAME=KEY=VAL.")
    out = Path(args.out)
    skip = done_variants(out, args.stage, args.minutes)
    steps = [int(s) for s in args.steps.split(",")]
    inception_steps = [int(s) for s in args.inception_steps.split(",") if s]
    for name in names:
        if name in skip:
            print(f"{name}: already in {out} for stage {args.stage} at {args.minutes} min, skipped")
            continue
        over = variants[name]
        stage_runs = runs / f"{args.stage}-{args.minutes:g}min"
        info = plan(name, over, stage_runs, args.minutes, args.threads)
        run_dir = stage_runs / name
        print(f"{name}: {info['steps']} steps planned ({info['seconds_per_step']:.3f} s/step)", flush=True)
        load_before = load()
        resume = (run_dir / "latest").is_file()
        # no wall-clock cap: the step count is what is equal, and a run slowed or paused by other work must still
        # reach the end of its LR schedule
        summary = run_worker(
            "_train",
            {
                "name": name,
                "overrides": over,
                "runs": str(stage_runs),
                "steps": info["steps"],
                "minutes": 0.0,
                "out_dir": str(run_dir),
                "resume": resume,
            },
            args.threads,
        )
        load_after = load()
        if summary["status"] != "finished" or summary["step"] != info["steps"]:
            print(
                f"{name}: stopped at step {summary['step']} of {info['steps']} ({summary['status']}); not scored. "
                "Run the race again to continue it.",
                flush=True,
            )
            continue
        points = score(run_dir, steps, inception_steps, args.n, out.parent / "recipe" / f"{args.stage}-{name}.png")
        emit(
            {
                "benchmark": "recipe",
                "stage": args.stage,
                "variant": name,
                "overrides": over,
                "minutes": args.minutes,
                "steps_planned": info["steps"],
                "steps_reached": summary["step"],
                "status": summary["status"],
                "train_seconds": round(summary["train_seconds"], 1),
                "images_seen": summary["images_seen"],
                "probe_seconds_per_step": info["seconds_per_step"],
                "probe_first_step_seconds": info["first_step_seconds"],
                "steps_basis": info["basis"],
                "val_loss": summary["val_loss"],
                "load_1min": {"probe": info["load_1min_before"], "before": load_before, "after": load_after},
                "scores": points,
                "machine": machine(),
            },
            str(out),
        )


def table(out: Path) -> str:
    """A markdown table of the recorded rows: variant, steps, images seen, FID with each extractor at each S."""
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    cols = sorted(
        {(p["steps"], p["extractor"].rsplit("-", 1)[0]) for r in rows for p in r["scores"]},
        key=lambda c: (c[1] != "fmnist-classifier", c[0]),
    )
    short = {"fmnist-classifier": "classifier", "inception": "Inception"}
    head = (
        ["stage", "min", "variant", "steps", "images", "train s", "load"]
        + [f"{short[e]} FID S={s}" for s, e in cols]
        + ["out of range (S=16)"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        at = {(p["steps"], p["extractor"].rsplit("-", 1)[0]): p for p in r["scores"]}
        cells = [
            r["stage"],
            f"{r['minutes']:g}",
            r["variant"],
            str(r["steps_reached"]),
            f"{r['images_seen']:,}",
            f"{r['train_seconds']:.0f}",
            f"{r['load_1min']['before']:.1f}",
        ]
        for c in cols:
            p = at.get(c)
            cells.append(f"{p['fid']:.1f} [{p['fid_low']:.1f}, {p['fid_high']:.1f}]" if p else "-")
        p16 = next((p for p in r["scores"] if p["steps"] == 16), None)
        cells.append(f"{p16['pixels_out_of_range']:.2%}" if p16 else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, out=str(REPO / "benchmarks" / "results" / "recipe.jsonl"), threads=2)
    p.add_argument(
        "mode",
        nargs="?",
        default="race",
        choices=("race", "table", "x0", "samplers", "_train"),
        help="race: train and score; table: the markdown table of --out; x0: score finished runs of "
        "--variants under each x0 treatment (into recipe_x0.jsonl beside --out); samplers: with "
        "every sampler that fits their objective (recipe_samplers.jsonl)",
    )
    p.add_argument("--minutes", type=float, default=10.0, help="training budget per variant (wall clock)")
    p.add_argument("--variants", default="", help=f"comma-separated, default all: {', '.join(VARIANTS)}")
    p.add_argument(
        "--define",
        action="append",
        default=[],
        metavar="NAME=KEY=VAL,...",
        help="an extra variant (e.g. combined winners); +NAME includes another variant's overrides",
    )
    p.add_argument("--steps", default="8,16", help="denoising steps per block to score")
    p.add_argument("--inception-steps", default="16", help="the subset of --steps also scored with Inception")
    p.add_argument("--n", type=int, default=1000, help="images per score")
    p.add_argument("--x0", default="none,clip,dynamic", help="x0 mode: the treatments to score")
    p.add_argument("--stage", default="screen", help="label of this round (screen, final)")
    p.add_argument("--runs", default="~/wb-runs/recipe", help="training runs go here (outside the repository)")
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = parse(p, argv)
    if args.mode == "_train":
        worker_train(args)
    elif args.mode == "samplers":
        samplers(args)
    elif args.mode == "x0":
        x0_treatments(args)
    elif args.mode == "table":
        print(table(Path(args.out)))
    else:
        race(args)


if __name__ == "__main__":
    main()
