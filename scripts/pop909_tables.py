#!/usr/bin/env python
"""Recompute the POP909 statistics that bgmgen/plan.py carries as constants (a command, not a test).

    .venv/bin/python scripts/pop909_tables.py --data ../shared/datasets/pop909 --structure ../shared/datasets/pop909-structure

Reads the training songs from the grid cache (built on first use) and prints, per beat of 16th
notes (controls.rhythm_from_onsets / groove_from_onsets):
  * POP909_DENSITY_RANGE: the 5th and 95th percentile of onsets per beat;
  * POP909_POSITIONS_BY_DENSITY / POP909_ACCENT_BY_DENSITY: mean distinct onset positions and mean
    most-simultaneous onsets for each density 0..12;
  * POP909_BAR_GROOVES: for each number of onset sixteenths per bar (1..16), the three most common
    one-bar grooves (which of the 16 sixteenths hold an onset), with their share of those bars;
  * POP909_TEMPO_RANGE: the 10th and 95th percentile of the songs' tempi (BPM);
  * POP909_BAR_ONSETS_RANGE: the 5th and 95th percentile of onset sixteenths per bar;
  * POP909_NOTES_PER_S_RANGE: the 5th and 95th percentile of the songs' mean notes per second;
  * POP909_NOTES_PER_ONSET_BY_SIXTEENTH: mean notes per onset at each sixteenth of the bar.
plan.py keeps the printed values, so scoring a video never needs the dataset.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--structure", required=True)
    a = ap.parse_args()

    from bgmgen.core.constants import BEATS_PER_BAR, STEPS_PER_BAR
    from bgmgen.data import pop909, splits
    from bgmgen.music import controls as C

    cache = pop909.default_cache_path(a.data)
    if not cache.exists():
        pop909.build_cache(a.data, a.structure, cache)
    d = np.load(cache)
    train = set(splits.TRAIN_SONGS)
    density, positions, accent, grooves = [], [], [], Counter()
    tempi, notes_per_s, bar_onsets = [], [], []
    per_sixteenth, onsets_at = np.zeros(STEPS_PER_BAR), np.zeros(STEPS_PER_BAR)
    for sid, so, nb, bpm in zip(d["song_id"], d["step_offset"], d["n_bars"], d["bpm"]):
        if str(sid) not in train:
            continue
        onset = d["onset"][so:so + nb * STEPS_PER_BAR]
        per_step = (onset > 0).sum(1).reshape(nb, STEPS_PER_BAR)
        tempi.append(float(bpm))
        notes_per_s.append(per_step.sum() / (nb * BEATS_PER_BAR) * float(bpm) / 60)
        bar_onsets.append((per_step > 0).sum(1))
        per_sixteenth += per_step.sum(0)
        onsets_at += (per_step > 0).sum(0)
        dn, ps, ac = C.rhythm_from_onsets(onset)
        density.append(dn)
        positions.append(ps)
        accent.append(ac)
        g = C.groove_from_onsets(onset).reshape(nb, BEATS_PER_BAR * 4).astype(int)
        grooves.update("".join(map(str, row)) for row in g)
    density, positions, accent = (np.concatenate(x) for x in (density, positions, accent))
    lo, hi = np.percentile(density, [5, 95])
    print(f"POP909_DENSITY_RANGE = ({lo:.1f}, {hi:.1f})")
    pos_by = [positions[density == k].mean() if (density == k).any() else 0.0 for k in range(13)]
    acc_by = [accent[density == k].mean() if (density == k).any() else 0.0 for k in range(13)]
    print("POP909_POSITIONS_BY_DENSITY = np.array([" + ", ".join(f"{v:.2f}" for v in pos_by) + "])")
    print("POP909_ACCENT_BY_DENSITY = np.array([" + ", ".join(f"{v:.2f}" for v in acc_by) + "])")
    by_bits: dict[int, Counter] = {}
    for pattern, count in grooves.items():
        by_bits.setdefault(pattern.count("1"), Counter())[pattern] = count
    print("POP909_BAR_GROOVES = {  # onset sixteenths per bar -> the most common one-bar grooves (share of those bars)")
    for bits in range(1, 17):
        top = by_bits.get(bits, Counter()).most_common(3)
        total = sum(by_bits.get(bits, Counter()).values())
        items = "".join(f'"{p}", ' for p, _ in top).rstrip(" ")
        shares = ", ".join(f"{c / total:.2f}" for _, c in top)
        print(f"    {bits}: ({items}),  # {shares}")
    print("}")
    t_lo, t_hi = np.percentile(tempi, [10, 95])
    print(f"POP909_TEMPO_RANGE = ({t_lo:.1f}, {t_hi:.1f})  # median {np.median(tempi):.0f}")
    b_lo, b_hi = np.percentile(np.concatenate(bar_onsets), [5, 95])
    print(f"POP909_BAR_ONSETS_RANGE = ({b_lo:.0f}, {b_hi:.0f})")
    n_lo, n_hi = np.percentile(notes_per_s, [5, 95])
    print(f"POP909_NOTES_PER_S_RANGE = ({n_lo:.1f}, {n_hi:.1f})")
    print("POP909_NOTES_PER_ONSET_BY_SIXTEENTH = np.array(["
          + ", ".join(f"{v:.2f}" for v in per_sixteenth / np.maximum(onsets_at, 1)) + "])")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
