"""VideoAnalysis -> MusicPlan: tempo and beat grid fitted to the video, sections on shots, per-beat controls.

Binding the video to the music-side controls the model was trained on (DESIGN.md); every mapping is
a rule calibrated on POP909's real ranges (the POP909_* tables, scripts/pop909_tables.py):
    energy            -> the clip's energy 0..1 (video_energy: absolute motion level, cutting, periodic
                         motion) sets the tempo (POP909's tempo range, pulled a little towards the mood's)
    periodic motion   -> the tempo locks to its period (or half / double it) and beat 0 may start a
                         fraction of a beat late so its peaks fall on beats (tempo_lock, choose_grid)
    length            -> whole beats at a tempo near the target; the final chord takes the last beat and
                         the rest of the clip (one beat plus a release); cuts on beats, bar lines preferred
    cuts              -> segment (phrase) boundaries on the nearest bar line within one beat, else the
                         nearest beat; the chord progression restarts there; accents on those beats
    motion per bar    -> onset sixteenths per bar (POP909's 5th-95th percentile range) and notes per
                         second: the groove thickens and thins with the picture
    visual onsets     -> accents (thicker attacks, louder velocities) and a groove onset on their sixteenth
    mood (semantics)  -> mode, key, register, density scale, chord progressions, part of the tempo
The last beat holds the tonic after the dominant: the ending is a cadence (see midi.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from bgmgen.core.constants import BEATS_PER_BAR, MAX_BPM, MIN_BPM, STEPS_PER_BAR, STEPS_PER_BEAT
from bgmgen.music import controls as C
from bgmgen.video.moods import DEFAULT_MOOD, MOODS, QUALITY_INTERVALS
from bgmgen.video.motion import cuts_per_second, cutting_level

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from bgmgen.video.result import VideoAnalysis

# POP909 statistics (training songs, all tracks, sixteenth grid), printed by scripts/pop909_tables.py
# (run it to regenerate): onsets per beat 5th..95th percentile; mean distinct onset positions and
# mean most-simultaneous onsets for each density 0..12; the most common one-bar grooves.
POP909_DENSITY_RANGE = (2.0, 9.0)
POP909_POSITIONS_BY_DENSITY = np.array([0.00, 1.00, 1.76, 1.99, 2.22, 2.48, 2.71, 2.98, 3.23, 3.38, 3.48, 3.54, 3.49])
POP909_ACCENT_BY_DENSITY = np.array([0.00, 1.00, 1.24, 2.01, 2.39, 3.10, 3.52, 3.91, 4.16, 4.56, 4.78, 5.08, 5.31])
POP909_BAR_GROOVES = {  # onset sixteenths per bar -> the most common one-bar grooves (share of those bars)
    1: ("1000000000000000", "0000000010000000", "0000000000000010",),  # 0.79, 0.05, 0.03
    2: ("1000000010000000", "1000000000000001", "1000000000000010",),  # 0.23, 0.14, 0.09
    3: ("1000000010001000", "1000000000001010", "1000100010000000",),  # 0.15, 0.12, 0.12
    4: ("1000100010001000", "1010101000000000", "1000001010001000",),  # 0.37, 0.09, 0.05
    5: ("1010101010000000", "1000100010001010", "1000101010001000",),  # 0.14, 0.12, 0.11
    6: ("1000101010001010", "1010101010001000", "1000100010101010",),  # 0.10, 0.09, 0.07
    7: ("1010101010101000", "1010101000101010", "1000101010101010",),  # 0.20, 0.18, 0.16
    8: ("1010101010101010", "1010100110101010", "1010101010101001",),  # 0.84, 0.01, 0.01
    9: ("1010101110101010", "1010101010101011", "1010101010111010",),  # 0.20, 0.16, 0.12
    10: ("1011101010111010", "1010101010101111", "1010101110101011",),  # 0.10, 0.09, 0.09
    11: ("1010101110101111", "1010101010111111", "1011101110101011",),  # 0.06, 0.06, 0.04
    12: ("1101110111011101", "1010101011111111", "1010111110101111",),  # 0.10, 0.05, 0.04
    13: ("1011101110111111", "1010101111111111", "1011111110101111",),  # 0.06, 0.05, 0.04
    14: ("1011111110111111", "1111101111111011", "1010111111111111",),  # 0.11, 0.07, 0.06
    15: ("1011111111111111", "1111111111111110", "1111111110111111",),  # 0.18, 0.17, 0.11
    16: ("1111111111111111",),  # 1.00
}
POP909_TEMPO_RANGE = (60.0, 120.0)  # song tempi, 10th and 95th percentile (median 74)
POP909_BAR_ONSETS_RANGE = (5, 16)  # onset sixteenths per bar, 5th and 95th percentile (median 9)
POP909_NOTES_PER_S_RANGE = (4.9, 10.0)  # song mean notes per second, 5th and 95th percentile
# mean notes per onset at each sixteenth of the bar (onset sixteenths only): a downbeat carries bass,
# chord and melody, an off-beat sixteenth mostly one note
POP909_NOTES_PER_ONSET_BY_SIXTEENTH = np.array([3.50, 1.28, 1.65, 1.52, 2.34, 1.36, 1.96, 1.50, 2.86, 1.35, 1.71,
                                                1.54, 2.51, 1.39, 1.82, 1.39])
MAJOR_TONICS = (0, 2, 3, 5, 7, 9, 10)  # C D Eb F G A Bb: comfortable piano keys
MINOR_TONICS = (9, 4, 2, 0, 7, 11)  # A E D C G B
NOTE_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# Video energy -> music (a rule, calibrated on the POP909 ranges above; docs in make_plan):
#   energy 0..1 = 1 - (1 - moving) * (1 - ENERGY_CUTS * cutting): either a busy picture or fast cutting
#                 makes a clip energetic, both together more so, where
#       moving  = ENERGY_MOTION * motion level (the fixed absolute scale of video/motion.py)
#               + ENERGY_PERIODIC * strength of a periodic motion (a regular bounce reads as lively)
#       cutting = video.motion.cutting_level(cuts per second): 0 up to a cut every 5 s, 1 from one a second
#   tempo   POP909_TEMPO_RANGE, geometric in the energy; then TEMPO_MOOD_SHARE of the way (in log) to the
#           middle of the mood's tempo range
#   onsets  POP909_BAR_ONSETS_RANGE onset sixteenths per bar, linear in each bar's energy
#   notes   NOTES_PER_S_RANGE notes per second, geometric in each bar's energy: POP909's 95th percentile
#           at the top; at the bottom half its 5th (a still picture gets sparser music than any POP909 song)
ENERGY_MOTION, ENERGY_PERIODIC, ENERGY_CUTS = 0.85, 0.15, 0.6  # fast cutting alone: energy 0.6
TEMPO_MOOD_SHARE = 0.3
NOTES_PER_S_RANGE = (POP909_NOTES_PER_S_RANGE[0] / 2, POP909_NOTES_PER_S_RANGE[1])
BAR_MOTION_GAIN = 1.5  # a bar's energy = the clip's + this x (the bar's motion level - the clip's mean level)
# Tempo lock: a periodic motion at least this strong (motion.periodicity's autocorrelation) sets the beat
# (its period, or half or double it, whichever is nearest the energy's tempo).
LOCK_MIN_STRENGTH = 0.15  # = video.motion.PERIOD_MIN_STRENGTH: every period the analysis keeps
MAX_NOTES_PER_ONSET = 4.0  # POP909's downbeats average 3.5 notes per onset
ONSET_GROOVE_MIN = 0.3  # visual onsets at least this strong put a groove onset on their sixteenth
ENDING_MAX_SHARE = 0.25  # the held final chord never takes more of a clip of ENDING_SHARE_FROM_S or longer
ENDING_SHARE_FROM_S = 5.0


@dataclass(frozen=True)
class PlanOptions:
    tempo: float | None = None  # target BPM; the exact tempo is adjusted (a few %) so the music fills the video
    mood: str | None = None  # one of moods.MOODS; default: estimated from the video
    seed: int = 0


@dataclass
class MusicPlan:
    bpm: float
    n_bars: int
    n_beats: int
    duration_s: float
    beat_times_s: np.ndarray  # [n_beats + 1] (the last entry = end of the music)
    downbeat_times_s: np.ndarray
    sections: list[dict]
    density: np.ndarray  # requested onsets per beat
    accent: np.ndarray  # 0..1 per beat (visual onsets, cuts)
    motion_per_beat: np.ndarray  # 0..1 motion level per beat (the absolute scale of video/motion.py)
    mood: str
    mood_source: str
    key: str
    key_tonic: int
    key_mode: int
    controls: C.BeatControls
    velocity_base: float
    final_beats: int
    register_end: float
    chords: list[str] = field(default_factory=list)  # chord name per beat, for the report / run.json
    start_s: float = 0.0  # time of beat 0 (a pickup rest < 1 beat when a tempo lock puts beats on the motion)
    energy: dict = field(default_factory=dict)  # video_energy(): the clip's energy and its parts, per-bar energy
    tempo: dict = field(default_factory=dict)  # how the tempo was chosen: energy / mood / target BPM, lock, grid

    def to_json(self) -> dict:
        return {
            "bpm": round(float(self.bpm), 4), "n_bars": self.n_bars, "n_beats": self.n_beats,
            "duration_s": self.duration_s, "beat_times_s": [round(float(t), 4) for t in self.beat_times_s],
            "downbeat_times_s": [round(float(t), 4) for t in self.downbeat_times_s],
            "sections": self.sections, "density": [round(float(x), 3) for x in self.density],
            "accent": [round(float(x), 3) for x in self.accent],
            "motion_per_beat": [round(float(x), 3) for x in self.motion_per_beat],
            "mood": self.mood, "mood_source": self.mood_source, "key": self.key,
            "velocity_base": self.velocity_base, "final_beats": self.final_beats, "chords": self.chords,
            "start_s": round(float(self.start_s), 4), "energy": self.energy, "tempo": self.tempo,
        }


def per_beat_mean(times: np.ndarray, values: np.ndarray, beat_times: np.ndarray) -> np.ndarray:
    """Mean of a sampled curve over each beat interval (linear interpolation where a beat has no sample)."""
    out = np.zeros(len(beat_times) - 1)
    if len(times) == 0:
        return out
    for i in range(len(out)):
        a, b = beat_times[i], beat_times[i + 1]
        m = (times >= a) & (times < b)
        out[i] = values[m].mean() if m.any() else np.interp((a + b) / 2, times, values)
    return out


def video_energy(analysis: VideoAnalysis) -> dict:
    """The clip's energy 0..1 and what it is made of (run.json "plan.energy")."""
    duration = max(float(analysis.info.duration_s), 1e-6)
    level = np.asarray(analysis.motion, np.float64)
    m_abs = np.asarray(analysis.motion_abs, np.float64)
    if len(level) and len(m_abs) == len(level):
        keep = m_abs <= np.percentile(m_abs, 95)  # cut spikes left out, as in the mood rule
        motion = float(level[keep].mean()) if keep.any() else float(level.mean())
    else:
        motion = float(level.mean()) if len(level) else 0.3
    cuts_per_s = cuts_per_second(len([c for c in analysis.cuts_s if 0 < c < duration]), duration)
    cutting = cutting_level(cuts_per_s)
    per = analysis.periodicity or {}
    periodic = float(per.get("strength", 0.0)) if per.get("period_s") else 0.0
    moving = float(np.clip(ENERGY_MOTION * motion + ENERGY_PERIODIC * periodic, 0, 1))
    energy = float(np.clip(1 - (1 - moving) * (1 - ENERGY_CUTS * cutting), 0, 1))
    return {"energy": round(energy, 4), "motion_level": round(motion, 4),
            "motion_abs_mean": round(float(m_abs[m_abs <= np.percentile(m_abs, 95)].mean()), 4) if len(m_abs) else None,
            "cuts_per_s": round(cuts_per_s, 4), "cutting": round(cutting, 4), "periodic": round(periodic, 4)}


