"""Live experiments: tiny members of a zoo family trained and evaluated now (the FAST fallback when the zoo has
not shipped), re-evaluation of shipped reports from their checkpoints, and training logs. One of the two modules
of this layer that train (the other is the zoo's driver, workbench.research.zoo), so they alone import Lightning."""

from __future__ import annotations

import csv
import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..core.config import Config
from ..core.paths import ZOO_DIR
from ..core.presets import preset
from ..evaluation.evaluate import ScoreSpec, evaluate_curve, reference_for, reference_split
from ..evaluation.metrics import RealImages, reference_stats
from ..sampling.sampler import generate_images, sample_request
from ..training.checkpoint import export_for_inference, load_for_inference
from ..training.train import train
from .families import MEMBERS, PRESET_FAMILIES
from .replicates import split_seed
from .reports import Report, load_reports, report_from_dict, weights_path, write_report


def live_config(family: str, name: str, train_steps: int, out_dir: str | Path) -> Config:
    """A tiny member of `family` for FAST mode (seconds to train): the family's overrides on a 4-layer width-32
    model, Fashion-MNIST 32px, emoji 64px (patch 8) or Fluent 3D 256px (all of it, or its people subset) as 32x32x4
    latents of the codec trained here (patch 4, 64 of the images; it trains once data/codecs/fluent3d-tiny exists),
    float32 on one CPU process."""
    over = dict(MEMBERS[family])[name]
    base = {
        "model.width": 32,
        "model.heads": 2,
        "model.depth": 4,
        "model.diffusion_depth": 2,
        "model.num_blocks": 4,
        "train.max_steps": train_steps,
        "train.batch_size": 16,
        "train.lr": 2e-3,
        "train.warmup_frac": 0.05,
        "train.ema_decay": 0.9,
        "train.val_batches": 1,
        "train.ckpt_every": train_steps,
        "train.log_every": 10,
        "train.sample_every": 0,
        "train.precision": "32-true",
        "train.accelerator": "cpu",
        "train.out_dir": str(Path(out_dir) / family / name),
        "name": f"{family}/{name}",
    }
    if family == "blocks-emoji":
        base.update(
            {
                "data.dataset": "emoji",
                "data.image_size": 64,
                "data.channels": 3,
                "model.latent_size": 64,
                "model.latent_channels": 3,
                "model.patch_size": 8,
            }
        )
    if family in PRESET_FAMILIES:  # the data, codec, latent grid, labels and context noise of the family's own preset
        own = preset(PRESET_FAMILIES[family].format(name=name))
        base.update(
            {
                f"data.{k}": getattr(own.data, k)
                for k in ("dataset", "image_size", "channels", "codec", "vae_path", "latent_scale")
            }
        )
        base.update(
            {
                f"model.{k}": getattr(own.model, k)
                for k in ("latent_size", "latent_channels", "patch_size", "num_blocks", "num_classes")
            }
        )
        base.update(
            {
                "data.labels": own.data.labels,
                "diffusion.train_context_noise": own.diffusion.train_context_noise,
                "sample.class_counts": own.sample.class_counts,
                "sample.cfg_scale": own.sample.cfg_scale,
            }
        )
        base["data.max_images"] = 64  # 64 of the images: encoding all of them takes minutes
    return preset("tiny").override(**{**base, **over})


def reevaluate(report: Report, steps: int | None = None, n: int | None = None) -> dict:
    """One curve point of a shipped report computed again from its checkpoint (<name>.safetensors beside the
    report) with the report's sampler, seed and reference statistics; S defaults to the fewest steps, n to the
    report's."""
    ckpt = report.path.with_suffix(".safetensors") if report.path else None
    if ckpt is None or not ckpt.is_file():
        raise FileNotFoundError(
            f"{ckpt}: no checkpoint beside the report of {report.label}. Fix: ship it with "
            "python -m workbench zoo export (ablation weights may be left out for space)."
        )
    model, config = load_for_inference(ckpt)
    d, ev = config.data, report.eval
    images = RealImages(d.dataset, reference_split(d), d.image_size, d.channels)
    reference = reference_stats(images, ev["extractor"].rsplit("-", 1)[0], n=ev.get("reference_count"))  # cached
    if reference.name != ev["reference"]:
        raise ValueError(
            f"{report.path}: its reference {ev['reference']!r} is not {reference.name!r}. Fix: "
            "re-evaluate the report with the current workbench.evaluation.metrics."
        )
    spec = ScoreSpec(n=n or ev["n"], seed=ev["seed"], sampler=ev["sampler"], reference=reference)
    ev = evaluate_curve(model, config, spec, steps=[steps or report.curve[0].steps])
    return ev["curve"][0]


