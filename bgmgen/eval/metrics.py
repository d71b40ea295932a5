"""Song-level symbolic music metrics of `bgmgen eval`: small pure functions of a Notes object.

Each function takes :class:`bgmgen.eval.notes.Notes` (times in beats from the first downbeat, 4/4:
bar ``b`` spans beats ``[4b, 4b+4)``) and returns one number (NaN when undefined). A note's onset
step is ``floor(4 * onset + 0.5)`` (:meth:`Notes.onset_steps`, nearest sixteenth); its beat is
that step // 4. Docstrings follow muspy's: what is measured, the formula, the unit, the source.

- Diff-BGM's metrics (Li et al., CVPR 2024, ``test.ipynb``; after MusDr, Wu & Yang, ISMIR 2020):
  :func:`pitch_class_histogram_entropy` (PCHE), :func:`grooving_pattern_similarity` (GPS). The
  third, SI, lives in :mod:`bgmgen.eval.structure`.
- Controls adherence (ours): :func:`chord_tone_ratio`, :func:`onset_density`, :func:`density_rho`.
- muspy statistics (Dong et al., ISMIR 2020 LBD): :func:`empty_bar_rate`, :func:`polyphony`,
  :func:`pitch_range`, :func:`scale_consistency`.
- Distribution distance: :func:`overlapping_area` (Yang & Lerch 2020).
"""

from __future__ import annotations

import math

import numpy as np

from bgmgen.core.constants import BARS_PER_WINDOW, BEATS_PER_BAR, STEPS_PER_BAR, STEPS_PER_BEAT
from bgmgen.eval.notes import Notes

EPS_PCHE = 1e-6  # Diff-BGM test.ipynb: log2(p + 1e-6)
PCHE_WINDOW_BEATS = BARS_PER_WINDOW * BEATS_PER_BAR  # 32 quarter notes = 8 bars
_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])


# --------------------------------------------------------------------------------------------
# Diff-BGM's metrics
# --------------------------------------------------------------------------------------------
def _entropy(hist: np.ndarray, eps: float = EPS_PCHE) -> float:
    p = hist / hist.sum()
    return float(-np.sum(p * np.log2(p + eps)))


def pitch_class_histogram_entropy(notes: Notes, window_beats: int = PCHE_WINDOW_BEATS,
                                  drop_last: bool = True, eps: float = EPS_PCHE) -> float:
    """PCHE: how evenly the 12 pitch classes are used, per 8-bar window.

    Formula: ``H_w = -sum_{c=0..11} p_c log2(p_c + eps)``, ``p_c`` = share of the notes starting
    in window ``w`` (beats ``[32w, 32w + 32)``) whose pitch class is ``c``; every note counts once
    (chord members separately), durations and velocities are ignored. PCHE = mean of ``H_w`` over
    the non-empty windows. The window holding the last onset (incomplete) is dropped unless it is
    the only one (``drop_last``).
    Unit: bits, 0 .. log2(12) = 3.585. Empty song -> NaN.
    Source: Diff-BGM ``test.ipynb`` cells 2-3 (Li et al., CVPR 2024), after MusDr's H (Wu & Yang,
    ISMIR 2020). Differs from the notebook only where it has bugs: windows after a silence of more
    than 8 bars stay on the 8-bar grid, and empty windows are skipped.
    """
    if len(notes) == 0:
        return math.nan
    win = notes.onset_steps() // (window_beats * STEPS_PER_BEAT)
    n_win = int(win.max()) + 1
    if drop_last and n_win > 1:
        n_win -= 1
    vals = []
    for w in range(n_win):
        pcs = notes.pitch[win == w] % 12
        if len(pcs):
            vals.append(_entropy(np.bincount(pcs, minlength=12).astype(float), eps))
    return float(np.mean(vals)) if vals else math.nan


def grooving_patterns(notes: Notes, drop_last: bool = True) -> np.ndarray:
    """[n_bars, 16] binary onset patterns: ``g[b, q] = 1`` if a note starts in 16th ``q`` of bar b.

    Bars run from bar 0 to the bar before the one holding the last onset (Diff-BGM never appends
    the last bar's pattern; ``drop_last=False`` keeps it); empty bars give zero rows.
    """
    if len(notes) == 0:
        return np.zeros((0, STEPS_PER_BAR), dtype=bool)
    steps = notes.onset_steps()
    bar, pos = steps // STEPS_PER_BAR, steps % STEPS_PER_BAR
    n_bars = int(bar.max()) + (0 if drop_last else 1)
    g = np.zeros((max(n_bars, 0), STEPS_PER_BAR), dtype=bool)
    keep = bar < n_bars
    g[bar[keep], pos[keep]] = True
    return g


