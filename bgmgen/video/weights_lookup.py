"""Where the semantic models' weights come from, shared by clip.py, captions.py and text.py.

* the hub probe: `hub_reachable()` decides in at most 3 s whether a download may be tried (offline
  flags win; huggingface_hub on its own retries for about 50 s against an unreachable host);
* the Hugging Face cache, read with no network (`hf_cached_file`, `hf_cached_snapshot`; both
  answer from `hf_cache_has_repo` when the repo has no folder there), and the
  downloads tried only when the hub answers (`hf_download_file`, `hf_download_snapshot`);
* the weight files of a local folder (`weight_files_in`);
* one process-wide cache of loaded models (`load_once`), the device check, quiet transformers
  loading, and the one-line text of an exception (`short_error`).

A model whose weights are absent raises `WeightsUnavailable(reason)`; semantic.SemanticModels turns
the reason into its one-line fallback.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import urlparse

from bgmgen.core.errors import MissingDependencyError

HUB_PROBE_TIMEOUT_S = 3.0

_MODEL_CACHE: dict[tuple, Any] = {}  # (kind, source, device, variant) -> loaded model bundle
_CACHE_LOCK = threading.Lock()
_HUB_STATE: dict[str, tuple[bool, str]] = {}

T = TypeVar("T")


class WeightsUnavailable(Exception):
    """A model's weights are absent or unreadable; str(err) is the one-line reason."""


# ---------------------------------------------------------------------------------------------
# Hub access
# ---------------------------------------------------------------------------------------------


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_reachable() -> tuple[bool, str]:
    """(reachable, reason). Offline flags win; otherwise a TCP connect to the endpoint, 3 s at most.

    huggingface_hub on its own retries for about 50 s before giving up on an unreachable host;
    this probe decides in milliseconds (DNS failure) to 3 s (silent firewall). Cached per process.
    """
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return False, "HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import constants as hf_constants

        endpoint = hf_constants.ENDPOINT
        # getattr: a third-party module constant, read defensively (not every huggingface_hub has it).
        if getattr(hf_constants, "HF_HUB_OFFLINE", False):
            return False, "HF_HUB_OFFLINE is set"
    except Exception:  # pragma: no cover - huggingface_hub is a dependency
        endpoint = "https://huggingface.co"
    if endpoint in _HUB_STATE:
        return _HUB_STATE[endpoint]
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[tuple[bool, str]] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S):
                result.append((True, f"{host} reachable"))
        except OSError as err:
            result.append((False, f"{host} unreachable ({err.__class__.__name__})"))

    t = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    t.start()
    t.join(HUB_PROBE_TIMEOUT_S + 0.5)
    state = result[0] if result else (False, f"{host} did not answer within {HUB_PROBE_TIMEOUT_S:.0f} s")
    _HUB_STATE[endpoint] = state
    return state


def hf_cache_has_repo(repo_id: str) -> bool:
    """Whether the HF cache has a folder for model repo_id at all (`models--{org}--{name}`, the
    cache's layout), read without importing huggingface_hub's API: importing it takes about 1 s of
    CPU here, on the way to every run's first video, mostly to learn that nothing is cached."""
    from huggingface_hub import constants  # the cache location (HF_HUB_CACHE, HF_HOME), ~15 ms

    return (Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))).is_dir()


def hf_cached_file(repo_id: str, filenames: Sequence[str]) -> str | None:
    """First of `filenames` present in the HF cache for repo_id (no network)."""
    if not hf_cache_has_repo(repo_id):
        return None
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        try:
            hit = try_to_load_from_cache(repo_id, name)
        except Exception:
            hit = None
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def hf_download_file(repo_id: str, filenames: Sequence[str]) -> str | None:
    from huggingface_hub import hf_hub_download

    for name in filenames:
        try:
            return hf_hub_download(repo_id, name, etag_timeout=10)
        except Exception:
            continue
    return None


def weight_files_in(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        files = sorted(folder.glob("*.bin")) + sorted(folder.glob("*.pth"))
    return files


def hf_cached_snapshot(repo_id: str) -> Path | None:
    """The HF cache's snapshot folder of repo_id when it holds config.json and weights (no network)."""
    if not hf_cache_has_repo(repo_id):
        return None
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None
    if (folder / "config.json").is_file() and weight_files_in(folder):
        return folder
    return None


def hf_download_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.txt", "*.safetensors"], etag_timeout=10))
        if not weight_files_in(folder):
            folder = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.txt", "pytorch_model.bin"], etag_timeout=10))
    except Exception:
        return None
    return folder if weight_files_in(folder) else None


def snapshot_or_download(repo_id: str, absent: str) -> Path:
    """The HF cache's snapshot of repo_id, else a download when the hub answers; otherwise
    WeightsUnavailable("`absent` (REPO not in the HF cache, WHY)")."""
    folder = hf_cached_snapshot(repo_id)
    if folder is None:
        ok, why = hub_reachable()
        if ok:
            folder = hf_download_snapshot(repo_id)
            why = "download failed" if folder is None else why
        if folder is None:
            raise WeightsUnavailable(f"{absent} ({repo_id} not in the HF cache, {why})")
    return folder


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_once(key: tuple, build: Callable[[], T]) -> T:
    """The model bundle cached under `key` for this process, built (under a lock) on first use."""
    with _CACHE_LOCK:
        bundle = _MODEL_CACHE.get(key)
        if bundle is None:
            bundle = build()
            _MODEL_CACHE[key] = bundle
    return bundle


def check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MissingDependencyError(f"device {device!r} requested but CUDA is not available; use --device cpu")


class QuietTransformers:
    """No "Loading weights" progress bars or info logs from transformers while we load."""

    def __enter__(self):
        from transformers.utils import logging as tlog

        self._bar = tlog.is_progress_bar_enabled()
        self._level = tlog.get_verbosity()
        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
        return self

    def __exit__(self, *exc):
        from transformers.utils import logging as tlog

        if self._bar:
            tlog.enable_progress_bar()
        tlog.set_verbosity(self._level)
        return False


def record_files(dst: dict[str, str], name: str, files: list[str]) -> None:
    """Weight files under `name` (one file) or `name/FILE` (several) in a weight_files dict."""
    if len(files) == 1:
        dst[name] = files[0]
    else:
        for f in files:
            dst[f"{name}/{Path(f).name}"] = f


def short_error(err: BaseException) -> str:
    """One short line for an exception: no ANSI codes, no newlines, no ';' (the line separator)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    text = " ".join(text.split()).replace(";", ",")
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return f"{err.__class__.__name__}: {first[:160]}"
