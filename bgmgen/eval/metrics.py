"""Symbolic music metrics for `bgmgen eval`, on a tempo-free note representation.

Every metric is a small pure function of a :class:`Notes` object, whose times are in BEATS
(quarter notes) counted from the song's first downbeat, so tempo never matters: 4/4 is assumed
(bar ``b`` spans beats ``[4b, 4b+4)``), as in POP909 and in Diff-BGM's ``test.ipynb``.

Readers:

- :func:`read_midi_notes`: any MIDI file; seconds are turned into beats with the file's OWN tempo
  map (``tick / ticks_per_quarter``). Beat 0 is the start of the file, plus an optional
  ``offset_beats`` shift. Drum tracks are ignored; all other tracks are merged.
- :func:`read_pop909_song`: a POP909 song (``NNN/NNN.mid`` with MELODY, BRIDGE and PIANO merged)
  put on its annotated beat grid (``beat_midi.txt``) by piecewise-linear interpolation between the
  beat times, then shifted so that beat 0 is the song's first downbeat (:func:`pop909_origin_beat`).
  Notes that start before that downbeat (pick-ups) are dropped.

Alignment convention (the "first downbeat"): POP909's ``beat_midi.txt`` has downbeat flags, but in
several songs they are off by one to three beats (the remark in pop909-structure/SOURCE.md; 9 of
the 42 test songs). When the pop909-structure folder is given, the origin is the beat at which
that folder's melody.txt (realigned so that its time 0 is a bar line) best matches the MIDI's
MELODY track - the same rule as bgmgen.data.pop909, which the model trains and samples with
(:func:`pop909_origin_beat`). Without it, the origin is the first beat flagged as a downbeat in
``beat_midi.txt``. A generated song (``bgmgen sample``) must start its
beat 0 at that same origin beat of the reference song.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmgen.core.constants import BARS_PER_WINDOW, BEATS_PER_BAR, STEPS_PER_BAR, STEPS_PER_BEAT

EPS_PCHE = 1e-6  # Diff-BGM test.ipynb: log2(p + 1e-6)
PCHE_WINDOW_BEATS = BARS_PER_WINDOW * BEATS_PER_BAR  # 32 quarter notes = 8 bars
# SI band, in beats of segment duration (see structureness_indicator).
SI_LOW_BEATS = 12
SI_HIGH_BEATS = 24

# Timing tolerance when a time is floored onto a grid (beats): MIDI tick rounding and the
# beat-grid interpolation put grid onsets a few thousandths of a beat early.
TOL_BEATS = 0.01

PITCH_CLASS_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


# --------------------------------------------------------------------------------------------
# Note representation
# --------------------------------------------------------------------------------------------
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
    def from_list(rows) -> "Notes":
        """Build from an iterable of ``(onset_beat, duration_beats, pitch, velocity)``."""
        a = np.asarray(list(rows), dtype=float).reshape(-1, 4)
        order = np.lexsort((a[:, 2], a[:, 0]))
        a = a[order]
        return Notes(a[:, 0].copy(), a[:, 1].copy(), a[:, 2].astype(int), a[:, 3].astype(int))

    def __len__(self) -> int:
        return len(self.onset)

    @property
    def end(self) -> float:
        """Last note-off, in beats (0 for an empty song)."""
        return float(np.max(self.onset + self.duration)) if len(self) else 0.0

    def shifted(self, beats: float) -> "Notes":
        """The same notes moved by ``beats``; notes that would start before beat 0 are dropped."""
        on = self.onset + beats
        keep = on >= -TOL_BEATS
        return Notes(np.maximum(on[keep], 0.0), self.duration[keep], self.pitch[keep],
                     self.velocity[keep])

    def onset_steps(self, steps_per_beat: int = STEPS_PER_BEAT) -> np.ndarray:
        """Onsets rounded to the nearest grid step (16th by default), as int steps - like
        music21's quantisation in Diff-BGM's notebook and bgmgen.data.pop909's piano roll."""
        return np.floor(self.onset * steps_per_beat + 0.5).astype(int)


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


# --------------------------------------------------------------------------------------------
# POP909 reference songs
# --------------------------------------------------------------------------------------------
_DEGREES = {"1": 0, "2": 2, "3": 4, "4": 5, "5": 7, "6": 9, "7": 11, "9": 2, "11": 5, "13": 9}
_QUALITIES = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8),
    "sus2": (0, 2, 7), "sus4": (0, 5, 7), "maj7": (0, 4, 7, 11), "min7": (0, 3, 7, 10),
    "7": (0, 4, 7, 10), "dim7": (0, 3, 6, 9), "hdim7": (0, 3, 6, 10), "minmaj7": (0, 3, 7, 11),
    "maj6": (0, 4, 7, 9), "min6": (0, 3, 7, 9), "9": (0, 4, 7, 10, 2), "maj9": (0, 4, 7, 11, 2),
    "min9": (0, 3, 7, 10, 2), "11": (0, 4, 7, 10, 2, 5), "13": (0, 4, 7, 10, 2, 9),
    "min11": (0, 3, 7, 10, 2, 5), "1": (0,), "5": (0, 7),
}
_ROOTS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def _degree(s: str) -> int:
    s = s.strip()
    shift = 0
    while s and s[0] in "b#":
        shift += -1 if s[0] == "b" else 1
        s = s[1:]
    return (_DEGREES[s] + shift) % 12


