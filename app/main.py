"""MADFormer Workbench app: pick a checkpoint, move the AR-vs-diffusion depth and the steps, watch the blocks
generate, and see the FID estimate move.

    streamlit run app/main.py                                   # the shipped zoo (data/checkpoints)
    streamlit run app/main.py -- --checkpoints runs/ --checkpoint runs/my-run   # plus your own runs
    streamlit run app/main.py -- --jobs 2 --queue 32   # generations advanced at once (default: the cores), waiting

Only UI code lives here and in app/: sampling, metrics, cost and checkpoints come from workbench.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from functools import partial
from pathlib import Path

import streamlit as st
import torch
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `streamlit run` puts only app/ on the path

from app import (  # noqa: E402
    catalog,  # noqa: E402
    exports,
    history,
)
from app import weights as weight_choice  # noqa: E402
from app.controls import (  # noqa: E402
    MAX_FID_SAMPLES,
    MAX_IMAGES,
    MAX_SEED,
    MAX_STEPS,
    MORE_SAMPLES,
    SIDES,
    Request,
    default_steps,
    family_ui,
    path_ui,
    resolve_sides,
    settings_ui,
    side_plan,
    widget_key,
)
from app.outputs import history_ui, outputs_ui, trajectory_ui  # noqa: E402
from app.panels import NATIVE_SIDE, RunView, show_difference, zoo_charts  # noqa: E402
from app.runs import TORCH_THREADS, Loaded, PageRun, add_samples, paired_difference, stream_jobs, submit  # noqa: E402
from app.scheduler import Cancelled, Limits, Refused, Scheduler, limits_from  # noqa: E402
from app.scheduler import log as scheduler_log  # noqa: E402
from app.trajectory import Trajectory  # noqa: E402
from workbench.core.config import DataConfig  # noqa: E402
from workbench.core.devices import resolve_device  # noqa: E402
from workbench.core.paths import REFERENCE_DIR  # noqa: E402
from workbench.data.codecs import build_codec  # noqa: E402
from workbench.evaluation.evaluate import default_extractor, reference_split, shipped_reference  # noqa: E402
from workbench.evaluation.metrics import ReferenceStats  # noqa: E402
from workbench.research import picks  # noqa: E402
from workbench.research.families import FAMILIES  # noqa: E402
from workbench.research.groups import Entry, Family, group_families  # noqa: E402
from workbench.research.reports import load_reports  # noqa: E402
from workbench.training.checkpoint import load_for_inference  # noqa: E402

# Feature extractors for the live FID: the one eval defaults to for the data first (the Fashion-MNIST classifier
# for Fashion-MNIST, thousands of images/s on a CPU; Inception, the standard, elsewhere: about 5/s on one thread).
LIVE_EXTRACTORS = ("fmnist-classifier", "inception")
QUEUE_LOG = "WORKBENCH_QUEUE_LOG"
URL_BOUNDS = history.Bounds(steps=MAX_STEPS, seed=MAX_SEED, images=MAX_IMAGES)


# ---- cached, read-only resources (shared by all sessions: never mutated after loading) -------------------------
@st.cache_resource(max_entries=16, show_spinner="Loading the checkpoint…")
def load_model(path: str, stamp: tuple[int, int], device: str = "cpu", use_ema: bool = True):
    """(model, config) of a checkpoint file on `device`, its EMA weights or (use_ema False, a file that holds both)
    its trained ones, as `sample --no-ema` loads them; `stamp` (mtime, size) reloads a file that changed."""
    model, config = load_for_inference(path, use_ema=use_ema, device=device)
    return model.requires_grad_(False), config


@st.cache_resource(show_spinner=False)
def load_codec(data: DataConfig, device: str = "cpu"):
    return build_codec(data, device)


def device_from(argv: list[str]) -> str:
    """`streamlit run app/main.py -- --device cuda`: where the models sample (default cpu), checked by the library's
    resolve_device (an unknown or missing device is a one-line error naming the fix)."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--device", default="cpu")
    args, _ = ap.parse_known_args(argv)  # the other options are the scheduler's and the catalogue's
    return str(resolve_device(args.device))


