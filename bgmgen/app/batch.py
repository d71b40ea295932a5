"""`bgmgen score` over many inputs: expand folders, check output locations, score each video
(one bad file never stops the others), skip the up-to-date ones, print the summary table.

Exit codes: 0 every input scored or up to date, 1 any failed, 2 every input rejected as invalid,
3 (MissingDependencyError, raised) a tool or weight file every video needs is missing.
"""

from __future__ import annotations

import json
import os
import time
import traceback
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

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
                progress.update(task, description=f"{escape(_name)}: {escape(stage)}")

            t0 = time.perf_counter()
            try:
                if fingerprint is None:
                    fingerprint = ctx.fingerprint()
                ident = None
                if not opts.force and job.out_dir.is_dir():
                    stage_cb("checking outputs")
                    fresh, ident = up_to_date(job, fingerprint)
                    if fresh:
                        job.status, job.message = UP_TO_DATE, str(job.out_dir)
                        job.summary = _summary_from_run_json(job.out_dir / RUN_JSON)
                        say(console, f"up to date: {escape(str(job.out_dir))} (use --force to score again)")
                        continue
                with native_output_sink(not opts.debug):
                    job.summary = score_one(job, ctx, console, stage_cb, ident, fingerprint)
                job.status, job.message = SCORED, str(job.out_dir)
                say(console, f"[green]scored[/] {escape(name)} -> {escape(str(job.out_dir))}")
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
                job.message = (f"{job.path}: internal error: {type(err).__name__}: {one_line(err)} "
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
