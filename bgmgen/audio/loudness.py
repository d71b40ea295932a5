"""loudness: the meters render.py normalises with, on [n, channels] float or 16-bit PCM audio.

* `integrated_loudness`: ITU-R BS.1770-4 gated integrated loudness (LUFS), with pyloudnorm's
  K-weighting stages (dsp.k_weighting), computed in chunks (constant memory, equal to the whole-array
  result; within 1e-9 LU of pyloudnorm's Meter: tested).
* `true_peak_dbtp`: true peak (dBTP) by 4x polyphase oversampling of the blocks near the sample peak.
* `sample_magnitude`: max |sample| over channels, per sample (the limiter's input).

16-bit PCM is read as value / 32767. `CHUNK` is the chunk size every walk over a long render uses
(render.py's limiter and PCM conversion too).
"""

from __future__ import annotations

import numpy as np

from bgmgen.audio.dsp import k_weighting, upsample
from bgmgen.core.constants import SAMPLE_RATE

LOUDNESS_BLOCK_S = 0.400  # BS.1770 gating block
LOUDNESS_HOP_S = 0.100  # 75 % overlap
ABS_GATE_LUFS = -70.0
REL_GATE_LU = -10.0
TRUE_PEAK_OVERSAMPLE = 4
TRUE_PEAK_SEARCH_DB = 6.0
PCM16_SCALE = 32767.0
CHUNK = 1 << 20  # samples per chunk when walking long renders (keeps temporaries small)
METER_THREADS = 2  # the meters' pieces (matrix products, convolutions) release the GIL: they run side by side


