"""render: MIDI -> WAV with FluidSynth (pyfluidsynth) and a freely licensed SoundFont.

The MIDI events are fed to the synthesizer by this module (no FluidSynth player, no audio driver),
so the output depends only on the MIDI file, the SoundFont and the options: the same input gives
the same bytes. A long piece is cut into parts (`render_parts`) that synthesise on parallel threads,
one synthesizer each, and are added up in a fixed order. The synthesizer is read as 32-bit float
(raw FluidSynth output is quiet, peak ~0.04, so 16-bit output would throw away resolution before
normalisation).

Post-processing, in order: trim/pad to exactly `duration_s`, fade in/out, gain to the target
integrated loudness (ITU-R BS.1770-4, gated), a look-ahead peak limiter only when the gain would
push the true peak above the ceiling, a final true-peak check (4x oversampling) that lowers the gain
if needed, 16-bit PCM. The reported figures are measured on the samples actually written; the meters
(integrated loudness, true peak) are in `loudness`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmgen.audio import loudness
from bgmgen.audio.dsp import sliding_mean, sliding_min, write_wav_pcm16
from bgmgen.audio.loudness import (
    PCM16_SCALE,
    integrated_loudness,
    sample_magnitude,
    sample_peak_dbfs,
    true_peak_dbtp,
)
from bgmgen.core.assets import checkout_soundfont_dir
from bgmgen.core.constants import SAMPLE_RATE, TARGET_LUFS, TRUE_PEAK_DBTP
from bgmgen.core.errors import BgmgenError, InputError, MissingDependencyError
from bgmgen.core.files import atomic_path
from bgmgen.core.threads import lower_thread_priority, process_cpus

N_CHANNELS = 2  # stereo output
SOUNDFONT_ENV = "BGMGEN_SOUNDFONT"
SOUNDFONT_SUFFIXES = (".sf2", ".sf3")
REPO_SOUNDFONT_DIR = checkout_soundfont_dir()
SYSTEM_SOUNDFONTS = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),  # fluid-soundfont-gm, MIT
    Path("/usr/share/sounds/sf3/MuseScore_General.sf3"),  # musescore-general-soundfont*, MIT
    Path("/usr/share/sounds/sf3/MuseScore_General_Full.sf3"),
    Path("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3"),
)
# Found automatically only if the file name says it is one of these MIT SoundFonts. default-GM.sf2 is
# a Debian alternatives link that may point at TimGM6mb (GPL-2), so it is never picked up implicitly.
ALLOWED_SYSTEM_NAMES = ("fluidr3_gm", "musescore_general")
EXCLUDED_NAMES = ("timgm", "default-gm")
INSTALL_HINT = (
    "install one with `apt-get install fluid-soundfont-gm` (MIT; or run scripts/bootstrap), "
    f"or pass --soundfont PATH / set {SOUNDFONT_ENV}=PATH to an .sf2/.sf3 file"
)

RENDER_BLOCK = 4096  # samples per synthesizer read between events
SYNTH_BLOCK = 64  # FluidSynth's own block: events take effect on its boundaries
RENDER_PARTS = 4  # a long render is synthesised in this many parts, in parallel (render_parts)
RENDER_PART_S = 15.0  # ... each at least this long
RESTRIKE_GUARD_S = 3.0  # a key's voice may still sound this long after its release begins
SUSTAIN_PEDAL_CC = 64
TAIL_SILENCE = 1e-6  # a part ends when its notes are over and a block peaks below this (-120 dBFS)
LIMITER_LOOKAHEAD_S = 0.005
LIMITER_HOLD_S = 0.050
SAMPLE_PEAK_MARGIN_DB = 0.5  # the limiter aims this far below the true-peak ceiling
LIMITER_PASSES = 8
LOUDNESS_TOLERANCE_LU = 0.05
MIN_FADE_FRACTION = 1.0 / 3.0  # a fade never takes more than a third of a very short clip
GENERAL_MIDI_PIANO = 0
DRUM_CHANNEL = 9
DRUM_BANK = 128


@dataclass(frozen=True)
class RenderOptions:
    soundfont: str | None = None
    target_lufs: float = TARGET_LUFS
    true_peak_dbtp: float = TRUE_PEAK_DBTP
    fade_in_s: float = 0.05
    fade_out_s: float = 1.0
    reverb: bool = True


# --------------------------------------------------------------------------------------- SoundFont


def _is_excluded(path: Path) -> bool:
    names = (path.name.lower(), Path(os.path.realpath(path)).name.lower())
    return any(bad in name for name in names for bad in EXCLUDED_NAMES)


def _check_soundfont_file(path: Path, source: str) -> Path:
    if not path.is_file():
        raise MissingDependencyError(f"{path}: SoundFont ({source}) does not exist; {INSTALL_HINT}")
    if path.suffix.lower() not in SOUNDFONT_SUFFIXES:
        raise InputError(f"{path}: not a SoundFont (.sf2/.sf3 expected, from {source}); {INSTALL_HINT}")
    return path.resolve()


def find_soundfont(explicit: str | None = None) -> Path:
    """The SoundFont to render with: explicit path, $BGMGEN_SOUNDFONT, the repo's soundfonts/ folder,
    then Debian's FluidR3_GM.sf2 and MuseScore_General*.sf3 (both MIT). Never TimGM6mb/default-GM."""
    if explicit:
        return _check_soundfont_file(Path(explicit).expanduser(), "--soundfont")
    env = os.environ.get(SOUNDFONT_ENV)
    if env:
        return _check_soundfont_file(Path(env).expanduser(), f"${SOUNDFONT_ENV}")
    if REPO_SOUNDFONT_DIR.is_dir():
        local = sorted(
            p for p in REPO_SOUNDFONT_DIR.iterdir()
            if p.suffix.lower() in SOUNDFONT_SUFFIXES and p.is_file() and not _is_excluded(p)
        )
        if local:
            return local[0].resolve()
    for candidate in SYSTEM_SOUNDFONTS:
        if candidate.is_file() and not _is_excluded(candidate):
            real = Path(os.path.realpath(candidate))
            if any(ok in real.name.lower() for ok in ALLOWED_SYSTEM_NAMES):
                return real
    raise MissingDependencyError(f"no SoundFont found; {INSTALL_HINT}")


