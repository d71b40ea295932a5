"""Sample the test songs with one model and evaluate them (used for the model card and the ablations).

    .venv/bin/python scripts/eval_model.py --model runs/full/model.safetensors --out runs/eval/full \
        --data ../shared/datasets/pop909 --structure ../shared/datasets/pop909-structure [--max-bars 32]

Writes OUT/<id>.mid, OUT/sample.json and OUT/eval.json (bgmgen eval's JSON).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--structure", required=True)
    ap.add_argument("--songs", default="test")
    ap.add_argument("--max-bars", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: bgmgen.music.generate.DEFAULT_STEPS)")
    ap.add_argument("--guidance", type=float, default=None, help="default: bgmgen.music.generate.DEFAULT_GUIDANCE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default=None, help="fp32 | int8 (default: int8 on CPU)")
    ap.add_argument("--loose-groove", action="store_true", help="the groove conditions but is not imposed")
    ap.add_argument("--no-eval", action="store_true", help="sample only (e.g. one of several parallel shards)")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from bgmgen.eval.evaluate import run_eval
    from bgmgen.music.generate import DEFAULT_STEPS
    from bgmgen.training.sample import SampleOptions, sample_songs

    t0 = time.time()
    sample_songs(SampleOptions(data=a.data, structure=a.structure, songs=a.songs, out=a.out, seed=a.seed,
                               model=a.model, steps=a.steps or DEFAULT_STEPS, guidance=a.guidance, max_bars=a.max_bars, precision=a.precision,
                               loose_groove=a.loose_groove))
    t1 = time.time()
    if a.no_eval:
        print(f"sampling {t1 - t0:.0f} s")
        return
    run_eval(a.out, a.data, songs=a.songs, json_path=f"{a.out}/eval.json", structure_dir=a.structure)
    print(f"sampling {t1 - t0:.0f} s, eval {time.time() - t1:.0f} s")


if __name__ == "__main__":
    main()
