"""The Fabric training loop: LR schedule, exact resume after SIGKILL, DDP on CPU, learning, signals, NaN, and a
256 px model on latents cached once."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from fluent_fixture import write_fluent, write_tiny_codec
from PIL import Image
from single_thread import one_thread  # noqa: F401 (autouse)

import workbench as wb
import workbench.training.train as tr
from workbench.data.codecs import VAECodec
from workbench.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from workbench.training.train import param_groups, train, wsd_lr

FAST = {
    "model.width": 32,
    "model.heads": 2,
    "model.depth": 2,
    "model.diffusion_depth": 1,
    "train.batch_size": 8,
    "train.val_batches": 1,
    "train.log_every": 2,
    "sample.steps": 2,
    "sample.num_images": 2,
}


def cli_args(out_dir, **overrides) -> list[str]:
    args = [sys.executable, "-m", "workbench", "train", "--preset", "tiny", "--train.out_dir", str(out_dir)]
    for key, value in {**FAST, **overrides}.items():
        args += [f"--{key}", str(value)]
    return args


def launch(args: list[str], log) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)


def finish(proc: subprocess.Popen, log, timeout: float = 240) -> None:
    assert proc.wait(timeout) == 0, log.read_text()


# ---- pure pieces -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("total", [7, 100, 1000])
def test_wsd_schedule_shape(total):
    lr = [wsd_lr(s, total, 0.05, 0.8, 1 / 64) for s in range(total)]
    warm, flat_end = round(0.05 * total), round(0.8 * total)
    assert all(0 < x <= 1 for x in lr)
    assert lr[-1] == pytest.approx(1 / 64)
    assert all(a < b for a, b in zip(lr[:warm], lr[1:warm]))  # strictly rising warmup
    assert all(x == 1.0 for x in lr[warm:flat_end])  # stable phase at the peak
    assert all(a > b for a, b in zip(lr[flat_end:], lr[flat_end + 1 :]))  # strictly decaying tail
    if warm:
        assert lr[warm - 1] == 1.0 and lr[0] == pytest.approx(1 / warm)


def test_weight_decay_only_on_linear_matrices():
    model = wb.build_model(wb.preset("tiny", **{"model.num_classes": 10}))
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert "embed.proj.weight" in decayed and "layers.0.towers.0.qkv.weight" in decayed
    assert not any(n.endswith(".bias") or "norm" in n for n in decayed)
    assert "boi" not in decayed and "class_embed.weight" not in decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


# ---- exact resume ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_identical(tmp_path):
    # eval and sample steps fall between checkpoints: they must not shift any RNG stream; class labels make the
    # model draw label dropout from the global torch RNG, which therefore has to be restored too
    run = {
        "train.max_steps": 12,
        "train.ckpt_every": 3,
        "train.keep_last": 5,
        "train.eval_every": 5,
        "train.sample_every": 7,
        "model.num_classes": 10,
    }
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    logs = {name: tmp_path / f"{name}.log" for name in ("whole", "cut", "resumed")}
    with open(logs["whole"], "w") as lw, open(logs["cut"], "w") as lc:
        uninterrupted = launch(cli_args(whole, **run), lw)
        killed = launch(cli_args(cut, **run), lc)
        deadline = time.time() + 240
        while not (cut / "ckpt-0000003.safetensors").exists():
            assert killed.poll() is None and time.time() < deadline, logs["cut"].read_text()
            time.sleep(0.02)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        finish(uninterrupted, logs["whole"])
    assert load_checkpoint(cut).step < 12, "the run finished before it was killed: the test proved nothing"
    with open(logs["resumed"], "w") as lr_:
        finish(launch(cli_args(cut, **run) + ["--resume"], lr_), logs["resumed"])
    a, b = load_checkpoint(whole / "ckpt-0000012.safetensors"), load_checkpoint(cut / "ckpt-0000012.safetensors")
    for part in ("model", "ema"):
        for k in getattr(a, part):
            assert torch.equal(getattr(a, part)[k], getattr(b, part)[k]), f"{part}.{k}"
    for i, state in a.optimizer["state"].items():
        for k, v in state.items():
            assert torch.equal(v, b.optimizer["state"][i][k]), f"optimizer {i}.{k}"
    assert a.data == b.data and a.scheduler == b.scheduler
    assert torch.equal(a.rng[0]["noise"], b.rng[0]["noise"]) and torch.equal(a.rng[0]["torch"], b.rng[0]["torch"])
    assert a.meta["val_loss"] == b.meta["val_loss"]


# ---- several processes -------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes_write_one_checkpoint_per_interval_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    ddp = {
        "train.devices": 2,
        "train.strategy": "ddp",
        "train.accelerator": "cpu",
        "train.ckpt_every": 2,
        "train.keep_last": 10,
    }
    out, log = tmp_path / "ddp", tmp_path / "ddp.log"
    with open(log, "w") as f:
        finish(launch(cli_args(out, **ddp, **{"train.max_steps": 4}), f), log)
        finish(launch(cli_args(out, **ddp, **{"train.max_steps": 6}) + ["--resume"], f), log)
    records = list_checkpoints(out)
    assert [r.step for r in records] == [2, 4, 6]  # one file per interval, written by rank 0 only
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no stray temporary files
    last = load_checkpoint(out)
    assert last.meta["world_size"] == 2 and len(last.rng) == 2
    assert not torch.equal(last.rng[0]["noise"], last.rng[1]["noise"])  # each rank draws its own noise
    assert last.data["samples_seen"] == 6 * 8 * 2  # steps x batch x ranks: the data position counts both ranks
    assert log.read_text().count('"status": "finished"') == 2  # rank 0 prints the summary, once per launch


# ---- learning, signals, NaN (in process) -------------------------------------------------------------------------
@pytest.mark.slow
def test_short_fashion_mnist_run_lowers_validation_loss(tmp_path):
    cfg = wb.preset(
        "tiny",
        **{
            **FAST,
            "train.max_steps": 80,
            "train.batch_size": 16,
            "train.val_batches": 4,
            "train.ckpt_every": 80,
            "train.eval_every": 50,
            "train.out_dir": str(tmp_path),
        },
    )
    seen = []

    def evaluate_fn(model, step):  # where the metrics engineer plugs in FID
        seen.append((step, model.training, isinstance(model, wb.MADFormer)))
        return {"fake_fid": 100.0 / step}

    summary = train(cfg, evaluate_fn=evaluate_fn)
    assert summary["status"] == "finished" and summary["step"] == 80
    assert summary["val_loss"] < 0.6 * summary["val_loss_initial"], summary
    assert seen == [(50, False, True), (80, False, True)] and summary["metrics"]["eval/fake_fid"] == 1.25
    logs = (tmp_path / "logs" / "version_0" / "metrics.csv").read_text()
    assert "train/loss" in logs and "val/loss" in logs and "eval/fake_fid" in logs  # flushed on a short run
    assert list((tmp_path / "tb" / "version_0").glob("events.out.tfevents.*"))


def test_sigint_saves_a_checkpoint_and_stops(tmp_path):
    cfg = wb.preset(
        "tiny", **{**FAST, "train.max_steps": 1000, "train.ckpt_every": 500, "train.out_dir": str(tmp_path)}
    )

    def interrupt_when_training():
        # until the training loop's own handler takes over Ctrl-C (not merely "not the default": a handler left by
        # other code in this process would swallow the signal before the loop starts)
        while not getattr(signal.getsignal(signal.SIGINT), "__qualname__", "").startswith("stop_on_signals"):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when started in the background by a non-interactive shell
    threading.Thread(target=interrupt_when_training, daemon=True).start()
    summary = train(cfg)
    assert summary["status"] == "interrupted" and 0 < summary["step"] < 500
    assert load_checkpoint(tmp_path).step == summary["step"]
    assert signal.getsignal(signal.SIGINT) is before  # the handler is restored


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"train": 0}
    real_loss = tr.Objective.loss

    def poisoned(self, model, x0, labels=None, generator=None):
        losses = real_loss(self, model, x0, labels, generator)
        if model.training:
            calls["train"] += 1
            if calls["train"] >= 4:
                losses.total = losses.total * float("nan")
        return losses

    monkeypatch.setattr(tr.Objective, "loss", poisoned)
    cfg = wb.preset("tiny", **{**FAST, "train.max_steps": 10, "train.ckpt_every": 2, "train.out_dir": str(tmp_path)})
    with pytest.raises(FloatingPointError, match="optimizer step 4") as err:
        train(cfg)
    assert "ckpt-0000002.safetensors" in str(err.value) and "Fix:" in str(err.value)
    assert [r.step for r in list_checkpoints(tmp_path)] == [2]


def test_fresh_start_refuses_to_overwrite_a_run(tmp_path):
    cfg = wb.preset("tiny", **{**FAST, "train.max_steps": 2, "train.ckpt_every": 2, "train.out_dir": str(tmp_path)})
    train(cfg)
    with pytest.raises(ValueError, match="--resume"):
        train(cfg)
    assert train(cfg, resume=True)["steps_this_launch"] == 0  # already finished: nothing to do
    with pytest.raises(CheckpointError, match="model.depth: 2 -> 3"):
        train(cfg.override(**{"model.depth": 3}), resume=True)


def test_time_budget_stops_with_a_checkpoint_and_resume_continues(tmp_path):
    cfg = wb.preset(
        "tiny",
        **{
            **FAST,
            "train.max_steps": 6,
            "train.ckpt_every": 100,
            "train.max_minutes": 1e-5,
            "train.out_dir": str(tmp_path),
        },
    )
    summary = train(cfg)
    assert summary["status"] == "time budget" and summary["step"] <= 2 and summary["val_loss"] is not None
    assert load_checkpoint(tmp_path).step == summary["step"]
    summary = train(cfg.override(**{"train.max_minutes": 0.0}), resume=True)
    assert summary["status"] == "finished" and summary["step"] == 6 and load_checkpoint(tmp_path).step == 6


# ---- 256 px through a latent codec -------------------------------------------------------------------------------
def test_a_256px_latent_model_trains_on_latents_encoded_once_and_samples(tmp_path, monkeypatch):
    fluent, codec = write_fluent(tmp_path / "fluent"), write_tiny_codec(tmp_path / "codec")
    monkeypatch.setattr(tr, "LATENT_CACHE_DIR", tmp_path / "latents")
    over = {
        **FAST,
        "data.root": str(fluent),
        "data.vae_path": str(codec),
        "train.batch_size": 4,
        "train.max_steps": 2,
        "train.ckpt_every": 2,
        "train.sample_every": 2,
        "train.precision": "32-true",
        "train.accelerator": "cpu",
        "model.num_classes": 8,
    }  # labels: label dropout draws from the global RNG
    first = train(wb.preset("emoji256-T4", **over, **{"train.out_dir": str(tmp_path / "first")}))
    codec_hash = VAECodec(codec, latent_scale=0.0).codec_hash
    caches = sorted(p.name for p in (tmp_path / "latents").iterdir())
    assert len(caches) == 2 and all(n.endswith(f"-{codec_hash}") for n in caches)  # streamed stores: train, val
    assert first["status"] == "finished" and first["step"] == 2
    with Image.open(first["samples"][-1]) as grid:
        assert grid.size == (2 * 258 + 2, 258 + 2)  # two 256x256 samples decoded by the codec
    encoded, real_encode = [], VAECodec.encode
    monkeypatch.setattr(VAECodec, "encode", lambda self, *a, **k: encoded.append(1) or real_encode(self, *a, **k))
    second = train(wb.preset("emoji256-T4", **over, **{"train.out_dir": str(tmp_path / "second")}))
    assert encoded == [] and second["val_loss"] == first["val_loss"]  # the cache found: the encoder never ran
    a, b = load_checkpoint(tmp_path / "first"), load_checkpoint(tmp_path / "second")
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)  # building the cache drew no training RNG
