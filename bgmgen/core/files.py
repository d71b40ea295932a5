"""Small file helpers: atomic writes, content hashes (memoised), and the user cache folder."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only if the block succeeds.

    A reader never sees a half-written file, and a killed process leaves at most a `.tmp-*`
    file that no later run mistakes for a finished output.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{final.stem}-", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask  # mkstemp makes 0600; outputs should get the usual permissions
    os.chmod(tmp, mode)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)  # again: some writers (safetensors) recreate the file as 0600
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def user_cache_dir(*parts: str) -> Path:
    """bgmgen's folder in the user's cache (platformdirs: ~/.cache/bgmgen on Linux), or a subfolder."""
    try:
        from platformdirs import user_cache_dir as platform_cache_dir

        root = Path(platform_cache_dir("bgmgen"))
    except ImportError:  # pragma: no cover
        root = Path.home() / ".cache" / "bgmgen"
    return root.joinpath(*parts)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def content_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's content, memoised per (path, size, mtime) within the process."""
    p = os.path.abspath(path)
    st = os.stat(p)
    return _sha256_of(p, st.st_size, st.st_mtime_ns)


class Sha256Memo:
    """sha256 of weight files, memoised on disk by (path, size, mtime) so a 1 GB BLIP checkpoint
    is hashed once per machine, not once per video."""

    def __init__(self, cache_dir: str | None):
        self.file = Path(cache_dir or user_cache_dir()) / "weight-sha256.json"
        try:
            self.memo = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.memo = {}
        self.dirty = False

    def sha256(self, path: str | os.PathLike) -> str:
        p = Path(path)
        st = p.stat()
        key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in self.memo:
            self.memo[key] = sha256_file(p)
            self.dirty = True
        return self.memo[key]

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            with atomic_path(self.file) as tmp:
                tmp.write_text(json.dumps(self.memo, indent=0, sort_keys=True), encoding="utf-8")
            self.dirty = False
        except OSError:
            pass  # a cache, not an output
