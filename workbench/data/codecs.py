"""Latent codecs: images (B, C, H, W) in [-1, 1] <-> latents (B, c, h, w); reconstruction quality; an on-disk
latent cache keyed by the codec's hash.

The model sees latents only; patching into tokens is the model's job, not the codec's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..core.config import DataConfig
from ..core.paths import CACHE_DIR, CODECS_DIR, REPO_ROOT, sha256_file

CODEC_CARD = "card.json"  # the card of a codec trained here: data, steps, losses, and the sha256 of every file
AUTOENCODERS = ("AutoencoderKL", "AutoencoderTiny")  # the diffusers classes VAECodec loads
TRAIN_CODEC = "python scripts/train_codec.py"
LATENT_CACHE_DIR = CACHE_DIR / "latents"  # where training keeps the latents of each (dataset, codec)


class Codec(nn.Module, ABC):
    """Images in [-1, 1] <-> latents. `downsample`: pixels per latent pixel; `identity`: a dict naming the exact
    mapping (cache keys hash it)."""

    downsample: int
    latent_channels: int

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [-1, 1] -> (B, latent_channels, H / downsample, W / downsample) latents."""

    @abstractmethod
    def decode(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """(B, latent_channels, h, w) latents -> (B, C, h * downsample, w * downsample) images in [-1, 1] (clamped;
        clamp=False returns what the decoder gives, to measure how far a sampler leaves the range)."""

    @property
    @abstractmethod
    def identity(self) -> dict:
        """What determines the latents: changing any of it must change the cache key."""

    @property
    def codec_hash(self) -> str:
        """16 hex digits of the sha256 of `identity`: the name latent caches know the codec by."""
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]