def parse_chord_label(label: str) -> tuple[int, np.ndarray] | None:
    """Harte-style label (``B:maj``, ``C#:min7/b7``, ``G:sus4(b7)``) -> (root pc, 12-bit chroma).

    The chroma holds the chord tones plus the bass note (as mir_eval.chord.encode does).
    ``N`` / ``X`` (no chord) -> None. Unknown qualities fall back to the triad of the label's
    first letters (maj if it cannot be read).
    """
    label = label.strip()
    if not label or label in ("N", "X"):
        return None
    m = re.match(r"^([A-G])([b#]*):?([^(/]*)(\(([^)]*)\))?(/(.+))?$", label)
    if m is None:
        return None
    root = (_ROOTS[m.group(1)] + m.group(2).count("#") - m.group(2).count("b")) % 12
    quality = m.group(3) or "maj"
    ivs = set(_QUALITIES.get(quality, _QUALITIES["min"] if quality.startswith("min")
                             else _QUALITIES["maj"]))
    if m.group(5):
        for ext in m.group(5).split(","):
            ext = ext.strip()
            if ext.startswith("*"):
                ivs.discard(_degree(ext[1:]))
            elif ext:
                ivs.add(_degree(ext))
    if m.group(7):
        ivs.add(_degree(m.group(7)))
    chroma = np.zeros(12, dtype=bool)
    chroma[[(root + i) % 12 for i in ivs]] = True
    return root, chroma


@dataclass(frozen=True)
class ReferenceSong:
    """A POP909 song on its own beat grid, beat 0 = first downbeat (see module docstring)."""

    song_id: str
    notes: Notes                 # all three tracks merged, beats from the origin
    melody: Notes                # MELODY track only
    beat_times_s: np.ndarray     # [n_beats] seconds of beats 0.. (from the origin on)
    origin_beat: int             # index into beat_midi.txt of beat 0
    chord_chroma: np.ndarray     # [n_beats, 12] bool, chord sounding on each beat
    has_chord: np.ndarray        # [n_beats] bool (False for "N" and past the annotation)
    phrases: list[tuple[str, int, int]] | None  # (label, start_beat, end_beat), human_label1

    @property
    def n_beats(self) -> int:
        return len(self.beat_times_s)


def _beat_position(t: np.ndarray, beat_times: np.ndarray) -> np.ndarray:
    """Fractional beat index of times ``t`` on an annotated beat grid (linear between beats,
    extrapolated with the first / last beat period outside it)."""
    t = np.asarray(t, dtype=float)
    idx = np.arange(len(beat_times), dtype=float)
    x = np.interp(t, beat_times, idx)
    p0 = beat_times[1] - beat_times[0]
    p1 = beat_times[-1] - beat_times[-2]
    x = np.where(t < beat_times[0], (t - beat_times[0]) / p0, x)
    x = np.where(t > beat_times[-1], len(beat_times) - 1 + (t - beat_times[-1]) / p1, x)
    return x


def _read_chord_midi(path: Path, beat_times: np.ndarray, n_beats: int):
    """chord_midi.txt (start_s, end_s, label) -> per-beat chroma on the full beat grid."""
    chroma = np.zeros((n_beats, 12), dtype=bool)
    has = np.zeros(n_beats, dtype=bool)
    roots = np.full(n_beats, -1)
    for line in path.read_text().splitlines():
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 3:
            continue
        parsed = parse_chord_label(parts[2])
        if parsed is None:
            continue
        b0, b1 = np.round(_beat_position(np.array([float(parts[0]), float(parts[1])]), beat_times))
        b0, b1 = max(int(b0), 0), min(int(b1), n_beats)
        chroma[b0:b1] = parsed[1]
        has[b0:b1] = True
        roots[b0:b1] = parsed[0]
    return chroma, has, roots


def _read_finalized_chord(path: Path):
    """pop909-structure finalized_chord.txt -> per-beat (chroma, has_chord, root) from its origin."""
    chroma, has, roots = [], [], []
    for line in path.read_text().splitlines():
        m = re.match(r"^(\S+)\s+\[([^\]]*)\]\s+(-?\d+)\s+(\d+)", line.strip())
        if m is None:
            continue
        tones = [int(x) for x in m.group(2).split(",") if x.strip()]
        c = np.zeros(12, dtype=bool)
        c[tones] = True
        n = int(m.group(4))
        ok = m.group(1) not in ("N", "X") and len(tones) > 0
        chroma += [c] * n
        has += [ok] * n
        roots += [int(m.group(3)) if ok else -1] * n
    return np.array(chroma, dtype=bool).reshape(-1, 12), np.array(has, bool), np.array(roots)


