"""Which checkpoint, depth and settings a browser of checkpoints opens on: the policy, apart from any UI.

- default_family: among the families of the fewest layers N (they draw fastest: a first Generate should show
  a picture within a second), the richest one (most trained depths; on a tie an elastic file, whose slider also
  reaches the held-out depths): in the zoo the elastic Fashion-MNIST model at N=4, not the depth family's N=8 and
  N=12 models, which hold more depths but take longer and trained a quarter of its compute.
- showcase_family: the best family of the largest images, by its shipped FID at the opening steps: in the zoo
  `context-people256/cond-ctx-T16` (Inception FID 76.3 against 136.7 for the 256 px emoji model).
- quick_picks: one-click captions for both.
- opening_depth: an elastic family opens at the cheapest trained D whose shipped FID is inside the best D's
  interval; a family of dedicated files at its middle trained D.
- default_steps / default_images: the sliders' starts.

A checkpoint's own sampling settings (sampler, guidance, flow shift, the weights its export holds) travel in its
config, so opening a family opens them too.
"""

from __future__ import annotations

from pathlib import Path

from ..core.config import Config
from .groups import Entry, Family, slider_positions
from .reports import CurvePoint

DEFAULT_IMAGES = 16  # the images slider's start for small images (a 4x4 grid)
DEFAULT_LARGE_IMAGES = 4  # ... for images of LARGE_IMAGE px or more, shown at their true size
LARGE_IMAGE = 128
MAX_OPENING_STEPS = 16


def default_images(config: Config) -> int:
    """The images slider's start: a 4x4 grid of small images; four large ones, which a page shows at their true
    size (a row of four 256 px images) and whose first block comes four times sooner."""
    return DEFAULT_LARGE_IMAGES if config.data.image_size >= LARGE_IMAGE else DEFAULT_IMAGES


def default_steps(config: Config) -> int:
    """The steps slider's start: the checkpoint's own S, at most 16. On the zoo's FID curves S=16 is within a few
    percent of S=32, and the first block shows twice as fast."""
    return min(config.sample.steps, MAX_OPENING_STEPS)


def richness(family: Family) -> tuple[int, bool]:
    """How much a family's slider has to show: its trained depths, then (on a tie, e.g. the zoo's elastic model
    beside the four dedicated models it was trained against) an elastic file, whose slider also reaches the
    held-out depths. max() keeps the first family found on a full tie."""
    return slider_positions(family), family.elastic is not None


def shipped_fid(family: Family) -> float:
    """The family's shipped FID at its opening steps (the first entry's report; inf when it ships none)."""
    e = family.entries[0]
    point = next((p for p in e.report.curve if p.steps == default_steps(e.config)), None) if e.report else None
    return point.fid if point is not None and point.fid == point.fid else float("inf")


def default_family(fams: list[Family]) -> Family:
    fewest = min(f.N for f in fams)
    return max((f for f in fams if f.N == fewest), key=richness)


def showcase_family(fams: list[Family]) -> Family:
    """The family of the largest images with the lowest shipped FID at its opening steps (richness breaks ties,
    a family without a report comes last). The FIDs may use different references (the people subset against all
    emoji): the pick says which model draws best at a glance, not a paired comparison."""
    size = max(f.entries[0].config.data.image_size for f in fams)
    largest = [f for f in fams if f.entries[0].config.data.image_size == size]
    return min(largest, key=lambda f: (shipped_fid(f), [-x for x in richness(f)]))


def pick_caption(family: Family) -> str:
    d = family.entries[0].config.data
    return f"{d.dataset} {d.image_size}px" + (", every D" if family.elastic else "")


def quick_picks(fams: list[Family]) -> dict[str, str]:
    """{button caption: family label} for one-click picks: the default family and the showcase family, when they
    differ; captions name the data and, for an elastic family, that it holds every D."""
    if not fams:
        return {}
    picks: dict[str, str] = {}
    for f in (default_family(fams), showcase_family(fams)):
        caption = pick_caption(f)
        if f.label not in picks.values():
            picks[caption if caption not in picks else f.label] = f.label
    return picks if len(picks) > 1 else {}


def default_entry(fams: list[Family], opened: Path | None = None) -> Entry | None:
    """The entry at `opened` (the operator's --checkpoint), else the middle trained depth of the default family."""
    if opened is not None or not fams:
        return next((e for f in fams for e in f.entries if e.path == opened), None)
    richest = default_family(fams)
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
    indistinguishable from the best one's (inside the best D's bootstrap interval), so that a page opens on what
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
