"""bgmgen: original piano background music for a video (a CPU-friendly Diff-BGM)."""

__version__ = "0.1.0"
