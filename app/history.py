"""A page's history of runs, and its settings in the URL.

History: every finished run of the page as a thumbnail, its title and FID, and the widget values that restore its
settings with one click. A page keeps at most HISTORY_RUNS runs and HISTORY_BYTES of them (thumbnail, images as
8-bit pixels, the JSON record); older runs are dropped first, so a page's history never holds more than the cap
whatever its users do. The current runs' denoising trajectories (the scrubber's recorded steps) have their own
cap, TRAJECTORY_BYTES, so a page never holds more than PAGE_BYTES of results; history entries keep no trajectory.

URL: the page's checkpoint (by member name), depth, steps, sampler, seed and images (and EMA or trained weights
where the file holds both) as query parameters, written after each Generate and read when a page opens, so that a
link restores the settings. A parameter that does not fit (unknown model, a value out of bounds) is ignored with a
one-line note naming it and the fix.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from workbench.core.config import samplers_for
from workbench.data.images import to_uint8
from workbench.research.groups import Family
from workbench.research.picks import default_images

from .panels import grid_picture
from .weights import CHOICES, both

HISTORY_RUNS = 12  # runs a page keeps
HISTORY_BYTES = 16 << 20  # bytes a page's history may hold (images, thumbnails, records): 16 MiB
# bytes the denoising trajectories of a page's current runs may hold (app/trajectory.py; the sides of compare mode
# share it): with the history, a page keeps at most PAGE_BYTES of results
TRAJECTORY_BYTES = 16 << 20
PAGE_BYTES = HISTORY_BYTES + TRAJECTORY_BYTES
THUMBNAIL = 160  # pixels: the longer side of a history thumbnail
QUERY_KEYS = ("model", "D", "S", "sampler", "seed", "images", "source")


@dataclass
class Past:
    """One finished run, kept compactly: what the gallery shows and what restores or downloads it."""

    title: str
    fid: str  # "FID@16 52.1" or why none
    thumbnail: bytes  # PNG
    pixels: np.ndarray  # (B, H, W, C) uint8: the images at true resolution
    record: bytes  # the run's JSON record (exports.record_json)
    restore: dict = field(default_factory=dict)  # widget key -> value

    @property
    def nbytes(self) -> int:
        return len(self.thumbnail) + self.pixels.nbytes + len(self.record) + 64 * len(self.restore)


def thumbnail(images) -> bytes:
    """(B, C, H, W) in [-1, 1] -> a PNG grid at most THUMBNAIL pixels on its longer side."""
    picture = grid_picture(images)
    picture.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def past(title: str, fid: str, images, record: bytes, restore: dict) -> Past:
    return Past(title, fid, thumbnail(images), to_uint8(images), record, restore)


def remember(history: list[Past], item: Past, runs: int = HISTORY_RUNS, limit: int = HISTORY_BYTES) -> list[Past]:
    """`history` with `item` first, the oldest dropped until at most `runs` runs and `limit` bytes remain (an item
    larger than the whole cap is not kept)."""
    out = [item, *history][:runs]
    while out and sum(p.nbytes for p in out) > limit:
        out.pop()
    return out


def widget_values(
    family: Family, key: str, D: int, steps: int, sampler: str, seed: int, images: int, weights: str = ""
) -> dict:
    """The session-state values of the settings form that select these settings (see controls.settings_ui);
    `weights` ("ema" or "raw", "" for a file of one set) only where the family's files hold both."""
    start = default_images(family.entries[0].config)
    values = {
        "family": family.label,
        "compare": False,
        f"{key}.D": D,
        f"{key}.S": steps,
        f"{key}.sampler": sampler,
        "seed": seed,
        f"images-{start}": images,
    }
    if weights:
        values[f"{key}.weights"] = weights
    return values


def query(
    model: str, D: int, steps: int, sampler: str, seed: int, images: int, source: str = "zoo", weights: str = ""
) -> dict[str, str]:
    """The URL's parameters; `source` ("zoo" or "user") tells a user folder's copy from a zoo member of one name;
    `weights` ("ema" or "raw") is there only where the file holds both sets."""
    params = dict(zip(QUERY_KEYS, map(str, (model, D, steps, sampler, seed, images, source))))
    return {**params, "weights": weights} if weights else params


def _position(D: int | None, family: Family) -> int | None:
    """D when the family has a checkpoint that samples at it (an empty position is not restored)."""
    return D if D is not None and family.at(D) is not None else None


def _int(text: str, low: int, high: int) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 and low <= int(text) <= high else None


@dataclass(frozen=True)
class Bounds:
    steps: int
    seed: int
    images: int


def from_query(params: dict[str, str], families: list[Family], bounds: Bounds, key_of) -> tuple[dict, list[str]]:
    """(widget values, problems) for a page opened with query `params`; `key_of(family)` is the widget-key prefix
    of side A. Only what fits is set; each problem names the parameter and the fix."""
    values: dict = {}
    problems: list[str] = []
    name = params.get("model")
    if not name:
        return values, (
            [] if not params else ["URL: no `model` parameter, settings not restored. Fix: copy the link again."]
        )
    named = [f for f in families for e in f.entries if e.name == name]
    family = next((f for f in named if f.entries[0].source == params.get("source", "zoo")), named[0] if named else None)
    if family is None:
        return values, [f"URL: model {name[:80]!r} is not in this app's folders. Fix: open it by path in the sidebar."]
    key, cfg = key_of(family), family.entries[0].config
    values["family"] = family.label
    checks = {
        "D": (f"{key}.D", lambda t: _position(_int(t, 1, family.N), family)),
        "S": (f"{key}.S", lambda t: _int(t, 1, bounds.steps)),
        "sampler": (f"{key}.sampler", lambda t: t if t in samplers_for(cfg.diffusion.prediction) else None),
        "seed": ("seed", lambda t: _int(t, 0, bounds.seed)),
        "images": (f"images-{default_images(cfg)}", lambda t: _int(t, 1, bounds.images)),
        "weights": (f"{key}.weights", lambda t: t if t in CHOICES and any(map(both, family.entries)) else None),
    }
    for param, (widget, parse) in checks.items():
        if param not in params:
            continue
        value = parse(params[param])
        if value is None:
            problems.append(f"URL: {param}={params[param][:40]!r} does not fit {name}. Fix: pick it on the page.")
        else:
            values[widget] = value
    return values, problems
