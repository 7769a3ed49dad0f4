"""The app's work queue: one per server process, shared by every browser session.

At most K jobs advance at once, one per worker thread, each worker on a fixed torch thread budget; the other jobs
wait in line. A job is an iterator tied to a session: the sampler's event generator (one item per denoising step),
or a one-item computation such as an FID. Workers advance a job one item at a time and check between items
whether it was cancelled or its session closed, so a stopped job ends at its next step and frees its slot.

Work is served block by block: a worker runs a job to its next boundary (a finished block), puts it back, and takes
the job that has been served the fewest blocks (ties: the oldest). A session that arrives while others generate
thus waits at most one block of each running job for its first block, instead of their whole generations; jobs
that have not started keep their arrival order, which is the place in line the page shows.

No Streamlit here: the app passes session ids and a function telling whether a session is still connected.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

WAITING, RUNNING, PAUSED, DONE, CANCELLED, FAILED = "waiting", "running", "paused", "done", "cancelled", "failed"
ENDED = (DONE, CANCELLED, FAILED)
POLL_S = 0.25  # how often a session waiting for its job looks again (place in line, closed tab)
log = logging.getLogger(__name__)  # one JSON line per ended job (the load benchmark reads them)


class Refused(ValueError):
    """Work the queue will not take now (the session's or the server's limit is reached); the message says why."""


class Cancelled(Exception):
    """The work a caller was waiting for was cancelled (its session reran or closed)."""


@dataclass(frozen=True)
class Limits:
    workers: int = 2  # K: jobs advanced at the same time
    threads: int = 1  # torch intra-op threads of each worker
    per_session: int = 2  # jobs one session may have queued or running (compare mode runs two)
    queue: int = 32  # jobs waiting to start, over all sessions; more are refused until the line shortens

    def __post_init__(self):
        for name in ("workers", "threads", "per_session", "queue"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be a positive integer.")


def cores() -> int:
    """The cores this process may run on (the affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def limits_from(argv: list[str], cpus: int | None = None) -> tuple[Limits, list[str]]:
    """Limits from the app's command line (`-- --jobs K --queue Q`) and the core count: K defaults to the cores,
    each worker gets cores // K torch threads (at least one). Returns the problems with the options too; a bad
    value falls back to its default instead of stopping the server."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--jobs", default=None, help="generations advanced at once (default: the core count)")
    ap.add_argument("--queue", default=None, help="generations waiting, over all sessions (default 32)")
    args, _ = ap.parse_known_args(argv)  # the folder options are catalog's
    cpus = cpus or cores()
    problems = []

    def positive(option: str, text: str | None, default: int) -> int:
        if text is None:
            return default
        if text.isdigit() and 0 < int(text) <= 1024:
            return int(text)
        problems.append(f"--{option} {text!r}: not an integer in 1..1024; using {default}.")
        return default

    workers = positive("jobs", args.jobs, cpus)
    return Limits(
        workers=workers, threads=max(1, cpus // workers), queue=positive("queue", args.queue, Limits.queue)
    ), problems


class Job:
    """One piece of queued work. Its owner reads it with Scheduler.follow; any thread may cancel it."""

    def __init__(self, seq: int, session: str, stream: Iterator, boundary: Callable, last: Callable, keep: Callable):
        self.seq, self.session = seq, session
        self._stream, self._boundary, self._last, self._keep = stream, boundary, last, keep
        self.state = WAITING
        self.served = 0  # boundaries reached (finished blocks)
        self.busy_s = 0.0  # seconds workers spent advancing it: its compute time, without the waits
        self.error: BaseException | None = None
        self._out: deque = deque()  # items kept for the owner, not read yet
        self._cancel = False
        self.started = False  # a worker has taken it at least once
        self.items = 0  # items (steps) advanced
        self.cancelled_at: float | None = None  # time.time() of the cancel request
        self.items_at_cancel = 0

    @property
    def ended(self) -> bool:
        return self.state in ENDED


def _always(item) -> bool:
    return True


def _never(item) -> bool:
    return False


class Scheduler:
    """K worker threads over a shared line of jobs (see the module docstring). `alive(session)` tells whether a
    session is still connected; the jobs of a closed one are cancelled at their next step."""

    def __init__(self, limits: Limits, alive: Callable[[str], bool] = _always):
        self.limits, self._alive = limits, alive
        self._cond = threading.Condition()
        self._line: list[Job] = []  # waiting and paused jobs
        self._jobs: set[Job] = set()  # every job not ended
        self._seq = itertools.count()
        self._running = 0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"workbench-worker-{i}", daemon=True)
            for i in range(limits.workers)
        ]
        for t in self._threads:
            t.start()

    # ---- the owner's side --------------------------------------------------------------------------------------
    def submit(
        self,
        session: str,
        stream: Iterator,
        boundary: Callable = _always,
        last: Callable = _never,
        keep: Callable = _always,
    ) -> Job:
        """Queue `stream` for `session`. A worker holds it until an item for which boundary(item) is true, and
        ends it after an item for which last(item) is true (or when it is exhausted); only items for which
        keep(item) is true reach the owner. Raises Refused when a limit is reached."""
        with self._cond:
            mine = sum(j.session == session and not j._cancel for j in self._jobs)
            waiting = sum(j.state == WAITING for j in self._line)
            if mine >= self.limits.per_session:
                raise Refused(
                    f"this page already has {mine} generations queued or running (at most "
                    f"{self.limits.per_session}). Fix: wait for them to finish, or press Stop."
                )
            if waiting >= self.limits.queue:
                raise Refused(
                    f"the server is busy: {waiting} generations are waiting to start (at most "
                    f"{self.limits.queue}). Fix: try again in a minute."
                )
            job = Job(next(self._seq), session, stream, boundary, last, keep)
            self._line.append(job)
            self._jobs.add(job)
            self._cond.notify_all()
        return job

    def call(self, session: str, fn: Callable[[], object]) -> object:
        """fn() on a worker, within the same limits as the sampling, and its result (waits in line like a job)."""
        job = self.submit(session, (fn() for _ in range(1)), last=_always)
        for got in self.follow([job]):
            if got is not None:
                return got[1]
        raise Cancelled("cancelled before it ran")

    def follow(self, jobs: Sequence[Job], poll_s: float = POLL_S) -> Iterator[tuple[int, object] | None]:
        """The kept items of `jobs` as they arrive, as (index, item), taking the jobs in turn; None after every
        `poll_s` without one (the owner redraws the place in line then). Ends when every job has ended and its
        items were read; raises the error of a job that failed. Jobs not ended when the owner stops reading
        (or is interrupted) are cancelled."""
        order = deque(range(len(jobs)))
        try:
            while order:
                deadline = time.monotonic() + poll_s
                with self._cond:
                    got = self._take(jobs, order)
                    while got is None and order and (left := deadline - time.monotonic()) > 0:
                        self._cond.wait(left)
                        got = self._take(jobs, order)
                if got is not None:
                    yield got
                elif order:
                    for job in jobs:
                        if not job.ended and not self._alive(job.session):
                            self.cancel(job)
                    yield None
        finally:
            for job in jobs:
                self.cancel(job)

    def _take(self, jobs: Sequence[Job], order: deque) -> tuple[int, object] | None:
        for _ in range(len(order)):
            i = order.popleft()
            job = jobs[i]
            if job._out:
                order.append(i)
                return i, job._out.popleft()
            if not job.ended:
                order.append(i)
            elif job.error is not None:
                raise job.error
        return None

    def waiting(self, job: Job, predicate: Callable = _always) -> int:
        """Items of `job` kept for its owner, not read yet, for which predicate(item) holds (an owner that falls
        behind skips drawing what a newer item already shows)."""
        with self._cond:
            return sum(1 for item in job._out if predicate(item))

    def cancel(self, job: Job) -> None:
        """Stop `job`: at once when it waits, at its next step when a worker holds it."""
        with self._cond:
            if job.ended:
                return
            job._cancel, job.cancelled_at, job.items_at_cancel = True, time.time(), job.items
            waiting = job in self._line
            if waiting:  # no worker holds it: end it here
                self._line.remove(job)
                self._end(job, CANCELLED)
            self._cond.notify_all()
        if waiting and hasattr(job._stream, "close"):
            job._stream.close()

    def cancel_session(self, session: str) -> int:
        """Cancel every job of `session` (it reran or closed); the number cancelled."""
        with self._cond:
            mine = [j for j in self._jobs if j.session == session and not j._cancel]
        for job in mine:
            self.cancel(job)
        return len(mine)

    def place(self, job: Job) -> int:
        """1-based place in line of a job that has not started (jobs that started come back ahead of none of
        those waiting, so nothing overtakes it but cancellations ahead of it); 0 once it started or ended."""
        with self._cond:
            if job.state != WAITING:
                return 0
            return 1 + sum(j.state == WAITING and j.seq < job.seq for j in self._line)

    def load(self) -> tuple[int, int]:
        """(jobs a worker holds now, jobs waiting to start)."""
        with self._cond:
            return self._running, sum(j.state == WAITING for j in self._line)

    def close(self) -> None:
        """Cancel everything and stop the workers (tests; a server's queue lives as long as the process)."""
        with self._cond:
            jobs = list(self._jobs)
        for job in jobs:
            self.cancel(job)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=10)

    # ---- the workers' side -------------------------------------------------------------------------------------
    def _work(self) -> None:
        torch.set_num_threads(self.limits.threads)  # per thread: each worker keeps its own budget
        while True:
            with self._cond:
                while not self._line and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = min(self._line, key=lambda j: (j.served, j.seq))  # fewest blocks served, then oldest
                self._line.remove(job)
                job.state, job.started = RUNNING, True
                self._running += 1
            state = self._advance(job)
            if state in ENDED and hasattr(job._stream, "close"):
                job._stream.close()  # runs the generator's cleanup in the thread that ran it
            with self._cond:
                self._running -= 1
                if state in ENDED:
                    self._end(job, state)
                else:
                    job.served += 1
                    job.state = PAUSED
                    self._line.append(job)
                self._cond.notify_all()

    def _advance(self, job: Job) -> str:
        """Run `job` to its next boundary; its new state (PAUSED, or how it ended)."""
        while True:
            if job._cancel or not self._alive(job.session):
                return CANCELLED
            start = time.perf_counter()
            try:
                with torch.no_grad():
                    item = next(job._stream)
            except StopIteration:
                return DONE
            except Exception as err:  # noqa: BLE001 - handed to the owner, who shows it
                job.error = err
                return FAILED
            finally:
                job.busy_s += time.perf_counter() - start
            job.items += 1
            if job._keep(item):
                with self._cond:
                    job._out.append(item)
                    self._cond.notify_all()
            if job._last(item):
                return DONE
            if job._boundary(item):
                return PAUSED

    def _end(self, job: Job, state: str) -> None:
        job.state = state
        self._jobs.discard(job)
        if log.isEnabledFor(logging.INFO):
            after = None if job.cancelled_at is None else job.items - job.items_at_cancel
            log.info(
                json.dumps(
                    {
                        "job": job.seq,
                        "session": job.session,
                        "state": state,
                        "items": job.items,
                        "blocks": job.served,
                        "busy_s": round(job.busy_s, 4),
                        "ended": time.time(),
                        "cancelled": job.cancelled_at,
                        "items_after_cancel": after,
                    }
                )
            )
