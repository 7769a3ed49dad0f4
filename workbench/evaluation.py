"""One checkpoint scored end to end: generate n images, FID/KID/FID-infinity against reference statistics, and the
cost of sampling, all in one JSON-ready report that carries its provenance (`python -m workbench eval`).

    report = evaluate_checkpoint("data/checkpoints/vertical/D2.safetensors", num_samples=1000, steps=16)
    report["fid"], report["extractor"], report["reference"], report["cost"]["paper_cost"]

The extractor defaults to the Fashion-MNIST classifier for Fashion-MNIST models (fast, what the zoo reports) and
to Inception elsewhere. The reference defaults to the largest shipped statistics of the model's dataset, image
size and extractor in data/reference/, else to statistics computed once (and cached) from up to 10,000 training
images.
"""
from __future__ import annotations

import datetime
import os
import platform
import re
import time
from pathlib import Path

import torch

from .checkpoint import load_for_inference, read_header, resolve
from .compute import cached_cost, measure_sample_flops, paper_cost, sample_flops
from .config import Config
from .experiments import generate_images_checked
from .features import resolve_extractor, sha256_file
from .metrics import REFERENCE_DIR, ReferenceStats, compute_fid, load_reference, reference_stats

DEFAULT_REFERENCE_N = 10_000  # training images behind computed (not shipped) reference statistics


def default_extractor(config: Config) -> str:
    """The classifier for Fashion-MNIST models, Inception for anything else."""
    return "fmnist-classifier" if config.data.dataset == "fashion-mnist" else "inception"


def default_reference(config: Config, extractor: str, progress=None) -> ReferenceStats:
    """The largest shipped train statistics for the config's data and this extractor, else computed (cached)."""
    d = config.data
    label = f"folder-{Path(d.root).name}" if d.dataset == "folder" else d.dataset
    pattern = re.compile(rf"{re.escape(label)}-{d.image_size}px-train-{re.escape(extractor)}-(\d+)\.safetensors")
    shipped = sorted((int(m[1]), p) for p in REFERENCE_DIR.glob("*.safetensors") if (m := pattern.fullmatch(p.name)))
    if shipped:
        return load_reference(shipped[-1][1])
    from .data import build_dataset  # only to size the computation
    n = min(DEFAULT_REFERENCE_N, len(build_dataset(d, "train")))
    return reference_stats(d.dataset, "train", extractor, n=n, image_size=d.image_size, channels=d.channels,
                           root=d.root, progress=progress)


def _weights(header: dict, use_ema: bool) -> str:
    """Which weights were scored: an export holds one set (the EMA weights when its source had them; the
    training loop always keeps EMA), a training checkpoint both."""
    if header["kind"] == "export":
        return header.get("meta", {}).get("weights", "ema")
    return "ema" if use_ema and header.get("ema") is not None else "raw"


def evaluate_checkpoint(checkpoint: str | Path, num_samples: int = 1000, steps: int | None = None,
                        sampler: str | None = None, seed: int = 0, extractor: str | None = None,
                        reference: str | Path | ReferenceStats | None = None, use_ema: bool = True,
                        bootstrap: int = 50, measure_flops: bool = True, x0_clip: str | None = None,
                        progress=None) -> dict:
    """Generate `num_samples` images from `checkpoint` (S=`steps` per block with `sampler`; the config's sample
    section when None) and score them; returns the report (see module docstring). `progress(message)` is told
    what is going on (features of a new reference can take minutes)."""
    say = progress or (lambda message: None)
    if num_samples < 10:
        raise ValueError(f"eval: --num-samples {num_samples} is too few for FID-infinity and a bootstrap interval. "
                         "Fix: use at least 10 (1,000 or more for figures you report).")
    path = resolve(checkpoint)
    model, config = load_for_inference(path, use_ema=use_ema)  # checksum verified here
    header = read_header(path)
    config = config.override(**{"sample.steps": config.sample.steps if steps is None else steps,
                                  "sample.sampler": sampler or config.sample.sampler,
                                  "sample.x0_clip": x0_clip or config.sample.x0_clip})  # validated, with the fix
    steps, sampler = config.sample.steps, config.sample.sampler
    ext = resolve_extractor(extractor or default_extractor(config))
    if reference is None:
        say(f"reference statistics for {config.data.dataset} with {ext.id}")
        ref = default_reference(config, ext.name, progress=lambda done, n: say(f"reference features {done}/{n}"))
    else:
        ref = reference if isinstance(reference, ReferenceStats) else load_reference(reference)
    say(f"generating {num_samples} images, {sampler} S={steps}")
    start = time.perf_counter()
    images, health = generate_images_checked(model, config, num_samples, steps, sampler, seed)
    gen_seconds = time.perf_counter() - start
    say(f"scoring with {ext.id} against {ref.name}")
    result = compute_fid(images, ref, ext, bootstrap=bootstrap, seed=seed)
    m = config.model
    analytic = sample_flops(m, steps)
    cost = {"unit_note": "block-layer evaluations per image; FLOPs per image (matmuls, no guidance)",
            "paper_cost": paper_cost(m, steps), "cached_cost": cached_cost(m, steps),
            "flops_analytic": sum(analytic.values()), "flops_attention_analytic": analytic["attention"]}
    if measure_flops:
        measured = measure_sample_flops(model, config, steps)
        cost.update(flops_measured=measured, flops_measured_over_analytic=round(measured / cost["flops_analytic"], 4))
    cost.update(seconds_generate=round(gen_seconds, 3), seconds_per_image=round(gen_seconds / num_samples, 5),
                images_per_s=round(num_samples / gen_seconds, 2), seconds_score=round(result.seconds, 3))
    low, high = result.fid_ci or (None, None)
    return {
        "fid": result.fid, "fid_low": low, "fid_high": high, "ci_level": result.ci_level, "fid_inf": result.fid_inf,
        "kid_mean": result.kid_mean, "kid_std": result.kid_std, "kid_subset_size": result.kid_subset_size,
        "n": num_samples, "sampler": sampler, "steps": steps, "x0_clip": config.sample.x0_clip,
        "prediction": config.diffusion.prediction, "weights": _weights(header, use_ema), "seed": seed,
        # fractions of decoded pixel values beyond +-1 (the codec's range) and +-1.5 before the clamp
        "pixels_out_of_range": health["pixels_out_of_range"], "pixels_beyond_1.5": health["pixels_beyond_1.5"],
        "extractor": result.extractor, "extractor_preprocess": ext.preprocess,
        "reference": result.reference, "reference_count": result.reference_count,
        "reference_card": {k: ref.card.get(k) for k in ("dataset", "split", "subset", "image_size", "dataset_transform",
                                                         "created")},
        "checkpoint": str(path), "checkpoint_sha256": sha256_file(path), "checkpoint_step": header["step"],
        "checkpoint_kind": header["kind"], "checkpoint_dtype": header.get("meta", {}).get("dtype", "float32"),
        "name": config.name,
        "model": {"N": m.depth, "D": m.diffusion_depth, "T": m.num_blocks, "width": m.width, "patch": m.patch_size,
                  "towers": m.towers, "parameters": sum(p.numel() for p in model.parameters())},
        "data": {"dataset": config.data.dataset, "image_size": config.data.image_size},
        "cost": cost,
        "machine": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "device": "cpu"},
    }