def energy_tempo(energy: float) -> float:
    lo, hi = POP909_TEMPO_RANGE
    return float(lo * (hi / lo) ** float(np.clip(energy, 0, 1)))


def tempo_lock(periodicity: dict, target_bpm: float) -> dict | None:
    """The locked tempo for a periodic motion: its period as one beat, or a half or double (or a
    quarter / four), whichever lies in MIN_BPM..MAX_BPM nearest `target_bpm`; None without one."""
    if not periodicity or not periodicity.get("period_s") or periodicity.get("strength", 0) < LOCK_MIN_STRENGTH:
        return None
    period = float(periodicity["period_s"])
    options = [(60.0 / period) * 2.0 ** k for k in (-2, -1, 0, 1, 2)]
    options = [b for b in options if MIN_BPM <= b <= MAX_BPM]
    if not options:
        return None
    bpm = min(options, key=lambda b: abs(np.log(b / target_bpm)))
    return {"period_s": period, "phase_s": float(periodicity.get("phase_s", 0.0)),
            "strength": float(periodicity["strength"]), "bpm": round(bpm, 4),
            "beats_per_period": round(bpm * period / 60.0, 3)}


def choose_grid(duration: float, cuts: list[float], target_bpm: float, exact_tempo: bool,
                lock: dict | None = None, onsets: list[tuple[float, float]] = ()) -> dict:
    """_grid with the lock if any grid keeps the ending short enough, else without it, else without
    the ending limit (the grid's "locked" says whether the lock held)."""
    for use_lock, limit in ((lock, True), (None, True), (None, False)):
        grid = _grid(duration, cuts, target_bpm, exact_tempo, use_lock, onsets, limit)
        if grid is not None:
            return {**grid, "locked": use_lock is not None}
    return {"bpm": 60.0 / duration, "n_beats": 1, "start_s": 0.0, "cost": 0.0, "ending_s": duration, "locked": False}


