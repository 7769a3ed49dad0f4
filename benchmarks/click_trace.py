"""Which project files a click on Generate crosses before the first finished block is on the page: a call trace of
the app driven headlessly by Streamlit's AppTest.

    python -m benchmarks.click_trace                                # the default page: the shipped zoo
    python -m benchmarks.click_trace --checkpoint data/checkpoints/vertical/elastic.safetensors

What is measured. The app starts as `streamlit run app/main.py -- ARGS` would (AppTest, one session) and loads
its default page; then the page is rerun once without a click (traced: the "rerun" figures) and Generate is
pressed with the page's default settings (traced). A profile function (`threading.setprofile`, installed before
the first run, so it is in the script thread of every run and in the work queue's worker threads that sample)
records every Python function call whose code lies in a project file, a `.py` file under the checkout's `app/`
or `workbench/`. Recording starts when the click's rerun is submitted and stops when the page thread returns
from `RunView.show_images` (app/panels.py) for the first event whose kind is "block" (the sampler's `frame` of
a finished block): the first finished block is on the page. With the default settings denoising steps are
previewed too; they cross the same files.

- A file is counted when at least one of its functions (or methods, nested functions, lambdas) ran.
- The caller of a project call is the nearest project frame below it on the same thread's stack (library frames
  in between, e.g. torch's `Module.__call__` or Streamlit's cache wrappers, are skipped); a resumed generator's
  caller is the frame that resumed it. A cross-file edge is an ordered pair (caller file, callee file) of
  different files; each distinct pair counts once, however often it is taken (loops repeat the same ones). A
  call with no project frame below it (the script's `main`, a worker thread's loop) is an entry, not an edge.
- The click's calls are split in two: "click" is everything the page thread runs inside app/main.py's
  `_generate` (checking the request, queueing the jobs, following and drawing them) plus everything the other
  threads (the work queue's workers: the sampler) run; "rebuild" is what the page thread runs outside it (the
  sidebar, the catalogue, the form: the part every rerun repeats). An edge belongs to the part its callee's call
  belongs to. "click_run" is their union: the whole rerun a click causes, up to the first block.

Prints one JSON object (files and edges of each part, with one example call per edge) and appends it to --out.
Run from the root of the checkout to measure: the files counted are those of the `app` and `workbench` the
interpreter imports, and the run is refused if they are not this checkout's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import harness

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("app", "workbench")  # the project's code; benchmarks/, tests/ and libraries are not counted
MAIN = "app/main.py"
CLICK = (MAIN, "_generate")  # the page thread's part of a click: checking, queueing, following, drawing
DRAWN = ("app/panels.py", "show_images")  # returning from it with a finished block: the block is on the page
PARTS = ("rebuild", "click")


class CallTrace:
    """A profile function for every thread that records project files and cross-file call edges while on.

    One instance serves all measurements of a process: worker threads keep the function they started with, so
    `begin`/`end` switch recording instead of installing a new one."""

    def __init__(self, root: Path, folders: tuple[str, ...] = FOLDERS):
        self.root = str(root.resolve())
        self.prefixes = tuple(os.path.join(self.root, f) + os.sep for f in folders)
        self.names: dict[str, str | None] = {}  # co_filename -> path relative to the root, None outside
        self.recording = False
        self.until_first_block = False
        self.closed = False
        self.begin("unused")
        self.recording = False  # until the first `begin`

    def begin(self, label: str, until_first_block: bool = False) -> None:
        self.label, self.until_first_block = label, until_first_block
        self.page: int | None = None  # thread running app/main.py's main
        self.clicks: dict[int, Any] = {}  # thread id -> its running _generate frame
        self.armed = False  # the page thread is drawing a finished block
        self.saw_click = False  # app/main.py's _generate ran
        self.reached_first_block = False
        self.files: dict[str, set[str]] = {p: set() for p in PARTS}
        self.edges: dict[str, dict[tuple[str, str], str]] = {p: {} for p in PARTS}
        self.crossings = dict.fromkeys(PARTS, 0)  # cross-file calls, repeats included
        self.threads: dict[str, set[str]] = {p: set() for p in PARTS}
        self.started = time.perf_counter()
        self.recording = True

    def end(self) -> float:
        """Stop recording; returns the seconds recorded."""
        self.recording = False
        return time.perf_counter() - self.started

    def close(self) -> None:
        """Uninstall: new threads start without the profile function, running ones drop it at their next call."""
        self.recording, self.closed = False, True
        threading.setprofile(None)

    def install(self) -> None:
        """Profile every thread started from now on (this one is left alone: AppTest runs scripts in threads)."""
        threading.setprofile(self)

    def project_file(self, filename: str) -> str | None:
        try:
            return self.names[filename]
        except KeyError:
            rel = None
            if filename.startswith(self.prefixes) and filename.endswith(".py"):
                rel = os.path.relpath(filename, self.root).replace(os.sep, "/")
            self.names[filename] = rel
            return rel

    def __call__(self, frame, event: str, arg) -> None:
        if not self.recording:
            if self.closed:
                sys.setprofile(None)
            return
        if event == "call":
            rel = self.project_file(frame.f_code.co_filename)
            if rel is not None:
                self._call(frame, rel)
        elif event == "return" and self.names.get(frame.f_code.co_filename) is not None:
            self._return(frame)

    def _call(self, frame, rel: str) -> None:
        code, thread = frame.f_code, threading.get_ident()
        if (rel, code.co_name) == (MAIN, "main") and self.page is None:
            self.page = thread
        elif (rel, code.co_name) == CLICK:
            self.clicks[thread], self.saw_click = frame, True
        elif self.until_first_block and code.co_name == "frame" and rel.startswith("workbench/"):
            event = frame.f_locals.get("event")
            self.armed = thread == self.page and getattr(event, "kind", None) == "block"
        part = "click" if thread in self.clicks or thread != self.page else "rebuild"
        self.files[part].add(rel)
        self.threads[part].add(threading.current_thread().name)
        caller = frame.f_back
        while caller is not None and self.project_file(caller.f_code.co_filename) is None:
            caller = caller.f_back
        if caller is None:
            return
        source = self.names[caller.f_code.co_filename]
        if source != rel:
            self.crossings[part] += 1
            self.edges[part].setdefault((source, rel), f"{caller.f_code.co_qualname} -> {code.co_qualname}")

    def _return(self, frame) -> None:
        thread = threading.get_ident()
        if self.clicks.get(thread) is frame:
            del self.clicks[thread]
        elif self.armed and thread == self.page and frame.f_code.co_name == DRAWN[1]:
            if self.names[frame.f_code.co_filename] == DRAWN[0]:
                self.reached_first_block = True
                self.end()

    def summary(self, parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
        """Counts and lists of the union of `parts`."""
        files = sorted(set().union(*(self.files[p] for p in parts)))
        edges: dict[tuple[str, str], str] = {}
        for p in parts:
            for edge, example in self.edges[p].items():
                edges.setdefault(edge, example)
        return {
            "files": len(files),
            "edges": len(edges),
            "files_app": sum(f.startswith("app/") for f in files),
            "files_workbench": sum(f.startswith("workbench/") for f in files),
            "cross_file_calls": sum(self.crossings[p] for p in parts),
            "file_list": files,
            "edge_list": [f"{a} -> {b}  ({example})" for (a, b), example in sorted(edges.items())],
            "threads": sorted(set().union(*(self.threads[p] for p in parts))),
        }


def revision(root: Path) -> dict[str, Any]:
    """The checkout's commit and whether its app/ or workbench/ differ from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "--short=12", "HEAD"), "dirty": bool(git("status", "--porcelain", *FOLDERS))}