@st.cache_resource(show_spinner="Loading reference statistics…")
def load_live_reference(data: DataConfig, preferred: str) -> ReferenceStats:
    """Shipped statistics for this data (evaluation.shipped_reference: the Fluent sets' cover every image) of the
    `preferred` extractor, else of the other one."""
    order = sorted(LIVE_EXTRACTORS, key=lambda e: e != preferred)
    stats = next(filter(None, (shipped_reference(data, e) for e in order)), None)
    if stats is None:
        raise FileNotFoundError(
            f"no reference statistics for {data.dataset} {data.image_size}px "
            f"({reference_split(data)} split) in {REFERENCE_DIR}. Fix: compute them once with "
            f"python scripts/build_reference.py --dataset {data.dataset} --image-size "
            f"{data.image_size} --channels {data.channels} --extractor {preferred}."
        )
    _ = stats.factor  # computed now, so that sessions only ever read the shared object
    return stats


@st.cache_resource(show_spinner=False)
def work_queue(limits: Limits) -> Scheduler:
    """The server's one work queue: every session's sampling and FID runs on its K workers (scheduler.py).
    $WORKBENCH_QUEUE_LOG names a file that gets a JSON line per ended job."""
    if os.environ.get(QUEUE_LOG):
        handler = logging.FileHandler(os.environ[QUEUE_LOG])
        handler.setFormatter(logging.Formatter("%(message)s"))
        scheduler_log.addHandler(handler)
        scheduler_log.setLevel(logging.INFO)
    return Scheduler(limits, alive=connected)


def connected(session: str) -> bool:
    """Whether a browser session is still open (a closed tab's work is cancelled at its next step). Outside a
    server (AppTest) every session is."""
    return not Runtime.exists() or Runtime.instance().is_active_session(session)


@st.cache_data(ttl=10, show_spinner=False)
def scan(folders: catalog.Folders):
    """(checkpoint entries, notes on skipped files, eval reports): the zoo's reports, including members shipped
    without weights, and those beside checkpoints in the user's folders."""
    entries, notes = catalog.scan(folders)
    reports = {r.label: r for f in FAMILIES for r in load_reports(f, folders.zoo).values()}
    for e in entries:
        if e.report:
            reports.setdefault(e.report.label, e.report)
    return entries, notes, list(reports.values())


def loaded(path: Path, use_ema: bool = True) -> Loaded:
    """The cached model (EMA or trained weights: app.weights.loads_ema), codec and FID reference of a checkpoint."""
    stat = path.stat()
    device = device_from(sys.argv[1:])
    model, config = load_model(str(path), (stat.st_mtime_ns, stat.st_size), device, use_ema)
    data = config.data
    try:
        reference, problem = load_live_reference(data, default_extractor(config)), None
    except (FileNotFoundError, ValueError) as err:
        reference, problem = None, str(err)
    return Loaded(model, config, load_codec(data, device), reference, problem)


