"""eval: `bgmgen eval` - symbolic music metrics (PCHE, GPS, chord tones, density, SI, polyphony),
the comparison of generated songs with POP909, the realism test, and the metrics of scored videos.

May import: bgmgen.core, bgmgen.data. Nothing imports eval/ but the CLI and scripts.
"""
