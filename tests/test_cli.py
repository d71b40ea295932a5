"""The command line (typer) and the batch logic of `bgmgen score`, without running the music stages.

Fast: no model is loaded; commands that would train, sample or evaluate are given stand-in functions.
Subprocess tests run the installed console script (or `python -m bgmgen`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bgmgen
from bgmgen import cli, cli_values
from bgmgen.app import batch, console, provenance
from bgmgen.app.batch import exit_code
from bgmgen.app.options import ScoreOptions
from bgmgen.app.outputs import (
    FAILED,
    REJECTED,
    SCORED,
    UP_TO_DATE,
    Job,
    assign_outputs,
    expand_inputs,
    partial_folder,
    writable_location,
)
from bgmgen.app.provenance import up_to_date
from bgmgen.core import threads
from bgmgen.core.errors import BgmgenError, InputError, MissingDependencyError
from bgmgen.core.files import Sha256Memo
from bgmgen.core.jsonio import dump_json

REPO = Path(__file__).resolve().parent.parent
VENV_BGMGEN = REPO / ".venv" / "bin" / "bgmgen"
HEAVY = ("torch", "numpy", "decord", "transformers", "open_clip", "matplotlib", "pretty_midi",
         "fluidsynth", "rich", "scipy")


def bgmgen_cmd() -> list[str]:
    exe = shutil.which("bgmgen") or (str(VENV_BGMGEN) if VENV_BGMGEN.exists() else None)
    return [exe] if exe else [sys.executable, "-m", "bgmgen"]


def run(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*bgmgen_cmd(), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def assert_one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("bgmgen: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- the old parser's flags, all kept ------------------------------------------------------------

# Every flag `bgmgen` had with argparse (cli.py and evaluate.py's own eval parser), per command.
OLD_FLAGS = {
    None: {"--version", "--debug", "--help", "-h"},
    "score": {"--out", "--seed", "--mix", "--tempo", "--mood", "--device", "--no-cache", "--cache-dir",
              "--force", "--clip-weights", "--blip-weights", "--require-semantic", "--model", "--steps",
              "--guidance", "--loose-groove", "--soundfont", "--debug", "--quiet", "--help", "-h"},
    "train": {"--data", "--structure", "--out", "--resume", "--device", "--steps", "--batch-size", "--seed",
              "--variant", "--controls-layout", "--stop-after", "--init-from", "--lr", "--warmup",
              "--architecture", "--n-layers", "--d-model", "--bf16", "--threads", "--debug", "--quiet",
              "--help", "-h"},
    "sample": {"--data", "--structure", "--songs", "--out", "--seed", "--model", "--steps", "--guidance",
               "--loose-groove", "--device", "--debug", "--quiet", "--help", "-h"},
    "eval": {"--data", "--structure", "--songs", "--json", "--videos", "--align", "--offset-beats",
             "--reference-only", "--debug", "--quiet", "--help", "-h"},
    "doctor": {"--clip-weights", "--blip-weights", "--model", "--soundfont", "--cache-dir", "--device",
               "--debug", "--help", "-h"},
}


def _click_command():
    import typer

    return typer.main.get_command(cli.app)


def _flags(group, name: str | None = None) -> set[str]:
    import typer

    ctx = typer.Context(group, info_name="bgmgen", **group.context_settings)
    command = group if name is None else group.commands[name]
    if name is not None:
        ctx = typer.Context(command, parent=ctx, info_name=name, **command.context_settings)
    return {opt for p in command.get_params(ctx) for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")}


@pytest.mark.parametrize("name", list(OLD_FLAGS))
def test_every_flag_of_the_old_parser_exists(name):
    missing = OLD_FLAGS[name] - _flags(_click_command(), name)
    assert not missing, f"bgmgen {name or ''}: flags lost: {sorted(missing)}"


def test_the_commands_are_the_old_ones_and_completion_is_offered():
    group = _click_command()
    assert list(group.commands) == ["score", "train", "sample", "eval", "doctor", "ui"]
    assert {"--install-completion", "--show-completion"} <= _flags(group)
    assert {"--realism", "--real-songs"} <= _flags(group, "eval")


# -- speed and imports ---------------------------------------------------------------------------

def _help(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bgmgen", *args, "--help"], capture_output=True, text=True,
                          timeout=60)


# How fast --help is depends on the machine's load, so it is measured by the benchmarks, not here; what
# makes it fast - parsing and help import nothing heavy - is tested below.
def test_help_lists_every_command():
    proc = _help()
    assert proc.returncode == 0, proc.stderr
    for command in ("score", "train", "sample", "eval", "doctor", "ui"):
        assert command in proc.stdout
    assert "--install-completion" in proc.stdout


def test_score_help_lists_its_flags():
    proc = _help("score")
    assert proc.returncode == 0, proc.stderr
    assert "--loose-groove" in proc.stdout and "--order" in proc.stdout


def _heavy_modules_after(code: str) -> str:
    probe = (f"import sys; from bgmgen import cli; {code}; "
             f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


def test_parsing_imports_nothing_heavy():
    # Each command line is parsed in full, then stopped by a bad value of its last flag.
    argvs = [["score", "x.mp4", "--seed", "3", "--mix", "duck", "--mood", "calm", "--tempo", "90",
              "--steps", "0"],
             ["doctor", "--device", "tpu"],
             ["train", "--data", "d", "--structure", "s", "--steps", "100", "--lr", "9"],
             ["sample", "--data", "d", "--structure", "s", "--out", "o", "--seed", "-1"],
             ["eval", "--videos", "v", "--offset-beats", "x"],
             ["ui", "--host", "127.0.0.1", "--max-upload-mb", "10", "--port", "0"]]
    heavy = _heavy_modules_after(f"[cli.main(a) for a in {argvs!r}]")
    assert heavy == "", f"heavy modules imported while parsing: {heavy}"


def test_score_help_imports_no_torch_or_numpy():
    heavy = _heavy_modules_after("cli.main(['score', '--help'])")
    assert not set(heavy.split(",")) - {"rich", ""}, heavy  # rich prints the help


@pytest.mark.parametrize("command", ["score", "train", "sample", "eval", "doctor", "ui"])
def test_every_subcommand_has_help(command, capsys):
    assert cli.main([command, "--help"]) == 0
    assert "Usage: bgmgen " + command in capsys.readouterr().out


def test_python_dash_m_and_version():
    proc = subprocess.run([sys.executable, "-m", "bgmgen", "--version"], capture_output=True, text=True,
                          timeout=60, cwd="/")
    assert proc.returncode == 0 and proc.stdout.strip() == f"bgmgen {bgmgen.__version__}", proc.stderr


def test_shell_completion_script_is_shown():
    # Typer reads the shell from the parent processes unless told to take it as the option's value:
    # without this the test depends on being started from an interactive shell.
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    proc = subprocess.run([sys.executable, "-m", "bgmgen", "--show-completion", "bash"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "_BGMGEN_COMPLETE" in proc.stdout


# -- lists and defaults come from one place ------------------------------------------------------

def test_train_variants_are_the_trainers(monkeypatch, capsys):
    from bgmgen.training.train import VARIANTS

    assert tuple(cli_values.late("VARIANTS")) == tuple(VARIANTS)
    assert "hard-selector" in VARIANTS
    monkeypatch.setenv("COLUMNS", "250")  # rich: one help line per option
    assert cli.main(["train", "--help"]) == 0
    variant_line = next(ln for ln in capsys.readouterr().out.splitlines() if "--variant" in ln)
    assert ", ".join(VARIANTS) in variant_line and "[default: full]" in variant_line
    for name in VARIANTS:
        assert cli_values.one_of("VARIANTS")(name) == name
    with pytest.raises(ValueError, match="not one of"):
        cli_values.one_of("VARIANTS")("half")


@pytest.mark.parametrize("command, flag, default", [
    ("train", "--steps", "TrainOptions.steps"), ("train", "--lr", "TrainOptions.lr"),
    ("train", "--n-layers", "TrainOptions.n_layers"), ("sample", "--songs", "SampleOptions.songs"),
    ("sample", "--steps", "SampleOptions.steps"), ("eval", "--align", "run_eval.align"),
    ("eval", "--songs", "run_eval.songs"), ("score", "--seed", "ScoreOptions.seed"),
])
def test_help_shows_the_defaults_of_the_options_dataclass(command, flag, default, monkeypatch, capsys):
    import inspect

    owner, name = default.split(".")
    value = inspect.signature(ScoreOptions if owner == "ScoreOptions" else cli_values.late(owner)).parameters[name].default
    monkeypatch.setenv("COLUMNS", "250")
    assert cli.main([command, "--help"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if f" {flag} " in ln)
    assert f"[default: {value}]" in line, line


def _capture_train(monkeypatch, tmp_path) -> dict:
    from bgmgen.data import pop909
    from bgmgen.training import train as training

    seen = {}

    def fake_train(options, log=print):
        seen["options"] = options
        return tmp_path / "model.safetensors"

    monkeypatch.setattr(training, "train", fake_train)
    monkeypatch.setattr(pop909, "check_dataset_dirs",
                        lambda data, structure: seen.setdefault("checked", (data, structure)))
    return seen


def test_train_flags_build_train_options_with_the_dataclass_defaults(monkeypatch, tmp_path, capsys):
    from bgmgen.training.train import TrainOptions

    seen = _capture_train(monkeypatch, tmp_path)
    d = str(tmp_path)
    assert cli.main(["train", "--data", d, "--structure", d]) == 0
    assert seen["checked"] == (d, d)                     # the dataset folders are checked first
    assert seen["options"] == TrainOptions(data=d, structure=d)
    assert "model written to" in capsys.readouterr().out
    assert cli.main(["train", "--data", d, "--structure", d, "--variant", "hard-selector", "--steps", "10",
                     "--batch-size", "4", "--seed", "5", "--controls-layout", "1", "--lr", "1e-3",
                     "--warmup", "2", "--architecture", "roll", "--n-layers", "2", "--d-model", "64", "--bf16",
                     "--threads", "1", "--stop-after", "5", "--resume", "--out", "o", "--quiet",
                     "--local-kernel", "9", "--local-channels", "8", "--bar-kernel", "5",
                     "--train-only", "acc_local,mel_local"]) == 0
    assert seen["options"] == TrainOptions(
        data=d, structure=d, variant="hard-selector", steps=10, batch_size=4, seed=5, controls_layout=1, lr=1e-3,
        warmup=2, architecture="roll", n_layers=2, d_model=64, bf16=True, threads=1, stop_after=5, resume=True,
        out="o", quiet=True, local_kernel=9, local_channels=8, bar_kernel=5, train_only="acc_local,mel_local")


def test_sample_flags_build_sample_options(monkeypatch, tmp_path):
    from bgmgen.training import sample as sampling
    from bgmgen.training.sample import SampleOptions

    seen = {}
    monkeypatch.setattr(sampling, "sample_songs", lambda options, log=print: seen.setdefault("options", options))
    d = str(tmp_path)
    assert cli.main(["sample", "--data", d, "--structure", d, "--out", "o", "--songs", "001,002", "--seed", "2",
                     "--steps", "8", "--guidance", "1.5", "--guide-groups", " Rhythm, harmony", "--loose-groove",
                     "--device", "cpu", "--order", "confidence", "--temperature", "0.7"]) == 0
    assert seen["options"] == SampleOptions(data=d, structure=d, out="o", songs="001,002", seed=2, steps=8,
                                            guidance=1.5, guide_groups=("rhythm", "harmony"), loose_groove=True,
                                            device="cpu", order="confidence", temperature=0.7)
    seen.clear()
    assert cli.main(["sample", "--data", d, "--structure", d, "--out", "o"]) == 0
    assert seen["options"] == SampleOptions(data=d, structure=d, out="o")


def test_score_without_flags_gives_the_dataclass_defaults(monkeypatch):
    seen = {}
    monkeypatch.setattr(batch, "score_many", lambda inputs, options, console, command=None:
                        seen.setdefault("options", options) and 0)
    assert cli.main(["score", "a.mp4"]) == 0
    assert seen["options"] == ScoreOptions()


def test_score_begins_decoding_its_first_video_under_the_path_of_its_job(tmp_path, monkeypatch):
    """The scan begun ahead is found by the path the job holds (absolute), however the input was given."""
    from bgmgen.video import scan_ahead

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    begun, scored, imports = [], [], []
    monkeypatch.setattr(scan_ahead, "begin_scan", lambda path, then: begun.append((path, then)))
    monkeypatch.setattr(threads, "import_in_background", lambda *modules: imports.append(modules))
    monkeypatch.setattr(batch, "score_many", lambda inputs, options, console, command=None:
                        scored.append(expand_inputs(inputs)[0].path) and 0)
    assert cli.main(["score", "./in/a.mp4"]) == 0
    assert [path for path, _ in begun] == scored == [tmp_path / "in" / "a.mp4"]
    assert imports == []  # torch's import begins once the scan has its own imports
    begun[0][1]()
    assert imports == [("torch",)]
    begun.clear(), imports.clear()
    assert cli.main(["score", "in/a.mp4", "--ray", "local"]) == 0 and begun == []  # workers decode their own
    assert cli.main(["score", "in"]) == 0 and begun == [] and imports == [("torch",)]  # a folder: torch at once


def test_scoring_commands_set_their_thread_pools_environment_before_any_import(monkeypatch):
    """score and ui (after global options too) set core.threads.SCORING_ENV where it is not set already,
    before parsing (an option's check may import numpy); other commands leave the environment alone.
    Ray's workers are sent the same values."""
    from bgmgen.app.ray_batch import forwarded_env

    for argv, sets in ((["score", "--help"], True), (["--debug", "ui", "--help"], True), (["train", "--help"], False)):
        environ = {k: v for k, v in os.environ.items() if k not in threads.SCORING_ENV}
        environ["GOMP_SPINCOUNT"] = "123"  # the user's own setting stays
        monkeypatch.setattr(os, "environ", environ)
        assert cli.main(argv) == 0
        expected = {**threads.SCORING_ENV, "GOMP_SPINCOUNT": "123"} if sets else {"GOMP_SPINCOUNT": "123"}
        assert {k: environ[k] for k in threads.SCORING_ENV if k in environ} == expected, argv
        assert {k: v for k, v in forwarded_env(environ).items() if k in threads.SCORING_ENV} == expected
    assert threads.SCORING_ENV == {"OPENBLAS_NUM_THREADS": "1", "GOMP_SPINCOUNT": "10000"}


def test_main_leaves_the_process_as_it_was(monkeypatch):
    """main() returns its code and nothing else (tests, the web page): the collector is not frozen and
    the process's exit is not changed (console_script does both)."""
    import atexit
    import gc

    frozen, registered = [], []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(1))
    monkeypatch.setattr(atexit, "register", lambda fn, *a, **k: registered.append(fn))
    monkeypatch.setattr(sys, "argv", ["bgmgen", "score", "--help"])
    assert cli.main() == 0 and cli.main(["--version"]) == 0
    assert frozen == [] and registered == []


