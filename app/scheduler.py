"""The app's work queue: one per server process, shared by every browser session.

At most K jobs advance at once, one per worker thread, each worker on a fixed torch thread budget; the other jobs
wait in line. A job is an iterator tied to a session: the sampler's event generator (one item per denoising step),
or a one-item computation such as an FID. Workers advance a job one item at a time and check between items
whether it was cancelled or its session closed, so a stopped job ends at its next step and frees its slot.

Work is served block by block: a worker runs a job to its next boundary (a finished block), puts it back, and takes
the job that has been served the fewest blocks (ties: the oldest). A session that arrives while others generate
thus waits at most one block of each running job for its first block, instead of their whole generations; jobs
that have not started keep their arrival order, which is the place in line the page shows.

Batched generation: a job submitted with a `Share` (its batch key and how to run several such jobs as one stream)
may advance in one model evaluation per step with others. When a worker takes a waiting job that has a share, it
takes every waiting job with an equal key too and splits them into at most K groups of nearly equal size (so that
the K workers share them) of at most `Limits.batch_rows` images each; each group then runs, and is served block by
block, as one job. A job that arrives while a group generates waits as any other, and joins a new group formed
when a worker takes the next job (a block boundary of a running one), with the compatible jobs waiting then; it
never joins a group already under way. Each job of a group receives only its own items (Share.part); when one
stops (Stop, rerun, closed tab) it ends at the next step, the group stops computing its images from the next
block on, and the others go on with the images they would have had. `--no-batching` (Limits.batching=False)
runs every job on its own, for side-by-side measurements.

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
from collections.abc import Callable, Hashable, Iterator, Sequence
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
    batching: bool = True  # compatible jobs share their model evaluations (batched generation)
    batch_rows: int = 256  # images in one shared batch at most

    def __post_init__(self):
        for name in ("workers", "threads", "per_session", "queue", "batch_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be a positive integer.")


def cores() -> int:
    """The cores this process may run on (the affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def limits_from(argv: list[str], cpus: int | None = None) -> tuple[Limits, list[str]]:
    """Limits from the app's command line (`-- --jobs K --queue Q [--no-batching]`) and the core count: K defaults
    to the cores, each worker gets cores // K torch threads (at least one). Returns the problems with the options
    too; a bad value falls back to its default instead of stopping the server."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--jobs", default=None, help="generations advanced at once (default: the core count)")
    ap.add_argument("--queue", default=None, help="generations waiting, over all sessions (default 32)")
    ap.add_argument("--no-batching", action="store_true", help="every generation its own forward passes")
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
        workers=workers,
        threads=max(1, cpus // workers),
        queue=positive("queue", args.queue, Limits.queue),
        batching=not args.no_batching,
    ), problems


@dataclass(frozen=True)
class Share:
    """How a job may share its model evaluations with other jobs. Jobs with equal `key`s (None: never) may run
    as one stream, `together(payloads)` over their payloads in order; part(item, i) is the share of an item of
    that stream that belongs to payload i. The stream takes `send(indices)` of the payloads whose jobs ended
    (and stops computing them from its next boundary on). `rows`: the job's images (the size of its share)."""

    key: Hashable | None
    payload: object
    together: Callable[[list], Iterator]
    part: Callable[[object, int], object]
    rows: int = 1


class Job:
    """One piece of queued work. Its owner reads it with Scheduler.follow; any thread may cancel it."""

    def __init__(
        self,
        seq: int,
        session: str,
        stream: Iterator | None,
        boundary: Callable,
        last: Callable,
        keep: Callable,
        share: Share | None = None,
    ):
        self.seq, self.session = seq, session
        self._stream, self._boundary, self._last, self._keep = stream, boundary, last, keep
        self.share = share
        self.group: _Group | None = None  # the group it runs in (a job with a share), once formed
        self.batched_with = 0  # other jobs in its group when the group started
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


class _Group:
    """Jobs with equal share keys, advanced as one stream: the unit a worker takes (as a job without a share)."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs  # in payload order; before the start a cancelled job leaves the list, after it stays
        self.seq = min(j.seq for j in jobs)
        self.served = 0
        self.stream: Iterator | None = None
        self.leaving: set[int] = set()  # payload indices of jobs that ended since the last send
        for job in jobs:
            job.group = self

    @property
    def live(self) -> list[tuple[int, Job]]:
        return [(i, j) for i, j in enumerate(self.jobs) if not j.ended]


def _split(jobs: list[Job], groups: int, rows: int) -> list[list[Job]]:
    """`jobs` in order, cut into `groups` runs of nearly equal size, each cut again where it exceeds `rows`
    images (a job larger than that runs alone)."""
    size, extra = divmod(len(jobs), groups)
    runs, start = [], 0
    for g in range(groups):
        end = start + size + (g < extra)
        run: list[Job] = []
        for job in jobs[start:end]:
            if run and sum(j.share.rows for j in run) + job.share.rows > rows:
                runs.append(run)
                run = []
            run.append(job)
        runs.append(run)
        start = end
    return [r for r in runs if r]


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
        stream: Iterator | None,
        boundary: Callable = _always,
        last: Callable = _never,
        keep: Callable = _always,
        share: Share | None = None,
    ) -> Job:
        """Queue `stream` for `session`. A worker holds it until an item for which boundary(item) is true, and
        ends it after an item for which last(item) is true (or when it is exhausted); only items for which
        keep(item) is true reach the owner. With a `share`, the stream (None allowed) is share.together over the
        job's group, and the three tests see the job's own part of each item. Raises Refused when a limit is
        reached."""
        if stream is None and share is None:
            raise ValueError("submit: no stream and no share. Fix: pass the job's iterator, or how it shares one.")
        with self._cond:
            mine = sum(j.session == session and not j._cancel for j in self._jobs)
            waiting = sum(j.state == WAITING for j in self._jobs)
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
            job = Job(next(self._seq), session, stream, boundary, last, keep, share)
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
        """Stop `job`: at once when it waits, at its next step when a worker holds it (a job of a group: the
        group goes on without it)."""
        with self._cond:
            if job.ended:
                return
            job._cancel, job.cancelled_at, job.items_at_cancel = True, time.time(), job.items
            stream = self._leave_line(job)
            self._cond.notify_all()
        if stream is not None and hasattr(stream, "close"):
            stream.close()

    def _leave_line(self, job: Job) -> Iterator | None:
        """End a cancelled job that no worker holds (under the lock); the stream to close, if nothing else needs
        it any more."""
        group = job.group
        if group is None:
            if job not in self._line:
                return None  # a worker holds it: it ends at its next step
            self._line.remove(job)
            self._end(job, CANCELLED)
            return job._stream
        if group not in self._line:
            return None
        self._end(job, CANCELLED)
        if group.stream is None:  # not started: it leaves the group
            group.jobs.remove(job)
        else:
            group.leaving.add(group.jobs.index(job))
        if group.live:
            return None
        self._line.remove(group)
        return group.stream

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
            return 1 + sum(j.state == WAITING and j.seq < job.seq for j in self._jobs)

    def load(self) -> tuple[int, int]:
        """(jobs a worker holds now, jobs waiting to start); a group counts its jobs."""
        with self._cond:
            return self._running, sum(j.state == WAITING for j in self._jobs)

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
                unit = min(self._line, key=lambda u: (u.served, u.seq))  # fewest blocks served, then oldest
                self._line.remove(unit)
                if isinstance(unit, Job) and unit.share is not None:
                    unit = self._form(unit)
                held = [j for _, j in unit.live] if isinstance(unit, _Group) else [unit]
                for job in held:
                    job.state, job.started = RUNNING, True
                self._running += len(held)
            if isinstance(unit, _Group):
                state, stream = self._advance_group(unit), unit.stream
            else:
                state, stream = self._advance(unit), unit._stream
            if state in ENDED and hasattr(stream, "close"):
                stream.close()  # runs the generator's cleanup in the thread that ran it
            with self._cond:
                self._running -= len(held)
                for job in (j for j in held if not j.ended):
                    if state in ENDED:
                        self._end(job, state)
                    else:
                        job.served += 1
                        job.state = PAUSED
                if state not in ENDED:
                    unit.served += 1
                    self._line.append(unit)
                self._cond.notify_all()

    def _form(self, job: Job) -> _Group:
        """The group `job` starts in (under the lock): with batching, every waiting job whose share key equals
        its own, split into at most K groups (the others go back in line, to the next workers)."""
        key = job.share.key
        if not self.limits.batching or key is None:
            return _Group([job])
        mates = [j for j in self._line if isinstance(j, Job) and j.share is not None and j.share.key == key]
        for mate in mates:
            self._line.remove(mate)
        jobs = sorted([job, *mates], key=lambda j: j.seq)
        groups = [_Group(run) for run in _split(jobs, min(self.limits.workers, len(jobs)), self.limits.batch_rows)]
        mine = next(g for g in groups if job in g.jobs)
        self._line.extend(g for g in groups if g is not mine)
        return mine

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
            self._deliver(job, item)
            if job._last(item):
                return DONE
            if job._boundary(item):
                return PAUSED

    def _deliver(self, job: Job, item) -> None:
        if job._keep(item):
            with self._cond:
                job._out.append(item)
                self._cond.notify_all()

    def _leavers(self, group: _Group) -> set[int]:
        """End the group's jobs that were cancelled or whose session closed; the payload indices of every job
        that ended since the last send (before the start they leave the group instead)."""
        closed = {j.session for _, j in group.live if not self._alive(j.session)}  # outside the lock
        with self._cond:
            for i, job in group.live:
                if job._cancel or job.session in closed:
                    self._end(job, CANCELLED)
                    group.leaving.add(i)
            if group.stream is None:
                group.jobs = [j for j in group.jobs if not j.ended]
                group.leaving.clear()
            leaving, group.leaving = group.leaving, set()
        return leaving

    def _advance_group(self, group: _Group) -> str:
        """Run a group's shared stream to its next boundary (starting it on the first call), each live job getting
        its own part of every item; the jobs that ended are sent to the stream, which stops computing them. The
        group's new state."""
        while True:
            leaving = self._leavers(group)
            live = group.live
            if not live:
                return CANCELLED
            start = time.perf_counter()
            try:
                with torch.no_grad():
                    if group.stream is None:
                        group.stream = iter(live[0][1].share.together([j.share.payload for _, j in live]))
                        for _, job in live:
                            job.batched_with = len(live) - 1
                    send = getattr(group.stream, "send", None)
                    item = send(leaving) if leaving and send else next(group.stream)
            except StopIteration:
                return DONE
            except Exception as err:  # noqa: BLE001 - handed to the owners, who show it
                for _, job in live:
                    job.error = err
                return FAILED
            finally:
                spent = time.perf_counter() - start
                for _, job in live:
                    job.busy_s += spent  # each job waited for the whole shared step
            boundary = False
            for i, job in live:
                part = job.share.part(item, i)
                job.items += 1
                self._deliver(job, part)
                boundary = boundary or job._boundary(part)
                if job._last(part):
                    with self._cond:
                        self._end(job, DONE)
            if not group.live:
                return DONE
            if boundary:
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
                        "batched_with": job.batched_with,
                        "ended": time.time(),
                        "cancelled": job.cancelled_at,
                        "items_after_cancel": after,
                    }
                )
            )
