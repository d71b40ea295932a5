"""JSON output: numpy values, paths and dataclasses made plain, NaN/inf written as null."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bgmgen.core.files import atomic_path


def json_default(o: Any):
    if hasattr(o, "tolist"):          # numpy arrays and scalars
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def finite(o: Any) -> Any:
    """NaN/inf are not JSON: turn them into null."""
    if isinstance(o, float):
        return o if o == o and o not in (float("inf"), float("-inf")) else None
    if isinstance(o, dict):
        return {str(k): finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite(v) for v in o]
    return o


def plain(obj: Any) -> Any:
    """`obj` as plain JSON values (numbers, strings, lists, dicts; NaN/inf -> None)."""
    return finite(json.loads(json.dumps(obj, default=json_default)))


def dump_json(obj: Any, path: str | Path, indent: int = 2) -> None:
    """Write `obj` as JSON (plain, UTF-8), atomically."""
    text = json.dumps(plain(obj), indent=indent, ensure_ascii=False, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
