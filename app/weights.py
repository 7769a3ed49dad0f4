"""EMA or trained weights: which sets a checkpoint file holds, which one the page samples by default, the check of a
choice, and what the loader is asked for.

A training checkpoint holds the trained weights and, unless it was trained with train.ema_decay = 0, their EMA
(workbench.training.checkpoint); an export holds one set, and its meta.weights says which ("ema", or "raw" for the
trained weights). A choice matters only where a file holds both: it reaches load_for_inference's use_ema, as the
CLI's `sample --no-ema` does, so the command line of a run on trained weights carries --no-ema.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from workbench.research.families import sampling_pick
from workbench.research.groups import Entry
from workbench.training.checkpoint import read_header

EMA, TRAINED = "ema", "raw"
CHOICES = (EMA, TRAINED)
NAMES = {EMA: "EMA weights", TRAINED: "trained weights"}


@lru_cache(maxsize=256)
def _sets(path: Path, stamp: tuple[int, int]) -> tuple[str, ...]:
    header = read_header(path)
    if header.get("ema") is not None:
        return CHOICES
    meta = header.get("meta")
    held = meta.get("weights", EMA) if isinstance(meta, dict) else EMA  # exports before meta.weights were EMA
    if header.get("kind") == "export":
        return (held,) if held in CHOICES else (EMA,)
    return (TRAINED,)  # a training checkpoint without EMA (train.ema_decay = 0)


def weight_sets(path: Path) -> tuple[str, ...]:
    """The weight sets a checkpoint file holds: ("ema", "raw") or one of them (read from its header; a file that
    changed on disk is read again)."""
    info = Path(path).stat()
    return _sets(Path(path), (info.st_mtime_ns, info.st_size))


def both(entry: Entry) -> bool:
    return len(weight_sets(entry.path)) == 2


def shipped(entry: Entry) -> str:
    """The set a file samples by default: its only one; of two, the sampling the zoo picked for its member (the
    people models: trained weights) unless its config's sample.use_ema already says trained weights."""
    sets = weight_sets(entry.path)
    if len(sets) == 1:
        return sets[0]
    picked_ema = sampling_pick(entry.family, entry.member)[0]
    return EMA if picked_ema and entry.config.sample.use_ema else TRAINED


def check_choice(choice: str, entry: Entry) -> None:
    """ValueError naming the problem and the fix unless `choice` ("" = the file's only set) fits the file."""
    if choice not in ("", *CHOICES):
        raise ValueError(f"weights {choice!r} are not one of {CHOICES}. Fix: pick EMA or trained weights.")
    sets = weight_sets(entry.path)
    if choice and choice not in sets:
        raise ValueError(
            f"weights: {entry.path.name} ({entry.name}) holds only its {NAMES[sets[0]]}, not {NAMES[choice]} "
            f"(an export ships one set). Fix: pick {NAMES[sets[0]]}, or open its training checkpoint."
        )


def loads_ema(path: Path, choice: str) -> bool:
    """load_for_inference's use_ema for `choice`: False only for trained weights of a file that holds both (a
    file of one set loads it either way, so its models share one cache entry)."""
    return not (choice == TRAINED and len(weight_sets(path)) == 2)


def used(path: Path, choice: str) -> str:
    """The set a run on `path` with `choice` sampled."""
    sets = weight_sets(path)
    return sets[0] if len(sets) == 1 else (TRAINED if choice == TRAINED else EMA)
