"""Datasets: Fashion-MNIST (the offline default), colour emoji (Noto glyphs, Fluent 3D images), image folders; a
resumable data order.

Every dataset returns (image, label): a float tensor (C, H, W) in [-1, 1] and an int. The key may be an index
or an (index, flip) pair; EpochSampler yields the pairs, so horizontal flips are drawn from (seed, epoch) like
the order itself and a resumed run sees exactly the same augmented stream.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

from ..core.config import DataConfig
from ..core.paths import REPO_ROOT, sha256_file
from .emoji import (
    EMOJI_FONT,
    EMOJI_GROUPS,
    FETCH_FLUENT,
    FLUENT_BACKGROUND,
    FLUENT_LABELS,
    emoji_arrays,
    fluent_base,
    fluent_class_names,
    fluent_dir,
    fluent_label,
    fluent_manifest,
    fluent_subset,
)
from .latents import cache_root

SPLITS = ("train", "val", "test", "all")  # "all": train and held out together (reference statistics of small sets)
# hash-based held-out share of the datasets without official splits
HELD_OUT_PERCENT = {"emoji": 10, "fluent": 10, "folder": 5}

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
MAX_UPSCALE = 4  # folder images whose shorter side is under image_size / 4 are unusable (thumbnails, icons)
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I")  # Pillow's modes of 16-bit grey files; convert("L") would clip them


# ---- Fashion-MNIST -----------------------------------------------------------------------------------------------
def _fashion_mnist_dirs(root: str) -> list[Path]:
    dirs = []
    for base in (root, os.environ.get("WORKBENCH_DATA", "")):
        if base:
            dirs += [Path(base), Path(base) / "fashion-mnist"]
    return dirs + [REPO_ROOT / "data" / "fashion-mnist", DEBIAN_FASHION_MNIST]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if raw[2] != 0x08 or data.size != int(np.prod(shape)):
        raise ValueError(
            f"{path}: not a uint8 idx file of shape {shape}. Fix: delete it and reinstall "
            "Fashion-MNIST (sudo apt-get install --reinstall dataset-fashion-mnist)."
        )
    return data.reshape(shape)


def fashion_mnist_arrays(split: str = "train", root: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Return Fashion-MNIST as uint8 images (N, 28, 28) and int64 labels (N,); N = 60000 (train) or 10000 (test).

    Searched in order: `root` if given, $WORKBENCH_DATA if set (each: the folder or its fashion-mnist/ sub-folder),
    data/fashion-mnist/ in the repo, Debian's /usr/share/datasets/fashion-mnist (dataset-fashion-mnist).
    """
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"fashion_mnist_arrays: unknown split {split!r}. Fix: use 'train' or 'test'.")
    image_file, label_file = FASHION_MNIST_FILES[split]
    searched = _fashion_mnist_dirs(root)
    for d in searched:
        if (d / image_file).is_file() and (d / label_file).is_file():
            images = _read_idx(d / image_file)  # (N, 28, 28)
            labels = _read_idx(d / label_file).astype(np.int64)  # (N,)
            if images.shape[0] != labels.shape[0]:
                raise ValueError(
                    f"{d}: {images.shape[0]} images but {labels.shape[0]} labels. Fix: reinstall "
                    "Fashion-MNIST (sudo apt-get install --reinstall dataset-fashion-mnist)."
                )
            return images, labels
    raise FileNotFoundError(
        f"Fashion-MNIST {split} files ({image_file}, {label_file}) not found in: "
        f"{', '.join(str(d) for d in searched)}. Fix: sudo apt-get install dataset-fashion-mnist, or point "
        "WORKBENCH_DATA (or data.root) at a folder holding the four idx .gz files."
    )


# ---- datasets ----------------------------------------------------------------------------------------------------
def _to_tensor(a: np.ndarray, channels: int) -> torch.Tensor:
    """uint8 (H, W) or (H, W, 3) -> float (channels, H, W) in [-1, 1]."""
    if a.ndim == 3 and channels == 1:
        a = np.asarray(Image.fromarray(a).convert("L"))  # ITU-R 601 luma, as Pillow converts files
    x = torch.from_numpy(np.array(a, dtype=np.float32))  # (H, W) or (H, W, 3)
    x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)  # (1 or 3, H, W)
    if x.shape[0] != channels:
        x = x.expand(channels, -1, -1)
    return x / 127.5 - 1.0


