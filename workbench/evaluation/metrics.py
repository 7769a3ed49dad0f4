"""FID and KID of generated images: the Frechet distance, cached reference statistics with provenance, KID,
bootstrap intervals, FID-infinity, and LiveFID (a running estimate for the app and training loop).

Feature extractors live in features.py. FID math (Heusel et al. 2017): FID = |mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b)
- 2 Tr sqrt(S_a S_b), in float64. Every covariance is held as a factor F with S = F^T F, which makes
Tr sqrt(S_a S_b) the nuclear norm of F_a F_b^T: one exact formula for a (d, d) covariance and for n < d raw
features alike (FID-infinity and the bootstrap evaluate it dozens of times per compute). The nuclear norm comes
from the eigenvalues of the smaller Gram matrix (SVD is ~10x slower here); a null direction costs ~sqrt(float64
eps) of absolute accuracy, so identical singular gaussians score ~1e-8, not 0.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torchmetrics.image.kid import poly_mmd

from ..core.config import DataConfig
from ..core.paths import CACHE_DIR, REFERENCE_DIR, sha256_file
from ..data.datasets import build_dataset
from .features import extract_features, resolve_extractor

FEATURE_LOG_DIR = CACHE_DIR / "features"  # git-ignored logs of reference features, for resuming


# ---- Frechet distance --------------------------------------------------------------------------------------------
def feature_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (F,) and unbiased covariance (F, F) of features (N, F), in float64."""
    x = features.double()
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"feature_stats: need (N >= 2, F) features, got {tuple(x.shape)}. Fix: use more images.")
    return x.mean(0), torch.cov(x.T)


def _factor(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (F,) and covariance factor (N, F) of features: sigma = factor^T factor."""
    x = features.double()
    mu = x.mean(0)
    return mu, (x - mu) / (x.shape[0] - 1) ** 0.5


def _psd_factor(sigma: Tensor) -> Tensor:
    """Symmetric square root (F, F) of a covariance: a factor with sigma = factor^T factor."""
    e, v = torch.linalg.eigh(sigma.double())
    return (v * e.clamp(min=0).sqrt()) @ v.T


def _frechet(mu_a: Tensor, fac_a: Tensor, mu_b: Tensor, fac_b: Tensor) -> float:
    """FID from means and covariance factors: Tr sqrt(S_a S_b) = nuclear norm of fac_a fac_b^T."""
    m = fac_a @ fac_b.T  # (n_a, n_b)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m  # the smaller side: same non-zero eigenvalues
    tr_sqrt = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().sum()
    fid = (mu_a - mu_b).square().sum() + fac_a.square().sum() + fac_b.square().sum() - 2 * tr_sqrt
    return float(fid)


def frechet_distance(mu_a: Tensor, sigma_a: Tensor, mu_b: Tensor, sigma_b: Tensor) -> float:
    """Frechet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b), in float64."""
    return _frechet(mu_a.double(), _psd_factor(sigma_a), mu_b.double(), _psd_factor(sigma_b))


# ---- reference statistics ----------------------------------------------------------------------------------------
@dataclass
class ReferenceStats:
    """Statistics of real images under one extractor: mu (F,), sigma (F, F) float64, a sample of real features
    for KID (K, F) float32, and the provenance card (dataset, split, count, extractor id, resize path, date)."""

    mu: Tensor
    sigma: Tensor
    kid_features: Tensor
    card: dict

    @classmethod
    def from_features(cls, features: Tensor, card: dict, kid_sample: int = 1000) -> ReferenceStats:
        """Statistics of all `features` (N, F); the first `kid_sample` rows are kept for KID."""
        mu, sigma = feature_stats(features)
        return cls(mu, sigma, features[:kid_sample].float().clone(), {**card, "count": features.shape[0]})

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def count(self) -> int:
        return self.card["count"]

    @functools.cached_property
    def factor(self) -> Tensor:
        """Covariance factor (F, F), computed once (an eigendecomposition: ~1.3 s at F = 2048)."""
        return _psd_factor(self.sigma)


def load_reference(path: str | Path) -> ReferenceStats:
    """Load reference statistics (.safetensors + .json card), checking the file against the card's sha256."""
    path = Path(path)
    card_path = path.with_suffix(".json")
    if not path.is_file() or not card_path.is_file():
        raise FileNotFoundError(
            f"reference statistics {path} or its card {card_path.name} missing. Fix: compute "
            "them with workbench.evaluation.metrics.reference_stats(...)."
        )
    card = json.loads(card_path.read_text())
    digest = sha256_file(path)
    if digest != card["sha256"]:
        raise ValueError(
            f"{path}: sha256 {digest[:12]}... does not match its card ({card['sha256'][:12]}...). "
            "Fix: delete both files and recompute them with reference_stats(...)."
        )
    t = load_file(str(path))
    return ReferenceStats(t["mu"], t["sigma"], t["kid_features"], {k: v for k, v in card.items() if k != "sha256"})


