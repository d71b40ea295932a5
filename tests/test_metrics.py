"""Metrics on small hand-built songs, against values worked out by hand; eval end to end on two
fake POP909-like songs (with and without the realism test); ground truth on real POP909 songs, and
the one reader shared by eval and training, when the dataset is present."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bgmgen.core.errors import InputError
from bgmgen.data import pop909
from bgmgen.data.annotations import parse_chord_label
from bgmgen.data.splits import TEST_SONGS, TRAIN_SONGS, VALID_SONGS, resolve_songs
from bgmgen.eval import metrics as M
from bgmgen.eval import structure as SI
from bgmgen.eval.evaluate import run_eval
from bgmgen.eval.notes import Notes, read_midi_notes, read_pop909_song
from bgmgen.eval.videos import run_video_eval

POP909 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "pop909"
STRUCT = POP909.parent / "pop909-structure"


def N(*rows):
    return Notes.from_list(rows)


# ------------------------------------------------------------------------------------ splits
def test_splits():
    assert len(TEST_SONGS) == 42 and TEST_SONGS[0] == "001" and TEST_SONGS[-1] == "049"
    assert "017" not in TEST_SONGS and "034" not in TEST_SONGS
    assert len(VALID_SONGS) == 43 and VALID_SONGS[0] == "060" and VALID_SONGS[-1] == "900"
    everything = set(TEST_SONGS) | set(VALID_SONGS) | set(TRAIN_SONGS)
    assert len(everything) == 909 == len(TEST_SONGS) + len(VALID_SONGS) + len(TRAIN_SONGS)
    assert resolve_songs("1, 002") == ["001", "002"]


# ------------------------------------------------------------------------------------ PCHE
def test_pche_by_hand():
    # window 0 (beats 0-31): C, E, G, C -> p = (1/2, 1/4, 1/4)
    #   H = -(0.5*log2(0.5) + 2*0.25*log2(0.25)) = 0.5 + 1.0 = 1.5 bits (eps shifts it by ~3e-6)
    # window 1 (beats 32-63): a single D -> H = -1*log2(1 + 1e-6) = -1.4e-6, about 0
    # window 2 holds the last onset (beat 64): incomplete, dropped as in Diff-BGM
    # PCHE = (1.5 + 0) / 2 = 0.75
    notes = N((0, 1, 60, 80), (4, 1, 64, 80), (8, 1, 67, 80), (12, 1, 72, 80),
              (40, 1, 62, 80), (64, 1, 65, 80))
    assert M.pitch_class_histogram_entropy(notes) == pytest.approx(0.75, abs=1e-5)
    # keeping the last window adds H = 0 for the lone F: (1.5 + 0 + 0) / 3 = 0.5
    assert M.pitch_class_histogram_entropy(notes, drop_last=False) == pytest.approx(0.5, abs=1e-5)
    # 12 equally used pitch classes -> log2(12) = 3.585
    chromatic = N(*[(i, 1, 60 + i, 80) for i in range(12)])
    assert M.pitch_class_histogram_entropy(chromatic) == pytest.approx(math.log2(12), abs=1e-4)


# ------------------------------------------------------------------------------------ GPS
def test_gps_by_hand():
    # bar 0: onsets at beats 0 and 2 -> 16th positions {0, 8}
    # bar 1: onset at beat 4          -> {0}
    # bar 2: onsets at beats 8, 10    -> {0, 8}
    # bar 3: last onset (beat 12), never appended (Diff-BGM)
    # pairs: (0,1) XOR=1 -> 15/16; (0,2) XOR=0 -> 1; (1,2) XOR=1 -> 15/16
    # GPS = (15/16 + 1 + 15/16) / 3 = 0.958333...
    notes = N((0, 1, 60, 80), (2, 1, 62, 80), (4, 1, 64, 80), (8, 1, 60, 80), (10, 1, 62, 80),
              (12, 1, 60, 80))
    g = M.grooving_patterns(notes)
    assert g.shape == (3, 16)
    assert list(np.flatnonzero(g[0])) == [0, 8] and list(np.flatnonzero(g[1])) == [0]
    assert M.grooving_pattern_similarity(notes) == pytest.approx((15 / 16 + 1 + 15 / 16) / 3)
    # an empty bar between two identical bars: bars {0}, {}, {0}, (last bar dropped)
    # pairs: 15/16, 1, 15/16 -> same value
    gap = N((0, 1, 60, 80), (8, 1, 60, 80), (12, 1, 60, 80))
    assert M.grooving_pattern_similarity(gap) == pytest.approx((15 / 16 + 1 + 15 / 16) / 3)


# ------------------------------------------------------------------------------------ SI
def _fmp_fitness(S, start, K):
    """Per-segment reference: Mueller's FMP C4S3 accumulated score + backtracking (as in MusDr)."""
    seg = S[:, start:start + K]
    n_rows, width = seg.shape[0], K + 1
    D = -np.inf * np.ones((n_rows, width))
    D[0, 0], D[0, 1] = 0.0, seg[0, 0]
    for n in range(1, n_rows):
        D[n, 0] = max(D[n - 1, 0], D[n - 1, -1])
        D[n, 1] = D[n, 0] + seg[n, 0]
        for m in range(2, width):
            D[n, m] = seg[n, m - 1] + max(D[n - 1, m - 1], D[n - 1, m - 2], D[n - 2, m - 1])
    score = max(D[-1, 0], D[-1, -1])
    fam, path, n = [], [], n_rows - 1
    if D[n, -1] < D[n, 0]:
        m = 0
    else:
        m = width - 1
        path.append((n, width - 2))
    while n > 0 or m > 0:
        if n <= 2 and m <= 2:
            pred = [(n - 1, m - 1)]
        elif n <= 2:
            pred = [(n - 1, m - 1), (n - 1, m - 2)]
        elif m <= 2:
            pred = [(n - 1, m - 1), (n - 2, m - 1)]
        else:
            pred = [(n - 1, m - 1), (n - 2, m - 1), (n - 1, m - 2)]
        if n == 0:
            cell = (0, m - 1)
        elif m == 0:
            if D[n - 1, -1] > D[n - 1, 0]:
                cell = (n - 1, width - 1)
                if path:
                    fam.append(path)
                path = [(n - 1, width - 2)]
            else:
                cell = (n - 1, 0)
        elif m == 1:
            cell = (n, 0)
        else:
            best = -np.inf
            for p in pred:
                if best < D[p]:
                    best, cell = D[p], p
            path.append((cell[0], cell[1] - 1))
        n, m = cell
    fam.append(path)
    length = sum(len(p) for p in fam)
    cov = sum(max(r for r, _ in p) - min(r for r, _ in p) + 1 for p in fam)
    sn, cn = (score - K) / length, (cov - K) / n_rows
    return 2 * sn * cn / (sn + cn + 1e-16)


