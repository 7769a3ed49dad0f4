"""Sharded training (FSDP2 through Fabric's ModelParallelStrategy) on 2 CPU processes over gloo: a run killed and
resumed ends bitwise equal to an uninterrupted one, the checkpoint is one gathered file that inference reads, and
each rank holds about half the weights and optimizer state that DDP holds."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import randomize_head
from single_thread import one_thread  # noqa: F401 (autouse)

import workbench as wb
from benchmarks.bench_latents import tiny_sd_vae
from workbench.training import launch, sharded
from workbench.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, load_shard, shard_folder
from workbench.training.train import _strategy

TINY = {
    "model.width": 32,
    "model.heads": 2,
    "model.depth": 2,
    "model.diffusion_depth": 1,
    "train.batch_size": 4,
    "train.val_batches": 1,
    "train.log_every": 2,
    "train.sample_every": 0,
    "train.accelerator": "cpu",
    "train.devices": 2,
    "train.ema_decay": 0.9,
    "sample.steps": 2,
    "sample.num_images": 2,
    "model.num_classes": 10,  # label dropout draws from the global RNG: resume must restore it on every rank
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(out_dir, **overrides) -> list[str]:
    args = [sys.executable, "-m", "workbench", "train", "--preset", "tiny", "--train.out_dir", str(out_dir)]
    for key, value in {**TINY, **overrides}.items():
        args += [f"--{key}", str(value)]
    return args


def start(args: list[str], log, port: int | None = None) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT=str(port or free_port()))
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def finish(proc: subprocess.Popen, log_path, timeout: float = 240) -> dict:
    """Wait for a run; its summary (the JSON line rank 0 prints)."""
    assert proc.wait(timeout) == 0, log_path.read_text()[-4000:]
    lines = [line for line in log_path.read_text().splitlines() if line.startswith('{"rank"')]
    return json.loads(lines[-1])


def test_fsdp_settings_that_cannot_work_name_the_fix():
    cfg = wb.preset("tiny", **{"train.strategy": "fsdp", "train.devices": 2})
    with pytest.raises(ValueError, match="train.ema_decay: 0 with train.strategy='fsdp'.*Fix: set train.ema_decay"):
        _strategy(cfg.override(**{"train.ema_decay": 0.0}))
    with pytest.raises(ValueError, match="train.compile.*Fix: set train.compile=false"):
        _strategy(cfg.override(**{"train.compile": True}))
    with pytest.raises(ValueError, match="16-mixed.*Fix: use 'bf16-mixed'"):
        _strategy(cfg.override(**{"train.precision": "16-mixed"}))
    with pytest.raises(ValueError, match="train.devices: 'auto'.*Fix: set train.devices to a count"):
        _strategy(cfg.override(**{"train.devices": "auto"}))
    strategy = _strategy(cfg.override(**{"train.num_nodes": 2}))
    assert strategy._data_parallel_size == 4 and strategy._tensor_parallel_size == 1  # every process is a shard


@pytest.mark.slow
def test_fsdp_killed_and_resumed_equals_uninterrupted(tmp_path):
    run = {"train.strategy": "fsdp", "train.max_steps": 6, "train.ckpt_every": 2, "train.keep_last": 5}
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    logs = {name: tmp_path / f"{name}.log" for name in ("whole", "cut", "resumed")}
    with open(logs["cut"], "w") as lc, open(logs["whole"], "w") as lw:
        uninterrupted = start(train_args(whole, **run), lw)  # side by side: their start-ups overlap
        killed = start(train_args(cut, **run), lc)
        deadline = time.time() + 240
        while not (cut / "ckpt-0000002.safetensors").exists():
            assert killed.poll() is None and time.time() < deadline, logs["cut"].read_text()[-4000:]
            time.sleep(0.02)
        os.killpg(killed.pid, signal.SIGKILL)  # the launcher and both ranks, as a node failure would
        killed.wait()
        summary = finish(uninterrupted, logs["whole"])
    assert load_checkpoint(cut).step < 6, "the run finished before it was killed: the test proved nothing"
    with open(logs["resumed"], "w") as lr_:
        finish(start(train_args(cut, **run) + ["--resume"], lr_), logs["resumed"])
    a, b = load_checkpoint(whole / "ckpt-0000006.safetensors"), load_checkpoint(cut / "ckpt-0000006.safetensors")
    for part in ("model", "ema"):
        assert getattr(a, part).keys() == getattr(b, part).keys()
        for k in getattr(a, part):
            assert torch.equal(getattr(a, part)[k], getattr(b, part)[k]), f"{part}.{k}"
    for rank in (0, 1):  # each rank's AdamW moments, from its own shard file
        sa, sb = (load_shard(c.path, rank, 2)["state"] for c in (a, b))
        assert sa.keys() == sb.keys() and len(sa) > 0
        for i in sa:
            for k in sa[i]:
                assert torch.equal(sa[i][k], sb[i][k]), f"rank {rank} optimizer {i}.{k}"
    assert a.data == b.data and a.scheduler == b.scheduler and a.meta["val_loss"] == b.meta["val_loss"]
    assert all(
        torch.equal(x["noise"], y["noise"]) and torch.equal(x["torch"], y["torch"]) for x, y in zip(a.rng, b.rng)
    )
    assert a.meta["strategy"] == "fsdp" and a.optimizer is None and len(a.rng) == 2
    # the gathered file is what inference reads; old checkpoints leave with their shard folders
    model, _ = wb.load_for_inference(whole)
    assert all(torch.equal(v, a.ema[k]) for k, v in model.state_dict().items())  # the EMA weights, whole
    assert [r.step for r in list_checkpoints(whole)] == [2, 4, 6]
    assert sorted(p.name for p in whole.glob("*.shards")) == [f"ckpt-000000{s}.shards" for s in (2, 4, 6)]
    assert len(summary["state_bytes_per_rank"]) == 2


@pytest.mark.slow
def test_fsdp_holds_at_most_six_tenths_of_ddp_state_per_rank(tmp_path):
    runs = {}
    for strategy in ("ddp", "fsdp"):  # side by side: their start-ups overlap
        out, log = tmp_path / strategy, tmp_path / f"{strategy}.log"
        args = train_args(out, **{"train.strategy": strategy, "train.max_steps": 1, "train.ckpt_every": 1})
        with open(log, "w") as f:
            runs[strategy] = (start(args, f), log)
    sizes = {strategy: finish(*run)["state_bytes_per_rank"] for strategy, run in runs.items()}
    ddp, fsdp = sizes["ddp"], sizes["fsdp"]
    assert ddp[0] == ddp[1] > 0  # DDP: a full copy of weights, EMA and AdamW moments on every rank
    ratio = max(fsdp) / ddp[0]
    print(f"state per rank at 2 ranks: fsdp {fsdp} bytes, ddp {ddp} bytes, ratio {ratio:.3f}")
    assert ratio <= 0.6
    weights = sum(p.numel() for p in wb.build_model(wb.preset("tiny", **TINY)).parameters()) * 4
    # weights + EMA + two AdamW moments (fp32) of the parameters that get gradients, and the step counters
    assert 3 * weights < ddp[0] <= 4 * weights + 4096


def test_a_missing_or_damaged_shard_is_named_with_the_fix(tmp_path):
    from workbench.training.checkpoint import save_shard

    ckpt = tmp_path / "ckpt-0000002.safetensors"
    save_shard({"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": []}, ckpt, 0, 2)
    assert load_shard(ckpt, 0, 2)["state"][0]["exp_avg"].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(CheckpointError, match="rank-00001-of-00002.safetensors: no such shard.*Fix: resume with"):
        load_shard(ckpt, 1, 2)
    shard = shard_folder(ckpt) / "rank-00000-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="rank-00000-of-00002.safetensors is unreadable.*checksum"):
        load_shard(ckpt, 0, 2)


def test_activation_checkpointing_keeps_the_gradients_and_unused_parameters_are_measured():
    cfg = wb.preset("tiny", **{"model.width": 32, "model.heads": 2, "model.depth": 2, "model.diffusion_depth": 1})
    from workbench.core.objectives import build_objective

    x = torch.randn(2, cfg.model.latent_channels, cfg.model.latent_size, cfg.model.latent_size)
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)  # the same weights both times
        model = wb.build_model(cfg)
        randomize_head(model)  # zero-initialised: no gradient would reach the layers
        if recompute:
            sharded.checkpoint_layers(model)
        build_objective(cfg.diffusion, cfg.model).loss(
            model, x, generator=torch.Generator().manual_seed(0)
        ).total.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])
    assert any(grads[1][n].abs().sum() > 0 for n in grads[1] if n.startswith("layers.0."))
    unused = sharded.unused_parameters(cfg.model, cfg.diffusion)
    # the last layer's context tower gives keys and values only: its MLP never gets a gradient, the first layer's does
    assert "layers.1.towers.0.mlp.w3.weight" in unused and not any(n.startswith("layers.0.") for n in unused)


# ---- multi-node launches -----------------------------------------------------------------------------------------
def test_launch_plans_keep_the_global_batch_and_refuse_what_cannot_work(monkeypatch):
    cfg = wb.preset("imagenet256-paper")
    plan = launch.plan_launch(cfg, "imagenet256-paper", 4, 8, "fsdp")
    tc = cfg.train
    assert plan.micro_batch * plan.grad_accum * plan.world_size == tc.batch_size * tc.grad_accum * tc.devices
    words = launch.torchrun_command(plan)
    assert words[:8] == [
        "torchrun",
        "--nnodes",
        "4",
        "--nproc-per-node",
        "8",
        "--node-rank",
        "$NODE_RANK",
        "--master-addr",
    ]
    script = launch.slurm_script(plan)
    assert "#SBATCH --nodes=4" in script and "--node-rank $SLURM_NODEID" in script and "--resume'" in script
    with pytest.raises(ValueError, match="world size 3 x 7 = 21 does not divide the global batch.*Fix: use a world"):
        launch.plan_launch(cfg, "imagenet256-paper", 3, 7, "fsdp")
    with pytest.raises(ValueError, match="train.ema_decay: 0 with train.strategy='fsdp'"):
        launch.plan_launch(cfg.override(**{"train.ema_decay": 0.0}), "x", 4, 8, "fsdp")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="no master address.*Fix: pass --master-addr HOST"):
        launch.run_node(plan, 1, None, 29500)


@pytest.mark.slow
def test_two_nodes_on_localhost_train_checkpoint_and_resume(tmp_path):
    out, port = tmp_path / "run", free_port()
    settings = {k: v for k, v in TINY.items() if k.split(".")[1] not in ("devices", "accelerator")}

    def both_nodes(max_steps: int) -> None:
        sets = [f"{k}={v}" for k, v in {**settings, "train.out_dir": out, "train.max_steps": max_steps}.items()]
        # the paper presets' settings ride along: bf16 autocast with bf16 all-gathers, activation checkpointing
        sets += ["train.ckpt_every=2", "train.precision=bf16-mixed", "train.activation_checkpointing=true"]
        procs, logs = [], []
        for rank in (0, 1):
            logs.append(tmp_path / f"node{rank}-{max_steps}.log")
            args = [sys.executable, "-m", "workbench", "launch", "--preset", "tiny", "--nodes", "2"]
            args += ["--gpus-per-node", "1", "--strategy", "fsdp", "--accelerator", "cpu", "--node-rank", str(rank)]
            args += ["--master-addr", "127.0.0.1", "--master-port", str(port), "--set", *sets]
            with open(logs[-1], "w") as f:
                procs.append(start(args, f))
        for proc, log in zip(procs, logs):
            assert proc.wait(240) == 0, log.read_text()[-4000:]

    both_nodes(2)
    both_nodes(4)  # the same command again continues from the checkpoint (launches always pass --resume)
    assert [r.step for r in list_checkpoints(out)] == [2, 4]
    last = load_checkpoint(out)
    assert last.meta["world_size"] == 2 and last.meta["strategy"] == "fsdp" and len(last.rng) == 2
    assert last.data["samples_seen"] == 4 * 4 * 2  # steps x batch x (2 nodes x 1 process)


# ---- end to end: an ImageNet-layout folder through an SD-VAE-architecture AutoencoderKL ---------------------------
def write_imagenet_folder(root, classes=("n01440764", "n01443537", "n01484850"), per_class=40):
    """ImageNet's layout at toy size: one sub-folder per class (WordNet ids), JPEG/PNG files of several sizes."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for c, wnid in enumerate(classes):
        (root / wnid).mkdir(parents=True)
        for i in range(per_class):
            side = 64 + 16 * (i % 3)
            base = torch.zeros(3, side, side) + torch.tensor([c == 0, c == 1, c == 2]).float().view(3, 1, 1) * 160
            pixels = (base + torch.rand(3, side, side, generator=g) * 90).byte().permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(root / wnid / f"{wnid}_{i}.{'JPEG' if i % 2 else 'png'}")
    return root


