"""Masked (absorbing-state) diffusion over melody tokens and accompaniment states (the v3 model).

Forward process (D3PM absorbing state, Austin et al. 2021; MDLM, Sahoo et al. 2024): at noise
level t in [0, 1] every position (a melody step, an accompaniment cell) is independently replaced
by MASK with probability t. The denoiser sees the partly masked window and predicts a categorical
distribution for every position; the loss is the cross-entropy on the masked positions.

Reverse process (`MaskedScheduler`): start fully masked; at step i of n the model predicts every
position, a value is drawn for each masked one (classifier-free guidance on the logits, Ho &
Salimans 2022), and the drawn values are committed except for a share cos(pi/2 * (i+1)/n) of
positions that stay masked (MaskGIT's cosine schedule, Chang et al. 2022). Which stay masked:
`order="confidence"` keeps the least likely draws masked (log p plus Gumbel noise that fades
over the steps, MaskGIT), `order="random"` picks them uniformly (MDLM's ancestral sampler).
Constraints act on the logits before drawing: a step the groove leaves empty gets no new note
(melody: rest or hold only; accompaniment: no onset). Inpainting (the overlap with the previous
window) is positions that start committed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bgmgen.core.constants import WINDOW_STEPS
from bgmgen.music.config import UNMASKING_ORDERS
from bgmgen.music.tokens import ACC_KEYS, ACC_ONSET, MEL_FIRST_PITCH, N_ACC_STATES, N_MELODY_TOKENS

MEL_MASK = N_MELODY_TOKENS
ACC_MASK = N_ACC_STATES
NEG_INF = -1e9


def mask_positions(shape: tuple[int, ...], t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Bool (B, ...) True where a position is masked: each with probability t[b]."""
    u = torch.rand(shape, generator=generator, device=t.device)
    return u < t.view(-1, *[1] * (len(shape) - 1))


def training_loss(model, melody: torch.Tensor, acc: torch.Tensor, cond: torch.Tensor, segments: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Cross-entropy of the masked positions: melody (B, 128) tokens, accompaniment (B, 128, 88) states.

    Each stream's loss is the mean over its masked positions in the batch; the two are added (the
    accompaniment has 88 cells per step, most of them rests: per-cell averaging keeps the melody's
    single token per step from being drowned)."""
    B = melody.shape[0]
    t = torch.rand(B, generator=generator, device=melody.device) * 0.98 + 0.02  # (B,)
    mel_mask = mask_positions(melody.shape, t, generator)
    acc_mask = mask_positions(acc.shape, t, generator)
    mel_logits, acc_logits = model(melody.masked_fill(mel_mask, MEL_MASK), acc.masked_fill(acc_mask, ACC_MASK),
                                   t, cond, segments)
    mel_loss = F.cross_entropy(mel_logits[mel_mask].float(), melody[mel_mask]) if mel_mask.any() else 0.0
    acc_loss = F.cross_entropy(acc_logits[acc_mask].float(), acc[acc_mask]) if acc_mask.any() else 0.0
    return mel_loss + acc_loss


def masked_share(progress: float) -> float:
    """Share of positions still masked after `progress` (0..1) of the reverse process (cosine)."""
    return math.cos(math.pi / 2 * progress)


@dataclass(frozen=True)
class MaskedScheduler:
    """The reverse process' step rule: which positions to commit after each model call.

    `step` takes the current tokens (MASK where not yet decided), the (guided) logits, and
    returns the tokens with some masked positions filled. Positions already committed never change."""

    steps: int = 25
    order: str = "confidence"  # "confidence" (MaskGIT) | "random" (MDLM ancestral)
    temperature: float = 1.0  # softmax temperature of the draws
    choice_noise: float = 2.0  # confidence order: Gumbel scale at the first step, fading to 0

    def noise_level(self, i: int) -> float:
        """t fed to the model at step i: the share of positions masked when it is called."""
        return masked_share(i / self.steps)

    def step(self, i: int, tokens: torch.Tensor, masked: torch.Tensor, logits: torch.Tensor,
             generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, N) int with `masked` (B, N) bool; logits (B, N, K). Returns (tokens, masked)."""
        B, N, K = logits.shape
        logp = F.log_softmax(logits.float() / self.temperature, dim=-1)
        g = -torch.log(-torch.log(torch.rand(logp.shape, generator=generator, device=logp.device).clamp_min(1e-20)))
        draw = (logp + g).argmax(-1)  # (B, N) a sample from the categorical (Gumbel-max)
        if i == self.steps - 1:
            return torch.where(masked, draw, tokens), torch.zeros_like(masked)
        n_total = N
        keep_masked = int(math.floor(n_total * masked_share((i + 1) / self.steps)))
        n_masked = masked.sum(-1)  # (B,)
        keep = torch.minimum(n_masked, torch.full_like(n_masked, keep_masked))
        if self.order == "confidence":
            score = logp.gather(-1, draw[..., None])[..., 0]
            fade = self.choice_noise * (1 - (i + 1) / self.steps)
            u = torch.rand(score.shape, generator=generator, device=score.device).clamp_min(1e-20)
            score = score + fade * -torch.log(-torch.log(u))
        elif self.order == "random":
            score = torch.rand((B, N), generator=generator, device=logp.device)
        else:
            raise ValueError(f"unknown unmasking order {self.order!r}; one of {', '.join(UNMASKING_ORDERS)}")
        score = score.masked_fill(~masked, float("inf"))  # committed positions are never re-masked
        order = score.argsort(-1)  # (B, N) least confident first
        # the first `keep` positions of that order stay masked (what rank < keep selects, one sort fewer)
        first = torch.arange(N, device=score.device).expand(B, N) < keep[:, None]
        still = masked & torch.zeros_like(masked).scatter_(-1, order, first)
        commit = masked & ~still
        return torch.where(commit, draw, tokens), still


