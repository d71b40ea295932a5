"""Markdown table from `bgmgen eval --json` files (for the model card).

    .venv/bin/python scripts/eval_tables.py NAME=runs/eval/full/eval.json NAME2=... [--gt]
"""

from __future__ import annotations

import json
import sys

from bgmgen.eval.evaluate import METRICS

KEYS = list(METRICS)


def main() -> None:
    rows, gt = [], None
    for arg in sys.argv[1:]:
        if arg == "--gt":
            continue
        name, path = arg.split("=", 1)
        with open(path) as f:
            d = json.load(f)
        rows.append((name, d["summary"]))
        gt = gt or d["ground_truth"]
    if "--gt" in sys.argv:
        rows.append(("ground truth (same songs)", gt))
    print("| model | " + " | ".join(KEYS) + " |")
    print("|---" * (len(KEYS) + 1) + "|")
    for name, s in rows:
        print(f"| {name} | " + " | ".join(f"{s[k]:.3f}" if s.get(k) is not None else "-" for k in KEYS) + " |")


if __name__ == "__main__":
    main()