# ---- page ------------------------------------------------------------------------------------------------------
def checkpoint_ui(folders: catalog.Folders) -> tuple[Family | None, Entry | None, list, bool, Family | None]:
    """Sidebar: the family to sample (and a typed path, checked), compare mode; plus the zoo's reports."""
    st.sidebar.title("MADFormer Workbench")
    entries, notes, reports = scan(folders)
    typed = path_ui()
    opened = None
    if typed:
        try:
            path = catalog.check_path(typed, folders)
            opened = next((e for e in entries if e.path == path), None) or catalog.load_entry(path, "user")
            entries = entries if opened in entries else [*entries, opened]
        except (ValueError, OSError) as err:  # PathRefused, CheckpointError, a config this version rejects
            st.sidebar.error(f"Refused: {err}")
    families = group_families(entries)
    if not families:
        st.sidebar.error(
            f"No checkpoints found in {', '.join(map(str, folders.roots))}. Fix: ship the zoo "
            "(python -m workbench zoo all; export) or start the app with `-- --checkpoints DIR`."
        )
        return None, None, reports, False, None
    default = opened or picks.default_entry(families, folders.default)
    home = next((f for f in families if opened in f.entries), None)  # None: a copy of a listed checkpoint
    if home and st.session_state.get("opened") != str(opened.path):  # a newly opened file: select it
        st.session_state["opened"] = str(opened.path)
        st.session_state["family"] = home.label
        st.session_state[f"{widget_key(SIDES[0], home)}.D"] = opened.D
    if "url_read" not in st.session_state:  # a link's settings, once per page, before the widgets exist
        st.session_state["url_read"] = True
        values, problems = history.from_query(
            st.query_params.to_dict(), families, URL_BOUNDS, lambda f: widget_key(SIDES[0], f)
        )
        st.session_state.update(values)
        for problem in problems:
            st.sidebar.warning(problem)
    family = family_ui(families, default)
    compare = st.sidebar.toggle(
        "Compare two settings",
        key="compare",
        help="Two settings side by side, generated from the same seeds; B may be any family.",
    )
    other = family
    if compare:  # B: any checkpoint of the catalogue (T=1 beside T=16, the plain model beside the noised one)
        labels = [f.label for f in families]
        pick = st.sidebar.selectbox("Family of B", labels, index=labels.index(family.label), key="family_b")
        other = families[labels.index(pick)]
    st.sidebar.caption(
        "One elastic checkpoint samples every depth of this family:"
        if family.elastic
        else "Trained positions of this family:"
    )
    if family.elastic and (why := picks.opening_note(family, default_steps(family.entries[0].config))):
        st.sidebar.caption(why)
    st.sidebar.markdown("\n".join(f"- {e.describe()}" for e in family.entries))
    st.sidebar.caption("Folders this app may open: " + ", ".join(f"`{r}`" for r in folders.roots))
    for note in notes:
        st.sidebar.warning(note)
    return family, default, reports, compare, other


def main() -> None:
    clicked = time.perf_counter()  # a click reruns this script: first-block latency counts from here
    st.set_page_config(page_title="MADFormer Workbench", page_icon="🧩", layout="wide")
    st.set_option("client.toolbarMode", "viewer")  # no "Deploy" button: this is a local research tool
    torch.set_num_threads(TORCH_THREADS)
    limits, problems = limits_from(sys.argv[1:])
    try:
        device_from(sys.argv[1:])  # refused before anything loads: one line that names the fix
    except ValueError as err:
        st.error(str(err))
        return
    queue, session = work_queue(limits), get_script_run_ctx().session_id
    queue.cancel_session(session)  # a rerun (Stop, any widget) frees what this page still had queued or running
    folders = catalog.folders_from(sys.argv[1:])
    family, default, reports, compare, other = checkpoint_ui(folders)
    for problem in problems:
        st.sidebar.warning(problem)
    st.title("AR ↔ diffusion, block by block")
    st.caption(
        "The first N−D layers run once per block (autoregressive); the last D layers denoise it at every "
        "step. Move D and the steps S, press Generate, and watch the FID and the compute."
    )
    if family is None:
        return
    _preload(family)
    sides = [family, other] if compare else [family]
    request, submitted = settings_ui(sides, default)
    state = st.session_state
    state.setdefault("runs", [])
    state.setdefault("history", [])
    state.setdefault("trajectories", [])  # one per run in state["runs"] (app.trajectory)
    views = _generate(request, sides, clicked, queue, session) if submitted else _show(state["runs"])
    if views:
        trajectories = state["trajectories"]
        for i, (run, view) in enumerate(zip(state["runs"], views)):
            if run.finished:
                with view.extras:
                    outputs_ui(run, f"out.{run.name or 'A'}")
                    if i < len(trajectories):
                        trajectory_ui(
                            trajectories[i], f"traj.{run.name or 'A'}", _scrub(run, trajectories[i], queue, session)
                        )
        more_ui(state["runs"], views, queue, session)
        difference_ui(state["runs"], queue, session)
    history_ui(state["history"], _restore)
    st.divider()
    zoo_charts(family, reports, [r for r in state["runs"] if r.finished])


