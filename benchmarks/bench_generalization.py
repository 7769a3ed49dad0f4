"""Where does a latent model fit its training images more closely than held-out ones? The teacher-forced loss on
training and held-out latents, per block and per noise level, with the same timesteps and noise on both sides.

    python -m benchmarks.bench_generalization --checkpoint data/checkpoints/context-people256/cond-ctx-T16.safetensors
                                              [--images 256] [--no-ema] [--seed 0] [--threads 2]
                                              [--out results/generalization.jsonl]

The 256 px people models end training with a train loss near 0.02 and a validation loss near 0.17, where the
Fashion-MNIST models (60,000 images) end with the two equal. A gap of that size says the model fits its 1,786 training
images individually. Two places could hold that fit, and they need different cures:

- the denoiser itself (plain memorization: it recognises a training image from its noisy block alone); then the gap
  is there at block 0 too, which has no earlier blocks to look at;
- the AR context: later blocks see the clean earlier blocks of the same image, and a model that recognises a
  training image from them can fill in the rest. Then the gap grows with the block index. At sampling time the
  context is the model's own output, not a training image, so that fit does not help generation.

The loss here is the training loss (the objective's target, unweighted MSE) of the checkpoint's EMA weights (or the
trained ones) on `--images` latents of each split, drawn from the latent caches training used (unflipped), with
timesteps from the training distribution and noise from a fixed seed, the same draws for both splits. Rows: per
block (the mean over its latent pixels), and per noise level (the block's s, in four bins).
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.harness import emit, machine, parse, parser
from workbench.core.objectives import build_objective
from workbench.data.codecs import LATENT_CACHE_DIR, LatentCache, build_codec
from workbench.data.datasets import training_dataset
from workbench.training.checkpoint import load_for_inference

LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)  # bin edges of the noise level s = t / train_steps


def split_latents(config, split: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` latents (unflipped) of `split` and their labels, drawn with `seed` from the split's latent cache (built
    from the codec if it is missing, as training would)."""
    d = config.data
    if d.codec == "pixel":
        raise ValueError(
            "bench_generalization: the checkpoint is a pixel model; this reads latent caches. Fix: use "
            "a latent (256 px) checkpoint."
        )
    flips = d.random_flip and split == "train"  # the cache training built for the split
    cache = LatentCache(build_codec(d), training_dataset(d, split), LATENT_CACHE_DIR, flips)
    picks = torch.randperm(len(cache), generator=torch.Generator().manual_seed(seed))[:n]
    items = [cache[int(i)] for i in picks]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


@torch.no_grad()
def losses(
    model,
    objective,
    x0: torch.Tensor,
    labels: torch.Tensor | None,
    t: torch.Tensor,
    noise: torch.Tensor,
    batch: int = 32,
) -> torch.Tensor:
    """Squared error of the model's prediction per (image, block), (n, T), at timesteps t (n, T) and noise."""
    out = []
    T = t.shape[1]
    block_of = objective.block_map.flatten()  # (H*W,)
    for i in range(0, len(x0), batch):
        x, z, tt = x0[i : i + batch], noise[i : i + batch], t[i : i + batch]
        y = None if labels is None else labels[i : i + batch]
        pred, _ = model(x, objective.add_noise(x, z, tt), tt, y)
        err = ((pred.float() - objective.target(x, z, tt).float()) ** 2).mean(1).flatten(1)  # (b, H*W)
        out.append(torch.stack([err[:, block_of == k].mean(1) for k in range(T)], dim=1))
    return torch.cat(out)


def generalization(model, config, images: int = 256, seed: int = 0) -> dict:
    objective = build_objective(config.diffusion, config.model)
    sides = {split: split_latents(config, split, images, seed) for split in ("train", "val")}
    n = min(len(x) for x, _ in sides.values())
    g = torch.Generator().manual_seed(seed + 1)
    t = objective.sample_t(n, "cpu", g)  # (n, T), the same draws for both splits
    noise = torch.randn((n, *sides["train"][0].shape[1:]), generator=g)
    conditional = config.model.num_classes > 0
    err = {s: losses(model, objective, x[:n], y[:n] if conditional else None, t, noise) for s, (x, y) in sides.items()}
    level = t / config.diffusion.train_steps  # both objectives run their model timesteps over 0..train_steps
    per_block = [
        {"block": k, "train": float(err["train"][:, k].mean()), "val": float(err["val"][:, k].mean())}
        for k in range(t.shape[1])
    ]
    per_level = []
    for lo, hi in zip(LEVELS, LEVELS[1:]):
        m = (level >= lo) & (level < hi if hi < 1 else level <= hi)
        if m.any():
            per_level.append(
                {
                    "s": [lo, hi],
                    "train": float(err["train"][m].mean()),
                    "val": float(err["val"][m].mean()),
                    "count": int(m.sum()),
                }
            )
    for row in per_block + per_level:
        row["val_over_train"] = row["val"] / max(row["train"], 1e-12)
    return {
        "name": config.name,
        "dataset": config.data.dataset,
        "T": config.model.num_blocks,
        "images": n,
        "seed": seed,
        "train": float(err["train"].mean()),
        "val": float(err["val"].mean()),
        "per_block": per_block,
        "per_level": per_level,
    }


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, threads=2)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--images", type=int, default=256, help="latents of each split")
    p.add_argument("--no-ema", action="store_true", help="the trained weights instead of the EMA weights")
    p.add_argument("--seed", type=int, default=0)
    args = parse(p, argv)
    model, config = load_for_inference(args.checkpoint, use_ema=not args.no_ema)
    result = generalization(model, config, args.images, args.seed)
    result.update(checkpoint=str(args.checkpoint), weights="trained" if args.no_ema else "ema", machine=machine())
    emit(result, args.out)
    print(f"{config.name}: loss train {result['train']:.4f}, held out {result['val']:.4f}")
    for row in result["per_block"]:
        print(
            f"  block {row['block']:2d}: train {row['train']:.4f}  held out {row['val']:.4f}  "
            f"x{row['val_over_train']:.1f}"
        )
    for row in result["per_level"]:
        print(
            f"  s in [{row['s'][0]:.2f}, {row['s'][1]:.2f}): train {row['train']:.4f}  held out {row['val']:.4f}  "
            f"x{row['val_over_train']:.1f}  ({row['count']} blocks)"
        )


if __name__ == "__main__":
    main()
