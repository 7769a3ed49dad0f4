"""Stopping a training run cleanly: Ctrl-C or SIGTERM (a scheduler's notice) asks the loop to finish its step,
checkpoint and return; a second signal interrupts at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C (SIGINT) or SIGTERM; a second signal interrupts at once."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread only
        yield stop
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
