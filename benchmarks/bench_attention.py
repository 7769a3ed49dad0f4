"""The two attention backends side by side on the CPU (model.attention = sdpa | flex), and the attention-mask memory
at the paper presets.

    python -m benchmarks.bench_attention [--preset fmnist-small] [--batch 16] [--steps 10] [--images 4]
                                         [--rounds 3] [--threads 1] [--no-compiled] [--out FILE] [--dry-run]

- training: a training step (objective loss, backward, AdamW) under SDPA; FlexAttention has no backward on CPUs,
  so a flex step is refused (the message is recorded) and the teacher-forced forward is what both backends are
  timed on, alternating, best of --rounds (ratio flex/sdpa);
- sampling: cached and uncached sampling (generate), each backend alternating (ratio);
- kernel: the diffusion layers' attention alone at the training shape: SDPA with the dense mask, FlexAttention
  eager (what the model runs on CPUs) and compiled (what it runs on GPUs), to show which CPU mode is faster;
- masks: for ffhq1024-paper and imagenet256-paper, the bytes SDPA's dense masks take (two (L, L) bool masks, the
  last layer's rows are a view) and the bytes of the three BlockMasks (AR, diffusion, the last layer's rows),
  analytically and measured on the masks the model builds (at reduced width: the masks do not depend on it).
"""

from __future__ import annotations

import math
import time

import torch
from torch.nn.attention.flex_attention import flex_attention

import workbench as wb
from benchmarks.harness import best_times, emit, machine, parse, parser
from workbench.core.attention import block_mask_bytes, flex
from workbench.core.model import use_attention
from workbench.core.objectives import build_objective

BACKENDS = ("sdpa", "flex")
PAPER = ("ffhq1024-paper", "imagenet256-paper")
TILE = 128  # FlexAttention's default block size


def pair(cfg):
    """One model under each backend, the same weights: {backend: (model, config)}."""
    torch.manual_seed(0)
    model = wb.build_model(cfg).eval()
    flex_model = wb.build_model(cfg.model).eval()
    flex_model.load_state_dict(model.state_dict())
    return {"sdpa": (model, cfg), "flex": (flex_model, use_attention(flex_model, cfg, "flex"))}


def training(cfg, batch: int, rounds: int) -> dict:
    """SDPA's training step, and the teacher-forced forward of each backend side by side."""
    models = pair(cfg)
    m = cfg.model
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, m.latent_channels, m.latent_size, m.latent_size, generator=g)
    xt = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, cfg.diffusion.train_steps, (batch, m.num_blocks), generator=g)
    objective = build_objective(cfg.diffusion, m)
    net = models["sdpa"][0].train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step(model):
        loss = objective.loss(model, x0, generator=torch.Generator().manual_seed(1)).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = {"batch": batch, "tokens": m.grid**2 * batch}
    try:
        step(models["flex"][0].train())
        out["flex_step"] = "ran"
    except ValueError as err:
        out["flex_step"] = f"refused: {str(err).split('. Fix')[0]}"
    for model, _ in models.values():
        model.eval()

    @torch.no_grad()
    def forward(model):
        return model(x0, xt, t)

    times = best_times({b: (lambda b=b: forward(models[b][0])) for b in BACKENDS}, rounds=rounds, clock="cpu")
    net.train()
    step_time = best_times({"sdpa_step": lambda: step(net)}, rounds=rounds, clock="cpu")["sdpa_step"]
    out.update(
        sdpa_step_ms=round(step_time * 1e3, 2),
        **{f"{b}_forward_ms": round(times[b] * 1e3, 2) for b in BACKENDS},
        flex_over_sdpa_forward=round(times["flex"] / times["sdpa"], 2),
    )
    return out


def sampling(cfg, images: int, steps: int, rounds: int) -> dict:
    """Cached and uncached sampling under each backend, alternating (tests/test_attention.py checks that they agree;
    a fresh model's zero-initialised head would make a comparison here vacuous)."""
    models = pair(cfg)
    out = {"images": images, "S": steps}
    for use_cache in (True, False):
        run = dict(num_images=images, steps=steps, seed=0, use_cache=use_cache)
        fns = {b: (lambda b=b: wb.generate(*models[b], **run)) for b in BACKENDS}
        times = best_times(fns, rounds=rounds, min_seconds=0.0, clock="cpu")
        name = "cached" if use_cache else "uncached"
        out[name] = {
            **{f"{b}_s": round(times[b], 3) for b in BACKENDS},
            "flex_over_sdpa": round(times["flex"] / times["sdpa"], 2),
        }
    return out


