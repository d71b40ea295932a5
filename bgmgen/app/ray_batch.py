"""`bgmgen score INPUT... --ray ADDRESS`: the batch's files scored by Ray workers, here or on a cluster.

The driver (this process) does what the one-process batch does around the scoring - expand the inputs, assign
the output folders, compute the up-to-date fingerprint, show the progress, print the summary table, return the
exit code - and hands the files to the workers as tasks. Each worker is a Ray actor (`ScoreWorker`) holding one
BatchContext, so it loads the models once and runs `batch.run_job` on every file it is given: skip-if-up-to-date,
--force, seeds and every option behave as in one process, and the MIDI is byte-identical. What crosses between
processes is plain data: a Job in, a JobResult (status, message, summary, seconds) and the console lines out.

ADDRESS is read as `ray.init` reads it: `local` starts Ray on this machine, `auto` joins the cluster this machine
belongs to (`ray start`), `ray://HOST:PORT` connects to a cluster's Ray client server. Inputs and outputs must be
on storage every node sees at the same path; each worker checks at the start that it can read an input and write
every output folder, and the run stops with one line if one cannot.

Faults: a worker that dies in the middle of a file (killed, out of memory, its node lost) is restarted by Ray and
the file is tried again (TASK_RETRIES more times); the output folders are written atomically (outputs.py), so
nothing partial is left behind, and a file whose worker dies every time fails alone.

Ray is an optional extra (`pip install 'bgmgen[ray]'`), imported only inside these functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import socket
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from bgmgen import __version__
from bgmgen.app.batch import FAILED, JobResult, batch_progress, record_result, run_job
from bgmgen.app.console import escape, native_output_sink, say
from bgmgen.app.options import ScoreOptions
from bgmgen.app.outputs import Job, remove_stale_partials, writable_location
from bgmgen.app.score import BatchContext
from bgmgen.core.errors import BgmgenError, InputError, MissingDependencyError, one_line
from bgmgen.core.threads import SCORING_ENV

RAY_INSTALL = "pip install 'bgmgen[ray]'"
LOCAL = "local"
WORKER_CPUS = 1
# Ray's memory reserved per worker, so a node gets no more workers than fit: a 60 s 720p video peaks at 1.1 GB
# RSS, a 10-minute one at 1.83 GB (README); Ray offers only ~2/3 of a node's RAM as its memory resource.
WORKER_MEMORY_BYTES = 3 * 1024**3 // 2
# How many more times a file is tried after its worker died while scoring it.
TASK_RETRIES = 2
# The environment bgmgen reads, passed from the driver to the workers (a cluster's nodes have their own).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *SCORING_ENV)  # SCORING_ENV: set by the CLI
FORWARDED_ENV_PREFIX = "BGMGEN_"
# ScoreOptions fields that are paths: made absolute before they go to workers (whose working folder differs).
PATH_OPTIONS = ("out", "cache_dir", "clip_weights", "blip_weights", "model", "soundfont")


def require_ray():
    """The ray module; InputError (exit 2) with the install line when it is not installed."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--ray needs Ray, which is not installed here; install it with: {RAY_INSTALL}") from None
    return ray


# -- the worker side -------------------------------------------------------------------------------

@dataclass(frozen=True)
class StorageProbe:
    """What every worker checks before the first file: it reads an input the driver sees and writes every
    output folder, with the driver's bgmgen version."""

    input_path: str
    input_size: int
    output_folders: tuple[str, ...]
    bgmgen_version: str


def storage_problem(probe: StorageProbe) -> str | None:
    """None when this process can read the probe's input and write its output folders; else what is wrong
    and what to do, as part of one line."""
    where = f"the Ray worker on {socket.gethostname()}"
    shared = "inputs and outputs must be on storage every node sees, at the same path"
    path = Path(probe.input_path)
    try:
        with open(path, "rb") as f:
            f.read(1)
        size = path.stat().st_size
    except OSError as err:
        return f"{where} cannot read {path} ({err.strerror or err}); {shared}"
    if size != probe.input_size:
        return (f"{where} sees another file at {path} ({size} bytes, this machine {probe.input_size}); "
                f"{shared}")
    for folder in probe.output_folders:
        reason = writable_location(Path(folder))
        if reason:
            return f"{where} cannot write the output folder {folder} ({reason}); {shared}"
    if probe.bgmgen_version != __version__:
        return (f"{where} runs bgmgen {__version__}, this machine {probe.bgmgen_version}; "
                "install the same version on every node")
    return None


