"""Piano-roll pictures: generated 8-bar windows beside the real POP909 windows whose controls they follow.

    .venv/bin/python scripts/plot_rolls.py --data ../shared/datasets/pop909 \
        --structure ../shared/datasets/pop909-structure --songs 001,012,027 --out docs/rolls.png

Each row: one test song, bars 9-16 (after the intro). Left: the real music. Middle: what the model
generates from that window's own per-beat controls (rhythm and groove, chords, key, register,
phrases) with default sampling (the groove imposed). Right: the same with the groove only as a
condition, i.e. the model's own rhythm.
Onsets are dark, sustains light; the thin lines are bar lines.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--structure", required=True)
    ap.add_argument("--songs", default="001,012,027")
    ap.add_argument("--start-bar", type=int, default=8)
    ap.add_argument("--model", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: bgmgen.music.generate.DEFAULT_STEPS)")
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--out", default="docs/rolls.png")
    a = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bgmgen.core.constants import BEATS_PER_BAR, STEPS_PER_BAR, WINDOW_STEPS
    from bgmgen.music.generate import DEFAULT_STEPS, generate_from_controls, load_music_model

    a.steps = a.steps or DEFAULT_STEPS
    from bgmgen.data.pop909 import load_song

    model = load_music_model(a.model)
    songs = a.songs.split(",")
    fig, axes = plt.subplots(len(songs), 3, figsize=(18, 2.6 * len(songs)), squeeze=False)
    b0 = a.start_bar
    for row, sid in enumerate(songs):
        song = load_song(a.data, a.structure, sid)
        ctl = song.controls().slice(b0 * BEATS_PER_BAR, (b0 + 8) * BEATS_PER_BAR)
        s0 = b0 * STEPS_PER_BAR
        real = np.stack([song.onset[s0:s0 + WINDOW_STEPS] > 0, song.sustain[s0:s0 + WINDOW_STEPS] > 0]).astype(float)
        guidance = a.guidance  # None: the model family's default
        gen = generate_from_controls(model, ctl, seed=a.seed, steps=a.steps, guidance=guidance)
        loose = generate_from_controls(model, ctl, seed=a.seed, steps=a.steps, guidance=guidance, strict_groove=False)
        shown = sum(r[0].sum(0) + r[1].sum(0) for r in (real, gen, loose))
        for col, (roll, title) in enumerate(((real, f"POP909 {sid}, bars {b0 + 1}-{b0 + 8} (real)"),
                                             (gen, f"generated from its controls, groove imposed (default, seed {a.seed})"),
                                             (loose, "generated, groove only as a condition"))):
            img = roll[1] * 0.35 + roll[0]  # (T, 128)
            nz = np.nonzero(shown)[0]
            lo, hi = (max(0, nz.min() - 3), min(127, nz.max() + 3)) if len(nz) else (36, 96)
            ax = axes[row, col]
            ax.imshow(np.clip(img[:, lo:hi + 1].T, 0, 1), origin="lower", aspect="auto", cmap="Greys",
                      extent=(0, WINDOW_STEPS, lo - 0.5, hi + 0.5), vmin=0, vmax=1)
            for bar in range(1, 8):
                ax.axvline(bar * STEPS_PER_BAR, color="tab:blue", lw=0.4, alpha=0.5)
            ax.set_title(title, fontsize=9)
            ax.set_ylabel("MIDI pitch", fontsize=8)
            ax.set_xlabel("sixteenth steps", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
