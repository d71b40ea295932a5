"""Time one 8-bar window: 50 DDIM steps with guidance (a batched guided pair per step), fp32 and int8.

    .venv/bin/python scripts/bench_window.py [--model PATH] [--threads 2] [--repeats 5]

Prints the median wall time per window and the per-forward cost; says what dominates via the
torch profiler's top operators (one run).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: bgmgen.music.generate.DEFAULT_STEPS)")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from bgmgen.music import controls as C
    from bgmgen.music.generate import DEFAULT_STEPS, generate_from_controls, load_music_model

    a.steps = a.steps or DEFAULT_STEPS

    n = 32
    ctl = C.BeatControls(
        density=np.full(n, 5.0), positions=np.full(n, 2.5), accent=np.full(n, 3.0),
        chord_root=np.repeat([0, 9, 5, 7], 8), chord_chroma=np.zeros((n, 12), np.uint8),
        chord_bass=np.repeat([0, 9, 5, 7], 8), key_tonic=np.zeros(n, np.int64), key_mode=np.zeros(n),
        register=np.full(n, 62.0), phrase_id=np.repeat([0, 1], 16), phrase_pos=np.tile(np.linspace(0, 1, 16), 2),
        melodic=np.ones(n), groove=np.tile([1, 0, 1, 0], (n, 1)).astype(np.float32))
    for precision in ("fp32", "int8"):
        model = load_music_model(a.model, "cpu", precision)
        generate_from_controls(model, ctl, seed=0, steps=3)  # warm-up
        times = []
        for r in range(a.repeats):
            t = time.perf_counter()
            generate_from_controls(model, ctl, seed=r, steps=a.steps)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(f"{precision}: one window, {a.steps} guided steps, {a.threads} threads: median {med:.3f} s "
              f"(runs {', '.join(f'{x:.3f}' for x in times)}); {1000 * med / a.steps:.1f} ms per guided pair")
        if precision == "int8":
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                generate_from_controls(model, ctl, seed=0, steps=10)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
