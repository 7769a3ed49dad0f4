"""Train a latent codec here, on CPU: a diffusers AutoencoderTiny (default) or a small AutoencoderKL, downsampling 8,
on random crops of a dataset's training images; measure its reconstructions; ship it as data/codecs/<name>/
(config.json, diffusion_pytorch_model.safetensors, card.json with data, steps, losses, timings, measurements and
the sha256 of every file, reconstructions.png). VAECodec loads the folder and refuses it if a file changed.

    python scripts/train_codec.py --name fluent3d-tiny --steps 2000 --crop 64 --threads 2
    python scripts/train_codec.py --name fluent3d-tiny --measure-only --fid 1000    # add FID to a trained codec
    python scripts/train_codec.py --name fluent3d-tiny --init fluent3d-tiny --steps 4000   # train it further
    python scripts/train_codec.py --name fluent3d-gan --init fluent3d-tiny --adv-weight 0.5 --steps 3000  # + a critic
    python scripts/train_codec.py --name fluent3d-dec --init fluent3d-tiny --freeze-encoder ...  # decoder only
    python scripts/train_codec.py --name fluent3d-wide --init fluent3d-tiny --freeze-encoder --decoder-width 64 ...
    python scripts/train_codec.py --name fluent3d-perc --init fluent3d-tiny --perceptual-weight 3 ...  # random features
    python scripts/train_codec.py --name fluent3d-c8 --init fluent3d-tiny --latent-channels 8 ...  # 8 latent channels

With --adv-weight > 0 a PatchGAN critic, trained here from scratch beside the autoencoder (hinge loss), adds an
adversarial term to the reconstruction loss, weighted adaptively as in VQGAN (the ratio of the two losses' gradient
norms at the decoder's last layer). --perceptual-weight adds the distance of the features of a frozen network with
random weights (no pretrained network is installable offline; random deep features still measure structure),
--spectral-weight the distance of local amplitude spectra. No pretrained network enters the loss: the Inception
network that scores the reconstructions never trains them. --freeze-encoder trains the decoder alone: the latents
stay bitwise those of --init, so latent models trained on them (and their latent caches' contents) stay valid with
the new decoder.

The latents are standardised: config.scaling_factor = 1 / std and shift_factor = mean of the latents of the
measured images, so data.latent_scale = 0 (the codec's own) gives the model unit-variance latents.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import diffusers
import torch

from workbench.core.config import DataConfig
from workbench.core.paths import CODECS_DIR
from workbench.data.codec_training import (
    SIZE,
    build_autoencoder,
    codec_folder,
    crops,
    fid_sample,
    image_batches,
    preload,
    reconstruct,
)
from workbench.data.codecs import CODEC_CARD, VAECodec, codec_files, measure_reconstruction, verify_codec
from workbench.data.datasets import build_dataset
from workbench.data.images import save_grid
from workbench.evaluation.features import feature_extractor
from workbench.evaluation.metrics import ReferenceStats, fid_from_features


@torch.no_grad()
def widen_decoder(
    vae: diffusers.AutoencoderTiny, width: int, noise: float, g: torch.Generator
) -> diffusers.AutoencoderTiny:
    """The same codec with a decoder `width` channels wide, computing the same function (Net2Net's widening): new
    channel j copies old channel j % w, and a layer reading copied channels splits each weight between the copies.
    The encoder is copied as is (its latents stay bitwise the same). Copies of one channel would get the same
    gradient for ever, so `noise` (a fraction of each layer's weight std) perturbs them."""
    old = vae.config.decoder_block_out_channels
    if len(set(old)) != 1 or width < old[0]:
        sys.exit(
            f"--decoder-width {width}: widening needs a decoder of one width no wider than {width}, found "
            f"{list(old)}. Fix: pass a --decoder-width of at least {max(old)}."
        )
    w = old[0]
    new = diffusers.AutoencoderTiny(
        **{
            **{k: v for k, v in vae.config.items() if not k.startswith("_") and k != "block_out_channels"},
            "decoder_block_out_channels": (width,) * len(old),
        }
    )
    new.encoder.load_state_dict(vae.encoder.state_dict())
    src = iter(m for m in vae.decoder.modules() if isinstance(m, torch.nn.Conv2d))
    source = torch.arange(width) % w  # new channel -> the old channel it copies
    copies = torch.bincount(source, minlength=w).float()
    for conv in (m for m in new.decoder.modules() if isinstance(m, torch.nn.Conv2d)):
        old_conv = next(src)
        weight, outs = old_conv.weight, conv.out_channels == width
        if conv.in_channels == width:  # reads widened channels: each copy gets its share
            weight = weight[:, source] / copies[source].view(1, -1, 1, 1)
        if outs:
            weight = weight[source]
            weight = weight + noise * float(old_conv.weight.std()) * torch.randn(weight.shape, generator=g)
        conv.weight.copy_(weight)
        if conv.bias is not None:
            conv.bias.copy_(old_conv.bias[source] if outs else old_conv.bias)
    return new


@torch.no_grad()
def widen_latents(
    vae: diffusers.AutoencoderTiny, channels: int, noise: float, g: torch.Generator
) -> diffusers.AutoencoderTiny:
    """The same codec with `channels` latent channels, decoding as before: the encoder's last convolution keeps its
    old output channels and gets new ones with random weights (`noise` times the old weights' std), and the decoder's
    first convolution reads the new channels with zero weights, so the decoded images are unchanged until training
    finds a use for them."""
    old = vae.config.latent_channels
    if channels <= old:
        sys.exit(
            f"--latent-channels {channels}: the codec of --init has {old}, and only more can be added. Fix: "
            f"pass more than {old}, or leave --latent-channels at the codec's own."
        )
    new = diffusers.AutoencoderTiny(
        **{
            **{k: v for k, v in vae.config.items() if not k.startswith("_") and k != "block_out_channels"},
            "latent_channels": channels,
        }
    )
    resized = {
        f"encoder.layers.{len(vae.encoder.layers) - 1}.weight",
        f"encoder.layers.{len(vae.encoder.layers) - 1}.bias",
        "decoder.layers.0.weight",
    }
    missing, unexpected = new.load_state_dict(
        {k: v for k, v in vae.state_dict().items() if k not in resized}, strict=False
    )
    assert set(missing) == resized and not unexpected, (missing, unexpected)
    enc_old, enc_new = vae.encoder.layers[-1], new.encoder.layers[-1]
    enc_new.weight[:old], enc_new.bias[:old] = enc_old.weight, enc_old.bias
    enc_new.weight[old:] = noise * float(enc_old.weight.std()) * torch.randn(enc_new.weight[old:].shape, generator=g)
    enc_new.bias[old:] = 0
    dec_old, dec_new = vae.decoder.layers[0], new.decoder.layers[0]
    dec_new.weight.zero_()
    dec_new.weight[:, :old] = dec_old.weight
    return new


def encoder_side(vae: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that map pixels to latents (what --freeze-encoder keeps fixed)."""
    return [m for m in (vae.encoder, getattr(vae, "quant_conv", None)) if m is not None]


class PatchCritic(torch.nn.Module):
    """A PatchGAN critic (pix2pix, VQGAN): 4x4 convolutions, `layers` of them strided, one logit per overlapping
    patch of the input. It only trains the codec and is not shipped."""

    def __init__(self, width: int = 32, layers: int = 3, norm: str = "group"):
        super().__init__()
        if norm not in ("group", "spectral"):
            raise ValueError(f"critic norm {norm!r}: unknown. Fix: 'group' or 'spectral'.")
        # spectral: every convolution's weight divided by its largest singular value (SN-GAN), no GroupNorm; the
        # critic is then 1-Lipschitz per layer and cannot swing as far from one step of the codec to the next
        sn = torch.nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda m: m)
        mods, ch = [sn(torch.nn.Conv2d(3, width, 4, 2, 1)), torch.nn.LeakyReLU(0.2)], width
        for i in range(1, layers):
            out = width * min(2**i, 8)
            mods += [sn(torch.nn.Conv2d(ch, out, 4, 2, 1, bias=norm == "spectral"))]
            mods += [torch.nn.GroupNorm(min(32, out // 4), out)] if norm == "group" else []
            mods += [torch.nn.LeakyReLU(0.2)]
            ch = out
        mods.append(sn(torch.nn.Conv2d(ch, 1, 4, 1, 1)))
        self.net = torch.nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RandomFeatures(torch.nn.Module):
    """A frozen VGG-like network with random (Kaiming) weights: four stages of two 3x3 convolutions and ReLU, average
    pooling between them. Its features' distance serves as a perceptual loss that needs no pretrained weights (the
    "generic perceptual loss" of Liu et al., CVPR 2021: a randomly initialised deep network's features already
    capture image structure across scales). Fixed by `seed`; only trains the codec, not shipped."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 128), seed: int = 0):
        super().__init__()
        g, ch, self.stages = torch.Generator().manual_seed(seed), 3, torch.nn.ModuleList()
        for w in widths:
            convs = [torch.nn.Conv2d(ch, w, 3, 1, 1), torch.nn.Conv2d(w, w, 3, 1, 1)]
            for c in convs:
                with torch.no_grad():  # Kaiming normal (fan-in, ReLU): feature scale stays level through depth
                    c.weight.copy_(torch.randn(c.weight.shape, generator=g) * math.sqrt(2 / c.weight[0].numel()))
                    c.bias.zero_()
            self.stages.append(torch.nn.Sequential(convs[0], torch.nn.ReLU(), convs[1], torch.nn.ReLU()))
            ch = w
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(torch.nn.functional.avg_pool2d(x, 2) if i else x)
            feats.append(x)
        return feats


def perceptual(net: RandomFeatures, parts: dict, x: torch.Tensor, weight: float, bf16: bool) -> dict:
    """Add weight * (mean over stages of the L1 distance of `net`'s features of the reconstruction and the input)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        fake, real = net(parts["out"]), net(x)
    dist = sum((f.float() - r.float()).abs().mean() for f, r in zip(fake, real)) / len(fake)
    return {**parts, "loss": parts["loss"] + weight * dist, "perc": dist}


def spectral(parts: dict, x: torch.Tensor, weight: float, patch: int = 16) -> dict:
    """Add weight * the L1 distance of local amplitude spectra: Hann-windowed `patch` tiles (orthonormal 2-D FFT)
    of the reconstruction against the input. The amplitude ignores where within a tile a detail sits, so a blur
    (energy missing at high frequencies) costs what it costs however uncertain the detail's position is."""

    def amplitude(img: torch.Tensor) -> torch.Tensor:
        b, c, h, w = img.shape
        tiles = img[..., : h - h % patch, : w - w % patch].unfold(2, patch, patch).unfold(3, patch, patch)
        win = torch.hann_window(patch, periodic=False, dtype=img.dtype, device=img.device)
        return torch.fft.rfft2(tiles * (win[:, None] * win[None, :]), norm="ortho").abs()

    dist = (amplitude(parts["out"]) - amplitude(x)).abs().mean()
    return {**parts, "loss": parts["loss"] + weight * dist, "spec": dist}


def last_layer(vae: torch.nn.Module) -> torch.Tensor:
    """The weight of the decoder's output convolution (where the adaptive adversarial weight compares gradients)."""
    return vae.decoder.layers[-1].weight if isinstance(vae, diffusers.AutoencoderTiny) else vae.decoder.conv_out.weight


def adversarial(vae: torch.nn.Module, critic: PatchCritic, parts: dict, weight: float, bf16: bool) -> dict:
    """Add the critic's term to the reconstruction loss in `parts`: weight * lambda * (-critic(out)), with lambda =
    |grad rec| / (|grad adv| + 1e-4) at the decoder's last layer (clamped to 1e4, not back-propagated)."""
    with torch.autocast(parts["out"].device.type, dtype=torch.bfloat16, enabled=bf16):
        g_loss = -critic(parts["out"]).float().mean()
    w = last_layer(vae)
    rec_grad = torch.autograd.grad(parts["loss"], w, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(g_loss, w, retain_graph=True)[0]
    lam = (rec_grad.norm() / (adv_grad.norm() + 1e-4)).clamp(max=1e4).detach()
    return {**parts, "loss": parts["loss"] + weight * lam * g_loss, "g_adv": g_loss, "lambda": lam}


def critic_step(
    critic: PatchCritic, opt: torch.optim.Optimizer, real: torch.Tensor, fake: torch.Tensor, bf16: bool
) -> dict:
    """One hinge-loss step of the critic on real crops and (detached) reconstructions."""
    with torch.autocast(real.device.type, dtype=torch.bfloat16, enabled=bf16):
        r, f = critic(real).float(), critic(fake.detach()).float()
    loss = torch.relu(1 - r).mean() + torch.relu(1 + f).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"d_loss": loss.detach(), "d_real": r.mean().detach(), "d_fake": f.mean().detach()}


def train(args, dataset, vae: torch.nn.Module) -> dict:
    """AdamW on random crops with a linear warmup and cosine decay to 10 %; returns the training part of the card."""
    n = min(args.limit or len(dataset), len(dataset))
    images = preload(dataset, n)
    g = torch.Generator().manual_seed(args.seed)
    encoder = encoder_side(vae)
    if args.freeze_encoder:  # the latents stay bitwise the same: models trained on them keep working
        for m in encoder:
            m.requires_grad_(False)
    trained = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * min(s, args.steps) / args.steps))
    )
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    vae.to(memory_format=layout).train()
    for m in encoder if args.freeze_encoder else ():
        m.eval()
    bf16 = args.precision == "bf16"
    critic = (
        PatchCritic(args.critic_width, norm=args.critic_norm).to(memory_format=layout) if args.adv_weight > 0 else None
    )
    critic_opt = (
        torch.optim.AdamW(critic.parameters(), lr=args.critic_lr or args.lr, betas=(0.5, 0.9), weight_decay=0.0)
        if critic
        else None
    )
    features = RandomFeatures(seed=args.seed).to(memory_format=layout) if args.perceptual_weight else None
    losses, window, start, step = [], [], time.perf_counter(), 0
    while step < args.steps and not (args.minutes and time.perf_counter() - start > 60 * args.minutes):
        x = crops(images, args.batch, args.crop, g).contiguous(memory_format=layout)
        parts = reconstruct(vae, x, args.kl_weight, g, bf16=bf16)
        judged = critic is not None and step >= args.adv_start  # the critic trains from here ...
        adv = judged and step >= args.adv_start + args.critic_warmup  # ... and pulls on the codec from here
        if features is not None:
            parts = perceptual(features, parts, x, args.perceptual_weight, bf16)
        if args.spectral_weight:
            parts = spectral(parts, x, args.spectral_weight)
        if adv:  # last: its adaptive weight balances it against the whole reconstruction loss
            parts = adversarial(vae, critic, parts, args.adv_weight, bf16)
        out = parts.pop("out")
        if not torch.isfinite(parts["loss"]):
            sys.exit(
                f"step {step + 1}: the loss is not finite ({parts['loss'].item()}). Fix: lower --lr"
                + (" or --adv-weight." if adv else ".")
            )
        opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        sched.step()
        if judged:  # after the autoencoder's step: its backward went through the critic's weights as they were
            parts.update(critic_step(critic, critic_opt, x, out, bf16))
        step += 1
        window.append({k: float(v.detach()) for k, v in parts.items()})
        if step % args.log_every == 0 or step == args.steps:
            keys = list(dict.fromkeys(k for w in window for k in w))  # the critic's appear at --adv-start
            mean = {k: sum(w[k] for w in window if k in w) / sum(k in w for w in window) for k in keys}
            losses.append({"step": step, **{k: round(v, 6) for k, v in mean.items()}})
            window = []
            gan = (
                f", critic {mean['d_loss']:.3f} (real {mean['d_real']:+.2f}, fake {mean['d_fake']:+.2f})"
                if "d_loss" in mean
                else ""
            ) + (f", lambda {mean['lambda']:.3g}" if "lambda" in mean else "")
            extra = "".join(f", {k} {mean[k]:.4f}" for k in ("perc", "spec") if k in mean)
            print(
                f"step {step}/{args.steps}: loss {mean['loss']:.4f} (l1 {mean['l1']:.4f}, mse {mean['mse']:.5f}"
                f"{extra}{gan}) {step * args.batch / (time.perf_counter() - start):.1f} crops/s",
                flush=True,
            )
    seconds = time.perf_counter() - start
    vae.to(memory_format=torch.contiguous_format).eval()  # saved and measured as any loaded codec runs
    return {
        "steps": step,
        "planned_steps": args.steps,
        "batch": args.batch,
        "crop": args.crop,
        "lr": args.lr,
        "schedule": "AdamW, linear warmup 5 %, cosine to 10 %, grad clip 1",
        "kl_weight": args.kl_weight,
        "loss": "l1 + mse"
        + ("" if isinstance(vae, diffusers.AutoencoderTiny) else " + kl_weight * kl")
        + " on pixels in [-1, 1]"
        + (
            f" + {args.perceptual_weight} * L1 of random VGG-like features (4 stages, Kaiming, seed "
            f"{args.seed}; generic perceptual loss)"
            if features is not None
            else ""
        )
        + (f" + {args.spectral_weight} * L1 of 16x16 Hann-windowed amplitude spectra" if args.spectral_weight else "")
        + (" + adv_weight * lambda * hinge critic (adaptive, VQGAN)" if critic else ""),
        **(
            {
                "adversarial": {
                    "weight": args.adv_weight,
                    "start": args.adv_start,
                    "critic_warmup": args.critic_warmup,
                    "critic_lr": args.critic_lr or args.lr,
                    "critic_width": args.critic_width,
                    "critic_norm": args.critic_norm,
                    "critic_parameters": sum(p.numel() for p in critic.parameters()),
                    "critic": f"PatchGAN, 3 strided 4x4 convs, {args.critic_norm} norm, LeakyReLU 0.2; "
                    "AdamW betas (0.5, 0.9); trained from scratch, not shipped",
                }
            }
            if critic
            else {}
        ),
        "precision": args.precision,
        "channels_last": args.channels_last,
        "trained": "decoder only (encoder frozen: the latents of --init unchanged)"
        if args.freeze_encoder
        else "encoder and decoder",
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "images": n,
        "seconds": round(seconds, 1),
        "crops_per_second": round(step * args.batch / seconds, 2),
        "losses": losses,
    }


