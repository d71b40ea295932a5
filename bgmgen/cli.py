"""The `bgmgen` command line: argument parsing and error reporting, nothing heavy.

Every heavy package (torch, decord, transformers, open_clip, matplotlib, pretty_midi, fluidsynth,
even rich) is imported inside the command functions, after the arguments were parsed, so that
`bgmgen --help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from bgmgen import __version__
from bgmgen.core.constants import MAX_BPM, MIN_BPM  # plain numbers: importing them costs nothing
from bgmgen.core.errors import BgmgenError, InputError

MIX_MODES = ("replace", "keep", "duck")
TRAIN_VARIANTS = ("full", "no-mask", "no-selector")
DEVICES = ("cpu", "cuda")

EXIT_INTERRUPTED = 130


def _number(kind: type, lo: float, hi: float | None, what: str):
    """An argparse type: `kind` (int or float) within lo..hi (hi None: no upper bound), named `what`
    in the error message."""
    noun = "a whole number" if kind is int else "a number"
    fmt = (lambda v: str(int(v))) if kind is int else (lambda v: f"{v:g}")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun} ({what}), got {text!r}") from None
        if not (lo <= value and (hi is None or value <= hi)):
            bounds = f"at least {fmt(lo)}" if hi is None else f"between {fmt(lo)} and {fmt(hi)}"
            raise argparse.ArgumentTypeError(f"{what} must be {bounds}, got {fmt(value)}")
        return value

    parse.__name__ = what  # argparse names the type in its own messages
    return parse


_bpm = _number(float, MIN_BPM, MAX_BPM, "the tempo in BPM")
_positive_int = _number(int, 1, None, "a count")
_seed = _number(int, 0, 2**32 - 1, "the seed")
_guidance = _number(float, 0.0, 20.0, "the guidance scale")
_learning_rate = _number(float, 1e-7, 1.0, "the learning rate")


def _mood(text: str) -> str:
    from bgmgen.video.moods import MOODS

    name = text.strip().lower()
    if name not in MOODS:
        raise argparse.ArgumentTypeError(
            f"unknown mood {text!r}; choose one of {', '.join(MOODS)}")
    return name


def _common(p: argparse.ArgumentParser, *, quiet: bool = True) -> None:
    # SUPPRESS so that a --debug given before the subcommand is not reset by the subparser.
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback when something fails")
    if quiet:
        p.add_argument("--quiet", action="store_true", default=False,
                       help="print nothing but errors (for scripts)")


def build_parser() -> argparse.ArgumentParser:
    from bgmgen.video.moods import MOODS

    parser = argparse.ArgumentParser(
        prog="bgmgen",
        description="Original piano background music for a video (a CPU-friendly Diff-BGM).",
        epilog="Run `bgmgen COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"bgmgen {__version__}")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show the full traceback when something fails")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # -- score ---------------------------------------------------------------------------------
    p = sub.add_parser(
        "score", help="write piano music for videos and mux it in",
        description="Score videos: for each video X write X.mid, X.wav, X.mp4, run.json and "
                    "report.png into DIR/X/ (with --out) or X.bgm/ beside the input.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files and/or folders of videos")
    p.add_argument("--out", metavar="DIR", help="output folder (default: X.bgm/ beside each input)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed of the music model (default 0)")
    p.add_argument("--mix", choices=MIX_MODES, default=None,
                   help="replace the original sound, keep it under the music, or duck the music "
                        "while the original has sound (default: replace when the input has no "
                        "audible sound, duck otherwise)")
    p.add_argument("--tempo", type=_bpm, default=None, metavar="BPM",
                   help="force the tempo (default: fitted to the video length and its cuts)")
    p.add_argument("--mood", type=_mood, default=None, metavar="NAME",
                   help=f"force the mood, one of {', '.join(MOODS)} (default: from the picture)")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="torch device (default cpu)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the analysis cache")
    p.add_argument("--cache-dir", metavar="DIR", help="analysis cache folder (default: user cache)")
    p.add_argument("--force", action="store_true", help="score again even when outputs are up to date")
    p.add_argument("--clip-weights", metavar="PATH", help="open_clip ViT-B-32 weights file")
    p.add_argument("--blip-weights", metavar="PATH", help="BLIP captioning model folder")
    p.add_argument("--require-semantic", action="store_true",
                   help="fail instead of falling back when CLIP or BLIP weights are missing")
    p.add_argument("--model", metavar="PATH", help="music model (default: the one in models/)")
    p.add_argument("--steps", type=_positive_int, default=None, metavar="N",
                   help="diffusion sampling steps (default: the model's)")
    p.add_argument("--guidance", type=_guidance, default=None, metavar="G",
                   help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--loose-groove", action="store_true",
                   help="let the music place onsets off the plan's groove (default: the groove is imposed)")
    p.add_argument("--soundfont", metavar="PATH", help="SoundFont (.sf2/.sf3) used to render")
    _common(p)
    p.set_defaults(func=cmd_score)

    # -- train ---------------------------------------------------------------------------------
    p = sub.add_parser("train", help="train the music model on POP909",
                       description="Train the diffusion music model on POP909 (CPU or GPU).")
    p.add_argument("--data", required=True, metavar="DIR", help="POP909 folder")
    p.add_argument("--structure", required=True, metavar="DIR", help="POP909 structure labels folder")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="checkpoints and logs (default: the trainer's, runs/full)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.add_argument("--steps", type=_positive_int, default=None, metavar="N",
                   help="optimiser steps (default: the trainer's)")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--variant", choices=TRAIN_VARIANTS, default="full",
                   help="full model or an ablation (no segment mask / no feature selector)")
    p.add_argument("--controls-layout", type=int, choices=(1, 2), default=None,
                   help="controls layout of a new model: 2 (default) has the groove, 1 is v1's")
    p.add_argument("--stop-after", type=_positive_int, default=None, metavar="N",
                   help="stop at step N while the lr schedule still spans --steps (equal-budget comparisons)")
    p.add_argument("--init-from", metavar="PATH",
                   help="start from this model file (new control columns start at zero); fresh optimiser")
    p.add_argument("--lr", type=_learning_rate, default=None, metavar="LR", help="peak learning rate (default 5e-4)")
    p.add_argument("--warmup", type=_positive_int, default=None, metavar="N", help="warm-up steps (default 300)")
    p.add_argument("--architecture", choices=("melody-accompaniment", "roll"), default=None,
                   help="melody-accompaniment (v3, default: masked diffusion over melody tokens and "
                        "accompaniment states) or roll (v1/v2: Gaussian diffusion over the merged roll)")
    p.add_argument("--n-layers", type=_positive_int, default=None, metavar="N", help="transformer blocks (default 6)")
    p.add_argument("--d-model", type=_positive_int, default=None, metavar="N", help="width (default 256)")
    p.add_argument("--bf16", action="store_true", default=None,
                   help="bf16 autocast (fast on CPUs with AVX-512 BF16; check lscpu)")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N", help="torch threads")
    _common(p)
    p.set_defaults(func=cmd_train)

    # -- sample --------------------------------------------------------------------------------
    p = sub.add_parser("sample", help="generate whole POP909 songs from their own controls",
                       description="For each POP909 song, write DIR/<id>.mid generated from that "
                                   "song's controls at its own tempo (the evaluation path).")
    p.add_argument("--data", required=True, metavar="DIR", help="POP909 folder")
    p.add_argument("--structure", required=True, metavar="DIR", help="POP909 structure labels folder")
    p.add_argument("--songs", default="test", help="'test' or song ids such as 001,002 (default test)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--model", metavar="PATH", help="music model (default: the one in models/)")
    p.add_argument("--steps", type=_positive_int, default=None, metavar="N")
    p.add_argument("--guidance", type=_guidance, default=None, metavar="G")
    p.add_argument("--loose-groove", action="store_true",
                   help="the song's groove only conditions the model (its own rhythm); default: imposed")
    p.add_argument("--device", choices=DEVICES, default="cpu")
    _common(p)
    p.set_defaults(func=cmd_sample)

    # -- eval ----------------------------------------------------------------------------------
    p = sub.add_parser(
        "eval", help="music metrics against POP909, or checks of scored videos",
        description="`bgmgen eval GENERATED_DIR --data DIR` compares generated <id>.mid files with "
                    "the POP909 songs; `bgmgen eval --videos DIR` checks `bgmgen score` outputs.")
    p.add_argument("generated", nargs="?", metavar="GENERATED_DIR", help="folder of <id>.mid files")
    p.add_argument("--data", metavar="DIR", help="POP909 folder")
    p.add_argument("--structure", metavar="DIR", help="POP909 structure labels folder")
    p.add_argument("--songs", default="test", help="'test' or song ids such as 001,002 (default test)")
    p.add_argument("--json", metavar="FILE", help="write per-song values and a summary as JSON")
    p.add_argument("--videos", metavar="DIR", help="folder of `bgmgen score` outputs")
    _common(p)
    p.set_defaults(func=cmd_eval)

    # -- doctor --------------------------------------------------------------------------------
    p = sub.add_parser("doctor", help="check ffmpeg, FluidSynth, the SoundFont and every model",
                       description="Check what the default offline path needs and where each "
                                   "model's weights would come from.")
    p.add_argument("--clip-weights", metavar="PATH")
    p.add_argument("--blip-weights", metavar="PATH")
    p.add_argument("--model", metavar="PATH")
    p.add_argument("--soundfont", metavar="PATH")
    p.add_argument("--cache-dir", metavar="DIR")
    p.add_argument("--device", choices=DEVICES, default="cpu")
    _common(p, quiet=False)
    p.set_defaults(func=cmd_doctor)
    return parser


# -- command functions (heavy imports live here) -----------------------------------------------

def cmd_score(args: argparse.Namespace) -> int:
    from bgmgen.app.batch import score_many
    from bgmgen.app.console import make_console
    from bgmgen.app.options import ScoreOptions

    _terminate_cleanly()
    options = ScoreOptions.from_args(args)
    return score_many(args.inputs, options, make_console(quiet=args.quiet), command=_command_line())


def cmd_train(args: argparse.Namespace) -> int:
    _require_dirs(args.data, args.structure)
    if args.init_from and not os.path.isfile(args.init_from):
        raise InputError(f"{args.init_from}: --init-from model file not found; give a .safetensors model")
    from bgmgen.training.train import run_train

    return _as_exit_code(run_train(args))


def cmd_sample(args: argparse.Namespace) -> int:
    _require_dirs(args.data, args.structure)
    from bgmgen.training.sample import run_sample

    return _as_exit_code(run_sample(args))


def cmd_eval(args: argparse.Namespace) -> int:
    if args.videos:
        if args.generated or args.data:
            raise InputError("eval: give either --videos DIR or GENERATED_DIR --data DIR, not both")
        _require_dirs(args.videos)
        from bgmgen.eval.evaluate import run_video_eval

        run_video_eval(args.videos, json_path=args.json)
        return 0
    if not args.generated or not args.data:
        raise InputError("eval: give GENERATED_DIR and --data POP909_DIR (or --videos DIR); "
                         "see `bgmgen eval --help`")
    _require_dirs(args.generated, args.data, *([args.structure] if args.structure else []))
    from bgmgen.eval.evaluate import run_eval

    run_eval(args.generated, args.data, songs=args.songs, json_path=args.json,
             structure_dir=args.structure)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from bgmgen.app.doctor import run_doctor

    return run_doctor(args)


def _terminate_cleanly() -> None:
    """SIGTERM unwinds like Ctrl-C (partial output folders are removed), exit code 143."""
    import signal

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError):  # not the main thread
        pass


def _require_dirs(*paths: str) -> None:
    for path in paths:
        if not os.path.isdir(path):
            what = "does not exist" if not os.path.exists(path) else "is not a folder"
            raise InputError(f"{path}: {what}; give an existing folder")


def _as_exit_code(result) -> int:
    if result is None:
        return 0
    if isinstance(result, bool):
        return 0 if result else 1
    if isinstance(result, int):
        return result
    return 0


def _command_line() -> list[str]:
    return ["bgmgen", *sys.argv[1:]]


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argument errors (exit 2)
        return int(exc.code or 0)
    debug = bool(getattr(args, "debug", False))
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("bgmgen: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BgmgenError as err:
        if debug:
            traceback.print_exc()
        print(f"bgmgen: error: {_one_line(err)}", file=sys.stderr)
        return int(getattr(err, "exit_code", 1))
    except (ModuleNotFoundError, ImportError) as err:
        if debug:
            traceback.print_exc()
        name = getattr(err, "name", None) or ""
        if name.startswith("bgmgen"):
            msg = f"this build of bgmgen lacks {name} ({_one_line(err)}); reinstall the project"
        else:
            msg = f"a Python package is missing: {_one_line(err)}; run scripts/bootstrap or pip install -e ."
        print(f"bgmgen: error: {msg}", file=sys.stderr)
        return 3
    except BrokenPipeError:
        return 1
    except Exception as err:  # a bug: still one line unless --debug
        if debug:
            traceback.print_exc()
        else:
            print(f"bgmgen: error: internal error: {type(err).__name__}: {_one_line(err)} "
                  "(run again with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