def _read_phrases(path: Path) -> list[tuple[str, int, int]]:
    out, bar = [], 0
    for letter, bars in re.findall(r"([A-Za-z])(\d+)", path.read_text()):
        out.append((letter, bar * BEATS_PER_BAR, (bar + int(bars)) * BEATS_PER_BAR))
        bar += int(bars)
    return out


def pop909_origin_beat(song_dir, structure_song_dir=None) -> int:
    """Index (into beat_midi.txt) of the song's first downbeat, the eval's beat 0.

    With ``structure_song_dir`` (pop909-structure/NNN, whose time 0 is a true bar line): the
    shift, in sixteenths from -64 to 1023, that makes the most melody.txt note onsets coincide
    with onsets of the MIDI's MELODY track (placed on the beat_midi.txt grid, rounded to
    sixteenths; the first best shift wins), rounded to whole beats. This is the rule of
    ``bgmgen.data.pop909.load_song`` (the training / ``bgmgen sample`` side), so generated and
    reference songs share beat 0. Without it (or without melody.txt): the first beat flagged as a
    downbeat in beat_midi.txt (third column).
    """
    import pretty_midi

    song_dir = Path(song_dir)
    beats = np.loadtxt(song_dir / "beat_midi.txt", ndmin=2)
    downbeats = np.flatnonzero(beats[:, 2] > 0.5)
    default = int(downbeats[0]) if len(downbeats) else 0
    if structure_song_dir is None or not (Path(structure_song_dir) / "melody.txt").exists():
        return default
    pm = pretty_midi.PrettyMIDI(str(song_dir / f"{song_dir.name}.mid"))
    mel = next((i for i in pm.instruments if i.name.upper().startswith("MELODY")),
               pm.instruments[0] if pm.instruments else None)
    if mel is None or not mel.notes:
        return default
    midi_steps = np.round(_beat_position(np.array([n.start for n in mel.notes]), beats[:, 0])
                          * STEPS_PER_BEAT).astype(np.int64)
    struct_onsets, t = [], 0
    for line in (Path(structure_song_dir) / "melody.txt").read_text().split("\n"):
        parts = line.split()
        if len(parts) != 2:
            continue
        if int(parts[0]) > 0:
            struct_onsets.append(t)
        t += int(parts[1])
    if not struct_onsets:
        return default
    so = np.array(struct_onsets, dtype=np.int64)
    roll = np.zeros(int(midi_steps.max()) + 1, dtype=bool)
    roll[midi_steps[midi_steps >= 0]] = True
    shifts = np.arange(-64, 1024)
    pos = so[None, :] + shifts[:, None]
    ok = (pos >= 0) & (pos < len(roll))
    hits = (roll[np.clip(pos, 0, len(roll) - 1)] & ok).sum(axis=1)
    best = int(shifts[int(np.argmax(hits))])
    return int(round(best / STEPS_PER_BEAT))


def read_pop909_song(song_dir, structure_dir=None, align: str = "auto") -> ReferenceSong:
    """Read POP909 song ``song_dir`` (``.../pop909/NNN``) on its beat grid, beat 0 = first downbeat.

    ``structure_dir`` is the pop909-structure ROOT (optional). ``align``: ``"structure"`` (needs
    structure_dir), ``"beat_midi"`` (first flagged downbeat of beat_midi.txt) or ``"auto"``
    (structure when available). Chords come from finalized_chord.txt when the structure folder is
    used, else from chord_midi.txt. Phrases come from human_label1.txt (else human_label2.txt).
    """
    import pretty_midi

    song_dir = Path(song_dir)
    sid = song_dir.name
    sdir = Path(structure_dir) / sid if structure_dir else None
    if sdir is not None and not sdir.is_dir():
        sdir = None
    if align == "structure" and sdir is None:
        raise FileNotFoundError(f"{sid}: no pop909-structure folder for align='structure'")
    use_structure = sdir is not None and align in ("auto", "structure")
    origin = pop909_origin_beat(song_dir, sdir if use_structure else None)

    beats = np.loadtxt(song_dir / "beat_midi.txt", ndmin=2)
    bt_all = beats[:, 0]
    pm = pretty_midi.PrettyMIDI(str(song_dir / f"{sid}.mid"))
    rows, mrows = [], []
    for inst in pm.instruments:
        if inst.is_drum:
            continue
        for n in inst.notes:
            on, off = _beat_position(np.array([n.start, n.end]), bt_all) - origin
            r = (on, max(off - on, 0.0), n.pitch, n.velocity)
            rows.append(r)
            if inst.name.upper() == "MELODY":
                mrows.append(r)
    notes = Notes.from_list(rows).shifted(0.0)
    melody = Notes.from_list(mrows).shifted(0.0)
    bt = bt_all[origin:]
    n_beats = len(bt)

    if use_structure and (sdir / "finalized_chord.txt").exists():
        c, h, _ = _read_finalized_chord(sdir / "finalized_chord.txt")
        chroma = np.zeros((n_beats, 12), dtype=bool)
        has = np.zeros(n_beats, dtype=bool)
        k = min(n_beats, len(c))
        chroma[:k], has[:k] = c[:k], h[:k]
    else:
        c, h, _ = _read_chord_midi(song_dir / "chord_midi.txt", bt_all, len(bt_all))
        chroma, has = c[origin:], h[origin:]

    phrases = None
    if sdir is not None:
        for name in ("human_label1.txt", "human_label2.txt"):
            if (sdir / name).exists():
                phrases = _read_phrases(sdir / name)
                break
    return ReferenceSong(sid, notes, melody, bt, origin, chroma, has, phrases)


