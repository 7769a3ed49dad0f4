"""FID during training: `training_fid(config)` is the `evaluate_fn` that `train` calls on every rank at
train.eval_every (and at the end) with the EMA model. It runs the sharded evaluation's steps inside the training
processes: chunk c of train.fid_samples images starts from sample.seed + c and belongs to rank c % world_size, the
features are gathered to every rank, and each scores them alike, so the logged numbers (eval/fid, eval/fid_low,
eval/fid_high, eval/kid, eval/precision, eval/recall, eval/inception_score under TensorBoard and the CSV log) do
not depend on the number of processes. Global rank 0 writes each evaluation's provenance (extractor, reference
file and sha256, n, sampler, S, seed, weights) to <out_dir>/eval/fid-step<step>.json.

Config fields (train.*): fid_samples (0: validation loss only), fid_extractor ("": default_extractor), fid_sampler
("": sample.sampler), fid_steps (0: sample.steps).
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist

from ..core.config import Config
from ..sampling.sampler import generate_images_checked
from ..training.checkpoint import write_text_atomic
from .evaluate import default_extractor, default_reference
from .features import extract_features, resolve_extractor
from .metrics import LiveFID, LiveOptions, ReferenceStats

FID_CHUNK = 50  # images per chunk during training (its own size: training batches leave less memory free)
BOOTSTRAP = 20  # resamples of the interval logged beside the FID (fewer than eval's 50: it runs often)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass
class TrainingFID:
    """The evaluate_fn of module docstring for one config; the reference is resolved once, on first use."""

    config: Config
    reference: ReferenceStats | None = None

    def _reference(self, extractor: str, rank: int) -> ReferenceStats:
        if self.reference is None:
            if rank == 0:  # may compute and cache statistics: one writer, the others wait and then load them
                self.reference = default_reference(self.config, extractor)
            if dist.is_available() and dist.is_initialized():
                dist.barrier()
            if rank != 0:
                self.reference = default_reference(self.config, extractor)
        return self.reference

    def __call__(self, ema_model: torch.nn.Module, step: int) -> dict:
        c, tc = self.config, self.config.train
        rank, world = _world()
        ext = resolve_extractor(tc.fid_extractor or default_extractor(c))
        sampler, steps, seed = tc.fid_sampler or c.sample.sampler, tc.fid_steps or c.sample.steps, c.sample.seed
        cfg = c.override(**{"sample.sampler": sampler, "sample.steps": steps})
        device = next(ema_model.parameters()).device
        sizes = [min(FID_CHUNK, tc.fid_samples - s) for s in range(0, tc.fid_samples, FID_CHUNK)]
        mine = {}
        for i in range(rank, len(sizes), world):  # images i * FID_CHUNK.. of the seed (per-image seeds)
            request = replace(cfg.sample, first_image=cfg.sample.first_image + i * FID_CHUNK)
            if cfg.sample.noise_layout != "per-image":
                request = replace(cfg.sample, seed=seed + i)  # the older layout: one seed per chunk
            images, _ = generate_images_checked(ema_model, cfg, sizes[i], request, batch=sizes[i])
            mine[i] = extract_features(ext.to(device), images.to(device)).cpu()  # (size, F)
        ext.cpu()
        if world > 1:
            parts = [None] * world
            dist.all_gather_object(parts, mine)
            mine = {k: v for part in parts for k, v in part.items()}
        feats = torch.cat([mine[i] for i in range(len(sizes))])  # (n, F) in chunk order
        ref = self._reference(ext.name, rank)
        live = LiveFID(ref, ext, LiveOptions(bootstrap=BOOTSTRAP, inf_points=0, seed=seed))
        live.add_features(feats)
        r = live.compute()
        low, high = r.fid_ci or (math.nan, math.nan)
        numbers = {"fid": r.fid, "fid_low": low, "fid_high": high, "kid": r.kid_mean}
        numbers |= {k: v for k, v in (("precision", r.precision), ("recall", r.recall)) if v is not None}
        if r.inception_score is not None:
            numbers["inception_score"] = r.inception_score
        if rank == 0:
            provenance = {
                "step": step,
                **numbers,
                "n": r.n,
                "weights": "ema",
                "sampler": sampler,
                "steps": steps,
                "seed": seed,
                "noise_layout": cfg.sample.noise_layout,
                "extractor": r.extractor,
                "reference": r.reference,
                "reference_count": r.reference_count,
                "reference_file": ref.source.get("file"),
                "reference_sha256": ref.source.get("sha256"),
                "precision_recall_counts": list(r.pr_counts),
                "world_size": world,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
            path = Path(tc.out_dir) / "eval" / f"fid-step{step:07d}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(provenance, indent=1) + "\n")
        return numbers


def training_fid(config: Config) -> TrainingFID | None:
    """The evaluate_fn for `train(config, evaluate_fn=...)`: FID at train.eval_every when train.fid_samples > 0,
    else None (validation loss only)."""
    return TrainingFID(config) if config.train.fid_samples else None
