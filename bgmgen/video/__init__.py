"""video: everything read off the video - probe (ffprobe), decode (decord, ffmpeg fallback),
shots (TransNetV2), motion and visual onsets, semantic (CLIP, BLIP captions, MiniLM), moods, and
analysis, which runs them and caches the result (VideoAnalysis).

May import: bgmgen.core. Never music/, audio/, app/ (data flows video -> music -> audio -> app).
"""
