"""Semantics check for speed work: the working tree's model gives the same outputs as a base revision's.

    python -m benchmarks.check_equivalence BASE [--preset fmnist-small]

Exports BASE's `workbench/` (git archive) under the package name `wb_base` (its imports are relative), builds
both models with the same random non-zero weights, and compares the teacher-forced forward and a short cached
sampling run over a few variants. Prints the largest absolute difference of each (and appends them to --out);
exit status 1 above --tol.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

import workbench as wb
from benchmarks.harness import emit, machine, parse, parser

REPO = Path(__file__).resolve().parents[1]
VARIANTS = [
    {},
    {"model.num_classes": 10},
    {"model.clean_stream": False},
    {"model.use_z_cond": False},
    {"model.denoiser_attention": "token"},
    {"model.num_blocks": 16, "model.patch_size": 2},
    {"model.num_blocks": 1, "model.diffusion_depth": 6},
]


def import_base(rev: str, tmp: Path):
    """BASE's `workbench` package, exported under `tmp` and imported as the package `wb_base` from its folder (its
    imports are relative, so it never reaches the working tree's package)."""
    archive = tmp / "base.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(REPO), "archive", rev, "workbench"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    folder = (tmp / "workbench").rename(tmp / "wb_base")
    spec = importlib.util.spec_from_file_location(
        "wb_base", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["wb_base"] = module  # its submodules import their package by this name
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, threads=0)
    ap.add_argument("base")
    ap.add_argument("--preset", default="fmnist-small")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = parse(ap, argv)
    worst, rows = 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        base = import_base(args.base, Path(tmp))
        for over in VARIANTS:
            cb, cn = base.preset(args.preset, **over), wb.preset(args.preset, **over)
            mb, mn = base.build_model(cb).eval(), wb.build_model(cn).eval()
            g = torch.Generator().manual_seed(0)
            weights = {k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in mb.state_dict().items()}
            mb.load_state_dict(weights)
            mn.load_state_dict(weights)
            x0, xt = torch.randn(2, 1, 32, 32, generator=g), torch.randn(2, 1, 32, 32, generator=g)
            t = torch.randint(0, 1000, (2, cn.model.num_blocks), generator=g)
            labels = torch.tensor([1, 2]) if cn.model.num_classes else None
            with torch.no_grad():
                forward = (mb(x0, xt, t, labels)[0] - mn(x0, xt, t, labels)[0]).abs().max().item()
            run = dict(num_images=2, steps=3, seed=0)
            sampled = (base.generate(mb, cb, **run) - wb.generate(mn, cn, **run)).abs().max().item()
            worst = max(worst, forward, sampled)
            rows.append({"variant": over, "forward": forward, "cached_sampling": sampled})
            print(f"{over or 'default'}: forward {forward:.3g}, cached sampling {sampled:.3g}")
    print(f"largest difference {worst:.3g} (tolerance {args.tol})")
    result = {"benchmark": "equivalence", "base": args.base, "preset": args.preset, "variants": rows}
    emit({**result, "largest": worst, "tolerance": args.tol, "machine": machine()}, args.out)
    sys.exit(int(worst > args.tol))


if __name__ == "__main__":
    main()
