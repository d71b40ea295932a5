"""Train the music model on POP909 (music-side controls), resumable, CPU by default.

    bgmgen train --data ../shared/datasets/pop909 --structure ../shared/datasets/pop909-structure \
                 --out runs/full --steps 6000

Each sample: an 8-bar window starting on any bar of a training song (1-bar hop, as Diff-BGM),
transposed by -6..+5 semitones, its per-beat controls read off the music itself, the phrase
segments of one of the two human annotations (chosen at random), and each control group dropped
with probability GROUP_DROP (all of them with ALL_DROP) so classifier-free guidance is trained.
Checkpoints (every `--ckpt-every` steps, atomic) hold the model, its EMA, the optimiser and the
RNG states; `--resume` continues bit-for-bit where the last checkpoint left off.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bgmgen.core.constants import BARS_PER_WINDOW, BEATS_PER_BAR, N_PITCHES, STEPS_PER_BAR, STEPS_PER_BEAT
from bgmgen.music import controls as C
from bgmgen.music.config import DenoiserConfig
from bgmgen.music.tokens import accompaniment_states, key_shift, melody_tokens

GROUP_DROP = 0.15
ALL_DROP = 0.10
TRANSPOSE_RANGE = (-6, 5)
ARCH = DenoiserConfig()
VARIANTS = {
    "full": {},
    "no-mask": {"segment_mask": False},
    "no-selector": {"selector": "none"},
    "hard-selector": {"selector": "hard"},
}


@dataclass(frozen=True)
class TrainOptions:
    data: str
    structure: str
    out: str = "runs/full"
    steps: int = 6000
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 300
    ema_decay: float = 0.999
    seed: int = 0
    variant: str = "full"
    # The architecture's defaults are DenoiserConfig's (music/config.py): defined once.
    controls_layout: int = ARCH.controls_layout  # 1 for runs started before the groove control (v1, ablations)
    architecture: str = ARCH.architecture  # "roll" for the v1/v2 Gaussian roll model
    d_model: int = ARCH.d_model
    n_layers: int = ARCH.n_layers
    n_heads: int = ARCH.n_heads
    pitch_channels: int = ARCH.pitch_channels
    pitch_kernel: int = ARCH.pitch_kernel
    time_kernel: int = ARCH.time_kernel
    dropout: float = ARCH.dropout  # residual dropout (the weights do not change shape: any run can add it)
    local_kernel: int = ARCH.local_kernel  # v3: local refinement heads (0: none)
    local_channels: int = ARCH.local_channels
    bar_kernel: int = ARCH.bar_kernel  # v3: the accompaniment's bar head (bars it sees; 0: none)
    train_only: str | None = None  # comma list of parameter-name prefixes to train (the rest frozen)
    bf16: bool = False  # bf16 autocast for the forward and backward (CPUs with AVX-512 BF16)
    ckpt_every: int = 250
    stop_after: int | None = None  # stop at this step (the lr schedule still spans `steps`): equal-budget ablations
    threads: int | None = None  # torch intra-op threads (default: torch's choice)
    snapshot_every: int = 1500  # keep model-stepN.safetensors for equal-budget ablation comparisons
    eval_every: int = 500
    device: str = "cpu"
    resume: bool = False
    init_from: str | None = None  # start from these weights (e.g. v1 for a layout-2 model), fresh optimiser
    quiet: bool = False


class WindowSampler:
    """Random 8-bar training windows (roll, condition features, segments) from the grid cache."""

    def __init__(self, cache_path: str | Path, songs: list[str] | None):
        d = np.load(cache_path)
        self.onset = d["onset"]
        self.sustain = d["sustain"]
        self.melody_pitch, self.melody_onset = d["melody_pitch"], d["melody_onset"]
        self.acc_onset, self.acc_sustain = d["acc_onset"], d["acc_sustain"]
        ids = [str(s) for s in d["song_id"]]
        keep = [i for i, s in enumerate(ids) if songs is None or s in set(songs)]
        self.song_ids = [ids[i] for i in keep]
        self.step_offset = d["step_offset"][keep]
        self.beat_offset = d["beat_offset"][keep]
        self.n_bars = d["n_bars"][keep]
        self.key_tonic = d["key_tonic"][keep]
        self.key_mode = d["key_mode"][keep]
        self.chord_root, self.chord_chroma, self.chord_bass = d["chord_root"], d["chord_chroma"], d["chord_bass"]
        self.phrase = [(d[f"phrase_id{k}"], d[f"phrase_pos{k}"], d[f"melodic{k}"]) for k in (1, 2)]
        # Per-beat register over the whole dataset, computed once (it looks beyond window edges).
        self.register = np.zeros(len(self.onset) // STEPS_PER_BEAT, np.float32)
        for so, bo, nb in zip(d["step_offset"], d["beat_offset"], d["n_bars"]):
            self.register[bo:bo + nb * BEATS_PER_BAR] = C.register_from_onsets(
                self.onset[so:so + nb * STEPS_PER_BAR])
        windows = [(i, b) for i, nb in enumerate(self.n_bars) for b in range(nb - BARS_PER_WINDOW + 1)]
        self.windows = np.array(windows, np.int64)

    def controls(self, song: int, start_bar: int, n_bars: int = BARS_PER_WINDOW, annotator: int = 0) -> C.BeatControls:
        b0 = self.beat_offset[song] + start_bar * BEATS_PER_BAR
        sl = slice(b0, b0 + n_bars * BEATS_PER_BAR)
        s0 = self.step_offset[song] + start_bar * STEPS_PER_BAR
        pid, pos, mel = (a[sl] for a in self.phrase[annotator])
        return C.music_controls(
            self.onset[s0:s0 + n_bars * STEPS_PER_BAR], register=self.register[sl], chord_root=self.chord_root[sl],
            chord_chroma=self.chord_chroma[sl], chord_bass=self.chord_bass[sl], key_tonic=self.key_tonic[song],
            key_mode=self.key_mode[song], phrase_id=pid - pid.min(), phrase_pos=pos, melodic=mel)

    def roll(self, song: int, start_bar: int, n_bars: int = BARS_PER_WINDOW, shift: int = 0) -> np.ndarray:
        """(2, n_steps, 128) in {0, 1}, transposed by `shift` semitones (notes pushed off the keyboard vanish)."""
        s0 = self.step_offset[song] + start_bar * STEPS_PER_BAR
        sl = slice(s0, s0 + n_bars * STEPS_PER_BAR)
        r = np.stack([self.onset[sl] > 0, self.sustain[sl] > 0]).astype(np.float32)
        if shift:
            r = np.roll(r, shift, axis=-1)
            if shift > 0:
                r[..., :shift] = 0
            else:
                r[..., N_PITCHES + shift:] = 0
        return r

    def tokens(self, song: int, start_bar: int, n_bars: int = BARS_PER_WINDOW, shift: int = 0):
        """(melody [n_steps], accompaniment [n_steps, 88]) of the v3 representation, moved by `shift`."""
        s0 = self.step_offset[song] + start_bar * STEPS_PER_BAR
        sl = slice(s0, s0 + n_bars * STEPS_PER_BAR)
        return (melody_tokens(self.melody_pitch[sl], self.melody_onset[sl], shift),
                accompaniment_states(self.acc_onset[sl], self.acc_sustain[sl], shift))

    def batch(self, rng: np.random.Generator, size: int, train: bool = True,
              layout: C.Layout = C.LAYOUTS[C.LATEST_LAYOUT], architecture: str = "roll"):
        """A batch of windows: (roll, cond, segments) for "roll" (transposed at random by
        TRANSPOSE_RANGE when training), (melody, accompaniment, cond, segments) for
        "melody-accompaniment" (each window moved to the common key, tokens.key_shift)."""
        import torch

        targets, conds, segs = [], [], []
        picks = self.windows[rng.integers(0, len(self.windows), size)]
        for song, bar in picks:
            if architecture == "roll":
                shift = int(rng.integers(TRANSPOSE_RANGE[0], TRANSPOSE_RANGE[1] + 1)) if train else 0
                targets.append((self.roll(song, bar, shift=shift),))
            else:
                shift = key_shift(self.key_tonic[song])
                targets.append(self.tokens(song, bar, shift=shift))
            ctl = self.controls(song, bar, annotator=int(rng.integers(0, 2)) if train else 0).transposed(shift)
            present = None
            if train:
                drop_all = rng.random() < ALL_DROP
                present = {g: not drop_all and rng.random() >= GROUP_DROP for g in C.GROUPS}
            conds.append(C.encode(ctl, present, layout))
            segs.append(ctl.phrase_id)
        streams = [torch.from_numpy(np.stack(x)) for x in zip(*targets)]
        return (*streams, torch.from_numpy(np.stack(conds)), torch.from_numpy(np.stack(segs).astype(np.int64)))


def warm_start_state(path: str | Path, model) -> dict:
    """The weights of the model file at `path`, fitted to `model`: tensors of the same shape are
    taken as they are; the first layer of a condition embedding whose controls layout gained
    columns (layout 1 -> 2 adds the groove to the rhythm group) keeps the old columns' weights and
    starts the new columns at zero, so the warm-started model computes what the old one did until
    it learns to use the new controls. Layers added since (the model's `warm_start_additions`: v3's
    skip path and its local and bar heads, zero at initialisation) start as they are."""
    import torch

    from bgmgen.music.weights import load_denoiser

    embed_groups = {"sem_embed.0.weight": C.SEMANTIC_GROUPS, "dyn_embed.0.weight": C.DYNAMIC_GROUPS}
    old, _ = load_denoiser(path)
    new_state = model.state_dict()
    state = {}
    for name, value in old.state_dict().items():
        target = new_state[name]
        if value.shape == target.shape:
            state[name] = value
            continue
        if name not in embed_groups:
            raise ValueError(f"{path}: {name} has shape {tuple(value.shape)}, this model needs {tuple(target.shape)}")
        # weight column k reads feature column cols[k] of the condition token
        new_position = {col: k for k, col in enumerate(model.layout.columns(embed_groups[name]))}
        fitted = torch.zeros_like(target)
        for k, col in enumerate(old.layout.columns(embed_groups[name])):
            fitted[:, new_position[_same_feature(col, old.layout, model.layout)]] = value[:, k]
        state[name] = fitted
    # Layers the old model lacks keep their zero initialisation, so the warm-started model still
    # computes what the old one did; only the layers the model declares so may be missing.
    added = sorted(set(new_state) - set(state))
    if any(not name.startswith(getattr(model, "warm_start_additions", ())) for name in added):
        raise ValueError(f"{path}: lacks {', '.join(added)}; it is not an earlier version of this model")
    return {**{name: new_state[name] for name in added}, **state}


def trainable_parameters(model, train_only: str | None) -> list:
    """The parameters to optimise: all, or those whose names start with one of the comma-separated
    prefixes of `train_only` (the others get requires_grad False, so no gradient is computed for them:
    a frozen trunk is only run forwards)."""
    if not train_only:
        return list(model.parameters())
    prefixes = tuple(p.strip() for p in train_only.split(",") if p.strip())
    chosen = []
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(prefixes))
        if param.requires_grad:
            chosen.append(param)
    if not chosen:
        raise ValueError(f"--train-only {train_only}: no parameter name starts with {', '.join(prefixes)}")
    return chosen


def _same_feature(col: int, old: C.Layout, new: C.Layout) -> int:
    """The column of `new` that holds the feature in column `col` of `old` (groups keep their
    internal order; a group's extra columns, such as the groove, come after its old ones)."""
    if col >= old.present_offset:
        return new.present_offset + (col - old.present_offset)
    for g in C.GROUPS:
        s = old.slices[g]
        if s.start <= col < s.stop:
            return new.slices[g].start + (col - s.start)
    raise ValueError(f"column {col} is outside layout {old.version}")


def lr_at(step: int, o: TrainOptions) -> float:
    if step < o.warmup:
        return o.lr * (step + 1) / o.warmup
    progress = min(1.0, (step - o.warmup) / max(1, o.steps - o.warmup))
    return o.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(o: TrainOptions, log=print) -> Path:
    import torch

    from bgmgen.core.files import atomic_path
    from bgmgen.data import pop909, splits
    from bgmgen.music import diffusion, masked_diffusion
    from bgmgen.music.model import build_denoiser, count_parameters
    from bgmgen.music.weights import save_model

    if o.threads:
        torch.set_num_threads(o.threads)
    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = pop909.default_cache_path(o.data)
    if not cache.exists():
        log(f"building the POP909 grid cache at {cache} (about a minute)")
        pop909.build_cache(o.data, o.structure, cache)
    train_set = WindowSampler(cache, splits.TRAIN_SONGS)
    valid_set = WindowSampler(cache, splits.VALID_SONGS)
    log(f"train: {len(train_set.song_ids)} songs, {len(train_set.windows)} windows; "
        f"valid: {len(valid_set.song_ids)} songs, {len(valid_set.windows)} windows")

    config = DenoiserConfig(d_model=o.d_model, n_layers=o.n_layers, n_heads=o.n_heads,
                            controls_layout=o.controls_layout, architecture=o.architecture,
                            pitch_channels=o.pitch_channels, pitch_kernel=o.pitch_kernel, time_kernel=o.time_kernel,
                            dropout=o.dropout, local_kernel=o.local_kernel, local_channels=o.local_channels,
                            bar_kernel=o.bar_kernel,
                            **VARIANTS[o.variant])
    loss_fn = diffusion.training_loss if o.architecture == "roll" else masked_diffusion.training_loss
    torch.manual_seed(o.seed)
    model = build_denoiser(config).to(o.device)
    ema = build_denoiser(config).to(o.device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    trainable = trainable_parameters(model, o.train_only)
    opt = torch.optim.AdamW(trainable, lr=o.lr, weight_decay=0.01)
    # The EMA follows the trained parameters only: a frozen one never moves, so its average is itself.
    ema_pairs = [(pe, pm) for pe, pm in zip(ema.parameters(), model.parameters()) if pm.requires_grad]
    rng = np.random.default_rng(o.seed)
    gen = torch.Generator().manual_seed(o.seed)
    step, wall = 0, 0.0
    ckpt_path = out / "checkpoint.pt"
    if o.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=o.device, weights_only=True)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        step, wall = int(ck["step"]), float(ck["wall"])
        rng.bit_generator.state = json.loads(ck["numpy_rng"])
        gen.set_state(ck["torch_rng"])
        log(f"resumed from {ckpt_path} at step {step}")
    elif o.init_from:
        model.load_state_dict(warm_start_state(o.init_from, model))
        ema.load_state_dict(model.state_dict())
        log(f"initialised from {o.init_from}")
    (out / "options.json").write_text(json.dumps(asdict(o), indent=1))
    log(f"model: {count_parameters(model) / 1e6:.2f} M parameters, variant {o.variant}: {config}")
    if o.train_only:
        n_trained = sum(p.numel() for p in trainable)
        log(f"training only {n_trained / 1e6:.3f} M parameters ({o.train_only}); the rest frozen")

    # Fixed validation batch: same windows, noise levels and noise every time.
    vrng = np.random.default_rng(1234)
    vbatches = [valid_set.batch(vrng, 32, train=False, layout=model.layout, architecture=o.architecture)
                for _ in range(4)]

    def validate() -> float:
        vgen = torch.Generator().manual_seed(99)
        ema.eval()
        with torch.no_grad():
            losses = [loss_fn(ema, *(x.to(o.device) for x in b), vgen).item() for b in vbatches]
        return float(np.mean(losses))

    log_file = open(out / "train_log.jsonl", "a")
    t_last = time.time()
    recent = []
    last = min(o.steps, o.stop_after or o.steps)
    while step < last:
        model.train()
        batch = train_set.batch(rng, o.batch_size, layout=model.layout, architecture=o.architecture)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, o)
        with torch.autocast(o.device.split(":")[0], dtype=torch.bfloat16, enabled=o.bf16):
            loss = loss_fn(model, *(x.to(o.device) for x in batch), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        decay = min(o.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in ema_pairs:
                pe.lerp_(pm, 1 - decay)
        step += 1
        now = time.time()
        wall += now - t_last
        t_last = now
        recent.append(loss.item())
        record = None
        if step % 50 == 0:
            record = {"step": step, "loss": float(np.mean(recent)), "lr": lr_at(step - 1, o), "wall_s": round(wall, 1)}
            recent = []
        if step % o.eval_every == 0 or step == last:
            record = record or {"step": step, "wall_s": round(wall, 1)}
            record["val_loss"] = validate()
        if record:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            if not o.quiet:
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if step % o.ckpt_every == 0 or step == last:
            with atomic_path(ckpt_path) as tmp:
                torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                            "step": step, "wall": wall, "numpy_rng": json.dumps(rng.bit_generator.state),
                            "torch_rng": gen.get_state()}, tmp)
            save_model(ema, out / "model.safetensors", {
                "config": config.to_dict(), "step": step, "train_wall_s": round(wall, 1),
                "variant": o.variant, "options": asdict(o)})
            if step % o.snapshot_every == 0:
                save_model(ema, out / f"model-step{step}.safetensors", {
                    "config": config.to_dict(), "step": step, "train_wall_s": round(wall, 1),
                    "variant": o.variant, "options": asdict(o)})
    log_file.close()
    return out / "model.safetensors"
