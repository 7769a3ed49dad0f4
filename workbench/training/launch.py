"""Multi-node launches: one plan (nodes x processes per node, preset, strategy) gives the torchrun command every
node runs, a SLURM batch script that runs it on each allocated node, and `run_node`, which starts this node's share
(what `python -m workbench launch --node-rank R` does, and what tests/test_distributed.py starts twice on localhost
as two one-process "nodes").

torchrun starts the processes of a node and sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; Fabric
detects TorchElastic from them, so `python -m workbench train` needs no launcher code of its own. The global batch of
the preset (batch_size x grad_accum x devices x num_nodes) is kept on any cluster: split over the processes, with
gradient accumulation where a process's share exceeds the preset's micro-batch.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..core.config import Config
from .sharded import check_fsdp

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class LaunchPlan:
    """What a multi-node launch runs: the preset and the overrides that place it on nodes x procs_per_node."""

    preset: str
    nodes: int
    procs_per_node: int  # GPUs per node (one process each); CPU processes on a machine without GPUs
    strategy: str  # "ddp" or "fsdp"
    micro_batch: int  # images per process per forward
    grad_accum: int
    accelerator: str = "gpu"
    hours: int = 48  # SLURM time limit

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    def train_options(self, extra: tuple[str, ...] = ()) -> list[str]:
        """The `python -m workbench train` options every process gets."""
        return [
            "--preset",
            self.preset,
            "--train.devices",
            str(self.procs_per_node),
            "--train.num_nodes",
            str(self.nodes),
            "--train.strategy",
            self.strategy,
            "--train.accelerator",
            self.accelerator,
            "--train.batch_size",
            str(self.micro_batch),
            "--train.grad_accum",
            str(self.grad_accum),
            *extra,
        ]


def plan_launch(
    config: Config,
    preset: str,
    nodes: int,
    procs_per_node: int,
    strategy: str = "fsdp",
    accelerator: str = "gpu",
    hours: int = 48,
) -> LaunchPlan:
    """The plan that keeps `config`'s global batch on nodes x procs_per_node processes; ValueError naming the fix
    for a layout that cannot work (no processes, a world size that does not divide the batch)."""
    if nodes < 1 or procs_per_node < 1:
        raise ValueError(
            f"--nodes {nodes} --gpus-per-node {procs_per_node}: a launch needs at least one node and one process "
            "per node. Fix: pass positive counts (e.g. --nodes 4 --gpus-per-node 8)."
        )
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"--strategy {strategy!r}: a multi-process launch runs 'ddp' or 'fsdp'. Fix: pick one.")
    tc = config.train
    devices = int(tc.devices) if isinstance(tc.devices, (int, float)) else 1
    global_batch = tc.batch_size * tc.grad_accum * devices * tc.num_nodes
    world = nodes * procs_per_node
    if global_batch % world:
        fits = [w for w in range(1, global_batch + 1) if global_batch % w == 0 and w % procs_per_node == 0]
        raise ValueError(
            f"world size {nodes} x {procs_per_node} = {world} does not divide the global batch {global_batch} of "
            f"preset {preset} (batch_size x grad_accum x devices x num_nodes), so every process cannot take the same "
            f"share. Fix: use a world size that divides it (with {procs_per_node} per node: "
            f"{', '.join(map(str, fits[-4:])) or 'none'}), or change train.batch_size."
        )
    share = global_batch // world
    micro = max(m for m in range(1, min(share, tc.batch_size) + 1) if share % m == 0)
    if strategy == "fsdp":
        check_fsdp(config.train)
    return LaunchPlan(preset, nodes, procs_per_node, strategy, micro, share // micro, accelerator, hours)


def torchrun_command(
    plan: LaunchPlan,
    node_rank: str = "$NODE_RANK",
    master_addr: str = "$MASTER_ADDR",
    master_port: str = "$MASTER_PORT",
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The command one node runs (static rendezvous on the master's address: node ranks are fixed)."""
    return [
        "torchrun",
        "--nnodes",
        str(plan.nodes),
        "--nproc-per-node",
        str(plan.procs_per_node),
        "--node-rank",
        str(node_rank),
        "--master-addr",
        str(master_addr),
        "--master-port",
        str(master_port),
        "-m",
        "workbench",
        "train",
        *plan.train_options(extra),
    ]


def _shell(words: list[str]) -> str:
    return " ".join(w if w.startswith("$") else shlex.quote(w) for w in words)  # keep $VARS for the shell


def slurm_script(plan: LaunchPlan, extra: tuple[str, ...] = ()) -> str:
    """A SLURM batch script: one task per node, each running torchrun for its node (node rank = SLURM_NODEID,
    master = the first allocated host). --resume continues the run after a requeue or a time limit."""
    command = torchrun_command(plan, "$SLURM_NODEID", "$MASTER_ADDR", "$MASTER_PORT", (*extra, "--resume"))
    return "\n".join(
        [
            "#!/bin/bash",
            f"#SBATCH --job-name=madformer-{plan.preset}",
            f"#SBATCH --nodes={plan.nodes}",
            "#SBATCH --ntasks-per-node=1",
            f"#SBATCH --gpus-per-node={plan.procs_per_node}",
            f"#SBATCH --cpus-per-task={8 * plan.procs_per_node}",
            f"#SBATCH --time={plan.hours}:00:00",
            "#SBATCH --requeue",
            "set -euo pipefail",
            'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            f"MASTER_PORT={DEFAULT_PORT}",
            "export MASTER_ADDR MASTER_PORT",
            f"srun --kill-on-bad-exit=1 bash -c '{_shell(command)}'",
            "",
        ]
    )


def run_node(plan: LaunchPlan, node_rank: int, master_addr: str | None, master_port: int, extra=()) -> int:
    """Start this node's processes (torchrun as a module of this Python) and wait; its exit code."""
    master_addr = master_addr or os.environ.get("MASTER_ADDR")
    if plan.nodes > 1 and not master_addr:
        raise ValueError(
            f"--node-rank {node_rank} of {plan.nodes} nodes: no master address, so the nodes cannot find each other. "
            "Fix: pass --master-addr HOST (the node rank 0 runs on; 127.0.0.1 on one machine) or set MASTER_ADDR."
        )
    if not 0 <= node_rank < plan.nodes:
        raise ValueError(f"--node-rank {node_rank}: not one of 0..{plan.nodes - 1}. Fix: number the nodes from 0.")
    # --resume: a node restarted after a failure continues the run (a fresh start when it has no checkpoint yet)
    words = torchrun_command(plan, str(node_rank), master_addr or "127.0.0.1", str(master_port), (*extra, "--resume"))
    return subprocess.call([sys.executable, "-m", "torch.distributed.run", *words[1:]])


def write_script(text: str, path: str | Path) -> Path:
    """Write a launch script (executable) and return its path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
    except OSError as err:
        raise ValueError(
            f"{path}: cannot write the launch script ({err.strerror or err}). Fix: pass --script in a folder you "
            "can write (default runs/launch/)."
        ) from None
    return path