def test_fitness_by_hand():
    # 4 frames; frames 2-3 repeat frames 0-1: S = 1 on the diagonal and on the two off-diagonals
    # (0,2), (1,3) (and symmetric), -2 elsewhere.
    # Segment [0, 1] (K = 2): optimal family = paths over rows 0-1 and 2-3, score 2 + 2 = 4,
    # path-family length 4, coverage 4.
    #   score_n = (4 - 2) / 4 = 0.5, coverage_n = (4 - 2) / 4 = 0.5, fitness = 2*.25/1 = 0.5
    S = np.full((4, 4), -2.0)
    np.fill_diagonal(S, 1.0)
    S[0, 2] = S[2, 0] = S[1, 3] = S[3, 1] = 1.0
    f = SI.fitness_for_length(S, 2)
    assert f[0] == pytest.approx(0.5, abs=1e-9)
    assert f[2] == pytest.approx(0.5, abs=1e-9)  # segment [2, 3] is the same repetition


def test_fitness_matches_reference_loop():
    rng = np.random.default_rng(0)
    X = rng.random((12, 36))
    X[:, 20:32] = X[:, 2:14]
    S = SI.self_similarity(X, L=4)
    for K in (1, 2, 3, 6, 12):
        got = SI.fitness_for_length(S, K)
        want = [_fmp_fitness(S, s, K) for s in range(36 - K + 1)]
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_path_smoothing_matches_fmp_loop():
    rng = np.random.default_rng(1)
    S = rng.random((30, 30))
    L = 5
    tempi = np.exp(np.linspace(np.log(0.5), np.log(2.0), 7))
    ref = np.zeros((30, 30))
    for tempo in tempi:  # FMP filter_diag_mult_SM, forward and backward
        Mc = int(np.ceil(30 / tempo))
        idx = np.maximum(np.around(np.arange(1, Mc + 1) / Mc * 30) - 1, 0).astype(int)
        R = S[:, idx]
        for direction in (0, 1):
            ext = np.zeros((30 + L, Mc + L))
            acc = np.zeros((30, Mc))
            if direction == 0:
                ext[:30, :Mc] = R
                for p in range(L):
                    acc += ext[p:30 + p, p:Mc + p]
            else:
                ext[L:, L:] = R
                for p in range(L):
                    acc += ext[L - p:30 + L - p, L - p:Mc + L - p]
            inv = np.maximum(np.around(np.arange(1, 31) / 30 * Mc) - 1, 0).astype(int)
            ref = np.maximum(ref, (acc / L)[:, inv])
    np.testing.assert_allclose(SI._filter_diag(S, L, tempi), ref, atol=1e-12)


