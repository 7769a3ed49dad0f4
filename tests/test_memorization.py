"""Memorisation in the library: on a stand-in Fluent people set, "generations" that are training images through a
slightly noisy codec are counted as copies (each nearest its own original), held-out emoji as new; the copy share
comes with its interval, FID against the held-out split carries its too-small note, and the grid pairs each
generation with its nearest training image."""

import pytest
import torch
from fluent_fixture import write_fluent
from PIL import Image
from single_thread import one_thread  # noqa: F401 (autouse)

import workbench as wb
from workbench.core.config import DataConfig
from workbench.data.datasets import build_dataset
from workbench.evaluation import memorization as mem


class NoisyCodec:
    """Reconstructions = originals + small noise, a fresh draw per call."""

    def __init__(self):
        self.gen = torch.Generator().manual_seed(1)

    def encode(self, x):
        return x + 0.05 * torch.randn(x.shape, generator=self.gen)

    def decode(self, z):
        return z


def test_wilson_interval():
    low, high = mem.wilson(10, 100)
    assert low < 0.1 < high and (round(low, 3), round(high, 3)) == (0.061, 0.160)  # 90% Wilson, worked by hand
    assert mem.wilson(0, 20)[0] == 0 and mem.wilson(20, 20)[1] == pytest.approx(1)


def test_copies_count_and_new_images_do_not(tmp_path, monkeypatch):
    fluent = write_fluent(tmp_path / "fluent")
    cfg = wb.preset("people256-T16", **{"data.root": str(fluent)})
    data = DataConfig(dataset="fluent-people", root=str(fluent), image_size=256, channels=3)
    train, held = build_dataset(data, "train"), build_dataset(data, "val")
    codec = NoisyCodec()
    monkeypatch.setattr(mem, "build_codec", lambda d: codec)
    copies = codec.decode(codec.encode(torch.stack([train[i][0] for i in range(len(train))])))
    novel = torch.stack([held[i][0] for i in range(len(held))])
    for fake, copied in ((copies, True), (novel, False)):
        monkeypatch.setattr(mem, "sample_images", lambda *a, **k: (fake, {}, 0.0))
        spec = mem.MemorizationSpec(
            n=len(fake), extractor="fmnist-classifier", grid=tmp_path / "nn.png", log_dir=tmp_path / "log"
        )
        out = mem.memorization(None, cfg, spec)
        assert out["train_images"] == len(train) and out["held_out_images"] == len(held) and out["n"] == len(fake)
        low, high = out["copy_share_interval"]
        assert low <= out["copy_share"] <= high
        for space in ("pixels", "features"):
            r = out[space]
            if copied:
                assert r["nearer_than_held_out_median"]["share"] == 1.0 and r["distinct_neighbours"] == len(train)
                assert r["generated_to_train"]["p95"] < r["held_out_to_train"]["p05"], space
            else:  # the held-out images themselves: below their own median less than half the time
                assert r["nearer_than_held_out_median"]["share"] <= 0.5, space
                assert r["generated_to_train"]["median"] == pytest.approx(r["held_out_to_train"]["median"], rel=1e-4)
        assert out["copy_share"] == (1.0 if copied else out["pixels"]["nearer_than_held_out_median"]["share"])
        assert out["fid_held_out"]["images"] == len(held) and "too small" in out["fid_held_out"]["note"]
        assert out["fid_train"]["note"] is None and out["fid_all"]["images"] == len(train) + len(held)
        with Image.open(tmp_path / "nn.png") as im:  # pairs of rows: generations over their neighbours
            assert im.width >= min(8, len(fake)) * 256 and im.height >= 2 * 256


def test_a_dataset_too_large_to_search_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(mem, "MAX_TRAIN", 3)
    fluent = write_fluent(tmp_path / "fluent")
    cfg = wb.preset("people256-T16", **{"data.root": str(fluent)})
    with pytest.raises(ValueError, match="too many to search exhaustively. Fix: leave out --memorization"):
        mem.memorization(None, cfg, mem.MemorizationSpec(extractor="fmnist-classifier"))


def test_the_shipped_people_model_states_its_copy_share():
    """The shipped 256 px people model's report carries its copy share, and the app's caption of it states it."""
    from app import catalog
    from workbench.core.paths import ZOO_DIR

    entry = catalog.load_entry(ZOO_DIR / "context-people256" / "cond-ctx-T16.safetensors", "zoo")
    mem = entry.report.eval["memorization"]
    assert mem["n"] == 200 and mem["copy_share_interval"][0] <= mem["copy_share"] <= mem["copy_share_interval"][1]
    assert "78% [72%, 82%] of 200 generations lie nearer a training image" in entry.describe()
