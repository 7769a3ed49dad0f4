"""Runs: consume the sampler's events, draw them as they arrive, keep the results in the session.

A `PageRun` lives in st.session_state (one per side), never in a module global: browser sessions share nothing but
the cached, read-only models, codecs and reference statistics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

import workbench as wb
from workbench.core.compute import Cost
from workbench.core.config import Config
from workbench.core.model import MADFormer
from workbench.core.sample_config import SampleConfig
from workbench.data.codecs import Codec, PixelCodec
from workbench.evaluation.metrics import FIDResult, LiveFID, ReferenceStats, paired_fid_difference
from workbench.sampling.noise import Rows
from workbench.sampling.request import batch_key, check_request
from workbench.sampling.sampler import frame

from .controls import MORE_SAMPLES, Side, SidePlan, side_plan
from .scheduler import Job, Refused, Scheduler, Share
from .trajectory import recording

# Sessions draw in threads of one server process (decoding, encoding PNGs) and sample on the work queue's workers
# (scheduler.py), which hold their own thread budget. With torch's intra-op threads on top, a loaded small CPU is
# oversubscribed and its OpenMP threads spin: on 2 cores at load average 13 the first block took 50 s with 2
# threads and 1 s with 1. The app's models are small enough that one thread per run loses little.
TORCH_THREADS = 1
PREVIEW_INTERVAL_S = 0.25  # at most this often a denoising-step preview is sent to the browser
MORE_BATCH = 32  # images per batch when adding samples for the FID
FID_INTERVAL_S = 1.0  # while samples are added, the live FID is recomputed at most once a second and at
FID_BUSY_SHARE = 0.25  # most as often as keeps its computing under this share of the time (Inception: seconds)
# paired bootstrap resamples of the A - B difference: each costs two FIDs, milliseconds at the classifier's 128
# features and tens of milliseconds at Inception's 2048, so the wide features get fewer (a coarser interval)
PAIRED_RESAMPLES = {128: 200, 2048: 50}


@dataclass
class PageRun:
    """One side's result: settings, the first batch, its cost, and the FID of everything generated so far."""

    name: str  # "A" or "B" in compare mode, else ""
    side: Side
    checkpoint: Path  # the checkpoint file
    model_name: str  # its config name, e.g. "vertical/D2"
    num_images: int
    seed: int
    images: torch.Tensor | None = None  # (B, C, H, W) in [-1, 1]: the first batch (seed), as far as it got
    blocks: int = 0  # finished blocks in `images` (of num_blocks)
    num_blocks: int = 0
    cost: Cost | None = None  # per-image block-layer evals of the first batch; its sampling seconds (None: stopped)
    first_block_s: float = math.nan  # from the click to the first finished block on screen
    batches: int = 1  # batches generated; batch b >= 1 used seed + b
    live: LiveFID | None = None
    fid: FIDResult | None = None
    fid_problem: str | None = None
    plan: SidePlan | None = None  # the D_k and S_k it samples (controls.side_plan)
    image_size: int = 0  # pixels per image side (the page shows large images at their true size)

    @property
    def finished(self) -> bool:
        return self.cost is not None

    @property
    def title(self) -> str:
        s = self.side
        parts = [self.name, self.model_name, f"D={s.D}", f"S={s.steps}", s.sampler]
        if s.label is not None or s.cfg_scale != 1:
            parts += [f"class {'all' if s.label is None else s.label}", f"guidance {s.cfg_scale:g}"]
        parts += self.plan.notes(s) if self.plan else []
        return " · ".join(p for p in parts if p)

    @property
    def mean_steps(self) -> float:
        """S per block, averaged over the blocks (S itself without a steps schedule or iso-compute)."""
        return sum(self.plan.steps) / len(self.plan.steps) if self.plan else self.side.steps


@dataclass(frozen=True)
class Loaded:
    """What a run samples with: the cached model, its config, the codec and the FID reference (or why none)."""

    model: MADFormer
    config: Config
    codec: Codec
    reference: ReferenceStats | None
    reference_problem: str | None

    @property
    def previews(self) -> bool:
        """Whether denoising steps are drawn (decoded): on pixels only. A latent model's step moves the progress
        bar, and each block is decoded once, when it is finished (a VAE decode costs more than a step)."""
        return isinstance(self.codec, PixelCodec)


def request_of(loaded: Loaded, side: Side, num_images: int, seed: int) -> tuple[SampleConfig, torch.Tensor | None]:
    """The sampling request of a side's `num_images` images of `seed`, and their labels (None: drawn)."""
    labels = None if side.label is None else torch.full((num_images,), side.label, dtype=torch.long)
    request = wb.sample_request(
        loaded.config,
        num_images=num_images,
        steps=side.steps,
        sampler=side.sampler,
        seed=seed,
        cfg_scale=side.cfg_scale,
        **side_plan(side, loaded.config).sample_kwargs(),
        **side.tuning.sample_kwargs(),
    )
    return request, labels


