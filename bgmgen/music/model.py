"""The denoisers: time-axis transformers over 8-bar windows with segment-aware cross-attention.

Why not Diff-BGM's 2-D UNet: it costs ~90 GFLOP per forward (20 minutes per 8 bars with its
sampler on this CPU). Here each of the 128 sixteenth steps is one token, so a forward is ~1-2
GFLOP and a guided 25-step window takes well under a second on two cores.

Two architectures share the trunk (ConditionedTransformer):
  Denoiser (v1, v2, "roll")  a token = the 2x128 onset/sustain values of one step (one linear layer);
                             Gaussian diffusion, x0 logits, binary cross-entropy (diffusion.py)
  MelodyAccompanimentDenoiser (v3, "melody-accompaniment")  a token = the step's melody token
                             embedding + its 88 accompaniment states through a pitch-axis convolution;
                             masked diffusion, categorical outputs (masked_diffusion.py, tokens.py)

Block (x L):  adaLN(t) -> self-attention over the 128 steps
              LN       -> cross-attention to the 32 beat tokens (SAC-Att mask + distance bias)
              adaLN(t) -> feed-forward
SAC-Att: music step i (beat i//4) may attend to condition token j only when beat j lies in the
same segment as beat i (phrases in training, shots at inference) or within `mask_context_beats`
of it. A learned per-head distance penalty -softplus(a_h)*|beat_i - j| lets some heads look
locally (density, accents) and others across the segment (harmony, phrase position).
Feature selector: the condition tokens are g_sem(t)*E_sem + g_dyn(t)*E_dyn. "hard" is Diff-BGM's
switch (semantic tokens while t > threshold, dynamic tokens after); "soft" learns the two gates
from the noise level (v3: the share of masked positions); "none" is plain conditioning.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from bgmgen.core.constants import (
    BEATS_PER_WINDOW,
    N_PITCHES,
    ROLL_CHANNELS,
    STEPS_PER_BAR,
    STEPS_PER_BEAT,
    WINDOW_STEPS,
)
from bgmgen.music.config import DenoiserConfig
from bgmgen.music.controls import DYNAMIC_GROUPS, LAYOUTS, SEMANTIC_GROUPS
from bgmgen.music.tokens import ACC_KEYS, MEL_HOLD, N_ACC_STATES, N_MELODY_TOKENS


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled to 0..1000 like discrete diffusion steps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        B, N, D = x.shape
        M = ctx.shape[1]
        h = self.n_heads
        q = self.q(x).view(B, N, h, D // h).transpose(1, 2)  # (B, h, N, dh)
        k, v = self.kv(ctx).view(B, M, 2, h, D // h).permute(2, 0, 3, 1, 4)  # (B, h, M, dh) each
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # bias: (B, h, N, M) additive
        return self.out(y.transpose(1, 2).reshape(B, N, D))


class Block(nn.Module):
    def __init__(self, d: int, n_heads: int, ff_mult: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)  # on each branch before it joins the residual stream (identity in eval)
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False)
        self.self_attn = Attention(d, n_heads)
        self.norm2 = nn.LayerNorm(d)
        self.cross_attn = Attention(d, n_heads)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False)
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(approximate="tanh"), nn.Linear(ff_mult * d, d))
        self.ada = nn.Linear(d, 6 * d)  # shift, scale, gate for self-attention and feed-forward
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x, temb, cond, cross_bias):
        s1, c1, g1, s2, c2, g2 = self.ada(temb).chunk(6, dim=-1)
        h = modulate(self.norm1(x), s1, c1)
        x = x + g1[:, None] * self.drop(self.self_attn(h, h))
        x = x + self.drop(self.cross_attn(self.norm2(x), cond, cross_bias))
        x = x + g2[:, None] * self.drop(self.ff(modulate(self.norm3(x), s2, c2)))
        return x


class EncodedCondition(NamedTuple):
    """What the trunk reads from a window's condition and segments, which stay the same over its
    denoising steps (so a sampler computes it once: ConditionedTransformer.encode_condition)."""

    semantic: torch.Tensor  # (B, 32, d) embedded semantic controls
    dynamic: torch.Tensor  # (B, 32, d) embedded dynamic controls
    bias: torch.Tensor  # (B, heads, 128, 32) cross-attention bias (SAC-Att)


class ConditionedTransformer(nn.Module):
    """The trunk both denoisers share: noise-level embedding, feature selector, condition tokens,
    SAC-Att bias and the blocks. Subclasses add the roll stem and head."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.pos = nn.Parameter(torch.randn(WINDOW_STEPS, d) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.layout = LAYOUTS[config.controls_layout]
        self.sem_cols = self.layout.columns(SEMANTIC_GROUPS)
        self.dyn_cols = self.layout.columns(DYNAMIC_GROUPS)
        self.sem_embed = nn.Sequential(nn.Linear(len(self.sem_cols), d), nn.SiLU(), nn.Linear(d, d))
        self.dyn_embed = nn.Sequential(nn.Linear(len(self.dyn_cols), d), nn.SiLU(), nn.Linear(d, d))
        self.beat_pos = nn.Parameter(torch.randn(BEATS_PER_WINDOW, d) * 0.02)
        self.gate = nn.Linear(d, 2)  # soft selector: (semantic, dynamic) gates from the noise level
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, 3.0)  # start near plain conditioning (sigmoid(3) = 0.95)
        self.cond_norm = nn.LayerNorm(d)
        self.distance_slope = nn.Parameter(torch.linspace(-2.0, 1.0, config.n_heads))  # softplus -> 0.13..1.3
        self.blocks = nn.ModuleList(Block(d, config.n_heads, config.ff_mult, config.dropout)
                                    for _ in range(config.n_layers))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False)
        self.ada_out = nn.Linear(d, 2 * d)
        nn.init.zeros_(self.ada_out.weight)
        nn.init.zeros_(self.ada_out.bias)

    def selector_gates(self, t: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """(B, 2) weights of the semantic and dynamic tokens at noise level t."""
        mode = self.config.selector
        if mode == "none":
            return torch.ones(t.shape[0], 2, device=t.device)
        if mode == "hard":
            late = (t <= self.config.selector_threshold).float()
            return torch.stack([1 - late, late], dim=-1)
        return torch.sigmoid(self.gate(temb))

    def cross_bias(self, segments: torch.Tensor) -> torch.Tensor:
        """Additive attention bias (B, heads, 128, 32): SAC-Att mask plus learned distance penalty."""
        B = segments.shape[0]
        dev = segments.device
        step_beat = torch.arange(WINDOW_STEPS, device=dev) // STEPS_PER_BEAT  # (128,)
        beats = torch.arange(BEATS_PER_WINDOW, device=dev)
        # distance from the centre of step i (in beats) to token j
        dist = ((torch.arange(WINDOW_STEPS, device=dev) + 0.5) / STEPS_PER_BEAT - 0.5)[:, None] - beats[None]
        bias = -F.softplus(self.distance_slope)[:, None, None] * dist.abs()[None]  # (h, 128, 32)
        bias = bias[None].expand(B, -1, -1, -1)
        if self.config.segment_mask:
            seg_of_step = segments[:, step_beat]  # (B, 128)
            same = seg_of_step[:, :, None] == segments[:, None, :]  # (B, 128, 32)
            near = (step_beat[:, None] - beats[None]).abs() <= self.config.mask_context_beats
            allowed = same | near[None]
            bias = bias.masked_fill(~allowed[:, None], float("-inf"))
        return bias

    def encode_condition(self, cond: torch.Tensor, segments: torch.Tensor) -> EncodedCondition:
        """cond: (B, 32, layout.dim); segments: (B, 32) -> the trunk's view of them at every noise level."""
        return EncodedCondition(self.sem_embed(cond[..., self.sem_cols]), self.dyn_embed(cond[..., self.dyn_cols]),
                                self.cross_bias(segments))

    def encode_for_sampling(self, cond: torch.Tensor, segments: torch.Tensor,
                            uncond: torch.Tensor | None = None) -> EncodedCondition:
        """encode_condition once for a sampler's steps: of `cond`, or with `uncond` (guidance) of the
        pair stacked [cond; uncond], as a guided forward takes it."""
        if uncond is None:
            return self.encode_condition(cond, segments)
        return self.encode_condition(torch.cat([cond, uncond]), torch.cat([segments, segments]))

    def trunk(self, h: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, segments: torch.Tensor | None,
              encoded: EncodedCondition | None = None) -> torch.Tensor:
        """h: (B, 128, d) embedded roll; t: (B,) noise level in [0, 1]; cond: (B, 32, layout.dim);
        segments: (B, 32), or `encoded` = encode_condition(cond, segments) computed before.
        Returns (B, 128, d) features, normalised and modulated for a head."""
        if encoded is None:
            encoded = self.encode_condition(cond, segments)
        temb = self.time_mlp(timestep_embedding(t, self.config.d_model))  # (B, d)
        gates = self.selector_gates(t, temb)  # (B, 2)
        tokens = gates[:, 0, None, None] * encoded.semantic + gates[:, 1, None, None] * encoded.dynamic
        tokens = self.cond_norm(tokens + self.beat_pos)  # (B, 32, d)
        temb = F.silu(temb)
        h = h + self.pos
        for block in self.blocks:
            h = block(h, temb, tokens, encoded.bias)
        shift, scale = self.ada_out(temb).chunk(2, dim=-1)
        return modulate(self.norm_out(h), shift, scale)


class Denoiser(ConditionedTransformer):
    """v1/v2: Gaussian diffusion over the merged 2x128x128 onset/sustain roll (x0 logits)."""

    architecture = "roll"

    def __init__(self, config: DenoiserConfig):
        if config.architecture != self.architecture:
            raise ValueError(f"Denoiser is the {self.architecture!r} architecture, "
                             f"the config names {config.architecture!r}")
        super().__init__(config)
        d = config.d_model
        self.in_proj = nn.Linear(ROLL_CHANNELS * N_PITCHES, d)
        self.out_proj = nn.Linear(d, ROLL_CHANNELS * N_PITCHES)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.constant_(self.out_proj.bias, -4.0)  # rolls are sparse: start at p(note) ~ 2 %

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, segments: torch.Tensor | None,
                encoded: EncodedCondition | None = None) -> torch.Tensor:
        """x: (B, 2, 128, 128) noisy roll; t: (B,) in [0, 1]; cond: (B, 32, layout.dim);
        segments: (B, 32) segment id per beat (or `encoded`, see trunk). Returns x0 logits (B, 2, 128, 128)."""
        B = x.shape[0]
        h = self.in_proj(x.permute(0, 2, 1, 3).reshape(B, WINDOW_STEPS, -1))  # (B, 128, d)
        out = self.out_proj(self.trunk(h, t, cond, segments, encoded))  # (B, 128, 256)
        return out.view(B, WINDOW_STEPS, ROLL_CHANNELS, N_PITCHES).permute(0, 2, 1, 3)


