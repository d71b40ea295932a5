"""dsp: the few signal-processing primitives the meters (loudness.py) and the limiter (render.py) need,
in numpy alone.

Why not scipy: importing scipy.signal costs about 1.0 s of CPU alone (it pulls in scipy.stats,
optimize, interpolate, sparse ...), scipy.ndimage 0.2 s and scipy.io 0.15 s; inside a `bgmgen score`
run, beside the decode while the shot detector is short of CPU, they measured +0.48 s of CPU. Each
function here says which scipy call it stands for and how close it is (the tests compare them with
scipy):

* `SectionCascade.filter`: scipy.signal.lfilter on second-order sections one after another, with the
  state carried from call to call (direct form II transposed, the same recursion), to ~1e-12 of the
  signal.
* `kaiser_lowpass` / `upsample`: scipy.signal.resample_poly(x, up, 1) (its Kaiser-windowed sinc, beta
  5, 10 zero crossings per side), to ~1e-15.
* `sliding_min`: scipy.ndimage.minimum_filter1d(x, 2r + 1, mode="nearest"): equal.
* `sliding_mean`: scipy.ndimage.uniform_filter1d(x, 2r + 1, mode="nearest") on float32: equal (the
  same running sum in float64, in the same order, divided at each output).
* `write_wav_pcm16`: scipy.io.wavfile.write for 16-bit PCM: the same bytes (standard library `wave`).
"""

from __future__ import annotations

import functools
import math
import threading
from pathlib import Path

import numpy as np

BLOCK = 32  # samples per block of SectionCascade.filter
GROUP = 32  # blocks per group of its state scan (_scan), groups per group one level up, ...
TINY = 1e-30  # a matrix entry below this is 0: its share of any output is below 1e-30 of the signal


def _powers(m: np.ndarray, count: int) -> np.ndarray:
    """[count, k, k]: m^0 .. m^(count - 1), entries below TINY set to 0 (high powers of a fast-decaying
    section reach subnormal numbers, which slow every product they enter ~3x)."""
    out = np.empty((count, *m.shape))
    out[0] = np.eye(len(m))
    for i in range(1, count):
        out[i] = m @ out[i - 1]
        out[i][np.abs(out[i]) < TINY] = 0.0
    return out


