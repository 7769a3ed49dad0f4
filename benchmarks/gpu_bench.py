"""GPU benchmark: bf16 training MFU, sampling images/s, cached vs naive sampling. Under 8 minutes on one GPU.

    python benchmarks/gpu_bench.py [--out gpu.json] [--compile]     # on a CUDA machine
    python benchmarks/gpu_bench.py --dry-run                       # tiny sizes on the CPU (tested in CI)

Needs PyTorch and this repository only: where einops, diffusers or PyYAML are missing (a bare CUDA image with
PyTorch), stand-ins are installed first (a small `rearrange`; the others are never called here). The benchmark
therefore drives the model directly:
  training   forward + backward + AdamW under bf16 autocast on a DDPM-noised batch (the loss of
             workbench.core.diffusion, written with torch only); FLOPs from workbench.core.compute.train_flops; MFU
             against
             the bf16 matmul rate measured in the same run (best of model-sized and square GEMMs)
  sampling   the cached sampler's model calls (prefill, ar_step per block, denoise_step per step) with a fixed
             first-order update: the scheduler's elementwise step costs nothing next to the layers
  naive      the full teacher-forced forward at every step (the no-cache reference); the first blocks are timed
             and scaled to T, as every naive step runs the same sequence
"""

from __future__ import annotations

import argparse
import importlib
import math
import re
import sys
import time
import types

import torch
import torch.nn.functional as F