# --------------------------------------------------------------------------------------------
# Diff-BGM's metrics
# --------------------------------------------------------------------------------------------
def _entropy(hist: np.ndarray, eps: float = EPS_PCHE) -> float:
    p = hist / hist.sum()
    return float(-np.sum(p * np.log2(p + eps)))


def pitch_class_histogram_entropy(notes: Notes, window_beats: int = PCHE_WINDOW_BEATS,
                                  drop_last: bool = True, eps: float = EPS_PCHE) -> float:
    """PCHE: mean over windows of the entropy of the 12-bin pitch-class histogram (bits).

    ``H_w = -sum_{c=0..11} p_c log2(p_c + eps)``, ``p_c`` = share of the notes starting (onset
    rounded to the nearest 16th) in window ``w`` (beats ``[w*32, w*32+32)``, i.e. 8 bars of 4/4) whose pitch class is ``c``; every note
    counts once (chord members separately), durations and velocities are ignored. The song's PCHE
    is the mean of ``H_w`` over its non-empty windows. As in Diff-BGM's ``test.ipynb`` (cells 2-3,
    Li et al., CVPR 2024; after MusDr's H, Wu & Yang, ISMIR 2020), the window holding the last
    onset (the incomplete one) is dropped, unless it is the only window. Range 0..log2(12)=3.585.
    Empty song -> NaN. Differs from the notebook only where it has bugs: windows after a silence
    of more than 8 bars stay on the 8-bar grid, and empty windows are skipped.
    """
    if len(notes) == 0:
        return math.nan
    win = notes.onset_steps() // (window_beats * STEPS_PER_BEAT)
    n_win = int(win.max()) + 1
    if drop_last and n_win > 1:
        n_win -= 1
    vals = []
    for w in range(n_win):
        pcs = notes.pitch[win == w] % 12
        if len(pcs):
            vals.append(_entropy(np.bincount(pcs, minlength=12).astype(float), eps))
    return float(np.mean(vals)) if vals else math.nan


def grooving_patterns(notes: Notes, drop_last: bool = True) -> np.ndarray:
    """[n_bars, 16] binary onset patterns: ``g[b, q] = 1`` if a note starts in 16th ``q`` of bar b.

    Bars run from bar 0 to the bar before the one holding the last onset (Diff-BGM never appends
    the last bar's pattern); empty bars give zero rows.
    """
    if len(notes) == 0:
        return np.zeros((0, STEPS_PER_BAR), dtype=bool)
    steps = notes.onset_steps()
    bar, pos = steps // STEPS_PER_BAR, steps % STEPS_PER_BAR
    n_bars = int(bar.max()) + (0 if drop_last else 1)
    g = np.zeros((max(n_bars, 0), STEPS_PER_BAR), dtype=bool)
    keep = bar < n_bars
    g[bar[keep], pos[keep]] = True
    return g


def grooving_pattern_similarity(notes: Notes, drop_last: bool = True) -> float:
    """GPS: mean over all pairs of bars (i < j) of ``1 - (1/Q) sum_q XOR(g_i[q], g_j[q])``, Q = 16.

    ``g`` = :func:`grooving_patterns` (16th positions of onsets per 4-beat bar). Diff-BGM
    ``test.ipynb`` cells 2 and 5 (``cal_cps``), after MusDr's GS (Wu & Yang, ISMIR 2020, which uses
    Q = 64 and at most 1000 sampled pairs). All pairs are used (exact, no sampling). Range 0..1,
    higher = more repetitive rhythm. Fewer than 2 bars -> NaN.
    """
    g = grooving_patterns(notes, drop_last).astype(np.int64)
    n = len(g)
    if n < 2:
        return math.nan
    # sum over pairs of Hamming distances, per position: k ones among n bars -> k(n-k) pairs differ
    k = g.sum(axis=0)
    xor_total = float(np.sum(k * (n - k)))
    n_pairs = n * (n - 1) / 2
    return 1.0 - xor_total / (STEPS_PER_BAR * n_pairs)


