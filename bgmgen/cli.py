"""The `bgmgen` command line (typer): parsing and error reporting, nothing heavy.

Each command's options are typed parameters of its function, declared once, that build the frozen dataclass the
library takes (ScoreOptions, DoctorOptions, TrainOptions, SampleOptions), with that dataclass's defaults. Heavy
packages are imported in the command functions, after parsing; lists owned by other modules are read when a value
is checked, completed or shown in a help (LATE). Errors: `bgmgen: error: <one line>`, exit 2 for usage errors,
BgmgenError's exit_code, 3 for a missing package, 130 for Ctrl-C, 1 for a bug (--debug adds the traceback).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import traceback
from typing import Annotated, Literal

import typer
from typer.core import TyperCommand, TyperGroup

from bgmgen import __version__
from bgmgen.app.options import DoctorOptions, ScoreOptions  # plain dataclasses: cheap
from bgmgen.cli_values import (
    _count,
    _path,
    beat_offset,
    bpm,
    choice_option,
    control_groups,
    dropout_rate,
    guidance_scale,
    kernel_bars,
    kernel_steps,
    late,
    learning_rate,
    port_number,
    ray_address,
    seed_number,
    temperature_value,
)
from bgmgen.core.errors import BgmgenError, InputError, one_line
from bgmgen.ui.options import UiOptions  # a plain dataclass: cheap

EXIT_USAGE, EXIT_MISSING_PACKAGE, EXIT_INTERRUPTED = 2, 3, 130
SCORING_COMMANDS = ("score", "ui")  # the commands that run the pipeline: main() sets core.threads.SCORING_ENV

Device = Literal["cpu", "cuda"]
_DEBUG = "bgmgen.debug"  # ctx.meta key: --debug given before or after the command


# -- command classes: late help, one error report ------------------------------------------------

class _LateNames(dict):
    """`str.format_map` mapping for help texts: {VARIANTS} -> "full, no-mask, ..."."""

    def __missing__(self, key: str) -> str:
        return ", ".join(str(c) for c in late(key))


class Command(TyperCommand):
    """A command whose help is completed when it is printed: `{NAME}` in an option's help becomes LATE[NAME],
    and options left at None show the default of the same-named argument of `options` (a dataclass or a
    function the command passes them to)."""

    options: str | None = None  # a LATE name

    def format_help(self, ctx, formatter):
        defaults = inspect.signature(late(self.options)).parameters if self.options else {}
        for param in self.params:
            if param.help and "{" in param.help:
                param.help = param.help.format_map(_LateNames())
            default = defaults[param.name].default if param.name in defaults else None
            if param.default is None and default not in (None, inspect.Parameter.empty) and not param.required:
                param.default = default  # for the help only: the process exits after printing it
        return super().format_help(ctx, formatter)


def _command_for(options: str) -> type[Command]:
    return type(f"{options}Command", (Command,), {"options": options})


class Group(TyperGroup):
    """The `bgmgen` group: a command's failure becomes one line and its exit code, here rather than in main()
    so that typer sees the exit code and Ctrl-C keeps its message."""

    def invoke(self, ctx):
        try:
            code = super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # --help, usage errors: main()
            raise
        except (KeyboardInterrupt, Exception) as err:  # noqa: BLE001 - every failure is one line
            raise typer.Exit(report_failure(err, debug=bool(ctx.meta.get(_DEBUG)))) from None
        if isinstance(code, int) and not isinstance(code, bool) and code:
            raise typer.Exit(code)
        return code


def report_failure(err: BaseException, debug: bool) -> int:
    """Print `err` on one line (and its traceback with --debug); its exit code."""
    if isinstance(err, BrokenPipeError):
        return 1
    if debug:
        traceback.print_exception(err)
    if isinstance(err, KeyboardInterrupt):
        print("bgmgen: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(err, BgmgenError):
        print(f"bgmgen: error: {one_line(err)}", file=sys.stderr)
        return int(err.exit_code)
    if isinstance(err, ImportError):
        name = err.name or ""
        msg = (f"this build of bgmgen lacks {name} ({one_line(err)}); reinstall the project"
               if name.startswith("bgmgen") else
               f"a Python package is missing: {one_line(err)}; run scripts/bootstrap or pip install -e .")
        print(f"bgmgen: error: {msg}", file=sys.stderr)
        return EXIT_MISSING_PACKAGE
    if not debug:  # a bug: still one line unless --debug
        print(f"bgmgen: error: internal error: {type(err).__name__}: {one_line(err)} "
              "(run again with --debug for the traceback)", file=sys.stderr)
    return 1


# -- the app and the options several commands share ----------------------------------------------

app = typer.Typer(
    name="bgmgen", cls=Group, invoke_without_command=True, pretty_exceptions_enable=False,
    help="Original piano background music for a video (a CPU-friendly Diff-BGM).",
    epilog="Run `bgmgen COMMAND --help` for the options of one command.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _note_debug(ctx: typer.Context, value: bool) -> bool:
    ctx.meta[_DEBUG] = ctx.meta.get(_DEBUG) or value
    return value


def _print_version(value: bool) -> None:
    if value:
        print(f"bgmgen {__version__}")
        raise typer.Exit()


Debug = Annotated[bool, typer.Option("--debug", callback=_note_debug,
                                     help="show the full traceback when something fails")]
Quiet = Annotated[bool, typer.Option("--quiet", help="print nothing but errors (for scripts)")]
TorchDevice = Annotated[Device | None, typer.Option(help="torch device")]
Seed = Annotated[int | None, typer.Option(metavar="SEED", parser=seed_number, help="random seed of the music model")]
Guidance = Annotated[float | None, typer.Option(metavar="G", parser=guidance_scale,
                                                help="classifier-free guidance scale (default: the model's)")]
GuideGroups = Annotated[str | None, typer.Option(
    metavar="GROUPS", parser=control_groups,
    help="control groups the guidance amplifies, comma-separated from rhythm, harmony, key, structure "
         "(default: the sampler's)")]
Order = Annotated[str | None, choice_option(
    "ORDERS", metavar="ORDER", help="v3 models: unmasking order, one of {ORDERS} (default: the sampler's)")]
Temperature = Annotated[float | None, typer.Option(
    metavar="T", parser=temperature_value,
    help="v3 models: softmax temperature of the draws (default: the sampler's)")]
PopData = Annotated[str, typer.Option("--data", metavar="DIR", help="POP909 folder")]
PopStructure = Annotated[str, typer.Option("--structure", metavar="DIR", help="POP909 structure labels folder")]

_SCORE, _DOCTOR, _UI = ScoreOptions(), DoctorOptions(), UiOptions()


@app.callback()
def _bgmgen(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")] = False,
    debug: Debug = False,
) -> None:
    if ctx.invoked_subcommand is None:  # `bgmgen` alone: the help, on stderr, exit 2
        with contextlib.redirect_stdout(sys.stderr):
            ctx.get_help()
        raise typer.Exit(EXIT_USAGE)


# -- score -----------------------------------------------------------------------------------------

@app.command(cls=Command, short_help="write piano music for videos and mux it in")
def score(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT", help="video files and/or folders of videos")],
    out: Annotated[str | None, _path("output folder (default: X.bgm/ beside each input)", "DIR", True)] = _SCORE.out,
    seed: Seed = _SCORE.seed,
    mix: Annotated[str | None, choice_option(
        "MIX_MODES", metavar="MODE",
        help="one of {MIX_MODES}: replace the original sound, keep it under the music, or duck the music while "
             "the original has sound (default: replace when the input has no audible sound, duck otherwise)")
    ] = _SCORE.mix,
    tempo: Annotated[float | None, typer.Option(
        metavar="BPM", parser=bpm, help="force the tempo (default: fitted to the video length and its cuts)")
    ] = _SCORE.tempo,
    mood: Annotated[str | None, choice_option(
        "MOODS", fold_case=True, metavar="NAME", help="force the mood, one of {MOODS} (default: from the picture)")
    ] = _SCORE.mood,
    device: TorchDevice = _SCORE.device,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="do not read or write the analysis cache")
                        ] = not _SCORE.use_cache,
    cache_dir: Annotated[str | None, _path("analysis cache folder (default: user cache)", "DIR", True)
                         ] = _SCORE.cache_dir,
    force: Annotated[bool, typer.Option("--force", help="score again even when outputs are up to date")] = _SCORE.force,
    clip_weights: Annotated[str | None, _path("open_clip ViT-B-32 weights file", absolute=True)] = _SCORE.clip_weights,
    blip_weights: Annotated[str | None, _path("BLIP captioning model folder", absolute=True)] = _SCORE.blip_weights,
    require_semantic: Annotated[bool, typer.Option(
        "--require-semantic", help="fail instead of falling back when CLIP or BLIP weights are missing")
    ] = _SCORE.require_semantic,
    model: Annotated[str | None, _path("music model (default: the one in models/)", absolute=True)] = _SCORE.model,
    steps: Annotated[int | None, _count("diffusion sampling steps (default: the model's)")] = _SCORE.steps,
    guidance: Guidance = _SCORE.guidance,
    guide_groups: GuideGroups = None,
    loose_groove: Annotated[bool, typer.Option(
        "--loose-groove", help="let the music place onsets off the plan's groove (default: the groove is imposed)")
    ] = _SCORE.loose_groove,
    order: Order = _SCORE.order,
    temperature: Temperature = _SCORE.temperature,
    soundfont: Annotated[str | None, _path("SoundFont (.sf2/.sf3) used to render", absolute=True)] = _SCORE.soundfont,
    ray: Annotated[str | None, typer.Option(
        metavar="ADDRESS", parser=ray_address,
        help="score on Ray workers: local (start Ray on this machine), auto or ray://HOST:PORT (join a running "
             "cluster; inputs and outputs on storage every node sees); needs pip install 'bgmgen\\[ray]'")
    ] = _SCORE.ray,
    quiet: Quiet = _SCORE.quiet,
    debug: Debug = _SCORE.debug,
) -> int:
    """Score videos: for each video X write X.mid, X.wav, X.mp4, run.json and report.png into DIR/X/ (with
    --out) or X.bgm/ beside the input."""
    options = ScoreOptions(
        out=out, seed=seed, mix=mix, tempo=tempo, mood=mood, device=device, use_cache=not no_cache,
        cache_dir=cache_dir, force=force, quiet=quiet, debug=bool(ctx.meta.get(_DEBUG)), clip_weights=clip_weights,
        blip_weights=blip_weights, require_semantic=require_semantic, model=model, steps=steps, guidance=guidance,
        guide_groups=tuple(guide_groups.split(",")) if guide_groups else None,
        loose_groove=loose_groove, order=order, temperature=temperature, soundfont=soundfont, ray=ray)
    if not ray:
        from bgmgen.core.threads import import_in_background

        # torch takes ~2 s to import here, and the shot detector that needs it waits for it while the video
        # decodes: begin it early, in a background thread beside the checks of the inputs and the probe (a
        # run with nothing to score only spends that CPU there).
        begin_torch = functools.partial(import_in_background, "torch")
        if inputs and os.path.isfile(inputs[0]):
            from bgmgen.app.outputs import video_path
            from bgmgen.video.scan_ahead import begin_scan

            # The first video's all-frames decode, while the program imports: the decode runs in C, on the
            # core the imports leave idle (they share one GIL). torch's import begins once the scan has its
            # own few imports (numpy, decord): loading torch's libraries holds the GIL for about 0.3 s at a
            # time, and the decode's imports queued behind it began to decode 0.6 s after the scan did.
            begin_scan(video_path(inputs[0]), then=begin_torch)
        else:
            begin_torch()
    from bgmgen.app.batch import score_many
    from bgmgen.app.console import make_console

    _terminate_cleanly()
    return score_many(inputs, options, make_console(quiet=quiet), command=["bgmgen", *sys.argv[1:]])


# -- train -----------------------------------------------------------------------------------------

@app.command(cls=_command_for("TrainOptions"), short_help="train the music model on POP909")
def train(
    data: PopData,
    structure: PopStructure,
    out: Annotated[str | None, _path("checkpoints and logs", "DIR")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint in --out")] = False,
    device: TorchDevice = None,
    steps: Annotated[int | None, _count("optimiser steps")] = None,
    batch_size: Annotated[int | None, _count("windows per step")] = None,
    seed: Seed = None,
    variant: Annotated[str | None, choice_option(
        "VARIANTS", metavar="NAME", help="one of {VARIANTS}: the full model or an ablation (no segment mask / no "
                                         "feature selector / Diff-BGM's hard selector)")] = None,
    controls_layout: Annotated[int | None, choice_option(
        "LAYOUTS", kind=int, metavar="N",
        help="controls layout of a new model, one of {LAYOUTS}: 2 has the groove, 1 is v1's")] = None,
    stop_after: Annotated[int | None, _count(
        "stop at step N while the lr schedule still spans --steps (equal-budget comparisons)")] = None,
    init_from: Annotated[str | None, _path(
        "start from this model file (new control columns start at zero); fresh optimiser")] = None,
    lr: Annotated[float | None, typer.Option(metavar="LR", parser=learning_rate, help="peak learning rate")] = None,
    warmup: Annotated[int | None, _count("warm-up steps")] = None,
    architecture: Annotated[str | None, choice_option(
        "ARCHITECTURES", metavar="NAME",
        help="one of {ARCHITECTURES}: melody-accompaniment (v3: masked diffusion over melody tokens and "
             "accompaniment states) or roll (v1/v2: Gaussian diffusion over the merged roll)")] = None,
    n_layers: Annotated[int | None, _count("transformer blocks")] = None,
    d_model: Annotated[int | None, _count("width")] = None,
    time_kernel: Annotated[int | None, typer.Option(
        metavar="N", parser=kernel_steps,
        help="v3: steps seen by the accompaniment skip convolution (0: none, as in v3a)")] = None,
    dropout: Annotated[float | None, typer.Option(
        metavar="P", parser=dropout_rate, help="residual dropout in the transformer blocks while training")] = None,
    local_kernel: Annotated[int | None, typer.Option(
        metavar="N", parser=kernel_steps,
        help="v3: steps seen by the local refinement heads (0: none, as up to v3c)")] = None,
    local_channels: Annotated[int | None, _count("v3: hidden channels of the accompaniment's local head "
                                                 "(the melody's: 4x)")] = None,
    bar_kernel: Annotated[int | None, typer.Option(
        metavar="N", parser=kernel_bars,
        help="v3: bars seen by the accompaniment's bar head, odd (0: none, as up to v3g)")] = None,
    train_only: Annotated[str | None, typer.Option(
        metavar="PREFIXES", help="train only parameters whose names start with one of these (comma list), "
                                 "e.g. acc_local,mel_local; the rest stays frozen")] = None,
    bf16: Annotated[bool | None, typer.Option(
        "--bf16", help="bf16 autocast (fast on CPUs with AVX-512 BF16; check lscpu)")] = None,
    threads: Annotated[int | None, _count("torch threads (default: torch's choice)")] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> int:
    """Train the diffusion music model on POP909 (CPU or GPU)."""
    _require_dirs(data, structure)
    if init_from and not os.path.isfile(init_from):
        raise InputError(f"{init_from}: --init-from model file not found; give a .safetensors model")
    from bgmgen.data.pop909 import check_dataset_dirs
    from bgmgen.training.train import TrainOptions
    from bgmgen.training.train import train as train_model

    check_dataset_dirs(data, structure)
    path = train_model(TrainOptions(**_given(
        data=data, structure=structure, out=out, resume=resume, device=device, steps=steps, batch_size=batch_size,
        seed=seed, variant=variant, controls_layout=controls_layout, stop_after=stop_after, init_from=init_from,
        lr=lr, warmup=warmup, architecture=architecture, n_layers=n_layers, d_model=d_model,
        time_kernel=time_kernel, dropout=dropout, local_kernel=local_kernel, local_channels=local_channels,
        bar_kernel=bar_kernel, train_only=train_only, bf16=bf16, threads=threads, quiet=quiet)))
    print(f"model written to {path}")
    return 0


# -- sample ----------------------------------------------------------------------------------------

@app.command(cls=_command_for("SampleOptions"), short_help="generate whole POP909 songs from their own controls")
def sample(
    data: PopData,
    structure: PopStructure,
    out: Annotated[str, _path("folder of the <id>.mid files", "DIR")],
    songs: Annotated[str | None, typer.Option(metavar="SONGS", help="'test' or song ids such as 001,002")] = None,
    seed: Seed = None,
    model: Annotated[str | None, _path("music model (default: the one in models/)")] = None,
    steps: Annotated[int | None, _count("diffusion sampling steps")] = None,
    guidance: Guidance = None,
    guide_groups: GuideGroups = None,
    loose_groove: Annotated[bool | None, typer.Option(
        "--loose-groove", help="the song's groove only conditions the model (its own rhythm); default: imposed")
    ] = None,
    order: Order = None,
    temperature: Temperature = None,
    max_bars: Annotated[int | None, _count("generate only the first N bars of each song (quick checks)")] = None,
    device: TorchDevice = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> int:
    """For each POP909 song, write DIR/<id>.mid generated from that song's controls at its own tempo (the
    evaluation path)."""
    _require_dirs(data, structure)
    from bgmgen.training.sample import SampleOptions, sample_songs

    groups = tuple(guide_groups.split(",")) if guide_groups else None
    options = SampleOptions(**_given(data=data, structure=structure, songs=songs, out=out, seed=seed, model=model,
                                     steps=steps, guidance=guidance, guide_groups=groups, loose_groove=loose_groove,
                                     device=device, order=order, temperature=temperature, max_bars=max_bars))
    sample_songs(options, **({"log": lambda *args, **kwargs: None} if quiet else {}))
    return 0


# -- eval ------------------------------------------------------------------------------------------

@app.command("eval", cls=_command_for("run_eval"),
             short_help="music metrics against POP909, or checks of scored videos")
def eval_(
    generated: Annotated[str | None, typer.Argument(metavar="GENERATED_DIR", help="folder of <id>.mid files")] = None,
    data: Annotated[str | None, _path("POP909 folder", "DIR")] = None,
    structure: Annotated[str | None, _path(
        "POP909 structure labels folder (downbeats, chords, phrases); recommended", "DIR")] = None,
    songs: Annotated[str | None, typer.Option(metavar="SONGS", help="test, valid, train or ids like 001,002")] = None,
    json: Annotated[str | None, _path("write per-song values and a summary as JSON", "FILE")] = None,
    videos: Annotated[str | None, _path("folder of `bgmgen score` outputs", "DIR")] = None,
    energy_ranking: Annotated[str | None, _path(
        "with --videos: a person's calm-to-energetic ranking of the clips (JSON, e.g. "
        "docs/eval/testvideos-energy.json): its rank correlation with onsets/s and tempo", "FILE")] = None,
    align: Annotated[str | None, choice_option(
        "ALIGNS", metavar="HOW", help="one of {ALIGNS}: how beat 0 of a reference song is found")] = None,
    offset_beats: Annotated[float | None, typer.Option(
        metavar="BEATS", parser=beat_offset, help="shift generated notes by this many beats before comparing")
    ] = None,
    reference_only: Annotated[bool, typer.Option(
        "--reference-only", help="only the ground-truth row (no GENERATED_DIR needed)")] = False,
    realism: Annotated[bool, typer.Option(
        "--realism", help="also the texture realism test: generated 8-bar windows against real POP909 songs "
                          "(per-feature overlap and a classifier two-sample test)")] = False,
    real_songs: Annotated[str | None, typer.Option(
        metavar="SPEC", help="real side of --realism: valid or song ids such as 001,002 (default: validation "
                             "songs not among --songs)")] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> int:
    """`bgmgen eval GENERATED_DIR --data DIR` compares generated <id>.mid files with the POP909 songs;
    `bgmgen eval --videos DIR` checks `bgmgen score` outputs."""
    from rich.console import Console  # run_eval and run_video_eval print with rich

    console = Console(quiet=True) if quiet else None
    if videos:
        if generated or data:
            raise InputError("eval: give either --videos DIR or GENERATED_DIR --data DIR, not both")
        _require_dirs(videos)
        from bgmgen.eval.videos import run_video_eval

        if energy_ranking and not os.path.isfile(energy_ranking):
            raise InputError(f"{energy_ranking}: no such file (--energy-ranking)")
        run_video_eval(videos, json_path=json, console=console, energy_ranking=energy_ranking)
        return 0
    if energy_ranking:
        raise InputError("eval: --energy-ranking goes with --videos DIR")
    if not data or not (generated or reference_only):
        raise InputError("eval: give GENERATED_DIR and --data POP909_DIR (or --videos DIR); see `bgmgen eval --help`")
    _require_dirs(*([generated] if generated else []), data, *([structure] if structure else []))
    from bgmgen.eval.evaluate import run_eval

    run_eval(generated, data, json_path=json, structure_dir=structure, console=console, reference_only=reference_only,
             realism=realism, real_songs=real_songs, **_given(songs=songs, align=align, offset_beats=offset_beats))
    return 0


# -- doctor ----------------------------------------------------------------------------------------

@app.command(cls=Command, short_help="check ffmpeg, FluidSynth, the SoundFont and every model")
def doctor(
    clip_weights: Annotated[str | None, _path("open_clip ViT-B-32 weights file")] = _DOCTOR.clip_weights,
    blip_weights: Annotated[str | None, _path("BLIP captioning model folder")] = _DOCTOR.blip_weights,
    model: Annotated[str | None, _path("music model")] = _DOCTOR.model,
    soundfont: Annotated[str | None, _path("SoundFont (.sf2/.sf3)")] = _DOCTOR.soundfont,
    cache_dir: Annotated[str | None, _path("analysis cache folder", "DIR")] = _DOCTOR.cache_dir,
    device: TorchDevice = _DOCTOR.device,
    debug: Debug = False,
) -> int:
    """Check what the default offline path needs and where each model's weights would come from."""
    from bgmgen.app.doctor import run_doctor

    return run_doctor(DoctorOptions(clip_weights=clip_weights, blip_weights=blip_weights, model=model,
                                    soundfont=soundfont, cache_dir=cache_dir, device=device))


