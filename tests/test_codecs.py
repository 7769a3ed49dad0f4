"""Codecs, reconstruction measurement and the latent cache, with a tiny randomly initialised AutoencoderKL saved
locally (never a download), and a codec trained by scripts/train_codec.py on a synthetic Fluent package."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from fluent_fixture import write_fluent
from single_thread import one_thread  # noqa: F401 (autouse)
from torch.utils.data import Dataset

from workbench.core.config import DataConfig
from workbench.core.paths import sha256_file
from workbench.data import codecs
from workbench.data.codecs import Codec, LatentCache, PixelCodec, VAECodec, build_codec, measure_reconstruction
from workbench.data.datasets import build_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_codec.py"


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=32,
    )
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


def test_a_codec_not_trained_yet_names_the_training_command(tmp_path, monkeypatch):
    monkeypatch.setattr(codecs, "CODECS_DIR", tmp_path)  # as if data/codecs/
    with pytest.raises(
        FileNotFoundError, match="fluent3d-tiny not found.*Fix: python scripts/train_codec.py --name fluent3d-tiny"
    ):
        VAECodec(tmp_path / "fluent3d-tiny", latent_scale=0.0)


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


def test_a_cache_built_with_another_codec_or_dataset_is_refused_naming_both_hashes(vae_dir, tmp_path):
    a, b, ds = VAECodec(vae_dir, latent_scale=0.5), VAECodec(vae_dir, latent_scale=0.25), Noise()
    assert a.codec_hash != b.codec_hash and len(a.codec_hash) == 16
    keyed = LatentCache(a, ds, tmp_path / "latents")
    assert keyed.file.name.endswith(f"-{a.codec_hash}.safetensors") and keyed.seconds > 0
    explicit = tmp_path / "mine.safetensors"  # a cache file named outright (e.g. copied to another machine)
    assert not LatentCache(a, ds, explicit).hit and LatentCache(a, ds, explicit).hit
    with pytest.raises(
        ValueError,
        match=f"built with codec {a.codec_hash} .*this run's codec is {b.codec_hash} .*Fix: delete .*mine.safetensors",
    ):
        LatentCache(b, ds, explicit)
    with pytest.raises(ValueError, match="built with data .*this run's data is .*Fix: delete"):
        LatentCache(a, Noise(seed=1), explicit)
    renamed = LatentCache(b, ds, tmp_path / "other").file  # where b's cache of ds would live ...
    renamed.unlink()
    shutil.copy(keyed.file, renamed)  # ... holding a's latents
    with pytest.raises(ValueError, match=f"codec {a.codec_hash} .*codec is {b.codec_hash}"):
        LatentCache(b, ds, tmp_path / "other")


class Offset(Codec):
    """Reconstructs every pixel 0.1 too bright (in [-1, 1]): MSE 0.05^2 on [0, 1] pixels, PSNR 26.02 dB."""

    downsample, latent_channels, identity = 1, 3, {"codec": "offset"}

    def encode(self, images):
        return images

    def decode(self, latents, clamp=True):
        return latents + 0.1


def test_measure_reconstruction_psnr_and_pairs():
    images = torch.rand(5, 3, 8, 8) * 1.6 - 0.8  # (5, 3, 8, 8): + 0.1 stays inside [-1, 1]
    seen = []
    m = measure_reconstruction(Offset(), images.split(2), lambda x, y: seen.append(len(x)))
    assert m["n"] == 5 and seen == [2, 2, 1]
    assert m["psnr"] == pytest.approx(-10 * math.log10(0.05**2), abs=1e-3) and m["psnr_std"] < 1e-3
    assert m["mse"] == pytest.approx(0.05**2, rel=1e-4)
    assert measure_reconstruction(PixelCodec(3), [images])["psnr"] == pytest.approx(100.0)  # exact: capped
    with pytest.raises(ValueError, match="no images.*Fix"):
        measure_reconstruction(PixelCodec(3), [])


# ---- a codec trained here: scripts/train_codec.py on a synthetic Fluent package ------------------------------------
def run_script(*args: str) -> subprocess.CompletedProcess:
    """scripts/train_codec.py with `args` on one thread."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("codec-run")
    fluent = write_fluent(root / "fluent")
    out = run_script(
        "--name",
        "tiny",
        "--out",
        str(root / "codecs"),
        "--root",
        str(fluent),
        "--steps",
        "4",
        "--batch",
        "2",
        "--crop",
        "32",
        "--width",
        "8",
        "--blocks",
        "1",
        "--threads",
        "1",
        "--log-every",
        "2",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return root / "codecs" / "tiny", fluent


def fluent_images(fluent, split="train"):
    ds = build_dataset(DataConfig(dataset="fluent", root=str(fluent), image_size=256, channels=3), split)
    return torch.stack([ds[i][0] for i in range(len(ds))])  # (N, 3, 256, 256)


def test_trained_codec_ships_weights_card_and_standardised_latents(trained):
    folder, fluent = trained
    card = json.loads((folder / "card.json").read_text())
    assert sorted(p.name for p in folder.iterdir()) == [
        "card.json",
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "reconstructions.png",
    ]
    assert [p.name for p in folder.parent.iterdir()] == ["tiny"]  # no temporary folder left behind
    assert card["files"] == {p: sha256_file(folder / p) for p in ("config.json", "diffusion_pytorch_model.safetensors")}
    assert card["class"] == "AutoencoderTiny" and card["train"]["steps"] == 4 and card["data"]["images"] == 25
    assert [e["step"] for e in card["train"]["losses"]] == [2, 4] and all(
        math.isfinite(e["loss"]) for e in card["train"]["losses"]
    )
    assert card["reconstruction"]["val"]["n"] == 4 and math.isfinite(card["reconstruction"]["val"]["psnr"])
    assert sum(p.stat().st_size for p in folder.iterdir()) < 20e6
    codec = build_codec(
        DataConfig(dataset="fluent", image_size=256, channels=3, codec="vae", vae_path=str(folder), latent_scale=0.0)
    )  # 0: the scale the script measured and wrote to config.json
    assert codec.tiny and (codec.downsample, codec.latent_channels) == (8, 4)
    assert codec.latent_scale == pytest.approx(card["latents"]["scaling_factor"])
    z = codec.encode(fluent_images(fluent))  # the 25 images the scale was measured on
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-4) and float(z.std()) == pytest.approx(1.0, abs=1e-4)