def same_seed_samples(
    reports: Mapping[str, Report], n: int = 8, seed: int = 0, steps: int | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """n images of each report's model drawn from the same seed, with the report's sampler at its most steps (or
    `steps`), decoded: what an FID difference between them looks like. An elastic model's report samples its one
    set of weights at the report's D. Returns ({caption: images (n, C, H, W) in [-1, 1]}, labels of the reports
    whose weights do not ship)."""
    rows, missing = {}, []
    for r in reports.values():
        ckpt = weights_path(r)
        if ckpt is None:
            missing.append(r.label)
            continue
        model, cfg = load_for_inference(ckpt)
        if r.elastic:
            cfg = cfg.override(**{"sample.diffusion_depth": r.D})
        point = next((p for p in r.curve if p.steps == steps), r.final) if steps else r.final
        S = steps or point.steps
        fid = f", FID {point.fid:.1f} at S={point.steps}" if point.steps == S else ""
        rows[f"{r.name} (D={r.D}, T={r.T}, S={S}{fid})"] = generate_images(
            model, cfg, n, sample_request(cfg, steps=S, sampler=r.eval["sampler"], seed=seed)
        )
    return rows, missing


def recheck_row(report: Report, point: dict) -> dict:
    """A re-evaluated point (from reevaluate) beside the report's point at the same S."""
    shipped = next(p for p in report.curve if p.steps == point["steps"])
    return {
        "member": report.label,
        "S": point["steps"],
        "report FID": shipped.fid,
        "recomputed FID": point["fid"],
        "difference": point["fid"] - shipped.fid,
        "interval width": shipped.fid_high - shipped.fid_low,
    }


def describe_recheck(rows: Sequence[dict]) -> str:
    if not rows:
        return ""
    worst, width = max(abs(r["difference"]) for r in rows), min(r["interval width"] for r in rows)
    return (
        f" Re-sampling the compared models from the shipped half-precision weights gives FIDs within "
        f"{worst:.2f} of their reports (measured before export, in float32): "
        f"{'well inside' if worst < width / 2 else 'not inside'} the reports' {width:.1f}-wide intervals."
    )


def live_family(
    family: str, root: str | Path, train_steps: int = 20, steps: Sequence[int] = (1, 2, 4), n: int = 48, seed: int = 0
) -> dict[str, Report]:
    """Train and evaluate tiny members of `family` now and write their reports under `root` (the FAST fallback
    when the zoo has not shipped: it exercises the whole pipeline, it reproduces nothing)."""
    for name, over in MEMBERS[family]:
        if split_seed(name)[1] or "model.elastic_depths" in over:
            continue  # the first seed only, dedicated models only (live_elastic trains an elastic one)
        cfg = live_config(family, name, train_steps, Path(root) / "runs")
        reference = reference_for(cfg)
        summary = train(cfg)
        model, cfg = load_for_inference(summary["checkpoint"])
        tc = cfg.train
        training = {
            "steps": summary["step"],
            "batch": tc.batch_size,
            "images_seen": summary["images_seen"],
            "seconds": round(summary["train_seconds"], 1),
            "device": "cpu (live, FAST mode)",
            "final_val_loss": summary["val_loss"],
        }
        ev = evaluate_curve(model, cfg, ScoreSpec(n=n, seed=seed, reference=reference), steps=steps)
        path = write_report(
            report_from_dict(
                {"family": family, "name": name, "config": cfg.to_dict(), "training": training, "eval": ev}
            ),
            root,
        )
        export_for_inference(summary["checkpoint"], path.with_suffix(".safetensors"))  # as the zoo ships them
    return load_reports(family, root)


def live_elastic(
    root: str | Path, train_steps: int = 20, steps: Sequence[int] = (1, 2, 4), n: int = 48, seed: int = 0
) -> list[dict]:
    """The FAST fallback of the elastic comparison (benchmarks/bench_elastic.py at full size): tiny dedicated models
    at D = 1..N and one tiny elastic model over 1..N, each trained now for `train_steps`, scored at every D x S.
    Rows in the benchmark's format (member, point "D=d S=s", paper_cost, fid, fid_low, fid_high, trained_depths);
    the elastic model gets the dedicated models' total steps (the benchmark's equal total compute)."""
    names = [name for name, over in MEMBERS["vertical"] if "model.elastic_depths" not in over]  # the dedicated
    specs = [(name, live_config("vertical", name, train_steps, Path(root) / "runs"), [name]) for name in names]
    every = tuple(range(1, specs[0][1].model.depth + 1))
    elastic = live_config("vertical", names[0], train_steps * len(names), Path(root) / "runs").override(
        **{
            "model.elastic_depths": every,
            "train.out_dir": str(Path(root) / "runs" / "elastic"),
            "name": "vertical/elastic",
        }
    )
    specs.append((f"elastic-{len(names)}x", elastic, [f"D{d}" for d in every]))
    reference, rows = reference_for(specs[0][1]), []
    for member, cfg, depths in specs:
        model, cfg = load_for_inference(train(cfg)["checkpoint"])
        for d in (int(x[1:]) for x in depths):
            spec = ScoreSpec(n=n, seed=seed, reference=reference)
            ev = evaluate_curve(model, cfg.override(**{"sample.diffusion_depth": d}), spec, steps=steps)
            rows += [
                {
                    "member": member,
                    "point": f"D={d} S={p['steps']}",
                    "trained_depths": list(cfg.model.depths),
                    "n": n,
                    "extractor": ev["extractor"],
                    **{k: p[k] for k in ("paper_cost", "fid", "fid_low", "fid_high")},
                }
                for p in ev["curve"]
            ]
    return rows


def elastic_rows(fast: bool, path: str | Path, live_root: str | Path | None = None, **live) -> tuple[list[dict], str]:
    """(rows, provenance): the classifier-FID rows bench_elastic.py recorded in `path`; in FAST mode without them,
    live_elastic's tiny models; in full mode without them, an error naming the command."""
    path = Path(path)
    if path.is_file():
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        rows = [r for r in rows if r.get("extractor", "").startswith("fmnist-classifier")]
        if rows:
            return rows, f"benchmark rows ({len(rows)} in {path.name}, n={rows[0]['n']} per point)"
    if not fast:
        raise FileNotFoundError(
            f"{path}: no rows. Fix: python benchmarks/bench_elastic.py, or run with WORKBENCH_FAST=1 for a live demo."
        )
    rows = live_elastic(Path(live_root or tempfile.mkdtemp(prefix="workbench-elastic-")), **live)
    return rows, (
        "NO BENCHMARK ROWS FOUND: tiny live models, the numbers only show the pipeline works, they reproduce nothing"
    )


def family_reports(
    family: str, fast: bool, root: str | Path = ZOO_DIR, live_root: str | Path | None = None, **live
) -> tuple[dict[str, Report], str]:
    """(reports, provenance): the zoo's reports when shipped; in FAST mode without them, tiny live members
    (`live_family(**live)` under `live_root`, default a temporary folder); in full mode without them, an error."""
    reports = load_reports(family, root)
    if reports:
        return reports, f"shipped zoo reports ({len(reports)} in {Path(root) / family})"
    if not fast:
        raise FileNotFoundError(
            f"{Path(root) / family}: no reports. Fix: train and evaluate the zoo "
            "(python -m workbench zoo all), or run with WORKBENCH_FAST=1 for a live demo."
        )
    live_root = Path(live_root or tempfile.mkdtemp(prefix="workbench-live-"))
    reports = live_family(family, live_root, **live)
    r = next(iter(reports.values()))
    return reports, (
        f"NO ZOO REPORTS FOUND: tiny live models ({r.training['steps']} training steps, n={r.eval['n']} "
        f"images per FID); the numbers only show the pipeline works, they reproduce nothing"
    )


def read_training_log(log_dir: str | Path) -> dict[str, list[float]]:
    """The CSV log of a training run (<log_dir>/metrics.csv) as {column: values} over the rows that logged a
    training loss, with "step" first."""
    with open(Path(log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    return {k: [float(r[k]) if r[k] else math.nan for r in rows] for k in (rows[0] if rows else {})}