@torch.no_grad()
def sample(model, cond: torch.Tensor, segments: torch.Tensor, scheduler: MaskedScheduler, *,
           guidance: float = 1.0, uncond: torch.Tensor | None = None, generator: torch.Generator | None = None,
           known_melody: torch.Tensor | None = None, known_acc: torch.Tensor | None = None,
           known_steps: int = 0, no_onset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample melody tokens (B, 128) and accompaniment states (B, 128, 88).

    cond/uncond: (B, 32, F) condition features (uncond = the same with the guided groups dropped);
    known_melody/known_acc with known_steps: the first known_steps steps are given (inpainting);
    no_onset: (B, 128) bool, steps on which no note may start (the groove's empty sixteenths)."""
    B, dev = cond.shape[0], cond.device
    T, P = WINDOW_STEPS, ACC_KEYS
    mel = torch.full((B, T), MEL_MASK, dtype=torch.long, device=dev)
    acc = torch.full((B, T, P), ACC_MASK, dtype=torch.long, device=dev)
    if known_steps:
        mel[:, :known_steps] = known_melody[:, :known_steps]
        acc[:, :known_steps] = known_acc[:, :known_steps]
    mel_masked = mel == MEL_MASK
    acc_masked = acc == ACC_MASK
    guided = guidance != 1.0 and uncond is not None
    # the condition's embeddings and the SAC-Att bias do not change over the steps: computed once
    encoded = model.encode_for_sampling(cond, segments, uncond if guided else None)
    for i in range(scheduler.steps):
        tb = torch.full((B,), scheduler.noise_level(i), device=dev)
        if guided:
            (mel_c, mel_u), (acc_c, acc_u) = (x.chunk(2) for x in model(  # one window, two conditions
                mel, acc, torch.cat([tb, tb]), None, None, encoded))
            mel_logits = mel_u + guidance * (mel_c - mel_u)
            acc_logits = acc_u + guidance * (acc_c - acc_u)
        else:
            mel_logits, acc_logits = model(mel, acc, tb, None, None, encoded)
        if no_onset is not None:  # in place: these logits are this step's own, used nowhere else
            mel_logits[..., MEL_FIRST_PITCH:].masked_fill_(no_onset[..., None], NEG_INF)
            acc_logits[..., ACC_ONSET].masked_fill_(no_onset[..., None], NEG_INF)
        mel, mel_masked = scheduler.step(i, mel, mel_masked, mel_logits, generator)
        acc_flat, acc_masked_flat = scheduler.step(i, acc.view(B, -1), acc_masked.view(B, -1),
                                                   acc_logits.reshape(B, T * P, -1), generator)
        acc, acc_masked = acc_flat.view(B, T, P), acc_masked_flat.view(B, T, P)
    return mel, acc