def test_trained_codec_shapes_and_determinism(trained):
    folder, fluent = trained
    codec = VAECodec(folder, latent_scale=0.0, batch_size=3)
    x = fluent_images(fluent, "val")  # (4, 3, 256, 256)
    z = codec.encode(x)
    assert z.shape == (4, 4, 32, 32) and torch.equal(z, codec.encode(x)) and torch.equal(z[1:3], codec.encode(x[1:3]))
    y = codec.decode(z)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1 and torch.equal(y, codec.decode(z))
    with pytest.raises(ValueError, match="sample=True.*AutoencoderTiny.*Fix: sample=False"):
        VAECodec(folder, latent_scale=0.0, sample=True)


@pytest.mark.parametrize(
    "tamper,needle",
    [
        ("weights", "model.safetensors: sha256 [0-9a-f]{16} differs from the [0-9a-f]{16} that card.json records"),
        ("config", "config.json: sha256 [0-9a-f]{16} differs"),
        ("extra", "extra.bin: sha256 [0-9a-f]{16} differs from the unrecorded"),
        ("card", "no card.json; a codec under .* is one trained here"),
    ],
)
def test_a_tampered_codec_is_refused_with_the_fix(trained, tmp_path, monkeypatch, tamper, needle):
    folder = tmp_path / "tiny"
    shutil.copytree(trained[0], folder)
    weights = folder / "diffusion_pytorch_model.safetensors"
    if tamper == "weights":
        raw = bytearray(weights.read_bytes())
        raw[-1] ^= 1  # one bit of one weight
        weights.write_bytes(bytes(raw))
    elif tamper == "config":
        (folder / "config.json").write_text((folder / "config.json").read_text().replace('"relu"', '"silu"'))
    elif tamper == "extra":
        (folder / "extra.bin").write_bytes(b"weights from elsewhere")
    else:
        monkeypatch.setattr(codecs, "CODECS_DIR", tmp_path)  # as if under data/codecs/, whose codecs need a card
        (folder / "card.json").unlink()
    with pytest.raises(ValueError, match=needle + ".*Fix: restore the folder .*train_codec.py --name tiny"):
        VAECodec(folder, latent_scale=0.0)


