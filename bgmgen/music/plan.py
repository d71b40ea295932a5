"""VideoAnalysis -> MusicPlan: tempo and bar grid fitted to the video, sections on shots, per-beat controls.

Binding the video to the music-side controls the model was trained on (DESIGN.md):
    length            -> a whole number of bars (or of beats for clips shorter than ~3 s) at a tempo
                         that fills the video exactly, chosen near the mood's tempo and so that cuts
                         fall on beats (bar lines preferred)
    cuts              -> segment (phrase) boundaries on the nearest bar line within one beat, else the
                         nearest beat; the chord progression restarts there; accents on those beats
    motion            -> onset density per beat, mapped onto POP909's density distribution
    visual onsets     -> accents (thicker attacks, louder velocities)
    mood (semantics)  -> mode, key, register, tempo range, density scale, chord progressions
The last bar holds the tonic after a dominant bar: the ending is a cadence (see midi.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from bgmgen.core.constants import BEATS_PER_BAR, MAX_BPM, MIN_BPM, STEPS_PER_BAR, STEPS_PER_BEAT
from bgmgen.music import controls as C
from bgmgen.video.moods import DEFAULT_MOOD, MOODS, QUALITY_INTERVALS

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
MAJOR_TONICS = (0, 2, 3, 5, 7, 9, 10)  # C D Eb F G A Bb: comfortable piano keys
MINOR_TONICS = (9, 4, 2, 0, 7, 11)  # A E D C G B
NOTE_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SHORT_CLIP_BARS = 2  # below two bars at the fastest tempo the grid counts beats, not bars


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
    motion_per_beat: np.ndarray  # 0..1 motion level per beat
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


def choose_grid(duration: float, cuts: list[float], target_bpm: float, exact_tempo: bool) -> tuple[int, int, float]:
    """(n_bars, n_beats, bpm): whole bars filling `duration`, near target_bpm, cuts on beats/bar lines."""
    if duration * MAX_BPM / 60 < SHORT_CLIP_BARS * BEATS_PER_BAR:  # too short for two bars: count beats
        n_beats = max(1, int(round(duration * target_bpm / 60)))
        return 0, n_beats, 60.0 * n_beats / duration
    best = None
    lo, hi = (target_bpm * 0.97, target_bpm * 1.03) if exact_tempo else (MIN_BPM, MAX_BPM)
    for n_bars in range(1, int(duration * MAX_BPM / 240) + 2):
        bpm = 240.0 * n_bars / duration
        if not lo <= bpm <= hi:
            continue
        beat = 60.0 / bpm
        cost = 2.0 * abs(np.log(bpm / target_bpm))
        if cuts:
            pos = np.asarray(cuts) / beat
            cost += 2.0 * np.mean(np.abs(pos - np.round(pos)))  # 0..0.5 beats off the grid
            cost += 0.25 * np.mean(np.minimum(pos % 4, 4 - pos % 4))  # prefer bar lines (0..2 beats)
        if best is None or cost < best[0]:
            best = (cost, n_bars, bpm)
    if best is None:  # the requested tempo cannot fill the video with whole bars: nearest whole bar count
        n_bars = max(1, int(round(duration * target_bpm / 240)))
        return n_bars, n_bars * BEATS_PER_BAR, 240.0 * n_bars / duration
    return best[1], best[1] * BEATS_PER_BAR, best[2]


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

    # Motion level 0..1: absolute energy (so a calm video stays calm) blended with the per-video curve.
    m_times = np.asarray(analysis.motion_times_s, float)
    m_abs = np.asarray(analysis.motion_abs, float)
    m_rel = np.asarray(analysis.motion, float)
    abs_level = np.clip(np.log1p(m_abs) / np.log1p(20.0), 0, 1)
    level_curve = np.clip(0.6 * abs_level + 0.4 * m_rel, 0, 1)
    mean_level = float(level_curve.mean()) if len(level_curve) else 0.3

    lo, hi = mood.bpm_range
    target = float(options.tempo) if options.tempo else lo + (hi - lo) * mean_level
    cuts = [float(c) for c in analysis.cuts_s if 0 < c < duration]
    n_bars, n_beats, bpm = choose_grid(duration, cuts, target, options.tempo is not None)
    beat_s = 60.0 / bpm
    beat_times = np.arange(n_beats + 1) * beat_s
    beat_times[-1] = duration
    downbeats = beat_times[:-1][::BEATS_PER_BAR] if n_bars else beat_times[:1]

    motion = per_beat_mean(m_times, level_curve, beat_times) if len(m_times) else np.full(n_beats, 0.3)
    smooth = np.convolve(np.pad(motion, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    lo_d, hi_d = POP909_DENSITY_RANGE
    density = np.clip((lo_d + (hi_d - lo_d) * smooth) * mood.density_scale, 0.5, 12.0)
    d_idx = np.arange(len(POP909_POSITIONS_BY_DENSITY))
    positions = np.interp(density, d_idx, POP909_POSITIONS_BY_DENSITY)

    # Accents: visual onsets and cuts, per beat (0..1).
    accent = np.zeros(n_beats)
    for t, strength in analysis.onsets:
        b = int(np.floor(t / beat_s + 0.5))
        if 0 <= b < n_beats:
            accent[b] = max(accent[b], float(strength))
    starts = section_starts(cuts, bpm, n_beats) if n_bars else [0]
    for t in cuts:
        b = int(round(t / beat_s))
        if 0 <= b < n_beats:
            accent[b] = 1.0
    for b in starts[1:]:
        accent[b] = max(accent[b], 0.8)
    # Groove: each bar takes one of POP909's most common one-bar grooves with as many onset
    # sixteenths as that bar's density implies, so bars repeat while the picture's energy holds
    # (bar-to-bar repetition is what pop accompaniment does) and the rhythm thickens or thins with
    # it; consecutive sections alternate between the two most common such grooves, and the 4th bar
    # of every 4 in a section takes the other one (a phrase-end variation); an accented beat gets an
    # onset on the beat. Positions (distinct onset sixteenths) follow from the groove. The sampler
    # imposes it (strict groove).
    bounds = starts + [n_beats]
    groove = np.zeros((n_beats, STEPS_PER_BEAT), np.float32)
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        for bar_start in range(a - a % BEATS_PER_BAR, b, BEATS_PER_BAR):
            beats = np.arange(max(a, bar_start), min(b, bar_start + BEATS_PER_BAR))
            bar_pos = positions[bar_start:bar_start + BEATS_PER_BAR]
            bits = int(np.clip(np.round(BEATS_PER_BAR * bar_pos.mean()), 1, STEPS_PER_BAR))
            choices = POP909_BAR_GROOVES[bits][:2]
            bar_in_section = bar_start // BEATS_PER_BAR - a // BEATS_PER_BAR
            pattern = choices[(k + (bar_in_section % 4 == 3)) % len(choices)]
            bar = np.array([int(c) for c in pattern], np.float32).reshape(BEATS_PER_BAR, STEPS_PER_BEAT)
            groove[beats] = bar[beats % BEATS_PER_BAR]
    groove[accent >= 0.5, 0] = 1
    # Onsets per beat follow the groove, as they do in the music the model learnt from: each onset
    # sixteenth carries the notes per onset the motion asks for (density / positions, at least one).
    notes_per_onset = np.maximum(density / np.maximum(positions, 1.0), 1.0)
    positions = groove.sum(axis=1)
    density = positions * notes_per_onset
    accent_raw = np.interp(density, d_idx, POP909_ACCENT_BY_DENSITY) + 2.5 * accent

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

    # Cadence: dominant in the bar before the final bar, tonic in the final bar.
    final_beats = BEATS_PER_BAR if n_bars >= 2 else max(1, min(2, n_beats // 2))
    third = 3 if key_mode else 4
    cadence = [((tonic + 7) % 12, (0, 4, 7, 10), "7"), (tonic, (0, third, 7), "min" if key_mode else "maj")]
    spans = [(max(0, n_beats - final_beats - BEATS_PER_BAR), n_beats - final_beats), (n_beats - final_beats, n_beats)]
    if n_bars < 2:
        spans = spans[1:]
        cadence = cadence[1:]
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
        register_end=float(mood.register), chords=names)

