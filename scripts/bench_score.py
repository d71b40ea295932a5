#!/usr/bin/env python3
"""Benchmark `bgmgen score` on a 60 s 720p video: wall time per stage and peak memory.

    .venv/bin/python scripts/bench_score.py                 # synthesises a 60 s 1280x720 30 fps clip
    .venv/bin/python scripts/bench_score.py --video my.mp4  # or any video
    .venv/bin/python scripts/bench_score.py --runs 3        # median of several runs (fresh process each)
    .venv/bin/python scripts/bench_score.py --content camera  # noisy camera-like content, ~9 Mbit/s
    .venv/bin/python scripts/bench_score.py --content real    # real footage: a test clip looped to 60 s
    .venv/bin/python scripts/bench_score.py --content real --duration 600  # ... or to 10 minutes
    .venv/bin/python scripts/bench_score.py --video my.mp4 --runs 4 --against HEAD~1  # paired A/B

Each run is a fresh `bgmgen score --no-cache --force --quiet` process (offline default path: the
analysis cache is bypassed so every stage really runs), measured from outside: wall time of the whole
command (imports and model loading included), the per-stage timings it records in run.json, and the
peak resident memory of the bgmgen process (ru_maxrss of the child; ffmpeg children are reported
separately). Targets on the project's 2-core machine: a 60 s clip in 11 s, a 10-minute one in 120 s.

`--against REV` checks REV out into a temporary git worktree and alternates runs of it and of this
checkout (REV first in odd pairs, this checkout first in even ones), so that the machine's drift,
which is large on shared 2-core machines, falls on both alike. It prints every run (wall, CPU, peak
RSS, the main stages, cuts, the MIDI's sha256) and the median of each side and of the paired
differences.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def make_bench_video(path: Path, duration: float = 60.0, size=(1280, 720), fps: int = 30) -> Path:
    """60 s, 720p: 12 shots of 5 s with hard cuts, alternating still and moving, pink-noise speech-like
    sound on half of it (so the duck path is exercised)."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from media import make_video  # the tests' lavfi generator

        n = 12
        cuts = [duration * i / n for i in range(1, n)]
        return make_video(path, duration=duration, size=size, fps=fps, cuts=cuts, audio="speech")
    finally:
        sys.path.pop(0)


REAL_FOOTAGE = REPO.parent / "shared" / "testvideos" / "pyscenedetect_testvideo_cuts_fades.mp4"
# The wall-time targets, by clip length (s): a 60 s clip in 11 s, a 10-minute one in 120 s.
WALL_TARGETS_S = {60: 11.0, 600: 120.0}


def make_real_footage(path: Path, source: Path = REAL_FOOTAGE, duration: float = 60.0) -> Path:
    """Real footage (default: PySceneDetect's 1280x720 29.97 fps test clip, 24 s of live action with
    hard cuts and fades) looped to `duration` seconds and re-encoded to H.264 (x264 CRF 20, yuv420p),
    so the decoder sees real picture content rather than test patterns."""
    if not source.is_file():
        raise SystemExit(f"bench: {source}: not found; pass --source with a real clip")
    cmd = ["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", f"file:{source}", "-t", f"{duration:g}",
           "-an", "-c:v", "libx264", "-preset", "medium", "-crf", "20", "-pix_fmt", "yuv420p",
           f"file:{path}"]
    subprocess.run(cmd, check=True)
    return path


def bgmgen_cmd() -> list[str]:
    exe = REPO / ".venv" / "bin" / "bgmgen"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("bgmgen")
    return [found] if found else [sys.executable, "-m", "bgmgen"]