def test_si_repetition_beats_noise():
    rng = np.random.default_rng(0)
    phrase = [(b + q / 2, 0.5, int(p), 80) for b in range(16) for q, p in
              enumerate(rng.integers(55, 80, 2))]
    song = N(*[(on + 16 * r, d, p, v) for r in range(6) for on, d, p, v in phrase])
    noise = N(*[(i / 2, 0.5, int(p), 80) for i, p in enumerate(rng.integers(55, 80, 192))])
    si_rep, si_noise = SI.structureness_indicator(song), SI.structureness_indicator(noise)
    assert 0 <= si_noise < si_rep <= 1
    assert si_rep > 0.5


# ------------------------------------------------------------------------------------ ours
def test_chord_tone_ratio_by_hand():
    # beats 0-3: C major {C, E, G}; beats 4-7: no chord
    chroma = np.zeros((8, 12), dtype=bool)
    chroma[:4, [0, 4, 7]] = True
    has = np.array([True] * 4 + [False] * 4)
    # C (beat 0, in), D (beat 1, out), G (beat 2, in), E (beat 3.5, in), F (beat 5, N: ignored)
    # -> 3 / 4 = 0.75
    notes = N((0, 1, 60, 80), (1, 1, 62, 80), (2, 1, 67, 80), (3.5, 0.5, 64, 80), (5, 1, 65, 80))
    assert M.chord_tone_ratio(notes, chroma, has) == pytest.approx(0.75)