# ------------------------------------------------------------------------------------ synthesis


def _import_fluidsynth():
    try:
        import fluidsynth  # noqa: PLC0415  (heavy / native: imported on use)
    except ImportError as err:  # pyfluidsynth raises ImportError when libfluidsynth is missing
        raise MissingDependencyError(
            f"FluidSynth is not usable ({err}); install it with `apt-get install libfluidsynth3` "
            "(or run scripts/bootstrap)"
        ) from None
    except OSError as err:
        raise MissingDependencyError(
            f"libfluidsynth failed to load ({err}); reinstall it with `apt-get install --reinstall libfluidsynth3`"
        ) from None
    return fluidsynth


def _float_writer(fluidsynth):
    """fluid_synth_write_float through pyfluidsynth's own ctypes helper (None if the library lacks it)."""
    from ctypes import POINTER, c_float, c_int, c_void_p  # noqa: PLC0415

    fn = fluidsynth.cfunc(
        "fluid_synth_write_float", c_int,
        ("synth", c_void_p, 1), ("len", c_int, 1),
        ("lout", POINTER(c_float), 1), ("loff", c_int, 1), ("lincr", c_int, 1),
        ("rout", POINTER(c_float), 1), ("roff", c_int, 1), ("rincr", c_int, 1),
    )
    if fn is None:
        return None

    def write(synth, n: int) -> np.ndarray:
        buf = np.zeros(n * N_CHANNELS, dtype=np.float32)
        ptr = buf.ctypes.data_as(POINTER(c_float))
        fn(synth.synth, n, ptr, 0, 2, ptr, 1, 2)
        return buf.reshape(n, N_CHANNELS)

    return write


