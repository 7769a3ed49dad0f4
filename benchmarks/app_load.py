"""The app as a lab's shared server: several real browser sessions press Generate together on one server.

    python -m benchmarks.app_load [--sessions 1 4 8 16] [--batching on off] [--close-every 4] [--jobs K]
                                  [--checkpoint PATH] [--record]

For each session count N and each batching mode (on: the app's default, compatible generations share one model
evaluation per step; off: the app started with --no-batching, one per generation; the modes run one after the
other, so that both are measured side by side in one run): a fresh `streamlit run app/main.py` on localhost, one
warm-up generation (model loads, first plotly.js), then N Chromium sessions (each its own browser context, as N
people are) open the page, set seed i, and press Generate within a few tens of milliseconds of each other with the
app's defaults exactly as the page opens (16 images, default steps and sampler, the denoising-step previews on;
--no-previews turns them off). Every `--close-every`-th session closes its tab once its first block is on screen.
Recorded per N and mode: p50/p95/max seconds from the click to the first block and to the last block on the page
(the meter appears with the last block; the first block is the first image shown once a progress bar says a block
finished, and the first image of any kind, a preview, is recorded too), images per second (the images of the
sessions that finished, over the time from the clicks to the last of them), sessions finished, errors (exceptions
or error boxes on a page, page errors, timeouts), the server's peak resident memory and thread count (sampled from
/proc every 0.1 s), the machine's 1-minute load average before and after, the sizes of the shared batches (jobs per
group, from the app's job log), whether every session got its own images (its grid is nearest, over all sessions'
seeds, to the grid sampled here from its own seed), and for the closed tabs how long after the close their job ended
on the server and how many denoising steps that is (from the app's job log, $WORKBENCH_QUEUE_LOG). Prints a JSON
line per N and mode and a Markdown table; --record appends the lines to benchmarks/results/app_load.jsonl.
Run it with the machine otherwise idle: the load is recorded so that a busy machine shows in the figures."""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import torch

import workbench as wb
from app.controls import default_images, default_steps
from app.panels import grid_picture
from app.runs import TORCH_THREADS
from benchmarks.app_first_block import checkpoint_to_serve, launch_chromium, open_app, streamlit_server
from benchmarks.harness import append_jsonl, load, machine
from workbench.data.codecs import build_codec
from workbench.training.checkpoint import load_for_inference

ROOT = Path(__file__).resolve().parent.parent

TIMEOUT_S = 300  # per session count (at least; 20 s more per session above 15): a session not finished by then
# counts as an error
MODES = {"on": [], "off": ["--no-batching"]}  # batching: the app's arguments for each mode


def timeout_s(sessions: int) -> float:
    return TIMEOUT_S + 20 * max(0, sessions - 15)


# In the page, from the mouse-down on Generate: the first grid image loaded, and the compute meter (drawn with the
# last block) in the page.
WATCH = """() => {
  window.__load = {image: null, first: null, done: null};
  document.addEventListener("mousedown", () => {
    const start = performance.now(), L = window.__load;
    const check = () => {
      const now = (performance.now() - start) / 1000;
      const img = document.querySelector('[data-testid="stImage"] img');
      const shown = img && img.complete && img.naturalWidth > 0;
      if (L.image === null && shown) L.image = now;
      const bars = [...document.querySelectorAll('[data-testid="stProgress"]')].map(e => e.innerText).join(" ");
      if (L.first === null && shown && /finished|block ([2-9]|\\d\\d)\\//.test(bars)) L.first = now;
      if (L.done === null && [...document.querySelectorAll('[data-testid="stMetricLabel"]')]
            .some(e => e.innerText.includes("wall time"))) { L.done = now; if (L.first === null) L.first = now; }
    };
    new MutationObserver(check).observe(document.body, {childList: true, subtree: true, attributes: true,
                                                        characterData: true});
    document.addEventListener("load", check, {capture: true});
  }, {capture: true, once: true});
}"""
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


