"""Scaling plans from a config alone: parameter count (meta device), measured activation bytes, memory per GPU,
gradient accumulation that keeps the global batch, launch commands, and the sentence the notebook prints."""

import math

import pytest
from lightning_fabric.strategies import DDPStrategy, ModelParallelStrategy
from single_thread import one_thread  # noqa: F401 (autouse)

import workbench as wb
from workbench.training import scaling
from workbench.training.train import _strategy


def test_parameter_count_and_activation_memory():
    cfg = wb.preset("tiny")
    assert scaling.param_count(cfg) == sum(p.numel() for p in wb.build_model(cfg).parameters())
    narrow = scaling.activation_bytes_per_token_layer(cfg.override(**{"model.width": 64}))
    wide = scaling.activation_bytes_per_token_layer(cfg.override(**{"model.width": 128, "model.heads": 4}))
    assert narrow > 0 and wide / narrow == pytest.approx(2.0, rel=0.15)  # activations grow with the width
    bf16 = scaling.activation_bytes_per_token_layer(
        cfg.override(**{"model.width": 64, "train.precision": "bf16-mixed"})
    )
    assert bf16 < narrow  # bf16 autocast keeps most activations in 2 bytes


def test_training_plan_and_commands_keep_the_global_batch():
    cfg = wb.preset("tiny", **{"train.batch_size": 32, "train.devices": 8, "train.strategy": "fsdp"})
    per_token_layer = 1e8  # bytes: 45 GB per image, so the batch cannot fit and accumulation takes over
    plan = scaling.training_plan(cfg, "A100-80GB", 8, 2, per_token_layer=per_token_layer)
    params = scaling.param_count(cfg)
    assert plan["global batch"] == 256 and plan["gpus"] == 16
    assert plan["state GB/GPU if sharded"] == pytest.approx(params * 20 / 16 / 1e9)
    assert plan["state GB/GPU"] == pytest.approx(params * 20 / 16 / 1e9) and plan["strategy"] == "fsdp"  # sharded
    assert plan["activations GB/image"] == pytest.approx(1e8 * plan["tokens"] * cfg.model.depth / 1e9)
    assert not plan["config fits"] and plan["micro-batch"] == plan["max micro-batch"] == 1 and plan["grad_accum"] == 16
    assert plan["micro-batch"] * plan["grad_accum"] * 16 >= 256 == plan["global batch"]
    commands = scaling.launch_commands("tiny", plan, nodes=2, gpus_per_node=8)
    one_node_accum = math.ceil(256 / (plan["micro-batch"] * 8))
    assert commands["one node"].endswith(f"--train.grad_accum {one_node_accum}")
    assert "--nnodes 2 --nproc-per-node 8" in commands["torchrun (run on every node)"]
    assert (
        "#SBATCH --ntasks-per-node=8" in commands["slurm (sbatch)"]
        and "srun python -m workbench train" in commands["slurm (sbatch)"]
    )
    assert all("--train.strategy fsdp" in c for c in commands.values())  # the strategy the config asks for
    ddp = scaling.training_plan(cfg.override(**{"train.strategy": "ddp"}), "A100-80GB", 8, 2, per_token_layer=1.0)
    assert ddp["state GB/GPU"] == pytest.approx(params * 20 / 1e9) and ddp["config fits"]  # a full copy per GPU
    recompute = cfg.override(**{"train.activation_checkpointing": True})
    lean = scaling.training_plan(recompute, "A100-80GB", 8, 2, per_token_layer=per_token_layer)
    assert lean["activations GB/image"] < plan["activations GB/image"] / 2  # one layer's activations, not depth


def test_describe_plan_covers_fit_accumulate_and_nothing_fits():
    cfg = wb.preset("tiny", **{"train.batch_size": 32, "train.devices": 8, "train.strategy": "ddp"})
    fits = scaling.describe_plan(cfg, scaling.training_plan(cfg, "H100-80GB", 8, 1, per_token_layer=1.0), 0.4)
    assert "images per GPU fit a H100-80GB" in fits and "tiny preset" in fits
    accumulate = scaling.describe_plan(cfg, scaling.training_plan(cfg, "H100-80GB", 8, 1, per_token_layer=1e8), 0.4)
    assert "use micro-batches of 1 with grad_accum 32" in accumulate
    nothing = scaling.describe_plan(cfg, scaling.training_plan(cfg, "H100-80GB", 8, 1, per_token_layer=1e9), 0.4)
    assert "not even one image" in nothing


@pytest.mark.parametrize("name", ["ffhq256", "ffhq1024-paper", "imagenet256-paper"])
def test_paper_presets_launch_with_ddp_or_fsdp(name):
    cfg = wb.preset(name)
    ddp = _strategy(cfg)
    assert cfg.train.strategy == "ddp" and isinstance(ddp, DDPStrategy)
    # the last layer's context tower feeds only keys and values: its MLP gets no gradient, so DDP must look for it
    assert ddp._ddp_kwargs["find_unused_parameters"] is True
    fsdp = _strategy(cfg.override(**{"train.strategy": "fsdp", "train.devices": 8, "train.num_nodes": 4}))
    assert isinstance(fsdp, ModelParallelStrategy) and fsdp._data_parallel_size == 32
    for refused in ("ddp_spawn", "dp"):
        with pytest.raises(ValueError, match="train.strategy"):
            cfg.override(**{"train.strategy": refused})


def test_ddp_searches_for_unused_parameters_only_where_a_loss_leaves_some():
    shared = wb.preset("tiny", **{"model.towers": "shared", "train.strategy": "ddp"})
    assert _strategy(shared)._ddp_kwargs["find_unused_parameters"] is False  # one tower: every weight gets a gradient
    separate = wb.preset("tiny", **{"train.strategy": "ddp"})
    assert _strategy(separate)._ddp_kwargs["find_unused_parameters"] is True  # the last context tower: keys only
