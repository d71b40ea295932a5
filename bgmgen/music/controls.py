"""Per-beat controls: the one vocabulary that music (training) and video (inference) both speak.

Training reads them off POP909 songs; at inference plan.py derives the same quantities from the
video (motion -> density, visual onsets and cuts -> accents and phrase boundaries, mood -> key,
mode, register, chords). Each beat becomes one condition token (Diff-BGM: one token per beat).

Groups (each can be dropped for classifier-free guidance, and the feature selector decides when
each group steers the denoiser):
    rhythm     (dynamic)  onset density, onset positions, accent                           3 values
                          + (layout 2) the groove: which sixteenths of the beat have onsets  +4 values
    harmony    (semantic) chord root one-hot + no-chord flag, chord chroma, bass one-hot  37 values
    key        (semantic) tonic one-hot, minor flag, register                            14 values
    structure  (semantic) position in phrase, phrase start, phrase end, melodic phrase     4 values
plus one "present" flag per group (0 when the group was dropped) -> 62 values (layout 1, the v1
model) or 66 (layout 2). A model's config names its layout; `encode` writes that layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bgmgen.core.constants import BEATS_PER_BAR, STEPS_PER_BEAT
from bgmgen.music.config import LATEST_LAYOUT  # noqa: F401  (re-exported: controls.LATEST_LAYOUT)

GROUPS = ("rhythm", "harmony", "key", "structure")
DYNAMIC_GROUPS = ("rhythm",)
SEMANTIC_GROUPS = ("harmony", "key", "structure")
GROUP_SIZES = {"rhythm": 3, "harmony": 37, "key": 14, "structure": 4}
GROOVE_SIZE = STEPS_PER_BEAT  # one onset flag per sixteenth of the beat


@dataclass(frozen=True)
class Layout:
    """Where each control group sits in a condition token."""

    version: int
    groove: bool  # rhythm carries the per-sixteenth onset pattern
    slices: dict = field(compare=False)
    present_offset: int = 0

    @property
    def dim(self) -> int:
        return self.present_offset + len(GROUPS)

    def columns(self, groups: tuple[str, ...]) -> list[int]:
        """Feature columns (values + present flag) of `groups`."""
        cols = []
        for g in groups:
            s = self.slices[g]
            cols += list(range(s.start, s.stop)) + [self.present_offset + GROUPS.index(g)]
        return cols


def _layout(version: int, groove: bool) -> Layout:
    slices, at = {}, 0
    for g in GROUPS:
        n = GROUP_SIZES[g] + (GROOVE_SIZE if g == "rhythm" and groove else 0)
        slices[g] = slice(at, at + n)
        at += n
    return Layout(version=version, groove=groove, slices=slices, present_offset=at)


LAYOUTS = {1: _layout(1, groove=False), 2: _layout(2, groove=True)}
# Layout 1 names, kept for the code and tests written against it.
GROUP_SLICES = LAYOUTS[1].slices
PRESENT_OFFSET = LAYOUTS[1].present_offset
CONTROL_DIM = LAYOUTS[1].dim

# Scales that map raw counts to roughly 0..1 (log scale: density matters in ratios).
DENSITY_LOG_MAX = np.log1p(16.0)  # onsets per beat
ACCENT_LOG_MAX = np.log1p(8.0)  # simultaneous onsets
REGISTER_CENTER, REGISTER_SPAN = 60.0, 24.0


@dataclass
class BeatControls:
    """Raw per-beat controls for n beats (arrays of length n)."""

    density: np.ndarray  # float, onsets per beat
    positions: np.ndarray  # float, distinct onset sixteenths per beat (0..4)
    accent: np.ndarray  # float, most simultaneous onsets at one step of the beat
    chord_root: np.ndarray  # int, -1 no chord
    chord_chroma: np.ndarray  # [n, 12] 0/1
    chord_bass: np.ndarray  # int, -1 no chord
    key_tonic: np.ndarray  # int per beat
    key_mode: np.ndarray  # int per beat, 1 minor
    register: np.ndarray  # float, mean MIDI pitch of onsets around the beat
    phrase_id: np.ndarray  # int, segment index per beat (phrases in training, shots at inference)
    phrase_pos: np.ndarray  # float 0..1, position of the beat inside its phrase
    melodic: np.ndarray  # 0/1, melodic phrase (upper-case label) vs intro/outro/bridge
    groove: np.ndarray | None = None  # [n, 4] 0/1: onset on each sixteenth of the beat (layout 2)

    def __len__(self) -> int:
        return len(self.density)

    def slice(self, start: int, stop: int) -> "BeatControls":
        return BeatControls(**{k: None if v is None else v[start:stop] for k, v in self.__dict__.items()})

    def transposed(self, semitones: int) -> "BeatControls":
        def shift(pc: np.ndarray) -> np.ndarray:
            return np.where(pc >= 0, (pc + semitones) % 12, pc)

        d = dict(self.__dict__)
        d.update(chord_root=shift(self.chord_root), chord_bass=shift(self.chord_bass),
                 chord_chroma=np.roll(self.chord_chroma, semitones, axis=-1),
                 key_tonic=(self.key_tonic + semitones) % 12, register=self.register + semitones)
        return BeatControls(**d)


def rhythm_from_onsets(onset: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-beat (density, positions, accent) of an onset roll [n_steps, pitches] (nonzero = onset)."""
    per_step = _onsets_per_step(onset)
    return per_step.sum(1).astype(np.float32), (per_step > 0).sum(1).astype(np.float32), \
        per_step.max(1).astype(np.float32)


