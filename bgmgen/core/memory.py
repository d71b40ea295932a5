"""memory: how this process's heap (glibc malloc) keeps freed memory, and when it gives it back.

Scoring allocates and frees the same large blocks over and over: each TransNetV2 step its activations
(up to ~33 MB a tensor in the fp32 checks), each decoded chunk its frames. glibc's defaults give such
blocks back to the system as soon as they are freed (above a dynamic mmap threshold, and by trimming
the heaps' tops), so the next step faults every page in again: the kernel zeroes it first.

* `reuse_freed_memory()`, once per scoring process: freed blocks stay in the heap for the next step to
  reuse (mallopt: blocks below 64 MB come from the heap, a heap keeps up to 256 MB free at its top, and
  grows 64 MB at a time).
* `release_free_memory(force)`: what is freed goes back (malloc_trim) once the resident size exceeds
  TRIM_ABOVE_BYTES, or at once with `force` (the detector is done with a video).
* `resident_bytes()`.

Elsewhere than glibc these do nothing.

May import: the standard library only.
"""

from __future__ import annotations

import os

# mallopt's parameters (glibc's malloc.h) and the values reuse_freed_memory sets.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
HEAP_SETTINGS = ((M_MMAP_THRESHOLD, 64 << 20), (M_TRIM_THRESHOLD, 256 << 20), (M_TOP_PAD, 64 << 20))
TRIM_ABOVE_BYTES = 1_900_000_000  # see release_free_memory

_libc = None  # glibc, once looked up (False where there is none)
_reusing = False


def _glibc():
    global _libc
    if _libc is None:
        try:
            import ctypes

            lib = ctypes.CDLL("libc.so.6")
            _libc = lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else False
        except OSError:
            _libc = False
    return _libc


def reuse_freed_memory() -> bool:
    """Keep freed heap memory in this process for reuse (HEAP_SETTINGS; see the module's docstring).
    Once per process; True when the settings are in force.

    Measured on the 60 s real clip (2026-12-07, 16 pairs of runs alternated with the commit before): 11.18 ->
    10.94 s median wall, CPU time -1.04 s (median of the paired differences); page faults 0.85 M ->
    0.42-0.53 M. The peak resident size grows: 60 s clip 1.40-1.57 -> 1.63-1.96 GB, 10-minute clip
    1.94-2.07 -> 2.00-2.26 GB. The MIDI is the same: only where memory comes from changes."""
    global _reusing
    libc = _glibc()
    if not _reusing and libc:
        _reusing = all(libc.mallopt(param, value) == 1 for param, value in HEAP_SETTINGS)
    return _reusing


def release_free_memory(force: bool = False) -> None:
    """Give freed heap memory back to the system (glibc malloc_trim) once this process's resident size
    exceeds TRIM_ABOVE_BYTES, or now with `force` (the detector's work for a video is over: what it
    freed would only raise the peak of the stages after it).

    Each TransNetV2 window allocates and frees the same ~30 MB of activations from 2 threads, and
    glibc's heap fragments under that pattern: on a 10-minute video the resident size grew by
    1.6 GB over the run (measured), although the live data stays constant. Trimming keeps it flat.
    A trim has a price, too: the next window faults its activations in again. Trimming after every
    window cost the 60 s real clip 1.29 M page faults and 3.2 s of system time, against 0.85 M and
    2.6 s with no trim at all, while its resident size peaked at 1.49 and 1.55 GB (2026-12-07); the
    10-minute clip peaked at 2.22 GB with no trim. Hence the threshold, and one trim when the detector
    is done (10-minute clip: peak 2.24-2.26 GB with the threshold alone, 1.84 GB with that trim)."""
    libc = _glibc()
    if libc and (force or resident_bytes() > TRIM_ABOVE_BYTES):
        libc.malloc_trim(0)


def resident_bytes() -> int:
    """This process's resident set size now (/proc/self/statm; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