def _rearrange(x: torch.Tensor, pattern: str, **sizes: int) -> torch.Tensor:
    """einops.rearrange for reshape/transpose patterns whose output axes all appear in the input."""

    def groups(side: str) -> list[list[str]]:
        return [g[0].split() if g[0] else [g[1]] for g in re.findall(r"\(([^)]*)\)|(\w+)", side)]

    left, right = (groups(s) for s in pattern.split("->"))
    dims: dict[str, int] = dict(sizes)
    for group, size in zip(left, x.shape):
        known = math.prod(dims[n] for n in group if n in dims)
        for n in group:
            dims.setdefault(n, size // known)
    names = [n for g in left for n in g]
    x = x.reshape([dims[n] for n in names]).permute([names.index(n) for g in right for n in g])
    return x.reshape([math.prod(dims[n] for n in g) for g in right])


def install_stand_ins() -> list[str]:
    """Put stand-ins for the workbench's non-torch imports that this environment lacks; return their names."""
    missing = []
    for name in ("einops", "diffusers", "yaml"):
        try:
            importlib.import_module(name)
        except ImportError:
            module = types.ModuleType(name)
            if name == "einops":
                module.rearrange = _rearrange
            else:
                module.__getattr__ = lambda attr, name=name: _unavailable(name, attr)
            sys.modules[name] = module
            missing.append(name)
    return missing


def _unavailable(module: str, attr: str):
    def fail(*args, **kwargs):
        raise ImportError(f"{module}.{attr} is not installed here; gpu_bench.py does not use it")

    return fail


STAND_INS = install_stand_ins()  # before the workbench imports below

from harness import emit, machine  # noqa: E402

import workbench as wb  # noqa: E402
from workbench.core.blocks import from_blocks, to_blocks  # noqa: E402
from workbench.core.compute import cached_cost, naive_cost, sample_flops, train_flops  # noqa: E402

SETTINGS = {  # name -> (preset, overrides, training batch, sampling batch, S)
    "full": {
        "train": [("fmnist-small", {}, 256), ("ffhq256", {}, 32)],
        "sample": [("fmnist-small", {}, 256, 50), ("ffhq256", {}, 16, 50)],
        "cache": ("fmnist-small", {"model.num_blocks": 16, "model.patch_size": 2}, 64, 50, 2),
    },
    "dry-run": {
        "train": [("tiny", {}, 4)],
        "sample": [("tiny", {}, 2, 2)],
        "cache": ("tiny", {"model.num_blocks": 4}, 2, 2, 1),
    },
}


def timed(fn, sync, repeats: int) -> float:
    """Best seconds per call over `repeats` calls after one warm-up call."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_rate(device: str, sync, dtype=torch.bfloat16, dry: bool = False) -> dict[str, float]:
    """FLOP/s of a few GEMMs: model-sized ones and a large square one."""
    shapes = [(64, 64, 64)] if dry else [(16384, 768, 2304), (8192, 1152, 4608), (8192, 8192, 8192)]
    rates = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
        rates[f"{m}x{k}x{n}"] = 2.0 * m * k * n / timed(lambda: torch.mm(a, b), sync, 3 if dry else 10)
    return rates


def train_step(cfg, batch: int, device: str, compile_model: bool):
    """A closure: one bf16-autocast training step (DDPM eps loss + 0.1 hidden loss, AdamW)."""
    torch.manual_seed(0)
    model = wb.build_model(cfg).to(device)
    fwd = torch.compile(model) if compile_model else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    d, m = cfg.diffusion, cfg.model
    betas = torch.linspace(d.beta_start, d.beta_end, d.train_steps, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0).float().to(device)
    x0 = torch.randn(batch, m.latent_channels, m.latent_size, m.latent_size, device=device)
    g = m.block_grid
    side = m.latent_size // g

    def step() -> None:
        t = torch.randint(0, d.train_steps, (batch, m.num_blocks), device=device)
        ab = alphas_cumprod[t].view(batch, 1, g, 1, g, 1)  # one timestep per (image, block)
        ab = ab.expand(batch, 1, g, side, g, side).reshape(batch, 1, m.latent_size, m.latent_size)
        noise = torch.randn_like(x0)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        with torch.autocast(device, torch.bfloat16):
            pred, hidden = fwd(x0, xt, t)
        loss = F.mse_loss(pred.float(), noise)
        if hidden is not None:
            loss = loss + d.hidden_loss_weight * F.mse_loss(hidden.float(), x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, train_flops(m, batch)


@torch.inference_mode()
def sample(
    model, batch: int, steps: int, use_cache: bool, device: str, bf16: bool = False, blocks: int | None = None
) -> None:
    """The sampler's model calls for `blocks` blocks (default all), with a fixed first-order update."""
    cfg = model.cfg
    T, Lb, C = cfg.num_blocks, cfg.block_tokens, cfg.token_dim
    canvas = torch.zeros(batch, T, Lb, C, device=device)
    cache = model.new_cache(batch, device) if use_cache else None
    for k in range(blocks or T):
        z_cond = model.ar_step(cache, k, canvas[:, k - 1] if k else None) if use_cache else None
        x = torch.randn(batch, Lb, C, device=device)
        for i in range(steps):
            t = torch.full((batch,), 999.0 * (1 - i / steps), device=device)
            if use_cache:
                out = model.denoise_step(cache, k, z_cond, x, t)
            else:
                noisy = torch.zeros_like(canvas)
                noisy[:, k] = x
                pred, _ = model(from_blocks(canvas, cfg), from_blocks(noisy, cfg), t.view(-1, 1).expand(-1, T))
                out = to_blocks(pred, cfg)[:, k]
            x = x - out.float() / steps
        canvas[:, k] = x


def sample_timed(model, batch, steps, use_cache, device, sync, repeats, bf16=False, blocks=None) -> float:
    with torch.autocast(device, torch.bfloat16, enabled=bf16):
        return timed(lambda: sample(model, batch, steps, use_cache, device, blocks=blocks), sync, repeats)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: checks that everything runs")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd training steps")
    ap.add_argument("--out", default=None, help="append the JSON result to this file")
    args = ap.parse_args(argv)
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_bench.py: no CUDA device. Fix: run on a GPU machine, or pass --dry-run.")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    repeats = 2 if args.dry_run else 10
    setting = SETTINGS["dry-run" if args.dry_run else "full"]
    started = time.perf_counter()
    result: dict = {"benchmark": "gpu", "stand_ins": STAND_INS, "machine": machine()}
    peak = matmul_rate(device, sync, dry=args.dry_run)
    result["bf16_matmul_tflops"] = {k: round(v / 1e12, 1) for k, v in peak.items()}
    best_peak = max(peak.values())

    result["train"] = {}
    for name, over, batch in setting["train"]:
        cfg = wb.preset(name, **over)
        for compiled in [False, True] if args.compile else [False]:
            step, flops = train_step(cfg, batch, device, compiled)
            sec = timed(step, sync, repeats)
            tokens = batch * cfg.model.grid**2
            result["train"][name + ("-compile" if compiled else "")] = {
                "batch": batch,
                "seconds_per_step": round(sec, 5),
                "image_tokens_per_s": round(tokens / sec),
                "tflops_per_s": round(flops / sec / 1e12, 2),
                "mfu_vs_measured_bf16_matmul": round(flops / sec / best_peak, 3),
            }

    result["sample"] = {}
    for name, over, batch, steps in setting["sample"]:
        cfg = wb.preset(name, **over)
        torch.manual_seed(0)
        model = wb.build_model(cfg).to(device).eval()
        for bf16 in (False, True):
            sec = sample_timed(model, batch, steps, True, device, sync, 1 if args.dry_run else 2, bf16)
            result["sample"][f"{name}-{'bf16' if bf16 else 'fp32'}"] = {
                "batch": batch,
                "S": steps,
                "images_per_s": round(batch / sec, 2),
                "tflops_per_s": round(batch * sum(sample_flops(cfg.model, steps).values()) / sec / 1e12, 3),
            }

    name, over, batch, steps, naive_blocks = setting["cache"]
    cfg = wb.preset(name, **over)
    torch.manual_seed(0)
    model = wb.build_model(cfg).to(device).eval()
    T = cfg.model.num_blocks
    t_cached = sample_timed(model, batch, steps, True, device, sync, 1 if args.dry_run else 2)
    t_naive = sample_timed(model, batch, steps, False, device, sync, 1, blocks=naive_blocks) * T / naive_blocks
    flops = [sum(sample_flops(cfg.model, steps, c).values()) for c in (True, False)]
    result["cache"] = {
        "preset": name,
        **{k.split(".")[-1]: v for k, v in over.items()},
        "S": steps,
        "batch": batch,
        "seconds_cached": round(t_cached, 4),
        "seconds_naive": round(t_naive, 4),
        "naive_blocks_timed": naive_blocks,
        "measured_speedup": round(t_naive / t_cached, 2),
        "predicted_speedup_block_layers": round(naive_cost(cfg.model, steps) / cached_cost(cfg.model, steps), 2),
        "predicted_speedup_flops": round(flops[1] / flops[0], 2),
    }
    result["wall_s"] = round(time.perf_counter() - started, 1)
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