# -- ui --------------------------------------------------------------------------------------------

@app.command(cls=Command, short_help="a web page on this computer: drop a video, watch it scored, try another take")
def ui(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(
        metavar="HOST", help="address to listen on (0.0.0.0 opens the page to your network)")] = _UI.host,
    port: Annotated[int | None, typer.Option(
        metavar="PORT", parser=port_number, help="port (default: 7860, or the next free one)")] = _UI.port,
    share: Annotated[bool, typer.Option(
        "--share", help="also make a public link through Gradio's share servers (uses the internet)")] = _UI.share,
    max_upload_mb: Annotated[int, _count("refuse uploads larger than N MB")] = _UI.max_upload_mb,
    workdir: Annotated[str | None, _path(
        "working folder for uploads and takes (default: bgmgen/ui in the user cache)", "DIR", True)] = _UI.workdir,
    debug: Debug = _UI.debug,
) -> int:
    """Start the scoring page (Gradio, the optional extra bgmgen\\[ui]) on this computer and print its address;
    it runs offline and until Ctrl-C."""
    from bgmgen.ui.page import serve

    _terminate_cleanly()
    return serve(UiOptions(host=host, port=port, share=share, max_upload_mb=max_upload_mb, workdir=workdir,
                           debug=bool(ctx.meta.get(_DEBUG))))


