"""One video through every stage: probe, analysis, plan, generate, MIDI, render, mux, report,
run.json - written into a partial folder that replaces the output folder only when complete.

Heavy modules (torch, decord, the stage modules) are imported inside the functions that use them.
"""

from __future__ import annotations

import concurrent.futures
import copy
import functools
import gc
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

from bgmgen import __version__
from bgmgen.app import provenance
from bgmgen.app.console import escape, say
from bgmgen.app.options import ScoreOptions
from bgmgen.app.outputs import Job, partial_folder
from bgmgen.app.provenance import RUN_JSON, RUN_JSON_SCHEMA, collect_versions, hash_weights, input_identity
from bgmgen.core.constants import STEPS_PER_BEAT
from bgmgen.core.errors import BgmgenError, MissingDependencyError
from bgmgen.core.files import Sha256Memo
from bgmgen.core.jsonio import dump_json
from bgmgen.core.timing import Stopwatch
from bgmgen.music.weights import default_model_path

PREWARM_MODULES = ("torch", "matplotlib.figure", "matplotlib.backends.backend_agg")



def _prewarm_imports(music_model: concurrent.futures.Future | None = None, resume_collector: bool = False,
                     after: Callable[[], None] | None = None) -> None:
    """After `after()` returns, import what later stages need and collect the versions run.json
    records (`ffmpeg -version` and package metadata: about 0.1 s, at the end of the first video
    otherwise); then, with `resume_collector`, wait for the music model's load and turn the cyclic
    garbage collector back on (see _pause_collector_for_startup)."""
    from bgmgen.core.threads import import_modules

    try:
        if after is not None:
            after()
        import_modules(PREWARM_MODULES)
        try:
            collect_versions()
        except Exception:  # noqa: BLE001, S110 - run.json collects them again and reports what fails
            pass
        if music_model is not None:
            concurrent.futures.wait([music_model])  # a failed load is music_model()'s to report
    finally:
        if resume_collector:
            gc.freeze()  # what is alive now lives as long as the process: no later collection walks it
            gc.enable()


_collector_paused_once = False


def _pause_collector_for_startup() -> bool:
    """Pause the cyclic garbage collector while the process's first video imports torch, scipy and
    matplotlib and loads its music model: they only add objects that live as long as the process (~450,000),
    and the collector walked them again and again as they arrived (0.73 s of collections, holding the
    GIL, on a 60 s clip here; 0.07 s with the pause). _prewarm_imports resumes it and freezes them out
    of later collections. Once per process: a batch's later videos, a web page's or a Ray worker's, run
    with the collector as it is. True when paused (the caller hands the resumption to _prewarm_imports)."""
    global _collector_paused_once
    if _collector_paused_once or not gc.isenabled():
        return False
    _collector_paused_once = True
    gc.disable()
    return True


# The options a context's loaded models depend on: contexts that share models agree on all of them.
MODEL_OPTIONS = ("device", "model", "clip_weights", "blip_weights", "require_semantic", "soundfont", "cache_dir")


class _Loaded:
    """What a BatchContext loads lazily, in one object so that the contexts with_options makes share it."""

    def __init__(self):
        self.analysis_models = None
        self.music_model_loading: concurrent.futures.Future | None = None  # the music model, once loaded
        self.soundfont: Path | None = None


