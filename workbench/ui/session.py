"""What the playground opens and samples, without any widget: the checkpoints it may pick (the shipped zoo and any
folder), the settings a checkpoint allows (every D of an elastic file, its samplers, its classes), one sampling run
that consumes `generate_events` block by block and can be stopped, its compute meter and live FID, and where the
chosen settings sit on a family's FID-vs-compute curves. The widgets (playground.py) only draw this state, so the
tests drive it with or without them."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.compute import Cost, at_depth, cached_cost, paper_cost, sample_flops
from ..core.config import Config, SampleConfig, samplers_for
from ..core.model import MADFormer
from ..core.paths import ZOO_DIR
from ..data.codecs import Codec, PixelCodec, build_codec
from ..data.images import image_grid
from ..data.labels import class_names
from ..evaluation.evaluate import default_extractor, reference_split, shipped_reference
from ..evaluation.metrics import FIDResult, LiveFID, ReferenceStats
from ..research.plots import Marker
from ..research.reports import Report, weights_path
from ..sampling.request import sample_request
from ..sampling.sampler import Event, frame, generate_events
from ..training.checkpoint import CheckpointError, read_header

LIVE_EXTRACTORS = ("fmnist-classifier", "inception")  # the features a live FID may use, the model's own first
PREVIEW_INTERVAL_S = 0.25  # at most this often a pixel model's denoising step is drawn (a latent one: blocks only)


# ---- the checkpoints a person may pick -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    """A checkpoint file the picker offers, with its config read from the header (no weights loaded)."""

    path: Path
    label: str  # what the picker shows, e.g. "zoo: vertical/elastic (elastic: D in 1..4)"
    config: Config


def find_checkpoints(folders: Sequence[str | Path] = (ZOO_DIR,)) -> tuple[list[Choice], list[str]]:
    """(choices, notes): every workbench checkpoint under the folders (searched recursively, sorted by path) and a
    one-line note for each folder or file that could not be offered. Headers are read, tensors are not."""
    choices, notes, seen = [], [], set()
    for folder in folders:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            notes.append(f"{folder}: not a folder. Fix: give a folder that holds .safetensors checkpoints.")
            continue
        tag = "zoo" if folder.resolve() == ZOO_DIR.resolve() else folder.name
        for path in sorted(folder.rglob("*.safetensors")):
            if path.resolve() in seen:  # a folder inside another one offered
                continue
            seen.add(path.resolve())
            try:
                config = Config.from_dict(read_header(path)["config"])
            except (CheckpointError, KeyError, ValueError, TypeError) as err:
                notes.append(f"{path.name}: skipped ({str(err).splitlines()[0][:160]})")
                continue
            choices.append(Choice(path, f"{tag}: {config.name or path.stem} ({describe_depths(config)})", config))
    return choices, notes


def describe_depths(config: Config) -> str:
    m = config.model
    if m.elastic_depths:
        return f"elastic: D in 1..{m.depth}, trained at {', '.join(map(str, m.depths))}"
    return f"D={m.diffusion_depth} of N={m.depth}, T={m.num_blocks}"


# ---- the settings a checkpoint allows ------------------------------------------------------------------------------
def depth_options(config: Config) -> list[int]:
    """The depths D the depth slider offers: every D in 1..N for an elastic file, else the file's one D."""
    m = config.model
    return list(range(1, m.depth + 1)) if m.elastic_depths else [m.diffusion_depth]


def depth_note(config: Config, depth: int) -> str:
    """'trained' or 'held out' (an elastic file sampled at a D its training never drew)."""
    return "trained" if depth in config.model.depths else "held out (never trained: expect worse images)"


def sampler_options(config: Config) -> list[str]:
    """The samplers this checkpoint's objective takes, its own first."""
    names = list(samplers_for(config.diffusion.prediction, config.sample.x0_clip))
    own = config.sample.sampler
    return [own] + [n for n in names if n != own] if own in names else names


def class_options(config: Config) -> list[tuple[str, int | None]]:
    """(name, label) pairs of the class picker, "all classes" (None) first; empty for an unconditional model."""
    n = config.model.num_classes
    if not n:
        return []
    names = class_names(config.data) or []
    return [("all classes", None)] + [(names[i] if i < len(names) else f"class {i}", i) for i in range(n)]