def _quiet_fluidsynth_log(fluidsynth) -> None:
    """Silence FluidSynth's warning/info/debug lines (our own errors say what matters)."""
    from ctypes import c_int, c_void_p  # noqa: PLC0415

    set_log = fluidsynth.cfunc(
        "fluid_set_log_function", c_void_p, ("level", c_int, 1), ("fun", c_void_p, 1), ("data", c_void_p, 1)
    )
    if set_log is None:
        return
    for level in (2, 3, 4):  # FLUID_WARN, FLUID_INFO, FLUID_DBG
        set_log(level, None, None)


def _midi_events(midi_path: Path, data: bytes | None = None) -> list[tuple[float, object]]:
    """(absolute seconds, message) for every channel message, tempo map applied by mido; from the file,
    or from `data` (the bytes of a MIDI file) when given."""
    import io  # noqa: PLC0415

    import mido  # noqa: PLC0415

    try:
        midi = mido.MidiFile(str(midi_path)) if data is None else mido.MidiFile(file=io.BytesIO(data))
    except (OSError, EOFError, ValueError, KeyError, IndexError) as err:
        raise InputError(f"{midi_path}: cannot read the MIDI file ({err or type(err).__name__}); regenerate it") from None
    events: list[tuple[float, object]] = []
    now = 0.0
    for msg in midi:  # merged tracks; msg.time is the delta in seconds
        now += msg.time
        if not msg.is_meta:
            events.append((now, msg))
    return events


def _new_synth(fluidsynth, soundfont: Path, reverb: bool):
    """A FluidSynth synthesizer with the SoundFont's piano on every channel (drum kit on channel 10)."""
    synth = fluidsynth.Synth(
        gain=1.0,
        samplerate=float(SAMPLE_RATE),
        **{
            "synth.reverb.active": 1 if reverb else 0,
            "synth.chorus.active": 0,  # chorus on a piano sounds detuned
            "synth.cpu-cores": 1,  # one thread per synthesizer: deterministic voice mixing
            # Above the default 256 voices: a long pedalled passage can hold more, and stealing voices
            # would cut notes (and cut them differently in a part than in one whole render).
            "synth.polyphony": 1024,
            "synth.dynamic-sample-loading": 1,  # load only the presets we play (FluidR3 is 148 MB)
        },
    )
    sfid = synth.sfload(str(soundfont))
    if sfid == -1:
        synth.delete()
        raise InputError(f"{soundfont}: FluidSynth cannot load this SoundFont; {INSTALL_HINT}")
    for chan in range(16):
        if chan == DRUM_CHANNEL:
            synth.program_select(chan, sfid, DRUM_BANK, 0)
        else:
            synth.program_select(chan, sfid, 0, GENERAL_MIDI_PIANO)
    return synth


def _send(synth, msg) -> None:
    kind = msg.type
    if kind == "note_on":
        if msg.velocity > 0:
            synth.noteon(msg.channel, msg.note, msg.velocity)
        else:
            synth.noteoff(msg.channel, msg.note)
    elif kind == "note_off":
        synth.noteoff(msg.channel, msg.note)
    elif kind == "control_change":
        synth.cc(msg.channel, msg.control, msg.value)
    elif kind == "program_change":
        synth.program_change(msg.channel, msg.program)
    elif kind == "pitchwheel":
        synth.pitch_bend(msg.channel, msg.pitch)


def _is_note(msg) -> bool:
    return msg.type in ("note_on", "note_off")


def render_length(duration_s: float) -> int:
    """Samples of a render lasting `duration_s` seconds."""
    return max(1, int(round(duration_s * SAMPLE_RATE)))


