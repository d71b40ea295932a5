"""mp4: the box structure of ISO media files (MP4, MOV, M4V, 3GP), read in-process.

* `top_level_boxes(f)`: (type, start, end) of each box at the top of an open file, by their sizes.
* `movie_box(f)`: where the movie header ('moov') lies, when the top-level boxes hold a whole one.
* `read_movie(path) -> Movie | None`: the movie's duration (its 'mvhd') and its tracks' kinds (their
  'hdlr'), or None when the file holds no whole movie header this reads (not ISO media, cut short,
  fragmented): the caller asks ffprobe then.

audio/mux.py checks the file it has just written with `read_movie`: ffprobe, a process of its own,
took 0.06-0.13 s at the very end of every score (2026-12-08) for the same two facts. ffprobe's format
duration of an MP4 is its 'mvhd' duration over its timescale (libavformat's mov demuxer, unfragmented
files), which is what `Movie.duration_s` is. video/scan_ahead.py walks the top-level boxes to decide
whether decord may open a file before its probe.

Box layout (ISO/IEC 14496-12, 4.2): a 32-bit big-endian size (header included) and a four-character
type; size 1 means a 64-bit size follows the type, size 0 that the box runs to the end of its parent.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

# The box an ISO media file may start with (a file that starts otherwise is not read as one).
FIRST_BOX_TYPES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid")
MAX_BOXES = 64  # top-level boxes read from a file (a few in any real file; a walk through garbage stops here)
MAX_MOVIE_BYTES = 64 << 20  # a larger movie header is read by ffprobe instead (hours of tiny samples)
TRACK_KINDS = {b"vide": "video", b"soun": "audio", b"subt": "subtitle", b"sbtl": "subtitle", b"text": "subtitle"}


@dataclass(frozen=True)
class Movie:
    duration_s: float | None  # 'mvhd' duration / timescale; None when the header leaves it unknown
    kinds: tuple[str, ...]  # per track, in file order: "video", "audio", "subtitle" or "data"


def _header(raw: bytes, room: int) -> tuple[bytes, int, int] | None:
    """(type, header length, box length) of the box whose first bytes (up to 16) are `raw`, with `room`
    bytes left in its parent; None where the size does not hold together (garbage, a box cut short)."""
    if len(raw) < 8:
        return None
    size, kind = struct.unpack_from(">I4s", raw)
    header = 8
    if size == 1:  # a 64-bit size follows the type
        if len(raw) < 16:
            return None
        size, header = struct.unpack_from(">Q", raw, 8)[0], 16
    elif size == 0:  # the box runs to the end of its parent
        size = room
    if size < header or size > room:
        return None
    return kind, header, size


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, end) of the boxes in data[start:end] (in memory: every box, however many;
    each is at least 8 bytes, so the walk ends); stops at a corrupt size."""
    at = start
    while (box := _header(data[at:at + 16], end - at)) is not None:
        kind, header, size = box
        yield kind, at + header, at + size
        at += size


def top_level_boxes(f: BinaryIO) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of the top-level boxes of the open file `f`, in order, as far as their sizes
    hold together (a box that would run past the end of the file ends the walk; so does garbage)."""
    size_of_file = os.fstat(f.fileno()).st_size
    at = 0
    for _ in range(MAX_BOXES):
        f.seek(at)
        box = _header(f.read(16), size_of_file - at)
        if box is None:
            return
        yield box[0], at, at + box[2]
        at += box[2]


def movie_box(f: BinaryIO) -> tuple[int, int] | None:
    """(start, end) of the movie header box ('moov') among the top-level boxes of `f`, when `f` starts
    as an ISO media file (FIRST_BOX_TYPES) and holds a whole one (none in garbage, nor in a recording
    cut short before its header was written)."""
    for i, (kind, start, end) in enumerate(top_level_boxes(f)):
        if i == 0 and kind not in FIRST_BOX_TYPES:
            return None
        if kind == b"moov":
            return start, end
    return None


def _full_box_payload(data: bytes, start: int, end: int, need: int) -> tuple[int, int] | None:
    """(version, offset of the fields after version and flags) of a full box, when it holds `need` bytes."""
    if end - start < 4 + need:
        return None
    return data[start], start + 4


def _movie_header(data: bytes, start: int, end: int) -> float | None:
    """'mvhd' payload -> duration in seconds (None: unknown, or a zero timescale)."""
    full = _full_box_payload(data, start, end, 16)
    if full is None:
        raise ValueError("short mvhd")
    version, at = full
    if version == 1:
        if end - at < 28:
            raise ValueError("short mvhd")
        timescale, duration = struct.unpack_from(">IQ", data, at + 16)
        unknown = 0xFFFFFFFFFFFFFFFF
    else:
        timescale, duration = struct.unpack_from(">II", data, at + 8)
        unknown = 0xFFFFFFFF
    if timescale == 0 or duration == unknown:
        return None
    return duration / timescale


def _track_kind(data: bytes, start: int, end: int) -> str:
    """'trak' payload -> the kind its media handler ('mdia' > 'hdlr') names."""
    for kind, s, e in _boxes(data, start, end):
        if kind == b"mdia":
            for sub, s2, e2 in _boxes(data, s, e):
                if sub == b"hdlr":
                    full = _full_box_payload(data, s2, e2, 8)
                    if full is None:
                        raise ValueError("short hdlr")
                    handler = data[full[1] + 4:full[1] + 8]  # after pre_defined
                    return TRACK_KINDS.get(handler, "data")
    raise ValueError("a track without a media handler")


def read_movie(path) -> Movie | None:
    """The duration and track kinds of the ISO media file at `path`, from its movie header; None when
    it has no whole one, is fragmented ('mvex': the header does not hold the duration) or does not
    parse (the caller asks ffprobe)."""
    try:
        with open(path, "rb") as f:
            span = movie_box(f)
            if span is None or span[1] - span[0] > MAX_MOVIE_BYTES:
                return None
            f.seek(span[0])
            data = f.read(span[1] - span[0])
    except OSError:
        return None
    try:
        moov = next(_boxes(data, 0, len(data)), None)  # None: the file changed under us
        if moov is None:
            return None
        duration, found_header, kinds = None, False, []
        for kind, start, end in _boxes(data, moov[1], moov[2]):
            if kind == b"mvex":
                return None
            if kind == b"mvhd":
                duration, found_header = _movie_header(data, start, end), True
            elif kind == b"trak":
                kinds.append(_track_kind(data, start, end))
    except (ValueError, struct.error):
        return None
    return Movie(duration, tuple(kinds)) if found_header else None
