"""The evaluation protocol a reviewer checks: precision/recall and the Inception Score agree with their papers'
definitions computed here independently; published .npz references round-trip and every misfit is refused in one
line; the sharded evaluation makes the same features from 1 and 2 processes, and a killed one resumes to the same
FID."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize_head
from single_thread import one_thread  # noqa: F401 (autouse)

import workbench as wb
from workbench.evaluation.features import CLASSIFIER_WEIGHTS, ClassifierFeatures
from workbench.evaluation.fidelity import inception_score, precision_recall
from workbench.evaluation.metrics import LiveFID, LiveOptions, ReferenceStats, compute_fid, fid_from_features
from workbench.evaluation.npz import read_npz, save_npz
from workbench.evaluation.report import EvalRequest
from workbench.evaluation.sharded import ShardPlan, chunk_sizes, evaluate_sharded
from workbench.training.checkpoint import Checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


class Moments(torch.nn.Module):
    """A 16-d stand-in extractor (pooled grey levels and their squares): fast and deterministic."""

    name, id, preprocess, num_features = "moments", "moments-test", "grey, 2x4 average pool, with squares", 16

    def forward(self, images):
        x = torch.nn.functional.adaptive_avg_pool2d(images.float().mean(1, keepdim=True), (2, 4)).flatten(1)
        return torch.cat([x, x.square()], dim=1)  # (B, 16)


def stats_of(features: torch.Tensor, name: str = "ref") -> ReferenceStats:
    return ReferenceStats.from_features(
        features, {"name": name, "extractor": "moments", "extractor_id": "moments-test"}
    )


# ---- precision / recall (Kynkaenniemi et al. 2019) and IS (Salimans et al. 2016), from their definitions --------
def knn_radius(points: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest *other* point, by brute force."""
    out = []
    for i, p in enumerate(points):
        d = sorted(float(np.linalg.norm(p - q)) for j, q in enumerate(points) if j != i)
        out.append(d[k - 1])
    return np.array(out)


def in_manifold(x: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> bool:
    return any(np.linalg.norm(x - c) <= r for c, r in zip(centres, radii, strict=True))


def test_precision_recall_match_the_definition_on_fixed_sets():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 5)), rng.normal(0.7, 1.3, size=(30, 5))
    r_real, r_fake = knn_radius(real, 3), knn_radius(fake, 3)
    precision = np.mean([in_manifold(f, real, r_real) for f in fake])
    recall = np.mean([in_manifold(r, fake, r_fake) for r in real])
    got = precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=3)
    assert got == pytest.approx((precision, recall), abs=1e-12)
    assert 0 < precision < 1 and 0 < recall < 1  # the sets overlap partly: neither share is trivial


def test_precision_recall_on_points_on_a_line():
    """Real points 0..4 (3rd-neighbour radii 3, 2, 2, 2, 3); generated -2.5 and 2.2 fall inside, 10 and 20 outside:
    precision 1/2. The four generated points' radii (22.5, 12.5, 17.8, 22.5) cover every real point: recall 1."""
    real = torch.arange(5.0).unsqueeze(1)
    fake = torch.tensor([[-2.5], [10.0], [2.2], [20.0]])
    assert precision_recall(real, fake) == pytest.approx((0.5, 1.0))
    with pytest.raises(ValueError, match="need more than 3 a side. Fix"):
        precision_recall(real[:3], fake)


def test_inception_score_matches_the_definition():
    logits = torch.randn(50, 7, generator=torch.Generator().manual_seed(0)) * 3
    p = torch.softmax(logits.double(), 1).numpy()
    scores = []
    for part in np.array_split(p, 5):
        marginal = part.mean(0)
        scores.append(math.exp(np.mean([np.sum(q * (np.log(q) - np.log(marginal))) for q in part])))
    assert inception_score(logits, splits=5) == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-9)
    confident = torch.eye(4).repeat(10, 1) * 50  # 40 images, each sure of its class, the 4 classes equally often
    assert inception_score(confident, splits=1)[0] == pytest.approx(4, rel=1e-6)
    assert inception_score(torch.zeros(12, 4), splits=3) == pytest.approx((1.0, 0.0))


