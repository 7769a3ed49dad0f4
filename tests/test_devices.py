"""Devices: one helper resolves a device name for every entry point (CLI sample and eval, generate, the app) and
refuses an unknown or missing one in one line that names the fix; the sampler keeps every tensor of a run on the
run's device, which a run on PyTorch's "meta" device checks without a GPU; so do the feature extractors, the
reference statistics and the live FID, which follow the device of the images (or the one they are given); bf16
sampling stays close to fp32; train.tf32 reaches torch's TF32 flags; `--attention` switches the backend of
`sample` and `eval`."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize_head
from PIL import Image
from single_thread import one_thread  # noqa: F401 (autouse)

import workbench as wb
from workbench.__main__ import main as cli
from workbench.core import attention
from workbench.core.config import Config, TrainConfig
from workbench.core.devices import resolve_device
from workbench.data.codecs import build_codec
from workbench.evaluation import features, references, report, sharded
from workbench.evaluation.features import ClassifierFeatures, InceptionFeatures, extract_features, extractor_device
from workbench.evaluation.metrics import FeatureOptions, LiveFID, RealImages, ReferenceStats, reference_stats
from workbench.sampling.sampler import frame
from workbench.training.checkpoint import Checkpoint, save_checkpoint
from workbench.training.train import training_tf32
from workbench.ui.session import Loaded, SampleRun, Settings

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


# ---- feature extractors, reference statistics and the live FID follow the device --------------------------------
class CountedClassifier(ClassifierFeatures):
    """A fresh Fashion-MNIST classifier (never the shared one: a module moved to "meta" loses its weights) that
    counts how often it is moved."""

    moves = 0

    def _apply(self, fn, recurse=True):
        self.moves += 1
        return super()._apply(fn, recurse)


@pytest.fixture
def on_meta(monkeypatch):
    """Features stay on the "meta" device instead of coming back to the CPU (a meta tensor holds no values to copy
    out), so a whole extraction runs there and any CPU tensor it meets raises."""
    monkeypatch.setattr(features, "HOST", torch.device("meta"))


def images(n: int, channels: int = 1, side: int = 32, device: str = "cpu") -> torch.Tensor:
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(n)).mul(2).sub(1).to(device)


def test_extract_features_runs_where_the_images_are_and_returns_cpu_float32():
    ext = CountedClassifier()
    x = images(5)
    feats = extract_features(ext, x, batch_size=2)
    assert feats.device.type == "cpu" and feats.dtype == torch.float32 and feats.shape == (5, ext.num_features)
    with torch.no_grad():
        assert torch.allclose(feats, ext(x), atol=1e-5) and ext.moves == 0  # already on the CPU: never moved


def test_extract_features_moves_the_extractor_once_to_the_batches_device(on_meta):
    ext = CountedClassifier()
    feats = extract_features(ext, [images(2, device="meta") for _ in range(3)], batch_size=1)
    assert feats.shape == (6, ext.num_features) and feats.device.type == "meta"
    assert extractor_device(ext).type == "meta" and ext.moves == 1  # moved before the first batch, not per batch
    again = CountedClassifier()  # CPU images, told where to run: every batch follows the extractor there
    assert extract_features(again, images(4), batch_size=2, device="meta").shape == (4, ext.num_features)
    assert extractor_device(again).type == "meta" and again.moves == 1


@pytest.mark.parametrize("channels, side", [(1, 32), (3, 48)])
def test_inception_runs_on_the_device_of_its_weights_and_images(on_meta, channels, side):
    net = InceptionFeatures(device="meta")  # the TorchScript loaded straight onto the device: its graph holds
    feats = extract_features(net, images(2, channels, side, device="meta"))  # no CPU constant, nor do the resizes
    assert feats.shape == (2, 2048) and feats.device.type == "meta"


def _spy_on_reference_features(monkeypatch) -> list:
    """references.extract_features, run for real (on meta: a CPU tensor in the run raises), returning CPU zeros so
    the feature log can be written; records (the device asked for, where the extractor ran)."""
    calls = []

    def spy(extractor, batch, batch_size=32, device=None):
        feats = extract_features(extractor, batch, batch_size, device)
        calls.append((device, extractor_device(extractor).type))
        return torch.zeros(feats.shape)

    monkeypatch.setattr(references, "extract_features", spy)
    return calls


def test_reference_statistics_are_computed_on_the_device_asked_or_where_the_extractor_is(
    on_meta, monkeypatch, tmp_path
):
    calls = _spy_on_reference_features(monkeypatch)
    real = RealImages("fashion-mnist", "test")
    options = FeatureOptions(batch_size=4, log_dir=tmp_path / "log", device="meta")
    stats = reference_stats(real, CountedClassifier(), n=8, cache_dir=tmp_path / "a", options=options)
    assert stats.count == 8 and calls == [("meta", "meta")] * 2
    calls.clear()
    placed = CountedClassifier().to("meta")  # as eval places it beside the model: the default follows it
    options = FeatureOptions(batch_size=4, log_dir=tmp_path / "log2")
    reference_stats(real, placed, n=8, cache_dir=tmp_path / "b", options=options)
    assert [d.type for d, _ in calls] == ["meta", "meta"] and {ran for _, ran in calls} == {"meta"}


def _reference_of(ext: torch.nn.Module) -> ReferenceStats:
    card = {"name": "test", "extractor": ext.name, "extractor_id": ext.id}
    return ReferenceStats.from_features(torch.randn(16, ext.num_features, dtype=torch.float64), card)


def test_live_fid_extracts_on_its_device_or_the_images(on_meta):
    ext = CountedClassifier()
    live = LiveFID(_reference_of(ext), ext, device="meta")
    live.update(images(2))  # CPU images (the playground keeps a CPU copy to draw): featurised on the device
    assert live.n == 2 and extractor_device(ext).type == "meta"
    ext = CountedClassifier()
    live = LiveFID(_reference_of(ext), ext)  # no device: the images' own (the app's frames stay on the device)
    live.update(images(3, device="meta"))
    assert live.n == 3 and extractor_device(ext).type == "meta" and ext.moves == 1


def test_the_playgrounds_live_fid_runs_beside_the_model(on_meta, monkeypatch):
    cfg = wb.preset("tiny", **{"model.num_blocks": 4})
    ext = CountedClassifier()
    monkeypatch.setattr(features, "feature_extractor", lambda name: ext)  # the fresh one stands in for the shared
    loaded = Loaded.from_model(wb.build_model(cfg).eval().to("meta"), cfg)
    run = SampleRun(loaded, Settings(depth=1, steps=2, sampler="ddpm", seed=0, num_images=2), _reference_of(ext))
    run.images = images(2)  # what run() draws: a CPU copy of the last frame
    scored = []
    monkeypatch.setattr(LiveFID, "compute", lambda live: scored.append(live))  # statistics need values: skipped
    run._score()
    assert loaded.device.type == "meta" and len(scored) == 1 and scored[0].n == 2
    assert extractor_device(ext).type == "meta"


# ---- train.tf32 -----------------------------------------------------------------------------------------------------
def test_train_tf32_round_trips_is_validated_and_reaches_torchs_flags():
    assert Config().train.tf32 is True
    off = wb.preset("tiny", **{"train.tf32": "false"})
    assert off.train.tf32 is False and Config.from_yaml(off.to_yaml()).train.tf32 is False
    with pytest.raises(ValueError, match="train.tf32: expected true/false"):
        wb.preset("tiny", **{"train.tf32": "sometimes"})
    with pytest.raises(ValueError, match="train.tf32"):
        TrainConfig(tf32="yes")
    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # noqa: E731
    before = flags()
    try:
        for enabled in (False, True, False):
            training_tf32(TrainConfig(tf32=enabled), torch.device("cuda"))  # sets torch's flags; needs no GPU
            assert flags() == (enabled, enabled)
        training_tf32(TrainConfig(tf32=True), torch.device("cpu"))  # no effect on a CPU run
        assert flags() == (False, False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# ---- --attention on the command line ------------------------------------------------------------------------------
@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """A 2-layer checkpoint; v-prediction keeps its untrained 2-step samples in range (epsilon's saturate)."""
    tiny = {"model.width": 32, "model.heads": 2, "model.depth": 2, "model.diffusion_depth": 1}
    cfg = wb.preset("tiny", **tiny, **{"diffusion.prediction": "v_prediction"})
    model = wb.build_model(cfg)
    randomize_head(model)
    save_checkpoint(Checkpoint(cfg, 0, model.state_dict(), model.state_dict()), tmp_path / "run")
    return tmp_path / "run"


def test_sample_with_flex_attention_gives_the_sdpa_images(tiny_checkpoint, tmp_path, monkeypatch):
    calls = []
    real_flex = attention.flex
    monkeypatch.setattr(attention, "flex", lambda *a: calls.append(1) or real_flex(*a))
    grids = {}
    for backend in ("sdpa", "flex"):
        out = tmp_path / f"{backend}.png"
        argv = ["sample", "--checkpoint", str(tiny_checkpoint), "--num-images", "2", "--steps", "2", "--seed", "1"]
        assert cli([*argv, "--attention", backend, "--out", str(out)]) == 0
        grids[backend] = (np.asarray(Image.open(out), dtype=int), len(calls))
    (sdpa, sdpa_calls), (flex, flex_calls) = grids["sdpa"], grids["flex"]
    assert sdpa_calls == 0 < flex_calls  # the switch took effect: FlexAttention ran only under --attention flex
    assert 0 < (sdpa % 255 != 0).mean()  # grey levels, not a saturated black-and-white grid
    assert sdpa.shape == flex.shape and np.abs(sdpa - flex).max() <= 1 and (sdpa != flex).mean() < 0.01


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_bad_attention_backend_is_refused_naming_the_choices(command, tiny_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli([command, "--checkpoint", str(tiny_checkpoint), "--attention", "flash"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --attention: invalid choice: 'flash'" in err
    assert "'sdpa'" in err and "'flex'" in err and "Traceback" not in err


def test_eval_attention_reaches_the_loaded_model(tiny_checkpoint, tmp_path, monkeypatch):
    requests = []
    monkeypatch.setattr(sharded, "evaluate_sharded", lambda ckpt, request, *a, **k: requests.append(request))
    argv = ["eval", "--checkpoint", str(tiny_checkpoint), "--attention", "flex", "--out", str(tmp_path / "r.json")]
    assert cli(argv) == 0 and requests[0].attention == "flex"  # a None report: rank 0 elsewhere writes it
    loaded = report.load_for_eval(tiny_checkpoint, requests[0])
    assert loaded.config.model.attention == loaded.model.cfg.attention == "flex"
