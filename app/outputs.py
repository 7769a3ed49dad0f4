"""What a finished run offers the user: downloads, the command line that redoes it, the scrubber over its recorded
denoising steps, and the page's history gallery.

UI only: the bytes come from exports.py (deferred: a download button builds its file when clicked), the history's
bookkeeping from history.py.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import streamlit as st

from . import exports
from .history import HISTORY_BYTES, HISTORY_RUNS, TRAJECTORY_BYTES, Past
from .panels import pictures
from .runs import PageRun
from .trajectory import MODES, Trajectory, as_images


def outputs_ui(run: PageRun, key: str) -> None:
    """Downloads of one finished run (a chosen image as PNG, all of them as a zip, the JSON record) and the command
    line that reproduces it."""
    with st.expander("Download · command line", expanded=False):
        index = st.number_input(
            "Image", 0, run.num_images - 1, 0, key=f"{key}.pick", help="Index i of the image: seed s, image i."
        )
        a, b, c = st.columns(3)
        a.download_button(
            f"PNG of image {index}",
            partial(exports.png, run.images[int(index)]),
            exports.image_name(run, int(index)),
            "image/png",
            key=f"{key}.png",
            on_click="ignore",
            icon=":material/image:",
        )
        b.download_button(
            f"All {run.num_images} (zip)",
            partial(exports.zip_bytes, run),
            f"seed{run.seed}-{run.num_images}images.zip",
            "application/zip",
            key=f"{key}.zip",
            on_click="ignore",
            icon=":material/folder_zip:",
        )
        c.download_button(
            "Settings, cost, scores (JSON)",
            partial(exports.record_json, run),
            "run.json",
            "application/json",
            key=f"{key}.json",
            on_click="ignore",
            icon=":material/data_object:",
        )
        st.caption("The same images from the command line (image i of seed s is the same at any batch size):")
        st.code(exports.command_line(run), language="bash")
        for note in exports.limitations(run):
            st.caption(f"Not in the command line: {note}.")


def trajectory_ui(traj: Trajectory | None, key: str, frame: Callable[[int, int, str], np.ndarray | None]) -> None:
    """After a run: a block and a step slider over its recorded denoising steps, and that step's frame (predicted x0
    or x_t), decoded by `frame(k, step, mode)` only while the scrubber is open."""
    if traj is None:
        return
    key = f"{key}.{traj.serial}"  # a new run starts its scrubber afresh
    if not st.toggle(
        "Scrub the denoising steps",
        key=f"{key}.on",
        help="Every step of every block was recorded during the run (latents, decoded only when shown).",
    ):
        return
    if not traj.complete:
        st.caption(
            f"No trajectory: {traj.budget / 2**20:.1f} MiB cannot hold even the first and last step of each block "
            "of this many images. Fix: fewer images."
            if not traj.stride
            else "No trajectory: the run did not record all its steps."
        )
        return
    T = len(traj.steps)
    a, b, c = st.columns([2, 5, 2], vertical_alignment="bottom")
    k = a.selectbox("Block", range(T), key=f"{key}.block", format_func=lambda i: f"block {i + 1} of {T}")
    S, kept = traj.steps[k], traj.kept[k]
    step = b.select_slider(
        "Denoising step", kept, value=kept[0], key=f"{key}.step{k}", format_func=lambda i: f"{i}/{S}"
    )
    mode = c.radio("Show", list(MODES), key=f"{key}.mode", format_func=MODES.get, horizontal=True)
    pixels = frame(k, step, mode)
    if pixels is None:
        return
    st.image(pictures(as_images(pixels)), width="content", output_format="PNG")
    every = (
        "every step" if traj.stride == 1 else f"every {traj.stride} steps back from each block's last, and its first"
    )
    st.caption(
        f"Block {k + 1}/{T} at step {step}/{S}: {MODES[mode]}; finished blocks before it, hatched ones after. "
        f"Recorded {every}: {traj.nbytes / 2**20:.1f} of {traj.budget / 2**20:.1f} MiB (a page's trajectories "
        f"hold at most {TRAJECTORY_BYTES / 2**20:.0f} MiB, besides its history)."
    )


def history_ui(history: list[Past], restore) -> None:
    """The page's past runs as a gallery: thumbnail, title, FID, a button restoring the settings (restore(values)
    runs before the rerun, so the form opens with them) and the run's JSON."""
    if not history:
        return
    used = sum(p.nbytes for p in history)
    with st.expander(
        f"History: {len(history)} run{'s' * (len(history) != 1)} of this page "
        f"({used / 2**20:.1f} of {HISTORY_BYTES / 2**20:.0f} MiB, at most {HISTORY_RUNS} runs)"
    ):
        columns = st.columns(4)
        for i, item in enumerate(history):
            with columns[i % 4]:
                st.image(item.thumbnail, caption=f"{item.title} · {item.fid}")
                st.button(
                    "Restore these settings",
                    key=f"history.{i}.restore",
                    on_click=restore,
                    args=(item.restore,),
                    icon=":material/restore:",
                    use_container_width=True,
                )
                st.download_button(
                    "JSON", item.record, f"run-{i}.json", "application/json", key=f"history.{i}.json", on_click="ignore"
                )