def kernel(cfg, batch: int, rounds: int, compiled: bool) -> dict:
    """The diffusion layers' attention alone at the training shape, on the masks the model builds."""
    models = pair(cfg)
    m = cfg.model
    dense = models["sdpa"][0].training_attention_masks("cpu")[1]
    block = models["flex"][0].training_attention_masks("cpu")[1]
    L = dense.dense.shape[0]
    q, k, v = (torch.randn(batch, m.heads, L, m.width // m.heads) for _ in range(3))
    fns = {"sdpa_dense_mask": lambda: dense.attend(q, k, v), "flex_eager": lambda: flex(q, k, v, block.block)}
    out = {"L": L, "batch": batch, "heads": m.heads}
    if compiled:
        fn = torch.compile(flex_attention)
        start = time.perf_counter()
        fn(q, k, v, block_mask=block.block)
        out["flex_compile_s"] = round(time.perf_counter() - start, 1)
        fns["flex_compiled"] = lambda: fn(q, k, v, block_mask=block.block)
    with torch.no_grad():
        times = best_times(fns, rounds=rounds, clock="cpu")
    out.update({f"{n}_ms": round(s * 1e3, 2) for n, s in times.items()})
    out.update({f"{n}_over_sdpa": round(s / times["sdpa_dense_mask"], 2) for n, s in times.items() if "flex" in n})
    return out


def block_mask_analytic(q_len: int, kv_len: int) -> int:
    """Bytes of a BlockMask over (Lq, Lkv) in TILE x TILE tiles: int32 counts and indices of the partial and the
    full tiles, per query-tile row (kv direction) and per key-tile column (q direction, for the backward)."""
    nq, nk = math.ceil(q_len / TILE), math.ceil(kv_len / TILE)
    return 4 * 2 * ((nq + nq * nk) + (nk + nk * nq))


def mask_memory(name: str, width: int = 64) -> dict:
    """Analytic dense and block-mask bytes of a preset, checked against the masks the model builds."""
    cfg = wb.preset(name, **{"model.width": width, "model.heads": 4, "model.depth": 2, "model.diffusion_depth": 1})
    m = cfg.model
    slots = m.num_blocks * m.block_tokens
    L = m.prefix_tokens + (m.num_blocks - 1) * m.block_tokens * m.clean_stream + slots
    out = {"preset": name, "L": L, "noisy_tokens": slots, "measured_at_width": width}
    out["dense_bytes_analytic"] = 2 * L * L  # the AR and diffusion masks; the last layer's rows are a view
    out["block_bytes_analytic"] = 2 * block_mask_analytic(L, L) + block_mask_analytic(slots, L)
    for backend in BACKENDS:
        model = wb.build_model(cfg.override(**{"model.attention": backend}))
        start = time.perf_counter()
        masks = model.training_attention_masks("cpu")
        out[f"{backend}_build_s"] = round(time.perf_counter() - start, 2)
        if backend == "sdpa":  # distinct storage: the last layer's mask shares the diffusion mask's
            storages = {a.dense.untyped_storage().data_ptr(): a.dense.untyped_storage().nbytes() for a in masks}
            out["dense_bytes_measured"] = sum(storages.values())
        else:
            out["block_bytes_measured"] = sum(block_mask_bytes(a.block) for a in masks)
            out["tiles_skipped_percent"] = [round(a.block.sparsity(), 1) for a in masks]  # torch's own count
    out["dense_over_block"] = round(out["dense_bytes_analytic"] / out["block_bytes_analytic"], 1)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__, out="benchmarks/results/attention.jsonl", threads=1, dry_run=True)
    ap.add_argument("--preset", default="fmnist-small", help="the model timed on the CPU")
    ap.add_argument("--batch", type=int, default=16, help="training batch")
    ap.add_argument("--steps", type=int, default=10, help="S of the sampling runs")
    ap.add_argument("--images", type=int, default=4, help="images per sampling run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; each keeps its best")
    ap.add_argument("--no-compiled", action="store_true", help="skip the compiled FlexAttention kernel")
    args = parse(ap, argv)
    if args.dry_run:
        args.preset, args.batch, args.steps, args.images, args.rounds = "tiny", 2, 2, 1, 1
    cfg = wb.preset(args.preset)
    started = time.perf_counter()
    result = {
        "benchmark": "attention",
        "preset": args.preset,
        "machine": machine(),
        "train": training(cfg, args.batch, args.rounds),
        "sample": sampling(cfg, args.images, args.steps, args.rounds),
        "kernel": kernel(cfg, args.batch, args.rounds, compiled=not (args.no_compiled or args.dry_run)),
        "masks": [mask_memory(name) for name in (("tiny",) if args.dry_run else PAPER)],
    }
    result["wall_s"] = round(time.perf_counter() - started, 1)
    emit(result, None if args.dry_run else args.out)
    return result


if __name__ == "__main__":
    main()