def _as_2d(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    return audio[:, None] if audio.ndim == 1 else audio


def _float64(audio: np.ndarray, lo: int, hi: int, ch=slice(None)) -> np.ndarray:
    """audio[lo:hi, ch] as float64 in [-1, 1] (16-bit PCM is scaled), without converting the whole array."""
    seg = audio[lo:hi, ch].astype(np.float64)
    if audio.dtype == np.int16:
        seg /= PCM16_SCALE
    return seg


def sample_magnitude(audio: np.ndarray) -> np.ndarray:
    """max |sample| over channels, per sample, as float32 (computed chunk by chunk).

    float32 and int16 audio take the maximum per channel pair with np.maximum (a reduction along a
    2-wide axis is ~10x slower); |x| and max are exact, and scaling PCM after the maximum gives the
    same float32 values as scaling first, since the scaling is monotonic."""
    audio = _as_2d(audio)
    mag = np.empty(len(audio), dtype=np.float32)
    for lo in range(0, len(audio), CHUNK):
        hi = min(len(audio), lo + CHUNK)
        if audio.dtype == np.float32:
            m = np.abs(audio[lo:hi, 0])
            for ch in range(1, audio.shape[1]):
                np.maximum(m, np.abs(audio[lo:hi, ch]), out=m)
            mag[lo:hi] = m
        elif audio.dtype == np.int16:
            m = np.abs(audio[lo:hi, 0].astype(np.int32))
            for ch in range(1, audio.shape[1]):
                np.maximum(m, np.abs(audio[lo:hi, ch].astype(np.int32)), out=m)
            mag[lo:hi] = m / PCM16_SCALE
        else:
            mag[lo:hi] = np.abs(_float64(audio, lo, hi)).max(axis=1)
    return mag


def integrated_loudness(audio: np.ndarray, rate: int = SAMPLE_RATE, chunk: int = 1 << 20,
                        threads: int = METER_THREADS) -> float:
    """BS.1770-4 gated integrated loudness (LUFS) of [n, channels] audio, in chunks (constant memory),
    its channels filtered on up to `threads` threads (the same value on any number).

    Returns -inf for silence. Clips shorter than one 400 ms block are measured looped to 1 s.
    """
    audio = _as_2d(audio)
    block = int(round(LOUDNESS_BLOCK_S * rate))
    hop = int(round(LOUDNESS_HOP_S * rate))
    if len(audio) < block:
        if len(audio) == 0:
            return float("-inf")
        audio = np.tile(audio, (int(np.ceil(rate / len(audio))), 1))
    k_filter = k_weighting(rate)
    n, n_ch = audio.shape
    hops_per_block = block // hop
    n_hops = n // hop
    hop_energy = np.zeros((n_ch, n_hops), dtype=np.float64)

    def filter_channel(ch: int) -> None:
        state = k_filter.zero_state()
        carry = np.zeros(0)
        for start in range(0, n_hops * hop, chunk):
            seg, state = k_filter.filter(_float64(audio, start, min(start + chunk, n_hops * hop), ch), state)
            seg = np.concatenate([carry, seg])
            whole = (len(seg) // hop) * hop
            first = (start - len(carry)) // hop
            sq = np.square(seg[:whole]).reshape(-1, hop).sum(axis=1)
            hop_energy[ch, first:first + len(sq)] = sq
            carry = seg[whole:]

    # The channels are filtered side by side on long audio (each channel's numbers are the same as in
    # one thread): 1.5 -> 0.8 s for 10 minutes of stereo here.
    _map_on_threads(filter_channel, range(n_ch), n >= chunk, threads)
    n_blocks = n_hops - hops_per_block + 1
    if n_blocks <= 0:
        return float("-inf")
    csum = np.concatenate([np.zeros((n_ch, 1)), np.cumsum(hop_energy, axis=1)], axis=1)
    z = (csum[:, hops_per_block:hops_per_block + n_blocks] - csum[:, :n_blocks]) / block  # [ch, blocks]
    weights = np.array([1.0, 1.0, 1.0, 1.41, 1.41][:n_ch] + [1.0] * max(0, n_ch - 5))[:, None]
    power = (weights * z).sum(axis=0)
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(power)
    gated = block_lufs >= ABS_GATE_LUFS
    if not gated.any():
        return float("-inf")
    rel = -0.691 + 10.0 * np.log10(power[gated].mean()) + REL_GATE_LU
    gated &= block_lufs > rel
    if not gated.any():
        return float("-inf")
    return float(-0.691 + 10.0 * np.log10(power[gated].mean()))


def sample_peak_dbfs(audio: np.ndarray) -> float:
    """Largest |sample| in dBFS (-inf for silence); a true peak is never below it."""
    peak = float(sample_magnitude(audio).max(initial=0.0))
    return 20.0 * np.log10(peak) if peak > 0 else float("-inf")


def true_peak_dbtp(audio: np.ndarray, oversample: int = TRUE_PEAK_OVERSAMPLE, block: int = 4096) -> float:
    """Maximum absolute value after `oversample`x polyphase upsampling, in dBTP.

    Only blocks whose sample peak lies within TRUE_PEAK_SEARCH_DB of the overall sample peak are
    oversampled (an inter-sample peak more than 6 dB above its neighbouring samples needs
    pathological, near-Nyquist signals), which keeps this fast and memory-light on long renders."""
    audio = _as_2d(audio)
    n = len(audio)
    if n == 0:
        return float("-inf")
    mag = sample_magnitude(audio)
    sample_peak = float(mag.max())
    if sample_peak <= 0:
        return float("-inf")
    n_blocks = -(-n // block)
    block_peak = np.empty(n_blocks, dtype=mag.dtype)
    whole = n // block
    block_peak[:whole] = mag[:whole * block].reshape(whole, block).max(axis=1)
    if whole < n_blocks:
        block_peak[whole] = mag[whole * block:].max()
    candidates = np.flatnonzero(block_peak >= sample_peak * 10.0 ** (-TRUE_PEAK_SEARCH_DB / 20.0))
    pad = 256  # filter context on each side of a block
    runs, run_start = [], None
    for i, b in enumerate(candidates):  # merge consecutive candidate blocks into one call
        if run_start is None:
            run_start = b
        if i + 1 < len(candidates) and candidates[i + 1] == b + 1:
            continue
        runs.append((run_start * block, min(n, (b + 1) * block)))
        run_start = None

    def run_peak(run: tuple[int, int]) -> float:
        s0, s1 = run
        lo, hi = max(0, s0 - pad), min(n, s1 + pad)
        up = upsample(_float64(audio, lo, hi), oversample)
        return float(np.abs(up[(s0 - lo) * oversample:(s1 - lo) * oversample]).max(initial=0.0))

    # Many runs are oversampled side by side; the maximum does not depend on the order: 1.1 -> 0.6 s
    # for 10 minutes of stereo here.
    peaks = _map_on_threads(run_peak, runs, len(runs) > 8)
    return 20.0 * np.log10(max([sample_peak, *peaks]))


def _map_on_threads(fn, items, worth_it: bool, threads: int = METER_THREADS) -> list:
    """[fn(item) for item in items], on up to `threads` threads when `worth_it` and there is more than
    one item (each result is computed exactly as in one thread)."""
    items = list(items)
    if not worth_it or len(items) < 2 or threads < 2:
        return [fn(item) for item in items]
    import concurrent.futures  # noqa: PLC0415

    with concurrent.futures.ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="meter") as pool:
        return list(pool.map(fn, items))
