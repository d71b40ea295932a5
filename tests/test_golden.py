"""Golden output: the example video scored with a fixed seed gives the recorded music.

tests/golden/ holds what scripts/record_golden.py wrote: examples/shots.mp4 scored with seed 3 by
the shipped default model. On the CPU model it was recorded on, the MIDI must be byte for byte the
same (any refactor that changes one note, one velocity or one tick fails here). Other CPUs may round
the int8 matmuls differently (other SIMD paths), so there the notes must still agree: at least 90 %
of (start, pitch) pairs, the same tempo and the same length. A CPU without bf16 arithmetic runs the
model's convolutions in fp32 instead of bf16 (core.quantize); its samples diverge from the recording,
so there the MIDI is not compared (the plan and the duration still are). The plan (tempo, bars, sections,
per-beat controls) is pure arithmetic on the analysis and must match exactly everywhere; the mp4's
duration within a millisecond.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
sys.path.insert(0, str(ROOT / "scripts"))
from record_golden import SEED, VIDEO, cpu_model, mp4_duration_s  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    record = json.loads((GOLDEN / "shots-seed3.json").read_text())
    out = tmp_path_factory.mktemp("golden")
    proc = subprocess.run([sys.executable, "-m", "bgmgen", "score", str(VIDEO), "--seed", str(SEED), "--out", str(out),
                           "--no-cache", "--quiet"], capture_output=True, text=True, timeout=600,
                          env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return record, out / VIDEO.stem


def test_golden_model_is_the_shipped_default(scored):
    record, folder = scored
    run = json.loads((folder / "run.json").read_text())
    assert run["fingerprint"]["model_sha256"] == record["model_sha256"], \
        "the default model changed: re-record with scripts/record_golden.py and say why in the commit"


def test_golden_plan_is_identical(scored):
    record, folder = scored
    run = json.loads((folder / "run.json").read_text())
    assert run["plan"] == record["plan"]


def test_golden_mp4_duration(scored):
    record, folder = scored
    assert abs(mp4_duration_s(folder / f"{VIDEO.stem}.mp4") - record["mp4_duration_s"]) < 1e-3


def test_golden_midi(scored):
    record, folder = scored
    new = (folder / f"{VIDEO.stem}.mid").read_bytes()
    old = (GOLDEN / "shots-seed3.mid").read_bytes()
    run = json.loads((folder / "run.json").read_text())
    if run["generation"]["convolutions"] != record["convolutions"]:
        pytest.skip(f"recorded with {record['convolutions']} convolutions, this CPU runs them in "
                    f"{run['generation']['convolutions']}: the samples diverge")
    if cpu_model() == record["cpu"]:
        assert new == old, "the MIDI differs from the golden recording on the CPU it was recorded on"
        return
    import pretty_midi

    def notes(path):
        pm = pretty_midi.PrettyMIDI(str(path))
        return pm, {(round(n.start, 3), n.pitch) for i in pm.instruments for n in i.notes}

    pm_new, a = notes(folder / f"{VIDEO.stem}.mid")
    pm_old, b = notes(GOLDEN / "shots-seed3.mid")
    assert len(a & b) >= 0.9 * max(len(a), len(b))
    assert pm_new.get_tempo_changes()[1].tolist() == pm_old.get_tempo_changes()[1].tolist()
    assert abs(pm_new.get_end_time() - pm_old.get_end_time()) < 1e-3
