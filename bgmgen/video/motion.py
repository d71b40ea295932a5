"""motion: per-frame motion energy, visual onsets, per-shot picture statistics and keyframes.

Energy is the mean absolute difference between consecutive analysed frames (luma, 96x54, 0..255), the
cheapest measure that follows both subject and camera motion. `motion_abs` keeps that absolute scale
so a calm video stays calm; `motion` is the same curve on a robust per-video scale (its 95th
percentile, but never below `ABS_FLOOR`, so sensor noise in a still shot is not stretched to 1).
Frames at cuts and inside detected transitions are replaced by their neighbours: a cut is an accent
of its own (shots.py), not motion.

Visual onsets are peaks of the positive novelty (energy minus its recent average), at least
`ONSET_MIN_GAP_S` apart, with a strength 0..1.

Keyframes: one per shot (the stillest frame in the middle half of the shot: sharp, representative)
for the report and for captions, and ~1 fps samples for CLIP. `sample_frames` decodes them in one
sparse pass at caption size and derives the smaller sizes from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bgmgen.video.decode import FrameChunk, ScanResult, frames_at
from bgmgen.video.probe import VideoInfo

ABS_FLOOR = 3.0  # mean-abs-difference units (0..255): motion below this never normalises above ~0.3
NORM_PERCENTILE = 95.0
SMOOTH_FRAMES = 3
ONSET_MIN_GAP_S = 0.15
ONSET_HISTORY_S = 0.25
CUT_GUARD_FRAMES = 2  # frames each side of a cut excluded from motion and onsets
CLIP_FPS = 1.0
MAX_CLIP_FRAMES = 240
CAPTION_SIZE = (384, 384)  # BLIP's input
CLIP_SIZE = (224, 224)  # CLIP's input
KEYFRAME_HEIGHT = 90  # report keyframes
STAGE_VERSION = "motion-1"


class FrameStatsAccumulator:
    """Chunk consumer: per-frame motion energy and colour statistics (all O(1) per frame to keep)."""

    def __init__(self):
        self._prev: np.ndarray | None = None
        self.diff: list[np.ndarray] = []
        self.brightness: list[np.ndarray] = []
        self.saturation: list[np.ndarray] = []
        self.warmth: list[np.ndarray] = []

    def add(self, chunk: FrameChunk) -> None:
        rgb = chunk.rgb.astype(np.float32)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        luma = 0.299 * r + 0.587 * g + 0.114 * b
        seq = luma if self._prev is None else np.concatenate([self._prev[None], luma])
        d = np.abs(np.diff(seq, axis=0)).mean(axis=(1, 2))
        if self._prev is None:
            d = np.concatenate([[0.0], d])
        self.diff.append(d.astype(np.float32))
        self._prev = luma[-1]
        mx, mn = rgb.max(axis=3), rgb.min(axis=3)
        self.brightness.append((luma.mean(axis=(1, 2)) / 255.0).astype(np.float32))
        self.saturation.append(((mx - mn) / np.maximum(mx, 1.0)).mean(axis=(1, 2)).astype(np.float32))
        self.warmth.append(((r - b).mean(axis=(1, 2)) / 255.0).astype(np.float32))

    def arrays(self) -> dict[str, np.ndarray]:
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.float32)  # noqa: E731
        return {"diff": cat(self.diff), "brightness": cat(self.brightness),
                "saturation": cat(self.saturation), "warmth": cat(self.warmth)}


@dataclass
class MotionResult:
    times_s: np.ndarray
    motion: np.ndarray  # 0..1
    motion_abs: np.ndarray  # 0..255 scale
    onsets: list[tuple[float, float]]
    scale: float  # motion_abs value that maps to 1.0


def _moving_average(x: np.ndarray, k: int) -> np.ndarray:
    if k <= 1 or len(x) < 2:
        return x.astype(np.float32)
    pad = k // 2
    xp = np.pad(x, (pad, k - 1 - pad), mode="edge")
    return np.convolve(xp, np.ones(k) / k, mode="valid").astype(np.float32)


def transition_mask(n: int, cut_frames: list[int], shot_probs: np.ndarray | None,
                    threshold: float = 0.5, guard: int = CUT_GUARD_FRAMES) -> np.ndarray:
    """Frames that belong to a cut or a detected transition (True = not motion)."""
    mask = np.zeros(n, bool)
    if shot_probs is not None and len(shot_probs) == n:
        mask |= shot_probs > threshold
    for c in cut_frames:
        mask[max(0, c - guard + 1):min(n, c + guard)] = True
    return mask


def _fill_masked(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Replace masked samples by linear interpolation between the nearest unmasked ones."""
    if not mask.any():
        return x.copy()
    if mask.all():
        return np.zeros_like(x)
    idx = np.arange(len(x))
    return np.interp(idx, idx[~mask], x[~mask]).astype(np.float32)


