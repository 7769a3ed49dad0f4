"""Latents that stream: a dataset encoded once by all ranks together, stored in 16 bits, read row by row from disk.

A store is a folder <cache dir>/latents-<data key>-<codec hash>/ (keys as LatentCache's). Rank r of W encodes the
items r, r + W, r + 2W, ... in chunks of CHUNK rows through a DataLoader with workers; each chunk is written as
.npy files (float16 latents, the mirrored images' latents with flips, int64 labels) and then a small JSON card with
the sha256 of each file, which marks the chunk complete. A killed encode resumes at the first chunk without a card;
nothing encoded before is lost. When every chunk has its card, rank 0 writes manifest.json (the store is complete).

Reading takes one row with os.pread at its offset in the chunk file: the bytes go through the page cache, which the
kernel may drop, and never into this process's resident memory, so memory per rank stays flat whatever the size of
the set (benchmarks/bench_latents.py measures it, against np.memmap reading, whose touched pages count as resident).
A chunk whose size or header does not match the manifest (always checked) or whose sha256 differs (checked on
opening when the store is at most VERIFY_BYTES, or with verify=True) is refused, naming the chunk and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..core.paths import CACHE_DIR, sha256_file
from .codecs import Codec

CHUNK = 4096  # rows per chunk file: a killed encode loses at most this many rows per rank
VERIFY_BYTES = 1 << 30  # stores up to this size have every chunk's sha256 checked on opening
LARGE_SET = 100_000  # images from which the default cache folder leaves the work tree
HOME_CACHE = Path("~/.cache/madformer-workbench").expanduser()
MANIFEST = "manifest.json"
PARTS = ("latents", "flipped", "labels")  # the files of a chunk (flipped only for flip-augmented stores)


def cache_root(cache_dir: str, size: int) -> Path:
    """Where latent stores and folder indexes go: data.cache_dir if set, else $WORKBENCH_CACHE, else data/cache in
    the repository for sets under LARGE_SET images and ~/.cache/madformer-workbench for larger ones."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("WORKBENCH_CACHE"):
        return Path(os.environ["WORKBENCH_CACHE"]).expanduser()
    return CACHE_DIR if size < LARGE_SET else HOME_CACHE


@dataclass(frozen=True)
class StoreKey:
    """What a store holds: the folder name's two hashes and the identities they hash (recorded in the manifest)."""

    data: str
    codec: str
    data_identity: str
    codec_identity: str
    flips: bool

    @classmethod
    def of(cls, codec: Codec, dataset: Dataset, flips: bool) -> StoreKey:
        if not hasattr(dataset, "identity"):
            raise TypeError(
                f"latent store: {type(dataset).__name__} has no `identity` to key the store. Fix: use a dataset "
                "from workbench.data.datasets.build_dataset."
            )
        data = json.dumps({"dataset": dataset.identity, "flips": flips}, sort_keys=True)
        codec_identity = json.dumps(codec.identity, sort_keys=True)
        return cls(hashlib.sha256(data.encode()).hexdigest()[:16], codec.codec_hash, data, codec_identity, flips)

    def folder(self, root: Path) -> Path:
        return root / f"latents-{self.data}-{self.codec}"


def _chunk_name(folder: Path, rank: int, world: int, k: int) -> Path:
    return folder / f"rank-{rank:03d}-of-{world:03d}" / f"chunk-{k:05d}"


def _rank_rows(n: int, rank: int, world: int) -> int:
    return len(range(rank, n, world))


def _save_npy(path: Path, array: np.ndarray) -> str:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return sha256_file(path)


