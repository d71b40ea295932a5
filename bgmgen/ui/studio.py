"""The functions behind `bgmgen ui`'s page, in plain Python (no Gradio): a Studio owns a working folder, takes
uploaded videos into it, scores takes of them with the same code as `bgmgen score` (app.score.score_one) and
lists the takes with their facts.

Working folder layout (every path in it is made here; nothing the browser sends becomes a path):

    WORKDIR/videos/<id>/video.json        the upload's name (sanitised), size and sha256; <id> = sha256[:16]
    WORKDIR/videos/<id>/<name><.ext>      the copy of the upload that is scored
    WORKDIR/videos/<id>/take-001/         one take: <name>.mp4, .mid, .wav, report.png, run.json (as `bgmgen score`)

A take folder is written through outputs.partial_folder (hidden until complete), so a take that fails or is
interrupted leaves nothing listed. Re-scoring the same video is fast because score_one's analysis comes from the
analysis cache (user_cache_dir("analysis"), shared with `bgmgen score`); only the plan, the music, the render and
the mux run again.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bgmgen.app import provenance
from bgmgen.app.options import ScoreOptions
from bgmgen.app.outputs import Job
from bgmgen.app.provenance import RUN_JSON
from bgmgen.core.constants import MAX_BPM, MIN_BPM
from bgmgen.core.errors import BgmgenError, InputError, one_line
from bgmgen.core.files import atomic_path, content_sha256, user_cache_dir
from bgmgen.core.jsonio import dump_json

VIDEOS = "videos"
VIDEO_JSON = "video.json"
TAKE_FOLDER = re.compile(r"take-(\d{3,})")
VIDEO_ID = re.compile(r"[0-9a-f]{16}")
MAX_STEM_CHARS = 64
MAX_GUIDANCE = 20.0  # the CLI's --guidance range (cli_values.guidance_scale)
MAX_SEED = 2**32 - 1

# score_one's stages (Stopwatch names, "analysis: <stage>" for the analysis's own) -> where the progress bar
# stands when the stage starts, and what the page says. Fractions from a first take of examples/shots.mp4 here
# (analysis ~65 % of the time); a re-take skips the analysis and moves on quickly.
STAGE_PROGRESS: dict[str, tuple[float, str]] = {
    "hash_input": (0.00, "reading the video"),
    "probe": (0.01, "reading the video"),
    "analysis: probe": (0.04, "reading the video"),
    "analysis: cache_lookup": (0.05, "looking for an earlier analysis"),
    "analysis: decode": (0.06, "decoding the picture"),
    "analysis: shots": (0.30, "finding the cuts"),
    "analysis: motion": (0.55, "measuring the motion"),
    "analysis: clip": (0.56, "looking at the picture"),
    "analysis: keyframes": (0.56, "looking at the picture"),
    "analysis: caption": (0.57, "looking at the picture"),
    "analysis: text": (0.58, "looking at the picture"),
    "analysis: sound": (0.58, "listening to the original sound"),
    "analysis: mood": (0.60, "choosing the mood"),
    "plan": (0.62, "planning tempo, key and sections"),
    "generate": (0.63, "writing the music"),
    "midi": (0.75, "writing the MIDI"),
    "mix_decision": (0.76, "choosing the mix"),
    "write_midi": (0.76, "writing the MIDI"),
    "render": (0.77, "rendering the piano"),
    "mux": (0.88, "putting the music into the video"),
    "report_wait": (0.94, "drawing the report"),
    "hash_weights": (0.97, "recording the run"),
}

MOOD_SOURCES = {"user": "chosen", "picture-statistics": "from the picture", "captions": "from the captions",
                "clip": "from CLIP", "captions+clip": "from the captions and CLIP", "default": "default"}

ProgressReport = Callable[[float, str], None]


def default_workdir() -> Path:
    return user_cache_dir("ui")


def safe_file_name(name: str | None) -> str:
    """A file name made from what the browser calls the upload: its last path component, letters, digits, `_`
    and `-` only (no dots but the extension's, nothing hidden), at most MAX_STEM_CHARS before a short extension
    of letters and digits; "video" when nothing is left."""
    last = re.split(r"[\\/]", name or "")[-1]
    stem, _, ext = last.rpartition(".")
    if not re.fullmatch(r"[A-Za-z0-9]{1,5}", ext) or not stem:
        stem, ext = last, ""  # no extension: what follows the last dot is part of the name
    stem = re.sub(r"[^\w-]+", "_", stem).strip("_-")[:MAX_STEM_CHARS] or "video"
    return f"{stem}.{ext.lower()}" if ext else stem


@dataclass(frozen=True)
class TakeSettings:
    """What the page's controls set for one take (None: as `bgmgen score` decides without the flag)."""

    mood: str | None = None
    tempo: float | None = None
    seed: int = 0
    mix: str | None = None
    guidance: float | None = None

    def checked(self) -> TakeSettings:
        """These settings, or an InputError with the CLI's words for the flag that is out of range."""
        from bgmgen.audio.mux import MODES
        from bgmgen.video.moods import MOODS

        if self.mood is not None and self.mood not in MOODS:
            raise InputError(f"mood {self.mood!r}: choose one of {', '.join(MOODS)}")
        if self.tempo is not None and not MIN_BPM <= self.tempo <= MAX_BPM:
            raise InputError(f"the tempo in BPM must be between {MIN_BPM:g} and {MAX_BPM:g}, got {self.tempo:g}")
        if not (isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED):
            raise InputError(f"the seed must be a whole number between 0 and {MAX_SEED}, got {self.seed!r}")
        if self.mix is not None and self.mix not in MODES:
            raise InputError(f"mix {self.mix!r}: choose one of {', '.join(MODES)}")
        if self.guidance is not None and not 0.0 <= self.guidance <= MAX_GUIDANCE:
            raise InputError(f"the guidance scale must be between 0 and {MAX_GUIDANCE:g}, got {self.guidance:g}")
        return self

    def score_options(self, base: ScoreOptions) -> ScoreOptions:
        return dataclasses.replace(base, mood=self.mood, tempo=self.tempo, seed=self.seed, mix=self.mix,
                                   guidance=self.guidance)


@dataclass(frozen=True)
class Video:
    """An uploaded video as the working folder holds it."""

    id: str
    path: Path        # the copy that is scored
    name: str         # its file name (the upload's name, sanitised), shown in the page and in messages

    @property
    def folder(self) -> Path:
        return self.path.parent


@dataclass(frozen=True)
class TakeFacts:
    """What the page shows about a take, read from its run.json."""

    duration_s: float
    bpm: float
    key: str
    mood: str
    mood_source: str
    cuts: int
    mix: str
    mix_reason: str
    guidance: float | None
    seconds: float
    analysis_cached: bool
    fallbacks: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Take:
    """One scored take: its folder, the settings it was asked for, its facts and its files."""

    number: int
    folder: Path
    settings: TakeSettings
    facts: TakeFacts
    files: dict[str, Path]   # video, midi, wav, report, run

    @property
    def label(self) -> str:
        f = self.facts
        return f"take {self.number}: {f.mood}, {f.bpm:.0f} BPM, {f.key}, seed {self.settings.seed}"

    @property
    def downloads(self) -> list[Path]:
        return [self.files[k] for k in ("video", "midi", "wav")]

    @classmethod
    def read(cls, folder: Path) -> Take | None:
        """The take in `folder`, or None when it is not a complete take folder."""
        match = TAKE_FOLDER.fullmatch(folder.name)
        try:
            run = json.loads((folder / RUN_JSON).read_text(encoding="utf-8"))
            options, plan = run["options"], run["plan"]
            files = {k: folder / Path(run["outputs"][k]).name for k in ("video", "midi", "wav", "report", "run")}
            settings = TakeSettings(mood=options.get("mood"), tempo=options.get("tempo"),
                                    seed=int(options.get("seed") or 0), mix=options.get("mix"),
                                    guidance=options.get("guidance"))
            facts = TakeFacts(
                duration_s=float(run["video"]["duration_s"]), bpm=float(plan["bpm"]), key=str(plan["key"]),
                mood=str(plan["mood"]), mood_source=str(plan.get("mood_source", "")),
                cuts=len(run["analysis"]["cuts_s"]), mix=str(run["mix"]["mode"]), mix_reason=str(run["mix"]["reason"]),
                guidance=(run.get("generation") or {}).get("guidance"),
                seconds=float(run["timings_s"]["total"]),
                analysis_cached=bool((run["analysis"].get("cache") or {}).get("hit")),
                fallbacks=dict(run.get("fallbacks") or {}), warnings=list(run.get("warnings") or []))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if match is None or not all(p.is_file() for p in files.values()):
            return None
        return cls(number=int(match.group(1)), folder=folder, settings=settings, facts=facts, files=files)


class StageProgress:
    """score_one's stage callback -> (fraction, words) for a progress display; never goes backwards."""

    def __init__(self, report: ProgressReport | None = None):
        self.report = report
        self.fraction = 0.0
        self.stages: list[str] = []

    def __call__(self, stage: str) -> None:
        self.stages.append(stage)
        fraction, words = STAGE_PROGRESS.get(stage, (self.fraction, stage.replace("_", " ")))
        self.fraction = max(self.fraction, fraction)
        if self.report is not None:
            self.report(self.fraction, words)

    def done(self) -> None:
        self.fraction = 1.0
        if self.report is not None:
            self.report(1.0, "done")


class Studio:
    """The working folder, its videos and takes, and the models that stay loaded between takes.

    One take is scored at a time (a lock): the stages already use the CPU's cores, and score_one's batch context
    is shared. `options` are `bgmgen score`'s (device, model, SoundFont, weights, cache); each take replaces only
    mood, tempo, seed, mix and guidance, which change no loaded model.
    """

    def __init__(self, workdir: str | Path | None = None, options: ScoreOptions | None = None,
                 max_upload_bytes: int | None = None):
        self.workdir = Path(workdir or default_workdir()).expanduser().resolve()
        (self.workdir / VIDEOS).mkdir(parents=True, exist_ok=True)
        base = options or ScoreOptions()
        self.options = dataclasses.replace(base, out=None, force=True, quiet=True)
        self.max_upload_bytes = max_upload_bytes
        self._lock = threading.Lock()
        self._context = None
        self._console = None

    # -- videos ------------------------------------------------------------------------------------------------

    def add_video(self, upload: str | Path, name: str | None = None) -> Video:
        """Copy an uploaded file into the working folder (once per content) and return it.

        `name` is what the browser called the file (default: the upload's own file name); it only ever becomes a
        sanitised file name inside a folder made here."""
        upload = Path(upload)
        shown = safe_file_name(name if name is not None else upload.name)
        if not upload.is_file():
            raise InputError(f"{shown}: the uploaded file is gone; choose the video again")
        size = upload.stat().st_size
        if self.max_upload_bytes is not None and size > self.max_upload_bytes:
            raise InputError(f"{shown}: {size / 2**20:.0f} MB is over the upload limit of "
                             f"{self.max_upload_bytes / 2**20:.0f} MB; start bgmgen ui with a larger --max-upload-mb")
        sha256 = content_sha256(upload)
        video_id = sha256[:16]
        folder = self.workdir / VIDEOS / video_id
        try:
            return self.video(video_id)
        except InputError:
            pass
        folder.mkdir(parents=True, exist_ok=True)
        stored = folder / shown
        with atomic_path(stored) as tmp:
            shutil.copyfile(upload, tmp)
        dump_json({"name": shown, "size": size, "sha256": sha256}, folder / VIDEO_JSON)
        return Video(id=video_id, path=stored, name=shown)

    def video(self, video_id: str) -> Video:
        """The video with this id (an id the page got from add_video)."""
        if not isinstance(video_id, str) or not VIDEO_ID.fullmatch(video_id):
            raise InputError("no video chosen; drop or choose a video first")
        folder = self.workdir / VIDEOS / video_id
        try:
            meta = json.loads((folder / VIDEO_JSON).read_text(encoding="utf-8"))
            name = safe_file_name(meta["name"])
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError("that video is no longer in the working folder; choose it again") from None
        if not (folder / name).is_file():
            raise InputError(f"{name}: no longer in the working folder; choose it again")
        return Video(id=video_id, path=folder / name, name=name)

    # -- takes -------------------------------------------------------------------------------------------------

    def list_takes(self, video_id: str) -> list[Take]:
        """Every complete take of the video, oldest first."""
        folder = self.video(video_id).folder
        takes = (Take.read(p) for p in sorted(folder.iterdir()) if p.is_dir() and TAKE_FOLDER.fullmatch(p.name))
        return sorted((t for t in takes if t is not None), key=lambda t: t.number)

    def take(self, video_id: str, number: int) -> Take:
        for take in self.list_takes(video_id):
            if take.number == number:
                return take
        raise InputError(f"take {number}: not found; choose one of the listed takes")

    def score_take(self, video_id: str, settings: TakeSettings = TakeSettings(),
                   progress: ProgressReport | None = None) -> Take:
        """Score a new take of the video with these settings; progress(fraction, words) at each stage.

        Raises what score_one raises (BgmgenError subclasses with one-line messages; see error_message)."""
        from bgmgen.app.console import native_output_sink
        from bgmgen.app.score import score_one

        settings = settings.checked()
        video = self.video(video_id)
        with self._lock:
            numbers = [int(m.group(1)) for p in video.folder.iterdir() if (m := TAKE_FOLDER.fullmatch(p.name))]
            number = max(numbers, default=0) + 1
            job = Job(source=video.name, path=video.path, out_dir=video.folder / f"take-{number:03d}",
                      stem=video.path.stem)
            options = settings.score_options(self.options)
            ctx = self._context_for(options)
            # This take's own fingerprint (its mood, seed, ...), for its run.json; the model part is memoised.
            fingerprint = provenance.fingerprint(options.output_fingerprint(), ctx.model_fingerprint())
            stages = StageProgress(progress)
            # As in `bgmgen score`: libav's and FluidSynth's own prints stay off the terminal (not with --debug).
            with native_output_sink(not self.options.debug):
                score_one(job, ctx, self._quiet_console(), stages, None, fingerprint)
            stages.done()
        take = Take.read(job.out_dir)
        if take is None:  # score_one returned, so every output was written: a bug if this happens
            raise BgmgenError(f"{video.name}: take {number} was written but cannot be read back from {job.out_dir}")
        return take

    def error_message(self, err: BaseException, video: Video | None = None) -> str:
        """The one line `bgmgen score` prints for this error (after "bgmgen: error: "), naming the video by its
        upload name instead of its path in the working folder."""
        if isinstance(err, BgmgenError):
            msg = one_line(err)
        else:
            msg = f"internal error: {type(err).__name__}: {one_line(err)} (run again with --debug for the traceback)"
        if video is not None:
            msg = msg.replace(str(video.path), video.name)
            if video.name not in msg:
                msg = f"{video.name}: {msg}"
        return msg

    # -- the batch context shared by every take ---------------------------------------------------------------

    def _context_for(self, options: ScoreOptions):
        from bgmgen.app.score import BatchContext

        if self._context is None:
            self._context = BatchContext(options, ["bgmgen", "ui"])
        # Only the take's fields differ from the options the models were loaded with: the models are shared.
        return self._context.with_options(options)

    def _quiet_console(self):
        if self._console is None:
            from bgmgen.app.console import make_console

            self._console = make_console(quiet=True)  # fallbacks and warnings are in run.json and on the page
        return self._console


# -- what the page shows ------------------------------------------------------------------------------------------

def facts_markdown(take: Take) -> str:
    """The key facts of a take as a few lines of Markdown."""
    f = take.facts
    cuts = f"{f.cuts} cut" + ("" if f.cuts == 1 else "s")
    lines = [
        (f"**Take {take.number}** · {f.duration_s:.1f} s · {f.bpm:.0f} BPM · {f.key} · "
         f"mood {f.mood} ({MOOD_SOURCES.get(f.mood_source, f.mood_source)}) · {cuts}"),
        f"Mix: {f.mix} ({f.mix_reason}) · seed {take.settings.seed} · guidance "
        + (f"{f.guidance:g}" if isinstance(f.guidance, (int, float)) else "default"),
        f"Scored in {f.seconds:.1f} s" + (" (analysis from the cache)" if f.analysis_cached else ""),
    ]
    if f.fallbacks:
        # The reasons' first clause ("CLIP weights not found"); run.json has the whole reason and what to do.
        lines.append("Fallbacks: " + "; ".join(f"{stage}: {reason.split(' (')[0].split(';')[0]}"
                                               for stage, reason in sorted(f.fallbacks.items())))
    else:
        lines.append("Fallbacks: none")
    lines += [f"Warning: {w}" for w in f.warnings]
    return "  \n".join(_markdown_text(line) for line in lines)


TAKE_COLUMNS = ("take", "mood", "BPM", "key", "seed", "mix", "guidance", "seconds")


def takes_rows(takes: list[Take]) -> list[list]:
    """One row per take for the page's table (TAKE_COLUMNS)."""
    return [[t.number, t.facts.mood, round(t.facts.bpm, 1), t.facts.key, t.settings.seed, t.facts.mix,
             t.facts.guidance, round(t.facts.seconds, 1)] for t in takes]


def _markdown_text(line: str) -> str:
    """A line of our Markdown with the characters that could start HTML in file names or reasons escaped."""
    return line.replace("<", "&lt;").replace(">", "&gt;")
