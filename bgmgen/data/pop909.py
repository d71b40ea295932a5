"""POP909 (+ pop909-structure) on the sixteenth-note grid: the ONE reader and aligner.

Every consumer of a POP909 song goes through :func:`read_aligned`, which reads ``NNN/NNN.mid``
and ``beat_midi.txt`` once and returns every (non-drum) track's notes in fractional beats from
the song's origin, its first true bar line. Two views are built on it:

- :func:`load_song` -> :class:`Song`: the piano rolls on the sixteenth grid with the per-beat
  annotations, what training, the grid cache and ``bgmgen sample`` use;
- ``bgmgen.eval.notes.read_pop909_song`` -> ``ReferenceSong``: the notes in beats that the metrics
  of ``bgmgen eval`` read (not quantised, nothing cut at the end).

Both therefore share beat 0: generated beat b (``bgmgen sample``) is reference beat b.

Beat positions. A time in seconds becomes a fractional beat index on the annotated grid of
beat_midi.txt (:func:`beat_position`: linear between beats, extrapolated with the first / last
beat period outside it); a note's sixteenth steps are ``round(4 * beat)`` (:func:`grid_steps`).

Alignment (:func:`read_aligned`). POP909's beat_midi.txt carries downbeat flags that are wrong in
some songs (off by one to three beats). pop909-structure re-aligned melody, chords and phrase
labels so that its time 0 is a true bar line. We find that bar line on the MIDI grid by matching
the structure melody's onsets (sixteenths from its time 0) against the MIDI MELODY track's onsets
(sixteenths from the first beat of beat_midi.txt): the shift with the most coincident onsets wins
(:func:`find_origin_step`), rounded to whole beats. Bar k of the song then starts at MIDI beat
``origin_beat + 4k``. Without a structure folder (``align="beat_midi"``, or ``"auto"`` when the
song has none) the origin is the first beat flagged as a downbeat in beat_midi.txt.

:class:`Song`: all three tracks (MELODY, BRIDGE, PIANO) are merged into one piano roll
(``onset``, ``sustain``: what the controls and the metrics read, as in Diff-BGM). The
melody-and-accompaniment model (v3) also needs them apart: the MELODY track as one voice per step
(``melody_pitch``, ``melody_onset``; where two melody notes overlap the later one wins) and
BRIDGE + PIANO as the accompaniment roll (``acc_onset``, ``acc_sustain``). Notes before bar 0 (a
pickup) are dropped. Songs whose phrase labels and chord durations disagree about the bar count by
more than two bars (not 4/4 throughout, or a failed alignment) are skipped and listed in the
cache's ``skipped``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmgen.core.constants import BEATS_PER_BAR, N_PITCHES, STEPS_PER_BAR, STEPS_PER_BEAT
from bgmgen.core.errors import InputError
from bgmgen.core.files import user_cache_dir
from bgmgen.data.annotations import parse_chord_midi, parse_key, parse_phrases, parse_structure_chords

CACHE_VERSION = 2  # 2: melody and accompaniment kept apart
ALIGNS = ("auto", "structure", "beat_midi")
MIN_MATCH = 0.5  # load_song: share of structure melody onsets the origin must match


# --------------------------------------------------------------------------------------------
# Beat grid
# --------------------------------------------------------------------------------------------
def beat_position(times_s, beat_times_s: np.ndarray) -> np.ndarray:
    """Fractional beat index of each time on a (possibly uneven) beat grid: linear between the
    annotated beats, extrapolated with the first / last beat period outside them."""
    times_s = np.asarray(times_s, dtype=np.float64)
    idx = np.arange(len(beat_times_s), dtype=np.float64)
    pos = np.interp(times_s, beat_times_s, idx)
    first_period = beat_times_s[1] - beat_times_s[0]
    last_period = beat_times_s[-1] - beat_times_s[-2]
    pos = np.where(times_s < beat_times_s[0], (times_s - beat_times_s[0]) / first_period, pos)
    return np.where(times_s > beat_times_s[-1], idx[-1] + (times_s - beat_times_s[-1]) / last_period, pos)


def grid_steps(start_beats, end_beats) -> tuple[np.ndarray, np.ndarray]:
    """A note on the sixteenth grid: (start step, end step) = ``round(4 * beat)``, at least one
    step long. The rounding of the training rolls and of the eval's texture features."""
    s = np.round(np.asarray(start_beats, dtype=np.float64) * STEPS_PER_BEAT).astype(np.int64)
    e = np.round(np.asarray(end_beats, dtype=np.float64) * STEPS_PER_BEAT).astype(np.int64)
    return s, np.maximum(e, s + 1)