class ConsoleLines:
    """The console a worker gives run_job: it keeps each line (rich markup) for the driver to print."""

    quiet = False

    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, text, **_style) -> None:
        self.lines.append(str(text))


class ScoreWorker:
    """A Ray actor scoring files: one BatchContext, so the models load on its first file and stay for the rest."""

    def __init__(self, options: ScoreOptions, command: list[str], fingerprint: dict):
        self.ctx = BatchContext(options, command, fingerprint=fingerprint)

    def check_storage(self, probe: StorageProbe) -> str | None:
        return storage_problem(probe)

    def score(self, job: Job) -> tuple[JobResult, list[str]]:
        console = ConsoleLines()
        result = run_job(job, self.ctx, console, lambda stage: None)
        return result, console.lines


# -- the driver side -------------------------------------------------------------------------------

def run_jobs_on_ray(todo: list[Job], ctx: BatchContext, console) -> None:
    """Score `todo` on Ray workers; each Job gets its status, message, summary and seconds, as in
    batch._run_jobs. MissingDependencyError (a worker lacks a tool every file needs) stops the batch."""
    ray = require_ray()
    options = _with_absolute_paths(ctx.options)
    for job in todo:
        job.out_dir = Path(os.path.abspath(job.out_dir))
    fingerprint = ctx.fingerprint()
    handed_out: list[Job] = []
    try:
        _run_session(ray, todo, ctx, options, fingerprint, console, handed_out)
    finally:
        # Workers ended mid-file by ray.shutdown (Ctrl-C, a stopped batch) leave hidden partial folders; the
        # next run would remove them, this one does it now (only those of processes no longer alive here).
        for job in handed_out:
            if not job.status:
                remove_stale_partials(job.out_dir)


def _run_session(ray, todo, ctx, options, fingerprint, console, handed_out: list[Job]) -> None:
    with batch_progress(console, options) as progress, ray_session(ray, options, console):
        task = progress.add_task(f"starting Ray ({options.ray})", total=len(todo))
        n_workers = worker_count(ray.nodes(), len(todo))
        if n_workers == 0:
            raise InputError(f"--ray {options.ray}: no node of the Ray cluster has a CPU and "
                             f"{WORKER_MEMORY_BYTES / 1024**3:g} GiB of memory for a worker; add worker nodes "
                             "(ray start --address=HEAD:6379)")
        worker_class = ray.remote(num_cpus=WORKER_CPUS, memory=WORKER_MEMORY_BYTES, max_restarts=-1,
                                  max_task_retries=TASK_RETRIES, scheduling_strategy="SPREAD")(ScoreWorker)
        workers = [worker_class.remote(options, ctx.command, fingerprint) for _ in range(n_workers)]
        progress.update(task, description=f"starting {n_workers} Ray worker{'s' if n_workers > 1 else ''}")
        _check_workers(ray, workers, todo, options.ray)
        _score_on_workers(ray, workers, todo, console, lambda text: progress.update(task, description=text),
                          lambda: progress.advance(task), handed_out)


