"""probe: what a video file is, read with ffprobe before any decoding.

`probe(path) -> VideoInfo`. Every way a file can be unusable ends in an `InputError` with one line:
missing, a folder, empty, not media at all, audio only, or a video stream that yields no frame.

Duration: container header, else the video stream's header, else counted packets (containers such as
raw .h264 or a piped mkv carry no duration). Frame rate: the stream's average rate (robust to variable
frame rate and to the 0/0 that some containers report), else its nominal rate, else packets / duration.
Display size: coded size, times the sample aspect ratio, swapped for a quarter-turn rotation (from the
display-matrix side data, else the legacy `rotate` tag).

Both tools run through `bgmgen.core.ffmpeg`: ffprobe's JSON as ffmpeg-python's `ffmpeg.probe` asks for
it (`core.ffmpeg.probe`, with a timeout), the first-frame check as an ffmpeg-python graph. The file is
always passed as a `file:` URL, so a name that starts with a dash or a protocol is read as a file.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import threading
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from bgmgen.core.errors import InputError
from bgmgen.core.ffmpeg import FFmpegError, FFmpegTimeout, input_file, run
from bgmgen.core.ffmpeg import probe as ffprobe

PROBE_TIMEOUT_S = 120
FIRST_FRAME_TIMEOUT_S = 60


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration_s: float  # best estimate: container, else stream, else counted packets
    fps: float  # average frame rate
    n_frames: int  # header count, else an estimate (duration * fps)
    width: int  # DISPLAY size after rotation and SAR
    height: int
    rotation: int  # degrees, as stored (0, 90, 180, 270, -90 ...)
    has_audio: bool
    audio_channels: int
    video_codec: str
    audio_codec: str | None
    container: str
    start_time_s: float
    coded_width: int = 0  # size of the decoded picture before rotation and SAR
    coded_height: int = 0
    variable_frame_rate: bool = False  # nominal and average rates disagree
    duration_source: str = "container"  # container | stream | packets

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def quarter_turns(self) -> int:
        """Counter-clockwise quarter turns (np.rot90 k) that make a decoded frame upright."""
        return (round(self.rotation / 90) % 4) if self.rotation else 0


def _rate(text: str | None) -> float:
    """'30000/1001' -> 29.97; '0/0', '', None -> 0.0."""
    if not text:
        return 0.0
    try:
        value = float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


def _float(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) else 0.0


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            try:
                return int(round(float(side["rotation"])))
            except (TypeError, ValueError):
                pass
    tag = (stream.get("tags") or {}).get("rotate")
    if tag is not None:
        try:
            # The legacy tag is clockwise; the display matrix (above) is counter-clockwise.
            return -int(round(float(tag)))
        except ValueError:
            pass
    return 0


def _sar(stream: dict) -> float:
    text = stream.get("sample_aspect_ratio") or "1:1"
    try:
        num, den = (int(x) for x in text.split(":"))
    except ValueError:
        return 1.0
    return num / den if num > 0 and den > 0 else 1.0


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def _count_packets(path: str) -> tuple[int, float]:
    """(packet count, last packet end time in s) of the first video stream, read without decoding."""
    try:
        data = ffprobe(path, timeout=PROBE_TIMEOUT_S, what="counting its video packets", select_streams="v:0",
                       show_entries="packet=pts_time,dts_time,duration_time")
    except FFmpegTimeout:
        raise
    except FFmpegError:
        return 0, 0.0
    n, end = 0, 0.0
    for packet in data.get("packets") or []:  # a value ffprobe has not (N/A) is left out of the JSON
        n += 1
        t = _float(packet.get("pts_time")) or _float(packet.get("dts_time"))
        end = max(end, t + _float(packet.get("duration_time")))
    return n, end


def _first_frame_decodes(path: str) -> bool:
    """Whether ffmpeg can turn the first video stream into at least one picture."""
    graph = (input_file(path)["v:0"].filter("scale", 16, 16)
             .output("pipe:1", format="rawvideo", pix_fmt="gray", **{"frames:v": 1}))
    proc = run(graph, name=path, what="decoding its first frame", timeout=FIRST_FRAME_TIMEOUT_S, check=False,
               loglevel="error")
    return len(proc.stdout) >= 16 * 16


PROBES_KEPT = 256
_probes: dict[tuple, concurrent.futures.Future] = {}  # (path, size, mtime_ns) -> the probe's future
_probes_lock = threading.Lock()


def probe(path) -> VideoInfo:
    """VideoInfo of `path`, or an InputError; memoised per (path, size, mtime) within the process (a
    probe under way in another thread, such as video.scan_ahead's, is waited for, not run again)."""
    try:
        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = None
    if stamp is None or not os.path.isfile(path):
        return _probe(path)
    key = (str(path), *stamp)
    with _probes_lock:
        future = _probes.get(key)
        mine = future is None
        if mine:
            future = _probes[key] = concurrent.futures.Future()
            while len(_probes) > PROBES_KEPT:
                _probes.pop(next(iter(_probes)))
    if mine:
        try:
            future.set_result(_probe(path))
        except BaseException as err:  # noqa: BLE001 - re-raised by every probe() waiting for it
            with _probes_lock:  # an error is not remembered: the next call probes again
                if _probes.get(key) is future:
                    del _probes[key]
            future.set_exception(err)
    return future.result()


def _probe(path) -> VideoInfo:
    p = Path(path)
    name = str(p)
    if not p.exists():
        raise InputError(f"{name}: no such file; check the path")
    if p.is_dir():
        raise InputError(f"{name}: is a folder, not a video file")
    try:
        size = p.stat().st_size
    except OSError as err:
        raise InputError(f"{name}: cannot be read ({err.strerror}); check its permissions") from None
    if size == 0:
        raise InputError(f"{name}: is empty (0 bytes); give a video file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{name}: cannot be read (permission denied); check its permissions")

    try:
        data = ffprobe(name, timeout=PROBE_TIMEOUT_S)
    except FFmpegTimeout:
        raise
    except FFmpegError:
        data = {}
    fmt = data.get("format") or {}
    streams = data.get("streams") or []
    if not fmt:
        raise InputError(f"{name}: not a video file ffprobe can read; give an mp4, mov, mkv or webm video")

    videos = [s for s in streams if s.get("codec_type") == "video"
              and not (s.get("disposition") or {}).get("attached_pic")]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not videos:
        what = "audio-only file" if audios else "no video stream"
        raise InputError(f"{name}: has no video stream ({what}); give a video file")
    v = videos[0]
    a = audios[0] if audios else None

    coded_w, coded_h = int(v.get("width") or 0), int(v.get("height") or 0)
    if coded_w <= 0 or coded_h <= 0:
        raise InputError(f"{name}: the video stream has no picture size; the file is damaged")
    rotation = _rotation(v)
    sar = _sar(v)
    disp_w, disp_h = coded_w * sar, float(coded_h)
    if sar != 1.0:
        disp_w, disp_h = _even(disp_w), coded_h
    if (round(rotation / 90) % 2) == 1:
        disp_w, disp_h = disp_h, disp_w

    avg = _rate(v.get("avg_frame_rate"))
    nominal = _rate(v.get("r_frame_rate"))
    # Some muxers write absurd nominal rates (e.g. 1000/1 for VFR in mkv); sanity-bound them.
    if nominal > 240:
        nominal = 0.0
    vfr = bool(avg and nominal and abs(avg - nominal) / nominal > 0.01)

    duration = _float(fmt.get("duration"))
    source = "container"
    if duration <= 0:
        duration = _float(v.get("duration"))
        source = "stream"
    n_frames = int(_float(v.get("nb_frames")))
    fps = avg or nominal
    if duration <= 0 or fps <= 0:
        n_packets, end = _count_packets(name)
        if n_packets == 0:
            raise InputError(f"{name}: the video stream holds no frames; the file is damaged")
        if duration <= 0:
            # Raw streams (.h264) carry no timestamps: then only count / rate is meaningful.
            counted = n_packets / fps if fps > 0 else 0.0
            duration = end if end >= 0.9 * counted else counted
            source = "packets"
        if fps <= 0:
            fps = n_packets / duration if duration > 0 else 25.0
        n_frames = n_frames or n_packets
    if duration <= 0 and n_frames and fps:
        duration, source = n_frames / fps, "packets"
    if duration <= 0:
        raise InputError(f"{name}: the video's duration cannot be determined; the file is damaged")
    if not n_frames:
        n_frames = max(1, int(round(duration * fps)))
    if n_frames <= 1:  # a photo (png, jpeg: image2 / *_pipe "video"), or a one-frame clip
        raise InputError(f"{name}: holds a single picture ({v.get('codec_name') or 'unknown codec'}), not a moving "
                         "video; give a video file")

    if not _first_frame_decodes(name):
        raise InputError(f"{name}: the video stream has no decodable frames; the file is damaged")

    start = _float(fmt.get("start_time")) or _float(v.get("start_time"))
    return VideoInfo(
        path=name,
        duration_s=round(duration, 6),
        fps=round(fps, 6),
        n_frames=int(n_frames),
        width=int(round(disp_w)),
        height=int(round(disp_h)),
        rotation=rotation,
        has_audio=a is not None,
        audio_channels=int(a.get("channels") or 0) if a else 0,
        video_codec=str(v.get("codec_name") or "unknown"),
        audio_codec=str(a.get("codec_name")) if a else None,
        container=str(fmt.get("format_name") or "unknown"),
        start_time_s=round(start, 6),
        coded_width=coded_w,
        coded_height=coded_h,
        variable_frame_rate=vfr,
        duration_source=source,
    )
