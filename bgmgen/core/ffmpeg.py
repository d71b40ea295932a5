"""The one place that runs ffmpeg and ffprobe, with ffmpeg-python, always with argument lists.

Callers build their graphs with ffmpeg-python (`input_file(path)["v:0"].filter(...).output(...)`,
`ffmpeg.filter([a, b], "amix", ...)`); `command` compiles them with ffmpeg-python's `compile` to an
argument list and runs that with `subprocess` - never a shell, stdin from /dev/null, stderr captured:

* `run(spec, name=, what=, timeout=)`: run to the end; a `CompletedProcess` (stdout bytes, stderr text).
  A non-zero exit is an `FFmpegError` whose one line names the file, what was being done and ffmpeg's
  last meaningful message (`check=False` returns it instead); a timeout is an `FFmpegTimeout`.
* `pipe(spec, block_bytes)`: stdout as a stream of raw blocks (decode's frame pipe), stderr drained
  in a thread so the pipe never blocks.
* `probe(path, **options) -> dict`: ffprobe's JSON (format and streams, plus whatever the options ask),
  the command `ffmpeg.probe` builds; ffmpeg-python 0.2.0's `ffmpeg.probe` itself has no timeout and
  leaves ffprobe our stdin, so the same command goes through the runner here.
* `input_file(path)`: the input node for a local file, as a `file:` URL, so that a name that starts
  with a dash or looks like a protocol (`-clip.mp4`, `http:x.mp4`, `clip 1: café.mkv`) is read as a file.
* `version(binary)`: the version string `binary -version` reports.

A missing binary is a `MissingDependencyError`. Every ffmpeg command starts `-nostdin -hide_banner
-nostats` (and `-v <loglevel>` when one is given).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import ffmpeg

from bgmgen.core.errors import BgmgenError, MissingDependencyError

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
QUIET = ("-nostdin", "-hide_banner", "-nostats")  # before every ffmpeg command's own arguments
PROBE_TIMEOUT_S = 120
VERSION_TIMEOUT_S = 20
STDERR_LINES_KEPT = 50  # pipe(): first stderr lines kept for a warning
INSTALL_HINT = "install it with `apt-get install ffmpeg` (or run scripts/bootstrap)"
# ffmpeg's own summary and progress lines: never the reason a command failed.
FFMPEG_NOISE = re.compile(
    r"^(Conversion failed!|Exiting normally|Press \[q\]|\s*$|frame=|size=|video:|\[out#|Error while filtering"
    r"|Error closing|Stream mapping|  Stream #)"
)


class FFmpegError(BgmgenError):
    """ffmpeg or ffprobe ran and failed; `str()` is one line (file: what failed: ffmpeg's reason)."""

    def __init__(self, message: str, stderr: str = "", returncode: int | None = None):
        super().__init__(message)
        self.stderr = stderr
        self.returncode = returncode


class FFmpegTimeout(FFmpegError):
    """ffmpeg or ffprobe did not finish within its timeout (the process was killed)."""


# ------------------------------------------------------------------------------------- building


def file_url(path: str | Path) -> str:
    """An ffmpeg URL that is always read as a local file (absolute, with the `file:` protocol)."""
    return "file:" + str(Path(path).resolve())


def input_file(path: str | Path, **options):
    """ffmpeg-python's input node for the local file `path` (`options` are input options)."""
    return ffmpeg.input(file_url(path), **options)


def command(spec, *, loglevel: str | None = None, overwrite: bool = False) -> list[str]:
    """The ffmpeg argument list of an ffmpeg-python output spec (or of ready arguments after `ffmpeg`)."""
    head = [FFMPEG, *QUIET, *(("-v", loglevel) if loglevel else ())]
    if isinstance(spec, (list, tuple)):
        return [*head, *(str(a) for a in spec), *(["-y"] if overwrite else [])]
    return ffmpeg.compile(spec, cmd=head, overwrite_output=overwrite)


def last_meaningful_line(stderr: str) -> str:
    """The last stderr line that says why ffmpeg failed (not its summary or progress lines)."""
    lines = [ln.strip() for ln in stderr.splitlines()]
    for line in reversed(lines):
        if line and not FFMPEG_NOISE.match(line):
            return line[:300]
    return f"exit status without message ({lines[-1][:200] if lines else 'no output'})"


def _option_args(options: dict) -> list[str]:
    """{"select_streams": "v:0"} -> ["-select_streams", "v:0"] (None: a flag), as ffmpeg-python does."""
    args = []
    for key in sorted(options):
        args.append(f"-{key}")
        if options[key] is not None:
            args.append(str(options[key]))
    return args


# -------------------------------------------------------------------------------------- running


def _execute(cmd: list[str], *, name: str, what: str, timeout: float | None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise MissingDependencyError(f"{cmd[0]} not found on PATH; {INSTALL_HINT}") from None
    except subprocess.TimeoutExpired:
        raise FFmpegTimeout(f"{name}: {cmd[0]} timed out while {what}") from None
    proc.stderr = proc.stderr.decode("utf-8", "replace")
    return proc


def run(spec, *, name: str | Path, what: str, timeout: float | None = None, check: bool = True,
        loglevel: str | None = None, overwrite: bool = False) -> subprocess.CompletedProcess:
    """Run ffmpeg on `spec` (an ffmpeg-python output spec, or arguments after `ffmpeg`) to the end.

    `name` (the file the user knows) and `what` ("writing x.mp4") make the one-line error. Returns the
    CompletedProcess (stdout bytes, stderr text); a non-zero exit raises FFmpegError unless `check=False`."""
    proc = _execute(command(spec, loglevel=loglevel, overwrite=overwrite), name=str(name), what=what,
                    timeout=timeout)
    if check and proc.returncode != 0:
        raise FFmpegError(f"{name}: ffmpeg failed while {what}: {last_meaningful_line(proc.stderr)}",
                          proc.stderr, proc.returncode)
    return proc


class _Drain(threading.Thread):
    """Read a pipe's stderr to the end so ffmpeg never blocks on it; keep the first lines."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.lines = stream, []

    def run(self):
        for raw in self.stream:
            if len(self.lines) < STDERR_LINES_KEPT:
                self.lines.append(raw.decode("utf-8", "replace").strip())


def pipe(spec, block_bytes: int, *, loglevel: str | None = "error",
         stderr_lines: list[str] | None = None) -> Iterator[bytes]:
    """Run ffmpeg on `spec` (output "pipe:1") and yield its stdout in blocks of `block_bytes`.

    A block is shorter only at the end. When the process has ended (or the caller stopped reading),
    its first stderr lines are appended to `stderr_lines`. The exit status is not checked: a partly
    damaged stream yields what decodes, and the caller judges the amount."""
    cmd = command(spec, loglevel=loglevel)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise MissingDependencyError(f"{cmd[0]} not found on PATH; {INSTALL_HINT}") from None
    drain = _Drain(proc.stderr)
    drain.start()
    try:
        while True:
            buf = proc.stdout.read(block_bytes)
            if not buf:
                break
            yield buf
            if len(buf) < block_bytes:
                break
    finally:
        proc.stdout.close()
        proc.wait()
        drain.join(timeout=5)
        if stderr_lines is not None:
            stderr_lines.extend(drain.lines)


def probe(path: str | Path, *, timeout: float | None = PROBE_TIMEOUT_S, what: str = "reading it",
          **options) -> dict:
    """ffprobe's description of the local file `path`: {"format": ..., "streams": [...], ...}.

    The command of `ffmpeg.probe` (`-show_format -show_streams -of json`, then `options` such as
    `select_streams="v:0"`, `show_entries="packet=pts_time"`), with errors only, a timeout and the
    `file:` URL. FFmpegError when ffprobe fails or prints no JSON; FFmpegTimeout when it hangs."""
    name = str(path)
    cmd = [FFPROBE, "-v", "error", "-show_format", "-show_streams", "-of", "json", *_option_args(options),
           file_url(path)]
    proc = _execute(cmd, name=name, what=what, timeout=timeout)
    if proc.returncode != 0:
        raise FFmpegError(f"{name}: ffprobe cannot read it: {last_meaningful_line(proc.stderr)}",
                          proc.stderr, proc.returncode)
    try:
        data = json.loads(proc.stdout.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise FFmpegError(f"{name}: ffprobe printed no readable description", proc.stderr, proc.returncode)
    return data


def version(binary: str = FFMPEG) -> str | None:
    """The version `binary -version` reports (e.g. "5.1.9-0+deb12u1"), None when absent or broken."""
    exe = shutil.which(binary)
    if not exe:
        return None
    try:
        proc = _execute([exe, "-hide_banner", "-version"], name=exe, what="reporting its version",
                        timeout=VERSION_TIMEOUT_S)
        out = proc.stdout.decode("utf-8", "replace")
    except (OSError, BgmgenError):
        return None
    first = out.splitlines()[0] if out else ""
    parts = first.split()
    return parts[2] if len(parts) > 2 and parts[1] == "version" else (first or None)


__all__ = ["FFMPEG", "FFPROBE", "FFmpegError", "FFmpegTimeout", "command", "file_url", "input_file",
           "last_meaningful_line", "pipe", "probe", "run", "version"]
