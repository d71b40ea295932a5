"""Guidance sweep on 8 validation songs (bars 9-24): density rho, chord-tone ratio, PCHE, density ratio.

    .venv/bin/python scripts/guidance_sweep.py MODEL.safetensors
"""
import sys, numpy as np, torch
torch.set_num_threads(1)
from bgmgen.pop909 import load_song
from bgmgen.generate import load_music_model, generate_from_controls
from bgmgen import controls as C
from bgmgen.splits import VALID_SONGS
from scipy.stats import spearmanr
m = load_music_model(sys.argv[1])
songs = VALID_SONGS[:8]
data = [load_song('../shared/datasets/pop909','../shared/datasets/pop909-structure',s) for s in songs]
for g, groups in [(1.0, None), (2.0, None), (2.0, ('rhythm',)), (3.0, ('rhythm',)), (4.0, ('rhythm',))]:
    res = []
    for s in data:
        ctl = s.controls().slice(32, 32+64)
        roll = generate_from_controls(m, ctl, seed=0, steps=50, guidance=g, guide_groups=groups)
        d,_,_ = C.rhythm_from_onsets(roll[0])
        on = roll[0] > 0
        st, p = np.nonzero(on); b = st // 4
        has = ctl.chord_root[b] >= 0
        ctr = ctl.chord_chroma[b[has], p[has] % 12].mean()
        hist = np.bincount(p % 12, minlength=12) / max(1, len(p)); pche = -(hist * np.log2(hist + 1e-6)).sum()
        res.append((spearmanr(d, ctl.density).correlation, ctr, pche, d.mean() / max(ctl.density.mean(), 1e-6)))
    r = np.nanmean(np.array(res), 0)
    print(g, groups, 'rho %.3f ctr %.3f pche(16bar) %.3f density ratio %.2f' % tuple(r), flush=True)