@dataclass(frozen=True)
class Settings:
    """One Generate: what the sliders say."""

    depth: int  # D: diffusion layers
    steps: int  # S: denoising steps per block
    sampler: str
    seed: int
    num_images: int
    label: int | None = None  # one class for every image; None: the model's own draw (unconditional: ignored)
    cfg_scale: float = 1.0  # classifier-free guidance (class-conditional models only)

    def request(self, config: Config) -> tuple[SampleConfig, torch.Tensor | None]:
        """(the sampling request, labels (B,) or None) of these settings on `config`'s model: generate_events'
        arguments. A held-out depth of an elastic file is allowed (the depth label says so)."""
        labelled = bool(config.model.num_classes)
        labels = None
        if labelled and self.label is not None:
            labels = torch.full((self.num_images,), self.label, dtype=torch.long)  # (B,)
        request = sample_request(
            config,
            num_images=self.num_images,
            steps=self.steps,
            sampler=self.sampler,
            seed=self.seed,
            cfg_scale=self.cfg_scale if labelled else 1.0,
            diffusion_depth=self.depth,
            allow_untrained_depth=self.depth not in config.model.depths,
        )
        return request, labels


def settings_cost(config: Config, depth: int, steps: int, x: str = "paper_cost") -> float:
    """Where (D, S) sits on a report's compute axis (workbench.research.reports.COSTS): per image."""
    m = at_depth(config.model, depth)
    if x == "paper_cost":
        return paper_cost(m, steps)
    if x == "cached_cost":
        return cached_cost(m, steps)
    if x == "flops":
        return sum(sample_flops(m, steps).values())
    if x == "steps":
        return float(steps)
    raise ValueError(f"x: unknown axis {x!r}. Fix: use paper_cost, cached_cost, flops or steps.")


def matching_report(reports: Mapping[str, Report], path: Path, depth: int) -> Report | None:
    """The report measured on this checkpoint file at this D (an elastic file has one per D), if one ships."""
    path = Path(path).resolve()
    for r in reports.values():
        w = weights_path(r)
        if w is not None and w.resolve() == path and r.D == depth:
            return r
    return None


def settings_marker(
    reports: Mapping[str, Report], choice: Choice, depth: int, steps: int, x: str = "paper_cost"
) -> tuple[str, Marker]:
    """(legend name, marker) of the chosen (D, S) on the curves: a star at the matching report's FID when it
    measured this S, else a dotted line at the compute alone (the playground's few images give no comparable FID)."""
    cost = settings_cost(choice.config, depth, steps, x)
    name = f"chosen: D={depth}, S={steps}, T={choice.config.model.num_blocks}"
    r = matching_report(reports, choice.path, depth)
    point = next((p for p in r.curve if p.steps == steps), None) if r else None
    if point is None:
        return name + " (no report at this S)", Marker(cost)
    return f"{name} ({r.name}: FID {point.fid:.1f})", Marker(cost, point.fid, point.fid_low, point.fid_high)


def live_reference(config: Config) -> tuple[ReferenceStats | None, str | None]:
    """(statistics, None) shipped for this checkpoint's data, the model's own extractor first; else (None, why)."""
    data = config.data
    order = sorted(LIVE_EXTRACTORS, key=lambda e: e != default_extractor(config))
    for extractor in order:
        stats = shipped_reference(data, extractor)
        if stats is not None:
            return stats, None
    return None, (
        f"no reference statistics for {data.dataset} {data.image_size}px ({reference_split(data)} split). Fix: "
        f"python scripts/build_reference.py --dataset {data.dataset} --image-size {data.image_size}."
    )


def png(images: torch.Tensor, nrow: int | None = None) -> bytes:
    """(B, C, H, W) images in [-1, 1] as one tiled PNG."""
    buf = io.BytesIO()
    image_grid(images, nrow).save(buf, format="PNG")
    return buf.getvalue()


# ---- one run -------------------------------------------------------------------------------------------------------
@dataclass
class Loaded:
    """A checkpoint ready to sample: the model, its config, its codec."""

    model: MADFormer
    config: Config
    codec: Codec

    @property
    def device(self) -> torch.device:
        """Where the model is: its sampling, its codec and its live FID's extractor run there."""
        return next(self.model.parameters()).device

    @classmethod
    def from_model(cls, model: MADFormer, config: Config) -> Loaded:
        return cls(model.requires_grad_(False), config, build_codec(config.data, next(model.parameters()).device))


