"""Realism test: can a classifier tell generated piano texture from real POP909 songs?

Two questions of a generated set against real songs, on the 8-bar window features of
:mod:`bgmgen.eval.texture`:

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

Everything is numpy (+ scipy.optimize for the logistic fit) and deterministic given the seed.
`bgmgen eval --realism` (bgmgen.eval.evaluate.run_eval) and scripts/texture_table.py run
:func:`realism_report`.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from bgmgen.core.jsonio import plain
from bgmgen.data.splits import VALID_SONGS
from bgmgen.eval.metrics import overlapping_area
from bgmgen.eval.notes import Notes, read_pop909_song
from bgmgen.eval.tables import fmt
from bgmgen.eval.texture import FEATURE_NAMES, FEATURES, MIN_NOTES, WINDOW_BARS, feature_matrix


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
def default_real_songs(generated_ids) -> list[str]:
    """The real side when none is named: the validation songs that are not generated songs."""
    taken = set(generated_ids)
    return [s for s in VALID_SONGS if s not in taken]


def read_real_songs(data_dir, song_ids, structure_dir=None, align: str = "auto"
                    ) -> tuple[dict[str, Notes], list[str]]:
    """POP909 songs (bgmgen.eval.notes.read_pop909_song) as {id: Notes}, and the ids whose
    ``NNN/NNN.mid`` is missing (left out)."""
    songs, missing = {}, []
    for sid in song_ids:
        d = Path(data_dir) / sid
        if not (d / f"{sid}.mid").exists():
            missing.append(sid)
            continue
        songs[sid] = read_pop909_song(d, structure_dir, align=align).notes
    return songs, missing


def _nanmean(x) -> float:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else math.nan


def feature_summary(X_real: np.ndarray, X_other: np.ndarray) -> dict:
    """Per feature: ``{"real": mean, "other": mean, "oa": overlapping area}`` (NaNs ignored)."""
    out = {}
    for j, name in enumerate(FEATURE_NAMES):
        out[name] = {"real": _nanmean(X_real[:, j]), "other": _nanmean(X_other[:, j]),
                     "oa": overlapping_area(X_real[:, j], X_other[:, j])}
    return out


def realism_report(generated: dict, real: dict, baseline_real: dict | None = None, seed: int = 0,
                   n_folds: int = 5, k: int = 5, repeats: int = 5, min_notes: int = MIN_NOTES,
                   ) -> dict:
    """Texture realism of ``generated`` songs against ``real`` POP909 songs (id -> Notes).

    Windows of :func:`bgmgen.eval.texture.feature_matrix`; OA per feature; C2ST (:func:`c2st`).

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
    return plain(result)


def format_report(report: dict) -> str:
    """A compact plain-text table of a realism_report result."""
    has_base = report["c2st"].get("real_vs_real") is not None
    head = f"{'feature':<27}{'real':>8}{'generated':>10}{'OA':>7}"
    if has_base:
        head += f"{'real B':>9}{'OA B':>7}"
    lines = [head, "-" * len(head)]
    for r in report["features"].values():
        line = f"{r['label']:<27}{fmt(r['real']):>8}{fmt(r['generated']):>10}{fmt(r['oa'], 2):>7}"
        if has_base:
            line += f"{fmt(r.get('baseline')):>9}{fmt(r.get('oa_baseline'), 2):>7}"
        lines.append(line)
    line = f"{'mean OA':<27}{'':>8}{'':>10}{fmt(report['oa_mean'], 2):>7}"
    if has_base:
        line += f"{'':>9}{fmt(report['oa_mean_baseline'], 2):>7}"
    lines.append(line)
    w = report["windows"]
    lines.append("")
    lines.append(f"windows: real {w['real']}, generated {w['generated']}"
                 + (f", real B {w['baseline']}" if has_base else ""))
    for key, title in (("generated_vs_real", "generated vs real"), ("real_vs_real", "real B vs real")):
        c = report["c2st"].get(key)
        if c is None:
            continue
        lines.append(f"C2ST {title:<18} linear {fmt(c['linear'])}  {c['k']}-NN {fmt(c['knn'])}"
                     f"   ({c['n_folds']} song folds x {len(c['linear_runs'])} repeats, "
                     f"{c['n_songs'][0]}+{c['n_songs'][1]} songs; 0.5 = indistinguishable)")
    return "\n".join(lines)


def print_report(report: dict, file=None) -> None:
    """Print :func:`format_report` (to stdout by default)."""
    print(format_report(report), file=file)
