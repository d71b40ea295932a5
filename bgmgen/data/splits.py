"""Fixed song split of POP909 (song ids "001" ... "909"), written down once.

- ``TEST_SONGS``: Diff-BGM's 42 test songs: 001-016, 019-022, 024-032, 036-047 and 049. Diff-BGM's
  split file lists 43 ids (the same plus 034), but 034 is excluded from its data set and skipped by
  its inference loop, so the effective test set is these 42 (see
  ../shared/reference/diffbgm-paper-and-code.md, section 2.3).
- ``VALID_SONGS``: every song whose number is a multiple of 20 from 060 to 900 (060, 080, ..., 900)
  and that is not a test song: 43 songs.
- ``TRAIN_SONGS``: every other song of 001-909 (824 songs). Songs 017, 018, 023, 033, 034, 035 and
  048 are therefore training songs.

The three lists are disjoint and together cover 001-909.
"""

from __future__ import annotations

N_SONGS = 909


def _ids(numbers) -> tuple[str, ...]:
    return tuple(f"{n:03d}" for n in numbers)


TEST_SONGS: tuple[str, ...] = _ids(
    [*range(1, 17), *range(19, 23), *range(24, 33), *range(36, 48), 49]
)
VALID_SONGS: tuple[str, ...] = tuple(
    s for s in _ids(range(60, 901, 20)) if s not in set(TEST_SONGS)
)
TRAIN_SONGS: tuple[str, ...] = tuple(
    s for s in _ids(range(1, N_SONGS + 1)) if s not in set(TEST_SONGS) | set(VALID_SONGS)
)

SPLITS: dict[str, tuple[str, ...]] = {
    "train": TRAIN_SONGS,
    "valid": VALID_SONGS,
    "test": TEST_SONGS,
}


def resolve_songs(spec: str) -> list[str]:
    """Turn "test" / "valid" / "train" or "1,002,17" into a list of 3-digit song ids."""
    spec = spec.strip()
    if spec in SPLITS:
        return list(SPLITS[spec])
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= N_SONGS:
            raise ValueError(f"song id {part!r} is not a number between 1 and {N_SONGS}")
        out.append(f"{int(part):03d}")
    return out
