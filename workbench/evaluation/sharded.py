"""The eval report over processes: `evaluate_sharded` launches Lightning Fabric like `train` (accelerator, devices
per node, nodes), splits the images into chunks, and each process generates and featurises its chunks; global
rank 0 then scores all features and writes the report (report.checkpoint_report) with the sharding's provenance.

- Identical at any world size: chunk c holds images c * chunk .. (c + 1) * chunk - 1 of the seed, each drawn from
  its own per-image seed (sampling/noise.py), so the images are those a single-process `score` of the same n and
  seed makes, and which process makes a chunk changes nothing in it. (Under the older "batch" noise layout chunk c
  starts from seed + c: the same as one process only with --chunk 250, its batch.)
- Resumable: each chunk's features (and its pixel-range counts and seconds) are saved atomically to the shard
  folder, keyed by everything that determines them (checkpoint sha256, sample settings, extractor, seed, chunk
  size); a rerun of a killed evaluation skips the chunks already there. Several nodes need a shared folder.
- A progress bar (rank 0) counts the chunks in the folder, those of every process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from lightning_fabric import Fabric
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from ..core.paths import CACHE_DIR, sha256_file
from ..sampling.sampler import OUT_OF_RANGE, generate_images_checked
from .evaluate import ScoreSpec, score_features
from .features import extract_features
from .report import (
    EvalRequest,
    Loaded,
    checkpoint_report,
    data_figures,
    eval_reference,
    load_for_eval,
    save_reference_copy,
    score_spec,
)

SHARD_DIR = CACHE_DIR / "eval-shards"  # git-ignored; one folder per fingerprint
CHUNK = 250  # images per chunk (saved and resumed as a unit)


@dataclass(frozen=True)
class ShardPlan:
    """Where and how widely to run: Fabric's `accelerator`, `devices` per node and `num_nodes` (as train.*), the
    images per chunk, and the folder of shard folders (None: SHARD_DIR); each evaluation's chunks go to its
    subfolder <checkpoint>-<fingerprint>."""

    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    chunk: int = CHUNK
    shard_dir: Path | None = None


def chunk_sizes(n: int, chunk: int) -> list[int]:
    """Images in each chunk: n split into chunks of `chunk`, the last one shorter."""
    return [min(chunk, n - start) for start in range(0, n, chunk)]


def fingerprint(loaded: Loaded, spec: ScoreSpec, chunk: int) -> str:
    """A digest of everything a chunk's features depend on (not n: a larger n reuses the chunks of a smaller)."""
    c = loaded.config
    sample = {k: v for k, v in dataclasses.asdict(c.sample).items() if k not in ("num_images", "seed")}
    key = {
        "checkpoint_sha256": sha256_file(loaded.path),
        "weights": spec.weights,
        "sample": sample,  # steps, sampler, schedules, guidance, context noise (n and seed are the chunks')
        "extractor": spec.extractor.id,
        "seed": spec.seed,
        "chunk": chunk,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _chunk_path(folder: Path, c: int, size: int) -> Path:
    return folder / f"chunk-{c:06d}-n{size}.safetensors"


def _make_chunk(loaded: Loaded, spec: ScoreSpec, c: int, images: range, path: Path) -> None:
    """Generate chunk c (the images of indices `images`), save its features and pixel-range counts atomically."""
    config, device, sc = loaded.config, next(loaded.model.parameters()).device, loaded.config.sample
    start = time.perf_counter()
    size = len(images)
    request = (
        replace(sc, seed=spec.seed, first_image=sc.first_image + images.start)
        if sc.noise_layout == "per-image"
        else replace(sc, seed=spec.seed + c)
    )
    pixels, health = generate_images_checked(loaded.model, config, size, request, batch=size)  # (size, C, H, W)
    seconds = time.perf_counter() - start
    feats = extract_features(spec.extractor.to(device), pixels.to(device)).cpu()  # (size, F)
    meta = {"seconds": str(seconds), "values": str(pixels.numel()), **{k: str(v) for k, v in health.items()}}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"features": feats.contiguous()}, str(tmp), metadata=meta)
    tmp.replace(path)


