"""Realism of generated piano texture: 8-bar window features, a classifier two-sample test, OA.

The song-level metrics of :mod:`bgmgen.eval.metrics` (PCHE, GPS, SI, chord tones, density) do not see
what a listener hears first: note lengths, how many notes sound at once, whether the top line
moves by step, whether the bass holds, whether bars repeat. This module measures that texture on
8-bar windows and asks two questions of a generated set against real POP909 songs:

1. Per feature: how far apart are the two distributions? Mean of each side and the overlapping
   area (OA, Yang & Lerch 2020; :func:`bgmgen.eval.metrics.overlapping_area`) of their KDEs.
2. All features together: can a classifier tell a generated window from a real one on songs it
   has never seen? A classifier two-sample test (C2ST; Lopez-Paz & Oquab, ICLR 2017): real
   windows are labelled 0, generated ones 1; songs are split into k folds (a song's windows are
   never in the train and test fold at once), the larger class is subsampled to the smaller one
   in each train fold, features are standardised on the train fold, and the held-out balanced
   accuracy is reported for an L2 logistic regression and a k-nearest-neighbour classifier.
   0.5 = the two sets cannot be told apart. The same test between two disjoint sets of REAL
   songs (the real-vs-real baseline) shows what chance looks like with this data.

Representation (shared by every feature; the roll of :mod:`bgmgen.data.pop909` that the model trains
on): times in beats from the first downbeat, 4/4. A note starts at step ``s = round(4*onset)``
and ends at ``e = max(round(4*(onset+duration)), s+1)`` (sixteenth steps), so its length is
``L = e - s >= 1`` sixteenths. Window ``w`` holds the notes with ``128w <= s < 128w+128``
(8 bars); its sounding roll is the [128 steps x 128 pitches] boolean "pitch p sounds at step t"
with notes cut at the window's end. Windows with fewer than ``min_notes`` notes (silence,
intros) are skipped, and only complete windows (the song sounds into their last bar) are used.

Everything is numpy (+ scipy.optimize for the logistic fit) and deterministic given the seed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from bgmgen.eval import metrics as M

STEPS_PER_BEAT = 4
STEPS_PER_BAR = 16
WINDOW_BARS = 8
WINDOW_STEPS = WINDOW_BARS * STEPS_PER_BAR  # 128
MIN_NOTES = 8
N_PITCHES = 128


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """Notes of one window on the sixteenth grid.

    ``start``: onset step relative to the window start (int, ``0 <= start < n_steps``), sorted;
    ``length``: note length in sixteenths (int >= 1, NOT cut at the window end);
    ``pitch``: MIDI pitch (int). ``n_steps`` = window length in sixteenths (128 = 8 bars).
    """

    start: np.ndarray
    length: np.ndarray
    pitch: np.ndarray
    n_steps: int = WINDOW_STEPS

    @staticmethod
    def from_rows(rows, n_steps: int = WINDOW_STEPS) -> Window:
        """Build from ``(start_step, length_steps, pitch)`` rows (for tests and hand-made windows)."""
        a = np.asarray(list(rows), dtype=int).reshape(-1, 3)
        a = a[np.lexsort((a[:, 2], a[:, 0]))]
        return Window(a[:, 0].copy(), np.maximum(a[:, 1], 1), a[:, 2].copy(), n_steps)

    def __len__(self) -> int:
        return len(self.start)

    @property
    def n_bars(self) -> int:
        return self.n_steps // STEPS_PER_BAR

    @cached_property
    def roll(self) -> np.ndarray:
        """[n_steps, 128] bool: pitch sounds at step (notes cut at the window end)."""
        r = np.zeros((self.n_steps + 1, N_PITCHES), dtype=np.int16)
        end = np.minimum(self.start + self.length, self.n_steps)
        np.add.at(r, (self.start, self.pitch), 1)
        np.add.at(r, (end, self.pitch), -1)
        return np.cumsum(r, axis=0)[: self.n_steps] > 0

    @cached_property
    def onset_roll(self) -> np.ndarray:
        """[n_steps, 128] bool: a note of this pitch starts at this step."""
        r = np.zeros((self.n_steps, N_PITCHES), dtype=bool)
        r[self.start, self.pitch] = True
        return r


def song_grid(notes: M.Notes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start step, length in sixteenths, pitch) of every note; the rounding of bgmgen.data.pop909."""
    s = np.round(np.asarray(notes.onset) * STEPS_PER_BEAT).astype(int)
    e = np.round((np.asarray(notes.onset) + np.asarray(notes.duration)) * STEPS_PER_BEAT).astype(int)
    e = np.maximum(e, s + 1)
    return s, e - s, np.asarray(notes.pitch, dtype=int)


