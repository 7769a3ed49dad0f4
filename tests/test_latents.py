"""Streamed latent stores: encoded in shards by several ranks, 16-bit, resumable after a kill without losing what was
encoded, corrupt chunks refused with the fix, and read back exactly (up to float16) in any order."""

import numpy as np
import pytest
import torch
from single_thread import one_thread  # noqa: F401 (autouse)

from workbench.data import latents as lt
from workbench.data.codecs import PixelCodec


class Images(torch.utils.data.Dataset):
    """Random 'images' in [-1, 1] with labels, and the identity a store keys on."""

    def __init__(self, n: int = 11, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.rand(n, 1, 4, 4, generator=g) * 2 - 1, torch.arange(n) % 3
        self.identity = {"dataset": "test-images", "n": n, "seed": seed}

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class CountingCodec(PixelCodec):
    def __init__(self):
        super().__init__(1)
        self.rows = 0

    def encode(self, images):
        self.rows += len(images)
        return super().encode(images)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(lt, "CHUNK", 2)  # several chunks per rank on 11 images


def build_with_two_ranks(codec, data, root, flips=True):
    """What two ranks do, one after the other (the barrier is a no-op in one process)."""
    for rank in (0, 1):
        key = lt.StoreKey.of(codec, data, flips)
        folder = key.folder(root)
        if rank == 0:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "layout.json").write_text('{"world": 2}')
        lt.encode_shard(codec, data, folder, key, rank, 2)
    lt.finish_store(folder, key, len(data), 2)
    return lt.LatentStore(folder, key)


def test_two_ranks_write_their_shards_and_every_row_reads_back_in_16_bits(tmp_path):
    data, codec = Images(), CountingCodec()
    store = build_with_two_ranks(codec, data, tmp_path)
    assert len(store) == 11 and codec.rows == 22  # each image once, and once mirrored
    assert sorted(p.name for p in store.folder.iterdir() if p.is_dir()) == ["rank-000-of-002", "rank-001-of-002"]
    for i in (0, 1, 5, 10):
        latent, label = store[i]
        assert label == int(data.y[i]) and latent.dtype == torch.float32
        assert torch.equal(latent, data.x[i].half().float())  # stored in float16, served as float32
        assert torch.equal(store[i, True][0], data.x[i].flip(-1).half().float())
    mmap = lt.LatentStore(store.folder, reader="mmap")
    assert all(torch.equal(mmap[i][0], store[i][0]) for i in range(11))
    stored = np.load(next(store.folder.glob("rank-000-of-002/chunk-00000-latents.npy")))
    assert stored.dtype == np.float16


def test_an_interrupted_encode_resumes_and_keeps_what_was_encoded(tmp_path):
    data, codec = Images(), CountingCodec()
    store = build_with_two_ranks(codec, data, tmp_path)
    folder = store.folder
    kept = folder / "rank-000-of-002" / "chunk-00000-latents.npy"
    before = kept.stat().st_mtime_ns
    # a kill mid-way: the manifest never written, rank 1's last chunk never completed
    (folder / lt.MANIFEST).unlink()
    (folder / "rank-001-of-002" / "chunk-00002.json").unlink()
    again = CountingCodec()
    resumed, seconds = lt.open_or_build(again, data, tmp_path, True, ranks=(0, 1))
    assert again.rows == 2 * 1  # only the unfinished chunk (1 image of rank 1, and its mirror) was encoded again
    assert kept.stat().st_mtime_ns == before and seconds > 0  # the finished chunks were not rewritten
    assert all(torch.equal(resumed[i][0], store[i][0]) for i in range(11))
    found, seconds = lt.open_or_build(CountingCodec(), data, tmp_path, True)
    assert seconds == 0 and len(found) == 11


def test_a_corrupt_chunk_is_refused_naming_it_and_the_fix(tmp_path):
    store = build_with_two_ranks(CountingCodec(), Images(), tmp_path)
    chunk = store.folder / "rank-001-of-002" / "chunk-00001-latents.npy"
    raw = bytearray(chunk.read_bytes())
    raw[-1] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"chunk-00001-latents.npy: corrupt latent chunk \(sha256.*Fix: delete"):
        lt.LatentStore(store.folder)
    chunk.write_bytes(bytes(raw[:-3]))  # truncated: caught by the size check even without hashing
    with pytest.raises(ValueError, match="corrupt latent chunk.*only this chunk is encoded again"):
        lt.LatentStore(store.folder, verify=False)


def test_a_store_of_another_codec_or_dataset_is_refused(tmp_path):
    data = Images()
    store = build_with_two_ranks(CountingCodec(), data, tmp_path)
    other = lt.StoreKey.of(CountingCodec(), Images(seed=1), True)
    with pytest.raises(ValueError, match="latent store of codec .* Fix: delete"):
        lt.LatentStore(store.folder, other)


def test_the_cache_folder_leaves_the_work_tree_for_large_sets(monkeypatch, tmp_path):
    monkeypatch.delenv("WORKBENCH_CACHE", raising=False)
    assert lt.cache_root("", 1000) == lt.CACHE_DIR
    assert lt.cache_root("", 1_281_167) == lt.HOME_CACHE and not lt.HOME_CACHE.is_relative_to(lt.CACHE_DIR.parent)
    assert lt.cache_root(str(tmp_path), 10) == tmp_path
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "env"))
    assert lt.cache_root("", 10) == tmp_path / "env"


def test_an_image_folder_index_skips_the_header_scan_until_the_folder_changes(tmp_path, monkeypatch):
    from PIL import Image

    from workbench.core.config import DataConfig
    from workbench.data import datasets

    root = tmp_path / "folder"
    for wnid in ("n01", "n02"):
        (root / wnid).mkdir(parents=True)
        for i in range(30):
            Image.new("RGB", (40, 40), (i * 8, 0, 0)).save(root / wnid / f"{i}.png")
    (root / "n01" / "broken.png").write_bytes(b"not an image")
    cfg = DataConfig(dataset="folder", root=str(root), image_size=32, channels=3, cache_dir=str(tmp_path / "c"))
    opened, real_open = [], datasets.Image.open
    monkeypatch.setattr(datasets.Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    skip = DataConfig(**{**cfg.__dict__, "on_corrupt": "skip"})
    first = datasets.ImageFolder(skip, "train")
    assert len(opened) == 61 and first.counts["unreadable"] <= 1  # every header once (both splits)
    opened.clear()
    again = datasets.ImageFolder(skip, "train")
    assert opened == [] and again.samples == first.samples and again.skipped == first.skipped  # from the index
    with pytest.raises(ValueError, match="broken.png: unreadable image"):
        datasets.ImageFolder(cfg, "all")  # the index remembers why a file is unreadable
    Image.new("RGB", (40, 40)).save(root / "n02" / "new.png")
    datasets.ImageFolder(skip, "train")
    assert len(opened) == 62 and len(list((tmp_path / "c" / "index").iterdir())) == 2  # a changed folder: new key
