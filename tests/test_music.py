"""Music side: POP909 parsing, per-beat controls, the denoiser's masks, the sampler, plan, MIDI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from media import analysis_for  # tests/media.py (see conftest)

from bgmgen.core.constants import STEPS_PER_BEAT, WINDOW_STEPS
from bgmgen.data.pop909 import find_origin_step, parse_key, parse_phrases, parse_structure_chords
from bgmgen.music import controls as C

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
POP909, STRUCTURE = SHARED / "pop909", SHARED / "pop909-structure"


# ---------------------------------------------------------------- POP909 parsing
def test_parse_structure_chords_slash_bass_and_no_chord():
    text = "C:maj/3 [0, 4, 7] 0 2 \nN [] -1 1 \nA:min7 [0, 4, 7, 9] 9 1 \n"
    root, chroma, bass = parse_structure_chords(text)
    assert list(root) == [0, 0, -1, 9]
    assert list(bass) == [4, 4, -1, 9]  # C/E: bass E
    assert chroma[0].tolist() == [1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    assert chroma[2].sum() == 0


def test_parse_key_and_phrases():
    assert parse_key("Gb:maj") == (6, 0)
    assert parse_key("C#:min") == (1, 1)
    assert parse_phrases("i4A4B8o3") == [("i", 4), ("A", 4), ("B", 8), ("o", 3)]


def test_find_origin_step_recovers_shift():
    structure = np.array([0, 4, 6, 16, 20, 30, 33, 40])
    midi = structure + 76
    shift, match = find_origin_step(midi, structure)
    assert shift == 76 and match == 1.0


@pytest.mark.skipif(not POP909.exists(), reason="POP909 not available")
def test_load_song_is_aligned_with_its_chords():
    from bgmgen.data.pop909 import load_song

    song = load_song(POP909, STRUCTURE, "001")
    assert song.n_bars == 71 and abs(song.bpm - 90) < 0.5
    steps, pitches = np.nonzero(song.onset)
    beats = steps // STEPS_PER_BEAT
    has = song.chord_root[beats] >= 0
    ratio = song.chord_chroma[beats[has], pitches[has] % 12].mean()
    assert ratio > 0.7  # a misaligned grid gives about 0.3-0.4


# ---------------------------------------------------------------- controls
def _controls(n: int) -> C.BeatControls:
    return C.BeatControls(
        density=np.full(n, 4.0), positions=np.full(n, 2.0), accent=np.full(n, 2.0),
        chord_root=np.zeros(n, np.int64), chord_chroma=np.tile([1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0], (n, 1)),
        chord_bass=np.zeros(n, np.int64), key_tonic=np.zeros(n, np.int64), key_mode=np.zeros(n),
        register=np.full(n, 62.0), phrase_id=np.repeat(np.arange(n // 16 + 1), 16)[:n],
        phrase_pos=np.zeros(n), melodic=np.ones(n))


def test_rhythm_from_onsets_counts():
    onset = np.zeros((8, 128), np.uint8)
    onset[0, [60, 64, 67]] = 1  # beat 0: a triad on step 0 ...
    onset[2, 72] = 1  # ... and one note on step 2 -> 4 onsets, 2 positions, accent 3
    onset[5, 50] = 1  # beat 1: one onset
    density, positions, accent = C.rhythm_from_onsets(onset)
    assert density.tolist() == [4, 1] and positions.tolist() == [2, 1] and accent.tolist() == [3, 1]


def test_groove_from_onsets_and_music_controls():
    onset = np.zeros((8, 128), np.uint8)
    onset[0, [60, 64]] = 1
    onset[2, 72] = 1
    onset[7, 50] = 1
    assert C.groove_from_onsets(onset).tolist() == [[1, 0, 1, 0], [0, 0, 0, 1]]
    c = C.music_controls(onset, register=np.full(2, 60.0), chord_root=np.zeros(2), chord_chroma=np.zeros((2, 12)),
                         chord_bass=np.zeros(2), key_tonic=3, key_mode=1, phrase_id=np.zeros(2),
                         phrase_pos=np.zeros(2), melodic=np.ones(2))
    assert c.density.tolist() == [3, 1] and c.positions.tolist() == c.groove.sum(1).tolist() == [2, 1]
    assert c.key_tonic.tolist() == [3, 3] and c.slice(1, 2).groove.tolist() == [[0, 0, 0, 1]]


def test_layouts_place_the_groove_in_the_rhythm_group():
    one, two = C.LAYOUTS[1], C.LAYOUTS[2]
    assert (one.dim, two.dim) == (62, 66) and C.CONTROL_DIM == 62
    c = _controls(32)
    c.groove = np.tile([1, 0, 1, 0], (32, 1)).astype(np.float32)
    f1, f2 = C.encode(c, layout=one), C.encode(c, layout=two)
    assert f2[:, 3:7].tolist() == c.groove.tolist()
    # every other group is the same values shifted by the four groove columns
    for g in ("harmony", "key", "structure"):
        assert np.array_equal(f1[:, one.slices[g]], f2[:, two.slices[g]]), g
    assert np.array_equal(f1[:, :3], f2[:, :3])
    assert len(two.columns(C.DYNAMIC_GROUPS)) == 8 and len(one.columns(C.DYNAMIC_GROUPS)) == 4
    dropped = C.encode(c, {"rhythm": False}, layout=two)
    assert dropped[:, two.slices["rhythm"]].sum() == 0
    c.groove = None
    with pytest.raises(ValueError, match="groove"):
        C.encode(c, layout=two)


def test_encode_groups_and_transpose():
    c = _controls(32)
    f = C.encode(c)
    assert f.shape == (32, C.CONTROL_DIM)
    assert f[:, C.PRESENT_OFFSET:].min() == 1
    dropped = C.encode(c, {"harmony": False})
    assert dropped[:, C.GROUP_SLICES["harmony"]].sum() == 0
    assert dropped[0, C.PRESENT_OFFSET + C.GROUPS.index("harmony")] == 0
    up = c.transposed(2)
    assert up.chord_root[0] == 2 and up.chord_chroma[0].nonzero()[0].tolist() == [2, 6, 9]


# ---------------------------------------------------------------- denoiser
def _tiny(**kw):
    from bgmgen.music.model import Denoiser, DenoiserConfig

    torch.manual_seed(0)
    return Denoiser(DenoiserConfig(**{"d_model": 32, "n_layers": 1, "n_heads": 2, "architecture": "roll",
                                      "controls_layout": 1, **kw})).eval()


def _randomise(model):
    with torch.no_grad():  # zero-initialised output layers would hide every dependency
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def test_segment_mask_isolates_segments():
    """SAC-Att: with the mask, the output of a step depends only on its segment's tokens (+-1 beat)."""
    x = torch.randn(1, 2, WINDOW_STEPS, 128)
    t = torch.tensor([0.5])
    seg = torch.tensor([[0] * 16 + [1] * 16])
    cond = torch.from_numpy(C.encode(_controls(32)))[None]
    cond2 = cond.clone()
    cond2[0, 24:, :3] = 1.0  # change the rhythm of beats 24..31 (segment 1) only
    for masked in (True, False):
        m = _randomise(_tiny(segment_mask=masked))
        with torch.no_grad():
            a, b = m(x, t, cond, seg), m(x, t, cond2, seg)
        first = (a - b)[..., : 16 * STEPS_PER_BEAT - 8, :].abs().max().item()  # steps of beats 0..13
        assert (first == 0.0) == masked


