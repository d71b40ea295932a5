"""Files that ship with bgmgen, found the same way from a wheel, an editable install or a checkout.

The music-model weights live in models/ at the top of the repository (the folder people see) and
install as the package data `bgmgen.models` (pyproject.toml maps the folder), so an installed wheel
reads them with importlib.resources. Run straight from a source checkout without installing, the
same files are models/ beside bgmgen/. SoundFonts a user drops into soundfonts/ are found in a
checkout only (the default SoundFont comes from the system: audio/render.py).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CHECKOUT_ROOT = Path(__file__).resolve().parents[2]
MODELS_PACKAGE = "bgmgen.models"


def shipped_model(name: str) -> Path:
    """Path of a shipped weight file (it may not exist: the caller says so in one line)."""
    try:
        found = resources.files(MODELS_PACKAGE).joinpath(name)
    except ModuleNotFoundError:  # not installed: a source checkout on PYTHONPATH
        return CHECKOUT_ROOT / "models" / name
    return Path(str(found))


def checkout_soundfont_dir() -> Path:
    """soundfonts/ of the source checkout (absent in an installed wheel)."""
    return CHECKOUT_ROOT / "soundfonts"