@dataclass
class SampleRun:
    """One press of Generate: the settings, the images as far as they got (finished blocks are kept when the run
    is stopped), the compute spent, and the FID of the images once every block is done.

    `run()` consumes the sampler's events in the calling thread; `stop()` (from any thread) ends it after the
    event in progress. `on_update(run)` is called after every drawn event (a finished block, or a pixel model's
    step at most every PREVIEW_INTERVAL_S) and once at the end."""

    loaded: Loaded
    settings: Settings
    reference: ReferenceStats | None = None
    reference_problem: str | None = None
    on_update: Callable[[SampleRun], None] | None = None
    images: torch.Tensor | None = None  # (B, C, H, W) in [-1, 1]: the latest drawn frame
    blocks: int = 0  # finished blocks in `images`
    num_blocks: int = 0
    progress: float = 0.0  # share of the run's steps done, 0..1
    status: str = "not started"
    cost: Cost | None = None  # per image, so far
    fid: FIDResult | None = None
    fid_problem: str | None = None
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def finished(self) -> bool:
        return self.num_blocks > 0 and self.blocks == self.num_blocks

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> SampleRun:
        """Sample, drawing as the events arrive, then score the finished images; errors become `error`."""
        ld, s = self.loaded, self.settings
        preview, last = isinstance(ld.codec, PixelCodec), -float("inf")
        self.status = "sampling"
        try:
            events = generate_events(ld.model, ld.config, *s.request(ld.config))
        except ValueError as err:  # settings the model refuses: one line naming the fix
            self.error, self.status = str(err).splitlines()[0], "error"
            self._notify()
            return self
        try:
            for event in events:
                if self._stop.is_set():
                    break
                self.cost, self.num_blocks = event.cost, event.num_blocks
                self.progress = (event.block + event.step / event.steps) / event.num_blocks
                now = time.perf_counter()
                if event.kind == "step" and not (preview and now - last >= PREVIEW_INTERVAL_S):
                    continue  # a latent model's step: its decode costs more than the step itself
                last = now
                self._draw(event)
        except (ValueError, RuntimeError) as err:  # settings the model refuses: one line, the blocks so far kept
            self.error = str(err).splitlines()[0]
        finally:
            events.close()  # restores the model's training flag
        self.status = "stopped" if self.stopped and not self.finished else "error" if self.error else "done"
        if self.finished:
            self._score()
        elif self.stopped:
            self.fid_problem = f"stopped after {self.blocks} of {self.num_blocks} blocks: no FID of unfinished images."
        self._notify()
        return self

    def _draw(self, event: Event) -> None:
        self.images = frame(self.loaded.codec, event).float().cpu()  # (B, C, H, W); later blocks hatched
        if event.kind == "block":
            self.blocks = event.block + 1
        self.status = f"block {event.block + 1}/{event.num_blocks} " + (
            "finished" if event.kind == "block" else f"step {event.step}/{event.steps}"
        )
        self._notify()

    def _score(self) -> None:
        if self.reference is None:
            self.fid_problem = self.reference_problem or "no reference statistics for this data."
            return
        if self.settings.num_images < 2:
            self.fid_problem = "FID needs at least 2 images. Fix: generate 2 or more."
            return
        self.status = "scoring"
        self._notify()
        live = LiveFID(self.reference, device=self.loaded.device)  # its default bootstrap interval, beside the model
        live.update(self.images)
        self.fid = live.compute()
        self.status = "done"

    def _notify(self) -> None:
        if self.on_update is not None:
            self.on_update(self)


def meter_text(run: SampleRun) -> str:
    """The compute meter: what the run spent per image so far."""
    c = run.cost
    if c is None:
        return "compute: nothing run yet"
    guided = " (x2: guidance)" if c.guidance > 1 else ""
    return (
        f"compute per image: {c.block_layer_evals:,.0f} block-layer evaluations as run{guided}, "
        f"{c.paper_block_layer_evals:,.0f} in the paper's count T[(N-D)+D*S]; {c.seconds:.2f} s for "
        f"{run.settings.num_images} image(s), {run.blocks}/{run.num_blocks} blocks"
    )


def fid_text(run: SampleRun) -> str:
    """The live FID line: the score with its interval and n (few images bias FID upward), or why there is none."""
    f = run.fid
    if f is None:
        return f"FID: {run.fid_problem or 'after the last block'}"
    ci = f" (90% interval {f.fid_ci[0]:.1f}-{f.fid_ci[1]:.1f})" if f.fid_ci else ""
    return (
        f"FID {f.fid:.1f}{ci}, n={f.n}, {f.extractor.rsplit('-', 1)[0]} features against {f.reference}: few "
        "images bias FID upward, so compare it only with FIDs of the same n"
    )
