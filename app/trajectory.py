"""A run's denoising trajectory, kept for the scrubber: block k's predicted x0 and x_t after the recorded steps of
every block, as latents, decoded only when the user scrubs to a step.

The recorder is called on the work queue's worker with every event of the run, the steps the preview throttle
drops included, and costs a copy of one block per recorded step (no decode: a VAE decode costs more than a step).
It never holds more than its byte budget, fixed before the run: the finished latents (float32, exact), one decoded
frame (8-bit pixels: the one the page shows) and, in half precision, block k's x0 and x_t at every step, or at every
r-th step counting back from each block's last (plus its first) where every step would not fit. A frame at
(k, step) is the finished blocks before k, block k at that step, and the hatch over the blocks after it: what the
page previewed during the run (workbench.sampling.sampler.frame), at any step.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import torch

from workbench.core.blocks import block_index_map, from_blocks, to_blocks
from workbench.core.config import Config
from workbench.data.codecs import Codec
from workbench.data.images import to_uint8
from workbench.sampling.sampler import Event, placeholder

MODES = {"x0": "predicted x0", "x_t": "noisy x_t"}
STORED = torch.float16  # the steps' latents: 2 bytes a value
_SERIALS = itertools.count()


def kept_steps(S: int, stride: int) -> tuple[int, ...]:
    """The steps of an S-step block recorded at `stride`: every stride-th counting back from S, and step 1."""
    return tuple(sorted({1, *range(S, 0, -stride)}))


def choose_stride(steps: tuple[int, ...], step_bytes: int, budget: int) -> int | None:
    """The smallest stride whose recorded steps of blocks of `steps` fit `budget` bytes (None: not even a block's
    first and last step fit)."""
    for r in range(1, max(steps) + 1):
        kept = sum(math.ceil(S / r) + ((S - 1) % r != 0) for S in steps)  # len(kept_steps(S, r)) summed
        if kept * step_bytes <= budget:
            return r
    return None


def as_images(pixels: np.ndarray) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) in [-1, 1] that to_uint8 maps back to the same pixels."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1


class Trajectory:
    """One run's recorded steps (see the module docstring); call it with every event of the run."""

    def __init__(self, config: Config, num_images: int, steps: tuple[int, ...], budget: int):
        m, d = config.model, config.data
        self.mcfg, self.steps, self.budget = m, tuple(steps), budget  # steps: S_k of every block
        self.serial = next(_SERIALS)  # tells this run's scrubber widgets from an earlier run's
        latent = num_images * m.latent_channels * m.latent_size**2
        fixed = latent * 4 + num_images * d.channels * d.image_size**2  # the finished latents, one frame's pixels
        self.step_bytes = 2 * latent // m.num_blocks * STORED.itemsize  # x0 and x_t of one block
        self.stride = choose_stride(self.steps, self.step_bytes, budget - fixed)
        self.kept = {k: kept_steps(S, self.stride) for k, S in enumerate(self.steps)} if self.stride else {}
        self.recorded: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (k, step) -> x0, x_t
        self.final: torch.Tensor | None = None  # (B, C, h, w) the finished latents
        self.shown: tuple[tuple[int, int, str], np.ndarray] | None = None  # the frame drawn last, as pixels

    @property
    def nbytes(self) -> int:
        """Bytes held: the recorded steps, the finished latents and the frame drawn last (at most the budget)."""
        held = sum(x.nbytes + t.nbytes for x, t in self.recorded.values())
        return held + sum(x.nbytes for x in (self.final, self.shown and self.shown[1]) if x is not None)

    @property
    def complete(self) -> bool:
        """Whether the run finished and every kept step of every block is recorded."""
        return self.final is not None and all((k, i) in self.recorded for k, s in self.kept.items() for i in s)

    def __call__(self, event: Event) -> None:
        if not self.stride:
            return
        if event.kind == "block":
            if event.done:
                self.final = event.x_t.to("cpu", torch.float32)
            return
        if event.step in self.kept.get(event.block, ()):
            k = event.block
            self.recorded[(k, event.step)] = tuple(
                to_blocks(x, self.mcfg)[:, k].to("cpu", STORED).clone() for x in (event.x0, event.x_t)
            )

    def latents(self, k: int, step: int, mode: str) -> torch.Tensor:
        """(B, C, h, w) latents of the frame at (block k, step): blocks before k finished, block k's x0 or x_t after
        that step (x_t after its last step: the finished block itself), zeros after k."""
        view = to_blocks(self.final, self.mcfg).clone()  # (B, T, Lb, Cpp)
        x0, x_t = self.recorded[(k, step)]
        if not (mode == "x_t" and step == self.steps[k]):
            view[:, k] = (x0 if mode == "x0" else x_t).float()
        view[:, k + 1 :] = 0
        return from_blocks(view, self.mcfg)

    def frame(self, codec: Codec, k: int, step: int, mode: str, device: torch.device | str = "cpu") -> np.ndarray:
        """(B, H, W, C) 8-bit pixels of the frame at (block k, step) in `mode` ("x0" or "x_t"), decoded now; the
        blocks after k are hatched as while the run drew (kept: the same frame asked again is not decoded again)."""
        where = (k, step, mode)
        if self.shown is not None and self.shown[0] == where:
            return self.shown[1]
        with torch.no_grad():
            images = codec.decode(self.latents(k, step, mode).to(device)).float().cpu()
        f = codec.downsample
        later = (block_index_map(self.mcfg) > k).repeat_interleave(f, 0).repeat_interleave(f, 1)  # (H, W)
        pixels = to_uint8(torch.where(later, placeholder(*later.shape), images))
        self.shown = (where, pixels)
        return pixels


def recording(record: Callable[[Event], None], keep: Callable[[Event], bool]) -> Callable[[Event], bool]:
    """The work queue's `keep` filter that first shows `record` every event (on the worker: the steps `keep` drops
    too), so a run's trajectory is recorded without sending its steps to the page."""

    def kept(event: Event) -> bool:
        record(event)
        return keep(event)

    return kept
