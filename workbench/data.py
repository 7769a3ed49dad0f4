"""Datasets: Fashion-MNIST (the offline default), rendered colour emoji, image folders; a resumable sampler."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


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
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if raw[2] != 0x08 or data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: not a uint8 idx file of shape {shape}. Fix: delete it and reinstall "
                         "Fashion-MNIST (sudo apt-get install --reinstall dataset-fashion-mnist).")
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
            images = _read_idx(d / image_file)           # (N, 28, 28)
            labels = _read_idx(d / label_file).astype(np.int64)  # (N,)
            if images.shape[0] != labels.shape[0]:
                raise ValueError(f"{d}: {images.shape[0]} images but {labels.shape[0]} labels. Fix: reinstall "
                                 "Fashion-MNIST (sudo apt-get install --reinstall dataset-fashion-mnist).")
            return images, labels
    raise FileNotFoundError(
        f"Fashion-MNIST {split} files ({image_file}, {label_file}) not found in: "
        f"{', '.join(str(d) for d in searched)}. Fix: sudo apt-get install dataset-fashion-mnist, or point "
        "WORKBENCH_DATA (or data.root) at a folder holding the four idx .gz files.")
