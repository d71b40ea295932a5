"""scan_ahead: the all-frames pass over a video begun before its analysis asks for it.

The CLI calls `begin_scan(path)` for its first input as soon as the arguments are parsed. A thread
runs decode.scan_small's decord pass over the file, so the decode runs on the core that the imports
(torch's, the CLI's own, one GIL between them) leave idle; decode.scan_small then takes the chunks
decoded so far and the rest as they come (`take_scan`) instead of decoding again. Its chunks are the
ones scan_small's own decord pass yields, in the same order (the same function runs with the same
arguments), so nothing downstream changes.

The decode does not wait for the file's probe (ffprobe, then ffmpeg's first frame: about half a second
here, while the decode would be idle). It starts at the frame rate decord reads, and the probe, run
beside it, decides whether it was right: the chunks are given out only if the probe found the same
rate (so the same analysis step) and a constant frame rate (scan_small reads variable-rate video
through ffmpeg). Otherwise the scan stops. A file whose frames decord finds unevenly timed waits for
the probe before decoding, and so does one whose container decord may fail to open
(`opens_before_its_probe`): a file that is no video must get one line from bgmgen, nothing else, and
decord printed its errors to the terminal (decode._decord now silences its libav as well). After a
failed probe, decord never opens the file.

A scan that no analysis takes (the outputs are up to date, the analysis comes from the cache, the
job failed first) is stopped with `drop_scan`; until then it waits after `AHEAD_CHUNKS` chunks.
This module imports only the standard library (and core.mp4's box reader, which does too) at load:
numpy, decord and the probe load in the scan's own thread, not in the CLI's.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator

from bgmgen.core.mp4 import movie_box

# Chunks a scan decodes before it waits to be taken (4 x 256 frames of 96x54 RGB: 16 MB). The CLI's
# analysis takes them about a second into the run; a scan nothing takes waits there until it is dropped.
AHEAD_CHUNKS = 4
MATROSKA_MAGIC = b"\x1a\x45\xdf\xa3"  # EBML header: mkv, webm


def opens_before_its_probe(path: str) -> bool:
    """Whether the file at `path` may be opened with decord before its probe: a Matroska/WebM file,
    or an ISO media file (mp4, mov, m4v, 3gp) whose top-level boxes, read by their sizes, hold its
    movie header ('moov': absent from garbage and from a recording cut short, where ffmpeg and decord
    fail with "moov atom not found"). Anything else waits for the probe. Reads a few bytes per box."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == MATROSKA_MAGIC or movie_box(f) is not None
    except OSError:
        return False


