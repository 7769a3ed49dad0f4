"""The app's inputs: `*_ui()` functions draw widgets and return plain settings; `validate` re-checks them.

Widget limits only shape the browser's controls; a client can send any value over the websocket, so every value
that reaches the sampler passes `validate` on the server first.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from workbench.config import samplers_for

from .catalog import MAX_PATH, Entry, Family

MAX_IMAGES = 64        # images per batch
MAX_STEPS = 200        # S: denoising steps per block
MAX_SEED = 2**31 - 1
MAX_CFG = 10.0         # classifier-free guidance scale
MAX_FID_SAMPLES = 2048  # images one run may accumulate for its FID
MORE_SAMPLES = 64      # images one "more samples" click adds
SIDES = ("A", "B")
DEFAULT_IMAGES = 16


def default_steps(config) -> int:
    """The steps slider's start: the checkpoint's own S, at most 16. On the zoo's FID curves S=16 is within a few
    percent of S=32, and the first block shows twice as fast."""
    return min(config.sample.steps, 16)


@dataclass(frozen=True)
class Side:
    """One column of settings: which checkpoint (a depth position of the family) and how to sample it."""
    D: int
    steps: int
    sampler: str
    label: int | None    # class of every image (None: cycle through the classes; unconditional models: None)
    cfg_scale: float     # classifier-free guidance (1 = none)


@dataclass(frozen=True)
class Request:
    sides: tuple[Side, ...]  # one, or two in compare mode
    num_images: int
    seed: int                # batch b of a run uses seed + b: both sides see the same noise
    preview: bool            # draw predicted x0 during the denoising steps, not only finished blocks


def validate(request: Request, family: Family) -> list[Entry]:
    """The checkpoint of each side, or ValueError naming the first input out of bounds and the fix."""

    def need(ok: bool, what: str, fix: str) -> None:
        if not ok:
            raise ValueError(f"{what}. Fix: {fix}.")

    need(isinstance(request.num_images, int) and 1 <= request.num_images <= MAX_IMAGES,
         f"images: {request.num_images!r} is outside 1..{MAX_IMAGES}", f"ask for 1 to {MAX_IMAGES} images")
    need(isinstance(request.seed, int) and 0 <= request.seed <= MAX_SEED,
         f"seed: {request.seed!r} is outside 0..{MAX_SEED}", "use a non-negative 31-bit integer")
    need(1 <= len(request.sides) <= len(SIDES), f"{len(request.sides)} settings", "compare at most two settings")
    entries = []
    for name, s in zip(SIDES, request.sides):
        entry = family.at(s.D) if isinstance(s.D, int) else None
        need(entry is not None, f"{name}: depth D={s.D!r} has no trained checkpoint in {family.label}",
             f"pick a trained position ({', '.join(f'D={e.D}' for e in family.entries)})")
        need(isinstance(s.steps, int) and 1 <= s.steps <= MAX_STEPS,
             f"{name}: steps {s.steps!r} outside 1..{MAX_STEPS}", f"use 1 to {MAX_STEPS} denoising steps")
        fits = samplers_for(entry.config.diffusion.prediction)
        need(s.sampler in fits, f"{name}: sampler {s.sampler!r} does not fit this model", f"use one of {', '.join(fits)}")
        classes = entry.config.model.num_classes
        need(s.label is None or (isinstance(s.label, int) and 0 <= s.label < classes),
             f"{name}: class {s.label!r} is not one of the model's {classes} classes", "pick a listed class")
        need(isinstance(s.cfg_scale, (int, float)) and 0 <= s.cfg_scale <= MAX_CFG and (classes or s.cfg_scale == 1),
             f"{name}: guidance scale {s.cfg_scale!r} not allowed", f"use 0..{MAX_CFG} on class-conditional models")
        entries.append(entry)
    return entries


def family_ui(families: list[Family], default: Entry | None) -> Family:
    """Sidebar: the family to sample from (a zoo family or a folder of the user's)."""
    labels = [f.label for f in families]
    index = next((i for i, f in enumerate(families) if default in f.entries), 0)
    label = st.sidebar.selectbox("Model family", labels, index=index, key="family",
                                 help="Checkpoints that differ only in the diffusion depth D form a family.")
    return families[labels.index(label) if label in labels else index]


def path_ui() -> str:
    """Sidebar: an optional checkpoint path typed by the user (checked by catalog.check_path)."""
    with st.sidebar.expander("Open a checkpoint by path"):
        return st.text_input("Checkpoint file or run folder", key="path", max_chars=MAX_PATH,
                             help="Only inside the shipped zoo or the folders given with --checkpoints / "
                                  "$WORKBENCH_CHECKPOINTS.")


def widget_key(side: str, family: Family) -> str:
    """Prefix of a side's widget keys; options differ between families, so each family has its own widgets."""
    return f"{side}@{family.label}"


def _side_ui(name: str, family: Family, default_D: int, wide: bool) -> Side:
    """Depth, steps, sampler (and class, guidance): in a row when `wide`, else stacked."""
    positions = family.positions()
    key = widget_key(name, family)
    cfg = family.entries[0].config
    conditional = cfg.model.num_classes > 0
    cells = st.columns([3, 3, 2] + [2, 2] * conditional, gap="medium") if wide else [st.container()] * 5
    D = cells[0].select_slider("AR ↔ diffusion depth", positions, value=default_D, key=f"{key}.D",
                               format_func=family.position_label,
                               help="The last D of the N layers denoise at every step; the first N-D run once per "
                                    "block (autoregressive).")
    steps = cells[1].slider("Denoising steps S per block", 1, MAX_STEPS, default_steps(cfg), key=f"{key}.S")
    fits = list(samplers_for(cfg.diffusion.prediction))  # flow models take flow schedulers only
    sampler = cells[2].selectbox("Sampler", fits, index=fits.index(cfg.sample.sampler), key=f"{key}.sampler")
    label, scale = None, 1.0
    if conditional:
        label = cells[3].selectbox("Class", [None, *range(cfg.model.num_classes)], key=f"{key}.class",
                                   format_func=lambda c: "all classes in turn" if c is None else f"class {c}")
        scale = cells[4].slider("Guidance scale", 0.0, MAX_CFG, 1.0, 0.5, key=f"{key}.cfg", help="1 = no guidance")
    return Side(D, steps, sampler, label, scale)


def settings_ui(family: Family, default: Entry | None, compare: bool) -> tuple[Request, bool]:
    """The generation form: settings of one side (two in compare mode), images, seed; and whether it was submitted.

    A form, so that moving a slider does not rerun the script and interrupt a generation."""
    trained = [e.D for e in family.entries]
    first = default.D if default in family.entries else trained[len(trained) // 2]
    defaults = [first, trained[0] if trained[0] != first else trained[-1]]
    with st.form("settings", border=True):
        columns = st.columns(2 if compare else 1, gap="large")
        sides = []
        for name, column, D in zip(SIDES, columns, defaults):
            with column:
                if compare:
                    st.markdown(f"**Setting {name}**")
                sides.append(_side_ui(name, family, D, wide=not compare))
        left, mid, right = st.columns([2, 2, 3], vertical_alignment="bottom")
        num_images = left.slider("Images", 1, MAX_IMAGES, DEFAULT_IMAGES, key="images")
        seed = mid.number_input("Seed", 0, MAX_SEED, 0, key="seed")
        preview = right.checkbox("Show the denoising steps (predicted x0)", value=True, key="preview")
        submitted = st.form_submit_button("Generate", type="primary", use_container_width=True)
    return Request(tuple(sides), int(num_images), int(seed), bool(preview)), submitted
