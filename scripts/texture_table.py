"""Texture realism of `bgmgen sample` output against real POP909 songs (bgmgen.eval.realism).

`bgmgen eval GENERATED --data ... --realism` runs the same report beside the metrics; this script
adds the choice of the baseline side and of the seed / repeats.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/texture_table.py --generated runs/samples \
        --songs 001,002,...  --data ../shared/datasets/pop909 \
        --structure ../shared/datasets/pop909-structure [--json texture.json]

Sides:
- generated: GENERATED/<id>.mid for the --songs ids (missing files are listed and skipped).
- real (label 0): --real-songs (default: the validation songs that are not generated songs).
- real B (real-vs-real baseline): the ground truth of the generated songs themselves
  (--baseline-songs to change; must be disjoint from the real side; "none" to skip).
Prints the per-feature table (means, OA) and the C2ST accuracies; --json writes the report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bgmgen.core.jsonio import dump_json
from bgmgen.data.splits import resolve_songs
from bgmgen.eval.notes import read_midi_notes
from bgmgen.eval.realism import default_real_songs, print_report, read_real_songs, realism_report


def _read_real(ids, data, structure) -> dict:
    songs, missing = read_real_songs(data, ids, structure)
    for sid in missing:
        print(f"warning: {Path(data) / sid}/{sid}.mid missing, skipped", file=sys.stderr)
    return songs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--generated", required=True, help="folder of <id>.mid from `bgmgen sample`")
    p.add_argument("--songs", default="test", help="generated song ids: test | valid | 001,002,...")
    p.add_argument("--real-songs", default=None,
                   help="real side (default: validation songs not among --songs)")
    p.add_argument("--baseline-songs", default=None,
                   help="real-vs-real baseline side (default: the --songs ids' ground truth; "
                        "'none' to skip)")
    p.add_argument("--data", required=True, help="POP909 folder")
    p.add_argument("--structure", default=None, help="pop909-structure folder (recommended)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5, help="C2ST repetitions (fold assignments)")
    p.add_argument("--json", default=None, help="write the report here")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    gen_ids = resolve_songs(args.songs)
    gdir = Path(args.generated)
    generated, missing = {}, []
    for sid in gen_ids:
        f = gdir / f"{sid}.mid"
        if f.exists():
            generated[sid] = read_midi_notes(f)
        else:
            missing.append(sid)
    if not generated:
        p.error(f"{gdir}: none of the songs has a <id>.mid")
    if missing:
        print(f"missing generated songs (skipped): {', '.join(missing)}", file=sys.stderr)

    real_ids = resolve_songs(args.real_songs) if args.real_songs else default_real_songs(gen_ids)
    if args.baseline_songs and args.baseline_songs.lower() == "none":
        base_ids = None
    elif args.baseline_songs:
        base_ids = resolve_songs(args.baseline_songs)
    else:
        base_ids = sorted(generated)
    if base_ids is not None and set(base_ids) & set(real_ids):
        overlap = sorted(set(base_ids) & set(real_ids))
        print(f"baseline songs also on the real side, dropped from the real side: {overlap}",
              file=sys.stderr)
        real_ids = [s for s in real_ids if s not in set(base_ids)]
    real = _read_real(real_ids, args.data, args.structure)
    baseline = _read_real(base_ids, args.data, args.structure) if base_ids is not None else None

    report = realism_report(generated, real, baseline, seed=args.seed, repeats=args.repeats)
    report["settings"].update(generated_dir=str(gdir), missing=missing)
    print(f"generated: {len(generated)} songs from {gdir}; real: {len(real)} songs; "
          f"real B: {len(baseline) if baseline is not None else 0} songs")
    print_report(report)
    print(f"({time.perf_counter() - t0:.1f} s)")
    if args.json:
        dump_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
