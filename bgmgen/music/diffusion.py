"""Gaussian diffusion on {-1, 1} piano rolls: cosine schedule, x0-logit training loss, DDIM sampler.

Continuous time t in [0, 1]; alpha_bar(t) = cos^2(((t + s) / (1 + s)) * pi / 2) (Nichol & Dhariwal 2021).
The network predicts logits of the clean binary roll; x0_hat = tanh(logits / 2) = 2*sigmoid - 1, the
expected value of the roll in {-1, 1}. DDIM (Song et al. 2021, eta = 0) steps from x0_hat.
Classifier-free guidance (Ho & Salimans 2022) is applied to the logits; it is trained by dropping
control groups (controls.GROUPS) per sample.
Inpainting (continuation across windows): where `known_mask` is set, x0_hat is replaced by the
known roll before each step, so the overlap bars stay what the previous window produced. The
same replacement imposes a groove (generate.py, strict groove): the onset channel is known to be
empty off the groove, and each groove step that has no onset in x0_hat gets the model's most
likely one, at every step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

COSINE_S = 0.008
T_MIN, T_MAX = 1e-4, 0.999


def _with_required_onsets(x0: torch.Tensor, logits: torch.Tensor, require_onset: torch.Tensor) -> torch.Tensor:
    """x0 (B, 2, 128, 128) in [-1, 1] with, at each required step (B, 128) where no onset cell is
    above 0, the onset the model finds most likely there set to 1.

    Applied to the x0 estimate at every denoising step (a projection onto "this step has an onset"),
    so the pitch is chosen while the model's distribution is still broad and the rest of the roll
    adapts to it; filling only the final roll instead picks stray pitches (on validation songs the
    pitch range grew from 53 to 71 semitones), because by then the trajectory has settled on silence."""
    onset = x0[:, 0]
    missing = require_onset & ~(onset > 0).any(-1)  # (B, 128)
    if not missing.any():
        return x0
    x0 = x0.clone()
    best = logits[:, 0].argmax(-1)  # (B, 128)
    b, t = missing.nonzero(as_tuple=True)
    x0[b, 0, t, best[b, t]] = 1.0
    return x0


def alpha_bar(t: torch.Tensor) -> torch.Tensor:
    return torch.cos((t + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(ab) x0 + sqrt(1 - ab) eps, per sample t (B,)."""
    ab = alpha_bar(t).view(-1, *[1] * (x0.dim() - 1))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def training_loss(model, roll01: torch.Tensor, cond: torch.Tensor, segments: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary cross-entropy between predicted x0 logits and the clean roll (B, 2, 128, 128) in {0, 1}."""
    B = roll01.shape[0]
    t = torch.rand(B, generator=generator, device=roll01.device) * (T_MAX - T_MIN) + T_MIN
    noise = torch.randn(roll01.shape, generator=generator, device=roll01.device)
    x_t = q_sample(roll01 * 2 - 1, t, noise)
    logits = model(x_t, t, cond, segments)
    return F.binary_cross_entropy_with_logits(logits, roll01)


@torch.no_grad()
def ddim_sample(model, cond: torch.Tensor, segments: torch.Tensor, *, steps: int = 50, guidance: float = 1.0,
                uncond: torch.Tensor | None = None, generator: torch.Generator | None = None,
                known: torch.Tensor | None = None, known_mask: torch.Tensor | None = None,
                require_onset: torch.Tensor | None = None, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Sample rolls (B, 2, 128, 128) in {0, 1}.

    cond/uncond: (B, 32, F) condition features (uncond = the same with groups dropped; needed when
    guidance != 1). known: (B, 2, 128, 128) roll in {0, 1}; known_mask: (B, 1, 128, 1) or broadcastable,
    True where the roll is given (inpainting). require_onset: (B, 128) bool, steps that must hold at
    least one onset (see _with_required_onsets).
    """
    B = cond.shape[0]
    shape = shape or (B, 2, 128, 128)
    device = cond.device
    x = torch.randn(shape, generator=generator, device=device)
    ts = torch.linspace(T_MAX, 0.0, steps + 1, device=device)
    known_pm = known * 2 - 1 if known is not None else None
    guided = guidance != 1.0 and uncond is not None
    # the condition's embeddings and the SAC-Att bias do not change over the steps: computed once
    encoded = model.encode_for_sampling(cond, segments, uncond if guided else None)
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        tb = t.expand(B)
        if guided:
            logits_c, logits_u = model(torch.cat([x, x]), torch.cat([tb, tb]), None, None, encoded).chunk(2)
            logits = logits_u + guidance * (logits_c - logits_u)
        else:
            logits = model(x, tb, None, None, encoded)
        x0 = torch.tanh(logits / 2)
        if known_pm is not None:
            x0 = torch.where(known_mask, known_pm, x0)
        if require_onset is not None:
            x0 = _with_required_onsets(x0, logits, require_onset)
        ab, ab_next = alpha_bar(t), alpha_bar(t_next)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        if i == steps - 1:
            x = x0
        else:
            x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
    final = logits if require_onset is None else _with_required_onsets(logits.tanh(), logits, require_onset)
    roll = (final > 0).float()
    if known is not None:
        roll = torch.where(known_mask, known, roll)
    return roll