def test_hard_selector_switches_token_groups():
    x = torch.randn(1, 2, WINDOW_STEPS, 128)
    seg = torch.zeros(1, 32, dtype=torch.long)
    cond = torch.from_numpy(C.encode(_controls(32)))[None]
    rhythm_changed = cond.clone()
    rhythm_changed[..., :3] += 0.5
    m = _randomise(_tiny(selector="hard", selector_threshold=0.2))
    with torch.no_grad():
        early = (m(x, torch.tensor([0.8]), cond, seg) - m(x, torch.tensor([0.8]), rhythm_changed, seg)).abs().max()
        late = (m(x, torch.tensor([0.1]), cond, seg) - m(x, torch.tensor([0.1]), rhythm_changed, seg)).abs().max()
    assert early.item() == 0.0 and late.item() > 0.0  # rhythm (dynamic) tokens steer only the late steps


def test_training_loss_decreases_and_inpainting_keeps_known_region():
    from bgmgen.music.diffusion import ddim_sample, training_loss

    m = _tiny()
    m.train()
    roll = torch.zeros(4, 2, WINDOW_STEPS, 128)
    roll[:, 0, ::4, 60] = 1
    roll[:, 1, 1::4, 60] = 1
    cond = torch.from_numpy(C.encode(_controls(32)))[None].expand(4, -1, -1)
    seg = torch.zeros(4, 32, dtype=torch.long)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        loss = training_loss(m, roll, cond, seg, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    m.eval()
    known = (torch.rand(1, 2, WINDOW_STEPS, 128) < 0.05).float()
    mask = torch.zeros(1, 1, WINDOW_STEPS, 1, dtype=torch.bool)
    mask[:, :, :32] = True
    out = ddim_sample(m, cond[:1], seg[:1], steps=4, known=known, known_mask=mask,
                      generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[:, :, :32], known[:, :, :32])


# ---------------------------------------------------------------- generation, plan, MIDI
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from bgmgen.music.generate import load_music_model
    from bgmgen.music.weights import save_model

    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    m = _randomise(_tiny())
    save_model(m, path, {"config": m.config.to_dict(), "step": 0})
    return load_music_model(str(path))


def test_window_starts_cover_the_piece():
    from bgmgen.music.generate import window_starts

    assert window_starts(8) == [0]
    assert window_starts(20) == [0, 6, 12]
    assert window_starts(21) == [0, 6, 12, 13]


def test_generate_is_deterministic_and_sized(tiny_model):
    from bgmgen.music.generate import generate_from_controls

    c = _controls(23 * 4 + 2)  # 23.5 bars: several windows and a partial bar
    a = generate_from_controls(tiny_model, c, seed=3, steps=3)
    b = generate_from_controls(tiny_model, c, seed=3, steps=3)
    assert a.shape == (2, len(c) * STEPS_PER_BEAT, 128)
    assert np.array_equal(a, b)
    # sustain only continues sounding notes
    onset, sustain = a[0] > 0, a[1] > 0
    assert not sustain[0].any()  # nothing sounds before the first step
    prev = onset[:-1] | sustain[:-1]
    assert not (sustain[1:] & ~prev).any()


def _analysis(duration, cuts, motion_level=0.5):
    """A real VideoAnalysis (tests/media.py): steady motion, one visual onset at 1 s, mostly happy."""
    return analysis_for(duration, cuts, motion_level, onsets=[(1.0, 0.9)], mood_scores={"happy": 0.7, "calm": 0.3})


@pytest.mark.parametrize("duration", [0.6, 1.0, 2.5, 7.3, 31.0, 605.0])
def test_plan_fills_the_video_exactly(duration):
    from bgmgen.music.plan import make_plan

    p = make_plan(_analysis(duration, [duration / 3]))
    beat = 60 / p.bpm
    # beat k at start_s + k * beat; the final chord takes the last beat and what is left of the clip
    assert p.beat_times_s[-1] == duration and 0 <= p.start_s < beat
    assert np.allclose(p.beat_times_s[:-1], p.start_s + beat * np.arange(p.n_beats))
    ending = duration - p.beat_times_s[-2]
    assert beat - 1e-9 <= ending < 2 * beat or p.n_beats == 1
    if duration >= 5:
        assert ending <= 0.25 * duration
    if duration >= 0.8:  # two beats at the fastest tempo: at least one beat of music before the final chord
        assert p.n_beats >= 2
    assert p.final_beats == 1 and p.tempo["ending_s"] == pytest.approx(ending, abs=1e-3)
    assert len(p.controls) == p.n_beats == len(p.density)
    assert p.sections[0]["start_beat"] == 0 and p.sections[-1]["end_beat"] == p.n_beats


@pytest.mark.parametrize("duration", [1.0, 1.7])
def test_very_short_clip_is_a_gesture_that_starts_and_ends_musically(tiny_model, duration):
    """Under 2 s: at least one beat of music that starts with an onset on the first sixteenth, on the
    dominant, then the tonic held to the end (one beat plus the release)."""
    from bgmgen.music.generate import SamplerSettings, generate_roll
    from bgmgen.music.midi import roll_to_midi
    from bgmgen.music.plan import make_plan

    p = make_plan(_analysis(duration, []))
    assert p.n_beats >= 2 and p.start_s == 0.0
    assert p.controls.groove[0, 0] == 1 and p.accent.shape == (p.n_beats,)
    assert (p.controls.chord_root[:-1] == (p.key_tonic + 7) % 12).all() and p.controls.chord_root[-1] == p.key_tonic
    pm = roll_to_midi(generate_roll(tiny_model, p, seed=0, settings=SamplerSettings(steps=3)), p)
    notes = pm.instruments[0].notes
    assert min(n.start for n in notes) == 0.0 and abs(pm.get_end_time() - duration) < 0.02
    last = p.beat_times_s[-2]
    final = {n.pitch % 12 for n in notes if abs(n.start - last) < 1e-6}
    assert p.key_tonic in final and duration - last <= 2 * 60 / p.bpm


def test_calm_and_busy_clips_get_slow_sparse_and_fast_dense_music():
    """Energy from the absolute motion level: a still clip is slow and sparse, a busy one fast and dense,
    whatever the per-clip curve looks like; fast cutting alone makes a clip lively too."""
    from bgmgen.music.plan import make_plan

    still = make_plan(_analysis(12.0, [], motion_level=0.02))
    busy = make_plan(_analysis(12.0, [], motion_level=0.95))
    montage = make_plan(_analysis(12.0, list(np.arange(0.8, 11.5, 0.8)), motion_level=0.02))
    assert still.energy["energy"] < 0.1 and busy.energy["energy"] > 0.8
    assert still.bpm < montage.bpm and still.bpm < busy.bpm  # (the montage's tempo also fits its cuts)
    assert still.tempo["target_bpm"] < montage.tempo["target_bpm"] < busy.tempo["target_bpm"]
    nps = [p.density[:-1].sum() / p.beat_times_s[-2] for p in (still, montage, busy)]
    assert nps[0] < nps[1] < nps[2], nps
    assert np.mean(still.energy["bar_onset_sixteenths"]) <= 6 and np.mean(busy.energy["bar_onset_sixteenths"]) >= 14
    # POP909's ranges: tempo 60..120 from the energy (the mood pulls a little), notes per onset 1..4
    for p in (still, montage, busy):
        assert 55 <= p.tempo["energy_bpm"] <= 125
        per_onset = p.density[:-1][p.controls.positions[:-1] > 0] / p.controls.positions[:-1][p.controls.positions[:-1] > 0]
        assert per_onset.min() >= 1.0 - 1e-6 and per_onset.max() <= 4.0 + 1e-6


def test_tempo_lock_puts_the_periodic_motion_on_beats():
    """A periodic motion (period 0.7 s, onsets at 0.3 + 0.7 k) sets the beat and beat 0's time."""
    from bgmgen.music.plan import PlanOptions, make_plan

    onsets = [(0.3 + 0.7 * k, 0.9) for k in range(14)]
    a = dataclasses.replace(analysis_for(10.0, [], 0.6, onsets=onsets),
                            periodicity={"period_s": 0.7, "phase_s": 0.3, "strength": 0.8, "n_cycles": 14.3})
    p = make_plan(a)
    assert p.tempo["locked"] and min(abs(p.bpm * 0.7 / 60 - r) / r for r in (0.5, 1, 2)) < 0.011
    beat = 60 / p.bpm
    pos = (np.array([t for t, _ in onsets]) - p.start_s) / beat
    assert np.abs(pos - np.round(pos)).max() < 0.2 and 0 <= p.start_s < beat
    assert abs(p.beat_times_s[0] - p.start_s) < 1e-9 and p.to_json()["tempo"]["lock"]["period_s"] == 0.7
    unlocked = make_plan(analysis_for(10.0, [], 0.6, onsets=onsets))
    assert not unlocked.tempo["locked"] and unlocked.start_s == 0.0
    fixed = make_plan(a, PlanOptions(tempo=70))  # the user's tempo wins over a lock
    assert not fixed.tempo["locked"] and abs(fixed.bpm - 70) <= 2.1


def test_plan_grooves_repeat_each_bar_within_a_section():
    from bgmgen.music.plan import PlanOptions, make_plan

    p = make_plan(_analysis(40.0, [13.0, 26.0]), PlanOptions(seed=2))
    g, c = p.controls.groove, p.controls
    assert g.shape == (p.n_beats, 4)
    assert np.array_equal(c.positions, g.sum(1)) and (c.density >= c.positions).all()
    varied = 0
    for sec in p.sections:
        a, b = sec["start_beat"], sec["end_beat"]
        first_bar = a // 4
        for beat in range(a + 4, min(b, p.n_beats - p.final_beats)):  # the final chord's beat is midi.py's
            if p.accent[beat] >= 0.5 or p.accent[beat - 4] >= 0.5:  # accents add an onset on the beat
                continue
            phrase_end = {(beat // 4 - first_bar) % 4 == 3, (beat // 4 - 1 - first_bar) % 4 == 3}
            if phrase_end == {False}:  # bars 1-3 of each 4 in a section repeat exactly
                assert np.array_equal(g[beat], g[beat - 4]), (sec, beat)
            else:
                varied += not np.array_equal(g[beat], g[beat - 4])
    assert varied > 0  # the 4th bar of 4 is a variation
    assert (g[p.accent >= 0.5, 0] == 1).all()


def test_plan_puts_sections_on_cuts_and_ends_on_the_tonic():
    from bgmgen.music.plan import PlanOptions, make_plan

    cuts = [4.0, 9.5, 15.2]
    p = make_plan(_analysis(24.0, cuts), PlanOptions(seed=5))
    beat = 60 / p.bpm
    for c in cuts:
        assert min(abs(s["start_s"] - c) for s in p.sections) <= beat + 1e-6
    assert p.controls.chord_root[-1] == p.key_tonic
    assert p.controls.chord_root[-p.final_beats - 1] == (p.key_tonic + 7) % 12  # dominant before the end
    faster = make_plan(_analysis(24.0, cuts, motion_level=1.0), PlanOptions(seed=5))
    assert faster.density.mean() > p.density.mean()
    fixed = make_plan(_analysis(24.0, cuts), PlanOptions(tempo=100, seed=5))
    assert abs(fixed.bpm - 100) / 100 <= 0.03


def test_roll_to_midi_lasts_exactly_and_ends_on_tonic_chord(tiny_model, tmp_path):
    from bgmgen.music.generate import SamplerSettings, generate_roll
    from bgmgen.music.midi import roll_to_midi, write_midi
    from bgmgen.music.plan import make_plan

    p = make_plan(_analysis(13.7, [5.0]))
    settings = SamplerSettings(steps=3)
    roll = generate_roll(tiny_model, p, seed=0, settings=settings)
    pm = roll_to_midi(roll, p)
    assert abs(pm.get_end_time() - 13.7) <= 0.05
    assert abs(pm.get_tempo_changes()[1][0] - p.bpm) < 0.01
    last_start = max(n.start for n in pm.instruments[0].notes)
    final = [n.pitch % 12 for n in pm.instruments[0].notes if abs(n.start - last_start) < 1e-6]
    assert p.key_tonic in final
    write_midi(pm, tmp_path / "a.mid")
    write_midi(roll_to_midi(generate_roll(tiny_model, p, seed=0, settings=settings), p), tmp_path / "b.mid")
    assert (tmp_path / "a.mid").read_bytes() == (tmp_path / "b.mid").read_bytes()


def _few_songs(tmp_path, songs=("001", "017", "018", "023", "060", "080")) -> tuple[Path, Path]:
    """A POP909 and a POP909-structure folder holding a few of the real songs (links: nothing copied),
    training and validation ones: the grid cache of the whole dataset takes a minute or two to build."""
    data, structure = tmp_path / "pop909", tmp_path / "pop909-structure"
    for src, dst in ((POP909, data), (STRUCTURE, structure)):
        dst.mkdir()
        for song in songs:
            (dst / song).symlink_to(src / song, target_is_directory=True)
    return data, structure


@pytest.mark.skipif(not POP909.exists(), reason="POP909 not available")
def test_training_resumes_bit_for_bit(tmp_path, monkeypatch):
    """A run stopped at step 2 and resumed to step 4 ends with the same weights as a straight run."""
    from safetensors.torch import load_file

    from bgmgen.training.train import TrainOptions, train

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # this small dataset's grid cache
    data, structure = _few_songs(tmp_path)
    common = dict(data=str(data), structure=str(structure), steps=4, batch_size=2, d_model=32, n_layers=1,
                  n_heads=2, ckpt_every=2, eval_every=1000, warmup=2, threads=1, quiet=True)
    train(TrainOptions(out=str(tmp_path / "straight"), **common), log=lambda *a: None)
    train(TrainOptions(out=str(tmp_path / "resumed"), stop_after=2, **common), log=lambda *a: None)
    train(TrainOptions(out=str(tmp_path / "resumed"), resume=True, **common), log=lambda *a: None)
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = (tmp_path / "resumed" / "train_log.jsonl").read_text()
    assert '"step": 4' in log


def test_warm_start_from_layout_1_computes_the_same_until_trained(tmp_path):
    """`bgmgen train --init-from` a layout-1 model: the layout-2 model starts with the groove columns
    at zero, so it gives exactly the old outputs (the groove then only adds what training teaches)."""
    from bgmgen.music.model import Denoiser, DenoiserConfig
    from bgmgen.music.weights import save_model
    from bgmgen.training.train import warm_start_state

    old = _randomise(_tiny(controls_layout=1))
    path = tmp_path / "old.safetensors"
    save_model(old, path, {"config": old.config.to_dict(), "step": 1})
    old_fp16 = Denoiser(old.config).eval()  # what the file holds (fp16 on disk)
    old_fp16.load_state_dict({k: v.half().float() for k, v in old.state_dict().items()})
    new = Denoiser(DenoiserConfig(d_model=32, n_layers=1, n_heads=2, controls_layout=2, architecture="roll")).eval()
    new.load_state_dict(warm_start_state(path, new))
    c = _controls(32)
    c.groove = (np.arange(32 * 4).reshape(32, 4) % 3 == 0).astype(np.float32)
    x, t = torch.randn(1, 2, WINDOW_STEPS, 128), torch.tensor([0.4])
    seg = torch.from_numpy(c.phrase_id.astype(np.int64))[None]
    with torch.no_grad():
        want = old_fp16(x, t, torch.from_numpy(C.encode(c, layout=C.LAYOUTS[1]))[None], seg)
        got = new(x, t, torch.from_numpy(C.encode(c, layout=C.LAYOUTS[2]))[None], seg)
    assert torch.allclose(want, got, atol=1e-5)
    # and the groove columns are really wired in: once they get weight, the groove changes the output
    with torch.no_grad():
        groove_cols = [new.dyn_cols.index(c) for c in range(3, 3 + C.GROOVE_SIZE)]  # rhythm: 3 values, then the groove
        new.dyn_embed[0].weight[:, groove_cols] += 0.5
        moved = new(x, t, torch.from_numpy(C.encode(c, layout=C.LAYOUTS[2]))[None], seg)
    assert not torch.allclose(moved, got, atol=1e-3)
    wrong = Denoiser(DenoiserConfig(d_model=16, n_layers=1, n_heads=2, controls_layout=2, architecture="roll"))
    with pytest.raises(ValueError, match="shape"):
        warm_start_state(path, wrong)


def test_strict_groove_puts_onsets_exactly_on_the_groove(tiny_model):
    """Default sampling imposes the groove: onsets only on its sixteenths and at least one on each;
    with loose_groove the model may leave it (the tiny random model does)."""
    from bgmgen.music.generate import generate_from_controls

    c = _controls(10 * 4)  # 10 bars: two windows, so the inpainted overlap is covered too
    bar = np.array([1, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0], np.float32)
    c.groove = np.tile(bar, 10).reshape(-1, 4)
    strict = generate_from_controls(tiny_model, c, seed=0, steps=4)
    has_onset = strict[0].any(axis=1)
    assert np.array_equal(has_onset, c.groove.reshape(-1) > 0)
    loose = generate_from_controls(tiny_model, c, seed=0, steps=4, strict_groove=False)
    assert not np.array_equal(loose[0].any(axis=1), c.groove.reshape(-1) > 0)
    # a dropped rhythm group means no groove to impose
    free = generate_from_controls(tiny_model, c, seed=0, steps=4, guidance=1.0, present={"rhythm": False})
    assert not np.array_equal(free[0].any(axis=1), c.groove.reshape(-1) > 0)


def test_plan_groove_thickens_with_the_motion():
    """The groove's onsets per bar follow the picture's energy (motion rising over one long shot)."""
    from bgmgen.music.plan import make_plan

    a = _analysis(32.0, [])
    rising = np.clip(a.motion_times_s / 32.0, 0.0, 1.0)
    p = make_plan(dataclasses.replace(a, motion=rising, motion_abs=20 * rising))
    bars = p.n_beats // 4
    per_bar = p.controls.groove[: bars * 4].reshape(bars, 16).sum(1)
    assert per_bar[-2] > per_bar[1] + 2, per_bar
    from scipy.stats import spearmanr

    assert spearmanr(np.arange(bars), per_bar).correlation > 0.8, per_bar


def test_midi_pedal_changes_with_the_chords(tiny_model):
    """CC 64 goes down after each chord change and up just before the next one; it ends up."""
    from bgmgen.music.generate import SamplerSettings, generate_roll
    from bgmgen.music.midi import PEDAL_CATCH_S, PEDAL_LIFT_S, SUSTAIN_PEDAL, pedal_change_times, roll_to_midi
    from bgmgen.music.plan import make_plan

    p = make_plan(_analysis(13.7, [5.0]))
    pm = roll_to_midi(generate_roll(tiny_model, p, seed=0, settings=SamplerSettings(steps=3)), p)
    cc = [(c.time, c.value) for c in pm.instruments[0].control_changes if c.number == SUSTAIN_PEDAL]
    assert cc[0] == (PEDAL_CATCH_S, 127) and cc[-1][1] == 0 and abs(cc[-1][0] - (13.7 - PEDAL_LIFT_S)) < 1e-6
    values = [v for _, v in cc]
    assert all(a != b for a, b in zip(values, values[1:]))  # strictly alternating down / up
    changes = pedal_change_times(p, p.beat_times_s[p.n_beats - p.final_beats])
    beat_s = 60 / p.bpm
    roots = p.controls.chord_root
    # every chord change (root change) is a pedal change, and the pedal is up across it
    for b in range(1, p.n_beats - p.final_beats):
        if roots[b] != roots[b - 1]:
            t = b * beat_s
            assert any(abs(t - c) < 1e-5 for c in changes), b
            state = [v for time, v in cc if time <= t]
            assert state[-1] == 0, (b, t)
    assert len(changes) >= 4


def test_sampler_defaults_follow_the_model_family():
    """Each model family samples with the guided groups chosen for it on validation songs; what a user
    gives wins, and None means not given."""
    from bgmgen.music.generate import DEFAULT_TEMPERATURE, SamplerSettings

    assert SamplerSettings.with_overrides("roll").guide_groups == ("rhythm",)
    assert SamplerSettings.with_overrides("melody-accompaniment").guide_groups == ("rhythm", "harmony")
    assert SamplerSettings.with_overrides("roll", guide_groups=("harmony",)).guide_groups == ("harmony",)
    given = SamplerSettings.with_overrides("melody-accompaniment", temperature=None, steps=7)
    assert given.temperature == DEFAULT_TEMPERATURE and given.steps == 7
    assert given.to_json()["guide_groups"] == ["rhythm", "harmony"]
