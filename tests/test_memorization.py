"""Memorisation in the library: on a stand-in Fluent people set, "generations" that are training images through a
slightly noisy codec are counted as copies (each nearest its own original), held-out emoji as new; the copy share
comes with its interval, FID against the held-out split carries its too-small note, and the grid pairs each
generation with its nearest training image. Eval reports: a model of a small dataset carries the copy share (from
the evaluation's own generations) and FID against held-out images beside FID against all; one of a dataset of 100k
images or more leaves the copy share out unless asked; reports without these fields still load and display."""

import json
import math

import pytest
import torch
from conftest import randomize_head
from fluent_fixture import write_fluent
from PIL import Image
from single_thread import one_thread  # noqa: F401 (autouse)

import workbench as wb
from workbench.core.config import DataConfig
from workbench.data.datasets import build_dataset
from workbench.evaluation import evaluate as evaluation
from workbench.evaluation import memorization as mem
from workbench.evaluation import references
from workbench.evaluation.features import CLASSIFIER_WEIGHTS, extract_features
from workbench.evaluation.metrics import load_reference
from workbench.evaluation.report import EvalRequest, evaluate_checkpoint
from workbench.training.checkpoint import Checkpoint, save_checkpoint


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
    ev = entry.report.eval
    mem, earlier = ev["memorization"], ev["memorization_earlier"]
    assert mem["n"] == 200 and mem["copy_share_interval"][0] <= mem["copy_share"] <= mem["copy_share_interval"][1]
    # filled in by `zoo memorization` at the report's headline point; the benchmark's figure written in by hand
    # before is kept beside it, and the two runs of the same rule agree within the new one's interval
    assert mem["copy_rule"] == earlier["copy_rule"] and ev["headline_point"]["steps"] == earlier["steps"] == 16
    assert mem["copy_share_interval"][0] <= earlier["copy_share"] <= mem["copy_share_interval"][1]
    assert "79% [74%, 83%] of 200 generations lie nearer a training image" in entry.describe()
    assert "against 142 held-out images (too few to be meaningful)" in entry.describe()


# ---- eval reports: the copy share below 100k training images, FID against held-out images beside FID against all --
needs_classifier = pytest.mark.skipif(not CLASSIFIER_WEIGHTS.is_file(), reason="classifier weights missing")


@pytest.fixture
def small_data(tmp_path, monkeypatch):
    """A function writing a tiny untrained model of a 16 px stand-in Fluent people set (11 training images, 3 held
    out) whose checkpoint says it was trained on `trained_on` images; references and feature logs go to tmp_path."""
    fluent = write_fluent(tmp_path / "fluent", size=32)
    monkeypatch.setattr(evaluation, "REFERENCE_DIR", tmp_path / "reference")  # instead of data/reference/
    monkeypatch.setattr(references, "FEATURE_LOG_DIR", tmp_path / "features")
    small = {"model.width": 32, "model.heads": 2, "model.depth": 2, "model.diffusion_depth": 1}
    data = {"data.dataset": "fluent-people", "data.root": str(fluent), "data.image_size": 16, "data.channels": 3}
    cfg = wb.preset("tiny", **small, **data, **{"model.latent_size": 16, "model.latent_channels": 3})
    model = wb.build_model(cfg)
    randomize_head(model)

    def write(trained_on: int | None):
        folder = tmp_path / f"run-{trained_on}"
        state = {"dataset_size": trained_on} if trained_on else {}
        save_checkpoint(Checkpoint(cfg, 3, model.state_dict(), model.state_dict(), data=state), folder)
        return folder

    return write, cfg.data


REQUEST = EvalRequest(num_samples=12, steps=2, extractor="fmnist-classifier", bootstrap=10, measure_flops=False)


@needs_classifier
def test_a_small_data_report_carries_the_copy_share_and_fid_against_held_out_images(small_data, monkeypatch):
    write, data = small_data
    train, held = build_dataset(data, "train"), build_dataset(data, "val")
    monkeypatch.setattr(mem, "sample_images", lambda *a, **k: pytest.fail("generated again: the eval's images serve"))
    report = evaluate_checkpoint(write(30), REQUEST)
    policy = report["memorization_policy"]
    assert (policy["training_images"], policy["threshold"], policy["generations"]) == (30, 100_000, 12)
    assert policy["why"].startswith("computed automatically: 30 training images") and "100,000" in policy["why"]
    copies = report["memorization"]
    assert (copies["n"], copies["train_images"], copies["held_out_images"]) == (12, len(train), len(held))
    low, high = copies["copy_share_interval"]
    assert 0 <= low <= copies["copy_share"] <= high <= 1
    # FID against all images (Fluent's reference split) and, beside it, against the held-out split's statistics,
    # cached as the training references are; 3 held-out images for 128-d features are flagged as too few
    assert report["reference_card"]["split"] == "all" and report["reference_count"] == len(train) + len(held)
    h = report["fid_held_out"]
    assert h["split"] == "val" and h["reference_count"] == len(held) and h["n"] == 12 and "too small" in h["note"]
    assert all(math.isfinite(h[k]) for k in ("fid", "fid_low", "fid_high")) and h["fid"] != report["fid"]
    cached = load_reference(evaluation.REFERENCE_DIR / h["reference_file"])
    assert cached.source["sha256"] == h["reference_sha256"] and cached.card["split"] == "val"
    real = extract_features("fmnist-classifier", torch.stack([held[i][0] for i in range(len(held))]))
    assert torch.allclose(cached.mu, real.double().mean(0), atol=1e-5)  # statistics of exactly the held-out images
    json.dumps(report)  # the report stays JSON