class PixelCodec(Codec):
    """The identity: the model works on pixels (small images). decode clamps to [-1, 1]."""

    def __init__(self, channels: int):
        super().__init__()
        self.downsample, self.latent_channels = 1, channels

    @property
    def identity(self) -> dict:
        return {"codec": "pixel", "channels": self.latent_channels}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        _check_channels(images, self.latent_channels, "PixelCodec.encode", "images")
        return images

    def decode(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        _check_channels(latents, self.latent_channels, "PixelCodec.decode", "latents")
        return latents.clamp(-1, 1) if clamp else latents


def _check_channels(x: torch.Tensor, channels: int, where: str, what: str) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(
            f"{where}: expected {what} (B, {channels}, H, W), got {tuple(x.shape)}. Fix: match "
            "data.channels / the codec's channels, and batch single images with x[None]."
        )


class VAECodec(Codec):
    """A diffusers AutoencoderKL or AutoencoderTiny loaded from a local folder (never the network).

    latents = (z - shift) * latent_scale, z = the KL posterior mean or the Tiny encoder's output; decode inverts it;
    latent_scale=0 takes the folder's config.scaling_factor. The posterior mean makes encoding deterministic, so a
    latent cache, validation losses and FID references are reproducible; the SD-VAE posterior std is small, so
    sampling (sample=True, or pass a generator; KL only) adds little. A folder with a card.json (the codecs trained
    by scripts/train_codec.py) is checked against the sha256 its card records for each file before anything is
    loaded. Runs without grad in chunks of `batch_size` on the VAE's device (`device`, or wherever the module is
    moved); results come back on the input's device and dtype.
    """

    def __init__(
        self,
        path: str | Path,
        latent_scale: float,
        device: torch.device | str | None = None,
        sample: bool = False,
        batch_size: int = 16,
    ):
        super().__init__()
        import diffusers  # heavy import, paid only by VAE users

        self.path = Path(path).expanduser().resolve()
        if not (self.path / "config.json").is_file() and self.path.is_relative_to(CODECS_DIR.resolve()):
            raise FileNotFoundError(
                f"codec {self.path} not found (no config.json): it is trained here. Fix: "
                f"{TRAIN_CODEC} --name {self.path.name} (on CPU; see data/README.md)."
            )
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(
                f"VAE folder {self.path} not found (no config.json). Fix: on a machine with network run "
                'python -c "from diffusers import AutoencoderKL; AutoencoderKL.from_pretrained('
                f"'stabilityai/sd-vae-ft-mse').save_pretrained('{self.path}')\" and copy the folder here, set "
                f"data.vae_path to a local diffusers AutoencoderKL folder, or train a codec ({TRAIN_CODEC})."
            )
        if (self.path / CODEC_CARD).is_file() or self.path.is_relative_to(CODECS_DIR.resolve()):
            self._file_hashes = verify_codec(self.path)  # before loading: a refused file is never read as weights
        kind = json.loads((self.path / "config.json").read_text()).get("_class_name")
        if kind not in AUTOENCODERS:
            raise ValueError(
                f"{self.path / 'config.json'}: a {kind!r}, not one of {', '.join(AUTOENCODERS)}. Fix: "
                "point data.vae_path at a diffusers autoencoder folder."
            )
        self.vae = getattr(diffusers, kind).from_pretrained(self.path, local_files_only=True, low_cpu_mem_usage=False)
        self.vae.requires_grad_(False).eval()
        if device is not None:
            self.vae.to(device)
        self.tiny = kind == "AutoencoderTiny"  # no posterior: its encoder gives the latents directly
        # an all-convolution net: channels-last runs it 1.7x faster on CPU (benchmarks/bench_codec.py)
        self.layout = torch.channels_last if self.tiny else torch.contiguous_format
        self.vae.to(memory_format=self.layout)
        if sample and self.tiny:
            raise ValueError(
                f"VAECodec: sample=True draws from a posterior, and the AutoencoderTiny at {self.path} "
                "has none. Fix: sample=False."
            )
        cfg = self.vae.config
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1)  # one 2x downsampler between encoder blocks
        self.latent_channels, self.image_channels = cfg.latent_channels, cfg.in_channels
        self.latent_scale = float(latent_scale or cfg.get("scaling_factor") or 1.0)
        self.shift, self.sample, self.batch_size = float(cfg.get("shift_factor") or 0.0), sample, batch_size

    @cached_property
    def _file_hashes(self) -> dict[str, str]:
        return codec_files(self.path)

    @property
    def identity(self) -> dict:
        weights = hashlib.sha256("".join(f"{n}:{h}" for n, h in sorted(self._file_hashes.items())).encode())
        return {
            "codec": "vae",
            "weights": weights.hexdigest(),
            "latent_scale": self.latent_scale,
            "shift": self.shift,
            "sample": self.sample,
        }

    def _chunks(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.device, torch.dtype]:
        p = next(self.vae.parameters())
        chunks = x.to(p.device, p.dtype).split(self.batch_size)
        return [c.contiguous(memory_format=self.layout) for c in chunks], x.device, x.dtype

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_channels(images, self.image_channels, "VAECodec.encode", "images")
        chunks, device, dtype = self._chunks(images)
        out = []
        for x in chunks:  # (b, 3, H, W)
            if self.tiny:
                z = self.vae.encode(x).latents
            else:
                posterior = self.vae.encode(x).latent_dist
                z = posterior.sample(generator) if (self.sample or generator is not None) else posterior.mean
            out.append((z - self.shift) * self.latent_scale)  # (b, c, H / f, W / f)
        return torch.cat(out).to(device, dtype).contiguous()  # the posterior mean is a strided view

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        _check_channels(latents, self.latent_channels, "VAECodec.decode", "latents")
        chunks, device, dtype = self._chunks(latents)
        out = [self.vae.decode(z / self.latent_scale + self.shift).sample for z in chunks]  # (b, 3, H, W)
        out = [x.clamp(-1, 1) for x in out] if clamp else out
        return torch.cat(out).to(device, dtype).contiguous()


