"""threads: background threads' priority, and imports begun ahead of need.

Scoring runs work that only needs to be done by some later point (render parts, shot checks, report
keyframes) beside the sampler, whose single thread sets the pace. On Linux each thread has its own
nice value, so such work can yield to the sampler instead of taking a share of its core.
"""

from __future__ import annotations

import os
import threading


def lower_thread_priority(niceness: int) -> None:
    """Raise the calling thread's nice value by `niceness` (lower its priority). Elsewhere than Linux, or
    where it is not allowed, nothing changes: the work is the same, only its priority."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
    except (AttributeError, OSError):
        pass


def import_modules(modules) -> None:
    """Import `modules` now, in order. One that fails to import is left to the code that needs it to
    report (it imports it again there)."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S110 - reported by the stage that needs it
            pass


def wait_for_any(events, poll_s: float = 0.02) -> None:
    """Return once any of the threading.Events `events` is set (polled every `poll_s`: an Event
    cannot be waited on together with another)."""
    while not any(e.is_set() for e in events):
        events[0].wait(poll_s)


def import_in_background(*modules: str) -> threading.Thread:
    """`import_modules` in a daemon thread, begun now: whoever imports one later waits only for what
    is left (Python's import lock)."""
    thread = threading.Thread(target=import_modules, args=(modules,), name="bgmgen-import", daemon=True)
    thread.start()
    return thread
