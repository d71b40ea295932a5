"""POP909 (+ pop909-structure) on the sixteenth-note grid, with the per-beat annotations training needs.

Alignment. POP909's MIDI files carry a beat grid (beat_midi.txt, one row per beat) whose first
downbeat is not always right. pop909-structure re-aligned melody, chords and phrase labels so that
its time 0 is a true bar line. We find that bar line on the MIDI grid by matching the structure
melody's onsets (sixteenths from its time 0) against the MIDI MELODY track's onsets (sixteenths from
the first beat of beat_midi.txt): the shift with the most coincident onsets wins. Bar k of the song
then starts at MIDI beat `origin_beat + 4k`; notes before bar 0 (a pickup) are dropped.

All three tracks (MELODY, BRIDGE, PIANO) are merged into one piano roll (`onset`, `sustain`: what
the controls and the metrics read, as in Diff-BGM). The melody-and-accompaniment model (v3) also
needs them apart: the MELODY track as one voice per step (`melody_pitch`, `melody_onset`; where two
melody notes overlap the later one wins) and BRIDGE + PIANO as the accompaniment roll
(`acc_onset`, `acc_sustain`).
Songs whose phrase labels and chord durations disagree about the bar count by more than two bars
(not 4/4 throughout, or a failed alignment) are skipped and listed in the cache's `skipped`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmgen.core.constants import BEATS_PER_BAR, N_PITCHES, STEPS_PER_BAR, STEPS_PER_BEAT
from bgmgen.core.errors import InputError
from bgmgen.core.files import user_cache_dir

PITCH_CLASSES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
# Slash-chord bass degrees of finalized_chord.txt, in semitones above the root.
BASS_DEGREES = {"1": 0, "b2": 1, "2": 2, "9": 2, "b3": 3, "3": 4, "4": 5, "#4": 6, "b5": 6, "5": 7,
                "#5": 8, "b6": 8, "6": 9, "bb7": 9, "b7": 10, "7": 11}
CACHE_VERSION = 2  # 2: melody and accompaniment kept apart


def parse_pitch_class(name: str) -> int:
    pc = PITCH_CLASSES[name[0]]
    for accidental in name[1:]:
        pc += {"#": 1, "b": -1}[accidental]
    return pc % 12


def parse_key(label: str) -> tuple[int, int]:
    """'Gb:maj' -> (tonic pitch class 6, mode 0); mode 1 = minor."""
    tonic, _, quality = label.strip().partition(":")
    return parse_pitch_class(tonic), int(quality.startswith("min"))


_CHORD_LINE = re.compile(r"^(\S+)\s+\[([\d,\s]*)\]\s+(-?\d+)\s+(\d+)")


def parse_structure_chords(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """finalized_chord.txt -> per-beat (root [n], chroma [n,12], bass [n]); root/bass -1 = no chord."""
    roots, chromas, basses = [], [], []
    for line in text.splitlines():
        m = _CHORD_LINE.match(line.strip())
        if not m:
            continue
        name, tones, root, beats = m.group(1), m.group(2), int(m.group(3)), int(m.group(4))
        chroma = np.zeros(12, np.uint8)
        for tone in filter(None, (t.strip() for t in tones.split(","))):
            chroma[int(tone) % 12] = 1
        if name.startswith("N") or chroma.sum() == 0:
            root, bass = -1, -1
        else:
            root %= 12
            bass = root
            if "/" in name:
                degree = name.rsplit("/", 1)[1]
                if degree in BASS_DEGREES:
                    bass = (root + BASS_DEGREES[degree]) % 12
        roots += [root] * beats
        chromas += [chroma] * beats
        basses += [bass] * beats
    return np.array(roots, np.int8), np.array(chromas, np.uint8).reshape(-1, 12), np.array(basses, np.int8)


def parse_phrases(label: str) -> list[tuple[str, int]]:
    """'i4A4B8' -> [('i', 4), ('A', 4), ('B', 8)]."""
    return [(letter, int(bars)) for letter, bars in re.findall(r"([A-Za-z])(\d+)", label)]


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


def _beat_position(times_s: np.ndarray, beat_times_s: np.ndarray) -> np.ndarray:
    """Fractional beat index of each time on a (possibly uneven) beat grid, extrapolated linearly."""
    idx = np.arange(len(beat_times_s), dtype=np.float64)
    pos = np.interp(times_s, beat_times_s, idx)
    first_period = beat_times_s[1] - beat_times_s[0]
    last_period = beat_times_s[-1] - beat_times_s[-2]
    before, after = times_s < beat_times_s[0], times_s > beat_times_s[-1]
    pos[before] = (times_s[before] - beat_times_s[0]) / first_period
    pos[after] = idx[-1] + (times_s[after] - beat_times_s[-1]) / last_period
    return pos


def _structure_melody_onsets(text: str) -> np.ndarray:
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
    """Shift (in sixteenths) that maps structure time 0 onto the MIDI grid, and the share of onsets it matches."""
    if len(midi_melody_steps) == 0 or len(structure_onsets) == 0:
        return 0, 0.0
    midi = np.zeros(int(midi_melody_steps.max()) + 1, bool)
    midi[midi_melody_steps[midi_melody_steps >= 0]] = True
    best, best_hits = 0, -1
    for shift in range(-64, 1024):
        s = structure_onsets + shift
        s = s[(s >= 0) & (s < len(midi))]
        hits = int(midi[s].sum())
        if hits > best_hits:
            best, best_hits = shift, hits
    return best, best_hits / len(structure_onsets)


def load_song(pop909_dir: str | Path, structure_dir: str | Path, song_id: str) -> Song:
    """Read one song. Raises InputError when the song cannot be put on a 4/4 grid."""
    import pretty_midi

    sdir, tdir = Path(pop909_dir) / song_id, Path(structure_dir) / song_id
    pm = pretty_midi.PrettyMIDI(str(sdir / f"{song_id}.mid"))
    beats = np.loadtxt(sdir / "beat_midi.txt", ndmin=2)[:, 0]
    if len(beats) < 8:
        raise InputError(f"{sdir}: beat_midi.txt has fewer than 8 beats")

    melody = next((i for i in pm.instruments if i.name.upper().startswith("MELODY")), pm.instruments[0])
    mel_steps = np.round(_beat_position(np.array([n.start for n in melody.notes]), beats) * STEPS_PER_BEAT)
    shift, match = find_origin_step(mel_steps.astype(np.int64),
                                    _structure_melody_onsets((tdir / "melody.txt").read_text()))
    if match < 0.5:
        raise InputError(f"{song_id}: melody alignment matched only {match:.0%} of onsets")
    origin_beat = int(round(shift / STEPS_PER_BEAT))

    roots, chromas, basses = parse_structure_chords((tdir / "finalized_chord.txt").read_text())
    phrases = [parse_phrases((tdir / f"human_label{k}.txt").read_text()) for k in (1, 2)
               if (tdir / f"human_label{k}.txt").exists()]
    phrases = [p for p in phrases if p]
    if not phrases:
        raise InputError(f"{song_id}: no phrase labels")
    label_bars = sum(b for _, b in phrases[0])
    if abs(len(roots) / BEATS_PER_BAR - label_bars) > 2:
        raise InputError(f"{song_id}: chords span {len(roots) / 4:.1f} bars, phrases {label_bars} bars")
    n_bars = label_bars
    n_beats = n_bars * BEATS_PER_BAR
    n_steps = n_bars * STEPS_PER_BAR

    # Beat times of the song grid, extrapolated past the end of beat_midi.txt when needed.
    grid = np.arange(origin_beat, origin_beat + n_beats + 1, dtype=np.float64)
    idx = np.arange(len(beats), dtype=np.float64)
    period_end = beats[-1] - beats[-2]
    period_start = beats[1] - beats[0]
    beat_times = np.interp(grid, idx, beats)
    beat_times[grid > idx[-1]] = beats[-1] + (grid[grid > idx[-1]] - idx[-1]) * period_end
    beat_times[grid < 0] = beats[0] + grid[grid < 0] * period_start

    onset = np.zeros((n_steps, N_PITCHES), np.uint8)
    sustain = np.zeros((n_steps, N_PITCHES), np.uint8)
    acc_onset = np.zeros((n_steps, N_PITCHES), np.uint8)
    acc_sustain = np.zeros((n_steps, N_PITCHES), np.uint8)
    melody_pitch = np.full(n_steps, -1, np.int16)
    melody_onset = np.zeros(n_steps, np.uint8)
    for inst in pm.instruments:
        if inst.is_drum or not inst.notes:
            continue
        is_melody = inst is melody
        starts = np.array([n.start for n in inst.notes])
        ends = np.array([n.end for n in inst.notes])
        s = np.round((_beat_position(starts, beats) - origin_beat) * STEPS_PER_BEAT).astype(np.int64)
        e = np.round((_beat_position(ends, beats) - origin_beat) * STEPS_PER_BEAT).astype(np.int64)
        e = np.maximum(e, s + 1)
        order = np.argsort(s, kind="stable")  # melody: a later note cuts the one before
        for i in order:
            note, a, b = inst.notes[i], s[i], min(e[i], n_steps)
            if a < 0 or a >= n_steps:
                continue
            onset[a, note.pitch] = max(onset[a, note.pitch], note.velocity)
            sustain[a + 1:b, note.pitch] = 1
            if is_melody:
                melody_pitch[a:b] = note.pitch
                melody_onset[a] = 1
            else:
                acc_onset[a, note.pitch] = 1
                acc_sustain[a + 1:b, note.pitch] = 1
    sustain[onset > 0] = 0  # an onset step is an onset, not a sustain (re-struck notes)
    acc_sustain[acc_onset > 0] = 0

    def fit(a: np.ndarray, fill) -> np.ndarray:
        if len(a) >= n_beats:
            return a[:n_beats]
        pad = np.repeat(np.asarray(fill, a.dtype)[None], n_beats - len(a), axis=0)
        return np.concatenate([a, pad.reshape((-1,) + a.shape[1:])])

    key_file = tdir / "analyzed_key.txt"
    tonic, mode = parse_key(key_file.read_text().split()[0]) if key_file.exists() else (0, 0)
    bpm = 60.0 / float(np.median(np.diff(beat_times)))
    return Song(song_id, onset, sustain, beat_times, fit(roots, -1), fit(chromas, np.zeros(12, np.uint8)),
                fit(basses, -1), tonic, mode, phrases, bpm, melody_pitch, melody_onset, acc_onset, acc_sustain)


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
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return out_path


def default_cache_path(pop909_dir: str | Path) -> Path:
    import hashlib

    tag = hashlib.sha256(str(Path(pop909_dir).resolve()).encode()).hexdigest()[:12]
    return user_cache_dir("pop909") / f"grid-v{CACHE_VERSION}-{tag}.npz"