def _grid(duration: float, cuts: list[float], target_bpm: float, exact_tempo: bool,
          lock: dict | None, onsets, limit_ending: bool) -> dict | None:
    """The beat grid: {"bpm", "n_beats", "start_s", "cost", "ending_s"}.

    Beat k starts at start_s + k * 60 / bpm; the music fills beats 0..n_beats-2 and the final chord
    takes beat n_beats-1 and whatever is left of the clip (less than a beat), so the held ending is one
    beat plus a release. Chosen by cost: distance from the target tempo (from the lock when there is
    one, the user's tempo within +-3 % with --tempo), cuts off beats and off bar lines, the final chord
    off a downbeat, the release (the part of a beat left after the last beat) and the held ending's share
    of the clip, a leading rest (start_s, less than a beat: only with a lock, to put the periodic
    motion's peaks on beats; the music then enters with the first of them), and with a lock the strong
    visual onsets off beats. The held ending never exceeds ENDING_MAX_SHARE of a clip of ENDING_SHARE_FROM_S or longer."""
    if lock is not None and not exact_tempo:
        centre, spread, n = lock["bpm"], 0.01, 21
    elif exact_tempo:
        centre, spread, n = target_bpm, 0.03, 61
    else:
        centre, spread, n = target_bpm, 0.15, 121
    bpms = centre * np.exp(np.linspace(np.log(1 - spread), np.log(1 + spread), n))
    bpms = bpms[(bpms >= MIN_BPM * 0.999) & (bpms <= MAX_BPM * 1.001)] if not exact_tempo else bpms
    if len(bpms) == 0:
        bpms = np.array([float(np.clip(centre, MIN_BPM, MAX_BPM))])
    # clips too short for two beats at these tempi: up to the fastest tempo, one beat of music + the final chord
    if duration * bpms.max() / 60 < 2 and not exact_tempo:
        bpms = np.unique(np.r_[bpms, np.linspace(bpms.max(), MAX_BPM, 31)])
    cut_arr = np.asarray(cuts, np.float64)
    on_t = np.array([t for t, w in onsets if w >= ONSET_GROOVE_MIN], np.float64)
    on_w = np.array([w for t, w in onsets if w >= ONSET_GROOVE_MIN], np.float64)
    best = None
    for bpm in bpms:
        beat = 60.0 / bpm
        starts = [0.0]
        if lock is not None:
            phase = lock["phase_s"] % beat
            starts += [phase, phase % (beat / 2)]
        for t0 in sorted({round(x, 6) for x in starts}):
            if t0 >= beat - 1e-9:  # a whole beat of silence before the music: never
                continue
            span = (duration - t0) / beat
            n_beats = int(np.floor(span + 1e-9))
            if n_beats < 1:
                continue
            release = span - n_beats
            ending = (1 + release) * beat
            if limit_ending and duration >= ENDING_SHARE_FROM_S and ending > ENDING_MAX_SHARE * duration:
                continue
            cost = 2.0 * abs(np.log(bpm / (lock["bpm"] if lock is not None and not exact_tempo else target_bpm)))
            cost += 0.6 * release + 1.0 * ending / duration + 0.5 * t0 / beat + (1.0 if n_beats < 2 else 0.0)
            if n_beats >= 5:
                cost += (0.0, 0.4, 0.2, 0.4)[(n_beats - 1) % 4]  # the final chord on a downbeat, else beat 3
            if len(cut_arr):
                pos = (cut_arr - t0) / beat
                cost += 2.0 * np.mean(np.abs(pos - np.round(pos)))  # 0..0.5 beats off the grid
                cost += 0.25 * np.mean(np.minimum(pos % 4, 4 - pos % 4))  # prefer bar lines (0..2 beats)
            if lock is not None and len(on_t):
                pos = (on_t - t0) / beat
                cost += 2.0 * float(np.sum(on_w * np.abs(pos - np.round(pos))) / on_w.sum())
            if best is None or cost < best["cost"] - 1e-12:
                best = {"bpm": float(bpm), "n_beats": n_beats, "start_s": float(t0), "cost": float(cost),
                        "ending_s": float(ending)}
    return best


