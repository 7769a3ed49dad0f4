"""What a run leaves behind: PNGs at true resolution, a zip, a JSON record with provenance, and the command line.

Everything here is plain bytes and text built from a finished `PageRun`, so a page offers it through download buttons
and a test reads it back without a browser. The record says what produced the images (checkpoint file, its size,
modification time and training commit, this code's commit, torch) and what they scored, so that a run downloaded
today can be traced and redone later.
"""

from __future__ import annotations

import datetime
import io
import json
import shlex
import subprocess
import zipfile
from functools import cache
from pathlib import Path

import torch
from PIL import Image

import workbench as wb
from workbench.core.paths import REPO_ROOT
from workbench.data.images import image_grid
from workbench.training.checkpoint import read_header

from . import weights as weight_choice
from .runs import PageRun


def png(image: torch.Tensor) -> bytes:
    """(C, H, W) in [-1, 1] -> PNG bytes at the image's own size (lossless: the pixels as generated)."""
    buffer = io.BytesIO()
    image_grid(image[None], pad=0).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@cache
def _code_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _shown_path(path: Path) -> str:
    """A checkpoint path as a command line should carry it: relative to the repository when inside it."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def sample_arguments(run: PageRun) -> list[str]:
    """The `python -m workbench sample` arguments that redraw `run`'s images (per-image seeds: image i of seed s is
    the same at any batch size, so the CLI's grid holds the page's images in the same order)."""
    s, plan = run.side, run.plan
    args = ["--checkpoint", _shown_path(run.checkpoint), "--num-images", str(run.num_images)]
    args += ["--steps", str(s.steps), "--sampler", s.sampler, "--seed", str(run.seed)]
    if plan is not None and plan.elastic:
        if len(set(plan.depths)) == 1:
            args += ["--diffusion-depth", str(plan.depths[0])]
        else:
            args += ["--depth-schedule", ",".join(map(str, plan.depths))]
        if len(set(plan.steps)) > 1 or plan.steps[0] != s.steps:
            args += ["--steps-schedule", ",".join(map(str, plan.steps))]
        if plan.held_out:
            args.append("--allow-untrained-depth")
    if s.cfg_scale != 1 or s.label is not None:
        args += ["--cfg-scale", f"{s.cfg_scale:g}"]
    t = s.tuning.sample_kwargs()
    if "x0_clip" in t:
        args += ["--x0-clip", t["x0_clip"]]
    if "flow_shift" in t:
        args += ["--flow-shift", f"{t['flow_shift']:g}"]
    if "depth_per_step" in t:
        args += ["--depth-per-step", ",".join(map(str, t["depth_per_step"]))]
        if "--allow-untrained-depth" not in args and any(d not in run.plan.trained for d in t["depth_per_step"]):
            args.append("--allow-untrained-depth")
    if t.get("use_ema") is False:  # trained weights of a file that holds both (app.weights)
        args.append("--no-ema")
    return args


def command_line(run: PageRun, out: str = "samples.png") -> str:
    """The exact shell command that reproduces the run's images, quoted for a POSIX shell."""
    return shlex.join(["python", "-m", "workbench", "sample", *sample_arguments(run), "--out", out])


def limitations(run: PageRun) -> list[str]:
    """What the command line cannot say (shown beside it)."""
    if run.side.label is not None:
        return [f"every image of class {run.side.label}: the CLI draws classes itself (no class option)"]
    return []


def record(run: PageRun) -> dict:
    """The run's settings, cost, scores and provenance as JSON-ready data."""
    s, plan, fid = run.side, run.plan, run.fid
    stat = run.checkpoint.stat()
    header = read_header(run.checkpoint)
    meta = header.get("meta", {})
    return {
        "model": run.model_name,
        "settings": {
            "D": s.D,
            "steps": s.steps,
            "sampler": s.sampler,
            "seed": run.seed,
            "num_images": run.num_images,
            "class": s.label,
            "cfg_scale": s.cfg_scale,
            "depth_schedule": list(plan.depths) if plan else None,
            "steps_schedule": list(plan.steps) if plan else None,
            "held_out_depths": list(plan.held_out) if plan else [],
            **s.tuning.sample_kwargs(),
            "weights": weight_choice.used(run.checkpoint, s.tuning.weights),  # "ema" or "raw" (trained)
            "noise": "per-image: image i of seed s has its own generators (workbench.sampling.noise)",
        },
        "cost": None
        if run.cost is None
        else {
            "paper_block_layer_evals_per_image": run.cost.paper_block_layer_evals,
            "cached_block_layer_evals_per_image": run.cost.block_layer_evals,
            "sampling_seconds": round(run.cost.seconds, 4),
            "first_block_s": None if run.first_block_s != run.first_block_s else round(run.first_block_s, 3),
        },
        "fid": None
        if fid is None
        else {
            "fid": fid.fid,
            "interval": list(fid.fid_ci) if fid.fid_ci else None,
            "level": fid.ci_level,
            "fid_inf": fid.fid_inf,
            "kid": fid.kid_mean,
            "n": fid.n,
            "extractor": fid.extractor,
            "reference": fid.reference,
        },
        "provenance": {
            "checkpoint": str(run.checkpoint),
            "checkpoint_bytes": stat.st_size,
            "checkpoint_modified": datetime.datetime.fromtimestamp(stat.st_mtime, datetime.timezone.utc).isoformat(),
            "checkpoint_step": header.get("step"),
            "checkpoint_git_commit": meta.get("git_commit"),
            "checkpoint_weights": meta.get("weights"),
            "code_git_commit": _code_commit(),
            "workbench": wb.__version__,
            "torch": torch.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "command": command_line(run),
    }


def record_json(run: PageRun) -> bytes:
    return json.dumps(record(run), indent=2, default=str).encode()


def image_name(run: PageRun, index: int) -> str:
    return f"seed{run.seed}-image{index:03d}.png"


def zip_bytes(run: PageRun) -> bytes:
    """Every image as its own PNG (true resolution) and run.json, in one zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:  # PNGs are compressed already
        for i, image in enumerate(run.images):
            z.writestr(image_name(run, i), png(image))
        z.writestr("run.json", record_json(run))
    return buffer.getvalue()