def _preload(family: Family) -> None:
    """Load the family's models now, so that Generate starts sampling at once (cached: a no-op after the first
    page view). A checkpoint that fails here fails again, with its message, when it is used."""
    for entry in family.entries:
        try:
            loaded(entry.path, weight_choice.loads_ema(entry.path, weight_choice.shipped(entry)))
        except Exception:  # noqa: BLE001
            pass


def _generate(
    request: Request, sides: list[Family], clicked: float, queue: Scheduler, session: str
) -> list[RunView] | None:
    """Check the request, queue it, and draw it as it runs. The new runs replace the session's at once, so that
    Stop (or any rerun) keeps the finished blocks; a failure brings the previous runs back. Returns the views to
    attach controls to (None when a generation failed half-way)."""
    state = st.session_state
    try:
        compare = len(sides) > 1
        entries = resolve_sides(request, sides)
        resources = [
            loaded(e.path, weight_choice.loads_ema(e.path, s.tuning.weights)) for e, s in zip(entries, request.sides)
        ]
        runs = [
            PageRun(
                name if compare else "",
                side,
                e.path,
                e.name,
                request.num_images,
                request.seed,
                plan=side_plan(side, e.config),
                image_size=e.config.data.image_size,
            )
            for name, side, e in zip(SIDES, request.sides, entries)
        ]
        budget = history.TRAJECTORY_BYTES // len(runs)  # the page's trajectory cap, shared by its sides
        trajectories = [Trajectory(r.config, run.num_images, run.plan.steps, budget) for run, r in zip(runs, resources)]
        jobs = submit(queue, session, runs, resources, request.preview, trajectories)
    except Exception as err:  # noqa: BLE001 - bad input, an unusable checkpoint, a full queue: say so, keep the old
        st.error(f"Cannot generate: {err}")
        return _show(state["runs"])
    previous, state["runs"] = state["runs"], runs
    kept_trajectories, state["trajectories"] = state["trajectories"], trajectories
    stop = st.empty()
    stop.button(
        "Stop",
        key="stop",
        icon=":material/stop_circle:",
        help="Stop generating: the blocks finished so far stay on the page.",
    )
    views = _views(runs)
    try:
        stream_jobs(queue, session, jobs, runs, resources, views, clicked)
    except Cancelled:  # this page reran meanwhile: the new run draws what was kept
        return None
    except Exception as err:  # noqa: BLE001 - the page stays usable; the previous results come back on rerun
        traceback.print_exc()
        state["runs"], state["trajectories"] = previous, kept_trajectories
        st.error(f"Generation failed: {type(err).__name__}: {err}")
        return None
    stop.empty()
    _keep(runs, sides, request)
    return views


def _keep(runs: list[PageRun], sides: list[Family], request: Request) -> None:
    """Finished runs into the page's history, and (one side) the settings into the URL, so a link restores them."""
    state = st.session_state
    for run, family in zip(runs, sides):
        if not run.finished:
            continue
        s = run.side
        fid = f"FID@{run.fid.n} {run.fid.fid:.1f}" if run.fid else "no FID"
        restore = history.widget_values(
            family, widget_key(SIDES[0], family), s.D, s.steps, s.sampler, run.seed, run.num_images, s.tuning.weights
        )
        item = history.past(run.title, fid, run.images, exports.record_json(run), restore)
        state["history"] = history.remember(state["history"], item)
    run, family = runs[0], sides[0]
    if len(runs) == 1 and run.finished:
        st.query_params.from_dict(
            history.query(
                run.model_name,
                run.side.D,
                run.side.steps,
                run.side.sampler,
                run.seed,
                run.num_images,
                family.entries[0].source,
                run.side.tuning.weights,
            )
        )