@pytest.mark.skipif(not CLASSIFIER_WEIGHTS.is_file(), reason="classifier weights missing")
def test_reports_carry_precision_recall_and_is_where_the_extractor_has_logits():
    """The Fashion-MNIST classifier exposes its 10 class logits (the head it was trained with), so its reports
    carry an IS; an extractor without logits (as the shipped TF-Inception TorchScript, which ends at pool3) has
    none. Precision and recall come from the reference's real feature sample."""
    net = ClassifierFeatures()
    levels = torch.randint(0, 256, (6, 1, 32, 32), generator=torch.Generator().manual_seed(1))
    x = levels / 127.5 - 1  # already on the 256 levels the extractor rounds to
    assert torch.allclose(net.logits_from_features(net(x)), net.net(x), atol=1e-6)  # eval mode: no dropout
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(40, 1, 32, 32, generator=g) * 2 - 1, torch.rand(40, 1, 32, 32, generator=g) * 2 - 1
    r = compute_fid(a, b, net, bootstrap=0)
    assert 0 <= r.precision <= 1 and 0 <= r.recall <= 1 and r.pr_counts == (40, 40)
    assert 1 <= r.inception_score <= 10 and r.inception_score_std >= 0
    moments = compute_fid(a, b, Moments(), bootstrap=0)
    assert moments.inception_score is None and moments.precision is not None


# ---- .npz references -------------------------------------------------------------------------------------------
@pytest.fixture
def features():
    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(300, 16, generator=g), torch.randn(40, 16, generator=g) * 1.2 + 0.3  # (n, 16)
    return real, fake


def test_npz_round_trip_and_published_layouts_give_the_same_fid(tmp_path, features):
    real, fake = features
    ref = stats_of(real)
    fid = fid_from_features(fake, ref)
    ours = tmp_path / "ours.npz"
    save_npz(ref, ours)
    back = read_npz(ours, Moments())
    assert fid_from_features(fake, back) == pytest.approx(fid, abs=1e-6)
    assert back.card["layout"] == "workbench" and not back.card["extractor_assumed"] and back.count == 300
    assert torch.equal(back.kid_features, ref.kid_features) and len(back.source["sha256"]) == 64
    pytorch_fid = tmp_path / "pytorch_fid.npz"  # what pytorch-fid --save-stats writes
    np.savez_compressed(pytorch_fid, mu=ref.mu.numpy(), sigma=ref.sigma.numpy())
    plain = read_npz(pytorch_fid, Moments())
    assert fid_from_features(fake, plain) == pytest.approx(fid, abs=1e-6) and plain.card["extractor_assumed"]
    assert plain.card["layout"] == "pytorch-fid" and len(plain.kid_features) == 0  # FID only: no real features
    adm = tmp_path / "adm_activations.npz"  # ADM's layout with raw activations as arr_0
    np.savez(adm, arr_0=real.numpy())
    assert fid_from_features(fake, read_npz(adm, Moments())) == pytest.approx(fid, abs=1e-6)
    live = LiveFID(plain, Moments(), LiveOptions(bootstrap=0, inf_points=0))
    live.add_features(fake)
    r = live.compute()  # mu/sigma only: FID, no KID or precision/recall
    assert r.fid == pytest.approx(fid, abs=1e-6) and math.isnan(r.kid_mean) and r.precision is None


def test_adm_reference_images_are_run_through_the_extractor(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8)  # ADM: (N, H, W, 3)
    path = tmp_path / "VIRTUAL_test.npz"
    np.savez(path, arr_0=images)
    ref = read_npz(path, Moments())
    expect = Moments()(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1)
    assert torch.allclose(ref.mu, expect.double().mean(0)) and ref.count == 12 and ref.card["layout"] == "adm"