class ProcSampler(threading.Thread):
    """Peak resident memory (MB) and thread count of a process, from /proc every `interval_s`."""

    def __init__(self, pid: int, interval_s: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.rss_mb, self.threads = 0.0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            self.rss_mb = max(self.rss_mb, int(fields["VmRSS"].split()[0]) / 1024)
            self.threads = max(self.threads, int(fields["Threads"]))
            self.stop.wait(self.interval_s)


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (no interpolation: with 8 sessions p95 is the slowest)."""
    if not values:
        return None
    ranked = sorted(values)
    return round(ranked[max(0, math.ceil(q * len(ranked)) - 1)], 3)


def expected_grids(path: Path, seeds: list[int]) -> dict[int, torch.Tensor]:
    """The grid picture each seed gives with the app's defaults, sampled here: (H, W) float pixels."""
    import numpy as np

    torch.set_num_threads(TORCH_THREADS)
    model, cfg = load_for_inference(path)
    codec = build_codec(cfg.data)
    grids = {}
    for seed in seeds:
        request = wb.sample_request(cfg, num_images=default_images(cfg), steps=default_steps(cfg), seed=seed)
        *_, last = wb.generate_events(model, cfg, request)
        picture = grid_picture(codec.decode(last.x_t)).convert("L")
        grids[seed] = torch.from_numpy(np.asarray(picture, dtype=np.float32))
    return grids


def page_grid(page, url: str) -> torch.Tensor | None:
    """The grid picture a page shows, fetched from the server's media URL."""
    import numpy as np
    from PIL import Image

    src = page.locator('[data-testid="stImage"] img').first.get_attribute("src")
    if not src:
        return None
    data = urllib.request.urlopen(src if src.startswith("http") else url + src, timeout=30).read()
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32))


def own_images(shown: dict[int, torch.Tensor], expected: dict[int, torch.Tensor]) -> bool:
    """Every session's grid is nearest to the grid of its own seed, among all the sessions' seeds."""

    def distance(a: torch.Tensor, b: torch.Tensor) -> float:
        return math.inf if a.shape != b.shape else float((a - b).abs().mean())

    return all(min(expected, key=lambda s: distance(grid, expected[s])) == seed for seed, grid in shown.items())


def run_level(n: int, close_every: int, app_args: list[str], path: Path, tmp: Path, previews: bool = True) -> dict:
    from playwright.sync_api import sync_playwright

    batching = "--no-batching" not in app_args
    tag = f"{n}-{'on' if batching else 'off'}"
    queue_log = tmp / f"queue-{tag}.jsonl"
    load_before, limit_s = load(), timeout_s(n)
    closed = {i for i in range(n) if close_every and (i + 1) % close_every == 0}
    with (
        streamlit_server(app_args, tmp / f"streamlit-{tag}.log", env={"WORKBENCH_QUEUE_LOG": str(queue_log)}) as (
            url,
            proc,
        ),
        sync_playwright() as pw,
    ):
        browser = launch_chromium(pw)
        try:
            warm = browser.new_page()  # loads the models and caches; not timed
            open_app(warm, url).click()
            warm.locator('[data-testid="stMetric"]', has_text="FID@").wait_for(timeout=limit_s * 1000)
            warm.close()
            sampler = ProcSampler(proc.pid)
            sampler.start()
            contexts = [browser.new_context(viewport={"width": 1400, "height": 1700}) for _ in range(n)]
            pages, page_errors = [c.new_page() for c in contexts], [0] * n
            for i, page in enumerate(pages):
                page.on("pageerror", lambda _err, i=i: page_errors.__setitem__(i, page_errors[i] + 1))
            buttons = []
            for i, page in enumerate(pages):
                buttons.append(open_app(page, url, previews=previews))
                seed = page.get_by_label("Seed")
                seed.fill(str(i))
                seed.press("Tab")
                page.evaluate(WATCH)
            start = time.time()
            for button in buttons:  # "together": the clicks follow each other within milliseconds
                button.click(no_wait_after=True)
            results: dict[int, dict] = {}
            closed_at: dict[int, float] = {}
            deadline = time.monotonic() + limit_s
            while len(results) < n and time.monotonic() < deadline:
                for i, page in enumerate(pages):
                    if i in results:
                        continue
                    state = page.evaluate("() => window.__load")
                    if i in closed and state["first"] is not None:
                        results[i] = state
                        closed_at[i] = time.time()
                        contexts[i].close()
                    elif state["done"] is not None:
                        results[i] = state
                time.sleep(0.1)
            errors = sum(page_errors) + (n - len(results))
            shown = {}
            for i, page in enumerate(pages):
                if i not in closed:
                    errors += page.locator(ERRORS).count()
                    if i in results:
                        shown[i] = page_grid(page, url)
            time.sleep(1.0)  # let closed sessions' jobs end and the log flush
            sampler.stop.set()
        finally:
            browser.close()
    jobs = [json.loads(line) for line in queue_log.read_text().splitlines()] if queue_log.exists() else []
    jobs = [j for j in jobs if j["ended"] > start]  # not the warm-up's
    cancelled = sorted(j["ended"] for j in jobs if j["state"] == "cancelled")
    sampling = [j for j in jobs if j["items"] > 1]  # not the FID computations (one item each)
    step_s = [j["busy_s"] / j["items"] for j in sampling if j["state"] == "done"]
    stop_s = [round(end - close, 3) for close, end in zip(sorted(closed_at.values()), cancelled)]
    expected = expected_grids(path, list(range(n)))
    firsts = [r["first"] for r in results.values() if r["first"] is not None]
    images = [r["image"] for r in results.values() if r["image"] is not None]
    dones = [r["done"] for i, r in results.items() if i not in closed and r["done"] is not None]
    per_session = default_images(load_for_inference(path)[1])
    return {
        "sessions": n,
        "batching": batching,
        "closed": len(closed),
        "first_block_s": {"p50": quantile(firsts, 0.5), "p95": quantile(firsts, 0.95), "max": quantile(firsts, 1)},
        "first_image_s": {"p50": quantile(images, 0.5), "p95": quantile(images, 0.95)},
        "previews": previews,
        "last_block_s": {"p50": quantile(dones, 0.5), "p95": quantile(dones, 0.95), "max": quantile(dones, 1)},
        "finished": len(dones),
        "expected_to_finish": n - len(closed),
        "images_per_session": per_session,
        "images_per_s": round(per_session * len(dones) / max(dones), 2) if dones else None,
        "group_sizes": sorted((j.get("batched_with", 0) + 1 for j in sampling), reverse=True),
        "load_1min_before": load_before,
        "load_1min_after": load(),
        "errors": errors,
        "own_images": own_images({i: g for i, g in shown.items() if g is not None}, expected)
        and len(shown) == n - len(closed),
        "server_peak_rss_mb": round(sampler.rss_mb),
        "server_threads_max": sampler.threads,
        "closed_job_ended_after_s": stop_s,
        "closed_job_ended_after_steps": [round(s / (sum(step_s) / len(step_s)), 1) for s in stop_s] if step_s else None,
        "cancelled_jobs": len(cancelled),
    }


