#!/usr/bin/env python3
"""Benchmark `bgmgen score --ray local` against the one-process batch on the same clips.

    .venv/bin/python scripts/bench_ray.py                     # 10 clips of 8 s cut from examples/shots.mp4
    .venv/bin/python scripts/bench_ray.py --runs 3            # 3 rounds, the two modes in alternating order
    .venv/bin/python scripts/bench_ray.py --clips 20 --seconds 12 --source my.mp4 --json bench-ray.json

The clips are cut from --source at staggered start times and re-encoded (H.264), so each has its own content
(no analysis cache entry is shared). Each mode is a fresh `bgmgen score CLIPS --out DIR --no-cache --force
--quiet` process (plus `--ray local`), timed from outside: the wall time includes the imports, model loading
and, with --ray, starting Ray and its workers. The MIDI files of the two modes are compared byte for byte.
The machine's load (os.getloadavg) before and after each run is printed: other work on the cores makes
the figures meaningless, so say what else ran when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODES = {"one process": [], "--ray local": ["--ray", "local"]}


def make_clips(source: Path, folder: Path, count: int, seconds: float) -> list[Path]:
    """`count` clips of `seconds` each from `source`, starting at staggered times (looping the source)."""
    duration = float(subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", f"file:{source}"],
        check=True, capture_output=True, text=True).stdout.strip())
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(count):
        start = (i * duration / count) % max(duration - 0.5, 0.5)
        clip = folder / f"clip{i:02d}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-stream_loop", "-1", "-ss", f"{start:.3f}",
                        "-i", f"file:{source}", "-t", f"{seconds:g}", "-c:v", "libx264", "-preset", "veryfast",
                        "-crf", "20", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", f"file:{clip}"],
                       check=True)
        clips.append(clip)
    return clips


def bgmgen_command() -> list[str]:
    venv = REPO / ".venv" / "bin" / "bgmgen"
    return [str(venv)] if venv.exists() else [sys.executable, "-m", "bgmgen"]


def run_mode(mode: str, clips_dir: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*bgmgen_command(), "score", str(clips_dir), "--out", str(out), "--no-cache", "--force", "--quiet",
           *MODES[mode]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench: {mode} exited {proc.returncode}: {proc.stderr[-2000:]}")
    per_file = [json.loads(run.read_text())["timings_s"]["total"] for run in sorted(out.glob("*/run.json"))]
    return {"mode": mode, "wall_s": round(wall, 2), "files": len(per_file),
            "per_file_total_s": round(sum(per_file), 2), "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()]}


def same_midi(out_a: Path, out_b: Path) -> bool:
    mids = sorted(p.relative_to(out_a) for p in out_a.glob("*/*.mid"))
    return bool(mids) and all((out_a / m).read_bytes() == (out_b / m).read_bytes() for m in mids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=REPO / "examples" / "shots.mp4", help="video to cut from")
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each clip")
    parser.add_argument("--runs", type=int, default=1, help="rounds; the order of the modes alternates")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        work = Path(tmp)
        clips = make_clips(args.source, work / "clips", args.clips, args.seconds)
        print(f"{len(clips)} clips of {args.seconds:g} s from {args.source.name}; {os.cpu_count()} CPUs, "
              f"{platform.processor() or platform.machine()}", flush=True)
        results = []
        for run in range(args.runs):
            order = list(MODES) if run % 2 == 0 else list(reversed(MODES))
            outs = {}
            for mode in order:
                outs[mode] = work / f"out-{run}-{mode.strip('-').replace(' ', '-')}"
                result = run_mode(mode, work / "clips", outs[mode])
                results.append(result)
                print(f"run {run + 1} {mode:>12}: {result['wall_s']:7.2f} s wall for {result['files']} files "
                      f"(sum of per-file totals {result['per_file_total_s']:.1f} s; load average before "
                      f"{result['load_before'][0]:.2f}, after {result['load_after'][0]:.2f})", flush=True)
            print(f"run {run + 1}: MIDI byte-identical between the modes: {same_midi(*outs.values())}", flush=True)
        for mode in MODES:
            walls = [r["wall_s"] for r in results if r["mode"] == mode]
            print(f"{mode:>12}: median {statistics.median(walls):.2f} s over {len(walls)} run(s): {walls}")
        if args.json:
            args.json.write_text(json.dumps({"clips": len(clips), "seconds": args.seconds,
                                             "source": str(args.source), "runs": results}, indent=2))


if __name__ == "__main__":
    main()
