"""External baseline: a small diffusers UNet2DModel with the DDPM objective on Fashion-MNIST 32x32.

    python -m benchmarks.peer_diffusers --minutes 5 [--batch 48] [--out runs/peer-unet] [--threads 0]

Same data pipeline as the workbench (workbench.data.datasets: zero-padded 32x32, [-1, 1], random flips), the same noise
schedule (DDPM, 1000 steps, linear betas from DiffusionConfig, epsilon prediction, MSE), bf16 autocast, AdamW,
EMA, and a wall-clock budget instead of a step count, so it can be matched to a workbench run. Sampling uses the
workbench's diffusers schedulers for the epsilon objective (DDIM by default, or DPM-Solver++ 2M;
workbench.core.diffusion.make_scheduler), and sampling compute is counted in the same unit
as the workbench's (FLOPs per image, torch.utils.flop_counter via workbench.core.compute.count_flops).
Writes <out>/unet.safetensors (EMA weights) and <out>/summary.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from safetensors.torch import load_file, save_file

from benchmarks.harness import set_threads
from workbench.core.compute import count_flops
from workbench.core.config import DataConfig, DiffusionConfig
from workbench.core.diffusion import make_scheduler
from workbench.data.datasets import build_dataset, make_loader

UNET = dict(
    sample_size=32,
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(32, 64, 128),
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
)  # 2.7M parameters


def build_unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**UNET)


def train_peer(
    minutes: float,
    batch: int = 48,
    lr: float = 1e-3,
    ema_decay: float = 0.995,
    warmup: int = 25,
    seed: int = 0,
    bf16: bool = True,
) -> tuple[UNet2DModel, dict]:
    """Train for `minutes` of wall clock; return the EMA model and a summary (steps, images seen, seconds)."""
    unet = build_unet(seed)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
    sched = make_scheduler("ddpm", DiffusionConfig(), 1000)  # the workbench's training schedule
    alphas_cumprod = sched.alphas_cumprod.float()
    batches = iter(make_loader(build_dataset(DataConfig(), "train"), batch, seed=seed, flips=True))
    gen = torch.Generator().manual_seed(seed)
    start, step, loss = time.perf_counter(), 0, torch.tensor(float("nan"))
    while time.perf_counter() - start < minutes * 60:
        x0, _ = next(batches)  # (B, 1, 32, 32) in [-1, 1]
        t = torch.randint(0, len(alphas_cumprod), (batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        ab = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / warmup)
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            pred = unet(xt, t).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - ema_decay)
        step += 1
    seconds = time.perf_counter() - start
    return ema, {
        "model": "diffusers UNet2DModel",
        "unet": UNET,
        "params": sum(p.numel() for p in unet.parameters()),
        "steps": step,
        "batch": batch,
        "images_seen": step * batch,
        "seconds": round(seconds, 1),
        "final_loss": float(loss.detach()),
        "lr": lr,
        "ema_decay": ema_decay,
        "precision": "bf16" if bf16 else "fp32",
        "threads": torch.get_num_threads(),
    }


@torch.inference_mode()
def sample_peer(
    unet: UNet2DModel, n: int, steps: int, seed: int = 0, batch: int = 250, sampler: str = "ddim"
) -> torch.Tensor:
    """n images (n, 1, 32, 32) in [-1, 1] with S=`steps` of the workbench's diffusers scheduler `sampler` for the
    epsilon objective ("ddim", "dpm++2m", ...; workbench.core.diffusion.make_scheduler)."""
    unet.eval()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch):
        sched = make_scheduler(sampler, DiffusionConfig(), steps)
        x = torch.randn(min(batch, n - start), 1, 32, 32, generator=gen)
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x).prev_sample
        out.append(x.clamp(-1, 1))
    return torch.cat(out)


def flops_per_image(unet: UNet2DModel, steps: int) -> float:
    """Sampling FLOPs per image: S forward passes of the UNet (the scheduler's update is elementwise)."""
    x = torch.zeros(1, 1, 32, 32)
    with torch.inference_mode():
        return float(count_flops(lambda: unet(x, torch.tensor([500])).sample)) * steps


def load_peer(folder: str | Path) -> UNet2DModel:
    unet = build_unet()
    unet.load_state_dict(load_file(Path(folder) / "unet.safetensors"))
    return unet.eval()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="training wall-clock budget")
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="runs/peer-unet", help="the folder the trained peer is written to")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    ema, summary = train_peer(args.minutes, args.batch, args.lr, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, out / "unet.safetensors")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
