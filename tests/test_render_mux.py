"""render (FluidSynth -> WAV), loudness, mux (ffmpeg), the ffmpeg runner (bgmgen.core.ffmpeg) and
report.png, on inputs the tests make themselves."""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from media import analysis_for, pipe_to_mkv  # tests/media.py (see conftest)

from bgmgen.audio import loudness, render
from bgmgen.audio import mux as mux_mod
from bgmgen.core import ffmpeg as ff
from bgmgen.core.constants import SAMPLE_RATE, STEPS_PER_BEAT
from bgmgen.core.errors import BgmgenError, InputError, MissingDependencyError
from bgmgen.video.probe import VideoInfo

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

MUSIC_HZ = 1000.0  # the stand-in "music" for the mix tests is a steady sine, easy to measure
ORIG_HZ = 300.0


# ----------------------------------------------------------------------------------- helpers


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True)


def _ffprobe(path: Path) -> dict:
    """ffprobe's JSON description (format and streams), read here, independent of bgmgen's runner."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", f"file:{path}"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def _probe(path: Path) -> VideoInfo:
    """A real VideoInfo, its fields read with ffprobe here (independent of bgmgen.video.probe, so the
    mux tests do not rest on the code they would check the output with)."""
    data = _ffprobe(path)
    video = next(s for s in data["streams"] if s["codec_type"] == "video")
    audio = [s for s in data["streams"] if s["codec_type"] == "audio"]
    rotation = 0
    for side in video.get("side_data_list", []):
        rotation = int(side.get("rotation", rotation))
    rate = video.get("avg_frame_rate", "0/1")
    fps = float(Fraction(rate)) if rate not in ("0/0", "") else 0.0
    duration = float(data["format"]["duration"])
    return VideoInfo(
        path=str(path), duration_s=duration, fps=fps, n_frames=int(video.get("nb_frames", round(duration * fps))),
        width=int(video["width"]), height=int(video["height"]), rotation=rotation, has_audio=bool(audio),
        audio_channels=int(audio[0]["channels"]) if audio else 0, video_codec=video["codec_name"],
        audio_codec=audio[0]["codec_name"] if audio else None, container=data["format"]["format_name"],
        start_time_s=float(data["format"].get("start_time", 0.0)),
        coded_width=int(video["width"]), coded_height=int(video["height"]),
    )


def _video_hash(path: Path) -> str:
    """md5 of the video stream's packets: equal for two files iff the bitstream was copied."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", f"file:{path}", "-map", "0:v:0", "-c", "copy",
                          "-f", "streamhash", "-hash", "md5", "-"], capture_output=True, text=True, check=True)
    return out.stdout.strip().split("=")[-1]


def _decode_mono(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", f"file:{path}", "-map", "0:a:0", "-ac", "1",
                          "-ar", str(SAMPLE_RATE), "-f", "f32le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.float32)


def _band_db(x: np.ndarray, hz: float) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / SAMPLE_RATE)
    return float(10 * np.log10(spec[np.abs(freqs - hz) < 25].sum() + 1e-20))


def _true_peak_db(x: np.ndarray) -> float:
    from scipy.signal import resample_poly

    return float(20 * np.log10(np.abs(resample_poly(x, 4, 1, axis=0)).max()))


def _write_wav(path: Path, mono: np.ndarray) -> None:
    from scipy.io import wavfile

    pcm = np.round(np.clip(mono, -1, 1) * 32767).astype(np.int16)
    wavfile.write(path, SAMPLE_RATE, np.stack([pcm, pcm], axis=1))


def _make_midi(path: Path, seconds: float) -> None:
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=90)
    piano = pretty_midi.Instrument(program=0)
    chords = [(48, 60, 64, 67), (45, 57, 60, 64), (41, 53, 57, 60), (43, 55, 59, 62)]
    t, i = 0.0, 0
    while t < seconds - 0.5:
        for p in chords[i % 4]:
            piano.notes.append(pretty_midi.Note(velocity=64 + 8 * (i % 3), pitch=p, start=t, end=t + 1.2))
        piano.notes.append(pretty_midi.Note(velocity=96, pitch=chords[i % 4][-1] + 12, start=t + 0.66, end=t + 1.0))
        t, i = t + 4 / 3, i + 1
    pm.instruments.append(piano)
    pm.write(str(path))


# ------------------------------------------------------------------------------------ render


@pytest.fixture(scope="module")
def midi_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("midi") / "song.mid"
    _make_midi(path, 8.0)
    return path