def check_imports(root: Path) -> None:
    """Refuse to count files of another checkout than the one the profile function looks at."""
    import app
    import workbench

    for module in (app, workbench):
        where = Path(module.__file__).resolve().parent.parent
        if where != root.resolve():
            raise SystemExit(
                f"{module.__name__} imports from {where}, not from {root}. Fix: run python -m "
                "benchmarks.click_trace from the root of the checkout to measure."
            )


def generate_button(at):
    labels = [b.label for b in at.button]
    if "Generate" not in labels:
        raise SystemExit(f"no Generate button on the page (buttons: {labels}). Fix: check the app's arguments.")
    return at.button[labels.index("Generate")]


def first_run(at) -> Any:
    """The last run's record: which checkpoint and settings the click sampled (what the page kept)."""
    runs = at.session_state["runs"] if "runs" in at.session_state else []
    if not runs:
        return {}
    run = runs[0]
    side = run.side
    return {
        "model": getattr(run, "model_name", None),
        "checkpoint": str(getattr(run, "checkpoint", "")),
        "D": side.D,
        "S": side.steps,
        "sampler": side.sampler,
        "images": run.num_images,
        "blocks": getattr(run, "num_blocks", None),
    }


def trace_click(app_args: list[str], timeout_s: float) -> dict[str, Any]:
    """Load the page, trace a rerun without a click, then trace a click on Generate up to the first block."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    tracer = CallTrace(ROOT)
    tracer.install()
    argv = sys.argv
    sys.argv = [str(ROOT / MAIN), *app_args]  # as `streamlit run app/main.py -- ARGS`
    try:
        at = AppTest.from_file(str(ROOT / MAIN), default_timeout=timeout_s).run()
        problems = [e.value for e in at.exception] + [e.value for e in at.error]
        if problems:
            raise SystemExit(f"the page did not load: {problems[0]}")
        st.cache_data.clear()  # the catalogue's scan (cached 10 s) runs in both traced reruns, whatever the timing
        tracer.begin("rerun")
        at = at.run()
        tracer.end()
        rerun = tracer.summary()
        preview = at.checkbox(key="preview").value if "preview" in at.session_state else None
        button = generate_button(at).click()
        st.cache_data.clear()
        tracer.begin("click", until_first_block=True)
        at = button.run()
        tracer.end()
        if not (tracer.saw_click and tracer.reached_first_block):
            shown = [e.value for e in at.exception] + [e.value for e in at.error]
            why = f"{DRAWN[0]} {DRAWN[1]} drew no finished block" if tracer.saw_click else f"{MAIN} _generate never ran"
            raise SystemExit(
                f"the click was not traced to its first block: {why} (page errors: {shown}). Fix: see the app's "
                "output, or name the app's functions in CLICK and DRAWN if they were renamed."
            )
        return {
            "sampled": {**first_run(at), "preview": preview},
            "click": tracer.summary(("click",)),
            "rebuild": tracer.summary(("rebuild",)),
            "click_run": tracer.summary(),
            "rerun": rerun,
        }
    finally:
        tracer.close()
        sys.argv = argv


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = harness.parser(__doc__, out="benchmarks/results/click_trace.jsonl", threads=1)
    ap.add_argument("--checkpoint", help="open this checkpoint (default: the page's default, the shipped zoo's)")
    ap.add_argument("--checkpoints", help="a folder of checkpoints the page may open besides the zoo")
    ap.add_argument("--timeout", type=float, default=600, help="seconds an AppTest run may take (default 600)")
    args = harness.parse(ap, argv)
    check_imports(ROOT)
    app_args = [*(["--checkpoints", args.checkpoints] if args.checkpoints else [])]
    app_args += ["--checkpoint", args.checkpoint] if args.checkpoint else []
    result = {
        "benchmark": "click_trace",
        "root": str(ROOT),
        **revision(ROOT),
        "app_args": app_args,
        **trace_click(app_args, args.timeout),
        "machine": harness.machine(),
    }
    harness.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