def save_reference(stats: ReferenceStats, path: str | Path) -> None:
    """Write stats as .safetensors plus a .json card holding the provenance and the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "mu": stats.mu.contiguous(),
            "sigma": stats.sigma.contiguous(),
            "kid_features": stats.kid_features.contiguous(),
        },
        str(path),
    )
    card = {**stats.card, "sha256": sha256_file(path)}
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")


def _feature_log(
    path: Path,
    extractor: nn.Module,
    ds: torch.utils.data.Dataset,
    order: list[int],
    n: int,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[Tensor, float]:
    """Features (n, F) of ds[order[:n]] and the seconds they took. They are read from, resumed in and appended to
    a log of the permutation's prefix at `path`, saved about every minute: a killed computation loses at most a
    minute, and every smaller n is already there."""
    feats, seconds = torch.zeros(0, extractor.num_features), 0.0
    if path.is_file():
        with safe_open(str(path), "pt") as f:
            feats, seconds = f.get_tensor("features"), float(f.metadata()["seconds"])
    new, start, saved = [], time.time(), time.time()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, order[len(feats) : n]), batch_size=batch_size)
    for images, _ in loader:
        new.append(extract_features(extractor, images, batch_size))
        done = len(feats) + sum(len(f) for f in new)
        if progress:
            progress(done, n)
        if time.time() - saved > 60 or done == n:
            feats, new, seconds = torch.cat([feats, *new]), [], seconds + time.time() - start
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"features": feats}, str(path.with_suffix(".tmp")), metadata={"seconds": str(seconds)})
            path.with_suffix(".tmp").replace(path)
            start = saved = time.time()
    return feats[:n], seconds * n / len(feats)


def _first_sentence(doc: str) -> str:
    """The first sentence of a docstring's first paragraph, on one line (how a card says how images were served)."""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


def real_features(
    ds: torch.utils.data.Dataset,
    label: str,
    split: str,
    image_size: int,
    extractor: nn.Module,
    n: int,
    seed: int = 0,
    batch_size: int = 64,
    log_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Tensor, list[int], float]:
    """(features (n, F), the dataset indices they are of, seconds): the first n images of a seed-`seed` permutation
    of a built dataset split, the images reference statistics are made of, read from or added to the feature log
    of that permutation (named by `label`, `split` and `image_size`, keyed by the dataset's identity and the
    extractor), so statistics built on this machine make every smaller sample of the same images free."""
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    content = hashlib.sha256(json.dumps(ds.identity, sort_keys=True).encode()).hexdigest()[:12]
    log_name = f"{label}-{image_size}px-{split}-{extractor.id}-seed{seed}-{content}.safetensors"
    feats, seconds = _feature_log(
        Path(log_dir or FEATURE_LOG_DIR) / log_name, extractor, ds, order, n, batch_size, progress
    )
    return feats, order[:n], seconds