def _bad_files(tmp_path: Path, ref: ReferenceStats) -> dict[str, Path]:
    good = tmp_path / "good.npz"
    save_npz(ref, good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files = {"truncated": truncated}
    for name, arrays in {
        "foreign": {"images": np.zeros((2, 3))},
        "nan": {"mu": np.full(16, np.nan), "sigma": np.eye(16)},
        "asymmetric": {"mu": np.zeros(16), "sigma": np.eye(16) + np.triu(np.ones((16, 16)), 1)},
        "dimension": {"mu": np.zeros(2048), "sigma": np.eye(2048)},
        "extractor": {"mu": np.zeros(16), "sigma": np.eye(16), "extractor_id": np.array("inception-7ff4a85c3a63")},
    }.items():
        files[name] = tmp_path / f"{name}.npz"
        np.savez(files[name], **arrays)
    return files


BAD = {
    "truncated": "not a readable .npz",
    "foreign": "no 'mu'/'sigma' or 'arr_0'",
    "nan": "NaN",
    "asymmetric": "not symmetric",
    "dimension": "2048-d statistics, but moments-test gives 16-d",
    "extractor": "written for inception-7ff4a85c3a63, not moments-test",
}


def test_bad_npz_files_are_refused_in_one_line_naming_the_fix(tmp_path, features):
    files = _bad_files(tmp_path, stats_of(features[0]))
    for name, says in BAD.items():
        with pytest.raises(ValueError) as err:
            read_npz(files[name], Moments())
        message = str(err.value)
        assert says in message and "Fix:" in message and "\n" not in message, (name, message)


# ---- the CLI and the sharded protocol ----------------------------------------------------------------------------
def tiny_checkpoint(folder: Path) -> Path:
    cfg = wb.preset("tiny", **{"model.width": 32, "model.heads": 2, "model.depth": 2, "model.diffusion_depth": 1})
    model = wb.build_model(cfg)
    randomize_head(model)
    save_checkpoint(Checkpoint(cfg, 3, model.state_dict(), model.state_dict()), folder)
    return folder


def test_sample_count_must_divide_among_the_processes(tmp_path):
    with pytest.raises(ValueError, match="not a multiple of the 2 processes. Fix: use 14"):
        evaluate_sharded(tmp_path / "none", EvalRequest(num_samples=15), ShardPlan(devices=2))
    assert chunk_sizes(10, 4) == [4, 4, 2]


def test_eval_reads_and_writes_npz_references_and_refuses_a_bad_one_in_one_line(tmp_path, capsys):
    from workbench.__main__ import main

    run = tiny_checkpoint(tmp_path / "run")
    base = ["eval", "--checkpoint", str(run), "--num-samples", "12", "--steps", "2", "--no-flop-count"]
    saved = tmp_path / "ref.npz"
    assert main([*base, "--out", str(tmp_path / "a.json"), "--save-reference", str(saved)]) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["saved_reference"]["file"] == str(saved) and saved.is_file()
    assert a["reference_file"] == f"{a['reference']}.safetensors" and len(a["reference_sha256"]) == 64
    assert 0 <= a["precision"] <= 1 and 0 <= a["recall"] <= 1 and a["inception_score"] >= 1
    held = a["fid_held_out"]  # beside the training reference: the shipped statistics of the 10,000 test images
    assert held["reference"] == "fashion-mnist-32px-val-fmnist-classifier-10000" and held["note"] is None
    assert held["reference_count"] == 10000 and len(held["reference_sha256"]) == 64 and held["fid"] > 0
    assert a["memorization_policy"]["training_images"] is None and "memorization" not in a  # unknown: not guessed
    assert main([*base, "--out", str(tmp_path / "b.json"), "--reference", str(saved)]) == 0
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["fid"] == pytest.approx(a["fid"], abs=1e-6) and b["reference_file"] == "ref.npz"
    assert b["sharding"]["chunks_found_at_start"] == 1  # same images: the features were already there
    assert b["fid_held_out"]["fid"] is None and "--reference" in b["fid_held_out"]["note"]
    bad = tmp_path / "bad.npz"
    np.savez(bad, mu=np.zeros(2048), sigma=np.eye(2048))
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "c.json"), "--reference", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "2048-d statistics, but fmnist-classifier" in err[-1] and "Fix:" in err[-1]
    assert "Traceback" not in "\n".join(err) and not (tmp_path / "c.json").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], log) -> subprocess.Popen:
    env = {**os.environ, "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", *args], cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=True
    )


def chunk_features(folder: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    (sub,) = [p for p in folder.iterdir() if p.is_dir()]
    return torch.cat([load_file(str(p))["features"] for p in sorted(sub.glob("chunk-*.safetensors"))])


@pytest.mark.slow
def test_two_processes_make_the_same_features_and_a_killed_evaluation_resumes(tmp_path):
    run = tiny_checkpoint(tmp_path / "run")
    n, chunk = 40, 2
    base = ["eval", "--checkpoint", str(run), "--num-samples", str(n), "--steps", "12", "--no-flop-count"]
    base += ["--chunk", str(chunk)]
    log = open(tmp_path / "log.txt", "w")
    reports = {}
    for name, devices in (("one", "1"), ("two", "2")):
        p = launch(
            [*base, "--devices", devices, "--shard-dir", str(tmp_path / name), "--out", str(tmp_path / f"{name}.json")],
            log,
        )
        assert p.wait(timeout=300) == 0, (tmp_path / "log.txt").read_text()[-3000:]
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    one, two = chunk_features(tmp_path / "one"), chunk_features(tmp_path / "two")
    assert one.shape == (n, 128) and torch.allclose(one, two, atol=1e-5)
    assert reports["two"]["fid"] == pytest.approx(reports["one"]["fid"], abs=1e-5)
    assert reports["two"]["sharding"]["world_size"] == 2 and reports["one"]["sharding"]["world_size"] == 1
    killed = [*base, "--devices", "2", "--shard-dir", str(tmp_path / "killed"), "--out", str(tmp_path / "k.json")]
    p = launch(killed, log)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "killed").glob("*/chunk-*.safetensors")):
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)  # both ranks, mid-way
    p.wait()
    done = len(list((tmp_path / "killed").glob("*/chunk-*.safetensors")))
    assert 0 < done < n // chunk and not (tmp_path / "k.json").exists()
    p = launch(killed, log)
    assert p.wait(timeout=300) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    resumed = json.loads((tmp_path / "k.json").read_text())
    assert resumed["sharding"]["chunks_found_at_start"] >= done
    assert resumed["fid"] == pytest.approx(reports["two"]["fid"], abs=1e-6)
    assert resumed["precision"] == reports["two"]["precision"]


