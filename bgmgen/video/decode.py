"""decode: stream a video's frames at the small sizes the analysers need, never all frames at full size.

Two passes, each bounded in memory:

* `scan_small(info, consumer_factory)`: every analysed frame at 96x54 RGB (coded orientation), in chunks
  of `CHUNK_FRAMES`, handed to a consumer (TransNetV2 input = 2x2 average -> 48x27, motion, picture
  statistics). Frame rates above `MAX_ANALYSIS_FPS` are subsampled by a whole step (60 -> 30 fps).
  decord 0.6 returns corrupt pictures at 48x27 (and other widths at height 27), so it decodes at 96x54
  and we average 2x2, which gives TransNetV2 the same cut list as its own ffmpeg path.
* `frames_at(info, scan, times, size)`: a few frames (keyframes, ~1 fps samples) at caption/CLIP sizes,
  upright. Rotation: the ffmpeg pipe autorotates. Whether decord applies the rotation metadata depends
  on its build (the decord 0.6.0 wheel here does; other builds are reported not to), so for a rotated
  file `decord_turns` compares decord's first frame with ffmpeg's upright one and the keyframes get
  whatever quarter turns are still missing. The all-frames pass needs no rotation: shot detection,
  motion and picture statistics do not depend on orientation.

The CLI begins the all-frames pass of its first video before the analysis asks for it
(scan_ahead.begin_scan); scan_small takes that pass's chunks instead of decoding again.

Backends: decord (fast, in-process) and, when decord cannot open a file (some webm/mkv) or fails in
the middle of a damaged stream, an ffmpeg rawvideo pipe, which decodes what can be decoded: its graph
(input, fps / select / scale filters, raw RGB output) is built with ffmpeg-python and run by
`bgmgen.core.ffmpeg.pipe` (argument list, no shell, the file as a `file:` URL). Variable-frame-rate
files go through the pipe with an `fps` filter so that frame i is at i / fps exactly. A stream where
almost nothing decodes is an `InputError`; a partly damaged one is analysed for what decodes, with a
warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import numpy as np

from bgmgen.core.errors import InputError
from bgmgen.core.ffmpeg import input_file, pipe
from bgmgen.video.probe import VideoInfo
from bgmgen.video.scan_ahead import drop_scan, take_scan

SCAN_W, SCAN_H = 96, 54  # decode size of the all-frames pass (2x2 -> TransNetV2's 48x27)
MAX_ANALYSIS_FPS = 30.0  # frame rates above this are subsampled by an integer step
CHUNK_FRAMES = 256  # frames per decoded chunk (96x54x3 -> 4 MB)
SPARSE_CHUNK = 16  # frames per chunk when decoding keyframes at caption size
# decord's decoding threads for the all-frames pass. One: the shot detector runs beside it on the other
# core and is always behind, so what counts is the CPU the pass takes, and a second (frame-)thread
# costs more than it gives: 60 s of 720p H.264 at 96x54 took 3.4 s of CPU in 3.25 s with one thread,
# 4.4 s in 2.9 s with two (the same frames, checked).
SCAN_THREADS = 1
MIN_DECODED_FRACTION = 0.10  # below this share of the expected frames the stream is rejected
WARN_DECODED_FRACTION = 0.90  # below this share a warning says part of the video did not decode


class DecodeFailed(RuntimeError):
    """A backend stopped part-way; the scan restarts on the next backend."""


@dataclass
class FrameChunk:
    index: np.ndarray  # [n] int: position in the analysed sequence (0, 1, 2 ...)
    source_index: np.ndarray  # [n] int: frame number in the backend's own numbering
    times_s: np.ndarray  # [n] float: presentation time from the first frame
    rgb: np.ndarray  # [n, SCAN_H, SCAN_W, 3] uint8, coded orientation
    standalone: np.ndarray | None = None  # [n] bool: an I-frame (decodes without the frames before it)


class ChunkConsumer(Protocol):
    def add(self, chunk: FrameChunk) -> None: ...


@dataclass
class ScanResult:
    backend: str  # "decord" | "ffmpeg"
    step: int  # analysed every `step`-th decoded frame
    n_frames: int  # analysed frames
    times_s: np.ndarray  # [n_frames]
    source_index: np.ndarray  # [n_frames]
    pipe_fps: float | None  # the ffmpeg backend's resampling rate (None: passthrough)
    turns: int = 0  # np.rot90 quarter turns still needed to make the backend's frames upright
    warnings: list[str] = field(default_factory=list)
    # [n_frames] bool: frames frames_at decodes without decoding the ones before them (the stream's
    # I-frames, known to the decord backend; all False for the ffmpeg pipe)
    standalone: np.ndarray | None = None


def analysis_step(fps: float) -> int:
    return max(1, int(round(fps / MAX_ANALYSIS_FPS))) if fps > 0 else 1


def _decord():
    """decord, its bundled libav told to print nothing: left at its default level it wrote decoding errors
    straight to the terminal ("[h264 @ 0x...] Invalid NAL unit size", in about one run of three on the
    shared corrupted clip) beside bgmgen's own output. A failed decode is reported from decord's
    exception instead, and the ffmpeg pass that takes over says what it met (its stderr, captured)."""
    import decord  # heavy import, only when decoding

    decord.logging.set_level(decord.logging.QUIET)
    return decord


def _first_line(err: BaseException | str) -> str:
    import re

    # decord prefixes messages with "[hh:mm:ss] /path/file.cc:123: " (sometimes twice): drop those.
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", str(err)).strip()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("Stack trace")]
    line = lines[0] if lines else (type(err).__name__ if isinstance(err, BaseException) else "")
    return line[:160]


# ---------------------------------------------------------------------------------------------- decord


def open_decord(path: str):
    """decord's reader of the file at `path` for scan_small's pass (96x54, SCAN_THREADS threads);
    DecodeFailed where decord cannot open it or finds no frames."""
    decord = _decord()
    try:
        vr = decord.VideoReader(path, width=SCAN_W, height=SCAN_H, num_threads=SCAN_THREADS)
        n = len(vr)
    except Exception as err:  # decord raises DECORDError / RuntimeError with C++ context
        raise DecodeFailed(f"decord cannot open it ({_first_line(err)})") from None
    if n == 0:
        raise DecodeFailed("decord found no frames")
    return vr


def evenly_timed(reader) -> bool:
    """Whether the frames of open_decord's `reader` are evenly spaced in time (each interval within a
    quarter of the median): constant frame rate, as far as the container's timestamps tell."""
    try:
        starts = np.asarray(reader.get_frame_timestamp(list(range(len(reader)))), np.float64)[:, 0]
    except Exception:  # noqa: BLE001 - no timestamps: nothing tells
        return False
    gaps = np.diff(starts)
    if len(gaps) == 0:
        return True
    typical = float(np.median(gaps))
    return typical > 0 and float(np.max(np.abs(gaps - typical))) <= 0.25 * typical


