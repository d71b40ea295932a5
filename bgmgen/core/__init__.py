"""core: what every stage shares and nothing else - constants (the time grid and audio constants),
errors (user-facing, one line), files (atomic files, content hashes, the cache folder), jsonio (JSON
output), timing (stage timers), assets (where shipped files are), ffmpeg (the one ffmpeg / ffprobe
runner, on ffmpeg-python), threads (background threads' priority), memory (how the heap keeps freed
memory), mp4 (ISO media boxes read in-process: the written file's check, the scan's container test)
and quantize (int8 Linear layers, bfloat16 convolutions; torch is imported only when it runs).

May import: the standard library, ffmpeg-python, platformdirs (on use) and torch (quantize, on use).
Never another bgmgen subpackage.
"""