def _read_chunks(paths: list[Path]) -> tuple[torch.Tensor, dict]:
    """All chunks' features (n, F) in chunk order, and the pixel fractions and generation seconds per image."""
    feats, values, seconds, beyond = [], 0, 0.0, {k: 0.0 for k in ("pixels_out_of_range", "pixels_beyond_1p5")}
    for path in paths:
        with safe_open(str(path), "pt") as f:
            feats.append(f.get_tensor("features"))
            meta = f.metadata()
        n_values = int(meta["values"])
        values, seconds = values + n_values, seconds + float(meta["seconds"])
        for k in beyond:
            beyond[k] += float(meta[k]) * n_values
    feats = torch.cat(feats)
    health = {k: v / values for k, v in beyond.items()}
    return feats, {**health, "seconds_per_image": seconds / len(feats), "seconds_generate": seconds}


def _world_size(plan: ShardPlan) -> int | None:
    """Processes the plan launches, when it says (an int of devices); None for "auto" or device lists."""
    return int(plan.devices) * plan.num_nodes if isinstance(plan.devices, int) else None


def evaluate_sharded(checkpoint, request: EvalRequest, plan: ShardPlan = ShardPlan(), progress=None) -> dict | None:
    """The eval report of `checkpoint` (report.evaluate_checkpoint's, plus a "sharding" section), generated over the
    plan's processes and resumable; global rank 0 returns it, the other ranks None."""
    say = progress or (lambda message: None)
    world = _world_size(plan)
    if world is not None and request.num_samples % world:
        raise ValueError(
            f"eval: --num-samples {request.num_samples} is not a multiple of the {world} processes. Fix: use "
            f"{request.num_samples - request.num_samples % world or world} or another multiple of {world}."
        )
    strategy = "ddp" if (world or 2) > 1 else "auto"
    fabric = Fabric(accelerator=plan.accelerator, devices=plan.devices, num_nodes=plan.num_nodes, strategy=strategy)
    fabric.launch()
    rank, world = fabric.global_rank, fabric.world_size
    if request.num_samples % world:  # "auto" devices: known only now
        raise ValueError(
            f"eval: --num-samples {request.num_samples} is not a multiple of {world} processes. Fix: "
            f"use a multiple of {world}."
        )
    loaded = load_for_eval(checkpoint, replace(request, device=str(fabric.device)))
    spec = score_spec(loaded, request, None)
    digest = fingerprint(loaded, spec, plan.chunk)
    folder = Path(plan.shard_dir or SHARD_DIR) / f"{loaded.path.stem}-{digest[:16]}"
    sizes = chunk_sizes(request.num_samples, plan.chunk)
    paths = [_chunk_path(folder, c, size) for c, size in enumerate(sizes)]
    found, ref = sum(p.is_file() for p in paths), None
    if fabric.is_global_zero:  # the reference first: a bad file is refused before any image is generated
        ref = eval_reference(loaded.config, spec.extractor, request.reference, say)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "fingerprint.txt").write_text(digest + "\n")
        say(f"{len(sizes)} chunks of {plan.chunk} over {world} process(es) in {folder}; {found} already there")
    fabric.barrier()
    bar = tqdm(total=len(sizes), initial=found, desc="eval chunks", disable=not fabric.is_global_zero)
    for c in range(rank, len(sizes), world):  # chunk c belongs to rank c % world
        if not paths[c].is_file():
            _make_chunk(loaded, spec, c, range(c * plan.chunk, c * plan.chunk + sizes[c]), paths[c])
        bar.update(sum(p.is_file() for p in paths) - bar.n)
    fabric.barrier()
    bar.update(len(sizes) - bar.n)
    bar.close()
    if not fabric.is_global_zero:
        return None
    feats, health = _read_chunks(paths)
    spec.extractor.cpu()
    say(f"scoring {len(feats)} features with {spec.extractor.id} against {ref.name}")
    s = score_features(loaded.config, loaded.config.sample.steps, replace(spec, reference=ref), feats, health)
    report = checkpoint_report(loaded, request, s, ref, health["seconds_generate"])
    save_reference_copy(request, ref, report)
    report.update(data_figures(loaded, request, replace(spec, reference=ref), (feats, None), say))
    report["sharding"] = {
        "world_size": world,
        "num_nodes": plan.num_nodes,
        "accelerator": plan.accelerator,
        "chunk": plan.chunk,
        "chunks": len(sizes),
        "chunks_found_at_start": found,
        "shard_dir": str(folder),
        "fingerprint": digest,
        "seeds": f"image i of seed {spec.seed} from its own seed ({loaded.config.sample.noise_layout} layout)",
        "pixel_bounds": list(OUT_OF_RANGE),
    }
    return report