@pytest.fixture(scope="module")
def rendered(midi_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("render")
    duration = 6.123  # not a whole number of seconds nor of 64-sample blocks
    info = render.render_midi(midi_file, out / "a.wav", duration, render.RenderOptions())
    return info, out / "a.wav", duration


def test_render_wav_exact_duration_loudness_and_true_peak(rendered):
    import pyloudnorm
    from scipy.io import wavfile

    info, wav, duration = rendered
    rate, pcm = wavfile.read(wav)
    assert rate == SAMPLE_RATE and pcm.dtype == np.int16 and pcm.ndim == 2 and pcm.shape[1] == 2
    assert len(pcm) == round(duration * SAMPLE_RATE)
    assert info["duration_s"] == pytest.approx(duration, abs=1 / SAMPLE_RATE)
    x = pcm.astype(np.float64) / 32767.0
    lufs = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(x)  # independent meter
    assert abs(lufs - render.TARGET_LUFS) <= 0.5, lufs
    assert abs(info["lufs"] - lufs) < 0.1
    tp = _true_peak_db(x)
    assert tp <= render.TRUE_PEAK_DBTP + 1e-6, tp
    assert info["true_peak_dbtp"] <= render.TRUE_PEAK_DBTP
    # Not silent, and the fades are there: the first and last milliseconds are far quieter than the middle.
    mid = x[len(x) // 3: 2 * len(x) // 3]
    assert np.sqrt(np.mean(mid ** 2)) > 0.02
    assert np.abs(x[:20]).max() < 0.05 * np.abs(mid).max()
    assert np.abs(x[-200:]).max() < 0.05 * np.abs(mid).max()
    assert Path(info["soundfont"]).name.lower().startswith(("fluidr3", "musescore"))


def test_render_is_deterministic_and_honours_the_target(midi_file, rendered, tmp_path):
    import pyloudnorm
    from scipy.io import wavfile

    _, first, duration = rendered
    again = render.render_midi(midi_file, tmp_path / "b.wav", duration, render.RenderOptions())
    assert (tmp_path / "b.wav").read_bytes() == first.read_bytes()
    quiet = render.render_midi(midi_file, tmp_path / "q.wav", 2.5, render.RenderOptions(target_lufs=-23.0))
    rate, pcm = wavfile.read(tmp_path / "q.wav")
    assert len(pcm) == round(2.5 * SAMPLE_RATE)
    assert abs(pyloudnorm.Meter(rate).integrated_loudness(pcm / 32767.0) + 23.0) <= 0.5
    assert quiet["lufs"] < again["lufs"]
    assert not list(tmp_path.glob(".tmp-*"))  # atomic writes leave nothing behind


def test_render_limits_a_peaky_score_and_still_meets_the_target(tmp_path):
    """A fortissimo cluster over a soft accompaniment cannot reach -16 LUFS under -1 dBTP by gain
    alone: the limiter must engage, and both figures must still hold on the written file."""
    import pretty_midi
    import pyloudnorm
    from scipy.io import wavfile

    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    piano = pretty_midi.Instrument(program=0)
    for p in (36, 48, 60, 64, 67, 72, 76, 79, 84, 88, 91, 96):
        piano.notes.append(pretty_midi.Note(velocity=127, pitch=p, start=0.3, end=0.5))
    for k in range(9):
        for p in (48, 55, 64):
            piano.notes.append(pretty_midi.Note(velocity=45, pitch=p + k % 5, start=0.8 + 0.5 * k, end=1.3 + 0.5 * k))
    pm.instruments.append(piano)
    pm.write(str(tmp_path / "peaky.mid"))
    info = render.render_midi(tmp_path / "peaky.mid", tmp_path / "peaky.wav", 6.0)
    assert info["limited"]
    rate, pcm = wavfile.read(tmp_path / "peaky.wav")
    x = pcm / 32767.0
    assert abs(pyloudnorm.Meter(rate).integrated_loudness(x) - render.TARGET_LUFS) <= 0.5
    assert _true_peak_db(x) <= render.TRUE_PEAK_DBTP + 1e-6


def test_loudness_meter_matches_pyloudnorm():
    import pyloudnorm

    rng = np.random.default_rng(1)
    t = np.arange(int(3.3 * SAMPLE_RATE)) / SAMPLE_RATE
    x = np.stack([0.3 * np.sin(2 * np.pi * 440 * t) * (t > 1.0), 0.05 * rng.standard_normal(len(t))], 1)
    ours = loudness.integrated_loudness(x.astype(np.float32), chunk=10_000)  # chunk boundaries off the hop grid
    ref = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(x)
    assert ours == pytest.approx(ref, abs=1e-9)
    # the channels filtered one after another (score.py's measurement beside the mux): the same value
    assert loudness.integrated_loudness(x.astype(np.float32), chunk=10_000, threads=1) == ours
    assert loudness.integrated_loudness(np.zeros((SAMPLE_RATE, 2), np.float32)) == float("-inf")
    assert render.integrated_loudness is loudness.integrated_loudness  # render measures with the same meter


def test_dsp_primitives_equal_the_scipy_calls_they_replace(tmp_path):
    """audio/dsp.py stands in for scipy.signal.lfilter / resample_poly, scipy.ndimage's sliding minimum
    and mean and scipy.io.wavfile.write (importing scipy cost ~1.35 s of CPU per run)."""
    import pyloudnorm.iirfilter
    from scipy.io import wavfile
    from scipy.ndimage import minimum_filter1d, uniform_filter1d
    from scipy.signal import lfilter, resample_poly

    from bgmgen.audio import dsp

    rng = np.random.default_rng(7)
    designed = [pyloudnorm.iirfilter.IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, SAMPLE_RATE, "high_shelf"),
                pyloudnorm.iirfilter.IIRfilter(0.0, 0.5, 38.0, SAMPLE_RATE, "high_pass")]
    k_filter = dsp.k_weighting(SAMPLE_RATE)
    for (b, a), ref in zip(k_filter.sections, designed):
        assert np.array_equal(b, ref.b) and np.array_equal(a, ref.a) and ref.passband_gain == 1.0
    # lengths around the block (32) and group (32 * 32) sizes; split anywhere, the state carries
    for n in (1, 31, 32, 33, 1023, 1024, 1025, 100_003):
        x = rng.standard_normal(n)
        first, first_state = lfilter(designed[0].b, designed[0].a, x, zi=np.zeros(2))
        want, second_state = lfilter(designed[1].b, designed[1].a, first, zi=np.zeros(2))
        cut = int(rng.integers(0, n + 1))
        head, state = k_filter.filter(x[:cut], k_filter.zero_state())
        tail, state = k_filter.filter(x[cut:], state)
        got = np.concatenate([head, tail])
        scale = np.abs(want).max()
        assert np.abs(got - want).max() < 1e-10 * scale, (n, cut)
        assert np.abs(state - np.concatenate([first_state, second_state])).max() < 1e-10 * scale, (n, cut)
    for n in (1, 5, 40, 4099):
        x = rng.standard_normal((n, 2))
        want = resample_poly(x, 4, 1, axis=0)
        got = dsp.upsample(x, 4)
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-12, n
    for radius in (0, 1, 120, 1320):
        for n in (1, 2, 2 * radius + 1, 50_001):
            x = rng.random(n).astype(np.float32)
            assert np.array_equal(dsp.sliding_min(x, radius), minimum_filter1d(x, 2 * radius + 1, mode="nearest"))
            mean = dsp.sliding_mean(x, radius)
            assert mean.dtype == np.float32
            assert np.array_equal(mean, uniform_filter1d(x, 2 * radius + 1, mode="nearest")), (radius, n)
    pcm = rng.integers(-32768, 32768, (1001, 2)).astype(np.int16)
    wavfile.write(tmp_path / "scipy.wav", SAMPLE_RATE, pcm)
    dsp.write_wav_pcm16(tmp_path / "ours.wav", SAMPLE_RATE, pcm)
    assert (tmp_path / "ours.wav").read_bytes() == (tmp_path / "scipy.wav").read_bytes()


def test_rendering_and_metering_import_no_scipy(tmp_path):
    code = ("import sys, numpy as np\n"
            "from bgmgen.audio import loudness, render\n"
            "x = (0.9 * np.sin(np.arange(96000) * 0.05)[:, None] * np.ones((1, 2))).astype(np.float32)\n"
            "render._limit(x, 0.5); loudness.integrated_loudness(x); loudness.true_peak_dbtp(x)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'pyloudnorm')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_limiter_keeps_the_ceiling():
    x = np.zeros((SAMPLE_RATE, 2), np.float32)
    x[:, 0] = 0.1 * np.sin(np.arange(SAMPLE_RATE) * 0.05)
    x[20000:20100] = 0.9  # a loud spike
    out = render._limit(x.copy(), 0.5)
    assert np.abs(out).max() <= 0.5 + 1e-6
    assert np.array_equal(out[:15000], x[:15000])  # far from the spike nothing changes
    assert np.abs(out[20000:20100]).max() > 0.45  # the spike is limited, not muted
    quiet = 0.3 * x
    assert np.array_equal(render._limit(quiet.copy(), 0.5), quiet)  # below the ceiling: untouched


def test_chunked_processing_equals_whole_array(monkeypatch):
    rng = np.random.default_rng(0)
    x = (0.2 * rng.standard_normal((200_000, 2))).astype(np.float32)
    monkeypatch.setattr(loudness, "CHUNK", 1 << 30)  # the one chunk size: meters, limiter, PCM conversion
    whole = render._limit(x.copy(), 0.5), loudness.true_peak_dbtp(x), loudness.integrated_loudness(x)
    monkeypatch.setattr(loudness, "CHUNK", 30_011)  # boundaries everywhere, off every grid
    chunked = render._limit(x.copy(), 0.5), loudness.true_peak_dbtp(x), loudness.integrated_loudness(x, chunk=30_011)
    assert np.array_equal(render._to_pcm16(x), np.round(np.clip(x * 32767.0, -32768, 32767)).astype(np.int16))
    assert np.array_equal(whole[0], chunked[0]) and np.abs(chunked[0]).max() <= 0.5
    assert whole[1] == pytest.approx(chunked[1], abs=1e-9)
    assert whole[2] == pytest.approx(chunked[2], abs=1e-9)


def _pedalled_midi(path: Path, seconds: float) -> None:
    """Chords every 4/3 s under a sustain pedal changed with each chord, and a melody that strikes the
    same key again while the pedal still holds it: what the parts of a render have to get right."""
    import pretty_midi

    _make_midi(path, seconds)
    pm = pretty_midi.PrettyMIDI(str(path))
    piano = pm.instruments[0]
    t = 0.0
    while t < seconds - 0.5:
        piano.control_changes += [pretty_midi.ControlChange(64, 0, t), pretty_midi.ControlChange(64, 127, t + 0.05)]
        piano.notes.append(pretty_midi.Note(velocity=70, pitch=79, start=t + 0.3, end=t + 0.5))
        piano.notes.append(pretty_midi.Note(velocity=70, pitch=79, start=t + 0.9, end=t + 1.1))  # struck again
        t += 4 / 3
    pm.write(str(path))


def test_render_parts_keep_every_note_whole_and_the_state_everywhere(tmp_path):
    _pedalled_midi(tmp_path / "p.mid", 62.0)
    events = [(int(round(t * SAMPLE_RATE)), m) for t, m in render._midi_events(tmp_path / "p.mid")]
    n = int(62.0 * SAMPLE_RATE)
    parts = render.render_parts(events, n)
    assert len(parts) == render.RENDER_PARTS  # 62 s: four parts of 15.5 s
    assert all(start % render.SYNTH_BLOCK == 0 for start, _ in parts) and parts[0][0] == 0
    n_notes = sum(1 for _, m in events if m.type == "note_on" and m.velocity > 0)
    assert sum(1 for _, p in parts for _, m in p if m.type == "note_on" and m.velocity > 0) == n_notes
    pedal = [(at, m.value) for at, m in events if m.type == "control_change"]
    for start, part in parts:
        assert [(at, m.value) for at, m in part if m.type == "control_change"] == pedal  # the state, everywhere
        open_keys = {}
        for at, m in part:
            if m.type == "note_on" and m.velocity > 0:
                open_keys[m.note] = at
            elif render._is_note(m):
                assert m.note in open_keys  # every note-off is its own note-on's, in the same part
                del open_keys[m.note]
        assert not open_keys
        # A part's notes start in it, or continue a key struck in it within the guard.
        firsts = [at for at, m in part if m.type == "note_on" and m.velocity > 0]
        assert min(firsts) >= start
    assert render.render_parts(events[:40], int(20.0 * SAMPLE_RATE))[0][0] == 0
    assert len(render.render_parts(events, int(20.0 * SAMPLE_RATE))) == 1  # under 2 x 15 s: one part


def test_parts_synthesised_ahead_give_the_same_wav(tmp_path):
    """render.PartsAhead: parts offered while the piece was written are used when the finished piece has
    exactly those parts (same WAV bytes as a render without them) and ignored when a note differs."""
    import pretty_midi

    # An arpeggio over 12 keys, each struck again only after 6 s: no key joins an earlier part (with the
    # pedalled piece above every key does, so no part could be done before the piece is complete).
    whole = pretty_midi.PrettyMIDI(initial_tempo=120)
    piano = pretty_midi.Instrument(program=0)
    for i in range(int(61.5 / 0.5)):
        pitch = 55 + (i * 7) % 12
        piano.notes.append(pretty_midi.Note(velocity=60 + i % 20, pitch=pitch, start=0.5 * i, end=0.5 * i + 0.4))
    whole.instruments.append(piano)
    whole.write(str(tmp_path / "p.mid"))
    options = render.RenderOptions()
    plain = render.render_midi(tmp_path / "p.mid", tmp_path / "plain.wav", 62.0, options)
    assert plain["parts_ahead"] == 0

    def up_to(seconds: float, bump: float | None = None):
        """The piece as written up to `seconds` (notes after it not yet there); bump: one note changed."""
        part = pretty_midi.PrettyMIDI(str(tmp_path / "p.mid"))
        piano = part.instruments[0]
        piano.notes = [n for n in piano.notes if n.start < seconds]
        if bump is not None:
            next(n for n in piano.notes if n.start >= bump).velocity += 1
        return part

    def done_ahead(parts: render.PartsAhead) -> render.PartsAhead:
        """As after generation: the offers have run, and the parts they started are synthesised."""
        for offer in list(parts.offers):
            offer.result()
        for synthesis in list(parts.started.values()):
            synthesis.result()
        return parts

    ahead = render.PartsAhead(62.0, options)
    for written_s in (21.0, 40.0):  # the first two of four 15.5 s parts become ready, one at a time
        ahead.offer(lambda s=written_s: up_to(s), written_s)
    assert not ahead.wants(40.0) and ahead.wants(62.0)
    done_ahead(ahead)
    info = render.render_midi(tmp_path / "p.mid", tmp_path / "ahead.wav", 62.0, options, ahead=ahead)
    ahead.close()
    assert info["parts_ahead"] == 2
    assert (tmp_path / "ahead.wav").read_bytes() == (tmp_path / "plain.wav").read_bytes()

    changed = render.PartsAhead(62.0, options)  # part 0 written with one note louder than it ends up
    changed.offer(lambda: up_to(40.0, bump=5.0), 40.0)
    info = render.render_midi(tmp_path / "p.mid", tmp_path / "changed.wav", 62.0, options, ahead=done_ahead(changed))
    changed.close()
    assert info["parts_ahead"] == 1  # part 1 as it ends up; part 0 synthesised again
    assert (tmp_path / "changed.wav").read_bytes() == (tmp_path / "plain.wav").read_bytes()

    # The thread ahead still busy when the render starts (here: held): what it has not begun is not
    # waited for; the render synthesises those parts itself, to the same bytes.
    busy = render.PartsAhead(62.0, options)
    release = threading.Event()
    held = busy.pool.submit(release.wait, 60)
    busy.offer(lambda: up_to(40.0), 40.0)
    try:
        info = render.render_midi(tmp_path / "p.mid", tmp_path / "busy.wav", 62.0, options, ahead=busy)
        assert not held.done()  # the render did not wait for the thread ahead
    finally:
        release.set()
        busy.close()
    assert info["parts_ahead"] == 0
    assert (tmp_path / "busy.wav").read_bytes() == (tmp_path / "plain.wav").read_bytes()


def test_render_in_parts_sounds_as_one_synthesizer(tmp_path, monkeypatch):
    """The parts added up against one synthesizer over the whole piece. Dry: equal to float rounding
    except where a key let go more than RESTRIKE_GUARD_S earlier is struck again across a cut (its old
    voice's faint release). With reverb the wet signal differs in the phase of the reverb's delay-line
    modulation (about -30 dB RMS here), which changes neither the loudness nor the envelope."""
    _pedalled_midi(tmp_path / "p.mid", 62.0)
    sf = render.find_soundfont()
    n = int(62.0 * SAMPLE_RATE)
    parts = {reverb: render._synthesize(tmp_path / "p.mid", sf, n, reverb) for reverb in (False, True)}
    monkeypatch.setattr(render, "RENDER_PARTS", 1)
    whole = {reverb: render._synthesize(tmp_path / "p.mid", sf, n, reverb) for reverb in (False, True)}

    def rms(x):
        return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))

    def envelope_db(x, hop=SAMPLE_RATE // 10):  # energy per 100 ms
        m = len(x) // hop * hop
        return 10 * np.log10(np.square(x[:m], dtype=np.float64).reshape(-1, hop, 2).mean(axis=(1, 2)) + 1e-12)

    dry_parts, dry = parts[False], whole[False]
    assert np.abs(dry).max() > 0.05
    assert np.abs(dry_parts - dry).max() < 0.01 * np.abs(dry).max()
    assert 20 * np.log10(rms(dry_parts - dry) / rms(dry)) < -50
    wet_parts, wet = parts[True], whole[True]
    assert loudness.integrated_loudness(wet_parts) == pytest.approx(loudness.integrated_loudness(wet), abs=0.05)
    env_parts, env = envelope_db(wet_parts), envelope_db(wet)
    audible = env > env.max() - 40
    assert np.abs(env_parts - env)[audible].max() < 0.5


def test_render_bytes_do_not_depend_on_the_thread_count(tmp_path, monkeypatch):
    _pedalled_midi(tmp_path / "p.mid", 40.0)
    monkeypatch.setattr(render, "render_threads", lambda: 1)
    render.render_midi(tmp_path / "p.mid", tmp_path / "one.wav", 40.0)
    monkeypatch.setattr(render, "render_threads", lambda: 3)
    render.render_midi(tmp_path / "p.mid", tmp_path / "three.wav", 40.0)
    assert (tmp_path / "one.wav").read_bytes() == (tmp_path / "three.wav").read_bytes()


def test_find_soundfont_order_and_licence_filter(tmp_path, monkeypatch):
    monkeypatch.delenv(render.SOUNDFONT_ENV, raising=False)
    with pytest.raises(MissingDependencyError):
        render.find_soundfont(str(tmp_path / "missing.sf2"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError):
        render.find_soundfont(str(tmp_path / "notes.txt"))
    mine = tmp_path / "Mine.sf2"
    mine.write_bytes(b"RIFF")
    monkeypatch.setenv(render.SOUNDFONT_ENV, str(mine))
    assert render.find_soundfont() == mine.resolve()
    assert render.find_soundfont(str(mine)) == mine.resolve()
    monkeypatch.delenv(render.SOUNDFONT_ENV)
    repo = tmp_path / "repo_sf"
    repo.mkdir()
    (repo / "TimGM6mb.sf2").write_bytes(b"RIFF")  # GPL-2: never picked automatically
    monkeypatch.setattr(render, "REPO_SOUNDFONT_DIR", repo)
    monkeypatch.setattr(render, "SYSTEM_SOUNDFONTS", (tmp_path / "none.sf2",))
    with pytest.raises(MissingDependencyError, match="fluid-soundfont-gm"):
        render.find_soundfont()
    (repo / "Piano.sf3").write_bytes(b"x")
    assert render.find_soundfont().name == "Piano.sf3"


# --------------------------------------------------------------------------------------- mux


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    src = ["-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=4"]
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25"]
    v = {name: d / name for name in ("plain.mp4", "speech.mp4", "silent.mp4", "vp8.webm", "rotated.mp4")}
    _ffmpeg(*src, *x264, str(v["plain.mp4"]))
    # The "original sound": nothing for 2 s, then a 300 Hz tone at about -27 dBFS RMS (speech-like level).
    tone = f"sine=f={ORIG_HZ}:d=4,volume=0.5,volume=enable='lt(t,2)':volume=0"
    _ffmpeg(*src, "-f", "lavfi", "-i", tone, *x264, "-c:a", "aac", "-shortest", str(v["speech.mp4"]))
    _ffmpeg(*src, "-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo", *x264, "-c:a", "aac", "-t", "4",
            str(v["silent.mp4"]))
    _ffmpeg(*src, "-f", "lavfi", "-i", f"sine=f={ORIG_HZ}:d=4", "-c:v", "libvpx", "-b:v", "200k",
            "-c:a", "libvorbis", str(v["vp8.webm"]))
    _ffmpeg("-i", str(v["plain.mp4"]), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(v["rotated.mp4"]))
    return v


@pytest.fixture(scope="module")
def music_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("music") / "music.wav"
    t = np.arange(int(4.0 * SAMPLE_RATE)) / SAMPLE_RATE
    _write_wav(path, 0.2 * np.sin(2 * np.pi * MUSIC_HZ * t))
    return path


def test_audio_is_audible(videos):
    assert mux_mod.audio_is_audible(videos["speech.mp4"], _probe(videos["speech.mp4"]))
    assert not mux_mod.audio_is_audible(videos["silent.mp4"], _probe(videos["silent.mp4"]))
    assert not mux_mod.audio_is_audible(videos["plain.mp4"], _probe(videos["plain.mp4"]))


@pytest.mark.parametrize("name", ["plain.mp4", "speech.mp4", "rotated.mp4", "vp8.webm"])
@pytest.mark.parametrize("mode", ["replace", "keep", "duck"])
def test_mux_duration_audio_and_video_copy(videos, music_wav, tmp_path, name, mode):
    src = videos[name]
    info = _probe(src)
    before = src.read_bytes()
    out = tmp_path / "out.mp4"
    res = mux_mod.mux(src, music_wav, out, info, mode)
    got = _probe(out)
    assert abs(got.duration_s - info.duration_s) <= 0.1
    assert got.has_audio and got.audio_codec == "aac" and got.audio_channels == 2
    assert res["mode_used"] == (mode if info.has_audio else "replace")
    if info.video_codec == "h264":
        assert res["video_copied"] and got.video_codec == "h264"
        assert _video_hash(out) == _video_hash(src)  # the bitstream itself, not a re-encode
        assert got.rotation == info.rotation  # the display matrix survives: portrait stays portrait
    else:
        assert not res["video_copied"] and got.video_codec == "h264" and "re-encoded" in res["note"]
    assert abs(res["duration_s"] - info.duration_s) <= 0.1
    assert np.sqrt(np.mean(_decode_mono(out) ** 2)) > 0.01  # the music is there
    assert src.read_bytes() == before  # input untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def _ffprobe_movie(path: Path) -> tuple[float | None, tuple[str, ...]]:
    data = _ffprobe(path)
    duration = data.get("format", {}).get("duration")
    return (None if duration is None else float(duration)), tuple(s["codec_type"] for s in data["streams"])


def _box(kind: bytes, payload: bytes, wide: bool = False) -> bytes:
    if wide:  # size 1, then the 64-bit size
        return struct.pack(">I4sQ", 1, kind, 16 + len(payload)) + payload
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _track(handler: bytes) -> bytes:
    hdlr = _box(b"hdlr", bytes(4) + bytes(4) + handler + bytes(12) + b"\0")
    return _box(b"trak", _box(b"tkhd", bytes(84)) + _box(b"mdia", _box(b"mdhd", bytes(24)) + hdlr))


def test_the_written_file_is_checked_in_process_with_what_ffprobe_reads(videos, music_wav, tmp_path, monkeypatch):
    """core.mp4 reads an MP4's duration and stream kinds from its movie header as ffprobe reports them
    (faststart or header last, 64-bit box sizes, a version-1 header); a fragmented file, garbage, a file
    cut short and Matroska read as None, and mux then asks ffprobe: the same result."""
    from bgmgen.core import mp4

    written = tmp_path / "out.mp4"
    res = mux_mod.mux(videos["speech.mp4"], music_wav, written, _probe(videos["speech.mp4"]), "keep")
    header_last = tmp_path / "last.mp4"
    _ffmpeg("-i", str(written), "-c", "copy", str(header_last))
    fragmented = tmp_path / "frag.mp4"
    _ffmpeg("-i", str(written), "-c", "copy", "-movflags", "frag_keyframe+empty_moov", str(fragmented))
    assert written.read_bytes().index(b"moov") < written.read_bytes().index(b"mdat")
    assert header_last.read_bytes().index(b"mdat") < header_last.read_bytes().index(b"moov")
    for path in (written, header_last, videos["plain.mp4"]):
        movie = mp4.read_movie(path)
        duration, kinds = _ffprobe_movie(path)
        assert movie.duration_s == pytest.approx(duration, abs=1e-6) and movie.kinds == kinds, path.name
    assert res["duration_s"] == pytest.approx(_ffprobe_movie(written)[0], abs=1e-6)

    # version 1 (64-bit) movie header, a moov box with a 64-bit size, a subtitle and a timecode track
    mvhd = _box(b"mvhd", b"\1\0\0\0" + bytes(16) + struct.pack(">IQ", 90000, 90000 * 12 + 4500) + bytes(80))
    synthetic = tmp_path / "v1.mp4"
    synthetic.write_bytes(_box(b"ftyp", b"isom" + bytes(4)) + _box(b"moov", mvhd + _track(b"vide") + _track(b"soun")
                                                                   + _track(b"subt") + _track(b"tmcd"), wide=True)
                          + _box(b"mdat", bytes(32)))
    assert mp4.read_movie(synthetic) == mp4.Movie(12.05, ("video", "audio", "subtitle", "data"))
    many = tmp_path / "many.mp4"  # every track is read, however many (the top-level walk alone is capped)
    many.write_bytes(_box(b"ftyp", b"isom" + bytes(4)) + _box(b"moov", mvhd + _track(b"vide") * 80 + _track(b"soun")))
    assert mp4.read_movie(many).kinds == ("video",) * 80 + ("audio",)
    data = written.read_bytes()
    cut_short = tmp_path / "cut.mp4"
    cut_short.write_bytes(data[:data.index(b"moov") + 100])  # ends inside the movie header
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"CORRUPT" * 10)
    for path in (fragmented, cut_short, garbage, pipe_to_mkv(written, tmp_path / "a.mkv"), tmp_path / "missing.mp4"):
        assert mp4.read_movie(path) is None, path.name

    # mux asks ffprobe where the header does not read, and still refuses a file without audio
    monkeypatch.setattr(mux_mod, "read_movie", lambda path: None)
    again = mux_mod.mux(videos["speech.mp4"], music_wav, tmp_path / "again.mp4", _probe(videos["speech.mp4"]), "keep")
    assert again["duration_s"] == res["duration_s"]
    monkeypatch.setattr(mux_mod, "read_movie", lambda path: mp4.Movie(4.0, ("video",)))
    with pytest.raises(BgmgenError, match="without audio"):
        mux_mod.mux(videos["speech.mp4"], music_wav, tmp_path / "none.mp4", _probe(videos["speech.mp4"]), "keep")
    assert not (tmp_path / "none.mp4").exists()


def test_mux_mkv_with_51_audio_and_an_awkward_path(music_wav, tmp_path):
    """H.264 in Matroska is copied into MP4; 5.1 original sound is mixed down to stereo; a file name
    with a colon, spaces and non-ASCII letters is read as a file, not as a protocol."""
    src = tmp_path / "clip 1: café.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=30:d=3", "-f", "lavfi", "-i", f"sine=f={ORIG_HZ}:d=3",
            "-filter_complex", "[1:a]pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0[a]", "-map", "0:v", "-map", "[a]",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", f"file:{src}")
    info = _probe(src)
    assert info.audio_channels == 6
    out = tmp_path / "out: scored.mp4"
    res = mux_mod.mux(src, music_wav, out, info, "duck")
    got = _probe(out)
    assert res["video_copied"] and _video_hash(out) == _video_hash(src)
    assert got.audio_channels == 2 and abs(got.duration_s - info.duration_s) <= 0.1
    y = _decode_mono(out)
    assert _band_db(y, ORIG_HZ) > _band_db(y, MUSIC_HZ) - 30  # the original is in the mix


def test_mix_falls_back_to_music_only_when_the_original_cannot_be_mixed(videos, music_wav, tmp_path):
    # as if the probe had seen an audio stream ffmpeg cannot use
    info = dataclasses.replace(_probe(videos["plain.mp4"]), has_audio=True)
    res = mux_mod.mux(videos["plain.mp4"], music_wav, tmp_path / "o.mp4", info, "duck")
    assert res["mode_used"] == "replace" and "could not be mixed" in res["note"]
    assert _probe(tmp_path / "o.mp4").audio_codec == "aac"


def test_mux_nonzero_start_pts_keeps_sync(tmp_path):
    """MPEG-TS starts at 1.4 s, and here the audio starts 0.5 s after the video: the output starts at 0
    and the original sound stays where it was relative to the picture."""
    src = tmp_path / "late.ts"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=4", "-itsoffset", "0.5", "-f", "lavfi",
            "-i", f"sine=f={ORIG_HZ}:d=3.5,volume=enable='lt(t,2)':volume=0", "-c:v", "libx264",
            "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "mpegts", str(src))
    info = _probe(src)
    assert info.start_time_s > 1.0
    silence = tmp_path / "silence.wav"
    _write_wav(silence, np.zeros(int(info.duration_s * SAMPLE_RATE)))
    res = mux_mod.mux(src, silence, tmp_path / "out.mp4", info, "keep")
    assert res["video_copied"] and abs(res["duration_s"] - info.duration_s) <= 0.1
    y = _decode_mono(tmp_path / "out.mp4")
    onset = np.argmax(np.abs(y) > 0.01) / SAMPLE_RATE
    assert onset == pytest.approx(2.5, abs=0.05)  # 0.5 s offset + 2 s of silence in the tone


def test_rotation_metadata_is_real(videos):
    assert _probe(videos["rotated.mp4"]).rotation in (90, -90, 270)


def test_duck_lowers_music_only_while_the_original_sounds(videos, music_wav, tmp_path):
    src = videos["speech.mp4"]
    info = _probe(src)
    quiet, loud = slice(int(0.5 * SAMPLE_RATE), int(1.8 * SAMPLE_RATE)), slice(int(2.6 * SAMPLE_RATE), int(3.8 * SAMPLE_RATE))
    level = {}
    for mode in ("keep", "duck"):
        mux_mod.mux(src, music_wav, tmp_path / f"{mode}.mp4", info, mode)
        y = _decode_mono(tmp_path / f"{mode}.mp4")
        level[mode] = (_band_db(y[quiet], MUSIC_HZ), _band_db(y[loud], MUSIC_HZ), _band_db(y[loud], ORIG_HZ))
    keep_drop = level["keep"][0] - level["keep"][1]
    duck_drop = level["duck"][0] - level["duck"][1]
    assert abs(keep_drop) < 1.0  # keep: the music level does not depend on the original
    assert duck_drop > 6.0, level  # duck: the music steps aside while the original sounds
    assert abs(level["keep"][2] - level["duck"][2]) < 1.0  # the original itself is not touched
    assert level["keep"][2] > level["keep"][1] - 20  # and it is present in the mix


def test_mux_errors_are_one_line(videos, music_wav, tmp_path):
    info = _probe(videos["plain.mp4"])
    with pytest.raises(InputError):
        mux_mod.mux(videos["plain.mp4"], music_wav, tmp_path / "o.mp4", info, "loud")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav at all")
    with pytest.raises(BgmgenError) as err:
        mux_mod.mux(videos["plain.mp4"], bad, tmp_path / "o.mp4", info, "replace")
    assert "\n" not in str(err.value) and "ffmpeg" in str(err.value)
    assert not (tmp_path / "o.mp4").exists() and not list(tmp_path.glob(".tmp-*"))


def test_mux_reads_and_writes_awkward_relative_names_as_files(videos, music_wav, tmp_path, monkeypatch):
    """Relative names that start with a dash or look like a protocol reach ffmpeg and ffprobe as
    `file:` URLs: read and written as local files, never as options or network addresses."""
    monkeypatch.chdir(tmp_path)
    for name in ("-odd name.mp4", "http:clip.mp4"):
        shutil.copy(videos["speech.mp4"], tmp_path / name)
        info = _probe(tmp_path / name)
        assert mux_mod.audio_is_audible(name, info)
        out = "-scored " + name
        res = mux_mod.mux(name, music_wav, out, info, "duck")
        assert res["mode_used"] == "duck" and res["video_copied"]
        assert abs(res["duration_s"] - info.duration_s) <= 0.1
        assert _video_hash(tmp_path / out) == _video_hash(tmp_path / name)


# ------------------------------------------------------------------------------------ ffmpeg runner


def test_ffmpeg_commands_are_argument_lists_with_file_urls():
    graph = ff.input_file("-a.mp4")["a:0"].filter("volume", "0.5").output("-", format="null")
    args = ff.command(graph, loglevel="error", overwrite=True)
    assert args[:6] == [ff.FFMPEG, "-nostdin", "-hide_banner", "-nostats", "-v", "error"]
    assert all(isinstance(a, str) for a in args) and args[-1] == "-y"
    assert args[args.index("-i") + 1] == f"file:{Path('-a.mp4').resolve()}"
    assert ff.command(["-i", "x", "-f", "null", "-"])[4:] == ["-i", "x", "-f", "null", "-"]


def test_ffmpeg_runner_errors_are_one_line(videos, tmp_path, monkeypatch):
    missing = tmp_path / "gone.mp4"
    with pytest.raises(ff.FFmpegError) as err:
        ff.run(ff.input_file(missing).output("-", format="null"), name=missing.name, what="reading it")
    msg = str(err.value)
    assert msg.startswith("gone.mp4: ffmpeg failed while reading it: ") and "No such file" in msg and "\n" not in msg
    assert err.value.returncode != 0 and "No such file" in err.value.stderr
    assert ff.run(ff.input_file(missing).output("-", format="null"), name="x", what="y", check=False).returncode != 0
    with pytest.raises(ff.FFmpegTimeout, match=r"^clip: ffmpeg timed out while waiting$"):
        ff.run(["-f", "lavfi", "-i", "anullsrc", "-f", "null", "-"], name="clip", what="waiting", timeout=0.5)
    garbage = tmp_path / "notes.mp4"
    garbage.write_bytes(b"not a video\n" * 100)
    with pytest.raises(ff.FFmpegError, match="notes.mp4: ffprobe cannot read it: .*Invalid data"):
        ff.probe(garbage)
    monkeypatch.setattr(ff, "FFMPEG", "no-such-ffmpeg")
    monkeypatch.setattr(ff, "FFPROBE", "no-such-ffprobe")
    graph = ff.input_file(videos["plain.mp4"]).output("-", format="null")
    with pytest.raises(MissingDependencyError, match="no-such-ffmpeg not found on PATH; install it"):
        ff.run(graph, name="x", what="y")
    with pytest.raises(MissingDependencyError, match="no-such-ffmpeg not found"):
        next(ff.pipe(graph, 1024))
    with pytest.raises(MissingDependencyError, match="no-such-ffprobe not found"):
        ff.probe(videos["plain.mp4"])
    assert ff.version("no-such-ffprobe") is None


def test_ffmpeg_probe_pipe_and_version(videos):
    data = ff.probe(videos["speech.mp4"])
    assert {s["codec_type"] for s in data["streams"]} == {"video", "audio"}
    assert float(data["format"]["duration"]) == pytest.approx(4.0, abs=0.1)
    packets = ff.probe(videos["plain.mp4"], select_streams="v:0", show_entries="packet=pts_time")["packets"]
    assert len(packets) == 100  # 4 s at 25 fps
    graph = ff.input_file(videos["plain.mp4"])["v:0"].filter("scale", 8, 8).output("pipe:1", format="rawvideo",
                                                                                    pix_fmt="gray")
    lines: list[str] = []
    blocks = list(ff.pipe(graph, 64 * 30, stderr_lines=lines))
    assert [len(b) for b in blocks] == [64 * 30] * 3 + [64 * 10] and lines == []
    assert ff.version("ffprobe") and ff.version() == ff.version("ffmpeg")


def test_only_the_runner_starts_processes():
    """Every ffmpeg / ffprobe call goes through bgmgen.core.ffmpeg: no other module imports subprocess."""
    package = Path(ff.__file__).resolve().parents[1]
    users = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                   if "import subprocess" in p.read_text(encoding="utf-8"))
    assert users == ["core/ffmpeg.py"]