@torch.no_grad()
def standardise(vae: torch.nn.Module, dataset, indices: list[int]) -> dict:
    """Set config.scaling_factor / shift_factor so the latents of the images at `indices` have mean 0 and std 1."""
    z = []
    for images in image_batches(dataset, indices, 8):
        encoded = vae.encode(images)
        z.append(encoded.latents if isinstance(vae, diffusers.AutoencoderTiny) else encoded.latent_dist.mean)
    z = torch.cat(z)  # (N, c, h, w)
    shift, std = float(z.mean()), float(z.std())
    vae.register_to_config(scaling_factor=1.0 / std, shift_factor=shift)
    return {"scaling_factor": 1.0 / std, "shift_factor": shift, "std": std, "measured_on": len(indices)}


def measure(folder: Path, val, train_set, fid_n: int, eval_n: int, seed: int) -> dict:
    """PSNR of held-out images, and (fid_n > 0) Inception FID of the reconstructions of fid_n training images
    against those images, with the codec loaded from `folder` as training will load it."""
    codec = VAECodec(folder, latent_scale=0.0, batch_size=8)
    shown = []

    def figure(images: torch.Tensor, recon: torch.Tensor) -> None:  # originals above their reconstructions
        if not shown:
            shown.append(torch.cat([images[:6], recon[:6]]))

    out = {"val": measure_reconstruction(codec, image_batches(val, list(range(min(eval_n, len(val)))), 8), figure)}
    save_grid(shown[0], folder / "reconstructions.png", nrow=len(shown[0]) // 2)
    if fid_n:
        inception, real, fake = feature_extractor("inception"), [], []
        order = fid_sample(train_set, fid_n, seed)
        t0 = time.perf_counter()

        def features(images: torch.Tensor, recon: torch.Tensor) -> None:
            real.append(inception(images))
            fake.append(inception(recon))

        out["train_sample"] = measure_reconstruction(codec, image_batches(train_set, order, 8), features)
        ref = ReferenceStats.from_features(torch.cat(real), {"name": "originals", "extractor": "inception"})
        out["fid"] = {
            "fid": fid_from_features(torch.cat(fake), ref),
            "n": len(order),
            "extractor": inception.id,
            "of": "reconstructions vs the same originals (train split, seeded sample)",
            "seconds": round(time.perf_counter() - t0, 1),
        }
    return out


def continued(out: Path, init: str, train_set) -> tuple[torch.nn.Module, dict]:
    """The autoencoder of a trained codec folder (`init`: a name under `out`, or a path), checked against its card,
    to train further; and the lineage the new card records (the folder's files, command and total steps)."""
    try:
        src = codec_folder(init, out, "--init ")
    except FileNotFoundError as err:
        sys.exit(str(err))
    try:
        files = verify_codec(src)  # a tampered folder is refused before its weights are read
    except ValueError as err:
        sys.exit(f"--init {init}: {err}")
    old = json.loads((src / CODEC_CARD).read_text())
    if old.get("data", {}).get("identity") != train_set.identity:
        print(
            f"note: {src} was trained on {old.get('data', {}).get('identity')}, this run trains on "
            f"{train_set.identity}",
            flush=True,
        )
    vae = getattr(diffusers, old["class"]).from_pretrained(src, local_files_only=True, low_cpu_mem_usage=False)
    steps = old.get("total_steps", old.get("train", {}).get("steps", 0))
    return vae.float(), {
        "from": old.get("name", src.name),
        "files": files,
        "command": old.get("command", ""),
        "total_steps": steps,
        "reconstruction": old.get("reconstruction", {}),
    }


def write_card(folder: Path, card: dict) -> None:
    tmp = folder / f".{CODEC_CARD}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(card, indent=1) + "\n")
    os.replace(tmp, folder / CODEC_CARD)  # atomic: a killed run leaves the old card or the new one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="fluent3d-tiny", help="folder under --out")
    ap.add_argument("--out", type=Path, default=CODECS_DIR)
    ap.add_argument("--dataset", default="fluent", help="a data.dataset with images of 256x256 or more")
    ap.add_argument("--root", default="", help="data.root of the dataset")
    ap.add_argument(
        "--init",
        default="",
        help="continue training this codec (a name under --out, or a path; "
        "checked against its card): its architecture replaces --arch, --width, --blocks and "
        "--latent-channels, and the new card records it as the run's start",
    )
    ap.add_argument("--arch", choices=("tiny", "kl"), default="tiny")
    ap.add_argument("--width", type=int, default=32, help="channels of each stage (64 in TAESD)")
    ap.add_argument("--blocks", type=int, default=3, help="residual blocks per stage (TAESD: 3; KL: layers)")
    ap.add_argument(
        "--latent-channels",
        type=int,
        default=0,
        help="latent channels (0: 4 for a new codec; with --init, the codec's own; more adds channels)",
    )
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=64, help="side of the random training crops")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-6, help="KL only")
    ap.add_argument(
        "--perceptual-weight",
        type=float,
        default=0.0,
        help="weight of a perceptual loss on the features of a frozen random-weight network (0: none)",
    )
    ap.add_argument(
        "--spectral-weight",
        type=float,
        default=0.0,
        help="weight of an L1 loss on local (16x16) amplitude spectra (0: none)",
    )
    ap.add_argument(
        "--adv-weight",
        type=float,
        default=0.0,
        help="weight of a PatchGAN critic's term (0: none), scaled adaptively as in VQGAN",
    )
    ap.add_argument("--adv-start", type=int, default=0, help="step at which the critic starts training")
    ap.add_argument("--critic-width", type=int, default=32, help="channels of the critic's first layer")
    ap.add_argument(
        "--critic-norm",
        choices=("group", "spectral"),
        default="group",
        help="the critic's normalisation: GroupNorm after each strided conv, or spectral normalisation "
        "of every conv's weight (SN-GAN; steadier when the codec moves under it)",
    )
    ap.add_argument(
        "--critic-warmup",
        type=int,
        default=0,
        help="steps the critic trains alone (from --adv-start) before its term reaches the codec: a "
        "critic at chance only adds noise to the codec's gradient",
    )
    ap.add_argument("--critic-lr", type=float, default=0.0, help="the critic's learning rate (0: --lr)")
    ap.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="train the decoder only (with --init): the latents stay bitwise those of --init, so "
        "models trained on them keep working with the new decoder",
    )
    ap.add_argument(
        "--decoder-width",
        type=int,
        default=0,
        help="widen the decoder of --init to this many channels per stage before training, keeping "
        "its function (Net2Net); with --freeze-encoder the latents stay those of --init (0: keep)",
    )
    ap.add_argument(
        "--widen-noise",
        type=float,
        default=0.01,
        help="noise on the widened decoder's copied weights, as a fraction of each layer's std",
    )
    ap.add_argument(
        "--precision",
        choices=("bf16", "fp32"),
        default="bf16",
        help="bf16: autocast the autoencoder in training (2x faster on CPUs with AVX-512 BF16, "
        "python -m benchmarks.bench_codec); the weights stay float32",
    )
    ap.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train in the channels-last memory format (faster convolutions on CPU)",
    )
    ap.add_argument("--minutes", type=float, default=0.0, help="time budget of the training (0: none)")
    ap.add_argument("--limit", type=int, default=0, help="train on the first N images only (0: all)")
    ap.add_argument("--eval", type=int, default=10_000, dest="eval_n", help="held-out images for PSNR")
    ap.add_argument("--fid", type=int, default=0, help="training images whose reconstructions FID scores (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--measure-only", action="store_true", help="re-measure the shipped codec, update its card")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = DataConfig(dataset=args.dataset, root=args.root, image_size=SIZE, channels=3)
    train_set, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    dest = args.out / args.name
    if args.measure_only:
        card = json.loads((dest / CODEC_CARD).read_text())
        card["reconstruction"] = measure(dest, val, train_set, args.fid, args.eval_n, args.seed)
        write_card(dest, card)
        print(json.dumps(card["reconstruction"], indent=1))
        return
    if args.freeze_encoder and not args.init:
        sys.exit(
            "--freeze-encoder: a fresh encoder would stay random. Fix: add --init <trained codec>, or drop "
            "--freeze-encoder."
        )
    vae, init = (
        continued(args.out, args.init, train_set)
        if args.init
        else (build_autoencoder(args.arch, args.width, args.blocks, args.latent_channels or 4), None)
    )
    if init and args.latent_channels and args.latent_channels != vae.config.latent_channels:
        if not isinstance(vae, diffusers.AutoencoderTiny):
            sys.exit(
                "--latent-channels with --init adds latent channels to a trained AutoencoderTiny. Fix: drop "
                "--latent-channels to keep the codec's own."
            )
        vae = widen_latents(vae, args.latent_channels, 1.0, torch.Generator().manual_seed(args.seed))
        init["widened_latents"] = {"latent_channels": args.latent_channels, "noise": 1.0}
    if args.decoder_width:
        if not (init and isinstance(vae, diffusers.AutoencoderTiny)):
            sys.exit(
                "--decoder-width widens the decoder of a trained AutoencoderTiny. Fix: add --init <trained "
                "tiny codec>, or set --width for a new codec."
            )
        vae = widen_decoder(vae, args.decoder_width, args.widen_noise, torch.Generator().manual_seed(args.seed))
        init["widened"] = {"decoder_width": args.decoder_width, "noise": args.widen_noise}
    card = {
        "name": args.name,
        "class": type(vae).__name__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "scripts/train_codec.py", *sys.argv[1:]]),
        "parameters": sum(p.numel() for p in vae.parameters()),
        "data": {
            "dataset": args.dataset,
            "split": "train",
            "size": SIZE,
            "identity": train_set.identity,
            "images": len(train_set),
        },
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
    }
    if init:
        card["init"] = init
    card["train"] = train(args, train_set, vae)
    card["total_steps"] = card["train"]["steps"] + (init["total_steps"] if init else 0)
    trained_on = card["train"]["images"]  # 64 of them, evenly spaced, set the latent scale
    card["latents"] = {
        **standardise(vae, train_set, list(range(0, trained_on, max(1, trained_on // 64)))[:64]),
        "downsample": 8,
        "channels": vae.config.latent_channels,
    }  # --init's, not the flag's
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / f".{args.name}.tmp-{os.getpid()}"
    vae.save_pretrained(tmp, safe_serialization=True)
    if isinstance(vae, diffusers.AutoencoderTiny):  # it sets block_out_channels itself, and warns when a file has it
        config = json.loads((tmp / "config.json").read_text())
        config.pop("block_out_channels")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    card["files"] = codec_files(tmp)
    write_card(tmp, card)  # VAECodec checks the files against it, as any later load does
    card["reconstruction"] = measure(tmp, val, train_set, args.fid, args.eval_n, args.seed)
    write_card(tmp, card)
    old = args.out / f".{args.name}.old-{os.getpid()}"
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)  # the finished folder appears at once; a killed run leaves only a dot folder
    shutil.rmtree(old, ignore_errors=True)
    size = sum(p.stat().st_size for p in dest.iterdir())
    print(
        f"{dest}: {card['parameters']:,} parameters, {size / 1e6:.1f} MB, {card['train']['steps']} steps in "
        f"{card['train']['seconds']:.0f} s; val PSNR {card['reconstruction']['val']['psnr']:.2f} dB; files "
        + ", ".join(f"{n} {h[:16]}" for n, h in card["files"].items())
    )


if __name__ == "__main__":
    main()
