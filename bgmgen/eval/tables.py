"""What eval's printed tables share: the console they go to and how a number is written."""

from __future__ import annotations

import math


def console():
    """A rich Console on stdout; 150 columns wide when stdout is not a terminal (logs, pipes)."""
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=150)


def fmt(v, digits: int = 3) -> str:
    """A number with ``digits`` decimals; "—" for None, NaN and inf."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{digits}f}"
