"""core: what every stage shares and nothing else - the time grid and audio constants, user-facing
errors, atomic files, content hashes and the cache folder, JSON output, stage timing, the ffmpeg
runner (ffmpeg-python) and where shipped files are.

May import: the standard library, numpy, ffmpeg-python, platformdirs. Never another bgmgen subpackage.
"""