def grooving_pattern_similarity(notes: Notes, drop_last: bool = True) -> float:
    """GPS: how repetitive the rhythm is from bar to bar.

    Formula: mean over all pairs of bars ``i < j`` of ``1 - (1/Q) sum_q XOR(g_i[q], g_j[q])``,
    Q = 16, ``g`` = :func:`grooving_patterns` (16th positions of onsets per bar). All pairs are
    used (exact, no sampling).
    Unit: fraction, 0..1 (1 = every bar has the same onset pattern). Fewer than 2 bars -> NaN.
    Source: Diff-BGM ``test.ipynb`` cells 2 and 5 (``cal_cps``), after MusDr's GS (Wu & Yang,
    ISMIR 2020, which uses Q = 64 and at most 1000 sampled pairs).
    """
    g = grooving_patterns(notes, drop_last).astype(np.int64)
    n = len(g)
    if n < 2:
        return math.nan
    # sum over pairs of Hamming distances, per position: k ones among n bars -> k(n-k) pairs differ
    k = g.sum(axis=0)
    xor_total = float(np.sum(k * (n - k)))
    n_pairs = n * (n - 1) / 2
    return 1.0 - xor_total / (STEPS_PER_BAR * n_pairs)


# --------------------------------------------------------------------------------------------
# Controls adherence (ours)
# --------------------------------------------------------------------------------------------
def chord_tone_ratio(notes: Notes, chord_chroma: np.ndarray, has_chord: np.ndarray | None = None
                     ) -> float:
    """Chord-tone ratio: how many notes belong to the chord sounding when they start.

    Formula: ``sum_n [pc(n) in chord(beat_n)] / #{n : a chord is annotated at beat_n}``, beat_n =
    the beat of the note's onset step. ``chord_chroma`` is [n_beats, 12] bool (beat 0 = first
    downbeat); onsets on beats without a chord ("N", ``has_chord`` False) or past the annotation
    are not counted.
    Unit: fraction, 0..1. No note counted -> NaN.
    Source: ours (the harmony control's adherence).
    """
    if has_chord is None:
        has_chord = chord_chroma.any(axis=1)
    b = notes.onset_steps() // STEPS_PER_BEAT
    ok = (b >= 0) & (b < len(chord_chroma))
    ok[ok] &= has_chord[b[ok]]
    if not ok.any():
        return math.nan
    return float(chord_chroma[b[ok], notes.pitch[ok] % 12].mean())


