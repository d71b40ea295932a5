"""motion: per-frame motion energy, visual onsets, periodic motion, per-shot picture statistics and keyframes.

Three per-frame measures on the analysed luma (96x54, 0..255), each with the frame's mean removed
first, so a fade (the whole picture brightening or darkening) is not motion:
  * `diff`   mean absolute difference to the previous frame (cut detection aid, keyframes);
  * `local`  the same difference in 6x6-pixel blocks, mean of the busiest quarter of the blocks: a
             small subject that moves fast (a juggler's ball and legs) counts as much as a slow
             camera drift over the whole picture (visual onsets and periodicity are read off it);
  * `energy` the block measure against the frame `ENERGY_LAG_S` earlier: texture flicker (water,
             sensor noise, compression) does not grow with the lag, real motion does, so this
             separates a shimmering stream from a moving subject (`motion_abs`).
`motion_abs` is the energy curve on its absolute scale (so a calm video stays calm); `motion` is the
same curve mapped onto 0..1 with one fixed log scale for every video (`energy_level`), not a
per-video normalisation. Frames at cuts and inside detected transitions are replaced by their
neighbours: a cut is an accent of its own (shots.py), not motion.

Visual onsets are peaks of the positive novelty (local motion minus its recent average), at least
`ONSET_MIN_GAP_S` apart, with a strength 0..1. Periodic motion (jumps, steps, juggling, a swinging
camera): the autocorrelation of the local-motion curve, its strongest peak between
`PERIOD_RANGE_S`, refined to a fraction of a frame by the Fourier phase of the curve, and kept only
when the visual onsets come once a cycle at one phase (`periodicity`, `supported`: period, phase of
the onsets, strength 0..1, onset coherence and coverage).

Keyframes: one per shot (the stillest frame in the middle half of the shot: sharp, representative)
for the report and for captions, and ~1 fps samples for CLIP. `sample_frames` decodes them in one
sparse pass at caption size and derives the smaller sizes from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bgmgen.video.decode import FrameChunk, ScanResult, frames_at
from bgmgen.video.probe import VideoInfo

SMOOTH_FRAMES = 3
BLOCK_PX = 6  # 96x54 -> 16x9 blocks
BUSY_SHARE = 0.25  # `local` / `energy`: mean of the busiest quarter of the blocks
ENERGY_LAG_S = 0.2  # `energy` compares frames this far apart (~5 frames at 25 fps)
# The fixed scale of `motion` (energy_level): log2(1 + energy) mapped linearly from ENERGY_STILL
# (0: compression noise on a still picture; the still shots of the shared pyscenedetect clip measure
# 0.04, a test pattern's static grid 0) to ENERGY_FAST (1: the skipping rope of the shared Big Buck
# Bunny clip measures 46, the busiest real clip we have; a cyclist street scene 33, a juggler 15, a
# signer 11, a water stream 7).
ENERGY_STILL = 1.0
ENERGY_FAST = 48.0
PERIOD_RANGE_S = (0.25, 1.5)  # periods that can be a beat or a bar half: 40..240 BPM
PERIOD_MIN_CYCLES = 3.0  # a period must repeat this often in the clip
PERIOD_MIN_MOTION = 3.0  # a curve whose 90th percentile is below this (block difference units: compression
                         # noise on a still picture measures ~0.2) has no motion to repeat
PATTERN_FRAMES = 4
PERIOD_MIN_ONSET_SUPPORT = 0.5  # visual onsets per cycle, at least
# Phase coherence R of those onsets at the period (see `supported`): at least PERIOD_MIN_COHERENCE, and
# n_onsets * R^2 (Rayleigh's statistic: onsets at random phases give ~1, P(> 3) ~ 5 %) at least
# PERIOD_MIN_RAYLEIGH. The shared juggling clip: 15 onsets, R 0.47 -> 3.3; a synthetic bounce 10 x 1.0.
PERIOD_MIN_COHERENCE = 0.35
PERIOD_MIN_RAYLEIGH = 3.0
# autocorrelation at the period (0..1) after the 4-frame average: the shared juggling clip (kicks every
# ~0.65 s, not quite regular) measures 0.19, a synthetic bounce 0.99; the period must also be confirmed by
# the visual onsets (PERIOD_MIN_ONSET_SUPPORT), so a weak threshold does not lock on noise
PERIOD_MIN_STRENGTH = 0.15
ONSET_MIN_GAP_S = 0.15
ONSET_HISTORY_S = 0.25
CUT_GUARD_FRAMES = 2  # frames each side of a cut excluded from motion and onsets
CLIP_FPS = 1.0
MAX_CLIP_FRAMES = 240
CAPTION_SIZE = (384, 384)  # BLIP's input
CLIP_SIZE = (224, 224)  # CLIP's input
KEYFRAME_HEIGHT = 90  # report keyframes
# At most this many report keyframes (the longest shots'): on a 10-minute video with 175 shots the report gives a
# shot a few pixels, too narrow for a picture, and decoding one keyframe per shot took 26 s there.
MAX_REPORT_KEYFRAMES = 40
STAGE_VERSION = "motion-3"
# Cutting as energy: cuts per second -> 0..1, linear from CUT_RATE_CALM (a cut every 5 s: ordinary
# editing, no energy; the shared pyscenedetect clip's fades count 0.29/s) to CUT_RATE_FULL (a cut every
# second: a montage). The count is divided by at least CUT_RATE_MIN_WINDOW_S, so one cut (or one fade
# taken for a cut) in a 2 s clip is not fast editing. Used by the mood rule and the plan's energy.
CUT_RATE_CALM = 0.2
CUT_RATE_FULL = 1.0
CUT_RATE_MIN_WINDOW_S = 6.0


def cuts_per_second(n_cuts: int, duration_s: float) -> float:
    return float(n_cuts) / max(float(duration_s), CUT_RATE_MIN_WINDOW_S)


def cutting_level(cuts_per_s: float) -> float:
    """0 (no cuts, or ordinary editing) .. 1 (a cut every second or faster)."""
    return float(np.clip((float(cuts_per_s) - CUT_RATE_CALM) / (CUT_RATE_FULL - CUT_RATE_CALM), 0.0, 1.0))


def energy_level(energy_abs) -> np.ndarray:
    """Absolute motion energy (block difference units) -> 0..1 on the one fixed log scale."""
    x = np.log2(1.0 + np.maximum(np.asarray(energy_abs, np.float64), 0.0))
    lo, hi = np.log2(1.0 + ENERGY_STILL), np.log2(1.0 + ENERGY_FAST)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _busy_blocks(d: np.ndarray) -> np.ndarray:
    """[n, h, w] absolute differences -> [n] mean of the busiest BUSY_SHARE of BLOCK_PX blocks."""
    n, h, w = d.shape
    bh, bw = max(1, h // BLOCK_PX), max(1, w // BLOCK_PX)
    ph, pw = h // bh, w // bw
    blocks = d[:, :bh * ph, :bw * pw].reshape(n, bh, ph, bw, pw).mean(axis=(2, 4)).reshape(n, -1)
    k = max(1, int(round(blocks.shape[1] * BUSY_SHARE)))
    return np.sort(blocks, axis=1)[:, -k:].mean(axis=1)


class FrameStatsAccumulator:
    """Chunk consumer: per-frame motion energy and colour statistics (all O(1) per frame to keep)."""

    def __init__(self):
        self._prev: np.ndarray | None = None
        self._hist: np.ndarray | None = None  # mean-removed luma of the last ENERGY_LAG_S (+ a frame)
        self._hist_t: np.ndarray | None = None
        self.diff: list[np.ndarray] = []
        self.local: list[np.ndarray] = []
        self.energy: list[np.ndarray] = []
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
        # Mean-removed luma (a fade is not motion); lag-1 and lag-ENERGY_LAG_S block differences.
        centred = luma - luma.mean(axis=(1, 2), keepdims=True)
        times = np.asarray(chunk.times_s, np.float64)
        seq = centred if self._hist is None else np.concatenate([self._hist, centred])
        seq_t = times if self._hist_t is None else np.concatenate([self._hist_t, times])
        first = len(seq) - len(centred)  # index of this chunk's first frame in seq
        idx = np.arange(first, len(seq))
        prev = np.maximum(idx - 1, 0)
        local = _busy_blocks(np.abs(seq[idx] - seq[prev]))
        local[idx == 0] = 0.0
        lag = np.searchsorted(seq_t, seq_t[idx] - ENERGY_LAG_S + 1e-6, side="right") - 1
        energy = np.full(len(idx), np.nan, np.float32)
        ok = lag >= 0
        if ok.any():
            energy[ok] = _busy_blocks(np.abs(seq[idx[ok]] - seq[lag[ok]]))
        self.local.append(local.astype(np.float32))
        self.energy.append(energy)
        keep = seq_t >= seq_t[-1] - ENERGY_LAG_S - 0.1
        keep[-1] = True
        self._hist, self._hist_t = seq[keep], seq_t[keep]
        # Channel max / min as element-wise ops: numpy's reduction over a length-3 last axis took 0.85 s
        # of CPU per minute of video, in the decoding thread (the same values).
        mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
        self.brightness.append((luma.mean(axis=(1, 2)) / 255.0).astype(np.float32))
        self.saturation.append(((mx - mn) / np.maximum(mx, 1.0)).mean(axis=(1, 2)).astype(np.float32))
        self.warmth.append(((r - b).mean(axis=(1, 2)) / 255.0).astype(np.float32))

    def arrays(self) -> dict[str, np.ndarray]:
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.float32)  # noqa: E731
        return {"diff": cat(self.diff), "local": cat(self.local), "energy": cat(self.energy),
                "brightness": cat(self.brightness),
                "saturation": cat(self.saturation), "warmth": cat(self.warmth)}


@dataclass
class MotionResult:
    times_s: np.ndarray
    motion: np.ndarray  # 0..1, energy_level(motion_abs): one absolute scale for every video
    motion_abs: np.ndarray  # energy, block difference units (0..255 scale)
    onsets: list[tuple[float, float]]
    periodicity: dict  # {} or {"period_s", "phase_s", "strength", "n_cycles"}


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
                  shot_probs: np.ndarray | None = None, local: np.ndarray | None = None,
                  energy: np.ndarray | None = None) -> MotionResult:
    """Energy curves, onsets and periodicity from the per-frame measures of `FrameStatsAccumulator`
    (`local` / `energy` default to `diff` when absent)."""
    n = len(diff)
    times_s = np.asarray(times_s, dtype=np.float64)
    if n == 0:
        return MotionResult(times_s, np.zeros(0, np.float32), np.zeros(0, np.float32), [], {})
    diff = np.asarray(diff, np.float32)
    local = diff if local is None or len(local) != n else np.asarray(local, np.float32)
    energy = local if energy is None or len(energy) != n else np.asarray(energy, np.float32)
    dt = float(np.median(np.diff(times_s))) if n > 1 else 1 / 30
    dt = dt if dt > 0 else 1 / 30
    mask = transition_mask(n, cut_frames, shot_probs)
    mask[0] = True  # the first frame has no predecessor
    if n == 1:
        mask[:] = True
    # `energy` compares frames ENERGY_LAG_S apart: frames that far after a cut straddle it.
    lag_frames = max(1, int(round(ENERGY_LAG_S / dt)))
    emask = mask.copy() | ~np.isfinite(energy)
    for c in cut_frames:
        emask[max(0, c):min(n, c + lag_frames + CUT_GUARD_FRAMES)] = True
    if emask.all():  # too short for the lag: the lag-1 measure stands in
        energy, emask = local, mask
    absolute = _moving_average(_fill_masked(np.nan_to_num(energy), emask), SMOOTH_FRAMES)
    motion = energy_level(absolute).astype(np.float32)
    clean = _fill_masked(local, mask)

    # Onsets: positive novelty against the recent past, peak-picked.
    hist = max(1, int(round(ONSET_HISTORY_S / dt)))
    csum = np.concatenate([[0.0], np.cumsum(clean, dtype=np.float64)])
    idx = np.arange(n)
    lo = np.maximum(0, idx - hist)
    past = np.where(idx > lo, (csum[idx] - csum[lo]) / np.maximum(idx - lo, 1), clean)
    novelty = np.maximum(0.0, clean - past)
    novelty[mask] = 0.0
    gap = max(1, int(round(ONSET_MIN_GAP_S / dt)))
    top = max(float(np.percentile(novelty, 99)), 1e-6)
    # a peak stands out from the noise (1.5 sd), or reaches half the strongest (a regular motion's peaks
    # are all alike, so they sit near mean + 1.4 sd and would fall below the first rule)
    floor = max(0.5, min(float(novelty.mean() + 1.5 * novelty.std()), 0.5 * top))
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
    return MotionResult(times_s, motion, absolute.astype(np.float32), onsets,
                        supported(periodicity(times_s, clean, mask, onsets), onsets))


def supported(per: dict, onsets: list[tuple[float, float]]) -> dict:
    """`per` confirmed by the visual onsets, with its phase taken from them (the music's beats go where
    the picture's accents are), else {}. The onsets must come about once a cycle (at least
    PERIOD_MIN_ONSET_SUPPORT of the cycles) and at the same point of it: their phase coherence (the
    length of the mean of exp(2 pi i t / period), strength-weighted; 1 = all at one phase, ~0 =
    anywhere) at least PERIOD_MIN_COHERENCE, and unlikely by chance (PERIOD_MIN_RAYLEIGH). A slow pan's sub-pixel flicker also repeats, but its
    onsets fall anywhere in the cycle."""
    if not per or not onsets:
        return {}
    period = per["period_s"]
    t = np.array([o[0] for o in onsets], np.float64)
    w = np.array([max(o[1], 1e-3) for o in onsets], np.float64)
    z = np.sum(w * np.exp(2j * np.pi * t / period)) / w.sum()
    coherence = float(np.abs(z))
    coverage = min(1.0, len(onsets) / max(per["n_cycles"], 1.0))
    rayleigh = len(onsets) * coherence ** 2
    if coverage < PERIOD_MIN_ONSET_SUPPORT or coherence < PERIOD_MIN_COHERENCE or rayleigh < PERIOD_MIN_RAYLEIGH:
        return {}
    phase = float((np.angle(z) / (2 * np.pi) * period) % period)
    return {**per, "phase_s": round(phase, 4), "motion_phase_s": per["phase_s"],
            "onset_coherence": round(coherence, 3), "onset_coverage": round(coverage, 3),
            "rayleigh": round(rayleigh, 2)}


def periodicity(times_s: np.ndarray, curve: np.ndarray, mask: np.ndarray | None = None,
                onsets: list[tuple[float, float]] | None = None) -> dict:
    """The strongest repeating period of a motion curve: {} when none is clear, else
    {"period_s", "phase_s" (time of a peak of the cycle, 0 <= phase < period), "strength" (the
    autocorrelation at the period, 0..1), "n_cycles"}. The autocorrelation of the detrended curve
    finds the period to a frame; within +-10 % of it, the period at which the visual `onsets` line up
    best (their phase coherence), else the curve's Fourier magnitude, refines it; the phase is the
    curve's at that period (frames inside transitions count as zero)."""
    n = len(curve)
    if n < 8:
        return {}
    dt = float(np.median(np.diff(times_s)))
    if not dt > 0:
        return {}
    duration = float(times_s[-1] - times_s[0]) + dt
    x = np.asarray(curve, np.float64).copy()
    if np.percentile(x, 90) < PERIOD_MIN_MOTION:
        return {}
    # A 4-frame moving average: frame patterns of 2 or 4 frames (pulldown, duplicated frames, encoder or
    # scaler alternation) are not motion; periods of 8 frames and more keep most of their strength.
    x = _moving_average(x, PATTERN_FRAMES).astype(np.float64)
    # Gaussian trend (sigma 1 s: it keeps <0.1 % of a 1.5 s period, and unlike a moving average has
    # no blind periods), so slow swells of motion do not count as a rhythm.
    sigma = 1.0 / dt
    half = int(3 * sigma)
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    x = x - np.convolve(np.pad(x, half, mode="edge"), kernel, mode="valid")
    if mask is not None and len(mask) == n:
        x[mask] = 0.0
    x -= x.mean()
    if not np.any(x):
        return {}
    lo = max(2, int(np.ceil(PERIOD_RANGE_S[0] / dt)))
    hi = min(int(PERIOD_RANGE_S[1] / dt), int(duration / PERIOD_MIN_CYCLES / dt))
    if hi <= lo + 1:
        return {}
    spectrum = np.fft.rfft(x, 2 * n)  # autocorrelation through the FFT: O(n log n) for long videos
    ac = np.fft.irfft(spectrum * np.conj(spectrum), 2 * n)[:n] / np.arange(n, 0, -1)
    if ac[0] <= 0:
        return {}
    ac = ac / ac[0]
    peaks = [i for i in range(lo, min(hi, n - 2) + 1) if ac[i] >= ac[i - 1] and ac[i] >= ac[i + 1]]
    if not peaks:
        return {}
    # the shortest peak within 10 % of the strongest: the period itself, not a multiple of it
    top = max(ac[i] for i in peaks)
    if top < PERIOD_MIN_STRENGTH:
        return {}
    k = next(i for i in peaks if ac[i] >= 0.9 * top)
    strength = float(ac[k])
    if strength < PERIOD_MIN_STRENGTH:
        return {}
    # A curve that already repeats at a lag below the range is a flicker (a slow pan's sub-pixel
    # aliasing, a strobing light), and the found period only a multiple of it: no beat.
    if any(ac[j] >= ac[j - 1] and ac[j] >= ac[j + 1] and ac[j] >= 0.9 * strength for j in range(2, lo)):
        return {}
    t = np.asarray(times_s, np.float64) - float(times_s[0])
    periods = k * dt * np.linspace(0.9, 1.1, 201)
    if onsets is not None and len(onsets) >= 3:  # the period at which the visual onsets line up best
        ot = np.array([o[0] for o in onsets], np.float64)
        ow = np.array([max(o[1], 1e-3) for o in onsets], np.float64)
        j = int(np.argmax(np.abs(np.exp(2j * np.pi * ot[None, :] / periods[:, None]) @ ow)))
    else:
        j = None
    phasors = np.exp(-2j * np.pi * t[None, :] / periods[:, None]) @ np.maximum(x, 0.0)
    j = int(np.argmax(np.abs(phasors))) if j is None else j
    period = float(periods[j])
    phase = float((-np.angle(phasors[j]) / (2 * np.pi) * period) % period) + float(times_s[0])
    return {"period_s": round(period, 4), "phase_s": round(phase % period, 4), "strength": round(strength, 3),
            "n_cycles": round(duration / period, 2)}


