"""Streamed latents: resident memory of a process reading a latent store of ImageNet size (1,281,167 x 4 x 32 x 32
float16, 10.5 GB) against one 10x smaller, for the two readers (os.pread rows, np.memmap), and the encoding
speed-up of 2 processes over 1 (each process one thread, a tiny SD-VAE-architecture AutoencoderKL; timed from the
first process starting to encode to the last finishing, process start-up excluded).

    python -m benchmarks.bench_latents                 # the full sizes (needs ~12 GB free under --dir)
    python -m benchmarks.bench_latents --dry-run       # the same code path on small stores, in seconds

Reading: a fresh process per (store, reader) draws --rows rows through the training loader (make_loader: the
shuffled, resumable order, batches of 256) and reports its resident set size (psutil) before and after. The
synthetic stores are written without a codec (each chunk filled with its index) and opened with verify=False.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from benchmarks import harness
from workbench.data import latents as lt
from workbench.data.codecs import CODEC_CARD, VAECodec, codec_files
from workbench.data.datasets import make_loader

IMAGENET = 1_281_167
SHAPE = (4, 32, 32)


def write_synthetic(folder: Path, n: int, world: int = 8) -> None:
    """A complete store of n rows in the layout `world` ranks would write, without encoding anything."""
    key = lt.StoreKey("synthetic", f"n{n}", "{}", "{}", False)
    for rank in range(world):
        rows = len(range(rank, n, world))
        for k in range(-(-rows // lt.CHUNK)):
            base = lt._chunk_name(folder, rank, world, k)
            base.parent.mkdir(parents=True, exist_ok=True)
            m = min(lt.CHUNK, rows - k * lt.CHUNK)
            np.save(f"{base}-latents.npy", np.full((m, *SHAPE), k % 7, dtype=np.float16))
            np.save(f"{base}-labels.npy", np.zeros(m, dtype=np.int64))
            card = {"latents": ["", [m, *SHAPE]], "labels": ["", [m]]}
            base.with_suffix(".json").write_text(json.dumps(card))
    lt.finish_store(folder, key, n, world)


def read_rss(folder: str, reader: str, rows: int) -> dict:
    """In this (fresh) process: RSS before and after drawing `rows` rows through the training loader."""
    torch.set_num_threads(1)
    proc = psutil.Process()
    store = lt.LatentStore(folder, verify=False, reader=reader)
    before = proc.memory_info().rss
    t0 = time.perf_counter()
    batches = iter(make_loader(store, 256, train=True, seed=0))
    for _ in range(rows // 256):
        next(batches)
    return {
        "rss_before_mb": before / 1e6,
        "rss_after_mb": proc.memory_info().rss / 1e6,
        "seconds": time.perf_counter() - t0,
    }


def tiny_sd_vae(folder: Path) -> Path:
    """A diffusers AutoencoderKL with the SD-VAE architecture (4 encoder and decoder blocks, 8x downsampling, 4
    latent channels, SD's scaling factor 0.18215), narrow and randomly initialised (seed 0), saved as a local
    folder with a codec card of its files' sha256, as a codec the workbench reads; returns `folder`. Shared with
    tests/test_distributed.py's ImageNet-layout run."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        scaling_factor=0.18215,
    )
    vae.save_pretrained(folder)
    card = {"name": "sd-vae-architecture-tiny", "note": "random weights", "files": codec_files(folder)}
    (folder / CODEC_CARD).write_text(json.dumps(card))
    return folder


class Images(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int):
        self.n, self.size, self.identity = n, size, {"dataset": "bench-images", "n": n, "size": size}

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, self.size, self.size, generator=g) * 2 - 1, 0


def encode_rank(vae: str, n: int, size: int, folder: str, rank: int, world: int) -> None:
    torch.set_num_threads(1)
    codec, data = VAECodec(vae, 0.18215), Images(n, size)
    key = lt.StoreKey.of(codec, data, False)
    codec.encode(data[0][0][None])  # warm-up outside the timing (first-call allocations)
    start = time.time()
    lt.encode_shard(codec, data, Path(folder), key, rank, world)
    Path(folder, f"time-{rank}.json").write_text(json.dumps([start, time.time()]))


def encode_seconds(vae: Path, n: int, size: int, folder: Path, world: int) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=encode_rank, args=(str(vae), n, size, str(folder), r, world)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    spans = [json.loads(Path(folder, f"time-{r}.json").read_text()) for r in range(world)]
    return max(end for _, end in spans) - min(start for start, _ in spans)  # encoding only, not process start-up


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, out="benchmarks/results/bench_latents.jsonl", threads=1, dry_run=True)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the synthetic stores are written")
    ap.add_argument("--rows", type=int, default=51_200, help="rows each reading process draws")
    ap.add_argument("--encode-images", type=int, default=256, help="images encoded per timing")
    ap.add_argument("--encode-size", type=int, default=64, help="image side of the encode timing")
    ap.add_argument("--encode-only", action="store_true", help="skip the reading measurement")
    args = harness.parse(ap, argv)
    big = 20_000 if args.dry_run else IMAGENET
    rows = 2_560 if args.dry_run else args.rows
    root = Path(args.dir) / "bench_latents"
    result = {"benchmark": "bench_latents", "rows_read": rows, "machine": harness.machine()}
    for n in () if args.encode_only else (big, big // 10):
        folder = root / f"n{n}"
        if not (folder / lt.MANIFEST).is_file():
            shutil.rmtree(folder, ignore_errors=True)
            write_synthetic(folder, n)
        gb = sum(f.stat().st_size for f in folder.rglob("*.npy")) / 1e9
        for reader in ("pread", "mmap"):
            code = (
                "import json, benchmarks.bench_latents as b; "
                f"print(json.dumps(b.read_rss({str(folder)!r}, {reader!r}, {rows})))"
            )
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            result[f"{reader}_n{n}"] = {**row, "store_gb": gb}
            print(f"n={n:>9,} ({gb:.2f} GB) {reader:>5}: RSS {row['rss_after_mb']:.0f} MB", flush=True)
    for reader in () if args.encode_only else ("pread", "mmap"):
        result[f"{reader}_rss_ratio_10x"] = (
            result[f"{reader}_n{big}"]["rss_after_mb"] / result[f"{reader}_n{big // 10}"]["rss_after_mb"]
        )
    with tempfile.TemporaryDirectory() as tmp:
        vae = tiny_sd_vae(Path(tmp) / "vae")
        n_img = 32 if args.dry_run else args.encode_images
        one = encode_seconds(vae, n_img, args.encode_size, Path(tmp) / "one", 1)
        two = encode_seconds(vae, n_img, args.encode_size, Path(tmp) / "two", 2)
    result.update(
        encode_images=n_img,
        encode_size=args.encode_size,
        encode_1_process_s=one,
        encode_2_processes_s=two,
        encode_speedup=one / two,
    )
    ratios = {k: round(v, 3) for k, v in result.items() if k.endswith("_rss_ratio_10x")}
    print(
        f"RSS ratio 10x more latents: {ratios}; "
        f"encode {n_img} images: 1 process {one:.1f} s, 2 processes {two:.1f} s, speed-up {one / two:.2f}"
    )
    harness.emit(result, None if args.dry_run else args.out)
    if not args.dry_run:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
