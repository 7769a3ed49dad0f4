"""The notebooks' RETRAIN switch: train a family's members now, at a budget the parameters cell chooses, score them,
and hand back their reports, so that every table and figure of the notebook is drawn from them instead of the
shipped zoo. The members are the live ones of workbench.research.live (the family's overrides on a width-32, N=4
model; `live_family` trains, scores and writes them); the zoo's full recipe is the zoo driver's. A progress bar
(tqdm: a widget in JupyterLab, text elsewhere) advances as each member's report is written."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..core.paths import ZOO_DIR
from ..research.families import MEMBERS
from ..research.live import family_reports, live_family
from ..research.replicates import split_seed
from ..research.reports import Report

POLL_S = 0.5  # how often the bar looks for newly written reports


@dataclass(frozen=True)
class Budget:
    """What a retrain spends: optimizer steps per member, FID images per curve point, the S of the curve."""

    train_steps: int = 20
    n: int = 48
    steps: tuple[int, ...] = (1, 2, 4)
    seed: int = 0


def retrained_members(family: str) -> list[str]:
    """The members `live_family` trains: the first training seed of each, dedicated models only."""
    return [name for name, over in MEMBERS[family] if not split_seed(name)[1] and "model.elastic_depths" not in over]


def retrain(family: str, budget: Budget, root: str | Path | None = None) -> tuple[dict[str, Report], str]:
    """(reports, provenance) of `family`'s members trained and scored now under `root` (default a new temporary
    folder), with a progress bar over the members."""
    if family not in MEMBERS:
        raise ValueError(f"family {family!r}: not a zoo family. Fix: use one of {', '.join(MEMBERS)}.")
    root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix=f"workbench-retrain-{family}-"))
    names = retrained_members(family)
    done = threading.Event()
    bar = tqdm(total=len(names), desc=f"retraining {family}", unit="member")

    def watch() -> None:  # live_family writes <root>/<family>/<name>.json as each member is scored
        seen = 0
        while not done.wait(POLL_S):
            now = sum((root / family / f"{name}.json").is_file() for name in names)
            bar.update(now - seen)
            seen = now

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        reports = live_family(family, root, budget.train_steps, budget.steps, budget.n, budget.seed)
    finally:
        done.set()
        watcher.join()
        bar.update(len(names) - bar.n)
        bar.close()
    return reports, (
        f"RETRAINED NOW: {len(reports)} tiny members of {family} (width 32, N=4), {budget.train_steps} training "
        f"steps each, n={budget.n} images per FID, in {root}; the zoo's reports are not used"
    )


def notebook_reports(
    family: str, fast: bool, retrain_now: bool, budget: Budget, zoo: str | Path | None = None
) -> tuple[dict[str, Report], str]:
    """What a notebook draws: with RETRAIN the family retrained now (`retrain`), else the zoo's reports (in FAST
    mode without them, tiny live members: research.live.family_reports)."""
    if retrain_now:
        return retrain(family, budget)
    return family_reports(family, fast, root=zoo or ZOO_DIR)


def arms_reports(
    arms: Sequence[tuple[str, str]], fast: bool, retrain_arms: Sequence[str], budget: Budget, zoo=None
) -> dict[str, tuple[dict[str, Report], str]]:
    """{arm: (reports, provenance)} of notebook 03's arms ((arm, family) pairs): the arms named in `retrain_arms`
    retrained now, the others from the zoo; an arm whose data or codec is missing is empty in FAST mode (its
    provenance says why) and an error in full mode."""
    out = {}
    for arm, family in arms:
        try:
            out[arm] = notebook_reports(family, fast, arm in retrain_arms, budget, zoo)
        except FileNotFoundError as err:
            if not fast:
                raise
            out[arm] = {}, f"no {arm} arm in this FAST run: {err}"
    return out
