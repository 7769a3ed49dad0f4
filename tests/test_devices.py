"""Devices: one helper resolves a device name for every entry point (CLI sample and eval, generate, the app) and
refuses an unknown or missing one in one line that names the fix; the sampler keeps every tensor of a run on the
run's device, which a run on PyTorch's "meta" device checks without a GPU; bf16 sampling stays close to fp32."""

from pathlib import Path

import pytest
import torch
from conftest import randomize_head

import workbench as wb
from workbench.__main__ import main as cli
from workbench.core.devices import resolve_device
from workbench.data.codecs import build_codec
from workbench.sampling.sampler import frame

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = not torch.cuda.is_available()


def test_resolve_device_names_the_fix_in_one_line():
    assert resolve_device(None) == torch.device("cpu") == resolve_device("cpu")
    with pytest.raises(ValueError, match=r"^device: unknown device 'gpu0'\. Fix: use one of cpu, cuda") as err:
        resolve_device("gpu0")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="'meta' is not a device the workbench runs on. Fix: use cpu, cuda or mps"):
        resolve_device("meta")
    if NO_CUDA:
        with pytest.raises(ValueError, match=r"device: cuda:1 is not available here .*Fix: use --device cpu"):
            resolve_device("cuda:1")


@pytest.mark.skipif(not NO_CUDA, reason="a machine with CUDA has the device")
def test_generate_refuses_a_missing_device_before_any_work():
    cfg = wb.preset("tiny", **{"model.num_blocks": 4})
    model = wb.build_model(cfg)
    with pytest.raises(ValueError, match="device: cuda is not available here.*Fix"):
        wb.generate(model, cfg, num_images=1, steps=2, device="cuda")


@pytest.mark.skipif(not NO_CUDA, reason="a machine with CUDA has the device")
@pytest.mark.parametrize("command", ["sample", "eval"])
def test_cli_refuses_a_missing_device_in_one_line(command, capsys):
    checkpoint = REPO / "data" / "checkpoints" / "vertical" / "D1.safetensors"
    if not checkpoint.is_file():
        pytest.skip("the shipped checkpoint is not in this checkout")
    with pytest.raises(SystemExit) as exit_:
        cli([command, "--checkpoint", str(checkpoint), "--device", "cuda"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"usage: python -m workbench {command}") or "error: argument --device" in err[-1]
    line = next(x for x in err if "error:" in x)
    assert "argument --device: device: cuda is not available here" in line and "Fix: use --device cpu" in line
    assert "Traceback" not in "\n".join(err)


@pytest.mark.skipif(not NO_CUDA, reason="a machine with CUDA has the device")
def test_the_app_refuses_a_missing_device_in_one_line():
    from app.main import device_from  # pytest puts the repository root on the path

    assert device_from(["--zoo", "x"]) == "cpu"
    with pytest.raises(ValueError, match="device: cuda is not available here.*Fix"):
        device_from(["--device", "cuda"])


@pytest.mark.parametrize("over", [{}, {"model.num_classes": 3, "sample.cfg_scale": 2.0}, {"sample.context_noise": 0.2}])
@pytest.mark.parametrize("use_cache", [True, False])
def test_a_run_keeps_every_tensor_on_the_models_device(over, use_cache):
    """On the "meta" device an op that mixes it with a CPU tensor raises, as one that mixes CUDA and CPU does:
    the sampler (cached and recomputing, guided, with context noise, a stochastic sampler) and the frames of the
    pixel codec run there from end to end. Noise drawn on the CPU must be moved before it meets the canvas."""
    cfg = wb.preset("tiny", **{"model.num_blocks": 4, **over})
    model = wb.build_model(cfg).eval().to("meta")  # weights without values: shapes and devices only
    codec = build_codec(cfg.data).to("meta")
    request = wb.sample_request(cfg, num_images=2, steps=2, sampler="ddpm", use_cache=use_cache)
    blocks = [e for e in wb.generate_events(model, cfg, request) if e.kind == "block"]
    assert len(blocks) == 4 and blocks[-1].x_t.device.type == "meta"
    assert frame(codec, blocks[1]).device.type == "meta" and frame(codec, blocks[1]).shape == (2, 1, 32, 32)
    with pytest.raises(RuntimeError, match="device"):  # the check is live: a CPU tensor meeting the run raises
        blocks[-1].x_t + torch.ones(blocks[-1].x_t.shape)


def test_bf16_sampling_runs_under_autocast_and_stays_close_to_fp32():
    cfg = wb.preset("tiny", **{"model.num_blocks": 4})
    model = wb.build_model(cfg).eval()
    randomize_head(model, std=0.2)
    fp32 = wb.generate(model, cfg, num_images=2, steps=4, seed=0)
    bf16 = wb.generate(model, cfg, num_images=2, steps=4, seed=0, precision="bf16")
    assert bf16.dtype == torch.float32  # the scheduler and the canvas stay fp32
    gap = float((bf16 - fp32).abs().max())
    assert 0 < gap < 0.1 * float(fp32.abs().max()), gap
