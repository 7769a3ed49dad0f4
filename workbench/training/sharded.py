"""Sharded training with torch FSDP2 (`fully_shard`): what train.py needs beyond DDP, with no Lightning in it.

Fabric's ModelParallelStrategy calls `shard_model` on the plain model once the processes exist: every decoder layer
becomes one FSDP unit (its weights are gathered just before its forward and freed after), the rest (embedder, BOI,
heads) is the root unit. Each rank then holds 1/world of the weights, gradients and AdamW moments; the EMA copy is
sharded the same way, so its update is a local lerp of shards. What needs the full weights gathers them on purpose:
the single safetensors file of a checkpoint (rank 0), and the plain copy that samples grids and runs evaluate_fn.

Runs on CPU processes over gloo as on GPUs over NCCL; tests/test_distributed.py runs it on 2 CPU processes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint

from ..core.config import Config, DiffusionConfig, ModelConfig, TrainConfig
from ..core.model import MADFormer, build_model
from ..core.objectives import build_objective

# train.precision -> the dtype FSDP gathers weights in for the forward (gradients are reduced in fp32)
GATHER_DTYPE = {"bf16-mixed": torch.bfloat16}


@dataclass(frozen=True)
class ShardPlan:
    """How a run shards: the data-parallel size (every process) and the all-gather precision."""

    world_size: int
    precision: str


def world_size(tc: TrainConfig) -> int:
    """Processes of a run: train.devices (a count or a list) x train.num_nodes."""
    devices = tc.devices
    if isinstance(devices, float) and devices.is_integer():
        devices = int(devices)
    if isinstance(devices, (list, tuple)):
        devices = len(devices)
    if not isinstance(devices, int) or devices < 1:
        raise ValueError(
            f"train.devices: {tc.devices!r} with train.strategy='fsdp' leaves the number of shards open. "
            "Fix: set train.devices to a count of processes per node (e.g. 8)."
        )
    return devices * tc.num_nodes


def check_fsdp(tc: TrainConfig) -> ShardPlan:
    """Refuse, with the fix, the FSDP settings that cannot work here; return the plan of those that can."""
    if tc.ema_decay == 0:
        raise ValueError(
            "train.ema_decay: 0 with train.strategy='fsdp'. The sharded loop samples, evaluates and exports the "
            "sharded EMA copy (the trained weights live inside the FSDP units and are not gathered for that). "
            "Fix: set train.ema_decay > 0 (e.g. 0.9999), or train with train.strategy='ddp'."
        )
    if tc.compile:
        raise ValueError(
            "train.compile: true with train.strategy='fsdp' is not supported (fully_shard needs the model's own "
            "layers, not a compiled wrapper). Fix: set train.compile=false, or use train.strategy='ddp'."
        )
    if tc.precision in ("16-mixed", "16"):
        raise ValueError(
            f"train.precision: {tc.precision!r} with train.strategy='fsdp': fp16 needs a grad scaler for sharded "
            "gradients, which this loop does not have. Fix: use 'bf16-mixed' (GPUs since the A100) or '32-true'."
        )
    return ShardPlan(world_size(tc), tc.precision)


def shard_model(model: nn.Module, mesh, precision: str = "32-true", forward_only: bool = False) -> nn.Module:
    """Apply fully_shard to every decoder layer, then to the model (the root unit holds the rest). `mesh` is
    Fabric's device mesh; its data-parallel dimension spans every process (tensor parallelism is 1).

    forward_only (the EMA copy): the root reshards after each forward too. By default FSDP keeps the root's weights
    gathered until the backward, which a module that never runs a backward would never reach."""
    mesh = mesh["data_parallel"] if mesh.mesh_dim_names and "data_parallel" in mesh.mesh_dim_names else mesh
    dtype = GATHER_DTYPE.get(precision)
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype else MixedPrecisionPolicy()
    for layer in model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy, **({"reshard_after_forward": True} if forward_only else {}))
    return model


def checkpoint_layers(model: MADFormer) -> MADFormer:
    """Activation checkpointing: each decoder layer keeps only its inputs for the backward and recomputes the rest
    (about one more forward of compute for activations of one layer instead of all). Applied inside each layer, so
    it composes with fully_shard (the recompute runs while the backward has the layer's weights gathered)."""
    for layer in model.layers:
        layer.forward = _recomputed(layer.forward)
    return model


def _recomputed(forward: Callable) -> Callable:
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():  # sampling and validation: nothing to save, nothing to recompute
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor; a plain tensor as it is."""
    return t.to_local() if isinstance(t, DTensor) else t


def scalar(t: torch.Tensor) -> float:
    """A replicated 0-d DTensor (FSDP's gradient norm) or a tensor as a float."""
    return float(t.full_tensor() if isinstance(t, DTensor) else t)


def state_bytes(*parts) -> int:
    """Bytes this rank holds of the given modules' parameters and optimizers' states (only its shards)."""
    total = 0
    for part in parts:
        if isinstance(part, nn.Module):
            tensors = [local(p) for p in part.parameters()]
        elif isinstance(part, torch.optim.Optimizer):
            tensors = [local(v) for s in part.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        else:  # None (no EMA)
            tensors = []
        total += sum(t.numel() * t.element_size() for t in tensors)
    return total


def optimizer_shard(optimizer: torch.optim.Optimizer) -> dict:
    """optimizer.state_dict() with every DTensor replaced by this rank's shard (what a rank's shard file holds)."""
    state = optimizer.state_dict()
    return {
        "state": {i: {k: local(v) for k, v in s.items()} for i, s in state["state"].items()},
        "param_groups": state["param_groups"],
    }


def load_optimizer_shard(optimizer: torch.optim.Optimizer, shard: dict) -> None:
    """Inverse of optimizer_shard on the same number of ranks: shards become DTensors laid out like their params."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for i, saved in shard["state"].items():
        p = params[int(i)]
        state[int(i)] = {
            k: DTensor.from_local(v, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride())
            if isinstance(p, DTensor) and k != "step"
            else v
            for k, v in saved.items()
        }
    optimizer.load_state_dict({"state": state, "param_groups": shard["param_groups"]})


def full_state(module: nn.Module, everywhere: bool = False) -> dict[str, torch.Tensor]:
    """The unsharded state_dict of a sharded module on the CPU: on global rank 0 only (others get {}), or on every
    rank with everywhere=True. A collective: every rank calls it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=not everywhere)
    state = get_model_state_dict(module, options=options)
    return {k: v.detach().cpu() for k, v in state.items()}


def gathered_copy(module: nn.Module, config: Config) -> MADFormer:
    """A plain (unsharded) model with a sharded module's weights on every rank, for sampling and evaluate_fn (they
    call layers outside the model's forward, where FSDP would not gather). A collective."""
    device = local(next(module.parameters())).device
    plain = build_model(config).to(device)
    plain.load_state_dict(full_state(module, everywhere=True))
    return plain.eval()


@functools.lru_cache(maxsize=32)
def unused_parameters(model_cfg: ModelConfig, diffusion_cfg: DiffusionConfig) -> tuple[str, ...]:
    """Parameters that get no gradient in a training loss of this architecture (DDP must then be told
    find_unused_parameters, which costs a graph traversal per step). Measured on a narrow copy (width 8 per head,
    same layers and flags, 2 heads of 8, the smallest latent grid the block layout allows): a parameter left
    without gradient by either of two losses with different draws (elastic depths, label dropout) counts."""
    small = _narrow(model_cfg)
    model, objective = build_model(small), build_objective(diffusion_cfg, small)
    x = torch.randn(2, small.latent_channels, small.latent_size, small.latent_size, generator=torch.Generator())
    labels = torch.zeros(2, dtype=torch.long) if small.num_classes else None
    unused: set[str] = set()
    for seed in (0, 1):
        model.zero_grad(set_to_none=True)
        objective.loss(model, x, labels, generator=torch.Generator().manual_seed(seed)).total.backward()
        unused |= {n for n, p in model.named_parameters() if p.requires_grad and p.grad is None}
    return tuple(sorted(unused))


def _narrow(m: ModelConfig) -> ModelConfig:
    for side in range(1, m.latent_size // m.patch_size + 1):
        try:
            return replace(m, width=16, heads=2, latent_size=side * m.patch_size)
        except ValueError:  # the block layout needs more tokens
            continue
    return replace(m, width=16, heads=2)
