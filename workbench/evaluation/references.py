"""Reference statistics: what real images look like to a feature extractor (mean, covariance, a sample of real
features for KID and precision/recall) with a provenance card; computed once from a workbench dataset
(`reference_stats`, resumable through a feature log) and kept as .safetensors + .json, or read from and written to
the published .npz layouts (npz.py).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..core.config import DataConfig
from ..core.paths import CACHE_DIR, REFERENCE_DIR, sha256_file
from ..data.datasets import build_dataset
from .features import extract_features, extractor_device, resolve_extractor
from .frechet import _psd_factor, feature_stats

FEATURE_LOG_DIR = CACHE_DIR / "features"  # git-ignored logs of reference features, for resuming


@dataclass
class ReferenceStats:
    """Statistics of real images under one extractor: mu (F,), sigma (F, F) float64, a sample of real features
    for KID (K, F) float32, and the provenance card (dataset, split, count, extractor id, resize path, date)."""

    mu: Tensor
    sigma: Tensor
    kid_features: Tensor
    card: dict
    source: dict = field(default_factory=dict, compare=False)  # the file read: {"file": name, "sha256": digest}

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
    card = {k: v for k, v in card.items() if k != "sha256"}
    return ReferenceStats(t["mu"], t["sigma"], t["kid_features"], card, {"file": path.name, "sha256": digest})


def save_reference(stats: ReferenceStats, path: str | Path) -> str:
    """Write stats as .safetensors plus a .json card holding the provenance and the file's sha256 (each written
    to a temporary file and renamed into place); returns the sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"mu": stats.mu, "sigma": stats.sigma, "kid_features": stats.kid_features}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    digest = sha256_file(tmp)
    card_tmp = path.with_name(f".{path.stem}.json.tmp")
    card_tmp.write_text(json.dumps({**stats.card, "sha256": digest}, indent=2) + "\n")
    tmp.replace(path)
    card_tmp.replace(path.with_suffix(".json"))
    return digest


def _feature_log(
    path: Path, extractor: nn.Module, ds: torch.utils.data.Dataset, order: list[int], n: int, options: FeatureOptions
) -> tuple[Tensor, float]:
    """Features (n, F) of ds[order[:n]] and the seconds they took, computed as `options` say. They are read from,
    resumed in and appended to a log of the permutation's prefix at `path`, saved about every minute: a killed
    computation loses at most a minute, and every smaller n is already there."""
    batch_size, progress = options.batch_size, options.progress
    device = options.device if options.device is not None else extractor_device(extractor)
    feats, seconds = torch.zeros(0, extractor.num_features), 0.0
    if path.is_file():
        with safe_open(str(path), "pt") as f:
            feats, seconds = f.get_tensor("features"), float(f.metadata()["seconds"])
    new, start, saved = [], time.time(), time.time()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, order[len(feats) : n]), batch_size=batch_size)
    for images, _ in loader:
        new.append(extract_features(extractor, images, batch_size, device))  # (B, F) on the CPU
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


@dataclass(frozen=True)
class RealImages:
    """Which real images: a split of a workbench dataset served at `image_size` with `channels` (None: 1 for
    Fashion-MNIST, else 3); `root` is the folder of a "folder" dataset."""

    dataset: str
    split: str = "train"
    image_size: int = 32
    channels: int | None = None
    root: str = ""

    @classmethod
    def of(cls, data: DataConfig, split: str) -> RealImages:
        """The images of a config's data section, in `split`."""
        return cls(data.dataset, split, data.image_size, data.channels, data.root)

    @property
    def label(self) -> str:
        """The dataset's name in file names (a folder dataset is named by its folder)."""
        return f"folder-{Path(self.root).name}" if self.dataset == "folder" else self.dataset

    def build(self) -> torch.utils.data.Dataset:
        """The dataset split, served exactly as training sees it."""
        channels = self.channels or (1 if self.dataset == "fashion-mnist" else 3)
        config = DataConfig(dataset=self.dataset, root=self.root, image_size=self.image_size, channels=channels)
        return build_dataset(config, self.split)