def picture_stats(stats: dict[str, np.ndarray], shot_frames: list[tuple[int, int]]) -> list[dict]:
    """Per shot: brightness 0..1, saturation 0..1, warmth -1..1 (mean R-B), over its frames."""
    out = []
    for a, b in shot_frames:
        sl = slice(a, max(a + 1, b))
        out.append({k: round(float(np.clip(stats[k][sl].mean(), -1, 1)), 4) if len(stats[k][sl]) else 0.0
                    for k in ("brightness", "saturation", "warmth")})
    return out


STANDALONE_MAX_TRANSITION = 0.1  # a standalone keyframe must be this far from any transition (TransNetV2 p)


def keyframe_indices(motion_abs: np.ndarray, shot_frames: list[tuple[int, int]],
                     standalone: np.ndarray | None = None, transition: np.ndarray | None = None) -> list[int]:
    """The stillest frame of the middle half of each shot (ties: nearest the middle).

    With `standalone` ([n] bool, the I-frames) and `transition` ([n] shot-transition probability), a shot
    holding an I-frame clear of any transition gets its stillest such frame instead: for a picture that
    is only shown (the report), decoding an I-frame costs one frame, while any other frame costs the run
    from the I-frame before it (up to 250 frames at full size on web video: on a 60 s 720p clip the
    report's keyframes took as long to decode as the whole video)."""
    out = []
    for a, b in shot_frames:
        b = max(b, a + 1)
        if standalone is not None and transition is not None:
            idx = np.arange(a, min(b, len(standalone)))
            ok = idx[standalone[idx] & (transition[idx] < STANDALONE_MAX_TRANSITION)] if len(idx) else idx
            if len(ok):
                mid = (a + b - 1) / 2
                out.append(int(ok[np.argmin(motion_abs[ok] + 1e-3 * np.abs(ok - mid))]))
                continue
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


def shown_shots(shot_frames: list[tuple[int, int]], max_shown: int = MAX_REPORT_KEYFRAMES) -> list[int]:
    """Indices of the shots that get a report keyframe: all, or the `max_shown` longest (ties: the earlier),
    in time order."""
    if len(shot_frames) <= max_shown:
        return list(range(len(shot_frames)))
    by_length = sorted(range(len(shot_frames)), key=lambda i: (-(shot_frames[i][1] - shot_frames[i][0]), i))
    return sorted(by_length[:max_shown])


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
                  clip_times: np.ndarray, threads: int = 2) -> SampledFrames:
    """One sparse decode at caption size (`threads` decoding threads); CLIP and report frames are
    resized from it."""
    times = np.concatenate([np.asarray(keyframe_times, np.float64), np.asarray(clip_times, np.float64)])
    big = frames_at(info, scan, times, CAPTION_SIZE, threads)
    k = len(keyframe_times)
    caption, clip_big = big[:k], big[k:]
    return SampledFrames(caption=caption, report=_resize(caption, report_keyframe_size(info)),
                         clip=_resize(clip_big, CLIP_SIZE), keyframe_times_s=[float(t) for t in keyframe_times],
                         clip_times_s=np.asarray(clip_times, np.float64))