def iter_decord(path: str, fps: float, step: int, chunk: int, reader=None) -> Iterator[FrameChunk]:
    """scan_small's decord pass over the file at `path`: every `step`-th frame at 96x54, `chunk` frames
    at a time, read by `reader` (open_decord's) or by a reader of its own. `fps` (the probe's) times the
    frames where the file has no timestamps. DecodeFailed where decord cannot open the file or stops
    part-way."""
    vr = reader if reader is not None else open_decord(path)
    n = len(vr)
    wanted = np.arange(0, n, step)
    try:
        ts = vr.get_frame_timestamp(wanted.tolist())[:, 0].astype(np.float64)
    except Exception:
        ts = wanted / max(fps, 1e-6)
    ts = ts - ts[0] if len(ts) else ts
    try:
        key = np.zeros(n, bool)
        key[np.clip(np.asarray(vr.get_key_indices(), np.int64), 0, n - 1)] = True
    except Exception:  # no index: every frame counts as dependent
        key = np.zeros(n, bool)
    pos = 0
    for start in range(0, len(wanted), chunk):
        idx = wanted[start:start + chunk]
        try:
            frames = vr.get_batch(idx.tolist()).asnumpy()
        except Exception as err:
            raise DecodeFailed(f"decord failed at frame {int(idx[0])}-{int(idx[-1])} ({_first_line(err)})") from None
        if frames.shape[1:] != (SCAN_H, SCAN_W, 3):
            raise DecodeFailed(f"decord returned frames of shape {frames.shape[1:]}")
        k = len(idx)
        yield FrameChunk(np.arange(pos, pos + k), idx.astype(np.int64), ts[start:start + k], frames, key[idx])
        pos += k


# ---------------------------------------------------------------------------------------------- ffmpeg


def _pipe_fps(info: VideoInfo, step: int) -> float | None:
    """Resampling rate for the pipe: None (passthrough) for constant-rate video."""
    if info.variable_frame_rate:
        return min(info.fps, MAX_ANALYSIS_FPS) if info.fps > 0 else MAX_ANALYSIS_FPS
    return None


