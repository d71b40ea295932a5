"""Synthesise test videos with ffmpeg's lavfi sources (no files from ../shared are copied).

    from media import make_video          # (tests run with --import-mode=importlib; see conftest)
    make_video(tmp / "a.mp4", duration=4, cuts=[1.5, 3.0], moving=[False, True, False])

Each shot is a flat colour field with a static grid (distinct per shot, so every planted cut is a hard
cut); a "moving" shot adds a bright square that sweeps across the picture. The container follows the
file suffix: .mp4/.mov (H.264 + AAC), .mkv (H.264 + Vorbis), .webm (VP9 + Opus), .h264 (raw Annex B
stream: no container, no duration header, no audio).

For the stages after the analysis, `analysis_for(duration, cuts, motion)` builds a real `VideoAnalysis`
(with a real `VideoInfo`, `video_info`) without decoding anything: the tests use the real dataclasses.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Sequence

import numpy as np

from bgmgen.video.probe import VideoInfo
from bgmgen.video.result import VideoAnalysis

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


# ------------------------------------------------------------------ analysis results without a video

MOTION_FPS = 25  # motion samples per second in `analysis_for`


def video_info(path: str | Path = "video.mp4", duration: float = 4.0, **fields) -> VideoInfo:
    """The VideoInfo probe() gives for a 320x180, 25 fps H.264 MP4 without audio; `fields` override."""
    base = {"path": str(path), "duration_s": float(duration), "fps": 25.0, "n_frames": round(duration * 25),
            "width": 320, "height": 180, "rotation": 0, "has_audio": False, "audio_channels": 0,
            "video_codec": "h264", "audio_codec": None, "container": "mov,mp4,m4a,3gp,3g2,mj2",
            "start_time_s": 0.0, "coded_width": 320, "coded_height": 180}
    return VideoInfo(**{**base, **fields})


def motion_times(duration: float) -> np.ndarray:
    """The motion sample times `analysis_for` uses (MOTION_FPS per second from 0)."""
    return np.arange(0, duration, 1 / MOTION_FPS)


def analysis_for(
    duration: float,
    cuts: Sequence[float] = (),
    motion: float | Sequence[float] = 0.5,
    *,
    motion_abs: float | Sequence[float] | None = None,
    onsets: Sequence[tuple[float, float]] = ((1.0, 0.9),),
    mood_scores: dict[str, float] | None = None,
    mood_source: str = "test",
    path: str | Path = "video.mp4",
) -> VideoAnalysis:
    """A real VideoAnalysis of a `duration`-second video with hard cuts at `cuts`, as the analysis
    would return it without CLIP or BLIP.

    motion: the 0..1 curve at `motion_times(duration)`, or one level throughout; motion_abs: the
    absolute energy (default 10 * motion). One shot per cut interval, its keyframe time in the middle.
    Frozen, like every analysis: change a field with dataclasses.replace."""
    times = motion_times(duration)
    level = np.broadcast_to(np.asarray(motion, dtype=np.float64), times.shape).copy()
    energy = 10 * level if motion_abs is None else np.broadcast_to(np.asarray(motion_abs, np.float64),
                                                                    times.shape).copy()
    cuts = [float(c) for c in cuts]
    shots = list(zip([0.0, *cuts], [*cuts, float(duration)]))
    return VideoAnalysis(
        info=video_info(path, duration),
        cuts_s=cuts,
        shots=shots,
        motion_times_s=times,
        motion=level,
        motion_abs=energy,
        onsets=[(float(t), float(s)) for t, s in onsets],
        keyframe_times_s=[(a + b) / 2 for a, b in shots],
        picture_stats=[{"brightness": 0.5, "saturation": 0.5, "warmth": 0.0} for _ in shots],
        clip_embeddings=None,
        clip_times_s=None,
        captions=None,
        caption_embeddings=None,
        mood_scores=dict(mood_scores if mood_scores is not None else {"happy": 0.7, "calm": 0.3}),
        mood_source=mood_source,
    )


# ------------------------------------------------------------------ scenes with a known energy

SCENES = ("still", "pan", "cuts", "bounce")


def make_scene(path: str | Path, kind: str, *, duration: float = 6.0, size: tuple[int, int] = (320, 180),
               fps: float = 25, period: float = 0.6, cut_every: float = 0.5) -> Path:
    """A clip whose energy is known, from ffmpeg's testsrc2 picture (detailed, colourful):
    still   one frame held (a still photograph);
    pan     the camera drifts slowly (one pixel a frame: 25 px/s at 320 px) across a soft (blurred, like
            a landscape) picture three times as wide;
    cuts    hard cuts every `cut_every` seconds between still shots (make_video's grid shots);
    bounce  a white ball (a quarter of the height) bouncing on a still background, touching the floor every `period` seconds
            (height |sin(pi t / period)|: fastest at each bounce, still at the top)."""
    path = Path(path)
    w, h = size
    if kind == "cuts":
        cuts = list(np.arange(cut_every, duration - 1e-6, cut_every).round(4))
        return make_video(path, duration=duration, size=size, fps=fps, cuts=cuts, moving=False)
    base = ["ffmpeg", "-v", "error", "-nostdin", "-y"]
    # the picture: one frame of testsrc2 written as a PNG and looped (a static, constant-rate stream)
    wide = 3 * w if kind == "pan" else w
    picture = path.with_name(f".{path.stem}-picture.png")
    subprocess.run([*base, "-f", "lavfi", "-i", f"testsrc2=s={wide}x{h}:r={fps}", "-frames:v", "1", str(picture)],
                   check=True, capture_output=True)
    inputs = ["-loop", "1", "-framerate", f"{fps}", "-t", f"{duration:.3f}", "-i", str(picture)]
    if kind == "still":
        graph = "[0:v]null"
    elif kind == "pan":
        graph = f"[0:v]boxblur=6,crop={w}:{h}:x='n':y=0"
    elif kind == "bounce":
        ball = max(8, h // 4)
        inputs += ["-f", "lavfi", "-i", f"color=c=white:s={ball}x{ball}:r={fps}:d={duration:.3f}"]
        graph = (f"[0:v][1:v]overlay=x={w // 2 - ball // 2}:"
                 f"y='{h - ball - 4}-{h * 0.6:.1f}*abs(sin(PI*t/{period}))':shortest=1")
    else:
        raise ValueError(f"kind must be one of {SCENES}")
    try:
        subprocess.run([*base, *inputs, "-filter_complex", graph + ",format=yuv420p[v]", "-map", "[v]",
                        "-c:v", "libx264", "-preset", "ultrafast", "-t", f"{duration:.3f}", str(path)],
                       check=True, capture_output=True)
    finally:
        picture.unlink(missing_ok=True)
    return path