def codec_files(path: Path) -> dict[str, str]:
    """{file name: sha256} of what determines a codec folder's latents: its config and weights (not the card)."""
    return {
        p.name: sha256_file(p)
        for p in sorted(path.iterdir())
        if p.suffix in (".safetensors", ".bin", ".json") and p.name != CODEC_CARD
    }


def verify_codec(path: Path) -> dict[str, str]:
    """Check a codec folder against the sha256 of every file its card.json records; return {file name: sha256}.
    A changed, missing or unrecorded file (or a missing card) is refused, naming the file, both hashes and the fix."""
    card = path / CODEC_CARD
    fix = (
        f"Fix: restore the folder as shipped (git checkout -- {path}) or retrain it ({TRAIN_CODEC} --name {path.name})."
    )
    if not card.is_file():
        raise ValueError(
            f"{path}: no {CODEC_CARD}; a codec under {CODECS_DIR} is one trained here, and its card holds "
            f"the sha256 its files are checked against. {fix}"
        )
    recorded, found = json.loads(card.read_text()).get("files", {}), codec_files(path)
    for name in sorted(set(recorded) | set(found)):
        if recorded.get(name) != found.get(name):
            raise ValueError(
                f"{path / name}: sha256 {found.get(name, 'absent')[:16]} differs from the "
                f"{recorded.get(name, 'unrecorded')[:16]} that {card.name} records, so the codec is not "
                f"the one trained and measured there. {fix}"
            )
    return found


@torch.no_grad()
def measure_reconstruction(
    codec: Codec, batches: Iterable[torch.Tensor], on_pairs: Callable[[torch.Tensor, torch.Tensor], None] | None = None
) -> dict:
    """Encode and decode batches of images (B, C, H, W) in [-1, 1]: PSNR per image (dB, peak 1 on pixels in
    [0, 1]) averaged and its std, the mean squared error, n, and encode / decode seconds per image.
    `on_pairs(images, reconstructions)` sees every batch (FID features, figures)."""
    psnr, sq, n, enc_s, dec_s = [], 0.0, 0, 0.0, 0.0
    for images in batches:
        t0 = time.perf_counter()
        z = codec.encode(images)
        t1 = time.perf_counter()
        out = codec.decode(z)  # (B, C, H, W), clamped to [-1, 1]
        enc_s, dec_s = enc_s + t1 - t0, dec_s + time.perf_counter() - t1
        mse = ((out.float() - images.float()) / 2).square().flatten(1).mean(1)  # (B,) on the [0, 1] scale
        psnr.append(-10 * torch.log10(mse.clamp_min(1e-10)))
        sq, n = sq + float(mse.sum()), n + len(images)
        if on_pairs is not None:
            on_pairs(images, out)
    if not n:
        raise ValueError("measure_reconstruction: no images. Fix: pass at least one batch.")
    psnr = torch.cat(psnr)
    return {
        "psnr": float(psnr.mean()),
        "psnr_std": float(psnr.std()) if n > 1 else math.nan,
        "mse": sq / n,
        "n": n,
        "encode_seconds_per_image": enc_s / n,
        "decode_seconds_per_image": dec_s / n,
    }


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or p.exists() else REPO_ROOT / p


def build_codec(cfg: DataConfig, device: torch.device | str | None = None) -> Codec:
    """The codec of a data config: PixelCodec(channels) or VAECodec(vae_path, latent_scale); a relative vae_path
    is looked up from the working directory, then from the repo root."""
    if cfg.codec == "pixel":
        return PixelCodec(cfg.channels)
    codec = VAECodec(_resolve(cfg.vae_path), cfg.latent_scale, device)
    if codec.downsample != cfg.downsample:
        raise ValueError(
            f"data.vae_path: the VAE at {codec.path} downsamples by {codec.downsample}, but the config "
            f"sizes the latent grid for x1/{cfg.downsample}. Fix: use an 8x VAE such as sd-vae-ft-mse."
        )
    return codec