def part_starts(n_samples: int) -> list[int]:
    """First samples of a render's parts: up to RENDER_PARTS of at least RENDER_PART_S, on
    FluidSynth's block grid; they depend on the length alone."""
    n_parts = int(min(RENDER_PARTS, max(1, n_samples // int(RENDER_PART_S * SAMPLE_RATE))))
    return [(n_samples * k // n_parts) // SYNTH_BLOCK * SYNTH_BLOCK for k in range(n_parts)]


def render_parts(events: list[tuple[int, object]], n_samples: int) -> list[tuple[int, list[tuple[int, object]]]]:
    """Cut a render into parts that synthesise independently: [(first sample, events)].

    `events` are (sample, message) in time order. A note belongs to the part its note-on falls in
    (its note-off goes with it, wherever it falls), except that a key struck again while its previous
    note may still sound (held by the pedal, or within RESTRIKE_GUARD_S of its release) stays in that
    note's part: FluidSynth releases a key's old voice when it is struck again, which only happens
    within one synthesizer. Every other message (pedal, program) goes to every part, so each part's
    synthesizer has the state the whole piece would have. Parts start on FluidSynth's 64-sample block
    so their notes land on the grid of one whole render; a piece shorter than 2 x RENDER_PART_S is one
    part. The cut depends only on the piece, never on the machine."""
    starts = part_starts(n_samples)
    parts: list[list[tuple[int, object]]] = [[] for _ in starts]
    guard = int(RESTRIKE_GUARD_S * SAMPLE_RATE)
    pedal_lifts: dict[int, list[int]] = {}  # channel -> samples at which the sustain pedal comes up
    for at, msg in events:
        if msg.type == "control_change" and msg.control == SUSTAIN_PEDAL_CC and msg.value < 64:
            pedal_lifts.setdefault(msg.channel, []).append(at)
    pedal_down: dict[int, bool] = {}
    sounding: dict[tuple[int, int], int] = {}  # (channel, key) -> part of the note now held
    released: dict[tuple[int, int], tuple[int, int]] = {}  # (channel, key) -> (part, may sound until)
    for at, msg in events:
        if not _is_note(msg):
            if msg.type == "control_change" and msg.control == SUSTAIN_PEDAL_CC:
                pedal_down[msg.channel] = msg.value >= 64
            for part in parts:
                part.append((at, msg))
            continue
        key = (msg.channel, msg.note)
        if msg.type == "note_on" and msg.velocity > 0:
            k = sounding.get(key)
            if k is None:
                k = max(i for i, s in enumerate(starts) if s <= max(at, 0))
                previous = released.get(key)
                if previous is not None and at <= previous[1]:
                    k = previous[0]
            sounding[key] = k
        else:
            k = sounding.pop(key, None)
            if k is None:
                continue  # a note-off without a note: nothing sounds to stop
            until = at
            if pedal_down.get(msg.channel):
                until = next((t for t in pedal_lifts.get(msg.channel, ()) if t >= at), n_samples)
            released[key] = (k, until + guard)
        parts[k].append((at, msg))
    return [(s, p) for s, p in zip(starts, parts) if any(_is_note(m) for _, m in p)]


def _synthesize_part(fluidsynth, soundfont: Path, reverb: bool, start: int, events, n_samples: int) -> np.ndarray:
    """Samples [start, end) of one part, as float32 [end - start, 2]: its notes and their tails.

    Messages before `start` only set state (pedal, program). After the part's last note message the
    part ends at the first block whose peak is below TAIL_SILENCE (its release and reverb have died
    away), at the latest at n_samples."""
    synth = _new_synth(fluidsynth, soundfont, reverb)
    try:
        write_float = _float_writer(fluidsynth)
        last_note = max(at for at, msg in events if _is_note(msg))
        blocks: list[np.ndarray] = []
        pos = start

        def advance(to: int) -> bool:
            """Render up to `to`; False once the part is over (past its last note and silent)."""
            nonlocal pos
            to = min(to, n_samples)
            while pos < to:
                n = min(RENDER_BLOCK, to - pos)
                if write_float is not None:
                    block = write_float(synth, n)
                else:  # very old libfluidsynth: 16-bit path
                    block = synth.get_samples(n).reshape(n, N_CHANNELS).astype(np.float32) / 32768.0
                blocks.append(block)
                pos += n
                if pos > last_note and float(np.abs(block).max()) < TAIL_SILENCE:
                    return False
            return pos < n_samples

        going = True
        for at, msg in events:
            if at >= n_samples:
                break
            if at > start and not advance(at):
                going = False
                break
            _send(synth, msg)
        while going and advance(pos + RENDER_BLOCK):
            pass
        return np.concatenate(blocks) if blocks else np.zeros((0, N_CHANNELS), np.float32)
    finally:
        synth.delete()


def render_threads() -> int:
    """Threads the synthesis parts run on: the CPUs this process may use (FluidSynth releases the GIL)."""
    return len(process_cpus())


def _event_samples(midi_path: Path, data: bytes | None = None) -> list[tuple[int, object]]:
    """(sample, message) for every channel message of the MIDI file (or of its bytes `data`)."""
    return [(int(round(t * SAMPLE_RATE)), msg) for t, msg in _midi_events(midi_path, data)]


def _part_key(start: int, events) -> tuple:
    """What a part's audio depends on: its first sample and its messages with their samples."""
    return start, tuple((at, bytes(msg.bin())) for at, msg in events)


AHEAD_NICENESS = 10  # the parts done ahead take the CPU the sampler, the shot checks and the keyframe decode leave


class PartsAhead:
    """Render parts synthesised while the piece is still being written (score.py: during generation,
    on the core the sampler leaves free). `offer(make_midi, final_s)`: the piece so far (a function
    that returns it as pretty_midi, run on this object's thread), of which everything before `final_s`
    seconds is written; the parts that end MARGIN_S before that start. The render (`_synthesize`)
    takes a part from here only when the finished piece has exactly the same part (its start and
    every message, `_part_key`) and synthesises any other: a part's audio depends on nothing but its
    messages (its own synthesizer), so the WAV is the same either way (tested)."""

    MARGIN_S = RESTRIKE_GUARD_S + 2.0  # past a part's end: its notes have ended, no key of it is struck again

    def __init__(self, duration_s: float, options: "RenderOptions"):
        import concurrent.futures  # noqa: PLC0415
        import threading  # noqa: PLC0415

        self.soundfont, self.reverb = find_soundfont(options.soundfont), options.reverb
        self.n_samples = render_length(duration_s)
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fluidsynth-ahead",
                                                          initializer=lower_thread_priority, initargs=(AHEAD_NICENESS,))
        self.lock = threading.Lock()
        self.offers: list[concurrent.futures.Future] = []  # building a piece's parts (quick)
        self.started: dict[tuple, concurrent.futures.Future] = {}  # _part_key -> audio
        self.offered_until = 0  # samples: parts ending before this were offered
        self.used = 0  # parts the render took from here
        starts = part_starts(self.n_samples)
        self.end_of = dict(zip(starts, starts[1:]))  # part start -> end; the last one (the ending) is not done ahead

    def _new_ends(self, final_s: float) -> list[int]:
        ready = int((final_s - self.MARGIN_S) * SAMPLE_RATE)
        return [end for end in self.end_of.values() if self.offered_until < end <= ready]

    def wants(self, final_s: float) -> bool:
        """Whether the piece written up to `final_s` s makes a part ready that no offer has."""
        return bool(self._new_ends(final_s))

    def offer(self, make_midi, final_s: float) -> None:
        """Start the parts that the piece up to `final_s` s makes ready (nothing when none is new).
        make_midi runs on this object's thread: it must not read what the writer changes next."""
        new = self._new_ends(final_s)
        if not new:
            return
        self.offered_until = max(new)
        self.offers.append(self.pool.submit(self._start_parts, make_midi, self.offered_until))

    def _start_parts(self, make_midi, ready: int) -> None:
        import io  # noqa: PLC0415

        buf = io.BytesIO()
        make_midi().write(buf)
        events = _event_samples(Path("<the piece so far>"), buf.getvalue())
        fluidsynth = _import_fluidsynth()
        _quiet_fluidsynth_log(fluidsynth)
        for start, part_events in render_parts(events, self.n_samples):
            end = self.end_of.get(start)
            key = _part_key(start, part_events)
            with self.lock:
                if end is not None and end <= ready and key not in self.started:
                    self.started[key] = self.pool.submit(_synthesize_part, fluidsynth, self.soundfont, self.reverb,
                                                         start, part_events, self.n_samples)

    def claim(self, start: int, events):
        """The synthesis (a Future of the audio) of this part if it was started with exactly these
        messages and is under way or done, else None. The first claim drops whatever is still queued
        (`_drop_queued`)."""
        self._drop_queued()
        with self.lock:
            return self.started.pop(_part_key(start, events), None)

    def _drop_queued(self) -> None:
        """Cancel the offers and the parts this object's one thread has not begun: the render's own
        threads synthesise those parts side by side, instead of waiting for them here one after
        another behind the part under way (on a 10-minute clip the render waited about 3 s for an
        offer queued behind a part, with the other core idle). Waits only for an offer under way (it
        builds the piece's parts: quick)."""
        for offer in self.offers:
            if offer.cancel():
                continue
            try:
                offer.result()
            except Exception:  # the render reads the finished piece itself and says what is wrong
                pass
        self.offers.clear()
        with self.lock:
            for key, synthesis in list(self.started.items()):
                if synthesis.cancel():
                    del self.started[key]

    def close(self) -> None:
        """Drop what was not taken: queued parts are cancelled, one under way finishes unused."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            self.started.clear()


def _synthesize(midi_path: Path, soundfont: Path, n_samples: int, reverb: bool,
                ahead: PartsAhead | None = None) -> np.ndarray:
    """The MIDI file as float32 [n_samples, 2]: its parts (render_parts) synthesised on parallel
    threads, one synthesizer each (or taken from `ahead` when synthesised there with the same
    messages), and added up in a fixed order (so the bytes do not depend on the thread count).
    Synthesis is linear in the notes, so the sum sounds as one synthesizer would; it differs from a
    single synthesizer only in the phase of the reverb's delay-line modulation and in float rounding."""
    import concurrent.futures  # noqa: PLC0415

    fluidsynth = _import_fluidsynth()
    _quiet_fluidsynth_log(fluidsynth)
    parts = render_parts(_event_samples(midi_path), n_samples)
    out = np.zeros((n_samples, N_CHANNELS), dtype=np.float32)
    if not parts:
        return out
    with concurrent.futures.ThreadPoolExecutor(min(render_threads(), len(parts)),
                                               thread_name_prefix="fluidsynth") as pool:
        def synthesize(start: int, part_events):
            return pool.submit(_synthesize_part, fluidsynth, soundfont, reverb, start, part_events, n_samples)

        claimed = [ahead.claim(start, part_events) if ahead else None for start, part_events in parts]
        futures = [synthesize(*part) if done is None else done for part, done in zip(parts, claimed)]
        for part, done, future in zip(parts, claimed, futures):
            try:
                audio = future.result()
            except Exception:
                if done is None:
                    raise
                audio = synthesize(*part).result()  # it failed ahead: here it runs again, or says why
            else:
                if done is not None:
                    ahead.used += 1
            out[part[0]:part[0] + len(audio)] += audio
    return out


# ------------------------------------------------------------------------------- processing


def _fade_curve(n: int) -> np.ndarray:
    return (np.sin(0.5 * np.pi * (np.arange(n, dtype=np.float64) + 0.5) / n) ** 2).astype(np.float32)


def _apply_fades(audio: np.ndarray, fade_in_s: float, fade_out_s: float) -> None:
    n = len(audio)
    limit = int(n * MIN_FADE_FRACTION)
    n_in = min(int(round(max(fade_in_s, 0.0) * SAMPLE_RATE)), limit)
    n_out = min(int(round(max(fade_out_s, 0.0) * SAMPLE_RATE)), limit)
    if n_in > 0:
        audio[:n_in] *= _fade_curve(n_in)[:, None]
    if n_out > 0:
        audio[n - n_out:] *= _fade_curve(n_out)[::-1, None]


def _limit(audio: np.ndarray, ceiling_lin: float) -> np.ndarray:
    """Look-ahead peak limiter, in place on float audio: the gain never lets |sample| exceed
    `ceiling_lin`; ramps over 5 ms, holds 50 ms. Returns `audio`; unchanged below the ceiling.

    Gain at i = min(need) over [i - hold, i + look] (a centred minimum, shifted right), so a dip
    starts `look` samples before a peak and lasts `hold` after it; a centred moving average of
    radius look // 2 then ramps it smoothly and still keeps gain[i] <= need[i]. Computed in chunks
    with enough context that the result equals the whole-array computation."""
    n = len(audio)
    look = max(1, int(LIMITER_LOOKAHEAD_S * SAMPLE_RATE))
    hold = max(look, int(LIMITER_HOLD_S * SAMPLE_RATE))
    half = (hold + look + 1) // 2
    shift = (hold - look) // 2
    radius = look // 2
    margin = half + shift + radius + 1
    gain = np.ones(n, dtype=np.float32)
    limited = False
    chunk = loudness.CHUNK
    for lo in range(0, n, chunk):  # gains from the untouched signal first, then apply
        hi = min(n, lo + chunk)
        a, b = max(0, lo - margin), min(n, hi + margin)
        need = sample_magnitude(audio[a:b])
        if need.max(initial=0.0) <= ceiling_lin:
            continue
        limited = True
        np.maximum(need, 1e-12, out=need)
        np.divide(np.float32(ceiling_lin), need, out=need)
        np.minimum(need, 1.0, out=need)
        g = sliding_min(need, half)
        if shift:
            g[shift:] = g[:-shift].copy()
            g[:shift] = g[shift]
        g = sliding_mean(g, radius)
        np.minimum(g, need, out=g)  # exact guarantee after float rounding
        gain[lo:hi] = g[lo - a:hi - a]
    if limited:
        for lo in range(0, n, chunk):
            audio[lo:lo + chunk] *= gain[lo:lo + chunk, None]
    return audio


def _to_pcm16(audio: np.ndarray) -> np.ndarray:
    pcm = np.empty(audio.shape, dtype=np.int16)
    chunk = loudness.CHUNK
    for lo in range(0, len(audio), chunk):
        seg = audio[lo:lo + chunk] * np.float32(PCM16_SCALE)
        np.round(seg, out=seg)
        np.clip(seg, -32768, 32767, out=seg)
        pcm[lo:lo + chunk] = seg
    return pcm


def _normalise(audio: np.ndarray, target_lufs: float, ceiling_dbtp: float) -> tuple[np.ndarray, dict]:
    """Gain to `target_lufs`, limiting only when needed; returns 16-bit PCM and what was done."""
    lufs = integrated_loudness(audio)
    info = {"raw_lufs": lufs if np.isfinite(lufs) else None, "limited": False}
    if not np.isfinite(lufs):
        return _to_pcm16(audio), info
    ceiling_lin = 10.0 ** ((ceiling_dbtp - SAMPLE_PEAK_MARGIN_DB) / 20.0)
    out = audio  # processed in place: a 10-minute render is 200 MB of float32
    out *= np.float32(10.0 ** ((target_lufs - lufs) / 20.0))
    # Limiting lowers the loudness a little: top the gain up and limit again, ending on a limit.
    for _ in range(LIMITER_PASSES):
        # A sample above the ceiling settles it without oversampling: the true peak is at least as high.
        if sample_peak_dbfs(out) <= ceiling_dbtp and true_peak_dbtp(out) <= ceiling_dbtp:
            break
        info["limited"] = True
        out = _limit(out, ceiling_lin)
        shortfall = target_lufs - integrated_loudness(out)
        if shortfall < LOUDNESS_TOLERANCE_LU:
            break
        out *= np.float32(10.0 ** (shortfall / 20.0))
    else:
        if info["limited"]:
            out = _limit(out, ceiling_lin)  # the passes ran out on a top-up: end on a limit
    pcm = _to_pcm16(out)
    for _ in range(10):  # the guarantee: true peak of the written samples <= ceiling
        tp = true_peak_dbtp(pcm)
        if tp <= ceiling_dbtp:
            break
        out *= np.float32(10.0 ** ((ceiling_dbtp - tp - 0.05) / 20.0))
        pcm = _to_pcm16(out)
    info["true_peak_dbtp"] = tp
    return pcm, info


@dataclass
class RenderedWav:
    """A WAV that `render_wav` wrote: what was done (`info`) and its samples, whose loudness
    `with_loudness` measures (a pass over the whole render: about 0.8 s on 10 minutes, so score.py
    runs it while ffmpeg muxes)."""

    info: dict
    pcm: np.ndarray  # [n, 2] int16, the WAV's samples

    def with_loudness(self, threads: int = loudness.METER_THREADS) -> dict:
        """`info` with "lufs", the integrated loudness of the written samples (None when silent),
        measured on up to `threads` threads."""
        lufs = integrated_loudness(self.pcm, threads=threads)
        return {"lufs": round(float(lufs), 2) if np.isfinite(lufs) else None, **self.info}


def render_midi(midi_path, wav_path, duration_s: float, options: RenderOptions = RenderOptions(),
                ahead: PartsAhead | None = None) -> dict:
    """Render `midi_path` to a stereo 16-bit WAV of exactly `duration_s` seconds at SAMPLE_RATE.
    ahead: parts synthesised while the piece was written (the same WAV with or without them).

    Returns {"lufs", "true_peak_dbtp", "duration_s", "soundfont", "sample_rate", "limited",
    "raw_lufs", "render_s", "parts_ahead"}; "lufs" is None when the MIDI makes no sound.
    """
    return render_wav(midi_path, wav_path, duration_s, options, ahead).with_loudness()


def render_wav(midi_path, wav_path, duration_s: float, options: RenderOptions = RenderOptions(),
               ahead: PartsAhead | None = None) -> RenderedWav:
    """`render_midi` up to the written WAV: its info has every field but "lufs"."""
    t0 = time.perf_counter()
    midi_path = Path(midi_path)
    if not midi_path.is_file():
        raise InputError(f"{midi_path}: MIDI file not found; run the score stage first")
    if not (duration_s > 0 and np.isfinite(duration_s)):
        raise BgmgenError(f"{midi_path}: cannot render a duration of {duration_s!r} s; the video duration is unknown")
    soundfont = find_soundfont(options.soundfont)
    n_samples = render_length(duration_s)
    if ahead is not None and (ahead.n_samples, ahead.reverb, ahead.soundfont) != (n_samples, options.reverb, soundfont):
        ahead = None  # synthesised for another render
    audio = _synthesize(midi_path, soundfont, n_samples, options.reverb, ahead)
    _apply_fades(audio, options.fade_in_s, options.fade_out_s)
    pcm, info = _normalise(audio, options.target_lufs, options.true_peak_dbtp)
    del audio
    tp = info["true_peak_dbtp"] if "true_peak_dbtp" in info else true_peak_dbtp(pcm)
    with atomic_path(wav_path) as tmp:
        write_wav_pcm16(tmp, SAMPLE_RATE, pcm)
    return RenderedWav({
        "true_peak_dbtp": round(float(tp), 2) if np.isfinite(tp) else None,
        "duration_s": len(pcm) / SAMPLE_RATE,
        "n_samples": int(len(pcm)),
        "sample_rate": SAMPLE_RATE,
        "channels": N_CHANNELS,
        "soundfont": str(soundfont),
        "raw_lufs": round(info["raw_lufs"], 2) if info["raw_lufs"] is not None else None,
        "limited": info["limited"],
        "render_s": round(time.perf_counter() - t0, 3),
        "parts_ahead": ahead.used if ahead is not None else 0,
    }, pcm)


def libfluidsynth_version() -> str | None:
    try:
        import ctypes

        import fluidsynth  # noqa: F401  (pyfluidsynth loads the library)

        # getattr: pyfluidsynth's private ctypes handle, not there in every version of it.
        lib = getattr(fluidsynth, "_fl", None)
        if lib is None:
            return None
        a, b, c = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        lib.fluid_version(ctypes.byref(a), ctypes.byref(b), ctypes.byref(c))
        return f"{a.value}.{b.value}.{c.value}"
    except Exception:
        return None
