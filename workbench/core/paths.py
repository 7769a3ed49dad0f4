"""Where the workbench keeps its files, and the one file hash every module uses."""

from __future__ import annotations

import hashlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "data"
CACHE_DIR = DATA_DIR / "cache"  # datasets built here (emoji renders, latent caches); not in git
ZOO_DIR = DATA_DIR / "checkpoints"  # the shipped zoo: exports and their evaluation reports
REFERENCE_DIR = DATA_DIR / "reference"  # FID reference statistics with provenance cards
FEATURES_DIR = DATA_DIR / "features"  # the Fashion-MNIST feature network
CODECS_DIR = DATA_DIR / "codecs"  # latent codecs trained here (scripts/train_codec.py), each with its card


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