def test_training_continues_from_a_trained_codec_and_records_its_lineage(trained, tmp_path):
    folder, fluent = trained
    out = run_script(
        "--name",
        "more",
        "--out",
        str(tmp_path),
        "--root",
        str(fluent),
        "--init",
        str(folder),
        "--steps",
        "2",
        "--batch",
        "2",
        "--crop",
        "32",
        "--threads",
        "1",
        "--log-every",
        "1",
        "--width",
        "64",
    )  # ignored: the architecture is the init's
    assert out.returncode == 0, out.stdout + out.stderr
    old, new = (json.loads((f / "card.json").read_text()) for f in (folder, tmp_path / "more"))
    assert new["init"]["from"] == "tiny" and new["init"]["files"] == old["files"] and new["init"]["total_steps"] == 4
    assert new["total_steps"] == 6 and new["parameters"] == old["parameters"]
    assert new["train"]["precision"] == "bf16" and new["train"]["channels_last"] is True
    assert new["files"]["diffusion_pytorch_model.safetensors"] != old["files"]["diffusion_pytorch_model.safetensors"]
    VAECodec(tmp_path / "more", latent_scale=0.0)  # its card matches its files


def test_training_from_a_tampered_codec_is_refused_before_its_weights_are_read(trained, tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(trained[0], folder)
    (folder / "extra.bin").write_bytes(b"weights from elsewhere")
    args = [
        "--name",
        "more",
        "--out",
        str(tmp_path / "out"),
        "--root",
        str(trained[1]),
        "--init",
        str(folder),
        "--steps",
        "1",
        "--threads",
        "1",
    ]
    out = run_script(*args)
    assert out.returncode != 0 and f"--init {folder}: " in out.stderr and "extra.bin: sha256" in out.stderr
    assert "Fix:" in out.stderr and not (tmp_path / "out").exists()
    out = run_script(*args[:-5], str(tmp_path / "nowhere"), "--steps", "1")
    assert out.returncode != 0 and "no codec there" in out.stderr and "Fix:" in out.stderr


def _script_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_codec", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("arch", ["tiny", "kl"])
def test_the_adaptive_adversarial_weight_matches_the_gradient_norms_at_the_last_layer(arch):
    tc = _script_module()
    torch.manual_seed(0)
    vae = tc.build_autoencoder(arch, 8, 1, 4)
    critic = tc.PatchCritic(8)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    parts = tc.reconstruct(vae, x, 1e-6, torch.Generator().manual_seed(0))
    out = tc.adversarial(vae, critic, parts, 0.5, bf16=False)
    w = tc.last_layer(vae)
    assert w.shape[0] == 3  # the output convolution
    rec = torch.autograd.grad(parts["loss"], w, retain_graph=True)[0]
    adv = torch.autograd.grad(out["loss"] - parts["loss"], w, retain_graph=True)[0]
    # the critic's term, after the adaptive weight, pulls on the last layer with 0.5 x the reconstruction's strength
    assert float(adv.norm()) == pytest.approx(0.5 * float(rec.norm()), rel=1e-3)
    assert float(out["g_adv"].detach()) == pytest.approx(-float(critic(parts["out"]).mean().detach()), rel=1e-5)


@pytest.mark.parametrize("norm", ["group", "spectral"])
def test_training_with_a_critic_logs_it_records_it_and_ships_no_critic(trained, tmp_path, norm):
    folder, fluent = trained
    out = run_script(
        "--name",
        "gan",
        "--out",
        str(tmp_path),
        "--root",
        str(fluent),
        "--init",
        str(folder),
        "--steps",
        "4",
        "--batch",
        "2",
        "--crop",
        "32",
        "--threads",
        "1",
        "--log-every",
        "1",
        "--adv-weight",
        "0.5",
        "--adv-start",
        "1",
        "--critic-warmup",
        "1",
        "--critic-width",
        "8",
        "--critic-norm",
        norm,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    card = json.loads((tmp_path / "gan" / "card.json").read_text())
    logged = card["train"]["losses"]
    assert "d_loss" not in logged[0]  # before --adv-start
    assert (
        "d_loss" in logged[1] and "lambda" not in logged[1]
    )  # the critic's warm-up: it trains, the codec is untouched
    assert all(k in e for e in logged[2:] for k in ("d_loss", "lambda", "g_adv"))
    assert all(math.isfinite(e["loss"]) and e["lambda"] > 0 for e in logged[2:])
    assert logged[1]["loss"] == pytest.approx(logged[1]["l1"] + logged[1]["mse"])
    adv = card["train"]["adversarial"]
    assert (adv["weight"], adv["start"], adv["critic_warmup"], adv["critic_norm"]) == (0.5, 1, 1, norm)
    assert "critic" in card["train"]["loss"] and "critic" in out.stdout
    assert sorted(p.name for p in (tmp_path / "gan").iterdir()) == [
        "card.json",
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "reconstructions.png",
    ]
    VAECodec(tmp_path / "gan", latent_scale=0.0)


def test_decoder_only_training_keeps_the_latents_bitwise(trained, tmp_path):
    """--freeze-encoder: the encoder's weights, the latents and their standardisation are the init's exactly, the
    decoder changes; without --init the flag is refused with the fix."""
    folder, fluent = trained
    out = run_script(
        "--name",
        "dec",
        "--out",
        str(tmp_path),
        "--root",
        str(fluent),
        "--init",
        str(folder),
        "--freeze-encoder",
        "--steps",
        "3",
        "--batch",
        "2",
        "--crop",
        "32",
        "--threads",
        "1",
        "--lr",
        "1e-2",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    old, new = VAECodec(folder, latent_scale=0.0), VAECodec(tmp_path / "dec", latent_scale=0.0)
    for (name, a), (_, b) in zip(old.vae.encoder.state_dict().items(), new.vae.encoder.state_dict().items()):
        assert torch.equal(a, b), name
    assert any(
        not torch.equal(a, b)
        for a, b in zip(old.vae.decoder.state_dict().values(), new.vae.decoder.state_dict().values())
    )
    x = fluent_images(fluent)[:2]
    with torch.no_grad():
        assert torch.equal(old.encode(x), new.encode(x))
    card = json.loads((tmp_path / "dec" / "card.json").read_text())
    assert card["train"]["trained"].startswith("decoder only")
    assert card["latents"] == json.loads((folder / "card.json").read_text())["latents"]
    out = run_script("--name", "dec", "--out", str(tmp_path), "--freeze-encoder", "--steps", "1")
    assert out.returncode != 0 and "--freeze-encoder" in out.stderr and "Fix: add --init" in out.stderr


@pytest.mark.parametrize("width", [16, 12])
def test_widening_the_decoder_keeps_its_function_and_the_encoder(width):
    """Net2Net widening: at zero noise the wider decoder decodes what the narrow one did (up to float rounding), the
    encoder is copied bitwise; the noise breaks the copies' symmetry; a narrower width is refused with the fix."""
    tc = _script_module()
    torch.manual_seed(0)
    vae = tc.build_autoencoder("tiny", 8, 2, 4).eval()
    wide = tc.widen_decoder(vae, width, 0.0, torch.Generator().manual_seed(0)).eval()
    assert wide.config.decoder_block_out_channels == (width,) * 4 and wide.config.encoder_block_out_channels == (8,) * 4
    assert wide.config.scaling_factor == vae.config.scaling_factor
    convs = [m for m in wide.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels == width and convs[-1].in_channels == width and convs[-1].out_channels == 3
    for (name, a), (_, b) in zip(vae.encoder.state_dict().items(), wide.encoder.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latents
        assert torch.equal(z, wide.encode(x).latents)
        narrow_out, wide_out = vae.decode(z).sample, wide.decode(z).sample
        assert narrow_out.abs().max() > 0.01  # a decoder that outputs something, so equality says something
        torch.testing.assert_close(wide_out, narrow_out, atol=1e-5, rtol=1e-4)
        noisy = tc.widen_decoder(vae, width, 0.05, torch.Generator().manual_seed(0)).eval()
        assert not torch.allclose(noisy.decode(z).sample, narrow_out, atol=1e-5)
    with pytest.raises(SystemExit, match="--decoder-width 4: .*Fix: pass a --decoder-width of at least 8"):
        tc.widen_decoder(vae, 4, 0.0, torch.Generator())


def test_a_widened_decoder_trains_ships_and_keeps_the_latents(trained, tmp_path):
    folder, fluent = trained
    out = run_script(
        "--name",
        "wide",
        "--out",
        str(tmp_path),
        "--root",
        str(fluent),
        "--init",
        str(folder),
        "--freeze-encoder",
        "--decoder-width",
        "16",
        "--steps",
        "2",
        "--batch",
        "2",
        "--crop",
        "32",
        "--threads",
        "1",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    card = json.loads((tmp_path / "wide" / "card.json").read_text())
    assert card["init"]["widened"] == {"decoder_width": 16, "noise": 0.01}
    assert card["parameters"] > json.loads((folder / "card.json").read_text())["parameters"]
    old, new = VAECodec(folder, latent_scale=0.0), VAECodec(tmp_path / "wide", latent_scale=0.0)
    assert new.vae.config.decoder_block_out_channels == [16] * 4
    x = fluent_images(fluent)[:2]
    z = old.encode(x)
    assert torch.equal(z, new.encode(x)) and new.decode(z).shape == x.shape
    out = run_script("--name", "wide", "--out", str(tmp_path), "--decoder-width", "16", "--steps", "1")
    assert out.returncode != 0 and "--decoder-width" in out.stderr and "Fix: add --init" in out.stderr


def test_a_spectrally_normalised_critic_has_unit_spectral_norm_per_layer():
    """--critic-norm spectral: after the power iteration has run a few training forwards, every convolution's
    weight (as a matrix out x in*k*k) has largest singular value 1; GroupNorm is gone; an unknown norm is refused."""
    tc = _script_module()
    torch.manual_seed(0)
    critic = tc.PatchCritic(8, norm="spectral").train()
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in critic.modules())
    x = torch.rand(2, 3, 32, 32)
    for _ in range(30):
        critic(x)
    convs = [m for m in critic.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert float(sigma) == pytest.approx(1.0, rel=0.02)
    plain = tc.PatchCritic(8)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in plain.modules())
    assert max(
        float(torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2))
        for m in plain.modules()
        if isinstance(m, torch.nn.Conv2d)
    ) != pytest.approx(1.0, rel=0.02)
    with pytest.raises(ValueError, match="critic norm 'batch': unknown. Fix: 'group' or 'spectral'"):
        tc.PatchCritic(8, norm="batch")


def test_the_random_feature_network_is_fixed_by_its_seed_and_frozen():
    """RandomFeatures: the same seed gives the same weights, another seed others; nothing in it trains; four stages
    at full, 1/2, 1/4 and 1/8 resolution; its feature scale stays level through depth (Kaiming)."""
    tc = _script_module()
    a, b, c = tc.RandomFeatures(seed=0), tc.RandomFeatures(seed=0), tc.RandomFeatures(seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.stages[0][0].weight, c.stages[0][0].weight)
    assert not any(p.requires_grad for p in a.parameters())
    feats = a(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert [tuple(f.shape) for f in feats] == [(2, 32, 32, 32), (2, 64, 16, 16), (2, 128, 8, 8), (2, 128, 4, 4)]
    rms = [float(f.square().mean().sqrt()) for f in feats]
    assert max(rms) / min(rms) < 10


@pytest.mark.parametrize("loss", ["perceptual", "spectral"])
def test_the_weight_free_losses_vanish_on_the_input_and_pull_the_reconstruction(loss):
    """Each loss is 0 for a perfect reconstruction, positive for a blurred one, adds weight * distance to the loss
    and sends a gradient to the reconstruction (not to the input)."""
    tc = _script_module()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    net = tc.RandomFeatures(seed=0)

    def apply(out: torch.Tensor, weight: float) -> dict:
        parts = {"loss": torch.tensor(0.5), "out": out}
        return (
            tc.perceptual(net, parts, x, weight, bf16=False) if loss == "perceptual" else tc.spectral(parts, x, weight)
        )

    key = "perc" if loss == "perceptual" else "spec"
    assert float(apply(x.clone(), 2.0)[key]) == pytest.approx(0.0, abs=1e-6)
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1).requires_grad_()
    got = apply(blurred, 2.0)
    assert float(got[key].detach()) > 0.01
    assert float(got["loss"].detach()) == pytest.approx(0.5 + 2.0 * float(got[key].detach()), rel=1e-5)
    got["loss"].backward()
    assert blurred.grad is not None and float(blurred.grad.abs().sum()) > 0


def test_the_spectral_loss_ignores_where_a_detail_sits_and_the_pixel_loss_does_not():
    """The amplitude of a tile's spectrum is blind to the phase: the negated texture (same amplitudes, every phase
    turned by pi) costs nothing, while its L1 distance is large; a blur costs."""
    tc = _script_module()
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32) * 0.3
    flipped = tc.spectral({"loss": torch.tensor(0.0), "out": -x}, x, 1.0)
    assert float(flipped["spec"]) == pytest.approx(0.0, abs=1e-5) and float((-x - x).abs().mean()) > 0.3
    blurred = tc.spectral({"loss": torch.tensor(0.0), "out": torch.nn.functional.avg_pool2d(x, 3, 1, 1)}, x, 1.0)
    assert float(blurred["spec"]) > 0.05


@pytest.mark.parametrize(
    "flag,key,words",
    [
        ("--perceptual-weight", "perc", "random VGG-like features"),
        ("--spectral-weight", "spec", "16x16 Hann-windowed amplitude spectra"),
    ],
)
def test_training_with_a_weight_free_loss_logs_and_records_it(trained, tmp_path, flag, key, words):
    folder, fluent = trained
    out = run_script(
        "--name",
        "extra",
        "--out",
        str(tmp_path),
        "--root",
        str(fluent),
        "--init",
        str(folder),
        "--freeze-encoder",
        "--steps",
        "2",
        "--batch",
        "2",
        "--crop",
        "32",
        "--threads",
        "1",
        "--log-every",
        "1",
        flag,
        "0.7",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    card = json.loads((tmp_path / "extra" / "card.json").read_text())
    logged = card["train"]["losses"]
    assert all(e[key] > 0 and e["loss"] == pytest.approx(e["l1"] + e["mse"] + 0.7 * e[key], rel=1e-4) for e in logged)
    assert f"0.7 * L1 of {words}" in card["train"]["loss"] and f"{key} " in out.stdout
    VAECodec(tmp_path / "extra", latent_scale=0.0)


def test_adding_latent_channels_keeps_the_decoded_images_and_the_old_channels(trained, tmp_path):
    """--latent-channels N with --init: the codec's old latent channels come out bitwise as before, the new ones
    carry signal (random weights), and the decoder reads them with zero weights, so reconstructions are unchanged;
    fewer channels than the codec has are refused with the fix."""
    folder, fluent = trained
    tc = _script_module()
    import diffusers

    old = diffusers.AutoencoderTiny.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=False).eval()
    new = tc.widen_latents(old, 6, 1.0, torch.Generator().manual_seed(0)).eval()
    x = fluent_images(fluent)[:2]
    with torch.no_grad():
        z_old, z_new = old.encode(x).latents, new.encode(x).latents
        assert z_new.shape[1] == 6 and torch.equal(z_new[:, : z_old.shape[1]], z_old)
        assert float(z_new[:, z_old.shape[1] :].std()) > 0.01
        assert torch.allclose(new.decode(z_new).sample, old.decode(z_old).sample, atol=1e-6)
    out = run_script(
        "--name",
        "wide",
        "--out",
        str(tmp_path),
        "--root",
        str(fluent),
        "--init",
        str(folder),
        "--latent-channels",
        "6",
        "--steps",
        "1",
        "--batch",
        "2",
        "--crop",
        "32",
        "--threads",
        "1",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    card = json.loads((tmp_path / "wide" / "card.json").read_text())
    assert card["latents"]["channels"] == 6 and card["init"]["widened_latents"]["latent_channels"] == 6
    assert VAECodec(tmp_path / "wide", latent_scale=0.0).latent_channels == 6
    out = run_script(
        "--name",
        "narrow",
        "--out",
        str(tmp_path),
        "--root",
        str(fluent),
        "--init",
        str(folder),
        "--latent-channels",
        "2",
        "--steps",
        "1",
    )
    assert out.returncode != 0 and "--latent-channels 2" in out.stderr and "Fix: pass more than 4" in out.stderr