def _ffmpeg_graph(info: VideoInfo, w: int, h: int, fps: float | None = None, select: str | None = None,
                  frames: int | None = None):
    """The first video stream as rgb24 at w x h on stdout, upright (ffmpeg autorotates)."""
    video = input_file(info.path)["v:0"]
    if fps:
        video = video.filter("fps", f"{fps:.6f}")
    if select:
        video = video.filter("select", select)
    video = video.filter("scale", w, h)
    # `frames`: only the first few (decord_turns' reference); else every frame as decoded, none duplicated.
    options = {"frames:v": frames} if frames else {"fps_mode": "passthrough", "an": None, "sn": None}
    return video.output("pipe:1", format="rawvideo", pix_fmt="rgb24", **options)


def _read_pipe(graph, frame_bytes: int, chunk: int, stderr_lines: list[str] | None = None) -> Iterator[np.ndarray]:
    """[n, frame_bytes] uint8 blocks of up to `chunk` frames from the ffmpeg pipe of `graph`."""
    for buf in pipe(graph, frame_bytes * chunk, stderr_lines=stderr_lines):
        n = len(buf) // frame_bytes
        if n:
            yield np.frombuffer(buf[: n * frame_bytes], np.uint8).reshape(n, -1)


def _iter_ffmpeg(info: VideoInfo, step: int, chunk: int, notes: list[str]) -> Iterator[FrameChunk]:
    fps = _pipe_fps(info, step)
    rate = fps or info.fps or 25.0
    eff_step = 1 if fps else step
    graph = _ffmpeg_graph(info, SCAN_W, SCAN_H, fps)
    frame_bytes = SCAN_W * SCAN_H * 3
    src = 0
    pos = 0
    stderr_lines: list[str] = []
    for block in _read_pipe(graph, frame_bytes, chunk * eff_step, stderr_lines):
        n = len(block)
        src_idx = np.arange(src, src + n)
        keep = src_idx % eff_step == 0
        src += n
        if not keep.any():
            continue
        frames = block[keep].reshape(-1, SCAN_H, SCAN_W, 3)
        idx = src_idx[keep]
        yield FrameChunk(np.arange(pos, pos + len(idx)), idx, idx / rate, frames)
        pos += len(idx)
    lines = [ln for ln in stderr_lines if ln]
    if lines:
        notes.append(f"ffmpeg reported decoding errors ({lines[0][:120]})")


# ---------------------------------------------------------------------------------------------- scans


