"""int8 dynamic quantisation of a torch module's Linear layers (BLIP captions, the music denoiser).

torch is imported when the helper runs, never at import time (core stays light).
"""

from __future__ import annotations

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
