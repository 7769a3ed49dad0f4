"""One prepared GPU run (planned at about 6 minutes on one H100, at most 8): the real training loop and the real
sampler at the paper's width, written to one JSON line.

    python -m benchmarks.gpu_bench              # on a CUDA machine; appends to benchmarks/results/gpu.jsonl
    python -m benchmarks.gpu_bench --dry-run    # the same code path, tiny, on the CPU in seconds (run by the tests)

The model is imagenet256-paper's (width 1152, 18 heads, T=4 blocks of 64 tokens, a class prefix) at depth 8 with
D=4 instead of 28/14, on a folder of synthetic 32 x 32 RGB images through the pixel codec (the token count of the
paper's 256 px latents). Parts:
  train     workbench.training.train.train, the whole loop (Fabric, the step, EMA, validation, checkpoint), in
            bf16-mixed for --train-steps steps, four times: {eager, torch.compile} x {sdpa, flex}. MFU: the
            analytic FLOPs of a step (compute.train_flops) per second (after the first step, where compilation
            happens) over the GPU's datasheet dense bf16 peak, and over the best bf16 GEMM rate measured here
  sample    generate_events at the preset's T and S (4, 100), bf16, cached and with full recomputation, under each
            backend: images/s, tokens/s and the cache speed-up beside the cost model's predictions
            (compute.naive_cost / cached_cost in block-layer evaluations, and sample_flops with attention)
  score     evaluation.score: --score-images generated images against as many training images under the
            TF-Inception extractor (the FID is meaningless after a few hundred steps: this times the path)
Peak memory per part from torch.cuda.max_memory_allocated. A part that fails records its error and the run goes
on, so the one line is always written. On the CPU (--dry-run) FlexAttention training is refused: PyTorch has no
FlexAttention backward there; that refusal is what the dry run records for it.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

import workbench as wb
from benchmarks.harness import best_times, emit, machine, matmul_probes, parse, parser, peak_rate
from workbench.core.compute import cached_cost, naive_cost, sample_flops, train_flops
from workbench.core.model import use_attention
from workbench.evaluation.evaluate import ScoreSpec, score
from workbench.evaluation.features import feature_extractor
from workbench.training.checkpoint import load_for_inference
from workbench.training.train import train

PRESET = "imagenet256-paper"
CLASSES = 8  # class sub-folders of the synthetic set: a class prefix as in the paper's ImageNet model
# datasheet dense (no sparsity) bf16 tensor-core peaks, FLOP/s, by a substring of torch.cuda.get_device_name()
DATASHEET_BF16 = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("A100", 312e12))
GEMMS = ((8192, 8192, 8192), (16384, 1152, 4608), (16384, 4608, 1152))  # square, and the model's MLP shapes


@dataclass(frozen=True)
class Plan:
    """The sizes of one run: the GPU run, or its tiny CPU twin."""

    device: str
    model: dict  # overrides of the preset's model section
    batch: int  # training images per step
    train_steps: int
    minutes_per_run: float  # train.max_minutes: a run that is slower than planned stops there, checkpointed
    compile: tuple[bool, ...]  # torch.compile settings trained
    images: int  # sampling batch
    steps: int  # S (0: the preset's)
    score_images: int
    workers: int  # DataLoader workers
    precision: str = "bf16-mixed"  # train.precision (the CPU twin: fp32, as this CPU has no bf16 units)


PLANS = {
    "gpu": Plan("cuda", {"depth": 8, "diffusion_depth": 4}, 64, 200, 2.0, (False, True), 64, 0, 300, 6),
    "dry-run": Plan(
        "cpu", {"depth": 2, "diffusion_depth": 1, "width": 32, "heads": 2}, 4, 3, 1.0, (False,), 2, 2, 4, 0, "32-true"
    ),
}


def synthetic_images(root: Path, n: int, seed: int = 0) -> torch.Tensor:
    """Write n 32 x 32 RGB PNGs of smooth random colour fields into CLASSES sub-folders; return them (n, 3, 32, 32)
    in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1  # (n, 3, 4, 4)
    images = F.interpolate(coarse, size=32, mode="bicubic", align_corners=False).clamp(-1, 1)  # (n, 3, 32, 32)
    pixels = ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (n, 32, 32, 3)
    for i, p in enumerate(pixels):
        folder = root / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(p).save(folder / f"{i:05d}.png")
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1  # as saved: 256 levels


