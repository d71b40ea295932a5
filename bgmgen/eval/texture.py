"""Piano texture of 8-bar windows: what a listener hears first, as numbers.

The song-level metrics (:mod:`bgmgen.eval.metrics`: PCHE, GPS, SI, chord tones, density) do not
see note lengths, how many notes sound at once, whether the top line moves by step, whether the
bass holds, whether bars repeat. The features here do, one number per 8-bar window; the realism
test (:mod:`bgmgen.eval.realism`) compares their distributions between generated and real songs.

Representation (shared by every feature; the roll of :mod:`bgmgen.data.pop909` that the model
trains on): times in beats from the first downbeat, 4/4. A note starts at step ``s = round(4*onset)``
and ends at ``e = max(round(4*(onset+duration)), s+1)`` (sixteenth steps,
:meth:`bgmgen.eval.notes.Notes.grid_steps`), so its length is ``L = e - s >= 1`` sixteenths.
Window ``w`` holds the notes with ``128w <= s < 128w+128`` (8 bars); its sounding roll is the
[128 steps x 128 pitches] boolean "pitch p sounds at step t" with notes cut at the window's end.
Windows with fewer than ``min_notes`` notes (silence, intros) are skipped, and only complete
windows (the song sounds into their last bar) are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from bgmgen.core.constants import BARS_PER_WINDOW as WINDOW_BARS
from bgmgen.core.constants import N_PITCHES, STEPS_PER_BAR, WINDOW_STEPS
from bgmgen.eval.notes import Notes

MIN_NOTES = 8


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """Notes of one window on the sixteenth grid.

    ``start``: onset step relative to the window start (int, ``0 <= start < n_steps``), sorted;
    ``length``: note length in sixteenths (int >= 1, NOT cut at the window end);
    ``pitch``: MIDI pitch (int). ``n_steps`` = window length in sixteenths (128 = 8 bars).
    """

    start: np.ndarray
    length: np.ndarray
    pitch: np.ndarray
    n_steps: int = WINDOW_STEPS

    @staticmethod
    def from_rows(rows, n_steps: int = WINDOW_STEPS) -> Window:
        """Build from ``(start_step, length_steps, pitch)`` rows (for tests and hand-made windows)."""
        a = np.asarray(list(rows), dtype=int).reshape(-1, 3)
        a = a[np.lexsort((a[:, 2], a[:, 0]))]
        return Window(a[:, 0].copy(), np.maximum(a[:, 1], 1), a[:, 2].copy(), n_steps)

    def __len__(self) -> int:
        return len(self.start)

    @property
    def n_bars(self) -> int:
        return self.n_steps // STEPS_PER_BAR

    @cached_property
    def roll(self) -> np.ndarray:
        """[n_steps, 128] bool: pitch sounds at step (notes cut at the window end)."""
        r = np.zeros((self.n_steps + 1, N_PITCHES), dtype=np.int16)
        end = np.minimum(self.start + self.length, self.n_steps)
        np.add.at(r, (self.start, self.pitch), 1)
        np.add.at(r, (end, self.pitch), -1)
        return np.cumsum(r, axis=0)[: self.n_steps] > 0

    @cached_property
    def onset_roll(self) -> np.ndarray:
        """[n_steps, 128] bool: a note of this pitch starts at this step."""
        r = np.zeros((self.n_steps, N_PITCHES), dtype=bool)
        r[self.start, self.pitch] = True
        return r


def song_grid(notes: Notes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start step, length in sixteenths, pitch) of every note, on the training rolls' grid."""
    s, e = notes.grid_steps()
    return s, e - s, np.asarray(notes.pitch, dtype=int)


