"""Training on Lightning Fabric, read top to bottom: `train` (main) -> `fit` -> `train_step` / `validate`.

The same code runs on 1 CPU process, N CPU processes (DDP or FSDP over gloo), N GPUs and several nodes; with
train.strategy fsdp the weights, gradients, AdamW moments and EMA are sharded over the processes (sharded.py). A
killed run resumes bitwise identically on CPU because nothing it draws depends on process history that the
checkpoint lacks:
- data order: a seeded permutation per epoch, indexed by the number of samples seen (data.EpochSampler);
- timesteps and noise: an explicit per-rank generator whose state is checkpointed with the global RNGs of every rank;
- sampling, validation and `evaluate_fn` run inside torch.random.fork_rng, so they never shift the training streams.
"""

from __future__ import annotations

import functools
import math
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from lightning_fabric import Fabric
from lightning_fabric.loggers import CSVLogger, TensorBoardLogger
from lightning_fabric.strategies import DDPStrategy, ModelParallelStrategy
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from ..core.config import Config, TrainConfig
from ..core.devices import set_tf32
from ..core.diffusion import Objective
from ..core.model import MADFormer, build_model
from ..core.objectives import build_objective
from ..core.paths import CACHE_DIR
from ..data.codecs import LATENT_CACHE_DIR, Codec, build_codec
from ..data.datasets import RankShare, make_loader, training_dataset
from ..data.images import save_grid
from ..data.latents import LatentStore, cache_root, open_or_build
from ..sampling.sampler import generate
from . import sharded
from .checkpoint import (
    LATEST,
    Checkpoint,
    capture_rng,
    check_architecture,
    checkpoint_files,
    config_differences,
    load_checkpoint,
    load_shard,
    restore_rng,
    save_checkpoint,
    save_shard,
)
from .signals import stop_on_signals

EvaluateFn = Callable[[nn.Module, int], dict]  # (EMA model, step) -> metrics, e.g. {"fid": 12.3}


# ---- pieces with no Fabric in them -------------------------------------------------------------------------------
def wsd_lr(step: int, total: int, warmup_frac: float, decay_start_frac: float, final_frac: float) -> float:
    """Warmup-stable-decay LR multiplier of optimizer step `step` (0-based) out of `total`: linear warmup to 1 over
    the first round(warmup_frac * total) steps, flat until round(decay_start_frac * total), then linear decay that
    reaches final_frac at the last step (no decay phase when that rounds to `total`)."""
    warmup = round(warmup_frac * total)
    decay_start = max(round(decay_start_frac * total), warmup)
    if step < warmup:
        return (step + 1) / warmup
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start + 1) / max(total - decay_start, 1))
    return 1.0 - (1.0 - final_frac) * progress


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on the weight matrices of linear layers only (not norms, biases, embeddings, BOI)."""
    matrices = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) in matrices], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in matrices], "weight_decay": 0.0},
    ]


def make_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """EMA copy of `model` (None when decay = 0); after n updates it uses min(decay, (1 + n) / (10 + n)), so short
    runs are not dominated by the initial weights."""
    if decay == 0:
        return None

    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], n: torch.Tensor) -> None:
        d = min(decay, (1 + n.item()) / (10 + n.item()))
        torch._foreach_lerp_(ema_params, params, 1 - d)

    ema = AveragedModel(model, multi_avg_fn=update)
    return ema.requires_grad_(False).eval()


def _seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# ---- run state ---------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """Everything a training run holds; what changes is checkpointed."""

    config: Config
    fabric: Fabric
    net: MADFormer  # the plain module (state_dict, EMA source)
    model: nn.Module  # `net` as set up by Fabric (DDP, precision); used for training forwards
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: AveragedModel | None
    noise: torch.Generator  # timesteps and noise of the diffusion loss, one stream per rank
    diffusion: Objective  # the training objective (VP diffusion or flow matching)
    codec: Codec
    step: int = 0  # optimizer steps done
    samples_seen: int = 0  # training images drawn by all ranks (the data position)
    train_seconds: float = 0.0  # wall time of all launches before this one
    val_loss: float | None = None
    cached: bool = False  # batches hold latents from a LatentStore: the codec encoded the dataset once
    sharded: bool = False  # FSDP: net and EMA are sharded; gather them (collectively) for sampling and checkpoints

    @property
    def eval_model(self) -> MADFormer:
        """The EMA weights when kept, otherwise the trained ones (used for validation and sampling)."""
        return self.ema.module if self.ema is not None else self.net

    def inference_model(self) -> MADFormer:
        """eval_model as a plain module: sampling and evaluate_fn call layers outside the model's forward, where FSDP
        would not gather the shards. Under FSDP a collective (every rank calls it) that builds a full copy."""
        return sharded.gathered_copy(self.eval_model, self.config) if self.sharded else self.eval_model

    @property
    def images_per_step(self) -> int:
        return self.config.train.batch_size * self.config.train.grad_accum * self.fabric.world_size

    def labels(self, labels: torch.Tensor) -> torch.Tensor | None:
        return labels if self.config.model.num_classes else None

    def latents(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch of the loader as latents (B, c, h, w): cached ones as they are, images through the codec."""
        return batch if self.cached else self.codec.encode(batch)


