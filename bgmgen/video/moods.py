"""The mood vocabulary that binds video semantics to music-side controls.

A mood is chosen from the video (captions / CLIP / low-level picture statistics, see
semantic.py) or given by the user (`--mood`). The planner reads the musical side of the
table: mode, tempo range, register, density and the chord progressions it draws from.
Chords are (semitones above the tonic, quality) and quality names follow QUALITY_INTERVALS.
"""

from __future__ import annotations

from dataclasses import dataclass

QUALITY_INTERVALS: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "sus4": (0, 5, 7),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "7": (0, 4, 7, 10),
}


@dataclass(frozen=True)
class Mood:
    name: str
    descriptions: tuple[str, ...]  # sentences a caption or CLIP text embedding is compared with
    mode: str  # "major" or "minor"
    bpm_range: tuple[float, float]  # the planner fits the tempo inside this range when it can
    register: float  # mean MIDI pitch of the notes, the "register" control
    density_scale: float  # multiplies the motion-derived onset density (1 = as measured)
    progressions: tuple[tuple[tuple[int, str], ...], ...]  # chord loops, one chord per bar by default
    chords_per_bar: int = 1


MOODS: dict[str, Mood] = {
    m.name: m
    for m in (
        Mood(
            "calm",
            ("a calm and peaceful scene", "a quiet landscape with still water", "slow gentle nature"),
            "major", (66, 84), 62.0, 0.7,
            (((0, "maj"), (9, "min"), (5, "maj"), (7, "maj")),
             ((5, "maj"), (0, "maj"), (7, "maj"), (9, "min")),
             ((0, "maj"), (5, "maj"), (9, "min"), (7, "maj"))),
        ),
        Mood(
            "happy",
            ("a happy cheerful day", "people smiling and having fun", "a bright sunny celebration"),
            "major", (92, 116), 65.0, 1.0,
            (((0, "maj"), (7, "maj"), (9, "min"), (5, "maj")),
             ((0, "maj"), (5, "maj"), (7, "maj"), (0, "maj")),
             ((5, "maj"), (7, "maj"), (4, "min"), (9, "min"))),
        ),
        Mood(
            "energetic",
            ("fast action and sport", "an energetic exciting moment", "people running, jumping and dancing"),
            "major", (108, 132), 66.0, 1.3,
            (((9, "min"), (5, "maj"), (0, "maj"), (7, "maj")),
             ((0, "maj"), (7, "maj"), (9, "min"), (5, "maj"))),
            2,
        ),
        Mood(
            "melancholic",
            ("a sad and lonely moment", "rain on a grey city street", "an empty room at night"),
            "minor", (64, 80), 60.0, 0.75,
            (((0, "min"), (8, "maj"), (3, "maj"), (10, "maj")),
             ((0, "min"), (5, "min"), (8, "maj"), (7, "maj"))),
        ),
        Mood(
            "tense",
            ("a dark and tense scene", "danger and suspense", "a dramatic chase in the dark"),
            "minor", (96, 124), 58.0, 1.15,
            (((0, "min"), (8, "maj"), (5, "min"), (7, "maj")),
             ((0, "min"), (1, "maj"), (0, "min"), (7, "7"))),
        ),
        Mood(
            "dreamy",
            ("a dreamy soft memory", "a romantic evening with warm light", "floating clouds and a sunset"),
            "major", (70, 90), 67.0, 0.8,
            (((0, "maj7"), (5, "maj7"), (9, "min7"), (7, "maj")),
             ((5, "maj7"), (4, "min7"), (2, "min7"), (0, "maj7"))),
        ),
    )
}

DEFAULT_MOOD = "calm"
