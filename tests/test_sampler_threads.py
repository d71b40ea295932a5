"""The sampler's torch threads (music.generate.SamplerThreads): two only while this process has no
background job and the machine's other processes leave a second core free; the notes never depend
on the count (test_shipped_model checks that on the shipped model)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bgmgen.core.threads import OtherLoad, background_job, background_jobs
from bgmgen.music import generate


class _KnownLoad(OtherLoad):
    """An OtherLoad whose readings are given (the policy's arithmetic, apart from the machine's load)."""

    def __init__(self, readings):
        super().__init__()
        self.cpus = [0, 1]  # a two-CPU machine, whatever this one has
        self.readings = list(readings)

    def cores(self):
        return self.readings.pop(0)


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delenv(generate.SAMPLER_THREADS_ENV, raising=False)


def test_auto_takes_two_threads_only_when_nothing_else_runs(two_cores):
    threads = generate.SamplerThreads(_KnownLoad([None, 0.0, 0.9, 0.2, 0.0, 0.0]))
    assert threads.setting is None
    assert threads.choose() == 1  # the first window: no reading yet
    assert threads.choose() == 2  # the other processes used no CPU
    assert threads.choose() == 1  # they kept most of a core busy
    assert threads.choose() == 2  # within the margin
    with background_job():  # the shot checks or the keyframe decode: the sampler keeps to one thread
        assert background_jobs() == 1
        assert threads.choose() == 1
    assert background_jobs() == 0
    assert threads.choose() == 2


def test_a_fixed_count_or_one_core_decides_alone(two_cores, monkeypatch):
    monkeypatch.setenv(generate.SAMPLER_THREADS_ENV, "3")
    assert generate.SamplerThreads(_KnownLoad([])).choose() == 3
    monkeypatch.setenv(generate.SAMPLER_THREADS_ENV, "auto")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a Ray worker with one CPU
    assert generate.SamplerThreads(_KnownLoad([0.0])).choose() == 1


def test_windows_set_the_count_and_close_restores_it(two_cores):
    before = torch.get_num_threads()
    threads = generate.SamplerThreads(_KnownLoad([None, 0.0, 0.0]))
    try:
        assert threads.next_window() == 1 and torch.get_num_threads() == 1
        assert threads.next_window() == 2 and torch.get_num_threads() == 2
        threads.next_window()
    finally:
        threads.close()
    assert torch.get_num_threads() == before
    assert threads.to_json() == {"setting": "auto", "windows": {"1": 1, "2": 2}}


def _cpu_seconds(pid: int) -> float:
    """The user + system CPU time of process `pid` so far (/proc/PID/stat, fields 14 and 15)."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # from field 3 (state) on
    return (int(after_name[11]) + int(after_name[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_other_load_counts_other_processes_not_this_one():
    load = OtherLoad()
    time.sleep(0.5)
    idle = load.cores()  # what the rest of the machine does anyway (CI machines are not always idle)
    end = time.perf_counter() + 0.5
    while time.perf_counter() < end:  # this process busy: not the others' load
        pass
    assert load.cores() < idle + 0.3
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 20: pass"])
    try:
        deadline = time.monotonic() + 10
        while _cpu_seconds(busy.pid) < 0.2 and time.monotonic() < deadline:  # past the child's start-up
            time.sleep(0.05)
        # The reference is the CPU time the child really got, not a whole core: a loaded or
        # oversubscribed virtual machine gives a busy loop less (CI once measured 0.56 of a core).
        before, start = _cpu_seconds(busy.pid), time.monotonic()
        load.cores()
        time.sleep(0.8)
        measured = load.cores()
        child = (_cpu_seconds(busy.pid) - before) / (time.monotonic() - start)
        assert child > 0.2, "the busy child hardly ran: nothing to measure"
        assert measured > child - 0.15  # the child's CPU time is counted as the others' load
    finally:
        busy.kill()
        busy.wait()