def fit_beats(a: np.ndarray, n_beats: int, fill) -> np.ndarray:
    """A per-beat array cut or padded (with ``fill``) to ``n_beats`` rows."""
    if len(a) >= n_beats:
        return a[:n_beats]
    pad = np.repeat(np.asarray(fill, a.dtype)[None], n_beats - len(a), axis=0)
    return np.concatenate([a, pad.reshape((-1,) + a.shape[1:])])


# --------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------
def structure_melody_onsets(text: str) -> np.ndarray:
    """pop909-structure melody.txt (``pitch duration`` lines in sixteenths, pitch 0 = rest) ->
    note onsets in sixteenths from its time 0."""
    steps, t = [], 0
    for line in text.split("\n"):
        parts = line.split()
        if len(parts) != 2:
            continue
        pitch, dur = int(parts[0]), int(parts[1])
        if pitch > 0:
            steps.append(t)
        t += dur
    return np.array(steps, np.int64)


def find_origin_step(midi_melody_steps: np.ndarray, structure_onsets: np.ndarray) -> tuple[int, float]:
    """Shift (in sixteenths, -64 to 1023) that maps structure time 0 onto the MIDI grid - the one
    under which the most structure onsets land on MIDI melody onsets; the first such shift wins -
    and the share of structure onsets it matches."""
    midi_melody_steps = np.asarray(midi_melody_steps, np.int64)
    structure_onsets = np.asarray(structure_onsets, np.int64)
    if len(midi_melody_steps) == 0 or len(structure_onsets) == 0 or midi_melody_steps.max() < 0:
        return 0, 0.0
    midi = np.zeros(int(midi_melody_steps.max()) + 1, bool)
    midi[midi_melody_steps[midi_melody_steps >= 0]] = True
    shifts = np.arange(-64, 1024)
    pos = structure_onsets[None, :] + shifts[:, None]
    inside = (pos >= 0) & (pos < len(midi))
    hits = (midi[np.clip(pos, 0, len(midi) - 1)] & inside).sum(axis=1)
    best = int(np.argmax(hits))
    return int(shifts[best]), int(hits[best]) / len(structure_onsets)


def downbeat_origin(beats: np.ndarray) -> int:
    """Index of the first beat flagged as a downbeat in beat_midi.txt (third column); 0 if none."""
    flagged = np.flatnonzero(beats[:, 2] > 0.5)
    return int(flagged[0]) if len(flagged) else 0


@dataclass(frozen=True)
class Track:
    """One MIDI track's notes, times in beats from the song's origin (fractional, not rounded)."""

    name: str
    is_melody: bool
    start: np.ndarray     # [n] float beats
    end: np.ndarray       # [n] float beats
    pitch: np.ndarray     # [n] int MIDI pitch
    velocity: np.ndarray  # [n] int 1-127


@dataclass(frozen=True)
class AlignedMidi:
    """A POP909 song's MIDI on its annotated beat grid, beat 0 = its first true bar line."""

    song_id: str
    beats: np.ndarray            # beat_midi.txt [n, 3]: time (s), beat flag, downbeat flag
    origin_beat: int             # index into beats of beat 0 (negative: before the first one)
    aligned_by: str              # "structure" (melody match) or "beat_midi" (downbeat flag)
    match: float                 # share of structure melody onsets matched (0 with "beat_midi")
    tracks: tuple[Track, ...]    # non-drum tracks with notes, in file order
    structure_dir: Path | None   # the song's pop909-structure folder, if there is one

    @property
    def beat_times_s(self) -> np.ndarray:
        """Seconds of every beat of beat_midi.txt (the whole file, not from the origin)."""
        return self.beats[:, 0]

    def grid_times(self, n_beats: int) -> np.ndarray:
        """Seconds of beats 0 .. n_beats-1 counted from the origin, extrapolated with the first /
        last beat period where the song's grid runs past beat_midi.txt."""
        beats = self.beat_times_s
        grid = np.arange(self.origin_beat, self.origin_beat + n_beats, dtype=np.float64)
        idx = np.arange(len(beats), dtype=np.float64)
        times = np.interp(grid, idx, beats)
        after, before = grid > idx[-1], grid < 0
        times[after] = beats[-1] + (grid[after] - idx[-1]) * (beats[-1] - beats[-2])
        times[before] = beats[0] + grid[before] * (beats[1] - beats[0])
        return times


