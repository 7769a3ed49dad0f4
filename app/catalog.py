"""The checkpoints the app may open: the shipped zoo and the user's folders, nothing outside them.

Checkpoints are grouped into families: the same family name, run, data and training budget, differing only in the
diffusion depth D. A family's depth positions are the paper's grid D in {N/4, N/2, 3N/4, N} plus every D that was
trained; a position without a checkpoint stays empty (the app shows it as such, it never stands in another one).
An elastic checkpoint (`model.elastic_depths`) is a family of its own whose one file samples at every D in 1..N:
each position says whether that D was trained or is held out (sampled with allow_untrained_depth).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from workbench.core.config import Config
from workbench.core.paths import REPO_ROOT, ZOO_DIR
from workbench.research.reports import CurvePoint, Report, read_report, report_from_dict
from workbench.training.checkpoint import LATEST, CheckpointError, read_header, resolve

ENV_FOLDERS = "WORKBENCH_CHECKPOINTS"  # extra folders, separated by os.pathsep
MAX_PATH = 4096  # characters of a typed path
MAX_SIDE_FILE = 1 << 20  # bytes of a run folder's `latest` or an eval report read beside a checkpoint


class PathRefused(ValueError):
    """A checkpoint path the app will not open (outside the allowed folders, missing, not a checkpoint)."""


@dataclass(frozen=True)
class Entry:
    path: Path  # resolved checkpoint file, inside an allowed folder
    family: str  # the zoo family (e.g. "vertical"); other runs: their config name before any "/"
    name: str  # e.g. "vertical/D2"
    config: Config
    step: int  # optimizer steps trained
    images_seen: int  # training images seen
    kind: str  # "export" (shipped weights) or "train"
    source: str  # "zoo" or "user"
    report: Report | None  # its eval report (FID against steps and compute), None when none ships
    depth_reports: tuple[Report, ...] = ()  # elastic: its reports at each D (the report and "<stem>-D<k>.json")

    @property
    def D(self) -> int:
        return self.config.model.diffusion_depth

    @property
    def N(self) -> int:
        return self.config.model.depth

    @property
    def elastic(self) -> bool:
        """One file for every D: trained over a set of depths, its boundary movable to any D in 1..N."""
        return bool(self.config.model.elastic_depths)

    @property
    def budget(self) -> str:
        return f"{self.step:,} steps" + (f", {_short(self.images_seen)} images" if self.images_seen else "")

    @property
    def group(self) -> str:
        """Identity of the family: everything that shaped the weights except D."""
        d = self.config.to_dict()
        d["model"].pop("diffusion_depth")
        d["train"].pop("out_dir")
        d.pop("sample")
        d.pop("name")
        return json.dumps([self.source, self.family, self.step, d], sort_keys=True)

    def describe(self) -> str:
        m = self.config.model
        cond = f", {m.num_classes} classes" if m.num_classes else ""
        c = self.config.diffusion.context_noise  # training only: sampling reads clean blocks
        noise = f", context noised up to {c:g} in training" if c else ""
        held = f", every other D in 1..{m.depth} held out" if len(set(m.depths)) < m.depth else ""
        elastic = f" (elastic: trained at D in {{{', '.join(map(str, m.depths))}}}{held})" if self.elastic else ""
        depth = "" if self.elastic else f", D={m.diffusion_depth}"  # an elastic file samples every D
        return (
            f"{self.name}: N={m.depth}{depth}{elastic}, T={m.num_blocks}, width {m.width}{cond}{noise}; "
            f"{data_text(self.config)}; trained {self.budget}"
        )


@dataclass(frozen=True)
class Family:
    label: str
    entries: tuple[Entry, ...]  # one per trained D, by D

    @property
    def N(self) -> int:
        return self.entries[0].N

    @property
    def elastic(self) -> Entry | None:
        """The elastic checkpoint that serves every position (None: one file per trained D)."""
        return next((e for e in self.entries if e.elastic), None)

    def trained(self) -> list[int]:
        """The depths D this family was trained at: the elastic checkpoint's set, else one per file."""
        one = self.elastic
        return list(one.config.model.depths) if one else [e.D for e in self.entries]

    def positions(self) -> list[int]:
        """Depth slider positions: every D in 1..N for an elastic checkpoint; else the quartiles of N (rounded half
        up) and every trained D."""
        if self.elastic:
            return list(range(1, self.N + 1))
        quartiles = {max(1, (q * self.N + 2) // 4) for q in (1, 2, 3, 4)}
        return sorted(quartiles | {e.D for e in self.entries})

    def at(self, D: int) -> Entry | None:
        """The checkpoint that samples at D: the elastic one for any D in 1..N, else the file trained at D."""
        one = self.elastic
        if one:
            return one if isinstance(D, int) and 1 <= D <= self.N else None
        return next((e for e in self.entries if e.D == D), None)

    def position_label(self, D: int) -> str:
        if self.elastic:
            return f"D={D}/N={self.N} · " + ("trained" if D in self.trained() else "held out")
        e = self.at(D)
        return f"D={D}/N={self.N}" + (f" · {e.budget}" if e else " · not trained")


def data_text(config: Config) -> str:
    """The data a checkpoint generates: dataset and image size, and the latent grid and codec of a latent model."""
    d, m = config.data, config.model
    latent = (
        f" (latents {m.latent_channels}x{m.latent_size}x{m.latent_size}, codec {Path(d.vae_path).name})"
        if d.codec == "vae"
        else ""
    )
    return f"{d.dataset} {d.image_size}px{latent}"


def _short(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)


# ---- allowed folders -----------------------------------------------------------------------------------------
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


# ---- scanning --------------------------------------------------------------------------------------------------
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
                "rewrite it with experiments/zoo.py eval."
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


def families(entries: list[Entry]) -> list[Family]:
    """Entries grouped into families (zoo first); duplicates of a (family, D) keep the first found."""
    groups: dict[str, dict[int, Entry]] = {}
    for e in entries:
        groups.setdefault(e.group, {}).setdefault(e.D, e)
    out = []
    for by_d in groups.values():
        e = next(iter(by_d.values()))
        m = e.config.model
        tag = "" if e.source == "zoo" else " (your folder)"
        elastic = " · elastic, every D in one file" if e.elastic else ""
        label = f"{e.family} · N={m.depth} T={m.num_blocks}{elastic} · {data_text(e.config)} · {e.budget}{tag}"
        out.append(Family(label, tuple(by_d[d] for d in sorted(by_d))))
    return out


def slider_positions(family: Family) -> int:
    """The depths a family's slider offers trained weights for: one per dedicated file, every trained D of an
    elastic file."""
    return len({d for e in family.entries for d in (e.config.model.elastic_depths or [e.D])})


def richness(family: Family) -> tuple[int, bool]:
    """How much a family's slider has to show: its trained depths, then (on a tie, e.g. the zoo's elastic model
    beside the four dedicated models it was trained against) an elastic file, whose slider also reaches the
    held-out depths. max() keeps the first family found on a full tie."""
    return slider_positions(family), family.elastic is not None


def quick_picks(fams: list[Family]) -> dict[str, str]:
    """{button caption: family label} for the sidebar's one-click picks: the richest family (the app's default,
    in the zoo the elastic Fashion-MNIST model) and the family of the largest images (the 256 px emoji), when they
    differ; captions name the data and, for an elastic family, that it holds every D."""
    if not fams:
        return {}
    richest = max(fams, key=richness)
    largest = max(fams, key=lambda f: (f.entries[0].config.data.image_size, richness(f)))
    picks = {}
    for f in (richest, largest):
        d = f.entries[0].config.data
        caption = f"{d.dataset} {d.image_size}px" + (", every D" if f.elastic else "")
        if f.label not in picks.values():
            picks[caption if caption not in picks else f.label] = f.label
    return picks if len(picks) > 1 else {}


def default_entry(fams: list[Family], folders: Folders) -> Entry | None:
    """--checkpoint, else the middle trained depth of the richest family (richness: in the zoo the elastic
    Fashion-MNIST model, every D of N in one file; without one, vertical at D=N/2)."""
    if folders.default or not fams:
        return next((e for f in fams for e in f.entries if e.path == folders.default), None)
    richest = max(fams, key=richness)
    return richest.entries[(len(richest.entries) - 1) // 2]


def depth_scores(family: Family, steps: int) -> dict[int, CurvePoint]:
    """An elastic family's shipped FID at `steps` for each trained D that has one ({} for dedicated files)."""
    one = family.elastic
    trained = family.trained()
    scored: dict[int, CurvePoint] = {}
    for r in one.depth_reports if one else ():
        point = next((p for p in r.curve if p.steps == steps), None)
        if r.D in trained and point is not None and point.fid == point.fid:  # NaN: no FID at S
            scored.setdefault(r.D, point)
    return scored


def _cheapest_within_best(scored: dict[int, CurvePoint]) -> int:
    """The smallest D whose FID lies inside the best D's bootstrap interval (exact ties only without one)."""
    best = min(scored.values(), key=lambda p: p.fid)
    ceiling = best.fid_high if best.fid_high == best.fid_high else best.fid
    return min(D for D, p in scored.items() if p.fid <= ceiling)


def opening_depth(family: Family, steps: int) -> int:
    """The depth the slider starts at. An elastic family: the cheapest trained D whose shipped FID at `steps` is
    indistinguishable from the best one's (inside the best D's bootstrap interval), so that the app opens on what
    the model does best at its default steps and breaks near-ties towards less compute; without reports at those
    steps, the D the file was exported at. A family of dedicated files: its middle trained D."""
    trained = family.trained()
    if family.elastic is None:
        return trained[len(trained) // 2]
    scored = depth_scores(family, steps)
    return _cheapest_within_best(scored) if scored else family.elastic.D


def opening_note(family: Family, steps: int) -> str:
    """Why the slider starts where it does, from the reports opening_depth read ("" when it read none)."""
    scored = depth_scores(family, steps)
    if not scored:
        return ""
    n = family.elastic.report.eval.get("n")
    n = f"{n:,}" if isinstance(n, int) else "?"
    fids = ", ".join(
        f"D={D} {p.fid:.1f}" + (f" [{p.fid_low:.1f}, {p.fid_high:.1f}]" if p.fid_high == p.fid_high else "")
        for D, p in sorted(scored.items())
    )
    return (
        f"Opens at D={_cheapest_within_best(scored)}: the cheapest depth whose shipped FID at S={steps} lies "
        f"inside the best one's interval ({fids}; n={n})."
    )
