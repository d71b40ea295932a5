"""Per-beat controls -> piano roll of any length: 8-bar diffusion windows chained by inpainting.

Windows start every HOP bars (8 - OVERLAP_BARS); each new window is sampled with its first
OVERLAP_BARS bars fixed to what the previous window produced (DDIM with x0 replacement, see
diffusion.ddim_sample), so a long piece has no seams. The last window is aligned to the end of
the piece (its overlap may be larger). Pieces shorter than 8 bars are generated in one window
whose controls are padded by repeating the last bar, then cropped.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bgmgen.core.constants import (
    BARS_PER_WINDOW,
    BEATS_PER_BAR,
    BEATS_PER_WINDOW,
    HOP_STEPS,
    N_PITCHES,
    ROLL_CHANNELS,
    STEPS_PER_BAR,
    STEPS_PER_BEAT,
    WINDOW_STEPS,
)
from bgmgen.core.threads import OtherLoad, background_jobs, process_cpus
from bgmgen.music import controls as C
from bgmgen.music.tokens import ACC_KEYS, ACC_REST, MEL_REST, key_shift, notes_to_roll, tokens_to_notes

DEFAULT_STEPS = 25  # DDIM steps; 20, 30 and 50 give the same validation metrics with the groove imposed (MODEL_CARD)
# Classifier-free guidance per model family: the scale and the control groups it amplifies (the other groups
# are in both branches, so they act at scale 1), each chosen on validation songs (models/MODEL_CARD.md).
# v1/v2 ("roll"): the rhythm only, at 1.5: on 8 validation songs this raised density adherence without
# pushing the harmony to over-consonance, and with the groove imposed kept the notes near the requested
# number (1.12x; scale 3: 1.48x) with density rho 0.81 ("Guidance").
# v3 ("melody-accompaniment"): the rhythm and the harmony: on 12 validation songs lowering the
# temperature alone had traded pitch-class entropy and groove similarity for chord tones (0.6: PCHE 2.647
# vs the songs' 2.711); guiding the harmony keeps the chords with PCHE near the songs'. The scale is the
# shipped v3 file's (with the local heads, "v3g"): 1.75 (at temperature 0.65 the realism test scored
# 0.806 / 0.701, polyphony 3.97 vs the songs' 3.91); 2.0 overshoots the polyphony (4.34) and 1.5 takes
# the pitch-class entropy 0.052 below the songs' (the bar is 0.05).
SAMPLER_DEFAULTS_BY_ARCHITECTURE = {
    "roll": {"guidance": 1.5, "guide_groups": ("rhythm",)},
    "melody-accompaniment": {"guidance": 1.75, "guide_groups": ("rhythm", "harmony")},
}
DEFAULT_ARCHITECTURE = "melody-accompaniment"  # the shipped default model's (music.weights.DEFAULT_MODEL_NAME)
DEFAULT_GUIDANCE = SAMPLER_DEFAULTS_BY_ARCHITECTURE[DEFAULT_ARCHITECTURE]["guidance"]
DEFAULT_GUIDE_GROUPS = SAMPLER_DEFAULTS_BY_ARCHITECTURE[DEFAULT_ARCHITECTURE]["guide_groups"]
DEFAULT_STRICT_GROOVE = True
# v3 only (masked_diffusion.MaskedScheduler): random order, since the confidence order keeps density rho
# below 0.8 on validation songs; temperature 0.55 (12 validation songs, v3g at guidance 1.75: the realism
# test's accuracy 0.776 / 0.673 against 0.806 / 0.701 at 0.65, with PCHE 0.037 below the songs').
DEFAULT_ORDER = "random"
DEFAULT_TEMPERATURE = 0.55


@dataclass
class MusicModel:
    denoiser: object  # bgmgen.music.model.Denoiser
    path: str
    sha256: str
    meta: dict
    device: str
    precision: str = "fp32"  # "int8": Linear layers dynamically quantised (CPU), ~2.5x faster sampling
    convolutions: str = "fp32"  # "bf16" with int8 on a CPU with bf16 arithmetic (core.quantize)


def load_music_model(path: str | None = None, device: str = "cpu", precision: str | None = None,
                     convolutions: str | None = None) -> MusicModel:
    """Load the denoiser. precision: "fp32" or "int8" (default int8 on CPU: AVX-512 VNNI makes int8
    matmuls much faster here, while bf16 matmuls are 5x slower; fp32 on CUDA). With int8, the
    convolutions run in bf16 where the CPU has bf16 arithmetic (there they cost a third of fp32's);
    the sampler defaults were chosen in this mode (models/MODEL_CARD.md). `convolutions` ("bf16" or
    "fp32") overrides that choice, e.g. to compare the two on one CPU."""
    from bgmgen.core.errors import MissingDependencyError
    from bgmgen.core.files import sha256_file
    from bgmgen.music.weights import default_model_path, load_denoiser

    p = Path(path) if path else default_model_path()
    if not p.is_file():
        raise MissingDependencyError(f"{p}: music model file not found; pass --model PATH to a .safetensors file "
                                     "or reinstall bgmgen (the wheel ships models/)")
    try:
        denoiser, meta = load_denoiser(p, device)
    except Exception as err:  # corrupt file, wrong format
        raise MissingDependencyError(f"{p}: not a bgmgen music model ({type(err).__name__}: {err})") from err
    precision = precision or ("int8" if device == "cpu" else "fp32")
    if precision not in ("int8", "fp32"):
        raise MissingDependencyError(f"unknown precision {precision!r}; use fp32 or int8")
    if convolutions not in (None, "fp32") and (convolutions != "bf16" or precision != "int8"):
        raise MissingDependencyError(f"convolutions {convolutions!r}: use fp32, or bf16 with int8 precision")
    if precision == "int8":
        if device != "cpu":
            raise MissingDependencyError("int8 precision runs on the CPU only; use --device cpu or fp32")
        from bgmgen.core.quantize import bf16_convolutions_supported, convolutions_to_bf16, quantize_linear_int8

        denoiser = quantize_linear_int8(denoiser)
        convolutions = convolutions or ("bf16" if bf16_convolutions_supported() else "fp32")
        if convolutions == "bf16":
            denoiser = convolutions_to_bf16(denoiser)
    return MusicModel(denoiser, str(p), sha256_file(p), meta, device, precision, convolutions or "fp32")


def window_starts(n_bars: int) -> list[int]:
    """Start bars of the windows that cover n_bars (the last one aligned to the end)."""
    hop = HOP_STEPS // STEPS_PER_BAR
    if n_bars <= BARS_PER_WINDOW:
        return [0]
    starts = list(range(0, n_bars - BARS_PER_WINDOW + 1, hop))
    if starts[-1] + BARS_PER_WINDOW < n_bars:
        starts.append(n_bars - BARS_PER_WINDOW)
    return starts


def pad_controls(c: C.BeatControls, n_beats: int) -> C.BeatControls:
    """Extend controls to n_beats by repeating the last bar (used for pieces shorter than a window)."""
    if len(c) >= n_beats:
        return c
    reps = np.r_[np.arange(len(c)), (len(c) - BEATS_PER_BAR + np.arange(n_beats - len(c)) % BEATS_PER_BAR)]
    reps = np.clip(reps, 0, len(c) - 1)
    return C.BeatControls(**{k: None if v is None else v[reps] for k, v in c.__dict__.items()})


def generate_from_controls(model: MusicModel, controls: C.BeatControls, *, seed: int = 0,
                           steps: int = DEFAULT_STEPS, guidance: float | None = None,
                           present: dict[str, bool] | None = None, guide_groups: tuple[str, ...] | None = None,
                           strict_groove: bool = DEFAULT_STRICT_GROOVE, order: str = DEFAULT_ORDER,
                           temperature: float = DEFAULT_TEMPERATURE, progress=None,
                           written=None, threads: SamplerThreads | None = None) -> np.ndarray:
    """Roll (2, n_beats * 4, 128) in {0, 1} for the given per-beat controls.

    written(done_steps, roll_so_far): called after each window with the steps written so far and a
    function that returns the roll as it stands (what follows is silent; a note held at the end may
    still go on). For work that can start on the piece before it is complete (score.py: the render).
    threads: the torch threads per window (SamplerThreads, a new one by default; the notes do not
    depend on them).
    Classifier-free guidance at scale `guidance` pushes away from a branch in which `guide_groups` are
    dropped (None: the model family's, SAMPLER_DEFAULTS_BY_ARCHITECTURE); groups not listed are in both
    branches, so they act at scale 1.
    strict_groove (when the controls carry a groove and the rhythm group is present): no onset on
    a sixteenth the groove leaves empty (v1/v2: the onset channel of those steps is known to be 0
    at every denoising step; v3: no note may start there); notes may still be held through them.
    order, temperature: the v3 model's unmasking order and softmax temperature (masked_diffusion).
    """
    import torch

    family = SAMPLER_DEFAULTS_BY_ARCHITECTURE.get(model.denoiser.architecture, {})
    guidance = family.get("guidance", DEFAULT_GUIDANCE) if guidance is None else guidance
    guide_groups = family.get("guide_groups", DEFAULT_GUIDE_GROUPS) if guide_groups is None else guide_groups
    uncond_present = {g: (present or {}).get(g, True) and g not in guide_groups for g in C.GROUPS}
    n_beats = len(controls)
    n_bars = -(-n_beats // BEATS_PER_BAR)
    ctl = pad_controls(controls, max(n_bars * BEATS_PER_BAR, BEATS_PER_WINDOW))
    total_bars = max(n_bars, BARS_PER_WINDOW)
    melody_model = model.denoiser.architecture == "melody-accompaniment"
    shift = key_shift(int(ctl.key_tonic[0])) if melody_model else 0
    if shift:
        ctl = ctl.transposed(shift)  # the v3 model writes in C; its notes are moved back below
    piece = (MelodyAccompanimentPiece(total_bars * STEPS_PER_BAR, order, temperature) if melody_model
             else RollPiece(total_bars * STEPS_PER_BAR))
    gen = torch.Generator().manual_seed(int(seed))
    dev = model.device
    starts = window_starts(total_bars)
    done_until = 0  # steps already generated
    threads = threads or SamplerThreads()
    try:
        with torch.inference_mode():
            for k, bar in enumerate(starts):
                threads.next_window()
                b0, s0 = bar * BEATS_PER_BAR, bar * STEPS_PER_BAR
                w = ctl.slice(b0, b0 + BEATS_PER_WINDOW)
                layout = model.denoiser.layout
                cond = torch.from_numpy(C.encode(w, present, layout))[None].to(dev)
                uncond = torch.from_numpy(C.encode(w, uncond_present, layout))[None].to(dev)
                segments = torch.from_numpy((w.phrase_id - w.phrase_id.min()).astype(np.int64))[None].to(dev)
                on_groove = None
                if strict_groove and w.groove is not None and (present or {}).get("rhythm", True):
                    on_groove = w.groove.reshape(-1) > 0  # (128,)
                piece.sample(model, s0, known_steps=max(0, done_until - s0), cond=cond, uncond=uncond,
                              segments=segments, steps=steps, guidance=guidance, on_groove=on_groove, generator=gen)
                done_until = s0 + WINDOW_STEPS
                if progress:
                    progress(k + 1, len(starts))
                if written and k + 1 < len(starts):
                    written(done_until, lambda: piece.roll(n_beats * STEPS_PER_BEAT, shift))
    finally:
        threads.close()
    return piece.roll(n_beats * STEPS_PER_BEAT, shift)


class RollPiece:
    """v1/v2: Gaussian DDIM windows over the merged onset/sustain roll."""

    def __init__(self, n_steps: int):
        self.full = np.zeros((ROLL_CHANNELS, n_steps, N_PITCHES), np.float32)

    def sample(self, model: MusicModel, s0: int, *, known_steps: int, cond, uncond, segments, steps: int,
               guidance: float, on_groove: np.ndarray | None, generator) -> None:
        import torch

        from bgmgen.music.diffusion import ddim_sample

        dev = model.device
        known_np = np.zeros((ROLL_CHANNELS, WINDOW_STEPS, N_PITCHES), np.float32)
        mask_np = np.zeros((ROLL_CHANNELS, WINDOW_STEPS, 1), bool)
        known_np[:, :known_steps] = self.full[:, s0:s0 + known_steps]
        mask_np[:, :known_steps] = True
        require = None
        if on_groove is not None:
            mask_np[0, :, 0] |= ~on_groove  # onset channel known empty off the groove
            require = torch.from_numpy(on_groove)[None].to(dev)
        known = mask = None
        if mask_np.any():
            known = torch.from_numpy(known_np)[None].to(dev)
            mask = torch.from_numpy(mask_np)[None].to(dev)
        out = ddim_sample(model.denoiser, cond, segments, steps=steps, guidance=guidance, uncond=uncond,
                          generator=generator, known=known, known_mask=mask, require_onset=require)
        self.full[:, s0:s0 + WINDOW_STEPS] = out[0].cpu().numpy()

    def roll(self, n_steps: int, shift: int) -> np.ndarray:
        """The roll as sampled; v1/v2 write in the plan's own key, so there is no key shift to undo."""
        if shift:
            raise ValueError("roll models write in the plan's key: no key shift to undo")
        return clean_roll(self.full[:, :n_steps])


class MelodyAccompanimentPiece:
    """v3: masked-diffusion windows over melody tokens and accompaniment states (in C)."""

    def __init__(self, n_steps: int, order: str, temperature: float):
        self.melody = np.full(n_steps, MEL_REST, np.int64)
        self.accompaniment = np.full((n_steps, ACC_KEYS), ACC_REST, np.int64)
        self.order, self.temperature = order, temperature

    def sample(self, model: MusicModel, s0: int, *, known_steps: int, cond, uncond, segments, steps: int,
               guidance: float, on_groove: np.ndarray | None, generator) -> None:
        import torch

        from bgmgen.music.masked_diffusion import MaskedScheduler, sample

        dev = model.device
        scheduler = MaskedScheduler(steps=steps, order=self.order, temperature=self.temperature)
        mel = torch.from_numpy(self.melody[s0:s0 + WINDOW_STEPS].copy())[None].to(dev)
        acc = torch.from_numpy(self.accompaniment[s0:s0 + WINDOW_STEPS].copy())[None].to(dev)
        no_onset = None if on_groove is None else torch.from_numpy(~on_groove)[None].to(dev)
        mel, acc = sample(model.denoiser, cond, segments, scheduler, guidance=guidance, uncond=uncond,
                          generator=generator, known_melody=mel, known_acc=acc, known_steps=known_steps,
                          no_onset=no_onset)
        self.melody[s0:s0 + WINDOW_STEPS] = mel[0].cpu().numpy()
        self.accompaniment[s0:s0 + WINDOW_STEPS] = acc[0].cpu().numpy()

    def roll(self, n_steps: int, shift: int) -> np.ndarray:
        """The notes as sampled (tokens.tokens_to_notes), moved back to the plan's key, as a roll."""
        notes = tokens_to_notes(self.melody[:n_steps], self.accompaniment[:n_steps], shift)
        return notes_to_roll(notes, n_steps)


SAMPLER_THREADS_ENV = "BGMGEN_GENERATE_THREADS"  # a count, or unset / "auto" (SamplerThreads)
MOST_SAMPLER_THREADS = 2  # auto's ceiling: the two-thread figures below are all that was measured
# auto: two threads only while the machine's other processes leave two CPUs free, give or take this.
OTHER_LOAD_MARGIN = 0.3  # cores


def sampler_thread_setting() -> int | None:
    """BGMGEN_GENERATE_THREADS as a thread count, or None for auto (unset, "auto" or not a number)."""
    value = os.environ.get(SAMPLER_THREADS_ENV, "auto").strip().lower()
    try:
        return max(1, int(value))
    except ValueError:
        return None


def usable_cores() -> int:
    """CPUs this process may use for torch: OMP_NUM_THREADS when set (Ray sets it to a worker's CPUs),
    else the CPUs it may run on."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return len(process_cpus())


class SamplerThreads:
    """Torch threads for each window of the sampler (`next_window()` sets them), restored by `close()`.

    BGMGEN_GENERATE_THREADS=N fixes N. Auto (the default): two threads for a window when this process
    has no background job under way (core.threads: the shot checks, the report keyframes' decode),
    the machine's other processes left two of its CPUs free during the last window
    (core.threads.OtherLoad; the first window cannot know and takes one) and OMP_NUM_THREADS allows
    two; else one. Why not always two: the denoiser's matmuls are small (batch 2, 6 M parameters) and
    two OpenMP threads on cores shared with other work spin-wait on each other (3 bars took 93.5 s
    wall / 46 s CPU with 2 threads and 1.8 s / 0.9 s with 1). With the second core free, two threads
    sampled a 10-minute piece (28 windows) in 24.8 s instead of 37.9 s here, 27.6 s beside a busy
    loop at nice 10 (the render's parts ahead run at that priority, so they do not count as jobs).
    The thread count does not change the notes (tested on the shipped model; a 10-minute piece's 28
    windows also came out the same): as far as we know every operation the sampler runs splits its
    work over threads without changing any element's arithmetic (int8 matmuls accumulate exactly in
    integers; the rest works per element or per row, and the random draws are serial)."""

    def __init__(self, other_load: OtherLoad | None = None):
        import torch

        self.setting = sampler_thread_setting()
        self.most = min(MOST_SAMPLER_THREADS, usable_cores())
        self.other_load = other_load or (OtherLoad() if self.setting is None and self.most > 1 else None)
        self.restore = torch.get_num_threads()
        self.windows: dict[int, int] = {}  # threads -> windows sampled with them

    def choose(self) -> int:
        """The thread count for the next window."""
        if self.setting is not None:
            return self.setting
        if self.most < 2:
            return 1
        others = self.other_load.cores()  # read every window, so that each reading covers one window
        if background_jobs() or others is None:
            return 1
        free = len(self.other_load.cpus) - others  # of the CPUs this process may run on
        return self.most if free >= self.most - OTHER_LOAD_MARGIN else 1

    def next_window(self) -> int:
        import torch

        n = self.choose()
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        self.windows[n] = self.windows.get(n, 0) + 1
        return n

    def close(self) -> None:
        import torch

        torch.set_num_threads(self.restore)

    def to_json(self) -> dict:
        """For run.json: the setting and how many windows ran with each thread count."""
        return {"setting": "auto" if self.setting is None else self.setting,
                "windows": {str(k): v for k, v in sorted(self.windows.items())}}


@dataclass(frozen=True)
class SamplerSettings:
    """Every sampler setting, resolved once: the defaults live here, run.json records all of them."""

    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    guide_groups: tuple[str, ...] = DEFAULT_GUIDE_GROUPS
    strict_groove: bool = DEFAULT_STRICT_GROOVE
    order: str = DEFAULT_ORDER  # v3 models only
    temperature: float = DEFAULT_TEMPERATURE  # v3 models only

    @classmethod
    def with_overrides(cls, architecture: str, **given) -> "SamplerSettings":
        """The defaults of a model of `architecture` (its guidance scale and groups), with the settings a
        user gave (None = not given)."""
        defaults = SAMPLER_DEFAULTS_BY_ARCHITECTURE.get(architecture, {})
        return cls(**{**defaults, **{k: v for k, v in given.items() if v is not None}})

    def to_json(self) -> dict:
        return {**asdict(self), "guide_groups": list(self.guide_groups)}


def generate_roll(model: MusicModel, plan, *, seed: int = 0, settings: SamplerSettings = SamplerSettings(),
                  progress=None, written=None, threads: SamplerThreads | None = None) -> np.ndarray:
    """Contract entry point (docs/CONTRACTS.md): MusicPlan -> roll (2, n_beats * 4, 128) in {0, 1}.
    written, threads: see generate_from_controls."""
    return generate_from_controls(model, plan.controls, seed=seed, **asdict(settings), progress=progress,
                                  written=written, threads=threads)


def clean_roll(roll: np.ndarray) -> np.ndarray:
    """Make onset/sustain consistent: a sustain step only continues a note that is sounding."""
    onset, sustain = roll[0] > 0.5, roll[1] > 0.5
    sounding = np.zeros(onset.shape[1], bool)
    keep = np.zeros_like(sustain)
    for t in range(onset.shape[0]):
        keep[t] = sustain[t] & sounding & ~onset[t]
        sounding = onset[t] | keep[t]
    return np.stack([onset, keep]).astype(np.float32)
