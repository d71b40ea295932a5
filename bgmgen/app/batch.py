"""`bgmgen score` over many inputs: expand folders, check output locations, score each video
(one bad file never stops the others), skip the up-to-date ones, print the summary table.
`run_job` is one input from the up-to-date check to its result; this process's loop runs it, and with
--ray so do the Ray workers (ray_batch.py), for the same statuses, messages and outputs.

Exit codes: 0 every input scored or up to date, 1 any failed, 2 every input rejected as invalid,
3 (MissingDependencyError, raised) a tool or weight file every video needs is missing.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bgmgen.app.console import escape, make_console, native_output_sink, say, say_error
from bgmgen.app.options import ScoreOptions
from bgmgen.app.outputs import (
    FAILED,
    REJECTED,
    SCORED,
    UP_TO_DATE,
    Job,
    assign_outputs,
    expand_inputs,
    writable_location,
)
from bgmgen.app.provenance import RUN_JSON, up_to_date
from bgmgen.app.score import BatchContext, score_one
from bgmgen.core.errors import BgmgenError, InputError, MissingDependencyError, one_line


def score_many(inputs: list[str], options: ScoreOptions, console=None,
               command: list[str] | None = None) -> int:
    """Score every input; returns the exit code (0 all scored or up to date, 1 any failed,
    2 every input rejected as invalid)."""
    if console is None:
        console = make_console(options.quiet)
    if options.ray:
        from bgmgen.app.ray_batch import require_ray

        require_ray()  # before any work: without Ray, the install line and exit 2
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
        if options.ray and todo:
            from bgmgen.app.ray_batch import run_jobs_on_ray

            run_jobs_on_ray(todo, ctx, console)
        else:
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


@dataclass(frozen=True)
class JobResult:
    """How one input ended, as plain values: a Ray worker returns it to the driver (no exception objects)."""

    status: str          # SCORED, UP_TO_DATE, REJECTED, FAILED or MISSING_DEPENDENCY
    message: str         # the output folder, or the one-line reason
    summary: dict        # the summary table's facts (score_one's dict, or read from an up-to-date run.json)
    seconds: float


# run_job's status for a MissingDependencyError: it would fail every other video too, so the batch stops.
MISSING_DEPENDENCY = "missing dependency"


def run_job(job: Job, ctx: BatchContext, console, stage_cb: Callable[[str], None]) -> JobResult:
    """One input, as both the one-process loop and a Ray worker run it: skip it when its outputs are up to
    date (unless --force), else score it; every failure becomes the result's status and one-line message."""
    opts = ctx.options
    t0 = time.perf_counter()
    try:
        fingerprint = ctx.fingerprint()
        ident = None
        if not opts.force and job.out_dir.is_dir():
            stage_cb("checking outputs")
            fresh, ident = up_to_date(job, fingerprint)
            if fresh:
                return JobResult(UP_TO_DATE, str(job.out_dir), _summary_from_run_json(job.out_dir / RUN_JSON),
                                 time.perf_counter() - t0)
        with native_output_sink(not opts.debug):
            summary = score_one(job, ctx, console, stage_cb, ident, fingerprint)
        return JobResult(SCORED, str(job.out_dir), summary, time.perf_counter() - t0)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - one bad file never stops the others
        if opts.debug:
            traceback.print_exc()
        return JobResult(*_status_and_message(job, err), {}, time.perf_counter() - t0)
    finally:
        from bgmgen.video.scan_ahead import drop_scan  # standard library only: cheap in any process

        drop_scan(job.path)  # the CLI's decode begun ahead, when nothing took it (up to date, cached, failed)


def _status_and_message(job: Job, err: Exception) -> tuple[str, str]:
    if isinstance(err, MissingDependencyError):
        return MISSING_DEPENDENCY, one_line(err)
    if isinstance(err, InputError):
        return REJECTED, _message_for(job, err)
    if isinstance(err, BgmgenError):
        return FAILED, _message_for(job, err)
    # a bug in one stage: report, go on with the next video
    return FAILED, (f"{job.path}: internal error: {type(err).__name__}: {one_line(err)} "
                    "(run again with --debug for the traceback)")


def record_result(job: Job, result: JobResult, console) -> None:
    """Copy `result` into `job` and say how it ended; a missing dependency stops the batch (raised, exit 3)."""
    if result.status == MISSING_DEPENDENCY:
        raise MissingDependencyError(result.message)
    job.status, job.message, job.summary, job.seconds = result.status, result.message, result.summary, result.seconds
    if job.status == UP_TO_DATE:
        say(console, f"up to date: {escape(str(job.out_dir))} (use --force to score again)")
    elif job.status == SCORED:
        say(console, f"[green]scored[/] {escape(job.path.name)} -> {escape(str(job.out_dir))}")
    else:
        say_error(console, job.message)


def batch_progress(console, options: ScoreOptions):
    """The rich progress display of a batch (one bar over the videos)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    # Without --debug, library prints go to the native-output sink, not through rich's redirection.
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                    transient=True, disable=options.quiet,
                    redirect_stdout=options.debug, redirect_stderr=options.debug)


def _run_jobs(todo: list[Job], ctx: BatchContext, console) -> None:
    with batch_progress(console, ctx.options) as progress:
        task = progress.add_task("videos", total=len(todo))
        for job in todo:
            name = job.path.name

            def stage_cb(stage: str, _name=name) -> None:
                progress.update(task, description=f"{escape(_name)}: {escape(stage)}")

            result = run_job(job, ctx, console, stage_cb)
            progress.advance(task)
            record_result(job, result, console)


def _summary_from_run_json(path: Path) -> dict:
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        plan = run.get("plan") or {}
        return {"duration_s": (run.get("video") or {}).get("duration_s"), "bpm": plan.get("bpm"),
                "key": plan.get("key"), "mood": plan.get("mood"), "mix": (run.get("mix") or {}).get("mode", "")}
    except (OSError, ValueError, AttributeError):
        return {}


def _message_for(job: Job, err: BaseException) -> str:
    msg = one_line(err)
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
        table.add_row(escape(name), f"[{colours.get(job.status, 'white')}]{job.status}[/]", dur, bpm,
                      escape(key), s.get("mix", ""), f"{job.seconds:.1f} s" if job.seconds else "",
                      escape(detail))
    console.print(table)
    counts = {st: sum(j.status == st for j in jobs) for st in (SCORED, UP_TO_DATE, REJECTED, FAILED)}
    console.print(", ".join(f"{n} {st}" for st, n in counts.items() if n), soft_wrap=True)


def _short_path(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("../..") else str(path)