@pytest.mark.slow
def test_imagenet_layout_encodes_trains_fsdp_and_samples_on_two_processes(tmp_path):
    from PIL import Image

    root, vae = write_imagenet_folder(tmp_path / "imagenet"), tiny_sd_vae(tmp_path / "sd-vae")
    out, cache = tmp_path / "run", tmp_path / "cache"
    run = {
        "data.dataset": "folder",
        "data.root": root,
        "data.vae_path": vae,
        "data.image_size": 64,
        "data.cache_dir": cache,
        "data.num_workers": 1,
        "model.latent_size": 8,
        "model.patch_size": 2,
        "model.num_classes": 3,
        "train.strategy": "fsdp",
        "train.max_steps": 2,
        "train.ckpt_every": 2,
        "train.sample_every": 2,
    }
    log = tmp_path / "train.log"
    with open(log, "w") as f:
        args = train_args(out, **run)
        args[args.index("tiny")] = "emoji256-T4"  # a latent preset: the codec encodes, the model sees latents
        summary = finish(start(args, f), log)
    stores = sorted((cache / "latents").iterdir())
    assert len(stores) == 2  # train (with flips) and val
    assert all(
        sorted(p.name for p in s.iterdir() if p.is_dir()) == ["rank-000-of-002", "rank-001-of-002"] for s in stores
    )
    assert "encoded by 2 processes" in log.read_text() and len(list((cache / "index").iterdir())) == 1
    assert summary["status"] == "finished" and summary["val_loss"] > 0 and summary["samples"]
    grid = tmp_path / "grid.png"
    sample = [sys.executable, "-m", "workbench", "sample", "--checkpoint", str(out), "--num-images", "2"]
    done = subprocess.run([*sample, "--steps", "2", "--out", str(grid)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    with Image.open(grid) as im:
        assert im.size[1] >= 64  # 64 px images decoded by the SD-VAE-architecture codec
    # and scored: Inception features of the decoded samples against statistics computed from the folder itself,
    # kept in tmp_path (eval's default would cache them in the repository's data/reference/)
    from workbench.evaluation.evaluate import build_reference

    build_reference(wb.load_for_inference(out)[1].data, "inception", folder=tmp_path / "reference")
    (reference,) = (tmp_path / "reference").glob("*.safetensors")
    report = tmp_path / "eval.json"
    scored = [*sample[:3], "eval", *sample[4:6], "--num-samples", "10", "--steps", "2", "--no-flop-count"]
    scored += ["--reference", str(reference)]
    done = subprocess.run([*scored, "--out", str(report)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads(report.read_text())
    assert math.isfinite(scores["fid"]) and scores["fid"] > 0 and 0 <= scores["precision"] <= 1
    assert scores["n"] == 10 and scores["extractor"].startswith("inception")