def section_starts(cuts: list[float], bpm: float, n_beats: int) -> list[int]:
    """Beat indices where sections start: 0, then each cut on the nearest bar line within one beat,
    else on the nearest beat; sections shorter than two beats are merged; long ones split every 4 bars."""
    beat = 60.0 / bpm
    starts = [0]
    for c in sorted(cuts):
        pos = c / beat
        bar_line = round(pos / BEATS_PER_BAR) * BEATS_PER_BAR
        b = bar_line if abs(pos - bar_line) <= 1.0 else int(round(pos))
        if 2 <= b - starts[-1] and b <= n_beats - 2:
            starts.append(int(b))
    out = []
    bounds = starts + [n_beats]
    for a, b in zip(bounds[:-1], bounds[1:]):
        out.append(a)
        # split long sections into 4-bar phrases, as in the training data (phrases of 4-8 bars)
        first_bar = -(-a // BEATS_PER_BAR) * BEATS_PER_BAR
        k = first_bar + 4 * BEATS_PER_BAR
        while b - a > 8 * BEATS_PER_BAR and k <= b - 4 * BEATS_PER_BAR:
            if k - out[-1] >= 4 * BEATS_PER_BAR:
                out.append(k)
            k += 4 * BEATS_PER_BAR
    return out


def chord_name(root: int, quality: str) -> str:
    return f"{NOTE_NAMES[root % 12]}{'' if quality == 'maj' else quality}"


def make_plan(analysis: VideoAnalysis, options: PlanOptions = PlanOptions()) -> MusicPlan:
    """Fit tempo, grid, sections and per-beat controls to the analysed video (deterministic for a seed)."""
    from bgmgen.core.errors import BgmgenError

    rng = np.random.default_rng(options.seed)
    duration = float(analysis.info.duration_s)
    if options.mood:
        if options.mood not in MOODS:
            raise BgmgenError(f"unknown mood {options.mood!r}; choose one of {', '.join(MOODS)}")
        mood_name, mood_source = options.mood, "user"
    elif analysis.mood_scores:
        mood_name, mood_source = max(analysis.mood_scores, key=analysis.mood_scores.get), analysis.mood_source
    else:
        mood_name, mood_source = DEFAULT_MOOD, "default"
    mood = MOODS[mood_name]

    # Energy (absolute: a calm video stays calm) -> tempo; a periodic motion locks the beat.
    energy = video_energy(analysis)
    tempo_energy = energy_tempo(energy["energy"])
    mood_mid = float(np.sqrt(mood.bpm_range[0] * mood.bpm_range[1]))
    target = float(options.tempo) if options.tempo else \
        float(np.exp((1 - TEMPO_MOOD_SHARE) * np.log(tempo_energy) + TEMPO_MOOD_SHARE * np.log(mood_mid)))
    lock = tempo_lock(analysis.periodicity, target) if not options.tempo else None
    cuts = [float(c) for c in analysis.cuts_s if 0 < c < duration]
    grid = choose_grid(duration, cuts, target, options.tempo is not None, lock, list(analysis.onsets))
    n_beats, bpm, start_s = grid["n_beats"], grid["bpm"], grid["start_s"]
    n_bars = -(-n_beats // BEATS_PER_BAR)
    beat_s = 60.0 / bpm
    beat_times = start_s + np.arange(n_beats + 1) * beat_s
    beat_times[-1] = duration  # the final chord holds to the end of the clip
    downbeats = beat_times[:-1][::BEATS_PER_BAR]
    tempo_info = {"energy_bpm": round(tempo_energy, 3), "mood_bpm": round(mood_mid, 3), "target_bpm": round(target, 3),
                  "user_bpm": options.tempo, "lock": lock, "locked": bool(grid["locked"]),
                  "start_s": round(start_s, 4), "ending_s": round(grid["ending_s"], 4),
                  "grid_cost": round(grid["cost"], 4)}

    # Motion per beat and per bar: the clip's energy plus each bar's own motion against the clip's mean.
    m_times = np.asarray(analysis.motion_times_s, float)
    level = np.asarray(analysis.motion, float)
    grid_times = beat_times.copy()
    grid_times[-1] = min(duration, beat_times[-2] + beat_s) if n_beats else duration
    motion = per_beat_mean(m_times, level, grid_times) if len(m_times) else np.full(n_beats, 0.3)
    mean_level = float(level.mean()) if len(level) else 0.3
    bar_of = (np.arange(n_beats) // BEATS_PER_BAR)
    bar_motion = np.array([motion[bar_of == k].mean() for k in range(n_bars)]) if n_beats else np.zeros(0)
    bar_energy = np.clip(energy["energy"] + BAR_MOTION_GAIN * (bar_motion - mean_level), 0, 1)
    beat_energy = bar_energy[bar_of]
    lo_b, hi_b = POP909_BAR_ONSETS_RANGE
    bar_bits = np.clip(np.round(lo_b + (hi_b - lo_b) * bar_energy), 1, STEPS_PER_BAR).astype(int)
    lo_n, hi_n = NOTES_PER_S_RANGE
    notes_per_s = lo_n * (hi_n / lo_n) ** beat_energy * mood.density_scale
    density_target = notes_per_s * beat_s  # notes per beat

    # Accents: visual onsets and cuts, per beat (0..1), relative to the grid.
    accent = np.zeros(n_beats)
    onset_steps = []
    step_s = beat_s / STEPS_PER_BEAT
    for t, strength in analysis.onsets:
        k = int(np.floor((t - start_s) / step_s + 0.5))
        b = k // STEPS_PER_BEAT
        if 0 <= b < n_beats - 1:
            accent[b] = max(accent[b], float(strength))
            if strength >= ONSET_GROOVE_MIN:
                onset_steps.append(k)
    rel_cuts = [c - start_s for c in cuts]
    starts = section_starts(rel_cuts, bpm, n_beats) if n_beats >= BEATS_PER_BAR else [0]
    for t in rel_cuts:
        b = int(round(t / beat_s))
        if 0 <= b < n_beats:
            accent[b] = 1.0
    for b in starts[1:]:
        accent[b] = max(accent[b], 0.8)
    # Groove: each bar takes one of POP909's most common one-bar grooves with as many onset sixteenths
    # as that bar's energy asks for (POP909_BAR_ONSETS_RANGE), so bars repeat while the picture's energy
    # holds (bar-to-bar repetition is what pop accompaniment does) and the rhythm thickens or thins with
    # it; consecutive sections alternate between the two most common such grooves, and the 4th bar of
    # every 4 in a section takes the other one (a phrase-end variation). A cut or section start gets an
    # onset on its beat, a strong visual onset one on its own sixteenth (with a tempo lock these fall on
    # beats), and the music starts with an onset. The sampler imposes the groove (strict groove).
    bounds = starts + [n_beats]
    groove = np.zeros((n_beats, STEPS_PER_BEAT), np.float32)
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        for bar_start in range(a - a % BEATS_PER_BAR, b, BEATS_PER_BAR):
            beats = np.arange(max(a, bar_start), min(b, bar_start + BEATS_PER_BAR))
            choices = POP909_BAR_GROOVES[int(bar_bits[bar_start // BEATS_PER_BAR])][:2]
            bar_in_section = bar_start // BEATS_PER_BAR - a // BEATS_PER_BAR
            pattern = choices[(k + (bar_in_section % 4 == 3)) % len(choices)]
            bar = np.array([int(c) for c in pattern], np.float32).reshape(BEATS_PER_BAR, STEPS_PER_BEAT)
            groove[beats] = bar[beats % BEATS_PER_BAR]
    groove[accent >= 0.5, 0] = 1
    for k in onset_steps:
        groove[k // STEPS_PER_BEAT, k % STEPS_PER_BEAT] = 1
    if n_beats:
        groove[0, 0] = 1
        groove[-1] = (1, 0, 0, 0)  # the final chord's beat (midi.py writes the chord itself)
    # Notes per beat: each bar's notes (the energy's notes per second) spread over its groove onsets in
    # the proportions POP909 has at those sixteenths (POP909_NOTES_PER_ONSET_BY_SIXTEENTH: more on the
    # downbeat, fewer on off-beat sixteenths), at least one and at most MAX_NOTES_PER_ONSET per onset, so
    # the requested density is one the model learnt to play.
    positions = groove.sum(axis=1)
    d_idx = np.arange(len(POP909_POSITIONS_BY_DENSITY))
    profile = np.tile(POP909_NOTES_PER_ONSET_BY_SIXTEENTH.reshape(BEATS_PER_BAR, STEPS_PER_BEAT),
                      (n_bars, 1))[:n_beats]
    weights = groove * profile
    density = np.zeros(n_beats)
    for k in range(n_bars):
        sl = slice(k * BEATS_PER_BAR, min(n_beats, (k + 1) * BEATS_PER_BAR))
        scale = density_target[sl].sum() / max(float(weights[sl].sum()), 1e-9)
        density[sl] = np.where(groove[sl] > 0, np.clip(scale * weights[sl], 1.0, MAX_NOTES_PER_ONSET), 0).sum(1)
    accent_raw = np.interp(density, d_idx, POP909_ACCENT_BY_DENSITY) + 2.5 * accent
    mean_level = energy["energy"]

    # Key, chords, register, structure.
    tonics = MINOR_TONICS if mood.mode == "minor" else MAJOR_TONICS
    tonic = int(tonics[rng.integers(len(tonics))])
    key_mode = int(mood.mode == "minor")
    chord_root = np.zeros(n_beats, np.int64)
    chord_chroma = np.zeros((n_beats, 12), np.uint8)
    names = []
    beats_per_chord = BEATS_PER_BAR // mood.chords_per_bar
    sections = []
    register = np.zeros(n_beats, np.float32)
    phrase_id = np.zeros(n_beats, np.int64)
    phrase_pos = np.zeros(n_beats, np.float32)
    melodic = np.ones(n_beats, np.float32)
    shot_of = np.searchsorted(np.asarray(cuts), beat_times[:-1] + beat_s / 2) if cuts else np.zeros(n_beats, int)
    reg_offsets = (0.0, 3.0, -2.0, 2.0, -1.0)
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        prog = mood.progressions[rng.integers(len(mood.progressions))]
        for beat in range(a, b):
            step = (beat - a) // beats_per_chord
            offset, quality = prog[step % len(prog)]
            root = (tonic + offset) % 12
            chord_root[beat] = root
            chord_chroma[beat, [(root + i) % 12 for i in QUALITY_INTERVALS[quality]]] = 1
            names.append(chord_name(root, quality))
        phrase_id[a:b] = k
        phrase_pos[a:b] = np.arange(b - a) / max(b - a - 1, 1)
        register[a:b] = mood.register + reg_offsets[k % len(reg_offsets)] + 3.0 * float(motion[a:b].mean())
        sections.append({"start_beat": int(a), "end_beat": int(b), "start_s": round(float(beat_times[a]), 3),
                         "end_s": round(float(beat_times[b]), 3), "shot": int(shot_of[a])})
    if n_bars >= 16 and len(sections) >= 3:  # intro / outro, as the lower-case phrases of POP909
        if starts[1] <= 4 * BEATS_PER_BAR:
            melodic[: starts[1]] = 0
        if n_beats - starts[-1] <= 4 * BEATS_PER_BAR:
            melodic[starts[-1]:] = 0

    # Cadence: the final chord (tonic) takes the last beat; the dominant the beats before it, from the
    # bar line before it (the whole bar before when the final chord is on a downbeat). A clip of a few
    # beats is one gesture: dominant, then the tonic held.
    final_beats = 1
    fb = n_beats - final_beats
    dom_from = max(0, fb - (fb % BEATS_PER_BAR or BEATS_PER_BAR))
    third = 3 if key_mode else 4
    cadence = [((tonic + 7) % 12, (0, 4, 7, 10), "7"), (tonic, (0, third, 7), "min" if key_mode else "maj")]
    spans = [(dom_from, fb), (fb, n_beats)]
    for (a, b), (root, intervals, quality) in zip(spans, cadence):
        chord_root[a:b] = root
        chord_chroma[a:b] = 0
        for beat in range(a, b):
            chord_chroma[beat, [(root + i) % 12 for i in intervals]] = 1
            names[beat] = chord_name(root, quality)

    ctl = C.BeatControls(
        density=density.astype(np.float32), positions=positions.astype(np.float32),
        accent=accent_raw.astype(np.float32), chord_root=chord_root, chord_chroma=chord_chroma,
        chord_bass=chord_root.copy(), key_tonic=np.full(n_beats, tonic, np.int64),
        key_mode=np.full(n_beats, key_mode), register=register, phrase_id=phrase_id,
        phrase_pos=phrase_pos, melodic=melodic, groove=groove)
    velocity_base = float(np.clip(62 + 18 * mean_level + {"calm": -6, "melancholic": -4, "energetic": 6,
                                                          "tense": 4}.get(mood_name, 0), 48, 92))
    return MusicPlan(
        bpm=bpm, n_bars=n_bars, n_beats=n_beats, duration_s=duration, beat_times_s=beat_times,
        downbeat_times_s=downbeats, sections=sections, density=density, accent=accent, motion_per_beat=motion,
        mood=mood_name, mood_source=mood_source, key=f"{NOTE_NAMES[tonic]} {mood.mode}", key_tonic=tonic,
        key_mode=key_mode, controls=ctl, velocity_base=round(velocity_base, 1), final_beats=final_beats,
        register_end=float(mood.register), chords=names, start_s=start_s,
        energy={**energy, "bar_energy": [round(float(x), 3) for x in bar_energy],
                "bar_onset_sixteenths": [int(x) for x in bar_bits]},
        tempo=tempo_info)