def test_density_rho_by_hand():
    # generated onsets per beat: 1, 2, 3, 4
    notes = N(*[(b + k / 4, 0.25, 60 + k, 80) for b in range(4) for k in range(b + 1)])
    assert list(M.onset_density(notes, 4)) == [1, 2, 3, 4]
    assert M.density_rho(notes, [1, 2, 3, 4]) == pytest.approx(1.0)
    assert M.density_rho(notes, [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties: requested ranks (1.5, 1.5, 3.5, 3.5) vs generated (1, 2, 3, 4):
    # rho = corr -> cov = 2 / sd product sqrt(1 * 1.25) = 2*... worked as Pearson of ranks = 0.894
    assert M.density_rho(notes, [0, 0, 1, 1]) == pytest.approx(2 / math.sqrt(5), abs=1e-9)


def test_empty_bars_polyphony_range_scale():
    # notes end at beat 12 -> 3 bars; bar 1 (beats 4-7) has no onset -> 1/3
    assert M.empty_bar_rate(N((0, 1, 60, 80), (8, 4, 62, 80))) == pytest.approx(1 / 3)
    # A: steps 0-7, B: steps 4-7 -> 4 steps x 1 pitch + 4 steps x 2 pitches over 8 steps = 1.5
    assert M.polyphony(N((0, 2, 60, 80), (1, 1, 64, 80))) == pytest.approx(1.5)
    assert M.pitch_range(N((0, 1, 60, 80), (1, 1, 72, 80), (2, 1, 55, 80))) == 17
    # C major scale + F#: best scale (C or G major) holds 7 of 8 notes
    cmaj = [60, 62, 64, 65, 67, 69, 71, 66]
    assert M.scale_consistency(N(*[(i, 1, p, 80) for i, p in enumerate(cmaj)])) == 7 / 8


def test_overlapping_area():
    a = np.linspace(0, 1, 20)
    assert M.overlapping_area(a, a) == pytest.approx(1.0, abs=1e-3)
    assert M.overlapping_area(a, a + 10) < 1e-3
    assert 0.2 < M.overlapping_area(a, a + 0.5) < 0.8


def test_parse_chord_label():
    root, c = parse_chord_label("C#:min7/b7")
    assert root == 1 and set(np.flatnonzero(c)) == {1, 4, 8, 11}
    assert set(np.flatnonzero(parse_chord_label("G:sus4(b7)")[1])) == {7, 0, 2, 5}
    assert set(np.flatnonzero(parse_chord_label("Bb:maj/3")[1])) == {10, 2, 5}
    assert parse_chord_label("N") is None


# ------------------------------------------------------------------------------------ MIDI
def _write_midi(path, tracks, bpm, t0=0.0):
    """tracks: {name: [(onset_beat, dur_beats, pitch, velocity)]} at a constant tempo, beat 0
    at ``t0`` seconds."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    spb = 60.0 / bpm
    for name, notes in tracks.items():
        inst = pretty_midi.Instrument(program=0, name=name)
        for on, d, p, v in notes:
            inst.notes.append(pretty_midi.Note(velocity=v, pitch=p, start=t0 + on * spb,
                                               end=t0 + (on + d) * spb))
        pm.instruments.append(inst)
    pm.write(str(path))


def test_read_midi_notes_uses_tempo(tmp_path):
    # at 90 BPM a beat lasts 2/3 s; the file stores seconds via its tempo, we read beats back
    _write_midi(tmp_path / "a.mid", {"PIANO": [(3, 1.5, 60, 90), (0, 1, 64, 70)]}, bpm=90)
    notes = read_midi_notes(tmp_path / "a.mid")
    np.testing.assert_allclose(notes.onset, [0, 3], atol=1e-3)
    np.testing.assert_allclose(notes.duration, [1, 1.5], atol=1e-3)
    assert list(notes.pitch) == [64, 60] and list(notes.velocity) == [70, 90]
    shifted = read_midi_notes(tmp_path / "a.mid", offset_beats=-1)  # drops the note at beat 0
    np.testing.assert_allclose(shifted.onset, [2], atol=1e-3)


# ------------------------------------------------------------------------------------ end to end
def _fake_song(root, sid, bpm, seed):
    """A POP909-like song: one pick-up beat, then 20 bars of 4/4. Returns the notes from the
    first downbeat (the generated song we will pretend the model wrote)."""
    rng = np.random.default_rng(seed)
    d = root / sid
    d.mkdir(parents=True)
    spb = 60.0 / bpm
    n_beats = 1 + 20 * 4
    t0 = 0.3  # the beat grid starts 0.3 s into the file
    with open(d / "beat_midi.txt", "w") as f:
        for i in range(n_beats):
            down = 1.0 if (i - 1) % 4 == 0 else 0.0  # first downbeat = beat 1 (after a pick-up)
            f.write(f"{t0 + i * spb} {1.0 if (i - 1) % 2 == 0 else 0.0} {down}\n")
    chords = [(0, 4, 7), (9, 0, 4), (5, 9, 0), (7, 11, 2)]  # C, Am, F, G per bar
    names = ["C:maj", "A:min", "F:maj", "G:maj"]
    with open(d / "chord_midi.txt", "w") as f:
        f.write(f"{t0}\t{t0 + spb}\tN\n")
        for bar in range(20):
            s = t0 + (1 + 4 * bar) * spb
            f.write(f"{s}\t{s + 4 * spb}\t{names[bar % 4]}\n")
    mel, piano = [(0.0, 1.0, 67, 90)], []  # pick-up at beat 0 (before the first downbeat)
    for bar in range(20):
        ch = chords[bar % 4]
        for b in range(4):
            beat = 1 + 4 * bar + b
            piano.append((beat, 1.0, 48 + ch[b % 3], 70))
            if rng.random() < 0.7:
                mel.append((beat + 0.5 * int(rng.integers(0, 2)), 0.5, 60 + ch[b % 3] + 12, 90))
    _write_midi(d / f"{sid}.mid", {"MELODY": mel, "BRIDGE": [], "PIANO": piano}, bpm=bpm,
                t0=t0)
    # the generated song starts at the first downbeat (beat 1 of the file): shift by -1 beat
    return [(on - 1, du, p, v) for on, du, p, v in mel + piano if on >= 1]


@pytest.fixture(autouse=True)
def _private_reference_cache(tmp_path, monkeypatch):
    """Ground-truth metrics cache in the test's own folder, never the user's."""
    import bgmgen.eval.evaluate as E

    monkeypatch.setattr(E, "_reference_cache_dir", lambda: tmp_path / "reference-cache")


def test_reference_metrics_are_cached_and_invalidated(tmp_path, monkeypatch):
    import bgmgen.eval.evaluate as E

    data = tmp_path / "pop909"
    _fake_song(data, "001", 90.0, 1)
    rows, _, _, _ = E.evaluate_reference(data, ["001"])
    real = E.song_metrics

    def must_not_run(*a, **k):
        raise AssertionError("cached ground truth recomputed")

    monkeypatch.setattr(E, "song_metrics", must_not_run)
    again, _, _, _ = E.evaluate_reference(data, ["001"])
    assert json.dumps(again, sort_keys=True) == json.dumps(rows, sort_keys=True)
    # a changed song file is a different key: computed afresh
    beats = data / "001" / "beat_midi.txt"
    beats.write_text(beats.read_text() + "\n")
    calls = []
    monkeypatch.setattr(E, "song_metrics", lambda *a, **k: calls.append(1) or real(*a, **k))
    E.evaluate_reference(data, ["001"])
    assert calls == [1]


def test_eval_end_to_end(tmp_path):
    data, gen = tmp_path / "pop909", tmp_path / "gen"
    gen.mkdir()
    for sid, bpm, seed in (("001", 90.0, 1), ("002", 120.0, 2)):
        notes = _fake_song(data, sid, bpm, seed)
        # the generated MIDI at another tempo: beats are what count
        _write_midi(gen / f"{sid}.mid", {"piano": notes}, bpm=100.0)
    out = run_eval(gen, data, songs="001,002", json_path=tmp_path / "e.json")
    data_json = json.loads((tmp_path / "e.json").read_text())
    for key in ("pche", "gps", "si", "chord_tone_ratio", "density_rho", "empty_bar_rate",
                "polyphony", "pitch_range", "scale_consistency", "overlap_mean"):
        assert key in data_json["summary"], key
    assert set(data_json["songs"]) == {"001", "002"}
    # generated == reference from the first downbeat: every metric agrees with the ground truth
    for key in ("pche", "gps", "chord_tone_ratio", "empty_bar_rate", "pitch_range"):
        assert out["summary"][key] == pytest.approx(out["ground_truth"][key], abs=1e-6), key
    assert out["summary"]["density_rho"] == pytest.approx(1.0)
    assert out["summary"]["chord_tone_ratio"] == pytest.approx(1.0)  # all notes are chord tones
    # misaligned by one beat, density and chords no longer line up
    shifted = run_eval(gen, data, songs="001,002", offset_beats=1.0)
    assert shifted["summary"]["density_rho"] < 0.9


def test_video_eval(tmp_path):
    d = tmp_path / "clip.bgm"
    d.mkdir()
    bpm, spb = 120.0, 0.5
    beats = [i * spb for i in range(16)]
    # loud chord at beat 8 (4.0 s); a soft note every beat
    notes = [(b, 1.0, 60, 40) for b in range(16)] + [(8, 1.0, 64, 120), (8, 1.0, 67, 120)]
    _write_midi(d / "clip.mid", {"piano": notes}, bpm=bpm)
    run = {"video": {"duration_s": 8.0},
           "analysis": {"cuts_s": [4.1, 6.9]},
           "plan": {"bpm": bpm, "beat_times_s": beats, "sections": [
               {"start_beat": 0, "end_beat": 8, "shot": 0}, {"start_beat": 8, "end_beat": 16,
                                                             "shot": 1}],
                    "density": [1.0] * 8 + [3.0] + [1.0] * 7,
                    "motion_per_beat": [0.1] * 8 + [0.9] + [0.1] * 7},
           "outputs": {"midi": str(d / "clip.mid")}}
    (d / "run.json").write_text(json.dumps(run))
    out = run_video_eval(tmp_path)
    v = out["videos"]["clip.bgm"]
    # music ends at beat 16 = 8.0 s -> ratio 1
    assert v["length_ratio"] == pytest.approx(1.0, abs=1e-3)
    # cut 4.1 s: boundary at 4.0 s (beat 8) within 0.5 s -> yes; cut 6.9 s: boundaries at 0, 4,
    # 7.5 s (end_beat 16 = one beat past the grid) -> |6.9-7.5| = 0.6 > 0.5 -> no. Share 1/2.
    assert v["cut_phrase_share"] == pytest.approx(0.5)
    # accents: the 16th slot at 4.0 s (velocity 40+120+120); cut 4.1 hits it, 6.9 does not
    assert v["cut_accent_share"] == pytest.approx(0.5)
    # generated density per beat (1 except 3 at beat 8) follows motion exactly
    assert v["motion_density_r"] == pytest.approx(1.0)
    assert v["density_rho"] == pytest.approx(1.0)
    # an onset on every beat of bars 0-2 (the last bar is left out, as in Diff-BGM): same groove
    assert v["gps"] == pytest.approx(1.0)


def test_video_eval_energy_ranking_ending_and_visual_onsets(tmp_path):
    """Three clips whose music gets busier and faster with a person's energy ranking: both rank
    correlations are 1; the held ending, per-bar motion vs onsets and visual onsets on notes are read."""
    for name, bpm, per_beat, rank in (("calm", 60.0, 1, 1), ("medium", 90.0, 2, 2), ("busy", 120.0, 4, 3)):
        d = tmp_path / name
        d.mkdir()
        spb = 60 / bpm
        n_beats = 13  # 12 beats of music + the final chord (one beat plus 0.5 s of release)
        duration = n_beats * spb + 0.5
        motion = [0.1 + 0.05 * (b // 4) for b in range(n_beats)]  # rising bar by bar
        notes = [(b + k / per_beat, 0.2, 60 + k, 80) for b in range(12) for k in range(per_beat + b // 4)]
        notes += [(12, 1.5, p, 70) for p in (48, 60, 64, 67)]
        _write_midi(d / f"{name}.mid", {"piano": notes}, bpm=bpm)
        bt = [i * spb for i in range(n_beats)] + [duration]
        run = {"video": {"duration_s": duration},
               "analysis": {"cuts_s": [], "onsets": [[spb * 2 + 0.01, 0.9], [spb * 5.5, 0.8]]},
               "plan": {"bpm": bpm, "mood": "calm", "beat_times_s": bt, "final_beats": 1,
                        "sections": [{"start_beat": 0, "end_beat": n_beats, "shot": 0}],
                        "density": [float(per_beat)] * n_beats, "motion_per_beat": motion,
                        "tempo": {"locked": False}, "energy": {"energy": rank / 3}},
               "outputs": {"midi": f"{name}.mid"}}
        (d / "run.json").write_text(json.dumps(run))
    ranking = tmp_path / "ranking.json"
    ranking.write_text(json.dumps({"clips": [{"file": f"{n}.mp4", "rank": r} for n, r in
                                             (("calm", 1), ("medium", 2), ("busy", 3), ("absent", 4))]}))
    out = run_video_eval(tmp_path, energy_ranking=ranking)
    assert out["ranking"]["n_ranked"] == 3 and out["ranking"]["missing"] == ["absent"]
    assert out["ranking"]["rho_energy_onsets_per_s"] == pytest.approx(1.0)
    assert out["ranking"]["rho_energy_bpm"] == pytest.approx(1.0)
    v = out["videos"]["calm"]
    assert v["ending_s"] == pytest.approx(1.5) and v["ending_share"] == pytest.approx(1.5 / 13.5)
    assert v["bar_motion_onsets_rho"] == pytest.approx(1.0) and v["n_bars"] == 3
    # visual onsets at beat 2 (+10 ms: a note within a sixteenth) and at beat 5.5 (no note there for 1/beat)
    assert v["visual_onset_share"] == pytest.approx(0.5) and v["visual_onset_beat_share"] == pytest.approx(0.5)
    assert out["videos"]["busy"]["visual_onset_share"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="not an energy ranking"):
        run_video_eval(tmp_path, energy_ranking=tmp_path / "calm" / "run.json")


# ------------------------------------------------------------------------------------ real data
@pytest.mark.skipif(not POP909.is_dir(), reason="POP909 not present")
def test_ground_truth_on_real_songs():
    struct = STRUCT if STRUCT.is_dir() else None
    for sid in ("001", "003", "016"):
        ref = read_pop909_song(POP909 / sid, struct)
        assert ref.origin_beat >= 0 and ref.n_beats > 100
        pche = M.pitch_class_histogram_entropy(ref.notes)
        gps = M.grooving_pattern_similarity(ref.notes)
        ctr = M.chord_tone_ratio(ref.notes, ref.chord_chroma, ref.has_chord)
        assert 2.0 < pche < math.log2(12)
        assert 0.3 < gps < 1.0
        assert 0.5 < ctr <= 1.0
        assert M.empty_bar_rate(ref.notes) < 0.2
        assert 1.0 <= M.polyphony(ref.notes) < 10
        assert 0.7 < M.scale_consistency(ref.notes) <= 1.0
    # SI on one song (the slowest metric)
    si = SI.structureness_indicator(read_pop909_song(POP909 / "001", struct).notes)
    assert 0.1 < si < 1.0


@pytest.mark.skipif(not (POP909.is_dir() and STRUCT.is_dir()), reason="POP909 / pop909-structure not present")
def test_one_reader_for_eval_and_training():
    """Eval's reference songs and the training rolls come from the same reader (data.pop909): same
    beat 0, and the reference notes put on the sixteenth grid ARE the training onset roll."""
    for sid in ("010", "016", "045"):
        song = pop909.load_song(POP909, STRUCT, sid)
        ref = read_pop909_song(POP909 / sid, STRUCT)
        np.testing.assert_array_equal(song.beat_times_s[:-1], ref.beat_times_s[:song.n_beats])
        start, _ = ref.notes.grid_steps()
        inside = start < len(song.onset)
        roll = np.zeros(song.onset.shape, bool)
        roll[start[inside], ref.notes.pitch[inside]] = True
        np.testing.assert_array_equal(roll[1:], song.onset[1:] > 0)  # step 0 may hold pick-up ends
        has = ref.has_chord[:song.n_beats]
        np.testing.assert_array_equal(song.chord_root >= 0, has)
        np.testing.assert_array_equal(song.chord_chroma[has] > 0, ref.chord_chroma[:song.n_beats][has])


def test_grid_before_the_first_annotated_beat():
    """An origin before beat_midi.txt's first beat (negative) extrapolates the grid backwards."""
    beats = np.c_[10.0 + 0.5 * np.arange(8), np.ones(8), np.zeros(8)]
    song = pop909.AlignedMidi("x", beats, -2, "structure", 1.0, (), None)
    np.testing.assert_allclose(song.grid_times(4), [9.0, 9.5, 10.0, 10.5])
    np.testing.assert_allclose(song.grid_times(11)[-1], 14.0)  # one beat past the last one
    np.testing.assert_allclose(pop909.beat_position([9.0, 13.5, 14.0], beats[:, 0]), [-2, 7, 8])


def test_eval_with_realism(tmp_path):
    data, gen = tmp_path / "pop909", tmp_path / "gen"
    gen.mkdir()
    for i, sid in enumerate(("001", "002", "003", "004", "005", "006")):
        notes = _fake_song(data, sid, 90.0 + 5 * i, i)
        if sid in ("001", "002", "003"):  # the generated songs: sixteenth notes all over
            rng = np.random.default_rng(i)
            notes = [(s / 4, 0.25, int(p), 80) for s in range(0, 320, 2) for p in rng.integers(40, 90, 2)]
            _write_midi(gen / f"{sid}.mid", {"piano": notes}, bpm=100.0)
    out = run_eval(gen, data, songs="001,002,003", json_path=tmp_path / "e.json", realism=True,
                   real_songs="003,004,005,006")
    rep = json.loads((tmp_path / "e.json").read_text())["realism"]
    assert rep == out["realism"]
    assert rep["songs"]["generated"] == ["001", "002", "003"]
    assert rep["songs"]["real"] == ["004", "005", "006"]          # 003 is generated: left out
    assert rep["songs"]["baseline"] == ["001", "002", "003"]      # their ground truth
    assert rep["settings"]["dropped_from_real"] == ["003"]
    assert rep["c2st"]["generated_vs_real"]["linear"] > 0.9
    assert rep["c2st"]["real_vs_real"] is not None
    assert rep["features"]["len1_share"]["generated"] == 1.0
    with pytest.raises(InputError):
        run_eval(gen, data, songs="001", reference_only=True, realism=True)
    with pytest.raises(InputError):  # nothing real left
        run_eval(gen, data, songs="001,002", realism=True, real_songs="001,002")
