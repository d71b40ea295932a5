"""`bgmgen sample`: whole POP909 songs regenerated from their own controls (the evaluation path).

For each song id: read the song on its grid (pop909.load_song), take its per-beat controls
(rhythm, chords, key, register, phrases of the first annotator), generate a roll of the song's
length with chained windows, and write `<out>/<id>.mid` at the song's own tempo (median beat
period), beat 0 = the song's first bar line (pop909-structure's time 0). `bgmgen eval` compares
these files with the reference songs beat by beat.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bgmgen.music.generate import SamplerSettings

SAMPLER = SamplerSettings()


@dataclass(frozen=True)
class SampleOptions:
    data: str
    structure: str
    songs: str = "test"
    out: str = "runs/samples"
    seed: int = 0
    model: str | None = None
    steps: int = SAMPLER.steps
    guidance: float | None = None  # on guide_groups (None: the model family's, as for guide_groups)
    guide_groups: tuple[str, ...] | None = None  # the control groups guidance amplifies (None: the model family's)
    loose_groove: bool = False  # True: the groove is only a condition, not imposed (the model's own rhythm)
    device: str = "cpu"
    precision: str | None = None  # fp32 | int8 (default: int8 on CPU)
    max_bars: int | None = None  # generate only the first N bars of each song (quick checks)
    order: str = SAMPLER.order  # v3 models: unmasking order, "confidence" or "random"
    temperature: float = SAMPLER.temperature  # v3 models: softmax temperature of the draws


def write_song_midi(roll, controls, bpm: float, path: Path) -> list[tuple[int, int, int]]:
    """A (2, T, 128) roll on a song's grid -> `path` at the song's tempo, velocities from its accents, as
    `bgmgen eval` expects them; the notes written."""
    from bgmgen.music.midi import note_velocities, notes_to_midi, roll_to_notes, write_midi

    notes = roll_to_notes(roll)
    accent = controls.accent / max(1.0, float(controls.accent.max()))
    write_midi(notes_to_midi(notes, note_velocities(notes, accent), bpm), path)
    return notes


def sample_songs(o: SampleOptions, log=print) -> dict:
    from bgmgen.core.errors import InputError
    from bgmgen.data import pop909
    from bgmgen.data.splits import resolve_songs
    from bgmgen.music.generate import generate_from_controls, load_music_model
    pop909.check_dataset_dirs(o.data, o.structure)
    model = load_music_model(o.model, o.device, o.precision)
    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = SamplerSettings.with_overrides(
        model.denoiser.architecture, steps=o.steps, guidance=o.guidance, guide_groups=o.guide_groups,
        strict_groove=not o.loose_groove, order=o.order, temperature=o.temperature)
    report = {"options": asdict(o), "sampler": settings.to_json(),
              "model": {"path": model.path, "sha256": model.sha256, "precision": model.precision,
                        "convolutions": model.convolutions}, "songs": {}}
    for sid in resolve_songs(o.songs):
        t0 = time.time()
        try:
            song = pop909.load_song(o.data, o.structure, sid)
        except (InputError, OSError, ValueError, KeyError) as err:
            log(f"{sid}: skipped ({err})")
            report["songs"][sid] = {"skipped": str(err)}
            continue
        ctl = song.controls()
        if o.max_bars:
            ctl = ctl.slice(0, o.max_bars * 4)
        roll = generate_from_controls(model, ctl, seed=o.seed, **asdict(settings))
        notes = write_song_midi(roll, ctl, song.bpm, out / f"{sid}.mid")
        report["songs"][sid] = {"bars": len(ctl) // 4, "bpm": round(song.bpm, 3), "notes": len(notes),
                                "seconds": round(time.time() - t0, 2)}
        log(f"{sid}: {len(ctl) // 4} bars, {len(notes)} notes, {time.time() - t0:.1f} s")
    (out / "sample.json").write_text(json.dumps(report, indent=1))
    return report
