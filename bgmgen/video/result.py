"""What the analysis returns: `VideoAnalysis` (frozen: complete when returned, never changed after)
and the report keyframes (`Keyframes`, delivered by a Future-like `KeyframeJob`), plus the cache
entry that holds both (`save_entry` / `load_entry`: `<stem>.npz` arrays, no pickle, + `<stem>.json`).

The keyframes are apart from the analysis because only report.png needs them: when nothing else
does (no CLIP, no BLIP), analysis.py decodes them in a background thread while the music is
generated, and the report stage waits for them (`KeyframeJob.result()`).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from bgmgen.core.files import atomic_path
from bgmgen.video import motion as motion_mod
from bgmgen.video import shots as shots_mod
from bgmgen.video.probe import VideoInfo

ANALYSIS_VERSION = f"analysis-3+{shots_mod.STAGE_VERSION}+{motion_mod.STAGE_VERSION}"


def _r(x, nd: int = 5):
    return None if x is None else np.round(np.asarray(x, dtype=np.float64), nd).tolist()


@dataclass(frozen=True)
class VideoAnalysis:
    info: VideoInfo
    cuts_s: list[float]
    shots: list[tuple[float, float]]
    motion_times_s: np.ndarray
    motion: np.ndarray
    motion_abs: np.ndarray
    onsets: list[tuple[float, float]]
    keyframe_times_s: list[float]  # one per shot (for the report alone: the longest shots'); pictures: Keyframes
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
    periodicity: dict = field(default_factory=dict)  # motion.periodicity: {} or {period_s, phase_s, strength, n_cycles}
    sound: dict = field(default_factory=dict)  # sound.sound_features: {} or {level_db, active_share, onset_rate, activity}
    mood_evidence: dict = field(default_factory=dict)  # semantic.estimate_mood_with_evidence: features, per-source scores
    # "transnetv2 int8" / "... bf16" / "... fp32" / "histogram": the cut list does not depend on the
    # precision, the probabilities away from the threshold do (the report keyframes, the caption frames)
    shot_detector: str = ""

    def arrays(self) -> dict[str, np.ndarray]:
        """The array fields that are set (the cache entry's npz, with the keyframes)."""
        arrays = {"motion_times_s": self.motion_times_s, "motion": self.motion, "motion_abs": self.motion_abs,
                  "clip_embeddings": self.clip_embeddings, "clip_times_s": self.clip_times_s,
                  "caption_embeddings": self.caption_embeddings, "shot_probabilities": self.shot_probabilities}
        return {k: np.asarray(v) for k, v in arrays.items() if v is not None}

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
            "periodicity": dict(self.periodicity),
            "sound": dict(self.sound),
            "mood_evidence": self.mood_evidence,
            "shot_detector": self.shot_detector,
        }


_ARRAYS = ("motion_times_s", "motion", "motion_abs", "keyframes", "clip_embeddings", "clip_times_s",
           "caption_embeddings", "shot_probabilities")


def save_entry(stem: str | os.PathLike, analysis: VideoAnalysis, keyframes: np.ndarray) -> tuple[Path, Path]:
    """Write `<stem>.npz` (arrays, the keyframes among them) and `<stem>.json` (the rest), each
    atomically; json last, so an entry with a json is complete."""
    stem = Path(stem)
    arrays = {**analysis.arrays(), "keyframes": np.asarray(keyframes)}
    npz = stem.with_name(stem.name + ".npz")
    with atomic_path(npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: arrays[k] for k in _ARRAYS if k in arrays})
    meta = {k: v for k, v in analysis.to_json().items() if k not in _ARRAYS}
    meta["onsets"] = [list(o) for o in analysis.onsets]
    meta["version"] = ANALYSIS_VERSION
    js = stem.with_name(stem.name + ".json")
    with atomic_path(js) as tmp:
        tmp.write_text(json.dumps(meta, ensure_ascii=False, sort_keys=True))
    return npz, js


def load_entry(stem: str | os.PathLike) -> tuple[VideoAnalysis, np.ndarray]:
    """(analysis, keyframes) of a cache entry; ValueError for another analysis version."""
    stem = Path(stem)
    meta = json.loads(stem.with_name(stem.name + ".json").read_text())
    if meta.get("version") != ANALYSIS_VERSION:
        raise ValueError("analysis version differs")
    with np.load(stem.with_name(stem.name + ".npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    analysis = VideoAnalysis(
        info=VideoInfo(**meta["info"]),
        cuts_s=[float(c) for c in meta["cuts_s"]],
        shots=[(float(a), float(b)) for a, b in meta["shots"]],
        motion_times_s=arrays["motion_times_s"],
        motion=arrays["motion"],
        motion_abs=arrays["motion_abs"],
        onsets=[(float(t), float(s)) for t, s in meta["onsets"]],
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
        periodicity=dict(meta.get("periodicity") or {}),
        sound=dict(meta.get("sound") or {}),
        mood_evidence=dict(meta.get("mood_evidence") or {}),
        shot_detector=str(meta.get("shot_detector", "")),
    )
    return analysis, arrays["keyframes"]


@dataclass(frozen=True)
class Keyframes:
    """The report keyframes of an analysis, and what decoding them after it returned added."""

    frames: np.ndarray  # [n_shots, 90, w, 3] uint8, one per shot at display aspect, for report.png
    timings_s: dict[str, float] = field(default_factory=dict)  # background decode: keyframes_deferred, cache_save
    warnings: list[str] = field(default_factory=list)  # decode warnings that came after the analysis returned
    cache_path: str | None = None  # background decode: the cache entry written once they were in

    def record(self, analysis: VideoAnalysis) -> dict:
        """run.json's "analysis": analysis.to_json() with this decode's timings, warnings and cache
        path (what the analysis cache entry written with these keyframes says)."""
        js = analysis.to_json()
        js["timings_s"].update({k: round(float(v), 4) for k, v in self.timings_s.items()})
        js["warnings"] += [w for w in self.warnings if w not in js["warnings"]]
        if self.cache_path:
            js["cache"]["path"] = self.cache_path
        return js


class KeyframeJob:
    """The report keyframes, like a concurrent.futures.Future: `result()` waits for them (and re-raises
    a decode error). `finished` when they came with the analysis; `start` decodes them in a daemon
    thread (AnalysisOptions.defer_keyframes)."""

    def __init__(self, future: concurrent.futures.Future[Keyframes]):
        self._future = future

    @classmethod
    def finished(cls, keyframes: Keyframes) -> KeyframeJob:
        future: concurrent.futures.Future[Keyframes] = concurrent.futures.Future()
        future.set_result(keyframes)
        return cls(future)

    @classmethod
    def start(cls, work: Callable[[], Keyframes]) -> KeyframeJob:
        future: concurrent.futures.Future[Keyframes] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(work())
            except BaseException as err:  # noqa: BLE001 - handed to whoever waits
                future.set_exception(err)

        threading.Thread(target=run, name="keyframes", daemon=True).start()
        return cls(future)

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> Keyframes:
        return self._future.result(timeout)