def one_run(video: Path, out: Path, extra: list[str], tree: Path | None = None) -> dict:
    """Run one scoring process; return wall time, child peak RSS and run.json timings. tree: run the
    bgmgen package of that source tree (first on PYTHONPATH) instead of the installed one."""
    command = [sys.executable, "-m", "bgmgen"] if tree else bgmgen_cmd()
    cmd = [*command, "score", str(video), "--out", str(out), "--no-cache", "--force", "--quiet", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    if tree:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # wait4 gives the rusage of exactly this child (its own peak RSS; ffmpeg grandchildren are not in it).
    # With a tree, from a folder holding no bgmgen: `python -m` puts the working folder first on sys.path.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=out.parent if tree else None)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stdout.close(), proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"bench: bgmgen score failed (exit {proc.returncode}):\n{stderr}")
    run = json.loads((out / video.stem / "run.json").read_text())
    midi = hashlib.sha256((out / video.stem / run["outputs"]["midi"]).read_bytes()).hexdigest()
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "timings": run["timings_s"], "midi_sha256": midi,
            "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "fallbacks": run.get("fallbacks", {}), "bpm": run["plan"].get("bpm"),
            "cuts": len(run["analysis"].get("cuts_s", [])), "duration_s": run["video"]["duration_s"],
            "parts_ahead": run["render"].get("parts_ahead", 0),
            "checks_during_generation": run["generation"].get("shot_checks_during_generation", 0),
            "composed_again": run["generation"].get("composed_again_after_shot_checks", False)}


FLOOR_CODE = """
import sys, time
import decord
t0 = time.perf_counter()
vr = decord.VideoReader(sys.argv[1], width=96, height=54, num_threads=2)
for i in range(0, len(vr), 64):
    vr.get_batch(list(range(i, min(len(vr), i + 64))))
print(time.perf_counter() - t0)
"""


def decode_floor(video: Path) -> float:
    """Seconds to decode every frame at 96x54 with decord alone (two decoder threads, the fastest it
    goes here; the pipeline's pass uses one, beside the shot detector), in a fresh process: the floor
    under any analysis of every frame."""
    out = subprocess.run([sys.executable, "-c", FLOOR_CODE, str(video)], check=True, capture_output=True,
                         text=True)
    return float(out.stdout.strip().splitlines()[-1])


def source_tree(rev: str, parent: Path) -> Path:
    """A detached git worktree of `rev` under `parent` (removed by drop_source_tree)."""
    tree = parent / "against"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(tree), rev], check=True)
    found = subprocess.run([sys.executable, "-c", "import bgmgen; print(bgmgen.__file__)"], check=True, cwd=parent,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)}).stdout
    if not Path(found.strip()).resolve().is_relative_to(tree.resolve()):
        drop_source_tree(tree)
        raise SystemExit(f"bench: PYTHONPATH={tree} still imports bgmgen from {found.strip()}")
    return tree


def drop_source_tree(tree: Path) -> None:
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=False)


