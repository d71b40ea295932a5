"""Record the golden output that tests/test_golden.py compares against.

    .venv/bin/python scripts/record_golden.py

Scores examples/shots.mp4 with seed 3 and the shipped default model, and keeps in tests/golden/:
the MIDI (bytes), run.json's plan, the mp4's duration, the model's sha256, the CPU it ran on and
the precision of the music model's convolutions there (bf16 where the CPU has bf16 arithmetic).
Re-record only when the music is meant to change (a new default model, a new plan rule) and say so
in the commit; a refactor must leave the test passing against the old recording.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
VIDEO = ROOT / "examples" / "shots.mp4"
SEED = 3


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def mp4_duration_s(path: Path) -> float:
    """The container duration ffprobe reports (seconds)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)["format"]["duration"])


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "bgmgen", "score", str(VIDEO), "--seed", str(SEED), "--out", tmp,
                        "--no-cache", "--quiet"], check=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
        folder = Path(tmp) / VIDEO.stem
        run = json.loads((folder / "run.json").read_text())
        GOLDEN.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / f"{VIDEO.stem}.mid", GOLDEN / "shots-seed3.mid")
        record = {"video": "examples/shots.mp4", "seed": SEED, "plan": run["plan"],
                  "mp4_duration_s": mp4_duration_s(folder / f"{VIDEO.stem}.mp4"),
                  "model_sha256": run["fingerprint"]["model_sha256"], "cpu": cpu_model(),
                  "convolutions": run["generation"]["convolutions"]}
        (GOLDEN / "shots-seed3.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"recorded {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
