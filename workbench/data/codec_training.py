"""The pieces of training a latent codec here that the codec script (scripts/train_codec.py) and the codec
benchmarks share: the autoencoder architecture, the training images decoded once and cut into random crops, the
reconstruction loss of one batch, batches of a dataset in a given order, the seeded sample of training images
whose reconstructions FID scores, and finding a trained codec's folder by name or path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import diffusers
import torch

SIZE = 256  # the codec trains on crops of, and is measured on, images of this side


def build_autoencoder(arch: str, width: int, blocks: int, latent_channels: int) -> torch.nn.Module:
    """A randomly initialised diffusers autoencoder with four stages (downsampling 8) of `width` channels."""
    if arch == "tiny":
        return diffusers.AutoencoderTiny(
            encoder_block_out_channels=(width,) * 4,
            decoder_block_out_channels=(width,) * 4,
            num_encoder_blocks=(1, blocks, blocks, blocks),
            num_decoder_blocks=(blocks, blocks, blocks, 1),
            latent_channels=latent_channels,
        )
    # mid-block attention off: at 32x32 latents it would cost more than the rest of this small encoder
    return diffusers.AutoencoderKL(
        block_out_channels=(width, width, 2 * width, 2 * width),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=blocks,
        latent_channels=latent_channels,
        norm_num_groups=min(32, width),
        mid_block_add_attention=False,
        sample_size=SIZE,
    )


def preload(dataset, n: int) -> torch.Tensor:
    """The first n images of `dataset` decoded once, as uint8 (n, 3, SIZE, SIZE): a WebP decode, composite and resize
    per crop cost 5% of a training step (python -m benchmarks.bench_codec)."""
    out = torch.empty((n, 3, SIZE, SIZE), dtype=torch.uint8)
    for i in range(n):
        out[i] = (
            dataset[i][0].add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)
        )  # exact: pixels are k / 127.5 - 1
    return out


def crops(images: torch.Tensor, batch: int, crop: int, g: torch.Generator) -> torch.Tensor:
    """A batch (B, 3, crop, crop) in [-1, 1] of random crops, half of them mirrored, of the uint8 `images`."""
    index, flip = torch.randint(len(images), (batch,), generator=g), torch.randint(2, (batch,), generator=g)
    y, x = torch.randint(SIZE - crop + 1, (2, batch), generator=g)
    out = []
    for i, f, top, left in zip(index.tolist(), flip.tolist(), y.tolist(), x.tolist()):
        image = images[i, :, top : top + crop, left : left + crop]  # (3, crop, crop)
        out.append(image.flip(-1) if f else image)
    return torch.stack(out).float().div(127.5).sub(1)


def reconstruct(
    vae: torch.nn.Module, x: torch.Tensor, kl_weight: float, g: torch.Generator, bf16: bool = False
) -> dict:
    """The training losses of one batch: l1 + mse (+ kl_weight * kl, KL only), and their parts; `bf16` runs the
    autoencoder under bfloat16 autocast (the losses are taken in float32)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        if isinstance(vae, diffusers.AutoencoderTiny):
            out, kl = vae.decode(vae.encode(x).latents).sample, torch.zeros(())
        else:
            posterior = vae.encode(x).latent_dist
            out, kl = vae.decode(posterior.sample(g)).sample, posterior.kl().mean() / x[0].numel()
    out, kl = out.float(), kl.float()
    l1, mse = (out - x).abs().mean(), (out - x).square().mean()
    return {"loss": l1 + mse + kl_weight * kl, "l1": l1, "mse": mse, "kl": kl, "out": out}


def image_batches(dataset, indices: list[int], batch: int) -> Iterator[torch.Tensor]:
    """The images of `dataset` at `indices`, in that order, stacked `batch` at a time."""
    for i in range(0, len(indices), batch):
        yield torch.stack([dataset[j][0] for j in indices[i : i + batch]])  # (b, 3, SIZE, SIZE)


def fid_sample(train_set, n: int, seed: int) -> list[int]:
    """The indices of the n training images whose reconstructions FID scores (a seeded sample; the cards' and
    python -m benchmarks.codec_fid's)."""
    return torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:n].tolist()


def codec_folder(name: str, out: Path, flag: str = "") -> Path:
    """The codec folder `name` names: a folder under `out`, or a path. A FileNotFoundError naming the fix (prefixed
    by `flag`, the option that named it) if neither has one."""
    src = out / name if (out / name / "config.json").is_file() else Path(name).expanduser()
    if not (src / "config.json").is_file():
        raise FileNotFoundError(
            f"{flag}{name}: no codec there ({src / 'config.json'} is missing). Fix: name a folder under {out} "
            "or the path of a codec folder that scripts/train_codec.py wrote."
        )
    return src