def events(loaded: Loaded, side: Side, num_images: int, seed: int) -> Iterator[wb.Event]:
    request, labels = request_of(loaded, side, num_images, seed)
    return wb.generate_events(loaded.model, loaded.config, request, labels)


def share(loaded: Loaded, side: Side, num_images: int, seed: int) -> Share:
    """How a side's generation shares a batch with other pages' (batched generation, scheduler.py): the sampler's
    batch key decides with whom; its images are its own rows, with the noise they have alone. The request is
    checked against the model here, so that a bad one fails its own page, not a group."""
    request, labels = request_of(loaded, side, num_images, seed)
    check_request(loaded.model.cfg, loaded.config, request)
    key = batch_key(loaded.model, loaded.config, request)
    return Share(key, (loaded, request, labels), _together, _part, rows=num_images)


def _together(payloads: list[tuple[Loaded, SampleConfig, torch.Tensor | None]]) -> Iterator[wb.Event]:
    """One sampler over the rows of every page in a group (their keys are equal: same model, same settings)."""
    loaded, request, _ = payloads[0]
    rows = [Rows(r.seed, r.first_image, r.num_images, labels) for _, r, labels in payloads]
    return wb.generate_events(loaded.model, loaded.config, request, rows=rows)


def _part(event: wb.Event, i: int) -> wb.Event:
    return event.part(i)


class Throttle:
    """Which events are worth drawing: every finished block and, with `preview`, a denoising step at most every
    `interval_s` seconds times the server's load (a browser cannot show more, and each drawing costs an encode and
    a send, all in the one interpreter that also samples for every session). `load()` is the generations per
    worker (1 when the server is not shared): 8 sessions on 2 workers preview each page once a second instead of
    four times, so the server's drawing stays about what one busy page costs. Applied on the worker, so skipped
    steps never reach the session."""

    def __init__(
        self,
        preview: bool,
        interval_s: float = PREVIEW_INTERVAL_S,
        clock: Callable[[], float] = time.perf_counter,
        load: Callable[[], float] = lambda: 1.0,
    ):
        self.preview, self.interval_s, self.clock, self.load = preview, interval_s, clock, load
        self.last = -math.inf

    def __call__(self, event: wb.Event) -> bool:
        if event.kind == "block" or (
            self.preview and self.clock() - self.last >= self.interval_s * max(1.0, self.load())
        ):
            self.last = self.clock()
            return True
        return False


def is_block(event: wb.Event) -> bool:
    return event.kind == "block"


def is_done(event: wb.Event) -> bool:
    return event.done


def progress_text(event: wb.Event) -> tuple[float, str]:
    done = (event.block + event.step / event.steps) / event.num_blocks  # blocks may differ in S (S_k)
    what = "finished" if event.kind == "block" else f"step {event.step}/{event.steps}"
    return done, f"block {event.block + 1}/{event.num_blocks} {what}"


def _per_worker(queue: Scheduler) -> float:
    """Generations running or waiting per worker."""
    return sum(queue.load()) / queue.limits.workers


def submit(
    queue: Scheduler, session: str, runs: list[PageRun], loaded: list[Loaded], preview: bool, record: Sequence = ()
) -> list[Job]:
    """Queue the first batch of every run, served block by block and batched with other pages' compatible runs
    (scheduler.py); all or none (Refused leaves nothing queued).
    `record[i]`, where given, sees every event of run i on the worker (app.trajectory: the scrubber's steps)."""
    jobs: list[Job] = []
    try:
        for i, (run, ld) in enumerate(zip(runs, loaded)):
            keep = Throttle(preview, load=partial(_per_worker, queue))
            jobs.append(
                queue.submit(
                    session,
                    None,
                    boundary=is_block,
                    last=is_done,
                    keep=recording(record[i], keep) if record else keep,
                    share=share(ld, run.side, run.num_images, run.seed),
                )
            )
    except Refused:
        for job in jobs:
            queue.cancel(job)
        raise
    return jobs


def stream_jobs(
    queue: Scheduler,
    session: str,
    jobs: list[Job],
    runs: list[PageRun],
    loaded: list[Loaded],
    views: list,
    clicked: float,
) -> None:
    """Draw the queued runs as their events arrive (sides in turn), and the place in line while a run waits; then
    each finished run's first FID. Every finished block is kept in its run, so a stopped run keeps what it drew.
    An event is drawn only when no finished block of its run waits behind it: a page slower than its sampler (a
    latent model's decode takes longer than its steps) draws the newest block, never a queue of outdated ones."""
    for got in queue.follow(jobs):
        if got is None:
            for job, view in zip(jobs, views):
                if not job.started:
                    view.show_waiting(queue.place(job), *queue.load(), queue.limits.workers)
            continue
        i, event = got
        run, ld, view = runs[i], loaded[i], views[i]
        if not (event.kind == "block" or ld.previews) or queue.waiting(jobs[i], is_block):
            view.show_progress(*progress_text(event))  # a latent model's step, or a frame already outdated
            continue
        images = frame(ld.codec, event)  # blocks not started: a placeholder, never decoded zeros
        view.show_images(images, *progress_text(event))
        if event.kind == "block":
            run.images, run.blocks, run.num_blocks = images, event.block + 1, event.num_blocks
            if math.isnan(run.first_block_s):
                run.first_block_s = time.perf_counter() - clicked
        if event.done:
            run.cost = replace(event.cost, seconds=jobs[i].busy_s)  # sampling time only, not the waits
            view.show_meter(run)
    for run, ld, view in zip(runs, loaded, views):
        if not run.finished:
            continue
        if ld.reference is None:
            run.fid_problem = ld.reference_problem
        else:
            view.show_fid(None, None)
            run.live = LiveFID(ld.reference)
            run.fid_problem = "stopped before its FID was computed."  # until it is
            run.fid = queue.call(session, partial(_first_fid, run.live, run.images))
            run.fid_problem = None if run.fid else "FID needs at least 2 images: generate more."
        view.show_fid(run.fid, run.fid_problem)


