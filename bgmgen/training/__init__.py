"""training: `bgmgen train` (resumable, checkpointed, EMA) and `bgmgen sample` (whole POP909
songs regenerated from their own controls: the evaluation path).

May import: bgmgen.core, bgmgen.data, bgmgen.music.
"""