def reference_stats(
    dataset: str,
    split: str = "train",
    extractor: str | nn.Module = "fmnist-classifier",
    n: int | None = None,
    image_size: int = 32,
    channels: int | None = None,
    root: str = "",
    kid_sample: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    cache_dir: Path = REFERENCE_DIR,
    log_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReferenceStats:
    """Statistics of `n` real images (all of the split when None) of a workbench dataset, computed once and cached
    as <cache_dir>/<dataset>-<size>px-<split>-<extractor>-<n>.safetensors with a JSON provenance card.

    The images are the first n of a seed-`seed` permutation of the split, served exactly as training sees them
    (Fashion-MNIST: zero-padded to 32x32). Their features are logged in `log_dir` (default FEATURE_LOG_DIR) while
    computed, keyed by the dataset's identity too (other files never resume a log), so a killed run resumes and a
    larger n extends a smaller one. `progress(done, n)` is called after every batch.
    A cache computed with other extractor weights is an error, never silently reused.
    """
    extractor = resolve_extractor(extractor)
    channels = channels or (1 if dataset == "fashion-mnist" else 3)
    ds = build_dataset(DataConfig(dataset=dataset, root=root, image_size=image_size, channels=channels), split)
    n = n or len(ds)
    if not 2 <= n <= len(ds):
        raise ValueError(
            f"reference_stats: n={n} but {dataset}/{split} has {len(ds)} images. "
            f"Fix: use 2 <= n <= {len(ds)} (or n=None for all)."
        )
    label = f"folder-{Path(root).name}" if dataset == "folder" else dataset
    name = f"{label}-{image_size}px-{split}-{extractor.name}-{n}"
    path = Path(cache_dir) / f"{name}.safetensors"
    if path.is_file():
        stats = load_reference(path)
        if stats.card["extractor_id"] != extractor.id:
            raise ValueError(
                f"{path} was computed with {stats.card['extractor_id']}, not {extractor.id}. Fix: "
                "delete it (and its .json) to recompute, or restore the extractor weights it names."
            )
        return stats
    feats, _, seconds = real_features(ds, label, split, image_size, extractor, n, seed, batch_size, log_dir, progress)
    card = {
        "name": name,
        "dataset": dataset,
        "split": split,
        "image_size": image_size,
        "channels": channels,
        "dataset_identity": ds.identity,
        "subset": f"first {n} of torch.randperm({len(ds)}) seeded {seed}",
        "dataset_transform": _first_sentence(type(ds).__doc__ or ""),
        "extractor": extractor.name,
        "extractor_id": extractor.id,
        "extractor_sha256": extractor.sha256,
        "preprocess": extractor.preprocess,
        "kid_sample": min(kid_sample, n),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    stats = ReferenceStats.from_features(feats, card, kid_sample)
    save_reference(stats, path)
    return stats


# ---- FID of generated features, KID, bootstrap, FID-infinity ---------------------------------------------------------
def fid_from_features(features: Tensor, reference: ReferenceStats) -> float:
    """FID of generated features (n, F) against reference statistics; cheap while n < F (see module docstring)."""
    return _frechet(*_factor(features), reference.mu, reference.factor)


def kid(
    features: Tensor,
    real_features: Tensor,
    subset_size: int = 500,
    subsets: int = 20,
    generator: torch.Generator | None = None,
) -> tuple[float, float, int]:
    """KID (mean, std over subsets, subset size) with torchmetrics' cubic polynomial kernel MMD; the subset size
    is min(subset_size, len(features), len(real_features)). The default 500 is half of a reference's 1000-image
    KID sample, so real subsets differ too; the cost is subsets * 3 * m^2 * F multiply-adds."""
    m = min(subset_size, len(features), len(real_features))
    if m < 2:
        raise ValueError(f"kid: subsets of {m} features; KID needs 2. Fix: use at least 2 images on each side.")
    scores = torch.stack(
        [
            poly_mmd(
                real_features[torch.randperm(len(real_features), generator=generator)[:m]].double(),
                features[torch.randperm(len(features), generator=generator)[:m]].double(),
            )
            for _ in range(subsets)
        ]
    )
    return float(scores.mean()), float(scores.std(unbiased=False)), m


def bootstrap_fid(
    features: Tensor,
    reference: ReferenceStats,
    resamples: int = 50,
    level: float = 0.9,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Central `level` interval of FID at n = len(features) over resamples (with replacement) of the generated
    features, the reference fixed. A resample repeats ~37% of its images, which inflates FID like a smaller n
    would, so the interval is shifted back by that bias (mean of the resampled FIDs minus the FID)."""
    n = len(features)
    fid = fid_from_features(features, reference)
    fids = np.array(
        [fid_from_features(features[torch.randint(n, (n,), generator=generator)], reference) for _ in range(resamples)]
    )
    lo, hi = np.quantile(fids, [(1 - level) / 2, (1 + level) / 2]) - (fids.mean() - fid)
    return float(lo), float(hi)


def paired_fid_difference(
    features_a: Tensor,
    features_b: Tensor,
    reference: ReferenceStats,
    resamples: int = 200,
    level: float = 0.9,
    generator: torch.Generator | None = None,
) -> tuple[float, float, float]:
    """FID(a) - FID(b) and its central `level` interval, for two image sets generated from the same seeds (row i of
    a and of b start from the same initial noise). Each resample draws one set of rows and scores both sides on it,
    so the noise the two sides share cancels in the difference; each side's resampling bias is removed as in
    bootstrap_fid. Returns (difference, low, high)."""
    n = len(features_a)
    if len(features_b) != n or n < 2:
        raise ValueError(
            f"paired_fid_difference: {n} and {len(features_b)} rows. Fix: pass two sets of the same "
            "size (at least 2), generated from the same seeds."
        )
    diff = fid_from_features(features_a, reference) - fid_from_features(features_b, reference)
    diffs = []
    for _ in range(resamples):
        rows = torch.randint(n, (n,), generator=generator)
        diffs.append(fid_from_features(features_a[rows], reference) - fid_from_features(features_b[rows], reference))
    diffs = np.array(diffs)
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2]) - (diffs.mean() - diff)
    return float(diff), float(lo), float(hi)


def fid_infinity(
    features: Tensor,
    reference: ReferenceStats,
    points: int = 10,
    min_fraction: float = 0.2,
    generator: torch.Generator | None = None,
) -> float:
    """FID-infinity (Chong & Forsyth 2020): FID of random subsets of `points` sizes from min_fraction * n to n,
    fitted linearly in 1/size; the intercept is the FID of infinitely many images."""
    n = len(features)
    sizes = np.unique(np.linspace(max(2, int(min_fraction * n)), n, points).astype(int))
    if len(sizes) < 3:
        raise ValueError(f"fid_infinity: {n} images give {len(sizes)} subset sizes. Fix: use at least 10 images.")
    fids = [fid_from_features(features[torch.randperm(n, generator=generator)[:s]], reference) for s in sizes]
    return float(np.polyfit(1.0 / sizes, fids, 1)[1])  # (slope, intercept)


# ---- live and one-shot FID ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FIDResult:
    """One evaluation of generated images against reference statistics, with its provenance."""

    fid: float  # FID of all n generated images
    n: int  # generated images scored
    kid_mean: float  # KID over random subsets (generated vs the reference's KID sample)
    kid_std: float
    kid_subset_size: int
    fid_ci: tuple[float, float] | None  # bootstrap interval of fid (see bootstrap_fid); None when disabled
    ci_level: float
    fid_inf: float | None  # FID-infinity (None below 10 images)
    extractor: str  # extractor id: name + weights hash prefix
    reference: str  # reference statistics name
    reference_count: int  # real images behind the reference statistics
    seconds: float  # time this evaluation took

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class LiveFID:
    """Running FID of generated images against fixed (loaded, never recomputed) reference statistics.

    `update(images)` extracts and keeps the features of each batch; `compute()` returns an FIDResult: FID at the
    current n, KID, a bootstrap interval and FID-infinity. The random draws of compute() depend only on `seed`
    and the features, so batch-wise updates give the same result as one update with all images. A UI calls
    `maybe_compute(min_interval_s)`, which reuses the last result until that many seconds have passed.

    Cost of compute(): 1 + bootstrap + inf_points Frechet evaluations. At F = 128 (classifier) they take
    milliseconds. At F = 2048 (Inception) each costs ~n F^2 flops while n < F, but an (F, F) eigendecomposition
    (~1.3 s on 2 cores) once n >= F: lower `bootstrap` and `inf_points` there. The reference's covariance factor
    is computed once, on first use.
    """

    def __init__(
        self,
        reference: ReferenceStats,
        extractor: str | nn.Module | None = None,
        bootstrap: int = 50,
        ci_level: float = 0.9,
        inf_points: int = 10,
        kid_subset_size: int = 500,
        kid_subsets: int = 20,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.extractor = resolve_extractor(extractor or reference.card["extractor"])
        if self.extractor.id != reference.card["extractor_id"]:
            raise ValueError(
                f"LiveFID: reference {reference.name} was computed with {reference.card['extractor_id']}"
                f", not {self.extractor.id}. Fix: use reference statistics of this extractor "
                "(reference_stats(..., extractor=...))."
            )
        self.reference = reference
        self.bootstrap, self.ci_level, self.inf_points = bootstrap, ci_level, inf_points
        self.kid_subset_size, self.kid_subsets, self.seed, self.clock = kid_subset_size, kid_subsets, seed, clock
        self._features: list[Tensor] = []
        self._last: FIDResult | None = None
        self._last_time = -float("inf")

    @property
    def n(self) -> int:
        """Generated images seen so far."""
        return sum(len(f) for f in self._features)

    @property
    def features(self) -> Tensor:
        """The features of every image so far, in the order they were added: (n, F)."""
        return torch.cat(self._features) if self._features else torch.empty(0, self.extractor.num_features)

    def update(self, images: Tensor) -> None:
        """Add a batch of generated images (B, C, H, W) in [-1, 1]."""
        self._features.append(extract_features(self.extractor, images))

    def reset(self) -> None:
        """Forget the generated images (the reference stays)."""
        self._features, self._last, self._last_time = [], None, -float("inf")

    def compute(self) -> FIDResult:
        """Score all images so far (needs at least 2)."""
        start = time.perf_counter()
        if self.n < 2:
            raise ValueError(f"LiveFID: {self.n} generated image(s); FID needs 2. Fix: update() with more images.")
        feats = torch.cat(self._features)  # (n, F)
        g = torch.Generator().manual_seed(self.seed)
        fid = fid_from_features(feats, self.reference)
        kid_mean, kid_std, m = kid(feats, self.reference.kid_features, self.kid_subset_size, self.kid_subsets, g)
        ci = bootstrap_fid(feats, self.reference, self.bootstrap, self.ci_level, g) if self.bootstrap else None
        inf = (
            fid_infinity(feats, self.reference, self.inf_points, generator=g)
            if self.inf_points and self.n >= 10
            else None
        )
        self._last = FIDResult(
            fid,
            self.n,
            kid_mean,
            kid_std,
            m,
            ci,
            self.ci_level,
            inf,
            self.extractor.id,
            self.reference.name,
            self.reference.count,
            time.perf_counter() - start,
        )
        self._last_time = self.clock()
        return self._last

    def maybe_compute(self, min_interval_s: float) -> FIDResult | None:
        """compute(), unless the last one is under `min_interval_s` old or nothing was added since: then the
        cached result (None while fewer than 2 images were seen)."""
        fresh = self._last is not None and (self._last.n == self.n or self.clock() - self._last_time < min_interval_s)
        if fresh or self.n < 2:
            return self._last
        return self.compute()


def compute_fid(
    generated: Tensor | Iterable[Tensor],
    reference: ReferenceStats | Tensor | Iterable[Tensor],
    extractor: str | nn.Module | None = None,
    **live_options,
) -> FIDResult:
    """FID, KID, bootstrap interval and FID-infinity of generated images (N, C, H, W) in [-1, 1] (or batches)
    against reference statistics or real images; the extractor defaults to the reference's, else "inception".
    `live_options` go to LiveFID (bootstrap, inf_points, kid_subset_size, kid_subsets, seed)."""
    if not isinstance(reference, ReferenceStats):
        extractor = resolve_extractor(extractor or "inception")
        real = extract_features(extractor, reference)
        reference = ReferenceStats.from_features(
            real, {"name": f"images-{len(real)}", "extractor": extractor.name, "extractor_id": extractor.id}
        )
    live = LiveFID(reference, extractor, **live_options)
    for batch in generated.split(256) if isinstance(generated, Tensor) else generated:
        live.update(batch)
    return live.compute()