# --------------------------------------------------------------------------------------------
# Structureness indicator (MusDr SI) on symbolic chroma
# --------------------------------------------------------------------------------------------
def symbolic_chroma(notes: Notes, n_frames: int | None = None,
                    frames_per_beat: int = 1) -> np.ndarray:
    """[12, n_frames] chroma: seconds-free sounding time of each pitch class in each frame.

    ``C[c, f]`` = total beats of overlap between frame ``f`` (``[f, f+1) / frames_per_beat``
    beats) and the notes of pitch class ``c`` (velocity ignored). This replaces MusDr's
    audio chroma (librosa chroma_stft of a rendering).
    """
    if n_frames is None:
        n_frames = int(math.ceil(notes.end * frames_per_beat)) if len(notes) else 0
    C = np.zeros((12, n_frames))
    if n_frames == 0 or len(notes) == 0:
        return C
    s = notes.onset * frames_per_beat
    e = (notes.onset + notes.duration) * frames_per_beat
    pc = notes.pitch % 12
    f0 = np.floor(s).astype(int)
    f1 = np.minimum(np.ceil(e).astype(int), n_frames)
    for k in range(int(np.max(f1 - f0)) if len(f0) else 0):
        f = f0 + k
        ok = f < f1
        ov = np.minimum(e[ok], f[ok] + 1) - np.maximum(s[ok], f[ok])
        good = (ov > 0) & (f[ok] >= 0)
        np.add.at(C, (pc[ok][good], f[ok][good]), ov[good])
    return C


def _normalize_columns(X: np.ndarray, threshold: float = 0.001) -> np.ndarray:
    n = np.sqrt((X ** 2).sum(axis=0))
    out = np.where(n > threshold, X / np.maximum(n, 1e-12), 1.0 / np.sqrt(X.shape[0]))
    return out


def _diag_cumsum(E: np.ndarray) -> np.ndarray:
    """Cumulative sums along the (1, 1) diagonals: ``Cd[i, j] = sum_{p >= 0} E[i - p, j - p]``.

    Skew the matrix so that diagonals become columns (a strided view), cumsum down the columns,
    and un-skew (another strided view)."""
    R, C = E.shape
    V = np.zeros((R, C + 2 * R))
    V[:, R:R + C] = E
    s0, s1 = V.strides
    W = np.cumsum(np.lib.stride_tricks.as_strided(V, shape=(R, C + R), strides=(s0 + s1, s1)),
                  axis=0)
    w0, w1 = W.strides
    return np.lib.stride_tricks.as_strided(W[:, R:], shape=(R, C), strides=(w0 - w1, w1))


def _filter_diag(S: np.ndarray, L: int, tempo_rel_set) -> np.ndarray:
    """Mueller's path smoothing (FMP C4S2 ``compute_SM_TI`` with direction=2): the max of the
    forward and backward ``filter_diag_mult_SM``, i.e. the mean of S over L cells along diagonals
    of several slopes (simulated by resampling the columns by each relative tempo), max over tempi.
    Same output as FMP's loops of L shifted additions; computed with diagonal cumulative sums."""
    N, M = S.shape
    out = np.zeros((M, N))
    for tempo in tempo_rel_set:
        M_ceil = int(np.ceil(N / tempo))
        idx = np.maximum(np.around(np.arange(1, M_ceil + 1) / M_ceil * N) - 1, 0).astype(int)
        E = np.zeros((M + 2 * L, M_ceil + 2 * L))
        E[L:L + M, L:L + M_ceil] = S[:, idx]
        Cd = _diag_cumsum(E)
        # forward: sum_{p<L} S_res[i+p, j+p]; backward: sum_{p<L} S_res[i-p, j-p]
        fwd = Cd[2 * L - 1:2 * L - 1 + M, 2 * L - 1:2 * L - 1 + M_ceil] \
            - Cd[L - 1:L - 1 + M, L - 1:L - 1 + M_ceil]
        bwd = Cd[L:L + M, L:L + M_ceil] - Cd[0:M, 0:M_ceil]
        inv = np.maximum(np.around(np.arange(1, N + 1) / N * M_ceil) - 1, 0).astype(int)
        out = np.maximum(out, np.maximum(fwd, bwd)[:, inv] / L)
    return out


