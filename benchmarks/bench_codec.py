"""Codec training speed: one training step of scripts/train_codec.py under each data path, precision and memory
layout, timed side by side in one run (alternating rounds, best round each), and the codec's encode/decode rate at
256 px in float32 (what LatentCache and the app pay).

    python -m benchmarks.bench_codec [--width 32] [--blocks 3] [--batch 16] [--crop 64] [--rounds 3]
                                     [--threads 2] [--out results/codec.jsonl]

Data paths: "decode" reads each crop's image from the dataset (WebP decode, composite, resize: what the first
version of the script did), "preloaded" cuts crops from the uint8 images decoded once (what it does now). The
Fluent 3D emoji must be installed (scripts/fetch_fluent_emoji.sh).
"""

from __future__ import annotations

import torch

from benchmarks.harness import best_times, emit, machine, parse, parser
from workbench.core.config import DataConfig
from workbench.data.codec_training import SIZE, build_autoencoder, crops, preload, reconstruct
from workbench.data.datasets import build_dataset

MODES = {  # name: (data path, bf16 autocast, channels last)
    "decode-fp32": ("decode", False, False),
    "preloaded-fp32": ("preloaded", False, False),
    "preloaded-fp32-channels-last": ("preloaded", False, True),
    "preloaded-bf16": ("preloaded", True, False),
    "preloaded-bf16-channels-last": ("preloaded", True, True),
}


def decoded_crops(dataset, n: int, batch: int, crop: int, g: torch.Generator) -> torch.Tensor:
    """The first script's batches: every crop reads its image from the dataset."""
    index, flip = torch.randint(n, (batch,), generator=g), torch.randint(2, (batch,), generator=g)
    y, x = torch.randint(SIZE - crop + 1, (2, batch), generator=g)
    out = [dataset[i][0][:, t : t + crop, l : l + crop] for i, t, l in zip(index.tolist(), y.tolist(), x.tolist())]
    return torch.stack([o.flip(-1) if f else o for o, f in zip(out, flip.tolist())])


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, threads=2)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--images", type=int, default=512, help="images preloaded (and drawn from) by every mode")
    ap.add_argument("--rounds", type=int, default=3)
    args = parse(ap, argv)
    dataset = build_dataset(DataConfig(dataset="fluent", image_size=SIZE, channels=3), "train")
    images = preload(dataset, args.images)
    steps = {}
    for name, (data, bf16, channels_last) in MODES.items():
        torch.manual_seed(0)
        vae = build_autoencoder("tiny", args.width, args.blocks, 4)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        vae.to(memory_format=layout).train()
        opt = torch.optim.AdamW(vae.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)

        def step(vae=vae, opt=opt, g=g, data=data, bf16=bf16, layout=layout) -> None:
            x = (
                decoded_crops(dataset, args.images, args.batch, args.crop, g)
                if data == "decode"
                else crops(images, args.batch, args.crop, g)
            ).contiguous(memory_format=layout)
            parts = reconstruct(vae, x, 0.0, g, bf16=bf16)
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            opt.step()

        for _ in range(3):
            step()  # warm-up: allocator, oneDNN kernels
        steps[name] = step
    times = best_times(steps, rounds=args.rounds, min_seconds=3.0)
    base = times["decode-fp32"]
    vae = build_autoencoder("tiny", args.width, args.blocks, 4).eval()
    x = crops(images, 8, SIZE, torch.Generator().manual_seed(0))  # 8 whole images
    coders = {}
    with torch.no_grad():
        z = vae.encode(x).latents
        for layout in (torch.contiguous_format, torch.channels_last):
            net = build_autoencoder("tiny", args.width, args.blocks, 4).eval().to(memory_format=layout)
            net.load_state_dict(vae.state_dict())
            xl, zl, tag = x.contiguous(memory_format=layout), z.contiguous(memory_format=layout), str(layout)[6:]
            coders[f"encode-{tag}"] = lambda net=net, xl=xl: net.encode(xl)
            coders[f"decode-{tag}"] = lambda net=net, zl=zl: net.decode(zl)
        coder = best_times(coders, rounds=2, min_seconds=2.0)
    emit(
        {
            "benchmark": "codec",
            "width": args.width,
            "blocks": args.blocks,
            "batch": args.batch,
            "crop": args.crop,
            "parameters": sum(p.numel() for p in vae.parameters()),
            "train_step": [
                {
                    "mode": name,
                    "seconds_per_step": round(t, 4),
                    "crops_per_second": round(args.batch / t, 1),
                    "speedup_vs_decode_fp32": round(base / t, 2),
                }
                for name, t in times.items()
            ],
            "fp32_256px_seconds_per_image": {k: round(t / 8, 4) for k, t in coder.items()},
            "machine": machine(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