def test_fid_during_training_logs_numbers_and_writes_provenance(tmp_path):
    """The evaluate_fn train calls at eval_every: FID of fid_samples images of the EMA model with the configured
    extractor, sampler and S, the same numbers LiveFID gives for those images, and a provenance file per step."""
    from workbench.evaluation.during_training import training_fid
    from workbench.evaluation.evaluate import default_reference
    from workbench.sampling.sampler import generate_images_checked

    over = {"train.fid_samples": 12, "train.fid_steps": 2, "train.fid_sampler": "euler", "train.out_dir": str(tmp_path)}
    cfg = wb.preset("tiny", **{"model.width": 32, "model.heads": 2, "model.depth": 2, "model.diffusion_depth": 1})
    assert training_fid(cfg) is None  # fid_samples = 0: validation loss only
    cfg = cfg.override(**over)
    model = wb.build_model(cfg)
    randomize_head(model)
    numbers = training_fid(cfg)(model, 7)
    run = cfg.override(**{"sample.sampler": "euler", "sample.steps": 2})
    images, _ = generate_images_checked(model, run, 12, batch=5)  # per-image seeds: any batch, the same images
    live = LiveFID(default_reference(cfg, "fmnist-classifier"), "fmnist-classifier", LiveOptions(bootstrap=0))
    live.update(images)
    assert numbers["fid"] == pytest.approx(live.compute().fid, rel=1e-6)
    assert numbers["fid_low"] <= numbers["fid"] <= numbers["fid_high"] and 0 <= numbers["precision"] <= 1
    provenance = json.loads((tmp_path / "eval" / "fid-step0000007.json").read_text())
    assert (provenance["n"], provenance["steps"], provenance["sampler"], provenance["weights"]) == (
        12,
        2,
        "euler",
        "ema",
    )
    assert provenance["extractor"].startswith("fmnist-classifier-") and len(provenance["reference_sha256"]) == 64
    with pytest.raises(ValueError, match="train.fid_samples.*Fix"):
        cfg.override(**{"train.fid_samples": 5})


@pytest.mark.slow
def test_training_logs_fid_with_provenance_from_the_config(tmp_path):
    """`train` with train.fid_samples (through the evaluate_fn the CLI passes) logs eval/fid beside the validation
    loss in the CSV log and the summary, and writes the provenance of each evaluation."""
    import csv

    from workbench.evaluation.during_training import training_fid
    from workbench.training.train import train

    over = {"model.width": 32, "model.heads": 2, "model.depth": 2, "model.diffusion_depth": 1}
    over |= {"train.batch_size": 8, "train.val_batches": 1, "train.max_steps": 2, "train.eval_every": 2}
    over |= {"train.fid_samples": 10, "train.fid_steps": 1, "train.sample_every": 0, "train.out_dir": str(tmp_path)}
    cfg = wb.preset("tiny", **over)
    summary = train(cfg, evaluate_fn=training_fid(cfg))
    assert summary["status"] == "finished" and math.isfinite(summary["metrics"]["eval/fid"])
    rows = list(csv.DictReader(open(next(tmp_path.glob("logs/*/metrics.csv")))))
    assert any(r.get("eval/fid") for r in rows) and any(r.get("eval/precision") for r in rows)
    provenance = json.loads((tmp_path / "eval" / "fid-step0000002.json").read_text())
    assert provenance["n"] == 10 and provenance["steps"] == 1 and provenance["weights"] == "ema"
