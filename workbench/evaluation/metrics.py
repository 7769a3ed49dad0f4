"""FID and KID of generated images: KID, bootstrap intervals, FID-infinity, and LiveFID (a running estimate for
the app and training loop), which also reports precision/recall and, where the extractor exposes logits, the
Inception Score (fidelity.py); compute_fid scores images in one call.

Feature extractors live in features.py, the Frechet distance in frechet.py, reference statistics in references.py
(their names are re-exported here, where callers have always found them).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.image.kid import poly_mmd

from ..core.paths import REFERENCE_DIR
from .features import extract_features, resolve_extractor
from .fidelity import PR_NEIGHBOURS, inception_score, precision_recall
from .frechet import _factor, _frechet, feature_stats, frechet_distance
from .references import (
    FEATURE_LOG_DIR,
    FeatureOptions,
    RealImages,
    ReferenceStats,
    load_reference,
    real_features,
    reference_stats,
    save_reference,
)

__all__ = [  # the re-exported names, with this module's own
    "FEATURE_LOG_DIR",
    "REFERENCE_DIR",
    "FeatureOptions",
    "RealImages",
    "ReferenceStats",
    "feature_stats",
    "frechet_distance",
    "load_reference",
    "real_features",
    "reference_stats",
    "save_reference",
    "FIDResult",
    "LiveFID",
    "LiveOptions",
    "bootstrap_fid",
    "compute_fid",
    "fid_from_features",
    "fid_infinity",
    "kid",
    "paired_fid_difference",
]


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
    precision: float | None = None  # improved precision (k=3) against the reference's real features; None: none
    recall: float | None = None  # improved recall (k=3)
    pr_counts: tuple[int, int] = (0, 0)  # (real, generated) features behind precision and recall
    inception_score: float | None = None  # IS of the extractor's logits (None: it exposes none)
    inception_score_std: float | None = None  # std over the IS splits

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LiveOptions:
    """What LiveFID.compute() estimates beside FID: a bootstrap interval of `bootstrap` resamples (0: none) at
    `ci_level`, FID-infinity from `inf_points` subset sizes (0: none), KID over `kid_subsets` subsets of
    `kid_subset_size`, precision/recall on at most `pr_max` features a side (0: none); `seed` drives every draw."""

    bootstrap: int = 50
    ci_level: float = 0.9
    inf_points: int = 10
    kid_subset_size: int = 500
    kid_subsets: int = 20
    pr_max: int = 10_000
    seed: int = 0


class LiveFID:
    """Running FID of generated images against fixed (loaded, never recomputed) reference statistics.

    `update(images)` extracts and keeps the features of each batch; `compute()` returns an FIDResult: FID at the
    current n, KID, a bootstrap interval and FID-infinity. The random draws of compute() depend only on `seed`
    and the features, so batch-wise updates give the same result as one update with all images. A UI calls
    `maybe_compute(min_interval_s)`, which reuses the last result until that many seconds have passed.

    Cost of compute(): 1 + bootstrap + inf_points Frechet evaluations. At F = 128 (classifier) they take
    milliseconds. At F = 2048 (Inception) each costs ~n F^2 flops while n < F, but an (F, F) eigendecomposition
    (~1.3 s on 2 cores) once n >= F: lower `bootstrap` and `inf_points` there. The reference's covariance factor
    is computed once, on first use. Precision/recall compare the first `pr_max` generated features with the
    reference's real feature sample (its KID sample), the Inception Score needs an extractor with
    `logits_from_features`. `options` (LiveOptions) sets all of these.

    `device` is where update() runs the extractor (None: on each batch's own device, so images a GPU model made are
    featurised on that GPU); the features are kept, and every statistic computed, on the CPU.
    """

    def __init__(
        self,
        reference: ReferenceStats,
        extractor: str | nn.Module | None = None,
        options: LiveOptions = LiveOptions(),
        clock: Callable[[], float] = time.monotonic,
        device: str | torch.device | None = None,
    ):
        self.extractor = resolve_extractor(extractor or reference.card["extractor"])
        if self.extractor.id != reference.card["extractor_id"]:
            raise ValueError(
                f"LiveFID: reference {reference.name} was computed with {reference.card['extractor_id']}"
                f", not {self.extractor.id}. Fix: use reference statistics of this extractor "
                "(reference_stats(..., extractor=...))."
            )
        if reference.mu.shape[0] != self.extractor.num_features:
            raise ValueError(
                f"LiveFID: reference {reference.name} holds {reference.mu.shape[0]}-d statistics, but "
                f"{self.extractor.id} gives {self.extractor.num_features}-d features. Fix: use a reference of this "
                "extractor."
            )
        self.reference, self.options, self.clock, self.device = reference, options, clock, device
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
        """Add a batch of generated images (B, C, H, W) in [-1, 1], featurised on `device` (None: the batch's)."""
        self._features.append(extract_features(self.extractor, images, device=self.device))

    def add_features(self, features: Tensor) -> None:
        """Add features (B, F) of generated images already extracted with this extractor (sharded evaluation)."""
        if features.ndim != 2 or features.shape[1] != self.extractor.num_features:
            raise ValueError(
                f"LiveFID: features of shape {tuple(features.shape)}, not (B, {self.extractor.num_features}). "
                f"Fix: extract them with {self.extractor.id}."
            )
        self._features.append(features.float().cpu())  # kept on the CPU, as update() keeps them

    def reset(self) -> None:
        """Forget the generated images (the reference stays)."""
        self._features, self._last, self._last_time = [], None, -float("inf")

    def compute(self) -> FIDResult:
        """Score all images so far (needs at least 2)."""
        start = time.perf_counter()
        if self.n < 2:
            raise ValueError(f"LiveFID: {self.n} generated image(s); FID needs 2. Fix: update() with more images.")
        feats, o, ref = torch.cat(self._features), self.options, self.reference  # (n, F)
        g = torch.Generator().manual_seed(o.seed)
        fid = fid_from_features(feats, ref)
        real = ref.kid_features  # (K, F): the reference's real feature sample (empty for mu/sigma-only files)
        kid_mean, kid_std, m = (
            kid(feats, real, o.kid_subset_size, o.kid_subsets, g) if len(real) >= 2 else (math.nan, math.nan, 0)
        )
        ci = bootstrap_fid(feats, ref, o.bootstrap, o.ci_level, g) if o.bootstrap else None
        inf = fid_infinity(feats, ref, o.inf_points, generator=g) if o.inf_points and self.n >= 10 else None
        pr_real, pr_fake = real[: o.pr_max], feats[: o.pr_max]
        has_pr = o.pr_max and min(len(pr_real), len(pr_fake)) > PR_NEIGHBOURS
        precision, recall = precision_recall(pr_real, pr_fake) if has_pr else (None, None)
        logits = getattr(self.extractor, "logits_from_features", None)
        is_mean, is_std = inception_score(logits(feats)) if logits is not None else (None, None)
        self._last = FIDResult(
            fid=fid,
            n=self.n,
            kid_mean=kid_mean,
            kid_std=kid_std,
            kid_subset_size=m,
            fid_ci=ci,
            ci_level=o.ci_level,
            fid_inf=inf,
            extractor=self.extractor.id,
            reference=ref.name,
            reference_count=ref.count,
            seconds=time.perf_counter() - start,
            precision=precision,
            recall=recall,
            pr_counts=(len(pr_real), len(pr_fake)) if has_pr else (0, 0),
            inception_score=is_mean,
            inception_score_std=is_std,
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
    device: str | torch.device | None = None,
    **live_options,
) -> FIDResult:
    """FID, KID, bootstrap interval, FID-infinity, precision/recall (and IS) of generated images (N, C, H, W) in
    [-1, 1] (or batches) against reference statistics or real images; the extractor defaults to the reference's,
    else "inception", and runs on `device` (None: the device of the images). `live_options` are LiveOptions fields
    (bootstrap, inf_points, kid_subsets, seed, ...)."""
    if not isinstance(reference, ReferenceStats):
        extractor = resolve_extractor(extractor or "inception")
        real = extract_features(extractor, reference, device=device)
        reference = ReferenceStats.from_features(
            real, {"name": f"images-{len(real)}", "extractor": extractor.name, "extractor_id": extractor.id}
        )
    live = LiveFID(reference, extractor, LiveOptions(**live_options), device=device)
    for batch in generated.split(256) if isinstance(generated, Tensor) else generated:
        live.update(batch)
    return live.compute()
