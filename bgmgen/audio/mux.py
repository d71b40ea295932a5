"""mux: video + rendered music WAV -> MP4 with ffmpeg (graphs built with ffmpeg-python).

Modes:
  replace  the music is the only audio (the original audio is dropped);
  keep     the music is mixed under the original audio at a fixed lower level;
  duck     the music is compressed with the original audio as the side chain (it steps aside while the
           original has sound) and then mixed with the original.

The video stream is copied when MP4 can hold it (H.264, HEVC, MPEG-4 Part 2, AV1); anything else
(VP8, VP9, Theora, ProRes ...) is re-encoded to H.264 with a fast preset and the result says so.
Copying keeps the display matrix (a portrait phone video stays portrait); re-encoding applies the
rotation to the pixels. The output lasts as long as the input video (`-t duration`), timestamps
start at 0 even when the input's do not (ffmpeg shifts by the input start time; the original audio
is re-aligned with aresample's first_pts).

The command is an ffmpeg-python graph: the audio through its filter API (`ffmpeg.filter`, `amix`,
`sidechaincompress`, `alimiter` ...), the re-encode's even-size scale as the video stream's own `-vf`
(a filter_complex output would drop the stream's metadata). `bgmgen.core.ffmpeg` compiles it to an
argument list (no shell) and passes every file as a `file:` URL.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import ffmpeg

from bgmgen.core.constants import SAMPLE_RATE
from bgmgen.core.errors import BgmgenError, InputError
from bgmgen.core.ffmpeg import FFmpegError, file_url, input_file, probe, run
from bgmgen.core.files import atomic_path
from bgmgen.core.mp4 import read_movie

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from bgmgen.video.probe import VideoInfo

MODES = ("replace", "keep", "duck")
MP4_COPYABLE_VIDEO = {"h264", "hevc", "mpeg4", "av1"}
AUDIBLE_MEAN_DBFS = -50.0  # volumedetect mean above this = the original has sound worth keeping

MUSIC_GAIN_DB = {"replace": 0.0, "keep": -8.0, "duck": -3.0}  # music level relative to its -16 LUFS render
# Side-chain compression for duck: RMS detection on the original audio (threshold -40 dBFS); about 9 dB of
# reduction for speech at -30 dBFS RMS, 17 dB at -20 dBFS; quick attack, slow release so the music does not pump.
DUCK = {"threshold": 0.01, "ratio": 8, "attack": 20, "release": 600, "knee": 2.82843, "detection": "rms"}
OUTPUT_LIMIT = 0.891  # -1 dBFS sample-peak ceiling on the mix (a peak limiter, not loudness normalisation)
# "fast" AAC coder: 0.77 s instead of 1.24 s for 60 s here, SNR 28.9 vs 29.3 dB against the WAV at 192 kbit/s.
# Without intensity stereo (which drops the high bands' stereo detail) and the mid/side decision: a
# 10-minute render encodes in 4.6 s instead of 6.1 s (60 s: 0.60 instead of 0.72 s), the same size, and
# decodes closer to the WAV: SNR 32.6 -> 42.0 dB, side channel 30.5 -> 41.7 dB (2026-12-07).
AUDIO_CODEC = {"c:a": "aac", "aac_coder": "fast", "aac_is": 0, "aac_ms": 0, "b:a": "192k"}
REENCODE_VIDEO = {"c:v": "libx264", "preset": "veryfast", "crf": 20, "pix_fmt": "yuv420p"}
# Re-encode: autorotate (ffmpeg's default) turns the pixels upright; x264 with 4:2:0 needs even sizes. The
# video stream's own filter (-vf): as a filter_complex output it would lose its metadata (e.g. language).
EVEN_SIZE = "scale=trunc(iw/2)*2:trunc(ih/2)*2"
CHECK_TIMEOUT_S = 60  # ffprobe of the written file


def _written(path: Path) -> tuple[float | None, set[str]]:
    """The duration and the stream kinds ("video", "audio" ...) of the MP4 just written: from its movie
    header, read in-process (core.mp4; ffprobe took 0.06-0.13 s at the end of every score and reports
    the same duration), else from ffprobe."""
    movie = read_movie(path)
    if movie is not None:
        return movie.duration_s, set(movie.kinds)
    try:
        data = probe(path, timeout=CHECK_TIMEOUT_S, what="checking the written file")
    except FFmpegError:
        return None, set()
    dur = data.get("format", {}).get("duration")
    return (float(dur) if dur not in (None, "N/A") else None), {s.get("codec_type") for s in data.get("streams", [])}


def audio_is_audible(video_path, info: VideoInfo) -> bool:
    """True when the first audio stream has a mean volume above AUDIBLE_MEAN_DBFS (volumedetect).

    Digital silence (about -91 dB) and near-silent tracks count as not audible."""
    if not info.has_audio:
        return False
    graph = (input_file(video_path)["a:0"].filter("volumedetect")
             .output("-", format="null", vn=None, sn=None, dn=None))
    proc = run(graph, name=video_path, what="measuring the original audio level")
    match = re.search(r"mean_volume:\s*(-?[\d.]+|-?inf)\s*dB", proc.stderr)
    if not match:  # no decodable audio frames
        return False
    return float(match.group(1)) > AUDIBLE_MEAN_DBFS


def _as_stereo(audio, *, align: bool):
    if align:
        # async=1 with first_pts=0 pads the start when the original audio begins after the video
        # (timestamps are already shifted so the file starts at 0) and keeps later gaps filled.
        audio = audio.filter("aresample", SAMPLE_RATE, **{"async": 1, "first_pts": 0})
    return audio.filter("aformat", sample_fmts="fltp", sample_rates=SAMPLE_RATE, channel_layouts="stereo")


def _mix(original, music):
    return ffmpeg.filter([original, music], "amix", inputs=2, duration="longest", dropout_transition=0, normalize=0)


def _audio_graph(video_in, wav_in, mode: str, gain_db: float):
    """The output audio stream for `mode`: the music (input 1) alone, or mixed with the original (input 0)."""
    music = _as_stereo(wav_in["a:0"], align=False).filter("volume", f"{gain_db:.2f}dB")
    if mode == "keep":
        music = _mix(_as_stereo(video_in["a:0"], align=True), music)
    elif mode == "duck":
        split = _as_stereo(video_in["a:0"], align=True).filter_multi_output("asplit")
        side_chain = split.stream(1).filter("apad")  # padded: the music never stops when the original ends
        ducked = ffmpeg.filter([music, side_chain], "sidechaincompress", **DUCK)
        music = _mix(split.stream(0), ducked)
    return music.filter("alimiter", limit=OUTPUT_LIMIT, level="disabled", latency=1)


def _write(video_path: Path, wav_path: Path, tmp: Path, name: str, mode: str, video_args: dict,
           duration: float) -> None:
    video_in, wav_in = input_file(video_path), input_file(wav_path)
    graph = ffmpeg.output(
        video_in["V:0"], _audio_graph(video_in, wav_in, mode, MUSIC_GAIN_DB[mode]), file_url(tmp), format="mp4",
        **video_args, **AUDIO_CODEC, ar=SAMPLE_RATE, ac=2, t=f"{duration:.6f}", map_metadata=0, map_chapters=-1,
        movflags="+faststart", max_muxing_queue_size=4096)
    run(graph, name=video_path, what=f"writing {name} (mix {mode})", overwrite=True)


def mux(video_path, wav_path, out_path, info: VideoInfo, mode: str) -> dict:
    """Write `out_path` (MP4): the video of `video_path` with the music of `wav_path` mixed per `mode`.

    Returns {"mode", "mode_used", "video_copied", "video_codec", "note", "music_gain_db", "duration_s",
    "mux_s"}. `mode_used` is "replace" when keep/duck was asked for a video without an audio stream."""
    t0 = time.perf_counter()
    if mode not in MODES:
        raise InputError(f"{video_path}: unknown mix mode {mode!r}; use one of {', '.join(MODES)}")
    video_path, wav_path, out_path = Path(video_path), Path(wav_path), Path(out_path)
    if not wav_path.is_file():
        raise InputError(f"{wav_path}: music WAV not found; run the render stage first")
    if out_path.resolve() == video_path.resolve():
        raise InputError(f"{out_path}: the output would overwrite the input video; choose another output folder")
    mode_used = mode if info.has_audio else "replace"
    notes = []
    if mode_used != mode:
        notes.append(f"--mix {mode} needs an original audio stream; the video has none, so the music replaces it")
    duration = float(info.duration_s)
    codec = (info.video_codec or "").lower()
    copy_video = codec in MP4_COPYABLE_VIDEO
    if copy_video:
        video_args = {"c:v": "copy"}
        if codec == "hevc":
            video_args["tag:v"] = "hvc1"  # the tag Apple players require for HEVC in MP4
        out_codec = codec
    else:
        video_args = {**REENCODE_VIDEO, "fps_mode": "vfr", "vf": EVEN_SIZE}
        out_codec = "h264"
        notes.append(f"video re-encoded from {codec or 'unknown codec'} to H.264 (MP4 cannot carry it as is)")
    with atomic_path(out_path) as tmp:
        try:
            _write(video_path, wav_path, tmp, out_path.name, mode_used, video_args, duration)
        except BgmgenError as err:
            if mode_used == "replace":
                raise
            # The original audio exists but cannot be decoded or mixed: the music alone still gives
            # the user a scored video, and the note says why their sound is missing.
            reason = str(err).split(": ", 2)[-1]
            notes.append(f"original audio could not be mixed ({reason[:120]}); music only")
            mode_used = "replace"
            _write(video_path, wav_path, tmp, out_path.name, mode_used, video_args, duration)
        out_duration, kinds = _written(tmp)
        if "video" not in kinds or "audio" not in kinds:
            raise BgmgenError(f"{video_path}: ffmpeg wrote {out_path.name} without "
                              f"{'video' if 'video' not in kinds else 'audio'}; rerun with --debug and report it")
    if out_duration is not None and abs(out_duration - duration) > 0.1:
        notes.append(f"output lasts {out_duration:.3f} s, input {duration:.3f} s")
    return {
        "mode": mode,
        "mode_used": mode_used,
        "video_copied": copy_video,
        "video_codec": out_codec,
        "audio_codec": "aac",
        "music_gain_db": MUSIC_GAIN_DB[mode_used],
        "duration_s": out_duration,
        "note": "; ".join(notes) or None,
        "mux_s": round(time.perf_counter() - t0, 3),
    }
