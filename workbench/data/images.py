"""Images in [-1, 1] -> uint8 pixels -> a tiled grid PNG (sample grids of training, the CLI and the notebooks)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) float in [-1, 1] -> (B, H, W, C) uint8 (C = 1 or 3)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (B, C, H, W)
    return x.permute(0, 2, 3, 1).numpy()


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> Image.Image:
    """Tile (B, C, H, W) images in [-1, 1] into one PIL image, `nrow` per row (default: about square)."""
    pixels = to_uint8(images)  # (B, H, W, C)
    B, H, W, C = pixels.shape
    nrow = nrow or math.ceil(math.sqrt(B))
    rows = math.ceil(B / nrow)
    grid = np.zeros((rows * (H + pad) + pad, nrow * (W + pad) + pad, C), dtype=np.uint8)
    for i, img in enumerate(pixels):
        r, c = divmod(i, nrow)
        grid[pad + r * (H + pad) : pad + r * (H + pad) + H, pad + c * (W + pad) : pad + c * (W + pad) + W] = img
    return Image.fromarray(grid[..., 0] if C == 1 else grid)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Write image_grid(images) as a PNG (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, nrow).save(path)
    return path
