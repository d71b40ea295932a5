"""The wheel is a working tool: it holds every subpackage and the shipped weights, and an installed
copy finds those weights from any folder (importlib.resources), not through a source checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build_dir = ROOT / "build"  # setuptools builds in the source tree without isolation: leave it as found
    existed = build_dir.exists()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-q", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "No module named" in proc.stderr and "setuptools" in proc.stderr:
        pytest.skip("setuptools is not importable here; the wheel cannot be built without isolation")
    if not existed:
        shutil.rmtree(build_dir, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (found,) = out.glob("bgmgen-*.whl")
    return found


def test_wheel_holds_every_subpackage_and_the_weights(wheel):
    from bgmgen.music.weights import DEFAULT_MODEL_NAME

    names = set(zipfile.ZipFile(wheel).namelist())
    for init in (ROOT / "bgmgen").rglob("__init__.py"):
        assert str(init.relative_to(ROOT)) in names, f"{init.parent.name}/ is missing from the wheel"
    assert f"bgmgen/models/{DEFAULT_MODEL_NAME}" in names
    assert "bgmgen/models/MODEL_CARD.md" in names
    for shipped in (ROOT / "models").glob("*.safetensors"):
        assert f"bgmgen/models/{shipped.name}" in names


def test_installed_wheel_finds_its_weights_from_another_folder(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q",
                    "--target", str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    code = ("import bgmgen, sys; from bgmgen.music.weights import default_model_path; p = default_model_path(); "
            "print(bgmgen.__file__); print(p); sys.exit(0 if p.is_file() else 1)")
    env = {**os.environ, "PYTHONPATH": str(target)}
    # -I would also drop the venv's site-packages; -S is not wanted either: the editable install's
    # finder must lose to the wheel, which PYTHONPATH guarantees (it comes first on sys.path).
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    package_file, model = proc.stdout.split()
    assert package_file.startswith(str(target)) and model.startswith(str(target))
