"""Checkpoints: exact round trip, atomic writes, rotation, clear errors, inference loading and export."""

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from single_thread import one_thread  # noqa: F401 (autouse)

import workbench as wb
import workbench.training.checkpoint as ck
from workbench.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    capture_rng,
    check_architecture,
    export_for_inference,
    list_checkpoints,
    load_checkpoint,
    load_for_inference,
    restore_rng,
    save_checkpoint,
)

SMALL = {"model.width": 32, "model.heads": 2, "model.depth": 2, "model.diffusion_depth": 1}


def trained_state(step: int = 1) -> Checkpoint:
    """A checkpoint after one real AdamW step, with EMA weights that differ from the model's."""
    cfg = wb.preset("tiny", **SMALL)
    model = wb.build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    loss = wb.core.diffusion.Diffusion(cfg.diffusion, cfg.model).loss(model, torch.randn(2, 1, 32, 32)).total
    loss.backward()
    opt.step()
    sched.step()
    ema = {k: v + 0.01 * torch.randn_like(v) for k, v in model.state_dict().items()}
    noise = torch.Generator().manual_seed(5)
    return Checkpoint(
        cfg,
        step,
        model.state_dict(),
        ema,
        opt.state_dict(),
        sched.state_dict(),
        [capture_rng(noise)],
        {"samples_seen": 16 * step, "epoch": 0, "index": 16 * step},
        {"train_seconds": 1.5},
    )


def assert_tree_equal(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_tree_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_tree_equal(x, y)
    else:
        assert a == b


def test_round_trip_is_exact(tmp_path):
    state = trained_state()
    path = save_checkpoint(state, tmp_path)
    back = load_checkpoint(tmp_path)  # the folder resolves through `latest`
    assert back.path == path and back.config == state.config and back.step == 1 and back.data == state.data
    for part in ("model", "ema", "optimizer", "scheduler", "rng"):
        assert_tree_equal(getattr(state, part), getattr(back, part))
    # the optimizer state loads into a fresh optimizer (int parameter ids survive the JSON header)
    model = wb.build_model(state.config)
    torch.optim.AdamW(model.parameters()).load_state_dict(back.optimizer)


def test_rng_capture_restores_every_stream():
    noise = torch.Generator().manual_seed(3)
    state = capture_rng(noise)

    def draws():
        return (torch.rand(3), np.random.rand(3), random.random(), torch.randn(3, generator=noise))

    first = draws()
    restore_rng(state, noise)
    for a, b in zip(first, draws()):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    first = save_checkpoint(trained_state(1), tmp_path)
    good = first.read_bytes()

    def dies_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 1000)  # half-written file, then the disk fills up
        raise OSError("No space left on device")

    monkeypatch.setattr(ck, "save_file", dies_midway)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(trained_state(2), tmp_path)
    assert first.read_bytes() == good
    assert (tmp_path / "latest").read_text().strip() == first.name
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, "latest"]  # no partial or temporary file
    assert load_checkpoint(tmp_path).step == 1


def test_keep_last_rotation(tmp_path):
    state = trained_state()
    for step in range(1, 6):
        state.step = step
        save_checkpoint(state, tmp_path, keep_last=2)
    assert [r.step for r in list_checkpoints(tmp_path)] == [4, 5]
    assert (tmp_path / "latest").read_text().strip() == "ckpt-0000005.safetensors"


def test_truncated_checkpoint_names_file_and_previous_one(tmp_path):
    state = trained_state()
    save_checkpoint(state, tmp_path)
    state.step = 2
    newest = save_checkpoint(state, tmp_path)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    msg = str(err.value)
    assert str(newest) in msg and "truncated" in msg and "ckpt-0000001.safetensors" in msg and "Fix:" in msg


