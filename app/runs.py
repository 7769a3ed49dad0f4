"""Runs: consume the sampler's events, draw them as they arrive, keep the results in the session.

A `Run` lives in st.session_state (one per side), never in a module global: browser sessions share nothing but
the cached, read-only models, codecs and reference statistics.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field, replace
from itertools import count
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

import workbench as wb
from workbench.codecs import Codec
from workbench.compute import Cost
from workbench.config import Config
from workbench.metrics import FIDResult, LiveFID, ReferenceStats
from workbench.model import MADFormer

from .controls import MORE_SAMPLES, Side

# Sessions sample in threads of one server process. With torch's intra-op threads on top, a loaded small CPU is
# oversubscribed and its OpenMP threads spin: on 2 cores at load average 13 the first block took 50 s with 2
# threads and 1 s with 1. The app's models are small enough that one thread per run loses little.
TORCH_THREADS = 1
PREVIEW_INTERVAL_S = 0.25  # at most this often a denoising-step preview is sent to the browser
MORE_BATCH = 32            # images per batch when adding samples for the FID


@dataclass
class Run:
    """One side's result: settings, the first batch, its cost, and the FID of everything generated so far."""
    name: str                    # "A" or "B" in compare mode, else ""
    side: Side
    checkpoint: Path             # the checkpoint file
    model_name: str              # its config name, e.g. "vertical/D2"
    num_images: int
    seed: int
    images: torch.Tensor | None = None   # (B, C, H, W) in [-1, 1]: the first batch (seed)
    cost: Cost | None = None  # per-image block-layer evals of the first batch; its sampling seconds
    first_block_s: float = math.nan      # from the click to the first finished block on screen
    batches: int = 1                     # batches generated; batch b >= 1 used seed + b
    live: LiveFID | None = None
    fid: FIDResult | None = None
    fid_problem: str | None = None

    @property
    def title(self) -> str:
        s = self.side
        parts = [self.name, self.model_name, f"D={s.D}", f"S={s.steps}", s.sampler]
        if s.label is not None or s.cfg_scale != 1:
            parts += [f"class {'all' if s.label is None else s.label}", f"guidance {s.cfg_scale:g}"]
        return " · ".join(p for p in parts if p)


@dataclass(frozen=True)
class Loaded:
    """What a run samples with: the cached model, its config, the codec and the FID reference (or why none)."""
    model: MADFormer
    config: Config
    codec: Codec
    reference: ReferenceStats | None
    reference_problem: str | None


def events(loaded: Loaded, side: Side, num_images: int, seed: int) -> Iterator[wb.Event]:
    labels = None if side.label is None else torch.full((num_images,), side.label, dtype=torch.long)
    return wb.generate_events(loaded.model, loaded.config, num_images=num_images, steps=side.steps,
                              sampler=side.sampler, seed=seed, labels=labels, cfg_scale=side.cfg_scale)


def frames(stream: Iterable[wb.Event], preview: bool, interval_s: float = PREVIEW_INTERVAL_S,
           clock: Callable[[], float] = time.perf_counter) -> Iterator[wb.Event]:
    """The events worth drawing: every finished block and, with `preview`, a denoising step at most every
    `interval_s` seconds (a browser cannot show more, and each drawing costs an encode and a send)."""
    last = -math.inf
    for event in stream:
        if event.kind == "block" or (preview and clock() - last >= interval_s):
            last = clock()
            yield event


class Busy:
    """An iterator that counts the seconds spent producing its items: the sampling time of one side, without
    the drawing and without the other side's turns in compare mode."""

    def __init__(self, items: Iterator):
        self.items, self.seconds = items, 0.0

    def __iter__(self) -> "Busy":
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.items)
        finally:
            self.seconds += time.perf_counter() - start


def interleave(*streams: Iterator) -> Iterator[tuple[int, object]]:
    """(index, item) round-robin over iterators until all are exhausted: compare mode advances both sides."""
    live = dict(enumerate(streams))
    while live:
        for i in list(live):
            item = next(live[i], StopIteration)
            if item is StopIteration:
                del live[i]
            else:
                yield i, item


def progress_text(event: wb.Event) -> tuple[float, str]:
    done = (event.block * event.steps + event.step) / (event.num_blocks * event.steps)
    what = "finished" if event.kind == "block" else f"step {event.step}/{event.steps}"
    return done, f"block {event.block + 1}/{event.num_blocks} {what}"


def generate(runs: list[Run], loaded: list[Loaded], views: list, preview: bool, clicked: float) -> None:
    """The first batch of every run, drawn as it arrives (sides interleaved), then each run's first FID."""
    streams = [Busy(frames(events(ld, r.side, r.num_images, r.seed), preview)) for r, ld in zip(runs, loaded)]
    for i, event in interleave(*streams):
        run, ld, view = runs[i], loaded[i], views[i]
        images = ld.codec.decode(event.x_t if event.kind == "block" else event.x0)
        view.show_images(images, *progress_text(event))
        if event.kind == "block" and event.block == 0:
            run.first_block_s = time.perf_counter() - clicked
        if event.done:
            run.images = images
            run.cost = replace(event.cost, seconds=streams[i].seconds)  # sampling time only
            view.show_meter(run)
    for run, ld, view in zip(runs, loaded, views):
        if ld.reference is None:
            run.fid_problem = ld.reference_problem
        else:
            view.show_fid(None, None)
            run.live = LiveFID(ld.reference)
            run.live.update(run.images)
            run.fid = run.live.compute() if run.live.n >= 2 else None
            run.fid_problem = None if run.fid else "FID needs at least 2 images: generate more."
        view.show_fid(run.fid, run.fid_problem)


def add_samples(runs: list[Run], loaded: list[Loaded], views: list, limit: int) -> None:
    """MORE_SAMPLES more images per run (batches of MORE_BATCH, seeds seed+1, seed+2, ...), the FID redrawn
    after every batch; a run never holds more than `limit` images."""
    for run, ld, view in zip(runs, loaded, views):
        target = min(limit, run.live.n + MORE_SAMPLES)
        for b in count(run.batches):
            if run.live.n >= target:
                break
            last = deque(events(ld, run.side, min(MORE_BATCH, target - run.live.n), run.seed + b), maxlen=1)[0]
            run.live.update(ld.codec.decode(last.x_t))
            run.batches = b + 1
            run.fid = run.live.maybe_compute(min_interval_s=1.0)  # throttled: the sampler keeps the CPU
            view.show_fid(run.fid, None)
            view.progress.progress(run.live.n / target, text=f"adding samples for the FID: {run.live.n}/{target}")
        if run.fid.n != run.live.n:
            run.fid = run.live.compute()
            view.show_fid(run.fid, None)
