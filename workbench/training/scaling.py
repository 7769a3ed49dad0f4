"""Scaling up: parameters, activation memory, memory per GPU, training time and launch commands for any preset,
including the paper's (FFHQ-1024, ImageNet-256) that no CPU can train. Numbers come from the config alone: the
model is built on the meta device for its parameter count, and activation bytes are measured on small CPU copies.

    plan = training_plan(preset("ffhq1024-paper"), gpu="H100-80GB", nodes=4)
    describe_plan(preset("ffhq1024-paper"), plan, mfu=0.4); launch_commands("ffhq1024-paper", plan, nodes=4)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import replace

import torch

from ..core.compute import sequence_blocks, train_flops
from ..core.config import Config, DiffusionConfig, ModelConfig
from ..core.model import build_model
from ..core.objectives import build_objective

GPUS = {  # name -> (dense bf16 peak FLOP/s, memory bytes): vendor datasheet numbers
    "A100-80GB": (312e12, 80e9),
    "H100-80GB": (989e12, 80e9),
    "H200-141GB": (989e12, 141e9),
}
STATE_BYTES = {"weights": 4, "grads": 4, "adam": 8, "ema": 4}  # per parameter (fp32 master, bf16-mixed)


def param_count(config: Config) -> int:
    """Parameters of the model a config builds, counted on the meta device (no memory, any size)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(config).parameters())


@functools.lru_cache(maxsize=64)
def _saved_bytes(model_cfg: ModelConfig, diffusion_cfg: DiffusionConfig, dtype: torch.dtype | None) -> float:
    """Bytes autograd keeps for the backward of one training loss on one random image."""
    m = model_cfg
    model, diffusion = build_model(m), build_objective(diffusion_cfg, m)
    x = torch.randn(1, m.latent_channels, m.latent_size, m.latent_size)
    seen: dict = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()  # each storage once
        return t

    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None),
    ):
        diffusion.loss(model, x)
    return float(sum(seen.values()))


def adaln_params(config: Config) -> int:
    """Parameters DiT-style adaLN-Zero modulation would add (a W -> 6W linear per layer and tower): our model has
    none, since the timestep enters through the block embedder and the output head."""
    m = config.model
    towers = 2 if m.towers == "separate" else 1
    return m.depth * towers * (6 * m.width * m.width + 6 * m.width)


def preset_table(configs: Mapping[str, Config]) -> list[dict]:
    """One row per preset: image and latent geometry, N, D, T, width, sampler, parameters."""
    rows = []
    for name, c in configs.items():
        m = c.model
        rows.append(
            {
                "preset": name,
                "image": f"{c.data.image_size}px {c.data.codec}",
                "latent": f"{m.latent_channels}x{m.latent_size}x{m.latent_size}",
                "patch": m.patch_size,
                "tokens": m.grid**2,
                "T": m.num_blocks,
                "tokens/block": m.block_tokens,
                "N": m.depth,
                "D": m.diffusion_depth,
                "width": m.width,
                "heads": m.heads,
                "classes": m.num_classes,
                "sampler": f"{c.sample.sampler} S={c.sample.steps}",
                "params (M)": param_count(c) / 1e6,
            }
        )
    return rows


