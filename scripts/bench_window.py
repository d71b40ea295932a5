"""Time one guided 8-bar window (the default sampler: 25 steps, a batched guided pair per step).

    .venv/bin/python scripts/bench_window.py [--model PATH ...] [--precision int8 ...] [--threads 1]
        [--repeats 7] [--fp32-convolutions] [--profile]

Every configuration (each model x precision; with --fp32-convolutions also int8 with the convolutions
left in fp32) is loaded once and the runs alternate between them (1st of each, 2nd of each, ...), so a
machine whose speed drifts affects all alike. Prints the median, min and max wall time per window and
the median ratio to the first configuration, paired run by run. --profile adds the torch profiler's top
operators for each configuration (one run).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def bench_controls():
    """32 beats of fixed controls: a four-chord loop, two phrases, a half-filled groove."""
    from bgmgen.music import controls as C

    n = 32
    return C.BeatControls(
        density=np.full(n, 5.0), positions=np.full(n, 2.5), accent=np.full(n, 3.0),
        chord_root=np.repeat([0, 9, 5, 7], 8), chord_chroma=np.zeros((n, 12), np.uint8),
        chord_bass=np.repeat([0, 9, 5, 7], 8), key_tonic=np.zeros(n, np.int64), key_mode=np.zeros(n),
        register=np.full(n, 62.0), phrase_id=np.repeat([0, 1], 16), phrase_pos=np.tile(np.linspace(0, 1, 16), 2),
        melodic=np.ones(n), groove=np.tile([1, 0, 1, 0], (n, 1)).astype(np.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="music model file (repeatable; default: the shipped one)")
    ap.add_argument("--precision", action="append", choices=("int8", "fp32"), help="repeatable; default int8")
    ap.add_argument("--fp32-convolutions", action="store_true",
                    help="also int8 with the convolutions in fp32 (what CPUs without bf16 arithmetic run)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (bgmgen score samples with 1)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the sampler's)")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from bgmgen.music.generate import DEFAULT_STEPS, generate_from_controls, load_music_model

    steps = a.steps or DEFAULT_STEPS
    ctl = bench_controls()
    configs = {}
    for path in a.model or [None]:
        for precision in a.precision or ["int8"]:
            model = load_music_model(path, "cpu", precision)
            configs[f"{path or 'shipped'} {precision} (convolutions {model.convolutions})"] = model
            if a.fp32_convolutions and precision == "int8" and model.convolutions != "fp32":
                configs[f"{path or 'shipped'} int8 (convolutions fp32)"] = load_music_model(
                    path, "cpu", "int8", convolutions="fp32")
    for model in configs.values():
        generate_from_controls(model, ctl, seed=0, steps=3)  # warm-up
    times = {name: [] for name in configs}
    for r in range(a.repeats):
        for name, model in configs.items():
            t = time.perf_counter()
            generate_from_controls(model, ctl, seed=r, steps=steps)
            times[name].append(time.perf_counter() - t)
    first = next(iter(times.values()))
    print(f"one window, {steps} guided steps, {a.threads} thread(s), {a.repeats} alternated runs each:")
    for name, ts in times.items():
        ratio = statistics.median(b / f for f, b in zip(first, ts))
        print(f"  {name}: median {statistics.median(ts):.3f} s (min {min(ts):.3f}, max {max(ts):.3f}); "
              f"{1000 * statistics.median(ts) / steps:.1f} ms per guided pair; x{ratio:.3f} of the first, paired")
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, model in configs.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                generate_from_controls(model, ctl, seed=0, steps=steps)
            print(name)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


if __name__ == "__main__":
    main()
