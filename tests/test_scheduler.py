"""The app's work queue (app/scheduler.py): K limit, place in line, block-by-block service, per-session and queue
limits, cancel within one step (Stop, rerun, closed tab), failures, thread budget; and the real sampler through it.

Jobs here are small generators driven by events, so every property is checked without sleeping."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest
import torch
from single_thread import one_thread  # noqa: F401

import workbench as wb
from app.runs import Throttle, is_block, is_done
from app.scheduler import CANCELLED, DONE, FAILED, Cancelled, Limits, Refused, Scheduler, Share, limits_from

ROOT = Path(__file__).resolve().parent.parent

WAIT = 10  # seconds a test waits for a worker before it fails (never reached when the code is right)


@pytest.fixture
def queues():
    """The schedulers a test makes (with `scheduler`), closed after it: no worker thread outlives its test."""
    made: list[Scheduler] = []
    yield made
    for q in made:
        q.close()


def scheduler(made: list, alive=None, **limits) -> Scheduler:
    q = Scheduler(Limits(**limits), alive=alive or (lambda s: True))
    made.append(q)
    return q


def wait_for(predicate, what: str) -> None:
    done = threading.Event()
    for _ in range(WAIT * 100):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Gated:
    """A job of `items` items; each item waits until the test opens the gate for it. Records what ran where."""

    def __init__(self, name: str, items: int, trace: list, blocks_of: int = 1):
        self.name, self.items, self.trace, self.blocks_of = name, items, trace, blocks_of
        self.gate = threading.Semaphore(0)
        self.calls = 0
        self.closed = False
        self.inside = threading.Event()  # a worker is waiting inside an item

    def __iter__(self):
        try:
            for i in range(self.items):
                self.calls += 1
                self.inside.set()
                assert self.gate.acquire(timeout=WAIT), f"{self.name}: gate never opened"
                self.inside.clear()
                self.trace.append((self.name, i))
                yield (self.name, i, (i + 1) % self.blocks_of == 0)  # (job, item, ends a block)
        finally:
            self.closed = True

    def open(self, n: int = 1) -> None:
        for _ in range(n):
            self.gate.release()


def block_end(item) -> bool:
    return item[2]


def free(*jobs: Gated) -> None:
    for j in jobs:
        j.open(j.items)


def occupy(q: Scheduler) -> Gated:
    """Hold the only worker with a one-item job until `free` is called on it, so that the jobs submitted meanwhile
    wait in line together."""
    blocker = Gated("x", 1, [])
    q.submit("b", iter(blocker))
    wait_for(blocker.inside.is_set, "the worker busy")
    return blocker


# ---- limits ------------------------------------------------------------------------------------------------------
def test_at_most_K_jobs_run_at_once(queues):
    q = scheduler(queues, workers=2)
    trace: list = []
    jobs = [Gated(f"j{i}", 1, trace) for i in range(5)]
    handles = [q.submit("s" + str(i), iter(j)) for i, j in enumerate(jobs)]
    wait_for(lambda: sum(j.inside.is_set() for j in jobs) == 2, "two jobs inside")
    assert q.load() == (2, 3)
    assert [h.started for h in handles] == [True, True, False, False, False]
    assert [q.place(h) for h in handles] == [0, 0, 1, 2, 3]
    free(*jobs)
    wait_for(lambda: all(h.ended for h in handles), "all jobs to end")
    assert [h.state for h in handles] == [DONE] * 5 and q.load() == (0, 0)
    assert sorted(trace) == [(f"j{i}", 0) for i in range(5)]


def test_place_in_line_follows_arrival_and_cancellations(queues):
    q = scheduler(queues, workers=1)
    trace: list = []
    blocker, a, b, c = (Gated(n, 1, trace) for n in "xabc")
    hx = q.submit("s0", iter(blocker))
    wait_for(blocker.inside.is_set, "the blocker to start")
    ha, hb, hc = (q.submit(f"s{i}", iter(j)) for i, j in enumerate((a, b, c), 1))
    assert [q.place(h) for h in (hx, ha, hb, hc)] == [0, 1, 2, 3]
    q.cancel(ha)  # left the line: the others move up, its generator is closed without running
    assert ha.state == CANCELLED and a.calls == 0
    assert [q.place(h) for h in (hb, hc)] == [1, 2]
    free(blocker, b, c)
    wait_for(lambda: hc.ended, "the line to drain")
    assert trace == [("x", 0), ("b", 0), ("c", 0)]


def test_work_is_served_block_by_block(queues):
    """A job arriving while another generates gets its first block after the running block, not after the whole
    generation; then the two alternate (fewest blocks served first, ties to the oldest)."""
    q = scheduler(queues, workers=1)
    trace: list = []
    x, y = Gated("x", 6, trace, blocks_of=2), Gated("y", 4, trace, blocks_of=2)  # 3 and 2 blocks of 2 steps
    hx = q.submit("s1", iter(x), boundary=block_end)
    wait_for(x.inside.is_set, "x to start")
    hy = q.submit("s2", iter(y), boundary=block_end)
    free(x, y)
    wait_for(lambda: hx.ended and hy.ended, "both jobs")
    assert trace == [("x", 0), ("x", 1), ("y", 0), ("y", 1), ("x", 2), ("x", 3), ("y", 2), ("y", 3), ("x", 4), ("x", 5)]


def test_per_session_and_queue_limits_refuse_with_a_fix(queues):
    q = scheduler(queues, workers=1, per_session=2, queue=3)
    trace: list = []
    jobs = [Gated(f"j{i}", 1, trace) for i in range(6)]
    first = q.submit("alice", iter(jobs[0]))
    wait_for(jobs[0].inside.is_set, "the first job to start")
    q.submit("alice", iter(jobs[1]))
    with pytest.raises(Refused, match=r"already has 2 generations queued or running \(at most 2\)\. Fix:"):
        q.submit("alice", iter(jobs[2]))
    q.cancel(first)  # a cancelled job no longer counts against its session, even before its step ends
    q.submit("alice", iter(jobs[2]))
    q.submit("bob", iter(jobs[3]))
    with pytest.raises(Refused, match=r"server is busy: 3 generations are waiting to start \(at most 3\)\. Fix:"):
        q.submit("carol", iter(jobs[4]))
    free(*jobs)


def test_limits_from_command_line_and_cores():
    assert limits_from([], cpus=2) == (Limits(workers=2, threads=1), [])
    assert limits_from(["--checkpoints", "x", "--jobs", "4", "--queue", "8"], cpus=8) == (
        Limits(workers=4, threads=2, queue=8),
        [],
    )
    assert limits_from(["--jobs", "1"], cpus=2)[0] == Limits(workers=1, threads=2)
    assert limits_from(["--no-batching"], cpus=2)[0] == Limits(workers=2, threads=1, batching=False)
    assert limits_from([], cpus=2)[0].batching  # batching is on unless switched off
    for bad in ["0", "-3", "two", "1e9", "99999"]:
        limits, problems = limits_from(["--jobs", bad], cpus=2)
        assert limits == Limits(workers=2, threads=1) and problems and "--jobs" in problems[0]
    with pytest.raises(ValueError, match="workers=0"):
        Limits(workers=0)


def test_each_worker_keeps_its_thread_budget(queues):
    q = scheduler(queues, workers=2, threads=3)
    results = [q.call(f"s{i}", torch.get_num_threads) for i in range(4)]
    assert results == [3] * 4
    assert torch.get_num_threads() == 1  # the caller's own budget is untouched


# ---- cancel ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["cancel", "session closed", "owner stops reading"])
def test_cancel_stops_at_the_next_step_and_frees_the_slot(queues, how, caplog):
    caplog.set_level(logging.INFO, logger="app.scheduler")
    dead: set = set()
    q = scheduler(queues, alive=lambda s: s not in dead, workers=1)
    trace: list = []
    job, waiting = Gated("j", 100, trace, blocks_of=100), Gated("w", 1, trace)
    h = q.submit("s", iter(job), boundary=block_end)  # one long block: the worker holds it until it ends
    hw = q.submit("other", iter(waiting))
    items = q.follow([h], poll_s=0.01)
    job.open(3)
    got = [next(x for x in items if x is not None) for _ in range(3)]
    assert [g[1][1] for g in got] == [0, 1, 2]
    wait_for(job.inside.is_set, "step 4 to be under way")  # the cancel arrives during step 4
    if how == "cancel":
        q.cancel(h)
    elif how == "session closed":
        dead.add("s")
    else:
        items.close()  # the page's script was interrupted (rerun, Stop): follow's cleanup cancels
    job.open(1)  # step 4 finishes; there is no step 5
    waiting.open(1)
    wait_for(lambda: hw.ended, "the waiting job to get the slot")
    assert h.state == CANCELLED and job.calls == 4 and job.closed and hw.state == DONE
    assert trace[-1] == ("w", 0)
    ended = next(r for r in map(json.loads, caplog.messages) if r["job"] == h.seq)  # the job log line
    assert ended["state"] == CANCELLED and ended["items"] == 4
    if how != "session closed":  # a cancel request during step 4: that step finishes, no other starts
        assert ended["items_after_cancel"] == 1


def test_follow_cancels_waiting_jobs_of_a_closed_session(queues):
    dead: set = set()
    q = scheduler(queues, alive=lambda s: s not in dead, workers=1)
    trace: list = []
    blocker, mine = Gated("x", 1, trace), Gated("m", 1, trace)
    q.submit("other", iter(blocker))
    wait_for(blocker.inside.is_set, "the blocker")
    h = q.submit("s", iter(mine))
    dead.add("s")
    assert list(q.follow([h], poll_s=0.01)) == [None]  # one look, then the closed session's job is gone
    assert h.state == CANCELLED and mine.calls == 0 and q.load() == (1, 0)
    free(blocker)


def test_cancel_session_frees_all_its_work(queues):
    q = scheduler(queues, workers=1)
    trace: list = []
    jobs = [Gated(f"j{i}", 2, trace) for i in range(3)]
    hs = [q.submit("s" if i < 2 else "t", iter(j)) for i, j in enumerate(jobs)]
    wait_for(jobs[0].inside.is_set, "the first job")
    assert q.cancel_session("s") == 2
    jobs[0].open(1)
    jobs[2].open(2)
    wait_for(lambda: hs[2].ended, "the other session's job")
    assert [h.state for h in hs] == [CANCELLED, CANCELLED, DONE] and jobs[0].calls == 1 and jobs[1].calls == 0


def test_a_failing_job_reports_to_its_owner_and_the_queue_keeps_serving(queues):
    q = scheduler(queues, workers=1)

    def broken():
        yield 1
        raise RuntimeError("simulated sampler fault")

    h = q.submit("s", broken())
    with pytest.raises(RuntimeError, match="simulated sampler fault"):
        list(x for x in q.follow([h], poll_s=0.01) if x is not None)
    assert h.state == FAILED
    assert q.call("s", lambda: 42) == 42


def test_call_raises_cancelled_when_its_session_reruns(queues):
    q = scheduler(queues, workers=1)
    trace: list = []
    blocker = Gated("x", 1, trace)
    q.submit("other", iter(blocker))
    wait_for(blocker.inside.is_set, "the blocker")
    threading.Timer(0.05, q.cancel_session, args=("s",)).start()
    with pytest.raises(Cancelled):
        q.call("s", lambda: 1)
    free(blocker)


# ---- the real sampler through the queue --------------------------------------------------------------------------
def tiny():
    cfg = wb.preset("tiny", **{"model.diffusion_depth": 2, "model.width": 32})
    torch.manual_seed(0)
    return wb.build_model(cfg).requires_grad_(False), cfg


def test_sampler_events_through_the_queue_equal_direct_sampling(queues):
    model, cfg = tiny()
    q = scheduler(queues, workers=2)
    request = wb.sample_request(cfg, num_images=2, steps=3, seed=5)
    direct = [e.x_t for e in wb.generate_events(model, cfg, request) if e.kind == "block"]
    jobs = [
        q.submit(
            f"s{i}",
            wb.generate_events(model, cfg, wb.sample_request(cfg, num_images=2, steps=3, seed=5 + i)),
            boundary=is_block,
            last=is_done,
            keep=Throttle(False),
        )
        for i in range(2)
    ]
    got = {0: [], 1: []}
    for x in q.follow(jobs):
        if x is not None:
            got[x[0]].append(x[1])
    assert [e.block for e in got[0]] == list(range(cfg.model.num_blocks)) and got[0][-1].done
    assert all(torch.equal(a, e.x_t) for a, e in zip(direct, got[0]))  # the same images as sampled directly
    assert not torch.equal(got[0][-1].x_t, got[1][-1].x_t)  # each session its own seed, its own images
    assert all(j.state == DONE and j.busy_s > 0 for j in jobs)


def test_a_closed_sessions_sampler_stops_within_one_step(queues):
    model, cfg = tiny()
    dead: set = set()
    q = scheduler(queues, alive=lambda s: s not in dead, workers=1)
    steps = []

    def watched():
        for e in wb.generate_events(model, cfg, wb.sample_request(cfg, num_images=2, steps=4, seed=0)):
            steps.append(e.step)
            if e.kind == "step" and e.block == 1 and e.step == 2:
                dead.add("s")  # the tab closes while this step runs
            yield e

    h = q.submit("s", watched(), boundary=is_block, last=is_done)
    wait_for(lambda: h.ended, "the job to end")
    assert h.state == CANCELLED
    # block 0: 4 steps and its block event; block 1: 2 steps; nothing after the step during which the tab closed
    assert len(steps) == 5 + 2


# ---- batched generation ------------------------------------------------------------------------------------------
class SharedStreams:
    """Fake shared streams: together(payloads) yields items {i: (payload, step, ends a block)} for the payloads
    still in it, each step waiting for the gate; records every group started and what was sent into it."""

    def __init__(self, items: int, blocks_of: int):
        self.items, self.blocks_of = items, blocks_of
        self.groups: list[list] = []
        self.sent: list[tuple[int, set]] = []
        self.gate = threading.Semaphore(0)
        self.inside = threading.Event()

    def together(self, payloads: list):
        self.groups.append(list(payloads))
        live = set(range(len(payloads)))
        for step in range(self.items):
            self.inside.set()
            assert self.gate.acquire(timeout=WAIT), "gate never opened"
            self.inside.clear()
            got = yield {i: (payloads[i], step, (step + 1) % self.blocks_of == 0) for i in sorted(live)}
            if got:
                self.sent.append((step, set(got)))
                live -= set(got)

    @staticmethod
    def part(item: dict, i: int):
        return item[i]

    def share(self, key, payload) -> Share:
        return Share(key, payload, self.together, self.part)


def collect(q: Scheduler, jobs: list) -> dict[int, list]:
    got: dict[int, list] = {i: [] for i in range(len(jobs))}
    for x in q.follow(jobs, poll_s=0.01):
        if x is not None:
            got[x[0]].append(x[1])
    return got


@pytest.mark.parametrize("batching", [True, False])
def test_compatible_waiting_jobs_share_a_stream_split_over_the_workers(queues, batching):
    q = scheduler(queues, workers=2, per_session=8, batching=batching)
    trace: list = []
    blockers = [Gated(f"x{i}", 1, trace) for i in range(2)]
    for i, b in enumerate(blockers):
        q.submit(f"b{i}", iter(b))
    wait_for(lambda: all(b.inside.is_set() for b in blockers), "both workers busy")
    fake = SharedStreams(items=4, blocks_of=2)
    keys = ["a", "a", "b", "a", "a", None, "a"]  # five of key a, one of b, one that never shares
    jobs = [q.submit("s", None, boundary=block_end, share=fake.share(k, f"{k}{i}")) for i, k in enumerate(keys)]
    assert q.load() == (2, 7) and [q.place(j) for j in jobs] == list(range(1, 8))
    free(*blockers)
    fake.gate.release(1000)
    got = collect(q, jobs)
    if batching:  # key a: 5 jobs over K=2 workers, 3 + 2 in arrival order; b and None alone
        assert sorted(fake.groups) == sorted([["a0", "a1", "a3"], ["a4", "a6"], ["b2"], ["None5"]])
        assert [j.batched_with for j in jobs] == [2, 2, 0, 2, 1, 0, 1]
    else:
        assert sorted(fake.groups) == sorted([[f"{k}{i}"] for i, k in enumerate(keys)])
    for i, k in enumerate(keys):  # each job got exactly its own items, every step
        assert [(p, s) for p, s, _ in got[i]] == [(f"{k}{i}", s) for s in range(4)]
    assert all(j.state == DONE for j in jobs)


def test_a_job_arriving_mid_way_joins_a_new_group_at_the_next_block(queues):
    q = scheduler(queues, workers=1, per_session=8)
    blocker = occupy(q)
    fake = SharedStreams(items=4, blocks_of=2)
    first = [q.submit("s", None, boundary=block_end, share=fake.share("a", f"a{i}")) for i in range(2)]
    free(blocker)
    fake.gate.release(1)
    wait_for(lambda: fake.inside.is_set() and first[0].items == 1, "the first group's step 1 under way")
    later = [q.submit("s", None, boundary=block_end, share=fake.share("a", f"a{i}")) for i in range(2, 4)]
    fake.gate.release(1000)
    got = collect(q, first + later)
    assert fake.groups == [["a0", "a1"], ["a2", "a3"]]  # not [a0, a1, a2, a3]: the first was under way
    assert all(len(v) == 4 for v in got.values())


def test_a_job_that_stops_leaves_its_group_and_the_others_go_on(queues):
    q = scheduler(queues, workers=1, per_session=8)
    blocker = occupy(q)
    fake = SharedStreams(items=6, blocks_of=2)
    jobs = [q.submit("s", None, boundary=block_end, share=fake.share("a", f"a{i}")) for i in range(3)]
    free(blocker)
    fake.gate.release(3)  # block 0 and the first step of block 1
    wait_for(lambda: fake.inside.is_set() and jobs[0].items == 3, "step 4 under way")
    q.cancel(jobs[1])  # during step 4: it ends after it, the stream hears of it at the next step
    fake.gate.release(1000)
    got = collect(q, jobs)
    assert [j.state for j in jobs] == [DONE, CANCELLED, DONE]
    assert [len(got[i]) for i in range(3)] == [6, 4, 6] and jobs[1].items == 4
    assert fake.sent == [(3, {1})]  # sent once, when step 5 was asked for


def page_share(loaded, steps: int, num_images: int, seed: int):
    from app.controls import Side
    from app.runs import share

    return share(loaded, Side(2, steps, "ddim", None, 1.0), num_images, seed)


def same_image(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to a matmul's rounding across batch sizes (as tests/test_sampling_request states it)."""
    return a.shape == b.shape and float((a - b).abs().max()) <= 1e-4 * float(b.abs().max())


