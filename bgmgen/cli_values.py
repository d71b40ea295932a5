"""Value types of the `bgmgen` command line: range-checked numbers, choices from lists other modules own
(read only when a value is checked, completed or shown: LATE), paths. Each parser raises ValueError with one
line; typer reports it as "Invalid value for '--flag': ...". Nothing heavy is imported here."""

from __future__ import annotations

import importlib
import math
import os
import re
from collections.abc import Callable
from typing import Any

import typer

from bgmgen.core.constants import MAX_BPM, MIN_BPM  # plain numbers: importing them costs nothing

# Names a help text or a value check may need, "module:attribute", imported only when needed.
LATE = {
    "MIX_MODES": "bgmgen.audio.mux:MODES",
    "MOODS": "bgmgen.video.moods:MOODS",
    "VARIANTS": "bgmgen.training.train:VARIANTS",
    "ARCHITECTURES": "bgmgen.music.config:ARCHITECTURES",
    "LAYOUTS": "bgmgen.music.controls:LAYOUTS",
    "TrainOptions": "bgmgen.training.train:TrainOptions",
    "SampleOptions": "bgmgen.training.sample:SampleOptions",
    "ALIGNS": "bgmgen.data.pop909:ALIGNS",
    "ORDERS": "bgmgen.music.config:UNMASKING_ORDERS",
    "GROUPS": "bgmgen.music.controls:GROUPS",
    "run_eval": "bgmgen.eval.evaluate:run_eval",
}


def late(name: str) -> Any:
    module, _, attribute = LATE[name].partition(":")
    # getattr: the attribute LATE names, looked up on its module once that is imported (on first use).
    return getattr(importlib.import_module(module), attribute)


# -- value parsers: one-line messages, typer reports them as "Invalid value for '--flag': ..." ----

def _number(kind: type, lo: float | None, hi: float | None, what: str) -> Callable[[Any], Any]:
    """A parser of `kind` (int or float) within lo..hi (None: no bound), named `what` in errors."""
    noun = "a whole number" if kind is int else "a number"
    fmt = (lambda v: str(int(v))) if kind is int else (lambda v: f"{v:g}")

    def parse(text):
        try:
            value = kind(text if isinstance(text, (int, float)) else str(text).strip())
        except ValueError:
            raise ValueError(f"expected {noun} ({what}), got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise ValueError(f"{what} must be a finite number, got {text!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = (f"at least {fmt(lo)}" if hi is None else f"at most {fmt(hi)}" if lo is None
                      else f"between {fmt(lo)} and {fmt(hi)}")
            raise ValueError(f"{what} must be {bounds}, got {fmt(value)}")
        return value

    return parse


bpm = _number(float, MIN_BPM, MAX_BPM, "the tempo in BPM")
positive_int = _number(int, 1, None, "a count")
seed_number = _number(int, 0, 2**32 - 1, "the seed")
guidance_scale = _number(float, 0.0, 20.0, "the guidance scale")
learning_rate = _number(float, 1e-7, 1.0, "the learning rate")
beat_offset = _number(float, None, None, "the beat offset")
temperature_value = _number(float, 0.05, 5.0, "the sampling temperature")
dropout_rate = _number(float, 0.0, 0.9, "the dropout rate")
port_number = _number(int, 1, 65535, "the port")


def _centred_kernel(unit: str, longest: int):
    """A parser of a kernel length in `unit`: 0 (no kernel) or odd (centred on its own position) up to
    `longest`."""
    length = _number(int, 0, longest, f"the kernel length in {unit}")

    def parse(text):
        value = length(text)
        if value % 2 == 0 and value != 0:
            raise ValueError(f"the kernel length in {unit} must be 0 or odd, got {value}")
        return value

    return parse


kernel_steps = _centred_kernel("steps", 9)  # v3's skip path and local heads
kernel_bars = _centred_kernel("bars", 7)  # v3's bar head


_HOST_PORT = re.compile(r"^[A-Za-z0-9._-]+:\d{1,5}$")


def ray_address(text):
    """An address as ray.init reads it: local (start Ray here), auto (the cluster this machine belongs to),
    ray://HOST:PORT (a cluster's client server) or HOST:PORT (its head, from one of its nodes)."""
    value = str(text).strip()
    if value in ("local", "auto") or _HOST_PORT.match(value) or (
            value.startswith("ray://") and len(value) > len("ray://")):
        return value
    raise ValueError(f"expected local, auto, ray://HOST:PORT or HOST:PORT (a Ray address), got {text!r}")


def one_of(name: str, kind: type = str, fold_case: bool = False) -> Callable[[Any], Any]:
    """A parser accepting one of the LATE list `name` (read when a value is given)."""

    def parse(text):
        allowed, token = tuple(late(name)), str(text).strip()
        try:
            value = kind(token.lower() if fold_case else token)
        except ValueError:
            value = None
        if value not in allowed:
            raise ValueError(f"{text!r} is not one of {', '.join(repr(str(c)) for c in allowed)}")
        return value

    return parse


def control_groups(text) -> str:
    """A comma-separated list of control groups (GROUPS), e.g. rhythm,harmony: each once, at least one;
    returned normalised (lower case, no spaces)."""
    allowed = tuple(late("GROUPS"))
    names = tuple(n.strip().lower() for n in str(text).split(",") if n.strip())
    unknown = [n for n in names if n not in allowed]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"expected control groups from {', '.join(allowed)} separated by commas, each once, "
                         f"got {text!r}")
    return ",".join(names)


def choice_option(name: str, *, kind: type = str, fold_case: bool = False, **kw) -> Any:
    """An option taking one of the LATE list `name`: checked, completed, and `{name}` in its help."""

    def complete(incomplete: str) -> list[str]:
        return [str(c) for c in late(name) if str(c).startswith(incomplete)]

    return typer.Option(parser=one_of(name, kind, fold_case), autocompletion=complete, **kw)


def absolute_path(text: str) -> str:
    return os.path.abspath(os.path.expanduser(text))


def _path(help: str, metavar: str = "PATH", absolute: bool = False) -> Any:
    """A file or folder option (`absolute`: made absolute, ~ expanded, as score records it)."""
    return typer.Option(metavar=metavar, help=help, **({"parser": absolute_path} if absolute else {}))


def _count(help: str) -> Any:
    return typer.Option(metavar="N", parser=positive_int, help=help)