def table(rows: list[dict]) -> str:
    head = (
        "| sessions | batching | previews | closed | first block p50 / p95 (s) | last block p50 / p95 (s) | "
        "images/s | finished | errors | own images | server peak RSS (MB) | server threads | load before / after |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r['sessions']} | {'on' if r['batching'] else 'off'} | {'on' if r['previews'] else 'off'} | "
        f"{r['closed']} | {r['first_block_s']['p50']} / {r['first_block_s']['p95']} | "
        f"{r['last_block_s']['p50']} / {r['last_block_s']['p95']} | {r['images_per_s']} | "
        f"{r['finished']}/{r['expected_to_finish']} | {r['errors']} | {'yes' if r['own_images'] else 'NO'} | "
        f"{r['server_peak_rss_mb']} | {r['server_threads_max']} | {r['load_1min_before']} / {r['load_1min_after']} |"
        for r in rows
    ]
    return "\n".join([head, *lines])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8], help="session counts, e.g. 8 16")
    ap.add_argument(
        "--batching",
        nargs="+",
        choices=list(MODES),
        default=["on"],
        help="on: the app's batched generation; off: the app with --no-batching; both: 'on off'",
    )
    ap.add_argument(
        "--close-every", type=int, default=4, help="every k-th session closes after its first block (0: none)"
    )
    ap.add_argument("--no-previews", action="store_true", help="turn the denoising-step previews off on every page")
    ap.add_argument("--jobs", type=int, help="the app's --jobs (default: its own, the core count)")
    ap.add_argument("--checkpoint", type=Path, help="default: what `streamlit run app/main.py` opens first")
    ap.add_argument("--record", action="store_true", help="append the results to benchmarks/results/app_load.jsonl")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="app-load-"))
    path, stand_in, app_args = checkpoint_to_serve(args.checkpoint, tmp)
    app_args += ["--jobs", str(args.jobs)] if args.jobs else []
    before = machine()
    rows = []
    for n in args.sessions:
        for mode in args.batching:
            row = {
                "benchmark": "app_load",
                "checkpoint": str(path),
                "random_stand_in": stand_in,
                "jobs": args.jobs,
                **run_level(n, args.close_every, app_args + MODES[mode], path, tmp, not args.no_previews),
                "machine": before,
                "command": " ".join(["python -m benchmarks.app_load", *sys.argv[1:]]),
            }
            row["machine"] = {**before, "load_1min_after": load()}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.record:
                append_jsonl(row, ROOT / "benchmarks" / "results" / "app_load.jsonl")
    print(table(rows))


if __name__ == "__main__":
    main()