class LatentCache(Dataset):
    """A dataset encoded once and stored as <path>/latents-<data key>-<codec hash>.safetensors, data key =
    hash(dataset.identity, flips); later runs load it (`hit` is True; `seconds` is the encoding time of a build).
    `path` may also name the .safetensors file itself. A stored cache whose codec or dataset is not this one (a file
    copied, renamed or named explicitly) is refused, naming both hashes. Serves (latent (c, h, w), label) for an
    index or an (index, flip) key like the image datasets; flips=True also stores the latents of the mirrored images,
    because mirroring latents is not the same as encoding a mirrored image."""

    def __init__(
        self,
        codec: Codec,
        dataset: Dataset,
        path: str | Path = LATENT_CACHE_DIR,
        flips: bool = False,
        batch_size: int = 64,
    ):
        if not hasattr(dataset, "identity"):
            raise TypeError(
                f"LatentCache: {type(dataset).__name__} has no `identity` to key the cache. Fix: use a "
                "dataset from workbench.data.datasets.build_dataset."
            )
        data = json.dumps({"dataset": dataset.identity, "flips": flips}, sort_keys=True)
        meta = {
            "codec": codec.codec_hash,
            "codec_identity": json.dumps(codec.identity, sort_keys=True),
            "data": hashlib.sha256(data.encode()).hexdigest()[:16],
            "data_identity": data,
        }
        path = Path(path)
        name = f"latents-{meta['data']}-{meta['codec']}.safetensors"
        self.file = path if path.suffix == ".safetensors" else path / name
        self.flips, self.hit, self.seconds = flips, self.file.is_file(), 0.0
        if self.hit:
            self._check(meta)
        else:
            t0 = time.perf_counter()
            self._build(codec, dataset, batch_size, meta)
            self.seconds = time.perf_counter() - t0
        stored = load_file(self.file)
        self.latents, self.labels = stored["latents"], stored["labels"]  # (N, c, h, w), (N,)
        self.flipped = stored.get("flipped")  # (N, c, h, w) or None

    def _check(self, meta: dict) -> None:
        with safe_open(self.file, "pt") as f:
            stored = f.metadata() or {}
        for what, fix in (
            ("codec", "set data.vae_path and data.latent_scale back to the codec it was built with"),
            ("data", "use the dataset (and data.random_flip) it was built from"),
        ):
            if stored.get(what) != meta[what]:
                raise ValueError(
                    f"{self.file}: latent cache built with {what} {stored.get(what, 'unknown')} "
                    f"({stored.get(what + '_identity', 'no record')}), but this run's {what} is {meta[what]} "
                    f"({meta[what + '_identity']}). Fix: delete {self.file} to encode the dataset again, or {fix}."
                )

    def _build(self, codec: Codec, dataset: Dataset, batch_size: int, meta: dict) -> None:
        latents, flipped, labels = [], [], []
        for images, y in DataLoader(dataset, batch_size):  # (b, C, H, W), (b,)
            latents.append(codec.encode(images).float().cpu())
            if self.flips:
                flipped.append(codec.encode(images.flip(-1)).float().cpu())
            labels.append(y)
        tensors = {"latents": torch.cat(latents), "labels": torch.cat(labels)}
        if self.flips:
            tensors["flipped"] = torch.cat(flipped)
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(f".{os.getpid()}.tmp")
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, self.file)  # atomic: a killed run never leaves a half-written cache behind

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, bool]) -> tuple[torch.Tensor, int]:
        index, flip = key if isinstance(key, tuple) else (key, False)
        if flip and self.flipped is None:
            raise ValueError(
                f"{self.file}: flipped latents requested but the cache was built with flips=False. "
                "Fix: build LatentCache(..., flips=True) or set data.random_flip=false."
            )
        return (self.flipped if flip else self.latents)[index], int(self.labels[index])
