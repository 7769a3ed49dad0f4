"""A stand-in for the fetched Fluent 3D package (tests never download it): RGBA WebP images under assets/ and their
SHA256SUMS, laid out as scripts/fetch_fluent_emoji.sh leaves them, and a tiny untrained codec folder with its card."""

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from workbench.data.codecs import CODEC_CARD, codec_files
from workbench.data.datasets import HELD_OUT_PERCENT, _held_out
from workbench.data.emoji import fluent_base

# code point sequences as the package names them: a person in five tones, smileys, hands, objects, a keycap
NAMES = [
    "1f3c3.webp",
    *(f"1f3c3-{t:x}.webp" for t in range(0x1F3FB, 0x1F400)),
    "1f600.webp",
    "1f60d.webp",
    "1f914.webp",
    "1f44d.webp",
    "1f44d-1f3fd.webp",
    "1f34e.webp",
    "1f680.webp",
    "1f4a1.webp",
    "2615.webp",
    "0023-fe0f-20e3.webp",
    "1f1e6-1f1e8.webp",
    "1f9e0.webp",
    "1fa90.webp",
    "1f30d.webp",
    "1f3e0.webp",
    "1f4da.webp",
    "1f697.webp",
    "1f6f8.webp",
    "1f52e.webp",
    "1f511.webp",
    "1f609.webp",
    "1f44c.webp",
    "1f44c-1f3fb.webp",
]  # the last three and 1f4a1 fall in the held-out split


def held_out(name: str) -> bool:
    return _held_out(fluent_base(name), HELD_OUT_PERCENT["fluent"])


def write_fluent(root: Path, names: list[str] = NAMES, size: int = 256) -> Path:
    """A disc of a colour drawn from the name on a transparent background whose hidden RGB is random noise (as in
    the real files, where compositing, not dropping alpha, gives the background)."""
    (root / "assets").mkdir(parents=True, exist_ok=True)
    lines = []
    for name in names:
        rng = np.random.default_rng(int.from_bytes(hashlib.md5(name.encode()).digest()[:4], "little"))
        rgba = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)  # (H, W, 4)
        yy, xx = np.mgrid[:size, :size]
        disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * rng.uniform(0.2, 0.4)) ** 2
        rgba[..., 3] = np.where(disc, 255, 0)
        rgba[disc, :3] = rng.integers(0, 256, 3, dtype=np.uint8)
        Image.fromarray(rgba, "RGBA").save(root / "assets" / name, lossless=True, exact=True)  # keep the hidden RGB
        lines.append(f"{hashlib.sha256((root / 'assets' / name).read_bytes()).hexdigest()}  {name}")
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return root


def write_tiny_codec(folder: Path, width: int = 8) -> Path:
    """A randomly initialised AutoencoderTiny (downsampling 8, 4 latent channels) with a card recording its files."""
    import diffusers  # heavy: only the tests that need a codec pay for it
    import torch

    torch.manual_seed(0)
    vae = diffusers.AutoencoderTiny(
        encoder_block_out_channels=(width,) * 4,
        decoder_block_out_channels=(width,) * 4,
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    )
    vae.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("block_out_channels")  # as scripts/train_codec.py writes it (AutoencoderTiny sets it itself)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / CODEC_CARD).write_text(json.dumps({"name": folder.name, "files": codec_files(folder)}))
    return folder