@dataclass(frozen=True)
class FeatureOptions:
    """How real features are computed: the permutation's seed, the batch size, where the resumable feature log
    lives (None: FEATURE_LOG_DIR), `progress(done, n)`, called after every batch, and the device the extractor runs
    on (None: wherever the extractor is; evaluation puts it beside the model). A log resumes on any device: a GPU's
    features differ from a CPU's by rounding only (more of it under TF32 convolutions)."""

    seed: int = 0
    batch_size: int = 64
    log_dir: Path | None = None
    progress: Callable[[int, int], None] | None = None
    device: str | torch.device | None = None


def real_features(
    ds: torch.utils.data.Dataset,
    images: RealImages,
    extractor: nn.Module,
    n: int,
    options: FeatureOptions = FeatureOptions(),
) -> tuple[Tensor, list[int], float]:
    """(features (n, F), the dataset indices they are of, seconds): the first n images of a seed-`options.seed`
    permutation of a built dataset split `ds` (`images` names it), the images reference statistics are made of,
    read from or added to the feature log of that permutation (keyed by the dataset's identity and the extractor),
    so statistics built on this machine make every smaller sample of the same images free."""
    o = options
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(o.seed)).tolist()
    content = hashlib.sha256(json.dumps(ds.identity, sort_keys=True).encode()).hexdigest()[:12]
    log_name = f"{images.label}-{images.image_size}px-{images.split}-{extractor.id}-seed{o.seed}-{content}.safetensors"
    log = Path(o.log_dir or FEATURE_LOG_DIR) / log_name
    feats, seconds = _feature_log(log, extractor, ds, order, n, o)
    return feats, order[:n], seconds


def reference_stats(
    images: RealImages,
    extractor: str | nn.Module = "fmnist-classifier",
    n: int | None = None,
    kid_sample: int = 1000,
    cache_dir: Path = REFERENCE_DIR,
    options: FeatureOptions = FeatureOptions(),
) -> ReferenceStats:
    """Statistics of `n` real `images` (all of the split when None), computed once and cached as
    <cache_dir>/<dataset>-<size>px-<split>-<extractor>-<n>.safetensors with a JSON provenance card.

    The images are the first n of a seed-`options.seed` permutation of the split, served exactly as training sees
    them (Fashion-MNIST: zero-padded to 32x32). Their features are logged in `options.log_dir` (default
    FEATURE_LOG_DIR) while computed, keyed by the dataset's identity too (other files never resume a log), so a
    killed run resumes and a larger n extends a smaller one. A cache computed with other extractor weights is an
    error, never silently reused.
    """
    extractor = resolve_extractor(extractor)
    ds = images.build()
    dataset, split, image_size, seed = images.dataset, images.split, images.image_size, options.seed
    channels = images.channels or (1 if dataset == "fashion-mnist" else 3)
    n = n or len(ds)
    if not 2 <= n <= len(ds):
        raise ValueError(
            f"reference_stats: n={n} but {dataset}/{split} has {len(ds)} images. "
            f"Fix: use 2 <= n <= {len(ds)} (or n=None for all)."
        )
    name = f"{images.label}-{image_size}px-{split}-{extractor.name}-{n}"
    path = Path(cache_dir) / f"{name}.safetensors"
    if path.is_file():
        stats = load_reference(path)
        if stats.card["extractor_id"] != extractor.id:
            raise ValueError(
                f"{path} was computed with {stats.card['extractor_id']}, not {extractor.id}. Fix: "
                "delete it (and its .json) to recompute, or restore the extractor weights it names."
            )
        return stats
    feats, _, seconds = real_features(ds, images, extractor, n, options)
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
    stats.source = {"file": path.name, "sha256": save_reference(stats, path)}
    return stats
