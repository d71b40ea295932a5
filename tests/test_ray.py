"""`bgmgen score --ray ADDRESS` (app/ray_batch.py): the one-process batch's behaviour on Ray workers.

Without Ray: the install line and exit 2; --help and parsing never import ray; the workers' storage check, the
worker count, a cluster that does not answer and Ray's messages, each one line.
With Ray (a local Ray on this machine's 2 CPUs,
started by the command itself): a batch with a garbage file whose worker is killed (SIGKILL) in the middle of a
file still completes - the file is retried, nothing partial is left, the MIDI is byte-identical to the
one-process batch's; the one-process outputs are up to date for a Ray run; a missing SoundFont on the workers
stops the batch with its one line (exit 3). About 1.5 minutes on a 2-core CPU, most of it Ray starting up.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bgmgen import __version__, cli
from bgmgen.app.ray_batch import (
    StorageProbe,
    cluster_unreachable,
    ray_error_line,
    ray_note,
    storage_problem,
    worker_count,
)

REPO = Path(__file__).resolve().parent.parent
BGMGEN = REPO / ".venv" / "bin" / "bgmgen"
SEED = 3

needs_ray = pytest.mark.skipif(shutil.which("ffmpeg") is None or importlib.util.find_spec("ray") is None,
                               reason="Ray (pip install -e '.[ray]') or ffmpeg is not installed")


# -- without Ray, and the pieces that need no cluster ---------------------------------------------

def test_without_ray_the_install_line_and_exit_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = cli.main(["score", str(tmp_path / "clip.mp4"), "--ray", "local"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "pip install 'bgmgen[ray]'" in err and err.startswith("bgmgen: error: --ray")


@pytest.mark.parametrize("address", ["loca", "ray://", "http://head:10001", ""])
def test_a_bad_address_is_a_usage_error(capsys, address):
    assert cli.main(["score", "clip.mp4", "--ray", address]) == 2
    assert "Invalid value for '--ray'" in capsys.readouterr().err


def test_help_and_parsing_never_import_ray():
    probe = ("import sys; from bgmgen import cli; cli.main(['--help']); cli.main(['score', '--help']); "
             "cli.main(['score', 'x.mp4', '--ray', 'ray://head:10001', '--steps', '0']); "
             "print('ray' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip().splitlines()[-1] == "False", proc.stderr


def test_storage_problems_are_one_line_each(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x" * 10)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    good = StorageProbe(str(clip), 10, (str(tmp_path / "out"),), __version__)
    assert storage_problem(good) is None
    host = socket.gethostname()
    for probe, words in [
        (StorageProbe(str(tmp_path / "missing.mp4"), 10, good.output_folders, __version__), "cannot read"),
        (StorageProbe(str(clip), 11, good.output_folders, __version__), "sees another file"),
        (StorageProbe(str(clip), 10, (str(blocker / "out"),), __version__), "cannot write the output folder"),
        (StorageProbe(str(clip), 10, good.output_folders, "0.0.1"), "install the same version on every node"),
    ]:
        problem = storage_problem(probe)
        assert problem and words in problem and host in problem and "\n" not in problem, problem
    assert not (tmp_path / "out").exists()  # the check leaves nothing behind


def test_worker_count_follows_each_live_nodes_cpus_and_memory():
    gib = 1024**3
    nodes = [{"Alive": True, "Resources": {"CPU": 2.0, "memory": 16.0 * gib}},
             {"Alive": True, "Resources": {"CPU": 8.0, "memory": 3.5 * gib}},   # memory for 2 workers
             {"Alive": False, "Resources": {"CPU": 64.0, "memory": 256.0 * gib}},
             {"Alive": True, "Resources": {"memory": 8.0 * gib}}]                # a head without CPUs
    assert worker_count(nodes, 100) == 4
    assert worker_count(nodes, 3) == 3
    assert worker_count(nodes[2:], 5) == 0


def _closed_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@needs_ray
def test_a_cluster_that_does_not_answer_is_one_line_at_once(monkeypatch):
    port = _closed_local_port()
    assert "nothing answers at 127.0.0.1:" in cluster_unreachable(f"ray://127.0.0.1:{port}", timeout_s=2)
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # what `auto` reads first
    t0 = time.monotonic()
    problem = cluster_unreachable("auto", timeout_s=2)   # Ray writes this machine's address for 127.0.0.1
    assert problem.startswith("nothing answers at ") and f":{port} (" in problem
    assert time.monotonic() - t0 < 10   # ray.init would retry for many minutes


def test_rays_messages_become_short_notes():
    died = ("\x1b[33m(raylet)\x1b[0m A worker died or was killed while executing a task by an unexpected system "
            "error. To troubleshoot the problem, check the logs for the dead worker. Lease ID: 0000 Worker ID: 2e60 "
            "Node ID: d285 Worker IP address: 192.0.2.2 Worker port: 42837 Worker PID: 3782 Worker exit type: "
            "SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection error code 2.")
    assert ray_note(died) == ("ray: A worker died or was killed while executing a task by an unexpected system "
                              "error. (worker process 3782 on 192.0.2.2)")
    retried = ("(raylet) Task ScoreWorker.score failed. There are 2 retries remaining, so the task will be retried. "
               "Error: The actor is temporarily unavailable: RpcError: RPC error: Socket closed rpc_code: 14")
    assert ray_note(retried) == ("ray: Task ScoreWorker.score failed. There are 2 retries remaining, so the task "
                                 "will be retried.")
    assert ray_note("   ") is None
    creation = ("The actor died because of an error raised in its creation task, \x1b[36mray::Bad.__init__()\x1b[39m "
                "(pid=3946)\n  File \"/x/worker.py\", line 19, in __init__\n    import bgmgen\n"
                "ModuleNotFoundError: No module named 'bgmgen'")
    assert ray_error_line(creation) == "ModuleNotFoundError: No module named 'bgmgen'"


# -- with a local Ray --------------------------------------------------------------------------------

def _env(**extra) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}


def _score(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BGMGEN), "score", *args], check=False, capture_output=True, text=True, timeout=timeout,
                          env=env or _env())


def _error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("bgmgen: error:")]


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Two short clips and a garbage file, scored once by the one-process batch (the reference)."""
    from media import make_video  # tests/media.py

    root = tmp_path_factory.mktemp("ray")
    clips = root / "clips"
    clips.mkdir()
    make_video(clips / "a.mp4", duration=3.0, cuts=[1.5])
    make_video(clips / "b.mkv", duration=2.5, cuts=[1.2], audio="speech")
    (clips / "c_garbage.mp4").write_bytes(b"CORRUPT")
    reference = _score(str(clips), "--out", str(root / "one"), "--seed", str(SEED))
    assert reference.returncode == 1, reference.stderr[-2000:]   # the garbage file
    return {"root": root, "clips": clips, "one": root / "one"}


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent's pid, after "(comm) state"
    return False