class BatchContext:
    """Models and facts shared by every video of a batch (loaded once, lazily)."""

    def __init__(self, options: ScoreOptions, command: list[str] | None, fingerprint: dict | None = None):
        self.options = options
        self.command = command or ["bgmgen", "score"]
        # A Ray worker is given the driver's, so every file of a batch is judged up to date against one fingerprint.
        self._fingerprint = fingerprint
        self.hashes = Sha256Memo(options.cache_dir)
        self._loaded = _Loaded()  # shared with the contexts with_options makes
        self._music_model_lock = threading.Lock()
        self.notes_said: set[str] = set()
        self.load_timings: dict[str, float] = {}
        self._preflight_done = False

    def with_options(self, options: ScoreOptions) -> "BatchContext":
        """A context for other per-video options (mood, tempo, seed, mix, sampler: a web page's takes)
        that shares this one's models, loaded or loading, and its memo of file hashes."""
        changed = [name for name in MODEL_OPTIONS if getattr(options, name) != getattr(self.options, name)]
        if changed:
            raise ValueError(f"options the loaded models depend on differ: {', '.join(changed)}")
        other = copy.copy(self)  # shares _loaded, the lock, the hash memo, the notes said and the timings
        other.options = options
        other._fingerprint = None  # the outputs' fingerprint depends on the options
        return other

    def preflight(self) -> None:
        """Cheap checks that would fail every video: run once before the first heavy stage."""
        if self._preflight_done:
            return
        for tool in ("ffmpeg", "ffprobe"):
            if not shutil.which(tool):
                raise MissingDependencyError(
                    f"{tool} is not on PATH; install it (apt-get install ffmpeg) or run scripts/bootstrap")
        if self.options.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise MissingDependencyError("--device cuda: torch sees no CUDA GPU here; use --device cpu")
        self.soundfont()
        self._preflight_done = True

    def soundfont(self) -> Path:
        if self._loaded.soundfont is None:
            from bgmgen.audio.render import find_soundfont

            self._loaded.soundfont = Path(find_soundfont(self.options.soundfont))
        return self._loaded.soundfont

    def analysis_models(self):
        if self._loaded.analysis_models is None:
            from bgmgen.video.analysis import AnalysisModels

            t0 = time.perf_counter()
            self._loaded.analysis_models = AnalysisModels(self.options.analysis_options())
            self.load_timings["load_analysis_models"] = round(time.perf_counter() - t0, 4)
        return self._loaded.analysis_models

    def music_model(self):
        """The music model, loaded once: waits for the load start_loading_music_model began (and begins it
        if nothing did). A failed load is forgotten, so the next video tries again."""
        loading = self.start_loading_music_model()
        t0 = time.perf_counter()
        try:
            return loading.result()  # re-raises the loader's error
        except BaseException:
            with self._music_model_lock:
                if self._loaded.music_model_loading is loading:
                    self._loaded.music_model_loading = None
            raise
        finally:
            self.load_timings["wait_music_model"] = round(time.perf_counter() - t0, 4)

    def start_loading_music_model(self, after: Callable[[], None] | None = None) -> concurrent.futures.Future:
        """Load the music model in a background thread (reading the weights and the int8 conversion
        take about a second, mostly outside the GIL) while the analysis runs; music_model() waits.
        The thread calls `after()` first, when given (the load that begins here waits for it).
        Returns the load, under way or done."""
        with self._music_model_lock:
            if self._loaded.music_model_loading is None:
                pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bgmgen-load-music")
                self._loaded.music_model_loading = pool.submit(self._load_music_model, after)
                pool.shutdown(wait=False)
            return self._loaded.music_model_loading

    def _load_music_model(self, after: Callable[[], None] | None = None):
        from bgmgen.music.generate import load_music_model

        if after is not None:
            after()
        t0 = time.perf_counter()
        model = load_music_model(self.options.model, device=self.options.device)
        self.load_timings["load_music_model"] = round(time.perf_counter() - t0, 4)
        return model

    def model_fingerprint(self) -> dict:
        """What identifies the music model and SoundFont, without loading torch."""
        fp: dict[str, Any] = {}
        model_path = self.options.model or default_model_path()
        if Path(model_path).is_file():
            fp["model_sha256"] = self.hashes.sha256(model_path)
        try:
            fp["soundfont_sha256"] = self.hashes.sha256(self.soundfont())
        except BgmgenError:
            fp["soundfont_sha256"] = None
        # CLIP/BLIP weights that appear in the HF cache after a fallback run make the outputs stale.
        from bgmgen.video.semantic import cached_weight_sources

        fp["semantic_sources"] = cached_weight_sources(self.options.analysis_options())
        return fp

    def fingerprint(self) -> dict:
        """The up-to-date fingerprint of this batch's outputs (provenance.fingerprint), computed once per batch."""
        if self._fingerprint is None:
            self._fingerprint = provenance.fingerprint(self.options.output_fingerprint(), self.model_fingerprint())
        return self._fingerprint

    def note(self, text: str, console) -> None:
        """Say a fallback or warning once per batch."""
        if text in self.notes_said:
            return
        self.notes_said.add(text)
        say(console, f"[yellow]note:[/] {escape(text)}")


