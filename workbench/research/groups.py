"""Checkpoints grouped into families of depth positions: what a browser of checkpoints (the app, a notebook) lists.

A family is every checkpoint of one family name, run, data and training budget that differs only in the diffusion
depth D. Its depth positions are the paper's grid D in {N/4, N/2, 3N/4, N} plus every D that was trained; a position
without a checkpoint stays empty (it never stands in another one). An elastic checkpoint (`model.elastic_depths`)
is a family of its own whose one file samples at every D in 1..N: each position says whether that D was trained or
is held out (sampled with allow_untrained_depth).

Nothing here reads files: the entries come from whoever scanned the folders (app/catalog.py for the app).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..core.config import Config
from .reports import Report


@dataclass(frozen=True)
class Entry:
    """One checkpoint file as a browser lists it."""

    path: Path  # resolved checkpoint file
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
    def member(self) -> str:
        """The member name within its family ("no-clean" of "ablations/no-clean")."""
        return self.name.split("/", 1)[-1]

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
        c = self.config.diffusion.train_context_noise  # training only: sampling reads clean blocks
        noise = f", context noised up to {c:g} in training" if c else ""
        held = f", every other D in 1..{m.depth} held out" if len(set(m.depths)) < m.depth else ""
        elastic = f" (elastic: trained at D in {{{', '.join(map(str, m.depths))}}}{held})" if self.elastic else ""
        depth = "" if self.elastic else f", D={m.diffusion_depth}"  # an elastic file samples every D
        return (
            f"{self.name}: N={m.depth}{depth}{elastic}, T={m.num_blocks}, width {m.width}{cond}{noise}; "
            f"{data_text(self.config)}; trained {self.budget}{self._data_figures()}"
        )

    def _data_figures(self) -> str:
        """The copy share and the FID against held-out images, where the report carries them (docs/evaluation.md)."""
        ev = self.report.eval if self.report else {}
        mem, held, text = ev.get("memorization") or {}, ev.get("fid_held_out") or {}, ""
        if mem.get("copy_share") is not None:  # evaluation.memorization's copy share
            low, high = mem["copy_share_interval"]
            text += (
                f"; {mem['copy_share']:.0%} [{low:.0%}, {high:.0%}] of {mem['n']} generations lie nearer a training "
                f"image than the median held-out image (new images: {mem['copy_share_if_novel']:.0%})"
            )
        if held.get("fid") is not None:  # evaluation.evaluate.held_out_fid
            small = " (too few to be meaningful)" if held.get("note") else ""
            text += (
                f"; FID {held['fid']:.1f} [{held['fid_low']:.1f}, {held['fid_high']:.1f}] against "
                f"{held['reference_count']:,} held-out images{small}"
            )
        return text


@dataclass(frozen=True)
class Family:
    label: str  # distinct within a listing (group_families() makes it so)
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


def _base_label(e: Entry) -> str:
    m = e.config.model
    tag = "" if e.source == "zoo" else " (your folder)"
    elastic = " · elastic, every D in one file" if e.elastic else ""
    return f"{e.family} · N={m.depth} T={m.num_blocks}{elastic} · {data_text(e.config)} · {e.budget}{tag}"


def _members(entries: tuple[Entry, ...]) -> str:
    """What tells a family from others of the same description: its members' names (the ablation switched off,
    the seed), shortened to their common form when they differ only in D ("D1..D4" stays "D1, D2, D4")."""
    return ", ".join(dict.fromkeys(e.member for e in entries))


def group_families(entries: list[Entry]) -> list[Family]:
    """Entries grouped into families (in the order found, so the zoo comes first); duplicates of a (family, D) keep
    the first found. Labels are distinct: families whose description is the same (the zoo's ablations, each with
    one architectural switch off) name their members, and a folder's copy its folder."""
    groups: dict[str, dict[int, Entry]] = {}
    for e in entries:
        groups.setdefault(e.group, {}).setdefault(e.D, e)
    grouped = [tuple(by_d[d] for d in sorted(by_d)) for by_d in groups.values()]
    labels = [_base_label(g[0]) for g in grouped]
    same = defaultdict(list)
    for i, label in enumerate(labels):
        same[label].append(i)
    for indices in same.values():
        if len(indices) < 2:
            continue
        for i in indices:
            head, _, rest = labels[i].partition(" · ")
            labels[i] = f"{head} · {_members(grouped[i])} · {rest}"
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):  # still alike (the same member twice): the folder tells them apart
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} · {grouped[i][0].path.parent}"
    return [Family(label, g) for label, g in zip(labels, grouped)]


def slider_positions(family: Family) -> int:
    """The depths a family's slider offers trained weights for: one per dedicated file, every trained D of an
    elastic file."""
    return len({d for e in family.entries for d in (e.config.model.elastic_depths or [e.D])})