def _terminate_cleanly() -> None:
    """SIGTERM unwinds like Ctrl-C (partial output folders are removed), exit code 143."""
    import signal

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    with contextlib.suppress(ValueError, OSError):  # not the main thread
        signal.signal(signal.SIGTERM, on_term)


def _require_dirs(*paths: str) -> None:
    for path in paths:
        if not os.path.isdir(path):
            what = "does not exist" if not os.path.exists(path) else "is not a folder"
            raise InputError(f"{path}: {what}; give an existing folder")


def _given(**values) -> dict:
    """The options given on the command line (None: left to the dataclass's default)."""
    return {k: v for k, v in values.items() if v is not None}


def _usage_error(err: typer.TyperException) -> int:
    """A usage error on one line, with where to look (a parser's ValueError comes as 'Value error, ...')."""
    text = one_line(err.format_message()).replace("Value error, ", "").rstrip(".")
    # getattr: typer's click exceptions carry the context only from UsageError down (not FileError ...).
    ctx = getattr(err, "ctx", None)
    if ctx is not None:
        text += f" (see `{ctx.command_path} --help`)"
    print(f"bgmgen: error: {text}", file=sys.stderr)
    return int(err.exit_code)


def main(argv: list[str] | None = None) -> int:
    """Run `bgmgen ARGV...` (default: sys.argv[1:]) and return its exit code. The process goes on
    (tests, the web page); the console script is `console_script`."""
    args = sys.argv[1:] if argv is None else list(argv)
    if next((a for a in args if not a.startswith("-")), None) in SCORING_COMMANDS:
        from bgmgen.core.threads import SCORING_ENV

        for name, value in SCORING_ENV.items():  # before anything imports numpy or torch (an option's check may)
            os.environ.setdefault(name, value)
    return _run(args)