def _held_out(name: str, percent: int) -> bool:
    """Deterministic hash split, stable across machines and Python runs (unlike hash())."""
    return int.from_bytes(hashlib.md5(name.encode()).digest()[:4], "little") % 100 < percent


def _in_split(name: str, percent: int, split: str) -> bool:
    """Whether the item `name` belongs to `split` of a hash-split dataset ("all" holds every item)."""
    return split == "all" or _held_out(name, percent) != (split == "train")


class ImageDataset(Dataset, ABC):
    """Base of the datasets: `identity` (a dict naming the exact content, used by cache keys) and flip keys."""

    identity: dict

    @abstractmethod
    def item(self, index: int) -> tuple[torch.Tensor, int]:
        """The image (C, H, W) in [-1, 1] and label at `index`, unflipped."""

    def __getitem__(self, key: int | tuple[int, bool]) -> tuple[torch.Tensor, int]:
        index, flip = key if isinstance(key, tuple) else (key, False)
        image, label = self.item(int(index))  # (C, H, W)
        return (image.flip(-1) if flip else image), label

    def report(self) -> str:
        """One line on what loading did to the files (skipped, converted, upscaled); empty when nothing happened."""
        return ""


class FashionMNIST(ImageDataset):
    """Fashion-MNIST: 28x28 zero-padded to 32x32 (its background is black), or resized (LANCZOS) to another size."""

    def __init__(self, cfg: DataConfig, split: str):
        files = {"train": ("train",), "all": ("train", "test")}.get(split, ("test",))  # val, test: the test set
        parts = [fashion_mnist_arrays(f, cfg.root) for f in files]
        self.images = np.concatenate([images for images, _ in parts])  # (N, 28, 28)
        self.labels = np.concatenate([labels for _, labels in parts])  # (N,)
        self.size, self.channels = cfg.image_size, cfg.channels
        self.identity = {"dataset": "fashion-mnist", "split": split, "size": self.size, "channels": self.channels}

    def __len__(self) -> int:
        return len(self.labels)

    def item(self, index: int) -> tuple[torch.Tensor, int]:
        a = self.images[index]  # (28, 28)
        if self.size == 32:
            a = np.pad(a, 2)  # (32, 32)
        else:
            a = np.asarray(Image.fromarray(a).resize((self.size, self.size), Image.LANCZOS))
        return _to_tensor(a, self.channels), int(self.labels[index])


class Emoji(ImageDataset):
    """Noto Color Emoji glyphs rendered on white; ~90/10 train/held-out split by a hash of the code point."""

    def __init__(self, cfg: DataConfig, split: str, limit: int = 0, cache_dir: Path | None = None):
        font = Path(cfg.root) if cfg.root else EMOJI_FONT
        images, labels, cps = emoji_arrays(cfg.image_size, font_path=font, limit=limit, cache_dir=cache_dir)
        keep = np.array([_in_split(f"U+{cp:X}", HELD_OUT_PERCENT["emoji"], split) for cp in cps], dtype=bool)
        self.images, self.labels, self.codepoints = images[keep], labels[keep], cps[keep]
        self.channels = cfg.channels
        self.identity = {
            "dataset": "emoji",
            "split": split,
            "size": cfg.image_size,
            "channels": cfg.channels,
            "pixels": hashlib.sha256(self.images.tobytes()).hexdigest(),
        }

    def __len__(self) -> int:
        return len(self.labels)

    def item(self, index: int) -> tuple[torch.Tensor, int]:
        return _to_tensor(self.images[index], self.channels), int(self.labels[index])


