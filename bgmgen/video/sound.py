"""sound: a few numbers about the video's original sound, as mood evidence (no model).

The first audio stream is decoded once through ffmpeg as mono 16 kHz float (at most
`MAX_SECONDS`), cut into 50 ms frames, and summarised:
  * `level_db`     mean RMS level of the frames, dBFS (digital silence ~ -90);
  * `active_share` share of frames above `ACTIVE_DBFS` (something is sounding);
  * `onset_rate`   sound onsets per second: frames whose level jumps `ONSET_JUMP_DB` above the
                   previous 150 ms (speech syllables, steps, hits; a steady stream or hum has few);
  * `activity`     0..1, one number for the mood rule: loud, busy sound -> 1; silence or a steady
                   quiet ambience -> 0.
No audio stream, or one that does not decode: {} (the mood rule then leaves sound out).
"""

from __future__ import annotations

import numpy as np

from bgmgen.core.ffmpeg import input_file, pipe
from bgmgen.video.probe import VideoInfo

SAMPLE_RATE = 16000
FRAME_S = 0.05
MAX_SECONDS = 600.0
SILENCE_DB = -90.0
ACTIVE_DBFS = -45.0  # the level below which a frame counts as silent (volumedetect of the shared
                     # clips: the quiet 5.1 portrait clip -54 dB, the water stream -39.5 dB)
ONSET_JUMP_DB = 6.0
# `activity` = mean of two 0..1 parts: level from ACTIVITY_QUIET_DB (0) to ACTIVITY_LOUD_DB (1), and
# onset rate from 0 to ACTIVITY_BUSY_RATE onsets/s (speech has ~4 syllables/s; a music track more).
ACTIVITY_QUIET_DB = -50.0
ACTIVITY_LOUD_DB = -18.0
ACTIVITY_BUSY_RATE = 4.0


def _graph(path: str, max_seconds: float):
    audio = input_file(path, t=f"{max_seconds:.3f}")["a:0"]
    return audio.output("pipe:1", format="f32le", ac=1, ar=SAMPLE_RATE, vn=None, sn=None, dn=None)


def sound_features(info: VideoInfo, max_seconds: float = MAX_SECONDS) -> dict:
    """The summary above for `info.path`'s first audio stream, or {} when there is none."""
    if not info.has_audio:
        return {}
    blocks = list(pipe(_graph(info.path, max_seconds), 1 << 20))
    samples = np.frombuffer(b"".join(blocks), np.float32) if blocks else np.zeros(0, np.float32)
    return summarise(samples, SAMPLE_RATE)


def summarise(samples: np.ndarray, rate: int = SAMPLE_RATE) -> dict:
    """Level, activity and onset rate of mono float samples (see the module docstring)."""
    hop = max(1, int(round(FRAME_S * rate)))
    n = len(samples) // hop
    if n < 2:
        return {}
    frames = np.asarray(samples[: n * hop], np.float64).reshape(n, hop)
    rms = np.sqrt(np.mean(frames ** 2, axis=1))
    db = np.maximum(20 * np.log10(np.maximum(rms, 1e-12)), SILENCE_DB)
    level = float(20 * np.log10(max(float(np.sqrt(np.mean(rms ** 2))), 1e-12)))
    level = max(level, SILENCE_DB)
    history = 3  # 150 ms
    past = np.array([db[max(0, i - history):i].mean() if i else db[0] for i in range(n)])
    rise = (db - past >= ONSET_JUMP_DB) & (db > ACTIVE_DBFS)
    onsets = int(np.sum(rise[1:] & ~rise[:-1]))
    duration = n * FRAME_S
    rate_s = onsets / duration
    loud = float(np.clip((level - ACTIVITY_QUIET_DB) / (ACTIVITY_LOUD_DB - ACTIVITY_QUIET_DB), 0, 1))
    busy = float(np.clip(rate_s / ACTIVITY_BUSY_RATE, 0, 1))
    return {"level_db": round(level, 2), "active_share": round(float(np.mean(db > ACTIVE_DBFS)), 3),
            "onset_rate": round(rate_s, 3), "activity": round(0.5 * loud + 0.5 * busy * (loud > 0), 3)}
