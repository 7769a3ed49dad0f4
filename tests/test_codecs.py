"""Codecs and the latent cache, with a tiny randomly initialised AutoencoderKL saved locally (never a download)."""
import pytest
import torch
from diffusers import AutoencoderKL
from torch.utils.data import Dataset

from workbench.codecs import LatentCache, PixelCodec, VAECodec, build_codec
from workbench.config import DataConfig


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32,
                        sample_size=32)
    path = tmp_path_factory.mktemp("tiny-vae")
    vae.save_pretrained(path)
    return path


class Noise(Dataset):
    """A stand-in image dataset with the `identity` LatentCache keys on."""

    def __init__(self, n=6, seed=0):
        self.images = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        self.identity = {"dataset": "noise", "n": n, "seed": seed}

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i % 2


def test_pixel_codec_round_trip_is_exact():
    codec = PixelCodec(3)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert codec.downsample == 1 and codec.latent_channels == 3
    assert torch.equal(codec.decode(codec.encode(x)), x)
    assert codec.decode(torch.full((1, 3, 2, 2), 5.0)).max() == 1  # decode lands in [-1, 1]
    with pytest.raises(ValueError, match=r"expected images \(B, 3, H, W\), got \(2, 1, 8, 8\).*Fix"):
        codec.encode(x[:, :1])
    assert isinstance(build_codec(DataConfig(channels=1)), PixelCodec)


def test_vae_codec_shapes_scaling_and_determinism(vae_dir):
    codec = VAECodec(vae_dir, latent_scale=0.5, batch_size=3)
    assert codec.downsample == 2 and codec.latent_channels == 4  # read from the VAE's config, not assumed 8
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    z = codec.encode(x)  # (5, 4, 8, 8), in chunks of 3
    assert z.shape == (5, 4, 8, 8) and not z.requires_grad
    assert torch.equal(z, codec.encode(x))  # posterior mean: deterministic
    with torch.no_grad():
        mean = codec.vae.encode(x).latent_dist.mean
    assert torch.allclose(z, mean * 0.5, atol=1e-5)  # the scaling factor is applied on encode
    y = codec.decode(z)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    with torch.no_grad():
        assert torch.allclose(y, codec.vae.decode(mean).sample.clamp(-1, 1), atol=1e-5)  # ... and removed on decode
    g = torch.Generator().manual_seed(0)
    sampled = codec.encode(x, generator=g)
    assert not torch.equal(sampled, z) and sampled.shape == z.shape


def test_missing_vae_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-vae not found.*sd-vae-ft-mse.*save_pretrained"):
        VAECodec(tmp_path / "no-vae", latent_scale=0.18215)


def test_build_codec_rejects_a_vae_the_config_cannot_size(vae_dir):
    cfg = DataConfig(codec="vae", vae_path=str(vae_dir), channels=3, latent_scale=0.18215)
    with pytest.raises(ValueError, match="downsamples by 2.*x1/8.*Fix"):
        build_codec(cfg)


def test_latent_cache_hits_and_misses(vae_dir, tmp_path):
    codec, ds = VAECodec(vae_dir, latent_scale=0.5), Noise()
    first = LatentCache(codec, ds, tmp_path, flips=True, batch_size=4)
    assert not first.hit and len(first) == 6
    second = LatentCache(codec, ds, tmp_path, flips=True)
    assert second.hit and second.file == first.file
    assert torch.equal(second.latents, first.latents) and torch.equal(second.labels, first.labels)
    z, y = second[3]
    assert torch.allclose(z, codec.encode(ds.images[3:4])[0], atol=1e-6) and y == 1
    assert torch.allclose(second[3, True][0], codec.encode(ds.images[3:4].flip(-1))[0], atol=1e-6)
    rescaled = LatentCache(VAECodec(vae_dir, latent_scale=0.25), ds, tmp_path, flips=True)
    assert not rescaled.hit and rescaled.file != first.file  # a changed codec config misses the cache
    assert torch.allclose(rescaled.latents, first.latents / 2, atol=1e-6)
    assert not LatentCache(codec, Noise(seed=1), tmp_path).hit  # so does another dataset
    with pytest.raises(ValueError, match="flips=False.*Fix"):
        LatentCache(codec, ds, tmp_path)[0, True]
