"""The eval's note representation, and the two ways songs get into it.

:class:`Notes` holds a song's notes with times in BEATS (quarter notes) counted from the song's
first downbeat, so tempo never matters: 4/4 is assumed (bar ``b`` spans beats ``[4b, 4b+4)``), as
in POP909 and in Diff-BGM's ``test.ipynb``. Every metric is a function of a Notes object.

Readers:

- :func:`read_midi_notes`: any MIDI file (a generated song); seconds are turned into beats with
  the file's OWN tempo map (``tick / ticks_per_quarter``). Beat 0 is the start of the file, plus
  an optional ``offset_beats`` shift. Drum tracks are ignored; all other tracks are merged.
- :func:`read_pop909_song`: a POP909 reference song through bgmgen.data.pop909.read_aligned, the
  one reader and aligner that training and ``bgmgen sample`` use too: MELODY, BRIDGE and PIANO
  merged, on the annotated beat grid (beat_midi.txt), beat 0 = the song's first true bar line
  (the structure melody match when pop909-structure is given, else the first downbeat flag of
  beat_midi.txt; see that module). Notes that start before beat 0 (pick-ups) are dropped.
  A generated song (``bgmgen sample``) starts its beat 0 at that same beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmgen.core.constants import BEATS_PER_BAR, STEPS_PER_BEAT
from bgmgen.data import pop909

# Timing tolerance when a time is floored onto a grid (beats): MIDI tick rounding and the
# beat-grid interpolation put grid onsets a few thousandths of a beat early.
TOL_BEATS = 0.01


@dataclass(frozen=True)
class Notes:
    """Notes of one song, times in beats (quarter notes) from the first downbeat.

    Arrays of equal length, sorted by (onset, pitch): ``onset`` and ``duration`` (float beats),
    ``pitch`` (MIDI 0-127, int), ``velocity`` (1-127, int).
    """

    onset: np.ndarray
    duration: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray

    @staticmethod
    def from_list(rows) -> Notes:
        """Build from an iterable of ``(onset_beat, duration_beats, pitch, velocity)``."""
        a = np.asarray(list(rows), dtype=float).reshape(-1, 4)
        return Notes.from_arrays(a[:, 0], a[:, 1], a[:, 2], a[:, 3])

    @staticmethod
    def from_arrays(onset, duration, pitch, velocity) -> Notes:
        """Build from four equal-length arrays (any order; sorted by onset, then pitch, stably)."""
        onset, duration = np.asarray(onset, float), np.asarray(duration, float)
        pitch, velocity = np.asarray(pitch, float), np.asarray(velocity, float)
        order = np.lexsort((pitch, onset))
        return Notes(onset[order].copy(), duration[order].copy(), pitch[order].astype(int),
                     velocity[order].astype(int))

    @staticmethod
    def from_onset_roll(onset: np.ndarray, steps_per_beat: int = STEPS_PER_BEAT,
                        duration: float = 0.25, velocity: int = 80) -> Notes:
        """A [steps, 128] onset roll (> 0 = a note starts) as notes of ``duration`` beats."""
        steps, pitches = np.nonzero(np.asarray(onset) > 0)
        n = len(steps)
        return Notes.from_arrays(steps / steps_per_beat, np.full(n, duration), pitches,
                                 np.full(n, velocity))

    def __len__(self) -> int:
        return len(self.onset)

    @property
    def end(self) -> float:
        """Last note-off, in beats (0 for an empty song)."""
        return float(np.max(self.onset + self.duration)) if len(self) else 0.0

    def shifted(self, beats: float) -> Notes:
        """The same notes moved by ``beats``; notes that would start before beat 0 are dropped."""
        on = self.onset + beats
        keep = on >= -TOL_BEATS
        return Notes(np.maximum(on[keep], 0.0), self.duration[keep], self.pitch[keep],
                     self.velocity[keep])

    def onset_steps(self, steps_per_beat: int = STEPS_PER_BEAT) -> np.ndarray:
        """Onsets floored after adding half a step (``floor(4 * onset + 0.5)``): the nearest grid
        step (16th by default), halves rounded up, like music21's quantisation in Diff-BGM's
        notebook. The onset grid of the song-level metrics."""
        return np.floor(self.onset * steps_per_beat + 0.5).astype(int)

    def grid_steps(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) sixteenth steps of every note, as the training rolls put them
        (bgmgen.data.pop909.grid_steps: ``round(4 * beat)``, at least one step long)."""
        return pop909.grid_steps(self.onset, self.onset + self.duration)