def console_script() -> int:
    """The `bgmgen` console script and `python -m bgmgen`: main(), after which the process exits.

    The interpreter's exit first joins threads and runs every exit handler (files, temporary folders,
    logging, Ray), then tears down what is left: the destructors of the native libraries (torch's
    operator registry, oneDNN's kernel cache, the CUDA runtime's statics, their code paged in from
    disk for the purpose) and of every Python object. That takes 0.23-0.26 s on one core after a 60 s
    clip's score (2026-12-08) and writes nothing. So the first exit handler registered, which runs
    last, flushes the standard streams and ends the process with main()'s exit code (_end_at_once).
    Only when it is the first: a handler registered before it (a wrapper that runs this module, a
    profiler) runs after it, so then the process exits as usual."""
    import atexit

    # CPython's count of the handlers registered so far (not public; without it, exit as usual).
    if getattr(atexit, "_ncallbacks", lambda: 1)() == 0:
        atexit.register(_end_at_once)
    code = main()
    _before_exit(code)
    return code


_exit_code: list[int] = []  # main()'s exit code once console_script has it


def _before_exit(code: int) -> None:
    """The command is done and the process exits next. Every object alive now lives until then, so
    move them out of the cyclic collector's reach (gc.freeze): when the teardown does run (see
    _end_at_once), its collections then skip torch's and matplotlib's objects. Measured from the last
    exit handler to the process's end (2026-12-07): a 60 s clip's score 0.40-0.41 s -> 0.25-0.34 s."""
    import gc

    gc.freeze()
    _exit_code.append(code)


