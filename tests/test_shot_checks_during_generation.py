"""Scoring starts the music on the provisional analysis while the shot detector's near-threshold checks
run in the background (app/score.py, analysis.analyse_video_provisional): whatever the checks decide,
the outputs are those of a run that waited for them.

TransNetV2's network is replaced by one that puts the frame before a colour change just above the
threshold in the fast pass, and the package-layout check either confirms it or moves it below: the
second case changes the cut list after the sampler has started, so the piece is composed again.
About 30 s on a 2-core CPU (four short scores).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from media import make_video

from bgmgen.app import batch
from bgmgen.app.options import ScoreOptions
from bgmgen.app.outputs import SCORED, assign_outputs, expand_inputs
from bgmgen.app.score import BatchContext
from bgmgen.video import analysis
from bgmgen.video.shots import PACKAGE_WINDOW, THRESHOLD
from bgmgen.video.transnet_cpu import FastTransNetV2

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")

CUT_S = 6.5  # in the last window, which runs after decoding: its check is deferred


class Quiet:
    quiet = True

    def print(self, *_, **__):
        pass


def network(confirm: bool):
    """A stand-in for FastTransNetV2.head (the layers after the convolutions, in the fast pass and in the
    checks): the frame before a colour change gets p = 0.55 in the fast pass (far enough from the
    threshold for its check to be left to the background: shots.DEFER_MIN_DISTANCE); the
    package-layout check (a 100-frame window) gives 0.73 (confirm) or 0.27."""
    import torch

    logit = float(np.log(THRESHOLD / (1 - THRESHOLD)))

    def head(self, inputs, means, flat):
        b, t = inputs.shape[:2]
        mean = torch.as_tensor(inputs).float().mean(dim=(2, 3, 4))  # [b, t]
        change = (mean[:, 1:] - mean[:, :-1]).abs() > 10
        out = torch.full((b, t), -6.0)
        near = logit + (0.2 if t != PACKAGE_WINDOW else (1.0 if confirm else -1.0))
        out[:, :-1][change] = near
        return out

    return head


def score(video: Path, out: Path) -> dict:
    jobs = expand_inputs([str(video)])
    assign_outputs(jobs, str(out))
    ctx = BatchContext(ScoreOptions(out=str(out), seed=3, use_cache=False, quiet=True), ["bgmgen", "score"])
    result = batch.run_job(jobs[0], ctx, Quiet(), lambda stage: None)
    assert result.status == SCORED, result.message
    folder = out / video.stem
    run = json.loads((folder / "run.json").read_text())
    run["midi_sha256"] = hashlib.sha256((folder / f"{video.stem}.mid").read_bytes()).hexdigest()
    return run


@pytest.mark.parametrize("confirm", [True, False], ids=["check-confirms-the-cut", "check-removes-the-cut"])
def test_music_started_before_the_checks_is_the_music_of_the_settled_analysis(tmp_path, monkeypatch, confirm):
    video = make_video(tmp_path / "clip.mp4", duration=8.0, cuts=[CUT_S])
    monkeypatch.setattr(FastTransNetV2, "head", network(confirm))
    overlapped = score(video, tmp_path / "overlapped")

    provisional = analysis.analyse_video_provisional
    monkeypatch.setattr(analysis, "analyse_video_provisional",
                        lambda *a, **k: provisional(*a, **{**k, "defer_checks": False}))
    waited = score(video, tmp_path / "waited")

    gen = overlapped["generation"]
    assert gen["shot_checks_during_generation"] >= 1, "the cut's check did not run during generation"
    assert gen["composed_again_after_shot_checks"] is (not confirm)
    assert waited["generation"]["shot_checks_during_generation"] == 0
    assert waited["generation"]["composed_again_after_shot_checks"] is False
    assert any(abs(c - CUT_S) < 0.1 for c in overlapped["analysis"]["cuts_s"]) is confirm
    assert overlapped["analysis"]["cuts_s"] == waited["analysis"]["cuts_s"]
    assert overlapped["plan"] == waited["plan"]
    assert overlapped["midi_sha256"] == waited["midi_sha256"]
