"""POP909's text annotations, parsed: keys, chord labels, chord files and phrase labels.

Pure text -> numbers; nothing here knows about beat grids or MIDI (bgmgen.data.pop909 places the
per-beat arrays on the song's grid).

- ``analyzed_key.txt`` (pop909-structure): ``Gb:maj`` -> :func:`parse_key`.
- ``finalized_chord.txt`` (pop909-structure, one line per chord, durations in beats from the
  folder's time 0): ``C:maj/3 [0, 4, 7] 0 2`` -> :func:`parse_structure_chords`.
- ``chord_midi.txt`` (POP909, start and end in seconds, Harte labels): ``0.0 1.5 B:maj`` ->
  :func:`parse_chord_midi` (labels read by :func:`parse_chord_label`).
- ``human_label1.txt`` / ``human_label2.txt`` (pop909-structure): ``i4A4B8`` -> :func:`parse_phrases`.
"""

from __future__ import annotations

import re

import numpy as np

PITCH_CLASSES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
# Scale degrees of chord labels (slash basses, added and removed tones), in semitones above the
# root before accidentals: "b7" -> 10, "#4" -> 6, "bb7" -> 9, "9" -> 2.
DEGREES = {"1": 0, "2": 2, "3": 4, "4": 5, "5": 7, "6": 9, "7": 11, "9": 2, "11": 5, "13": 9}
# Harte chord qualities -> intervals above the root (semitones).
QUALITIES = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8),
    "sus2": (0, 2, 7), "sus4": (0, 5, 7), "maj7": (0, 4, 7, 11), "min7": (0, 3, 7, 10),
    "7": (0, 4, 7, 10), "dim7": (0, 3, 6, 9), "hdim7": (0, 3, 6, 10), "minmaj7": (0, 3, 7, 11),
    "maj6": (0, 4, 7, 9), "min6": (0, 3, 7, 9), "9": (0, 4, 7, 10, 2), "maj9": (0, 4, 7, 11, 2),
    "min9": (0, 3, 7, 10, 2), "11": (0, 4, 7, 10, 2, 5), "13": (0, 4, 7, 10, 2, 9),
    "min11": (0, 3, 7, 10, 2, 5), "1": (0,), "5": (0, 7),
}


def parse_pitch_class(name: str) -> int:
    """'Gb' -> 6, 'C#' -> 1, 'Bbb' -> 9."""
    pc = PITCH_CLASSES[name[0]]
    for accidental in name[1:]:
        pc += {"#": 1, "b": -1}[accidental]
    return pc % 12


def parse_degree(text: str) -> int:
    """Scale degree -> semitones above the root, mod 12: 'b7' -> 10, '#4' -> 6, '9' -> 2.
    Raises KeyError for anything else."""
    s = text.strip()
    shift = 0
    while s and s[0] in "b#":
        shift += -1 if s[0] == "b" else 1
        s = s[1:]
    return (DEGREES[s] + shift) % 12


def parse_key(label: str) -> tuple[int, int]:
    """'Gb:maj' -> (tonic pitch class 6, mode 0); mode 1 = minor."""
    tonic, _, quality = label.strip().partition(":")
    return parse_pitch_class(tonic), int(quality.startswith("min"))


_CHORD_LINE = re.compile(r"^(\S+)\s+\[([\d,\s]*)\]\s+(-?\d+)\s+(\d+)")


def parse_structure_chords(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """finalized_chord.txt -> per-beat (root [n] int8, chroma [n, 12] uint8, bass [n] int8).

    Root and bass -1 = no chord (an ``N`` label or no chord tones). The bass of a slash chord
    (``C:maj/3``) is its degree above the root; an unreadable degree leaves the bass on the root.
    Lines that do not match ``LABEL [TONES] ROOT BEATS`` are skipped.
    """
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
                try:
                    bass = (root + parse_degree(name.rsplit("/", 1)[1])) % 12
                except KeyError:
                    pass
        roots += [root] * beats
        chromas += [chroma] * beats
        basses += [bass] * beats
    return np.array(roots, np.int8), np.array(chromas, np.uint8).reshape(-1, 12), np.array(basses, np.int8)


_HARTE = re.compile(r"^([A-G])([b#]*):?([^(/]*)(\(([^)]*)\))?(/(.+))?$")


def parse_chord_label(label: str) -> tuple[int, np.ndarray] | None:
    """Harte-style label (``B:maj``, ``C#:min7/b7``, ``G:sus4(b7)``) -> (root pc, 12-bit chroma).

    The chroma holds the chord tones plus the bass note (as mir_eval.chord.encode does).
    ``N`` / ``X`` (no chord) -> None. Unknown qualities fall back to the triad of the label's
    first letters (maj if it cannot be read).
    """
    label = label.strip()
    if not label or label in ("N", "X"):
        return None
    m = _HARTE.match(label)
    if m is None:
        return None
    root = parse_pitch_class(m.group(1) + m.group(2))
    quality = m.group(3) or "maj"
    ivs = set(QUALITIES.get(quality, QUALITIES["min"] if quality.startswith("min") else QUALITIES["maj"]))
    if m.group(5):
        for ext in m.group(5).split(","):
            ext = ext.strip()
            if ext.startswith("*"):
                ivs.discard(parse_degree(ext[1:]))
            elif ext:
                ivs.add(parse_degree(ext))
    if m.group(7):
        ivs.add(parse_degree(m.group(7)))
    chroma = np.zeros(12, dtype=bool)
    chroma[[(root + i) % 12 for i in ivs]] = True
    return root, chroma


def parse_chord_midi(text: str) -> list[tuple[float, float, int, np.ndarray]]:
    """chord_midi.txt (``start_s end_s label`` per line, tab or space separated) -> the chords as
    (start_s, end_s, root pc, chroma [12] bool); no-chord labels and short lines are left out."""
    out = []
    for line in text.splitlines():
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 3:
            continue
        parsed = parse_chord_label(parts[2])
        if parsed is not None:
            out.append((float(parts[0]), float(parts[1]), parsed[0], parsed[1]))
    return out


def parse_phrases(label: str) -> list[tuple[str, int]]:
    """'i4A4B8' -> [('i', 4), ('A', 4), ('B', 8)]: phrase letters and their lengths in bars."""
    return [(letter, int(bars)) for letter, bars in re.findall(r"([A-Za-z])(\d+)", label)]