def read_aligned(pop909_dir: str | Path, song_id: str, structure_dir: str | Path | None = None,
                 align: str = "auto") -> AlignedMidi:
    """Read song ``song_id`` of ``pop909_dir`` and put its notes in beats from its origin.

    ``structure_dir``: the pop909-structure ROOT, optional. ``align``: ``"structure"`` (the song
    must have a structure folder), ``"beat_midi"`` (first flagged downbeat) or ``"auto"``
    (structure when the song has a folder). The melody match needs the folder's melody.txt and a
    MIDI melody; without them the origin falls back to the downbeat flag (``aligned_by``).
    The MELODY track is the first whose name starts with MELODY, else the first track.
    """
    import pretty_midi

    if align not in ALIGNS:
        raise ValueError(f"align must be one of {ALIGNS}, not {align!r}")
    sdir = Path(pop909_dir) / song_id
    tdir = Path(structure_dir) / song_id if structure_dir else None
    if tdir is not None and not tdir.is_dir():
        tdir = None
    if align == "structure" and tdir is None:
        raise FileNotFoundError(f"{song_id}: no pop909-structure folder for align='structure'")
    beats = np.loadtxt(sdir / "beat_midi.txt", ndmin=2)
    if len(beats) < 8:
        raise InputError(f"{sdir}: beat_midi.txt has fewer than 8 beats")
    pm = pretty_midi.PrettyMIDI(str(sdir / f"{song_id}.mid"))
    melody = next((i for i in pm.instruments if i.name.upper().startswith("MELODY")),
                  pm.instruments[0] if pm.instruments else None)

    origin, aligned_by, match = None, "beat_midi", 0.0
    melody_txt = tdir / "melody.txt" if tdir is not None and align != "beat_midi" else None
    if melody_txt is not None and melody_txt.exists() and melody is not None and melody.notes:
        onsets = structure_melody_onsets(melody_txt.read_text())
        if len(onsets):
            mel_steps = np.round(beat_position([n.start for n in melody.notes], beats[:, 0]) * STEPS_PER_BEAT)
            shift, match = find_origin_step(mel_steps.astype(np.int64), onsets)
            origin, aligned_by = round(shift / STEPS_PER_BEAT), "structure"
    if origin is None:
        origin = downbeat_origin(beats)

    tracks = []
    for inst in pm.instruments:
        if inst.is_drum or not inst.notes:
            continue
        start = beat_position([n.start for n in inst.notes], beats[:, 0]) - origin
        end = beat_position([n.end for n in inst.notes], beats[:, 0]) - origin
        tracks.append(Track(inst.name, inst is melody, start, end,
                            np.array([n.pitch for n in inst.notes], np.int64),
                            np.array([n.velocity for n in inst.notes], np.int64)))
    return AlignedMidi(song_id, beats, origin, aligned_by, match, tuple(tracks), tdir)