# ---- main --------------------------------------------------------------------------------------------------------
def train(config: Config, resume: bool = False, evaluate_fn: EvaluateFn | None = None) -> dict:
    """Train `config` with Fabric; resume=True continues from train.out_dir/latest (a fresh start if there is none).

    `evaluate_fn(ema_model, step) -> dict` (e.g. FID) is called on every rank at train.eval_every and at the end; its
    numbers are logged under eval/. Returns a summary: status ("finished", "time budget", "interrupted"), step,
    val_loss, images_per_second, and the paths of the checkpoint, logs and sample grids.
    """
    tc = config.train
    out = Path(tc.out_dir)
    fabric = Fabric(
        accelerator=tc.accelerator,
        devices=_devices(tc.devices),
        num_nodes=tc.num_nodes,
        strategy=_strategy(config),
        precision=tc.precision,
        loggers=[CSVLogger(out, name="logs"), TensorBoardLogger(out, name="tb", default_hp_metric=False)],
    )
    fabric.launch()
    training_tf32(tc, fabric.device)
    ckpt = _checkpoint_to_resume(config, resume)
    fabric.seed_everything(tc.seed, verbose=False)
    net = build_model(config)
    if ckpt is not None:
        net.load_state_dict(ckpt.model)
    ema = make_ema(net, tc.ema_decay)  # before sharding: FSDP shards the EMA copy like the model
    if ema is not None and ckpt is not None and ckpt.ema is not None:
        ema.module.load_state_dict(ckpt.ema)
    if tc.activation_checkpointing:
        sharded.checkpoint_layers(net)
    fsdp = isinstance(fabric.strategy, ModelParallelStrategy)
    if fsdp:  # fully_shard replaces the parameters: the optimizer must be built on the sharded ones
        model = fabric.setup_module(net)  # fully_shard works in place: `net` now holds this rank's shards
        if ema is not None:
            sharded.shard_model(ema.module, fabric.strategy.device_mesh, forward_only=True)
    optimizer = torch.optim.AdamW(param_groups(net, tc.weight_decay), lr=tc.lr, betas=(tc.beta1, tc.beta2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        functools.partial(
            wsd_lr,
            total=tc.max_steps,
            warmup_frac=tc.warmup_frac,
            decay_start_frac=tc.decay_start_frac,
            final_frac=tc.final_lr_frac,
        ),
    )
    if fsdp:
        optimizer = fabric.setup_optimizers(optimizer)
    else:
        model, optimizer = fabric.setup(torch.compile(net) if tc.compile else net, optimizer)
    run = Run(
        config,
        fabric,
        net,
        model,
        optimizer,
        scheduler,
        ema,
        torch.Generator(fabric.device).manual_seed(_seed(tc.seed, fabric.global_rank)),
        build_objective(config.diffusion, config.model),
        build_codec(config.data, fabric.device),
        sharded=fsdp,
    )

    train_set, val_set = training_dataset(config.data, "train"), training_dataset(config.data, "val")
    for note in filter(None, (train_set.report(), val_set.report())):
        fabric.print(note)  # e.g. "data/faces: 6980 images; skipped 3 (2 unreadable, 1 too small); ..."
    if config.data.codec != "pixel":  # encoded once per (dataset, codec): a step costs what a latent model costs
        train_set, val_set = cached_latents(run, train_set, config.data.random_flip), cached_latents(run, val_set)
        run.cached = True
    start = ckpt.data["samples_seen"] if ckpt is not None else 0
    # plain DataLoaders (batches move with fabric.to_device): iter() must build the loader's iterator right here,
    # because building it draws from the global RNG, and on resume that draw has to come before _restore
    share = RankShare(fabric.global_rank, fabric.world_size)
    batches = iter(
        make_loader(
            train_set,
            tc.batch_size,
            train=True,
            seed=tc.seed,
            start_index=start,
            flips=config.data.random_flip,
            num_workers=config.data.num_workers,
            share=share,
        )
    )
    val_loader = make_loader(val_set, tc.batch_size, train=False, num_workers=config.data.num_workers, share=share)

    summary: dict = {"rank": fabric.global_rank}
    if ckpt is not None:
        _restore(run, ckpt)
    else:
        if fabric.is_global_zero:
            out.mkdir(parents=True, exist_ok=True)
            config.to_yaml(out / "config.yaml")
        with torch.random.fork_rng(_rng_devices(fabric)):
            summary["val_loss_initial"] = validate(run, val_loader)["loss"]
    status = "failed"
    try:
        summary.update(fit(run, batches, val_loader, evaluate_fn, len(train_set)))
        held = sharded.state_bytes(run.net, run.optimizer, run.eval_model if run.ema is not None else None)
        summary["state_bytes_per_rank"] = fabric.all_gather(torch.tensor(held)).reshape(-1).tolist()
        status = "success"
    finally:
        for logger in fabric.loggers:
            logger.finalize(status)
    if fabric.is_global_zero:
        summary.update(logs=str(fabric.loggers[0].log_dir), tensorboard=str(fabric.loggers[1].log_dir))
    return summary


def cached_latents(run: Run, dataset, flips: bool = False) -> LatentStore:
    """The latents of `dataset`, keyed by the codec's hash, in a streamed 16-bit store (data/latents.py) under
    data.cache_dir (default: LATENT_CACHE_DIR for small sets, ~/.cache outside the work tree for large ones). A
    missing store is encoded by every rank together, each its share with data.num_workers loader workers; encoding
    runs in a forked RNG, so a run that builds the store trains exactly like one that finds it."""
    fabric, data = run.fabric, run.config.data
    root = cache_root(data.cache_dir, len(dataset))
    root = LATENT_CACHE_DIR if root == CACHE_DIR else root / "latents"
    with torch.random.fork_rng(_rng_devices(fabric)):
        store, seconds = open_or_build(
            run.codec,
            dataset,
            root,
            flips,
            ranks=(fabric.global_rank, fabric.world_size),
            barrier=fabric.barrier,
            workers=data.num_workers,
        )
    how = f"encoded by {fabric.world_size} processes in {seconds:.1f} s" if seconds else "found"
    fabric.print(f"latents: {store.folder} ({len(store)} images, {store.nbytes / 1e6:.1f} MB, {how})")
    return store


def training_tf32(tc: TrainConfig, device: torch.device) -> None:
    """train.tf32 on a CUDA device: fp32 matmuls and cuDNN convolutions on TF32 tensor cores, or not (a process-wide
    switch of torch, as sample.tf32 is for sampling); nothing happens on other devices."""
    set_tf32(device, tc.tf32)


def _devices(devices):
    # YAML/CLI numbers may arrive as floats (2.0); Fabric wants an int, a list or "auto"
    return int(devices) if isinstance(devices, float) and devices.is_integer() else devices


def _strategy(config: Config):
    """Fabric's strategy for train.strategy. fsdp: ModelParallelStrategy with sharded.shard_model over every process
    (data parallel = world size, no tensor parallelism). ddp: find_unused_parameters only for architectures with
    parameters a loss leaves without gradient (sharded.unused_parameters; it costs a graph traversal per step)."""
    tc = config.train
    if tc.strategy == "fsdp":
        plan = sharded.check_fsdp(tc)
        shard = functools.partial(sharded.shard_model, precision=plan.precision)
        return ModelParallelStrategy(shard, data_parallel_size=plan.world_size, tensor_parallel_size=1)
    if tc.strategy == "ddp":
        return DDPStrategy(find_unused_parameters=bool(sharded.unused_parameters(config.model, config.diffusion)))
    return tc.strategy


def _rng_devices(fabric: Fabric) -> list:
    return [fabric.device] if fabric.device.type == "cuda" else []


def _latest(out: Path) -> Path | None:
    return out / (out / LATEST).read_text().strip() if (out / LATEST).is_file() else None


def _checkpoint_to_resume(config: Config, resume: bool) -> Checkpoint | None:
    out = Path(config.train.out_dir)
    found = bool(checkpoint_files(out)) or (out / LATEST).is_file()
    if not resume:
        if found:
            raise ValueError(
                f"train.out_dir: {out} already holds checkpoints of a run. Fix: resume it (--resume, "
                "train(config, resume=True)), or choose another train.out_dir."
            )
        return None
    if not found:
        return None
    ckpt = load_checkpoint(out)
    check_architecture(ckpt, config)
    return ckpt


def _restore(run: Run, ckpt: Checkpoint) -> None:
    fabric = run.fabric
    if run.sharded:  # each rank reads its own shard of the optimizer state (the weights came from the full file)
        sharded.load_optimizer_shard(run.optimizer, load_shard(ckpt.path, fabric.global_rank, fabric.world_size))
    else:
        run.optimizer.load_state_dict(ckpt.optimizer)
    run.scheduler.load_state_dict(ckpt.scheduler)
    if run.ema is not None and ckpt.ema is not None:  # its weights were loaded before sharding
        run.ema.n_averaged.fill_(ckpt.step)  # one EMA update per optimizer step
    run.step, run.samples_seen = ckpt.step, ckpt.data["samples_seen"]
    run.train_seconds, run.val_loss = ckpt.meta.get("train_seconds", 0.0), ckpt.meta.get("val_loss")
    changed = [d for d in config_differences(ckpt.config, run.config) if not d.startswith("name")]
    if changed:
        fabric.print(f"resuming {ckpt.path} with changed settings (not bitwise identical): {'; '.join(changed)}")
    if len(ckpt.rng) == fabric.world_size:
        restore_rng(ckpt.rng[fabric.global_rank], run.noise)
    else:
        fabric.print(
            f"resuming {ckpt.path}: it was written by {len(ckpt.rng)} processes, this run has "
            f"{fabric.world_size}; the data order continues exactly, the noise streams are re-seeded."
        )


# ---- the loop ----------------------------------------------------------------------------------------------------
def fit(run: Run, batches: Iterator, val_loader, evaluate_fn: EvaluateFn | None, dataset_size: int) -> dict:
    """Optimizer steps until train.max_steps, the time budget or a stop signal; periodic logs, sample grids,
    validation / evaluate_fn and checkpoints. Returns the summary of this launch."""
    fabric, tc = run.fabric, run.config.train
    out = Path(tc.out_dir)
    launched, step_seconds, images, first_step = time.perf_counter(), 0.0, 0, run.step
    first_seconds = None  # the first step of a launch (torch.compile compiles there)
    status, ckpt_path, grids, metrics = "finished", _latest(out), [], {}
    with (
        stop_on_signals() as signalled,
        tqdm(
            total=tc.max_steps,
            initial=run.step,
            desc=run.config.name,
            disable=not fabric.is_global_zero,
            dynamic_ncols=True,
        ) as bar,
    ):
        while run.step < tc.max_steps:
            over_time = bool(tc.max_minutes) and time.perf_counter() - launched > 60 * tc.max_minutes
            t0 = time.perf_counter()
            # read at the step's collective: Ctrl-C pressed during this step stops after it, not after the next
            loss, grad_norm, stop = train_step(run, batches, lambda: signalled.is_set() or over_time)
            step_seconds += time.perf_counter() - t0
            first_seconds = step_seconds if first_seconds is None else first_seconds
            images += run.images_per_step
            rate = images / step_seconds
            lr = run.optimizer.param_groups[0]["lr"]
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
            if stop and run.step < tc.max_steps:  # a stop request in the last step changes nothing: finish
                status = "interrupted" if signalled.is_set() else "time budget"
            last = run.step == tc.max_steps or stop
            if run.step % tc.log_every == 0 or last:
                epoch, index = divmod(run.samples_seen, dataset_size)
                fabric.log_dict(
                    {
                        "train/loss": loss,
                        "train/lr": lr,
                        "train/img_per_s": rate,
                        "train/epoch": epoch,
                        "train/epoch_index": index,
                        "train/grad_norm": grad_norm,
                    },
                    run.step,
                )
            with torch.random.fork_rng(_rng_devices(fabric)):
                grid = tc.sample_every and (run.step % tc.sample_every == 0 or last) and status != "interrupted"
                due = (tc.eval_every and run.step % tc.eval_every == 0) or (last and status != "interrupted")
                # under FSDP every rank gathers the EMA weights together, then rank 0 samples the grid
                plain = run.inference_model() if grid or (due and evaluate_fn is not None) else None
                if grid and fabric.is_global_zero:
                    grids.append(str(sample_grid(run, out / "samples" / f"step-{run.step:07d}.png", plain)))
                if due:
                    metrics = evaluate(run, val_loader, evaluate_fn, plain)
            training_tf32(tc, fabric.device)  # the grid's and the evaluation's sampling set sample.tf32
            if run.step % tc.ckpt_every == 0 or last:
                ckpt_path = save(run, dataset_size, time.perf_counter() - launched)
            if stop:
                break
    if status != "finished":
        fabric.print(f"stopped at step {run.step} ({status}); checkpoint {ckpt_path}. Continue with --resume.")
    return {
        "status": status,
        "step": run.step,
        "images_seen": run.samples_seen,
        "val_loss": run.val_loss,
        "metrics": metrics,
        "images_per_second": images / step_seconds if step_seconds else None,
        "first_step_seconds": first_seconds,
        "seconds_per_step_after_first": (step_seconds - first_seconds) / (run.step - first_step - 1)
        if run.step - first_step > 1
        else None,
        "steps_this_launch": run.step - first_step,
        "train_seconds": run.train_seconds + time.perf_counter() - launched,
        "checkpoint": str(ckpt_path) if ckpt_path else None,
        "out_dir": str(out),
        "samples": grids,
    }


def train_step(run: Run, batches: Iterator, stop_requested: Callable[[], bool]) -> tuple[float, float, bool]:
    """One optimizer step over train.grad_accum micro-batches. `stop_requested()`, read after the backward passes
    when the step's collective is sent, asks every rank to stop after this step.

    Returns (loss averaged over ranks, gradient norm before clipping, whether any rank asked to stop). A non-finite
    loss or gradient norm raises FloatingPointError before the optimizer step, so no checkpoint holds its weights."""
    fabric, tc = run.fabric, run.config.train
    loss = torch.zeros((), device=fabric.device)
    for micro in range(tc.grad_accum):
        images, labels = fabric.to_device(next(batches))  # (B, C, H, W) in [-1, 1] or cached latents, (B,)
        with fabric.no_backward_sync(run.model, enabled=micro < tc.grad_accum - 1):
            losses = run.diffusion.loss(run.model, run.latents(images), run.labels(labels), generator=run.noise)
            fabric.backward(losses.total / tc.grad_accum)
        loss += losses.total.detach() / tc.grad_accum
    # one collective per step carries the loss, the non-finite check and the stop request of every rank
    flags = torch.stack([loss, (~loss.isfinite()).float(), torch.tensor(float(stop_requested()), device=loss.device)])
    total, bad, stop = fabric.all_reduce(flags, reduce_op="sum").tolist()
    if bad:
        raise FloatingPointError(
            f"optimizer step {run.step + 1}: the training loss is not finite ({loss.item()}); stopped before updating "
            f"the weights. Last good checkpoint (untouched): {_latest(Path(tc.out_dir))}. Fix: lower train.lr, raise "
            "train.warmup_frac, keep train.grad_clip > 0 or use train.precision=32-true, then continue with --resume."
        )
    grad_norm = (
        fabric.clip_gradients(run.model, run.optimizer, max_norm=tc.grad_clip, error_if_nonfinite=False)
        if tc.grad_clip
        else torch.nn.utils.get_total_norm([p.grad for p in run.net.parameters() if p.grad is not None])
    )
    # a finite loss can still back-propagate inf/NaN (overflow); the weights must not take them. 16-mixed is the
    # exception: its grad scaler skips such steps and lowers the scale by design
    grad_norm = sharded.scalar(grad_norm)  # FSDP: a replicated DTensor
    if not math.isfinite(grad_norm) and tc.precision not in ("16-mixed", "16"):
        raise FloatingPointError(
            f"optimizer step {run.step + 1}: the gradient norm is not finite ({grad_norm}) although the loss "
            f"is ({loss.item():.4g}); stopped before updating the weights. Last good checkpoint (untouched): "
            f"{_latest(Path(tc.out_dir))}. Fix: lower train.lr, keep train.grad_clip > 0 or use "
            "train.precision=32-true, then continue with --resume."
        )
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update_parameters(run.net)
    run.step += 1
    run.samples_seen += run.images_per_step
    return total / fabric.world_size, grad_norm, stop > 0


@torch.no_grad()
def validate(run: Run, val_loader) -> dict:
    """Validation losses of the EMA model on the first train.val_batches batches of each rank's share of the held-out
    split, averaged over all ranks. The noise comes from a fixed seed, so evaluations are comparable."""
    fabric, tc = run.fabric, run.config.train
    noise = torch.Generator(fabric.device).manual_seed(_seed(tc.seed, fabric.global_rank, 1))
    sums = torch.zeros(3, device=fabric.device)  # total, diffusion, images
    for _, batch in zip(range(tc.val_batches), val_loader):
        images, labels = fabric.to_device(batch)  # (B, C, H, W), (B,)
        with fabric.autocast():
            losses = run.diffusion.loss(run.eval_model, run.latents(images), run.labels(labels), noise)
        sums += torch.stack(
            [losses.total.float(), losses.diffusion.float(), torch.tensor(1.0, device=sums.device)]
        ) * len(images)
    total, diffusion, n = fabric.all_reduce(sums, reduce_op="sum").tolist()
    return {"loss": total / n, "diffusion": diffusion / n}


def evaluate(run: Run, val_loader, evaluate_fn: EvaluateFn | None, plain: MADFormer | None = None) -> dict:
    """Validation losses and evaluate_fn's metrics at the current step; logged under val/ and eval/. evaluate_fn
    gets `plain` (run.inference_model(): the EMA weights as a plain module on every rank)."""
    val = validate(run, val_loader)
    run.val_loss = val["loss"]
    metrics = {f"val/{k}": v for k, v in val.items()}
    if evaluate_fn is not None:
        model = plain if plain is not None else run.inference_model()
        metrics.update({f"eval/{k}": v for k, v in evaluate_fn(model, run.step).items()})
    run.fabric.log_dict(metrics, run.step)
    return metrics


def sample_grid(run: Run, path: Path, model: MADFormer | None = None) -> Path:
    """A grid of config.sample.num_images samples of the EMA model (fixed seed; `model`: its plain copy), as a PNG."""
    latents = generate(model if model is not None else run.eval_model, run.config)  # (B, C, H, W)
    return save_grid(run.codec.decode(latents), path)


def save(run: Run, dataset_size: int, seconds_this_launch: float) -> Path | None:
    """Checkpoint the run: RNG states are gathered from every rank, global rank 0 writes, everyone waits. Under
    FSDP every rank first writes its shard of the optimizer state, then the weights are gathered to rank 0, which
    writes the single file (full model and EMA weights) and `latest` last."""
    fabric, tc = run.fabric, run.config.train
    rng = [capture_rng(run.noise)]
    if fabric.world_size > 1:
        rng = [None] * fabric.world_size
        torch.distributed.all_gather_object(rng, capture_rng(run.noise))
    path, weights, ema = None, None, None
    if run.sharded:
        name = Path(tc.out_dir) / f"ckpt-{run.step:07d}.safetensors"
        save_shard(sharded.optimizer_shard(run.optimizer), name, fabric.global_rank, fabric.world_size)
        weights = sharded.full_state(run.net)
        ema = sharded.full_state(run.ema.module) if run.ema is not None else None
        fabric.barrier()  # every shard is on disk before the file that names them
    elif fabric.is_global_zero:
        weights = run.net.state_dict()
        ema = run.ema.module.state_dict() if run.ema is not None else None
    if fabric.is_global_zero:
        epoch, index = divmod(run.samples_seen, dataset_size)
        seconds = run.train_seconds + seconds_this_launch
        meta = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "train_seconds": seconds,
            "images_seen": run.samples_seen,
            "tokens_seen": run.samples_seen * run.config.model.grid**2,
            "val_loss": run.val_loss,
            "world_size": fabric.world_size,
            "git_commit": _git_commit(),
            "torch": torch.__version__,
            "strategy": "fsdp" if run.sharded else run.config.train.strategy,
        }
        ckpt = Checkpoint(
            run.config,
            run.step,
            weights,
            ema,
            None if run.sharded else run.optimizer.state_dict(),  # FSDP: in the per-rank shard files
            run.scheduler.state_dict(),
            rng,
            {"samples_seen": run.samples_seen, "epoch": epoch, "index": index, "dataset_size": dataset_size},
            meta,
        )
        path = save_checkpoint(ckpt, tc.out_dir, tc.keep_last)
    fabric.barrier()
    return path
