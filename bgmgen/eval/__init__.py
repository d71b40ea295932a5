"""eval: `bgmgen eval` - symbolic music metrics, generated songs beside POP909, the realism test,
and the metrics of scored videos.

- notes: the Notes representation (beats from the first downbeat), the MIDI reader, and the
  POP909 reference songs, read through bgmgen.data.pop909 (the one reader and aligner);
- metrics: the small pure per-song metrics (PCHE, GPS, chord tones, density ρ, muspy statistics,
  overlapping area); structure: self-similarity and the structureness indicator SI;
- texture: 8-bar windows and their texture features; realism: the classifier two-sample test
  and the OA report built on them;
- evaluate: `run_eval` (ground truth with its cache, generated songs, --realism); videos:
  `run_video_eval` (`bgmgen score` outputs); tables: the console and number format they share.

May import: bgmgen.core, bgmgen.data. Nothing imports eval/ but the CLI and scripts.
"""