class MelodyAccompanimentDenoiser(ConditionedTransformer):
    """v3: masked (absorbing-state) diffusion over a melody token per step and a rest/onset/sustain
    state per step and key (bgmgen.music.tokens), in a common key.

    Stem: the accompaniment states (plus MASK) one-hot, a convolution along the pitch axis
    (kernel `pitch_kernel` semitones, shared by every key, so an interval or chord shape is one
    pattern wherever it sits), flattened per step into the step's token, added to the melody
    token's embedding. Head: the reverse, a per-step projection to `pitch_channels` x 88 features
    and a pitch-axis convolution to the 3 state logits, and a linear layer to the melody logits.
    """

    architecture = "melody-accompaniment"
    # Optional layers whose output starts at zero: a model that adds them to earlier weights computes
    # what those did, so a warm start (training.train.warm_start_state) may leave them as initialised.
    warm_start_additions = ("acc_skip.", "acc_local.", "mel_local.", "acc_bar.")

    def __init__(self, config: DenoiserConfig):
        if config.architecture != self.architecture:
            raise ValueError(f"{type(self).__name__} is the {self.architecture!r} architecture, "
                             f"the config names {config.architecture!r}")
        super().__init__(config)
        d, c, k = config.d_model, config.pitch_channels, config.pitch_kernel
        self.mel_embed = nn.Embedding(N_MELODY_TOKENS + 1, d)  # + MASK
        self.acc_conv_in = nn.Conv2d(N_ACC_STATES + 1, c, (1, k), padding=(0, k // 2))  # + MASK
        self.acc_in = nn.Linear(c * ACC_KEYS, d)
        self.acc_out = nn.Linear(d, c * ACC_KEYS)
        self.acc_conv_out = nn.Conv2d(c, N_ACC_STATES, (1, k), padding=(0, k // 2))
        self.mel_out = nn.Linear(d, N_MELODY_TOKENS)
        # Skip path from the input states to the output logits, local in time and pitch: whether the
        # key was sounding one step before is read directly, not through the 256-wide step token
        # (without it the first v3 run wrote 2x too many one-sixteenth notes while the data's
        # rest/onset/sustain shares were right). Zero-initialised: a warm start computes what the
        # model without it did.
        self.acc_skip = None
        if config.time_kernel:
            tk = config.time_kernel
            self.acc_skip = nn.Conv2d(N_ACC_STATES + 1, N_ACC_STATES, (tk, k), padding=(tk // 2, k // 2))
            nn.init.zeros_(self.acc_skip.weight)
            nn.init.zeros_(self.acc_skip.bias)
        # Local refinement heads: each cell's logits also read its neighbourhood in time (and, for the
        # accompaniment, in pitch) through a small convolution network over the input states and the
        # trunk's per-key features; the melody's over the neighbouring tokens and step features. The
        # trunk passes 88 keys through one 256-wide token per step, so whether a key's note goes on,
        # or how the melody moves from its neighbours, is otherwise decided far from the cells that
        # show it. Zero-initialised output: a warm start computes what the model without them did.
        self.acc_local = self.mel_local = None
        if config.local_kernel:
            lk, lc = config.local_kernel, config.local_channels
            self.acc_local = nn.Sequential(
                nn.Conv2d(c + N_ACC_STATES + 1, lc, (lk, 1), padding=(lk // 2, 0)),  # along time, per key
                nn.GELU(),
                nn.Conv2d(lc, lc, (1, k), padding=(0, k // 2)),  # along pitch
                nn.GELU(),
                nn.Conv2d(lc, N_ACC_STATES, 1))
            self.mel_local = nn.Sequential(
                nn.Conv1d(N_MELODY_TOKENS + 1 + d, 4 * lc, lk, padding=lk // 2),
                nn.GELU(),
                nn.Conv1d(4 * lc, N_MELODY_TOKENS, 1))
            for head in (self.acc_local, self.mel_local):
                nn.init.zeros_(head[-1].weight)
                nn.init.zeros_(head[-1].bias)
        # Bar head: a cell's logits also read the same key at the same position in the neighbouring
        # bars (a convolution along time dilated by one bar). Accompaniment patterns repeat bar to
        # bar, and v3g repeated them less than the songs (a bar's notes recur within 8 bars 0.18 vs
        # 0.26 of the time, its groove the previous bar's 0.78 vs 0.84). Per key only (the pitch
        # neighbourhood is in the trunk's 8 features per key), so it is cheap. Zero-initialised.
        self.acc_bar = None
        if config.bar_kernel:
            bk, lc = config.bar_kernel, config.local_channels
            self.acc_bar = nn.Sequential(
                nn.Conv2d(c + N_ACC_STATES + 1, lc, (bk, 1), padding=(bk // 2 * STEPS_PER_BAR, 0),
                          dilation=(STEPS_PER_BAR, 1)),
                nn.GELU(),
                nn.Conv2d(lc, N_ACC_STATES, 1))
            nn.init.zeros_(self.acc_bar[-1].weight)
            nn.init.zeros_(self.acc_bar[-1].bias)
        nn.init.zeros_(self.mel_out.weight)
        nn.init.zeros_(self.acc_conv_out.weight)
        with torch.no_grad():  # start at the data's priors: most cells rest, many melody steps held
            self.acc_conv_out.bias.copy_(torch.tensor([3.0, -1.0, 0.0]))
            self.mel_out.bias.zero_()
            self.mel_out.bias[MEL_HOLD] = 1.5

    def forward(self, melody: torch.Tensor, acc: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None,
                segments: torch.Tensor | None, encoded: EncodedCondition | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """melody: (W, 128) tokens, N_MELODY_TOKENS = MASK; acc: (W, 128, 88) states, N_ACC_STATES =
        MASK; t: (B,) share of masked positions; cond, segments, encoded as in Denoiser, for B = k * W:
        each token window under k conditions, in blocks of W (classifier-free guidance: k = 2, the
        condition and the unconditional one), so the stem runs once per window, not once per condition.
        Returns logits: melody (B, 128, N_MELODY_TOKENS), accompaniment (B, 128, 88, 3)."""
        W = melody.shape[0]
        B = (encoded.semantic if encoded is not None else cond).shape[0]
        if B % W:
            raise ValueError(f"{B} conditions for {W} token windows: give each window the same number")
        c = self.config.pitch_channels
        onehot = F.one_hot(acc, N_ACC_STATES + 1).permute(0, 3, 1, 2)  # (W, 4, 128, 88)
        onehot = onehot.to(self.acc_conv_in.weight.dtype)
        a = F.gelu(self.acc_conv_in(onehot))  # (W, c, 128, 88)
        h = self.acc_in(a.permute(0, 2, 1, 3).reshape(W, WINDOW_STEPS, c * ACC_KEYS)) + self.mel_embed(melody)
        skip = self.acc_skip(onehot) if self.acc_skip is not None else None  # (W, 3, 128, 88)
        if B > W:  # the same windows under the other conditions
            h, onehot, melody = h.repeat(B // W, 1, 1), onehot.repeat(B // W, 1, 1, 1), melody.repeat(B // W, 1)
            skip = skip.repeat(B // W, 1, 1, 1) if skip is not None else None
        h = self.trunk(h, t, cond, segments, encoded)  # (B, 128, d)
        a = F.gelu(self.acc_out(h)).view(B, WINDOW_STEPS, c, ACC_KEYS).permute(0, 2, 1, 3)  # (B, c, 128, 88)
        acc_logits = self.acc_conv_out(a)  # (B, 3, 128, 88)
        if skip is not None:
            acc_logits = acc_logits + skip
        mel_logits = self.mel_out(h)  # (B, 128, N_MELODY_TOKENS)
        if self.acc_local is not None or self.acc_bar is not None:
            local_in = torch.cat([a, onehot.to(a.dtype)], 1)  # (B, c + 4, 128, 88)
        if self.acc_bar is not None:
            acc_logits = acc_logits + self.acc_bar(local_in)
        if self.acc_local is not None:
            acc_logits = acc_logits + self.acc_local(local_in)
            mel_in = torch.cat([F.one_hot(melody, N_MELODY_TOKENS + 1).to(h.dtype), h], -1)  # (B, 128, 64 + d)
            mel_logits = mel_logits + self.mel_local(mel_in.transpose(1, 2)).transpose(1, 2)
        acc_logits = acc_logits.permute(0, 2, 3, 1)  # (B, 128, 88, 3)
        return mel_logits, acc_logits


def build_denoiser(config: DenoiserConfig) -> ConditionedTransformer:
    """The denoiser class a config names."""
    if config.architecture == MelodyAccompanimentDenoiser.architecture:
        return MelodyAccompanimentDenoiser(config)
    if config.architecture == Denoiser.architecture:
        return Denoiser(config)
    raise ValueError(f"unknown denoiser architecture {config.architecture!r}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

