"""The options of `bgmgen score` and `bgmgen doctor`: frozen dataclasses, one field per CLI flag
(bgmgen/cli.py builds them from typed parameters and takes its defaults from them; the library API
builds them directly)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ScoreOptions:
    """The flags of `bgmgen score`, one field each."""

    out: str | None = None
    seed: int = 0
    mix: str | None = None            # None: replace when the input has no audible sound, else duck
    tempo: float | None = None
    mood: str | None = None
    device: str = "cpu"
    use_cache: bool = True
    cache_dir: str | None = None
    force: bool = False
    quiet: bool = False
    debug: bool = False
    clip_weights: str | None = None
    blip_weights: str | None = None
    require_semantic: bool = False
    model: str | None = None
    steps: int | None = None
    guidance: float | None = None
    guide_groups: tuple[str, ...] | None = None  # control groups guidance amplifies (None: the model family's)
    loose_groove: bool = False        # let the model place onsets off the plan's groove
    order: str | None = None          # v3 sampler: unmasking order (None: generate.SamplerSettings' default)
    temperature: float | None = None  # v3 sampler: softmax temperature
    soundfont: str | None = None
    ray: str | None = None            # Ray address (local, auto, ray://HOST:PORT); None: score in this process

    # Fields that do not change what is written (so they do not make outputs stale).
    NON_OUTPUT_FIELDS = ("out", "use_cache", "cache_dir", "force", "quiet", "debug", "ray")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def output_fingerprint(self) -> dict:
        d = self.to_json()
        for name in self.NON_OUTPUT_FIELDS:
            d.pop(name, None)
        return d

    def analysis_options(self):
        from bgmgen.video.analysis import AnalysisOptions

        kw: dict[str, Any] = dict(device=self.device, cache_dir=self.cache_dir, use_cache=self.use_cache,
                                  require_semantic=self.require_semantic, defer_keyframes=True)
        if self.clip_weights:
            kw["clip_weights"] = self.clip_weights
        if self.blip_weights:
            kw["blip_weights"] = self.blip_weights
        return AnalysisOptions(**kw)


@dataclass(frozen=True)
class DoctorOptions:
    """The flags of `bgmgen doctor`: where to look for each weight file, the cache and the device."""

    clip_weights: str | None = None
    blip_weights: str | None = None
    model: str | None = None
    soundfont: str | None = None
    cache_dir: str | None = None
    device: str = "cpu"
