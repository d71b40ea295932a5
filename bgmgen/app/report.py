"""report: one picture that shows how the music follows the video.

Three panels share one time axis in seconds (0 .. video duration):
  1. a keyframe per shot (on videos with more than 40 shots, the 40 longest), placed over its shot, with
     the shot spans shaded alternately;
  2. what drove the music: the motion level on its absolute scale (0 still .. 1 a skipping rope, the
     same for every video) with the clip's energy as a dashed line, the per-beat density the plan asked
     for, accents, visual onsets, and, when the tempo locked to a periodic motion, the motion's beats
     (orange ticks: one per period, at its phase);
  3. the generated piano roll (sustained notes as bars, onsets as dots), pitch against time.
Cut times are red vertical lines through every panel; downbeats (the bar grid) are grey lines. A
second title line gives the tempo decision (energy, mood and target tempo, lock) and the mood's
evidence (its source, the rule's features, the top scores).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bgmgen.core.constants import N_PITCHES, ONSET, STEPS_PER_BEAT, SUSTAIN
from bgmgen.core.files import atomic_path

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from bgmgen.music.plan import MusicPlan
    from bgmgen.video.analysis import VideoAnalysis

FIG_SIZE_IN = (14.0, 9.0)
DPI = 100
HEIGHT_RATIOS = (1.3, 1.3, 3.0)
ROLL_THRESHOLD = 0.5
PITCH_MARGIN = 3
CUT_COLOR = "#d62728"
GRID_COLOR = "#9a9a9a"


def step_times(plan: MusicPlan, n_steps: int) -> np.ndarray:
    """Start time (s) of each 16th-note step, following the plan's beat times (tempo map) and
    extrapolating past the last beat at the plan's tempo."""
    beats = np.asarray(plan.beat_times_s, dtype=np.float64)
    beat_s = 60.0 / float(plan.bpm)
    if len(beats) < 2:
        start = beats[0] if len(beats) else 0.0
        beats = start + beat_s * np.arange(max(2, n_steps // STEPS_PER_BEAT + 2))
    pos = np.arange(n_steps + 1, dtype=np.float64) / STEPS_PER_BEAT  # in beats
    idx = np.arange(len(beats), dtype=np.float64)
    times = np.interp(pos, idx, beats)
    last = len(beats) - 1
    after = pos > last
    times[after] = beats[-1] + (pos[after] - last) * (beats[-1] - beats[-2])
    return times


def _roll_notes(roll: np.ndarray):
    """Sustain segments (pitch, start_step, end_step) and onset positions (step, pitch) of a
    [2, T, 128] roll. A note is a run of sustain frames; an onset inside a run starts a new note."""
    roll = np.asarray(roll)
    if roll.ndim != 3 or roll.shape[0] < 2 or roll.shape[2] != N_PITCHES:
        raise ValueError(f"piano roll of shape {roll.shape}; expected [2, T, {N_PITCHES}]")
    onset = roll[ONSET] > ROLL_THRESHOLD
    sustain = (roll[SUSTAIN] > ROLL_THRESHOLD) | onset
    notes = []
    for pitch in np.flatnonzero(sustain.any(axis=0)):
        col, ons = sustain[:, pitch], onset[:, pitch]
        start = None
        for t in range(len(col) + 1):
            on = t < len(col) and col[t]
            new = on and (start is None or ons[t])
            if start is not None and (not on or new):
                notes.append((int(pitch), start, t))
                start = None
            if new:
                start = t
    on_t, on_p = np.nonzero(onset)
    return notes, on_t, on_p


def _keyframe_panel(ax, analysis: VideoAnalysis, frames: np.ndarray | None, duration: float) -> None:
    shots = list(analysis.shots or [(0.0, duration)])
    for i, (s, e) in enumerate(shots):
        ax.axvspan(s, e, color="#f0f0f0" if i % 2 == 0 else "#dcdcdc", zorder=0, lw=0)
    times = list(analysis.keyframe_times_s)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel("shots")
    if frames is None or len(frames) == 0:
        return
    fig = ax.figure
    pos = ax.get_position()  # the axes' size in pixels keeps the keyframes' aspect ratio
    width_px, height_px = pos.width * fig.get_figwidth() * fig.dpi, pos.height * fig.get_figheight() * fig.dpi
    sec_per_px = duration / max(width_px, 1.0)
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        j = min(i, len(shots) - 1)
        if i < len(times):  # the shot that holds the keyframe's time (long videos: not every shot has one)
            t = float(times[i])
            j = next((k for k, (a, b) in enumerate(shots) if a <= t < b), j)
        s, e = shots[j]
        h_px, w_px = frame.shape[0], frame.shape[1]
        height = 0.9  # axis fraction
        width_s = (w_px / h_px) * height * height_px * sec_per_px
        span = max(e - s, 1e-6)
        if width_s > 0.96 * span:  # a short shot: shrink the picture to fit inside it
            height *= 0.96 * span / width_s
            width_s = 0.96 * span
        centre = (s + e) / 2.0
        x0 = min(max(centre - width_s / 2, s), max(s, e - width_s))
        y0 = (1.0 - height) / 2
        ax.imshow(frame, extent=(x0, x0 + width_s, y0, y0 + height), aspect="auto", zorder=2,
                  interpolation="bilinear")
        ax.text(s + 0.002 * duration, 0.97, str(j + 1), va="top", ha="left", fontsize=7, zorder=3)


def _curves_panel(ax, analysis: VideoAnalysis, plan: MusicPlan, duration: float) -> None:
    mt = np.asarray(analysis.motion_times_s, dtype=np.float64)
    mv = np.asarray(analysis.motion, dtype=np.float64)
    if len(mt) and len(mt) == len(mv):
        ax.fill_between(mt, 0, mv, color="#1f77b4", alpha=0.25, lw=0)
        ax.plot(mt, mv, color="#1f77b4", lw=0.9, label="motion level (absolute scale)")
    energy = (getattr(plan, "energy", None) or {}).get("energy")
    if energy is not None:
        ax.axhline(float(energy), color="#1f77b4", lw=1.0, ls="--", alpha=0.8,
                   label=f"clip energy {float(energy):.2f} ({_energy_word(float(energy))})")
    tempo = getattr(plan, "tempo", None) or {}
    lock = tempo.get("lock") if tempo.get("locked") else None
    if lock:
        period, phase = float(lock["period_s"]), float(lock["phase_s"])
        peaks = np.arange(phase % period, duration, period)
        ax.vlines(peaks, 0.92, 1.06, color="#ff7f0e", lw=1.6,
                  label=f"motion beats: period {period:.3f} s -> {float(lock['bpm']):.1f} BPM")
    beats = np.asarray(plan.beat_times_s, dtype=np.float64)
    density = np.asarray(plan.density, dtype=np.float64)
    if len(beats) and len(density):
        n = min(len(beats), len(density))
        scale = max(float(np.nanmax(density[:n])), 1e-9) if n else 1.0
        edges = np.append(beats[:n], beats[n - 1] + (60.0 / float(plan.bpm)))
        ax.stairs(density[:n] / scale, edges, color="#ff7f0e", lw=1.4,
                  label=f"requested density per beat (max {scale:.2g})")
    accent = np.asarray(plan.accent, dtype=np.float64)
    if len(beats) and len(accent):
        n = min(len(beats), len(accent))
        strong = accent[:n] > 0
        if strong.any():
            ax.vlines(beats[:n][strong], 0, np.clip(accent[:n][strong], 0, 1) * 0.25, color="#2ca02c", lw=1.2,
                      label="accents")
    onsets = list(analysis.onsets)
    if onsets:
        ot = np.array([o[0] for o in onsets], dtype=np.float64)
        ax.plot(ot, np.full_like(ot, 1.1), "v", color="#9467bd", ms=3.5, label="visual onsets", clip_on=False)
    ax.set_ylim(0, 1.45)  # the legend sits above the curves (0..1) and the marks (1.0..1.1)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel("motion / density")
    ax.legend(loc="upper right", fontsize=7, ncol=4, framealpha=0.85)


def _full_height_lines(ax, times, **style) -> None:
    """Vertical lines across the whole height of `ax` at `times` (seconds), as one collection: one
    artist per line (axvline) made the report's 90 lines cost about 0.08 s."""
    times = np.asarray(times, dtype=np.float64)
    if len(times):
        ax.vlines(times, 0, 1, transform=ax.get_xaxis_transform(), **style)


def _roll_panel(ax, plan: MusicPlan, roll: np.ndarray, duration: float) -> None:
    from matplotlib.collections import PolyCollection  # heavy: imported on use

    notes, on_t, on_p = _roll_notes(roll)
    times = step_times(plan, np.asarray(roll).shape[1])
    if notes:
        pitches = np.array([n[0] for n in notes])
        starts = times[[n[1] for n in notes]]
        ends = times[[n[2] for n in notes]]
        # One collection of rectangles: as Rectangle patches (barh) each note cost ~1 ms to add.
        half = 0.4  # bar height 0.8 around the pitch
        boxes = np.stack([np.stack([starts, pitches - half], 1), np.stack([starts, pitches + half], 1),
                          np.stack([ends, pitches + half], 1), np.stack([ends, pitches - half], 1)], 1)
        ax.add_collection(PolyCollection(boxes, facecolors="#4c72b0", alpha=0.55, linewidths=0), autolim=False)
        ax.plot(times[on_t], on_p, "|", color="#1b2a4a", ms=4, mew=1.0)
        lo, hi = int(pitches.min()) - PITCH_MARGIN, int(pitches.max()) + PITCH_MARGIN
    else:
        lo, hi = 36, 96
        ax.text(duration / 2, (lo + hi) / 2, "no notes", ha="center", va="center", color="0.4")
    ax.set_ylim(lo, hi)
    c_notes = [p for p in range(lo, hi + 1) if p % 12 == 0]
    ax.set_yticks(c_notes, [f"C{p // 12 - 1}" for p in c_notes])
    ax.set_ylabel("pitch")
    ax.set_xlabel("time (s)")


def _energy_word(energy: float) -> str:
    return "calm" if energy < 1 / 3 else "medium" if energy < 2 / 3 else "busy"


def _decision_line(analysis: VideoAnalysis, plan: MusicPlan) -> str:
    """Tempo decision and mood evidence, one line (the report's second title line)."""
    tempo = getattr(plan, "tempo", None) or {}
    parts = []
    if tempo:
        t = (f"tempo: energy {tempo.get('energy_bpm', 0):.0f}, mood {tempo.get('mood_bpm', 0):.0f} "
             f"-> target {tempo.get('target_bpm', 0):.0f} BPM")
        if tempo.get("user_bpm"):
            t = f"tempo: --tempo {tempo['user_bpm']:g}"
        if tempo.get("locked") and tempo.get("lock"):
            t += f", locked to the motion period {tempo['lock']['period_s']:.3f} s"
        if tempo.get("start_s"):
            t += f", beat 0 at {tempo['start_s']:.2f} s"
        parts.append(t + f"; ending {tempo.get('ending_s', 0):.2f} s")
    ev = getattr(analysis, "mood_evidence", None) or {}
    feats = ev.get("features") or {}
    top = sorted(analysis.mood_scores.items(), key=lambda kv: -kv[1])[:3]
    mood = f"mood {plan.mood} ({plan.mood_source})"
    if feats:
        order = [k for k in "BSMWCAP" if k in feats] + [k for k in feats if k not in "BSMWCAP"]
        mood += ": " + " ".join(f"{k} {feats[k]:+.2f}" for k in order)
    if top:
        mood += " | " + ", ".join(f"{k} {v:.2f}" for k, v in top)
    parts.append(mood)
    return "   ".join(parts)


def write_report(png_path, analysis: VideoAnalysis, plan: MusicPlan, roll: np.ndarray,
                 keyframes: np.ndarray | None = None) -> None:
    """Write report.png: keyframes per shot, cuts, motion and requested density, bar grid and the
    generated piano roll on one time axis (seconds). `keyframes` ([n_shots, h, w, 3] uint8, one per
    `analysis.keyframe_times_s`: the analysis' `Keyframes.frames`) are drawn over their shots; None
    leaves the shot panel without pictures."""
    # The object API (no pyplot, no global figure manager): the pipeline draws the report in a
    # worker thread while the audio renders and muxes.
    import matplotlib  # noqa: PLC0415  (heavy: imported on use)
    from matplotlib.figure import Figure  # noqa: PLC0415

    info = analysis.info
    duration = float(info.duration_s or plan.duration_s or 1.0)
    with matplotlib.rc_context({"font.size": 8, "axes.titlesize": 10}):
        fig = Figure(figsize=FIG_SIZE_IN, dpi=DPI)
        axes = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": HEIGHT_RATIOS, "hspace": 0.08})
        ax_kf, ax_cv, ax_roll = axes
        fig.subplots_adjust(left=0.05, right=0.99, top=0.945, bottom=0.06)
        ax_kf.set_xlim(0, duration)
        downbeats = np.asarray(plan.downbeat_times_s, dtype=np.float64)
        for ax in (ax_cv, ax_roll):
            _full_height_lines(ax, downbeats, color=GRID_COLOR, lw=0.7, alpha=0.6, zorder=0)
        for ax in axes:
            _full_height_lines(ax, analysis.cuts_s, color=CUT_COLOR, lw=1.3, alpha=0.85, zorder=4)
        _keyframe_panel(ax_kf, analysis, keyframes, duration)
        _curves_panel(ax_cv, analysis, plan, duration)
        _roll_panel(ax_roll, plan, roll, duration)
        ax_roll.set_xlim(0, duration)
        name = Path(info.path or "video").name
        title = (f"{name}: {duration:.2f} s, {len(analysis.shots)} shot(s), {len(analysis.cuts_s)} cut(s) "
                 f"(red) | {float(plan.bpm):.1f} BPM, {int(plan.n_bars)} bars (grey = downbeats)"
                 f" | {plan.key}, mood {plan.mood}")
        fig.suptitle(title, x=0.01, ha="left", y=0.995)
        fig.text(0.01, 0.962, _decision_line(analysis, plan), ha="left", va="bottom", fontsize=7.5, color="0.25")
        with atomic_path(png_path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
