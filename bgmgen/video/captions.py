"""BLIP captions (transformers): where the weights come from, loading them, captioning keyframes.

Weights: `blip_weights` (a folder written by save_pretrained), else the HF cache snapshot of
`blip_model` (options.BLIP_REPO by default), else a download when the hub answers a 3-second probe
and HF_HUB_OFFLINE is not set; otherwise WeightsUnavailable with the one-line reason.

Speed: BLIP dominates the analysis (about 1.1 s per caption for the fp32 base model on an idle
2-core CPU). So: one keyframe per shot, batches of BLIP_BATCH, greedy decoding capped at
BLIP_MAX_NEW_TOKENS, and at most MAX_CAPTIONS captions per video (the longest shots when their
durations are given, else evenly spread shots; the mood is one per video and 8 shots represent it).
Shots beyond the cap get an empty caption, which embeds to a zero row that the mood ignores.
On CPU, BLIP's nn.Linear layers are quantised to int8 (dynamic, in place, ~1 CPU-second once per
process): measured 2.2x less CPU per caption on the real BLIP-base architecture. Its effect on
caption wording with the real Salesforce weights could not be measured offline;
SemanticModels.blip_int8 = False keeps fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from bgmgen.core.errors import MissingDependencyError
from bgmgen.core.quantize import quantize_linear_int8
from bgmgen.video.weights_lookup import (
    QuietTransformers,
    WeightsUnavailable,
    check_device,
    load_once,
    short_error,
    snapshot_or_download,
    weight_files_in,
)

MAX_CAPTIONS = 8  # captions per video; the mood is one per video, 8 shots represent it well
BLIP_BATCH = 8
BLIP_MAX_NEW_TOKENS = 20
BLIP_INT8 = True  # dynamic int8 Linear layers for BLIP on CPU (about 1.5x faster here)


class BlipBundle:
    def __init__(self, model, processor, folder: str, files: list[str], int8: bool, device: str):
        self.model, self.processor, self.folder, self.files = model, processor, folder, files
        self.int8, self.device = int8, device


def find_blip_folder(repo: str, explicit: str | None) -> Path:
    """The folder of BLIP weights: `explicit` (must be a save_pretrained folder, else
    MissingDependencyError), else the HF cache / a download of `repo`, else WeightsUnavailable."""
    if explicit:
        folder = Path(explicit).expanduser()
        if not (folder.is_dir() and (folder / "config.json").is_file()):
            raise MissingDependencyError(
                f"{explicit}: not a BLIP folder (needs config.json and weights saved with save_pretrained); fix --blip-weights"
            )
        return folder
    return snapshot_or_download(repo, "BLIP weights not found")


def load_blip(folder: Path, device: str, int8: bool) -> BlipBundle:
    """BLIP from `folder`, once per process (int8 Linear layers when `int8`). Raises
    WeightsUnavailable when the folder holds no weights or they cannot be loaded."""
    files = weight_files_in(folder)
    if not files:
        raise WeightsUnavailable(f"BLIP folder {folder} holds no weight file (.safetensors/.bin)")
    check_device(device)

    def build() -> BlipBundle:
        bundle = _build_blip(folder, device, int8)
        bundle.files = [str(f.resolve()) for f in files]
        return bundle

    try:
        return load_once(("blip", str(folder.resolve()), device, int8), build)
    except Exception as err:
        raise WeightsUnavailable(f"BLIP weights in {folder} could not be loaded ({short_error(err)})") from err


def _build_blip(folder: Path, device: str, int8: bool) -> BlipBundle:
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    with QuietTransformers():
        processor = BlipProcessor.from_pretrained(str(folder), local_files_only=True)
        model = BlipForConditionalGeneration.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    model = model.to(device).eval()
    if int8:
        model = quantize_linear_int8(model)
    return BlipBundle(model, processor, str(folder), [], int8, device)


def select_caption_indices(n: int, durations: Sequence[float] | None = None, max_captions: int = MAX_CAPTIONS) -> list[int]:
    """Which of n shots get a caption: all when n <= max_captions, else the longest shots
    (ties broken by position) or, without durations, evenly spread shots. Sorted, deterministic."""
    if n <= max_captions:
        return list(range(n))
    if max_captions <= 0:
        return []
    if durations is not None and len(durations) == n:
        order = sorted(range(n), key=lambda i: (-float(durations[i]), i))
        return sorted(order[:max_captions])
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, max_captions)})


def caption_images(bundle: BlipBundle, frames: np.ndarray, chosen: Sequence[int]) -> list[str]:
    """One caption per frame for the frames at `chosen` (greedy, BLIP_MAX_NEW_TOKENS at most),
    "" for the others; whitespace collapsed."""
    import torch
    from PIL import Image

    captions = [""] * len(frames)
    with torch.inference_mode():
        for i in range(0, len(chosen), BLIP_BATCH):
            idx = chosen[i : i + BLIP_BATCH]
            images = [Image.fromarray(frames[j]) for j in idx]
            inputs = bundle.processor(images=images, return_tensors="pt")
            out = bundle.model.generate(
                pixel_values=inputs["pixel_values"].to(bundle.device),
                max_new_tokens=BLIP_MAX_NEW_TOKENS,
                num_beams=1,
                do_sample=False,
            )
            texts = bundle.processor.batch_decode(out, skip_special_tokens=True)
            for j, text in zip(idx, texts):
                captions[j] = " ".join(text.split())
    return captions