def bench_config(plan: Plan, data: Path, out: Path, compiled: bool, attention: str) -> wb.Config:
    """The preset at the plan's sizes, training on the synthetic folder through the pixel codec."""
    over = {f"model.{k}": v for k, v in plan.model.items()}
    over.update(
        {
            "model.latent_channels": 3,
            "model.num_classes": CLASSES,
            "model.attention": attention,
            "data.root": str(data),
            "data.image_size": 32,
            "data.codec": "pixel",
            "data.vae_path": "",
            "data.latent_scale": 1.0,
            "data.num_workers": plan.workers,
            "train.batch_size": plan.batch,
            "train.max_steps": plan.train_steps,
            "train.max_minutes": plan.minutes_per_run,
            "train.accelerator": plan.device,
            "train.devices": 1,
            "train.strategy": "auto",
            "train.compile": compiled,
            "train.out_dir": str(out),
            "train.log_every": 50,
            "train.ckpt_every": plan.train_steps,
            "train.keep_last": 1,
            "train.sample_every": 0,
            "train.eval_every": 0,
            "train.fid_samples": 0,
            "train.precision": plan.precision,
            "train.val_batches": 1,
            "sample.precision": "bf16" if plan.device == "cuda" else "fp32",
        }
    )
    if plan.steps:
        over["sample.steps"] = plan.steps
    return wb.preset(PRESET, **over)


def peak_memory(device: str) -> dict:
    """GiB of the peak allocation since the last reset (CUDA only), then reset."""
    if device != "cuda":
        return {}
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return {"peak_memory_gib": round(peak, 2)}


def datasheet_peak(device: str) -> float | None:
    """The datasheet dense bf16 FLOP/s of this GPU, when it is in the table."""
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((rate for key, rate in DATASHEET_BF16 if key in name), None)


def measured_peak(device: str, dry: bool) -> float:
    """The best bf16 GEMM rate of this run (FLOP/s)."""
    probes = matmul_probes(torch.bfloat16, device, ((64, 64, 64),) if dry else GEMMS)
    sync = torch.cuda.synchronize if device == "cuda" else None
    times = best_times({n: fn for n, (fn, _) in probes.items()}, rounds=3, sync=sync, min_seconds=0.2)
    return peak_rate(times, probes)


def train_part(plan: Plan, data: Path, out: Path, compiled: bool, attention: str, peaks: dict) -> dict:
    """One training run of the real loop; its rates from the loop's own summary."""
    cfg = bench_config(plan, data, out, compiled, attention)
    torch.compiler.reset()
    start = time.perf_counter()
    try:
        summary = train(cfg)
    except ValueError as err:  # FlexAttention training on a CPU: refused with the fix
        return {"refused": str(err).splitlines()[0], **peak_memory(plan.device)}
    # one step only (a run stopped by its time budget): its rate includes compilation, said by "steps": 1
    per_step = summary["seconds_per_step_after_first"] or summary["first_step_seconds"]
    flops = train_flops(cfg.model, plan.batch)
    row = {
        "status": summary["status"],
        "steps": summary["steps_this_launch"],
        "batch": plan.batch,
        "wall_s": round(time.perf_counter() - start, 1),
        "first_step_s": round(summary["first_step_seconds"], 2),
        "seconds_per_step": round(per_step, 4),
        "images_per_s": round(plan.batch / per_step, 1),
        "tokens_per_s": round(plan.batch * cfg.model.grid**2 / per_step),
        "tflops_per_s": round(flops / per_step / 1e12, 1),
        "val_loss": summary["val_loss"],
        **peak_memory(plan.device),
    }
    row.update({f"mfu_vs_{k}": round(flops / per_step / v, 3) for k, v in peaks.items() if v})
    return row


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_sampling(model, cfg, plan: Plan, use_cache: bool) -> float:
    """Seconds of one generate_events run (after a warm-up run at S=2 that compiles every shape it meets)."""
    device = plan.device
    warm = wb.sample_request(cfg, num_images=plan.images, steps=2, seed=1, use_cache=use_cache)
    for _ in wb.generate_events(model, cfg, warm, device=device):
        pass
    sync(device)
    start = time.perf_counter()
    request = wb.sample_request(cfg, num_images=plan.images, use_cache=use_cache)
    for _ in wb.generate_events(model, cfg, request, device=device):
        pass
    sync(device)
    return time.perf_counter() - start