def read_midi_notes(path, offset_beats: float = 0.0) -> Notes:
    """Read a MIDI file into :class:`Notes`, converting seconds to beats with its own tempo map.

    A beat is a quarter note: ``beat = tick / resolution``. Drum tracks are skipped, the other
    tracks merged. ``offset_beats`` is added to every time (notes then before 0 are dropped).
    """
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(str(path))
    res = float(pm.resolution)
    rows = []
    for inst in pm.instruments:
        if inst.is_drum:
            continue
        for n in inst.notes:
            on = pm.time_to_tick(n.start) / res
            off = pm.time_to_tick(n.end) / res
            rows.append((on, max(off - on, 0.0), n.pitch, n.velocity))
    notes = Notes.from_list(rows)
    return notes.shifted(offset_beats) if offset_beats else notes


def _tracks_notes(tracks) -> Notes:
    """Tracks of bgmgen.data.pop909 (beats from the origin) merged into Notes, pick-ups dropped."""
    if not tracks:
        return Notes.from_list([])
    cat = [np.concatenate([getattr(t, k) for t in tracks]) for k in ("start", "end", "pitch", "velocity")]
    start, end, pitch, velocity = cat
    return Notes.from_arrays(start, np.maximum(end - start, 0.0), pitch, velocity).shifted(0.0)


@dataclass(frozen=True)
class ReferenceSong:
    """A POP909 song on its own beat grid, beat 0 = its first true bar line (see the module
    docstring); beats 0 .. n_beats-1 run to the last beat of beat_midi.txt."""

    song_id: str
    notes: Notes                 # all tracks merged, beats from the origin
    melody: Notes                # the MELODY track only
    beat_times_s: np.ndarray     # [n_beats] seconds of beats 0.. (from the origin on)
    origin_beat: int             # index into beat_midi.txt of beat 0
    chord_chroma: np.ndarray     # [n_beats, 12] bool, chord sounding on each beat
    has_chord: np.ndarray        # [n_beats] bool (False for "N" and past the annotation)
    phrases: list[tuple[str, int, int]] | None  # (label, start_beat, end_beat), human_label1

    @property
    def n_beats(self) -> int:
        return len(self.beat_times_s)


def read_pop909_song(song_dir, structure_dir=None, align: str = "auto") -> ReferenceSong:
    """Read POP909 song ``song_dir`` (``.../pop909/NNN``) on its beat grid, beat 0 = first downbeat.

    ``structure_dir`` is the pop909-structure ROOT (optional). ``align``: ``"structure"`` (needs
    structure_dir), ``"beat_midi"`` (first flagged downbeat of beat_midi.txt) or ``"auto"``
    (structure when available); see bgmgen.data.pop909.read_aligned. Chords come from
    finalized_chord.txt when the structure folder is used for the alignment, else from
    chord_midi.txt. Phrases come from human_label1.txt (else human_label2.txt).
    """
    song_dir = Path(song_dir)
    song = pop909.read_aligned(song_dir.parent, song_dir.name, structure_dir, align=align)
    n_beats = len(song.beats) - song.origin_beat  # to the last annotated beat
    if song.structure_dir is not None and align != "beat_midi" \
            and (song.structure_dir / "finalized_chord.txt").exists():
        roots, chroma, _ = pop909.structure_chords(song)
        chroma = pop909.fit_beats(chroma.astype(bool), n_beats, np.zeros(12, bool))
        has = pop909.fit_beats(roots >= 0, n_beats, False)
    else:
        _, chroma, has = pop909.chord_midi_beats(song_dir, song, n_beats)
    labels = pop909.phrase_labels(song)
    phrases = None
    if labels:
        phrases, bar = [], 0
        for letter, bars in labels[0]:
            phrases.append((letter, bar * BEATS_PER_BAR, (bar + bars) * BEATS_PER_BAR))
            bar += bars
    return ReferenceSong(song_dir.name, _tracks_notes(song.tracks),
                         _tracks_notes([t for t in song.tracks if t.is_melody]),
                         song.grid_times(n_beats), song.origin_beat, chroma, has, phrases)
