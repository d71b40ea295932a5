"""The one place that runs ffmpeg and ffprobe (through ffmpeg-python), always with argument lists.

Graphs are built with ffmpeg-python's filter API and compiled to an argument list; nothing goes
through a shell. Inputs are passed with a `file:` prefix so a name that starts with a protocol
(`http:`, `concat:`) or a dash is always read as a local file.
"""

from __future__ import annotations

import shutil
import subprocess

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"


def version(binary: str = FFMPEG) -> str | None:
    """The version `binary -version` reports (e.g. "5.1.9-0+deb12u1"), None when absent."""
    exe = shutil.which(binary)
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.splitlines()[0] if out else ""
    parts = first.split()
    return parts[2] if len(parts) > 2 and parts[1] == "version" else (first or None)