def _first_fid(live: LiveFID, images: torch.Tensor) -> FIDResult | None:
    live.update(images)
    return live.compute() if live.n >= 2 else None


def add_samples(
    queue: Scheduler, session: str, runs: list[PageRun], loaded: list[Loaded], views: list, limit: int
) -> None:
    """MORE_SAMPLES more images per run (batches of MORE_BATCH, seeds seed+1, seed+2, ...) through the work queue,
    the FID redrawn after every batch; a run never holds more than `limit` images."""
    for run, ld, view in zip(runs, loaded, views):
        target = min(limit, run.live.n + MORE_SAMPLES)
        need = target - run.live.n
        sizes = [min(MORE_BATCH, need - b) for b in range(0, need, MORE_BATCH)]
        stream = _batches(ld, run.side, run.seed + run.batches, sizes)
        for got in queue.follow([queue.submit(session, stream, boundary=is_block, keep=is_done)]):
            if got is None:
                continue
            run.live.update(ld.codec.decode(got[1].x_t))
            run.batches += 1
            run.fid = queue.call(session, partial(run.live.maybe_compute, min_interval_s=fid_interval(run.fid)))
            view.show_fid(run.fid, None)
            view.progress.progress(run.live.n / target, text=f"adding samples for the FID: {run.live.n}/{target}")
        if run.fid.n != run.live.n:
            run.fid = queue.call(session, run.live.compute)
            view.show_fid(run.fid, None)


@dataclass(frozen=True)
class Difference:
    """FID(A) - FID(B) over the images both sides drew from the same seeds, with its paired bootstrap interval."""

    fid: float
    low: float
    high: float
    level: float
    n: int  # shared seeds (rows) scored
    resamples: int
    extractor: str
    reference: str

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return "B is better (lower FID): the interval lies above 0"
        if self.high < 0:
            return "A is better (lower FID): the interval lies below 0"
        return "undecided: the interval contains 0 (add samples to narrow it)"


def paired_difference(a: PageRun, b: PageRun, level: float = 0.9) -> tuple[Difference | None, str | None]:
    """The difference of two finished sides' FIDs over the rows they share (row i of both from the same seed and
    batch), or why there is none. Runs on the work queue: resampling costs up to seconds at 2048 features."""
    if a.live is None or b.live is None:
        return None, "both sides need a live FID."
    if a.seed != b.seed or a.num_images != b.num_images:
        return None, "the sides were drawn from different seeds, so their images do not pair up."
    ref_a, ref_b = a.live.reference, b.live.reference
    if (a.live.extractor.id, ref_a.name) != (b.live.extractor.id, ref_b.name):
        return None, (
            f"the sides are scored with different features or references ({a.live.extractor.id} on "
            f"{ref_a.name}, {b.live.extractor.id} on {ref_b.name}): their FIDs are not comparable."
        )
    n = min(a.live.n, b.live.n)
    if n < 2:
        return None, "a difference needs at least 2 images on each side: generate more."
    resamples = PAIRED_RESAMPLES.get(ref_a.mu.numel(), 50)
    d, low, high = paired_fid_difference(
        a.live.features[:n], b.live.features[:n], ref_a, resamples, level, torch.Generator().manual_seed(0)
    )
    return Difference(d, low, high, level, n, resamples, a.live.extractor.id, ref_a.name), None


def fid_interval(last: FIDResult | None) -> float:
    """Seconds the live FID waits before it is recomputed: FID_INTERVAL_S, longer when one computation takes more
    than FID_BUSY_SHARE of that (Inception's 2048-d FID with its bootstrap, on a CPU)."""
    return max(FID_INTERVAL_S, last.seconds / FID_BUSY_SHARE if last else 0.0)


def _batches(loaded: Loaded, side: Side, seed: int, sizes: list[int]) -> Iterator[wb.Event]:
    """The events of batches of `sizes` images, batch b from seed + b (closing it closes the running sampler)."""
    for b, n in enumerate(sizes):
        yield from events(loaded, side, n, seed + b)