def scan_small(info: VideoInfo, consumer_factory: Callable[[], ChunkConsumer],
               backend: str = "auto", chunk: int = CHUNK_FRAMES) -> tuple[ChunkConsumer, ScanResult]:
    """Decode every analysed frame at 96x54 once, feeding chunks to a fresh consumer.

    backend: "auto" (decord, else the ffmpeg pipe), "decord" or "ffmpeg". When a backend fails part-way
    the consumer is rebuilt from `consumer_factory` and the scan starts again on the next backend.
    """
    step = analysis_step(info.fps)
    warnings: list[str] = []
    order = {"auto": ["decord", "ffmpeg"], "decord": ["decord"], "ffmpeg": ["ffmpeg"]}[backend]
    if backend == "auto" and info.variable_frame_rate:
        order = ["ffmpeg"]  # exact, evenly spaced times through the fps filter
    if order[0] != "decord":
        drop_scan(info.path)  # a decord pass begun ahead of this file is of no use here
    for name in order:
        consumer = consumer_factory()
        times, sources, standalone = [], [], []
        notes: list[str] = []
        try:
            if name == "decord":  # the CLI's first video: most likely begun already (scan_ahead)
                it = take_scan(info, step, chunk) or iter_decord(info.path, info.fps, step, chunk)
            else:
                it = _iter_ffmpeg(info, step, chunk, notes)
            for ch in it:
                consumer.add(ch)
                times.append(ch.times_s)
                sources.append(ch.source_index)
                standalone.append(ch.standalone if ch.standalone is not None else np.zeros(len(ch.times_s), bool))
        except DecodeFailed as err:
            warnings.append(f"{err}; decoding with ffmpeg instead" if name != order[-1] else str(err))
            continue
        n = int(sum(len(t) for t in times))
        if n == 0:
            continue
        expected = max(1, int(info.n_frames // step)) if name == "decord" or not _pipe_fps(info, step) else \
            max(1, int(info.duration_s * (_pipe_fps(info, step) or 1)))
        warnings.extend(notes)
        if n < MIN_DECODED_FRACTION * expected and expected >= 10:
            raise InputError(f"{info.path}: the video stream is too damaged to use (only {n} of about "
                             f"{expected} frames decode)")
        if n < WARN_DECODED_FRACTION * expected:
            warnings.append(f"only {n} of about {expected} frames decoded; the rest is treated as a still picture")
        return consumer, ScanResult(
            backend=name, step=step, n_frames=n, times_s=np.concatenate(times),
            source_index=np.concatenate(sources), pipe_fps=_pipe_fps(info, step) if name == "ffmpeg" else None,
            turns=decord_turns(info) if name == "decord" else 0, warnings=warnings,
            standalone=np.concatenate(standalone))
    raise InputError(f"{info.path}: the video stream has no decodable frames; the file is damaged")


def decord_turns(info: VideoInfo) -> int:
    """Quarter turns (np.rot90 k) that decord's frames of this file still need to be upright."""
    k = info.quarter_turns
    if k == 0:
        return 0
    side = 64
    try:
        vr = _decord().VideoReader(info.path, width=side, height=side, num_threads=1)
        ours = vr[0].asnumpy().astype(np.int16)
        del vr
    except Exception:
        return k
    ref = list(_read_pipe(_ffmpeg_graph(info, side, side, frames=1), side * side * 3, 1))
    if not ref:
        return k
    upright = ref[0].reshape(side, side, 3).astype(np.int16)
    err_none = np.abs(ours - upright).mean()
    err_turn = np.abs(np.rot90(ours, k=k) - upright).mean()
    return 0 if err_none <= err_turn else k


def _upright(frames: np.ndarray, k: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(frames, k=k, axes=(1, 2))) if k else frames


def frames_at(info: VideoInfo, scan: ScanResult, times_s, size: tuple[int, int], threads: int = 2) -> np.ndarray:
    """Frames nearest to `times_s`, upright, squashed to `size` = (width, height): [n, h, w, 3] uint8.
    threads: decord's decoding threads (one for a decode in the background of other work)."""
    times = np.asarray(list(times_s), dtype=np.float64)
    w, h = size
    if len(times) == 0:
        return np.zeros((0, h, w, 3), np.uint8)
    # Decode in the backend's orientation: a quarter turn still to apply swaps the decode size.
    dw, dh = (h, w) if scan.turns % 2 else (w, h)
    pos = np.clip(np.searchsorted(scan.times_s, times), 0, scan.n_frames - 1)
    prev = np.clip(pos - 1, 0, scan.n_frames - 1)
    pos = np.where(np.abs(scan.times_s[prev] - times) <= np.abs(scan.times_s[pos] - times), prev, pos)
    src = scan.source_index[pos]
    uniq, inverse = np.unique(src, return_inverse=True)
    out = None
    if scan.backend == "decord":
        try:
            out = _sparse_decord(info, uniq, dw, dh, threads)
        except DecodeFailed as err:
            scan.warnings.append(f"{err}; keyframes decoded with ffmpeg instead")
        else:
            return _upright(out[inverse], scan.turns)
    out = _sparse_ffmpeg(info, scan, uniq, w, h)  # ffmpeg autorotates
    return out[inverse]


def _sparse_decord(info: VideoInfo, indices: np.ndarray, w: int, h: int, threads: int) -> np.ndarray:
    decord = _decord()
    try:
        vr = decord.VideoReader(info.path, width=w, height=h, num_threads=threads)
        parts = [vr.get_batch(indices[i:i + SPARSE_CHUNK].tolist()).asnumpy()
                 for i in range(0, len(indices), SPARSE_CHUNK)]
    except Exception as err:
        raise DecodeFailed(f"decord failed on keyframes ({_first_line(err)})") from None
    out = np.concatenate(parts)
    if out.shape[1:] != (h, w, 3):
        raise DecodeFailed(f"decord returned keyframes of shape {out.shape[1:]}")
    return out


def _sparse_ffmpeg(info: VideoInfo, scan: ScanResult, indices: np.ndarray, w: int, h: int) -> np.ndarray:
    select = "+".join(f"eq(n,{int(i)})" for i in indices)  # ffmpeg-python escapes the commas
    blocks = list(_read_pipe(_ffmpeg_graph(info, w, h, scan.pipe_fps, select), w * h * 3, SPARSE_CHUNK))
    got = np.concatenate(blocks).reshape(-1, h, w, 3) if blocks else np.zeros((0, h, w, 3), np.uint8)
    if len(got) < len(indices):  # a frame the scan saw but the select did not deliver: repeat the last
        fill = got[-1:] if len(got) else np.zeros((1, h, w, 3), np.uint8)
        got = np.concatenate([got, np.repeat(fill, len(indices) - len(got), axis=0)])
    return got[: len(indices)]