@needs_classifier
def test_the_copy_share_of_a_large_dataset_only_when_asked(small_data, tmp_path, capsys):
    """From the CLI (the sharded path): a model trained on 100,000 images or more gets no copy share unless
    --memorization asks for it; a small one gets it unless --no-memorization; an unknown count is said, not
    guessed."""
    from workbench.__main__ import main

    write, _ = small_data
    base = ["eval", "--num-samples", "12", "--steps", "2", "--extractor", "fmnist-classifier", "--no-flop-count"]
    reports = {}
    for name, trained_on, extra in (
        ("large", 100_000, []),
        ("asked", 150_000, ["--memorization", "6"]),
        ("off", 30, ["--no-memorization"]),
        ("unknown", None, []),
    ):
        out = tmp_path / f"{name}.json"
        assert main([*base, "--checkpoint", str(write(trained_on)), *extra, "--out", str(out)]) == 0
        reports[name] = json.loads(out.read_text())
        assert reports[name]["fid_held_out"]["reference_count"] == 3  # FID against held-out images in every one
    assert (
        "memorization" not in reports["large"]
        and "not fewer than 100,000" in reports["large"]["memorization_policy"]["why"]
    )
    asked = reports["asked"]["memorization"]
    assert asked["n"] == 6 and reports["asked"]["memorization_policy"]["why"] == "computed as asked (--memorization 6)"
    assert asked["grid"] == str(tmp_path / "asked.nn.png") and (tmp_path / "asked.nn.png").is_file()
    assert "memorization" not in reports["off"] and "switched off" in reports["off"]["memorization_policy"]["why"]
    unknown = reports["unknown"]["memorization_policy"]
    assert "memorization" not in reports["unknown"] and unknown["training_images"] is None
    assert "unknown" in unknown["why"] and "Fix: pass --memorization" in unknown["why"]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["fid_held_out"] == reports["unknown"]["fid_held_out"]["fid"] and "copy_share" not in summary
    with pytest.raises(SystemExit):  # one or the other
        main([*base, "--checkpoint", str(write(30)), "--memorization", "--no-memorization"])


def test_reports_without_the_new_fields_still_load_and_display():
    """Every shipped report (data/checkpoints/**.json: most written before the fields; the people model's with a
    copy share, the depth family's with both) loads and its model's caption states the copy share and the held-out
    FID exactly where its report carries them; an eval report written before the fields still gives its row."""
    import dataclasses
    from pathlib import Path

    from app import catalog
    from workbench.core.paths import ZOO_DIR
    from workbench.research.reports import eval_rows, read_report

    shipped = sorted(ZOO_DIR.rglob("*.json"))
    assert len(shipped) >= 13 and all(read_report(p).curve for p in shipped)
    said = {}
    for path in sorted(ZOO_DIR.rglob("*.safetensors")):
        entry = catalog.load_entry(path, "zoo")
        caption, ev = entry.describe(), entry.report.eval
        copies = (ev.get("memorization") or {}).get("copy_share") is not None
        held = (ev.get("fid_held_out") or {}).get("fid") is not None
        assert ("lie nearer a training image" in caption) == copies and ("held-out images" in caption) == held, path
        said[entry.name] = (copies, held)
    assert said["context-people256/cond-ctx-T16"][0] and said["depth/N12"] == (True, True)
    old = Path(__file__).resolve().parents[1] / "benchmarks/results/people256/eval-cond-ctx-T16-S16-n200.json"
    assert not {"fid_held_out", "memorization_policy"} & set(json.loads(old.read_text()))
    (row,) = eval_rows([old])
    assert row["FID"] == pytest.approx(103.2, abs=0.05) and row["n"] == 200
    entry = catalog.load_entry(ZOO_DIR / "vertical" / "D1.safetensors", "zoo")
    held = {"fid": 30.04, "fid_low": 29.0, "fid_high": 31.0, "reference_count": 10000, "note": None}
    report = dataclasses.replace(entry.report, eval={**entry.report.eval, "fid_held_out": held})
    assert (
        "; FID 30.0 [29.0, 31.0] against 10,000 held-out images" in dataclasses.replace(entry, report=report).describe()
    )
