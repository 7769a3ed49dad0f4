"""The zoo's driver: trains, scores, draws and exports the members of workbench.research.families (the zoo's
definition), the command `python -m workbench zoo ACTION`:

    python -m workbench zoo list                    # members, budgets, status, training time per family
    python -m workbench zoo train [--only NAME]     # resumable: rerun to continue where it stopped
    python -m workbench zoo train --fid-every 500 [--fid-samples 1000]  # and log FID of the EMA weights meanwhile
    python -m workbench zoo eval  [--only NAME]     # FID against sampling steps / compute, JSON reports
    python -m workbench zoo memorization [--only NAME]  # add held-out FID + copy share to the shipped reports
    python -m workbench zoo export                  # half-precision weights (EMA) + reports -> data/checkpoints/
    python -m workbench zoo grids [--only NAME]     # redraw the shipped sample grids from the shipped weights
    python -m workbench zoo findings [--readme]     # the paper's five findings decided from the shipped reports
    python -m workbench zoo all --gpu               # one run on a GPU with larger budgets

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

Every report `eval` writes carries, at its headline point (S=16, n=1,000 for Fashion-MNIST, the images of its
Inception point; the largest S of the curve elsewhere: S=16, n=1,000 for the 256 px members), the sections
workbench.evaluation.report.data_figures adds to an eval report: `fid_held_out` (FID against the held-out split,
with its interval, provenance and a note where the split is too small), `memorization_policy` (training images, their
source, the 100,000 threshold) and `memorization` (the copy share with its interval), scored by the curve's
extractor, and `headline_point` (the FID of the same images against the curve's reference, beside the curve's own
FID at that S). `memorization` adds them to shipped reports written before, without touching their curves: it
regenerates only the headline point's images (same seed, sampler, S, weights and noise layout: "batch" for reports
written before per-image seeds), from the member's run where it is here, else from its shipped weights (half
precision), and re-embeds the report in the weights file beside it. Resumable: a report that has them is skipped.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from ..core.config import Config
from ..core.paths import REPO_ROOT, ZOO_DIR, sha256_file
from ..data.images import image_grid
from ..evaluation.during_training import training_fid
from ..evaluation.evaluate import REFERENCE_SPLITS, ScoreSpec, default_reference, evaluate_curve
from ..evaluation.metrics import RealImages, reference_stats
from ..sampling.sampler import generate_images, sample_request
from ..training.checkpoint import export_for_inference, load_for_inference, read_header, with_flow_shift
from ..training.train import train
from .families import (
    DEPTH_SIDE_STEPS,
    SHIP_LIMIT_MB,
    Member,
    depth_report_name,
    eval_plan,
    headline_depth,
    members,
    report_names,
    sampling_pick,
    ships_weights,
    unique_runs,
)
from .findings import findings, findings_markdown
from .headline import figures_at, has_figures, headline_config, with_figures
from .reports import load_reports, report_from_dict, weights_path

SHIP = ZOO_DIR  # where `export` ships the zoo: data/checkpoints
ACTIONS = ("list", "train", "eval", "export", "grids", "findings", "memorization", "all")


def training_seconds(m: Member) -> tuple[str, float | None]:
    """(status, training wall clock in seconds) of a member: "shipped" where data/checkpoints holds its report,
    "trained" where only its run finished on this machine, else "pending"; the seconds from the run's own record
    where it is here, else from the shipped report (None where neither records them)."""
    done, report = m.run / "DONE", SHIP / m.family / f"{m.name}.json"
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
    for family in dict.fromkeys(m.family for m in ms):
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


FID_SAMPLES = 1000  # images per FID during training when --fid-every comes without --fid-samples


def fid_overrides(every: int, samples: int) -> dict:
    """The config overrides that make a member log FID during training (`zoo train --fid-every K --fid-samples N`):
    FID of N images of the EMA weights at every K steps and at the end, through evaluation.during_training. They
    leave a member's run key as it is (the key reads the member's own config): training draws from its own
    generators and the evaluation runs inside torch.random.fork_rng, so a run trains to bitwise the same weights
    with or without it (tests/test_experiments.py)."""
    if every < 0 or (samples and not every):
        raise ValueError(
            f"zoo: --fid-every {every}, --fid-samples {samples}. Fix: give --fid-every K > 0 (steps between FIDs) "
            "with --fid-samples, or neither."
        )
    return {"train.eval_every": every, "train.fid_samples": samples or FID_SAMPLES} if every else {}


def cmd_train(ms: list[Member], fid: dict | None = None) -> list[str]:
    """Train the members not done yet, with `fid` (fid_overrides) applied to their configs; returns the problems of
    those that could not start (each naming its fix)."""
    problems = []
    for m in unique_runs(ms).values():
        marker = m.run / "DONE"
        if marker.exists():
            continue
        t0 = time.time()
        config = m.config.override(**(fid or {}))  # validated here: a bad sample count names its field and fix
        try:
            summary = train(config, resume=True, evaluate_fn=training_fid(config))  # FID if train.fid_samples
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


def reference(cfg: Config, extractor: str):
    """The reference statistics of the zoo's reports (shipped in data/reference/): all Fashion-MNIST training images
    under the classifier, the first 1024 of the Noto emoji training images under Inception, every Fluent 3D image
    (train and held out: evaluation.REFERENCE_SPLITS) under Inception."""
    d = cfg.data
    if d.dataset in REFERENCE_SPLITS:
        return default_reference(cfg, extractor)
    images = RealImages(d.dataset, "train", d.image_size, d.channels)
    return reference_stats(images, extractor, n=None if extractor != "inception" else 1024)


def load_member(m: Member, depth: int | None = None, weights: Path | None = None):
    """(model, config to sample it with) of a trained member, with the sampler the zoo names for it (its declared
    config's: a run trained before the recipe's sampler changed keeps the old one in its own config); an elastic
    member at `depth` (sample.diffusion_depth: the model keeps its own config), default its own D. From its run
    with the weights and time shift of its sampling pick (families.SAMPLING_PICKS), or from `weights` (its shipped
    export, which carries them) when given."""
    use_ema, shift, sample = sampling_pick(m.family, m.name)
    model, cfg = load_for_inference(weights or m.run, use_ema=use_ema)
    cfg = with_flow_shift(cfg, shift).override(
        **{f"sample.{k}": v for k, v in sample.items()}, **{"sample.sampler": m.config.sample.sampler}
    )
    return model, (cfg if depth is None else cfg.override(**{"sample.diffusion_depth": depth}))


def evaluate(m: Member, sampler: str | None = None, seed: int = 0, depth: int | None = None) -> dict:
    """FID against sampling steps (and compute) for one member, with full provenance; the sampler the zoo names for
    it (DPM-Solver++ 2M for the Fashion-MNIST flow recipe, DDIM for eps models) unless `sampler` is given. `depth`:
    an elastic member sampled at that D (its report is named depth_report_name and its config's D is that depth)."""
    model, sample_cfg = load_member(m, depth)
    cfg, name = sample_cfg, m.name
    if depth is not None:  # the report's config says D
        cfg, name = cfg.override(**{"model.diffusion_depth": depth}), depth_report_name(m.name, depth)
    extractor, n, grid = eval_plan(m)
    grid = grid if headline_depth(m, depth) else DEPTH_SIDE_STEPS
    ref = reference(cfg, extractor)
    sampler = sampler or cfg.sample.sampler

    def progress(S: int, p: dict) -> None:
        print(f"{m.family}/{name} S={S}: FID {p['fid']:.2f} [{p['fid_low']:.2f}, {p['fid_high']:.2f}]", flush=True)

    weights = "ema" if sampling_pick(m.family, m.name)[0] else "raw"
    spec = ScoreSpec(n=n, seed=seed, sampler=sampler, extractor=extractor, reference=ref, weights=weights)
    ev = evaluate_curve(model, sample_cfg, spec, steps=grid, progress=progress)
    summary = json.loads((m.run / "DONE").read_text())
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


INCEPTION_STEPS = 16  # a Fashion-MNIST member's second extractor: Inception at the app's default S, n=1,000


def inception_point(m: Member, depth: int | None = None, seed: int = 0) -> dict:
    """One Inception-FID point of a Fashion-MNIST member (its curve uses the classifier): S=INCEPTION_STEPS, n=1,000,
    its own sampler, EMA weights, against the shipped Inception statistics of 10,000 training images."""
    model, cfg = load_member(m, depth)
    reference = default_reference(cfg, "inception")
    spec = ScoreSpec(n=1000, seed=seed, sampler=cfg.sample.sampler, extractor="inception", reference=reference)
    ev = evaluate_curve(model, cfg, spec, steps=(INCEPTION_STEPS,))
    point = {k: v for k, v in ev.items() if k != "curve"} | ev["curve"][0]
    print(
        f"{m.family}/{m.name}{'' if depth is None else f' D={depth}'} Inception S={INCEPTION_STEPS}: FID "
        f"{point['fid']:.2f} [{point['fid_low']:.2f}, {point['fid_high']:.2f}]",
        flush=True,
    )
    return point


def cmd_eval(ms: list[Member]) -> None:
    """Score every trained member (each trained D of an elastic one) into eval-<family>-<name>.json in its run; a
    Fashion-MNIST report gets its Inception point too, and every report its data figures at its headline point
    (headline_figures). Resumable: what is written is not scored again."""
    for m in ms:
        if not (m.run / "DONE").exists():
            continue
        for name, depth in report_names(m).items():
            out = m.run / f"eval-{m.family}-{name}.json"
            if not out.exists():
                out.write_text(json.dumps(evaluate(m, depth=depth), indent=1))
            report = json.loads(out.read_text())
            if not headline_depth(m, depth):  # a side D of the depth family: its curve only
                continue
            if m.config.data.dataset == "fashion-mnist" and "inception" not in report["eval"]:
                report["eval"]["inception"] = inception_point(m, depth)  # both extractors (resumable: added once)
                out.write_text(json.dumps(report, indent=1))
            if not has_figures(report):
                report["eval"] = with_figures(report["eval"], headline_figures(m, report, depth, m.run))
                out.write_text(json.dumps(report, indent=1))


def headline_figures(m: Member, report: dict, depth: int | None, source: Path) -> dict:
    """A member's report's held-out FID and copy share (headline.figures_at) at its headline point, generated from
    `source` (its run, or a shipped weights file) as load_member loads it, scored by its curve's extractor against
    its curve's reference."""
    model, cfg = load_member(m, depth, source)
    extractor = eval_plan(m)[0]
    return figures_at(model, headline_config(cfg, report), report, source, extractor, reference(cfg, extractor))


def shipped_reports(m: Member) -> dict[Path, int | None]:
    """{shipped report: D it samples at} of a member: <name>.json (its first report, beside its weights) and an
    elastic member's other depths, <name>-D<k>.json (export_member's names)."""
    (_, first), *others = report_names(m).items()
    folder = SHIP / m.family
    return {folder / f"{m.name}.json": first, **{folder / f"{name}.json": d for name, d in others}}


def figures_source(m: Member, path: Path, report: dict) -> Path:
    """The weights a shipped report's headline images are generated from again: the member's run where it is here
    (the weights the report measured), else the shipped file reports.weights_path finds for the report (half
    precision); either must hold the weights (EMA or trained) the report names."""
    want = report["eval"]["weights"]
    if (m.run / "DONE").is_file():
        source, have = m.run, "ema" if sampling_pick(m.family, m.name)[0] else "raw"
    else:
        source = weights_path(report_from_dict(report, path))
        if source is None:
            raise FileNotFoundError(
                f"no weights to generate its images from: its run {m.run} is not here and none ship for it. Fix: "
                "run this where the zoo's runs are (WORKBENCH_ZOO_RUNS names their folder)."
            )
        have = read_header(source).get("meta", {}).get("weights", "ema")
    if have != want:
        raise ValueError(f"{source} holds the {have} weights, the report measured {want}. Fix: export them again.")
    return source


def cmd_memorization(ms: list[Member]) -> list[str]:
    """Add the data figures (headline_figures) to every shipped report of the members that lacks them, their curves
    left as they are: an earlier `memorization` section (one written by hand from a benchmark) is kept as
    `memorization_earlier`. Only the report file changes: the copy embedded in the weights file beside it stays as
    exported (readers take the .json beside a checkpoint first), so that filling in the zoo's reports does not add
    a new copy of every weight file to the repository's history. Returns the reports it could not fill in, with
    why."""
    problems = []
    for m in ms:
        for path, depth in shipped_reports(m).items():
            if not path.is_file():
                continue
            report, label = json.loads(path.read_text()), f"{m.family}/{path.stem}"
            if has_figures(report):
                print(f"{label}: has its held-out FID and copy share")
                continue
            try:
                source = figures_source(m, path, report)
                RealImages.of(Config.from_dict(report["config"]).data, "train").build()  # the data is here
                figures = headline_figures(m, report, depth, source)
            except (FileNotFoundError, ValueError) as err:  # the workbench's own errors name the fix
                if "Fix:" not in str(err):
                    raise
                problems.append(f"{label}: not filled in: {err}")
                print(problems[-1], file=sys.stderr, flush=True)
                continue
            path.write_text(json.dumps({**report, "eval": with_figures(report["eval"], figures)}, indent=1))
    return problems


GRID_STEPS = 16  # the shipped sample grids: the app's default S, seed 0, the weights the member is scored with


def write_grid(m: Member, dest: Path, depth: int | None = None, weights: Path | None = None) -> Path:
    """A sample grid of a member beside its report: 64 images (16 at 256 px) from seed 0 at S=GRID_STEPS with its
    own sampler (an elastic member at `depth`, default its own D), what a reader looks at before any FID. From the
    run, or from the shipped `weights` (load_member)."""
    model, cfg = load_member(m, depth, weights)
    n = 16 if cfg.data.image_size >= 256 else 64
    images = generate_images(model, cfg, n, sample_request(cfg, steps=GRID_STEPS, seed=0))
    grid = image_grid(images, nrow=int(n**0.5))
    scale = max(1, -(-512 // grid.width))  # small images enlarged (nearest) to a grid of at least 512 px
    dest.parent.mkdir(parents=True, exist_ok=True)
    grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST).save(dest)
    return dest


def grid_paths(m: Member, dest: Path) -> dict[Path, int | None]:
    """{grid file: D it samples at (None: the member's own)} of a member whose weights ship as `dest`: its grid beside
    the weights, and an elastic member's grid at each other trained D beside that D's report ("elastic-D3.png"); of
    the depth family only at the D its finding reads (families.headline_depth)."""
    _, *others = report_names(m).items()
    others = [(name, d) for name, d in others if headline_depth(m, d)]
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


def export_member(m: Member, holder: str | None) -> str:
    """Ship one evaluated member: its weights (unless the run's `holder` file, another member's, carries them, or it
    ships its report alone), its reports and grids. Returns what it shipped, in words."""
    reports = {name: m.run / f"eval-{m.family}-{name}.json" for name in report_names(m)}
    (_, first), *others = reports.items()
    dest = SHIP / m.family / f"{m.name}.safetensors"
    dest.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(first.read_text())
    shared = holder if holder != f"{m.family}/{dest.name}" else None  # trained with another (D2 = T4 = default)
    if ships_weights(m.family, m.name) and shared is None:
        use_ema, shift, sample = sampling_pick(m.family, m.name)
        export_for_inference(
            m.run,
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
    weights = (
        f"weights {dest.stat().st_size / 1e6:.1f} MB"
        if dest.exists()
        else f"the weights of {shared}"
        if shared
        else "no weights (report only)"
    )
    return f"{weights}, reports {', '.join(reports)}"


def cmd_export(ms: list[Member], every: list[Member] | None = None) -> None:
    """Half-precision weights (EMA, or those of its sampling pick) with the member's (first) report embedded and
    beside them, and a sample grid (write_grid); an elastic member's reports at its other depths ship as report
    files alone (one set of weights samples them all), and a member trained by the same run as an earlier one ships
    its report naming that member's file (training.weights)."""
    shipped: dict[str, str] = {}  # run key -> "family/name.safetensors" of the one file shipped for that run
    for m in every or ms:  # the first member of a run (in the zoo's order) holds its weights
        if ships_weights(m.family, m.name) and (m.run / "DONE").exists():
            shipped.setdefault(m.key, f"{m.family}/{m.name}.safetensors")
    for m in ms:
        missing = [name for name in report_names(m) if not (m.run / f"eval-{m.family}-{name}.json").exists()]
        if missing:
            print(f"skip {m.family}/{m.name}: not evaluated ({', '.join(missing)})")
            continue
        print(f"exported {m.family}/{m.name}: {export_member(m, shipped.get(m.key))}")
    write_manifest(SHIP)
    total = shipped_mb(SHIP)
    over = (
        f", over the {SHIP_LIMIT_MB} MB the zoo may ship. Fix: ship fewer weights "
        "(workbench.research.families.ships_weights) or smaller members."
    )
    fits = total <= SHIP_LIMIT_MB
    print(f"{SHIP}: {total:.1f} MB of weights" + ("" if fits else over), file=sys.stdout if fits else sys.stderr)


RESULTS_PAGE = REPO_ROOT / "docs" / "results.md"  # the page whose findings table `findings --readme` rewrites
FINDINGS_START, FINDINGS_END = "<!-- findings: python -m workbench zoo findings --readme -->", "<!-- /findings -->"
FINDINGS_FAMILIES = {  # findings' argument -> the family whose reports it reads
    "vertical": "vertical",
    "blocks_low": "blocks-fmnist",
    "blocks_high": "blocks-emoji256",
    "ablations": "ablations",
    "blocks_faces": "blocks-people256",
    "depth": "depth",
}


def cmd_findings(root: Path = SHIP, readme: Path | None = None) -> str:
    """The Results table (workbench.research.findings) from the reports under `root`; with `readme` (a markdown file,
    by default docs/results.md), written between the findings markers (a start marker "<!-- findings..." of any
    command text, rewritten to FINDINGS_START, and FINDINGS_END; the text outside them is left as it is)."""
    fams = {k: load_reports(family, root) or None for k, family in FINDINGS_FAMILIES.items()}
    table = findings_markdown(*findings(**fams))
    if readme is not None:
        text = readme.read_text()
        start = text.find(FINDINGS_START.split(":")[0])
        head_end = text.find("-->", start) + len("-->") if start >= 0 else -1
        end = text.find(FINDINGS_END, max(head_end, 0))
        if start < 0 or end < 0:
            raise SystemExit(
                f"{readme}: no findings markers. Fix: put {FINDINGS_START} and {FINDINGS_END} on "
                "lines of their own where the Results table goes."
            )
        readme.write_text(text[:start] + FINDINGS_START + "\n" + table + text[end:])
    return table


MANIFEST_HEAD = "| file | MB | sha256 |"


def write_manifest(root: Path) -> None:
    """The weight files' table at the end of <root>/README.md (from its MANIFEST_HEAD line on; the prose above it is
    kept): each file, its size and the first 16 hex digits of its sha256."""
    readme = root / "README.md"
    text = readme.read_text() if readme.exists() else "# data/checkpoints: the model zoo\n\n"
    cut = text.find(MANIFEST_HEAD)
    rows = [
        f"| {p.relative_to(root).as_posix()} | {p.stat().st_size / 1e6:.1f} | {sha256_file(p)[:16]}... |"
        for p in sorted(root.rglob("*.safetensors"))
    ]
    table = MANIFEST_HEAD + "\n|---|---|---|\n" + "\n".join(rows) + "\n"
    readme.write_text((text if cut < 0 else text[:cut]).rstrip("\n") + "\n\n" + table)


def shipped_mb(root: Path = SHIP) -> float:
    """Megabytes of weight files under data/checkpoints."""
    return sum(p.stat().st_size for p in root.rglob("*.safetensors")) / 1e6


def select(ms: list[Member], only: str) -> list[Member]:
    """The members named by --only (comma-separated member names, families or FAMILY/NAME); all when empty."""
    if not only:
        return ms
    want = set(only.split(","))
    return [m for m in ms if m.name in want or m.family in want or f"{m.family}/{m.name}" in want]


def run(action: str, only: str = "", gpu: bool = False, readme: bool = False, fid: tuple[int, int] = (0, 0)) -> int:
    """One action of ACTIONS over the members --only names (all by default), with the GPU budgets if `gpu` and, when
    training, FID during training if `fid` = (every K steps, N images) says so; returns the exit code: 1 when a
    member could not train or be drawn (each problem named with its fix, again at the end)."""
    if action not in ACTIONS:
        raise ValueError(f"zoo: no action {action!r}. Fix: use one of {', '.join(ACTIONS)}.")
    fid_over = fid_overrides(*fid)
    if fid_over and action not in ("train", "all"):
        raise ValueError(f"zoo: --fid-every applies to training, not to {action}. Fix: use it with train or all.")
    every = members(gpu)
    ms = select(every, only)
    if action == "list":
        cmd_list(ms)
    if action == "findings":
        print(cmd_findings(readme=RESULTS_PAGE if readme else None))
        return 0
    problems = cmd_train(ms, fid_over) if action in ("train", "all") else []
    if action == "grids":
        problems = cmd_grids(ms)
    if action == "memorization":
        problems = cmd_memorization(ms)
    if action in ("eval", "all"):
        cmd_eval(ms)
    if action in ("export", "all"):
        cmd_export(ms, every)
    for problem in problems:  # again at the end, where a long run's log is read
        print(f"zoo: {problem}", file=sys.stderr)
    return 1 if problems else 0
