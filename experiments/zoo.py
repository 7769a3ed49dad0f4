"""The model zoo: every family of the paper's experiments at small scale, trained with one budget per family.

    python experiments/zoo.py list                    # members, budgets, status
    python experiments/zoo.py train [--only NAME]     # resumable: rerun to continue where it stopped
    python experiments/zoo.py eval  [--only NAME]     # FID against sampling steps / compute, JSON reports
    python experiments/zoo.py export                  # half-precision weights (EMA) + reports -> data/checkpoints/
    python experiments/zoo.py grids [--only NAME]     # redraw the shipped sample grids from the shipped weights
    python experiments/zoo.py findings [--readme]     # the paper's five findings decided from the shipped reports
    python experiments/zoo.py all --gpu               # one run on a GPU with larger budgets

Families (same data and same training budget inside a family):
  vertical        N=4, D in {1, 2, 3, 4} = {N/4, N/2, 3N/4, N}, T=4, Fashion-MNIST 32x32
  blocks-fmnist   T in {1, 4, 16}, N=4, D=2, Fashion-MNIST 32x32 (low resolution)
  blocks-emoji    T in {1, 4, 16}, N=4, D=2, Noto colour emoji 64x64 (high resolution)
  blocks-emoji256 T in {1, 4, 16}, N=6, D=3, Fluent 3D emoji 256x256 as 32x32x4 latents of the codec trained here:
                  the presets emoji256-T1/T4/T16 with their budgets (about an hour each on 2 CPU threads, or
                  GPU_BUDGETS with --gpu); they need the codec (shipped in data/codecs/fluent3d-tiny)
  blocks-people256 the same on the people subset of Fluent 3D (dataset fluent-people: people, hands, smileys;
                  1,786 training images), the analogue of the paper's FFHQ: presets people256-T1/T4/T16, 5,000 steps
  context-people256 the people T=16 model plain (the run of blocks-people256/T16), with its context noised in
                  training, class-conditional, and both: presets people256-T16, -ctx-T16, -cond-T16, -cond-ctx-T16
  ablations       default, no z_cond, no clean stream, MLP denoising, hidden loss 0, shared towers, each with
                  the training seeds of workbench.research.families.ABLATION_SEEDS ("no-zcond", "no-zcond-s1", ...)
Members with identical configs (vertical D=2 = blocks-fmnist T=4 = ablations default) are trained once. A member
that cannot start (a codec or dataset missing) is reported with its fix and the others still train.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import workbench as wb
from workbench.core.config import Config
from workbench.research.families import (
    BUDGET_MULTIPLE,
    EVAL_STEPS,
    MEMBERS,
    PRESET_FAMILIES,
    SHIP_LIMIT_MB,
    depth_report_name,
    sampling_pick,
    ships_weights,
)

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "zoo"
SHIP = ROOT / "data" / "checkpoints"

# Budgets. CPU, zoo v2 for Fashion-MNIST: 3,000 steps x 64 images per member (N=4, width 128: 0.17x fmnist-small's
# training FLOPs per step, but small models run below the machine's matmul rate: alone on 2 threads of the AMD EPYC
# reference machine vertical/D1 and D4 trained in 642 and 668 s, about 0.22 s per step, blocks-fmnist/T1 in 6.8
# minutes and T16 in about 12.5 (0.25 s per step); the elastic member trains four of them, 2,688 s); the 64 px emoji
# family keeps the first zoo's 300 x 32.
# GPU sized for < 8 minutes (blocks-emoji256: its presets' budgets, presets.GPU_BUDGETS with --gpu).
CPU_BUDGET = {"fmnist": dict(steps=3000, batch=64, ema=0.999), "emoji": dict(steps=300, batch=32, ema=0.995)}
GPU_BUDGET = {"fmnist": dict(steps=4000, batch=256, ema=0.999), "emoji": dict(steps=3000, batch=128, ema=0.995)}


def base(dataset: str, budget: dict, gpu: bool) -> Config:
    over = {
        "model.width": 128,
        "model.heads": 2,
        "model.depth": 4,
        "model.diffusion_depth": 2,
        "model.num_blocks": 4,
        "train.batch_size": budget["batch"],
        "train.max_steps": budget["steps"],
        "train.lr": 1e-3,
        "train.ema_decay": budget["ema"],
        "train.ckpt_every": 250,
        "train.sample_every": 0,
        "train.max_minutes": 0.0,
        "train.eval_every": 0,
        "train.log_every": 25,
        "train.precision": "bf16-mixed",
        "train.accelerator": "cuda" if gpu else "cpu",
    }
    return wb.preset("fmnist-small" if dataset == "fmnist" else "emoji64", **over)


# fields added to the config after runs were keyed, with their defaults: left out of the key at those defaults, so
# the runs trained before them keep their folders
KEY_ADDED = {"data.labels": "group", "diffusion.context_noise": 0.0}


@dataclass(frozen=True)
class Member:
    family: str
    name: str  # e.g. "D1", "T16", "no-zcond"
    config: Config

    @property
    def key(self) -> str:
        """Training identity: members with the same model, data and budget share one run."""
        d = self.config.to_dict()
        data, diffusion = (
            {k: v for k, v in d[part].items() if KEY_ADDED.get(f"{part}.{k}", object()) != v}
            for part in ("data", "diffusion")
        )
        blob = json.dumps(
            {
                "model": d["model"],
                "diffusion": diffusion,
                "data": data,
                "train": {k: v for k, v in d["train"].items() if k != "out_dir"},
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


def members(gpu: bool = False) -> list[Member]:
    budgets = GPU_BUDGET if gpu else CPU_BUDGET
    fm, em = base("fmnist", budgets["fmnist"], gpu), base("emoji", budgets["emoji"], gpu)

    def family_base(family: str, name: str) -> Config:
        if family in PRESET_FAMILIES:  # a preset per member, with the preset's own (GPU) budget
            return wb.preset(PRESET_FAMILIES[family].format(name=name), gpu=gpu)
        return em if family == "blocks-emoji" else fm

    spec = [
        (family, name, family_base(family, name), over)  # the members of workbench.research.families
        for family, entries in MEMBERS.items()
        for name, over in entries
    ]
    out = []
    for family, name, cfg, over in spec:
        cfg = cfg.override(**over)
        if (family, name) in BUDGET_MULTIPLE:  # e.g. the elastic model: the four dedicated budgets together
            cfg = cfg.override(**{"train.max_steps": cfg.train.max_steps * BUDGET_MULTIPLE[family, name]})
        m = Member(family, name, cfg)
        out.append(
            Member(family, name, cfg.override(**{"name": f"{family}/{name}", "train.out_dir": str(RUNS / m.key)}))
        )
    return out


def unique_runs(ms: list[Member]) -> dict[str, Member]:
    runs: dict[str, Member] = {}
    for m in ms:
        runs.setdefault(m.key, m)
    return runs


def training_seconds(m: Member) -> tuple[str, float | None]:
    """(status, training wall clock in seconds) of a member: "shipped" where data/checkpoints holds its report,
    "trained" where only its run finished on this machine, else "pending"; the seconds from the run's own record
    where it is here, else from the shipped report (None where neither records them)."""
    done, report = RUNS / m.key / "DONE", SHIP / m.family / f"{m.name}.json"
    status = "shipped" if report.is_file() else "trained" if done.is_file() else "pending"
    try:
        if done.is_file():
            return status, json.loads(done.read_text()).get("train_seconds")
        if report.is_file():
            return status, (json.loads(report.read_text()).get("training") or {}).get("seconds")
    except (OSError, ValueError, AttributeError):
        pass
    return status, None


def cmd_list(ms: list[Member]) -> None:
    """One line per member (status and training time), then the training wall clock per family: each run counted
    once inside a family, and once in the total where families share it (vertical D2 = blocks-fmnist T4 = default)."""
    rank = {"shipped": 2, "trained": 1, "pending": 0}
    run_status: dict[str, str] = {}
    seconds: dict[str, float | None] = {}
    for m in ms:  # a run shared by several members: shipped (or trained) when any of them is
        status, secs = training_seconds(m)
        run_status[m.key] = max(status, run_status.get(m.key, "pending"), key=rank.get)
        seconds[m.key] = secs if secs is not None else seconds.get(m.key)
    for m in ms:
        c, status, secs = m.config, run_status[m.key], seconds[m.key]
        took = "" if secs is None else f" {secs / 60:6.1f} min"
        print(
            f"{m.family:17s} {m.name:14s} run={m.key} N={c.model.depth} D={c.model.diffusion_depth} "
            f"T={c.model.num_blocks} steps={c.train.max_steps} batch={c.train.batch_size} {status}{took}"
        )
    print("training wall clock per family (each run once; as recorded by the machine that trained it):")
    families = dict.fromkeys(m.family for m in ms)
    for family in families:
        keys = dict.fromkeys(m.key for m in ms if m.family == family)
        known = [seconds[k] for k in keys if seconds[k] is not None]
        missing = len(keys) - len(known)
        print(
            f"  {family:17s} {len(keys):2d} runs {sum(known) / 60:7.1f} min"
            + (f" ({missing} not trained or not recorded)" if missing else "")
        )
    known = [v for v in seconds.values() if v is not None]
    print(
        f"  {'all':17s} {len(seconds):2d} runs {sum(known) / 60:7.1f} min = {sum(known) / 3600:.1f} h"
        + (f" ({len(seconds) - len(known)} not trained or not recorded)" if len(known) < len(seconds) else "")
    )


def cmd_train(ms: list[Member]) -> list[str]:
    """Train the members not done yet; returns the problems of those that could not start (each naming its fix)."""
    from workbench.training.train import train

    problems = []
    for key, m in unique_runs(ms).items():
        marker = RUNS / key / "DONE"
        if marker.exists():
            continue
        t0 = time.time()
        try:
            summary = train(m.config, resume=True)
        except (FileNotFoundError, ValueError) as err:  # the workbench's own errors name the fix; others are bugs
            if "Fix:" not in str(err):
                raise
            problems.append(f"{m.family}/{m.name}: not trained: {err}")
            print(problems[-1], file=sys.stderr, flush=True)
            continue
        if summary.get("step", 0) >= m.config.train.max_steps:
            summary["train_seconds_this_chunk"] = round(time.time() - t0, 1)
            summary["device"] = (
                torch.cuda.get_device_name()
                if m.config.train.accelerator == "cuda"
                else f"cpu ({torch.get_num_threads()} thread(s))"
            )
            marker.write_text(json.dumps(summary, indent=1, default=str))
        print(f"{m.family}/{m.name}: {summary}")
    return problems


def _eval_plan(m: Member) -> tuple[str, int, tuple[int, ...]]:
    """(extractor, images per point, S grid): the fast classifier for Fashion-MNIST (plus inception_point), Inception
    for the 256 px emoji at n=1,000 (FID at n=256 sits tens of points above its large-n value), and Inception at
    n=256 for the 64 px emoji arm (colour blobs at this budget: a side arm)."""
    if m.config.data.dataset == "fashion-mnist":
        return "fmnist-classifier", 1000, EVAL_STEPS
    if m.config.data.image_size >= 256:
        return "inception", 1000, (8, 16)
    return "inception", 256, (8, 32)


def reference(cfg: Config, extractor: str):
    """The reference statistics of the zoo's reports (shipped in data/reference/): all Fashion-MNIST training images
    under the classifier, the first 1024 of the Noto emoji training images under Inception, every Fluent 3D image
    (train and held out: evaluation.REFERENCE_SPLITS) under Inception."""
    from workbench.evaluation.evaluate import REFERENCE_SPLITS, default_reference
    from workbench.evaluation.metrics import reference_stats

    d = cfg.data
    if d.dataset in REFERENCE_SPLITS:
        return default_reference(cfg, extractor)
    return reference_stats(
        d.dataset,
        "train",
        extractor,
        n=None if extractor != "inception" else 1024,
        image_size=d.image_size,
        channels=d.channels,
    )


def load_member(m: Member, depth: int | None = None, weights: Path | None = None):
    """(model, config to sample it with) of a trained member, with the sampler the zoo names for it (its declared
    config's: a run trained before the recipe's sampler changed keeps the old one in its own config); an elastic
    member at `depth` (sample.diffusion_depth: the model keeps its own config), default its own D. From its run
    with the weights and time shift of its sampling pick (workbench.research.families.SAMPLING_PICKS), or from
    `weights` (its
    shipped export, which carries them) when given."""
    from workbench.training.checkpoint import load_for_inference, with_flow_shift

    use_ema, shift, sample = sampling_pick(m.family, m.name)
    model, cfg = load_for_inference(weights or RUNS / m.key, use_ema=use_ema)
    cfg = with_flow_shift(cfg, shift).override(
        **{f"sample.{k}": v for k, v in sample.items()}, **{"sample.sampler": m.config.sample.sampler}
    )
    return model, (cfg if depth is None else cfg.override(**{"sample.diffusion_depth": depth}))


def evaluate(m: Member, sampler: str | None = None, seed: int = 0, depth: int | None = None) -> dict:
    """FID against sampling steps (and compute) for one member, with full provenance; the sampler the zoo names for
    it (DPM-Solver++ 2M for the Fashion-MNIST flow recipe, DDIM for eps models) unless `sampler` is given. `depth`:
    an elastic member sampled at that D (its report is named depth_report_name and its config's D is that depth)."""
    from workbench.evaluation.evaluate import evaluate_curve

    model, sample_cfg = load_member(m, depth)
    cfg, name = sample_cfg, m.name
    if depth is not None:  # the report's config says D
        cfg, name = cfg.override(**{"model.diffusion_depth": depth}), depth_report_name(m.name, depth)
    extractor, n, grid = _eval_plan(m)
    ref = reference(cfg, extractor)
    sampler = sampler or cfg.sample.sampler

    def progress(S: int, p: dict) -> None:
        print(f"{m.family}/{name} S={S}: FID {p['fid']:.2f} [{p['fid_low']:.2f}, {p['fid_high']:.2f}]", flush=True)

    ev = evaluate_curve(
        model,
        sample_cfg,
        ref,
        extractor,
        steps=grid,
        n=n,
        sampler=sampler,
        seed=seed,
        weights="ema" if sampling_pick(m.family, m.name)[0] else "raw",
        progress=progress,
    )
    summary = json.loads((RUNS / m.key / "DONE").read_text())
    return {
        "family": m.family,
        "name": name,
        "config": cfg.to_dict(),
        "training": {
            "steps": summary["step"],
            "batch": cfg.train.batch_size,
            "images_seen": summary["images_seen"],
            "seconds": summary.get("train_seconds"),
            "device": summary.get("device", "cpu (1 thread of 2 cores)"),
            "final_val_loss": summary["val_loss"],
        },
        "eval": ev,
    }


def report_names(m: Member) -> dict[str, int | None]:
    """{report name: D it samples at (None: the member's own)}: one per trained D for an elastic member, the
    model's default D first (its report ships beside the weights)."""
    depths = m.config.model.elastic_depths
    if not depths:
        return {m.name: None}
    default = m.config.model.diffusion_depth
    return {depth_report_name(m.name, d): d for d in sorted(depths, key=lambda d: (d != default, d))}


INCEPTION_STEPS = 16  # a Fashion-MNIST member's second extractor: Inception at the app's default S, n=1,000


def inception_point(m: Member, depth: int | None = None, seed: int = 0) -> dict:
    """One Inception-FID point of a Fashion-MNIST member (its curve uses the classifier): S=INCEPTION_STEPS, n=1,000,
    its own sampler, EMA weights, against the shipped Inception statistics of 10,000 training images."""
    from workbench.evaluation.evaluate import default_reference, evaluate_curve

    model, cfg = load_member(m, depth)
    ev = evaluate_curve(
        model,
        cfg,
        default_reference(cfg, "inception"),
        "inception",
        steps=(INCEPTION_STEPS,),
        n=1000,
        sampler=cfg.sample.sampler,
        seed=seed,
        weights="ema",
    )
    point = {k: v for k, v in ev.items() if k != "curve"} | ev["curve"][0]
    print(
        f"{m.family}/{m.name}{'' if depth is None else f' D={depth}'} Inception S={INCEPTION_STEPS}: FID "
        f"{point['fid']:.2f} [{point['fid_low']:.2f}, {point['fid_high']:.2f}]",
        flush=True,
    )
    return point


def cmd_eval(ms: list[Member]) -> None:
    for m in ms:
        for name, depth in report_names(m).items():
            out = RUNS / m.key / f"eval-{m.family}-{name}.json"
            if not (RUNS / m.key / "DONE").exists():
                continue
            if not out.exists():
                out.write_text(json.dumps(evaluate(m, depth=depth), indent=1))
            report = json.loads(out.read_text())
            if m.config.data.dataset == "fashion-mnist" and "inception" not in report["eval"]:
                report["eval"]["inception"] = inception_point(m, depth)  # both extractors (resumable: added once)
                out.write_text(json.dumps(report, indent=1))


GRID_STEPS = 16  # the shipped sample grids: the app's default S, seed 0, the weights the member is scored with


def write_grid(m: Member, dest: Path, depth: int | None = None, weights: Path | None = None) -> Path:
    """A sample grid of a member beside its report: 64 images (16 at 256 px) from seed 0 at S=GRID_STEPS with its
    own sampler (an elastic member at `depth`, default its own D), what a reader looks at before any FID. From the
    run, or from the shipped `weights` (load_member)."""
    from PIL import Image

    from workbench.data.images import image_grid
    from workbench.sampling.sampler import generate_images

    model, cfg = load_member(m, depth, weights)
    n = 16 if cfg.data.image_size >= 256 else 64
    images = generate_images(model, cfg, n, GRID_STEPS, cfg.sample.sampler, seed=0)
    grid = image_grid(images, nrow=int(n**0.5))
    scale = max(1, -(-512 // grid.width))  # small images enlarged (nearest) to a grid of at least 512 px
    dest.parent.mkdir(parents=True, exist_ok=True)
    grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST).save(dest)
    return dest


def grid_paths(m: Member, dest: Path) -> dict[Path, int | None]:
    """{grid file: D it samples at (None: the member's own)} of a member whose weights ship as `dest`: its grid beside
    the weights, and an elastic member's grid at each other trained D beside that D's report ("elastic-D3.png")."""
    _, *others = report_names(m).items()
    return {dest.with_suffix(".png"): None, **{dest.with_name(f"{name}.png"): d for name, d in others}}


def cmd_grids(ms: list[Member]) -> list[str]:
    """Redraw the shipped grids (write_grid) from the shipped weights, every trained D of an elastic member: for a
    zoo whose runs are gone. Returns the members it could not draw, with why."""
    problems = []
    for m in ms:
        weights = SHIP / m.family / f"{m.name}.safetensors"
        if not weights.is_file():
            problems.append(f"{m.family}/{m.name}: no shipped weights ({weights}). Fix: export it from its run.")
            continue
        for dest, depth in grid_paths(m, weights).items():
            print(f"drew {write_grid(m, dest, depth=depth, weights=weights)}")
    return problems


def cmd_export(ms: list[Member], every: list[Member] | None = None) -> None:
    """Half-precision weights (EMA, or those of its sampling pick) with the member's (first) report embedded and
    beside them, and a sample grid (write_grid); an elastic member's reports at its other depths ship as report
    files alone (one set of weights samples them all), and a member trained by the same run as an earlier one ships
    its report naming that member's file (training.weights)."""
    from workbench.training.checkpoint import export_for_inference

    shipped: dict[str, str] = {}  # run key -> "family/name.safetensors" of the one file shipped for that run
    for m in every or ms:  # the first member of a run (in the zoo's order) holds its weights
        if ships_weights(m.family, m.name) and (RUNS / m.key / "DONE").exists():
            shipped.setdefault(m.key, f"{m.family}/{m.name}.safetensors")
    for m in ms:
        reports = {name: RUNS / m.key / f"eval-{m.family}-{name}.json" for name in report_names(m)}
        missing = [name for name, path in reports.items() if not path.exists()]
        if missing:
            print(f"skip {m.family}/{m.name}: not evaluated ({', '.join(missing)})")
            continue
        (_, first), *others = reports.items()
        dest = SHIP / m.family / f"{m.name}.safetensors"
        dest.parent.mkdir(parents=True, exist_ok=True)
        report = json.loads(first.read_text())
        holder = shipped.get(m.key)
        shared = holder if holder != f"{m.family}/{dest.name}" else None  # trained with another (D2 = T4 = default)
        if ships_weights(m.family, m.name) and shared is None:
            use_ema, shift, sample = sampling_pick(m.family, m.name)
            export_for_inference(
                RUNS / m.key,
                dest,
                eval_report=first,
                use_ema=use_ema,
                flow_shift=shift,
                sample={"sampler": m.config.sample.sampler, **sample},
            )
        else:
            dest.unlink(missing_ok=True)  # weights an earlier export shipped
            if shared is not None:
                report["training"]["weights"] = shared  # reports.weights_path follows it
        dest.with_suffix(".json").write_text(json.dumps(report, indent=1))
        for name, path in others:
            (SHIP / m.family / f"{name}.json").write_text(path.read_text())
        for grid, depth in grid_paths(m, dest).items():
            write_grid(m, grid, depth=depth)
        print(
            f"exported {m.family}/{m.name}: "
            + (
                f"weights {dest.stat().st_size / 1e6:.1f} MB, "
                if dest.exists()
                else f"the weights of {shared}, "
                if shared
                else "no weights (report only), "
            )
            + f"reports {', '.join(reports)}"
        )
    write_manifest(SHIP)
    total = shipped_mb(SHIP)
    print(
        f"{SHIP}: {total:.1f} MB of weights"
        + (
            ""
            if total <= SHIP_LIMIT_MB
            else f", over the {SHIP_LIMIT_MB} MB the zoo may ship. Fix: ship fewer weights "
            "(workbench.research.families.ships_weights) "
            "or smaller members."
        ),
        file=sys.stdout if total <= SHIP_LIMIT_MB else sys.stderr,
    )


README = ROOT / "README.md"
FINDINGS_START, FINDINGS_END = "<!-- findings: python experiments/zoo.py findings --readme -->", "<!-- /findings -->"


def cmd_findings(root: Path = SHIP, readme: Path | None = None) -> str:
    """The Results table (workbench.research.findings) from the reports under `root`; with `readme`, written between the
    README's findings markers (the text outside them is left as it is)."""
    from workbench.research.findings import findings, findings_markdown
    from workbench.research.reports import load_reports

    fams = {
        k: load_reports(f, root)
        for k, f in (
            ("vertical", "vertical"),
            ("blocks_low", "blocks-fmnist"),
            ("blocks_high", "blocks-emoji256"),
            ("ablations", "ablations"),
            ("blocks_faces", "blocks-people256"),
        )
    }
    table = findings_markdown(*findings(**{k: v or None for k, v in fams.items()}))
    if readme is not None:
        text = readme.read_text()
        start, end = text.find(FINDINGS_START), text.find(FINDINGS_END)
        if start < 0 or end < start:
            raise SystemExit(
                f"{readme}: no findings markers. Fix: put {FINDINGS_START} and {FINDINGS_END} on "
                "lines of their own where the Results table goes."
            )
        readme.write_text(text[: start + len(FINDINGS_START)] + "\n" + table + text[end:])
    return table


MANIFEST_HEAD = "| file | MB | sha256 |"


def write_manifest(root: Path) -> None:
    """The weight files' table at the end of <root>/README.md (from its MANIFEST_HEAD line on; the prose above it is
    kept): each file, its size and the first 16 hex digits of its sha256."""
    from workbench.core.paths import sha256_file

    readme = root / "README.md"
    text = readme.read_text() if readme.exists() else "# data/checkpoints: the model zoo\n\n"
    cut = text.find(MANIFEST_HEAD)
    rows = [
        f"| {p.relative_to(root).as_posix()} | {p.stat().st_size / 1e6:.1f} | {sha256_file(p)[:16]}... |"
        for p in sorted(root.rglob("*.safetensors"))
    ]
    readme.write_text(
        (text if cut < 0 else text[:cut]).rstrip("\n")
        + "\n\n"
        + MANIFEST_HEAD
        + "\n|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def shipped_mb(root: Path = SHIP) -> float:
    """Megabytes of weight files under data/checkpoints."""
    return sum(p.stat().st_size for p in root.rglob("*.safetensors")) / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["list", "train", "eval", "export", "grids", "all", "findings"])
    ap.add_argument("--only", default="", help="comma-separated member names or families")
    ap.add_argument("--gpu", action="store_true", help="GPU budgets and accelerator")
    ap.add_argument("--readme", action="store_true", help="findings: rewrite the README's Results table")
    args = ap.parse_args(argv)
    ms = every = members(args.gpu)
    if args.only:
        want = set(args.only.split(","))
        ms = [m for m in ms if m.name in want or m.family in want or f"{m.family}/{m.name}" in want]
    if args.command == "list":
        cmd_list(ms)
    if args.command == "findings":
        print(cmd_findings(readme=README if args.readme else None))
        return 0
    problems = cmd_train(ms) if args.command in ("train", "all") else []
    if args.command == "grids":
        problems = cmd_grids(ms)
    if args.command in ("eval", "all"):
        cmd_eval(ms)
    if args.command in ("export", "all"):
        cmd_export(ms, every)
    for problem in problems:  # again at the end, where a long run's log is read
        print(f"zoo.py: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