def self_similarity(chroma: np.ndarray, L: int = 12, n_tempi: int = 7,
                    transpositions: bool = True, rel_threshold: float = 0.25,
                    penalty: float = -2.0) -> np.ndarray:
    """MusDr's enhanced SSM: dot products of L2-normalised chroma, path-smoothed forward and
    backward over ``L`` frames with 7 relative tempi in [0.5, 2], max over the 12 cyclic
    transpositions, keep the top 25 % (scaled to [0, 1]), the rest set to ``penalty``,
    diagonal set to 1 (Mueller FMP C4S2/C4S3 as arranged in MusDr's mueller_audio_tools)."""
    X = _normalize_columns(chroma)
    tempi = np.exp(np.linspace(np.log(0.5), np.log(2.0), n_tempi))
    S_ti = None
    for shift in range(12 if transpositions else 1):
        S = X.T @ np.roll(X, shift, axis=0)  # S[i, j] = <X_i, shift(X_j)>
        S = _filter_diag(S, L, tempi)
        S_ti = S if S_ti is None else np.maximum(S_ti, S)
    S = np.maximum(S_ti, 0.0)
    # relative threshold (FMP threshold_matrix, strategy 'relative', scale, penalty)
    n_below = int(np.round(S.size * (1 - rel_threshold)))
    if n_below < S.size:
        thr = np.sort(S, axis=None)[n_below]
        S = np.where(S < thr, 0.0, S)
    else:
        S = np.zeros_like(S)
    pos = S[S > 0]
    lo = pos.min() if len(pos) else 0.0
    hi = S.max()
    if hi > lo:
        zero = S == 0
        S = (S - lo) / (hi - lo)
        S[zero] = penalty
    np.fill_diagonal(S, 1.0)
    return S


def fitness_for_length(S: np.ndarray, K: int) -> np.ndarray:
    """Fitness of every segment of length ``K`` frames (one value per start 0..N-K).

    Mueller's audio thumbnailing (FMP C4S3, as arranged in MusDr's ``mueller_audio_tools``): for
    a segment alpha the optimal path family over the SSM columns of alpha is found by dynamic
    programming (steps (1,1), (1,2), (2,1), plus an "elevator" column to jump between paths), then
    ``score_n = (score - K) / path_family_length``, ``coverage_n = (coverage - K) / N`` (the
    trivial self-path removed) and ``fitness = 2 score_n coverage_n / (score_n + coverage_n)``.

    Vectorised over all starts. Instead of storing the accumulated score matrix and backtracking,
    the path-family length and coverage are carried forward along the predecessor that FMP's
    backtracking would choose from each cell (same candidates, same tie-breaking), which gives
    the same numbers (checked against the per-segment reference loop in the tests) in O(N K)
    memory.
    """
    N = S.shape[0]
    n_st = N - K + 1
    if n_st <= 0 or K < 1:
        return np.zeros(0)
    Sg = np.lib.stride_tricks.sliding_window_view(S, K, axis=1)  # [N, n_st, K]
    ninf = -np.inf
    shape = (n_st, K + 1)
    # row 0
    D1 = np.full(shape, ninf)
    D1[:, 0] = 0.0
    D1[:, 1] = Sg[0, :, 0]
    plen1 = np.zeros(shape, dtype=np.int64)
    plen1[:, 1] = 1
    cov1 = np.zeros(shape, dtype=np.int64)
    cst1 = np.zeros(shape, dtype=np.int64)
    D2 = np.full(shape, ninf)  # row n-2 (rows before 0 are -inf, as FMP's D[-1] still is)
    plen2, cov2, cst2 = plen1.copy(), cov1.copy(), cst1.copy()
    for n in range(1, N):
        D = np.empty(shape)
        plen = np.empty(shape, dtype=np.int64)
        cov = np.empty(shape, dtype=np.int64)
        cst = np.empty(shape, dtype=np.int64)
        # elevator column: come down from (n-1, 0) or leave a path at (n-1, K)
        jump = D1[:, K] > D1[:, 0]
        D[:, 0] = np.where(jump, D1[:, K], D1[:, 0])
        plen[:, 0] = np.where(jump, plen1[:, K], plen1[:, 0])
        cov[:, 0] = np.where(jump, cov1[:, K] + n - cst1[:, K], cov1[:, 0])
        cst[:, 0] = 0
        # column 1: a path starts at row n
        D[:, 1] = D[:, 0] + Sg[n, :, 0]
        plen[:, 1] = plen[:, 0] + 1
        cov[:, 1] = cov[:, 0]
        cst[:, 1] = n
        if K >= 2:
            v1 = D1[:, 1:K]                                    # (n-1, m-1)
            v2 = D2[:, 1:K] if n > 2 else np.full_like(v1, ninf)  # (n-2, m-1)
            v3 = np.full_like(v1, ninf)                        # (n-1, m-2), only for m > 2
            v3[:, 1:] = D1[:, 1:K - 1]
            fwd = np.maximum(np.maximum(v1, D1[:, 0:K - 1]), D2[:, 1:K])
            D[:, 2:] = Sg[n, :, 1:] + fwd
            pick2 = v2 > v1
            pick3 = v3 > np.maximum(v1, v2)
            for arr, a1, a2 in ((plen, plen1, plen2), (cov, cov1, cov2), (cst, cst1, cst2)):
                c = np.where(pick2, a2[:, 1:K], a1[:, 1:K])
                c3 = np.empty_like(c)
                c3[:, 0] = c[:, 0]
                c3[:, 1:] = a1[:, 1:K - 1]
                arr[:, 2:] = np.where(pick3, c3, c)
            plen[:, 2:] += 1
        D2, plen2, cov2, cst2 = D1, plen1, cov1, cst1
        D1, plen1, cov1, cst1 = D, plen, cov, cst
    on_path = ~(D1[:, K] < D1[:, 0])
    score = np.where(on_path, D1[:, K], D1[:, 0])
    total_len = np.where(on_path, plen1[:, K], plen1[:, 0])
    coverage = np.where(on_path, cov1[:, K] + N - cst1[:, K], cov1[:, 0])
    eps = 1e-16
    score_n = (score - K) / (total_len + eps)
    cov_n = (coverage - K) / (N + eps)
    return 2 * score_n * cov_n / (score_n + cov_n + eps)