CONSOLE_SCRIPT = """
import atexit, sys, pathlib
out = pathlib.Path(sys.argv[1])
if sys.argv[2] == "traced":
    sys.settrace(lambda *args: None)
if sys.argv[2] == "wrapped":  # a handler registered before console_script's runs after it
    atexit.register(lambda: (out / "wrapper").write_text("ran"))
from bgmgen import cli
sys.argv = ["bgmgen", "score", str(out / "missing.mp4")]
code = cli.console_script()
print("after the command")  # buffered: a pipe
atexit.register(lambda: (out / "handler").write_text("ran"))  # after console_script's: runs before it


class Marker:
    def __init__(self, path):
        self.path, self.open = path, open  # other globals may be gone by then

    def __del__(self):
        with self.open(self.path, "w") as f:
            f.write("ran")


import gc
gc.disable()
garbage = [Marker(str(out / "teardown"))]  # a cycle only the teardown's collection frees
garbage.append(garbage)
del garbage
sys.exit(code)
"""


@pytest.mark.parametrize("how", ["plain", "traced", "wrapped"])
def test_the_console_script_ends_after_every_exit_handler_without_the_teardown(tmp_path, how):
    """console_script: the exit code, everything written to the (piped) standard streams and every exit
    handler stay; the teardown after them (native destructors, Python objects) is skipped, unless a
    tracer or profiler watches or a handler was registered before it (coverage, a wrapper: they save in
    exit handlers that would run after console_script's)."""
    proc = subprocess.run([sys.executable, "-c", CONSOLE_SCRIPT, str(tmp_path), how],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("bgmgen: error: ") and "missing.mp4" in proc.stderr
    assert proc.stdout.rstrip().endswith("after the command")
    assert (tmp_path / "handler").read_text() == "ran"
    assert (tmp_path / "wrapper").exists() == (how == "wrapped")
    assert (tmp_path / "teardown").exists() == (how != "plain")


def test_mood_and_options_reach_score_options(monkeypatch):
    seen = {}

    def fake_score_many(inputs, options, console, command=None):
        seen["inputs"], seen["options"] = inputs, options
        return 0

    monkeypatch.setattr(batch, "score_many", fake_score_many)
    rc = cli.main(["score", "a.mp4", "b/", "--seed", "7", "--mix", "duck", "--mood", "Calm",
                   "--tempo", "96", "--no-cache", "--steps", "20", "--guidance", "2.5", "--quiet",
                   "--out", "o", "--debug", "--model", "~/m.safetensors"])
    assert rc == 0
    o = seen["options"]
    assert seen["inputs"] == ["a.mp4", "b/"]
    assert (o.seed, o.mix, o.mood, o.tempo, o.use_cache, o.steps, o.guidance, o.quiet, o.debug) == \
        (7, "duck", "calm", 96.0, False, 20, 2.5, True, True)
    assert o.out == os.path.abspath("o")
    assert o.model == os.path.expanduser("~/m.safetensors")
    # Options that cannot change the outputs do not make them stale.
    fp = o.output_fingerprint()
    assert "out" not in fp and "quiet" not in fp and "force" not in fp and fp["seed"] == 7


def test_score_exit_code_is_score_manys(monkeypatch):
    monkeypatch.setattr(batch, "score_many", lambda *a, **k: 1)
    assert cli.main(["score", "a.mp4"]) == 1


def test_eval_passes_every_option_to_run_eval(monkeypatch, tmp_path):
    from bgmgen.eval import evaluate, videos

    calls = []
    monkeypatch.setattr(evaluate, "run_eval", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(videos, "run_video_eval", lambda *a, **k: calls.append((a, k)))
    gen, data = tmp_path / "gen", tmp_path / "pop909"
    gen.mkdir()
    data.mkdir()
    assert cli.main(["eval", str(gen), "--data", str(data), "--songs", "001", "--json", "e.json", "--realism",
                     "--real-songs", "valid", "--align", "beat_midi", "--offset-beats", "-0.5"]) == 0
    args, kw = calls.pop()
    assert args == (str(gen), str(data))
    assert kw["realism"] is True and kw["real_songs"] == "valid"
    assert (kw["songs"], kw["json_path"], kw["align"], kw["offset_beats"], kw["reference_only"]) == \
        ("001", "e.json", "beat_midi", -0.5, False)
    assert cli.main(["eval", "--data", str(data), "--reference-only"]) == 0
    args, kw = calls.pop()
    assert args == (None, str(data)) and kw["reference_only"] and kw["realism"] is False and kw["real_songs"] is None
    assert cli.main(["eval", "--videos", str(tmp_path), "--json", "v.json"]) == 0
    assert calls.pop() == ((str(tmp_path),), {"json_path": "v.json", "console": None, "energy_ranking": None})
    ranking = tmp_path / "ranking.json"
    ranking.write_text("{}")
    assert cli.main(["eval", "--videos", str(tmp_path), "--energy-ranking", str(ranking)]) == 0
    assert calls.pop()[1]["energy_ranking"] == str(ranking)
    assert cli.main(["eval", "--videos", str(tmp_path), "--energy-ranking", str(tmp_path / "absent.json")]) == 2
    assert cli.main(["eval", "--data", str(data), "--energy-ranking", str(ranking)]) == 2  # only with --videos


def test_doctor_gets_doctor_options(monkeypatch):
    from bgmgen.app import doctor
    from bgmgen.app.options import DoctorOptions

    seen = {}
    monkeypatch.setattr(doctor, "run_doctor", lambda options: seen.setdefault("options", options) and 1)
    assert cli.main(["doctor", "--soundfont", "x.sf2", "--device", "cuda"]) == 1
    assert seen["options"] == DoctorOptions(soundfont="x.sf2", device="cuda")


# -- argument errors -----------------------------------------------------------------------------

def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bgmgen: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("argv, needle", [
    (["score"], "INPUT"),
    (["score", "a.mp4", "--mix", "loud"], "--mix"),
    (["score", "a.mp4", "--mood", "grumpy"], "grumpy"),
    (["score", "a.mp4", "--device", "tpu"], "--device"),
    (["score", "a.mp4", "--no-force"], "--no-force"),
    (["train", "--structure", "s"], "--data"),
    (["train", "--data", "d", "--structure", "s", "--variant", "half"], "hard-selector"),
    (["train", "--data", "d", "--structure", "s", "--controls-layout", "7"], "--controls-layout"),
    (["sample", "--data", "d", "--structure", "s"], "--out"),
    (["eval", "g", "--data", "d", "--align", "bar"], "--align"),
    (["frobnicate"], "frobnicate"),
])
def test_argument_errors_exit_2(argv, needle, capsys):
    assert cli.main(argv) == 2
    assert needle in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv, flag, message", [
    (["score", "a.mp4", "--tempo", "300"], "--tempo", "between"),
    (["score", "a.mp4", "--tempo", "fast"], "--tempo", "expected a number"),
    (["score", "a.mp4", "--seed", "-1"], "--seed", "between 0 and"),
    (["score", "a.mp4", "--seed", "1.5"], "--seed", "expected a whole number"),
    (["score", "a.mp4", "--steps", "0"], "--steps", "at least 1"),
    (["score", "a.mp4", "--guidance", "25"], "--guidance", "between 0 and 20"),
    (["score", "a.mp4", "--guidance", "nan"], "--guidance", "finite"),
    (["train", "--data", "d", "--structure", "s", "--lr", "2"], "--lr", "the learning rate"),
    (["train", "--data", "d", "--structure", "s", "--lr", "0"], "--lr", "the learning rate"),
    (["train", "--data", "d", "--structure", "s", "--batch-size", "-4"], "--batch-size", "at least 1"),
    (["train", "--data", "d", "--structure", "s", "--warmup", "many"], "--warmup", "expected a whole number"),
    (["train", "--data", "d", "--structure", "s", "--threads", "0"], "--threads", "at least 1"),
    (["train", "--data", "d", "--structure", "s", "--seed", "4294967296"], "--seed", "between"),
    (["sample", "--data", "d", "--structure", "s", "--out", "o", "--steps", "0"], "--steps", "at least 1"),
    (["eval", "g", "--data", "d", "--offset-beats", "one"], "--offset-beats", "expected a number"),
    (["score", "a.mp4", "--guide-groups", "rhythm,melody"], "--guide-groups", "expected control groups"),
    (["sample", "--data", "d", "--structure", "s", "--out", "o", "--guide-groups", "harmony,harmony"],
     "--guide-groups", "each once"),
    (["sample", "--data", "d", "--structure", "s", "--out", "o", "--guide-groups", ","], "--guide-groups",
     "expected control groups"),
])
def test_bad_numbers_are_one_line_exit_2(argv, flag, message, capsys):
    assert cli.main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert flag in line and message in line and "Value error" not in line, line


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    out, err = capsys.readouterr()
    assert "Usage: bgmgen" in err and out == ""


