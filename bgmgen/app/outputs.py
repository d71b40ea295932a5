"""Inputs and output folders: which files a batch scores, where each one's outputs go, and the
hidden partial folder that is renamed into place only when every output is complete.

For each video X the outputs (X.mid, X.wav, X.mp4, report.png, run.json) are written into a hidden
temporary folder `PARENT/.NAME.partial-<pid>-<random>` beside the final folder, and that folder is
renamed into place only when every output is complete. A run killed at any moment (even SIGKILL)
therefore leaves either the previous complete folder or none at all, plus a hidden partial folder
that the next run removes; nothing that a re-run could take as finished.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from bgmgen.core.errors import InputError

VIDEO_EXTENSIONS = frozenset(
    "mp4 mov mkv webm avi m4v mpg mpeg ts mts wmv flv 3gp".split())
PARTIAL_TAG = ".partial-"
OLD_TAG = ".old-"
# Status of one input in the summary.
SCORED, UP_TO_DATE, REJECTED, FAILED = "scored", "up to date", "rejected", "failed"


@dataclass
class Job:
    """One input video and where its outputs go."""

    source: str                       # the INPUT argument it came from
    path: Path | None                 # the video (absolute); None when the argument was rejected
    out_dir: Path | None = None       # final output folder
    stem: str = ""                    # X in X.mid, X.wav, X.mp4
    status: str = ""
    message: str = ""
    seconds: float = 0.0
    summary: dict = field(default_factory=dict)


def video_path(source: str) -> Path:
    """The video an INPUT argument names, as its Job holds it (absolute, ~ expanded)."""
    return Path(os.path.abspath(os.path.expanduser(source)))


def is_video_name(path: Path) -> bool:
    return path.suffix.lower().lstrip(".") in VIDEO_EXTENSIONS


def expand_inputs(inputs: list[str]) -> list[Job]:
    """Files as given; folders -> the videos directly inside (sorted, hidden files skipped).

    Folders are not searched recursively, so `X.bgm/X.mp4` outputs beside the inputs are never
    taken as inputs on the next run.
    """
    jobs: list[Job] = []
    seen: set[Path] = set()

    def add(source: str, p: Path) -> None:
        key = p.resolve()
        if key in seen:
            return
        seen.add(key)
        jobs.append(Job(source=source, path=video_path(str(p))))

    for source in inputs:
        p = Path(os.path.expanduser(source))
        if p.is_dir():
            try:
                entries = sorted(p.iterdir(), key=lambda q: q.name)
            except OSError as err:
                jobs.append(Job(source, None, status=REJECTED,
                                message=f"{source}: cannot list the folder ({err.strerror}); check its permissions"))
                continue
            videos = [q for q in entries
                      if q.is_file() and not q.name.startswith(".") and is_video_name(q)]
            if not videos:
                jobs.append(Job(source, None, status=REJECTED,
                                message=f"{source}: the folder holds no videos "
                                        f"({', '.join(sorted(VIDEO_EXTENSIONS))}); give video files or another folder"))
                continue
            for q in videos:
                add(source, q)
        elif p.exists():
            if not p.is_file():
                jobs.append(Job(source, None, status=REJECTED,
                                message=f"{source}: not a regular file; give a video file or a folder"))
                continue
            add(source, p)
        else:
            jobs.append(Job(source, None, status=REJECTED,
                            message=f"{source}: no such file or folder; check the path"))
    return jobs


def assign_outputs(jobs: list[Job], out: str | None) -> None:
    """Output folder per job: OUT/X/ or X.bgm/ beside the input; clashes get the extension added."""
    taken: dict[Path, Job] = {}
    for job in jobs:
        if job.path is None:
            continue
        stem = job.path.stem or job.path.name
        parent = Path(out) if out else job.path.parent
        name = stem if out else f"{stem}.bgm"
        candidate = parent / name
        if candidate in taken:
            ext = job.path.suffix.lstrip(".") or "noext"
            name = f"{stem}-{ext}" if out else f"{stem}-{ext}.bgm"
            candidate = parent / name
            n = 2
            while candidate in taken:
                candidate = parent / (f"{name}-{n}")
                n += 1
        taken[candidate] = job
        job.out_dir = candidate
        job.stem = stem


def writable_location(folder: Path) -> str | None:
    """None when `folder` (existing or not) can be created and written; else the reason.

    Nothing is left behind: the probe folder is removed at once and missing folders are not
    created. (os.access is not used: it says yes to root even on read-only mounts.)
    """
    folder = Path(os.path.abspath(folder))
    probe_at = folder
    while not probe_at.exists():
        if probe_at.parent == probe_at:
            return "no existing parent folder"
        probe_at = probe_at.parent
    if not probe_at.is_dir():
        return f"{probe_at} is not a folder"
    try:
        tmp = tempfile.mkdtemp(prefix=".bgmgen-write-test-", dir=probe_at)
    except OSError as err:
        return f"{probe_at} is not writable ({err.strerror or err})"
    try:
        os.rmdir(tmp)
    except OSError:
        pass
    return None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(final: Path) -> None:
    """Delete hidden partial/old folders of `final` left by processes that no longer run."""
    parent = final.parent
    if not parent.is_dir():
        return
    for tag in (PARTIAL_TAG, OLD_TAG):
        prefix = f".{final.name}{tag}"
        for entry in parent.iterdir():
            if not entry.name.startswith(prefix):
                continue
            pid_text = entry.name[len(prefix):].split("-", 1)[0]
            if pid_text.isdigit() and _pid_alive(int(pid_text)):
                continue
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def partial_folder(final: Path) -> Iterator[Path]:
    """Yield an empty hidden folder beside `final`; on success it replaces `final` in one rename.

    On any failure (or KeyboardInterrupt) the partial folder is deleted and `final` is untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = final.parent / f".{final.name}{PARTIAL_TAG}{tag}"
    tmp.mkdir()
    try:
        yield tmp
        if final.exists() or final.is_symlink():
            if not final.is_dir() or final.is_symlink():
                raise InputError(f"{final}: exists and is not an output folder; move it away or use --out")
            old = final.parent / f".{final.name}{OLD_TAG}{tag}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