def structureness_indicator(notes: Notes, low_beats: int = SI_LOW_BEATS,
                            high_beats: int = SI_HIGH_BEATS, frames_per_beat: int = 1,
                            smooth_beats: int = 3, path_smooth_beats: int = 12,
                            transpositions: bool = True) -> float:
    """SI: max fitness of the scape plot over segment durations ``low_beats..high_beats``.

    MusDr's structureness indicator (Wu & Yang, ISMIR 2020, ``compute_structure_indicator``),
    computed from SYMBOLIC chroma instead of the chroma of a rendered audio file:

    1. chroma per beat (:func:`symbolic_chroma`, sounding time of each pitch class), smoothed
       with a centred boxcar of ``smooth_beats`` beats (MusDr: 2.1 s boxcar, 2 Hz frames);
    2. enhanced SSM (:func:`self_similarity`: path smoothing over ``path_smooth_beats`` beats -
       MusDr: 16 frames = 8 s -, 7 tempi in [0.5, 2], 12 transpositions, top 25 %, penalty -2);
    3. fitness (:func:`fitness_for_length`) of every segment whose length K satisfies
       ``low_beats <= K <= high_beats`` frames; SI = the maximum.

    Default band: 12-24 beats = 3-6 bars, i.e. 7.5-15 s at 96 BPM and 9-18 s at 80 BPM: the beat
    version of MusDr's SI_mid (8-15 s). Units: fitness, 0..1. Songs shorter than ``low_beats``
    -> NaN. Cost: O(N^2 * band) for N beats; ~0.5 s for a 4-minute song.
    """
    if len(notes) == 0:
        return math.nan
    C = symbolic_chroma(notes, frames_per_beat=frames_per_beat)
    N = C.shape[1]
    lo, hi = low_beats * frames_per_beat, min(high_beats * frames_per_beat, N)
    if N < lo or N < 2:
        return math.nan
    if smooth_beats > 1:
        k = smooth_beats * frames_per_beat
        kern = np.ones(k) / k
        C = np.stack([np.convolve(row, kern, mode="same") for row in C])
    S = self_similarity(C, L=path_smooth_beats * frames_per_beat, transpositions=transpositions)
    best = -np.inf
    for K in range(lo, hi + 1):
        f = fitness_for_length(S, K)
        if len(f):
            best = max(best, float(f.max()))
    return best if np.isfinite(best) else math.nan


# --------------------------------------------------------------------------------------------
# Controls adherence and simple statistics (ours; muspy-style where stated)
# --------------------------------------------------------------------------------------------
def chord_tone_ratio(notes: Notes, chord_chroma: np.ndarray, has_chord: np.ndarray | None = None
                     ) -> float:
    """Share of note onsets whose pitch class belongs to the chord sounding at that beat.

    ``sum_n [pc(n) in chord(beat_n)] / #{n : a chord is annotated at beat_n}``, beat_n = the beat
    of the note's onset rounded to the nearest 16th.
    ``chord_chroma`` is [n_beats, 12] bool (beat 0 = first downbeat); onsets on beats without a
    chord ("N") or past the annotation are not counted. No notes counted -> NaN.
    """
    if has_chord is None:
        has_chord = chord_chroma.any(axis=1)
    b = notes.onset_steps() // STEPS_PER_BEAT
    ok = (b >= 0) & (b < len(chord_chroma))
    ok[ok] &= has_chord[b[ok]]
    if not ok.any():
        return math.nan
    return float(chord_chroma[b[ok], notes.pitch[ok] % 12].mean())