def test_pages_in_one_batch_get_their_own_images_and_an_incompatible_page_runs_apart(queues):
    from app.runs import Loaded

    model, cfg = tiny()
    loaded = Loaded(model, cfg, None, None, None)
    q = scheduler(queues, workers=1)
    blocker = occupy(q)
    pages = [(3, 2, 5), (3, 3, 6), (4, 2, 7), (3, 1, 8)]  # (S, images, seed): the third page samples S=4
    jobs = [
        q.submit(f"s{i}", None, is_block, is_done, Throttle(False), page_share(loaded, *p)) for i, p in enumerate(pages)
    ]
    free(blocker)
    got = collect(q, jobs)
    assert [j.batched_with for j in jobs] == [2, 2, 0, 2] and all(j.state == DONE for j in jobs)
    for i, (steps, n, seed) in enumerate(pages):
        assert [e.block for e in got[i]] == list(range(cfg.model.num_blocks)) and got[i][-1].x_t.shape[0] == n
        assert same_image(got[i][-1].x_t, wb.generate(model, cfg, num_images=n, seed=seed, steps=steps)), i


def test_stopping_one_page_leaves_the_others_images_and_stops_computing_its_own(queues):
    from app.runs import Loaded

    model, cfg = tiny()
    loaded = Loaded(model, cfg, None, None, None)
    q = scheduler(queues, workers=1)
    blocker = occupy(q)
    rows, denoise = [], model.denoise_step
    model.denoise_step = lambda cache, k, z, xt, t, d=None: rows.append((k, xt.shape[0])) or denoise(
        cache, k, z, xt, t, d
    )
    jobs: list = []

    def stop_after_block_0(event) -> bool:  # page 1 presses Stop as its first block arrives (on the worker)
        if event.kind == "block" and event.block == 0:
            q.cancel(jobs[1])
        return event.kind == "block"

    keeps = [Throttle(False), stop_after_block_0, Throttle(False)]
    pages = [(2, 5), (3, 6), (1, 8)]
    jobs += [
        q.submit(f"s{i}", None, is_block, is_done, keeps[i], page_share(loaded, 3, *p)) for i, p in enumerate(pages)
    ]
    free(blocker)
    got = collect(q, jobs)
    assert [j.state for j in jobs] == [DONE, CANCELLED, DONE] and [e.block for e in got[1]] == [0]
    assert {n for k, n in rows if k == 0} == {6} and {n for k, n in rows if k > 0} == {3}  # its rows left
    for i in (0, 2):
        n, seed = pages[i]
        assert same_image(got[i][-1].x_t, wb.generate(model, cfg, num_images=n, seed=seed, steps=3)), i