def worker_count(nodes: list[dict], n_files: int) -> int:
    """Workers for `n_files` files: as many as the cluster's live nodes hold (a CPU and WORKER_MEMORY_BYTES each)."""
    slots = 0
    for node in nodes:
        if not node.get("Alive"):
            continue
        resources = node.get("Resources") or {}
        slots += min(int(resources.get("CPU", 0) // WORKER_CPUS),
                     int(resources.get("memory", 0) // WORKER_MEMORY_BYTES))
    return min(n_files, slots)


def forwarded_env(environ=os.environ) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k in FORWARDED_ENV or k.startswith(FORWARDED_ENV_PREFIX)}


@contextlib.contextmanager
def ray_session(ray, options: ScoreOptions, console):
    """ray.init for options.ray, quiet unless --debug; ray.shutdown on the way out (Ctrl-C and errors too), which
    ends this run's workers (a local Ray stops altogether)."""
    init = {"address": options.ray, "log_to_driver": options.debug, "configure_logging": True,
            "logging_level": logging.INFO if options.debug else logging.ERROR}
    env = forwarded_env()
    if env:
        init["runtime_env"] = {"env_vars": env}
    if options.ray == LOCAL:
        init["include_dashboard"] = False
    # Without --debug, Ray's C++ log lines and Python warnings (fds 1 and 2, sys.stderr) go to the sink the
    # per-video work uses, and the raylet's messages (a worker died, a task is retried), printed on sys.stdout
    # several lines each, become one note each on the console: stdout stays clean, --quiet prints nothing.
    quiet_ray = not options.debug
    raylet_notes = contextlib.redirect_stdout(RayMessages(console)) if quiet_ray else contextlib.nullcontext()
    with native_output_sink(quiet_ray), raylet_notes:
        unreachable = None if options.ray == LOCAL else cluster_unreachable(options.ray)
        if unreachable:
            raise InputError(f"--ray {options.ray}: {unreachable}; start the cluster with `ray start` (README) "
                             "or use --ray local")
        try:  # shutdown also when ray.init is interrupted half way (a local Ray's processes are started)
            try:
                ray.init(**init)
            except Exception as err:  # noqa: BLE001 - Ray raises ConnectionError, ValueError, RuntimeError ...
                if options.ray == LOCAL:
                    raise BgmgenError(f"--ray local: Ray did not start ({ray_error_line(err)})") from None
                token = ("" if os.environ.get("RAY_AUTH_MODE") else
                         "; a cluster with token authentication also needs RAY_AUTH_MODE=token and its token here")
                raise InputError(f"--ray {options.ray}: cannot join the Ray cluster ({ray_error_line(err)}); check "
                                 f"the address, start the cluster with `ray start` (README) or use --ray local{token}"
                                 ) from None
            yield
        finally:
            ray.shutdown()


def cluster_unreachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why no Ray cluster answers at `address` (a TCP connect to its head), or None; None too when the address
    cannot be resolved here (ray.init then says why). ray.init itself retries a dead head for many minutes (20
    tries of up to 60 s), e.g. when `auto` finds the address of a cluster that has stopped."""
    if address.startswith("ray://"):
        host_port = address[len("ray://"):].split("/", 1)[0]
        target = host_port if ":" in host_port else f"{host_port}:10001"  # the Ray client server's default port
    else:
        try:
            from ray._private.services import canonicalize_bootstrap_address_or_die  # auto: RAY_ADDRESS, ray start

            target = canonicalize_bootstrap_address_or_die(address)
        except (ImportError, AttributeError, ValueError):  # Ray's internals moved: leave it to ray.init
            return None
        except ConnectionError as err:
            return f"no Ray cluster found ({one_line(err).split('. ')[0]})"
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except (OSError, ValueError) as err:
        return f"nothing answers at {target} ({getattr(err, 'strerror', None) or err})"


def _check_workers(ray, workers, todo: list[Job], address: str) -> None:
    """Every worker reads the first input and writes every output folder, or the run stops with one line."""
    from ray.exceptions import RayError

    first = todo[0]
    probe = StorageProbe(str(first.path), first.path.stat().st_size,
                         tuple(sorted({str(job.out_dir.parent) for job in todo})), __version__)
    try:
        problems = [p for p in ray.get([w.check_storage.remote(probe) for w in workers]) if p]
    except RayError as err:
        raise MissingDependencyError(
            f"--ray {address}: a Ray worker could not start ({ray_error_line(err)}); every node needs the "
            f"same bgmgen with its Ray extra ({RAY_INSTALL})") from None
    if problems:
        raise InputError(f"--ray {address}: {problems[0]}")


def _score_on_workers(ray, workers, todo: list[Job], console, describe, advance, handed_out: list[Job]) -> None:
    """Give each idle worker the next file; as each result comes back, say it and advance the progress."""
    from ray.exceptions import RayActorError, RayError

    waiting = deque(todo)
    running: dict = {}  # ObjectRef -> (job, worker, when it was handed out)
    idle = list(workers)
    said: set[str] = set()
    while waiting or running:
        while idle and waiting:
            worker, job = idle.pop(), waiting.popleft()
            handed_out.append(job)
            running[worker.score.remote(job)] = (job, worker, time.perf_counter())
        names = ", ".join(job.path.name for job, _, _ in running.values())
        describe(escape(f"{len(workers)} Ray workers: {names}"[:100]))
        [ref], _ = ray.wait(list(running), num_returns=1)
        job, worker, since = running.pop(ref)
        idle.append(worker)
        try:
            result, lines = ray.get(ref)
        except RayActorError as err:  # its retries are used up: this file alone fails
            result, lines = JobResult(FAILED, (
                f"{job.path}: the Ray worker scoring it died on each of {TASK_RETRIES + 1} tries "
                f"({ray_error_line(err)}); the file may crash the decoder or need more memory than a node has"),
                {}, time.perf_counter() - since), []
        except RayError as err:
            result, lines = JobResult(FAILED, (
                f"{job.path}: internal error on its Ray worker: {ray_error_line(err)} "
                "(run again with --debug for the worker's output)"), {}, time.perf_counter() - since), []
        for line in lines:  # each worker says a note (a fallback) once; the driver says it once per batch
            if line not in said:
                said.add(line)
                say(console, line)
        advance()
        record_result(job, result, console)


def _with_absolute_paths(options: ScoreOptions) -> ScoreOptions:
    given = {name: os.path.abspath(os.path.expanduser(getattr(options, name)))
             for name in PATH_OPTIONS if getattr(options, name)}
    return dataclasses.replace(options, **given)


# -- Ray's messages as one line each ---------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SOURCE_PREFIX = re.compile(r"^\s*\((?:raylet|pid=[^)]*|[^)]*pid=[^)]*)\)\s*")
# Where Ray's message turns from what happened into troubleshooting advice and ids.
_DETAIL_STARTS = (" Error: ", " To troubleshoot", " Lease ID:", " Worker ID:", " Some common causes")


def ray_error_line(err: BaseException | str) -> str:
    """A Ray error on one short line: its last line when it carries a traceback, without colour codes."""
    text = _ANSI.sub("", str(err)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1 and ("Traceback" in text or any(ln.startswith("File ") for ln in lines)):
        text = lines[-1]
    text = one_line(text)
    return text if len(text) <= 300 else text[:297] + "..."


def ray_note(line: str) -> str | None:
    """One of Ray's stdout lines (e.g. '(raylet) A worker died or was killed while executing a task ...') as a
    short note: what happened and which worker process; None for an empty line."""
    text = _SOURCE_PREFIX.sub("", _ANSI.sub("", line)).strip()
    if not text:
        return None
    cut = min((i for i in (text.find(m) for m in _DETAIL_STARTS) if i > 0), default=len(text))
    note = text[:cut].strip()
    pid = re.search(r"Worker PID: (\d+)", text)
    ip = re.search(r"Worker IP address: (\S+)", text)
    if pid:
        note += f" (worker process {pid.group(1)}{' on ' + ip.group(1) if ip else ''})"
    return "ray: " + (note if len(note) <= 300 else note[:297] + "...")


class RayMessages(io.TextIOBase):
    """Stands in for sys.stdout while Ray runs without --debug: each line Ray prints becomes a short note."""

    def __init__(self, console):
        super().__init__()
        self.console = console
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            note = ray_note(line)
            if note:
                say(self.console, f"[yellow]note:[/] {escape(note)}")
        return len(text)
