"""Datasets and the resumable data order: real data (Debian's Fashion-MNIST and Noto Color Emoji, the Fluent 3D
emoji when fetched; a synthetic Fluent package otherwise), real errors, the fetch script without a network."""

import itertools
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fluent_fixture import NAMES, held_out, write_fluent
from PIL import Image

from workbench.core.config import LABEL_SCHEMES, DataConfig
from workbench.data import datasets as data
from workbench.data import emoji
from workbench.data.datasets import (
    EpochSampler,
    SpacedSubset,
    build_dataset,
    fashion_mnist_arrays,
    make_loader,
    num_classes,
    training_dataset,
)

needs_fmnist = pytest.mark.skipif(
    not data.DEBIAN_FASHION_MNIST.is_dir(), reason="sudo apt-get install dataset-fashion-mnist"
)
needs_emoji = pytest.mark.skipif(not data.EMOJI_FONT.is_file(), reason="sudo apt-get install fonts-noto-color-emoji")


# ---- Fashion-MNIST -----------------------------------------------------------------------------------------------
@needs_fmnist
@pytest.mark.parametrize("split,count", [("train", 60000), ("test", 10000)])
def test_fashion_mnist_arrays(split, count):
    images, labels = fashion_mnist_arrays(split)
    assert images.shape == (count, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (count,) and labels.dtype == np.int64
    assert np.array_equal(np.bincount(labels), np.full(10, count // 10))  # balanced classes
    assert images.min() == 0 and images.max() == 255


@needs_fmnist
def test_fashion_mnist_dataset_pads_with_background():
    images, labels = fashion_mnist_arrays("test")
    ds = build_dataset(DataConfig(dataset="fashion-mnist"), "val")
    assert len(ds) == 10000 and num_classes(DataConfig()) == 10
    x, y = ds[123]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y == labels[123]
    assert x.min() >= -1 and x.max() <= 1
    expect = torch.from_numpy(images[123].astype(np.float32)) / 127.5 - 1
    assert torch.equal(x[0, 2:30, 2:30], expect)  # the original pixels, untouched
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (x[0][border] == -1).all()  # padding is the black background


@needs_fmnist
def test_fashion_mnist_resized_rgb_and_flip_key():
    ds = build_dataset(DataConfig(dataset="fashion-mnist", image_size=48, channels=3), "test")
    x, _ = ds[0]
    assert x.shape == (3, 48, 48) and torch.equal(x[0], x[2])
    assert torch.equal(ds[0, True][0], x.flip(-1))


def test_missing_fashion_mnist_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path / "repo")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist.*WORKBENCH_DATA"):
        fashion_mnist_arrays("train", root=str(tmp_path))


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown split 'dev'.*Fix"):
        build_dataset(DataConfig(), "dev")


@pytest.mark.parametrize("count", [1, 7, 100])
def test_max_images_trains_on_an_evenly_spaced_subset_with_its_own_identity(count):
    full = build_dataset(DataConfig(), "val")  # 10,000 images
    sub = training_dataset(DataConfig(max_images=count), "val")
    assert isinstance(sub, SpacedSubset) and len(sub) == count and sub.identity["max_images"] == count
    assert sub.indices == sorted(set(sub.indices)) and sub.indices[-1] >= len(full) - len(full) // count - 1
    for i in (0, count - 1):  # the same pixels and labels as the full set at the spaced index, flips included
        image, label = sub[i, True]
        want_image, want_label = full[sub.indices[i], True]
        assert torch.equal(image, want_image) and label == want_label
    assert sub.identity != full.identity  # so a latent cache of the subset never passes for the whole set's
    assert training_dataset(DataConfig(), "val").identity == full.identity  # 0: all images, the set itself


def test_max_images_beyond_the_set_keeps_every_image_and_a_negative_count_is_refused():
    assert len(SpacedSubset(build_dataset(DataConfig(), "val"), 20_000)) == 10_000
    with pytest.raises(ValueError, match="data.max_images.*got -1.*Fix"):
        DataConfig(max_images=-1)


# ---- EpochSampler ------------------------------------------------------------------------------------------------
def take(sampler, k):
    return list(itertools.islice(iter(sampler), k))


@pytest.mark.parametrize("flips", [False, True])
def test_epoch_sampler_is_deterministic_and_resumes_mid_epoch(flips):
    n, seed = 37, 5
    stream = take(EpochSampler(n, seed, flips=flips), 4 * n)
    assert stream == take(EpochSampler(n, seed, flips=flips), 4 * n)
    indices = [k[0] if flips else k for k in stream]
    for e in range(4):
        assert sorted(indices[e * n : (e + 1) * n]) == list(range(n))  # each epoch is a permutation
    assert indices[:n] != indices[n : 2 * n]  # a new order every epoch
    assert indices[:n] != take(EpochSampler(n, seed + 1), n)
    for start in (0, 1, n - 1, n, 2 * n + 11):  # resume anywhere, across epoch boundaries
        assert take(EpochSampler(n, seed, start_index=start, flips=flips), 4 * n - start) == stream[start:]
    assert EpochSampler(n, seed).state(2 * n + 11) == (2, 11)
    if flips:
        assert 0 < sum(f for _, f in stream) < len(stream)


def test_epoch_sampler_ranks_partition_the_stream():
    n, world = 10, 3
    full = take(EpochSampler(n, 1, start_index=4), 30)
    shards = [take(EpochSampler(n, 1, start_index=4, rank=r, world_size=world), 10) for r in range(world)]
    assert [shards[g % world][g // world] for g in range(30)] == full


@needs_fmnist
def test_loader_resume_gives_the_same_batches():
    ds = build_dataset(DataConfig(), "test")
    first = [b for b, _ in itertools.islice(make_loader(ds, 8, seed=3, flips=True), 5)]
    resumed = [b for b, _ in itertools.islice(make_loader(ds, 8, seed=3, start_index=3 * 8, flips=True), 2)]
    assert torch.equal(torch.stack(first[3:]), torch.stack(resumed))
    (val,) = list(make_loader(torch.utils.data.Subset(ds, range(7)), 8, train=False))
    assert torch.equal(val[0], torch.stack([ds[i][0] for i in range(7)]))


# ---- emoji -------------------------------------------------------------------------------------------------------
@needs_emoji
def test_emoji_full_build_colour_deterministic_and_cached(tmp_path):
    t = time.perf_counter()
    images, labels, cps = data.emoji_arrays(64, cache_dir=tmp_path)
    build_s = time.perf_counter() - t
    print(f"emoji: {len(images)} glyphs at 64x64 rendered in {build_s:.2f} s")
    assert images.shape == (len(cps), 64, 64, 3) and images.dtype == np.uint8 and len(cps) > 1000
    assert len(set(cps.tolist())) == len(cps) and 0x1F600 in cps  # grinning face
    assert labels.min() == 0 and labels.max() == len(data.EMOJI_GROUPS) - 1
    assert (images.std(axis=-1) > 10).mean() > 0.1  # colour, not grey
    assert (images[:, 0, 0] == 255).all()  # white background at the corners
    t = time.perf_counter()
    again = data.emoji_arrays(64, cache_dir=tmp_path)
    assert time.perf_counter() - t < build_s / 5 and np.array_equal(again[0], images)
    fresh = data.emoji_arrays(64, cache_dir=tmp_path / "fresh", limit=40)  # rebuilt from scratch: same pixels
    assert np.array_equal(fresh[0], images[:40]) and np.array_equal(fresh[2], cps[:40])


@needs_emoji
def test_emoji_dataset_splits(tmp_path):
    cfg = DataConfig(dataset="emoji", image_size=32, channels=3)
    train, test = (data.Emoji(cfg, s, limit=200, cache_dir=tmp_path) for s in ("train", "test"))
    assert len(train) + len(test) == 200 and 10 <= len(test) <= 35  # ~10 % held out
    assert not set(train.codepoints.tolist()) & set(test.codepoints.tolist())
    x, y = train[0]
    assert x.shape == (3, 32, 32) and -1 <= x.min() and x.max() <= 1 and 0 <= y < num_classes(cfg)
    grey = data.Emoji(DataConfig(dataset="emoji", image_size=32, channels=1), "train", limit=200, cache_dir=tmp_path)
    assert grey[0][0].shape == (1, 32, 32)


def test_missing_emoji_font_names_the_fix(tmp_path):
    cfg = DataConfig(dataset="emoji", root=str(tmp_path / "NoFont.ttf"), image_size=64, channels=3)
    with pytest.raises(FileNotFoundError, match="apt-get install fonts-noto-color-emoji"):
        build_dataset(cfg, "train")


# ---- image folders -----------------------------------------------------------------------------------------------
def write_folder(root, classes=("cat", "dog"), per_class=30, size=(40, 24)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_folder_class_labels_and_centre_crop(tmp_path):
    write_folder(tmp_path, classes=("zebra", "ant", "cat"))
    cfg = DataConfig(dataset="folder", root=str(tmp_path), image_size=16, channels=3)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert num_classes(cfg) == 3 and len(train) + len(val) == 90 and 1 <= len(val) <= 12
    assert {p for p, _ in train.samples}.isdisjoint(p for p, _ in val.samples)
    for path, label in train.samples:
        assert label == ["ant", "cat", "zebra"].index(path.parent.name)
    x, y = train[0]
    assert x.shape == (3, 16, 16) and -1 <= x.min() and x.max() <= 1


def test_folder_resizes_the_centre_square(tmp_path):
    wide = np.zeros((24, 40, 3), dtype=np.uint8)  # (H, W, 3): red side bands around a smooth blue-green square
    wide[:, :8, 0] = wide[:, 32:, 0] = 255
    wide[:, 8:32, 2] = np.linspace(0, 255, 24, dtype=np.uint8)[None, :]
    wide[:, 8:32, 1] = 128
    (tmp_path / "a").mkdir()
    Image.fromarray(wide).save(tmp_path / "a" / "wide.png")
    cfg = DataConfig(dataset="folder", root=str(tmp_path), image_size=12, channels=3)
    x, _ = build_dataset(cfg, "train")[0]  # (3, 12, 12)
    ref = np.asarray(Image.fromarray(wide[:, 8:32]).resize((12, 12), Image.LANCZOS)).astype(np.float32)
    ref = torch.from_numpy(ref).permute(2, 0, 1) / 127.5 - 1  # (3, 12, 12)
    assert (x[0, :, 1:-1] < -0.9).all()  # no red inside: the side bands were cropped (the filter sees 1 px)
    assert torch.allclose(x[:, :, 1:-1], ref[:, :, 1:-1], atol=4 / 127.5)  # the centre square, resized
    grey = build_dataset(DataConfig(dataset="folder", root=str(tmp_path), image_size=12, channels=1), "train")
    assert grey[0][0].shape == (1, 12, 12)


@pytest.mark.parametrize("orientation,bright", [(1, "left"), (6, "top"), (8, "bottom"), (3, "right")])
def test_folder_applies_exif_orientation(tmp_path, orientation, bright):
    """A phone photo stores its pixels unrotated with an EXIF orientation tag: the data must see what a viewer
    shows. Stored pixels: white left half, black right half."""
    stored = np.zeros((32, 32, 3), dtype=np.uint8)
    stored[:, :16] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation: 1 as stored, 6 rotate 90 clockwise, 8 counter-clockwise, 3 by 180
    (tmp_path / "a").mkdir()
    Image.fromarray(stored).save(tmp_path / "a" / "photo.jpg", exif=exif, quality=95)
    x, _ = build_dataset(DataConfig(dataset="folder", root=str(tmp_path), image_size=16, channels=1), "train")[0]
    halves = {"left": x[0, :, :8], "right": x[0, :, 8:], "top": x[0, :8], "bottom": x[0, 8:]}
    assert halves[bright].mean() > 0.8 and all(
        v.mean() < 0.5
        for k, v in halves.items()
        if k != bright and {k, bright} in ({"left", "right"}, {"top", "bottom"})
    ), orientation


def test_flat_folder_has_label_zero(tmp_path):
    write_folder(tmp_path, classes=("",), per_class=10)
    cfg = DataConfig(dataset="folder", root=str(tmp_path), image_size=8, channels=3)
    assert num_classes(cfg) == 0 and {y for _, y in build_dataset(cfg, "train").samples} == {0}


def test_corrupt_file_errors_or_is_skipped(tmp_path):
    write_folder(tmp_path, per_class=12)
    bad = [tmp_path / "cat" / "broken.png", tmp_path / "dog" / "blank.jpg"]
    assert not any(data._held_out(p.relative_to(tmp_path).as_posix(), 5) for p in bad)  # all in "train"
    bad[0].write_bytes(b"not a png at all")
    bad[1].write_bytes(b"")
    (tmp_path / "dog" / "truncated.png").write_bytes((tmp_path / "dog" / "0.png").read_bytes()[:200])
    cfg = DataConfig(dataset="folder", root=str(tmp_path), image_size=8, channels=3, on_corrupt="error")
    with pytest.raises(ValueError, match="(broken.png|blank.jpg): unreadable image.*on_corrupt='skip'"):
        build_dataset(cfg, "train")
    skip = DataConfig(dataset="folder", root=str(tmp_path), image_size=8, channels=3, on_corrupt="skip")
    ds = build_dataset(skip, "train")
    assert sorted(ds.skipped) == sorted(bad) and ds.num_skipped == 2  # caught when listing
    images = [ds[i][0] for i in range(len(ds))]  # truncated.png fails to decode: skipped on load
    assert ds.num_skipped == 3 and ds.skipped[-1].name == "truncated.png"
    assert all(im.shape == (3, 8, 8) for im in images)


def test_missing_folder_names_the_fix(tmp_path):
    cfg = DataConfig(dataset="folder", root=str(tmp_path / "nowhere"), image_size=16, channels=3)
    with pytest.raises(FileNotFoundError, match="nowhere not found. Fix: set data.root"):
        build_dataset(cfg, "train")
    with pytest.raises(ValueError, match="data.root is empty.*Fix"):
        build_dataset(DataConfig(dataset="folder", image_size=16, channels=3), "train")
    with pytest.raises(ValueError, match="no readable images.*Fix"):
        build_dataset(DataConfig(dataset="folder", root=str(tmp_path), image_size=16, channels=3), "train")


# ---- Fluent 3D emoji (a synthetic package: tests never download) ------------------------------------------------
needs_fluent = pytest.mark.skipif(not (emoji.FLUENT_DIR / "SHA256SUMS").is_file(), reason=emoji.FETCH_FLUENT)
FETCH = Path(__file__).resolve().parents[1] / "scripts" / "fetch_fluent_emoji.sh"


@pytest.fixture
def fluent(tmp_path):
    return write_fluent(tmp_path / "fluent")


def test_fluent_composites_on_the_background_with_group_labels_and_tones_in_one_split(fluent, tmp_path):
    cfg = DataConfig(dataset="fluent", root=str(fluent), image_size=64, channels=3)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert (len(train), len(val)) == (25, 4) and num_classes(cfg) == len(data.EMOJI_GROUPS)
    names = {split: {p.name for p, _ in ds.samples} for split, ds in (("train", train), ("val", val))}
    assert names["val"] == {n for n in NAMES if held_out(n)}
    assert {f"1f3c3-{t:x}.webp" for t in range(0x1F3FB, 0x1F400)} <= names["train"]  # five tones, one side
    assert {"1f44c.webp", "1f44c-1f3fb.webp"} <= names["val"]
    groups = {p.name: y for p, y in train.samples}
    assert (groups["0023-fe0f-20e3.webp"], groups["1f34e.webp"], groups["1f600.webp"], groups["1fa90.webp"]) == (
        0,
        2,
        3,
        7,
    )  # bmp-symbols, pictographs, emoticons, extended-a: the groups of the first code point
    path = fluent / "assets" / "1f600.webp"
    x, _ = train[[p.name for p, _ in train.samples].index("1f600.webp")]  # (3, 64, 64)
    with Image.open(path) as im:
        rgba = np.asarray(im)  # (256, 256, 4)
    assert (rgba[0, 0, 3] == 0) and (rgba[0, 0, :3] != 255).any()  # a transparent corner hiding a colour
    assert (x[:, :4, :4] == 1).all()  # composited: white, not the hidden colour that dropping alpha would show
    assert torch.allclose(x[:, 32, 32], torch.from_numpy(rgba[128, 128, :3].astype(np.float32)) / 127.5 - 1)
    moved = tmp_path / "elsewhere"
    shutil.copytree(fluent, moved)  # the identity is the content, not the location
    assert build_dataset(replace(cfg, root=str(moved)), "train").identity == train.identity


def test_split_all_is_train_and_held_out_together(fluent):
    """Split "all" (the Fluent reference statistics' split) serves every image of a hash-split dataset once, in the
    order of the files; Fashion-MNIST's is its training set followed by its test set."""
    cfg = DataConfig(dataset="fluent", root=str(fluent), image_size=32, channels=3)
    parts = {split: [p.name for p, _ in build_dataset(cfg, split).samples] for split in ("train", "val", "all")}
    assert len(parts["all"]) == len(NAMES) and sorted(parts["all"]) == sorted(parts["train"] + parts["val"])
    assert build_dataset(cfg, "all").identity["split"] == "all"  # its caches and references are its own
    if data.DEBIAN_FASHION_MNIST.is_dir():
        both = build_dataset(DataConfig(dataset="fashion-mnist"), "all")
        test = build_dataset(DataConfig(dataset="fashion-mnist"), "test")
        assert len(both) == 70000 and torch.equal(both[60000 + 5][0], test[5][0])


def test_fluent_people_subset_keeps_people_hands_and_smileys(fluent):
    cfg = DataConfig(dataset="fluent-people", root=str(fluent), image_size=32, channels=3)
    served = {p.name for split in ("train", "val") for p, _ in build_dataset(cfg, split).samples}
    toned = {
        "1f3c3.webp",
        *(f"1f3c3-{t:x}.webp" for t in range(0x1F3FB, 0x1F400)),
        "1f44d.webp",
        "1f44d-1f3fd.webp",
        "1f44c.webp",
        "1f44c-1f3fb.webp",
    }
    assert served == toned | {"1f600.webp", "1f60d.webp", "1f914.webp", "1f609.webp"}
    assert emoji.fluent_subset(NAMES, "all") == NAMES
    with pytest.raises(ValueError, match="unknown subset 'cats'.*Fix"):
        emoji.fluent_subset(NAMES, "cats")


def test_missing_fluent_package_names_the_install_command_in_one_line(tmp_path):
    cfg = DataConfig(dataset="fluent", root=str(tmp_path / "nowhere"), image_size=64, channels=3)
    with pytest.raises(
        FileNotFoundError,
        match=r"not found.*Fix: bash scripts/fetch_fluent_emoji.sh.*apt-get "
        r"install npm",
    ) as err:
        build_dataset(cfg, "train")
    assert "\n" not in str(err.value)


def test_fluent_missing_or_changed_image_errors_or_is_skipped(fluent):
    (fluent / "assets" / "1f600.webp").unlink()
    cfg = DataConfig(dataset="fluent", root=str(fluent), image_size=16, channels=3, on_corrupt="error")
    with pytest.raises(ValueError, match=r"1f600.webp: missing image.*fetch_fluent_emoji.sh.*on_corrupt='skip'"):
        build_dataset(cfg, "train")
    changed = fluent / "assets" / "1f34e.webp"
    changed.write_bytes((fluent / "assets" / "1f680.webp").read_bytes())  # a valid image, not the one listed
    with pytest.raises(
        ValueError,
        match=r"1f34e.webp: unreadable image \(ValueError: sha256 .* differs from "
        r"SHA256SUMS",
    ):
        build_dataset(cfg, "train")
    ds = build_dataset(replace(cfg, on_corrupt="skip"), "train")
    assert sorted(p.name for p in ds.skipped) == ["1f34e.webp", "1f600.webp"] and len(ds) == 23
    assert "skipped 2 (1 missing, 1 unreadable)" in ds.report()
    assert all(ds[i][0].shape == (3, 16, 16) for i in range(len(ds)))


@needs_fluent
def test_the_fetched_fluent_package_is_whole():
    cfg = DataConfig(dataset="fluent", image_size=256, channels=3)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert len(train) + len(val) == emoji.FLUENT_IMAGES and not train.skipped and not val.skipped
    assert 0.06 < len(val) / emoji.FLUENT_IMAGES < 0.14
    people = sum(len(build_dataset(replace(cfg, dataset="fluent-people"), s)) for s in ("train", "val"))
    assert 1500 < people < 2200  # the 1,520 skin-tone variants, their defaults and the smileys


def fake_path(tmp_path, npm: str | None) -> dict:
    """An environment whose PATH holds the tools the fetch script uses and, if given, a fake npm."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "mkdir", "mktemp", "sha256sum", "cut", "tar", "wc", "rm", "mv"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    if npm is not None:
        (bin_dir / "npm").write_text(f"#!/bin/sh\n{npm}\n")
        (bin_dir / "npm").chmod(0o755)
    return {"PATH": str(bin_dir), "HOME": str(tmp_path)}


def test_fetch_script_refuses_a_tarball_with_another_checksum(tmp_path):
    env = fake_path(tmp_path, "echo not a tarball > lobehub-fluent-emoji-3d-1.1.0.tgz")
    dest = tmp_path / "data" / "fluent"
    out = subprocess.run(["/bin/bash", str(FETCH), str(dest)], env=env, capture_output=True, text=True)
    assert out.returncode == 1 and not dest.exists() and list((tmp_path / "data").iterdir()) == []  # no tmp left
    assert (
        out.stderr.count("\n") == 1
        and "expected c1bb7eee7de090205a232518a9ab4adb3df458bfbe8a1f78232991194c8b2e58" in out.stderr
        and "Fix:" in out.stderr
    )


def test_fetch_script_names_npm_when_missing_and_skips_an_installed_package(tmp_path):
    out = subprocess.run(
        ["/bin/bash", str(FETCH), str(tmp_path / "fluent")],
        env=fake_path(tmp_path, None),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "npm not found" in out.stderr and "sudo apt-get install npm" in out.stderr
    installed = write_fluent(tmp_path / "installed", names=NAMES[:1], size=8)
    (tmp_path / "bin" / "npm").write_text("#!/bin/sh\nexit 7\n")  # must not be called
    (tmp_path / "bin" / "npm").chmod(0o755)
    out = subprocess.run(
        ["/bin/bash", str(FETCH), str(installed)], env={"PATH": str(tmp_path / "bin")}, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stderr == ""


def test_fluent_label_schemes_group_tone_and_both(fluent):
    """data.labels picks the Fluent sets' labels: the Unicode group of the first code point, the skin tone (0 none,
    1..5 for U+1F3FB..U+1F3FF) or both as group * 6 + tone; other datasets refuse the Fluent-only schemes."""
    assert [
        emoji.fluent_tone(n)
        for n in ("1f3c3.webp", "1f3c3-1f3fb.webp", "1f3c3-1f3ff.webp", "1f9d1-1f3fd-200d-1f4bb.webp")
    ] == [0, 1, 5, 3]
    assert emoji.fluent_label("1f3c3-1f3fd.webp", "group") == 2 and emoji.fluent_label("1f3c3-1f3fd.webp", "tone") == 3
    assert emoji.fluent_label("1f3c3-1f3fd.webp", "group-tone") == 2 * 6 + 3
    assert tuple(emoji.FLUENT_LABELS) == LABEL_SCHEMES  # the config accepts exactly the schemes the data knows
    with pytest.raises(ValueError, match="unknown label scheme 'shape'.*Fix"):
        emoji.fluent_label("1f3c3.webp", "shape")
    sets = {}
    for scheme, classes in (("group", 8), ("tone", 6), ("group-tone", 48)):
        cfg = DataConfig(dataset="fluent-people", root=str(fluent), image_size=32, channels=3, labels=scheme)
        ds = build_dataset(cfg, "train")
        assert num_classes(cfg) == classes == len(ds.classes)
        sets[scheme] = ds
        labels = {p.name: y for p, y in ds.samples}
        assert labels["1f3c3-1f3fe.webp"] == {"group": 2, "tone": 4, "group-tone": 16}[scheme]
        assert all(0 <= y < classes for y in labels.values())
    # the labels are part of the identity, so a latent cache of one scheme is never served for another
    assert len({ds.identity["files"] for ds in sets.values()}) == 3
    with pytest.raises(ValueError, match="data.labels.*Fluent sets only.*Fix"):
        DataConfig(dataset="fashion-mnist", labels="tone")
    with pytest.raises(ValueError, match="data.labels.*unknown label scheme.*Fix"):
        DataConfig(dataset="fluent", labels="colour")
