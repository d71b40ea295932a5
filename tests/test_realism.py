"""Texture features on hand-made windows, OA, the song-split C2ST on synthetic samples, and the
realism report on real POP909 songs when ../shared/datasets is present."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bgmgen.eval import metrics as M
from bgmgen.eval import realism as R
from bgmgen.eval import texture as T
from bgmgen.eval.notes import Notes, read_midi_notes, read_pop909_song

POP909 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "pop909"
STRUCT = POP909.parent / "pop909-structure"


def notes(rows):
    """Notes from (onset_beat, duration_beats, pitch) rows, velocity 80."""
    return Notes.from_list([(o, d, p, 80) for o, d, p in rows])


def held_chords(n_bars=8, chord=(60, 64, 67)):
    """A whole-note triad on every bar."""
    return notes([(4 * b, 4.0, p) for b in range(n_bars) for p in chord])


def scale_melody(n_bars=8):
    """Eighth notes up and down the C major scale, one voice."""
    up = [60, 62, 64, 65, 67, 69, 71, 72]
    line = up + up[-2:0:-1]  # 60..72..62, then again: every change is 1 or 2 semitones
    return notes([(0.5 * i, 0.5, line[i % len(line)]) for i in range(8 * n_bars)])


def sprinkled(n_bars=8, seed=0):
    """Short notes scattered over the keyboard, rests between them."""
    rng = np.random.default_rng(seed)
    rows = []
    for step in range(0, 16 * n_bars, 2):
        for p in rng.choice(np.arange(40, 90), size=2, replace=False):
            rows.append((step / 4, 0.25, int(p)))
    return notes(rows)


def one_window(n):
    ws = T.song_windows(n)
    assert len(ws) == 1
    return ws[0]


# ------------------------------------------------------------------------------------ windows
def test_song_windows_cut_and_skip():
    # 20 bars of held chords -> 2 complete 8-bar windows (the last 4 bars are incomplete)
    assert len(T.song_windows(held_chords(20))) == 2
    # bars 8-15 silent except two notes -> that window is skipped (fewer than 8 notes)
    n = notes([(4 * b, 4.0, p) for b in range(8) for p in (60, 64, 67)]
              + [(32, 4.0, 60), (36, 28.0, 62)])
    ws = T.song_windows(n)
    assert len(ws) == 1 and len(ws[0]) == 24
    # a note ringing past the window end keeps its full length but the roll is cut
    w = T.Window.from_rows([(120, 16, 60)] + [(i, 1, 70) for i in range(8)])
    assert w.length.max() == 16 and w.roll[:, 60].sum() == 8
    assert T.song_windows(Notes.from_list([])) == []


def test_held_chord_features():
    w = one_window(held_chords())
    f = dict(zip(T.FEATURE_NAMES, T.window_features(w)))
    assert f["len1_share"] == 0 and f["len9plus_share"] == 1 and f["len5_8_share"] == 0
    assert f["log2_length_mean"] == pytest.approx(4.0)          # 16 sixteenths
    assert f["ioi_log2_mean"] == pytest.approx(4.0) and f["ioi1_share"] == 0
    assert f["polyphony_sounding"] == pytest.approx(3.0)
    assert f["polyphony_all"] == pytest.approx(3.0)
    assert f["empty_step_share"] == 0
    assert f["onsets_per_step"] == pytest.approx(3.0)
    assert f["onset_step_share"] == pytest.approx(8 / 128)
    assert f["notes_per_bar"] == pytest.approx(3.0)
    assert math.isnan(f["top_step_share"]) and f["top_changes_per_bar"] == 0
    assert f["bass_changes_per_bar"] == 0
    assert f["range_per_bar"] == pytest.approx(7.0)
    assert f["groove_prev"] == 1 and f["repeat_prev"] == 1 and f["repeat_best"] == 1


def test_scale_melody_features():
    w = one_window(scale_melody())
    assert T.top_step_share(w) == 1.0
    assert T.bass_abs_interval(w) == T.top_abs_interval(w)      # one voice: top = bass
    # changes: 8 per bar (every eighth); |intervals| of the 14-note cycle C D E F G A B C B A G F E D
    assert T.top_changes_per_bar(w) == pytest.approx(63 / 8)
    assert 1.0 < T.top_abs_interval(w) < 2.0
    assert T.len2_share(w) == 1.0 and T.len1_share(w) == 0
    assert T.log2_length_mean(w) == pytest.approx(1.0)
    assert T.polyphony_sounding(w) == 1.0 and T.empty_step_share(w) == 0
    assert T.ioi_log2_mean(w) == pytest.approx(1.0)
    assert T.groove_prev(w) == 1.0                              # same eighth-note rhythm each bar


def test_staccato_and_leaps():
    # sixteenth notes on every other step, alternating two octaves: half the steps are empty
    w = T.Window.from_rows([(s, 1, 48 if (s // 2) % 2 else 72) for s in range(0, 128, 2)])
    assert T.empty_step_share(w) == pytest.approx(0.5)
    assert T.polyphony_sounding(w) == 1.0 and T.polyphony_all(w) == pytest.approx(0.5)
    assert T.len1_share(w) == 1.0 and T.log2_length_mean(w) == 0.0
    assert T.top_step_share(w) == 0.0 and T.top_abs_interval(w) == pytest.approx(24.0)
    assert T.ioi1_share(w) == 0.0
    # bar repetition: bar b = bar b-1 exactly (pattern of 8 notes per bar repeats)
    assert T.repeat_prev(w) == 1.0 and T.repeat_best(w) == 1.0
    # a held bass under moving notes: the bass never changes
    rows = [(16 * b, 16, 36) for b in range(8)] + [(s, 1, 60 + s % 5) for s in range(128)]
    w2 = T.Window.from_rows(rows)
    assert T.bass_changes_per_bar(w2) == 0 and T.top_changes_per_bar(w2) > 10


def test_repetition_best_earlier_bar():
    # bars A B A B ... : neighbours share nothing, but every bar from 2 on repeats bar b-2
    a = [(0, 4, 60), (4, 4, 64)]
    b = [(0, 4, 62), (8, 4, 65)]
    rows = []
    for bar in range(8):
        rows += [(16 * bar + s, L, p) for s, L, p in (a if bar % 2 == 0 else b)]
    w = T.Window.from_rows(rows)
    assert T.repeat_prev(w) == 0.0
    assert T.repeat_best(w) == pytest.approx(6 / 7)             # bar 1 has no match, bars 2-7 do


# ------------------------------------------------------------------------------------ OA
def test_overlap_of_identical_and_disjoint_samples():
    x = np.random.default_rng(0).normal(size=200)
    assert M.overlapping_area(x, x) == pytest.approx(1.0, abs=1e-6)
    assert M.overlapping_area(x, x + 20) < 0.01
    Xr, _ = T.feature_matrix({"a": held_chords(16), "b": scale_melody(16)})
    s = R.feature_summary(Xr, Xr)
    assert all(v["oa"] is None or not math.isfinite(v["oa"]) or v["oa"] > 0.99
               for v in s.values())


# ------------------------------------------------------------------------------------ C2ST
def _gaussian_songs(n_songs, shift, seed, prefix, per_song=8, d=6):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_songs * per_song, d))
    X[:, 0] += shift
    g = np.array([f"{prefix}{i // per_song:03d}" for i in range(len(X))], dtype=object)
    return X, g


def test_c2st_same_distribution_is_chance():
    X0, g0 = _gaussian_songs(30, 0.0, 1, "a")
    X1, g1 = _gaussian_songs(15, 0.0, 2, "b")
    c = R.c2st(X0, g0, X1, g1, seed=0, repeats=3)
    assert abs(c["linear"] - 0.5) < 0.12 and abs(c["knn"] - 0.5) < 0.12
    assert c["n_windows"] == [240, 120] and c["n_songs"] == [30, 15] and c["n_folds"] == 5
    assert R.c2st(X0, g0, X1, g1, seed=0, repeats=3) == c        # deterministic given the seed


def test_c2st_different_distributions():
    X0, g0 = _gaussian_songs(30, 0.0, 1, "a")
    X1, g1 = _gaussian_songs(15, 6.0, 2, "b")
    c = R.c2st(X0, g0, X1, g1, seed=0, repeats=2)
    assert c["linear"] > 0.97 and c["knn"] > 0.97


def test_group_folds_keep_songs_whole():
    _X0, g0 = _gaussian_songs(23, 0.0, 1, "s")
    _X1, g1 = _gaussian_songs(11, 0.0, 2, "s")            # same ids on both sides (s000..s010)
    g = np.concatenate([g0, g1])
    y = np.r_[np.zeros(len(g0), int), np.ones(len(g1), int)]
    for seed in range(5):
        fold = R.group_folds(g, y, 5, seed=seed)
        for sid in set(g):
            assert len(set(fold[g == sid])) == 1, sid
        for f in range(5):                                  # each fold holds both classes
            assert set(y[fold == f]) == {0, 1}


def test_logistic_and_knn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    model = R.fit_logistic(X, y, C=100.0)
    assert np.mean(R.predict_logistic(model, X) == y) > 0.97
    assert np.array_equal(R.knn_predict(X, y, X, k=1), y)
    assert R.balanced_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])) == 0.5
    Z = R.standardize(X, np.array([[np.nan, 0.0, 0.0]]))
    assert Z[0, 0] == 0.0


# ------------------------------------------------------------------------------------ report
def test_realism_report_on_synthetic_songs():
    real = {f"{i:03d}": held_chords(16, chord=(60 + i % 5, 64 + i % 5, 67 + i % 5))
            for i in range(1, 11)}
    gen = {f"{i:03d}": sprinkled(16, seed=i) for i in range(1, 11)}
    base = {f"{i:03d}": held_chords(16, chord=(55 + i % 3, 59 + i % 3, 62 + i % 3))
            for i in range(11, 21)}
    rep = R.realism_report(gen, real, base, seed=0, repeats=1)
    json.dumps(rep)                                         # JSON-friendly
    assert rep["windows"] == {"real": 20, "generated": 20, "baseline": 20}
    assert rep["c2st"]["generated_vs_real"]["linear"] > 0.95
    assert rep["c2st"]["generated_vs_real"]["knn"] > 0.95
    f = rep["features"]
    assert f["len1_share"]["real"] == 0 and f["len1_share"]["generated"] == 1
    assert f["len1_share"]["oa"] < 0.05
    assert set(f) == set(T.FEATURE_NAMES) and 15 <= len(f) <= 25
    text = R.format_report(rep)
    assert "C2ST" in text and "real B vs real" in text
    with pytest.raises(ValueError):
        R.realism_report(gen, real, {"001": held_chords(8)})


def test_generated_midi_reads_back_to_same_features(tmp_path):
    """The generated-side path (MIDI -> read_midi_notes) gives the features of the notes written."""
    pretty_midi = pytest.importorskip("pretty_midi")
    src = scale_melody(8)
    pm = pretty_midi.PrettyMIDI(initial_tempo=90.0)
    inst = pretty_midi.Instrument(0)
    spb = 60.0 / 90.0
    for o, d, p in zip(src.onset, src.duration, src.pitch):
        inst.notes.append(pretty_midi.Note(80, int(p), o * spb, (o + d) * spb))
    pm.instruments.append(inst)
    pm.write(str(tmp_path / "x.mid"))
    back = read_midi_notes(tmp_path / "x.mid")
    a = T.window_features(one_window(src))
    b = T.window_features(one_window(back))
    assert np.allclose(a, b, equal_nan=True)


# ------------------------------------------------------------------------------------ real data
@pytest.mark.skipif(not (POP909.is_dir() and STRUCT.is_dir()), reason="POP909 not present")
def test_real_songs_texture_and_baseline():
    ids = ["060", "080", "100", "120", "140", "160", "001", "002", "003", "004"]
    songs = {s: read_pop909_song(POP909 / s, STRUCT).notes for s in ids}
    X, g = T.feature_matrix(songs)
    assert len(X) > 40 and set(g) == set(ids)
    f = dict(zip(T.FEATURE_NAMES, np.nanmean(X, axis=0)))
    assert 0.1 < f["len1_share"] < 0.6          # POP909: about 30 % one-sixteenth notes
    assert 2.0 < f["polyphony_sounding"] < 6.0  # about 3.7
    assert f["empty_step_share"] < 0.15
    rep = R.realism_report({s: songs[s] for s in ids[6:]}, {s: songs[s] for s in ids[:6]},
                           None, seed=0, repeats=1, n_folds=4)
    # real vs real on few songs: not far from chance
    assert rep["c2st"]["generated_vs_real"]["linear"] < 0.85
    assert rep["c2st"]["real_vs_real"] is None