class ScanAhead:
    """decode.scan_small's decord pass over one file, run in a thread: its chunks (and its error,
    where the decode fails) go into a bounded queue, in order, for `chunks()` to give out."""

    _END = object()  # the queue's item after the last chunk

    def __init__(self, path: str, chunk: int | None, then: Callable[[], object] | None = None):
        self.path, self.chunk, self.then = path, chunk, then
        self.info = None  # the file's VideoInfo, once the probe agrees with the decode (else None)
        self.fps = None  # the frame rate the decode runs at (decord's, rounded as the probe rounds it)
        self.step = 0  # the analysis step (decode.analysis_step of fps)
        self.known = threading.Event()  # the verdict: info is set, or the scan's chunks are not given out
        self.items: queue.Queue = queue.Queue(AHEAD_CHUNKS)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bgmgen-scan-ahead", daemon=True)
        self._probed = threading.Event()  # the probe is over: _probe_info is its VideoInfo, or None
        self._probe_info = None
        self._opened = threading.Event()  # fps and step are set, or the decode does not run (fps None)
        self._verdict_lock = threading.Lock()

    def _run(self) -> None:
        threading.Thread(target=self._probe, name="bgmgen-probe", daemon=True).start()
        try:
            try:
                import decord  # noqa: F401 - while ffprobe runs

                from bgmgen.video import decode
            finally:
                if self.then is not None:
                    self.then()
            if not opens_before_its_probe(self.path):
                self._probed.wait()
            if self._probed.is_set() and self._probe_info is None:  # not a video ffprobe reads: say nothing
                return
            reader = decode.open_decord(self.path)
            fps = round(float(reader.get_avg_fps()), 6)
            if not decode.evenly_timed(reader):  # most likely variable frame rate: the probe says first
                self._probed.wait()
            if not self.stopped.is_set():
                self.fps, self.step = fps, decode.analysis_step(fps)
                self.chunk = self.chunk or decode.CHUNK_FRAMES
        except BaseException:  # noqa: BLE001, S110 - scan_small's own decord pass says what fails (or a missing decord)
            pass
        finally:
            self._opened.set()
            self._give_verdict()
        if self.fps is None or self.stopped.is_set():  # the probe has disagreed already
            return
        try:
            for ch in decode.iter_decord(self.path, fps, self.step, self.chunk, reader):
                if not self._put(ch):
                    return
        except BaseException as err:  # noqa: BLE001 - raised where scan_small takes it
            self._put(err)
            return
        self._put(self._END)

    def _probe(self) -> None:
        from bgmgen.video.probe import probe

        try:
            self._probe_info = probe(self.path)
        except BaseException:  # noqa: BLE001, S110 - raised by the probe() that waits for it
            pass
        finally:
            self._probed.set()
            self._give_verdict()

    def _give_verdict(self) -> None:
        """Once both the probe and the decode's start are known: keep the scan if the probe agrees
        with the rate it decodes at (and scan_small would decode with decord), else stop it."""
        with self._verdict_lock:
            if self.known.is_set() or not (self._probed.is_set() and self._opened.is_set()):
                return
            info = self._probe_info
            if info is not None and self.fps is not None and not info.variable_frame_rate and info.fps == self.fps:
                self.info = info
            else:
                self.stop()
            self.known.set()

    def _put(self, item) -> bool:
        """Queue `item`, waiting while the queue is full; False once the scan is stopped."""
        while not self.stopped.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def matches(self, info, step: int, chunk: int) -> bool:
        """Whether this scan decodes what scan_small would for `info` (waits for its probe)."""
        self.known.wait()
        return self.info is not None and self.info == info and self.step == step and self.chunk == chunk

    def chunks(self) -> Iterator:
        """The FrameChunks, as decode.iter_decord yields them (its error raised where it happened)."""
        try:
            while True:
                item = self.items.get()
                if item is self._END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:  # taken to the end, or given up part-way: the thread must not wait for ever
            self.stop()

    def stop(self) -> None:
        self.stopped.set()


_scans: dict[str, ScanAhead] = {}  # absolute path -> its scan begun ahead, until taken or dropped
_scans_lock = threading.Lock()


def begin_scan(path, chunk: int | None = None, then: Callable[[], object] | None = None) -> ScanAhead:
    """Begin the decord pass over the file at `path` (its probe beside it) in a background thread now.
    `chunk`: frames per chunk (default decode.CHUNK_FRAMES). The first scan_small of the same file
    with the same probe result and chunk takes it. `then` is called in the scan's thread once it has
    imported what it needs (numpy, decord), before it decodes: the CLI begins torch's import there."""
    scan = ScanAhead(str(path), chunk, then)
    with _scans_lock:
        old = _scans.pop(os.path.abspath(path), None)
        _scans[os.path.abspath(path)] = scan
    if old is not None:
        old.stop()
    scan.thread.start()
    return scan


def take_scan(info, step: int, chunk: int) -> Iterator | None:
    """The chunks of the scan begun ahead of the file `info` describes, if it decodes what scan_small
    would (the scan is then no longer ahead), else None."""
    with _scans_lock:
        scan = _scans.pop(os.path.abspath(info.path), None)
    if scan is None:
        return None
    if not scan.matches(info, step, chunk):  # the file changed since, or other settings
        scan.stop()
        return None
    return scan.chunks()


def drop_scan(path) -> None:
    """Stop the scan begun ahead of the file at `path`, if there is one that nothing took."""
    with _scans_lock:
        scan = _scans.pop(os.path.abspath(path), None)
    if scan is not None:
        scan.stop()