def score_one(job: Job, ctx: BatchContext, console, stage_cb: Callable[[str], None],
              ident: dict | None, fingerprint: dict) -> dict:
    """Run every stage for one video; returns a short summary for the table."""
    from bgmgen.video import probe

    opts = ctx.options
    sw = Stopwatch()
    t_start = time.perf_counter()
    path = job.path
    with sw.stage("hash_input", stage_cb):
        ident = ident or input_identity(path)
    with sw.stage("probe", stage_cb):
        info = probe.probe(str(path))
    ctx.preflight()
    from bgmgen.app import report
    from bgmgen.audio import mux, render
    from bgmgen.core.memory import reuse_freed_memory
    from bgmgen.core.threads import wait_for_any
    from bgmgen.music import generate, midi
    from bgmgen.music import plan as plan_mod
    from bgmgen.video import analysis as analysis_mod

    paused = _pause_collector_for_startup()
    reuse_freed_memory()  # once per process: the detector's and the decode's blocks are reused, not faulted in again
    music_model = None
    analysis_over = threading.Event()  # set however the analysis ends: the loads below never wait for ever
    after_shot_detector = None
    try:
        try:
            models = ctx.analysis_models()
            # The music model's load and the imports below begin once the shot detector is loaded (or
            # the analysis is over: a cached one never loads it). Begun together, they held the GIL and
            # the second core while the detector loaded and the decode began, so the detector started
            # later: on a 60 s clip 1.1-1.5 s of wall time (two series of three pairs; README).
            after_shot_detector = functools.partial(wait_for_any, (models.shot_detector_loaded, analysis_over))
            music_model = ctx.start_loading_music_model(after=after_shot_detector)
        finally:
            # While the first pass decodes (C threads), import what later stages need: matplotlib for the
            # report (torch is there by then; the meters need no scipy: audio/dsp.py). This thread also
            # resumes the collector, so it starts whatever happened above.
            threading.Thread(target=_prewarm_imports, args=(music_model, paused, after_shot_detector),
                             name="prewarm-imports", daemon=True).start()
        with sw.stage("analysis", stage_cb):
            # Provisional while the shot detector's near-threshold checks still run, in the background
            # on the core the sampler leaves free; settled after generation (below). The report
            # keyframes may still be decoding (in the background) then.
            pending = analysis_mod.analyse_video_provisional(
                str(path), opts.analysis_options(), models=models, progress=lambda s: stage_cb(f"analysis: {s}"))
    finally:
        analysis_over.set()

    # Fallbacks and warnings come from the models and the decode, not from the shot checks: the
    # provisional analysis has the final ones.
    for stage, reason in sorted(pending.analysis.fallbacks.items()):
        ctx.note(f"{stage}: {reason}", console)
    for w in pending.analysis.warnings:
        say(console, f"[yellow]warning:[/] {escape(path.name)}: {escape(w)}")

    from bgmgen.music.plan import PlanOptions

    plan_options = PlanOptions(tempo=opts.tempo, mood=opts.mood, seed=opts.seed)
    render_options = render.RenderOptions(soundfont=str(ctx.soundfont()))
    ahead = None
    try:
        model = ctx.music_model()
        with sw.stage("plan", stage_cb):
            music_plan = plan_mod.make_plan(pending.analysis, plan_options)
        # Every sampler setting is explicit here, so run.json records what was used, not just what was asked.
        settings = generate.SamplerSettings.with_overrides(
            model.denoiser.architecture, steps=opts.steps, guidance=opts.guidance, guide_groups=opts.guide_groups,
            strict_groove=not opts.loose_groove, order=opts.order,
            temperature=opts.temperature)
        sampler_threads = generate.SamplerThreads()  # both compositions' windows, for run.json

        def compose(plan):
            """The piece for `plan`. The render's parts that lie well inside what the sampler has written
            are synthesised meanwhile, on the core it leaves free; the render takes them only if the
            finished piece has the same notes there."""
            nonlocal ahead
            if ahead is not None:
                ahead.close()
            ahead = parts_ahead = render.PartsAhead(info.duration_s, render_options)
            step_s, start_s = 60.0 / plan.bpm / STEPS_PER_BEAT, float(plan.start_s)

            def written(done_steps: int, roll_so_far) -> None:
                final_s = start_s + done_steps * step_s
                if not parts_ahead.wants(final_s):
                    return
                try:
                    roll_now = roll_so_far()  # here: the sampler goes on changing the piece once this returns
                    parts_ahead.offer(lambda: midi.roll_to_midi(roll_now, plan), final_s)
                except Exception:  # only a head start is lost: the render synthesises every part it needs itself
                    pass

            with sw.stage("generate", stage_cb):
                return generate.generate_roll(model, plan, seed=opts.seed, settings=settings, written=written,
                                              threads=sampler_threads)

        roll = compose(music_plan)
        # The final analysis. Its plan is the provisional one unless a check moved a frame across the
        # threshold (the cut list) in a way the plan sees: then the piece is written again for it.
        an, keyframe_job = pending.settle()
        recomposed = False
        if pending.pending_checks:
            with sw.stage("plan", stage_cb):
                final_plan = plan_mod.make_plan(an, plan_options)
            if final_plan.to_json() != music_plan.to_json():
                music_plan, recomposed = final_plan, True
                roll = compose(music_plan)
        with sw.stage("midi", stage_cb):
            pm = midi.roll_to_midi(roll, music_plan)

        with sw.stage("mix_decision", stage_cb):
            if opts.mix:
                mix, mix_reason = opts.mix, "--mix"
            else:
                audible = bool(info.has_audio) and bool(mux.audio_is_audible(str(path), info))
                mix = "duck" if audible else "replace"
                mix_reason = ("default: the input has audible sound" if audible else
                              "default: the input has no audible sound")

        stem = job.stem
        names = {"midi": f"{stem}.mid", "wav": f"{stem}.wav", "video": f"{stem}.mp4",
                 "report": "report.png", "run": RUN_JSON}
        with partial_folder(job.out_dir) as tmp:
            with sw.stage("write_midi", stage_cb):
                pm.write(str(tmp / names["midi"]))
            # The report is drawn in a worker thread while FluidSynth and ffmpeg (which release the GIL)
            # render and mux: about a second less wall time per video.
            def draw_report() -> tuple[float, analysis_mod.Keyframes]:
                t0 = time.perf_counter()
                keyframes = keyframe_job.result()  # decoded in the background since the analysis ended, when deferred
                report.write_report(str(tmp / names["report"]), an, music_plan, midi.midi_to_roll(pm, music_plan),
                                    keyframes.frames)
                return time.perf_counter() - t0, keyframes

            with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="report") as pool, \
                    concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="loudness") as meter:
                drawn = pool.submit(draw_report)
                with sw.stage("render", stage_cb):
                    rendered = render.render_wav(str(tmp / names["midi"]), str(tmp / names["wav"]),
                                                 info.duration_s, render_options, ahead=ahead)
                # The WAV's loudness (for run.json) is measured while ffmpeg muxes it, on the core the
                # encoder leaves free (one thread: with two, the encoder took up to 1.6x as long).
                measured = meter.submit(rendered.with_loudness, threads=1)
                with sw.stage("mux", stage_cb):
                    mux_info = mux.mux(str(path), str(tmp / names["wav"]), str(tmp / names["video"]), info, mix)
                render_info = measured.result()
                del rendered
                with sw.stage("report_wait", stage_cb):
                    report_s, keyframes = drawn.result()  # re-raises the report's (or the keyframes') error
                    sw.timings["report"] = round(report_s, 4)
            # The analysis as its cache entry records it: with the background keyframe decode's timing and warnings.
            analysis_json = keyframes.record(an)

            weight_files = dict(models.weight_files)
            weight_files["music_model"] = str(model.path)
            weight_files["soundfont"] = str(ctx.soundfont())
            with sw.stage("hash_weights", stage_cb):
                weights = hash_weights(weight_files, ctx.hashes)
                weights["music_model"]["sha256_reported_by_model"] = model.sha256
            fallbacks = dict(an.fallbacks)
            timings = {f"analysis.{k}": v for k, v in {**an.timings_s, **keyframes.timings_s}.items()}
            timings.update(sw.timings)
            timings.update(ctx.load_timings)
            timings["total"] = round(time.perf_counter() - t_start, 4)
            plan_json = music_plan.to_json()
            run = {
                "schema": RUN_JSON_SCHEMA,
                "bgmgen_version": __version__,
                "versions": collect_versions(),
                "command": ctx.command,
                "created_unix": round(time.time(), 3),
                "options": opts.to_json(),
                "fingerprint": fingerprint,
                "seed": opts.seed,
                "input": ident,
                "video": info.to_json(),
                "analysis": analysis_json,
                "plan": plan_json,
                "tempo_bpm": plan_json.get("bpm"),
                "bar_grid": {
                    "bpm": plan_json.get("bpm"),
                    "n_bars": plan_json.get("n_bars"),
                    "n_beats": plan_json.get("n_beats"),
                    "downbeat_times_s": plan_json.get("downbeat_times_s"),
                },
                "shots": analysis_json["shots"],
                "captions": an.captions,
                "mix": {"mode": mix, "reason": mix_reason},
                "music_model": {"path": str(model.path), "sha256": model.sha256, "meta": model.meta,
                                "device": str(model.device)},
                "generation": {"seed": opts.seed, **settings.to_json(), "precision": model.precision,
                               "shot_checks_during_generation": pending.pending_checks,
                               "composed_again_after_shot_checks": recomposed,
                               "convolutions": model.convolutions, "threads": sampler_threads.to_json()},
                "render": render_info,
                "mux": mux_info,
                "weights": weights,
                "fallbacks": fallbacks,
                "warnings": list(analysis_json["warnings"]),
                "timings_s": timings,
                "outputs": dict(names),
            }
            dump_json(run, tmp / names["run"])
        ctx.hashes.save()
        return {"duration_s": info.duration_s, "bpm": plan_json.get("bpm"), "key": plan_json.get("key"),
                "mood": plan_json.get("mood"), "mix": mix, "cuts": len(an.cuts_s),
                "timings": timings}
    finally:
        pending.cancel()  # the checks, when something failed before they settled
        if ahead is not None:
            ahead.close()
