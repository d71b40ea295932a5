"""Synthesise test videos with ffmpeg's lavfi sources (no files from ../shared are copied).

    from media import make_video          # (tests run with --import-mode=importlib; see conftest)
    make_video(tmp / "a.mp4", duration=4, cuts=[1.5, 3.0], moving=[False, True, False])

Each shot is a flat colour field with a static grid (distinct per shot, so every planted cut is a hard
cut); a "moving" shot adds a bright square that sweeps across the picture. The container follows the
file suffix: .mp4/.mov (H.264 + AAC), .mkv (H.264 + Vorbis), .webm (VP9 + Opus), .h264 (raw Annex B
stream: no container, no duration header, no audio).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Sequence

SHOT_COLOURS = ("0x2050a0", "0xc04020", "0x30a050", "0xd0c040", "0x8040b0", "0x40b0c0", "0x906030", "0x606060")

AUDIO_KINDS = ("none", "silent", "tone", "speech")


def _shot_lengths(duration: float, cuts: Sequence[float]) -> list[float]:
    edges = [0.0, *sorted(cuts), float(duration)]
    lengths = [b - a for a, b in zip(edges, edges[1:])]
    if any(x <= 0 for x in lengths):
        raise ValueError(f"cuts {cuts} do not fit in {duration} s")
    return lengths


def make_video(
    path: str | Path,
    *,
    duration: float = 4.0,
    size: tuple[int, int] = (320, 180),
    fps: float = 30,
    cuts: Sequence[float] = (),
    moving: Sequence[bool] | bool | None = None,
    audio: str = "none",
    audio_channels: int = 2,
    rotation: int | None = None,
    sar: str | None = None,
    speed: float = 1.0,
) -> Path:
    """Write a synthetic video and return its path.

    cuts: hard cut times in seconds. moving: per shot (or one bool for all); default: shots alternate
    static / moving, starting static. audio: none | silent | tone | speech (pink noise at a syllable
    rhythm). rotation: display rotation in degrees written as metadata (mp4/mov). sar: e.g. "4:3".
    speed: how fast the square moves (picture widths per second).
    """
    path = Path(path)
    if audio not in AUDIO_KINDS:
        raise ValueError(f"audio must be one of {AUDIO_KINDS}")
    lengths = _shot_lengths(duration, cuts)
    if moving is None:
        moving = [i % 2 == 1 for i in range(len(lengths))]
    elif isinstance(moving, bool):
        moving = [moving] * len(lengths)
    if len(moving) != len(lengths):
        raise ValueError("one `moving` flag per shot")
    w, h = size
    suffix = path.suffix.lower()
    args = ["ffmpeg", "-v", "error", "-nostdin", "-y"]
    graph = []
    n = len(lengths)
    for i, (length, mov) in enumerate(zip(lengths, moving)):
        colour = SHOT_COLOURS[i % len(SHOT_COLOURS)]
        args += ["-f", "lavfi", "-i", f"color=c={colour}:s={w}x{h}:r={fps}:d={length:.6f}"]
    box = max(4, min(w, h) // 4)
    args += ["-f", "lavfi", "-i", f"color=c=white:s={box}x{box}:r={fps}:d={duration:.6f}"]
    if any(moving):
        graph.append(f"[{n}:v]split={sum(moving)}" + "".join(f"[box{i}]" for i in range(sum(moving))))
    k = 0
    for i, (length, mov) in enumerate(zip(lengths, moving)):
        step = max(8, min(w, h) // (3 + i % 4))
        chain = f"[{i}:v]drawgrid=w={step}:h={step}:t=2:c=white@0.6"
        if mov:
            chain += (f"[g{i}];[g{i}][box{k}]overlay=x='mod(t*{speed}*{w},{w})':"
                      f"y='{h}/2-{box}/2+{h}/4*sin(t*6)':shortest=1")
            k += 1
        graph.append(chain + f",setpts=PTS-STARTPTS[v{i}]")
    concat = "".join(f"[v{i}]" for i in range(n))
    post = f"concat=n={n}:v=1:a=0,format=yuv420p"
    if sar:
        post += f",setsar={sar.replace(':', '/')}"
    graph.append(f"{concat}{post}[vout]")
    audio_input = n + 1
    if audio != "none" and suffix != ".h264":
        if audio == "silent":
            src = f"anullsrc=r=44100:cl={'mono' if audio_channels == 1 else 'stereo'}"
        elif audio == "tone":
            src = "sine=f=440:r=44100"
        else:
            src = "anoisesrc=c=pink:r=44100:a=0.4"
        args += ["-f", "lavfi", "-t", f"{duration:.6f}", "-i", src]
        achain = f"[{audio_input}:a]"
        if audio == "speech":
            achain += "volume='0.15+0.85*gt(sin(2*PI*4*t)+0.3*sin(2*PI*1.3*t),0.2)':eval=frame,"
        achain += f"aformat=channel_layouts={'mono' if audio_channels == 1 else 'stereo'}[aout]"
        graph.append(achain)
    args += ["-filter_complex", ";".join(graph), "-map", "[vout]"]
    if audio != "none" and suffix != ".h264":
        args += ["-map", "[aout]"]
    if suffix == ".webm":
        args += ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "400k",
                 "-c:a", "libopus"]
    elif suffix == ".h264":
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-f", "h264"]
    else:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-g", str(int(round(fps * 2)))]
        args += ["-c:a", "libvorbis" if suffix == ".mkv" else "aac"]
    out = path if rotation is None else path.with_name(f".norot-{path.name}")
    args += ["-t", f"{duration:.6f}", str(out)]
    subprocess.run(args, check=True, capture_output=True)
    if rotation is not None:
        # ffmpeg 5.1 keeps the rotate tag (as a display matrix) only when stream-copying.
        subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(out), "-map", "0", "-c", "copy",
                        "-metadata:s:v:0", f"rotate={rotation}", str(path)], check=True, capture_output=True)
        out.unlink()
    return path


def make_audio_only(path: str | Path, duration: float = 2.0) -> Path:
    path = Path(path)
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", f"sine=f=330:d={duration}",
                    str(path)], check=True, capture_output=True)
    return path


def pipe_to_mkv(src: str | Path, dst: str | Path) -> Path:
    """Remux through a pipe: the Matroska muxer cannot seek back, so no duration is written."""
    dst = Path(dst)
    with open(dst, "wb") as out:
        subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(src), "-c", "copy", "-f", "matroska",
                        "pipe:1"], check=True, stdout=out, stderr=subprocess.PIPE)
    return dst


def make_vfr(src: str | Path, dst: str | Path, after_s: float = 1.0) -> Path:
    """Variable frame rate, as phones and screen recorders write it: every second frame after
    `after_s` is dropped and the timestamps kept (30 fps, then 15 fps)."""
    dst = Path(dst)
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(src), "-vf",
                    f"select='lte(t\\,{after_s})+not(mod(n\\,2))'", "-fps_mode", "vfr", "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "copy", str(dst)],
                   check=True, capture_output=True)
    return dst
