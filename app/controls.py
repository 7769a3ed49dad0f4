"""The app's inputs: `*_ui()` functions draw widgets and return plain settings; `resolve_sides` re-checks them.

Widget limits only shape the browser's controls; a client can send any value over the websocket, so every value
that reaches the sampler passes `resolve_sides` on the server first.

An elastic checkpoint adds controls of its own: a depth anywhere in 1..N (held-out depths sample with
allow_untrained_depth and say so), iso-compute (S moves with D so that a block costs what the reference
(D_ref, S) costs), and per-block schedules D_k and S_k typed as "4,3,2,1". `side_plan` turns them into the D_k and
S_k the sampler runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from workbench.core.compute import iso_cost, iso_steps, iso_table
from workbench.core.config import Config, samplers_for
from workbench.core.sample_config import X0_CLIPS, objective_family
from workbench.data.labels import class_names
from workbench.research.groups import Entry, Family
from workbench.research.picks import default_images, default_steps, opening_depth, quick_picks
from workbench.sampling.request import check_request, sample_request

from . import weights as weight_choice
from .paths import MAX_PATH

MAX_IMAGES = 64  # images per batch
MAX_STEPS = 200  # S: denoising steps per block
MAX_SEED = 2**31 - 1
MAX_CFG = 10.0  # classifier-free guidance scale
MAX_FID_SAMPLES = 2048  # images one run may accumulate for its FID
MORE_SAMPLES = 64  # images one "more samples" click adds
SIDES = ("A", "B")
MAX_FLOW_SHIFT = 10.0
MAX_SCHEDULE_CHARS = 400  # characters of a typed schedule


@dataclass(frozen=True)
class Tuning:
    """The sampler's finer settings, as the CLI's sample command takes them (each default: the checkpoint's own)."""

    x0_clip: str = ""  # "none", "clip", "dynamic"; "" = the checkpoint's
    flow_shift: float = 0.0  # flow models: the time shift; 0 = the checkpoint's
    depth_per_step: str = ""  # elastic only: D_i over each block's steps, noisiest first, as typed ("4,4,2,1")
    weights: str = ""  # "ema" or "raw" (the trained weights) where the file holds both; "" = the file's only set

    def sample_kwargs(self) -> dict:
        """The sample-request fields these settings replace (none when every one is the checkpoint's)."""
        out: dict = {}
        if self.weights:
            out["use_ema"] = self.weights == weight_choice.EMA
        if self.x0_clip:
            out["x0_clip"] = self.x0_clip
        if self.flow_shift:
            out["flow_shift"] = float(self.flow_shift)
        if self.depth_per_step:
            out["depth_per_step"] = tuple(int(x) for x in self.depth_per_step.replace(",", " ").split())
        return out


@dataclass(frozen=True)
class Side:
    """One column of settings: which checkpoint (a depth position of the family) and how to sample it."""

    D: int
    steps: int
    sampler: str
    label: int | None  # class of every image (None: cycle through the classes; unconditional models: None)
    cfg_scale: float  # classifier-free guidance (1 = none)
    depth_schedule: str = ""  # elastic only: D_k, one per block, as typed ("4,3,2,1"); "" = D for every block
    steps_schedule: str = ""  # elastic only: S_k, one per block, as typed; "" = S for every block
    iso_depth: int = 0  # elastic only: iso-compute's reference D_ref (0 = off); `steps` is S at D_ref and
    #                           every block at depth D runs S(D) steps, so it costs C = (N - D_ref) + D_ref * S
    tuning: Tuning = Tuning()


@dataclass(frozen=True)
class SidePlan:
    """What a side samples: D_k and S_k for every block, and what the page says about them."""

    depths: tuple[int, ...]  # D_k
    steps: tuple[int, ...]  # S_k
    trained: tuple[int, ...]  # the depths the checkpoint was trained at
    held_out: tuple[int, ...]  # the D_k outside them: sampled with allow_untrained_depth
    iso_cost: int | None  # iso-compute: block-layer evaluations C of every block (None: off)
    elastic: bool

    def sample_kwargs(self) -> dict:
        """workbench.generate_events arguments beyond S: none for a dedicated checkpoint (its own D, as always)."""
        if not self.elastic:
            return {}
        return {
            "depth_schedule": self.depths,
            "steps_schedule": self.steps,
            "allow_untrained_depth": bool(self.held_out),
        }

    def notes(self, side: Side) -> list[str]:
        """Title parts beyond the side's D and S: the schedules, iso-compute, held-out depths."""
        out = []
        if len(set(self.depths)) > 1:
            out.append("D_k " + ",".join(map(str, self.depths)))
        if len(set(self.steps)) > 1 or self.steps[0] != side.steps:
            out.append("S_k " + ",".join(map(str, self.steps)))
        if self.iso_cost is not None:
            out.append(f"iso-compute C={self.iso_cost} (D_ref={side.iso_depth}, S={side.steps})")
        if self.held_out:
            out.append(f"held out D={','.join(map(str, self.held_out))}: allow_untrained_depth")
        if side.tuning.weights == weight_choice.TRAINED:
            out.append(weight_choice.NAMES[weight_choice.TRAINED])
        return out


def _need(ok: bool, what: str, fix: str) -> None:
    if not ok:
        raise ValueError(f"{what}. Fix: {fix}.")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_schedule(value, what: str, T: int, low: int, high: int) -> tuple[int, ...]:
    """A typed per-block schedule ("4,3,2,1" or "4 3 2 1"; "" = none) as T integers in low..high."""
    if value == "":
        return ()
    example = ",".join(str(min(high, low + k)) for k in range(T))
    _need(
        isinstance(value, str) and len(value) <= MAX_SCHEDULE_CHARS,
        f"{what}: not a short text",
        f"type {T} integers separated by commas, e.g. {example}",
    )
    items = value.replace(",", " ").split()
    shown = value if len(value) <= 40 else value[:37] + "..."
    _need(
        all(x.isascii() and x.isdigit() and len(x) <= 4 for x in items),
        f"{what}: {shown!r} is not a list of integers",
        f"type {T} integers separated by commas, e.g. {example}",
    )
    values = tuple(int(x) for x in items)
    _need(
        len(values) == T,
        f"{what}: {len(values)} values for T={T} blocks",
        f"give one per block ({T} values), or leave it empty",
    )
    _need(
        all(low <= v <= high for v in values),
        f"{what}: {shown!r} has values outside {low}..{high}",
        f"use integers in {low}..{high}",
    )
    return values


def side_plan(side: Side, config: Config) -> SidePlan:
    """D_k and S_k of a side on a checkpoint of `config` (its D and S for every block unless an elastic checkpoint's
    schedules or iso-compute say otherwise), or ValueError naming the bad input and the fix."""
    m = config.model
    N, T, elastic = m.depth, m.num_blocks, bool(m.elastic_depths)
    _need(
        elastic or not (side.depth_schedule or side.steps_schedule or side.iso_depth),
        "schedules and iso-compute need an elastic checkpoint (this family has one file per D)",
        "clear D_k, S_k and iso-compute, or open a checkpoint trained with model.elastic_depths",
    )
    depths = parse_schedule(side.depth_schedule, "D_k", T, 1, N) or (side.D,) * T
    _need(
        _is_int(side.iso_depth) and 0 <= side.iso_depth <= N,
        f"iso-compute: reference D_ref={side.iso_depth!r} outside 1..N={N}",
        f"pick a reference depth in 1..{N}",
    )
    _need(
        not (side.iso_depth and side.steps_schedule),
        "iso-compute and S_k are both set",
        "use one of them: iso-compute chooses S_k from each block's D_k",
    )
    cost = None
    if side.iso_depth:
        cost = iso_cost(N, side.iso_depth, side.steps)
        steps = tuple(iso_steps(N, d, cost) for d in depths)
        worst = max(zip(steps, depths))
        _need(
            worst[0] <= MAX_STEPS,
            f"iso-compute: C={cost} needs S={worst[0]} steps at D={worst[1]}, over {MAX_STEPS}",
            "lower S, or pick a smaller reference D_ref",
        )
    else:
        steps = parse_schedule(side.steps_schedule, "S_k", T, 1, MAX_STEPS) or (side.steps,) * T
    per_step = tuple(int(x) for x in side.tuning.depth_per_step.replace(",", " ").split() if x.isdigit())
    held = tuple(sorted({d for d in depths + per_step if d not in m.depths}))
    return SidePlan(depths, steps, tuple(m.depths), held, cost, elastic)


@dataclass(frozen=True)
class Request:
    sides: tuple[Side, ...]  # one, or two in compare mode
    num_images: int
    seed: int  # batch b of a run uses seed + b: both sides see the same noise
    preview: bool  # draw predicted x0 during the denoising steps, not only finished blocks


def check_tuning(side: Side, config: Config) -> None:
    """The side's plan and finer settings through the sampler's own checks (those the CLI's sample command runs),
    or ValueError naming the field and the fix."""
    plan = side_plan(side, config)
    t = side.tuning
    _need(t.x0_clip in ("", *X0_CLIPS), f"x0 clipping {t.x0_clip!r} is not one of {X0_CLIPS}", "pick a listed one")
    _need(
        isinstance(t.flow_shift, (int, float)) and 0 <= t.flow_shift <= MAX_FLOW_SHIFT,
        f"flow shift {t.flow_shift!r} outside 0..{MAX_FLOW_SHIFT:g}",
        "use 0 (the checkpoint's) or a shift up to 10",
    )
    if t.depth_per_step:
        _need(plan.elastic, "per-step depths need an elastic checkpoint", "clear D_i")
        parse_schedule(t.depth_per_step, "D_i", len(t.depth_per_step.replace(",", " ").split()), 1, config.model.depth)
    request = sample_request(
        config,
        steps=side.steps,
        sampler=side.sampler,
        cfg_scale=side.cfg_scale,
        **plan.sample_kwargs(),
        **t.sample_kwargs(),
    )
    check_request(config.model, config, request)


def resolve_sides(request: Request, families: Family | list[Family]) -> list[Entry]:
    """The checkpoint of each side (side i from families[i]; one family serves every side), or ValueError naming
    the first input out of bounds and the fix."""
    families = [families] * len(SIDES) if isinstance(families, Family) else list(families)
    need = _need
    need(
        isinstance(request.num_images, int) and 1 <= request.num_images <= MAX_IMAGES,
        f"images: {request.num_images!r} is outside 1..{MAX_IMAGES}",
        f"ask for 1 to {MAX_IMAGES} images",
    )
    need(
        isinstance(request.seed, int) and 0 <= request.seed <= MAX_SEED,
        f"seed: {request.seed!r} is outside 0..{MAX_SEED}",
        "use a non-negative 31-bit integer",
    )
    need(1 <= len(request.sides) <= len(SIDES), f"{len(request.sides)} settings", "compare at most two settings")
    entries = []
    need(len(families) >= len(request.sides), f"{len(request.sides)} settings", "give a family for every side")
    for name, s, family in zip(SIDES, request.sides, families):
        entry = family.at(s.D) if _is_int(s.D) else None
        if family.elastic:
            need(
                entry is not None,
                f"{name}: depth D={s.D!r} is outside 1..N={family.N} of this elastic checkpoint",
                f"pick a depth in 1..{family.N}",
            )
        need(
            entry is not None,
            f"{name}: depth D={s.D!r} has no trained checkpoint in {family.label}",
            f"pick a trained position ({', '.join(f'D={e.D}' for e in family.entries)})",
        )
        need(
            isinstance(s.steps, int) and 1 <= s.steps <= MAX_STEPS,
            f"{name}: steps {s.steps!r} outside 1..{MAX_STEPS}",
            f"use 1 to {MAX_STEPS} denoising steps",
        )
        fits = samplers_for(entry.config.diffusion.prediction)
        need(
            s.sampler in fits, f"{name}: sampler {s.sampler!r} does not fit this model", f"use one of {', '.join(fits)}"
        )
        classes = entry.config.model.num_classes
        need(
            s.label is None or (isinstance(s.label, int) and 0 <= s.label < classes),
            f"{name}: class {s.label!r} is not one of the model's {classes} classes",
            "pick a listed class",
        )
        need(
            isinstance(s.cfg_scale, (int, float)) and 0 <= s.cfg_scale <= MAX_CFG and (classes or s.cfg_scale == 1),
            f"{name}: guidance scale {s.cfg_scale!r} not allowed",
            f"use 0..{MAX_CFG} on class-conditional models",
        )
        try:
            check_tuning(s, entry.config)
            weight_choice.check_choice(s.tuning.weights, entry)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        entries.append(entry)
    return entries


def family_ui(families: list[Family], default: Entry | None) -> Family:
    """Sidebar: the family to sample from (a zoo family or a folder of the user's)."""
    labels = [f.label for f in families]
    index = next((i for i, f in enumerate(families) if default in f.entries), 0)
    picks = quick_picks(families)
    if picks:  # one click to the default family and to the largest images
        for col, (caption, label) in zip(st.sidebar.columns(len(picks)), picks.items()):
            col.button(
                caption,
                key=f"pick.{label}",
                on_click=_pick,
                args=(label,),
                use_container_width=True,
                type="primary" if st.session_state.get("family", labels[index]) == label else "secondary",
            )
    label = st.sidebar.selectbox(
        "Model family",
        labels,
        index=index,
        key="family",
        help="Checkpoints that differ only in the diffusion depth D form a family.",
    )
    return families[labels.index(label) if label in labels else index]


def _pick(label: str) -> None:
    st.session_state["family"] = label


def path_ui() -> str:
    """Sidebar: an optional checkpoint path typed by the user (checked by app.paths.check_path)."""
    with st.sidebar.expander("Open a checkpoint by path"):
        return st.text_input(
            "Checkpoint file or run folder",
            key="path",
            max_chars=MAX_PATH,
            help="Only inside the shipped zoo or the folders given with --checkpoints / $WORKBENCH_CHECKPOINTS.",
        )


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
    D = cells[0].select_slider(
        "AR ↔ diffusion depth",
        positions,
        value=default_D,
        key=f"{key}.D",
        format_func=family.position_label,
        help="The last D of the N layers denoise at every step; the first N-D run once per block (autoregressive).",
    )
    steps = cells[1].slider("Denoising steps S per block", 1, MAX_STEPS, default_steps(cfg), key=f"{key}.S")
    fits = list(samplers_for(cfg.diffusion.prediction))  # flow models take flow schedulers only
    sampler = cells[2].selectbox("Sampler", fits, index=fits.index(cfg.sample.sampler), key=f"{key}.sampler")
    label, scale = None, 1.0
    if conditional:
        counts, names = cfg.sample.class_counts, class_names(cfg.data)
        if names is not None and len(names) != cfg.model.num_classes:
            names = None  # a model trained with other labels than its data section names
        classes = [c for c in range(cfg.model.num_classes) if not counts or counts[c] > 0]  # never an empty class
        label = cells[3].selectbox(
            "Class",
            [None, *classes],
            key=f"{key}.class",
            format_func=lambda c: ("classes as often as in the training data" if counts else "all classes in turn")
            if c is None
            else f"class {c}" + (f" · {names[c]}" if names else ""),
        )
        scale = cells[4].slider(
            "Guidance scale",
            0.0,
            MAX_CFG,
            float(min(cfg.sample.cfg_scale, MAX_CFG)),
            0.5,
            key=f"{key}.cfg",
            help="1 = no guidance; the default is the checkpoint's own",
        )
    if not family.elastic:
        return Side(D, steps, sampler, label, scale, tuning=_tuning_ui(family, key))
    return Side(D, steps, sampler, label, scale, *_elastic_ui(family, key, wide), tuning=_tuning_ui(family, key))


def _tuning_ui(family: Family, key: str) -> Tuning:
    """The sampler's finer settings, folded away: EMA or trained weights, x0 clipping, a flow model's time shift,
    per-step depths."""
    cfg = family.entries[0].config
    with st.expander("Sampling details: weights, x0 clipping, flow shift, per-step depths"):
        chosen = _weights_ui(family, key)
        clip = st.selectbox(
            "x0 clipping",
            ["", *X0_CLIPS],
            key=f"{key}.clip",
            format_func=lambda c: f"the checkpoint's ({cfg.sample.x0_clip})" if c == "" else c,
            help="The scheduler's treatment of the predicted x0 (as `sample --x0-clip`).",
        )
        shift = 0.0
        if objective_family(cfg.diffusion.prediction) == "flow":
            shift = st.number_input(
                "Flow shift",
                0.0,
                MAX_FLOW_SHIFT,
                0.0,
                0.5,
                key=f"{key}.shift",
                help=f"0 = the checkpoint's ({cfg.sample.flow_shift:g}). Above 1 spends more steps at high noise "
                "(as `sample --flow-shift`).",
            )
        per_step = ""
        if family.elastic:
            per_step = st.text_input(
                "D_i: depths over each block's steps",
                key=f"{key}.Di",
                max_chars=MAX_SCHEDULE_CHARS,
                placeholder=f"e.g. {family.N},{family.N},1,1",
                help="Spread evenly over each block's steps, noisiest first (as `sample --depth-per-step`).",
            ).strip()
    return Tuning(clip, float(shift), per_step, chosen)


def _weights_ui(family: Family, key: str) -> str:
    """EMA or trained weights where the family's files hold both (starting at the shipped choice, see
    app.weights.shipped); else a disabled control showing the one set, and why. Returns "" for one set."""
    two = [e for e in family.entries if weight_choice.both(e)]
    options = list(weight_choice.CHOICES)
    if not two:
        held = sorted({weight_choice.weight_sets(e.path)[0] for e in family.entries})
        st.radio(
            "Weights",
            options,
            index=options.index(held[0]),
            key=f"{key}.weights_held",
            format_func=weight_choice.NAMES.get,
            horizontal=True,
            disabled=True,
        )
        what = " and ".join(weight_choice.NAMES[h] for h in held)
        files = "This file holds only its" if len(family.entries) == 1 else "These files hold only their"
        why = (
            "an export ships one set"
            if all(e.kind == "export" for e in family.entries)
            else "a run trained with train.ema_decay = 0 keeps no EMA"
        )
        st.caption(f"{files} {what} ({why}): there is nothing to choose.")
        return ""
    choice = st.radio(
        "Weights",
        options,
        index=options.index(weight_choice.shipped(two[0])),
        key=f"{key}.weights",
        format_func=weight_choice.NAMES.get,
        horizontal=True,
        help="The file holds the trained weights and their exponential moving average (EMA). The default is the "
        "checkpoint's shipped choice; trained weights are `sample --no-ema`.",
    )
    if len(two) < len(family.entries):
        st.caption(
            "Only D=" + ", ".join(str(e.D) for e in two) + " of this family hold both sets; the others hold one."
        )
    return choice


def _elastic_ui(family: Family, key: str, wide: bool) -> tuple[str, str, int]:
    """An elastic checkpoint's extra controls: (D_k as typed, S_k as typed, iso-compute's D_ref or 0)."""
    N, T = family.N, family.entries[0].config.model.num_blocks
    cells = st.columns([2, 2, 3, 3], gap="medium", vertical_alignment="bottom") if wide else [st.container()] * 4
    iso = cells[0].checkbox(
        "Iso-compute",
        key=f"{key}.iso",
        help="Move S with D so that every block costs what the reference (D_ref, S) costs: "
        "S(D) = (C − (N − D)) / D with C = (N − D_ref) + D_ref·S, rounded, at least 1.",
    )
    reference = cells[1].selectbox(
        "Reference D_ref",
        family.positions(),
        key=f"{key}.iso_D",
        index=family.positions().index(family.elastic.D),
        format_func=lambda d: f"D_ref={d}",
        help="The depth at which S is the steps set above (iso-compute only).",
    )
    example = ",".join(str(N - k * (N - 1) // max(1, T - 1)) for k in range(T))
    depths = cells[2].text_input(
        f"D_k: one D per block ({T})",
        key=f"{key}.Dk",
        max_chars=MAX_SCHEDULE_CHARS,
        placeholder=f"e.g. {example}",
        help="Empty: D for every block.",
    )
    steps = cells[3].text_input(
        f"S_k: one S per block ({T})",
        key=f"{key}.Sk",
        max_chars=MAX_SCHEDULE_CHARS,
        placeholder="e.g. " + ",".join(str(max(1, 8 >> k)) for k in range(T)),
        help="Empty: S for every block (or iso-compute's S(D_k)).",
    )
    return depths.strip(), steps.strip(), int(reference) if iso else 0


def settings_ui(sides: list[Family], default: Entry | None) -> tuple[Request, bool]:
    """The generation form: settings of one side (two in compare mode, side i on sides[i], which may be any two
    families), images, seed; and whether it was submitted. The depth starts at an opened dedicated file's D; an
    elastic family starts where its shipped reports put it (workbench.research.picks.opening_depth).

    A form, so that moving a slider does not rerun the script and interrupt a generation."""
    family, compare = sides[0], len(sides) > 1
    trained = family.trained()
    if family.elastic is None and default in family.entries:
        first = default.D
    else:
        first = opening_depth(family, default_steps(family.entries[0].config))
    second = trained[0] if trained[0] != first else trained[-1]
    if sides[-1] is not family:
        second = opening_depth(sides[-1], default_steps(sides[-1].entries[0].config))
    defaults = [first, second]
    with st.form("settings", border=True):
        columns = st.columns(2 if compare else 1, gap="large")
        chosen = []
        for name, column, D, fam in zip(SIDES, columns, defaults, sides):
            with column:
                if compare:
                    st.markdown(f"**Setting {name}**" + ("" if fam is family else f" · {fam.entries[0].family}"))
                chosen.append(_side_ui(name, fam, D, wide=not compare))
        left, mid, right = st.columns([2, 2, 3], vertical_alignment="bottom")
        start = default_images(family.entries[0].config)  # one key per start: a new family size starts afresh
        num_images = left.slider("Images", 1, MAX_IMAGES, start, key=f"images-{start}")
        seed = mid.number_input("Seed", 0, MAX_SEED, 0, key="seed")
        preview = right.checkbox(
            "Show the denoising steps (predicted x0)",
            value=True,
            key="preview",
            help="Models on pixels draw each step's predicted x0. Models on latents (a VAE "
            "codec) draw each block once it is finished and decoded; their steps move "
            "the progress bar. Blocks not generated yet are hatched grey.",
        )
        submitted = st.form_submit_button("Generate", type="primary", use_container_width=True)
    for name, side, fam in zip(SIDES, chosen, sides):
        if side.iso_depth:
            table = ", ".join(f"D={D}: S={S}" for D, S in iso_table(fam.N, side.iso_depth, side.steps))
            st.caption(
                f"Iso-compute{' ' + name if compare else ''}: every block costs C = (N − D_ref) + D_ref·S = "
                f"{iso_cost(fam.N, side.iso_depth, side.steps)} layer evaluations; {table}."
            )
    return Request(tuple(chosen), int(num_images), int(seed), bool(preview)), submitted
