"""data: POP909 on the sixteenth-note grid - the one reader and aligner (pop909: songs, chords,
keys, phrases, melody and accompaniment, the training cache) and the fixed song splits.

May import: bgmgen.core, bgmgen.music.controls (the controls a song's music implies).
"""