def motion_curves(times_s: np.ndarray, diff: np.ndarray, cut_frames: list[int],
                  shot_probs: np.ndarray | None = None) -> MotionResult:
    """Energy curves and onsets from the per-frame differences of `FrameStatsAccumulator`."""
    n = len(diff)
    times_s = np.asarray(times_s, dtype=np.float64)
    if n == 0:
        return MotionResult(times_s, np.zeros(0, np.float32), np.zeros(0, np.float32), [], ABS_FLOOR)
    mask = transition_mask(n, cut_frames, shot_probs)
    mask[0] = True  # the first frame has no predecessor
    if n == 1:
        mask[:] = True
    clean = _fill_masked(diff.astype(np.float32), mask)
    absolute = _moving_average(clean, SMOOTH_FRAMES)
    scale = float(max(np.percentile(absolute, NORM_PERCENTILE), ABS_FLOOR))
    motion = np.clip(absolute / scale, 0.0, 1.0).astype(np.float32)

    # Onsets: positive novelty against the recent past, peak-picked.
    dt = float(np.median(np.diff(times_s))) if n > 1 else 1 / 30
    dt = dt if dt > 0 else 1 / 30
    hist = max(1, int(round(ONSET_HISTORY_S / dt)))
    csum = np.concatenate([[0.0], np.cumsum(clean, dtype=np.float64)])
    idx = np.arange(n)
    lo = np.maximum(0, idx - hist)
    past = np.where(idx > lo, (csum[idx] - csum[lo]) / np.maximum(idx - lo, 1), clean)
    novelty = np.maximum(0.0, clean - past)
    novelty[mask] = 0.0
    gap = max(1, int(round(ONSET_MIN_GAP_S / dt)))
    floor = max(0.5, float(novelty.mean() + 1.5 * novelty.std()))
    top = max(float(np.percentile(novelty, 99)), scale * 0.5, 1e-6)
    onsets: list[tuple[float, float]] = []
    order = np.argsort(-novelty, kind="stable")
    taken = np.zeros(n, bool)
    for i in order:
        if novelty[i] < floor:
            break
        if taken[max(0, i - gap):i + gap + 1].any():
            continue
        taken[i] = True
        onsets.append((round(float(times_s[i]), 4), round(float(min(1.0, novelty[i] / top)), 4)))
    onsets.sort()
    return MotionResult(times_s, motion, absolute, onsets, scale)


def picture_stats(stats: dict[str, np.ndarray], shot_frames: list[tuple[int, int]]) -> list[dict]:
    """Per shot: brightness 0..1, saturation 0..1, warmth -1..1 (mean R-B), over its frames."""
    out = []
    for a, b in shot_frames:
        sl = slice(a, max(a + 1, b))
        out.append({k: round(float(np.clip(stats[k][sl].mean(), -1, 1)), 4) if len(stats[k][sl]) else 0.0
                    for k in ("brightness", "saturation", "warmth")})
    return out


def keyframe_indices(motion_abs: np.ndarray, shot_frames: list[tuple[int, int]]) -> list[int]:
    """The stillest frame of the middle half of each shot (ties: nearest the middle)."""
    out = []
    for a, b in shot_frames:
        b = max(b, a + 1)
        q = (b - a) // 4
        lo, hi = a + q, max(a + q + 1, b - q)
        seg = motion_abs[lo:hi] if len(motion_abs) else np.zeros(0)
        if len(seg) == 0:
            out.append(min(a, max(0, len(motion_abs) - 1)))
            continue
        mid = (lo + hi - 1) / 2
        cost = seg + 1e-3 * np.abs(np.arange(lo, hi) - mid)
        out.append(int(lo + np.argmin(cost)))
    return out


def clip_sample_times(duration_s: float, fps: float = CLIP_FPS, max_frames: int = MAX_CLIP_FRAMES) -> np.ndarray:
    n = int(np.clip(np.floor(duration_s * fps), 1, max_frames))
    return ((np.arange(n) + 0.5) * (duration_s / n)).astype(np.float64)


def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    w, h = size
    if frames.shape[1:3] == (h, w):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC)) for f in frames]) \
        if len(frames) else np.zeros((0, h, w, 3), np.uint8)


def report_keyframe_size(info: VideoInfo, height: int = KEYFRAME_HEIGHT) -> tuple[int, int]:
    aspect = info.width / max(1, info.height)
    return max(16, int(round(height * aspect / 2)) * 2), height


@dataclass
class SampledFrames:
    caption: np.ndarray  # [n_shots, 384, 384, 3] one per shot keyframe, for BLIP
    report: np.ndarray  # [n_shots, 90, w, 3] same keyframes at display aspect, for report.png
    clip: np.ndarray  # [n_clip, 224, 224, 3] ~1 fps samples, for CLIP
    keyframe_times_s: list[float]
    clip_times_s: np.ndarray

    @classmethod
    def empty(cls, info: VideoInfo, keyframe_times: list[float], clip_times: np.ndarray) -> "SampledFrames":
        """No frames yet (their decode is deferred); the times are known."""
        (cw, ch), (rw, rh), (kw, kh) = CAPTION_SIZE, report_keyframe_size(info), CLIP_SIZE
        return cls(caption=np.zeros((0, ch, cw, 3), np.uint8), report=np.zeros((0, rh, rw, 3), np.uint8),
                   clip=np.zeros((0, kh, kw, 3), np.uint8), keyframe_times_s=[float(t) for t in keyframe_times],
                   clip_times_s=np.asarray(clip_times, np.float64))


def sample_frames(info: VideoInfo, scan: ScanResult, keyframe_times: list[float],
                  clip_times: np.ndarray) -> SampledFrames:
    """One sparse decode at caption size; CLIP and report frames are resized from it."""
    times = np.concatenate([np.asarray(keyframe_times, np.float64), np.asarray(clip_times, np.float64)])
    big = frames_at(info, scan, times, CAPTION_SIZE)
    k = len(keyframe_times)
    caption, clip_big = big[:k], big[k:]
    return SampledFrames(caption=caption, report=_resize(caption, report_keyframe_size(info)),
                         clip=_resize(clip_big, CLIP_SIZE), keyframe_times_s=[float(t) for t in keyframe_times],
                         clip_times_s=np.asarray(clip_times, np.float64))