def _scrub(run: PageRun, traj: Trajectory, queue: Scheduler, session: str):
    """The scrubber's frame(k, step, mode) of a finished run: decoded on demand, on the page's thread for a model on
    pixels (free), on the work queue for a latent model (a VAE decode); None when that was cancelled or refused."""

    def frame(k: int, step: int, mode: str):
        ld = loaded(run.checkpoint, weight_choice.loads_ema(run.checkpoint, run.side.tuning.weights))
        work = partial(traj.frame, ld.codec, k, step, mode, next(ld.model.parameters()).device)
        if ld.previews:
            return work()
        try:
            return queue.call(session, work)
        except (Cancelled, Refused) as err:
            st.caption(f"Not decoded: {err}")
            return None

    return frame


def _restore(values: dict) -> None:
    """A history item's settings into the form's widgets (runs before the rerun that draws them)."""
    st.session_state.update(values)


def more_ui(runs: list[PageRun], views: list[RunView], queue: Scheduler, session: str) -> None:
    """The "more samples" button; a click reruns the page, which then adds the samples."""
    more = [(r, v) for r, v in zip(runs, views) if r.live is not None and r.live.n < MAX_FID_SAMPLES]
    if not more or not st.button(
        f"{MORE_SAMPLES} more samples for the FID",
        key="more",
        icon=":material/add:",
        help=f"More images from the same settings (seeds seed+1, seed+2, …), up to "
        f"{MAX_FID_SAMPLES} per run. The interval narrows as n grows.",
    ):
        return
    try:
        add_samples(
            queue,
            session,
            [r for r, _ in more],
            [loaded(r.checkpoint, weight_choice.loads_ema(r.checkpoint, r.side.tuning.weights)) for r, _ in more],
            [v for _, v in more],
            MAX_FID_SAMPLES,
        )
    except Cancelled:
        return
    except Exception as err:  # noqa: BLE001
        traceback.print_exc()
        st.error(f"Adding samples failed: {type(err).__name__}: {err}")


def difference_ui(runs: list[PageRun], queue: Scheduler, session: str) -> None:
    """Compare mode: FID(A) - FID(B) over the seeds both sides drew, with its paired interval; computed on the work
    queue once per pair of sample counts and kept in the session for reruns."""
    if len(runs) != 2 or not all(r.finished for r in runs):
        return
    key = (id(runs[0]), id(runs[1]), *(r.live.n if r.live else 0 for r in runs))
    cached = st.session_state.get("difference")
    if cached is None or cached[0] != key:
        try:
            cached = (key, queue.call(session, partial(paired_difference, *runs)))
        except Cancelled:
            return
        st.session_state["difference"] = cached
    show_difference(*cached[1])


def _views(runs: list[PageRun]) -> list[RunView]:
    if not runs:
        st.info("Choose the settings above and press **Generate**: the grid fills block by block.")
        return []
    views = []
    for run, column in zip(runs, st.columns(len(runs), gap="large")):
        with column:  # one run of small images: grid and numbers side by side; large images take the width
            views.append(RunView(run.title, wide=len(runs) == 1 and run.image_size < NATIVE_SIDE))
    return views


def _show(runs: list[PageRun]) -> list[RunView]:
    """Redraw the stored results (a rerun clears the page)."""
    views = _views(runs)
    for run, view in zip(runs, views):
        if not run.finished:
            view.show_stopped(run)
            continue
        view.show_images(run.images, 1.0, f"{run.num_images} images from seed {run.seed}")
        view.show_meter(run)
        view.show_fid(run.fid, run.fid_problem)
    return views


if __name__ == "__main__":
    main()
