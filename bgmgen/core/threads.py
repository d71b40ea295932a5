"""threads: background threads' priority, the count of background jobs under way, and imports begun
ahead of need.

Scoring runs work that only needs to be done by some later point (render parts, shot checks, report
keyframes) beside the sampler. On Linux each thread has its own nice value, so such work can yield to
the sampler instead of taking a share of its core. The shot checks and the keyframe decode also say
when they run (`background_job`), so that the sampler takes the second core only while neither does
(music.generate.SamplerThreads).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

# Read by the thread pools of numpy (OpenBLAS) and torch (GNU OpenMP) when they load, so the CLI sets them (unless
# set already) for the commands that score, before anything imports either; Ray's workers get them too.
# Scoring runs several jobs at once on few cores (the decode, the detector's windows and checks, the sampler,
# the render), so a pool's idle threads must not keep spinning on a core another job needs. Measured on the
# 60 s real clip, runs alternated with and without (2026-12-07/08):
SCORING_ENV = {
    # numpy's products in scoring (the loudness meters' filters) are small; its worker threads spun after
    # each one beside FluidSynth, ffmpeg and the report: render + mux 1.87 -> 1.77 s (ten pairs).
    "OPENBLAS_NUM_THREADS": "1",
    # An OpenMP thread with nothing to do spins this many times before it sleeps (libgomp's default here:
    # 300,000): 14 pairs, 10.14 -> 9.41 s median wall (paired -0.53 s), CPU paired -0.78 s. Against 10,000:
    # 1,000 +0.34 s, 30,000 +0.24 s paired (14 pairs each).
    "GOMP_SPINCOUNT": "10000",
}

_background_jobs = 0  # background jobs under way in this process (started and not ended)
_background_lock = threading.Lock()


def lower_thread_priority(niceness: int) -> None:
    """Raise the calling thread's nice value by `niceness` (lower its priority). Elsewhere than Linux, or
    where it is not allowed, nothing changes: the work is the same, only its priority."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
    except (AttributeError, OSError):
        pass


@contextlib.contextmanager
def background_job():
    """Count the calling thread's work (the shot checks, the report keyframes' decode) as a background
    job under way in this process, until the block ends."""
    global _background_jobs
    with _background_lock:
        _background_jobs += 1
    try:
        yield
    finally:
        with _background_lock:
            _background_jobs -= 1


def background_jobs() -> int:
    """Background jobs under way in this process."""
    return _background_jobs


def process_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity; every CPU where that cannot be asked)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


class OtherLoad:
    """How many of this process's CPUs the rest of the machine (other processes) kept busy since the
    last call, in cores: the busy time of the CPUs this process may run on (/proc/stat) minus this
    process's own CPU time, over the wall time between the calls. None where /proc/stat cannot be
    read (not Linux) and on the first call."""

    MIN_INTERVAL_S = 0.2  # /proc/stat counts in clock ticks (10 ms): shorter intervals say little

    def __init__(self):
        self.cpus = process_cpus()
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        """(wall time, busy seconds of self.cpus, this process's CPU seconds), or None."""
        wanted = {f"cpu{c}" for c in self.cpus}
        busy = 0
        try:
            with open("/proc/stat", encoding="ascii") as f:
                for line in f:
                    fields = line.split()
                    if fields and fields[0] in wanted:
                        ticks = [int(v) for v in fields[1:8]]  # user nice system idle iowait irq softirq
                        busy += sum(ticks) - ticks[3] - ticks[4]
        except (OSError, ValueError):
            return None
        mine = os.times()
        return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), mine.user + mine.system

    def cores(self) -> float | None:
        now, last = self._sample(), self._last
        self._last = now
        if now is None or last is None or now[0] - last[0] < self.MIN_INTERVAL_S:
            return None
        return max(0.0, ((now[1] - last[1]) - (now[2] - last[2])) / (now[0] - last[0]))


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
