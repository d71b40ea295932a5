"""Piano roll -> MIDI: notes on the tempo grid, velocities from the plan, and a real ending.

The roll (2, n_steps, 128) is read as Diff-BGM does: a note starts at an onset step and lasts one
step plus every following sustain step. Velocities follow the music's shape: a base level from the
mood, metric accents (downbeat > beat 3 > other beats > offbeats), the plan's per-beat accent
(visual onsets, cuts), the top voice a little louder than the accompaniment, and a decrescendo
into the final beat. Ending (video scoring): the generated notes stop at the plan's last beat and a
tonic chord (bass, triad, top note) is held from there to the exact end of the video (one beat plus
what is left of the clip), so the piece closes on a cadence (the plan asks for the dominant before
it) instead of being cut off. Beat 0 sits at `plan.start_s` (0, or a pickup rest of less than a beat
when the tempo is locked to a periodic motion): every time is shifted by it.
Sustain pedal (CC 64), as a pianist plays pop accompaniment: lifted at each chord change and
pressed again just after the new chord sounds (legato pedalling), so the short notes the model
writes ring into one harmony without blurring two; held through the final chord, lifted at the end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bgmgen.core.constants import STEPS_PER_BAR, STEPS_PER_BEAT

PIANO_PROGRAM = 0  # General MIDI acoustic grand piano
SUSTAIN_PEDAL = 64  # MIDI controller number
PEDAL_LIFT_S = 0.02  # the pedal comes up this long before a chord change ...
PEDAL_CATCH_S = 0.06  # ... and goes down again this long after it (the new notes are sounding)
ENDING_LIGHT_ENERGY = 1 / 3  # plan.energy["energy"] thresholds of the final chord's size (report.py's
ENDING_FULL_ENERGY = 2 / 3   # calm / medium / busy)
METRIC_ACCENT = np.array([10, -4, 0, -4, 4, -4, 0, -4, 6, -4, 0, -4, 4, -4, 0, -4], np.float32)


def roll_to_notes(roll: np.ndarray) -> list[tuple[int, int, int]]:
    """(2, T, 128) roll -> sorted [(start_step, end_step, pitch)] (end exclusive)."""
    onset, sustain = roll[0] > 0.5, roll[1] > 0.5
    T = onset.shape[0]
    notes = []
    for t, p in zip(*np.nonzero(onset)):
        end = t + 1
        while end < T and sustain[end, p] and not onset[end, p]:
            end += 1
        notes.append((int(t), int(end), int(p)))
    notes.sort()
    return notes


def note_velocities(notes: list[tuple[int, int, int]], accent_per_beat: np.ndarray | None,
                    base: float = 72.0) -> list[int]:
    """Velocity per note: base + metric accent + plan accent + top-voice lift, clipped to 28..112."""
    if not notes:
        return []
    starts = np.array([n[0] for n in notes])
    pitches = np.array([n[2] for n in notes])
    top = np.zeros(len(notes), bool)
    for s in np.unique(starts):
        idx = np.nonzero(starts == s)[0]
        top[idx[np.argmax(pitches[idx])]] = pitches[idx].max() >= 60
    vel = base + METRIC_ACCENT[starts % STEPS_PER_BAR] + np.where(top, 8.0, 0.0) - np.where(pitches < 48, 6.0, 0.0)
    if accent_per_beat is not None and len(accent_per_beat):
        beat = np.minimum(starts // STEPS_PER_BEAT, len(accent_per_beat) - 1)
        vel += 14.0 * (np.asarray(accent_per_beat)[beat] - 0.5)
    return [int(v) for v in np.clip(np.round(vel), 28, 112)]


def notes_to_midi(notes, velocities, bpm: float, end_time_s: float | None = None, offset_s: float = 0.0):
    """pretty_midi.PrettyMIDI with one piano track and a tempo event at `bpm`; step 0 at `offset_s`."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=float(bpm), resolution=480)
    piano = pretty_midi.Instrument(program=PIANO_PROGRAM, name="Piano")
    step_s = 60.0 / bpm / STEPS_PER_BEAT
    for (s, e, p), v in zip(notes, velocities):
        start, end = offset_s + s * step_s, offset_s + e * step_s
        if end_time_s is not None:
            end = min(end, end_time_s)
        if end - start > 1e-3:
            piano.notes.append(pretty_midi.Note(velocity=int(v), pitch=int(p), start=start, end=end))
    pm.instruments.append(piano)
    return pm


def final_chord(tonic: int, mode: int, register: float, last_top: int | None, energy: float = 1.0) -> list[int]:
    """Pitches of the closing tonic chord: bass in octave 2-3, a close triad near `register`, a top note;
    as full as the clip is busy: below ENDING_LIGHT_ENERGY the bass and the triad only (a calm clip closes
    softly), below ENDING_FULL_ENERGY with the top note, from there also the bass doubled an octave down."""
    third = 3 if mode else 4
    bass = 36 + (tonic - 36) % 12
    if bass < 38:
        bass += 12
    center = int(round(register))
    triad = []
    for interval in (0, third, 7):
        pc = (tonic + interval) % 12
        p = center - 6 + (pc - (center - 6)) % 12
        triad.append(p)
    low = bass - 12 if bass - 12 >= 28 and energy >= ENDING_FULL_ENERGY else bass
    chord = sorted({bass, low, *triad})
    if energy < ENDING_LIGHT_ENERGY:
        return chord
    top_pc = [tonic % 12, (tonic + third) % 12]
    ref = last_top if last_top is not None else max(triad) + 3
    top = min((p for p in range(48, 96) if p % 12 in top_pc and p > max(triad)), key=lambda p: abs(p - ref))
    return sorted(set(chord + [top]))