def onset_density(notes: Notes, n_beats: int | None = None) -> np.ndarray:
    """Onsets per beat: ``d[b]`` = number of distinct (16th step, pitch) note starts in beat b,
    for beats 0 .. n_beats-1 (default: up to the last onset). Unit: onsets per beat.
    Source: ours (the density control, as bgmgen.music.controls counts it)."""
    steps = notes.onset_steps()
    if n_beats is None:
        n_beats = int(steps.max()) // STEPS_PER_BEAT + 1 if len(steps) else 0
    key = np.unique(steps * 128 + notes.pitch)
    b = (key // 128) // STEPS_PER_BEAT
    b = b[(b >= 0) & (b < n_beats)]
    return np.bincount(b, minlength=n_beats).astype(float)[:n_beats]


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of the first ``min(len(x), len(y))`` values: the Pearson
    correlation of their ranks (average ranks for ties). Unit: -1..1. Fewer than 3 values or a
    constant side -> NaN. Source: Spearman (1904)."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, float), np.asarray(y, float)
    n = min(len(x), len(y))
    if n < 3:
        return math.nan
    rx, ry = rankdata(x[:n]), rankdata(y[:n])
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def density_rho(notes: Notes, requested: np.ndarray) -> float:
    """Density ρ: does the music get busier where more notes were asked for?

    Formula: :func:`spearman_rho` between the requested per-beat density and the song's
    :func:`onset_density`, over beats ``0 .. len(requested)-1`` (generated beat b = requested
    beat b). Unit: -1..1 (1 = the same ranking). Source: ours (the density control's adherence).
    """
    return spearman_rho(np.asarray(requested, float), onset_density(notes, len(requested)))


# --------------------------------------------------------------------------------------------
# muspy statistics
# --------------------------------------------------------------------------------------------
def empty_bar_rate(notes: Notes, n_bars: int | None = None) -> float:
    """Empty-bar rate: the share of bars in which no note starts.

    Formula: ``#{bars b < n_bars with no onset step in [16b, 16b + 16)} / n_bars``; default
    n_bars = ceil(last note-off / 4).
    Unit: fraction, 0..1. Empty song -> NaN.
    Source: muspy ``empty_measure_rate`` (Dong et al., ISMIR 2020 LBD).
    """
    if n_bars is None:
        n_bars = math.ceil(notes.end / BEATS_PER_BAR - 1e-9) if len(notes) else 0
    if n_bars <= 0:
        return math.nan
    bar = notes.onset_steps() // STEPS_PER_BAR
    used = np.zeros(n_bars, dtype=bool)
    bar = bar[(bar >= 0) & (bar < n_bars)]
    used[bar] = True
    return float(1.0 - used.mean())


def polyphony(notes: Notes) -> float:
    """Polyphony: how many pitches sound at once.

    Formula: mean over the 16th steps at which at least one pitch sounds of the number of pitches
    sounding; a note covers steps ``[round(4 * onset), round(4 * (onset + duration)))``, at least
    one (:meth:`Notes.grid_steps`, the training rolls' grid).
    Unit: pitches. Empty song -> NaN.
    Source: muspy ``polyphony`` (Dong et al., ISMIR 2020 LBD), on the sixteenth grid.
    """
    if len(notes) == 0:
        return math.nan
    s, e = notes.grid_steps()
    T = int(e.max())
    roll = np.zeros((T + 1, 128), dtype=np.int8)
    np.add.at(roll, (s, notes.pitch), 1)
    np.add.at(roll, (e, notes.pitch), -1)
    active = np.cumsum(roll, axis=0)[:T] > 0
    count = active.sum(axis=1)
    return float(count[count > 0].mean())


def pitch_range(notes: Notes) -> float:
    """Pitch range: ``max(pitch) - min(pitch)`` over the song. Unit: semitones. Empty -> NaN.
    Source: muspy ``pitch_range`` (Dong et al., ISMIR 2020 LBD)."""
    if len(notes) == 0:
        return math.nan
    return float(notes.pitch.max() - notes.pitch.min())


def scale_consistency(notes: Notes) -> float:
    """Scale consistency: how much of the song fits one diatonic scale.

    Formula: ``max over the 24 major and natural-minor scales S of #{n : pc(n) in S} / #notes``;
    each note counts once. Unit: fraction, 0..1. Empty -> NaN.
    Source: muspy ``scale_consistency`` (Dong et al., ISMIR 2020 LBD; Mogren, C-RNN-GAN, 2016).
    """
    if len(notes) == 0:
        return math.nan
    hist = np.bincount(notes.pitch % 12, minlength=12).astype(float)
    best = 0.0
    for root in range(12):
        for scale in (_MAJOR, _MINOR):
            best = max(best, hist[(root + scale) % 12].sum())
    return float(best / hist.sum())


# --------------------------------------------------------------------------------------------
# Over songs
# --------------------------------------------------------------------------------------------
def nan_mean(values) -> float:
    """Mean of the values that are not NaN (``np.nanmean``); NaN when none is finite. The
    summary of a metric over songs (or videos)."""
    vals = np.asarray(values, dtype=float)
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan


def overlapping_area(a, b, n_grid: int = 512) -> float:
    """Overlapping area (OA) of two samples' distributions.

    Formula: ``int min(p_a(x), p_b(x)) dx`` over a ``n_grid``-point grid spanning both samples
    plus 4 bandwidths, ``p`` = Gaussian KDE with Silverman's bandwidth
    ``1.06 std(x) n^(-1/5)`` per sample, floored at 1e-3 of the pooled spread. NaNs ignored.
    Unit: 0..1 (1 = same distribution, 0 = disjoint). Fewer than 2 values on a side -> NaN.
    Source: Yang & Lerch, "On the evaluation of generative models in music" (Neural Computing and
    Applications, 2020); here on per-song metric values or per-window texture features.
    """
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    pooled = np.concatenate([a, b])
    spread = max(float(pooled.max() - pooled.min()), float(np.std(pooled)), 1e-9)

    def bw(x):
        return max(1.06 * float(np.std(x)) * len(x) ** (-0.2), 1e-3 * spread)

    ha, hb = bw(a), bw(b)
    lo = pooled.min() - 4 * max(ha, hb)
    hi = pooled.max() + 4 * max(ha, hb)
    x = np.linspace(lo, hi, n_grid)

    def kde(s, h):
        z = (x[:, None] - s[None, :]) / h
        return np.exp(-0.5 * z ** 2).sum(axis=1) / (len(s) * h * math.sqrt(2 * math.pi))

    return float(min(np.trapezoid(np.minimum(kde(a, ha), kde(b, hb)), x), 1.0))
