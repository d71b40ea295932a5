"""threads: the scheduling priority of background threads.

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