# --------------------------------------------------------------------------------------------
# Annotations on the song's grid
# --------------------------------------------------------------------------------------------
def structure_chords(song: AlignedMidi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """finalized_chord.txt of the song's structure folder: per-beat (root, chroma, bass) from
    beat 0 (see bgmgen.data.annotations.parse_structure_chords)."""
    return parse_structure_chords((song.structure_dir / "finalized_chord.txt").read_text())


def chord_midi_beats(song_dir: str | Path, song: AlignedMidi, n_beats: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """chord_midi.txt placed on the song's beats 0 .. n_beats-1: per-beat (root [-1 = none],
    chroma [n, 12] bool, has_chord). A chord covers beats round(start) .. round(end)-1 of the
    annotated grid; a later line overwrites an earlier one."""
    chroma = np.zeros((n_beats, 12), dtype=bool)
    has = np.zeros(n_beats, dtype=bool)
    roots = np.full(n_beats, -1)
    for start_s, end_s, root, tones in parse_chord_midi((Path(song_dir) / "chord_midi.txt").read_text()):
        b0, b1 = np.round(beat_position([start_s, end_s], song.beat_times_s)) - song.origin_beat
        b0, b1 = max(int(b0), 0), min(int(b1), n_beats)
        chroma[b0:b1] = tones
        has[b0:b1] = True
        roots[b0:b1] = root
    return roots, chroma, has


def phrase_labels(song: AlignedMidi) -> list[list[tuple[str, int]]]:
    """The structure folder's human_label1.txt and human_label2.txt that exist, parsed
    ([(letter, bars), ...] each, possibly empty); [] without a structure folder."""
    if song.structure_dir is None:
        return []
    files = [song.structure_dir / f"human_label{k}.txt" for k in (1, 2)]
    return [parse_phrases(f.read_text()) for f in files if f.exists()]


# --------------------------------------------------------------------------------------------
# Songs for training and sampling
# --------------------------------------------------------------------------------------------
@dataclass
class Song:
    """One POP909 song on the grid that starts at its first true bar line."""

    song_id: str
    onset: np.ndarray  # [n_steps, 128] uint8 onset velocity (0 = no onset)
    sustain: np.ndarray  # [n_steps, 128] uint8 1 where a note started earlier is still held
    beat_times_s: np.ndarray  # [n_beats + 1] seconds of each grid beat in the original audio/MIDI
    chord_root: np.ndarray  # [n_beats] int8, -1 = no chord
    chord_chroma: np.ndarray  # [n_beats, 12] uint8
    chord_bass: np.ndarray  # [n_beats] int8
    key_tonic: int
    key_mode: int  # 0 major, 1 minor
    phrases: list[list[tuple[str, int]]]  # one or two human phrase annotations
    bpm: float
    melody_pitch: np.ndarray  # [n_steps] int16 MIDI pitch of the melody sounding at each step, -1 = none
    melody_onset: np.ndarray  # [n_steps] uint8 1 where that melody note starts
    acc_onset: np.ndarray  # [n_steps, 128] uint8 1 = an accompaniment (BRIDGE, PIANO) note starts
    acc_sustain: np.ndarray  # [n_steps, 128] uint8 1 = an accompaniment note started earlier is held

    def controls(self, annotator: int = 0):
        """The song's own per-beat controls (what `bgmgen sample` conditions on)."""
        from bgmgen.music import controls as C

        pid, pos, mel = C.phrase_arrays(self.phrases[min(annotator, len(self.phrases) - 1)], self.n_beats)
        return C.music_controls(
            self.onset, register=C.register_from_onsets(self.onset), chord_root=self.chord_root,
            chord_chroma=self.chord_chroma, chord_bass=self.chord_bass, key_tonic=self.key_tonic,
            key_mode=self.key_mode, phrase_id=pid, phrase_pos=pos, melodic=mel)

    @property
    def n_bars(self) -> int:
        return self.onset.shape[0] // STEPS_PER_BAR

    @property
    def n_beats(self) -> int:
        return self.n_bars * BEATS_PER_BAR


def load_song(pop909_dir: str | Path, structure_dir: str | Path, song_id: str) -> Song:
    """Read one song (:func:`read_aligned`, aligned by the structure melody). Raises InputError
    when the song cannot be put on a 4/4 grid."""
    aligned = read_aligned(pop909_dir, song_id, structure_dir, align="structure")
    if aligned.aligned_by != "structure" or aligned.match < MIN_MATCH:
        raise InputError(f"{song_id}: melody alignment matched only {aligned.match:.0%} of onsets")
    roots, chromas, basses = structure_chords(aligned)
    phrases = [p for p in phrase_labels(aligned) if p]
    if not phrases:
        raise InputError(f"{song_id}: no phrase labels")
    label_bars = sum(b for _, b in phrases[0])
    if abs(len(roots) / BEATS_PER_BAR - label_bars) > 2:
        raise InputError(f"{song_id}: chords span {len(roots) / 4:.1f} bars, phrases {label_bars} bars")
    n_bars = label_bars
    n_beats = n_bars * BEATS_PER_BAR
    n_steps = n_bars * STEPS_PER_BAR
    beat_times = aligned.grid_times(n_beats + 1)

    onset = np.zeros((n_steps, N_PITCHES), np.uint8)
    sustain = np.zeros((n_steps, N_PITCHES), np.uint8)
    acc_onset = np.zeros((n_steps, N_PITCHES), np.uint8)
    acc_sustain = np.zeros((n_steps, N_PITCHES), np.uint8)
    melody_pitch = np.full(n_steps, -1, np.int16)
    melody_onset = np.zeros(n_steps, np.uint8)
    for track in aligned.tracks:
        s, e = grid_steps(track.start, track.end)
        order = np.argsort(s, kind="stable")  # melody: a later note cuts the one before
        for i in order:
            pitch, a, b = track.pitch[i], s[i], min(e[i], n_steps)
            if a < 0 or a >= n_steps:
                continue
            onset[a, pitch] = max(onset[a, pitch], track.velocity[i])
            sustain[a + 1:b, pitch] = 1
            if track.is_melody:
                melody_pitch[a:b] = pitch
                melody_onset[a] = 1
            else:
                acc_onset[a, pitch] = 1
                acc_sustain[a + 1:b, pitch] = 1
    sustain[onset > 0] = 0  # an onset step is an onset, not a sustain (re-struck notes)
    acc_sustain[acc_onset > 0] = 0

    key_file = aligned.structure_dir / "analyzed_key.txt"
    tonic, mode = parse_key(key_file.read_text().split()[0]) if key_file.exists() else (0, 0)
    bpm = 60.0 / float(np.median(np.diff(beat_times)))
    return Song(song_id, onset, sustain, beat_times, fit_beats(roots, n_beats, -1),
                fit_beats(chromas, n_beats, np.zeros(12, np.uint8)), fit_beats(basses, n_beats, -1),
                tonic, mode, phrases, bpm, melody_pitch, melody_onset, acc_onset, acc_sustain)


def song_ids(pop909_dir: str | Path) -> list[str]:
    return sorted(p.name for p in Path(pop909_dir).iterdir() if p.is_dir() and p.name.isdigit())


def check_dataset_dirs(pop909_dir: str | Path, structure_dir: str | Path) -> None:
    for d, probe in ((pop909_dir, "001/001.mid"), (structure_dir, "001/human_label1.txt")):
        if not (Path(d) / probe).exists():
            raise InputError(f"{d}: not a POP909{'-structure' if d == structure_dir else ''} folder "
                             f"(no {probe}); pass the dataset folder")


def build_cache(pop909_dir: str | Path, structure_dir: str | Path, out_path: str | Path,
                progress=None) -> Path:
    """Put every song on the grid once and store the concatenated arrays in one .npz.

    Arrays (songs back to back; `step_offset[i]`, `beat_offset[i]` index song i):
    onset [S,128] uint8 velocity, sustain [S,128] uint8, melody_pitch [S] int16, melody_onset [S],
    acc_onset / acc_sustain [S,128] uint8, per-beat chord_root/chord_bass int8,
    chord_chroma [B,12], phrase_id{1,2}/phrase_pos{1,2}/melodic{1,2} for both annotators,
    per-song key_tonic, key_mode, bpm, n_bars, song_id.
    """
    from bgmgen.core.files import atomic_path
    from bgmgen.music.controls import phrase_arrays

    check_dataset_dirs(pop909_dir, structure_dir)
    cols: dict[str, list] = {k: [] for k in (
        "onset", "sustain", "melody_pitch", "melody_onset", "acc_onset", "acc_sustain", "chord_root", "chord_chroma", "chord_bass",
        "phrase_id1", "phrase_pos1", "melodic1", "phrase_id2", "phrase_pos2", "melodic2")}
    meta: dict[str, list] = {k: [] for k in ("song_id", "key_tonic", "key_mode", "bpm", "n_bars")}
    skipped = []
    ids = [i for i in song_ids(pop909_dir) if (Path(structure_dir) / i).is_dir()]
    for n, sid in enumerate(ids):
        try:
            song = load_song(pop909_dir, structure_dir, sid)
        except (InputError, ValueError, KeyError, OSError) as err:
            skipped.append(f"{sid}: {err}")
            continue
        for k, v in (("onset", song.onset), ("sustain", song.sustain), ("melody_pitch", song.melody_pitch),
                     ("melody_onset", song.melody_onset), ("acc_onset", song.acc_onset),
                     ("acc_sustain", song.acc_sustain)):
            cols[k].append(v)
        cols["chord_root"].append(song.chord_root)
        cols["chord_chroma"].append(song.chord_chroma)
        cols["chord_bass"].append(song.chord_bass)
        for k in (1, 2):
            pid, pos, mel = phrase_arrays(song.phrases[min(k, len(song.phrases)) - 1], song.n_beats)
            cols[f"phrase_id{k}"].append(pid)
            cols[f"phrase_pos{k}"].append(pos)
            cols[f"melodic{k}"].append(mel)
        for k, v in (("song_id", sid), ("key_tonic", song.key_tonic), ("key_mode", song.key_mode),
                     ("bpm", song.bpm), ("n_bars", song.n_bars)):
            meta[k].append(v)
        if progress:
            progress(n + 1, len(ids))
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    arrays.update({k: np.array(v) for k, v in meta.items()})
    n_bars = arrays["n_bars"]
    arrays["step_offset"] = np.r_[0, np.cumsum(n_bars * STEPS_PER_BAR)[:-1]]
    arrays["beat_offset"] = np.r_[0, np.cumsum(n_bars * BEATS_PER_BAR)[:-1]]
    arrays["skipped"] = np.array(skipped)
    arrays["cache_version"] = np.array(CACHE_VERSION)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return out_path


def default_cache_path(pop909_dir: str | Path) -> Path:
    import hashlib

    tag = hashlib.sha256(str(Path(pop909_dir).resolve()).encode()).hexdigest()[:12]
    return user_cache_dir("pop909") / f"grid-v{CACHE_VERSION}-{tag}.npz"
