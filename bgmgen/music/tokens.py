"""The melody-and-accompaniment representation of the v3 music model, in a common key.

Two streams on the sixteenth grid, each a categorical state, so "one melody note now" and "this
note is still held" are single choices instead of independent bits:

    melody          one token per step: REST, HOLD (the previous melody note goes on) or a pitch
                    MELODY_LOW..MELODY_HIGH - one voice by construction (POP909's MELODY track)
    accompaniment   one state per step and key ACC_LOW..ACC_LOW+ACC_KEYS-1: REST, ONSET or SUSTAIN
                    (POP909's BRIDGE and PIANO tracks)

Key normalisation: the model works in a common tonic (C major / C minor). A song in key k is moved
by key_shift(k) semitones (-5..+6, the smaller move) for training; at inference the controls are
moved the same way and the generated notes moved back, so a chord shape learnt once serves every key.
"""

from __future__ import annotations

import numpy as np

from bgmgen.core.constants import N_PITCHES

MELODY_LOW, MELODY_HIGH = 36, 96  # melody pitches the model can write (C2..C7), inclusive
MEL_REST, MEL_HOLD = 0, 1
MEL_FIRST_PITCH = 2  # token of MELODY_LOW
N_MELODY_TOKENS = MEL_FIRST_PITCH + MELODY_HIGH - MELODY_LOW + 1  # 63

ACC_LOW, ACC_KEYS = 21, 88  # the piano's keys, A0..C8
ACC_REST, ACC_ONSET, ACC_SUSTAIN = 0, 1, 2
N_ACC_STATES = 3


def key_shift(tonic: int) -> int:
    """Semitones (-5..+6) that move a key with this tonic pitch class to C."""
    s = (-int(tonic)) % 12
    return s - 12 if s > 6 else s


def melody_tokens(melody_pitch: np.ndarray, melody_onset: np.ndarray, shift: int = 0) -> np.ndarray:
    """[T] melody tokens from the sounding pitch per step (-1 none) and note starts, moved by `shift`.
    A pitch that leaves the melody range after the move becomes a rest (rare: 0.0x % of steps)."""
    pitch = melody_pitch.astype(np.int64) + shift
    sounding = (melody_pitch >= 0) & (pitch >= MELODY_LOW) & (pitch <= MELODY_HIGH)
    tokens = np.full(len(pitch), MEL_REST, np.int64)
    tokens[sounding] = MEL_HOLD
    starts = sounding & (melody_onset > 0)
    tokens[starts] = MEL_FIRST_PITCH + pitch[starts] - MELODY_LOW
    # a held step whose note began out of range (or before the window) has nothing to hold: a new note
    begins = sounding & ~starts & ~np.r_[False, sounding[:-1]]
    tokens[begins] = MEL_FIRST_PITCH + pitch[begins] - MELODY_LOW
    return tokens


def accompaniment_states(onset: np.ndarray, sustain: np.ndarray, shift: int = 0) -> np.ndarray:
    """[T, ACC_KEYS] states from onset/sustain rolls [T, 128] (nonzero = set), moved by `shift`."""
    states = np.full((onset.shape[0], ACC_KEYS), ACC_REST, np.int64)
    lo = ACC_LOW - shift  # roll pitch that lands on the lowest key
    src = np.arange(ACC_KEYS) + lo
    ok = (src >= 0) & (src < N_PITCHES)
    on = onset[:, src[ok]] > 0
    held = sustain[:, src[ok]] > 0
    cols = states[:, ok]
    cols[held] = ACC_SUSTAIN
    cols[on] = ACC_ONSET
    states[:, ok] = cols
    return states


def tokens_to_notes(melody: np.ndarray, accompaniment: np.ndarray, shift: int = 0) -> list[tuple[int, int, int]]:
    """Notes [(start_step, end_step, pitch)] (end exclusive), sorted, moved back by `shift`.

    Read as sampled: a melody pitch token starts a note that HOLD tokens continue (a HOLD with no
    note before it is silence); an accompaniment ONSET starts a note that SUSTAIN cells of the same
    key continue (a SUSTAIN that continues nothing is silence). Where the melody and the
    accompaniment start the same pitch at the same step, it is one note (the longer)."""
    T = len(melody)
    notes: dict[tuple[int, int], int] = {}
    t = 0
    while t < T:
        tok = int(melody[t])
        if tok >= MEL_FIRST_PITCH:
            end = t + 1
            while end < T and melody[end] == MEL_HOLD:
                end += 1
            pitch = tok - MEL_FIRST_PITCH + MELODY_LOW - shift
            notes[(t, pitch)] = end
            t = end
        else:
            t += 1
    for t, k in zip(*np.nonzero(accompaniment == ACC_ONSET)):
        end = t + 1
        while end < T and accompaniment[end, k] == ACC_SUSTAIN:
            end += 1
        pitch = int(k) + ACC_LOW - shift
        key = (int(t), pitch)
        notes[key] = max(notes.get(key, 0), int(end))
    return sorted((s, e, p) for (s, p), e in notes.items() if 0 <= p < N_PITCHES)


def notes_to_roll(notes: list[tuple[int, int, int]], n_steps: int) -> np.ndarray:
    """(2, n_steps, 128) onset/sustain roll in {0, 1} of notes [(start, end, pitch)]."""
    roll = np.zeros((2, n_steps, N_PITCHES), np.float32)
    for s, e, p in notes:
        if 0 <= s < n_steps:
            roll[1, s + 1:min(e, n_steps), p] = 1
    for s, e, p in notes:
        if 0 <= s < n_steps:
            roll[0, s, p] = 1
            roll[1, s, p] = 0
    return roll
