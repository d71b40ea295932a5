"""The console: rich progress and one-line messages on a private copy of stderr, and the sink
that keeps native libraries' prints (libav, FluidSynth) off the user's terminal."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator

from bgmgen.core.errors import one_line


def make_console(quiet: bool = False):
    """The rich console for progress, notes, errors and the summary.

    It writes to a duplicate of file descriptor 2 taken now, so it stays visible while the
    per-video work runs with fds 1 and 2 pointed at a sink (see `native_output_sink`).
    """
    from rich.console import Console

    try:
        stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8",
                           errors="replace")
    except (OSError, ValueError, AttributeError):  # no real fd (e.g. an embedding host)
        stream = sys.stderr
    console = Console(file=stream, quiet=quiet, highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 120)  # logs and pipes: do not fold the summary at 80
    return console


def say_error(console, msg: str) -> None:
    """`bgmgen: error: <one line>` on the console's stream, even with --quiet, never wrapped."""
    line = f"bgmgen: error: {one_line(msg)}"
    if console is None:
        print(line, file=sys.stderr, flush=True)
    elif console.quiet:
        console.file.write(line + "\n")
        console.file.flush()
    else:
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def say(console, text: str) -> None:
    """One line of markup on the console (silent with --quiet), never wrapped."""
    console.print(text, soft_wrap=True, highlight=False)


@contextlib.contextmanager
def native_output_sink(enabled: bool) -> Iterator[None]:
    """Point fds 1 and 2 at a temporary file while one video is processed.

    libav inside decord, FluidSynth and some model loaders write straight to the process's stdout
    or stderr (e.g. "[h264 @ 0x...] Invalid NAL unit size" for a damaged stream). Those lines would
    break "one clear line per bad input" and --quiet. The console writes to its own duplicate of
    fd 2, so progress and errors stay visible. Disabled with --debug (everything shows).
    """
    if not enabled:
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink, \
            open(os.devnull, "w", encoding="utf-8") as py_sink, \
            contextlib.redirect_stdout(py_sink), contextlib.redirect_stderr(py_sink):
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def escape(text: str) -> str:
    """`text` with rich markup characters escaped (file names may hold brackets)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)