# -- error reporting -----------------------------------------------------------------------------

def _raise(exc):
    def f(*a, **k):
        raise exc
    return f


@pytest.mark.parametrize("exc, code", [
    (InputError("clip.mp4: not a video; give a video file"), 2),
    (MissingDependencyError("no SoundFont found; apt-get install fluid-soundfont-gm"), 3),
    (BgmgenError("something\nspanning lines"), 1),
    (ModuleNotFoundError("No module named 'decord'", name="decord"), 3),
    (RuntimeError("a bug"), 1),
])
def test_errors_are_one_line_with_their_exit_code(monkeypatch, capsys, exc, code):
    monkeypatch.setattr(batch, "score_many", _raise(exc))
    assert cli.main(["score", "x.mp4"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bgmgen: error: "), err
    assert "Traceback" not in err


def test_missing_package_says_how_to_reinstall(monkeypatch, capsys):
    monkeypatch.setattr(batch, "score_many", _raise(ModuleNotFoundError("No module named 'decord'", name="decord")))
    assert cli.main(["score", "x.mp4"]) == 3
    assert "pip install" in capsys.readouterr().err


def test_internal_error_says_run_with_debug(monkeypatch, capsys):
    monkeypatch.setattr(batch, "score_many", _raise(RuntimeError("a bug")))
    assert cli.main(["score", "x.mp4"]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: a bug" in err and "--debug" in err


def test_debug_shows_the_traceback(monkeypatch, capsys):
    monkeypatch.setattr(batch, "score_many", _raise(InputError("bad input")))
    assert cli.main(["--debug", "score", "x.mp4"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "bgmgen: error: bad input" in err
    assert cli.main(["score", "x.mp4", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_keyboard_interrupt_exits_130(monkeypatch, capsys):
    monkeypatch.setattr(batch, "score_many", _raise(KeyboardInterrupt()))
    assert cli.main(["score", "x.mp4"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "bgmgen: interrupted" in err


def test_eval_needs_a_mode(capsys):
    assert cli.main(["eval"]) == 2
    assert "--videos" in capsys.readouterr().err


def test_train_missing_data_folder_is_one_line(tmp_path, capsys):
    assert cli.main(["train", "--data", str(tmp_path / "nope"), "--structure", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bgmgen: error: ") and "nope" in err and err.count("\n") == 1


def test_train_missing_init_model_is_one_line_before_any_work(tmp_path, capsys):
    args = ["train", "--data", str(tmp_path), "--structure", str(tmp_path), "--init-from", str(tmp_path / "v0.safetensors"),
            "--out", str(tmp_path / "run")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("bgmgen: error: ") and "v0.safetensors" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_train_checks_the_dataset_before_training(tmp_path, capsys):
    # Folders that exist but are not POP909: pop909.check_dataset_dirs' one line, exit 2.
    assert cli.main(["train", "--data", str(tmp_path), "--structure", str(tmp_path),
                     "--out", str(tmp_path / "run")]) == 2
    assert "not a POP909" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


# -- rejected inputs through the real command (subprocess) ---------------------------------------

def test_missing_input_is_rejected(tmp_path):
    proc = run("score", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert_one_error_line(proc, "missing.mp4", "no such file")
    assert not (tmp_path / "out").exists()


def test_folder_without_videos_is_rejected(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("hello")
    proc = run("score", str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert_one_error_line(proc, "no videos")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"CORRUPT", b"this is a text file, not a video\n" * 20])
def test_non_video_files_are_rejected_and_nothing_written(tmp_path, content):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(content)
    before = bad.read_bytes()
    proc = run("score", str(bad), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert_one_error_line(proc, "clip.mp4")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert bad.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"] + (["out"] if (tmp_path / "out").exists() else [])


def test_unwritable_out_is_one_line_exit_2_and_nothing_written(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00" * 10)
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    proc = run("score", str(video), "--out", str(blocker / "out"))
    assert proc.returncode == 2
    assert_one_error_line(proc, "--out", "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "v.mp4"]


def test_unwritable_out_even_for_root(tmp_path):
    """root ignores permission bits; /proc is unwritable for everyone."""
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00" * 10)
    proc = run("score", str(video), "--out", "/proc/bgmgen-out")
    assert proc.returncode == 2
    assert_one_error_line(proc, "--out")


def test_missing_model_flag_is_rejected_before_work(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00" * 10)
    proc = run("score", str(video), "--model", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert_one_error_line(proc, "--model")
    assert not (tmp_path / "o").exists()


# -- batch logic (in process) --------------------------------------------------------------------

def test_expand_inputs_folders_extensions_and_duplicates(tmp_path):
    d = tmp_path / "clips"
    d.mkdir()
    for name in ("b.MP4", "a.mov", "c.txt", ".hidden.mp4", "d.webm", "e.mts", "f.3gp"):
        (d / name).write_bytes(b"x")
    (d / "a.bgm").mkdir()
    (d / "a.bgm" / "a.mp4").write_bytes(b"x")  # an earlier output: never an input
    jobs = expand_inputs([str(d), str(d / "a.mov"), str(tmp_path / "nope.mp4")])
    names = [j.path.name if j.path else None for j in jobs]
    assert names == ["a.mov", "b.MP4", "d.webm", "e.mts", "f.3gp", None]
    assert jobs[-1].status == REJECTED and "nope.mp4" in jobs[-1].message


def test_explicit_file_with_any_extension_is_tried(tmp_path):
    f = tmp_path / "movie.bin"
    f.write_bytes(b"x")
    jobs = expand_inputs([str(f)])
    assert len(jobs) == 1 and jobs[0].path == f and not jobs[0].status


def test_output_folders_and_name_clashes(tmp_path):
    a, b = tmp_path / "x" / "clip.mp4", tmp_path / "y" / "clip.mov"
    for p in (a, b):
        p.parent.mkdir()
        p.write_bytes(b"x")
    jobs = expand_inputs([str(a), str(b)])
    assign_outputs(jobs, str(tmp_path / "out"))
    assert [j.out_dir.name for j in jobs] == ["clip", "clip-mov"]
    assert all(j.stem == "clip" for j in jobs)
    jobs = expand_inputs([str(a), str(b)])
    assign_outputs(jobs, None)
    assert [j.out_dir for j in jobs] == [a.parent / "clip.bgm", b.parent / "clip.bgm"]


@pytest.mark.parametrize("statuses, code", [
    ([SCORED], 0), ([SCORED, UP_TO_DATE], 0), ([UP_TO_DATE], 0),
    ([REJECTED], 2), ([REJECTED, REJECTED], 2),
    ([SCORED, REJECTED], 1), ([SCORED, FAILED], 1), ([FAILED], 1), ([REJECTED, FAILED], 1),
    ([], 2),
])
def test_exit_codes(statuses, code):
    assert exit_code([Job("x", None, status=s) for s in statuses]) == code


def test_writable_location(tmp_path):
    assert writable_location(tmp_path / "a" / "b") is None
    assert not (tmp_path / "a").exists()          # probing creates nothing
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    assert "not a folder" in writable_location(tmp_path / "f" / "sub")


def test_partial_folder_replaces_only_on_success(tmp_path):
    final = tmp_path / "clip"
    with partial_folder(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".clip.partial-")
        (tmp / "run.json").write_text("{}")
    assert (final / "run.json").read_text() == "{}"

    with pytest.raises(RuntimeError):
        with partial_folder(final) as tmp:
            (tmp / "run.json").write_text('{"new": 1}')
            raise RuntimeError("a stage failed")
    assert (final / "run.json").read_text() == "{}"               # old outputs untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]  # no partial left

    with partial_folder(final) as tmp:
        (tmp / "run.json").write_text('{"new": 2}')
    assert json.loads((final / "run.json").read_text()) == {"new": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]


def test_stale_partials_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".clip.partial-{dead.pid}-abcd"
    stale.mkdir()
    (stale / "clip.mid").write_bytes(b"half")
    alive = tmp_path / f".clip.partial-{os.getppid()}-beef"   # a live process: left alone
    alive.mkdir()
    with partial_folder(tmp_path / "clip") as tmp:
        (tmp / "run.json").write_text("{}")
    assert not stale.exists() and alive.exists()


def _fake_outputs(job: Job, fingerprint: dict) -> None:
    job.out_dir.mkdir(parents=True)
    names = {"midi": "v.mid", "run": "run.json"}
    (job.out_dir / "v.mid").write_bytes(b"MThd")
    ident = provenance.input_identity(job.path)
    (job.out_dir / "run.json").write_text(json.dumps(
        {"fingerprint": fingerprint, "input": ident, "outputs": names}))


def test_up_to_date_needs_same_input_options_and_outputs(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"video bytes")
    job = expand_inputs([str(video)])[0]
    assign_outputs([job], str(tmp_path / "out"))
    fp = {"options": ScoreOptions(seed=1).output_fingerprint(), "model_sha256": "m"}
    assert up_to_date(job, fp)[0] is False                   # nothing yet
    _fake_outputs(job, fp)
    assert up_to_date(job, fp)[0] is True
    assert up_to_date(job, {**fp, "model_sha256": "other"})[0] is False
    assert up_to_date(job, {"options": ScoreOptions(seed=2).output_fingerprint(),
                            "model_sha256": "m"})[0] is False
    os.utime(video, (1, 1))                                  # touched, same content: still fine
    assert up_to_date(job, fp)[0] is True
    video.write_bytes(b"video byteZ")                        # same size, new content
    assert up_to_date(job, fp)[0] is False
    video.write_bytes(b"video bytes")
    (job.out_dir / "v.mid").unlink()                         # an output went missing
    assert up_to_date(job, fp)[0] is False


def test_options_that_do_not_change_outputs_do_not_make_them_stale():
    a = ScoreOptions(out="/a", quiet=True, force=True, use_cache=False, cache_dir="/c", debug=True)
    assert a.output_fingerprint() == ScoreOptions().output_fingerprint()
    for change in ({"seed": 1}, {"mix": "keep"}, {"tempo": 90.0}, {"mood": "tense"}, {"steps": 10},
                   {"guidance": 1.0}, {"soundfont": "/x.sf2"}, {"clip_weights": "/c.pt"}):
        assert ScoreOptions(**change).output_fingerprint() != ScoreOptions().output_fingerprint()


def test_run_json_writer_handles_numpy_and_nan(tmp_path):
    import numpy as np

    path = tmp_path / "run.json"
    dump_json({"a": np.arange(3, dtype=np.float32), "b": np.float64(np.nan), "c": np.int64(4),
                        "d": (1, 2), "e": Path("/x"), "f": float("inf")}, path)
    assert json.loads(path.read_text()) == {"a": [0.0, 1.0, 2.0], "b": None, "c": 4, "d": [1, 2],
                                            "e": "/x", "f": None}


def test_weight_hashes_are_memoised(tmp_path):
    w = tmp_path / "w.safetensors"
    w.write_bytes(b"weights")
    memo = Sha256Memo(str(tmp_path / "cache"))
    h = memo.sha256(w)
    memo.save()
    again = Sha256Memo(str(tmp_path / "cache"))
    assert again.memo and again.sha256(w) == h
    folder = tmp_path / "blip"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"m")
    (folder / "config.json").write_text("{}")
    out = provenance.hash_weights({"blip": str(folder), "w": str(w)}, memo)
    assert set(out) == {"blip/model.safetensors", "w"} and out["w"]["sha256"] == h


def test_versions_name_the_key_packages():
    v = provenance.collect_versions()
    for key in ("python", "torch", "numpy", "transformers", "open_clip_torch", "decord", "pretty_midi",
                "pyfluidsynth", "ffmpeg", "bgmgen"):
        assert key in v
    assert v["python"].count(".") == 2


# -- doctor --------------------------------------------------------------------------------------

def test_doctor_runs_and_names_every_dependency():
    proc = run("doctor", timeout=180)
    assert proc.returncode in (0, 1), proc.stderr
    out = proc.stdout
    for needle in ("ffmpeg", "ffprobe", "libfluidsynth", "SoundFont", "TransNetV2", "CLIP", "BLIP",
                   "MiniLM", "music model", "torch", "cache"):
        assert needle in out, needle
    assert ("offline path works" in out) == (proc.returncode == 0)
    from bgmgen.app.doctor import check_torch
    from bgmgen.core.quantize import bf16_convolutions_supported
    from bgmgen.video.shots import resolve_precision

    # the torch row says how the convolutions run here (they decide a seed's exact notes), and the
    # shot detector's precision
    assert ("bf16 convolutions" in check_torch("cpu").detail) == bf16_convolutions_supported()
    assert f"shot detector {resolve_precision('auto', 'cpu')}," in check_torch("cpu").detail


def test_doctor_with_missing_soundfont_fails(tmp_path):
    from bgmgen.app.doctor import check_soundfont

    c = check_soundfont(str(tmp_path / "none.sf2"))
    assert c.status == "missing" and "none.sf2" in c.detail


def test_tests_package_is_this_folder():
    import tests

    assert [str(Path(p).resolve()) for p in tests.__path__] == [str(Path(__file__).resolve().parent)]


def test_native_output_is_kept_off_the_terminal(capfd):
    term = console.make_console(quiet=False)
    with console.native_output_sink(True):
        os.write(2, b"[h264 @ 0x55] Invalid NAL unit size\n")
        os.write(1, b"library chatter on stdout\n")
        print("python-level print")
        console.say_error(term, "clip.mp4: not a video")
    out, err = capfd.readouterr()
    assert out == "" and err == "bgmgen: error: clip.mp4: not a video\n"
    with console.native_output_sink(False):
        os.write(2, b"visible with --debug\n")
    assert capfd.readouterr().err == "visible with --debug\n"


def test_atomic_outputs_get_umask_permissions_even_when_the_writer_recreates_the_file(tmp_path):
    # safetensors' writer replaces the temporary file with a 0600 one; outputs (weights, MIDI, ...)
    # must still be readable by the group/others the umask allows.
    import stat

    import torch
    from safetensors.torch import save_file

    from bgmgen.core.files import atomic_path

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "w.safetensors") as tmp:
            save_file({"x": torch.zeros(2)}, str(tmp))
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    for name in ("w.safetensors", "a.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "w.safetensors"]
