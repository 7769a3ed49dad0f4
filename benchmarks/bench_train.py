"""Training throughput and model FLOP utilisation (MFU) against this machine's matmul rate, in one run.

    python -m benchmarks.bench_train [--preset fmnist-small] [--batch 0] [--variants fp32,bf16,...]
                                     [--rounds 3] [--threads 0] [--device cpu] [--clock wall|cpu]
                                     [--out results.jsonl]

A step is forward + backward + AdamW on one batch. FLOPs per step come from workbench.core.compute.train_flops (exact
against FlopCounterMode, see tests/test_compute.py). The matmul rate is the best of a few GEMMs (model-sized and
square) timed alternately with the steps, in fp32 and bf16; MFU = achieved FLOP/s / that rate in the step's
precision. Variants:
  fp32, bf16            eager, float32 or bf16 autocast
  fp32-compile, ...     the same under torch.compile (compile time is reported, not timed)
  fp32-nomask           SDPA without the attention mask: wrong model, measures what the mask costs
Also times the attention kernels alone at the training shapes: SDPA with the boolean mask, without it, and
FlexAttention with a block mask (compiled; forward only where it has no backward, e.g. CPU).
"""

from __future__ import annotations

import time
import types

import torch
import torch.nn.functional as F

import workbench as wb
import workbench.core.layers
from benchmarks.harness import CLOCKS, best_times, emit, machine, matmul_probes, parse, parser, peak_rate
from workbench.core.blocks import training_masks
from workbench.core.compute import sequence_blocks, train_flops
from workbench.core.diffusion import Diffusion

VARIANTS = ("fp32", "bf16", "fp32-compile", "bf16-compile", "fp32-nomask")


def without_mask() -> types.SimpleNamespace:
    """torch.nn.functional with SDPA ignoring attn_mask (patched into workbench.core.layers for one variant)."""

    def sdpa(q, k, v, attn_mask=None, **kw):
        return F.scaled_dot_product_attention(q, k, v, **kw)

    return types.SimpleNamespace(**{**vars(F), "scaled_dot_product_attention": sdpa})


def make_step(cfg, variant: str, batch: int, device: str):
    """A closure running one training step of a fresh model (same seed for every variant)."""
    torch.manual_seed(0)
    model = wb.build_model(cfg).to(device)
    diffusion = Diffusion(cfg.diffusion, cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    fwd = torch.compile(model) if "compile" in variant else model
    bf16 = variant.startswith("bf16")
    m = cfg.model
    x0 = torch.randn(batch, m.latent_channels, m.latent_size, m.latent_size, device=device)
    functional = without_mask() if variant.endswith("nomask") else F

    def step() -> None:
        workbench.core.layers.F = functional
        try:
            with torch.autocast(device, torch.bfloat16, enabled=bf16):
                loss = diffusion.loss(fwd, x0).total
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        finally:
            workbench.core.layers.F = F

    return step


def attention_kernels(cfg, batch: int, device: str, rounds: int, clock: str) -> dict:
    """Milliseconds of the training-shape attention alone: SDPA with/without the mask, FlexAttention."""
    m = cfg.model
    mask = training_masks(m)[1].to(device)
    L, H = mask.shape[0], m.heads
    q, k, v = (torch.randn(batch, H, L, m.width // H, device=device) for _ in range(3))
    fns = {
        "sdpa_mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        "sdpa_nomask": lambda: F.scaled_dot_product_attention(q, k, v),
    }
    out = {}
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        block_mask = create_block_mask(lambda b, h, qi, ki: mask[qi, ki], None, None, L, L, device=device)
        flex = torch.compile(flex_attention)
        start = time.perf_counter()
        flex(q, k, v, block_mask=block_mask)
        out["flex_compile_s"] = round(time.perf_counter() - start, 1)
        fns["flex"] = lambda: flex(q, k, v, block_mask=block_mask)
        try:
            qg = q.clone().requires_grad_()
            flex(qg, k, v, block_mask=block_mask).sum().backward()
            out["flex_backward"] = "ok"
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            out["flex_backward"] = f"{type(e).__name__}: {str(e)[:120]}"
    except Exception as e:  # noqa: BLE001
        out["flex"] = f"{type(e).__name__}: {str(e)[:160]}"
    sync = torch.cuda.synchronize if device == "cuda" else None
    for name, sec in best_times(fns, rounds=rounds, sync=sync, min_seconds=0.2, clock=clock).items():
        out[name + "_ms"] = round(sec * 1e3, 3)
    return out


def run(cfg, variants: list[str], batch: int, rounds: int, device: str, clock: str) -> dict:
    """Time the variants alternately with matmul probes; return per-variant step time, tokens/s and MFU."""
    m = cfg.model
    probes = {**matmul_probes(torch.float32, device), **matmul_probes(torch.bfloat16, device)}
    steps, compile_s = {}, {}
    for v in variants:
        steps[v] = make_step(cfg, v, batch, device)
        start = time.perf_counter()
        steps[v]()  # warm-up; for compiled variants this is the compilation
        compile_s[v] = round(time.perf_counter() - start, 1)
    sync = torch.cuda.synchronize if device == "cuda" else None
    times = best_times({**steps, **{k: f for k, (f, _) in probes.items()}}, rounds=rounds, sync=sync, clock=clock)
    peak = {
        "fp32": peak_rate(times, {k: p for k, p in probes.items() if "float32" in k}),
        "bf16": peak_rate(times, {k: p for k, p in probes.items() if "bfloat16" in k}),
    }
    flops = train_flops(m, batch)
    seq_tokens = round(sequence_blocks(m) * m.block_tokens)  # clean copies + noisy slots (+ prefix) per image
    result = {
        "flops_per_step": flops,
        "image_tokens_per_step": batch * m.grid**2,
        "sequence_tokens_per_step": batch * seq_tokens,
        "matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in peak.items()},
        "matmul_probe_gflops": {k: round(f / times[k] / 1e9, 1) for k, (_, f) in probes.items()},
        "variants": {},
    }
    for v in variants:
        sec = times[v]
        result["variants"][v] = {
            "seconds_per_step": round(sec, 4),
            "warmup_s": compile_s[v],
            "image_tokens_per_s": round(batch * m.grid**2 / sec, 1),
            "gflops_per_s": round(flops / sec / 1e9, 1),
            "mfu": round(flops / sec / peak["bf16" if v.startswith("bf16") else "fp32"], 3),
        }
    return result


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, threads=0)
    ap.add_argument("--preset", default="fmnist-small")
    ap.add_argument("--batch", type=int, default=0, help="images per step (0: the preset's batch size)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-attention", action="store_true", help="skip the attention-kernel timings")
    ap.add_argument("--clock", choices=CLOCKS, default="wall", help="wall clock, or process CPU time (1 thread)")
    args = parse(ap, argv)
    cfg = wb.preset(args.preset)
    batch = args.batch or cfg.train.batch_size
    result = {
        "benchmark": "train",
        "preset": args.preset,
        "batch": batch,
        "device": args.device,
        "clock": args.clock,
        **run(cfg, args.variants.split(","), batch, args.rounds, args.device, args.clock),
    }
    if not args.no_attention:
        result["attention"] = attention_kernels(cfg, batch, args.device, args.rounds, args.clock)
    result["machine"] = machine()
    emit(result, args.out)


if __name__ == "__main__":
    main()
