"""analysis: everything the planner needs to know about a video, computed once and cached.

    probe -> decode (one pass, 96x54, streamed) -> shots (TransNetV2) -> motion / periodicity / picture
          statistics -> original sound (sound.py) -> keyframes (one sparse pass at 384x384) -> CLIP, captions, caption embeddings, mood (semantic.py)

`analyse_video(path, options, models)` returns a `VideoAnalysis` (frozen, complete);
`analyse_video_with_keyframes` returns it with the report keyframes as a `KeyframeJob` (result.py),
which with `AnalysisOptions.defer_keyframes` (and neither CLIP nor BLIP needing frames) decodes them
in a background thread while later stages run. `analyse_video_provisional` (what `bgmgen score`
uses) returns as soon as the shot detector's fast pass is done: the analysis of those probabilities,
while the checks of near-threshold frames run in the background, and `settle()` for the final one. `AnalysisModels` holds TransNetV2 and the semantic
models for a whole batch. The options are in options.py.

Cache: one entry per (file content, analysis version, options that change the result), stored as
`<key>.npz` (arrays, no pickle) + `<key>.json` in the user cache folder (platformdirs) or
`AnalysisOptions.cache_dir`, written once per analysis: before it returns, or by the keyframe
thread once the keyframes it holds are in. The file identity is the sha256 of its full content
(about 1 GB/s here, so 0.1 s for a 60 s 720p video; a renamed or copied file still hits, an edited
one never does); `bgmgen.core.files.content_sha256` memoises it per (path, size, mtime) so the CLI
can reuse it for run.json. `device` and `require_semantic` are not part of the key (they do not
change a successful result). An analysis made with a semantic fallback (no CLIP/BLIP weights) stays
cached after weights appear: use `--no-cache`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bgmgen.core.errors import BgmgenError, InputError, MissingDependencyError, one_line
from bgmgen.core.files import content_sha256, user_cache_dir
from bgmgen.core.threads import background_job, lower_thread_priority
from bgmgen.core.timing import Stopwatch
from bgmgen.video import motion as motion_mod
from bgmgen.video import semantic
from bgmgen.video import shots as shots_mod
from bgmgen.video import sound as sound_mod
from bgmgen.video.decode import FrameChunk, scan_small
from bgmgen.video.options import NOT_IN_CACHE_KEY, AnalysisOptions
from bgmgen.video.probe import probe
from bgmgen.video.result import ANALYSIS_VERSION, KeyframeJob, Keyframes, VideoAnalysis, load_entry, save_entry
from bgmgen.video.scan_ahead import drop_scan

# The nice value the deferred keyframe decode adds to its thread (see shots.CHECKS_NICENESS).
KEYFRAMES_NICENESS = 10

# ------------------------------------------------------------------------------------------- models


class AnalysisModels:
    """TransNetV2 and the semantic models, loaded lazily once per process and reused across a batch."""

    def __init__(self, options: AnalysisOptions):
        self.options = options
        self._shots = None
        self._semantic: semantic.SemanticModels | None = None
        self.fallbacks: dict[str, str] = {}
        self.weight_files: dict[str, str] = {}
        self.timings_s: dict[str, float] = {}
        # Set once the shot detector (or its fallback) is loaded: scoring starts its other loads then.
        self.shot_detector_loaded = threading.Event()
        # Videos analysed side by side (a web page's takes share these models) load each model once;
        # one lock per model, so that one video's two loads still run side by side.
        self._loading_shots, self._loading_semantic = threading.Lock(), threading.Lock()

    @property
    def shot_detector(self):
        with self._loading_shots:
            return self._load_shot_detector()

    def _load_shot_detector(self):
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
            self.shot_detector_loaded.set()
        return self._shots

    @property
    def semantic(self) -> semantic.SemanticModels:
        with self._loading_semantic:
            if self._semantic is None:
                t = time.perf_counter()
                self._semantic = semantic.SemanticModels(self.options)
                self.timings_s["load_semantic"] = time.perf_counter() - t
            return self._semantic


# -------------------------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    return user_cache_dir("analysis")


def cache_key(path: str | os.PathLike, options: AnalysisOptions) -> str:
    opts = {k: v for k, v in dataclasses.asdict(options).items() if k not in NOT_IN_CACHE_KEY}
    for k in ("clip_weights", "blip_weights", "text_encoder"):  # a path: key on what is there
        if opts.get(k):
            try:
                st = os.stat(opts[k])
                opts[k] = f"{os.path.abspath(opts[k])}|{st.st_size}|{st.st_mtime_ns}"
            except OSError:
                pass
    blob = json.dumps({"file": content_sha256(path), "version": ANALYSIS_VERSION, "options": opts,
                       "semantic_sources": semantic.cached_weight_sources(options)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


# --------------------------------------------------------------------------------------- the stages


class _PassOne:
    """Consumer of the all-frames pass: TransNetV2 input and per-frame statistics. The detector loads
    in the background (importing torch takes ~2 s here); the moment it is there (its future's
    callback, in the loading thread), the frames decoded so far go into a stream, and later frames
    stream into it as they come, so its windows run while decoding goes on (shots.ShotStream).
    Waiting for the next chunk instead left the detector idle for up to a chunk's decode (0.9 s
    on a 60 s clip)."""

    def __init__(self, detector: concurrent.futures.Future):
        self.detector = detector
        self.stream = None
        self.tn: list[np.ndarray] = []  # frames not yet in a stream
        self.stats = motion_mod.FrameStatsAccumulator()
        self.lock = threading.Lock()  # the stream and `tn`, between the decode and the detector's callback
        self.cancelled = False
        detector.add_done_callback(lambda _: self._start_stream())

    def _start_stream(self) -> None:
        """Once the detector is loaded: a stream with the frames so far (a no-op after the first call,
        after cancel(), for the histogram fallback or when the load failed)."""
        if not self.detector.done() or self.detector.exception() is not None:
            return  # a failed load is reported by predict(), which asks for the detector
        det = self.detector.result()
        with self.lock:
            if self.stream is None and not self.cancelled and isinstance(det, shots_mod.ShotDetector):
                # the histogram fallback takes all frames at the end
                self.stream = det.stream()
                for tn in self.tn:
                    self.stream.add(tn)
                self.tn.clear()

    def add(self, chunk: FrameChunk) -> None:
        tn = shots_mod.pool_to_tn(chunk.rgb)
        with self.lock:
            if self.stream is not None:
                self.stream.add(tn)
            else:
                self.tn.append(tn)
        self.stats.add(chunk)

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            if self.stream is not None:
                self.stream.cancel()

    def predict(self, defer_checks: bool = False) -> shots_mod.PendingChecks:
        """The transition probabilities, final or with near-threshold checks still running (defer_checks)."""
        self.detector.result()  # the detector loaded (a failed load raises here); its callback started the stream
        self._start_stream()  # (when the callback has not run yet: futures call them after waking waiters)
        if self.stream is not None:
            pending = self.stream.finish(defer_checks=defer_checks)
            return pending if defer_checks else shots_mod.PendingChecks.settled(pending)
        empty = np.zeros((0, shots_mod.TN_H, shots_mod.TN_W, 3), np.uint8)
        probs = self.detector.result().predict(np.concatenate(self.tn) if self.tn else empty)
        self.tn.clear()
        return shots_mod.PendingChecks.settled(probs)


def _shot_bounds(cut_frames: list[int], times: np.ndarray, duration: float) -> tuple[list[float], list]:
    cuts_s = [round(float(times[c]), 4) for c in cut_frames]  # 0.1 ms: exact through JSON
    edges = [0.0, *cuts_s, round(float(duration), 4)]
    return cuts_s, [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def analyse_video(path, options: AnalysisOptions | None = None, models: AnalysisModels | None = None,
                  progress: Callable[[str], None] | None = None) -> VideoAnalysis:
    """The analysis of the video at `path`, complete, its cache entry written (keyframes are decoded
    with it: `defer_keyframes` only matters to analyse_video_with_keyframes)."""
    options = dataclasses.replace(options or AnalysisOptions(), defer_keyframes=False)
    return analyse_video_with_keyframes(path, options, models, progress)[0]


def analyse_video_with_keyframes(path, options: AnalysisOptions | None = None, models: AnalysisModels | None = None,
                                 progress: Callable[[str], None] | None = None) -> tuple[VideoAnalysis, KeyframeJob]:
    """(the analysis, its report keyframes). The analysis is complete when returned and never changes.
    The keyframes come done, except with `options.defer_keyframes` when neither CLIP nor BLIP needs
    frames: then a background thread decodes them while later stages run, and writes the cache
    entry once they are in (`KeyframeJob.result()` waits for both)."""
    return analyse_video_provisional(path, options, models, progress, defer_checks=False).settle()


@dataclasses.dataclass(frozen=True)
class ProvisionalAnalysis:
    """analyse_video_provisional's result.

    `analysis`: made from the shot probabilities as the fast pass left them, while `pending_checks`
    near-threshold blocks are still being checked in the background (0: it is the final analysis).
    `settle()` -> (the final analysis, its report keyframes), exactly what analyse_video_with_keyframes
    returns (computed once). `cancel()` drops the checks (something failed before they settled)."""

    analysis: VideoAnalysis
    pending_checks: int
    settle: Callable[[], tuple[VideoAnalysis, KeyframeJob]]
    cancel: Callable[[], None] = lambda: None


def analyse_video_provisional(path, options: AnalysisOptions | None = None, models: AnalysisModels | None = None,
                              progress: Callable[[str], None] | None = None,
                              defer_checks: bool = True) -> ProvisionalAnalysis:
    """The analysis as soon as the shot detector's fast pass is done (see ProvisionalAnalysis).

    With `defer_checks` (and only where nothing else waits on the probabilities: keyframes deferred,
    no CLIP or BLIP to feed), the checks of near-threshold blocks still running when decoding ends are
    left to a background thread, so that the caller can start on the provisional analysis (score.py
    plans and generates meanwhile, on one core) and compare once settled. A check moves a frame
    across the threshold only if the fast pass put it within the verify margin, so the final cut list
    is usually the provisional one."""
    options = options or AnalysisOptions()
    sw = Stopwatch()
    timings = sw.timings
    with sw.stage("probe", progress):
        info = probe(path)

    key = cache_dir = None
    hit = None
    if options.use_cache:
        with sw.stage("cache_lookup", progress):
            cache_dir = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
            key = cache_key(path, options)
            stem = cache_dir / key
            if stem.with_name(key + ".json").exists() and stem.with_name(key + ".npz").exists():
                try:
                    hit = load_entry(stem)
                except Exception:  # unreadable / older entry: recompute and overwrite
                    hit = None
        if hit is not None:
            drop_scan(path)  # no decoding: the CLI's decode begun ahead of this file stops
            cached, frames = hit
            hit_timings = {"analysis_computed_s": sum(cached.timings_s.values()), **timings}
            cached = dataclasses.replace(cached, info=info,  # the path may differ (same content elsewhere)
                                         cache={"key": key, "hit": True, "path": str(stem)}, timings_s=hit_timings)
            done = (cached, KeyframeJob.finished(Keyframes(frames)))
            return ProvisionalAnalysis(cached, 0, lambda: done)

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
    with sw.stage("decode", progress):
        try:
            pass1, scan = scan_small(info, pass_one)
        except BaseException:
            for old in attempts:
                old.cancel()
            raise
        stats = pass1.stats.arrays()
    with sw.stage("load_shots"):  # what was left of loading the detector
        detector = detector.result()
    warnings.extend(scan.warnings)
    if scan.step > 1:
        warnings.append(f"analysed every {scan.step}th frame ({info.fps:.3g} fps -> {info.fps / scan.step:.3g} fps)")
    times = scan.times_s

    sem = models.semantic
    with sw.stage("clip", progress):  # loads CLIP when its weights are there
        # The report keyframes are only shown (not captioned, no CLIP frames): their decode can wait for
        # the final probabilities, and so can everything else that reads them.
        report_only = sem.clip() is None and sem.blip() is None
    deferred = options.defer_keyframes and report_only
    with sw.stage("shots", progress):
        pending = pass1.predict(defer_checks=defer_checks and deferred)
        del pass1
        attempts.clear()  # frees the frames the consumers held
    if "shots" in models.fallbacks:
        fallbacks["shots"] = models.fallbacks["shots"]
    duration = max(info.duration_s, float(times[-1]) if len(times) else 0.0)
    with sw.stage("sound", progress):
        try:
            sound = sound_mod.sound_features(info)
        except BgmgenError as err:  # an audio stream that does not decode: no sound evidence
            sound = {}
            warnings.append(f"original sound not analysed ({one_line(str(err))[:160]})")

    def from_probabilities(probs: np.ndarray):
        """Everything that follows from the shot probabilities: (analysis, keyframe times, CLIP sample
        times, the sampled frames: none yet when their decode is deferred)."""
        cut_frames = shots_mod.cut_frames_from_predictions(probs)
        cuts_s, shots = _shot_bounds(cut_frames, times, duration)
        frame_edges = [0, *cut_frames, len(times)]
        shot_frames = [(frame_edges[i], frame_edges[i + 1]) for i in range(len(frame_edges) - 1)]
        notes = list(warnings)

        with sw.stage("motion", progress):
            mres = motion_mod.motion_curves(times, stats["diff"], cut_frames, probs, stats["local"], stats["energy"])
            pstats = motion_mod.picture_stats(stats, shot_frames)
            clip_times = motion_mod.clip_sample_times(float(times[-1]) + 1e-3 if len(times) else info.duration_s)
        if sem.clip() is None:  # no CLIP: do not decode its 1 fps frames (a second pass over the file)
            clip_times = clip_times[:0]
        # Captions want each shot's stillest middle frame; a picture that is only shown may be an I-frame
        # of the shot, which decodes for a fraction of the cost, and only the shots wide enough to show one
        # in the report (the longest MAX_REPORT_KEYFRAMES) get a picture.
        shown = motion_mod.shown_shots(shot_frames) if report_only else list(range(len(shot_frames)))
        key_idx = motion_mod.keyframe_indices(mres.motion_abs, [shot_frames[i] for i in shown],
                                              scan.standalone if report_only else None, probs)
        keyframe_times = [round(float(times[i]), 4) for i in key_idx]
        if deferred:
            sampled = motion_mod.SampledFrames.empty(info, keyframe_times, clip_times)
        else:
            with sw.stage("keyframes", progress):
                sampled = motion_mod.sample_frames(info, scan, keyframe_times, clip_times)
            for w in scan.warnings:
                if w not in notes:
                    notes.append(w)

        with sw.stage("clip", progress):
            clip_emb = semantic.clip_embed(sem, sampled.clip)
        with sw.stage("caption", progress):
            durations = [b - a for a, b in shots]
            captions = semantic.caption_frames(sem, sampled.caption, durations=durations)
        with sw.stage("text", progress):
            cap_emb = semantic.embed_texts(sem, captions) if captions else None
        with sw.stage("mood", progress):
            cuts_per_s = motion_mod.cuts_per_second(len(cuts_s), duration)
            mood_scores, mood_source, evidence = semantic.estimate_mood_with_evidence(
                sem, caption_embeddings=cap_emb, clip_embeddings=clip_emb, picture_stats=pstats,
                motion_abs=mres.motion_abs, shot_weights=durations, cuts_per_s=cuts_per_s, sound=sound,
                periodic=mres.periodicity.get("strength", 0.0))
        fallbacks.update(sem.fallbacks)
        if options.require_semantic and (clip_emb is None or captions is None):
            missing = ", ".join(n for n, v in (("CLIP", clip_emb), ("BLIP", captions)) if v is None)
            reason = "; ".join(f"{k}: {v}" for k, v in fallbacks.items() if k != "shots")
            raise MissingDependencyError(f"{info.path}: --require-semantic is set but {missing} is unavailable"
                                         + (f" ({reason})" if reason else ""))
        models.weight_files.update(sem.weight_files)

        result = VideoAnalysis(
            info=info,
            cuts_s=cuts_s,
            shots=shots,
            motion_times_s=times.astype(np.float64),
            motion=mres.motion,
            motion_abs=mres.motion_abs,
            onsets=mres.onsets,
            keyframe_times_s=sampled.keyframe_times_s,
            picture_stats=pstats,
            clip_embeddings=None if clip_emb is None else np.asarray(clip_emb, np.float32),
            clip_times_s=None if clip_emb is None else sampled.clip_times_s,
            captions=list(captions) if captions else None,
            caption_embeddings=None if cap_emb is None else np.asarray(cap_emb, np.float32),
            mood_scores=dict(mood_scores),
            mood_source=str(mood_source),
            fallbacks=dict(fallbacks),
            timings_s=timings,  # the run's stopwatch: later stages (checks, cache) add to it
            warnings=notes,
            shot_probabilities=probs.astype(np.float32),
            cache={"key": key, "hit": False, "path": None},
            periodicity=dict(mres.periodicity),
            sound=dict(sound),
            mood_evidence=evidence,
            shot_detector=detector.label,
        )
        return result, keyframe_times, clip_times, sampled

    stem = cache_dir / key if options.use_cache and key and cache_dir is not None else None

    def save(analysis: VideoAnalysis, frames: np.ndarray, watch: Stopwatch, late: list[str]) -> str | None:
        """Write the cache entry (once per analysis); its path, or None with a warning in `late`."""
        if stem is None:
            return None
        with watch.stage("cache_save"):
            try:
                save_entry(stem, analysis, frames)
                return str(stem)
            except OSError as err:
                late.append(f"analysis cache not written ({err.strerror or err})")
                return None

    def decode_report_frames(keyframe_times, clip_times) -> tuple[np.ndarray, float]:
        """The report keyframes, decoded in the calling (background) thread: (frames, seconds it took)."""
        # One decoding thread, below the shot checks' priority: the sampler (one thread) runs meanwhile,
        # and only the report needs them, drawn during the render.
        lower_thread_priority(KEYFRAMES_NICENESS)
        t0 = time.perf_counter()
        with background_job():  # the sampler keeps to one thread meanwhile (music.generate.SamplerThreads)
            frames = motion_mod.sample_frames(info, scan, keyframe_times, clip_times, threads=1).report
        return frames, time.perf_counter() - t0

    def finished(result: VideoAnalysis, keyframe_times, clip_times, sampled,
                 decoding: concurrent.futures.Future | None = None) -> tuple[VideoAnalysis, KeyframeJob]:
        """The analysis with its keyframes: decoded already (saved here), or deferred to a thread
        (`decoding`: their decode, when already started for these keyframe times)."""
        if not deferred:
            saved = save(result, sampled.report, sw, result.warnings)
            if saved:
                result = dataclasses.replace(result, cache={**result.cache, "path": saved})
            return result, KeyframeJob.finished(Keyframes(sampled.report))

        def decode_keyframes() -> Keyframes:
            """In the keyframe thread: the frames, then the cache entry of the analysis with them."""
            watch = Stopwatch()
            frames, seconds = decoding.result() if decoding else decode_report_frames(keyframe_times, clip_times)
            watch.timings["keyframes_deferred"] = round(seconds, 4)
            late = [w for w in scan.warnings if w not in result.warnings]
            complete = dataclasses.replace(result, timings_s={**result.timings_s, **watch.timings},
                                           warnings=[*result.warnings, *late])
            path = save(complete, frames, watch, late)
            return Keyframes(frames, timings_s=watch.timings, warnings=late, cache_path=path)

        return result, KeyframeJob.start(decode_keyframes)

    try:
        first = from_probabilities(pending.provisional)
    except BaseException:
        pending.cancel()
        raise
    if not pending.pending:
        done = finished(*first)
        return ProvisionalAnalysis(done[0], 0, lambda: done)
    # The keyframes the provisional analysis picked start decoding now: the final one usually picks the same.
    early_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="keyframes")
    early = early_pool.submit(decode_report_frames, first[1], first[2])
    early_pool.shutdown(wait=False)

    @functools.cache
    def settle() -> tuple[VideoAnalysis, KeyframeJob]:
        with sw.stage("shot_checks", progress):  # what was left of the checks when asked
            probs = pending.result()
        again = from_probabilities(probs)
        return finished(*again, early if again[1] == first[1] else None)  # the CLIP times never change

    return ProvisionalAnalysis(first[0], pending.pending, settle, pending.cancel)


__all__ = [
    "ANALYSIS_VERSION",
    "AnalysisModels",
    "AnalysisOptions",
    "BgmgenError",
    "InputError",
    "KeyframeJob",
    "Keyframes",
    "VideoAnalysis",
    "analyse_video",
    "analyse_video_with_keyframes",
    "cache_key",
    "default_cache_dir",
]
