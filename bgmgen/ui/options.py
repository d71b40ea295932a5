"""The options of `bgmgen ui`: a frozen dataclass, one field per CLI flag (bgmgen/cli.py builds it and takes its
defaults from it). Plain data: importing this module costs nothing."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class UiOptions:
    """The flags of `bgmgen ui`, one field each."""

    host: str = DEFAULT_HOST
    port: int | None = None           # None: 7860, or the next free port above it
    share: bool = False               # Gradio's public share link (goes through the internet; off by default)
    max_upload_mb: int = 1024         # uploads above this are refused by the server
    workdir: str | None = None        # None: user_cache_dir("ui")
    debug: bool = False