def _folder_classes(root: Path) -> list[str]:
    if not root.is_dir():
        raise FileNotFoundError(
            f"image folder {root} not found. Fix: set data.root to a folder of images "
            "(flat, or one sub-folder per class as in ImageNet's layout)."
        )
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _header(path: Path, index: dict) -> tuple[str, int]:
    """(mode, shorter side) of an image file: from the folder index when it has the file, else from its header."""
    found = index.get(path)
    if isinstance(found, str):
        raise OSError(found)  # unreadable when the index was built
    if found is not None:
        return found[0], found[1]
    with Image.open(path) as im:
        return im.mode, min(im.size)


def folder_index(root: Path, files: list[Path], cache_dir: str = "") -> dict[Path, tuple[str, int] | str]:
    """Each file's (mode, shorter side), or why it is unreadable, cached in <cache>/index/folder-<key>.json where
    the key hashes every file's path, size and modification time: a launch on an unchanged folder opens no image
    (ImageNet's 1.28M headers take minutes); a file added, removed or rewritten changes the key."""
    listing = "\n".join(f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    key = hashlib.sha256(f"{root}\n{listing}".encode()).hexdigest()[:16]
    index_file = cache_root(cache_dir, len(files)) / "index" / f"folder-{key}.json"
    if index_file.is_file():
        stored = json.loads(index_file.read_text())
        return {root / name: (tuple(v) if isinstance(v, list) else v) for name, v in stored.items()}
    found: dict[str, list | str] = {}
    for p in files:
        try:
            found[str(p.relative_to(root))] = list(_header(p, {}))
        except (UnidentifiedImageError, OSError, ValueError) as err:
            found[str(p.relative_to(root))] = f"{type(err).__name__}: {err}"
    index_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_file.with_name(f".{index_file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(found))
    os.replace(tmp, index_file)  # atomic: ranks building it at once leave one whole file
    return {root / name: (tuple(v) if isinstance(v, list) else v) for name, v in found.items()}


class ImageFolder(ImageDataset):
    """Images in a flat folder (label 0) or in class sub-folders (labels: sub-folder names sorted, as ImageNet).

    Each image is centre-cropped to a square and resized (LANCZOS) to image_size: the same as resizing the shorter
    side and cropping the centre. Files whose header Pillow cannot read are caught when the folder is listed;
    files that fail to decode later are caught on loading. With on_corrupt="skip" they are recorded in `skipped`
    (and `num_skipped`) and the next image is served instead, so the stream stays deterministic; decode-time skips
    inside DataLoader workers are recorded in the workers' copies. Images whose shorter side is under
    image_size / MAX_UPSCALE count as unusable like unreadable ones. Other modes are converted to the dataset's
    (RGBA, CMYK, palette, grey <-> RGB; 16-bit grey scaled to 8 bits); `counts` and `report()` say how many.
    `identity` stamps file names and sizes, not contents (hashing ImageNet would take minutes): rewrite an image in
    place and delete the latent cache.
    """

    held_out_percent = HELD_OUT_PERCENT["folder"]
    repair = "delete or replace the file"  # the fix named for an unusable file

    def __init__(self, cfg: DataConfig, split: str):
        if not cfg.root:
            raise ValueError("data.root is empty for dataset 'folder'. Fix: set data.root to your image folder.")
        self.root = Path(cfg.root).expanduser().resolve()
        self.classes = _folder_classes(self.root)
        loose = [p for p in self.root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if self.classes and loose:
            raise ValueError(
                f"{self.root} mixes loose images ({loose[0].name}, ...) with class sub-folders. Fix: "
                "move the loose images into a sub-folder, or point data.root at a flat folder."
            )
        listed = []
        for label, folder in enumerate([self.root / c for c in self.classes] or [self.root]):
            listed += [
                (p, label)
                for p in sorted(folder.rglob("*"))
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
            ]
        self._headers = folder_index(self.root, [p for p, _ in listed], cfg.cache_dir)
        self._collect(cfg, split, listed)
        stamp = hashlib.sha256(
            "\n".join(f"{p.relative_to(self.root)}:{p.stat().st_size}:{y}" for p, y in self.samples).encode()
        ).hexdigest()
        self.identity = {
            "dataset": "folder",
            "root": str(self.root),
            "split": split,
            "size": self.size,
            "channels": self.channels,
            "files": stamp,
        }

    def _split_key(self, path: Path) -> str:
        """The name whose hash puts a file in train or held out."""
        return path.relative_to(self.root).as_posix()

    def _collect(self, cfg: DataConfig, split: str, listed: list[tuple[Path, int]]) -> None:
        """Keep the (path, label) pairs of `split` whose header reads: `samples`; the rest go to `skipped`."""
        self.size, self.mode, self.on_corrupt = cfg.image_size, "L" if cfg.channels == 1 else "RGB", cfg.on_corrupt
        self.channels = cfg.channels
        self.skipped: list[Path] = []
        self.counts: Counter = Counter()  # "missing", "unreadable", "too small", "upscaled", "converted from <mode>"
        held = [(p, y) for p, y in listed if _in_split(self._split_key(p), self.held_out_percent, split)]
        self.samples = [(p, y) for p, y in held if self._readable_header(p)]
        if not self.samples:
            raise ValueError(
                f"{self.root}: no readable images in split {split!r} ({len(listed)} image files in all, "
                f"~{self.held_out_percent}% held out for 'val'/'test'). Fix: add images "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))}) or use split='train'."
            )

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def _corrupt(self, path: Path, err: Exception, kind: str = "unreadable") -> None:
        if self.on_corrupt == "error":
            raise ValueError(
                f"{path}: {kind} image ({type(err).__name__}: {err}). Fix: {self.repair}, or set "
                "data.on_corrupt='skip' to skip unreadable images."
            ) from err
        self.skipped.append(path)
        self.counts[kind] += 1

    def _readable_header(self, path: Path) -> bool:
        try:
            mode, side = _header(path, getattr(self, "_headers", {}))
        except (UnidentifiedImageError, OSError, ValueError) as err:
            self._corrupt(path, err)
            return False
        if side * MAX_UPSCALE < self.size:
            if self.on_corrupt == "error":
                raise ValueError(
                    f"{path}: image too small ({side} px shorter side; image_size={self.size} would "
                    f"upscale it more than {MAX_UPSCALE}x). Fix: delete the file, or set "
                    "data.on_corrupt='skip' to skip unusable images."
                )
            self.skipped.append(path)
            self.counts["too small"] += 1
            return False
        self.counts["upscaled"] += side < self.size
        self.counts[f"converted from {mode}"] += mode != self.mode
        return True

    def report(self) -> str:
        skipped = ", ".join(f"{self.counts[k]} {k}" for k in ("missing", "unreadable", "too small") if self.counts[k])
        converted = ", ".join(
            f"{n} {k.removeprefix('converted from ')}"
            for k, n in sorted(self.counts.items())
            if k.startswith("converted") and n
        )
        parts = [
            f"skipped {self.num_skipped} ({skipped})" if self.skipped else "",
            f"converted to {self.mode}: {converted}" if converted else "",
            f"upscaled {self.counts['upscaled']} smaller than {self.size} px" if self.counts["upscaled"] else "",
        ]
        parts = [p for p in parts if p]
        return f"{self.root}: {len(self)} images; " + "; ".join(parts) if parts else ""

    def __len__(self) -> int:
        return len(self.samples)

    def item(self, index: int) -> tuple[torch.Tensor, int]:
        for k in range(len(self.samples)):
            path, label = self.samples[(index + k) % len(self.samples)]
            try:
                with Image.open(path) as im:
                    im = ImageOps.fit(self._convert(im), (self.size, self.size), Image.LANCZOS)
            except (UnidentifiedImageError, OSError, ValueError) as err:
                self._corrupt(path, err)
                continue
            return _to_tensor(np.asarray(im), self.channels), label
        raise ValueError(f"{self.root}: every image failed to decode. Fix: check the files (see .skipped).")

    def _convert(self, im: Image.Image) -> Image.Image:
        """An opened file as the dataset's mode ("L" or "RGB"), upright."""
        im = ImageOps.exif_transpose(im)  # as a viewer shows it (phone photos store rotated pixels)
        if im.mode in SIXTEEN_BIT:
            im = Image.fromarray(
                (np.asarray(im, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8)
            )  # (H, W), 0..65535 -> 0..255
        return im.convert(self.mode)


class FluentEmoji(ImageFolder):
    """The Fluent 3D emoji (npm @lobehub/fluent-emoji-3d@1.1.0, 256x256 RGBA WebP) composited on FLUENT_BACKGROUND
    and resized (LANCZOS) to image_size; dataset "fluent-people" keeps people, hands and smileys (emoji.fluent_subset).

    Labels (data.labels, emoji.FLUENT_LABELS): the coarse Unicode groups of the Noto dataset (EMOJI_GROUPS), by the
    first code point; or the skin tone (0 none, 1..5); or both (group * 6 + tone). The ~10 %
    held out for 'val'/'test' is drawn by a hash of the name without skin tones, so the five tones of an emoji
    fall on one side. Each file of the split is checked against SHA256SUMS when the dataset is built (~0.1 s for the
    whole set): a missing or changed file is reported as the image folders report an unreadable one
    (data.on_corrupt). `identity` holds the checksums of the files served, not the folder's location.
    """

    held_out_percent = HELD_OUT_PERCENT["fluent"]

    def __init__(self, cfg: DataConfig, split: str):
        self.root = fluent_dir(cfg.root)
        self.repair = f"reinstall the package (delete {self.root}, then {FETCH_FLUENT})"
        self.manifest = fluent_manifest(self.root)
        self.classes = fluent_class_names(cfg.labels)
        names = fluent_subset(sorted(self.manifest), "people" if cfg.dataset == "fluent-people" else "all")
        self._collect(cfg, split, [(self.root / "assets" / n, fluent_label(n, cfg.labels)) for n in names])
        stamp = hashlib.sha256(
            "\n".join(f"{p.name}:{self.manifest[p.name]}:{y}" for p, y in self.samples).encode()
        ).hexdigest()
        self.identity = {
            "dataset": cfg.dataset,
            "split": split,
            "size": self.size,
            "channels": self.channels,
            "background": list(FLUENT_BACKGROUND),
            "files": stamp,
        }

    def _split_key(self, path: Path) -> str:
        return fluent_base(path.name)

    def _readable_header(self, path: Path) -> bool:
        if not path.is_file():
            self._corrupt(path, FileNotFoundError("listed in SHA256SUMS, absent from the folder"), "missing")
            return False
        digest, want = sha256_file(path), self.manifest[path.name]
        if digest != want:
            self._corrupt(path, ValueError(f"sha256 {digest[:12]}... differs from SHA256SUMS' {want[:12]}..."))
            return False
        return super()._readable_header(path)

    def _convert(self, im: Image.Image) -> Image.Image:
        # transparent pixels keep arbitrary colours in these files: composite, never drop the alpha channel
        flat = Image.new("RGBA", im.size, FLUENT_BACKGROUND + (255,))
        flat.alpha_composite(im.convert("RGBA"))
        return flat.convert(self.mode)


class SpacedSubset(ImageDataset):
    """`count` images of `base` at evenly spaced indices (data.max_images: a short run on a few images of every
    part of a sorted set, not the first few names); its identity names the count, so a latent cache of the subset
    never passes for one of the whole set."""

    def __init__(self, base: ImageDataset, count: int):
        self.base = base
        self.indices = [i * len(base) // count for i in range(count)] if count < len(base) else list(range(len(base)))
        self.identity = {**base.identity, "max_images": len(self.indices)}

    def __len__(self) -> int:
        return len(self.indices)

    def item(self, index: int) -> tuple[torch.Tensor, int]:
        return self.base.item(self.indices[index])

    def report(self) -> str:
        return self.base.report()


def training_dataset(cfg: DataConfig, split: str) -> ImageDataset:
    """build_dataset for training and validation: all images, or data.max_images of them (SpacedSubset)."""
    dataset = build_dataset(cfg, split)
    return SpacedSubset(dataset, cfg.max_images) if cfg.max_images else dataset


def build_dataset(cfg: DataConfig, split: str) -> ImageDataset:
    """Return the dataset of `cfg` for split "train", "val", "test" (Fashion-MNIST: val = its test set) or "all"
    (train and held out together)."""
    if split not in SPLITS:
        raise ValueError(f"build_dataset: unknown split {split!r}. Fix: use one of {', '.join(SPLITS)}.")
    return {
        "fashion-mnist": FashionMNIST,
        "emoji": Emoji,
        "fluent": FluentEmoji,
        "fluent-people": FluentEmoji,
        "folder": ImageFolder,
    }[cfg.dataset](cfg, split)


def num_classes(cfg: DataConfig) -> int:
    """Number of class labels of the dataset; 0 for a flat image folder (every label is 0)."""
    if cfg.dataset == "fashion-mnist":
        return 10
    if cfg.dataset in ("fluent", "fluent-people"):
        return FLUENT_LABELS[cfg.labels]
    if cfg.dataset == "emoji":
        return len(EMOJI_GROUPS)
    return len(_folder_classes(Path(cfg.root).expanduser()))


# ---- resumable data order ----------------------------------------------------------------------------------------
class EpochSampler(Sampler):
    """An endless, resumable stream of dataset keys.

    Epoch e visits a permutation of range(n) drawn from (seed, e) (identity order when shuffle=False); with
    flips=True each key is an (index, flip) pair whose flip bit is drawn from the same (seed, e). The state is
    (epoch, position) = divmod(global_index, n), where global_index counts samples taken by all ranks since the
    run began: a run resumed with start_index = global_index yields exactly the tail of the uninterrupted stream.
    Rank r of world_size takes global positions r, r + world_size, ...; set Fabric's use_distributed_sampler=False.
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        start_index: int = 0,
        shuffle: bool = True,
        flips: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        if n < 1 or start_index < 0 or not 0 <= rank < world_size:
            raise ValueError(
                f"EpochSampler: need n >= 1, start_index >= 0, 0 <= rank < world_size; got n={n}, "
                f"start_index={start_index}, rank={rank}, world_size={world_size}. Fix: pass len(dataset) "
                "and the global sample count saved in the checkpoint."
            )
        self.n, self.seed, self.start_index, self.shuffle, self.flips = n, seed, start_index, shuffle, flips
        self.rank, self.world_size = rank, world_size

    def state(self, global_index: int) -> tuple[int, int]:
        """(epoch, position) of a global sample count."""
        return divmod(global_index, self.n)

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The permutation (n,) and flip bits (n,) of one epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        return order, rng.integers(0, 2, self.n).astype(bool)

    def __iter__(self) -> Iterator[int | tuple[int, bool]]:
        g, epoch, order, flip = self.start_index + self.rank, -1, None, None
        while True:
            e, p = divmod(g, self.n)
            if e != epoch:
                epoch, (order, flip) = e, self.epoch_order(e)
            yield (int(order[p]), bool(flip[p])) if self.flips else int(order[p])
            g += self.world_size


@dataclass(frozen=True)
class RankShare:
    """Which share of the data a process takes: rank r of world_size takes global positions r, r + world_size, ..."""

    rank: int = 0
    world_size: int = 1


def make_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool = True,
    seed: int = 0,
    start_index: int = 0,
    flips: bool = False,
    num_workers: int = 0,
    share: RankShare = RankShare(),
) -> DataLoader:
    """train=True: an endless loader over EpochSampler (count steps, not epochs; full batches only).
    train=False: one ordered pass over this rank's share (indices rank, rank + world_size, ...)."""
    rank, world_size = share.rank, share.world_size
    if train:
        sampler = EpochSampler(len(dataset), seed, start_index, flips=flips, rank=rank, world_size=world_size)
        return DataLoader(dataset, batch_size, sampler=sampler, drop_last=True, num_workers=num_workers)
    return DataLoader(dataset, batch_size, sampler=range(rank, len(dataset), world_size), num_workers=num_workers)
