"""The per-input step both batch runners share (batch.run_job): every way one input can end becomes a plain
JobResult (status, one-line message, summary, seconds) that pickles without exception objects, and
record_result says it, or stops the batch for a missing dependency. No model runs here (seconds)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from bgmgen.app import batch
from bgmgen.app.batch import MISSING_DEPENDENCY, JobResult, record_result, run_job
from bgmgen.app.options import ScoreOptions
from bgmgen.app.outputs import FAILED, REJECTED, SCORED, Job, assign_outputs, expand_inputs
from bgmgen.app.score import BatchContext
from bgmgen.core.errors import BgmgenError, MissingDependencyError


class Lines:
    """A console that keeps what is said."""

    quiet = False

    def __init__(self):
        self.lines: list[str] = []

    def print(self, text, **_):
        self.lines.append(str(text))


def _job(tmp_path: Path, name: str, content: bytes = b"not a video") -> Job:
    path = tmp_path / name
    path.write_bytes(content)
    jobs = expand_inputs([str(path)])
    assign_outputs(jobs, str(tmp_path / "out"))
    return jobs[0]


def _context(tmp_path: Path, **options) -> BatchContext:
    # A fixed fingerprint: these tests are about run_job, not about hashing the shipped model.
    return BatchContext(ScoreOptions(cache_dir=str(tmp_path / "cache"), **options), None, fingerprint={"test": 1})


def _run(job, ctx, score_one=None, monkeypatch=None) -> JobResult:
    if score_one is not None:
        monkeypatch.setattr(batch, "score_one", score_one)
    return run_job(job, ctx, Lines(), lambda stage: None)


def test_an_unreadable_video_is_rejected_with_one_line_naming_it(tmp_path):
    job = _job(tmp_path, "garbage.mp4")
    result = _run(job, _context(tmp_path))
    assert result.status == REJECTED
    assert "garbage.mp4" in result.message and "\n" not in result.message
    assert result.summary == {} and result.seconds > 0
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("error, status, words", [
    (BgmgenError("render failed; check the SoundFont"), FAILED, "render failed"),
    (RuntimeError("index 3 is out of bounds\nfor axis 0"), FAILED, "internal error: RuntimeError: index 3 is out"),
    (MissingDependencyError("ffmpeg is not on PATH; install it"), MISSING_DEPENDENCY, "ffmpeg is not on PATH"),
])
def test_every_failure_becomes_a_plain_result(tmp_path, monkeypatch, error, status, words):
    def failing_score_one(*args, **kwargs):
        raise error

    job = _job(tmp_path, "clip.mp4")
    result = _run(job, _context(tmp_path), failing_score_one, monkeypatch)
    assert result.status == status and words in result.message and "\n" not in result.message
    # What crosses a process boundary (Ray) is plain: no exception object inside.
    again = pickle.loads(pickle.dumps(result))
    assert again == result
    assert not any(isinstance(v, BaseException) for v in vars(result).values())


def test_a_scored_video_gets_its_summary_and_the_line_that_says_so(tmp_path, monkeypatch):
    def scoring(job, ctx, console, stage_cb, ident, fingerprint):
        assert fingerprint == {"test": 1}
        return {"duration_s": 3.0, "bpm": 90.0, "key": "C major", "mood": "calm", "mix": "replace"}

    job = _job(tmp_path, "clip.mp4")
    result = _run(job, _context(tmp_path), scoring, monkeypatch)
    assert result.status == SCORED and result.message == str(job.out_dir) and result.summary["bpm"] == 90.0
    console = Lines()
    record_result(job, result, console)
    assert (job.status, job.summary["key"]) == (SCORED, "C major")
    assert console.lines == [f"[green]scored[/] clip.mp4 -> {job.out_dir}"]


def test_a_missing_dependency_stops_the_batch_with_its_line(tmp_path):
    job = _job(tmp_path, "clip.mp4")
    with pytest.raises(MissingDependencyError, match="no SoundFont found"):
        record_result(job, JobResult(MISSING_DEPENDENCY, "no SoundFont found; apt-get install it", {}, 0.1), Lines())
    assert job.status == ""


def test_the_ray_address_does_not_make_outputs_stale():
    assert ScoreOptions(ray="local").output_fingerprint() == ScoreOptions().output_fingerprint()
    assert ScoreOptions(ray="auto").to_json()["ray"] == "auto"   # run.json still records it


def test_with_options_shares_the_loaded_models_and_refuses_other_models(tmp_path):
    """The web page's takes: another mood or seed reuses the models (loaded once, by whichever context
    loads first); options the models depend on cannot change this way."""
    import dataclasses

    base = BatchContext(ScoreOptions(cache_dir=str(tmp_path / "cache")), ["bgmgen", "ui"])
    take = base.with_options(dataclasses.replace(base.options, mood="calm", seed=7, guidance=2.0))
    assert take.options.mood == "calm" and base.options.mood is None
    assert take.soundfont() == base.soundfont()  # loaded through the take, seen by the base
    assert take._loaded is base._loaded and take.hashes is base.hashes
    assert take.fingerprint() != base.fingerprint()  # the outputs' fingerprint follows the options
    for field, value in (("model", str(tmp_path / "other.safetensors")), ("device", "cuda"),
                         ("soundfont", str(tmp_path / "other.sf2"))):
        with pytest.raises(ValueError, match=field):
            base.with_options(dataclasses.replace(base.options, **{field: value}))


def test_music_model_load_waits_for_what_it_is_told_to(tmp_path):
    """score_one starts the music model's load behind the shot detector's (`after`): the load's
    thread begins with it; any of the gate's events lets it go."""
    import threading

    from bgmgen.core.threads import wait_for_any

    detector_loaded, analysis_over = threading.Event(), threading.Event()
    ctx = _context(tmp_path)
    loading = ctx.start_loading_music_model(after=lambda: wait_for_any((detector_loaded, analysis_over)))
    try:
        assert ctx.start_loading_music_model() is loading  # one load, whoever asks
        assert not analysis_over.wait(0.3) and not loading.done()
    finally:
        analysis_over.set()  # (a thread left waiting would hold the test process open)
    assert ctx.music_model() is loading.result(timeout=60)


def test_a_scan_begun_ahead_of_a_job_is_stopped_when_the_job_ends_without_it(tmp_path, monkeypatch):
    """The CLI begins decoding its first video before the job runs (video.scan_ahead); a job that ends
    without taking it (failed here; up to date or cached alike) stops it."""
    from media import make_video  # tests/media.py (see conftest)

    from bgmgen.video import scan_ahead

    video = make_video(tmp_path / "clip.mp4", duration=2.0, size=(160, 90), fps=25, audio="none")
    jobs = expand_inputs([str(video)])
    assign_outputs(jobs, str(tmp_path / "out"))
    scan = scan_ahead.begin_scan(jobs[0].path, chunk=4)  # 50 frames: more chunks than it holds untaken

    def failing_score_one(*args, **kwargs):
        raise BgmgenError("render failed; check the SoundFont")

    assert _run(jobs[0], _context(tmp_path), failing_score_one, monkeypatch).status == FAILED
    scan.thread.join(10)
    assert scan.stopped.is_set() and not scan.thread.is_alive() and scan_ahead._scans == {}
