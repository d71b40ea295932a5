"""Wall-clock timing of named stages (seconds, accumulated per name)."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator


class Stopwatch:
    """`with sw.stage("name"):` adds the block's wall time to sw.timings["name"] (4 decimals)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, report: Callable[[str], None] | None = None) -> Iterator[None]:
        if report:
            report(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 4)
