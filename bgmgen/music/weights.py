"""Music-model weight files: safetensors (fp16 on disk, fp32 in memory) with the config in the metadata.

No pickle anywhere: the tensors are safetensors, the config and training facts are JSON in the
file's metadata header, and the sha256 of the file goes into every run.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from bgmgen.core.assets import shipped_model

DEFAULT_MODEL_NAME = "bgmgen-music-v3.safetensors"


def save_model(model, path: str | Path, meta: dict) -> None:
    import torch
    from safetensors.torch import save_file

    from bgmgen.core.files import atomic_path

    tensors = {k: v.detach().to(torch.float16).contiguous() if v.is_floating_point() else v.contiguous()
               for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"bgmgen": json.dumps(meta)})


def read_meta(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["bgmgen"])


def load_denoiser(path: str | Path, device: str = "cpu"):
    """Build the Denoiser described in the file's metadata and load its weights (fp32)."""
    import torch
    from safetensors.torch import load_file

    from bgmgen.music.config import DenoiserConfig
    from bgmgen.music.model import build_denoiser

    meta = read_meta(path)
    model = build_denoiser(DenoiserConfig.from_file_meta(meta["config"]))
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    model.load_state_dict(state)
    return model.to(device).eval(), meta


def default_model_path() -> Path:
    """The shipped default music model (it may be missing: load_music_model says so in one line).
    The fingerprint, doctor and generate all name this one path."""
    return shipped_model(DEFAULT_MODEL_NAME)