# ------------------------------------------------------------------------------------ report


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_report_png(tmp_path):
    from bgmgen.app.report import step_times, write_report
    from bgmgen.music.plan import PlanOptions, make_plan
    from bgmgen.video.result import Keyframes

    rng = np.random.default_rng(0)
    duration, cuts = 12.5, [3.0, 6.5, 10.0]
    analysis = analysis_for(duration, cuts, path="/videos/holiday.mp4", onsets=[(1.0, 0.4), (7.0, 0.9)])
    analysis = dataclasses.replace(analysis, motion=np.clip(0.5 + 0.5 * np.sin(analysis.motion_times_s), 0, 1))
    # one per shot at display aspect, as the analysis delivers them (Keyframes.frames)
    keyframes = Keyframes(rng.integers(0, 255, size=(len(analysis.shots), 90, 160, 3), dtype=np.uint8))
    plan = make_plan(analysis, PlanOptions(tempo=96, mood="calm"))
    beats = plan.beat_times_s[:-1]
    n_steps = plan.n_beats * STEPS_PER_BEAT
    roll = np.zeros((2, n_steps, 128), np.float32)
    for t in range(0, n_steps, 2):
        p = 55 + (t * 7) % 24
        roll[0, t, p] = 1
        roll[1, t:t + 3, p] = 1
    np.testing.assert_allclose(step_times(plan, n_steps)[::STEPS_PER_BEAT][: len(beats)], beats)
    png = tmp_path / "report.png"
    write_report(png, analysis, plan, roll, keyframes.frames)
    w, h = _png_size(png)
    assert (w, h) == (1400, 900)
    assert 30_000 < png.stat().st_size < 3_000_000
    write_report(tmp_path / "no_pictures.png", analysis, plan, roll)  # keyframes not delivered: no pictures
    assert png.stat().st_size > (tmp_path / "no_pictures.png").stat().st_size + 20_000  # the pictures are drawn
    write_report(tmp_path / "empty.png", analysis, plan, np.zeros_like(roll), keyframes.frames)  # no notes
    assert _png_size(tmp_path / "empty.png") == (1400, 900)
    from PIL import Image

    def colour_rows(path, rgb, column=None):  # rows holding the colour (anywhere, or in one column)
        img = np.asarray(Image.open(path).convert("RGB")).astype(int)
        hit = np.abs(img - np.array(rgb)).max(axis=2) <= 12
        return np.flatnonzero(hit.any(axis=1) if column is None else hit[:, column])

    note = np.round(255 - 0.55 * (255 - np.array([0x4C, 0x72, 0xB0])))  # the note colour over white
    def in_roll(rows):  # the piano roll is the lower half (the random keyframes are above)
        return rows[rows > h // 2]

    assert len(in_roll(colour_rows(png, note))) > 50 and len(in_roll(colour_rows(tmp_path / "empty.png", note))) == 0
    # the cut lines run through all three panels, from the top of the first to the bottom of the last
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    red = (img[..., 0] > 150) & (img[..., 1] < 120) & (img[..., 2] < 120)
    column = int(np.argmax(red.sum(axis=0)))
    rows = np.flatnonzero(red[:, column])
    assert len(rows) > 0.6 * h and rows.min() < 0.15 * h and rows.max() > 0.85 * h


def test_replaced_sound_decodes_close_to_the_rendered_wav(rendered, videos, tmp_path):
    """The AAC in the video is the rendered piano as faithfully as 192 kbit/s allows: no intensity
    stereo, which drops the upper bands' stereo detail (with it a 10-minute render decoded at an SNR
    of 32.6 dB against the WAV; without, 42.0 dB)."""
    from scipy.io import wavfile

    _, wav, _ = rendered
    out = tmp_path / "out.mp4"
    mux_mod.mux(videos["plain.mp4"], wav, out, _probe(videos["plain.mp4"]), "replace")
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", f"file:{out}", "-map", "0:a:0", "-ac", "2",
                          "-ar", str(SAMPLE_RATE), "-f", "s16le", "-"], capture_output=True, check=True).stdout
    got = np.frombuffer(raw, np.int16).reshape(-1, 2).astype(np.float64)
    want = wavfile.read(wav)[1].astype(np.float64)
    # Aligned as they are (the MP4's edit list removes the encoder's delay); 0.1 s left out at each end,
    # where the codec's first and last frames are.
    edge, n = SAMPLE_RATE // 10, min(len(got), len(want)) - SAMPLE_RATE // 10
    a, b = want[edge:n], got[edge:n]
    snr = lambda x, y: 10 * np.log10((x ** 2).sum() / ((y - x) ** 2).sum())  # noqa: E731
    assert snr(a, b) > 38.0  # 40.4 dB here; 33.0 with intensity stereo
    assert snr(a[:, 0] - a[:, 1], b[:, 0] - b[:, 1]) > 36.0  # the side channel, the stereo image: 38.9 dB here