@needs_ray
def test_a_worker_killed_mid_file_is_retried_and_the_midi_matches_one_process(batch):
    out = batch["root"] / "killed"
    driver = subprocess.Popen([str(BGMGEN), "score", str(batch["clips"]), "--out", str(out), "--seed", str(SEED),
                               "--ray", "local"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env())
    killed = None
    deadline = time.monotonic() + 240
    try:
        while killed is None and driver.poll() is None and time.monotonic() < deadline:
            for entry in out.iterdir() if out.is_dir() else ():
                # `.a.partial-<pid>-<random>`: the pid is the worker process writing it.
                match = re.match(r"\.(\w+)\.partial-(\d+)-", entry.name)
                if match and _descends_from(int(match.group(2)), driver.pid) and int(match.group(2)) != driver.pid:
                    os.kill(int(match.group(2)), signal.SIGKILL)
                    killed = match.group(1)
                    break
            time.sleep(0.01)
        stdout, stderr = driver.communicate(timeout=max(10.0, deadline - time.monotonic()))
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert killed, f"no worker was seen writing a partial folder: {stderr[-2000:]}"
    assert driver.returncode == 1, stderr[-3000:]     # 1: the garbage file; the killed file was scored again
    assert stdout == ""                                # Ray's own messages become notes on stderr
    assert "note: ray: " in stderr and "Traceback" not in stderr   # the worker's death, said in one line
    lines = _error_lines(stderr)
    assert len(lines) == 1 and "c_garbage.mp4" in lines[0], stderr
    assert "2 scored, 1 rejected" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]    # nothing partial, hidden or not
    for name in ("a", "b"):
        made = sorted(p.name for p in (out / name).iterdir())
        assert made == sorted(p.name for p in (batch["one"] / name).iterdir())
        assert (out / name / f"{name}.mid").read_bytes() == (batch["one"] / name / f"{name}.mid").read_bytes()


@needs_ray
def test_one_process_outputs_are_up_to_date_for_a_ray_run(batch):
    runs = {n: (batch["one"] / n / "run.json").read_bytes() for n in ("a", "b")}
    proc = _score(str(batch["clips"] / "a.mp4"), str(batch["clips"] / "b.mkv"), "--out", str(batch["one"]),
                  "--seed", str(SEED), "--ray", "local", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "" and proc.stderr == ""     # --quiet: Ray says nothing either
    assert {n: (batch["one"] / n / "run.json").read_bytes() for n in ("a", "b")} == runs


@needs_ray
def test_a_missing_soundfont_on_the_workers_stops_the_batch(batch, tmp_path):
    proc = _score(str(batch["clips"] / "a.mp4"), "--out", str(tmp_path / "out"), "--ray", "local",
                  env=_env(BGMGEN_SOUNDFONT=str(tmp_path / "gone.sf2")))
    assert proc.returncode == 3, proc.stderr[-2000:]
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and "gone.sf2" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