def roll_to_midi(roll: np.ndarray, plan):
    """Video scoring: roll + MusicPlan -> PrettyMIDI lasting exactly plan.duration_s, ending on a tonic chord."""
    n_steps = plan.n_beats * STEPS_PER_BEAT
    roll = roll[:, :n_steps]
    final_beats = plan.final_beats
    cut = n_steps - final_beats * STEPS_PER_BEAT  # the ending chord starts here
    notes = [(s, min(e, cut), p) for s, e, p in roll_to_notes(roll) if s < cut]
    vel = note_velocities(notes, plan.accent, plan.velocity_base)
    # decrescendo over the two bars before the ending
    fade_from = max(0, cut - 2 * STEPS_PER_BAR)
    vel = [int(round(v * (1 - 0.25 * max(0, s - fade_from) / max(1, cut - fade_from))))
           for (s, _, _), v in zip(notes, vel)]
    last_top = max((p for s, _, p in notes if s >= cut - STEPS_PER_BAR), default=None)
    step_s = 60.0 / plan.bpm / STEPS_PER_BEAT
    offset = float(getattr(plan, "start_s", 0.0))
    end_step = (plan.duration_s - offset) / step_s  # exact end of the video on the step grid (may be fractional)
    energy = float((getattr(plan, "energy", None) or {}).get("energy", 1.0))
    chord = final_chord(plan.key_tonic, plan.key_mode, plan.register_end, last_top, energy)
    ending_vel = int(np.clip(plan.velocity_base - 4, 40, 96))
    notes_all = notes + [(cut, int(np.ceil(end_step)), p) for p in chord]
    vel_all = vel + [ending_vel - (6 if p < 48 else 0) for p in chord]
    pm = notes_to_midi(notes_all, vel_all, plan.bpm, end_time_s=plan.duration_s, offset_s=offset)
    add_pedal(pm.instruments[0], pedal_change_times(plan, offset + cut * step_s), plan.duration_s)
    return pm


def pedal_change_times(plan, ending_s: float) -> list[float]:
    """Seconds at which the pedal is changed: the start of each new chord (root or chroma change,
    or a new section), and the final chord."""
    c = plan.controls
    beat_s = 60.0 / plan.bpm
    offset = float(getattr(plan, "start_s", 0.0))
    starts = {int(s["start_beat"]) for s in plan.sections}
    times = []
    for b in range(len(c.chord_root)):
        t = offset + b * beat_s
        if t >= ending_s - 1e-6:
            break
        new_chord = b == 0 or c.chord_root[b] != c.chord_root[b - 1] \
            or not np.array_equal(c.chord_chroma[b], c.chord_chroma[b - 1])
        if new_chord or b in starts:
            times.append(t)
    times.append(ending_s)
    return sorted(set(round(t, 6) for t in times))


def add_pedal(instrument, change_times_s: list[float], end_s: float) -> None:
    """CC 64 events: down just after each change time, up just before the next one and at `end_s`."""
    import pretty_midi

    events = []
    for t in change_times_s:
        if t > 0:
            events.append((max(0.0, t - PEDAL_LIFT_S), 0))
        if t + PEDAL_CATCH_S < end_s - PEDAL_LIFT_S:
            events.append((t + PEDAL_CATCH_S, 127))
    events.append((max(0.0, end_s - PEDAL_LIFT_S), 0))
    for time_s, value in sorted(events):
        instrument.control_changes.append(pretty_midi.ControlChange(SUSTAIN_PEDAL, value, time_s))


def write_midi(pm, path: str | Path) -> None:
    """Atomic write; pretty_midi output is deterministic for the same notes."""
    from bgmgen.core.files import atomic_path

    with atomic_path(path) as tmp:
        pm.write(str(tmp))



def midi_to_roll(pm, plan) -> np.ndarray:
    """The final MIDI back on the plan's sixteenth grid (2, T, 128), ending chord included (for report.png)."""
    step_s = 60.0 / plan.bpm / STEPS_PER_BEAT
    offset = float(getattr(plan, "start_s", 0.0))
    n_steps = int(np.ceil((plan.duration_s - offset) / step_s - 1e-6))
    roll = np.zeros((2, n_steps, 128), np.float32)
    for inst in pm.instruments:
        for n in inst.notes:
            s = min(n_steps - 1, int(round((n.start - offset) / step_s)))
            e = max(s + 1, min(n_steps, int(round((n.end - offset) / step_s))))
            roll[0, s, n.pitch] = 1
            roll[1, s + 1:e, n.pitch] = 1
    return roll
