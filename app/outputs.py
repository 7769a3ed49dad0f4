"""What a finished run offers the user: downloads, the command line that redoes it, and the page's history gallery.

UI only: the bytes come from exports.py (deferred: a download button builds its file when clicked), the history's
bookkeeping from history.py.
"""

from __future__ import annotations

from functools import partial

import streamlit as st

from . import exports
from .history import HISTORY_BYTES, HISTORY_RUNS, Past
from .runs import PageRun


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