class SectionCascade:
    """Second-order IIR sections in series: y = lfilter(b_2, a_2, lfilter(b_1, a_1, x)) ..., run
    block-wise.

    Each section is direct form II transposed (y[n] = b0 x[n] + z1, z1 <- b1 x[n] - a1 y[n] + z2,
    z2 <- b2 x[n] - a2 y[n]), in state-space form s' = A s + B x, y = C s + D x; sections in series
    stack their states (N = 2 per section) into one such system. Over a block of L samples from state
    s: y = T x + O s, with T the L x L lower-triangular Toeplitz matrix of the impulse response and
    O[i] = C A^i; the state after it is A^L s + R x. One level up, block k of a group of G blocks
    starts in state M^k s + sum_(j<k) M^(k-1-j) R x_j (M = A^L), and so on up (`_scan`). So a whole
    signal is a few matrix products (numpy releases the GIL in them: two channels filter side by
    side) and a short Python loop: about 60 multiply-adds per sample for the two K-weighting sections,
    in about the time of scipy's two lfilter calls. (Keeping numpy's OpenBLAS on one thread made the
    products cheaper in CPU time but whole runs no faster, measured: it is left as numpy sets it.)"""

    def __init__(self, sections):
        """sections: (b, a) pairs of three coefficients each, applied in order."""
        self.sections = [(np.asarray(b, np.float64) / a[0], np.asarray(a, np.float64) / a[0]) for b, a in sections]
        A, B, C, D = np.zeros((0, 0)), np.zeros(0), np.zeros(0), 1.0
        for b, a in self.sections:  # this section after the ones before: its input is their output
            a_s = np.array([[-a[1], 1.0], [-a[2], 0.0]])
            b_s = np.array([b[1] - a[1] * b[0], b[2] - a[2] * b[0]])
            c_s, d_s = np.array([1.0, 0.0]), b[0]
            n = len(B)
            A = np.block([[A, np.zeros((n, 2))], [np.outer(b_s, C), a_s]])
            B = np.concatenate([B, b_s * D])
            C = np.concatenate([d_s * C, c_s])
            D = d_s * D
        self.n_states = len(B)
        self.powers = _powers(A, BLOCK + 1)  # [L + 1, N, N] A^i
        h = np.concatenate([[D], C @ self.powers[:BLOCK - 1] @ B])  # impulse response [L]: D, C A^(i-1) B
        i = np.arange(BLOCK)
        self.Tt = np.where(i[:, None] >= i[None, :], h[np.abs(i[:, None] - i[None, :])], 0.0).T.copy()  # [L, L]: T transposed
        self.Ot = (C @ self.powers[:BLOCK]).T.copy()  # [N, L]: column i is C A^i
        self.Rt = (self.powers[BLOCK - 1::-1] @ B).copy()  # [L, N]: row j is A^(L-1-j) B
        self.levels: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per level of _scan: (M^k, W, P)
        self._levels_lock = threading.Lock()  # one cascade serves the meters' two threads
        self._level(2)  # enough for a million-sample call (loudness.CHUNK)

    def _level(self, level: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The matrices of _scan's level `level`, whose steps advance the state by M = A^(L * G^level):
        M^k for k = 0 .. G ([G + 1, N, N]); W, rows (j, b) and columns (k, a), holding M^(k-1-j) for
        j < k (a group's states from a zero start); P, rows b and columns (k, a), holding M^k."""
        with self._levels_lock:
            while len(self.levels) <= level:
                self._add_level()
            return self.levels[level]

    def _add_level(self) -> None:
        N = self.n_states
        step = self.powers[BLOCK] if not self.levels else self.levels[-1][0][GROUP]  # A^L, or the last level's M^G
        mp = _powers(step, GROUP + 1)
        k, j = np.arange(GROUP + 1)[:, None], np.arange(GROUP)[None, :]
        W = np.where((j < k)[..., None, None], mp[np.clip(k - 1 - j, 0, GROUP)], 0.0)  # [G + 1, G, N, N]
        self.levels.append((mp, W.transpose(1, 3, 0, 2).reshape(GROUP * N, (GROUP + 1) * N),
                            mp[:GROUP].transpose(2, 0, 1).reshape(N, GROUP * N)))

    def zero_state(self) -> np.ndarray:
        return np.zeros(self.n_states)

    def _scan(self, e: np.ndarray, state: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        """States s_0 .. s_(k-1) [k, N] and s_k of s_(i+1) = M s_i + e_i (M: the level's step), from
        s_0 = state: G steps at a time by matrix products, the groups' own starts by the same scan
        one level up (a Python loop only once fewer than G groups are left)."""
        N = self.n_states
        mp, W, P = self._level(level)
        k = len(e)
        groups = -(-k // GROUP)
        padded = np.zeros((groups * GROUP, N))
        padded[:k] = e
        local = (padded.reshape(groups, N * GROUP) @ W).reshape(groups, GROUP + 1, N)  # from zero starts
        if groups > GROUP:
            starts, _ = self._scan(local[:, GROUP], state, level + 1)
        else:
            starts = np.empty((groups, N))
            for g in range(groups):
                starts[g] = state
                state = mp[GROUP] @ state + local[g, GROUP]
        g, i = divmod(k, GROUP)
        end = mp[i] @ starts[g] + local[g, i] if i else (
            mp[GROUP] @ starts[g - 1] + local[g - 1, GROUP])  # the state after e's last step
        states = (starts @ P).reshape(groups, GROUP, N)
        states += local[:, :GROUP]
        return states.reshape(-1, N)[:k], end

    def filter(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(y, state after x) for 1-D float64 x from `state` (zero_state() at the start of a signal):
        lfilter section after section, each from its part of the state, to ~1e-12 of the signal."""
        n = len(x)
        whole = n - n % BLOCK
        y = np.empty(n)
        if whole:
            X = x[:whole].reshape(-1, BLOCK)  # [k, L]
            k = len(X)
            inputs = X @ self.Rt  # [k, N]: each block's input share of its end state
            block_starts, state = self._scan(inputs, state, 0)
            out = y[:whole].reshape(k, BLOCK)  # written in place: no whole-signal temporaries
            np.matmul(X, self.Tt, out=out)
            out += block_starts @ self.Ot
        if whole < n:  # a partial block: its own part of T, O and R
            xr = x[whole:]
            r = len(xr)
            y[whole:] = xr @ self.Tt[:r, :r] + state @ self.Ot[:, :r]
            state = self.powers[r] @ state + xr @ self.Rt[BLOCK - r:]
        return y, state


@functools.cache
def kaiser_lowpass(up: int) -> np.ndarray:
    """resample_poly's anti-imaging filter for `up`x upsampling: a Kaiser-windowed (beta 5) sinc with
    10 zero crossings each side, cutoff 1 / up of Nyquist, unit DC gain, times `up` (the zeros
    inserted between samples). [20 * up + 1] float64."""
    half = 10 * up
    m = np.arange(2 * half + 1) - half
    h = np.sinc(m / up) / up * np.kaiser(2 * half + 1, 5.0)
    return h / h.sum() * up


def upsample(x: np.ndarray, up: int) -> np.ndarray:
    """x [n, channels] float64 -> [n * up, channels]: scipy.signal.resample_poly(x, up, 1, axis=0)
    (zero-insertion then `kaiser_lowpass`, the filter's delay removed; zeros beyond the ends)."""
    h = kaiser_lowpass(up)
    half = (len(h) - 1) // 2
    n = len(x)
    out = np.empty((n * up, x.shape[1]))
    for p in range(up):  # output phase p: y[up q + p] = sum_i x[i] h[up (q - i) + p + half]
        taps = h[(p + half) % up::up]  # h[up m + p + half] for m = m0 .. m1
        m0 = -((p + half) // up)
        for ch in range(x.shape[1]):
            full = np.convolve(x[:, ch], taps)  # index t <-> q = t + m0
            out[p::up, ch] = full[-m0:-m0 + n]
    return out


def _windows_of(x: np.ndarray, radius: int) -> tuple[np.ndarray, int]:
    """x edge-padded by `radius` on each side (scipy.ndimage's mode "nearest") and the window size."""
    return np.pad(x, radius, mode="edge"), 2 * radius + 1


def sliding_min(x: np.ndarray, radius: int) -> np.ndarray:
    """min(x[i - radius .. i + radius]) per i, the ends repeating x's first and last values
    (scipy.ndimage.minimum_filter1d(x, 2 * radius + 1, mode="nearest")): prefix and suffix minima
    over blocks of the window size (van Herk / Gil-Werman), three passes whatever the radius."""
    p, w = _windows_of(x, radius)
    blocks = -(-len(p) // w)
    padded = np.full(blocks * w, np.inf, dtype=np.result_type(p.dtype, np.float32))
    padded[:len(p)] = p
    grid = padded.reshape(blocks, w)
    prefix = np.minimum.accumulate(grid, axis=1).reshape(-1)
    suffix = np.minimum.accumulate(grid[:, ::-1], axis=1)[:, ::-1].reshape(-1)
    n = len(x)
    return np.minimum(suffix[:n], prefix[w - 1:w - 1 + n]).astype(x.dtype, copy=False)


def sliding_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """mean(x[i - radius .. i + radius]) per i, the ends repeating x's first and last values, for
    float32 x: scipy.ndimage.uniform_filter1d(x, 2 * radius + 1, mode="nearest") to the bit. Its running
    sum in float64 (the first window summed in order, then + entering - leaving per step: np.cumsum
    adds in that order), divided by the window size at each output."""
    p, w = _windows_of(np.asarray(x, np.float64), radius)
    steps = np.empty(len(x))
    steps[0] = np.cumsum(p[:w])[-1]
    steps[1:] = p[w:] - p[:len(p) - w]
    return (np.cumsum(steps) / w).astype(x.dtype)


def write_wav_pcm16(path: str | Path, rate: int, pcm: np.ndarray) -> None:
    """[n, channels] int16 -> a RIFF/WAVE file (the bytes scipy.io.wavfile.write gives)."""
    import wave

    pcm = np.ascontiguousarray(pcm, dtype="<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1 if pcm.ndim == 1 else pcm.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())


@functools.cache
def k_weighting(rate: int) -> SectionCascade:
    """BS.1770's K-weighting at `rate`: a +4 dB high shelf at 1500 Hz (Q 1/sqrt 2), then a 38 Hz high
    pass (Q 0.5), with the Audio EQ Cookbook's formulas as pyloudnorm's Meter designs them (the same
    coefficients: tested)."""
    return SectionCascade([_shelf(4.0, 1 / math.sqrt(2), 1500.0, rate), _high_pass(0.5, 38.0, rate)])


def _shelf(gain_db: float, q: float, fc: float, rate: int):
    big_a = 10 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * (fc / rate)
    alpha = np.sin(w0) / (2.0 * q)
    cos, root = np.cos(w0), 2 * np.sqrt(big_a) * alpha
    b = [big_a * ((big_a + 1) + (big_a - 1) * cos + root), -2 * big_a * ((big_a - 1) + (big_a + 1) * cos),
         big_a * ((big_a + 1) + (big_a - 1) * cos - root)]
    a = [(big_a + 1) - (big_a - 1) * cos + root, 2 * ((big_a - 1) - (big_a + 1) * cos),
         (big_a + 1) - (big_a - 1) * cos - root]
    return np.array(b) / a[0], np.array(a) / a[0]


def _high_pass(q: float, fc: float, rate: int):
    w0 = 2.0 * np.pi * (fc / rate)
    alpha = np.sin(w0) / (2.0 * q)
    cos = np.cos(w0)
    b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
    a = [1 + alpha, -2 * cos, 1 - alpha]
    return np.array(b) / a[0], np.array(a) / a[0]