def activation_bytes_per_token_layer(config: Config) -> float:
    """Activation memory of training, in bytes per token per decoder layer, measured at the config's width and
    precision on small copies on the CPU: the saved tensors of one more layer, at two sequence lengths; the slope
    over the tokens drops what does not grow with them (e.g. the bf16 copies of the weights under autocast).
    Attention is taken as memory-efficient (nothing quadratic saved), as the SDPA kernels of CPU and GPU are."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(config.train.precision)
    per_layer, tokens = [], []
    for grid in (4, 8):  # tokens per side; 4 blocks of (grid/2)^2 tokens
        small = replace(
            config.model, num_blocks=4, latent_size=grid * config.model.patch_size, num_classes=0, diffusion_depth=1
        )
        one, two = (_saved_bytes(replace(small, depth=d), config.diffusion, dtype) for d in (1, 2))
        per_layer.append(two - one)
        tokens.append(sequence_blocks(small) * small.block_tokens)
    return (per_layer[1] - per_layer[0]) / (tokens[1] - tokens[0])


def training_plan(
    config: Config,
    gpu: str = "H100-80GB",
    gpus_per_node: int = 8,
    nodes: int = 1,
    mfu: float = 0.4,
    per_token_layer: float | None = None,
) -> dict:
    """Memory per GPU and time of the config's training run on `nodes` x `gpus_per_node` GPUs.

    Memory: fp32 weights, gradients, AdamW moments and EMA (20 bytes per parameter) plus activations. With
    train.strategy fsdp the plan shards that state over all GPUs (train.py: FSDP2 per decoder layer); otherwise it is
    for DDP, which keeps a full copy on every GPU ("state GB/GPU if sharded" says what FSDP would change). With
    train.activation_checkpointing an image keeps each layer's input (4 bytes x width per token) and one layer's
    activations during its recompute (an estimate, not measured). Activations (measured per token and layer, see
    activation_bytes_per_token_layer). The largest micro-batch that fits in 90% of the GPU memory, and the gradient
    accumulation that keeps the config's global batch, follow. Time: compute.train_flops per step at `mfu` of the
    GPU's dense bf16 peak (an assumption: 0.3-0.5 is typical for transformers of this size)."""
    peak, memory = GPUS[gpu]
    m, tc = config.model, config.train
    world = gpus_per_node * nodes
    params = param_count(config)
    strategy = ("fsdp" if tc.strategy == "fsdp" else "ddp") if world > 1 else "auto"
    state = params * sum(STATE_BYTES.values()) / (world if strategy == "fsdp" else 1)  # DDP: a full copy per GPU
    per_token_layer = per_token_layer or activation_bytes_per_token_layer(config)
    tokens = sequence_blocks(m) * m.block_tokens
    per_image = per_token_layer * tokens * m.depth
    if tc.activation_checkpointing:
        per_image = per_token_layer * tokens + 4 * m.width * tokens * m.depth
    fits = int((0.9 * memory - state) // per_image)
    devices = int(tc.devices) if isinstance(tc.devices, (int, float)) else 1  # "auto" or a list: count as 1
    global_batch = tc.batch_size * tc.grad_accum * devices * tc.num_nodes  # the recipe's batch, kept on any cluster
    micro = max(1, min(fits, tc.batch_size))
    accum = math.ceil(global_batch / (micro * world))
    step_flops = train_flops(m, global_batch)
    seconds = step_flops / (world * peak * mfu)
    return {
        "gpu": gpu,
        "gpus": world,
        "strategy": strategy,
        "params": params,
        "params (B)": params / 1e9,
        "state GB/GPU": state / 1e9,
        "state GB/GPU if sharded": params * sum(STATE_BYTES.values()) / world / 1e9,
        "activations GB/image": per_image / 1e9,
        "bytes/token/layer": per_token_layer,
        "tokens": round(tokens),
        "config batch/GPU": tc.batch_size,
        "config fits": fits >= tc.batch_size,
        "max micro-batch": fits,
        "global batch": global_batch,
        "micro-batch": micro,
        "grad_accum": accum,
        "effective batch": micro * accum * world,
        "TFLOPs/step": step_flops / 1e12,
        "s/step": seconds,
        "steps": tc.max_steps,
        "days": seconds * tc.max_steps / 86400,
        "GPU-hours": seconds * tc.max_steps * world / 3600,
    }


def describe_plan(config: Config, plan: dict, mfu: float) -> str:
    """What the plan means for the config, in one paragraph of markdown."""
    p = plan
    if p["max micro-batch"] < 1:
        batch = (
            f"not even one image per GPU fits a {p['gpu']}: this needs activation checkpointing or a GPU with "
            "more memory"
        )
        if p["state GB/GPU"] > p["state GB/GPU if sharded"]:
            batch += (
                f" (train.strategy fsdp would shard the {p['state GB/GPU']:.1f} GB of weights, gradients, AdamW and "
                f"EMA state per GPU down to {p['state GB/GPU if sharded']:.1f} GB)"
            )
    elif p["config fits"]:
        batch = f"the preset's {p['config batch/GPU']} images per GPU fit a {p['gpu']}"
    else:
        batch = (
            f"the preset's {p['config batch/GPU']} images per GPU do not fit a {p['gpu']}: use micro-batches of "
            f"{p['micro-batch']} with grad_accum {p['grad_accum']}"
        )
    return (
        f"The {config.name} preset builds a {p['params'] / 1e9:.2f}B-parameter model. A training image costs "
        f"{p['TFLOPs/step'] / p['global batch']:.1f} TFLOPs and {p['activations GB/image']:.1f} GB of activations "
        f"({p['tokens']} tokens), so {batch}. At {mfu:.0%} utilisation its {p['steps']:,} steps take about "
        f"{p['days']:.1f} days on {p['gpus']} GPUs ({p['GPU-hours']:,.0f} GPU-hours)."
    )


def launch_commands(
    preset_name: str, plan: dict, nodes: int = 1, gpus_per_node: int = 8, hours: int = 48
) -> dict[str, str]:
    """Shell commands for the plan: one node (Fabric starts the processes), several nodes with torchrun (Fabric
    detects TorchElastic) and a SLURM batch script (Fabric detects SLURM; one task per GPU)."""

    def options(n: int) -> str:  # the gradient accumulation that keeps the recipe's global batch on n nodes
        accum = math.ceil(plan["global batch"] / (plan["micro-batch"] * gpus_per_node * n))
        return (
            f"--preset {preset_name} --train.devices {gpus_per_node} --train.num_nodes {n} "
            f"--train.strategy {plan['strategy']} --train.batch_size {plan['micro-batch']} "
            f"--train.grad_accum {accum}"
        )

    single, multi = options(1), options(nodes)
    return {
        "one node": f"python -m workbench train {single}",
        "torchrun (run on every node)": (
            f"torchrun --nnodes {nodes} --nproc-per-node {gpus_per_node} --node-rank $NODE_RANK "
            f"--rdzv-backend c10d --rdzv-endpoint $MAIN_ADDR:29500 -m workbench train {multi}"
        ),
        "slurm (sbatch)": "\n".join(
            [
                "#!/bin/bash",
                f"#SBATCH --nodes={nodes}",
                f"#SBATCH --ntasks-per-node={gpus_per_node}",
                f"#SBATCH --gpus-per-node={gpus_per_node}",
                "#SBATCH --cpus-per-task=8",
                f"#SBATCH --time={hours}:00:00",
                f"srun python -m workbench train {multi} --resume",
            ]
        ),
    }
