"""Reduced-precision CPU inference: int8 dynamic quantisation of a module's Linear layers (BLIP
captions, the music denoiser), bfloat16 convolutions (the music denoiser's pitch and local heads), and
which of them this CPU runs natively (the shot detector's int8 convolutions use the same checks).

torch is imported when a helper runs, never at import time (core stays light).
"""

from __future__ import annotations

import functools
import warnings


def quantize_linear_int8(module, *, inplace: bool = True):
    """Every nn.Linear of `module` to dynamic int8 (weights int8, activations quantised per batch).

    Returns the quantised module (`module` itself when inplace). CPU only. Silences
    quantize_dynamic's deprecation notice (the torchao migration)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=inplace)


def _cpu_has_any(*features: str) -> bool:
    """Whether torch detects any of `features` on this CPU (torch.cpu.get_capabilities, torch >= 2.9)
    and has oneDNN, which the reduced-precision convolutions run on."""
    import torch

    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None or not torch.backends.mkldnn.is_available():
        return False
    caps = get_capabilities()
    return any(caps.get(f) for f in features)


def bf16_convolutions_supported() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX-512 BF16 or AMX-BF16, as torch detects them).
    Without it oneDNN emulates bfloat16 convolutions, slower than fp32."""
    return _cpu_has_any("avx512_bf16", "amx_bf16")


def int8_convolutions_supported() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX-INT8, as torch
    detects them), which oneDNN's uint8 x int8 convolutions need to beat bfloat16 ones."""
    return _cpu_has_any("avx512_vnni", "avx_vnni", "amx_int8")


def convolutions_to_bf16(module):
    """Every nn.Conv1d / nn.Conv2d of `module` (in place) to one that computes in bfloat16 with fp32
    input and output, 2-D ones channels-last (oneDNN's fast layout for them).

    Why: the music denoiser's convolutions slide a few channels over 128 x 88 cells, where fp32 NCHW
    runs far below the CPU's peak; in bf16 channels-last they cost about a third (one 8-bar window:
    conv time 270 -> 110 ms on this 2-core EPYC). Logits move by up to ~1 % of their range, so a
    model's sampler settings are chosen with the precision it runs in. Returns `module`."""
    import torch

    wrapper = _bf16_conv_class()
    for name, child in list(module.named_children()):
        if isinstance(child, (torch.nn.Conv1d, torch.nn.Conv2d)):
            setattr(module, name, wrapper(child))
        elif not isinstance(child, wrapper):
            convolutions_to_bf16(child)
    return module


@functools.cache
def _bf16_conv_class():
    import torch

    class Bf16Convolution(torch.nn.Module):
        """A convolution run in bfloat16: fp32 in, fp32 out (2-D: channels-last inside)."""

        def __init__(self, conv):
            super().__init__()
            self.channels_last = isinstance(conv, torch.nn.Conv2d)
            conv = conv.to(torch.bfloat16)
            self.conv = conv.to(memory_format=torch.channels_last) if self.channels_last else conv

        @property
        def weight(self):
            return self.conv.weight

        def forward(self, x):
            layout = torch.channels_last if self.channels_last else torch.preserve_format
            return self.conv(x.to(torch.bfloat16, memory_format=layout)).float()  # one copy in, one out

    return Bf16Convolution
