"""Latent codecs: images (B, C, H, W) in [-1, 1] <-> latents (B, c, h, w); an on-disk latent cache.

The model sees latents only; patching into tokens is the model's job, not the codec's.
"""
from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from functools import cached_property
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .config import DataConfig
from .paths import CACHE_DIR, REPO_ROOT, sha256_file


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
        raise ValueError(f"{where}: expected {what} (B, {channels}, H, W), got {tuple(x.shape)}. Fix: match "
                         "data.channels / the codec's channels, and batch single images with x[None].")


class VAECodec(Codec):
    """A diffusers AutoencoderKL loaded from a local folder (never the network).

    latents = (posterior mean - shift) * latent_scale; decode inverts it. The posterior mean makes encoding
    deterministic, so a latent cache, validation losses and FID references are reproducible; the SD-VAE posterior
    std is small, so sampling (sample=True, or pass a generator) adds little. Runs without grad in chunks of
    `batch_size` on the VAE's device (`device`, or wherever the module is moved); results come back on the input's
    device and dtype.
    """

    def __init__(self, path: str | Path, latent_scale: float, device: torch.device | str | None = None,
                 sample: bool = False, batch_size: int = 16):
        super().__init__()
        from diffusers import AutoencoderKL  # heavy import, paid only by VAE users

        self.path = Path(path).expanduser().resolve()
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(
                f"VAE folder {self.path} not found (no config.json). Fix: on a machine with network run "
                "python -c \"from diffusers import AutoencoderKL; AutoencoderKL.from_pretrained("
                f"'stabilityai/sd-vae-ft-mse').save_pretrained('{self.path}')\" and copy the folder here, or set "
                "data.vae_path to a local diffusers AutoencoderKL folder.")
        self.vae = AutoencoderKL.from_pretrained(self.path, local_files_only=True, low_cpu_mem_usage=False)
        self.vae.requires_grad_(False).eval()
        if device is not None:
            self.vae.to(device)
        cfg = self.vae.config
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1)  # one 2x downsampler between encoder blocks
        self.latent_channels, self.image_channels = cfg.latent_channels, cfg.in_channels
        self.latent_scale, self.shift = float(latent_scale), float(cfg.get("shift_factor") or 0.0)
        self.sample, self.batch_size = sample, batch_size

    @cached_property
    def _weights_hash(self) -> str:
        files = sorted(p for p in self.path.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
        return hashlib.sha256("".join(f"{p.name}:{sha256_file(p)}" for p in files).encode()).hexdigest()

    @property
    def identity(self) -> dict:
        return {"codec": "vae", "weights": self._weights_hash, "latent_scale": self.latent_scale,
                "shift": self.shift, "sample": self.sample}

    def _chunks(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.device, torch.dtype]:
        p = next(self.vae.parameters())
        return list(x.to(p.device, p.dtype).split(self.batch_size)), x.device, x.dtype

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_channels(images, self.image_channels, "VAECodec.encode", "images")
        chunks, device, dtype = self._chunks(images)
        out = []
        for x in chunks:  # (b, 3, H, W)
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
        return torch.cat(out).to(device, dtype)


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
        raise ValueError(f"data.vae_path: the VAE at {codec.path} downsamples by {codec.downsample}, but the config "
                         f"sizes the latent grid for x1/{cfg.downsample}. Fix: use an 8x VAE such as sd-vae-ft-mse.")
    return codec


class LatentCache(Dataset):
    """A dataset encoded once and stored as <path>/latents-<key>.safetensors, key = hash(codec.identity,
    dataset.identity, flips); later runs load it (`hit` is True). Serves (latent (c, h, w), label) for an index or
    an (index, flip) key like the image datasets; flips=True also stores the latents of the mirrored images, because
    mirroring latents is not the same as encoding a mirrored image."""

    def __init__(self, codec: Codec, dataset: Dataset, path: str | Path = CACHE_DIR, flips: bool = False,
                 batch_size: int = 64):
        if not hasattr(dataset, "identity"):
            raise TypeError(f"LatentCache: {type(dataset).__name__} has no `identity` to key the cache. Fix: use a "
                            "dataset from workbench.data.build_dataset.")
        key = json.dumps({"codec": codec.identity, "dataset": dataset.identity, "flips": flips}, sort_keys=True)
        self.file = Path(path) / f"latents-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
        self.flips, self.hit = flips, self.file.is_file()
        if not self.hit:
            self._build(codec, dataset, batch_size, key)
        stored = load_file(self.file)
        self.latents, self.labels = stored["latents"], stored["labels"]  # (N, c, h, w), (N,)
        self.flipped = stored.get("flipped")  # (N, c, h, w) or None

    def _build(self, codec: Codec, dataset: Dataset, batch_size: int, key: str) -> None:
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
        save_file(tensors, str(tmp), metadata={"key": key})
        os.replace(tmp, self.file)  # atomic: a killed run never leaves a half-written cache behind

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, bool]) -> tuple[torch.Tensor, int]:
        index, flip = key if isinstance(key, tuple) else (key, False)
        if flip and self.flipped is None:
            raise ValueError(f"{self.file}: flipped latents requested but the cache was built with flips=False. "
                             "Fix: build LatentCache(..., flips=True) or set data.random_flip=false.")
        return (self.flipped if flip else self.latents)[index], int(self.labels[index])