def test_wrong_format_and_missing_file_errors(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(tmp_path / "model.pt")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(CheckpointError, match="not a workbench checkpoint"):
        load_checkpoint(tmp_path / "weights.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint in this folder"):
        load_checkpoint(tmp_path)


def test_other_architecture_lists_differing_fields(tmp_path):
    save_checkpoint(trained_state(), tmp_path)
    saved = load_checkpoint(tmp_path)
    check_architecture(saved, saved.config.override(**{"train.max_steps": 5}))  # training settings may change
    with pytest.raises(CheckpointError) as err:
        check_architecture(saved, saved.config.override(**{"model.depth": 3, "model.width": 64}))
    msg = str(err.value)
    assert "model.depth: 2 -> 3" in msg and "model.width: 32 -> 64" in msg and "Fix:" in msg
    assert "heads" not in msg


def test_load_for_inference_gives_identical_samples(tmp_path):
    state = trained_state()
    save_checkpoint(state, tmp_path)
    for use_ema, weights in ((True, state.ema), (False, state.model)):
        reference = wb.build_model(state.config)
        reference.load_state_dict(weights)
        model, cfg = load_for_inference(tmp_path, use_ema=use_ema)
        assert cfg == state.config and not model.training
        want = wb.generate(reference, cfg, num_images=2, steps=3, seed=7)
        assert torch.equal(wb.generate(model, cfg, num_images=2, steps=3, seed=7), want)


def test_export_half_precision_with_budget_and_report(tmp_path):
    state = trained_state(step=3)
    src = save_checkpoint(state, tmp_path / "run")
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"fid": 12.5}))
    out = export_for_inference(src, tmp_path / "ship" / "tiny.safetensors", eval_report=report)
    assert out.stat().st_size < src.stat().st_size / 4  # fp16 EMA weights only
    exported = load_checkpoint(out)
    assert exported.kind == "export" and exported.optimizer is None and exported.rng == []
    assert all(v.dtype == torch.float16 for v in exported.model.values())
    assert exported.meta["eval_report"] == {"fid": 12.5} and exported.meta["train_seconds"] == 1.5
    model, _ = load_for_inference(out)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state.ema[k].half().float())
    [info] = list_checkpoints(out.parent)
    assert (info.name, info.step, info.N, info.D, info.T, info.images_seen, info.kind) == (
        "tiny",
        3,
        2,
        1,
        4,
        48,
        "export",
    )


def test_export_can_ship_the_trained_weights_with_a_flow_time_shift(tmp_path):
    """The zoo's sampling picks: the trained weights instead of the EMA, labelled as such, and a flow model's time
    shift in the shipped config; an epsilon model's shift is refused before anything is written."""
    state = trained_state(step=3)
    flow = Checkpoint(
        state.config.override(**{"diffusion.prediction": "flow", "sample.sampler": "euler"}),
        state.step,
        state.model,
        state.ema,
        data=state.data,
        meta=state.meta,
    )
    src = save_checkpoint(flow, tmp_path / "run")
    out = export_for_inference(src, tmp_path / "ship" / "raw.safetensors", use_ema=False, flow_shift=2.0)
    model, cfg = load_for_inference(out)
    assert load_checkpoint(out).meta["weights"] == "raw" and cfg.sample.flow_shift == 2.0
    assert cfg.override(**{"sample.flow_shift": 1.0}) == flow.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, state.model[k].half().float())
    assert load_checkpoint(export_for_inference(src, tmp_path / "ship" / "ema.safetensors")).meta["weights"] == "ema"
    with pytest.raises(ValueError, match="only a flow model.*Fix: export it without one"):
        export_for_inference(
            save_checkpoint(state, tmp_path / "eps"), tmp_path / "ship" / "eps.safetensors", flow_shift=2.0
        )
    assert not (tmp_path / "ship" / "eps.safetensors").exists()


def test_export_ships_the_named_sampler_and_nothing_else_of_the_config(tmp_path):
    state = trained_state(step=3)  # an eps model: its config says ddim
    src = save_checkpoint(state, tmp_path / "run")
    out = export_for_inference(src, tmp_path / "ship" / "a.safetensors", sample={"sampler": "dpm++2m", "steps": 7})
    model, cfg = load_for_inference(out)
    assert (cfg.sample.sampler, cfg.sample.steps) == ("dpm++2m", 7)
    assert (
        cfg.override(**{"sample.sampler": state.config.sample.sampler, "sample.steps": state.config.sample.steps})
        == state.config
    )
    with pytest.raises(
        ValueError, match="sample.sampler"
    ):  # a flow-only or unknown sampler is refused, nothing written
        export_for_inference(src, tmp_path / "ship" / "b.safetensors", sample={"sampler": "heun"})
    assert not (tmp_path / "ship" / "b.safetensors").exists()