def paired(video: Path, work: Path, rev: str, pairs: int, extra: list[str]) -> int:
    """Alternate runs of `rev` and of this checkout; print each run, the medians and the paired differences."""
    tree = source_tree(rev, work)
    sides = {rev: tree, "this checkout": REPO}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    try:
        for i in range(pairs):
            for name in (list(sides) if i % 2 == 0 else list(sides)[::-1]):
                r = one_run(video, work / "out", extra, sides[name])
                runs[name].append(r)
                t = r["timings"]
                print(f"{name[:14]:14s} wall {r['wall_s']:7.2f}  CPU {r['cpu_s']:7.2f}  RSS {r['peak_rss_mb']:5.0f} MB  "
                      + "  ".join(f"{k} {t.get(k, 0.0):.2f}" for k in ("analysis", "generate", "render", "mux"))
                      + f"  cuts {r['cuts']}  MIDI {r['midi_sha256'][:12]}", flush=True)
    finally:
        drop_source_tree(tree)
    print(f"\nvideo: {video.name}, {pairs} pair(s)")
    for name, rs in runs.items():
        walls = " / ".join(f"{r['wall_s']:.2f}" for r in rs)
        print(f"{name[:14]:14s} median wall {statistics.median(r['wall_s'] for r in rs):7.2f} s  "
              f"CPU {statistics.median(r['cpu_s'] for r in rs):7.2f} s  runs {walls}")
    old, new = runs.values()
    diff = statistics.median(b["wall_s"] - a["wall_s"] for a, b in zip(old, new))
    print(f"median paired difference (this checkout - {rev}): {diff:+.2f} s wall")
    same = {r["midi_sha256"] for rs in runs.values() for r in rs}
    print("MIDI: the same bytes in every run" if len(same) == 1 else f"MIDI: {len(same)} different files")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, help="video to score (default: a synthesised 60 s 720p clip)")
    ap.add_argument("--content", choices=("patterns", "camera", "real"), default="patterns",
                    help="synthesised clip: lavfi test patterns with sound (cheap to decode), "
                         "camera-like noisy content at ~9 Mbit/s (bench_analysis.py's clip; decodes ~3x slower), "
                         "or real footage (--source looped to --duration)")
    ap.add_argument("--source", type=Path, default=REAL_FOOTAGE, help="the clip --content real loops")
    ap.add_argument("--duration", type=float, default=60.0, help="length of the --content real clip (s)")
    ap.add_argument("--floor", action="store_true",
                    help="also time the decode floor: every frame at 96x54 with decord alone")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--against", metavar="REV",
                    help="alternate --runs pairs of runs of git revision REV and of this checkout")
    ap.add_argument("extra", nargs="*", help="extra `bgmgen score` flags (after --)")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bgmgen-bench-"))
    try:
        video = args.video
        if video is None:
            t0 = time.perf_counter()
            if args.content == "camera":
                sys.path.insert(0, str(REPO / "scripts"))
                from bench_analysis import make_bench_video as make_camera_video

                video = make_camera_video(work / "camera60.mp4")
            elif args.content == "real":
                video = make_real_footage(work / f"real{args.duration:g}.mp4", args.source, args.duration)
            else:
                video = make_bench_video(work / "bench60.mp4")
            print(f"made {video} in {time.perf_counter() - t0:.1f} s")
        if args.against:
            return paired(video.resolve(), work, args.against, args.runs, args.extra)
        runs = []
        for _ in range(args.runs):
            runs.append(one_run(video.resolve(), work / "out", args.extra))
            if args.floor:
                runs[-1]["floor_s"] = decode_floor(video.resolve())
            run = runs[-1]
            print(f"run {len(runs)}: wall {run['wall_s']:.2f} s, CPU {run['cpu_s']:.2f} s"
                  + (f", decode floor {run['floor_s']:.2f} s ({run['wall_s'] / run['floor_s']:.2f}x)" if args.floor else ""),
                  flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    stages = [k for k in runs[0]["timings"] if k != "total"]
    med = lambda key: statistics.median(r["timings"].get(key, 0.0) for r in runs)  # noqa: E731
    print(f"\nvideo: {video.name}, {runs[0]['duration_s']:.1f} s, {runs[0]['cuts']} cuts found, "
          f"{runs[0]['bpm']} BPM; {len(runs)} run(s), median shown")
    print(f"{'stage':34s} {'seconds':>8s}")
    for key in stages:
        print(f"{key:34s} {med(key):8.2f}")
    print(f"{'pipeline total (run.json)':34s} {med('total'):8.2f}")
    wall = statistics.median(r["wall_s"] for r in runs)
    target = WALL_TARGETS_S.get(round(runs[0]["duration_s"]))
    print(f"{'wall, whole command':34s} {wall:8.2f}" + (f"   (target <= {target:g} s)" if target else ""))
    if args.floor:
        floor = statistics.median(r["floor_s"] for r in runs)
        ratio = statistics.median(r["wall_s"] / r["floor_s"] for r in runs)
        print(f"{'decode floor (decord 96x54 alone)':34s} {floor:8.2f}   wall / floor {ratio:.2f}x (target <= 4.5x)")
    print(f"{'CPU time (user+sys, all children)':34s} {statistics.median(r['cpu_s'] for r in runs):8.2f}")
    print(f"{'peak RSS of bgmgen (MB)':34s} {max(r['peak_rss_mb'] for r in runs):8.0f}")
    print(f"{'render parts synthesised ahead':34s} {' / '.join(str(r['parts_ahead']) for r in runs)}")
    print(f"{'shot checks during generation':34s} {' / '.join(str(r['checks_during_generation']) for r in runs)}"
          f"   (composed again: {' / '.join('yes' if r['composed_again'] else 'no' for r in runs)})")
    if runs[0]["fallbacks"]:
        print("fallbacks: " + "; ".join(f"{k}: {v}" for k, v in runs[0]["fallbacks"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
