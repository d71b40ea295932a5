"""audio: MIDI -> sound -> video - render (MIDI -> WAV with FluidSynth and a SoundFont, normalised to
a loudness target), loudness (the integrated-loudness and true-peak meters render uses), dsp (their
filters, the limiter's sliding minimum and mean, the WAV writer: numpy only) and mux
(the WAV into the video as MP4: replace, keep-and-mix or duck under the original sound; ffmpeg graphs
built with ffmpeg-python and run by bgmgen.core.ffmpeg).

May import: bgmgen.core, bgmgen.video.probe (VideoInfo, for annotations only); numpy, ffmpeg-python,
and on use pyfluidsynth and mido (not scipy: dsp.py says why).
"""
