"""The command line's files, checked before any work starts.

A sampling run or an evaluation that ends by failing to write its output loses the work it did, and a config or
checkpoint name that points at a FIFO or a device blocks or never ends. So every path option of every subcommand is
checked when the arguments are parsed (the checkers below are argparse `type=` callables), and the folders a config
names (train.out_dir) before training starts: an input must be a regular file (or a folder where one is allowed),
an output must be creatable, which is tested by creating and removing an empty file where it will go. Each refusal
is one line naming the path, the problem and the fix.
"""

from __future__ import annotations

import argparse
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

MAX_CONFIG_BYTES = 1 << 20  # a YAML config is a few hundred bytes; anything near this is not one


def _missing(p: Path, what: str, folder_ok: bool) -> str:
    if p.is_symlink():
        return f"{p} is a link to {os.readlink(p)}, which does not exist. Fix: point it at an existing {what}."
    kind = "file or folder" if folder_ok else "file"
    return f"no such {kind} {p}. Fix: check the path to the {what} (relative paths start in {Path.cwd()})."


def check_input(text: str | Path, what: str = "file", folder_ok: bool = False, max_bytes: int | None = None) -> Path:
    """`text` as a Path to an existing regular file (or a folder when `folder_ok`) of at most `max_bytes`; else a
    ValueError naming the path and the fix (devices, FIFOs and sockets are refused: reading one may never end)."""
    p = Path(text)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise ValueError(_missing(p, what, folder_ok)) from None
    except OSError as err:  # a loop of links, a name too long, a folder we may not enter
        raise ValueError(f"{p}: cannot be read ({err.strerror}). Fix: name a readable {what}.") from None
    if stat.S_ISDIR(mode):
        if folder_ok:
            return p
        raise ValueError(f"{p} is a folder, not a {what}. Fix: name a {what} inside it.")
    if not stat.S_ISREG(mode):
        raise ValueError(
            f"{p} is not a regular file (a device, FIFO or socket: reading it may never end). Fix: name a {what}."
        )
    if not os.access(p, os.R_OK):
        raise ValueError(f"{p}: permission denied. Fix: make it readable or copy it somewhere you can read.")
    if max_bytes is not None and p.stat().st_size > max_bytes:
        raise ValueError(
            f"{p} holds {p.stat().st_size:,} bytes, more than any {what} (at most {max_bytes:,}). Fix: name the "
            f"{what} itself."
        )
    return p


def _probe(folder: Path, target: Path) -> None:
    """Create and remove an empty file in `folder`: the one test of writability that also holds for root, read-only
    mounts and pseudo file systems such as /proc (where even root cannot create a file)."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".workbench-probe-")
    except OSError as err:
        raise ValueError(
            f"{target}: cannot write in {folder} ({err.strerror}). Fix: choose a folder you can write to, "
            f"e.g. ./{target.name}."
        ) from None
    os.close(fd)
    os.unlink(name)


def _existing_folder(start: Path, target: Path) -> Path:
    """The nearest of `start` and the folders above it that exists (where the missing folders on the way to
    `target` would be created)."""
    a = start.absolute()
    while not a.exists() and a != a.parent:
        a = a.parent
    if not a.is_dir():
        raise ValueError(f"{target}: {a} is a file, not a folder. Fix: choose a path under a folder.")
    return a


def check_output(text: str | Path, suffixes: tuple[str, ...] = ()) -> Path:
    """`text` as a Path a file can be written to (its missing folders creatable, ending in one of `suffixes` if
    given); else a ValueError naming the path and the fix. Nothing is left behind."""
    p = Path(text)
    if suffixes and p.suffix.lower() not in suffixes:
        example = f"{p.stem or 'out'}{suffixes[0]}"
        raise ValueError(f"{p}: the file name must end in {' or '.join(suffixes)}. Fix: write e.g. {example}.")
    if p.is_dir():
        raise ValueError(f"{p} is a folder. Fix: name a file, e.g. {p / ('out' + (suffixes or ('',))[0])}.")
    if p.exists() and not p.is_file():
        raise ValueError(f"{p} is not a regular file (a device, FIFO or socket). Fix: name a file to write.")
    _probe(_existing_folder(p.parent, p), p)
    return p


def check_output_folder(text: str | Path, option: str = "") -> Path:
    """`text` as a Path to a folder that exists or can be created and whose files can be written; else a
    ValueError naming `option`, the path and the fix."""
    p = Path(text)
    try:
        if p.exists() and not p.is_dir():
            raise ValueError(f"{p} is a file, not a folder. Fix: name a folder (it is created if missing).")
        _probe(_existing_folder(p, p), p)
    except ValueError as err:
        raise ValueError(f"{option}: {err}" if option else str(err)) from None
    return p


def argument(check: Callable[..., Path], **options) -> Callable[[str], Path]:
    """`check` as an argparse `type=`: the option is refused while parsing, before any work, with its message."""

    def convert(text: str) -> Path:
        try:
            return check(text, **options)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = check.__name__  # argparse names the type in some messages
    return convert


def input_file(what: str = "file", max_bytes: int | None = None) -> Callable[[str], Path]:
    """An argparse type for a file to read."""
    return argument(check_input, what=what, max_bytes=max_bytes)


def input_file_or_folder(what: str = "file") -> Callable[[str], Path]:
    """An argparse type for a file or a folder to read (a checkpoint or its run folder)."""
    return argument(check_input, what=what, folder_ok=True)


def output_file(*suffixes: str) -> Callable[[str], Path]:
    """An argparse type for a file to write, ending in one of `suffixes` if given."""
    return argument(check_output, suffixes=suffixes)


def output_folder() -> Callable[[str], Path]:
    """An argparse type for a folder to write files into."""
    return argument(check_output_folder)


def check_training_paths(data_root: str, out_dir: str) -> None:
    """The paths a training config names, before training starts: `data.root`, when set, must exist (some datasets
    would otherwise fall back to their default location and train on other data than the one named), and
    `train.out_dir` must be a folder that can be written (else the run would fail at its first checkpoint)."""
    if data_root:
        try:
            check_input(data_root, "dataset folder or file", folder_ok=True)
        except ValueError as err:
            raise ValueError(f"data.root: {err}") from None
    check_output_folder(out_dir, "train.out_dir")