def song_windows(notes: Notes, bars: int = WINDOW_BARS, min_notes: int = MIN_NOTES,
                 ) -> list[Window]:
    """Non-overlapping ``bars``-bar windows of a song (from beat 0), as :class:`Window` objects.

    Only complete windows (the song still sounds in the window's last bar: last note-off, on the
    grid, later than the start of that bar) with at least ``min_notes`` note onsets are returned.
    """
    if len(notes) == 0:
        return []
    s, length, p = song_grid(notes)
    n = bars * STEPS_PER_BAR
    end = int((s + length).max())
    out = []
    # a window counts as complete when the song sounds into its last bar
    for w in range(max(0, (end + STEPS_PER_BAR - 1) // n)):
        sel = (s >= w * n) & (s < (w + 1) * n)
        if sel.sum() < min_notes:
            continue
        order = np.lexsort((p[sel], s[sel]))
        out.append(Window(s[sel][order] - w * n, length[sel][order], p[sel][order], n))
    return out


# --------------------------------------------------------------------------------------------
# Features: each a pure function of one Window -> float (NaN when undefined)
# --------------------------------------------------------------------------------------------
def len1_share(w: Window) -> float:
    """Share of notes exactly one sixteenth long: ``#{L == 1} / #notes`` (fraction, 0-1).
    Note-length histogram in the spirit of Yang & Lerch 2020 (NLH)."""
    return float(np.mean(w.length == 1)) if len(w) else math.nan


def len2_share(w: Window) -> float:
    """Share of notes two sixteenths (an eighth) long: ``#{L == 2} / #notes`` (0-1). NLH bin."""
    return float(np.mean(w.length == 2)) if len(w) else math.nan


def len5_8_share(w: Window) -> float:
    """Share of notes 5 to 8 sixteenths long (between a quarter and a half note, both excluded /
    included): ``#{5 <= L <= 8} / #notes`` (0-1). NLH bin."""
    return float(np.mean((w.length >= 5) & (w.length <= 8))) if len(w) else math.nan


def len9plus_share(w: Window) -> float:
    """Share of notes longer than a half note: ``#{L >= 9} / #notes`` (0-1). NLH bin."""
    return float(np.mean(w.length >= 9)) if len(w) else math.nan


def log2_length_mean(w: Window) -> float:
    """Mean of ``log2(L)`` over notes, L in sixteenths (0 = all sixteenths, 2 = all quarters).
    Log-scale summary of the note-length histogram (Yang & Lerch 2020 NLH)."""
    return float(np.mean(np.log2(w.length))) if len(w) else math.nan


def _onset_steps(w: Window) -> np.ndarray:
    return np.unique(w.start)


def ioi_log2_mean(w: Window) -> float:
    """Mean ``log2`` inter-onset interval, in sixteenths, between successive distinct onset steps
    (chord notes share one onset). Yang & Lerch 2020 IOI, log scale. < 2 onset steps -> NaN."""
    d = np.diff(_onset_steps(w))
    return float(np.mean(np.log2(d))) if len(d) else math.nan


def ioi1_share(w: Window) -> float:
    """Share of inter-onset intervals (between distinct onset steps) of exactly one sixteenth
    (0-1): running sixteenths. < 2 onset steps -> NaN."""
    d = np.diff(_onset_steps(w))
    return float(np.mean(d == 1)) if len(d) else math.nan


def onsets_per_step(w: Window) -> float:
    """Simultaneous onsets: mean number of notes starting on a step, over steps where at least
    one starts (notes; 1 = single notes only, 3 = block triads)."""
    steps = _onset_steps(w)
    return float(len(w) / len(steps)) if len(steps) else math.nan


def onset_step_share(w: Window) -> float:
    """Share of the window's sixteenth steps on which at least one note starts (0-1); the
    rhythmic density of the groove (muspy-style, per window)."""
    return float(len(_onset_steps(w)) / w.n_steps)


def polyphony_sounding(w: Window) -> float:
    """Mean number of pitches sounding per sixteenth, over steps where at least one sounds
    (notes; muspy ``polyphony``, per window). Silent window -> NaN."""
    c = w.roll.sum(axis=1)
    return float(c[c > 0].mean()) if (c > 0).any() else math.nan


def polyphony_all(w: Window) -> float:
    """Mean number of pitches sounding per sixteenth over ALL steps of the window (notes):
    polyphony x (1 - empty share)."""
    return float(w.roll.sum(axis=1).mean())


def empty_step_share(w: Window) -> float:
    """Share of sixteenth steps on which nothing sounds (0-1; muspy ``empty_beat_rate`` on
    sixteenths, counting held notes as sounding)."""
    return float(np.mean(~w.roll.any(axis=1)))


def notes_per_bar(w: Window) -> float:
    """Note onsets per bar (notes/bar): ``#notes / n_bars``."""
    return float(len(w) / w.n_bars)


def _voice(w: Window, top: bool) -> np.ndarray:
    """Highest (or lowest) sounding pitch of each sounding step, silent steps left out."""
    r = w.roll
    sounding = r.any(axis=1)
    if top:
        v = N_PITCHES - 1 - np.argmax(r[:, ::-1], axis=1)
    else:
        v = np.argmax(r, axis=1)
    return v[sounding]


def _changes(v: np.ndarray) -> np.ndarray:
    d = np.diff(v)
    return d[d != 0]


def top_step_share(w: Window) -> float:
    """Top voice = highest pitch sounding on each sixteenth (silent steps skipped). Share of its
    changes that are steps of 1 or 2 semitones: ``#{1 <= |dp| <= 2} / #{dp != 0}`` (0-1).
    A sung melody moves mostly by step. No change -> NaN. (Skyline melody, Uitdenbogerd & Zobel
    1999; interval statistics as in Yang & Lerch 2020 PI.)"""
    d = np.abs(_changes(_voice(w, top=True)))
    return float(np.mean((d >= 1) & (d <= 2))) if len(d) else math.nan


def top_abs_interval(w: Window) -> float:
    """Mean absolute interval (semitones) of the top voice's changes (see top_step_share).
    No change -> NaN."""
    d = np.abs(_changes(_voice(w, top=True)))
    return float(np.mean(d)) if len(d) else math.nan


def top_changes_per_bar(w: Window) -> float:
    """Number of top-voice pitch changes per bar (changes/bar; see top_step_share): how busy the
    highest line is (16 = a new top note every sixteenth)."""
    return float(len(_changes(_voice(w, top=True))) / w.n_bars)


def bass_abs_interval(w: Window) -> float:
    """Bass = lowest pitch sounding on each sixteenth (silent steps skipped). Mean absolute
    interval of its changes (semitones). No change -> NaN."""
    d = np.abs(_changes(_voice(w, top=False)))
    return float(np.mean(d)) if len(d) else math.nan


def bass_changes_per_bar(w: Window) -> float:
    """Number of bass pitch changes per bar (changes/bar): a held bass changes ~1-2 times a bar,
    a scattered one up to 16 times."""
    return float(len(_changes(_voice(w, top=False))) / w.n_bars)


def range_per_bar(w: Window) -> float:
    """Pitch range per bar: mean over bars in which something sounds of (highest - lowest pitch
    sounding in the bar), semitones (muspy ``pitch_range``, per bar). Silent window -> NaN."""
    per_bar = w.roll.reshape(w.n_bars, STEPS_PER_BAR, N_PITCHES).any(axis=1)
    vals = []
    for b in per_bar:
        idx = np.flatnonzero(b)
        if len(idx):
            vals.append(idx[-1] - idx[0])
    return float(np.mean(vals)) if vals else math.nan


def _bars_onsets(w: Window) -> np.ndarray:
    return w.onset_roll.reshape(w.n_bars, STEPS_PER_BAR, N_PITCHES)


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else math.nan


def groove_prev(w: Window) -> float:
    """Rhythm repetition: mean over bars b = 1..n-1 of ``1 - XOR(g_b, g_{b-1}) / 16``, g = the
    bar's 16-step onset pattern (any pitch). Grooving pattern similarity (Wu & Yang 2020; muspy
    ``groove_consistency``) between neighbouring bars only, 0-1."""
    g = _bars_onsets(w).any(axis=2)
    return float(np.mean(1.0 - np.logical_xor(g[1:], g[:-1]).sum(axis=1) / STEPS_PER_BAR))


def repeat_prev(w: Window) -> float:
    """Note-pattern repetition: mean over bars b = 1..n-1 of the Jaccard similarity of the sets
    of (step in bar, pitch) onsets of bar b and bar b-1 (0 = nothing in common, 1 = the same
    bar again). Pairs of empty bars are skipped; none left -> NaN."""
    bars = _bars_onsets(w)
    v = [_jaccard(bars[b], bars[b - 1]) for b in range(1, len(bars))]
    v = [x for x in v if math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def repeat_best(w: Window) -> float:
    """Note-pattern recall: mean over bars b = 1..n-1 of max over earlier bars b' < b of the
    Jaccard similarity of their (step in bar, pitch) onset sets (see repeat_prev): does the bar
    repeat ANY earlier bar of the window (e.g. bar 5 = bar 1)? 0-1; NaN when undefined."""
    bars = _bars_onsets(w)
    v = []
    for b in range(1, len(bars)):
        sims = [_jaccard(bars[b], bars[c]) for c in range(b)]
        sims = [x for x in sims if math.isfinite(x)]
        if sims:
            v.append(max(sims))
    return float(np.mean(v)) if v else math.nan


# name -> (short label for tables, function)
FEATURES: dict[str, tuple[str, object]] = {
    "len1_share": ("notes 1/16 long", len1_share),
    "len2_share": ("notes 2/16 long", len2_share),
    "len5_8_share": ("notes 5-8/16 long", len5_8_share),
    "len9plus_share": ("notes >= 9/16 long", len9plus_share),
    "log2_length_mean": ("mean log2 length (16ths)", log2_length_mean),
    "ioi_log2_mean": ("mean log2 IOI (16ths)", ioi_log2_mean),
    "ioi1_share": ("IOIs of one 16th", ioi1_share),
    "onsets_per_step": ("onsets per onset step", onsets_per_step),
    "onset_step_share": ("steps with an onset", onset_step_share),
    "polyphony_sounding": ("sounding / sounding step", polyphony_sounding),
    "polyphony_all": ("sounding / step", polyphony_all),
    "empty_step_share": ("empty 16ths", empty_step_share),
    "notes_per_bar": ("notes per bar", notes_per_bar),
    "top_step_share": ("top-voice steps (1-2 st)", top_step_share),
    "top_abs_interval": ("top-voice |interval| (st)", top_abs_interval),
    "top_changes_per_bar": ("top-voice changes / bar", top_changes_per_bar),
    "bass_abs_interval": ("bass |interval| (st)", bass_abs_interval),
    "bass_changes_per_bar": ("bass changes / bar", bass_changes_per_bar),
    "range_per_bar": ("pitch range / bar (st)", range_per_bar),
    "groove_prev": ("groove = previous bar", groove_prev),
    "repeat_prev": ("notes = previous bar", repeat_prev),
    "repeat_best": ("notes = best earlier bar", repeat_best),
}
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURES)


def window_features(w: Window) -> np.ndarray:
    """The feature vector of one window, in FEATURE_NAMES order (NaN where undefined)."""
    return np.array([fn(w) for _, fn in FEATURES.values()], dtype=float)


def feature_matrix(songs: dict, bars: int = WINDOW_BARS, min_notes: int = MIN_NOTES,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Features of every window of every song: (X [n_windows, n_features], song id per row).

    ``songs`` maps a song id to its :class:`bgmgen.eval.notes.Notes`.
    """
    rows, groups = [], []
    for sid in sorted(songs):
        for w in song_windows(songs[sid], bars=bars, min_notes=min_notes):
            rows.append(window_features(w))
            groups.append(str(sid))
    X = np.array(rows, dtype=float).reshape(-1, len(FEATURES))
    return X, np.array(groups, dtype=object)