def encode_shard(codec: Codec, dataset: Dataset, folder: Path, key: StoreKey, rank: int, world: int, workers: int = 0):
    """Encode this rank's items (rank, rank + world, ...) into complete chunks under `folder`, skipping the chunks a
    previous, interrupted encode finished. Returns the number of rows encoded by this call."""
    n, done = len(dataset), 0
    rows = _rank_rows(n, rank, world)
    for k in range(-(-rows // CHUNK)):
        base = _chunk_name(folder, rank, world, k)
        if base.with_suffix(".json").is_file():
            continue  # finished by an earlier launch
        base.parent.mkdir(parents=True, exist_ok=True)
        items = list(range(rank + k * CHUNK * world, n, world))[:CHUNK]
        latents, flipped, labels = [], [], []
        for images, y in DataLoader(Subset(dataset, items), 64, num_workers=workers):  # (b, C, H, W), (b,)
            latents.append(codec.encode(images).to(torch.float16).cpu())
            if key.flips:
                flipped.append(codec.encode(images.flip(-1)).to(torch.float16).cpu())
            labels.append(y.to(torch.int64))
        parts = {"latents": torch.cat(latents), "labels": torch.cat(labels)}
        if key.flips:
            parts["flipped"] = torch.cat(flipped)
        card = {name: [_save_npy(Path(f"{base}-{name}.npy"), t.numpy()), list(t.shape)] for name, t in parts.items()}
        tmp = base.with_name(f".{base.name}.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(card))
        os.replace(tmp, base.with_suffix(".json"))  # the chunk is complete only now
        done += len(items)
    return done


def finish_store(folder: Path, key: StoreKey, n: int, world: int) -> None:
    """Write the manifest (rank 0, once every rank's chunks are complete): the store can be opened from now on."""
    chunks = {}
    for rank in range(world):
        for k in range(-(-_rank_rows(n, rank, world) // CHUNK)):
            base = _chunk_name(folder, rank, world, k)
            chunks[str(base.relative_to(folder))] = json.loads(base.with_suffix(".json").read_text())
    manifest = {"n": n, "world": world, "chunk": CHUNK, "key": key.__dict__, "chunks": chunks}
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, folder / MANIFEST)


class LatentStore(Dataset):
    """A complete store, read row by row (pread, or np.memmap with reader="mmap"). Serves (latent (c, h, w) float32,
    label) for an index or an (index, flip) key like the image datasets."""

    def __init__(self, folder: str | Path, key: StoreKey | None = None, verify: bool | None = None, reader="pread"):
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / MANIFEST).read_text())
        m = self.manifest
        self.n, self.world, self.chunk, self.reader = m["n"], m["world"], m["chunk"], reader
        self.flips = m["key"]["flips"]
        if key is not None and (m["key"]["codec"], m["key"]["data"]) != (key.codec, key.data):
            raise ValueError(
                f"{self.folder}: latent store of codec {m['key']['codec']} and data {m['key']['data']}, but this run "
                f"has codec {key.codec} and data {key.data}. Fix: delete {self.folder} to encode again, or use the "
                "codec and dataset it was built with."
            )
        sizes = {name: shape for card in m["chunks"].values() for name, (_, shape) in card.items()}
        total = sum((self.folder / f"{c}-{p}.npy").stat().st_size for c in m["chunks"] for p in m["chunks"][c])
        self.nbytes = total
        verify = total <= VERIFY_BYTES if verify is None else verify
        self._layout: dict[str, tuple[int, tuple[int, ...], np.dtype]] = {}  # file -> (data offset, shape, dtype)
        for chunk, card in m["chunks"].items():
            for part, (digest, shape) in card.items():
                self._check(chunk, part, digest, shape, verify)
        self.shape = next(tuple(s[1:]) for name, s in sizes.items() if name == "latents")
        self._fds: dict[str, int] = {}
        self._maps: dict[str, np.ndarray] = {}

    def _check(self, chunk: str, part: str, digest: str, shape: list[int], verify: bool) -> None:
        path = self.folder / f"{chunk}-{part}.npy"
        problem = None
        try:
            with open(path, "rb") as f:
                major, _ = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                found, _, dtype = read(f)
                offset = f.tell()
            size = offset + int(np.prod(found)) * dtype.itemsize
            if list(found) != shape or path.stat().st_size != size:
                problem = f"shape {list(found)} / {path.stat().st_size} bytes, the manifest records {shape}"
            elif verify and sha256_file(path) != digest:
                problem = "sha256 differs from the one recorded when it was encoded"
        except (OSError, ValueError) as err:
            problem = f"unreadable ({type(err).__name__}: {err})"
        if problem:
            raise ValueError(
                f"{path}: corrupt latent chunk ({problem}). Fix: delete {path.parent / Path(chunk).name}* and "
                f"{self.folder / MANIFEST}, then start training again: only this chunk is encoded again (python "
                "-m workbench train with the same config; the other chunks are kept)."
            )
        self._layout[str(path)] = (offset, tuple(found), dtype)

    def __len__(self) -> int:
        return self.n

    def _row(self, part: str, index: int) -> np.ndarray:
        rank, j = index % self.world, index // self.world
        path = str(self.folder / f"{_chunk_name(Path(''), rank, self.world, j // self.chunk)}-{part}.npy")
        offset, shape, dtype = self._layout[path]
        row = j % self.chunk
        if self.reader == "mmap":
            if path not in self._maps:
                self._maps[path] = np.load(path, mmap_mode="r")
            return np.array(self._maps[path][row])
        if path not in self._fds:
            self._fds[path] = os.open(path, os.O_RDONLY)
        count = int(np.prod(shape[1:], dtype=np.int64))
        raw = os.pread(self._fds[path], count * dtype.itemsize, offset + row * count * dtype.itemsize)
        return np.frombuffer(raw, dtype).reshape(shape[1:])

    def __getitem__(self, key: int | tuple[int, bool]) -> tuple[torch.Tensor, int]:
        index, flip = key if isinstance(key, tuple) else (key, False)
        if flip and not self.flips:
            raise ValueError(
                f"{self.folder}: flipped latents requested but the store was built without flips. Fix: build it "
                "with flips (data.random_flip=true) or set data.random_flip=false."
            )
        latent = torch.from_numpy(self._row("flipped" if flip else "latents", int(index)).astype(np.float32))
        return latent, int(self._row("labels", int(index)))

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            os.close(fd)


def open_or_build(
    codec: Codec,
    dataset: Dataset,
    root: Path,
    flips: bool,
    ranks: tuple[int, int] = (0, 1),
    barrier: Callable[[], None] = lambda: None,
    workers: int = 0,
) -> tuple[LatentStore, float]:
    """The store of (dataset, codec, flips) under `root`, encoded first by every rank together when it is missing or
    incomplete (`ranks` = (this rank, world size); `barrier` waits for all of them). Returns (store, seconds spent
    encoding here; 0 when it was found)."""
    rank, world = ranks
    key = StoreKey.of(codec, dataset, flips)
    folder = key.folder(root)
    seconds = 0.0
    if not (folder / MANIFEST).is_file():
        if rank == 0 and not (folder / "layout.json").is_file():  # the first launch fixes the layout
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "layout.json").write_text(json.dumps({"world": world}))
        barrier()
        written = json.loads((folder / "layout.json").read_text())["world"]  # a resumed encode keeps its layout
        t0 = time.perf_counter()
        for r in range(rank, written, world):  # fewer ranks than the layout: each takes several shards
            encode_shard(codec, dataset, folder, key, r, written, workers)
        seconds = time.perf_counter() - t0
        barrier()
        if rank == 0:
            finish_store(folder, key, len(dataset), written)
        barrier()
    return LatentStore(folder, key), seconds
