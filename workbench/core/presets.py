"""Presets: a DiT-style registry of one-line config factories, from `tiny` (tests) and `fmnist-small` (the CPU
default) up to the paper's FFHQ-1024 and ImageNet-256 models; GPU budgets of the presets that have one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .config import Config, DataConfig, ModelConfig, SampleConfig, TrainConfig

# The CPU recipe, from the race in benchmarks/bench_recipe.py (RESULTS.md section 3): rectified flow with
# logit-normal timesteps, adaLN-Zero timestep conditioning in every layer, peak LR 1e-3; sampled with DPM-Solver++(2M)
# on flow sigmas, which on the zoo's 3,000-step models beats flow Euler at S=8 and 16 and ties it at S=32
# (benchmarks/bench_samplers.py, RESULTS.md; the race's 10-minute models were too far from the data to tell them
# apart). The paper's own choices (eps, timestep through the block embedder only, LR 3e-4) stay in the paper presets.
CPU_RECIPE: dict[str, Any] = {
    "diffusion.prediction": "flow",
    "sample.sampler": "dpm++2m",
    "model.timestep_conditioning": "adaln",
    "train.lr": 1e-3,
}


# ---- presets (DiT-style registry of one-line factories) ----------------------------------------------------------
def _fmnist(name: str, **model: Any) -> Config:
    # 3,383 steps: what 45 minutes held on 2 cores of the AMD EPYC reference machine in the race's second final
    # (0.80 s/step probed, bf16, 2 threads; classifier FID 11.2 at S=32). No wall-clock cap: a run stopped by one
    # before its LR decay is a worse model, so a slower machine takes longer (2.7x on the Xeon of the first final).
    return Config(
        name=name,
        model=ModelConfig(**model),
        data=DataConfig(dataset="fashion-mnist", image_size=32, channels=1),
        train=TrainConfig(
            batch_size=64,
            max_steps=3383,
            max_minutes=0.0,
            ema_decay=0.999,
            ckpt_every=250,
            sample_every=3383,
            precision="bf16-mixed",
            out_dir=f"runs/{name}",
        ),
    ).override(**CPU_RECIPE)


def _tiny() -> Config:
    return Config(
        name="tiny",
        model=ModelConfig(
            latent_size=32, latent_channels=1, patch_size=4, num_blocks=4, depth=4, diffusion_depth=2, width=64, heads=2
        ),
        data=DataConfig(dataset="fashion-mnist", image_size=32, channels=1),
        train=TrainConfig(
            batch_size=16,
            max_steps=200,
            lr=1e-3,
            warmup_frac=0.05,
            ema_decay=0.99,
            ckpt_every=100,
            sample_every=0,
            log_every=20,
            out_dir="runs/tiny",
        ),
        sample=SampleConfig(steps=20, num_images=4),
    )


def _emoji(name: str, size: int, patch: int = 4, **model: Any) -> Config:
    return Config(
        name=name,
        model=ModelConfig(latent_size=size, latent_channels=3, patch_size=patch, **model),
        data=DataConfig(dataset="emoji", image_size=size, channels=3),
        train=TrainConfig(
            batch_size=32,
            max_steps=4000,
            max_minutes=50,
            ema_decay=0.999,
            precision="bf16-mixed",
            out_dir=f"runs/{name}",
        ),
    )


FLUENT_CODEC = "data/codecs/fluent3d-tiny"  # the latent codec trained here (scripts/train_codec.py, its card)


def _emoji256(blocks: int) -> Config:
    """Fluent 3D emoji at 256x256 through the codec: 32x32x4 latents (cached once) in patches of 4, 64 tokens, the
    token count of the Fashion-MNIST arm; N=6, D=3 for every T, as in the blocks families. On 2 cores a step of
    batch 32 costs 0.39 s at patch 4 against 1.59 s at patch 2 (random latents, bf16), so the hour buys 7,500
    steps instead of ~1,500. The GPU budget (GPU_BUDGETS) goes back to patch 2: 256 tokens, ImageNet-256's latent
    grid. The CPU recipe is the one the race found on Fashion-MNIST, carried over (not raced on Fluent), with the
    flow Euler sampler its shipped reports were measured with (DPM-Solver++ is not measured at 256 px)."""
    name = f"emoji256-T{blocks}"
    return Config(
        name=name,
        model=ModelConfig(
            latent_size=32,
            latent_channels=4,
            patch_size=4,
            num_blocks=blocks,
            depth=6,
            diffusion_depth=3,
            width=256,
            heads=4,
        ),
        data=DataConfig(
            dataset="fluent", image_size=256, channels=3, codec="vae", vae_path=FLUENT_CODEC, latent_scale=0.0
        ),
        train=TrainConfig(
            batch_size=32,
            max_steps=7500,
            max_minutes=55,
            lr=1e-3,
            ema_decay=0.999,
            ckpt_every=500,
            sample_every=1000,
            precision="bf16-mixed",
            out_dir=f"runs/{name}",
        ),
    ).override(**(CPU_RECIPE | {"sample.sampler": "euler"}))


def _people256(blocks: int) -> Config:
    """The emoji256 presets on the people subset of the Fluent 3D set (dataset "fluent-people": every emoji that
    comes in skin tones with its default form, and the smileys; 1,786 training images): the workbench's analogue of
    FFHQ, the face dataset of the paper's high-resolution finding. Same model, codec and recipe as emoji256; 5,000
    steps, what fits the hour on the slower of the two CPUs the zoo was trained on (a T=16 step of batch 32 costs
    0.68 s on 2 threads of the Intel Xeon, about 0.5 s on the AMD EPYC), so the LR schedule's decay runs before the
    time cap instead of being cut off by it."""
    name = f"people256-T{blocks}"
    return _emoji256(blocks).override(
        **{
            "name": name,
            "data.dataset": "fluent-people",
            "train.out_dir": f"runs/{name}",
            "train.max_steps": 5000,
            "train.max_minutes": 60.0,
        }
    )


# training images per class of the people subset under data.labels="group-tone" (group * 6 + tone; 48 classes, 36
# with images): the proportions sample labels are drawn in (tests/test_config.py checks them against the dataset)
PEOPLE_GROUP_TONE_COUNTS = (
    4,
    8,
    8,
    8,
    8,
    8,
    0,
    0,
    0,
    0,
    0,
    0,
    117,
    128,
    128,
    128,
    128,
    128,
    84,
    17,
    17,
    17,
    17,
    17,
    13,
    13,
    13,
    13,
    13,
    13,
    0,
    0,
    0,
    0,
    0,
    0,
    138,
    105,
    105,
    105,
    105,
    105,
    20,
    11,
    11,
    11,
    11,
    11,
)


def _people256_cond(blocks: int) -> Config:
    """people256-T{blocks} made class-conditional, as DiT and MAR are on ImageNet: 48 classes of Unicode group x skin
    tone (data.labels="group-tone"), the label as a prefix token, dropped to the null class 10 % of the time in
    training so that sampling can use classifier-free guidance; sample labels are drawn in the training set's
    proportions (PEOPLE_GROUP_TONE_COUNTS). Same model, data, budget and sampler as the unconditional preset."""
    name = f"people256-cond-T{blocks}"
    return _people256(blocks).override(
        **{
            "name": name,
            "train.out_dir": f"runs/{name}",
            "model.num_classes": 48,
            "data.labels": "group-tone",
            "sample.class_counts": PEOPLE_GROUP_TONE_COUNTS,
            "sample.cfg_scale": 1.5,
        }
    )


def _people256_context(blocks: int) -> Config:
    """people256-T{blocks} with its context augmented: the earlier blocks the model reads are noised to a level
    drawn per image in [0, 0.5] in training (diffusion.train_context_noise), clean at sampling. The unconditional T16
    fits its training images about ten times more closely than held-out ones in every block that has context and
    not in block 0 (benchmarks/bench_generalization.py): it recognises an image from its earlier blocks, and at
    sampling time those blocks are its own. Same model, data, budget and sampler as the plain preset."""
    name = f"people256-ctx-T{blocks}"
    return _people256(blocks).override(
        **{"name": name, "train.out_dir": f"runs/{name}", "diffusion.train_context_noise": 0.5}
    )


def _people256_cond_context(blocks: int) -> Config:
    """Both cures together: the class-conditional preset (labels, guidance) with the context noise of
    people256-ctx-T{blocks}."""
    name = f"people256-cond-ctx-T{blocks}"
    return _people256_cond(blocks).override(
        **{"name": name, "train.out_dir": f"runs/{name}", "diffusion.train_context_noise": 0.5}
    )


def _paper(name: str, image: int, blocks: int, classes: int, dataset: str) -> Config:
    return Config(
        name=name,
        model=ModelConfig(
            latent_size=image // 8,
            latent_channels=4,
            patch_size=2,
            num_blocks=blocks,
            depth=28,
            diffusion_depth=14,
            width=1152,
            heads=18,
            num_classes=classes,
            rope_base=10000.0,
        ),
        data=DataConfig(
            dataset=dataset,
            image_size=image,
            channels=3,
            codec="vae",
            vae_path="data/vae/sd-vae-ft-mse",
            latent_scale=0.18215,
            num_workers=8,
        ),
        train=TrainConfig(
            batch_size=32,
            max_steps=400_000,
            precision="bf16-mixed",
            strategy="ddp",
            accelerator="cuda",
            devices=8,
            ckpt_every=5000,
            sample_every=10_000,
            eval_every=50_000,
            fid_samples=10_000,  # FID-10K of the EMA weights at every eval_every, sharded over the 8 processes
            fid_extractor="inception",
            out_dir=f"runs/{name}",
        ),
        sample=SampleConfig(sampler="dpm++2m", steps=250 if classes == 0 else 100),
    )


PRESETS: dict[str, Callable[[], Config]] = {
    "tiny": _tiny,
    "fmnist-small": lambda: _fmnist("fmnist-small", num_blocks=4, depth=6, diffusion_depth=3, width=256, heads=4),
    # one checkpoint for every split: the boundary drawn per sample over D in 1..N (sandwich rule), D=3 by default
    "fmnist-elastic": lambda: _fmnist(
        "fmnist-elastic", num_blocks=4, depth=6, diffusion_depth=3, width=256, heads=4
    ).override(**{"model.elastic_depths": [1, 2, 3, 4, 5, 6]}),
    "fmnist-dit": lambda: _fmnist("fmnist-dit", num_blocks=1, depth=6, diffusion_depth=6, width=256, heads=4),
    "fmnist-cond": lambda: _fmnist(
        "fmnist-cond", num_blocks=4, depth=6, diffusion_depth=3, width=256, heads=4, num_classes=10
    ),
    "emoji64": lambda: _emoji("emoji64", 64, num_blocks=4, depth=6, diffusion_depth=3, width=256, heads=4),
    # the font's bitmaps are 136 px: 128 is about native; patch 8 keeps emoji64's 16x16 tokens
    "emoji128": lambda: _emoji("emoji128", 128, patch=8, num_blocks=4, depth=6, diffusion_depth=3, width=256, heads=4),
    "emoji256-T1": lambda: _emoji256(1),
    "emoji256-T4": lambda: _emoji256(4),
    "emoji256-T16": lambda: _emoji256(16),
    "people256-T1": lambda: _people256(1),
    "people256-T4": lambda: _people256(4),
    "people256-T16": lambda: _people256(16),
    "people256-cond-T16": lambda: _people256_cond(16),
    "people256-ctx-T16": lambda: _people256_context(16),
    "people256-cond-ctx-T16": lambda: _people256_cond_context(16),
    "emoji256-elastic": lambda: _emoji256(4).override(
        **{
            "name": "emoji256-elastic",
            "train.out_dir": "runs/emoji256-elastic",
            "model.elastic_depths": [1, 2, 3, 4, 5, 6],
        }
    ),
    "ffhq256": lambda: _paper("ffhq256", 256, 4, 0, "folder").override(
        **{"model.depth": 12, "model.diffusion_depth": 6, "model.width": 768, "model.heads": 12, "name": "ffhq256"}
    ),
    "ffhq1024-paper": lambda: _paper("ffhq1024-paper", 1024, 16, 0, "folder"),
    "imagenet256-paper": lambda: _paper("imagenet256-paper", 256, 4, 1000, "folder"),
}


# GPU budgets (python -m workbench zoo train --gpu): the same data, patches of 2 (256 tokens), a larger batch, more
# steps, no cap
_EMOJI256_GPU = {
    "model.patch_size": 2,
    "train.batch_size": 128,
    "train.max_steps": 6000,
    "train.max_minutes": 0.0,
    "train.lr": 1e-3,
    "train.accelerator": "cuda",
    "train.ckpt_every": 1000,
    "train.sample_every": 2000,
    "data.num_workers": 4,
}
GPU_BUDGETS: dict[str, dict[str, Any]] = {
    name: _EMOJI256_GPU
    for name in (
        "emoji256-T1",
        "emoji256-T4",
        "emoji256-T16",
        "emoji256-elastic",
        "people256-T1",
        "people256-T4",
        "people256-T16",
        "people256-cond-T16",
        "people256-ctx-T16",
        "people256-cond-ctx-T16",
    )
}


def preset(name: str, gpu: bool = False, **overrides: Any) -> Config:
    """Return a preset config by name, with its GPU budget when gpu=True, then dotted overrides ("model.depth"=8)."""
    if name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}. Fix: use one of {', '.join(PRESETS)}.")
    if gpu and name not in GPU_BUDGETS:
        raise ValueError(
            f"preset: {name!r} has no GPU budget. Fix: use one of {', '.join(GPU_BUDGETS)}, or give "
            "train.* overrides yourself."
        )
    cfg = PRESETS[name]()
    cfg = cfg.override(**GPU_BUDGETS[name]) if gpu else cfg
    return cfg.override(**overrides) if overrides else cfg


__all__ = ["CPU_RECIPE", "GPU_BUDGETS", "PRESETS", "preset"]
