"""The checkpoints the app may open: every readable checkpoint in the allowed folders (app/paths.py) with its eval
reports, as entries that workbench.research.groups groups into families.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from workbench.core.config import Config
from workbench.research.groups import Entry
from workbench.research.reports import Report, read_report, report_from_dict
from workbench.training.checkpoint import CheckpointError, read_header

from .paths import (  # noqa: F401 - the page and its tests reach the folder checks through the catalogue
    ENV_FOLDERS,
    MAX_PATH,
    MAX_SIDE_FILE,
    Folders,
    PathRefused,
    _inside,
    _real,
    check_path,
    folders_from,
)


def load_entry(path: Path, source: str) -> Entry:
    """The entry of a checkpoint file; its eval report is the .json beside it, else the one embedded at export."""
    h = read_header(path)
    sidecar = path.with_suffix(".json")
    if sidecar.is_file() and sidecar.stat().st_size > MAX_SIDE_FILE:
        raise CheckpointError(f"{sidecar}: an eval report over {MAX_SIDE_FILE:,} bytes. Fix: remove or rewrite it.")
    try:
        embedded = h.get("meta", {}).get("eval_report")
        report = read_report(sidecar) if sidecar.is_file() else report_from_dict(embedded, path) if embedded else None
        config = Config.from_dict(h["config"])
        step, seen, kind = int(h["step"]), int(h["data"].get("samples_seen", 0)), h["kind"]
    except (KeyError, TypeError, AttributeError) as err:  # a header of the right format with the wrong content
        raise CheckpointError(
            f"{path}: its header lacks what a workbench checkpoint holds ({type(err).__name__}: "
            f"{err}). Fix: re-export it with workbench.training.checkpoint.export_for_inference."
        ) from None
    # Zoo members trained once and shipped under several names keep their first member's config name: the
    # report says which member a file is.
    # an elastic file is named after its member ("vertical/elastic"), not after its report's depth ("elastic-D2")
    family, name = (
        (report.family, f"{report.family}/{report.member}") if report else (config.name.split("/")[0], config.name)
    )
    by_depth = (report,) + _depth_siblings(path, report) if report and config.model.elastic_depths else ()
    return Entry(path, family, name, config, step, seen, kind, source, report, by_depth)


def _depth_siblings(path: Path, report: Report) -> tuple[Report, ...]:
    """An elastic checkpoint's reports at other depths, beside it as "<stem>-D<k>.json" (the zoo's "elastic-D3.json"
    beside "elastic.safetensors"), that score the same member; a bad one is refused as a bad sidecar is."""
    out = []
    pattern = re.compile(re.escape(path.stem) + r"-D\d+\.json")  # the stem taken literally, never as a glob
    for file in sorted(f for f in path.parent.iterdir() if pattern.fullmatch(f.name)):
        info = file.lstat()  # a link is not followed: it could point anywhere
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SIDE_FILE:
            raise CheckpointError(
                f"{file}: not a regular file of at most {MAX_SIDE_FILE:,} bytes. Fix: remove it or "
                "rewrite it with python -m workbench zoo eval."
            )
        r = read_report(file)
        if r.elastic and (r.family, r.member) == (report.family, report.member) and r.D != report.D:
            out.append(r)
    return tuple(out)


def scan(folders: Folders) -> tuple[list[Entry], list[str]]:
    """Every readable checkpoint in the allowed folders and their run sub-folders, and notes on what was skipped."""
    entries: list[Entry] = []
    notes = list(folders.problems)
    seen: set[Path] = set()
    for root, source in [(folders.zoo, "zoo")] + [(u, "user") for u in folders.user]:
        try:
            if not root.is_dir():
                if root != folders.zoo:
                    notes.append(f"{root}: no such folder")
                continue
            subfolders = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
            files = [f for folder in subfolders for f in sorted(folder.glob("*.safetensors"))]
        except OSError as err:
            notes.append(f"{root}: cannot be listed ({err})")
            continue
        for file in files:  # links are resolved and checked before anything is read
            try:
                real = _real(str(file))
            except PathRefused as err:
                notes.append(str(err))
                continue
            if not _inside(real, folders.allowed):
                notes.append(f"{file}: a link pointing outside the allowed folders, refused")
            elif not real.is_file():
                notes.append(f"{file}: not a regular file, skipped")
            elif real not in seen:
                seen.add(real)
                _add(entries, notes, real, source)
    if folders.default and folders.default not in seen:
        _add(entries, notes, folders.default, "user")
    return entries, notes


def _add(entries: list[Entry], notes: list[str], path: Path, source: str) -> None:
    try:
        entries.append(load_entry(path, source))
    except (ValueError, OSError) as err:  # a header or report this version cannot use, unreadable: skip, say why
        notes.append(f"{path}: skipped ({err})")
