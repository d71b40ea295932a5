"""CLIP (open_clip): where its weights come from, loading them, image and text embeddings.

Weights, first hit wins (nothing is downloaded when the hub is unreachable):
  1. `clip_weights`: a local open_clip checkpoint (.safetensors, or .pt/.bin/.pth read with
     `torch.load(weights_only=True)`, never full pickle). A path that does not exist is an error.
  2. the Hugging Face cache (the repo open_clip names for the tag, e.g.
     timm/vit_base_patch32_clip_224.openai), read with `local_files_only=True`;
  3. a download, only when the hub answers a 3-second TCP probe and HF_HUB_OFFLINE is not set.
Otherwise `load_clip` raises WeightsUnavailable with the one-line reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bgmgen.core.errors import MissingDependencyError
from bgmgen.video.vectors import l2_normalise
from bgmgen.video.weights_lookup import (
    WeightsUnavailable,
    check_device,
    hf_cached_file,
    hf_download_file,
    hub_reachable,
    load_once,
    short_error,
)

CLIP_BATCH = 16

# open_clip's `hf_hub` entry for the pretrained tags we default to (checked against open_clip by a test).
CLIP_HF_HUB = {("ViT-B-32", "openai"): "timm/vit_base_patch32_clip_224.openai/"}


class ClipBundle:
    def __init__(self, model, preprocess, tokenizer, path: str, device: str):
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.path, self.device = path, device
        self.text_cache: dict[tuple[str, ...], np.ndarray] = {}


def clip_hub_files(hub: str) -> tuple[str, list[str]]:
    """open_clip `hf_hub` entry ("org/repo/" or "org/repo/file") -> (repo id, file names to look for)."""
    repo, fname = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
    fname = fname or "open_clip_pytorch_model.bin"
    return repo, [fname.rsplit(".", 1)[0] + ".safetensors", "open_clip_model.safetensors", fname]


def clip_hub(name: str, tag: str | None) -> str:
    """open_clip's `hf_hub` entry for name/tag ("" when it knows none); the default tag from our
    table (checked against open_clip by a test), others from open_clip itself."""
    if (name, tag) in CLIP_HF_HUB:
        return CLIP_HF_HUB[name, tag]
    try:
        import open_clip

        return ((open_clip.get_pretrained_cfg(name, tag) if tag else {}) or {}).get("hf_hub", "")
    except Exception:
        return ""


def cached_clip_file(name: str, tag: str | None) -> str | None:
    """The checkpoint the default lookup finds in the HF cache now (None = absent). No network,
    no open_clip import for the default tag."""
    hub = clip_hub(name, tag)
    return hf_cached_file(*clip_hub_files(hub)) if hub else None


def load_clip(name: str, tag: str | None, explicit: str | None, device: str) -> ClipBundle:
    """The CLIP model `name` with the weights of `explicit` (a checkpoint path) or of the pretrained
    `tag`, once per process. Raises WeightsUnavailable (absent or unreadable weights) or
    MissingDependencyError (an explicit path that does not exist, an unavailable device)."""
    absent = f"CLIP weights not found ({name}/{tag} not in the HF cache"
    if not explicit and (name, tag) in CLIP_HF_HUB:
        # Decide "absent" before importing open_clip (1.1 s here): the HF cache is checked for
        # the same repo and file names the full path below uses (a test keeps CLIP_HF_HUB equal
        # to open_clip's own table).
        repo, candidates = clip_hub_files(CLIP_HF_HUB[name, tag])
        if hf_cached_file(repo, candidates) is None:
            ok, why = hub_reachable()
            if not ok:
                raise WeightsUnavailable(f"{absent}, {why})")
    import open_clip

    tag_cfg = (open_clip.get_pretrained_cfg(name, tag) if tag else {}) or {}
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise MissingDependencyError(f"{explicit}: CLIP weights file not found; pass an open_clip checkpoint to --clip-weights")
        path = str(p.resolve())
    else:
        hub = tag_cfg.get("hf_hub", "")
        if not hub:
            raise WeightsUnavailable(f"CLIP weights not found (open_clip knows no source for {name}/{tag})")
        repo, candidates = clip_hub_files(hub)
        found = hf_cached_file(repo, candidates)
        if found is None:
            ok, why = hub_reachable()
            if ok:
                found = hf_download_file(repo, candidates)
                why = "download failed" if found is None else why
            if found is None:
                raise WeightsUnavailable(f"{absent}, {why})")
        path = found
    check_device(device)
    key = ("clip", name, path, device, bool(tag_cfg.get("quick_gelu", False)))
    try:
        return load_once(key, lambda: _build_clip(name, tag_cfg, path, device))
    except MissingDependencyError:
        raise
    except Exception as err:
        raise WeightsUnavailable(f"CLIP weights {path} could not be loaded ({short_error(err)})") from err


def _build_clip(name: str, tag_cfg: dict, path: str, device: str) -> ClipBundle:
    import logging

    import open_clip

    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    # open_clip logs "No pretrained weights loaded ... initialized randomly" here: true for the
    # empty model it builds, misleading for us (the checkpoint is loaded next), so muted.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        model = open_clip.create_model(name, pretrained=None, device="cpu", force_quick_gelu=quick_gelu, pretrained_text=False)
    finally:
        logging.disable(previous)
    # open_clip.load_checkpoint: safetensors, or torch.load(weights_only=True); strict key match.
    open_clip.load_checkpoint(model, path, strict=True, weights_only=True)
    model = model.to(device).eval()
    # getattr: an optional open_clip attribute (not every version sets preprocess_cfg on the tower).
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    preprocess = open_clip.image_transform(
        model.visual.image_size,
        is_train=False,
        mean=tag_cfg.get("mean", cfg.get("mean")),
        std=tag_cfg.get("std", cfg.get("std")),
        resize_mode=tag_cfg.get("resize_mode", cfg.get("resize_mode")),
        interpolation=tag_cfg.get("interpolation", cfg.get("interpolation")),
    )
    tokenizer = open_clip.get_tokenizer(name)
    return ClipBundle(model, preprocess, tokenizer, path, device)


def embed_images(bundle: ClipBundle, frames: np.ndarray) -> np.ndarray:
    """L2-normalised image embeddings [n, D] of uint8 RGB frames [n, h, w, 3]."""
    if len(frames) == 0:
        return np.zeros((0, int(bundle.model.visual.output_dim)), np.float32)
    import torch
    from PIL import Image

    outs = []
    with torch.inference_mode():
        for i in range(0, len(frames), CLIP_BATCH):
            batch = torch.stack([bundle.preprocess(Image.fromarray(f)) for f in frames[i : i + CLIP_BATCH]])
            emb = bundle.model.encode_image(batch.to(bundle.device), normalize=True)
            outs.append(emb.float().cpu().numpy())
    return l2_normalise(np.concatenate(outs))


def embed_texts(bundle: ClipBundle, texts: list[str]) -> np.ndarray:
    """CLIP text-tower embeddings [n, D] (each normalised by open_clip), float32."""
    import torch

    with torch.inference_mode():
        tokens = bundle.tokenizer(list(texts)).to(bundle.device)
        return bundle.model.encode_text(tokens, normalize=True).float().cpu().numpy()


def logit_scale(bundle: ClipBundle, cap: float) -> float:
    """CLIP's learned logit scale (exp of the parameter), at most `cap`."""
    return float(min(bundle.model.logit_scale.exp().item(), cap))

