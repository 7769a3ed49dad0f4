"""Path security: the folders the app may open and the check every typed path passes before anything is read.

The check runs on the fully resolved path (links followed) so that neither a path outside the folders nor a link
pointing out of them opens, and no message reveals what exists outside them.
"""

from __future__ import annotations

import argparse
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from workbench.core.paths import REPO_ROOT, ZOO_DIR
from workbench.training.checkpoint import LATEST, CheckpointError, resolve

ENV_FOLDERS = "WORKBENCH_CHECKPOINTS"  # extra folders, separated by os.pathsep
MAX_PATH = 4096  # characters of a typed path
MAX_SIDE_FILE = 1 << 20  # bytes of a run folder's `latest` or an eval report read beside a checkpoint


class PathRefused(ValueError):
    """A checkpoint path the app will not open (outside the allowed folders, missing, not a checkpoint)."""


@dataclass(frozen=True)
class Folders:
    zoo: Path  # the shipped zoo (resolved)
    user: tuple[Path, ...]  # --checkpoints / $WORKBENCH_CHECKPOINTS (resolved)
    default: Path | None  # --checkpoint: the operator's choice, allowed even outside the folders
    problems: tuple[str, ...] = ()  # what was wrong with the command line

    @property
    def roots(self) -> tuple[Path, ...]:
        return (self.zoo, *self.user)

    @property
    def allowed(self) -> tuple[Path, ...]:
        return self.roots + ((self.default,) if self.default else ())


def folders_from(argv: list[str], environ: dict | None = None) -> Folders:
    """Folders from the app's command line (after `--` in `streamlit run app/main.py -- ...`) and the environment."""
    environ = os.environ if environ is None else environ
    ap = argparse.ArgumentParser(prog="streamlit run app/main.py --", add_help=False)
    ap.add_argument("--checkpoints", action="append", default=[], help="a folder of checkpoints (repeatable)")
    ap.add_argument("--checkpoint", default=None, help="the checkpoint opened first")
    args, _ = ap.parse_known_args(argv)  # under AppTest argv is pytest's: ignore what is not ours
    default, problems, user = None, [], []
    for text in [*args.checkpoints, *[p for p in environ.get(ENV_FOLDERS, "").split(os.pathsep) if p]]:
        try:
            user.append(_real(text))
        except PathRefused as err:
            problems.append(f"--checkpoints / ${ENV_FOLDERS}: {err}")
    if args.checkpoint:
        try:
            named = _real(args.checkpoint)
            _check_side_files(named)
            default = _real(str(resolve(named)))
        except (PathRefused, CheckpointError, OSError) as err:
            fix = "" if "Fix:" in str(err) else " Fix: pass a .safetensors checkpoint file or a run folder."
            problems.append(f"--checkpoint: {err}{fix}")
            default = None
    return Folders(ZOO_DIR.resolve(), tuple(dict.fromkeys(user)), default, tuple(problems))


def _shown(text: str) -> str:
    """A typed path as a message quotes it: shortened, control characters escaped."""
    text = text if len(text) <= 120 else text[:117] + "..."
    return ascii(text)[1:-1] if any(not c.isprintable() for c in text) else text


def _real(text: str, base: Path = REPO_ROOT) -> Path:
    """The absolute path `text` names, links followed; PathRefused for what cannot name a file here."""
    if not text or len(text) > MAX_PATH or "\0" in text or any(not c.isprintable() for c in text):
        raise PathRefused(
            f"{_shown(text)!r}: not a usable path (empty, over {MAX_PATH} characters, or with a NUL, "
            "control or invisible formatting character). Fix: type the path of a .safetensors checkpoint "
            "inside an allowed folder."
        )
    try:
        text.encode("utf-8")
        candidate = Path(text).expanduser()
        return (candidate if candidate.is_absolute() else base / candidate).resolve()
    except (OSError, RuntimeError, ValueError) as err:  # a symlink loop, a name too long, ~nobody, a lone surrogate
        raise PathRefused(
            f"{_shown(text)}: cannot be resolved ({type(err).__name__}: {err}). Fix: type the path "
            "of a .safetensors checkpoint inside an allowed folder."
        ) from None


def _check_side_files(path: Path) -> None:
    """Refuse a run folder whose `latest` is not a small regular file (a FIFO would block the server, a huge
    file would fill its memory) before workbench.training.checkpoint.resolve reads it."""
    latest = path / LATEST
    if path.is_dir() and (latest.exists() or latest.is_symlink()):
        info = os.stat(latest)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SIDE_FILE:
            raise PathRefused(
                f"{latest}: not a small text file naming a checkpoint. Fix: write the checkpoint's "
                "file name into it, or pass the checkpoint file itself."
            )


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


def check_path(text: str, folders: Folders) -> Path:
    """The real checkpoint file a user-typed path names, or PathRefused saying why and what to do.

    The check runs on the fully resolved path (symlinks followed) before anything is read, so neither a path
    outside the folders nor a link pointing out of them opens, and nothing reveals what exists outside."""
    text = text.strip()
    real = _real(text)
    where = ", ".join(str(r) for r in folders.roots)
    if not _inside(real, folders.allowed):
        raise PathRefused(
            f"{_shown(text)}: outside the folders this app may open ({where}). Fix: copy the checkpoint "
            f"into one of them, or start the app with `-- --checkpoints DIR` (or ${ENV_FOLDERS})."
        )
    try:
        _check_side_files(real)
        target = resolve(real).resolve()  # a run folder opens its latest checkpoint
    except (CheckpointError, OSError, RuntimeError) as err:
        raise PathRefused(
            str(err)
            if "Fix:" in str(err)
            else f"{_shown(text)}: cannot be opened ({err}). Fix: type "
            "the path of a .safetensors checkpoint inside an allowed folder."
        ) from None
    if not _inside(target, folders.allowed):
        raise PathRefused(
            f"{_shown(text)}: its 'latest' file points outside the allowed folders ({where}). Fix: "
            "pass the checkpoint file itself."
        )
    if not stat.S_ISREG(os.stat(target).st_mode):
        raise PathRefused(f"{_shown(text)}: not a regular file. Fix: type the path of a .safetensors checkpoint.")
    return target