def groove_from_onsets(onset: np.ndarray) -> np.ndarray:
    """Per-beat groove of an onset roll [n_steps, pitches]: [n_beats, 4] 0/1, an onset on each sixteenth."""
    return (_onsets_per_step(onset) > 0).astype(np.float32)


def _onsets_per_step(onset: np.ndarray) -> np.ndarray:
    on = onset > 0
    n_beats = on.shape[0] // STEPS_PER_BEAT
    return on[: n_beats * STEPS_PER_BEAT].sum(1).reshape(n_beats, STEPS_PER_BEAT)


def music_controls(onset: np.ndarray, *, register: np.ndarray, chord_root, chord_chroma, chord_bass,
                   key_tonic: int, key_mode: int, phrase_id, phrase_pos, melodic) -> BeatControls:
    """The controls of a piece of music, read off it: rhythm and groove from its onset roll
    [n_beats * 4, pitches]; the rest as annotated (chords, key, phrases) or precomputed (register,
    which looks a few beats beyond the piece's edges). Training windows and whole songs both use this."""
    density, positions, accent = rhythm_from_onsets(onset)
    n = len(density)
    return BeatControls(
        density=density, positions=positions, accent=accent, groove=groove_from_onsets(onset),
        chord_root=np.asarray(chord_root[:n], np.int64), chord_chroma=np.asarray(chord_chroma[:n]),
        chord_bass=np.asarray(chord_bass[:n], np.int64), key_tonic=np.full(n, int(key_tonic), np.int64),
        key_mode=np.full(n, key_mode), register=np.asarray(register[:n], np.float32),
        phrase_id=np.asarray(phrase_id[:n]), phrase_pos=np.asarray(phrase_pos[:n]), melodic=np.asarray(melodic[:n]))


def register_from_onsets(onset: np.ndarray, window_beats: int = 8, default: float = 62.0) -> np.ndarray:
    """Mean onset pitch in a window of +-window_beats/2 beats around each beat (default where empty)."""
    on = onset > 0
    n_beats = on.shape[0] // STEPS_PER_BEAT
    pitches = np.arange(on.shape[1], dtype=np.float64)
    per_beat = on[: n_beats * STEPS_PER_BEAT].reshape(n_beats, STEPS_PER_BEAT, -1).sum(1)  # [n, P]
    count = per_beat.sum(1).astype(np.float64)
    total = per_beat @ pitches
    kernel = np.ones(window_beats + 1)
    c = np.convolve(count, kernel, mode="same")
    t = np.convolve(total, kernel, mode="same")
    return np.where(c > 0, t / np.maximum(c, 1), default).astype(np.float32)


def phrase_arrays(phrases: list[tuple[str, int]], n_beats: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-beat (phrase_id, position in phrase 0..1, melodic flag) from (letter, bars) pairs."""
    pid = np.zeros(n_beats, np.int32)
    pos = np.zeros(n_beats, np.float32)
    mel = np.zeros(n_beats, np.float32)
    b = 0
    for k, (letter, bars) in enumerate(phrases):
        length = bars * BEATS_PER_BAR
        end = min(b + length, n_beats)
        pid[b:end] = k
        pos[b:end] = np.arange(end - b) / max(length - 1, 1)
        mel[b:end] = float(letter.isupper())
        b = end
        if b >= n_beats:
            break
    if b < n_beats:  # labels shorter than the grid: one trailing segment
        pid[b:] = len(phrases)
        pos[b:] = np.arange(n_beats - b) / max(n_beats - b - 1, 1)
    return pid, pos, mel


def encode(c: BeatControls, present: dict[str, bool] | None = None, layout: Layout = LAYOUTS[1]) -> np.ndarray:
    """BeatControls -> [n, layout.dim] float32 features; absent groups are zeros with present flag 0."""
    n = len(c)
    f = np.zeros((n, layout.dim), np.float32)
    f[:, 0] = np.log1p(c.density) / DENSITY_LOG_MAX
    f[:, 1] = c.positions / STEPS_PER_BEAT
    f[:, 2] = np.log1p(c.accent) / ACCENT_LOG_MAX
    if layout.groove:
        if c.groove is None:
            raise ValueError("this model's controls include the groove; BeatControls.groove is missing")
        f[:, 3:3 + GROOVE_SIZE] = c.groove
    slices = layout.slices
    h = slices["harmony"].start
    has_chord = c.chord_root >= 0
    f[np.arange(n)[has_chord], h + c.chord_root[has_chord]] = 1
    f[~has_chord, h + 12] = 1
    f[:, h + 13:h + 25] = c.chord_chroma
    has_bass = c.chord_bass >= 0
    f[np.arange(n)[has_bass], h + 25 + c.chord_bass[has_bass]] = 1
    k = slices["key"].start
    f[np.arange(n), k + c.key_tonic % 12] = 1
    f[:, k + 12] = c.key_mode
    f[:, k + 13] = (c.register - REGISTER_CENTER) / REGISTER_SPAN
    s = slices["structure"].start
    f[:, s] = c.phrase_pos
    f[:, s + 1] = np.r_[1, np.diff(c.phrase_id) != 0]
    f[:, s + 2] = np.r_[np.diff(c.phrase_id) != 0, 1]
    f[:, s + 3] = c.melodic
    for g_idx, g in enumerate(GROUPS):
        if present is not None and not present.get(g, True):
            f[:, slices[g]] = 0
        else:
            f[:, layout.present_offset + g_idx] = 1
    return f