def _end_at_once() -> None:
    """The last exit handler: flush Python's and C's standard streams and end the process with
    main()'s exit code, skipping the native teardown (console_script). Not under a tracer or profiler
    (coverage, cProfile): those save their data in exit handlers registered before this one, which
    run after it."""
    monitoring = getattr(sys, "monitoring", None)  # Python 3.12+: coverage may watch through it instead
    if not _exit_code or sys.gettrace() is not None or sys.getprofile() is not None \
            or (monitoring is not None and any(monitoring.get_tool(i) for i in range(6))):
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more can be said
            stream.flush()
    with contextlib.suppress(Exception):  # C libraries' buffered output (no libc by this name: skip)
        import ctypes

        ctypes.CDLL(None).fflush(None)
    os._exit(_exit_code[-1])


def _run(args: list[str]) -> int:
    try:
        result = typer.main.get_command(app).main(args=args, prog_name="bgmgen", standalone_mode=False)
    except typer.TyperException as err:  # usage errors: exit 2
        return _usage_error(err)
    except SystemExit as exc:  # shell completion, a closed pipe, SIGTERM
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (KeyboardInterrupt, Exception) as err:  # noqa: BLE001 - while parsing (commands report theirs)
        return report_failure(err, debug="--debug" in args)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(console_script())