def onset_density(notes: Notes, n_beats: int | None = None) -> np.ndarray:
    """Onsets per beat: ``d[b]`` = number of distinct (16th-step, pitch) note starts in beat b."""
    steps = notes.onset_steps()
    if n_beats is None:
        n_beats = int(steps.max()) // STEPS_PER_BEAT + 1 if len(steps) else 0
    key = np.unique(steps * 128 + notes.pitch)
    b = (key // 128) // STEPS_PER_BEAT
    b = b[(b >= 0) & (b < n_beats)]
    return np.bincount(b, minlength=n_beats).astype(float)[:n_beats]


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN if either side is constant."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, float), np.asarray(y, float)
    n = min(len(x), len(y))
    if n < 3:
        return math.nan
    rx, ry = rankdata(x[:n]), rankdata(y[:n])
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def density_rho(notes: Notes, requested: np.ndarray) -> float:
    """Spearman rho between the requested per-beat density and the song's :func:`onset_density`,
    over beats ``0 .. len(requested)-1`` (generated beat b = requested beat b)."""
    return spearman_rho(np.asarray(requested, float), onset_density(notes, len(requested)))


def empty_bar_rate(notes: Notes, n_bars: int | None = None) -> float:
    """Share of 4-beat bars in which no note starts (muspy ``empty_measure_rate``).

    Bars 0 .. n_bars-1; default n_bars = ceil(last note-off / 4). Empty song -> NaN.
    """
    if n_bars is None:
        n_bars = int(math.ceil(notes.end / BEATS_PER_BAR - 1e-9)) if len(notes) else 0
    if n_bars <= 0:
        return math.nan
    bar = notes.onset_steps() // STEPS_PER_BAR
    used = np.zeros(n_bars, dtype=bool)
    bar = bar[(bar >= 0) & (bar < n_bars)]
    used[bar] = True
    return float(1.0 - used.mean())


def polyphony(notes: Notes) -> float:
    """Mean number of pitches sounding per 16th step, over steps where at least one sounds
    (muspy ``polyphony``). A note covers steps ``[round(4*onset), round(4*(onset+dur)))``,
    at least one step. Empty song -> NaN."""
    if len(notes) == 0:
        return math.nan
    s = np.round(notes.onset * STEPS_PER_BEAT).astype(int)
    e = np.maximum(np.round((notes.onset + notes.duration) * STEPS_PER_BEAT).astype(int), s + 1)
    T = int(e.max())
    roll = np.zeros((T + 1, 128), dtype=np.int8)
    np.add.at(roll, (s, notes.pitch), 1)
    np.add.at(roll, (e, notes.pitch), -1)
    active = np.cumsum(roll, axis=0)[:T] > 0
    count = active.sum(axis=1)
    return float(count[count > 0].mean())


def pitch_range(notes: Notes) -> float:
    """Highest minus lowest MIDI pitch, in semitones (muspy ``pitch_range``). Empty -> NaN."""
    if len(notes) == 0:
        return math.nan
    return float(notes.pitch.max() - notes.pitch.min())


_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])


def scale_consistency(notes: Notes) -> float:
    """Largest share of notes in one major or natural-minor scale, over the 24 scales
    (muspy ``scale_consistency``; Mogren 2016). Each note counts once. Empty -> NaN."""
    if len(notes) == 0:
        return math.nan
    hist = np.bincount(notes.pitch % 12, minlength=12).astype(float)
    best = 0.0
    for root in range(12):
        for scale in (_MAJOR, _MINOR):
            best = max(best, hist[(root + scale) % 12].sum())
    return float(best / hist.sum())


def overlapping_area(a, b, n_grid: int = 512) -> float:
    """Overlapping area of the Gaussian-KDE densities of two samples: ``int min(p_a, p_b) dx``.

    The distribution distance of Yang & Lerch (2018, "On the evaluation of generative models in
    music", Neural Comput. & Applic.), here applied directly to per-song feature values (one value
    per song; generated set vs ground-truth set). Bandwidth: Silverman's rule per sample,
    floored at 1e-3 of the pooled spread. 1 = same distribution, 0 = disjoint. NaNs ignored;
    fewer than 2 values on a side -> NaN.
    """
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    pooled = np.concatenate([a, b])
    spread = max(float(pooled.max() - pooled.min()), float(np.std(pooled)), 1e-9)

    def bw(x):
        return max(1.06 * float(np.std(x)) * len(x) ** (-0.2), 1e-3 * spread)

    ha, hb = bw(a), bw(b)
    lo = pooled.min() - 4 * max(ha, hb)
    hi = pooled.max() + 4 * max(ha, hb)
    x = np.linspace(lo, hi, n_grid)

    def kde(s, h):
        z = (x[:, None] - s[None, :]) / h
        return np.exp(-0.5 * z ** 2).sum(axis=1) / (len(s) * h * math.sqrt(2 * math.pi))

    return float(min(np.trapezoid(np.minimum(kde(a, ha), kde(b, hb)), x), 1.0))
