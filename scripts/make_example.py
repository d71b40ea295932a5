#!/usr/bin/env python3
"""Make examples/shots.mp4: a 16 s, 640x360, 25 fps synthetic video with five shots and four hard cuts.

Every shot is an ffmpeg lavfi source, so the clip is ours to ship (nothing is copied from elsewhere),
and it alternates calm and busy pictures so the music has something to follow:

    0.0 -  3.2 s  gradients    slow colour drift          calm
    3.2 -  6.4 s  life         Game of Life, big cells    busy
    6.4 - 10.0 s  mandelbrot   steady zoom                moderate
   10.0 - 12.8 s  cellauto     scrolling automaton        busy
   12.8 - 16.0 s  smptebars    slow pan                   calm

No audio track: `bgmgen score` then replaces (there is no original sound to keep or duck under).
Deterministic (fixed seeds, one x264 thread, bitexact muxing). Usage:

    python3 scripts/make_example.py [OUT.mp4]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

W, H, FPS = 640, 360, 25
CUTS_S = (3.2, 6.4, 10.0, 12.8)
DURATION_S = 16.0

# (lavfi source, filters after it); each is trimmed to its shot length below.
SHOTS = (
    (f"gradients=s={W}x{H}:r={FPS}:c0=0x1d3557:c1=0xe9c46a:c2=0x2a9d8f:nb_colors=3:speed=0.006:seed=3", ""),
    (f"life=s=80x45:r={FPS}:random_seed=42:random_fill_ratio=0.3:mold=8:life_color=0xf4a261:death_color=0x264653:mold_color=0x2a9d8f",
     f"scale={W}:{H}:flags=neighbor"),
    (f"mandelbrot=s={W}x{H}:r={FPS}:start_scale=1.5:end_scale=0.1:end_pts=150:inner=mincol", ""),
    (f"cellauto=s=160x90:r={FPS}:rule=110:random_fill_ratio=0.5:random_seed=7:scroll=1",
     f"scale={W}:{H}:flags=neighbor,colorchannelmixer=rr=0.9:gg=0.5:bb=0.2"),
    (f"smptehdbars=s={W + 160}x{H}:r={FPS}", f"crop={W}:{H}:x='min(160,t*50)':y=0"),
)


def build_command(out: Path) -> list[str]:
    bounds = (0.0, *CUTS_S, DURATION_S)
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y"]
    chains = []
    for i, (source, filters) in enumerate(SHOTS):
        length = bounds[i + 1] - bounds[i]
        args += ["-f", "lavfi", "-i", source]  # endless sources; trim cuts each shot to length
        chain = ",".join(f for f in (filters, f"trim=duration={length:.3f}", "setpts=PTS-STARTPTS",
                                      "format=yuv420p", "setsar=1") if f)
        chains.append(f"[{i}:v]{chain}[s{i}]")
    joined = "".join(f"[s{i}]" for i in range(len(SHOTS)))
    graph = ";".join(chains) + f";{joined}concat=n={len(SHOTS)}:v=1:a=0[v]"
    args += ["-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-preset", "slow", "-crf", "30",
             "-threads", "1", "-g", "50", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
             "-fflags", "+bitexact", "-flags:v", "+bitexact", "-t", f"{DURATION_S:.3f}", str(out)]
    return args


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "examples" / "shots.mp4"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(build_command(out), check=True)
    print(f"{out} ({out.stat().st_size / 1e6:.2f} MB, {DURATION_S:g} s, cuts at {', '.join(f'{c:g}' for c in CUTS_S)} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