def sample_part(model, cfg, plan: Plan) -> dict:
    """Cached and full-recomputation sampling under each backend, and the cache speed-up against the cost model."""
    m, S = cfg.model, cfg.sample.steps
    flops = {c: sum(sample_flops(m, S, c).values()) for c in (True, False)}
    row = {
        "T": m.num_blocks,
        "S": S,
        "images": plan.images,
        "precision": cfg.sample.precision,
        "predicted_speedup_block_layers": round(naive_cost(m, S) / cached_cost(m, S), 2),
        "predicted_speedup_flops": round(flops[False] / flops[True], 2),
    }
    for attention in ("sdpa", "flex"):
        run_cfg = use_attention(model, cfg, attention)
        seconds = {c: timed_sampling(model, run_cfg, plan, c) for c in (True, False)}
        speedup = seconds[False] / seconds[True]
        row[attention] = {
            "cached_s": round(seconds[True], 3),
            "recompute_s": round(seconds[False], 3),
            "images_per_s": round(plan.images / seconds[True], 2),
            "tokens_per_s": round(plan.images * m.grid**2 / seconds[True]),
            "cache_speedup": round(speedup, 2),
            "speedup_over_flops_prediction": round(speedup / row["predicted_speedup_flops"], 3),
            **peak_memory(plan.device),
        }
    use_attention(model, cfg, cfg.model.attention)
    return row


def score_part(model, cfg, plan: Plan, real: torch.Tensor) -> dict:
    """evaluation.score on generated images against training images (Inception features)."""
    n = plan.score_images
    start = time.perf_counter()
    extractor = feature_extractor("inception").to(plan.device)  # features where the images are
    spec = ScoreSpec(n=n, seed=0, extractor=extractor, reference=real[:n].to(plan.device), bootstrap=10)
    result = score(model, cfg, cfg.sample.steps, spec)
    seconds = time.perf_counter() - start
    return {
        "images": n,
        "fid": round(result.fid, 2),
        "seconds": round(seconds, 1),
        "images_per_s": round(n / seconds, 2),
    }


def guarded(part, *args) -> dict:
    """A part's row, or its error: the one JSON line is written whatever fails."""
    try:
        return part(*args)
    except Exception as err:  # noqa: BLE001 - recorded in the result, not swallowed
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__, out="benchmarks/results/gpu.jsonl", threads=0, dry_run=True)
    ap.add_argument("--train-steps", type=int, default=0, help="steps per training run (0: the plan's, 200)")
    args = parse(ap, argv)
    plan = PLANS["dry-run" if args.dry_run else "gpu"]
    if args.train_steps:
        plan = replace(plan, train_steps=args.train_steps)
    if plan.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "gpu_bench: no CUDA device here. Fix: run it on a GPU machine (docs/gpu.md), or pass --dry-run."
        )
    started = time.perf_counter()
    peaks = {"datasheet": datasheet_peak(plan.device), "measured_gemm": measured_peak(plan.device, args.dry_run)}
    result: dict = {"benchmark": "gpu", "preset": PRESET, "plan": asdict(plan), "machine": machine()}
    result["bf16_peak_tflops"] = {k: round(v / 1e12, 1) for k, v in peaks.items() if v}
    peak_memory(plan.device)  # from here on, each part reports its own peak
    with tempfile.TemporaryDirectory(prefix="gpu_bench_") as tmp:
        root = Path(tmp)
        real = synthetic_images(root / "data", max(1024, 2 * plan.score_images) if not args.dry_run else 64)
        result["train"], kept = {}, None
        for compiled in plan.compile:
            for attention in ("sdpa", "flex"):
                out = root / f"run-{attention}-{'compiled' if compiled else 'eager'}"
                name = f"{'compiled' if compiled else 'eager'}-{attention}"
                result["train"][name] = guarded(train_part, plan, root / "data", out, compiled, attention, peaks)
                if kept is None and "error" not in result["train"][name] and "refused" not in result["train"][name]:
                    kept = out  # the first finished run's checkpoint: the sampled model
                else:
                    shutil.rmtree(out, ignore_errors=True)
                gc.collect()
        if kept is None:
            result["sample"] = result["score"] = {"error": "no training run finished"}
        else:
            model, _ = load_for_inference(kept, device=plan.device)  # the EMA weights, as the sampler gets them
            cfg = use_attention(model, bench_config(plan, root / "data", kept, False, "sdpa"), "sdpa")
            result["sample"] = guarded(sample_part, model, cfg, plan)
            result["score"] = guarded(score_part, model, cfg, plan, real)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    emit(result, None if args.dry_run else args.out)
    return result


if __name__ == "__main__":
    main()