def song_windows(notes: M.Notes, bars: int = WINDOW_BARS, min_notes: int = MIN_NOTES,
                 ) -> list[Window]:
    """Non-overlapping ``bars``-bar windows of a song (from beat 0), as :class:`Window` objects.

    Only complete windows (the song still sounds in the window's last bar: last note-off, on the
    grid, later than the start of that bar) with at least ``min_notes`` note onsets are returned.
    """
    if len(notes) == 0:
        return []
    s, length, p = song_grid(notes)
    n = bars * STEPS_PER_BAR
    end = int((s + length).max())
    out = []
    # a window counts as complete when the song sounds into its last bar
    for w in range(max(0, (end + STEPS_PER_BAR - 1) // n)):
        sel = (s >= w * n) & (s < (w + 1) * n)
        if sel.sum() < min_notes:
            continue
        order = np.lexsort((p[sel], s[sel]))
        out.append(Window(s[sel][order] - w * n, length[sel][order], p[sel][order], n))
    return out


# --------------------------------------------------------------------------------------------
# Features: each a pure function of one Window -> float (NaN when undefined)
# --------------------------------------------------------------------------------------------
def len1_share(w: Window) -> float:
    """Share of notes exactly one sixteenth long: ``#{L == 1} / #notes`` (fraction, 0-1).
    Note-length histogram in the spirit of Yang & Lerch 2020 (NLH)."""
    return float(np.mean(w.length == 1)) if len(w) else math.nan


def len2_share(w: Window) -> float:
    """Share of notes two sixteenths (an eighth) long: ``#{L == 2} / #notes`` (0-1). NLH bin."""
    return float(np.mean(w.length == 2)) if len(w) else math.nan


def len5_8_share(w: Window) -> float:
    """Share of notes 5 to 8 sixteenths long (between a quarter and a half note, both excluded /
    included): ``#{5 <= L <= 8} / #notes`` (0-1). NLH bin."""
    return float(np.mean((w.length >= 5) & (w.length <= 8))) if len(w) else math.nan


def len9plus_share(w: Window) -> float:
    """Share of notes longer than a half note: ``#{L >= 9} / #notes`` (0-1). NLH bin."""
    return float(np.mean(w.length >= 9)) if len(w) else math.nan


def log2_length_mean(w: Window) -> float:
    """Mean of ``log2(L)`` over notes, L in sixteenths (0 = all sixteenths, 2 = all quarters).
    Log-scale summary of the note-length histogram (Yang & Lerch 2020 NLH)."""
    return float(np.mean(np.log2(w.length))) if len(w) else math.nan


def _onset_steps(w: Window) -> np.ndarray:
    return np.unique(w.start)


def ioi_log2_mean(w: Window) -> float:
    """Mean ``log2`` inter-onset interval, in sixteenths, between successive distinct onset steps
    (chord notes share one onset). Yang & Lerch 2020 IOI, log scale. < 2 onset steps -> NaN."""
    d = np.diff(_onset_steps(w))
    return float(np.mean(np.log2(d))) if len(d) else math.nan


def ioi1_share(w: Window) -> float:
    """Share of inter-onset intervals (between distinct onset steps) of exactly one sixteenth
    (0-1): running sixteenths. < 2 onset steps -> NaN."""
    d = np.diff(_onset_steps(w))
    return float(np.mean(d == 1)) if len(d) else math.nan


def onsets_per_step(w: Window) -> float:
    """Simultaneous onsets: mean number of notes starting on a step, over steps where at least
    one starts (notes; 1 = single notes only, 3 = block triads)."""
    steps = _onset_steps(w)
    return float(len(w) / len(steps)) if len(steps) else math.nan


def onset_step_share(w: Window) -> float:
    """Share of the window's sixteenth steps on which at least one note starts (0-1); the
    rhythmic density of the groove (muspy-style, per window)."""
    return float(len(_onset_steps(w)) / w.n_steps)


def polyphony_sounding(w: Window) -> float:
    """Mean number of pitches sounding per sixteenth, over steps where at least one sounds
    (notes; muspy ``polyphony``, per window). Silent window -> NaN."""
    c = w.roll.sum(axis=1)
    return float(c[c > 0].mean()) if (c > 0).any() else math.nan


def polyphony_all(w: Window) -> float:
    """Mean number of pitches sounding per sixteenth over ALL steps of the window (notes):
    polyphony x (1 - empty share)."""
    return float(w.roll.sum(axis=1).mean())


def empty_step_share(w: Window) -> float:
    """Share of sixteenth steps on which nothing sounds (0-1; muspy ``empty_beat_rate`` on
    sixteenths, counting held notes as sounding)."""
    return float(np.mean(~w.roll.any(axis=1)))


def notes_per_bar(w: Window) -> float:
    """Note onsets per bar (notes/bar): ``#notes / n_bars``."""
    return float(len(w) / w.n_bars)


def _voice(w: Window, top: bool) -> np.ndarray:
    """Highest (or lowest) sounding pitch of each sounding step, silent steps left out."""
    r = w.roll
    sounding = r.any(axis=1)
    if top:
        v = N_PITCHES - 1 - np.argmax(r[:, ::-1], axis=1)
    else:
        v = np.argmax(r, axis=1)
    return v[sounding]


def _changes(v: np.ndarray) -> np.ndarray:
    d = np.diff(v)
    return d[d != 0]


def top_step_share(w: Window) -> float:
    """Top voice = highest pitch sounding on each sixteenth (silent steps skipped). Share of its
    changes that are steps of 1 or 2 semitones: ``#{1 <= |dp| <= 2} / #{dp != 0}`` (0-1).
    A sung melody moves mostly by step. No change -> NaN. (Skyline melody, Uitdenbogerd & Zobel
    1999; interval statistics as in Yang & Lerch 2020 PI.)"""
    d = np.abs(_changes(_voice(w, top=True)))
    return float(np.mean((d >= 1) & (d <= 2))) if len(d) else math.nan


def top_abs_interval(w: Window) -> float:
    """Mean absolute interval (semitones) of the top voice's changes (see top_step_share).
    No change -> NaN."""
    d = np.abs(_changes(_voice(w, top=True)))
    return float(np.mean(d)) if len(d) else math.nan


def top_changes_per_bar(w: Window) -> float:
    """Number of top-voice pitch changes per bar (changes/bar; see top_step_share): how busy the
    highest line is (16 = a new top note every sixteenth)."""
    return float(len(_changes(_voice(w, top=True))) / w.n_bars)


def bass_abs_interval(w: Window) -> float:
    """Bass = lowest pitch sounding on each sixteenth (silent steps skipped). Mean absolute
    interval of its changes (semitones). No change -> NaN."""
    d = np.abs(_changes(_voice(w, top=False)))
    return float(np.mean(d)) if len(d) else math.nan


def bass_changes_per_bar(w: Window) -> float:
    """Number of bass pitch changes per bar (changes/bar): a held bass changes ~1-2 times a bar,
    a scattered one up to 16 times."""
    return float(len(_changes(_voice(w, top=False))) / w.n_bars)


def range_per_bar(w: Window) -> float:
    """Pitch range per bar: mean over bars in which something sounds of (highest - lowest pitch
    sounding in the bar), semitones (muspy ``pitch_range``, per bar). Silent window -> NaN."""
    per_bar = w.roll.reshape(w.n_bars, STEPS_PER_BAR, N_PITCHES).any(axis=1)
    vals = []
    for b in per_bar:
        idx = np.flatnonzero(b)
        if len(idx):
            vals.append(idx[-1] - idx[0])
    return float(np.mean(vals)) if vals else math.nan


def _bars_onsets(w: Window) -> np.ndarray:
    return w.onset_roll.reshape(w.n_bars, STEPS_PER_BAR, N_PITCHES)


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else math.nan


def groove_prev(w: Window) -> float:
    """Rhythm repetition: mean over bars b = 1..n-1 of ``1 - XOR(g_b, g_{b-1}) / 16``, g = the
    bar's 16-step onset pattern (any pitch). Grooving pattern similarity (Wu & Yang 2020; muspy
    ``groove_consistency``) between neighbouring bars only, 0-1."""
    g = _bars_onsets(w).any(axis=2)
    return float(np.mean(1.0 - np.logical_xor(g[1:], g[:-1]).sum(axis=1) / STEPS_PER_BAR))


def repeat_prev(w: Window) -> float:
    """Note-pattern repetition: mean over bars b = 1..n-1 of the Jaccard similarity of the sets
    of (step in bar, pitch) onsets of bar b and bar b-1 (0 = nothing in common, 1 = the same
    bar again). Pairs of empty bars are skipped; none left -> NaN."""
    bars = _bars_onsets(w)
    v = [_jaccard(bars[b], bars[b - 1]) for b in range(1, len(bars))]
    v = [x for x in v if math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def repeat_best(w: Window) -> float:
    """Note-pattern recall: mean over bars b = 1..n-1 of max over earlier bars b' < b of the
    Jaccard similarity of their (step in bar, pitch) onset sets (see repeat_prev): does the bar
    repeat ANY earlier bar of the window (e.g. bar 5 = bar 1)? 0-1; NaN when undefined."""
    bars = _bars_onsets(w)
    v = []
    for b in range(1, len(bars)):
        sims = [_jaccard(bars[b], bars[c]) for c in range(b)]
        sims = [x for x in sims if math.isfinite(x)]
        if sims:
            v.append(max(sims))
    return float(np.mean(v)) if v else math.nan


# name -> (short label for tables, function)
FEATURES: dict[str, tuple[str, object]] = {
    "len1_share": ("notes 1/16 long", len1_share),
    "len2_share": ("notes 2/16 long", len2_share),
    "len5_8_share": ("notes 5-8/16 long", len5_8_share),
    "len9plus_share": ("notes >= 9/16 long", len9plus_share),
    "log2_length_mean": ("mean log2 length (16ths)", log2_length_mean),
    "ioi_log2_mean": ("mean log2 IOI (16ths)", ioi_log2_mean),
    "ioi1_share": ("IOIs of one 16th", ioi1_share),
    "onsets_per_step": ("onsets per onset step", onsets_per_step),
    "onset_step_share": ("steps with an onset", onset_step_share),
    "polyphony_sounding": ("sounding / sounding step", polyphony_sounding),
    "polyphony_all": ("sounding / step", polyphony_all),
    "empty_step_share": ("empty 16ths", empty_step_share),
    "notes_per_bar": ("notes per bar", notes_per_bar),
    "top_step_share": ("top-voice steps (1-2 st)", top_step_share),
    "top_abs_interval": ("top-voice |interval| (st)", top_abs_interval),
    "top_changes_per_bar": ("top-voice changes / bar", top_changes_per_bar),
    "bass_abs_interval": ("bass |interval| (st)", bass_abs_interval),
    "bass_changes_per_bar": ("bass changes / bar", bass_changes_per_bar),
    "range_per_bar": ("pitch range / bar (st)", range_per_bar),
    "groove_prev": ("groove = previous bar", groove_prev),
    "repeat_prev": ("notes = previous bar", repeat_prev),
    "repeat_best": ("notes = best earlier bar", repeat_best),
}
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURES)


def window_features(w: Window) -> np.ndarray:
    """The feature vector of one window, in FEATURE_NAMES order (NaN where undefined)."""
    return np.array([fn(w) for _, fn in FEATURES.values()], dtype=float)


def feature_matrix(songs: dict, bars: int = WINDOW_BARS, min_notes: int = MIN_NOTES,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Features of every window of every song: (X [n_windows, n_features], song id per row).

    ``songs`` maps a song id to its :class:`bgmgen.eval.metrics.Notes`.
    """
    rows, groups = [], []
    for sid in sorted(songs):
        for w in song_windows(songs[sid], bars=bars, min_notes=min_notes):
            rows.append(window_features(w))
            groups.append(str(sid))
    X = np.array(rows, dtype=float).reshape(-1, len(FEATURES))
    return X, np.array(groups, dtype=object)


# --------------------------------------------------------------------------------------------
# Classifier two-sample test
# --------------------------------------------------------------------------------------------
def group_folds(groups, labels, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold index per row such that all rows of one group (song) share a fold.

    Groups are shuffled (seeded), then each in turn goes to the fold whose per-class loads
    (rows of each class as a share of that class's total) stay the most even (least sum of
    squares after adding it), so every fold gets both classes when each class has at least
    ``n_folds`` groups. Returns an int array of the rows' folds.
    """
    groups = np.asarray(groups, dtype=object)
    labels = np.asarray(labels, dtype=int)
    uniq = sorted(set(groups.tolist()))
    rng = np.random.default_rng(seed)
    uniq = [uniq[i] for i in rng.permutation(len(uniq))]
    counts = {g: np.array([np.sum((groups == g) & (labels == c)) for c in (0, 1)], float)
              for g in uniq}
    total = np.maximum(sum(counts.values()), 1.0)
    fill = np.zeros((n_folds, 2))
    fold_of = {}
    for g in uniq:
        cost = (((fill + counts[g]) / total) ** 2).sum(axis=1) - ((fill / total) ** 2).sum(axis=1)
        f = int(np.argmin(cost))
        fold_of[g] = f
        fill[f] += counts[g]
    return np.array([fold_of[g] for g in groups], dtype=int)


def standardize(X_train: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``(X - mean) / std`` with the train rows' NaN-aware mean and std (std 0 -> 1); NaNs become
    0 (the train mean)."""
    with warnings.catch_warnings():  # an all-NaN column (e.g. no top-voice change anywhere)
        warnings.simplefilter("ignore", RuntimeWarning)
        mu = np.nanmean(X_train, axis=0)
        sd = np.nanstd(X_train, axis=0)
    mu = np.where(np.isfinite(mu), mu, 0.0)
    sd = np.where(np.isfinite(sd) & (sd > 1e-12), sd, 1.0)
    Z = (X - mu) / sd
    return np.where(np.isfinite(Z), Z, 0.0)


def fit_logistic(X: np.ndarray, y: np.ndarray, C: float = 1.0) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression: minimise ``sum_i logloss_i + ||w||^2 / (2C)`` (the
    intercept is not penalised; sklearn's objective) with L-BFGS. Returns (w, b)."""
    from scipy.optimize import minimize

    X = np.asarray(X, float)
    y = np.asarray(y, float)
    d = X.shape[1]

    def f(theta):
        w, b = theta[:d], theta[d]
        z = X @ w + b
        # logloss = log(1 + e^z) - y z, stable
        loss = np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.dot(w, w) / C
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid, stable
        g = p - y
        grad = np.concatenate([X.T @ g + w / C, [g.sum()]])
        return loss, grad

    res = minimize(f, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                   options={"maxiter": 1000, "gtol": 1e-8})
    return res.x[:d], float(res.x[d])


def predict_logistic(model: tuple[np.ndarray, float], X: np.ndarray) -> np.ndarray:
    """0/1 predictions of a fit_logistic model (label 1 when ``w.x + b > 0``)."""
    w, b = model
    return (np.asarray(X, float) @ w + b > 0).astype(int)


def knn_predict(X_train: np.ndarray, y_train: np.ndarray, X: np.ndarray, k: int = 5) -> np.ndarray:
    """k-nearest-neighbour majority vote (Euclidean distance; ties -> the nearer neighbours'
    label, via a tiny distance-rank weight). Returns 0/1 predictions."""
    X_train = np.asarray(X_train, float)
    y_train = np.asarray(y_train, int)
    k = max(1, min(k, len(X_train)))
    d2 = (np.sum(X ** 2, axis=1)[:, None] - 2 * X @ X_train.T + np.sum(X_train ** 2, axis=1)[None])
    idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
    votes = y_train[idx].astype(float)
    weights = 1.0 + 1e-6 * np.arange(k, 0, -1)  # break ties in favour of the closest
    score = (votes * weights).sum(axis=1) / weights.sum()
    return (score > 0.5).astype(int)


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean of the per-class accuracies (0.5 = chance for any class ratio)."""
    y, pred = np.asarray(y, int), np.asarray(pred, int)
    accs = [float(np.mean(pred[y == c] == c)) for c in (0, 1) if (y == c).any()]
    return float(np.mean(accs)) if accs else math.nan


def c2st(X0: np.ndarray, groups0, X1: np.ndarray, groups1, n_folds: int = 5, k: int = 5,
         C: float = 1.0, seed: int = 0, repeats: int = 5) -> dict:
    """Classifier two-sample test of windows ``X0`` (label 0, e.g. real) vs ``X1`` (label 1).

    Group k-fold by song id (the same id on both sides = one group, so a generated song never
    meets the real song it was conditioned on across the split); per train fold the larger class
    is randomly subsampled to the smaller's size and features are standardised on it; held-out
    predictions of all folds are pooled into one balanced accuracy. Repeated ``repeats`` times
    with different fold assignments and subsamples (seeds ``seed .. seed+repeats-1``).

    Returns ``{"linear": mean acc, "knn": mean acc, "linear_runs": [...], "knn_runs": [...],
    "n_folds", "k", "C", "n_windows": [n0, n1], "n_songs": [s0, s1]}``.
    """
    X0, X1 = np.asarray(X0, float), np.asarray(X1, float)
    g = np.concatenate([np.asarray(groups0, dtype=object), np.asarray(groups1, dtype=object)])
    y = np.concatenate([np.zeros(len(X0), int), np.ones(len(X1), int)])
    X = np.concatenate([X0, X1]) if len(X0) and len(X1) else np.zeros((0, X0.shape[1]))
    n_groups_per_class = min(len(set(np.asarray(groups0).tolist())),
                             len(set(np.asarray(groups1).tolist())))
    out = {"n_windows": [len(X0), len(X1)],
           "n_songs": [len(set(np.asarray(groups0).tolist())), len(set(np.asarray(groups1).tolist()))],
           "k": k, "C": C}
    folds_n = min(n_folds, n_groups_per_class)
    out["n_folds"] = folds_n
    if folds_n < 2:
        out.update(linear=math.nan, knn=math.nan, linear_runs=[], knn_runs=[])
        return out
    lin_runs, knn_runs = [], []
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        fold = group_folds(g, y, folds_n, seed=int(rng.integers(2 ** 31)))
        pred_lin = np.full(len(y), -1)
        pred_knn = np.full(len(y), -1)
        for f in range(folds_n):
            tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            if len(te) == 0:
                continue
            i0, i1 = tr[y[tr] == 0], tr[y[tr] == 1]
            n = min(len(i0), len(i1))
            if n == 0:
                continue
            tr = np.concatenate([rng.choice(i0, n, replace=False), rng.choice(i1, n, replace=False)])
            Ztr = standardize(X[tr], X[tr])
            Zte = standardize(X[tr], X[te])
            pred_lin[te] = predict_logistic(fit_logistic(Ztr, y[tr], C=C), Zte)
            pred_knn[te] = knn_predict(Ztr, y[tr], Zte, k=k)
        ok = pred_lin >= 0
        lin_runs.append(balanced_accuracy(y[ok], pred_lin[ok]))
        knn_runs.append(balanced_accuracy(y[ok], pred_knn[ok]))
    out.update(linear=float(np.mean(lin_runs)), knn=float(np.mean(knn_runs)),
               linear_runs=lin_runs, knn_runs=knn_runs)
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def _nanmean(x) -> float:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else math.nan


def feature_summary(X_real: np.ndarray, X_other: np.ndarray) -> dict:
    """Per feature: ``{"real": mean, "other": mean, "oa": overlapping area}`` (NaNs ignored)."""
    out = {}
    for j, name in enumerate(FEATURE_NAMES):
        out[name] = {"real": _nanmean(X_real[:, j]), "other": _nanmean(X_other[:, j]),
                     "oa": M.overlapping_area(X_real[:, j], X_other[:, j])}
    return out


def realism_report(generated: dict, real: dict, baseline_real: dict | None = None, seed: int = 0,
                   n_folds: int = 5, k: int = 5, repeats: int = 5, min_notes: int = MIN_NOTES,
                   ) -> dict:
    """Texture realism of ``generated`` songs against ``real`` POP909 songs (id -> Notes).

    ``baseline_real``: other REAL songs (ids disjoint from ``real``) that take the generated
    side's place in the real-vs-real baseline; typically the ground truth of the generated songs.
    Returns a JSON-friendly dict::

        {"features": {name: {"label", "real", "generated", "oa", "baseline", "oa_baseline"}},
         "oa_mean": ..., "oa_mean_baseline": ...,
         "c2st": {"generated_vs_real": {...c2st()...}, "real_vs_real": {...} | None},
         "windows": {"real": n, "generated": n, "baseline": n}, "songs": {...}, "settings": {...}}
    """
    if baseline_real is not None and set(baseline_real) & set(real):
        raise ValueError("baseline_real must not share songs with real: "
                         f"{sorted(set(baseline_real) & set(real))[:5]}")
    Xr, gr = feature_matrix(real, min_notes=min_notes)
    Xg, gg = feature_matrix(generated, min_notes=min_notes)
    feats = feature_summary(Xr, Xg)
    result = {"features": {}, "c2st": {}, "settings": {
        "window_bars": WINDOW_BARS, "min_notes": min_notes, "seed": seed, "n_folds": n_folds,
        "k": k, "repeats": repeats, "features": list(FEATURE_NAMES)}}
    base = None
    if baseline_real is not None:
        Xb, gb = feature_matrix(baseline_real, min_notes=min_notes)
        base = feature_summary(Xr, Xb)
    for name in FEATURE_NAMES:
        row = {"label": FEATURES[name][0], "real": feats[name]["real"],
               "generated": feats[name]["other"], "oa": feats[name]["oa"]}
        if base is not None:
            row["baseline"] = base[name]["other"]
            row["oa_baseline"] = base[name]["oa"]
        result["features"][name] = row
    result["oa_mean"] = _nanmean([r["oa"] for r in result["features"].values()])
    result["oa_mean_baseline"] = (_nanmean([r["oa_baseline"] for r in result["features"].values()])
                                  if base is not None else None)
    result["c2st"]["generated_vs_real"] = c2st(Xr, gr, Xg, gg, n_folds=n_folds, k=k, seed=seed,
                                               repeats=repeats)
    result["c2st"]["real_vs_real"] = (c2st(Xr, gr, Xb, gb, n_folds=n_folds, k=k, seed=seed,
                                           repeats=repeats) if base is not None else None)
    result["windows"] = {"real": len(Xr), "generated": len(Xg),
                         "baseline": len(Xb) if base is not None else None}
    result["songs"] = {"real": sorted(real), "generated": sorted(generated),
                       "baseline": sorted(baseline_real) if baseline_real is not None else None}
    return _json_safe(result)


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _f(v, digits=3) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def format_report(report: dict) -> str:
    """A compact plain-text table of a realism_report result."""
    has_base = report["c2st"].get("real_vs_real") is not None
    head = f"{'feature':<27}{'real':>8}{'generated':>10}{'OA':>7}"
    if has_base:
        head += f"{'real B':>9}{'OA B':>7}"
    lines = [head, "-" * len(head)]
    for r in report["features"].values():
        line = f"{r['label']:<27}{_f(r['real']):>8}{_f(r['generated']):>10}{_f(r['oa'], 2):>7}"
        if has_base:
            line += f"{_f(r.get('baseline')):>9}{_f(r.get('oa_baseline'), 2):>7}"
        lines.append(line)
    line = f"{'mean OA':<27}{'':>8}{'':>10}{_f(report['oa_mean'], 2):>7}"
    if has_base:
        line += f"{'':>9}{_f(report['oa_mean_baseline'], 2):>7}"
    lines.append(line)
    w = report["windows"]
    lines.append("")
    lines.append(f"windows: real {w['real']}, generated {w['generated']}"
                 + (f", real B {w['baseline']}" if has_base else ""))
    for key, title in (("generated_vs_real", "generated vs real"), ("real_vs_real", "real B vs real")):
        c = report["c2st"].get(key)
        if c is None:
            continue
        lines.append(f"C2ST {title:<18} linear {_f(c['linear'])}  {c['k']}-NN {_f(c['knn'])}"
                     f"   ({c['n_folds']} song folds x {len(c['linear_runs'])} repeats, "
                     f"{c['n_songs'][0]}+{c['n_songs'][1]} songs; 0.5 = indistinguishable)")
    return "\n".join(lines)


def print_report(report: dict, file=None) -> None:
    """Print :func:`format_report` (to stdout by default)."""
    print(format_report(report), file=file)
