"""Elastic depth against dedicated models: one checkpoint trained at every AR/diffusion split versus one model per D.

    python -m benchmarks.bench_elastic [--minutes 10] [--recipe lr1e-3+flow+adaln] [--depths 1,2,3,4] [--held-out 2,4]
                                       [--steps 2,4,8,16] [--inception-steps 16] [--n 1000] [--threads 2]
                                       [--runs ~/wb-runs/elastic] [--out benchmarks/results/elastic.jsonl]
    python -m benchmarks.bench_elastic report [--out ...]      # tables (a), (b), frontiers, schedules
    python -m benchmarks.bench_elastic --sampler dpm++2m --out benchmarks/results/elastic-dpm++2m.jsonl
                                       --report-out benchmarks/results/elastic-dpm++2m.md   # rescore, new sampler
    python -m benchmarks.bench_elastic --train-seed 1 --only D3,elastic-1x --score-depths 3 --budget-steps 406
                                       --sampler dpm++2m --out benchmarks/results/elastic-seeds.jsonl   # a replicate
    python -m benchmarks.bench_elastic seeds --out benchmarks/results/elastic-seeds.jsonl
                                       --base benchmarks/results/elastic-dpm++2m.jsonl   # (a) across seeds

Members, all `fmnist-small` (N = 6) with the recipe race's variant `--recipe`, trained one after another:
  D<d>        a dedicated model per D in --depths, one budget each;
  elastic-1x  elastic_depths = 1..N, one budget: (a) equal per-model training compute;
  elastic-Kx  the same with K = len(--depths) budgets: (b) equal total compute (the dedicated models' sum);
  held-out    elastic over 1..N minus --held-out, one budget, scored at every D (the held-out ones flagged).
A budget is a number of optimizer steps at the base batch: the steps the recipe race's baseline fits in --minutes
(its probe, kept in --runs/probes). Steps, not seconds, are what is equal (a dedicated D1 step is cheaper than a D4
step; each row records its FLOPs per step and wall time).

Scoring: EMA weights, the config's sampler (or --sampler), n images from seed 0 (the same initial noise for every
model, so two
models' images pair up by row), every D the member can sample x every S in --steps; classifier FID at every point,
Inception at --inception-steps. Images are kept (uint8) beside the runs so that differences get a paired bootstrap
interval (metrics.paired_fid_difference). Schedules (per-block D_k and S_k, per-step D_i) are scored on the
elastic-Kx model.

Report: (a) elastic-1x vs each D<d>, (b) elastic-Kx vs each D<d> at every (D, S), each difference with its paired
90% interval; the FID-vs-compute frontier of each side (compute = block-layer evaluations per image, the paper's
T[(N-D)+D*S]) and the area between them over log10(compute); each schedule against the fixed-(D, S) frontier of the
same model at its compute.

Replicates: --train-seed K (K > 0) trains the members (or those --only names) again with train.seed = K as
"<name>-sK" (workbench.research.replicates), for the budget --budget-steps gives (the seed-0 rows' train_steps, so
that the
replicate gets the same steps on a machine of another speed), scored at --score-depths only, into their own --out
(the report's tables read member names, so replicates never share a file with seed 0). `seeds` sets each replicate
beside the seed-0 row of --base: per (D, S), elastic-1x against the dedicated D<d> over training seeds, the difference
of their mean FIDs with its Welch t 90% interval (the seed spread, which a single pair's paired interval leaves out).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from benchmarks.bench_recipe import VARIANTS, WINNER, plan, run_worker
from benchmarks.harness import emit, machine, parse, parser
from workbench.research.comparison import area_between, frontier, grid_point
from workbench.research.replicates import difference, seeded_name, split_seed, spread

REPO = Path(__file__).resolve().parents[1]
N = 6  # fmnist-small's depth
# schedules scored on the elastic model (sample-config overrides): S_k annealed from many steps on the first block
# to few on the last (DiSA), and D_k rising or falling over the blocks
SCHEDULES = {
    "S_k 8,4,2,2": {"sample.steps_schedule": (8, 4, 2, 2)},
    "S_k 16,8,4,2": {"sample.steps_schedule": (16, 8, 4, 2)},
    "S_k 4,4,2,2": {"sample.steps_schedule": (4, 4, 2, 2)},
    "D_k 4,3,2,1 S=4": {"sample.depth_schedule": (4, 3, 2, 1), "sample.steps": 4},
    "D_k 1,2,3,4 S=4": {"sample.depth_schedule": (1, 2, 3, 4), "sample.steps": 4},
    "D_k 4,3,2,1 S_k 8,4,2,2": {"sample.depth_schedule": (4, 3, 2, 1), "sample.steps_schedule": (8, 4, 2, 2)},
    # D_i over each block's steps, small D at high noise (ASE, T-Stitch)
    "D_i 1,3 S=4": {"sample.depth_per_step": (1, 3), "sample.steps": 4},
    "D_i 1,2,3,4 S=4": {"sample.depth_per_step": (1, 2, 3, 4), "sample.steps": 4},
    "D_i 2,4 S=8": {"sample.depth_per_step": (2, 4), "sample.steps": 8},
}


def members(depths: list[int], held_out: list[int]) -> dict[str, dict]:
    """name -> {"overrides", "budgets", "eval_depths", "trained"}."""
    every = list(range(1, N + 1))
    out = {
        f"D{d}": {"overrides": {"model.diffusion_depth": d}, "budgets": 1, "eval_depths": [d], "trained": [d]}
        for d in depths
    }
    for name, budgets in (("elastic-1x", 1), (f"elastic-{len(depths)}x", len(depths))):
        out[name] = {
            "overrides": {"model.elastic_depths": every},
            "budgets": budgets,
            "eval_depths": every,
            "trained": every,
        }
    trained = [d for d in every if d not in held_out]
    out["held-out"] = {
        "overrides": {"model.elastic_depths": trained, "model.diffusion_depth": max(d for d in trained if d <= 3)},
        "budgets": 1,
        "eval_depths": every,
        "trained": trained,
    }
    return out


def replicate(spec: dict[str, dict], seed: int, only: list[str]) -> dict[str, dict]:
    """The members `only` names (all when empty) trained with train.seed = `seed`, named "<name>-s<seed>" (seed 0:
    the members as they are)."""
    if unknown := [m for m in only if m not in spec]:
        raise SystemExit(f"--only: no member {', '.join(unknown)}. Fix: name some of {', '.join(spec)}.")
    if seed < 0:
        raise SystemExit(f"--train-seed: {seed} must be >= 0. Fix: give a seed K > 0 for a replicate.")
    return {
        seeded_name(name, seed): {**m, "overrides": {**m["overrides"], "train.seed": seed}}
        for name, m in spec.items()
        if not only or name in only
    }


# ---- training ----------------------------------------------------------------------------------------------------
def train_all(args, spec: dict[str, dict], steps: int) -> dict[str, dict]:
    runs, recipe = Path(args.runs).expanduser(), VARIANTS[args.recipe]
    summaries = {}
    for name, m in spec.items():
        run_dir, want = runs / name, steps * m["budgets"]
        done = run_dir / "summary.json"
        if done.is_file() and json.loads(done.read_text()).get("step") == want:
            summaries[name] = json.loads(done.read_text())
            continue
        print(f"{name}: training {want} steps", flush=True)
        s = run_worker(
            "_train",
            {
                "name": name,
                "overrides": {**recipe, **m["overrides"]},
                "runs": str(runs),
                "steps": want,
                "minutes": 0.0,
                "out_dir": str(run_dir),
                "resume": (run_dir / "latest").is_file(),
            },
            args.threads,
        )
        if s["status"] != "finished" or s["step"] != want:
            raise SystemExit(f"{name}: stopped at step {s['step']} of {want}; run the benchmark again to continue.")
        summaries[name] = s
    return summaries


# ---- scoring -----------------------------------------------------------------------------------------------------
def score_member(args, name: str, m: dict, summary: dict, schedules: dict[str, dict]) -> None:
    from workbench.core.compute import train_flops
    from workbench.evaluation.evaluate import ScoreSpec, default_reference, sample_images, score
    from workbench.training.checkpoint import load_for_inference

    runs = Path(args.runs).expanduser()
    model, cfg = load_for_inference(runs / name)
    extractors = ["fmnist-classifier"] + (["inception"] if args.inception_steps else [])
    refs = {e: default_reference(cfg, e) for e in extractors}
    done = {(r["member"], r["point"]) for r in rows(Path(args.out))}
    depths = [d for d in m["eval_depths"] if not args.score_depths or d in args.score_depths]
    points = [
        (f"D={d} S={S}", {"sample.diffusion_depth": d, "sample.allow_untrained_depth": d not in m["trained"]}, S)
        for d in depths
        for S in args.steps
    ]
    own_depth = ("sample.depth_schedule", "sample.depth_per_step")
    points += [
        (
            label if any(k in over for k in own_depth) else f"{label} @D={cfg.model.diffusion_depth}",
            over,
            over.get("sample.steps") or max(over["sample.steps_schedule"]),
        )
        for label, over in schedules.items()
    ]
    sampler = args.sampler
    for point, over, S in points:
        if (name, point) in done:
            continue
        c = cfg.override(**over, **({"sample.sampler": sampler} if sampler else {}))
        samples = sample_images(model, c, args.n, S, seed=0)
        keep = runs / "images" / f"{name} {point}{f' {sampler}' if sampler else ''}.pt"
        keep.parent.mkdir(parents=True, exist_ok=True)
        torch.save(((samples[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8), keep)
        ext = [
            e
            for e in extractors  # Inception on the fixed (D, S) grid at --inception-steps only
            if e == "fmnist-classifier" or (S in args.inception_steps and point.startswith("D="))
        ]
        for e in ext:
            s = score(model, c, S, ScoreSpec(n=args.n, seed=0, extractor=e, reference=refs[e]), samples)
            emit(
                {
                    "benchmark": "elastic",
                    "member": name,
                    "point": point,
                    "recipe": args.recipe,
                    "train_seed": args.train_seed,
                    "train_steps": summary["step"],
                    "budgets": m["budgets"],
                    "trained_depths": m["trained"],
                    "train_seconds": round(summary["train_seconds"], 1),
                    "train_flops_per_step": train_flops(cfg.model, cfg.train.batch_size),
                    "images": str(keep),
                    **s.as_dict(),
                    "machine": machine(),
                },
                args.out,
            )
            print(f"  {name} {point} {e}: FID {s.fid:.2f} [{s.fid_low:.2f}, {s.fid_high:.2f}]", flush=True)


def rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in out.read_text().splitlines() if x.strip()] if out.is_file() else []


# ---- report ------------------------------------------------------------------------------------------------------
CLASSIFIER, INCEPTION = "fmnist-classifier", "inception"


def of(rs: list[dict], extractor: str) -> list[dict]:
    return [r for r in rs if r["extractor"].startswith(extractor)]


@functools.cache
def features(images: str, extractor: str) -> torch.Tensor:
    """Features of a kept image set (each set appears in several tables: extracted once per extractor)."""
    from workbench.evaluation.features import extract_features, resolve_extractor

    return extract_features(resolve_extractor(extractor), torch.load(images, weights_only=True).float() / 127.5 - 1)


def paired(run_a: str, run_b: str, reference, extractor: str) -> tuple[float, float, float]:
    from workbench.evaluation.metrics import paired_fid_difference

    return paired_fid_difference(
        features(run_a, extractor), features(run_b, extractor), reference, generator=torch.Generator().manual_seed(0)
    )


def versus(at: dict, mine: str, theirs, ref, extractor: str, n: int, title: str, flag=lambda point: "") -> list[str]:
    """A table of `mine` against `theirs(point)` (a member name, or None) at every fixed (D, S) both were scored at,
    with the paired 90% interval of the difference (same seeds, so row i of both sets starts from the same noise)."""
    lines = [
        f"### {title} ({extractor} FID, n={n}, paired 90% interval of the difference)",
        "",
        "| D | S | theirs | mine | mine - theirs | ratio |",
        "|---|---|---|---|---|---|",
    ]
    points = sorted((point for member, point in at if member == mine and point.startswith("D=")), key=grid_point)
    for point in points:
        other = theirs(point)
        if (other, point) not in at:
            continue
        r, o = at[(mine, point)], at[(other, point)]
        d, lo, hi = paired(r["images"], o["images"], ref, extractor)
        D, S = grid_point(point)
        lines.append(
            f"| {D}{flag(point)} | {S} | {o['fid']:.1f} ({other}) | {r['fid']:.1f} | {d:+.1f} [{lo:+.1f}, "
            f"{hi:+.1f}] | {r['fid'] / o['fid']:.2f} |"
        )
    return lines + [""] if len(lines) > 4 else []


def report(args) -> str:
    import workbench as wb
    from workbench.evaluation.evaluate import default_reference

    everything = rows(Path(args.out))
    rs = of(everything, CLASSIFIER)
    if not rs:
        raise SystemExit(f"report: no rows in {args.out}. Fix: run the benchmark first.")
    refs = {e: default_reference(wb.preset("fmnist-small"), e) for e in (CLASSIFIER, INCEPTION)}
    big = max(
        (r["member"] for r in rs if r["member"].startswith("elastic-") and r["member"] != "elastic-1x"), default=None
    )
    lines = []
    dedicated_at = lambda point: f"D{grid_point(point)[0]}"  # noqa: E731 (the dedicated model of that D)
    held = next((r for r in rs if r["member"] == "held-out"), None)
    trained = set(held["trained_depths"]) if held else set()
    flag = lambda point: "" if grid_point(point)[0] in trained else " (held out)"  # noqa: E731
    # Inception's paired intervals cost minutes per pair (200 resamples of a 2048-d FID): only when asked
    for extractor in (CLASSIFIER, INCEPTION) if getattr(args, "inception_pairs", False) else (CLASSIFIER,):
        at = {(r["member"], r["point"]): r for r in of(everything, extractor)}
        for title, elastic in (
            ("(a) equal per-model compute: elastic-1x vs the dedicated models", "elastic-1x"),
            (f"(b) equal total compute: {big} vs the dedicated models", big),
        ):
            if elastic:
                lines += versus(at, elastic, dedicated_at, refs[extractor], extractor, args.n, title)
        if held:  # against the elastic model of the same budget that trained every D, and the dedicated model
            lines += versus(
                at,
                "held-out",
                lambda point: "elastic-1x",
                refs[extractor],
                extractor,
                args.n,
                f"held-out (trained on D in {sorted(trained)}) vs elastic-1x (every D, same budget)",
                flag,
            )
            lines += versus(
                at,
                "held-out",
                dedicated_at,
                refs[extractor],
                extractor,
                args.n,
                "held-out vs the dedicated models",
                flag,
            )
    fixed = [r for r in rs if r["point"].startswith("D=")]
    dedicated = frontier([(r["paper_cost"], r["fid"]) for r in fixed if r["member"].startswith("D")])
    for elastic in ("elastic-1x", big):
        mine = frontier([(r["paper_cost"], r["fid"]) for r in fixed if r["member"] == elastic])
        if mine and dedicated:
            area, span = area_between(mine, dedicated)
            lines.append(
                f"Frontier {elastic} (compute, classifier FID): "
                + ", ".join(f"({c:.0f}, {f:.1f})" for c, f in mine)
                + "; dedicated: "
                + ", ".join(f"({c:.0f}, {f:.1f})" for c, f in dedicated)
                + f"; area between (dedicated - elastic, FID x log10 compute over {span[0]:.0f}-{span[1]:.0f}):"
                f" {area:+.1f}"
            )
            lines.append("")
    if big:
        lines += [
            f"### Schedules on {big} against its fixed-(D, S) frontier at the same compute (classifier FID)",
            "",
            "| schedule | compute | FID | best fixed at <= compute | schedule - fixed (paired 90%) |",
            "|---|---|---|---|---|",
        ]
        mine = [r for r in fixed if r["member"] == big]
        for r in rs:
            if r["member"] != big or r["point"].startswith("D="):
                continue
            cheaper = [x for x in mine if x["paper_cost"] <= r["paper_cost"] * (1 + 1e-9)]
            if not cheaper:
                continue
            best = min(cheaper, key=lambda x: x["fid"])
            d, lo, hi = paired(r["images"], best["images"], refs[CLASSIFIER], CLASSIFIER)
            lines.append(
                f"| {r['point']} | {r['paper_cost']:.0f} | {r['fid']:.1f} | {best['fid']:.1f} "
                f"({best['point']}) | {d:+.1f} [{lo:+.1f}, {hi:+.1f}] |"
            )
    return "\n".join(lines)


def seeds_table(base_rows: list[dict], seed_rows: list[dict], elastic: str = "elastic-1x") -> str:
    """(a) across training seeds: at every fixed (D, S) where `elastic` and the dedicated D<d> were scored with at
    least one seed each (seed 0 from the base rows, the replicates "<name>-sK" from theirs; classifier FID), each
    side's FID per seed, the difference of the means with its Welch t 90% interval (NaN bounds with one seed on a
    side) and the ratio of the means."""
    at: dict[tuple[str, str], dict[int, float]] = {}
    samplers = {r["sampler"] for r in of(seed_rows, CLASSIFIER)}
    if len(samplers) > 1:
        raise SystemExit(
            f"seeds: the replicates were scored with several samplers ({', '.join(sorted(samplers))}). "
            "Fix: give each sampler's replicates their own --out."
        )
    for r in of(base_rows, CLASSIFIER) + of(seed_rows, CLASSIFIER):
        if samplers and r["sampler"] not in samplers:  # seed 0 scored as the replicates were
            continue
        name, seed = split_seed(r["member"])
        if r["point"].startswith("D=") and (name == elastic or name.startswith("D")):
            at.setdefault((name, r["point"]), {})[seed] = r["fid"]
    lines = [
        f"### (a) across training seeds: {elastic} vs the dedicated models (classifier FID, Welch t 90% over seeds)",
        "",
        f"| D | S | dedicated, per seed | {elastic}, per seed | difference of means | ratio |",
        "|---|---|---|---|---|---|",
    ]
    points = sorted({point for name, point in at if name == elastic}, key=grid_point)
    for point in points:
        D, S = grid_point(point)
        mine, theirs = at[(elastic, point)], at.get((f"D{D}", point))
        if not theirs or len(mine) + len(theirs) < 3:  # a replicate on at least one side
            continue
        d, lo, hi = difference(list(mine.values()), list(theirs.values()))
        per_seed = lambda by_seed: ", ".join(f"{v:.1f}" for v in by_seed.values())  # noqa: E731
        ratio = spread(list(mine.values())).mean / spread(list(theirs.values())).mean
        lines.append(
            f"| {D} | {S} | {per_seed(theirs)} (seeds {sorted(theirs)}) | {per_seed(mine)} (seeds "
            f"{sorted(mine)}) | {d:+.1f} [{lo:+.1f}, {hi:+.1f}] | {ratio:.2f} |"
        )
    if len(lines) == 4:
        raise SystemExit(
            "seeds: no (D, S) point has a replicate beside its seed-0 row. Fix: train one with "
            "--train-seed 1 --only D3,elastic-1x --score-depths 3 --out <its file>, then run seeds "
            "--out <that file> --base <the seed-0 rows>."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, out=str(REPO / "benchmarks" / "results" / "elastic.jsonl"), threads=2)
    p.add_argument("mode", nargs="?", default="run", choices=("run", "report", "seeds"))
    p.add_argument("--minutes", type=float, default=10.0, help="one training budget (as the recipe race's baseline)")
    p.add_argument(
        "--recipe",
        default=WINNER,
        help="a recipe race variant (default: the race's winner, fmnist-small's default): " + ", ".join(VARIANTS),
    )
    p.add_argument("--depths", default="1,2,3,4", help="the dedicated models' D")
    p.add_argument("--held-out", default="2,4", help="D values the held-out member does not train")
    p.add_argument("--steps", default="2,4,8,16")
    p.add_argument("--inception-steps", default="16")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument(
        "--inception-pairs",
        action="store_true",
        help="report: also the Inception tables with paired intervals (minutes per pair on 2 cores)",
    )
    p.add_argument(
        "--sampler",
        default=None,
        help="score with this sampler instead of each run's config's (rescoring trained runs: give it "
        "its own --out and --report-out)",
    )
    p.add_argument(
        "--train-seed",
        type=int,
        default=0,
        help="K > 0: train the members again with train.seed = K, as <name>-sK (give them their own --out)",
    )
    p.add_argument("--only", default="", help="train and score only these members (e.g. D3,elastic-1x)")
    p.add_argument(
        "--budget-steps",
        type=int,
        default=0,
        help="one budget in steps (0: the steps the baseline's probe fits in --minutes)",
    )
    p.add_argument("--score-depths", default="", help="score only at these D (default: every D a member samples)")
    p.add_argument(
        "--base",
        default=str(REPO / "benchmarks" / "results" / "elastic-dpm++2m.jsonl"),
        help="seeds: the seed-0 rows that --out's replicates are set beside",
    )
    p.add_argument("--runs", default="~/wb-runs/elastic")
    p.add_argument(
        "--report-out",
        default=str(REPO / "benchmarks" / "results" / "elastic.md"),
        help="the report is also written here (notebook 02 shows it: its paired intervals need the kept "
        "images, which stay beside the runs)",
    )
    args = parse(p, argv)
    if args.recipe not in VARIANTS:
        raise SystemExit(f"--recipe: unknown {args.recipe!r}. Fix: use one of {', '.join(VARIANTS)}.")
    args.steps = [int(s) for s in args.steps.split(",")]
    args.inception_steps = [int(s) for s in args.inception_steps.split(",") if s]
    args.score_depths = [int(d) for d in args.score_depths.split(",") if d]
    spec = members([int(d) for d in args.depths.split(",")], [int(d) for d in args.held_out.split(",") if d])
    if args.mode == "report":
        write_report(args)
        return
    if args.mode == "seeds":
        print(seeds_table(rows(Path(args.base)), rows(Path(args.out))))
        return
    if args.budget_steps < 0:
        raise SystemExit("--budget-steps: must be >= 0. Fix: give the seed-0 rows' train_steps, or 0 to probe.")
    spec = replicate(spec, args.train_seed, [m for m in args.only.split(",") if m])
    if args.train_seed and any(split_seed(r["member"])[1] == 0 for r in rows(Path(args.out))):
        raise SystemExit(
            f"--out {args.out} holds seed-0 rows: the report's tables would mix replicates into them. "
            "Fix: give the replicates their own --out (e.g. benchmarks/results/elastic-seeds.jsonl)."
        )
    runs = Path(args.runs).expanduser()
    steps = args.budget_steps or plan("today", VARIANTS["today"], runs, args.minutes, args.threads)["steps"]
    summaries = train_all(args, spec, steps)
    big = f"elastic-{len(args.depths.split(','))}x"
    for name, m in spec.items():
        score_member(args, name, m, summaries[name], SCHEDULES if name == big else {})
    if args.train_seed:  # replicates: their own table (the report's tables read seed-0 member names)
        print(seeds_table(rows(Path(args.base)), rows(Path(args.out))))
    else:
        write_report(args)


def write_report(args) -> None:
    text = report(args)
    print(text)
    path = Path(args.report_out)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(
        f"<!-- python -m benchmarks.bench_elastic report --out {Path(args.out).name} (n={args.n}) -->\n" + text + "\n"
    )
    tmp.replace(path)


if __name__ == "__main__":
    main()
