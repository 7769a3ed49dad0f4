"""Reliability: damaged and hostile checkpoints, faults while writing and training, bad image folders.

Every fault is injected deterministically (seeded), so a failure reproduces. Kills are real SIGKILLs of forked
processes (a fork inherits the imports, so a kill costs no interpreter start). FAULTS and INPUTS count what the
tests inject; the Reliability section of docs/training.md quotes them.
"""

import errno
import json
import os
import pickle
import random
import signal
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from single_thread import one_thread  # noqa: F401 (autouse)
from test_checkpoint import assert_tree_equal, trained_state
from test_data import write_folder
from test_train import FAST

import workbench as wb
import workbench.training.checkpoint as ck
import workbench.training.train as tr
from workbench.__main__ import main
from workbench.core.config import DataConfig
from workbench.data.datasets import _held_out, build_dataset
from workbench.training.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_for_inference,
    read_header,
)


def ended_by(fn) -> int:
    """Run fn in a forked child; return -signal if a signal ended it, else its exit code (1: it raised)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


# ---- damaged checkpoints -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return ck.save_checkpoint(trained_state(1), tmp_path_factory.mktemp("good"))


def refused(path: Path) -> str:
    """The CheckpointError message of loading `path` (any other outcome fails the test)."""
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "Fix:" in str(err.value) and str(path) in str(err.value)
    return str(err.value)


def test_bit_flips_anywhere_are_detected(good, tmp_path):
    data = good.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    rng = random.Random(1)
    flips = [rng.randrange(8 * header_end) for _ in range(150)] + [
        rng.randrange(8 * header_end, 8 * len(data)) for _ in range(150)
    ]
    bad = tmp_path / good.name
    messages = set()
    for bit in flips:
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        bad.write_bytes(flipped)
        messages.add(refused(bad).split(": ")[1].split(" (")[0])
    assert any("checksum mismatch" in m for m in messages)  # tensor bytes: only the checksum can tell


def test_truncated_empty_and_foreign_files_are_refused(good, tmp_path):
    data = good.read_bytes()
    rng = random.Random(2)
    bad = tmp_path / "ckpt-0000002.safetensors"
    for cut in [0, 1, 8, 9, 100] + [rng.randrange(len(data)) for _ in range(25)] + [len(data) - 1]:
        bad.write_bytes(data[:cut])
        msg = refused(bad)
        assert ("empty file" if cut == 0 else "truncated") in msg
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    (tmp_path / "photo.png").rename(bad)
    assert "a PNG image" in refused(bad)
    bad.write_bytes(np.random.default_rng(3).bytes(4096))
    assert "not a safetensors file" in refused(bad)
    save_file({"w": torch.zeros(2)}, str(bad))
    with pytest.raises(CheckpointError, match="not a workbench checkpoint"):
        load_checkpoint(bad)


def test_version_1_files_load_and_version_2_needs_its_checksum(good, tmp_path):
    with safe_open(str(good), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    old = {k: v for k, v in metadata.items() if k != ck.CHECKSUM}
    save_file(tensors, str(tmp_path / "v1.safetensors"), metadata=dict(old, version="1"))
    assert_tree_equal(load_checkpoint(tmp_path / "v1.safetensors").model, load_checkpoint(good).model)
    save_file(tensors, str(tmp_path / "v2.safetensors"), metadata=old)
    assert "without its checksum" in refused(tmp_path / "v2.safetensors")


def test_weights_of_another_architecture_are_refused(good, tmp_path):
    state = load_checkpoint(good)
    state.config = state.config.override(**{"model.depth": 3})  # a config that does not match the weights
    path = ck.save_checkpoint(state, tmp_path)
    with pytest.raises(CheckpointError, match="do not fit the architecture.*Fix:"):
        load_for_inference(path)


class Payload:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickles_that_would_run_code_are_never_loaded(tmp_path, capsys):
    marker = tmp_path / "pwned"
    files = {
        "zip.pt": lambda p: torch.save({"model": Payload(marker)}, p),
        "legacy.pt": lambda p: torch.save(Payload(marker), p, _use_new_zipfile_serialization=False),
    }
    files.update(
        {
            f"protocol{n}.pkl": (lambda p, n=n: p.write_bytes(pickle.dumps(Payload(marker), protocol=n)))
            for n in range(pickle.HIGHEST_PROTOCOL + 1)
        }
    )
    run = tmp_path / "run"
    run.mkdir()
    for name, write in files.items():
        for path in (tmp_path / name, run / "ckpt-0000001.safetensors"):  # as itself, and disguised in a run folder
            write(path)
            (run / "latest").write_text("ckpt-0000001.safetensors\n")
            for load in (load_checkpoint, load_for_inference, read_header):
                with pytest.raises(CheckpointError, match="Fix:"):
                    load(path)
            with pytest.raises(CheckpointError):
                load_checkpoint(run)
            assert list_checkpoints(run) == []
            assert main(["sample", "--checkpoint", str(path), "--out", str(tmp_path / "x.png")]) == 1
    assert "Fix:" in capsys.readouterr().err
    assert not marker.exists()
    torch.load(tmp_path / "zip.pt", weights_only=False)  # the control: these files really do run code
    assert marker.exists()


# ---- faults while writing a checkpoint ---------------------------------------------------------------------------
def full_disk_after(calls: int):
    """A writer that raises ENOSPC on its `calls`-th call (the earlier ones succeed)."""
    seen = {"n": 0}

    def fail_or(real):
        def op(*args, **kwargs):
            seen["n"] += 1
            if seen["n"] == calls:
                if real is ck.save_file:  # half a file, then the disk is full
                    Path(args[1]).write_bytes(b"\0" * 1000)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(*args, **kwargs)

        return op

    return fail_or


WRITERS = [
    ("save_file", ck, "save_file"),
    ("fsync", ck.os, "fsync"),
    ("replace", ck.os, "replace"),
    ("write_text", Path, "write_text"),
]


@pytest.mark.parametrize("name, owner, attr", WRITERS, ids=[w[0] for w in WRITERS])
def test_disk_full_at_every_write_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, name, owner, attr):
    first = ck.save_checkpoint(trained_state(1), tmp_path)
    good = first.read_bytes()
    real = getattr(owner, attr)
    for calls in range(1, 4):
        with monkeypatch.context() as m:
            m.setattr(owner, attr, full_disk_after(calls)(real))
            try:
                ck.save_checkpoint(trained_state(2), tmp_path)
            except OSError as err:
                assert err.errno == errno.ENOSPC and "untouched" in str(err) and "Fix:" in str(err)
        assert first.read_bytes() == good
        latest = (tmp_path / "latest").read_text().strip()
        assert latest in (first.name, "ckpt-0000002.safetensors")
        assert load_checkpoint(tmp_path).step == int(latest[5:12])  # `latest` names a complete file
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("when", ["mid-write", "before-latest"])
def test_kill_during_checkpoint_write_keeps_the_last_good_one(tmp_path, when):
    first = ck.save_checkpoint(trained_state(1), tmp_path)
    good = first.read_bytes()
    real_save, real_write = ck.save_file, ck._write

    def killed_writer():
        if when == "mid-write":

            def save_half(tensors, filename, metadata=None):
                real_save(tensors, filename, metadata=metadata)
                os.truncate(filename, os.path.getsize(filename) // 2)
                die()

            ck.save_file = save_half
        else:

            def write_then_die(ckpt, path):
                real_write(ckpt, path)
                die()

            ck._write = write_then_die
        ck.save_checkpoint(trained_state(2), tmp_path)

    assert ended_by(killed_writer) == -signal.SIGKILL
    assert first.read_bytes() == good and (tmp_path / "latest").read_text().strip() == first.name
    assert load_checkpoint(tmp_path).step == 1
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert len(stale) == (when == "mid-write")
    ck.save_checkpoint(trained_state(3), tmp_path)  # the next save removes the dead writer's temporary file
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---- faults while training ---------------------------------------------------------------------------------------
RUN = {
    **FAST,
    "train.max_steps": 12,
    "train.ckpt_every": 3,
    "train.keep_last": 10,
    "train.eval_every": 5,
    "train.sample_every": 7,
    "model.num_classes": 10,
}
PHASES = ("forward", "checkpoint write", "before latest", "validation", "ctrl-c")


def fault_points(seed: int, kills: int = 5) -> list[tuple[int, str]]:
    """`kills` SIGKILL points and one Ctrl-C, drawn from (optimizer step, phase), in run order."""
    ckpts, evals = range(3, 12, 3), (5, 10)
    candidates = (
        [(s, "forward") for s in range(1, 13)]
        + [(s, p) for s in ckpts for p in PHASES[1:3]]
        + [(s, "validation") for s in evals]
    )
    rng = random.Random(seed)
    points = rng.sample(candidates, kills)
    # Ctrl-C in step c stops after step c (with a checkpoint of step c); no kill is planned in that step
    points.append((rng.choice([c for c in range(2, 12) if all(s != c for s, _ in points)]), "ctrl-c"))
    return sorted(points, key=lambda sp: (sp[0], PHASES.index(sp[1])))


def inject(step: int, phase: str) -> None:
    """Patch this (forked) process to SIGKILL itself, or press Ctrl-C, at `phase` of optimizer step `step`."""
    current = {"step": 0}
    real_step, real_loss, real_validate = tr.train_step, tr.Objective.loss, tr.validate
    real_save, real_write = ck.save_file, ck._write

    def train_step(run, batches, stop):
        current["step"] = run.step + 1
        if (current["step"], phase) == (step, "ctrl-c"):
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(run, batches, stop)

    def loss(self, model, *args, **kwargs):
        out = real_loss(self, model, *args, **kwargs)
        if model.training and (current["step"], phase) == (step, "forward"):
            die()
        return out

    def validate(run, loader):
        if (run.step, phase) == (step, "validation") and run.step:
            die()
        return real_validate(run, loader)

    def save_file(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        if (json.loads(metadata["header"])["step"], phase) == (step, "checkpoint write"):
            os.truncate(filename, os.path.getsize(filename) // 3)
            die()

    def write(ckpt, path):
        real_write(ckpt, path)
        if (ckpt.step, phase) == (step, "before latest"):
            die()

    tr.train_step, tr.Objective.loss, tr.validate, ck.save_file, ck._write = (
        train_step,
        loss,
        validate,
        save_file,
        write,
    )


def last_checkpoint_before(step: int, phase: str) -> int:
    """The step of the newest complete checkpoint that `latest` names after the fault."""
    if phase == "ctrl-c":  # the stop request rides on this step's collective: the step ends with a checkpoint
        return step
    done = step - (phase in ("forward", "checkpoint write", "before latest"))  # steps whose checkpoint was written
    return done - done % 3


@pytest.mark.slow
def test_five_sigkills_and_a_ctrl_c_then_resume_equal_an_uninterrupted_run(tmp_path):
    whole = train_config(tmp_path / "whole")
    tr.train(whole)
    cut = train_config(tmp_path / "cut")
    points = fault_points(seed=int(os.environ.get("WORKBENCH_FAULT_SEED", "7")))
    for step, phase in points:
        resumed_from = saved_step(tmp_path / "cut")

        def faulty_run():
            inject(step, phase)
            tr.train(cut, resume=True)

        ended = ended_by(faulty_run)
        assert ended == (0 if phase == "ctrl-c" else -signal.SIGKILL), (step, phase, ended)
        assert saved_step(tmp_path / "cut") == max(last_checkpoint_before(step, phase), resumed_from), (
            step,
            phase,
        )  # no step lost
    summary = tr.train(cut, resume=True)
    assert summary["status"] == "finished" and summary["step"] == 12
    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "cut")
    for part in ("model", "ema", "optimizer", "scheduler", "rng", "data"):
        assert_tree_equal(getattr(a, part), getattr(b, part))
    assert a.meta["val_loss"] == b.meta["val_loss"]


def saved_step(out: Path) -> int:
    return load_checkpoint(out).step if (out / "latest").exists() else 0


def train_config(out: Path):
    return wb.preset("tiny", **{**RUN, "train.out_dir": str(out)})


def test_inf_loss_and_non_finite_gradient_stop_before_the_update(tmp_path, monkeypatch):
    real_loss = tr.Objective.loss
    poison = {}

    def poisoned(self, model, *args, **kwargs):
        losses = real_loss(self, model, *args, **kwargs)
        poison["n"] = poison.get("n", 0) + model.training
        if model.training and poison["n"] == 5:
            if poison["kind"] == "inf loss":
                losses.total = losses.total * float("inf")
            else:  # a finite loss whose backward overflows
                losses.total.register_hook(lambda g: g * float("nan"))
        return losses

    monkeypatch.setattr(tr.Objective, "loss", poisoned)
    for kind, says, clip in (
        ("inf loss", "training loss is not finite", 1.0),
        ("nan gradient", "gradient norm", 1.0),
        ("nan gradient", "gradient norm", 0.0),
    ):
        poison.update(kind=kind, n=0)
        out = tmp_path / f"{kind}-{clip}"
        cfg = wb.preset(
            "tiny",
            **{
                **FAST,
                "train.max_steps": 10,
                "train.ckpt_every": 2,
                "train.grad_clip": clip,
                "train.out_dir": str(out),
            },
        )
        with pytest.raises(FloatingPointError, match=f"optimizer step 5: the {says}") as err:
            tr.train(cfg)
        assert "ckpt-0000004.safetensors" in str(err.value) and "Fix:" in str(err.value)
        last = load_checkpoint(out)
        assert last.step == 4 and all(torch.isfinite(v).all() for v in last.model.values())


# ---- bad image folders -------------------------------------------------------------------------------------------
def odd_images(root: Path) -> dict[str, Path]:
    """One file per way an 'RGB folder' goes wrong in practice, in class folder cat/ (all in the train split)."""
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (40, 40, 4), dtype=np.uint8)
    files = {
        "rgba": Image.fromarray(pixels, "RGBA"),
        "grey": Image.fromarray(pixels[..., 0], "L"),
        "cmyk": Image.fromarray(pixels, "CMYK"),
        "indexed": Image.fromarray(pixels[..., :3]).convert("P"),
        "grey16": Image.fromarray(np.full((40, 40), 32768, dtype=np.uint16)),
        "small": Image.fromarray(pixels[:20, :20, :3]),
        "tiny": Image.fromarray(pixels[:2, :2, :3]),
    }
    paths = {}
    (root / "cat").mkdir(parents=True, exist_ok=True)
    for name, im in files.items():
        paths[name] = root / "cat" / f"{name}.{'jpg' if name == 'cmyk' else 'png'}"
        im.save(paths[name])
        assert not _held_out(paths[name].relative_to(root).as_posix(), 5)  # the 'val' split would not list it
    return paths


def test_folder_with_odd_modes_sizes_and_corrupt_files_reports_counts(tmp_path):
    write_folder(tmp_path, per_class=6)  # 40x24 RGB
    odd_images(tmp_path)
    (tmp_path / "dog" / "cut.png").write_bytes((tmp_path / "dog" / "0.png").read_bytes()[:100])
    (tmp_path / "dog" / "blank.jpg").write_bytes(b"")
    cfg = DataConfig(dataset="folder", root=str(tmp_path), image_size=24, channels=3, on_corrupt="skip")
    with pytest.raises(ValueError, match="tiny.png: image too small.*Fix:.*on_corrupt='skip'"):
        build_dataset(DataConfig(**{**cfg.__dict__, "on_corrupt": "error"}), "train")
    ds = build_dataset(cfg, "train")
    listed = {p.name for p, _ in ds.samples}
    assert "tiny.png" not in listed and "blank.jpg" not in listed and {"rgba.png", "cmyk.jpg"} <= listed
    assert ds.counts["too small"] == 1 and ds.counts["upscaled"] == 1  # small.png: 20 px -> 24 px
    assert all(ds.counts[f"converted from {m}"] == 1 for m in ("RGBA", "L", "CMYK", "P", "I;16"))
    images = {p.name: ds.item(i)[0] for i, (p, _) in enumerate(ds.samples)}  # decoding skips cut.png too
    assert ds.num_skipped == 3 and {p.name for p in ds.skipped} == {"tiny.png", "blank.jpg", "cut.png"}
    assert all(x.shape == (3, 24, 24) and torch.isfinite(x).all() for x in images.values())
    assert images["grey16.png"].mean().item() == pytest.approx(128 / 127.5 - 1, abs=0.01)  # mid-grey, not white
    report = ds.report()
    assert "skipped 3 (2 unreadable, 1 too small)" in report and "upscaled 1" in report
    assert "converted to RGB: 1 CMYK, 1 I;16, 1 L, 1 P, 1 RGBA" in report


def test_grey_folder_of_colour_and_16_bit_images(tmp_path):
    odd_images(tmp_path)
    ds = build_dataset(
        DataConfig(dataset="folder", root=str(tmp_path), image_size=16, channels=1, on_corrupt="skip"), "train"
    )
    assert all(ds[i][0].shape == (1, 16, 16) for i in range(len(ds)))
    assert ds.counts["converted from RGBA"] == 1 and ds.counts["converted from L"] == 0


def test_missing_or_empty_dataset_names_the_fix(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    for root, says in (
        (tmp_path / "nowhere", "data.root: no such file or folder"),
        (tmp_path / "empty", "no readable images"),
    ):
        assert (
            main(
                [
                    "train",
                    "--preset",
                    "tiny",
                    "--data.dataset",
                    "folder",
                    "--data.root",
                    str(root),
                    "--data.channels",
                    "1",
                    "--train.out_dir",
                    str(tmp_path / "run"),
                ]
            )
            == 1
        )
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err
    for corrupt_only in ("a.png", "b.png"):
        (tmp_path / "empty" / corrupt_only).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no readable images"):
        build_dataset(
            DataConfig(dataset="folder", root=str(tmp_path / "empty"), image_size=16, channels=1, on_corrupt="skip"),
            "train",
        )
